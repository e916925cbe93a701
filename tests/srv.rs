//! `sidecar.master_srv`: the master list from a DNS SRV record (RFC 2782),
//! against two real DNS servers: the tiny authoritative server of these
//! tests (hickory-proto, as in tests/dns.rs) and Debian's dnsmasq
//! (`--srv-host`). Records change mid-test.
//!
//! Like tests/dns.rs, each test runs the real binary in a network namespace
//! of its own (`ip netns exec`, so `/etc/netns/<ns>/resolv.conf` names the
//! test's server at 127.0.0.53); nothing can leave the namespace, and its
//! 127.0.0.0/8 is private (the sidecar on 127.0.0.140, masters on .141..).
//! Root only (skipped with a message otherwise); dnsmasq is required
//! (scripts/test-deps installs `dnsmasq-base`).
//!
//! What is checked: the record is asked again when its TTL runs out, but
//! never more often than every 5 s (TTL 0, as Consul serves); `/status`
//! shows the record, each master's priority and weight and the last
//! refresh; a priority swap moves the minion; a removed target's sessions
//! drain; NXDOMAIN at start is reported with the record's name and retried,
//! SERVFAIL keeps the last good masters; weights spread a fleet of minion
//! ids in proportion.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use salt_sidecar::standin::{StandinMaster, ZmtpClient};
use salt_sidecar::status::{self, StatusReport};
use salt_sidecar::zmtp::SocketType;
use support::dns::{Answer, Srv, Zone};
use support::netns::{self, Netns};
use support::{ask, Launch, Sidecar, T};

const RECORD: &str = "_salt._tcp.lab.test";
/// The DNS server, inside each namespace.
const DNS: [u8; 4] = [127, 0, 0, 53];

// === the lab ===

fn lab(tag: &str) -> Option<Netns> {
    if !netns::available(&format!("srv {tag}"), &["ip"]) {
        return None;
    }
    Some(
        Netns::create(format!("ssc-srv-{tag}-{}", std::process::id())).with_etc(&[(
            "resolv.conf",
            "# salt-sidecar tests/srv.rs: the test's own DNS server, inside this namespace only\nnameserver 127.0.0.53\noptions timeout:1 attempts:1\n",
        )]),
    )
}

/// 127.0.0.<host>.
fn ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, host)
}

/// A sidecar on 127.0.0.<host> following [`RECORD`].
fn config(host: u8, id: &str, extra: &str) -> String {
    support::Yaml::srv(&ip(host).to_string(), RECORD)
        .id(id)
        .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
        .minion(extra)
        .sidecar("drain_timeout", "5s")
        .build()
}

fn start(lab: &Netns, yaml: &str) -> Sidecar {
    Sidecar::start_with(
        yaml,
        Launch {
            netns: Some(lab),
            ..Launch::default()
        },
    )
}

fn ret(host: u8) -> SocketAddr {
    SocketAddr::from((ip(host), 4506))
}

fn admin(host: u8) -> SocketAddr {
    SocketAddr::from((ip(host), 9464))
}

async fn master(name: &str, host: u8) -> StandinMaster {
    StandinMaster::start(
        name,
        SocketAddr::from((ip(host), 4505)),
        SocketAddr::from((ip(host), 4506)),
    )
    .await
    .expect("stand-in master")
}

async fn report(host: u8) -> StatusReport {
    status::fetch(&admin(host).into(), T)
        .await
        .expect("status")
        .0
}

fn srv_lookups(host: u8, result: &str) -> u64 {
    let text = support::scrape(admin(host));
    support::sample(
        &text,
        "salt_sidecar_srv_lookups_total",
        &[("result", result)],
    )
    .unwrap_or(0.0) as u64
}

