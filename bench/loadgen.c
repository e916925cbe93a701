/*
 * loadgen: the load generator and upstream stand-in used by scripts/bench.
 *
 * One small C program (no dependencies; built by scripts/bench with cc -O2)
 * so that the client and the upstream servers cost as little as possible and
 * the same code measures every setup (direct, HAProxy, salt-sidecar).
 *
 *   loadgen serve --source A:P --echo A:P [--sink A:P]
 *       single-threaded epoll server: `source` streams bytes to whoever
 *       connects (a publisher, master -> minion), `echo` echoes (request /
 *       response, the ret port), `sink` discards (minion -> master).
 *   loadgen stream  A:P SECONDS [WARMUP]     one stream, read side: Gbit/s
 *   loadgen upload  A:P SECONDS [WARMUP]     one stream, write side: Gbit/s
 *   loadgen rtt     A:P COUNT SIZE [WARMUP]  ping-pong, one connection: µs percentiles
 *   loadgen connrate A:P SECONDS CONCURRENCY [SRCNET [SIZE]]
 *       connect, SIZE-byte echo (default 1), close, CONCURRENCY at a time:
 *       connections/s, and each connection's setup time (connect() called
 *       until the echo is back) p50/p99 in µs
 *   loadgen hold    A:P COUNT [SRCNET]
 *       opens COUNT connections, 1-byte echo on each, prints "ready", holds
 *       them until stdin closes.
 *   loadgen fleet   A:P COUNT SRCNET TIMEOUT
 *       a fleet's view of one failover (scripts/bench --scale): opens COUNT
 *       connections, 1-byte echo on each, prints {"event":"ready"}; then each
 *       connection the far side closes is reopened at once (and again if that
 *       fails) until a 1-byte echo answers on it. Ends when every connection
 *       has dropped and is answered again, or TIMEOUT seconds after the first
 *       drop; times are CLOCK_MONOTONIC seconds (Python's time.monotonic()).
 *       Prints the result, then holds the connections until stdin closes.
 *
 * SRCNET (e.g. 127.0.8) spreads client source addresses over SRCNET.1..250
 * so short connections never run out of ephemeral ports.
 * Every client command prints one JSON object on stdout. Loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BIG (128 * 1024)

static void die(const char *what) {
    perror(what);
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static struct sockaddr_in parse_addr(const char *s) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
        fprintf(stderr, "bad address %s (want A.B.C.D:PORT)\n", s);
        exit(2);
    }
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", s);
        exit(2);
    }
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    return a;
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A client socket, bound to source SRCNET.(1 + i % 250) when srcnet is set. */
static int client_socket(const char *srcnet, unsigned i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (srcnet) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        char ip[64];
        snprintf(ip, sizeof ip, "%s.%u", srcnet, 1 + i % 250);
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, ip, &src.sin_addr);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0)
            die("bind source");
    }
    return fd;
}

static int connect_to(struct sockaddr_in a, const char *srcnet, unsigned i) {
    int fd = client_socket(srcnet, i);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    nodelay(fd);
    return fd;
}

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void read_exact(int fd, char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "read: %s\n", r == 0 ? "unexpected EOF" : strerror(errno));
            exit(2);
        }
        p += r;
        n -= (size_t)r;
    }
}

/* ---------------------------------------------------------------- serve */

enum kind { L_SOURCE, L_ECHO, L_SINK, C_SOURCE, C_ECHO, C_SINK };

/* epoll data: fd in the low 32 bits, kind above. */
static uint64_t tag(int fd, enum kind k) { return (uint64_t)(uint32_t)fd | ((uint64_t)k << 32); }

