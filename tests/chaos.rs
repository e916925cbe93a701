//! Chaos tests: the real binary against masters that fail the ways networks
//! and hosts fail, not just by closing their sockets.
//!
//! The network tests build a small lab of network namespaces (root only;
//! skipped with a message otherwise): the sidecar, the test client and a
//! healthy master B live in a "side" namespace; master A lives in its own
//! "host" namespace, reached over a veth pair (10.200.N.1 ↔ 10.200.N.2/30,
//! addresses that exist only inside the lab). Faults, as this kernel allows
//! (no `tc netem`, see shared/TESTING-NOTES.md):
//!
//! - **blackhole**: nftables drops everything from the sidecar on A's input
//!   hook: no RST, connects time out, sessions stall;
//! - **stalled flow**: nftables drops only the packets of the sidecar's open
//!   sessions, so A keeps passing health checks while those sessions are dead
//!   (only the answer check with a look at the kernel's flow, and keepalive, can notice);
//! - **flap**: the veth goes down and up every 0.5 s for 20 s;
//! - **half-open**: A's host "reboots" (link cut, namespace deleted and
//!   recreated with the same address, a new master started) faster than the
//!   health checks notice, leaving the sidecar with sessions the new host has
//!   never heard of.
//!
//! Two faults need no namespace and run on loopback without root: a **slow**
//! master (300 ms each way through a delaying relay) and a **hung** master
//! (its process frozen, as with `kill -STOP`: the kernel still completes
//! handshakes, nothing is ever answered).
//!
//! Every test asserts that the sidecar never panicked. Namespaces are
//! deleted by Drop guards, also when a test fails; processes are stopped by
//! PID (the `Sidecar` guard), stand-in masters by their own handles.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use salt_sidecar::standin::{StandinMaster, ZmtpClient};
use salt_sidecar::zmtp::SocketType;
use support::netns::{self, enter, run, Netns};
use support::{ask, until_answered_by, Sidecar, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// === lab: namespaces, links, faults ===

/// Root or skip (see [`netns::available`]).
fn lab_available(test: &str) -> bool {
    netns::available(test, &["ip", "nft", "ss"])
}

/// The side namespace plus one host namespace per remote master.
struct Lab {
    net: u8,
    side: Netns,
    hosts: Vec<Option<Netns>>,
}

impl Lab {
    fn new(tag: &str, net: u8) -> Lab {
        let side = Netns::create(format!("ssc-{tag}-side-{}", std::process::id()));
        Lab {
            net,
            side,
            hosts: Vec::new(),
        }
    }

    /// Creates host `i` (a namespace) linked to the side namespace; returns
    /// the host's address. The side end of the link is `h<i>`.
    fn add_host(&mut self, i: usize) -> IpAddr {
        let name = format!(
            "ssc-{}-h{i}-{}",
            self.side.name.split('-').nth(1).unwrap_or("x"),
            std::process::id()
        );
        let host = Netns::create(name);
        let (side_ip, host_ip) = self.addrs(i);
        let side_if = format!("h{i}");
        run(&[
            "ip",
            "link",
            "add",
            &side_if,
            "netns",
            &self.side.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.name,
        ]);
        run(&[
            "ip",
            "-n",
            &self.side.name,
            "addr",
            "add",
            &format!("{side_ip}/30"),
            "dev",
            &side_if,
        ]);
        run(&[
            "ip",
            "-n",
            &host.name,
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &self.side.name, "link", "set", &side_if, "up"]);
        run(&["ip", "-n", &host.name, "link", "set", "eth0", "up"]);
        if self.hosts.len() <= i {
            self.hosts.resize_with(i + 1, || None);
        }
        self.hosts[i] = Some(host);
        host_ip
    }

    fn addrs(&self, i: usize) -> (IpAddr, IpAddr) {
        let base = (i * 4) as u8;
        (
            IpAddr::from([10, 200, self.net, base + 1]),
            IpAddr::from([10, 200, self.net, base + 2]),
        )
    }

    fn host(&self, i: usize) -> &Netns {
        self.hosts[i].as_ref().expect("host exists")
    }

    /// Cuts host `i`'s link and deletes its namespace (the host is gone
    /// without a word: nothing it sends reaches the side any more).
    fn remove_host(&mut self, i: usize) {
        run(&["ip", "-n", &self.side.name, "link", "del", &format!("h{i}")]);
        self.hosts[i] = None;
    }

    fn set_link(&self, i: usize, up: bool) {
        run(&[
            "ip",
            "-n",
            &self.side.name,
            "link",
            "set",
            &format!("h{i}"),
            if up { "up" } else { "down" },
        ]);
    }

    /// Runs `body` on a multi-thread runtime whose threads live in the side
    /// namespace (so does the sidecar it starts).
    fn run_in_side<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        self.side.block_on(body);
    }
}

