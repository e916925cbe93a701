//! "Healthy means answers", against the real binary: ZeroMQ masters that
//! complete every handshake but are sick in the ways a stuck Salt master is
//! (issue 21). Master A is a raw ZMTP peer written here, so it can be sick
//! on purpose; B is the healthy stand-in master (`salt_sidecar::standin`).
//!
//! What a user would see:
//! - a master that reads the minion's requests and never answers is left
//!   within `ret_answer_timeout` + 3 s, and the minion's next request on its
//!   (moved) session is answered by B;
//! - the same when it then sends a frame announcing 2^62 bytes;
//! - a master that never reads after the handshake (so never sees the
//!   minion's FIN) cannot fill the session cap: each closed session is
//!   ended within `half_close_timeout`, and `/readyz` says "not ready" while
//!   the cap is full.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use salt_sidecar::config::WARM_UP;
use salt_sidecar::standin::ZmtpClient;
use salt_sidecar::zmtp::{self, saltreq, SocketType};
use support::{addr, ask, master, sample, scrape, until_answered_by, Sidecar, Yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(3);

/// How master A is sick, after a complete ZMTP handshake on both ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sick {
    /// Reads every request, answers none.
    Mute,
    /// Reads the first request, then sends a frame header announcing 2^62
    /// bytes and a few of them; reads on, answers nothing else.
    Huge,
    /// Never reads after the handshake (never sees a FIN), never closes.
    Deaf,
    /// Slow, not stuck: answers each minion request after this long, a
    /// `ping` at once (its workers are busy with long requests; one is free).
    Delay(Duration),
    /// Busy, not dead: reads 1 KiB a second on the ret port (its window
    /// stays shut for a minute at a time on loopback) and answers nothing.
    Slow,
}

/// What the slow master read of ret sessions, and whether one ended.
static SLOW_READ: AtomicU64 = AtomicU64::new(0);
static SLOW_ENDED: AtomicBool = AtomicBool::new(false);

/// Serves `port` of a sick master at `at` until the test ends.
async fn sick_port(at: SocketAddr, socket: SocketType, sick: Sick) {
    let listener = TcpListener::bind(at).await.expect("bind sick master");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            let task = tokio::spawn(sick_session(stream, socket, sick));
            held.push(task);
        }
    });
}

async fn sick_session(mut s: TcpStream, socket: SocketType, sick: Sick) {
    // The whole greeting at once, then the peer's, then READY both ways.
    if s.write_all(&zmtp::greeting_null(true)).await.is_err() {
        return;
    }
    let mut greeting = [0u8; zmtp::GREETING_LEN];
    if s.read_exact(&mut greeting).await.is_err() {
        return;
    }
    if s.write_all(&zmtp::encode_ready(socket)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    if sick == Sick::Deaf {
        // Reads the peer's READY (the probe needs nothing more), then
        // nothing, ever: a FIN stays unread, the connection is never closed.
        let _ = s.read(&mut buf).await;
        std::future::pending::<()>().await;
    }
    if sick == Sick::Slow && socket == SocketType::Router {
        // The probes' sessions (a READY, then a close) are not the
        // minion's: only a session that carried more counts.
        let (mut kib, mut total) = ([0u8; 1024], 0u64);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match s.read(&mut kib).await {
                Ok(0) | Err(_) => {
                    if total > 4096 {
                        SLOW_ENDED.store(true, Ordering::SeqCst);
                    }
                    return;
                }
                Ok(n) => {
                    total += n as u64;
                    SLOW_READ.fetch_max(total, Ordering::SeqCst);
                }
            };
        }
    }
    if let (Sick::Delay(delay), SocketType::Router) = (sick, socket) {
        return answer_late(s, delay).await;
    }
    let mut huge_sent = false;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // A request (past READY): past the handshake's ~30 bytes.
                if sick == Sick::Huge && !huge_sent && socket == SocketType::Router && n > 0 {
                    let mut frame = vec![0x02u8];
                    frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
                    frame.extend_from_slice(b"0123456789");
                    huge_sent = s.write_all(&frame).await.is_ok();
                }
            }
        }
    }
}

