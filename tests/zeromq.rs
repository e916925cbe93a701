//! The sidecar between real ZeroMQ peers: Python `pyzmq` masters (PUB on the
//! publish port, ROUTER on the ret port) and a `pyzmq` minion (DEALER + SUB),
//! from `tests/helpers/`. Masters are SIGKILLed by PID to simulate a crash.
//!
//! Needs the test venv (`./scripts/test-deps`); fails with that advice if missing.

mod support;

use std::time::{Duration, Instant};

use salt_sidecar::config::ProbeKind;
use salt_sidecar::master::Port;
use salt_sidecar::probe::{self, ProbeError};
use support::py::{zmq_master, Py, ZmqMaster};
use support::{config, Log, Sidecar};

/// Seconds (unix time) of the first minion event matching all `parts`, after `after`.
fn first_event_after(log: &Log, parts: &[&str], after: f64) -> Option<f64> {
    log.lines()
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .find_map(|l| {
            let t: f64 = l
                .split("\"t\": ")
                .nth(1)?
                .split([',', '}'])
                .next()?
                .trim()
                .parse()
                .ok()?;
            (t > after).then_some(t)
        })
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_zmtp_probe_accepts_real_pub_and_router_and_rejects_swapped_ports() {
    let _m = zmq_master("A", 20, 2, 0.1);
    let addrs = ["127.0.20.2".parse().unwrap()];
    let t = Duration::from_secs(2);
    probe::probe(ProbeKind::Zmtp, &addrs, 4505, Port::Publish, t)
        .await
        .expect("PUB on the publish port");
    probe::probe(ProbeKind::Zmtp, &addrs, 4506, Port::Ret, t)
        .await
        .expect("ROUTER on the ret port");
    // A master whose ports are swapped (ROUTER on 4505, PUB on 4506) is not healthy.
    let _s = ZmqMaster {
        publish: "127.0.20.3:4506".parse().expect("addr"),
        ret: "127.0.20.3:4505".parse().expect("addr"),
        ..ZmqMaster::on("S", 20, 3, 0.1)
    }
    .start();
    let swapped = ["127.0.20.3".parse().unwrap()];
    let e = probe::probe(ProbeKind::Zmtp, &swapped, 4505, Port::Publish, t)
        .await
        .expect_err("ROUTER is not PUB");
    assert!(matches!(e, ProbeError::Protocol(_)), "{e}");
    assert!(
        e.to_string().contains("ROUTER"),
        "the error names what was found: {e}"
    );
}

#[test]
fn a_zeromq_minion_survives_a_master_sigkill_and_fails_back() {
    let net = 21;
    let mut a = zmq_master("A", net, 2, 0.1);
    let _b = zmq_master("B", net, 3, 0.1);
    let interval = 1.0;
    let sidecar = Sidecar::start(&config(
        net,
        &["127.0.21.2", "127.0.21.3"],
        "master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 2\nrandom_reauth_delay: 0",
    ));
    let minion = Py::spawn(
        "zmq_minion.py",
        &[
            "--ret",
            "127.0.21.1:4506",
            "--publish",
            "127.0.21.1:4505",
            "--interval",
            "0.05",
            "--duration",
            "60",
        ]
        .map(String::from),
    );
    minion.out.wait_for(
        &["\"event\": \"reply\"", "\"from\": \"A\""],
        Duration::from_secs(10),
    );
    minion.out.wait_for(
        &["\"event\": \"tick\"", "\"from\": \"A\""],
        Duration::from_secs(10),
    );

    let killed = unix_now();
    a.sigkill();
    minion.out.wait_for(
        &["\"event\": \"reply\"", "\"from\": \"B\""],
        Duration::from_secs(10),
    );
    let first_b = first_event_after(
        &minion.out,
        &["\"event\": \"reply\"", "\"from\": \"B\""],
        killed,
    )
    .expect("a reply from B after the kill");
    let failover = first_b - killed;
    eprintln!("zeromq failover: first reply from B {failover:.2}s after SIGKILL of A");
    assert!(
        failover < 3.0 * interval,
        "failover took {failover:.2}s, more than 3 × alive interval"
    );
    // The publish side moved too (both ports go to the same master).
    minion.out.wait_for(
        &["\"event\": \"tick\"", "\"from\": \"B\""],
        Duration::from_secs(5),
    );
    sidecar.log.wait_for(
        &["switched master", "reason=\"failover\""],
        Duration::from_secs(5),
    );

    // Failback: A restarts; after rise + failback interval the minion is on A again.
    let replies_from_a = ["\"event\": \"reply\"", "\"from\": \"A\""];
    let before = minion.out.count(&replies_from_a);
    let restarted = unix_now();
    let started = Instant::now();
    let _a2 = zmq_master("A", net, 2, 0.1);
    sidecar.log.wait_for(
        &["switched master", "reason=\"failback\""],
        Duration::from_secs(15),
    );
    minion
        .out
        .wait_for_more(&replies_from_a, before, Duration::from_secs(10));
    let back_on_a = first_event_after(&minion.out, &replies_from_a, restarted)
        .expect("a reply from A after the restart");
    eprintln!(
        "zeromq failback: first reply from A {:.2}s after A restarted",
        back_on_a - restarted
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "no failback before the interval"
    );
    minion.out.wait_for(
        &["\"event\": \"tick\"", "\"from\": \"A\""],
        Duration::from_secs(5),
    );
}

/// A whole-fleet outage as a real ZeroMQ minion lives it: every master down
/// for three minutes while the minion (DEALER and SUB, giving up on each
/// connection whose handshake is not done in 500 ms) reconnects over and
/// over. The sidecar must release each held connection as the minion drops
/// it, so its descriptors stay flat, and serve the minion as soon as a
/// master returns: within rise × interval + 1 s.
#[test]
fn a_three_minute_outage_holds_flat_descriptors_and_a_returning_master_serves_at_once() {
    let net = 115;
    let sidecar = Sidecar::start_with(
        &config(
            net,
            &["127.0.115.2", "127.0.115.3"],
            "master_alive_interval: 1\nrandom_reauth_delay: 0",
        ),
        support::Launch {
            level: "salt_sidecar=info",
            nofile: Some(256),
            ..support::Launch::default()
        },
    );
    sidecar
        .log
        .wait_for(&["master is down", "127.0.115.3"], Duration::from_secs(10));
    let baseline = sidecar.fds();
    let outage = Duration::from_secs(180);
    let minion = Py::spawn(
        "zmq_minion.py",
        &[
            "--ret",
            "127.0.115.1:4506",
            "--publish",
            "127.0.115.1:4505",
            "--interval",
            "0.2",
            "--duration",
            "240",
            "--handshake-ivl",
            "500",
        ]
        .map(String::from),
    );
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < outage {
        // Descriptors have no event to await: sampled.
        std::thread::sleep(Duration::from_secs(5));
        most = most.max(sidecar.fds());
    }
    eprintln!("three-minute outage: descriptors {baseline} at the start, at most {most} during");
    // The minion's two connections, each held while it waits for a route.
    assert!(
        most <= baseline + 4,
        "descriptors grew from {baseline} to {most} during the outage"
    );
    assert_eq!(minion.out.count(&["\"event\": \"reply\""]), 0);

    let back = unix_now();
    let _a = zmq_master("A", net, 2, 0.1);
    let ready = unix_now();
    minion.out.wait_for(
        &["\"event\": \"reply\"", "\"from\": \"A\""],
        Duration::from_secs(10),
    );
    let served = first_event_after(
        &minion.out,
        &["\"event\": \"reply\"", "\"from\": \"A\""],
        back,
    )
    .expect("a reply from A");
    eprintln!(
        "master A back (ready {:.2}s after start): first reply {:.2}s after it was ready",
        ready - back,
        served - ready
    );
    // rise (2) × interval (1 s) + 1 s.
    assert!(
        served - ready <= 3.0,
        "served {:.2}s after the master returned",
        served - ready
    );
    minion.out.wait_for(
        &["\"event\": \"tick\"", "\"from\": \"A\""],
        Duration::from_secs(5),
    );
    sidecar.assert_no_panic();
}

/// One `salt_sidecar_session_moves_total` series from the sidecar on
/// 127.0.<net>.1 (its admin endpoint, port 9464).
fn moves(net: u8, port: &str, how: &str) -> u64 {
    let admin = support::addr(net, 1, 9464);
    let reply = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(salt_sidecar::status::request(
            admin,
            hyper::Method::GET,
            "/metrics",
            Duration::from_secs(5),
        ))
        .expect("GET /metrics");
    let (port, how) = (format!("port=\"{port}\""), format!("how=\"{how}\""));
    reply
        .body
        .lines()
        .find(|l| {
            l.starts_with("salt_sidecar_session_moves_total{")
                && l.contains(&port)
                && l.contains(&how)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no session_moves_total series {port} {how}:\n{}",
                reply.body
            )
        })
}