/// The lab most network-fault tests use: master A on host 0 (a namespace of
/// its own, behind a link the test can cut or filter), B a stand-in on
/// 127.0.<net>.3 in the side namespace, and the sidecar there in front of
/// both, A first.
struct AbLab {
    /// First, so A stops before its namespace goes.
    _a: RemoteMaster,
    lab: Lab,
    a_ip: IpAddr,
    /// The side's address on A's link: the sidecar as A sees it.
    side_ip: IpAddr,
}

/// What [`AbLab::run`] hands the test, once A answers through the sidecar.
struct Front {
    sidecar: Sidecar,
    b: salt_sidecar::standin::StandinMaster,
    /// The sidecar's ret port.
    ret: SocketAddr,
}

impl AbLab {
    /// The lab with A started, or `None` (the test is skipped) without root.
    fn new(test: &str, tag: &str, net: u8) -> Option<AbLab> {
        if !lab_available(test) {
            return None;
        }
        let mut lab = Lab::new(tag, net);
        let a_ip = lab.add_host(0);
        let (side_ip, _) = lab.addrs(0);
        let a = RemoteMaster::start(Some(lab.host(0)), "A", a_ip);
        Some(AbLab {
            _a: a,
            lab,
            a_ip,
            side_ip,
        })
    }

    /// In the side namespace: starts B and the sidecar (`minion`: its
    /// top-level keys; connect timeout 500 ms), waits until A answers, then
    /// runs `body`.
    fn run<F, Fut>(&self, minion: &str, body: F)
    where
        F: FnOnce(Front) -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        self.run_with(minion, Sessions::Move, body)
    }

    /// [`AbLab::run`] with the session behaviour spelled out.
    fn run_with<F, Fut>(&self, minion: &str, sessions: Sessions, body: F)
    where
        F: FnOnce(Front) -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        let net = self.lab.net;
        let yaml = config_with(
            net,
            &[self.a_ip.to_string(), format!("127.0.{net}.3")],
            minion,
            "500ms",
            sessions,
        );
        self.lab.run_in_side(move || async move {
            let b = support::master("B", net, 3).await;
            let sidecar = Sidecar::start(&yaml);
            let ret = sidecar_addr(net, 4506);
            // Set-up, not a measured bound: the sidecar's start, two probe
            // rounds of A across the namespace's veth, a first answer. A
            // clean-clone CI run's lanes once took longer than 10 s here.
            until_answered_by(ret, "A", Duration::from_secs(30)).await;
            body(Front { sidecar, b, ret }).await;
        });
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// === stand-in masters on their own thread (and namespace) ===

enum Ctl {
    Freeze,
    Stop,
}