static int listen_on(const char *addr) {
    struct sockaddr_in a = parse_addr(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die(addr);
    if (listen(fd, 4096) < 0)
        die("listen");
    set_nonblock(fd);
    return fd;
}

static int serve(int argc, char **argv) {
    static char buf[BIG];
    memset(buf, 'x', sizeof buf);
    int ep = epoll_create1(0);
    for (int i = 0; i + 1 < argc; i += 2) {
        enum kind k;
        if (!strcmp(argv[i], "--source"))
            k = L_SOURCE;
        else if (!strcmp(argv[i], "--echo"))
            k = L_ECHO;
        else if (!strcmp(argv[i], "--sink"))
            k = L_SINK;
        else {
            fprintf(stderr, "serve: unknown option %s\n", argv[i]);
            return 2;
        }
        int l = listen_on(argv[i + 1]);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag(l, k)};
        epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    }
    signal(SIGPIPE, SIG_IGN);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < n; i++) {
            int fd = (int)(uint32_t)evs[i].data.u64;
            enum kind k = (enum kind)(evs[i].data.u64 >> 32);
            if (k <= L_SINK) {
                int c;
                while ((c = accept4(fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    nodelay(c);
                    enum kind ck = k == L_SOURCE ? C_SOURCE : k == L_ECHO ? C_ECHO : C_SINK;
                    struct epoll_event ev = {
                        .events = ck == C_SOURCE ? (EPOLLIN | EPOLLOUT | EPOLLET) : EPOLLIN,
                        .data.u64 = tag(c, ck)};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            if (k == C_SOURCE) {
                /* Stream until the socket is full; drop whatever comes in. */
                int dead = (evs[i].events & (EPOLLERR | EPOLLHUP)) != 0;
                if (evs[i].events & EPOLLIN) {
                    char junk[4096];
                    ssize_t r;
                    while ((r = read(fd, junk, sizeof junk)) > 0) {
                    }
                    if (r == 0)
                        dead = 1;
                }
                while (!dead) {
                    ssize_t w = write(fd, buf, sizeof buf);
                    if (w < 0) {
                        if (errno != EAGAIN)
                            dead = 1;
                        break;
                    }
                }
                if (dead)
                    close(fd);
                continue;
            }
            /* echo / sink: level-triggered reads. */
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                close(fd);
                continue;
            }
            if (k == C_ECHO) {
                char *p = buf;
                while (r > 0) {
                    ssize_t w = write(fd, p, (size_t)r);
                    if (w < 0 && errno == EAGAIN) {
                        /* Rare (large echoes only): wait for room. */
                        struct timespec ts = {0, 50000};
                        nanosleep(&ts, NULL);
                        continue;
                    }
                    if (w <= 0)
                        break;
                    p += w;
                    r -= w;
                }
                if (r > 0)
                    close(fd);
            }
        }
    }
}

/* ---------------------------------------------------------------- clients */

static int stream(const char *addr, double seconds, double warmup) {
    static char buf[BIG];
    int fd = connect_to(parse_addr(addr), NULL, 0);
    double t0 = now(), start = 0, cpu0 = 0;
    uint64_t bytes = 0;
    int measuring = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            die("stream read");
        double t = now();
        if (!measuring && t - t0 >= warmup) {
            measuring = 1;
            start = t;
            cpu0 = cpu_self();
            printf("{\"event\":\"start\"}\n");
            fflush(stdout);
            continue;
        }
        if (measuring) {
            bytes += (uint64_t)r;
            if (t - start >= seconds) {
                double el = t - start;
                printf("{\"bytes\":%llu,\"seconds\":%.6f,\"gbit_s\":%.4f,\"client_cpu_s\":%.6f}\n",
                       (unsigned long long)bytes, el, bytes * 8 / el / 1e9, cpu_self() - cpu0);
                return 0;
            }
        }
    }
}

