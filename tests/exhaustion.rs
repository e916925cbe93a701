//! The sidecar is never the reason a minion is offline: long outages,
//! resource exhaustion and hostile local clients.
//!
//! Every test runs an attack against the real binary started with a low
//! open-file limit (soft and hard, so it cannot raise it) and checks what a
//! minion and an operator would see: no switch, no reset of a live minion
//! session, file descriptors back to where they were, the admin endpoint
//! answering afterwards, and a master that returns used at once. Each test
//! has its own loopback /24 (127.0.11x.0); nothing leaves 127.0.0.0/8 or a
//! network namespace the test made.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use salt_sidecar::standin::{StandinMaster, ZmtpClient};
use salt_sidecar::status;
use salt_sidecar::zmtp::SocketType;
use support::{addr, ask, config, master, netns, until_answered_by, Launch, Sidecar, SLOW};

/// The binary with `nofile` open files at most, logging at `level`.
fn low_limit(yaml: &str, nofile: u64, level: &str) -> Sidecar {
    Sidecar::start_with(
        yaml,
        Launch {
            level,
            nofile: Some(nofile),
            ..Launch::default()
        },
    )
}

/// Masters A and B on 127.0.<net>.2/.3 and the sidecar in front with
/// `nofile` open files, serving the minion from A.
async fn two_masters(net: u8, nofile: u64, level: &str) -> (StandinMaster, StandinMaster, Sidecar) {
    let a = master("A", net, 2).await;
    let b = master("B", net, 3).await;
    let masters = [format!("127.0.{net}.2"), format!("127.0.{net}.3")];
    let masters: Vec<&str> = masters.iter().map(String::as_str).collect();
    let sidecar = low_limit(
        &config(
            net,
            &masters,
            "master_alive_interval: 1\nrandom_reauth_delay: 0",
        ),
        nofile,
        level,
    );
    until_answered_by(addr(net, 1, 4506), "A", SLOW).await;
    (a, b, sidecar)
}

/// A minion's ret session through the sidecar, answered by A.
async fn minion_session(ret: SocketAddr) -> ZmtpClient {
    let mut live = ZmtpClient::connect(ret, SocketType::Dealer, SLOW)
        .await
        .expect("minion session");
    assert_eq!(live.request(b"1", SLOW).await.expect("reply"), b"A:1");
    live
}