/// A stand-in master on a thread of its own, optionally inside a host
/// namespace. `freeze` blocks that thread (as `kill -STOP` would the
/// master's process); `stop` aborts every connection with RST.
struct RemoteMaster {
    ctl: tokio::sync::mpsc::UnboundedSender<Ctl>,
    thawed: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RemoteMaster {
    fn start(ns: Option<&Netns>, name: &str, ip: IpAddr) -> RemoteMaster {
        let path = ns.map(Netns::path);
        let name = name.to_string();
        let (ctl, mut ctl_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thawed = Arc::new((Mutex::new(true), Condvar::new()));
        let gate = thawed.clone();
        let thread = std::thread::spawn(move || {
            if let Some(p) = &path {
                enter(p);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let master = StandinMaster::start(
                    &name,
                    SocketAddr::new(ip, 4505),
                    SocketAddr::new(ip, 4506),
                )
                .await;
                let master = match master {
                    Ok(m) => {
                        let _ = ready_tx.send(Ok(()));
                        m
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Some(Ctl::Freeze) = ctl_rx.recv().await {
                    // Blocks the only thread of this runtime: every task of
                    // the master stops; the kernel keeps accepting.
                    let (lock, cv) = &*gate;
                    let mut thawed = lock.lock().expect("gate");
                    while !*thawed {
                        thawed = cv.wait(thawed).expect("gate");
                    }
                }
                master.kill().await;
            });
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("stand-in master on {ip}: {e}"),
            Err(_) => panic!("stand-in master thread on {ip} died"),
        }
        RemoteMaster {
            ctl,
            thawed,
            thread: Some(thread),
        }
    }

    fn freeze(&self) {
        *self.thawed.0.lock().expect("gate") = false;
        let _ = self.ctl.send(Ctl::Freeze);
    }

    fn thaw(&self) {
        *self.thawed.0.lock().expect("gate") = true;
        self.thawed.1.notify_all();
    }

    /// Kills the master: every connection reset, listeners closed.
    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.thaw();
        let _ = self.ctl.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RemoteMaster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// === the sidecar and what it says ===

fn config(net: u8, masters: &[String], extra: &str, connect_timeout: &str) -> String {
    config_with(net, masters, extra, connect_timeout, Sessions::Move)
}

/// What the sidecar does with a session whose master goes away:
/// `sidecar.move_sessions` (the default, `Move`) or not (`Reset`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sessions {
    Move,
    Reset,
}

fn config_with(
    net: u8,
    masters: &[String],
    extra: &str,
    connect_timeout: &str,
    sessions: Sessions,
) -> String {
    let mut yaml = support::Yaml::new(&format!("127.0.{net}.1"), masters)
        .id("chaos-minion")
        .minion(extra)
        .sidecar("rise", "2")
        .sidecar("fall", "2")
        .sidecar("connect_timeout", connect_timeout)
        .sidecar("drain_timeout", "3s")
        // One alive interval: what the stalled-flows test's timing assumes
        // (the ZeroMQ default is at least 5 s).
        .sidecar("ret_answer_timeout", "1s");
    // The default is to move; only the reset is spelled out.
    if sessions == Sessions::Reset {
        yaml = yaml.sidecar("move_sessions", "false");
    }
    yaml.build()
}

fn sidecar_addr(net: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, net, 1], port))
}

/// `salt_sidecar_switches_total`, summed by reason.
fn switches(net: u8) -> BTreeMap<String, f64> {
    let text = support::scrape(sidecar_addr(net, 9464));
    support::sum_by(&text, "salt_sidecar_switches_total", "reason")
}

fn count(map: &BTreeMap<String, f64>, reason: &str) -> u64 {
    map.get(reason).copied().unwrap_or(0.0) as u64
}

/// `salt_sidecar_session_moves_total{port, how}` of the sidecar on net `net`.
fn moves(net: u8, port: &str, how: &str) -> u64 {
    let text = support::scrape(sidecar_addr(net, 9464));
    support::sample(
        &text,
        "salt_sidecar_session_moves_total",
        &[("port", port), ("how", how)],
    )
    .unwrap_or(0.0) as u64
}

/// Asks on one minion session, again and again (a request with a 1 s
/// timeout each: a request that was on its way to a master that died is
/// lost, not replayed, and a minion asks again), until master `name`
/// answers on that same connection; returns how long that took. Panics if
/// the session is closed (cut, not moved) or `limit` passes.
async fn until_session_answered_by(
    client: &mut ZmtpClient,
    name: &str,
    limit: Duration,
) -> Duration {
    until_session_answered_by_any(client, &[name], limit)
        .await
        .0
}

/// [`until_session_answered_by`] for any of `names`; also says which.
async fn until_session_answered_by_any(
    client: &mut ZmtpClient,
    names: &[&str],
    limit: Duration,
) -> (Duration, String) {
    let start = Instant::now();
    let mut last = String::new();
    for n in 0u32.. {
        assert!(
            start.elapsed() < limit,
            "the session was not answered by {names:?} within {limit:?} (last: {last})"
        );
        match client
            .request(format!("s{n}").as_bytes(), Duration::from_secs(1))
            .await
        {
            Ok(reply) => {
                last = String::from_utf8_lossy(&reply).into_owned();
                if let Some(who) = names.iter().find(|m| last.starts_with(&format!("{m}:"))) {
                    return (start.elapsed(), who.to_string());
                }
            }
            Err(salt_sidecar::standin::StandinError::Timeout(_)) => last = "timeout".into(),
            Err(e) => panic!(
                "the session was closed ({e}) {:?} after it began to ask: cut, not moved",
                start.elapsed()
            ),
        }
    }
    unreachable!("u32 requests")
}

/// Receives publications on one subscriber session until one comes from
/// one of `names`; returns how long that took and from whom. Panics if the
/// session is closed (cut, not moved) or `limit` passes.
async fn until_published_by(
    sub: &mut ZmtpClient,
    names: &[&str],
    limit: Duration,
) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "no publication from {names:?} within {limit:?} on the same session"
        );
        match sub.recv(left).await {
            Ok(parts) => {
                let first = parts
                    .first()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                if let Some(who) = names.iter().find(|m| first.starts_with(&format!("{m}:"))) {
                    return (start.elapsed(), who.to_string());
                }
            }
            Err(salt_sidecar::standin::StandinError::Timeout(_)) => continue,
            Err(e) => panic!("the subscriber session was closed ({e}): cut, not moved"),
        }
    }
}

/// Three minion sessions to master A, each shown to be answered by A: an
/// idle DEALER, a subscriber that got a tick, and a DEALER that will keep
/// asking.
struct ThreeSessions {
    idle: ZmtpClient,
    sub: ZmtpClient,
    busy: ZmtpClient,
}

async fn three_sessions_to_a(net: u8, ret: SocketAddr) -> ThreeSessions {
    let mut idle = ZmtpClient::connect(ret, SocketType::Dealer, T)
        .await
        .expect("idle");
    assert_eq!(idle.request(b"1", T).await.expect("reply"), b"A:1");
    let mut sub = ZmtpClient::connect(sidecar_addr(net, 4505), SocketType::Sub, T)
        .await
        .expect("sub");
    assert!(sub.recv(T).await.expect("tick")[0].starts_with(b"A:"));
    let mut busy = ZmtpClient::connect(ret, SocketType::Dealer, T)
        .await
        .expect("busy");
    assert_eq!(busy.request(b"2", T).await.expect("reply"), b"A:2");
    ThreeSessions { idle, sub, busy }
}