static int upload(const char *addr, double seconds, double warmup) {
    static char buf[BIG];
    memset(buf, 'x', sizeof buf);
    int fd = connect_to(parse_addr(addr), NULL, 0);
    double t0 = now(), start = 0, cpu0 = 0;
    uint64_t bytes = 0;
    int measuring = 0;
    for (;;) {
        ssize_t w = write(fd, buf, sizeof buf);
        if (w <= 0)
            die("upload write");
        double t = now();
        if (!measuring && t - t0 >= warmup) {
            measuring = 1;
            start = t;
            cpu0 = cpu_self();
            printf("{\"event\":\"start\"}\n");
            fflush(stdout);
            continue;
        }
        if (measuring) {
            bytes += (uint64_t)w;
            if (t - start >= seconds) {
                double el = t - start;
                printf("{\"bytes\":%llu,\"seconds\":%.6f,\"gbit_s\":%.4f,\"client_cpu_s\":%.6f}\n",
                       (unsigned long long)bytes, el, bytes * 8 / el / 1e9, cpu_self() - cpu0);
                return 0;
            }
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int rtt(const char *addr, long count, long size, long warmup) {
    char *msg = malloc((size_t)size), *back = malloc((size_t)size);
    memset(msg, 'r', (size_t)size);
    double *lat = malloc(sizeof(double) * (size_t)count);
    int fd = connect_to(parse_addr(addr), NULL, 0);
    for (long i = 0; i < warmup; i++) {
        write_all(fd, msg, (size_t)size);
        read_exact(fd, back, (size_t)size);
    }
    double t_all = now();
    for (long i = 0; i < count; i++) {
        double t = now();
        write_all(fd, msg, (size_t)size);
        read_exact(fd, back, (size_t)size);
        lat[i] = (now() - t) * 1e6;
    }
    t_all = now() - t_all;
    qsort(lat, (size_t)count, sizeof(double), cmp_double);
    double sum = 0;
    for (long i = 0; i < count; i++)
        sum += lat[i];
#define PCT(p) lat[(long)((p) / 100.0 * (count - 1))]
    printf("{\"count\":%ld,\"size\":%ld,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
           "\"p999_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f,\"seconds\":%.4f}\n",
           count, size, PCT(50), PCT(90), PCT(99), PCT(99.9), lat[count - 1], sum / count, t_all);
    close(fd);
    return 0;
}

struct slot {
    int fd;
    int state;    /* 0 connecting, 1 waiting for the echo */
    long got;     /* echo bytes back so far */
    double start; /* connect() called */
};

static void slot_start(int ep, struct slot *s, int idx, struct sockaddr_in a, const char *srcnet,
                       unsigned *seq, long *errors) {
    for (;;) {
        s->start = now();
        int fd = client_socket(srcnet, (*seq)++);
        set_nonblock(fd);
        nodelay(fd);
        int r = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (r < 0 && errno != EINPROGRESS) {
            (*errors)++;
            close(fd);
            if (*errors > 1000) {
                perror("connect");
                exit(2);
            }
            continue;
        }
        s->fd = fd;
        s->state = 0;
        s->got = 0;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)idx};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        return;
    }
}

static int connrate(const char *addr, double seconds, int conc, const char *srcnet, long size) {
    struct sockaddr_in a = parse_addr(addr);
    int ep = epoll_create1(0);
    struct slot *slots = calloc((size_t)conc, sizeof *slots);
    char *msg = malloc((size_t)size), *back = malloc((size_t)size);
    memset(msg, 'c', (size_t)size);
    long lat_cap = 4 << 20, lat_n = 0;
    double *lat = malloc(sizeof(double) * (size_t)lat_cap);
    unsigned seq = 0;
    long done = 0, errors = 0;
    for (int i = 0; i < conc; i++)
        slot_start(ep, &slots[i], i, a, srcnet, &seq, &errors);
    double t0 = now(), cpu0 = cpu_self(), t = t0;
    struct epoll_event evs[256];
    while ((t = now()) - t0 < seconds) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            struct slot *s = &slots[evs[i].data.u32];
            int restart = 0;
            if (s->state == 0) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (evs[i].events & EPOLLERR)) {
                    errors++;
                    restart = 1;
                } else if (write(s->fd, msg, (size_t)size) != size) {
                    errors++;
                    restart = 1;
                } else {
                    s->state = 1;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                }
            } else {
                ssize_t r = read(s->fd, back, (size_t)(size - s->got));
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r > 0 && (s->got += r) < size)
                    continue;
                if (r > 0) {
                    done++;
                    if (lat_n < lat_cap)
                        lat[lat_n++] = (now() - s->start) * 1e6;
                } else {
                    errors++;
                }
                restart = 1;
            }
            if (restart) {
                close(s->fd); /* also removes it from the epoll set */
                slot_start(ep, s, (int)evs[i].data.u32, a, srcnet, &seq, &errors);
            }
        }
    }
    double el = t - t0;
    qsort(lat, (size_t)lat_n, sizeof(double), cmp_double);
    double p50 = lat_n ? lat[(long)(0.50 * (lat_n - 1))] : 0, p99 = lat_n ? lat[(long)(0.99 * (lat_n - 1))] : 0;
    printf("{\"connections\":%ld,\"errors\":%ld,\"seconds\":%.4f,\"conn_s\":%.1f,\"concurrency\":%d,"
           "\"size\":%ld,\"setup_p50_us\":%.2f,\"setup_p99_us\":%.2f,\"client_cpu_s\":%.4f}\n",
           done, errors, el, done / el, conc, size, p50, p99, cpu_self() - cpu0);
    return errors > done / 100 ? 1 : 0;
}

static int hold(const char *addr, int count, const char *srcnet) {
    struct sockaddr_in a = parse_addr(addr);
    int *fds = malloc(sizeof(int) * (size_t)count);
    for (int i = 0; i < count; i++) {
        fds[i] = connect_to(a, srcnet, (unsigned)i);
        char c = 'h';
        write_all(fds[i], &c, 1);
        read_exact(fds[i], &c, 1);
    }
    printf("{\"held\":%d}\n", count);
    fflush(stdout);
    char junk[64];
    while (read(0, junk, sizeof junk) > 0) {
    }
    for (int i = 0; i < count; i++)
        close(fds[i]);
    return 0;
}

/* ---------------------------------------------------------------- fleet */

struct member {
    int fd;
    int state;          /* 0 up (answered), 1 connecting, 2 waiting for the echo */
    double dropped;     /* first drop (0: never dropped) */
    double back;        /* answered again after the drop (0: not yet) */
    unsigned attempts;  /* reconnects after the drop */
};

static int cmp_double_asc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void member_reconnect(int ep, struct member *m, int idx, struct sockaddr_in a,
                             const char *srcnet, long *errors) {
    for (;;) {
        int fd = client_socket(srcnet, (unsigned)idx);
        set_nonblock(fd);
        nodelay(fd);
        m->attempts++;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
            (*errors)++;
            close(fd);
            continue;
        }
        m->fd = fd;
        m->state = 1;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)idx};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        return;
    }
}

