//! A fleet is cheap for its masters: health from the minion's live sessions.
//!
//! Real ZeroMQ masters (`tests/helpers/zmq_master.py`: pyzmq PUB and
//! ROUTER, whose libzmq answers a ZMTP PING with PONG) and minion sessions
//! that announce ZMTP 3.1 and then stay idle. What a user sees:
//! - while a live session is open and idle, its master gets no probe
//!   connection at all (its checks are ZMTP PINGs on that session), and a
//!   standby gets a probe round only every 20–40 intervals (connections
//!   counted by a relay in front of each master);
//! - a master frozen with SIGSTOP is still failed over within 3 s at
//!   `master_alive_interval: 1` while the session is open and idle;
//! - a standby that died since its last (lazy) probe is never chosen: it is
//!   verified right before the switch (Rust stand-in masters A, B, C; B
//!   killed, then A within B's slow cadence: the sidecar goes to C).
//!
//! Needs the test venv (`./scripts/test-deps`); fails with that advice if
//! missing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use salt_sidecar::zmtp::{encode_message, encode_ready, greeting_null, SocketType};
use support::py::{Py, ZmqMaster};
use support::Sidecar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A pyzmq master (`zmq_master.py`) on `ip`:4505/4506 that publishes
/// nothing (a tick an hour): its sessions are quiet unless asked. Killed by
/// PID on drop (and continued first if stopped).
fn quiet_master(name: &str, ip: &str) -> Py {
    ZmqMaster {
        publish: format!("{ip}:4505").parse().expect("addr"),
        ret: format!("{ip}:4506").parse().expect("addr"),
        ..ZmqMaster::on(name, 0, 0, 3600.0)
    }
    .start()
}

/// A TCP relay in front of a master: what the master is sent passes
/// through unchanged; it counts the connections it accepts (each one a
/// connection the master accepts). Dropped: listener and relayed
/// connections closed.
struct Relay {
    accepted: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(listen: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(listen).await.expect("relay bind");
        let accepted = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (count, spawned) = (accepted.clone(), tasks.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let relayed = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                spawned.lock().expect("tasks").push(relayed);
            }
        });
        tasks.lock().expect("tasks").push(acceptor);
        Relay { accepted, tasks }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

/// An idle minion session announcing ZMTP 3.1 (as libzmq ≥ 4.2 does):
/// greeting, READY (and for a SUB a subscription to everything), then
/// silence; everything the master sends is collected.
struct Idle {
    writer: tokio::net::tcp::OwnedWriteHalf,
    got: Arc<Mutex<Vec<u8>>>,
}

impl Idle {
    async fn open(addr: SocketAddr, socket_type: SocketType) -> Idle {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the sidecar");
        let (mut reader, mut writer) = stream.into_split();
        let mut greeting = greeting_null(false);
        greeting[11] = 1; // ZMTP 3.1
        let mut hello = greeting.to_vec();
        hello.extend_from_slice(&encode_ready(socket_type));
        writer.write_all(&hello).await.expect("handshake");
        // The master's greeting and READY (a short frame), as libzmq waits
        // for them before it subscribes.
        let mut theirs = [0u8; 66];
        reader
            .read_exact(&mut theirs)
            .await
            .expect("master's greeting");
        let mut ready = vec![0u8; usize::from(theirs[65])];
        reader.read_exact(&mut ready).await.expect("master's READY");
        if socket_type == SocketType::Sub {
            // A ZMTP 3.1 SUBSCRIBE command to everything.
            writer
                .write_all(b"\x04\x0a\x09SUBSCRIBE")
                .await
                .expect("subscribe");
        }
        let got: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = got.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().expect("got").extend_from_slice(&buf[..n]);
            }
        });
        Idle { writer, got }
    }

    fn received(&self, needle: &[u8]) -> bool {
        let got = self.got.lock().expect("got");
        got.windows(needle.len()).any(|w| w == needle)
    }
}