/// Blackholes host `i` for the sidecar (whose address there is `side_ip`):
/// everything from it dropped on the host's input hook, silently.
fn blackhole(lab: &Lab, i: usize, side_ip: IpAddr) {
    lab.host(i).nft(&format!(
        "table inet chaos {{\n chain in {{\n type filter hook input priority 0;\n ip saddr {side_ip} drop\n }}\n}}\n"
    ));
}

/// The sidecar on net `net` switched once, for a failover, and never panicked.
fn exactly_one_failover(net: u8, sidecar: &Sidecar) {
    let s = switches(net);
    assert_eq!(count(&s, "failover"), 1, "{s:?}");
    assert_eq!(count(&s, "failback"), 0, "{s:?}");
    sidecar.assert_no_panic();
}

/// A session that watches for its own end: `recv` until an error.
fn watch_end(mut client: ZmtpClient) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        loop {
            match client.recv(Duration::from_secs(120)).await {
                Ok(_) => continue,
                Err(_) => return Instant::now(),
            }
        }
    })
}

/// Ports of the sidecar's established upstream connections to `host:4506`
/// as seen on the master's host, stable over two looks (so not a probe).
fn session_ports(host: &Netns, port: u16) -> Vec<u16> {
    let look = || -> Vec<u16> {
        let out = host.exec(&[
            "ss",
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ]);
        out.lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|peer| peer.rsplit_once(':'))
            .filter_map(|(_, p)| p.parse().ok())
            .collect()
    };
    let first = look();
    std::thread::sleep(Duration::from_millis(300));
    let second = look();
    first.into_iter().filter(|p| second.contains(p)).collect()
}

// === network faults (root) ===

/// A blackholed master (packets dropped, no RST) is detected by probe
/// timeouts; the sidecar fails over within the detection bound and moves
/// every session to it (idle, receiving, sending) to B: the minion's
/// connections stay open and are answered by B, none left stuck. The
/// request that was on its way to A is lost (not replayed); the minion's
/// next request on the same connection is answered by B.
#[test]
fn blackhole_fails_over_within_the_bound_and_moves_every_session_to_b() {
    let Some(ab) = AbLab::new("blackhole", "bh", 81) else {
        return;
    };
    let (net, side_ip, lab) = (ab.lab.net, ab.side_ip, &ab.lab);
    ab.run("master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: false", |Front { sidecar, b, ret }| async move {
        let ThreeSessions { mut idle, mut sub, mut busy } = three_sessions_to_a(net, ret).await;
        blackhole(lab, 0, side_ip);
        let fault = Instant::now();
        // The busy session keeps asking through the fault: its request to A
        // is lost in the blackhole, the next one after the move is B's.
        let busy_task = tokio::spawn(async move {
            until_session_answered_by(&mut busy, "B", Duration::from_secs(15)).await;
            Instant::now()
        });
        sidecar
            .log
            .wait_for_async(&["switched master", "reason=\"failover\""], Duration::from_secs(15))
            .await;
        let detected = fault.elapsed();
        let bound = Duration::from_millis(2500) + Duration::from_millis(500);
        eprintln!("blackhole: failover {detected:?} after the fault (bound {bound:?})");
        assert!(detected <= bound, "failover took {detected:?}");

        // Every session goes on, on the same connection, answered by B:
        // within a request timeout (1 s) of the switch.
        let busy_at = busy_task.await.expect("busy").saturating_duration_since(fault);
        eprintln!("blackhole: busy session answered by B {busy_at:?} after the fault");
        assert!(busy_at <= bound + Duration::from_millis(1500), "busy session: B answered {busy_at:?} after the fault");
        let idle_took = until_session_answered_by(&mut idle, "B", Duration::from_secs(3)).await;
        let (sub_took, _) = until_published_by(&mut sub, &["B"], Duration::from_secs(3)).await;
        eprintln!("blackhole: idle answered by B in {idle_took:?}, subscriber got B's tick in {sub_took:?}");
        assert!(moves(net, "ret", "preserved") >= 2, "ret sessions not counted as moved");
        assert!(moves(net, "publish", "preserved") >= 1, "publish session not counted as moved");
        let resets: Vec<String> = sidecar.log.lines().into_iter().filter(|l| l.contains("reset") || l.contains("session closed")).collect();
        assert_eq!(moves(net, "ret", "reset") + moves(net, "publish", "reset"), 0, "a session was reset:\n{}", resets.join("\n"));
        exactly_one_failover(net, &sidecar);
        drop(b);
    });
}