/// Waits until the sidecar holds at most `most` descriptors; panics with the
/// count after `limit`. (No event says a descriptor was closed: polled.)
fn fds_settle(sidecar: &Sidecar, most: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = sidecar.fds();
        if now <= most {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar still holds {now} descriptors (expected at most {most}) after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A metric from the TCP admin endpoint (0 when the series is absent).
fn metric(admin: SocketAddr, family: &str, labels: &[(&str, &str)]) -> f64 {
    support::sample(&support::scrape(admin), family, labels).unwrap_or(0.0)
}

/// The sum of every series of a family.
fn total(admin: SocketAddr, family: &str) -> f64 {
    support::series(&support::scrape(admin), family)
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// `GET path` on the TCP admin endpoint: status code and body.
fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).expect("admin endpoint reachable");
    s.set_read_timeout(Some(SLOW)).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// Raises this test process's own open-file limit (it opens many sockets).
fn raise_own_limit() {
    rlimit::increase_nofile_limit(16_384).expect("raise the test's open-file limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_outage_holds_no_descriptor_for_a_gone_minion_and_the_returning_master_is_used() {
    let net = 110;
    let ret = addr(net, 1, 4506);
    let admin = addr(net, 1, 9464);
    let sidecar = low_limit(
        &config(
            net,
            &["127.0.110.2"],
            "master_alive_interval: 1\nrandom_reauth_delay: 0",
        ),
        256,
        "salt_sidecar=info",
    );
    sidecar
        .log
        .wait_for_async(&["master is down", "127.0.110.2"], SLOW)
        .await;
    let baseline = sidecar.fds();

    // A minion that gives up and reconnects, 400 times, on both ports: each
    // connection waits for a route, then closes. With 256 descriptors the
    // sidecar would be wedged for good if it held them.
    tokio::task::spawn_blocking(move || {
        for i in 0..400 {
            let port = if i % 2 == 0 { 4506 } else { 4505 };
            let mut c = TcpStream::connect(addr(net, 1, port)).expect("minion connect");
            let _ = c.write_all(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f]);
        }
    })
    .await
    .expect("cycles");
    fds_settle(&sidecar, baseline + 2, SLOW);
    eprintln!(
        "400 connect+close cycles, every master down: fds {baseline} -> {}",
        sidecar.fds()
    );
    assert_eq!(
        total(admin, "salt_sidecar_resource_errors_total"),
        0.0,
        "the budget kept the sidecar from running out"
    );

    // The master returns: used within rise × interval (2 × 1 s), plus the
    // probe phase and scheduling slack.
    let _a = master("A", net, 2).await;
    let took = until_answered_by(ret, "A", Duration::from_secs(6)).await;
    eprintln!("the returning master answered {took:?} after it started");
    assert!(took < Duration::from_secs(5), "served after {took:?}");
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_flood_at_the_session_cap_never_locks_the_minion_out() {
    raise_own_limit();
    let net = 111;
    let ret = addr(net, 1, 4506);
    let admin = addr(net, 1, 9464);
    let (_a, _b, sidecar) = two_masters(net, 256, "salt_sidecar=info").await;
    // The real minion's session, open before the flood.
    let mut live = minion_session(ret).await;
    let baseline = sidecar.fds();
    let switches = total(admin, "salt_sidecar_switches_total");

    // 300 idle connections to the publish port from a local user, each
    // with the 10-byte ZMTP signature and nothing more. At the cap (256
    // descriptors: 92 sessions) each newcomer takes the slot of the oldest
    // connection that never completed its greeting and READY (or is refused
    // if none).
    let flood: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..300)
            .map(|_| {
                let mut s = TcpStream::connect(addr(net, 1, 4505)).expect("flood connect");
                s.write_all(&[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f])
                    .expect("flood signature");
                s
            })
            .collect()
    })
    .await
    .expect("flood");
    let closed_at_cap = || {
        ["over_cap", "evicted_silent"]
            .iter()
            .map(|reason| {
                metric(
                    admin,
                    "salt_sidecar_connections_refused_total",
                    &[("listener", "publish"), ("reason", reason)],
                )
            })
            .sum::<f64>()
    };
    let deadline = Instant::now() + SLOW;
    while closed_at_cap() < 200.0 {
        assert!(
            Instant::now() < deadline,
            "the flood was not held at the cap"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The real minion reconnects meanwhile (after a switch, a restart): it
    // speaks at once, so it is served, and within 2 s.
    let asked = Instant::now();
    let mut again = ZmtpClient::connect(ret, SocketType::Dealer, SLOW)
        .await
        .expect("the minion's new connection is admitted");
    assert_eq!(
        again.request(b"back", SLOW).await.expect("answered"),
        b"A:back"
    );
    let served = asked.elapsed();
    eprintln!("a minion connection during the flood: served in {served:?}");
    assert!(served <= Duration::from_secs(2), "served after {served:?}");
    assert_eq!(
        live.request(b"2", SLOW)
            .await
            .expect("the live session survives"),
        b"A:2"
    );
    assert_eq!(
        total(admin, "salt_sidecar_switches_total"),
        switches,
        "no switch"
    );
    assert_eq!(sidecar.log.count(&["master is down"]), 0);
    assert_eq!(total(admin, "salt_sidecar_resource_errors_total"), 0.0);
    // The cap is full: the next minion connection would be refused, and
    // `/readyz` says so (issue 21), naming the cap.
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("session cap is full"), "{body}");

    let during = sidecar.fds();
    drop(flood);
    fds_settle(&sidecar, baseline + 2, SLOW);
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 200, "ready again once the flood is gone: {body}");
    eprintln!(
        "300 idle publish connections at 256 fds: closed at the cap {}, fds {baseline} -> {during} -> {}",
        closed_at_cap(),
        sidecar.fds()
    );
    assert_eq!(
        ask(ret).await.as_deref(),
        Some("A"),
        "new minion sessions work"
    );
    assert_eq!(
        live.request(b"3", SLOW)
            .await
            .expect("still the same session"),
        b"A:3"
    );
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_flood_takes_nothing_the_minion_or_the_probes_need() {
    raise_own_limit();
    let net = 112;
    let ret = addr(net, 1, 4506);
    let admin = addr(net, 1, 9464);
    let (_a, _b, sidecar) = two_masters(net, 1024, "salt_sidecar=info").await;
    let baseline = sidecar.fds();

    // 1,030 idle admin connections (the limit is 1,024).
    let flood: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        (0..1030)
            .map(|_| TcpStream::connect(admin).expect("flood connect"))
            .collect()
    })
    .await
    .expect("flood");
    // Probes keep passing (three rounds), and the minion still connects.
    let seen = sidecar.log.count(&["master is up"]);
    let socket = sidecar.admin_socket.clone();
    for _ in 0..3 {
        assert_eq!(ask(ret).await.as_deref(), Some("A"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(sidecar.log.count(&["master is down"]), 0);
    assert_eq!(sidecar.log.count(&["master is up"]), seen);
    drop(flood);
    fds_settle(&sidecar, baseline + 2, SLOW);
    let refused = metric(
        admin,
        "salt_sidecar_connections_refused_total",
        &[("listener", "admin"), ("reason", "over_cap")],
    );
    // 16 at a time are served; each is cut after the 5 s header timeout and
    // its slot goes to a later one: all but a few dozen are refused.
    assert!(refused >= 900.0, "refused at the admin cap: {refused}");
    eprintln!(
        "1,030 idle admin connections at 1,024 fds: refused {refused}, fds {baseline} -> {}",
        sidecar.fds()
    );
    assert_eq!(total(admin, "salt_sidecar_resource_errors_total"), 0.0);
    let (report, _) = status::fetch(&socket.into(), SLOW)
        .await
        .expect("the admin socket answers");
    assert_eq!(report.active.as_deref(), Some("127.0.112.2"));
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_slowloris_idle_and_huge_headers_are_cut_off() {
    raise_own_limit();
    let net = 113;
    let admin = addr(net, 1, 9464);
    let _a = master("A", net, 2).await;
    let sidecar = low_limit(
        &config(net, &["127.0.113.2"], "master_alive_interval: 1"),
        1024,
        "salt_sidecar=info",
    );
    sidecar.log.wait_for_async(&["selected master"], SLOW).await;

    // One header byte now and then: cut at the header-read timeout (5 s).
    let slow = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(admin).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .expect("head");
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(_) => return started.elapsed(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return started.elapsed(),
            }
            if s.write_all(b"a").is_err() {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never cut off");
        }
    });
    // Saying nothing at all: the same timeout.
    let idle = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(admin).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = s.read(&mut [0u8; 16]);
        started.elapsed()
    });
    let slow = slow.await.expect("slowloris");
    let idle = idle.await.expect("idle");
    assert!(
        slow >= Duration::from_secs(4) && slow < Duration::from_secs(9),
        "slowloris cut after {slow:?}"
    );
    eprintln!("admin slowloris cut after {slow:?}, a silent connection after {idle:?}");
    assert!(
        idle < Duration::from_secs(9),
        "idle connection cut after {idle:?}"
    );

    // 200 connections each sending 380 KiB of a header that never ends.
    let rss_before = sidecar.rss_kib();
    let fat = tokio::task::spawn_blocking(move || {
        let chunk = vec![b'a'; 16 * 1024];
        let conns: Vec<TcpStream> = (0..200)
            .filter_map(|_| TcpStream::connect(admin).ok())
            .collect();
        for mut c in conns.iter() {
            c.set_write_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let _ = c.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fat: ");
            for _ in 0..24 {
                if c.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        conns
    })
    .await
    .expect("fat headers");
    let rss_after = sidecar.rss_kib();
    drop(fat);
    eprintln!("200 × 380 KiB unfinished headers: RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 10 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let (code, body) = get(admin, "/healthz");
    assert_eq!(code, 200, "{body}");
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_descriptors_is_the_sidecars_problem_not_a_masters() {
    let net = 114;
    let ret = addr(net, 1, 4506);
    let admin = addr(net, 1, 9464);
    let (_a, _b, sidecar) = two_masters(net, 256, "salt_sidecar=debug").await;
    let mut live = minion_session(ret).await;
    let switches = total(admin, "salt_sidecar_switches_total");

    // Take the soft limit down below what the sidecar holds now: every probe
    // and every accept fails with EMFILE. (Only the soft limit: raising a
    // hard one back needs CAP_SYS_RESOURCE, which a container may lack.)
    let pid = sidecar.pid().to_string();
    let set_limit = |n: u64| {
        let out = Command::new("/usr/bin/prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:256")])
            .output()
            .expect("prlimit");
        assert!(out.status.success(), "prlimit: {out:?}");
    };
    // (Descriptors 0-9 were opened at start and stay open: a limit of 10
    // leaves no number free for a new one.)
    set_limit(10);
    let skipped = sidecar.log.count(&["probe skipped"]);
    // A minion connects meanwhile: the kernel queues it; the sidecar
    // cannot accept it yet.
    let waiting = tokio::spawn(async move {
        let mut c = ZmtpClient::connect(ret, SocketType::Dealer, Duration::from_secs(20))
            .await
            .expect("queued connection is served once descriptors are back");
        c.request(b"queued", SLOW).await.expect("reply")
    });
    // At least fall × interval (2 s) of probes skipped for both masters.
    sidecar
        .log
        .wait_for_more(&["probe skipped"], skipped + 6, Duration::from_secs(15));
    assert_eq!(
        sidecar.log.count(&["master is down"]),
        0,
        "exhaustion is never a master's failure"
    );
    assert_eq!(
        sidecar.log.count(&["out of resources", "EMFILE"]),
        1,
        "one log line per burst"
    );
    assert_eq!(
        live.request(b"2", SLOW)
            .await
            .expect("the live session survives"),
        b"A:2"
    );

    set_limit(256);
    assert_eq!(waiting.await.expect("join"), b"A:queued");
    let text = support::scrape(admin);
    let probe = support::sample(
        &text,
        "salt_sidecar_resource_errors_total",
        &[("op", "probe"), ("kind", "emfile")],
    )
    .unwrap_or(0.0);
    let accept = support::sample(
        &text,
        "salt_sidecar_resource_errors_total",
        &[("op", "accept"), ("kind", "emfile")],
    )
    .unwrap_or(0.0);
    assert!(
        probe >= 4.0 && accept >= 1.0,
        "probe {probe}, accept {accept}"
    );
    eprintln!("EMFILE for several probe rounds: {probe} probe and {accept} accept errors counted, 0 switches, the queued minion served once descriptors were back");
    assert_eq!(
        total(admin, "salt_sidecar_switches_total"),
        switches,
        "no switch"
    );
    let (code, body) = get(admin, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("open-file limit (EMFILE)"), "{body}");
    let out = Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
        .args(["status", "--socket"])
        .arg(&sidecar.admin_socket)
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("ready:       NO: the sidecar is at its open-file limit")
            && table.contains("(last: "),
        "{table}"
    );
    assert_eq!(ask(ret).await.as_deref(), Some("A"));
    sidecar.assert_no_panic();
}

