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
//!   (only TCP_USER_TIMEOUT and keepalive can notice);
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
use support::{ask, until_answered_by, Sidecar};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(2);

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
        let net = self.lab.net;
        let yaml = config(
            net,
            &[self.a_ip.to_string(), format!("127.0.{net}.3")],
            minion,
            "500ms",
        );
        self.lab.run_in_side(move || async move {
            let b = support::master("B", net, 3).await;
            let sidecar = Sidecar::start(&yaml);
            let ret = sidecar_addr(net, 4506);
            until_answered_by(ret, "A", Duration::from_secs(10)).await;
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
    support::Yaml::new(&format!("127.0.{net}.1"), masters)
        .id("chaos-minion")
        .minion(extra)
        .sidecar("rise", "2")
        .sidecar("fall", "2")
        .sidecar("connect_timeout", connect_timeout)
        .sidecar("drain_timeout", "3s")
        .build()
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

/// Waits until `fut` finishes or `limit` passes; returns how long it took.
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<(Duration, F::Output)> {
    let start = Instant::now();
    tokio::time::timeout(limit, fut)
        .await
        .ok()
        .map(|out| (start.elapsed(), out))
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
/// timeouts; the sidecar fails over within the detection bound, and every
/// session to it (idle, receiving, sending) is closed, none left stuck.
#[test]
fn blackhole_fails_over_within_the_bound_and_leaves_no_session_stuck() {
    let Some(ab) = AbLab::new("blackhole", "bh", 81) else {
        return;
    };
    let (net, side_ip, lab) = (ab.lab.net, ab.side_ip, &ab.lab);
    ab.run("master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: false", |Front { sidecar, b, ret }| async move {
        // Three sessions to A: idle, receiving ticks, and sending requests.
        let mut idle = ZmtpClient::connect(ret, SocketType::Dealer, T).await.expect("idle");
        assert_eq!(idle.request(b"1", T).await.expect("reply"), b"A:1");
        let idle_end = watch_end(idle);
        let mut sub = ZmtpClient::connect(sidecar_addr(net, 4505), SocketType::Sub, T)
            .await
            .expect("sub");
        assert!(sub.recv(T).await.expect("tick")[0].starts_with(b"A:"));
        let sub_end = watch_end(sub);
        let mut busy = ZmtpClient::connect(ret, SocketType::Dealer, T).await.expect("busy");
        assert_eq!(busy.request(b"2", T).await.expect("reply"), b"A:2");
        let busy_end = tokio::spawn(async move {
            loop {
                if busy.request(b"3", Duration::from_secs(120)).await.is_err() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });

        // Blackhole: A's host drops everything from the sidecar, silently.
        lab.host(0).nft(&format!(
            "table inet chaos {{\n chain in {{\n type filter hook input priority 0;\n ip saddr {side_ip} drop\n }}\n}}\n"
        ));
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
        let s = switches(net);
        assert_eq!(count(&s, "failover"), 1, "{s:?}");
        sidecar.assert_no_panic();
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
            lab.host(0).nft(&format!(
                "table inet chaos {{\n chain in {{\n type filter hook input priority 0;\n ip saddr {side_ip} drop\n }}\n}}\n"
            ));
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
/// probes pass, so no failover will ever close them) are ended by the
/// kernel: TCP_USER_TIMEOUT for one with unacknowledged data, keepalive
/// plus the user timeout for an idle one. The minion sees a reset and
/// reconnects to the same, healthy master.
#[test]
fn stalled_sessions_die_by_user_timeout_while_the_master_stays_up() {
    let Some(ab) = AbLab::new("stalled flows", "sf", 82) else {
        return;
    };
    let (net, lab) = (ab.lab.net, &ab.lab);
    ab.run("master_alive_interval: 1\nrandom_reauth_delay: 0", |Front { sidecar, b, ret }| async move {        let mut idle = ZmtpClient::connect(ret, SocketType::Dealer, T).await.expect("idle");
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
        let idle_end = watch_end(idle);
        let busy_end = tokio::spawn(async move {
            loop {
                if busy.request(b"3", Duration::from_secs(120)).await.is_err() {
                    return Instant::now();
                }
            }
        });
        // user timeout = fall × interval + connect_timeout = 2.5 s; keepalive
        // starts after 1 s idle. Both well inside 8 s.
        for (what, end) in [("busy", busy_end), ("idle", idle_end)] {
            let ended = tokio::time::timeout(Duration::from_secs(8), end)
                .await
                .unwrap_or_else(|_| panic!("{what} stalled session still open 8 s after its packets vanished"))
                .expect("watcher");
            let took = ended.saturating_duration_since(fault);
            eprintln!("stalled flows: {what} session ended {took:?} after the fault");
            assert!(took >= Duration::from_millis(1500), "{what} ended too early ({took:?}): not by the timeout?");
        }
        // A was never failed over: it passed every probe meanwhile.
        let s = switches(net);
        assert_eq!(s.values().sum::<f64>(), 0.0, "no switch expected: {s:?}");
        assert_eq!(ask(ret).await.as_deref(), Some("A"));
        sidecar.assert_no_panic();
        drop(b);
    });
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
/// master. The sidecar's old sessions are half-open (the new host has never
/// heard of them): each dies at its next packet or keepalive (the new host
/// answers RST), and new work goes to the healthy, rebooted master.
#[test]
fn a_rebooted_host_kills_old_sessions_and_new_work_goes_to_a_healthy_master() {
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
                let mut idle = ZmtpClient::connect(ret, SocketType::Dealer, T)
                    .await
                    .expect("idle");
                assert_eq!(idle.request(b"1", T).await.expect("reply"), b"A:1");
                let mut sub = ZmtpClient::connect(sidecar_addr(net, 4505), SocketType::Sub, T)
                    .await
                    .expect("sub");
                assert!(sub.recv(T).await.expect("tick")[0].starts_with(b"A:"));
                let mut later = ZmtpClient::connect(ret, SocketType::Dealer, T)
                    .await
                    .expect("later");
                assert_eq!(later.request(b"2", T).await.expect("reply"), b"A:2");

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
                let idle_end = watch_end(idle);
                let sub_end = watch_end(sub);
                // A request on an old session reaches the new host: RST.
                let r = later.request(b"3", Duration::from_secs(10)).await;
                assert!(
                    r.is_err(),
                    "a session from before the reboot answered: {r:?}"
                );
                eprintln!(
                    "half-open: a request on an old session failed after {:?}",
                    reboot.elapsed()
                );
                for (what, end) in [("idle", idle_end), ("subscriber", sub_end)] {
                    let ended = tokio::time::timeout(Duration::from_secs(8), end)
                        .await
                        .unwrap_or_else(|_| {
                            panic!("{what} half-open session still open 8 s after the reboot")
                        })
                        .expect("watcher");
                    eprintln!(
                        "half-open: {what} session ended {:?} after the reboot",
                        ended.saturating_duration_since(reboot)
                    );
                }
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
/// answered) fails its probes by timeout; the sidecar fails over, resets the
/// sessions that were waiting on it, and fails back once it is thawed.
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
    // A request sent to the frozen master waits ... until the failover resets it.
    let pending = tokio::spawn(async move { waiting.request(b"2", Duration::from_secs(30)).await });
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
    let r = within(Duration::from_secs(3), pending).await;
    let (took, result) = r.expect("the session waiting on the hung master was not closed");
    assert!(result.expect("task").is_err(), "a frozen master answered");
    eprintln!("hung master: waiting session closed {took:?} after the switch was logged");
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
    let s = switches(net);
    assert_eq!(
        (count(&s, "failover"), count(&s, "failback")),
        (1, 1),
        "{s:?}"
    );
    sidecar.assert_no_panic();
    drop((a, b));
}