/// The same blackhole with `sidecar.move_sessions: false` (the 0.1
/// behaviour, and what happens to a session that cannot be moved): every
/// session to A is closed by the failover, none left stuck.
#[test]
fn blackhole_with_moves_off_closes_every_session_to_the_master() {
    let Some(ab) = AbLab::new("blackhole, moves off", "bo", 88) else {
        return;
    };
    let (net, side_ip, lab) = (ab.lab.net, ab.side_ip, &ab.lab);
    ab.run_with("master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: false", Sessions::Reset, |Front { sidecar, b, ret }| async move {
        // Three sessions to A: idle, receiving ticks, and sending requests.
        let ThreeSessions { idle, sub, mut busy } = three_sessions_to_a(net, ret).await;
        let (idle_end, sub_end) = (watch_end(idle), watch_end(sub));
        let busy_end = tokio::spawn(async move {
            loop {
                if busy.request(b"3", Duration::from_secs(120)).await.is_err() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });

        blackhole(lab, 0, side_ip);
        let fault = Instant::now();
        sidecar
            .log
            .wait_for_async(&["switched master", "reason=\"failover\""], Duration::from_secs(15))
            .await;
        let detected = fault.elapsed();
        // fall × interval + connect_timeout = 2.5 s, plus scheduling slack
        // for a busy machine (the strict bound, over three faults at different
        // points of the probe cycle, is the next test).
        let bound = Duration::from_millis(2500) + Duration::from_millis(500);
        eprintln!("blackhole: failover {detected:?} after the fault (bound {bound:?})");
        assert!(detected <= bound, "failover took {detected:?}");

        // No session to A is left stuck: each is closed by the failover.
        for (what, end) in [("idle", idle_end), ("subscriber", sub_end), ("busy", busy_end)] {
            let ended = tokio::time::timeout(Duration::from_secs(5), end)
                .await
                .unwrap_or_else(|_| panic!("{what} session to the blackholed master still open 5 s after the failover"))
                .expect("watcher");
            let after = ended.saturating_duration_since(fault);
            eprintln!("blackhole: {what} session ended {after:?} after the fault (failover logged at {detected:?})");
            assert!(after <= bound + Duration::from_millis(500), "{what} session outlived the failover: {after:?}");
        }
        // New work goes to B at once.
        let took = until_answered_by(ret, "B", Duration::from_secs(3)).await;
        eprintln!("blackhole: answered by B {took:?} after the switch");
        assert!(moves(net, "ret", "reset") >= 2, "ret sessions not counted as reset");
        assert_eq!(moves(net, "ret", "preserved"), 0, "a session was moved with moves off");
        exactly_one_failover(net, &sidecar);
        drop(b);
    });
}

/// The stated bound: a blackholed master is failed over from within
/// `fall × master_alive_interval + connect_timeout`.
#[test]
fn blackhole_detection_meets_fall_times_interval_plus_connect_timeout() {
    let Some(ab) = AbLab::new("blackhole bound", "bb", 87) else {
        return;
    };
    let (side_ip, lab) = (ab.side_ip, &ab.lab);
    ab.run("master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: true\nmaster_failback_interval: 1", |Front { sidecar, b, ret }| async move {        let mut worst = Duration::ZERO;
        for round in 0..3 {
            // Fault at a random point of the probe cycle.
            tokio::time::sleep(Duration::from_millis(137 * round + 50)).await;
            let seen = sidecar.log.count(&["switched master", "reason=\"failover\""]);
            blackhole(lab, 0, side_ip);
            let fault = Instant::now();
            let log = sidecar.log.clone();
            tokio::task::spawn_blocking(move || {
                log.wait_for_more(&["switched master", "reason=\"failover\""], seen, Duration::from_secs(15))
            })
            .await
            .expect("wait");
            worst = worst.max(fault.elapsed());
            lab.host(0).nft("delete table inet chaos");
            // Back to A (failback after rise + 1 s) for the next round.
            until_answered_by(ret, "A", Duration::from_secs(10)).await;
        }
        eprintln!("blackhole bound: worst detection {worst:?}");
        assert!(
            worst <= Duration::from_millis(2500 + 300),
            "detection took {worst:?}, bound fall×interval+connect_timeout = 2.5 s"
        );
        drop(b);
    });
}

/// Sessions whose packets vanish while their master stays healthy (the
/// probes pass, so no failover will ever close them) are ended: one with a
/// request in flight when that request goes unanswered past
/// `ret_answer_timeout` and A still answers a `ping` on a fresh connection
/// (the session then finds its flow retransmitting in the kernel's table),
/// an idle one by keepalive. The sidecar then moves each minion session to
/// a new upstream session with the same, healthy master: the minion's
/// connections stay open and are answered by A again (the request lost in
/// the dead flow is not replayed; the next one is answered).
#[test]
fn stalled_sessions_are_found_dead_and_move_to_a_new_flow_while_the_master_stays_up() {
    let Some(ab) = AbLab::new("stalled flows", "sf", 82) else {
        return;
    };
    let (net, lab) = (ab.lab.net, &ab.lab);
    ab.run("master_alive_interval: 1\nrandom_reauth_delay: 0", |Front { sidecar, b, ret }| async move {
        let mut idle = ZmtpClient::connect(ret, SocketType::Dealer, T).await.expect("idle");
        assert_eq!(idle.request(b"1", T).await.expect("reply"), b"A:1");
        let mut busy = ZmtpClient::connect(ret, SocketType::Dealer, T).await.expect("busy");
        assert_eq!(busy.request(b"2", T).await.expect("reply"), b"A:2");
        let ports = session_ports(lab.host(0), 4506);
        assert_eq!(ports.len(), 2, "two upstream sessions expected, found {ports:?}");

        // Drop only those two flows' packets on A's host.
        let set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        lab.host(0).nft(&format!(
            "table inet chaos {{\n chain in {{\n type filter hook input priority 0;\n tcp sport {{ {set} }} drop\n }}\n}}\n"
        ));
        let fault = Instant::now();
        // The busy session asks through the fault: its request sits unacked
        // in the dead flow; unanswered past ret_answer_timeout (1 s), A is
        // suspected, answers the ping, and the session finds its flow dead;
        // it moves to a new flow to A and the next request is answered there.
        let busy_took = until_session_answered_by(&mut busy, "A", Duration::from_secs(8)).await;
        eprintln!("stalled flows: busy session answered by A again {busy_took:?} after the fault");
        assert!(busy_took >= Duration::from_millis(1500), "answered too early ({busy_took:?}): through the dropped flow?");

        // The idle session's flow dies by keepalive (1 s idle, then three
        // probes 0.5 s apart): wait until the sidecar no longer holds either
        // old flow, then the idle session answers at once, from A.
        let start = Instant::now();
        loop {
            let held = sidecar_flows(lab, 4506);
            if !ports.iter().any(|p| held.contains(p)) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(8), "old flows {ports:?} still held 8 s later: {held:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("stalled flows: both dead flows gone {:?} after the fault", fault.elapsed());
        let idle_took = until_session_answered_by(&mut idle, "A", Duration::from_secs(3)).await;
        eprintln!("stalled flows: idle session answered by A in {idle_took:?}");
        assert!(idle_took < Duration::from_secs(1), "the idle session needed a retry: {idle_took:?}");

        assert_eq!(moves(net, "ret", "preserved"), 2, "both sessions moved to new flows");
        // A was never failed over: it passed every probe meanwhile.
        let s = switches(net);
        assert_eq!(s.values().sum::<f64>(), 0.0, "no switch expected: {s:?}");
        assert_eq!(ask(ret).await.as_deref(), Some("A"));
        sidecar.assert_no_panic();
        drop(b);
    });
}

/// Local ports of the sidecar's established connections to port `port` of
/// any master, as the side namespace (where the sidecar runs) sees them.
fn sidecar_flows(lab: &Lab, port: u16) -> Vec<u16> {
    let out = lab.side.exec(&[
        "ss",
        "-Htn",
        "state",
        "established",
        &format!("( dport = :{port} )"),
    ]);
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|local| local.rsplit_once(':'))
        .filter_map(|(_, p)| p.parse().ok())
        .collect()
}

/// A master whose link flaps every 0.5 s for 20 s: rise/fall hysteresis and
/// the failback interval allow at most one switch away and one back; the
/// minion keeps being answered.
#[test]
fn a_flapping_master_causes_at_most_one_switch_away_and_one_back() {
    let Some(ab) = AbLab::new("flap", "fl", 85) else {
        return;
    };
    let (net, lab) = (ab.lab.net, &ab.lab);
    // A failback interval as long as the flap: a master has to prove
    // itself for longer than it flaps.
    ab.run("master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 20\nrandom_reauth_delay: 0", |Front { sidecar, b, ret }| async move {
        // A minion asking every 200 ms on a fresh connection, all along.
        let asking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = asking.clone();
        let minion = tokio::spawn(async move {
            let (mut asked, mut answered) = (0u32, 0u32);
            while flag.load(std::sync::atomic::Ordering::Relaxed) {
                asked += 1;
                if ask(ret).await.is_some() {
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (asked, answered)
        });

        let flap = Duration::from_secs(20);
        let started = Instant::now();
        let mut toggles = 0u32;
        let mut up = true;
        while started.elapsed() < flap {
            up = !up;
            lab.set_link(0, up);
            toggles += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !up {
            lab.set_link(0, true);
            toggles += 1;
        }
        let during = switches(net);
        eprintln!("flap: {toggles} link toggles in {:?}; switches during the flap: {during:?}", started.elapsed());
        // Settle: A is stable now; a failback (if we left) comes after rise + 20 s.
        let settled = Instant::now();
        if count(&during, "failover") == 1 {
            sidecar
                .log
                .wait_for_async(&["switched master", "reason=\"failback\""], Duration::from_secs(30))
                .await;
            eprintln!("flap: failed back {:?} after the flap ended", settled.elapsed());
        }
        asking.store(false, std::sync::atomic::Ordering::Relaxed);
        let (asked, answered) = minion.await.expect("minion");
        let after = switches(net);
        eprintln!("flap: minion answered {answered}/{asked}; switches in all: {after:?}");
        assert!(count(&after, "failover") <= 1, "switch storm: {after:?}");
        assert!(count(&after, "failback") <= 1, "switch storm: {after:?}");
        assert_eq!(count(&after, "failover"), count(&after, "failback"), "ends on A: {after:?}");
        until_answered_by(ret, "A", Duration::from_secs(5)).await;
        assert!(answered * 10 >= asked * 8, "the minion was answered only {answered}/{asked} times");
        sidecar.assert_no_panic();
        drop(b);
    });
}

/// A's host reboots faster than the health checks notice: link cut,
/// namespace deleted, a new namespace with the same address and a new
/// master. The sidecar's old upstream sessions are half-open (the new host
/// has never heard of them): each dies at its next packet or keepalive (the
/// new host answers RST). The sidecar moves each minion session to a healthy
/// master (the rebooted A2, or B if the probes caught the gap): the minion's
/// connections stay open and are answered again; new work goes there too.
#[test]
fn a_rebooted_host_kills_old_upstream_sessions_and_the_minion_sessions_move_to_a_healthy_master() {
    if !lab_available("half-open") {
        return;
    }
    let net = 84;
    let mut lab = Lab::new("ho", net);
    let a_ip = lab.add_host(0);
    let a = RemoteMaster::start(Some(lab.host(0)), "A", a_ip);
    let lab = Mutex::new(lab);
    let side = lab.lock().expect("lab").side.path();
    let mut a = Some(a);
    let a_slot = &mut a;
    let lab_ref = &lab;
    std::thread::scope(|s| {
        let t = s.spawn(move || {
            enter(&side);
            runtime().block_on(async move {
                let b = support::master("B", net, 3).await;
                let sidecar = Sidecar::start(&config(
                    net,
                    &[a_ip.to_string(), format!("127.0.{net}.3")],
                    "master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: true\nmaster_failback_interval: 2",
                    "500ms",
                ));
                let ret = sidecar_addr(net, 4506);
                until_answered_by(ret, "A", Duration::from_secs(10)).await;
                let ThreeSessions {
                    mut idle,
                    mut sub,
                    busy: mut later,
                } = three_sessions_to_a(net, ret).await;

                // Reboot: cut the link first so nothing the dying host sends
                // (FIN, RST) reaches the sidecar.
                let reboot = Instant::now();
                {
                    let mut lab = lab_ref.lock().expect("lab");
                    lab.remove_host(0);
                    if let Some(old) = a_slot.take() {
                        old.stop();
                    }
                    let ip = lab.add_host(0);
                    assert_eq!(ip, a_ip);
                    *a_slot = Some(RemoteMaster::start(Some(lab.host(0)), "A2", ip));
                }
                let down_for = reboot.elapsed();
                eprintln!("half-open: host down for {down_for:?}");
                // A request on an old session reaches the new host: RST; the
                // session moves, the request is lost, the next is answered.
                let healthy = ["A2", "B"];
                let (took, who) =
                    until_session_answered_by_any(&mut later, &healthy, Duration::from_secs(10)).await;
                eprintln!("half-open: the busy old session answered by {who} {took:?} after it asked");
                // The idle ones die by keepalive (RST from the new host) and move too.
                let (took, who) = until_published_by(&mut sub, &healthy, Duration::from_secs(8)).await;
                eprintln!("half-open: the subscriber got {who}'s tick {took:?} later");
                let (took, who) =
                    until_session_answered_by_any(&mut idle, &healthy, Duration::from_secs(8)).await;
                eprintln!("half-open: the idle old session answered by {who} {took:?} later");
                assert!(moves(net, "ret", "preserved") >= 2, "ret sessions not counted as moved");
                assert!(moves(net, "publish", "preserved") >= 1, "publish session not counted as moved");
                // New work is answered by a healthy master: the rebooted A2
                // (or B, if the probes caught the gap).
                let start = Instant::now();
                let who = loop {
                    match ask(ret).await {
                        Some(who) if who == "A2" || who == "B" => break who,
                        other => {
                            assert!(
                                start.elapsed() < Duration::from_secs(8),
                                "no healthy master answered: {other:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                eprintln!(
                    "half-open: new work answered by {who}; switches {:?}",
                    switches(net)
                );
                until_answered_by(ret, "A2", Duration::from_secs(10)).await;
                sidecar.assert_no_panic();
                drop(b);
            });
        });
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    });
    drop(a);
    drop(lab);
}

// === host faults (no root needed) ===

/// Copies bytes between two sockets, holding each chunk for `delay` (each
/// direction), order kept: latency without a throughput cap.
async fn delaying_relay(listen: SocketAddr, target: SocketAddr, delay: Duration) {
    let listener = TcpListener::bind(listen).await.expect("bind relay");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let one = tokio::spawn(delayed_copy(cr, uw, delay));
                let two = tokio::spawn(delayed_copy(ur, cw, delay));
                let _ = tokio::join!(one, two);
            });
        }
    });
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let at = tokio::time::Instant::now() + delay;
        if tx.send((at, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A master 300 ms away (each way) is slow, not down: its probes (three
/// one-way trips, ~0.9 s) pass within connect_timeout, it stays selected,
/// and no failover happens.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_master_stays_selected_without_false_failover() {
    let net = 83;
    let a = support::master("A", net, 12).await;
    for port in [4505, 4506] {
        delaying_relay(
            SocketAddr::from(([127, 0, net, 2], port)),
            SocketAddr::from(([127, 0, net, 12], port)),
            Duration::from_millis(300),
        )
        .await;
    }
    let b = support::master("B", net, 3).await;
    let sidecar = Sidecar::start(&config(
        net,
        &[format!("127.0.{net}.2"), format!("127.0.{net}.3")],
        "master_alive_interval: 1\nrandom_reauth_delay: 0",
        "2s",
    ));
    let ret = sidecar_addr(net, 4506);
    let limit = Duration::from_secs(5);
    let started = Instant::now();
    let (mut asked, mut slowest, mut fastest) = (0u32, Duration::ZERO, Duration::MAX);
    while started.elapsed() < Duration::from_secs(15) {
        let t = Instant::now();
        let mut c = ZmtpClient::connect(ret, SocketType::Dealer, limit)
            .await
            .expect("connect through the sidecar");
        let reply = c.request(b"q", limit).await.expect("reply");
        let rtt = t.elapsed();
        assert_eq!(reply, b"A:q", "answered by the wrong master");
        asked += 1;
        slowest = slowest.max(rtt);
        fastest = fastest.min(rtt);
    }
    eprintln!("slow master: {asked} requests, connect+handshake+request {fastest:?}..{slowest:?}");
    // Each request crossed the relay: handshake (3 trips) + request (2 trips).
    assert!(
        fastest >= Duration::from_millis(1200),
        "the relay did not delay: {fastest:?}"
    );
    assert_eq!(
        sidecar.log.count(&["master is down"]),
        0,
        "false down:\n{}",
        sidecar.log.lines().join("\n")
    );
    let s = switches(net);
    assert_eq!(s.values().sum::<f64>(), 0.0, "false failover: {s:?}");
    sidecar.assert_no_panic();
    drop((a, b));
}

/// A hung master (process frozen: TCP handshakes still complete, nothing is
/// answered) fails its probes by timeout; the sidecar fails over, moves the
/// session that was waiting on it to B (the request the frozen master held
/// is lost, the next is answered by B on the same connection), and once A
/// is thawed fails back, moving the same session back to A.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_master_is_failed_over_and_back_after_it_thaws() {
    let net = 86;
    let a = RemoteMaster::start(None, "A", IpAddr::from([127, 0, net, 2]));
    let b = support::master("B", net, 3).await;
    let sidecar = Sidecar::start(&config(
        net,
        &[format!("127.0.{net}.2"), format!("127.0.{net}.3")],
        "master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 2\nrandom_reauth_delay: 0",
        "500ms",
    ));
    let ret = sidecar_addr(net, 4506);
    until_answered_by(ret, "A", Duration::from_secs(10)).await;
    let mut waiting = ZmtpClient::connect(ret, SocketType::Dealer, T)
        .await
        .expect("connect");
    assert_eq!(waiting.request(b"1", T).await.expect("reply"), b"A:1");

    a.freeze();
    let fault = Instant::now();
    // The minion keeps asking on its session: the frozen master answers
    // nothing; after the failover the session is B's.
    let asking = tokio::spawn(async move {
        let took = until_session_answered_by(&mut waiting, "B", Duration::from_secs(15)).await;
        (took, waiting)
    });
    sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failover\""],
            Duration::from_secs(10),
        )
        .await;
    let detected = fault.elapsed();
    eprintln!("hung master: failover {detected:?} after the freeze");
    assert!(
        detected <= Duration::from_millis(3000),
        "failover took {detected:?}"
    );
    let (took, mut waiting) = asking.await.expect("asking");
    eprintln!("hung master: the waiting session answered by B {took:?} after the freeze");
    assert!(
        took <= detected + Duration::from_millis(1500),
        "B answered the moved session {took:?} after the freeze (switch at {detected:?})"
    );
    until_answered_by(ret, "B", Duration::from_secs(3)).await;

    a.thaw();
    let thawed = Instant::now();
    sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failback\""],
            Duration::from_secs(10),
        )
        .await;
    until_answered_by(ret, "A", Duration::from_secs(5)).await;
    eprintln!(
        "hung master: back on A {:?} after the thaw",
        thawed.elapsed()
    );
    // The same minion session followed the failback.
    let back = until_session_answered_by(&mut waiting, "A", Duration::from_secs(5)).await;
    eprintln!("hung master: the moved session answered by A again ({back:?})");
    assert!(
        moves(net, "ret", "preserved") >= 2,
        "away and back: two moves"
    );
    let s = switches(net);
    assert_eq!(
        (count(&s, "failover"), count(&s, "failback")),
        (1, 1),
        "{s:?}"
    );
    sidecar.assert_no_panic();
    drop((a, b));
}