#[test]
fn a_dns_answer_that_is_the_sidecar_itself_is_skipped() {
    if !netns::available(
        "a_dns_answer_that_is_the_sidecar_itself_is_skipped",
        &["ip"],
    ) {
        return;
    }
    let lab = netns::Netns::create(format!("ss-self-{}", std::process::id()))
        .with_etc(&[("hosts", "127.0.0.1 localhost\n127.0.0.1 salt-self.test\n")]);
    let yaml = support::Yaml::new("127.0.0.1", &["salt-self.test"])
        .minion("master_alive_interval: 1")
        .build();
    let sidecar = Sidecar::start_with(
        &yaml,
        Launch {
            netns: Some(&lab),
            ..Launch::default()
        },
    );
    sidecar.log.wait_for(
        &["DNS answered with the sidecar's own address", "127.0.0.1"],
        SLOW,
    );
    let line = sidecar
        .log
        .wait_for(&["master is down", "salt-self.test"], SLOW);
    assert!(
        line.contains("unresolved") || line.contains("no address"),
        "{line}"
    );
    let text = lab.run(|| support::scrape(SocketAddr::from(([127, 0, 0, 1], 9464))));
    let skipped = support::sample(
        &text,
        "salt_sidecar_dns_resolutions_total",
        &[("result", "self_loop")],
    )
    .unwrap_or(0.0);
    assert!(skipped >= 1.0, "counted: {skipped}");
    assert_eq!(
        sidecar.log.count(&["session open"]),
        0,
        "no connection to itself"
    );
    sidecar.assert_no_panic();
}

#[test]
fn a_master_that_is_the_sidecar_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "master: [localhost]\nmaster_alive_interval: 1\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.yaml:1:10: master[0]: `localhost` is the sidecar itself"),
        "{err}"
    );
}
