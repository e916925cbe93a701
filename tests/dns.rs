//! DNS behaviour of the real binary against a tiny authoritative server.
//!
//! The sidecar resolves master names with hickory-resolver and the *system*
//! configuration. To point it at a test server without touching the
//! machine's resolver, each test runs the sidecar in a network namespace of
//! its own with `ip netns exec`, which bind-mounts
//! `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf` for that process
//! only. That file names `127.0.0.53`, where this test serves the zone (UDP
//! and TCP, built with hickory-proto). The namespace has nothing but its own
//! loopback: no query can leave it. Root only (skipped with a message
//! otherwise); the namespace and the `/etc/netns/<ns>` directory are removed
//! by a Drop guard, also on failure.
//!
//! What is checked: TTL changes are followed (the sidecar re-asks when the
//! answer expires, and moves to a new address); SERVFAIL and timeouts keep
//! the last good address; NXDOMAIN at start is reported and retried, and an
//! unresolved master is never mapped to 127.0.0.1 (a trap master listens
//! there and must see no connection).

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::dns::{Answer, Zone};
use support::netns::{self, Netns};
use support::{ask, Launch, Sidecar};
use tokio::net::TcpListener;

const MASTER: &str = "salt.sidecar.test";
/// Where the sidecar listens inside its namespace (127.0.0.1 is the trap's).
const LISTEN: [u8; 4] = [127, 0, 0, 100];

// === the lab: a namespace with its own resolv.conf ===

/// Root or skip (see [`netns::available`]).
fn lab_available(test: &str) -> bool {
    netns::available(test, &["ip"])
}

/// A network namespace whose resolv.conf (seen by the sidecar, which
/// [`sidecar`] starts with `ip netns exec`) names the test DNS server.
fn dns_lab(tag: &str) -> Netns {
    Netns::create(format!("ssc-dns-{tag}-{}", std::process::id())).with_etc(&[(
        "resolv.conf",
        "# salt-sidecar tests/dns.rs: the test's own DNS server, inside this namespace only\nnameserver 127.0.0.53\noptions timeout:1 attempts:1\n",
    )])
}

/// `salt-sidecar run` inside the lab's namespace, with its resolv.conf.
fn sidecar(lab: &Netns, yaml: &str) -> Sidecar {
    Sidecar::start_with(
        yaml,
        Launch {
            netns: Some(lab),
            ..Launch::default()
        },
    )
}

fn config(extra: &str) -> String {
    support::Yaml::new(&std::net::Ipv4Addr::from(LISTEN).to_string(), &[MASTER])
        .no_master_type()
        .id("dns-minion")
        .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
        .minion(extra)
        .build()
}

fn ret() -> SocketAddr {
    SocketAddr::from((LISTEN, 4506))
}

/// `salt_sidecar_dns_resolutions_total{result}` from the admin endpoint.
fn dns_resolutions(result: &str) -> u64 {
    let text = support::scrape(SocketAddr::from((LISTEN, 9464)));
    support::sample(
        &text,
        "salt_sidecar_dns_resolutions_total",
        &[("result", result)],
    )
    .unwrap_or(0.0) as u64
}