/// What a minion lived through: a SIGKILL of master A, then A's return
/// and a failback, with the minion's libzmq socket events watched.
struct Lived {
    /// First reply from B after the SIGKILL of A, in seconds.
    failover: f64,
    /// First reply from A after the failback switch was logged, in seconds.
    failback: f64,
    /// The minion's libzmq `DISCONNECTED` events (both sockets).
    disconnects: usize,
    handshakes: usize,
}

/// A real ZeroMQ minion (DEALER on ret, SUB on publish, socket monitor on)
/// through a sidecar in front of pyzmq masters A and B on 127.0.<net>.2/.3.
/// A is SIGKILLed; once the minion has replies and publications from B, A
/// comes back and the sidecar fails back to it.
fn kill_a_then_fail_back(net: u8, sidecar_yaml: &str) -> (Lived, Sidecar, Vec<Py>) {
    let mut a = zmq_master("A", net, 2, 0.1);
    let b = zmq_master("B", net, 3, 0.1);
    let sidecar = Sidecar::start(sidecar_yaml);
    let minion = Py::spawn(
        "zmq_minion.py",
        &[
            "--ret",
            &format!("127.0.{net}.1:4506"),
            "--publish",
            &format!("127.0.{net}.1:4505"),
            "--interval",
            "0.05",
            "--duration",
            "60",
            "--monitor",
        ]
        .map(String::from),
    );
    let reply = |from: &'static str| ["\"event\": \"reply\"", from];
    let tick = |from: &'static str| ["\"event\": \"tick\"", from];
    minion
        .out
        .wait_for(&reply("\"from\": \"A\""), Duration::from_secs(10));
    minion
        .out
        .wait_for(&tick("\"from\": \"A\""), Duration::from_secs(10));

    let killed = unix_now();
    a.sigkill();
    minion
        .out
        .wait_for(&reply("\"from\": \"B\""), Duration::from_secs(10));
    let failover = first_event_after(&minion.out, &reply("\"from\": \"B\""), killed)
        .expect("a reply from B after the kill")
        - killed;
    // The publish side is on B too: B filters by subscription, so its
    // ticks arrive only if the minion's subscription reached B.
    minion
        .out
        .wait_for(&tick("\"from\": \"B\""), Duration::from_secs(5));

    let (replies_a, ticks_a) = (
        minion.out.count(&reply("\"from\": \"A\"")),
        minion.out.count(&tick("\"from\": \"A\"")),
    );
    let a2 = zmq_master("A", net, 2, 0.1);
    sidecar.log.wait_for(
        &["switched master", "reason=\"failback\""],
        Duration::from_secs(15),
    );
    let switched = unix_now();
    minion.out.wait_for_more(
        &reply("\"from\": \"A\""),
        replies_a,
        Duration::from_secs(10),
    );
    let failback = first_event_after(&minion.out, &reply("\"from\": \"A\""), switched)
        .expect("a reply from A after the failback")
        - switched;
    minion
        .out
        .wait_for_more(&tick("\"from\": \"A\""), ticks_a, Duration::from_secs(5));
    let event = |what: &str| {
        minion
            .out
            .count(&["\"event\": \"monitor\"", &format!("\"what\": \"{what}\"")])
    };
    let lived = Lived {
        failover,
        failback,
        disconnects: event("DISCONNECTED"),
        handshakes: event("HANDSHAKE_SUCCEEDED"),
    };
    // Kept alive until the caller has read the metrics.
    (lived, sidecar, vec![a2, b, minion])
}