/// Asks through the sidecar on `host` until `name` answers; returns how
/// long that took. Every answer seen is in the panic message.
async fn until(host: u8, name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        let who = ask(ret(host)).await;
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

/// `/status` until `done` holds for it (or panic after `limit`).
async fn status_until(
    host: u8,
    limit: Duration,
    what: &str,
    done: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let start = Instant::now();
    loop {
        let r = report(host).await;
        if done(&r) {
            return r;
        }
        assert!(
            start.elapsed() < limit,
            "no {what} within {limit:?}: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === dnsmasq ===

/// dnsmasq serving `srv` (`--srv-host`) and `hosts` (`--host-record`) on
/// 127.0.0.53 inside the test's namespace, with `--local-ttl`; killed (by
/// PID) on drop.
struct Dnsmasq {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts it and waits until it answers the SRV query with `srv`.
    async fn start(srv: &[Srv], hosts: &[(&str, Ipv4Addr)], ttl: u32) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = std::process::Command::new("dnsmasq");
        cmd.arg(format!("--pid-file={}", dir.path().join("pid").display()));
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--listen-address=127.0.0.53",
            "--bind-interfaces",
            "--local=/lab.test/",
            &format!("--local-ttl={ttl}"),
        ]);
        for (priority, weight, port, target) in srv {
            cmd.arg(format!(
                "--srv-host={RECORD},{target},{port},{priority},{weight}"
            ));
        }
        for (host, addr) in hosts {
            cmd.arg(format!("--host-record={host},{addr}"));
        }
        // Started from the test's thread, which is inside the namespace.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (scripts/test-deps installs dnsmasq-base)");
        let d = Dnsmasq { child, _dir: dir };
        let want: Vec<(u16, u16, u16, String)> = srv
            .iter()
            .map(|(p, w, port, t)| (*p, *w, *port, t.to_string()))
            .collect();
        let started = Instant::now();
        loop {
            let mut got = lookup_srv().await.unwrap_or_default();
            got.sort();
            let mut want = want.clone();
            want.sort();
            if got == want {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "dnsmasq does not serve the record: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SRV record as 127.0.0.53 serves it now (asked directly, uncached).
async fn lookup_srv() -> Option<Vec<(u16, u16, u16, String)>> {
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
    use hickory_resolver::name_server::TokioConnectionProvider;
    let servers = NameServerConfigGroup::from_ips_clear(&[DNS.into()], 53, true);
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(500);
    opts.attempts = 1;
    let resolver = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], servers),
        TokioConnectionProvider::default(),
    )
    .with_options(opts)
    .build();
    let lookup = resolver.srv_lookup(format!("{RECORD}.")).await.ok()?;
    Some(
        lookup
            .iter()
            .map(|s| {
                (
                    s.priority(),
                    s.weight(),
                    s.port(),
                    s.target().to_utf8().trim_end_matches('.').to_string(),
                )
            })
            .collect(),
    )
}

// === tests ===

/// TTL 0 (Consul's) is asked again every 5 s, not in a loop; TTL 7 after 7 s.
/// `/status` shows the record, each master's priority and weight and the
/// last refresh; `status` prints them. Swapping the priorities moves the
/// minion (failback on: after `master_failback_interval`, its sessions
/// moving at their next message boundary).
#[test]
fn ttl_is_followed_within_bounds_status_shows_the_record_and_a_priority_swap_moves_the_minion() {
    let Some(lab) = lab("ttl") else { return };
    lab.block_on(|| async {
        let zone = Zone::srv(
            "lab.test",
            RECORD,
            Answer::Srv {
                records: vec![(10, 1, 4506, "a.lab.test"), (20, 1, 4506, "b.lab.test")],
                ttl: 0,
            },
            vec![("a.lab.test", ip(141)), ("b.lab.test", ip(142))],
        );
        support::dns::serve(zone.clone()).await;
        let (a, b) = (master("A", 141).await, master("B", 142).await);
        let sidecar = start(
            &lab,
            &config(
                140,
                "srv-minion",
                "master_failback: true\nmaster_failback_interval: 1",
            ),
        );
        let took = until(140, "A", Duration::from_secs(10)).await;
        eprintln!("srv: A (priority 10) answered {took:?} after start");
        assert_eq!(
            sidecar.log.count(&["switched master"]),
            0,
            "the record's first answer is a start, not a switch:\n{}",
            sidecar.log.lines().join("\n")
        );

        // TTL 0: asked again after 5 s (the floor), not more often.
        let asked = zone.queries().len();
        tokio::time::sleep(Duration::from_secs(11)).await;
        let q = zone.queries();
        let gaps: Vec<f64> = q[asked.saturating_sub(1)..]
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        eprintln!("srv: TTL 0, asked again after {gaps:.2?} s");
        assert!(!gaps.is_empty(), "not asked again: {gaps:?}");
        for g in &gaps {
            assert!(
                (4.8..=6.5).contains(g),
                "asked again after {g} s with TTL 0"
            );
        }

        let r = report(140).await;
        let srv = r.srv.clone().expect("srv in /status");
        assert_eq!(srv.record, RECORD);
        assert_eq!(srv.targets, 2);
        assert_eq!(srv.ttl_seconds, Some(0));
        assert!(srv.last_error.is_none(), "{srv:?}");
        let age = srv.last_refresh_age_seconds.expect("refreshed");
        assert!(age < 6.5, "last refresh {age} s ago with TTL 0");
        let rows: Vec<(&str, Option<u16>, Option<u16>, bool)> = r
            .masters
            .iter()
            .map(|m| (m.master.as_str(), m.priority, m.weight, m.active))
            .collect();
        assert_eq!(
            rows,
            [
                ("a.lab.test", Some(10), Some(1), true),
                ("b.lab.test", Some(20), Some(1), false)
            ]
        );
        let table = lab.exec(&[
            env!("CARGO_BIN_EXE_salt-sidecar"),
            "status",
            "--admin",
            &admin(140).to_string(),
        ]);
        eprintln!("srv: salt-sidecar status:\n{table}");
        assert!(
            table.contains(&format!("srv:         {RECORD}: 2 targets, refreshed")),
            "{table}"
        );
        assert!(
            table.contains("PRIO/WEIGHT") && table.contains("10/1"),
            "{table}"
        );
        assert!(srv_lookups(140, "success") >= 2);

        // Swap the priorities (TTL 7 now): within one refresh (5 s) and the
        // failback interval, the minion is on B.
        let mut on_a = ZmtpClient::connect(ret(140), SocketType::Dealer, T)
            .await
            .expect("connect");
        assert_eq!(on_a.request(b"1", T).await.expect("reply"), b"A:1");
        let moved_before = support::moved(admin(140), "ret");
        zone.set(Answer::Srv {
            records: vec![(20, 1, 4506, "a.lab.test"), (10, 1, 4506, "b.lab.test")],
            ttl: 7,
        });
        let swapped = Instant::now();
        let took = until(140, "B", Duration::from_secs(15)).await;
        eprintln!("srv: priority swap: B answered {took:?} after the record changed");
        let line = sidecar
            .log
            .wait_for_async(&["SRV record changed", "added: [], removed: []"], T)
            .await;
        eprintln!("srv: {line}");
        sidecar
            .log
            .wait_for_async(
                &[
                    "switched master",
                    "to=\"b.lab.test\"",
                    "reason=\"reload\"",
                    "old_sessions=\"moving\"",
                ],
                T,
            )
            .await;
        // The session to A moves to B (once quiet for 2 s), it is not reset.
        support::until_moved(admin(140), "ret", moved_before, Duration::from_secs(6)).await;
        assert_eq!(
            on_a.request(b"2", T)
                .await
                .expect("the moved session answers"),
            b"B:2"
        );
        let r = status_until(140, T, "new priorities", |r| {
            r.masters.first().map(|m| (m.master.as_str(), m.priority))
                == Some(("b.lab.test", Some(10)))
        })
        .await;
        assert_eq!(r.active.as_deref(), Some("b.lab.test"));
        // TTL 7: asked again after ~7 s.
        let after: Vec<Instant> = zone
            .queries()
            .into_iter()
            .filter(|t| *t > swapped)
            .collect();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let later: Vec<Instant> = zone
            .queries()
            .into_iter()
            .filter(|t| *t > swapped)
            .collect();
        let gaps: Vec<f64> = later
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        eprintln!(
            "srv: TTL 7, asked again after {gaps:.2?} s ({} queries before)",
            after.len()
        );
        assert!(!gaps.is_empty(), "not asked again");
        for g in &gaps {
            assert!(
                (6.5..=8.5).contains(g),
                "asked again after {g} s with TTL 7"
            );
        }
        sidecar.assert_no_panic();
        drop((a, b));
    });
}

/// NXDOMAIN at start: an error naming the record, counted (`empty`) and
/// retried; minion connections wait. Once the record appears, the minion is
/// served; SERVFAIL and an empty answer later keep the last good masters.
#[test]
fn nxdomain_at_start_is_reported_and_retried_and_servfail_keeps_the_last_good_masters() {
    let Some(lab) = lab("nx") else { return };
    lab.block_on(|| async {
        let zone = Zone::srv("lab.test", RECORD, Answer::NxDomain, vec![("a.lab.test", ip(141))]);
        support::dns::serve(zone.clone()).await;
        let a = master("A", 141).await;
        let sidecar = start(&lab, &config(140, "srv-minion", ""));
        let line = sidecar
            .log
            .wait_for_async(
                &[&format!("SRV record `{RECORD}`: no such name (NXDOMAIN); no masters yet, retrying")],
                Duration::from_secs(5),
            )
            .await;
        eprintln!("srv nxdomain: {line}");
        assert!(line.contains("ERROR"), "{line}");
        assert_eq!(ask(ret(140)).await, None, "answered without masters");
        let r = report(140).await;
        let srv = r.srv.expect("srv");
        assert_eq!(srv.targets, 0);
        assert!(srv.last_refresh.is_none());
        assert_eq!(srv.last_error.as_deref(), Some("no such name (NXDOMAIN)"));
        assert!(!r.ready, "not ready without masters");
        assert_eq!(
            r.ready_reason,
            format!("no masters yet: the SRV record {RECORD} has not answered with any (no such name (NXDOMAIN))")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let retries = zone.queries().len();
        assert!(retries >= 2, "NXDOMAIN not retried ({retries} queries)");
        assert!(srv_lookups(140, "empty") >= 2);

        zone.set(Answer::Srv {
            records: vec![(10, 1, 4506, "a.lab.test")],
            ttl: 1,
        });
        let took = until(140, "A", Duration::from_secs(20)).await;
        eprintln!("srv nxdomain: {retries} queries while NXDOMAIN; A answered {took:?} after the record appeared");
        assert_eq!(sidecar.log.count(&["switched master"]), 0, "the first masters are a start");
        // A reload of the file (SIGHUP) keeps the masters the record named.
        sidecar.signal("HUP");
        sidecar.log.wait_for_async(&["reload: no change"], T).await;
        assert_eq!(ask(ret(140)).await.as_deref(), Some("A"), "a reload lost the SRV masters");

        for (what, answer, result) in [
            ("SERVFAIL", Answer::ServFail, "failure"),
            ("an empty answer", Answer::Srv { records: vec![], ttl: 1 }, "empty"),
            ("NXDOMAIN", Answer::NxDomain, "empty"),
        ] {
            let counted = srv_lookups(140, result);
            let warned = sidecar.log.count(&["keeping the last good masters"]);
            zone.set(answer);
            let log = sidecar.log.clone();
            tokio::task::spawn_blocking(move || {
                log.wait_for_more(&["keeping the last good masters"], warned, Duration::from_secs(8))
            })
            .await
            .expect("log wait");
            let started = Instant::now();
            while srv_lookups(140, result) == counted {
                assert!(started.elapsed() < Duration::from_secs(8), "{what} not counted");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(ask(ret(140)).await.as_deref(), Some("A"), "{what}: the masters were lost");
            let srv = report(140).await.srv.expect("srv");
            assert_eq!(srv.targets, 1, "{what}: {srv:?}");
            assert!(srv.last_error.is_some(), "{what}: {srv:?}");
            eprintln!("srv {what}: counted as {result}, the last good master still answers; /status: {:?}", srv.last_error);
            zone.set(Answer::Srv {
                records: vec![(10, 1, 4506, "a.lab.test")],
                ttl: 1,
            });
            status_until(140, Duration::from_secs(40), "recovery", |r| {
                r.srv.as_ref().is_some_and(|s| s.last_error.is_none())
            })
            .await;
        }
        assert_eq!(sidecar.log.count(&["master is down"]), 0, "{}", sidecar.log.lines().join("\n"));
        sidecar.assert_no_panic();
        drop(a);
    });
}

/// dnsmasq serves the record; restarted with new flags, the record changes:
/// a removed target's sessions move to the next master (not reset), new
/// connections go there too; a target added back is probed before
/// it is used and, being preferred, taken (failback).
#[test]
fn dnsmasq_a_removed_target_moves_its_sessions_and_an_added_one_is_probed_first() {
    let Some(lab) = lab("dnsmasq") else { return };
    lab.block_on(|| async {
        let hosts = [("a.lab.test", ip(141)), ("b.lab.test", ip(142))];
        let both = [(10, 1, 4506, "a.lab.test"), (20, 1, 4506, "b.lab.test")];
        let dns = Dnsmasq::start(&both, &hosts, 1).await;
        let (a, b) = (master("A", 141).await, master("B", 142).await);
        let sidecar = start(
            &lab,
            &config(
                140,
                "srv-minion",
                "master_failback: true\nmaster_failback_interval: 1",
            ),
        );
        until(140, "A", Duration::from_secs(10)).await;
        let mut on_a = ZmtpClient::connect(ret(140), SocketType::Dealer, T)
            .await
            .expect("connect");
        assert_eq!(on_a.request(b"1", T).await.expect("reply"), b"A:1");
        let moved_before = support::moved(admin(140), "ret");

        // a.lab.test leaves the record.
        drop(dns);
        let dns = Dnsmasq::start(&both[1..], &hosts, 1).await;
        let removed = Instant::now();
        let line = sidecar
            .log
            .wait_for_async(
                &["SRV record changed", "added: [], removed: [a.lab.test]"],
                Duration::from_secs(10),
            )
            .await;
        eprintln!("srv dnsmasq: {line}");
        sidecar
            .log
            .wait_for_async(
                &["reload: master removed; its sessions move", "a.lab.test"],
                T,
            )
            .await;
        sidecar
            .log
            .wait_for_async(
                &[
                    "switched master",
                    "from=\"none\"",
                    "to=\"b.lab.test\"",
                    "reason=\"reload\"",
                ],
                T,
            )
            .await;
        // Moved once quiet for 2 s (it has been, since its request).
        support::until_moved(admin(140), "ret", moved_before, Duration::from_secs(6)).await;
        assert_eq!(
            on_a.request(b"2", T).await.expect("the moved session answers"),
            b"B:2"
        );
        eprintln!(
            "srv dnsmasq: the session to the removed target answered by B {:?} after the record changed",
            removed.elapsed()
        );
        assert_eq!(ask(ret(140)).await.as_deref(), Some("B"));
        let r = report(140).await;
        let names: Vec<&str> = r.masters.iter().map(|m| m.master.as_str()).collect();
        assert_eq!(names, ["b.lab.test"]);
        let metrics = support::scrape(admin(140));
        assert!(
            !metrics.contains("salt_sidecar_master_up{master=\"a.lab.test\"}"),
            "a removed master's state gauges are gone"
        );

        // a.lab.test comes back, preferred: probed first (up in the log
        // before the switch), then taken.
        let was_up = sidecar.log.count(&["master is up", "master=a.lab.test"]);
        drop(dns);
        let _dns = Dnsmasq::start(&both, &hosts, 1).await;
        let log = sidecar.log.clone();
        tokio::task::spawn_blocking(move || {
            log.wait_for_more(
                &["master is up", "master=a.lab.test"],
                was_up,
                Duration::from_secs(10),
            )
        })
        .await
        .expect("log wait");
        let took = until(140, "A", Duration::from_secs(10)).await;
        eprintln!("srv dnsmasq: added back: probed up, then A answered {took:?} later");
        let lines = sidecar.log.lines();
        let up_at = lines
            .iter()
            .rposition(|l| l.contains("master is up") && l.contains("a.lab.test"));
        let switch_at = lines
            .iter()
            .rposition(|l| l.contains("switched master") && l.contains("to=\"a.lab.test\""));
        assert!(
            up_at < switch_at,
            "switched before the probe:\n{}",
            lines.join("\n")
        );
        sidecar.assert_no_panic();
        drop((a, b));
    });
}

/// Weights 3:1 (and a lower-priority target) served by dnsmasq: a fleet
/// of 1,000 minion ids, each ordered as a sidecar orders them, puts 75 % ±
/// 3 on the weight-3 target, 25 % on the weight-1 one, none first on the
/// priority-20 one. Real sidecars with ids from both sides of the split
/// pick what that predicts.
#[test]
fn dnsmasq_weights_spread_a_fleet_of_minion_ids_in_proportion() {
    let Some(lab) = lab("weights") else { return };
    lab.block_on(|| async {
        let hosts = [
            ("heavy.lab.test", ip(141)),
            ("light.lab.test", ip(142)),
            ("backup.lab.test", ip(143)),
        ];
        let records = [
            (10, 30, 4506, "heavy.lab.test"),
            (10, 10, 4506, "light.lab.test"),
            (20, 100, 4506, "backup.lab.test"),
        ];
        let _dns = Dnsmasq::start(&records, &hosts, 30).await;
        let served: Vec<salt_sidecar::srv::Target> = lookup_srv()
            .await
            .expect("answer")
            .into_iter()
            .map(|(priority, weight, port, host)| salt_sidecar::srv::Target {
                priority,
                weight,
                port,
                host,
            })
            .collect();
        let own: [SocketAddr; 2] = [ret(140), SocketAddr::from((ip(140), 4505))];
        let (masters, _) = salt_sidecar::srv::masters(&served, 4505, &own);
        let first = |id: &str| -> String {
            let order = salt_sidecar::select::srv_order(id, &masters);
            masters[order[0].index()].label.clone()
        };
        let n = 1_000;
        let mut fleet: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..n {
            *fleet.entry(first(&format!("web-{i:04}.example.net"))).or_default() += 1;
        }
        let share = |m: &str| fleet.get(m).copied().unwrap_or(0) as f64 / n as f64;
        eprintln!(
            "srv weights 30:10 (+ priority 20): first choices of {n} minion ids: {fleet:?} (heavy {:.1} %, light {:.1} %)",
            100.0 * share("heavy.lab.test"),
            100.0 * share("light.lab.test")
        );
        assert!((share("heavy.lab.test") - 0.75).abs() <= 0.03, "{fleet:?}");
        assert!((share("light.lab.test") - 0.25).abs() <= 0.03, "{fleet:?}");
        assert_eq!(share("backup.lab.test"), 0.0, "{fleet:?}");

        // Real sidecars: two ids predicted on each of heavy and light.
        let _masters = (
            master("heavy", 141).await,
            master("light", 142).await,
            master("backup", 143).await,
        );
        let mut picks: Vec<(String, &str)> = Vec::new();
        for want in ["heavy.lab.test", "light.lab.test"] {
            picks.extend(
                (0..n)
                    .map(|i| format!("web-{i:04}.example.net"))
                    .filter(|id| first(id) == want)
                    .take(2)
                    .map(|id| (id, want)),
            );
        }
        let sidecars: Vec<(u8, Sidecar)> = picks
            .iter()
            .enumerate()
            .map(|(i, (id, _))| {
                let host = 150 + i as u8;
                (host, start(&lab, &config(host, id, "")))
            })
            .collect();
        for ((host, sidecar), (id, want)) in sidecars.iter().zip(&picks) {
            let name = want.split('.').next().expect("name");
            until(*host, name, Duration::from_secs(15)).await;
            let r = report(*host).await;
            assert_eq!(r.active.as_deref(), Some(*want), "{id}");
            eprintln!("srv weights: sidecar for {id} is on {want}, as predicted");
            sidecar.assert_no_panic();
        }
    });
}