/// A "master" on 127.0.0.1:4505/4506 that must never be reached: what
/// Salt's own failover does with an unresolvable master.
async fn trap() -> Arc<AtomicU64> {
    let hits = Arc::new(AtomicU64::new(0));
    for port in [4505u16, 4506] {
        let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind trap");
        let hits = hits.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = l.accept().await {
                hits.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    hits
}

async fn master(name: &str, host: u8) -> salt_sidecar::standin::StandinMaster {
    salt_sidecar::standin::StandinMaster::start(
        name,
        SocketAddr::from(([127, 0, 0, host], 4505)),
        SocketAddr::from(([127, 0, 0, host], 4506)),
    )
    .await
    .expect("stand-in master")
}

/// Asks until `name` answers; returns how long that took.
async fn until(name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut seen: HashMap<String, u32> = HashMap::new();
    loop {
        let who = ask(ret()).await;
        if who.as_deref() == Some(name) {
            return start.elapsed();
        }
        *seen
            .entry(who.unwrap_or_else(|| "<none>".into()))
            .or_default() += 1;
        assert!(
            start.elapsed() < limit,
            "{name} did not answer within {limit:?}; answers: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === tests ===

/// The sidecar re-asks when the answer's TTL runs out (so a TTL change
/// changes how often it asks) and moves to a new address within the TTL.
#[test]
fn ttl_changes_are_followed() {
    if !lab_available("dns ttl") {
        return;
    }
    let lab = dns_lab("ttl");
    lab.block_on(|| async {
        let zone = Zone::a("sidecar.test", MASTER, Answer::Silence);
        zone.set(Answer::A {
            ip: Ipv4Addr::new(127, 0, 0, 2),
            ttl: 3,
        });
        support::dns::serve(zone.clone()).await;
        let trap = trap().await;
        let (one, two) = (master("one", 2).await, master("two", 3).await);
        let sidecar = sidecar(&lab, &config(""));
        until("one", Duration::from_secs(10)).await;

        // TTL 3: one query every ~3 s.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let q = zone.queries();
        let gaps3: Vec<f64> = q.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        eprintln!("dns ttl: TTL 3 s, re-asked after {gaps3:.2?} s");
        assert!(gaps3.len() >= 2, "not re-asked: {gaps3:?}");
        for g in &gaps3 {
            assert!((2.5..=4.5).contains(g), "re-asked after {g} s with TTL 3");
        }

        // TTL 1 and a new address: asked every ~1 s, and the minion moves.
        zone.set(Answer::A {
            ip: Ipv4Addr::new(127, 0, 0, 3),
            ttl: 1,
        });
        let changed = Instant::now();
        let took = until("two", Duration::from_secs(8)).await;
        eprintln!("dns ttl: new address answered {took:?} after the change");
        sidecar
            .log
            .wait_for_async(&["resolved", "127.0.0.3"], Duration::from_secs(2))
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let gaps1: Vec<f64> = zone
            .queries()
            .iter()
            .filter(|t| **t > changed)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| (*w[1] - *w[0]).as_secs_f64())
            .collect();
        eprintln!("dns ttl: TTL 1 s, re-asked after {gaps1:.2?} s");
        assert!(gaps1.len() >= 2, "not re-asked: {gaps1:?}");
        for g in &gaps1 {
            assert!((0.7..=2.0).contains(g), "re-asked after {g} s with TTL 1");
        }
        assert_eq!(trap.load(Ordering::Relaxed), 0, "127.0.0.1 was contacted");
        sidecar.assert_no_panic();
        drop((one, two));
    });
}

/// SERVFAIL and a silent server (timeouts) are failures: counted, logged,
/// and the last good address stays in use; the master is never lost.
#[test]
fn servfail_and_timeouts_keep_the_last_good_address() {
    if !lab_available("dns servfail") {
        return;
    }
    let lab = dns_lab("fail");
    lab.block_on(|| async {
        let zone = Zone::a("sidecar.test", MASTER, Answer::Silence);
        zone.set(Answer::A {
            ip: Ipv4Addr::new(127, 0, 0, 2),
            ttl: 1,
        });
        support::dns::serve(zone.clone()).await;
        let trap = trap().await;
        let (one, two) = (master("one", 2).await, master("two", 3).await);
        let sidecar = sidecar(&lab, &config(""));
        until("one", Duration::from_secs(10)).await;
        let ok_before = dns_resolutions("success");
        let down_before = sidecar.log.count(&["master is down"]);

        for (what, answer) in [("SERVFAIL", Answer::ServFail), ("timeout", Answer::Silence)] {
            let failures = dns_resolutions("failure");
            let asked = zone.queries().len();
            zone.set(answer);
            let started = Instant::now();
            let mut answered = 0;
            while started.elapsed() < Duration::from_secs(5) {
                assert_eq!(
                    ask(ret()).await.as_deref(),
                    Some("one"),
                    "{what}: the last good address was lost"
                );
                answered += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let counted = dns_resolutions("failure") - failures;
            eprintln!(
                "dns {what}: {} queries, {counted} failures counted, {answered} requests answered by the last good address",
                zone.queries().len() - asked
            );
            assert!(counted >= 1, "{what}: failure not counted");
            assert!(zone.queries().len() > asked, "{what}: not retried");
            sidecar
                .log
                .wait_for_async(&["DNS lookup failed; keeping the last good addresses"], Duration::from_secs(1))
                .await;
            // Back to a good answer before the next kind of failure.
            zone.set(Answer::A {
                ip: Ipv4Addr::new(127, 0, 0, 2),
                ttl: 1,
            });
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        // The good answer is back: the next lookup succeeds (after a
        // timeout the resolver may wait out its own retry first).
        let back = Instant::now();
        while dns_resolutions("success") <= ok_before {
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "no successful lookup after the failures"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            sidecar.log.count(&["master is down"]),
            down_before,
            "the master was lost:\n{}",
            sidecar.log.lines().join("\n")
        );
        // And a real change still gets through after the failures.
        zone.set(Answer::A {
            ip: Ipv4Addr::new(127, 0, 0, 3),
            ttl: 1,
        });
        let took = until("two", Duration::from_secs(15)).await;
        eprintln!("dns: a new address answered {took:?} after the failures ended");
        assert_eq!(trap.load(Ordering::Relaxed), 0, "127.0.0.1 was contacted");
        sidecar.assert_no_panic();
        drop((one, two));
    });
}

/// NXDOMAIN at start: reported (log and metric), retried, the master has no
/// address (never 127.0.0.1: the trap sees nothing) and minion connections
/// wait; once the name resolves, they are served.
#[test]
fn nxdomain_at_start_is_reported_retried_and_never_localhost() {
    if !lab_available("dns nxdomain") {
        return;
    }
    let lab = dns_lab("nx");
    lab.block_on(|| async {
        let zone = Zone::a("sidecar.test", MASTER, Answer::Silence);
        zone.set(Answer::NxDomain);
        support::dns::serve(zone.clone()).await;
        let trap = trap().await;
        let one = master("one", 2).await;
        let sidecar = sidecar(&lab, &config(""));
        let line = sidecar
            .log
            .wait_for_async(&["DNS lookup failed"], Duration::from_secs(5))
            .await;
        eprintln!("dns nxdomain: {line}");
        // A minion connecting meanwhile is held, not sent anywhere.
        assert_eq!(ask(ret()).await, None, "answered while the master has no address");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let retries = zone.queries().len();
        assert!(retries >= 2, "NXDOMAIN not retried ({retries} queries)");
        assert!(dns_resolutions("failure") >= 2);
        assert_eq!(trap.load(Ordering::Relaxed), 0, "an unresolved master was mapped to 127.0.0.1");

        zone.set(Answer::A {
            ip: Ipv4Addr::new(127, 0, 0, 2),
            ttl: 5,
        });
        let took = until("one", Duration::from_secs(20)).await;
        eprintln!("dns nxdomain: {retries} queries while NXDOMAIN; answered {took:?} after the name appeared");
        assert_eq!(trap.load(Ordering::Relaxed), 0, "127.0.0.1 was contacted");
        sidecar.assert_no_panic();
        drop(one);
    });
}

/// A master named by DNS is chosen at start-up like a literal address: no
/// "master is down" before its first answer, and the first choice is not
/// counted as a switch (docs/operations.md, Metrics: "the first choice at
/// start-up is not counted").
#[test]
fn a_dns_named_master_is_selected_at_start_without_a_down_or_a_counted_switch() {
    if !lab_available("dns start-up") {
        return;
    }
    let lab = dns_lab("start");
    lab.block_on(|| async {
        let zone = Zone::a("sidecar.test", MASTER, Answer::Silence);
        zone.set(Answer::A {
            ip: Ipv4Addr::new(127, 0, 0, 2),
            ttl: 30,
        });
        support::dns::serve(zone.clone()).await;
        let one = master("one", 2).await;
        let sidecar = sidecar(&lab, &config(""));
        until("one", Duration::from_secs(10)).await;
        let lines = sidecar.log.lines().join("\n");
        assert_eq!(
            sidecar.log.count(&["master is down"]),
            0,
            "down at start:\n{lines}"
        );
        assert_eq!(
            sidecar.log.count(&["switched master"]),
            0,
            "start-up counted as a switch:\n{lines}"
        );
        assert_eq!(
            sidecar.log.count(&["selected master"]),
            1,
            "no first choice:\n{lines}"
        );
        sidecar.assert_no_panic();
        drop(one);
    });
}