/// Issue 12 point 1: with the ZeroMQ transport a failover and a failback
/// move the minion's sessions; with `salt_events: false` the minion's
/// sockets never see a disconnect (by default the moved publish session is
/// closed afterwards so Salt's events fire: tests/events.rs).
#[test]
fn a_zeromq_minion_sees_no_disconnect_when_its_master_dies_or_fails_back() {
    let net = 150;
    let yaml = support::Yaml::new("127.0.150.1", &["127.0.150.2", "127.0.150.3"])
        .minion("master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 2\nrandom_reauth_delay: 0")
        .sidecar("drain_timeout", "3s")
        .sidecar("salt_events", "false")
        .build();
    let (lived, sidecar, _alive) = kill_a_then_fail_back(net, &yaml);
    eprintln!(
        "preserved sessions: first reply from B {:.3}s after SIGKILL of A; first reply from A {:.3}s after the failback switch",
        lived.failover, lived.failback
    );
    assert_eq!(lived.disconnects, 0, "the minion saw a disconnect");
    assert_eq!(
        lived.handshakes, 2,
        "one ZMTP handshake per minion socket, ever"
    );
    // A request in flight to A when it died is lost (the minion's own
    // timeout, 0.5 s here, retries it): one request timeout plus a little.
    assert!(lived.failover < 1.5, "failover took {:.2}s", lived.failover);
    // A failback moves sessions once they are quiet (2 s) or at the drain
    // timeout (3 s here); this minion is never quiet (a request every 50 ms,
    // ZMTP heartbeats every 200 ms), so it moves at the deadline, stopped at
    // a message boundary: the drain timeout plus one request timeout.
    assert!(lived.failback < 4.5, "failback took {:.2}s", lived.failback);
    for port in ["publish", "ret"] {
        assert!(
            moves(net, port, "preserved") >= 2,
            "{port}: failover and failback each moved the session"
        );
        assert_eq!(moves(net, port, "reset"), 0, "{port}: nothing was cut");
    }
    sidecar
        .log
        .wait_for(&["session moved"], Duration::from_secs(1));
    sidecar.assert_no_panic();
}

/// `probe: tcp` (Salt's tcp transport) sessions cannot be followed: they
/// are cut as before, and counted so.
#[test]
fn a_probe_tcp_session_is_still_reset_and_counted() {
    let net = 151;
    let yaml = support::Yaml::new("127.0.151.1", &["127.0.151.2", "127.0.151.3"])
        .minion("master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 2\nrandom_reauth_delay: 0")
        .sidecar("drain_timeout", "3s")
        .sidecar("probe", "tcp")
        .build();
    let (lived, sidecar, _alive) = kill_a_then_fail_back(net, &yaml);
    eprintln!(
        "reset sessions (probe: tcp): first reply from B {:.3}s after SIGKILL of A; first reply from A {:.3}s after the failback switch",
        lived.failover, lived.failback
    );
    assert!(lived.disconnects >= 2, "the minion's sessions were cut");
    for port in ["publish", "ret"] {
        assert_eq!(
            moves(net, port, "preserved"),
            0,
            "{port}: tcp is never moved"
        );
        assert!(
            moves(net, port, "reset") >= 1,
            "{port}: the failback's drain is counted as a reset"
        );
    }
    sidecar.assert_no_panic();
}