fn metrics(net: u8) -> String {
    support::scrape(support::addr(net, 1, 9464))
}

/// `salt_sidecar_health_evidence_total` of `master`, summed over ports,
/// for `kind` and `result`.
fn evidence(text: &str, master: &str, kind: &str, result: &str) -> f64 {
    support::series(text, "salt_sidecar_health_evidence_total")
        .into_iter()
        .filter(|(labels, _)| {
            let has = |k: &str, v: &str| labels.iter().any(|(a, b)| a == k && b == v);
            has("master", master) && has("kind", kind) && has("result", result)
        })
        .map(|(_, v)| v)
        .sum()
}

async fn until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn yaml(net: u8, masters: &[&str]) -> String {
    support::Yaml::new(&format!("127.0.{net}.1"), masters)
        .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
        .sidecar("rise", "2")
        .sidecar("fall", "2")
        .sidecar("connect_timeout", "500ms")
        .sidecar("drain_timeout", "3s")
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_spares_its_master_every_probe_connection() {
    let net = 160;
    let _a = quiet_master("A", "127.0.160.12");
    let _b = quiet_master("B", "127.0.160.13");
    let relay_a = Relay::start(support::addr(net, 2, 4505), support::addr(net, 12, 4505)).await;
    let relay_a_ret = Relay::start(support::addr(net, 2, 4506), support::addr(net, 12, 4506)).await;
    let relay_b = Relay::start(support::addr(net, 3, 4505), support::addr(net, 13, 4505)).await;
    let relay_b_ret = Relay::start(support::addr(net, 3, 4506), support::addr(net, 13, 4506)).await;
    let sidecar = Sidecar::start(&yaml(net, &["127.0.160.2", "127.0.160.3"]));
    sidecar
        .log
        .wait_for_async(&["selected master", "127.0.160.2"], Duration::from_secs(10))
        .await;
    let mut ret = Idle::open(support::addr(net, 1, 4506), SocketType::Dealer).await;
    let _publish = Idle::open(support::addr(net, 1, 4505), SocketType::Sub).await;
    // The sessions carry A's checks: PINGs answered on both ports.
    until(
        "A checked by PINGs on both sessions",
        Duration::from_secs(10),
        || {
            let text = metrics(net);
            support::sample(
                &text,
                "salt_sidecar_health_evidence_total",
                &[
                    ("master", "127.0.160.2"),
                    ("port", "publish"),
                    ("kind", "ping"),
                    ("result", "ok"),
                ],
            )
            .unwrap_or(0.0)
                >= 1.0
                && support::sample(
                    &text,
                    "salt_sidecar_health_evidence_total",
                    &[
                        ("master", "127.0.160.2"),
                        ("port", "ret"),
                        ("kind", "ping"),
                        ("result", "ok"),
                    ],
                )
                .unwrap_or(0.0)
                    >= 1.0
        },
    )
    .await;
    let connections = |r: &Relay, s: &Relay| r.accepted() + s.accepted();
    let (a0, b0) = (
        connections(&relay_a, &relay_a_ret),
        connections(&relay_b, &relay_b_ret),
    );
    let before = metrics(net);
    // A measurement window of ten intervals.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = metrics(net);
    let (a1, b1) = (
        connections(&relay_a, &relay_a_ret),
        connections(&relay_b, &relay_b_ret),
    );
    let pings = evidence(&after, "127.0.160.2", "ping", "ok")
        - evidence(&before, "127.0.160.2", "ping", "ok");
    let probes_b = evidence(&after, "127.0.160.3", "probe", "ok")
        - evidence(&before, "127.0.160.3", "probe", "ok");
    eprintln!(
        "10 s idle: A accepted {} connections ({pings} PINGs answered), standby B {} ({probes_b} port probes)",
        a1 - a0,
        b1 - b0
    );
    assert_eq!(a1 - a0, 0, "the active master got probe connections");
    assert!(
        pings >= 8.0,
        "A was checked by {pings} PINGs in 10 s (one a round, the ports in turn)"
    );
    assert!(
        b1 - b0 <= 4,
        "the standby got {} connections in 10 intervals (a round is 2; every 20-40 intervals)",
        b1 - b0
    );
    // The session still works, and the PONGs reached the minion.
    ret.writer
        .write_all(&encode_message(&[b"", b"after pings"]))
        .await
        .expect("request");
    until(
        "A's answer on the idle session",
        Duration::from_secs(5),
        || ret.received(b"A:after pings"),
    )
    .await;
    assert!(
        ret.received(b"\x04PONG"),
        "the master's PONG reached the minion"
    );
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_master_with_an_idle_session_is_failed_over_within_3_s() {
    let net = 161;
    let a = quiet_master("A", "127.0.161.2");
    let _b = quiet_master("B", "127.0.161.3");
    let sidecar = Sidecar::start(&yaml(net, &["127.0.161.2", "127.0.161.3"]));
    sidecar
        .log
        .wait_for_async(&["selected master", "127.0.161.2"], Duration::from_secs(10))
        .await;
    let _ret = Idle::open(support::addr(net, 1, 4506), SocketType::Dealer).await;
    let _publish = Idle::open(support::addr(net, 1, 4505), SocketType::Sub).await;
    until("A checked by PINGs", Duration::from_secs(10), || {
        evidence(&metrics(net), "127.0.161.2", "ping", "ok") >= 2.0
    })
    .await;
    // Let one PING round pass, then freeze the whole master process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.signal("-STOP");
    let frozen = Instant::now();
    sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failover\""],
            Duration::from_secs(10),
        )
        .await;
    let took = frozen.elapsed();
    eprintln!("frozen master, idle session: failover {took:?} after SIGSTOP");
    assert!(took <= Duration::from_secs(3), "failover took {took:?}");
    let text = metrics(net);
    assert!(
        evidence(&text, "127.0.161.2", "ping", "failed") >= 1.0,
        "found by an unanswered PING"
    );
    a.signal("-CONT");
    sidecar.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_that_died_unseen_is_never_chosen() {
    let net = 162;
    let a = support::master("A", net, 2).await;
    let b = support::master("B", net, 3).await;
    let _c = support::master("C", net, 4).await;
    let sidecar = Sidecar::start(&yaml(net, &["127.0.162.2", "127.0.162.3", "127.0.162.4"]));
    let ret = support::addr(net, 1, 4506);
    support::until_answered_by(ret, "A", Duration::from_secs(10)).await;
    // A session stays open (a switch is a failover, not an idle move).
    let _session = TcpStream::connect(support::addr(net, 1, 4505))
        .await
        .expect("publish session");
    // B and C are standbys: after their first rounds, probed lazily.
    until(
        "the standbys on the slow cadence",
        Duration::from_secs(10),
        || sidecar.log.count(&["standby: probed every"]) >= 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.kill().await;
    // Within B's slow cadence (20-40 intervals): A dies too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    a.kill().await;
    let line = sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failover\""],
            Duration::from_secs(10),
        )
        .await;
    let took = killed.elapsed();
    eprintln!("A killed, B dead unseen: {line} ({took:?})");
    assert!(
        line.contains("to=127.0.162.4") || line.contains("to=\"127.0.162.4\""),
        "{line}"
    );
    assert!(took <= Duration::from_secs(2), "failover took {took:?}");
    let text = metrics(net);
    let to = support::sum_by(&text, "salt_sidecar_switches_total", "to");
    assert_eq!(
        to.get("127.0.162.3").copied().unwrap_or(0.0),
        0.0,
        "switched to the dead standby: {to:?}"
    );
    assert!(
        evidence(&text, "127.0.162.3", "on_demand", "failed") >= 1.0,
        "B was verified before the switch and failed"
    );
    support::until_answered_by(ret, "C", Duration::from_secs(5)).await;
    sidecar.assert_no_panic();
}
