//! Salt's `transport: tcp` behind the sidecar, against stand-in masters that
//! speak Salt's msgpack framing (`tests/helpers/tcp_master.py`, plain
//! `python3`): a hung master (SIGSTOP by PID: its kernel still accepts
//! connections) is failed over from within 3 s, by the `ping` probe or by a
//! minion request left unanswered past `sidecar.ret_answer_timeout`; a slow
//! but alive master is not.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use salt_sidecar::zmtp::saltreq;
use support::{addr, sample, scrape, Sidecar, Yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A stand-in tcp-transport master on 127.0.<net>.<host>:4505/4506; killed
/// by PID on drop (resumed first if stopped).
struct Master {
    child: Child,
    stopped: bool,
}

impl Master {
    fn start(name: &str, net: u8, host: u8) -> Master {
        let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/tcp_master.py");
        let mut child = Command::new("python3")
            .arg(helper)
            .args(["--name", name, "--publish"])
            .arg(addr(net, host, 4505).to_string())
            .arg("--ret")
            .arg(addr(net, host, 4506).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tcp_master.py");
        let mut first = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the helper's first line");
        assert_eq!(
            first.trim(),
            "ready",
            "stand-in master {name} did not start"
        );
        Master {
            child,
            stopped: false,
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    }

    /// Freezes the master as a hung process: its kernel still accepts.
    fn freeze(&mut self) -> Instant {
        self.signal("-STOP");
        self.stopped = true;
        Instant::now()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.stopped {
            self.signal("-CONT");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request as a Salt tcp-transport minion frames it:
/// `{"head": {"mid": mid}, "body": body}` (body a short string).
fn request(mid: u8, body: &str) -> Vec<u8> {
    assert!(body.len() <= 31 && mid < 0x80);
    let mut out = b"\x82\xa4head\x81\xa3mid".to_vec();
    out.push(mid);
    out.extend_from_slice(b"\xa4body");
    out.push(0xa0 | body.len() as u8);
    out.extend_from_slice(body.as_bytes());
    out
}

/// Reads one reply within `limit`; the name of the master that sent it
/// (its body is `NAME:job`), or `None` (closed, reset, timed out).
async fn reply(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Ok(Some(len)) = saltreq::message_len(&buf) {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let at = text.find(":job")?;
                return text[..at].chars().last().map(String::from);
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

/// One immediate job through the sidecar on a fresh connection: who answered.
async fn ask(ret: SocketAddr) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(ret))
        .await
        .ok()?
        .ok()?;
    s.write_all(&request(1, "job 0")).await.ok()?;
    reply(&mut s, Duration::from_secs(2)).await
}

/// Asks until `name` answers; how long that took from `since`.
async fn until_answered_by(ret: SocketAddr, name: &str, since: Instant) -> Duration {
    loop {
        if ask(ret).await.as_deref() == Some(name) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "master {name} never answered through the sidecar"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counter(admin: SocketAddr, family: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&scrape(admin), family, labels).unwrap_or(0.0)
}

fn suspicions(admin: SocketAddr, master: &str, outcome: &str) -> f64 {
    counter(
        admin,
        "salt_sidecar_passive_suspicions_total",
        &[
            ("master", master),
            ("transport", "tcp"),
            ("outcome", outcome),
        ],
    )
}

fn config(net: u8, minion: &str, sidecar: &str) -> String {
    let masters = [format!("127.0.{net}.2"), format!("127.0.{net}.3")];
    Yaml::new(&format!("127.0.{net}.1"), &masters)
        .minion(&format!("transport: tcp\nrandom_reauth_delay: 0\n{minion}"))
        .sidecar("drain_timeout", "3s")
        .sidecar_lines(sidecar)
        .build()
}

/// With the probes far apart (alive 30 s), only the passive path can see the
/// freeze in time: the minion's request on its open ret session goes
/// unanswered for `ret_answer_timeout` (1 s), the master fails the `ping`
/// re-probe, and the minion is answered by B within 3 s of the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_left_unanswered_by_a_hung_master_fails_it_over_within_3s() {
    let net = 176;
    let (mut a, _b) = (Master::start("A", net, 2), Master::start("B", net, 3));
    let sidecar = Sidecar::start(&config(
        net,
        "master_alive_interval: 30",
        "ret_answer_timeout: 1s",
    ));
    let (ret, admin) = (addr(net, 1, 4506), addr(net, 1, 9464));
    until_answered_by(ret, "A", Instant::now()).await;
    let a_label = format!("127.0.{net}.2");

    // The minion's open ret session, answered by A once.
    let mut minion = TcpStream::connect(ret).await.expect("connect");
    minion.write_all(&request(1, "job 0")).await.expect("send");
    assert_eq!(
        reply(&mut minion, Duration::from_secs(5)).await.as_deref(),
        Some("A")
    );

    let stopped = a.freeze();
    minion.write_all(&request(2, "job 0")).await.expect("send");
    // What the minion sees: its session to the hung master is cut (it then
    // reconnects and asks again, as a Salt minion does), and B answers.
    assert_eq!(reply(&mut minion, Duration::from_secs(10)).await, None);
    let cut = stopped.elapsed();
    let answered = until_answered_by(ret, "B", stopped).await;
    println!(
        "hung master A: session cut {:.2} s, first answer from B {:.2} s after SIGSTOP",
        cut.as_secs_f64(),
        answered.as_secs_f64()
    );
    assert!(
        answered <= Duration::from_secs(3),
        "B answered {answered:?} after A froze; expected within 3 s"
    );
    assert_eq!(suspicions(admin, &a_label, "confirmed"), 1.0);
    assert_eq!(suspicions(admin, &a_label, "cleared"), 0.0);
    sidecar.log.wait_for(
        &["suspected hung", "does not answer a ping either", &a_label],
        Duration::from_secs(5),
    );
    sidecar.assert_no_panic();
}

/// The default probe for `transport: tcp` is Salt's `ping` on the ret port:
/// an idle minion (no request pending) is failed over from a hung master
/// within 3 s too (alive 1 s, fall 2), although its kernel accepts connects.
/// (Pings start once the sidecar has seen the ret port open for 1 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_probe_sees_an_idle_hung_master_within_3s() {
    let net = 177;
    let (mut a, _b) = (Master::start("A", net, 2), Master::start("B", net, 3));
    let sidecar = Sidecar::start(&config(net, "master_alive_interval: 1", ""));
    let (ret, admin) = (addr(net, 1, 4506), addr(net, 1, 9464));
    until_answered_by(ret, "A", Instant::now()).await;
    let a_label = format!("127.0.{net}.2");
    sidecar
        .log
        .wait_for(&["pinged from now on", &a_label], Duration::from_secs(10));
    let deferred = counter(
        admin,
        "salt_sidecar_pings_deferred_total",
        &[("master", &a_label)],
    );
    assert!(
        (1.0..=3.0).contains(&deferred),
        "plain connects in A's first 1 s: {deferred}"
    );
    let failover = ["switched master", "reason=\"failover\""];
    let seen = sidecar.log.count(&failover);
    let stopped = a.freeze();
    let switched = tokio::task::spawn_blocking({
        let log = sidecar.log.clone();
        move || {
            log.wait_for_more(&failover, seen, Duration::from_secs(15));
            stopped.elapsed()
        }
    })
    .await
    .expect("join");
    let answered = until_answered_by(ret, "B", stopped).await;
    println!(
        "idle, hung master A: switch {:.2} s, first answer from B {:.2} s after SIGSTOP",
        switched.as_secs_f64(),
        answered.as_secs_f64()
    );
    assert!(
        switched <= Duration::from_secs(3),
        "switched {switched:?} after A froze; expected within 3 s"
    );
    sidecar.log.wait_for(
        &["master is down", "no answer to a `ping` request"],
        Duration::from_secs(1),
    );
    sidecar.assert_no_panic();
}

/// A master that restarts is not pinged in its first second (a Salt 3008
/// master pinged before its workers listen can stop answering): a plain
/// connect until its ret port has been open 1 s, which does not call it up;
/// then pings, and it is up once it answers them, and answers through the
/// sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_gets_a_plain_connect_for_1s_then_pings() {
    let net = 180;
    let (a, _b) = (Master::start("A", net, 2), Master::start("B", net, 3));
    let sidecar = Sidecar::start(&config(net, "master_alive_interval: 1", ""));
    let (ret, admin) = (addr(net, 1, 4506), addr(net, 1, 9464));
    let a_label = format!("127.0.{net}.2");
    let settled = ["pinged from now on", a_label.as_str()];
    let is_up = ["master is up", a_label.as_str()];
    sidecar.log.wait_for(&settled, Duration::from_secs(10));
    sidecar.log.wait_for(&is_up, Duration::from_secs(5));
    let deferred = |admin| {
        counter(
            admin,
            "salt_sidecar_pings_deferred_total",
            &[("master", &a_label)],
        )
    };
    let before = deferred(admin);

    drop(a);
    sidecar.log.wait_for(
        &["ret port not connectable", &a_label],
        Duration::from_secs(10),
    );
    sidecar
        .log
        .wait_for(&["master is down", &a_label], Duration::from_secs(10));
    let _a = Master::start("A", net, 2);
    let restarted = Instant::now();
    sidecar
        .log
        .wait_for(&["master young", &a_label], Duration::from_secs(5));
    sidecar
        .log
        .wait_for_more(&settled, 1, Duration::from_secs(10));
    let pinged = restarted.elapsed();
    assert_eq!(
        sidecar.log.count(&is_up),
        1,
        "not up again before it answered a ping"
    );
    let plain = deferred(admin) - before;
    sidecar.log.wait_for_more(&is_up, 1, Duration::from_secs(5));
    let up = restarted.elapsed();
    println!(
        "restarted master A: {plain} plain connects, pinged again {:.2} s and up {:.2} s after it listened",
        pinged.as_secs_f64(),
        up.as_secs_f64()
    );
    assert!(
        pinged >= Duration::from_secs(1),
        "pinged {pinged:?} after the restart; expected not before 1 s"
    );
    assert!((1.0..=4.0).contains(&plain), "plain connects: {plain}");
    let up = counter(admin, "salt_sidecar_master_up", &[("master", &a_label)]);
    assert_eq!(up, 1.0);
    // No failback in this config, but no minion session is open: an idle
    // sidecar follows its list (issue 23), so A, once it answers pings.
    until_answered_by(ret, "A", Instant::now()).await;
    sidecar.assert_no_panic();
}

/// A master that takes 6 s over a job (longer than the 1 s bound) but
/// answers the `ping` at once is slow, not hung: the suspicion is cleared,
/// nothing fails over, and the minion gets its reply on the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_alive_master_is_not_failed_over() {
    let net = 178;
    let (_a, _b) = (Master::start("A", net, 2), Master::start("B", net, 3));
    let sidecar = Sidecar::start(&config(net, "master_alive_interval: 1", ""));
    let (ret, admin) = (addr(net, 1, 4506), addr(net, 1, 9464));
    until_answered_by(ret, "A", Instant::now()).await;
    let a_label = format!("127.0.{net}.2");

    let mut minion = TcpStream::connect(ret).await.expect("connect");
    let asked = Instant::now();
    minion.write_all(&request(1, "job 6")).await.expect("send");
    let who = reply(&mut minion, Duration::from_secs(20)).await;
    let took = asked.elapsed();
    println!("slow master A answered after {:.2} s", took.as_secs_f64());
    assert_eq!(
        who.as_deref(),
        Some("A"),
        "the slow job's reply, on the same session"
    );
    assert!(took >= Duration::from_secs(6), "{took:?}");
    assert_eq!(suspicions(admin, &a_label, "cleared"), 1.0);
    assert_eq!(suspicions(admin, &a_label, "confirmed"), 0.0);
    let text = scrape(admin);
    let failovers: f64 = support::series(&text, "salt_sidecar_switches_total")
        .iter()
        .filter(|(labels, _)| labels.iter().any(|(k, v)| k == "reason" && v == "failover"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(failovers, 0.0, "a slow master must not be failed over from");
    sidecar.log.wait_for(
        &["suspected hung", "slow, not hung", &a_label],
        Duration::from_secs(1),
    );
    assert_eq!(sidecar.log.count(&["master is down"]), 0);
    sidecar.assert_no_panic();
}

/// With the plain-connect `probe: tcp`, a master confirmed hung stays down
/// although its kernel keeps accepting the connects: it is probed with
/// `ping` until it answers, and is up again once thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_hung_master_stays_down_until_it_answers_a_ping() {
    let net = 179;
    let (mut a, _b) = (Master::start("A", net, 2), Master::start("B", net, 3));
    let sidecar = Sidecar::start(&config(
        net,
        "master_alive_interval: 1",
        "probe: tcp\nret_answer_timeout: 1s",
    ));
    let (ret, admin) = (addr(net, 1, 4506), addr(net, 1, 9464));
    until_answered_by(ret, "A", Instant::now()).await;
    let a_label = format!("127.0.{net}.2");
    let up = |admin| counter(admin, "salt_sidecar_master_up", &[("master", &a_label)]);

    let mut minion = TcpStream::connect(ret).await.expect("connect");
    a.freeze();
    minion.write_all(&request(1, "job 0")).await.expect("send");
    assert_eq!(reply(&mut minion, Duration::from_secs(10)).await, None);
    until_answered_by(ret, "B", Instant::now()).await;
    assert_eq!(suspicions(admin, &a_label, "confirmed"), 1.0);
    // Several probe rounds later (alive 1 s, rise 2): still down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(up(admin), 0.0, "a hung master must stay down");
    assert_eq!(
        sidecar.log.count(&["master is up", &a_label]),
        1,
        "only at start"
    );

    a.signal("-CONT");
    a.stopped = false;
    sidecar
        .log
        .wait_for_more(&["master is up", &a_label], 1, Duration::from_secs(10));
    assert_eq!(up(admin), 1.0);
    sidecar.assert_no_panic();
}