/// Answers every whole message on `s` with `[b"", b"A:" + last frame]`:
/// a `ping` at once, anything else after `delay`, in order.
async fn answer_late(s: TcpStream, delay: Duration) {
    let (mut rd, wr) = s.into_split();
    let wr = std::sync::Arc::new(tokio::sync::Mutex::new(wr));
    let (mut buf, mut parts) = (Vec::new(), Vec::<Vec<u8>>::new());
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ready_seen = false;
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((frame, used))) = zmtp::decode_frame(&buf, 1 << 20) {
            let message = match frame {
                zmtp::Frame::Command { .. } => {
                    ready_seen = true;
                    None
                }
                zmtp::Frame::Message { more, body } => {
                    parts.push(body.to_vec());
                    (!more).then(|| std::mem::take(&mut parts))
                }
            };
            buf.drain(..used);
            let Some(message) = message.filter(|_| ready_seen) else {
                continue;
            };
            let last = message.last().cloned().unwrap_or_default();
            let wait = if last == saltreq::PING_BODY {
                Duration::ZERO
            } else {
                delay
            };
            let wr = wr.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let mut reply = b"A:".to_vec();
                reply.extend_from_slice(&last);
                let _ = wr
                    .lock()
                    .await
                    .write_all(&zmtp::encode_message(&[b"", &reply]))
                    .await;
            });
        }
    }
}

/// Master A, sick on both ports, at 127.0.`net`.2.
async fn sick_master(net: u8, sick: Sick) {
    sick_port(addr(net, 2, 4505), SocketType::Pub, sick).await;
    sick_port(addr(net, 2, 4506), SocketType::Router, sick).await;
}

/// The lab of one test: the sick master A at .2, the healthy stand-in B at
/// .3, the sidecar at .1 with `sidecar` keys, once it has selected A.
struct Front {
    sidecar: Sidecar,
    ret: SocketAddr,
    admin: SocketAddr,
    a_label: String,
    _b: salt_sidecar::standin::StandinMaster,
}

async fn front(net: u8, sick: Sick, sidecar: &[(&str, &str)]) -> Front {
    sick_master(net, sick).await;
    let b = master("B", net, 3).await;
    let front = Front {
        sidecar: Sidecar::start(&config(net, sidecar)),
        ret: addr(net, 1, 4506),
        admin: addr(net, 1, 9464),
        a_label: format!("127.0.{net}.2"),
        _b: b,
    };
    front
        .sidecar
        .log
        .wait_for_async(
            &["selected master", &front.a_label],
            Duration::from_secs(10),
        )
        .await;
    front
}

fn config(net: u8, sidecar: &[(&str, &str)]) -> String {
    let masters = [format!("127.0.{net}.2"), format!("127.0.{net}.3")];
    let mut y = Yaml::new(&format!("127.0.{net}.1"), &masters)
        .minion("master_alive_interval: 1\nrandom_reauth_delay: 0\n")
        .sidecar("connect_timeout", "1s");
    for (k, v) in sidecar {
        y = y.sidecar(k, v);
    }
    y.build()
}

fn suspicions(admin: SocketAddr, master: &str, outcome: &str) -> f64 {
    sample(
        &scrape(admin),
        "salt_sidecar_passive_suspicions_total",
        &[
            ("master", master),
            ("transport", "zeromq"),
            ("outcome", outcome),
        ],
    )
    .unwrap_or(0.0)
}