static int fleet(const char *addr, int count, const char *srcnet, double timeout) {
    struct sockaddr_in a = parse_addr(addr);
    struct member *ms = calloc((size_t)count, sizeof *ms);
    int ep = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        int fd = connect_to(a, srcnet, (unsigned)i);
        char c = 'f';
        write_all(fd, &c, 1);
        read_exact(fd, &c, 1);
        set_nonblock(fd);
        ms[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    printf("{\"event\":\"ready\",\"count\":%d,\"t\":%.6f}\n", count, now());
    fflush(stdout);
    long errors = 0, drops = 0, redrops = 0;
    const char *first_error = "";
    int pending = count; /* not yet dropped and answered again */
    double first_drop = 0, last_back = 0;
    struct epoll_event evs[512];
    while (pending > 0 && !(first_drop > 0 && now() - first_drop > timeout)) {
        int n = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            int idx = (int)evs[i].data.u32;
            struct member *m = &ms[idx];
            int lost = 0;
            if (m->state == 1) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(m->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (evs[i].events & EPOLLERR) || write(m->fd, "f", 1) != 1) {
                    if (!errors)
                        first_error = strerror(err ? err : errno);
                    errors++;
                    lost = 1;
                } else {
                    m->state = 2;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)idx};
                    epoll_ctl(ep, EPOLL_CTL_MOD, m->fd, &ev);
                }
            } else {
                char c;
                ssize_t r = read(m->fd, &c, 1);
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r == 1 && m->state == 2) {
                    m->state = 0;
                    m->back = now();
                    last_back = m->back;
                    pending--;
                } else {
                    lost = 1; /* EOF, reset, or an unexpected byte */
                    if (m->dropped > 0)
                        redrops++;
                }
            }
            if (lost) {
                if (m->dropped == 0) {
                    m->dropped = now();
                    drops++;
                    if (first_drop == 0)
                        first_drop = m->dropped;
                }
                close(m->fd);
                member_reconnect(ep, m, idx, a, srcnet, &errors);
            }
        }
    }
    double *lat = malloc(sizeof(double) * (size_t)count);
    int back = 0, never = 0;
    for (int i = 0; i < count; i++) {
        if (ms[i].dropped == 0)
            never++;
        else if (ms[i].back > 0)
            lat[back++] = ms[i].back - ms[i].dropped;
    }
    qsort(lat, (size_t)back, sizeof *lat, cmp_double_asc);
#define LPCT(p) (back ? lat[(int)((p) / 100.0 * (back - 1))] : -1.0)
    long attempts = 0;
    for (int i = 0; i < count; i++)
        attempts += ms[i].attempts;
    printf("{\"count\":%d,\"dropped\":%ld,\"never_dropped\":%d,\"reestablished\":%d,\"stuck\":%d,"
           "\"first_drop\":%.6f,\"last_back\":%.6f,\"reconnect_p50_s\":%.4f,\"reconnect_p99_s\":%.4f,"
           "\"reconnect_max_s\":%.4f,\"reconnects\":%ld,\"connect_errors\":%ld,"
           "\"first_connect_error\":\"%s\",\"redrops\":%ld}\n",
           count, drops, never, back, count - back, first_drop, last_back, LPCT(50), LPCT(99),
           LPCT(100), attempts, errors, first_error, redrops);
    fflush(stdout);
    /* Hold the connections until stdin closes, so the caller can look at the proxy. */
    char junk[64];
    while (read(0, junk, sizeof junk) > 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        goto usage;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve"))
        return serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "stream") && argc >= 4)
        return stream(argv[2], atof(argv[3]), argc > 4 ? atof(argv[4]) : 0.5);
    if (!strcmp(cmd, "upload") && argc >= 4)
        return upload(argv[2], atof(argv[3]), argc > 4 ? atof(argv[4]) : 0.5);
    if (!strcmp(cmd, "rtt") && argc >= 5)
        return rtt(argv[2], atol(argv[3]), atol(argv[4]), argc > 5 ? atol(argv[5]) : 2000);
    if (!strcmp(cmd, "connrate") && argc >= 5)
        return connrate(argv[2], atof(argv[3]), atoi(argv[4]), argc > 5 ? argv[5] : NULL,
                        argc > 6 ? atol(argv[6]) : 1);
    if (!strcmp(cmd, "hold") && argc >= 4)
        return hold(argv[2], atoi(argv[3]), argc > 4 ? argv[4] : NULL);
    if (!strcmp(cmd, "fleet") && argc >= 6)
        return fleet(argv[2], atoi(argv[3]), argv[4], atof(argv[5]));
usage:
    fprintf(stderr, "usage: see the comment at the top of bench/loadgen.c\n");
    return 2;
}