/// `GET /readyz`: the status line and body.
fn readyz(admin: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).expect("admin endpoint");
    s.set_read_timeout(Some(T)).expect("timeout");
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// Waits until `/readyz` answers 200.
fn until_ready(admin: SocketAddr, limit: Duration) {
    let start = Instant::now();
    loop {
        let r = readyz(admin);
        if r.contains("200 OK") {
            return;
        }
        assert!(start.elapsed() < limit, "not ready again: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// When the minion asks A, relative to when the sidecar called A up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Age {
    /// A has been up past its warm-up: a master that goes mute in the field.
    Settled,
    /// At once: A may be a master whose workers are still starting.
    Fresh,
}

/// A minion session with a request A will never answer: the failover comes
/// within `ret_answer_timeout` (1 s) + 3 s of the request, confirmed by an
/// unanswered ZMTP `ping`, and the minion's next request on the same
/// (moved) session is answered by B. Asked in A's first seconds, the
/// unanswered ping is asked again each round until A has been up for
/// `WARM_UP`: left then, not before, and within that + 3 s. A minion that
/// then restarts (mute A) is not sent back to A.
async fn a_sick_master_is_left(net: u8, sick: Sick, age: Age) {
    let Front {
        sidecar,
        ret,
        admin,
        a_label,
        _b,
    } = front(net, sick, &[("ret_answer_timeout", "1s")]).await;
    let selected = Instant::now();
    if age == Age::Settled {
        // The precondition, not a synchronisation: A up for its warm-up.
        tokio::time::sleep(WARM_UP + Duration::from_millis(200)).await;
    }

    let mut minion = ZmtpClient::connect(ret, SocketType::Dealer, T)
        .await
        .expect("the minion's session");
    let asked = Instant::now();
    let unanswered = minion.request(b"job 1", Duration::from_millis(500)).await;
    assert!(unanswered.is_err(), "A answered: {unanswered:?}");
    let line = sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failover\""],
            WARM_UP + Duration::from_secs(8),
        )
        .await;
    let left = asked.elapsed();
    println!(
        "{sick:?} master A ({age:?}): left {:.2} s after the minion's request, {:.2} s after it was selected",
        left.as_secs_f64(),
        selected.elapsed().as_secs_f64()
    );
    match age {
        Age::Settled => assert!(
            left <= Duration::from_secs(4),
            "left {left:?} after the request: {line}"
        ),
        Age::Fresh => {
            // `selected` is read from the log a moment after A was called up.
            let since_up = selected.elapsed() + Duration::from_millis(300);
            assert!(
                since_up >= WARM_UP,
                "left {since_up:?} after A was selected: within its warm-up ({WARM_UP:?}): {line}"
            );
            assert!(
                left <= WARM_UP + Duration::from_secs(4),
                "left {left:?} after the request: {line}"
            );
            sidecar
                .log
                .wait_for(&["came up less than", "asking again"], T);
        }
    }
    assert_eq!(suspicions(admin, &a_label, "confirmed"), 1.0);
    assert_eq!(suspicions(admin, &a_label, "cleared"), 0.0);
    sidecar.log.wait_for(
        &[
            "suspected hung",
            "does not answer a ping either",
            &a_label,
            "transport=\"zeromq\"",
        ],
        T,
    );
    match sick {
        // Between messages: the session moved, the minion asks again on it.
        Sick::Mute => {
            let reply = minion
                .request(b"job 2", T)
                .await
                .expect("answered on the moved session");
            assert_eq!(reply, b"B:job 2");
            // The minion restarts. A, still mute, passes a check of its
            // handshakes; confirmed hung, it is not one a starting
            // minion's checks may call up (it would be sent back to A).
            let idle = sidecar.log.count(&["minion idle"]);
            drop(minion);
            sidecar
                .log
                .wait_for_more(&["minion idle"], idle, Duration::from_secs(5));
            assert_eq!(ask(ret).await.as_deref(), Some("B"), "the restarted minion");
            assert_eq!(
                sidecar.log.count(&["a minion is starting", &a_label]),
                0,
                "A was not called up"
            );
        }
        // Inside A's huge message: the session is reset; the minion's
        // reconnect is answered by B at once.
        _ => {
            until_answered_by(ret, "B", T).await;
        }
    }
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_master_is_left_within_the_answer_timeout_plus_3s() {
    a_sick_master_is_left(200, Sick::Mute, Age::Settled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_mute_from_its_start_is_left_after_its_warm_up() {
    a_sick_master_is_left(206, Sick::Mute, Age::Fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_master_that_sends_a_2_pow_62_frame_is_left_too() {
    a_sick_master_is_left(201, Sick::Huge, Age::Settled).await;
}

/// Minion connections that open and close against a master that never
/// reads: each session ends within `half_close_timeout` of the FIN, so 3×
/// the cap of them later a new minion connection is still served; while
/// the cap is full, `/readyz` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_never_reads_cannot_fill_the_session_cap() {
    let Front {
        sidecar,
        ret,
        admin,
        _b,
        ..
    } = front(
        202,
        Sick::Deaf,
        &[("max_sessions", "10"), ("half_close_timeout", "1s")],
    )
    .await;

    // Ten held sessions fill the cap: not ready, and says why.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(
            ZmtpClient::connect(ret, SocketType::Dealer, T)
                .await
                .expect("session"),
        );
    }
    let start = Instant::now();
    let full = loop {
        let r = readyz(admin);
        if r.contains("503") {
            break r;
        }
        assert!(start.elapsed() < T, "still ready with the cap full: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(full.contains("session cap is full"), "{full}");
    // The minion closes them; the master never closes its side, yet the
    // slots come back within the half-close bound.
    drop(held);
    until_ready(admin, Duration::from_secs(5));
    // Ready means one slot is free; the loop below needs all ten (under
    // load the ten half-close bounds end a little apart: a CI run reset
    // connection 5 of the next ten at the cap).
    let start = Instant::now();
    loop {
        let open: f64 = support::series(&scrape(admin), "salt_sidecar_sessions_active")
            .iter()
            .map(|(_, v)| v)
            .sum();
        if open == 0.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{open} sessions still open 5 s after the minion closed them"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Thirty more, each closed by the minion after its handshake: each
    // leaves a half-closed session the master never ends.
    for i in 0..30 {
        let c = ZmtpClient::connect(ret, SocketType::Dealer, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("connection {i} refused or not served: {e}"));
        drop(c);
        if i % 10 == 9 {
            // Every cap's worth, wait for the bound to free the slots.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    until_ready(admin, Duration::from_secs(5));
    let last = ZmtpClient::connect(ret, SocketType::Dealer, T).await;
    assert!(last.is_ok(), "a new minion connection is served: {last:?}");
    sidecar.assert_no_panic();
}

/// A master that reads slowly but steadily is busy, not dead: a minion
/// sending it 4 MiB (its window shut for a minute at a time: on loopback it
/// reopens one 64 KiB MSS at a time) is not cut. Before, TCP_USER_TIMEOUT
/// (fall × interval + connect_timeout = 3 s here) ended zero-window probing
/// and reset the session 2.8 s after the master stopped keeping up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_reading_1_kib_per_second_is_not_cut() {
    // The answer check off: this master answers nothing, on purpose; what
    // is under test is the flow's fate, not the master's.
    let Front {
        sidecar, ret, _b, ..
    } = front(203, Sick::Slow, &[("ret_answer_timeout", "0")]).await;
    let minion = TcpStream::connect(ret).await.expect("connect");
    let (mut rd, mut wr) = minion.into_split();
    // Whatever comes back (the greeting) is read and dropped; the minion's
    // side sees an end only if the session is cut.
    let cut = tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        loop {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    });
    let mut stream = zmtp::greeting_null(false).to_vec();
    stream.extend_from_slice(&zmtp::encode_ready(SocketType::Dealer));
    stream.extend_from_slice(&zmtp::encode_message(&[b"", &vec![7u8; 4 << 20]]));
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&stream).await;
        wr
    });
    let start = Instant::now();
    let watch = Duration::from_secs(12);
    tokio::time::sleep(watch).await;
    assert!(!cut.is_finished(), "the minion's session was cut");
    assert!(
        !SLOW_ENDED.load(Ordering::SeqCst),
        "the master's session ended"
    );
    let read = SLOW_READ.load(Ordering::SeqCst);
    println!(
        "slow master: read {read} bytes in {:.1} s, session kept",
        start.elapsed().as_secs_f64()
    );
    assert!(read >= 8 * 1024, "the master read only {read} bytes");
    assert!(
        !sidecar
            .log
            .lines()
            .iter()
            .any(|l| l.contains("session closed") && l.contains("MasterError")),
        "a ret session ended with a master error"
    );
    cut.abort();
    writer.abort();
    sidecar.assert_no_panic();
}

/// A master that answers slowly but answers is kept: at 80 % of
/// `ret_answer_timeout` no suspicion is raised at all; at 150 % each
/// suspicion is cleared by the prompt `ping` (one worker is free), and
/// nothing switches. Every request is answered by A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_answers_slowly_is_never_failed_over() {
    for (net, delay_ms, suspected) in [(204u8, 800u64, false), (205, 1500, true)] {
        let sick = Sick::Delay(Duration::from_millis(delay_ms));
        let Front {
            sidecar,
            ret,
            admin,
            a_label,
            _b,
        } = front(net, sick, &[("ret_answer_timeout", "1s")]).await;
        let mut minion = ZmtpClient::connect(ret, SocketType::Dealer, T)
            .await
            .expect("the minion's session");
        for i in 0..4 {
            let job = format!("job {i}");
            let reply = minion
                .request(job.as_bytes(), Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{delay_ms} ms: {job} unanswered: {e}"));
            assert_eq!(reply, format!("A:{job}").as_bytes(), "{delay_ms} ms");
        }
        // Let a late scan and its ping settle before counting.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let cleared = suspicions(admin, &a_label, "cleared");
        assert_eq!(
            suspicions(admin, &a_label, "confirmed"),
            0.0,
            "{delay_ms} ms"
        );
        if suspected {
            assert!(
                cleared >= 1.0,
                "{delay_ms} ms: no suspicion was raised and cleared"
            );
        } else {
            assert_eq!(
                cleared, 0.0,
                "{delay_ms} ms: within the bound, no suspicion"
            );
        }
        assert_eq!(
            sidecar.log.count(&["switched master"]),
            0,
            "{delay_ms} ms: a slow master was left"
        );
        println!("answers after {delay_ms} ms: kept, {cleared} suspicions cleared");
        sidecar.assert_no_panic();
    }
}
