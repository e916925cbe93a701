//! `salt-sidecar demo`: a failover you can watch, with nothing installed.
//!
//! Starts two stand-in masters (real ZMTP greetings, see [`standin`]) on
//! loopback, the sidecar in front of them (configured through the same YAML
//! loader as production), and a stand-in minion sending a request every
//! 500 ms through the sidecar. Then it kills the primary, brings it back, and
//! narrates what the minion sees, with timestamps; the sidecar's own log
//! lines (stderr) show each decision as it is made.

pub mod standin;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use crate::commands::demo::standin::{StandinMaster, ZmtpClient};
use crate::config;
use crate::ops::app;
use crate::zmtp::SocketType;

const FAILBACK_S: u64 = 5;

/// What the stand-in minion saw, for the narration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    /// The master that answered the last request.
    master: Option<String>,
    answered: u64,
    failed: u64,
}

/// Runs the demo on `<net>.1` (sidecar), `<net>.2` (A) and `<net>.3` (B).
pub async fn run(net: &str, alive_interval: u64) -> anyhow::Result<()> {
    let (side, a_ip, b_ip) = (loopback(net, 1)?, loopback(net, 2)?, loopback(net, 3)?);
    let t0 = Instant::now();
    let say = move |msg: &str| line(&format!("[+{:6.2}s] {msg}", t0.elapsed().as_secs_f64()));

    let a = StandinMaster::start("A", at(a_ip, 4505), at(a_ip, 4506))
        .await
        .context("starting master A")?;
    let b = StandinMaster::start("B", at(b_ip, 4505), at(b_ip, 4506))
        .await
        .context("starting master B")?;
    say(&format!("started stand-in master A on {a_ip} and master B on {b_ip} (ports 4505/4506, ZeroMQ greetings)"));

    let cfg = config::parse(
        Path::new("<demo>"),
        &demo_config(side, a_ip, b_ip, alive_interval),
    )
    .context("demo config")?;
    say(&format!(
        "sidecar config: masters [A, B], alive interval {alive_interval}s, rise 2 / fall 2, failback after {FAILBACK_S}s, reconnect jitter up to 1s"
    ));
    let token = CancellationToken::new();
    let running = app::start(&cfg, token.clone())
        .await
        .context("starting the sidecar")?;
    say(&format!(
        "sidecar listening on {side}:4505/4506 — the minion's `master: {side}`"
    ));

    // The stand-in minion: a request every 500 ms to the sidecar's ret port.
    let (seen_tx, seen) = watch::channel(Seen::default());
    let minion_stop = CancellationToken::new();
    let minion = tokio::spawn(minion_loop(
        at(side, 4506),
        seen_tx,
        minion_stop.clone(),
        t0,
    ));
    let watcher = Watcher {
        seen,
        limit: Duration::from_secs(5 * alive_interval + 10),
    };
    if !watcher.on_master("A", watcher.limit).await {
        bail!("the minion never got an answer from master A");
    }
    say("minion: requests are answered by master A (the primary)");
    sleep(Duration::from_secs(2)).await;

    let failover_s = failover(&watcher, a, &say).await?;
    sleep(Duration::from_secs(2)).await;
    let (a, failback_s) = failback(&watcher, a_ip, &say).await?;
    sleep(Duration::from_millis(500)).await;

    minion_stop.cancel();
    let _ = minion.await;
    let seen = watcher.seen.borrow().clone();
    token.cancel();
    running.wait().await;
    a.stop();
    b.stop();
    line("");
    line(&format!(
        "summary: failover {failover_s:.2}s, failback {failback_s:.2}s; {} requests answered, {} retried while switching",
        seen.answered, seen.failed
    ));
    line("next: `salt-sidecar check-config --config config/example.yaml`, then `salt-sidecar run --config ...`");
    Ok(())
}

/// `<net>.<last>`, which must be a loopback address.
fn loopback(net: &str, last: u8) -> anyhow::Result<IpAddr> {
    let text = format!("{net}.{last}");
    let ip: IpAddr = text
        .parse()
        .with_context(|| format!("--net {net}: `{text}` is not an IP address"))?;
    if !ip.is_loopback() {
        bail!("--net {net}: the demo only uses loopback addresses (127.x.y)");
    }
    Ok(ip)
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// The sidecar's config for the demo, through the same loader as production.
fn demo_config(side: IpAddr, a_ip: IpAddr, b_ip: IpAddr, alive_interval: u64) -> String {
    // The demo runs as any user: its admin socket lives in the temp dir.
    let socket =
        std::env::temp_dir().join(format!("salt-sidecar-demo-{}.sock", std::process::id()));
    let socket = socket.display();
    format!(
        "master:\n  - {a_ip}\n  - {b_ip}\nmaster_type: failover\nmaster_alive_interval: {alive_interval}\n\
         master_failback: true\nmaster_failback_interval: {FAILBACK_S}\nrandom_reauth_delay: 1\nid: demo-minion\n\
         sidecar:\n  listen: {side}\n  admin: {side}:9464\n  admin_socket: {socket}\n  rise: 2\n  fall: 2\n  connect_timeout: 500ms\n  drain_timeout: 5s\n"
    )
}

/// Waits on what the stand-in minion sees.
struct Watcher {
    seen: watch::Receiver<Seen>,
    /// How long a switch may take.
    limit: Duration,
}

impl Watcher {
    /// Whether master `name` answers the minion within `limit`.
    async fn on_master(&self, name: &str, limit: Duration) -> bool {
        let mut rx = self.seen.clone();
        tokio::time::timeout(limit, rx.wait_for(|s| s.master.as_deref() == Some(name)))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }
}

/// Kills A and waits until B answers; returns the seconds that took.
async fn failover(w: &Watcher, a: StandinMaster, say: &impl Fn(&str)) -> anyhow::Result<f64> {
    let killed = Instant::now();
    say(">>> killing master A (every connection reset, listeners closed)");
    a.kill().await;
    let failover_ok = w.on_master("B", w.limit).await;
    let failover_s = killed.elapsed().as_secs_f64();
    if !failover_ok {
        bail!(
            "the minion did not reach master B within {}s",
            w.limit.as_secs()
        );
    }
    say(&format!(
        "minion: requests are answered by master B — {failover_s:.2}s after the kill"
    ));
    Ok(failover_s)
}

/// Restarts A and waits until it answers again; returns A and the seconds
/// that took.
async fn failback(
    w: &Watcher,
    a_ip: IpAddr,
    say: &impl Fn(&str),
) -> anyhow::Result<(StandinMaster, f64)> {
    say(">>> restarting master A");
    let a = StandinMaster::start("A", at(a_ip, 4505), at(a_ip, 4506))
        .await
        .context("restarting master A")?;
    let back = Instant::now();
    say(&format!("the sidecar fails back only after A stayed healthy for {FAILBACK_S}s, then moves the minion's session back at a message boundary"));
    let failback_ok = w
        .on_master("A", w.limit + Duration::from_secs(FAILBACK_S))
        .await;
    let failback_s = back.elapsed().as_secs_f64();
    if !failback_ok {
        bail!("the minion did not return to master A");
    }
    say(&format!(
        "minion: requests are answered by master A again — {failback_s:.2}s after it came back"
    ));
    Ok((a, failback_s))
}

/// Sends `ping N` every 500 ms, reconnecting on failure; publishes what it sees.
async fn minion_loop(
    sidecar: SocketAddr,
    seen: watch::Sender<Seen>,
    stop: CancellationToken,
    t0: Instant,
) {
    let mut client: Option<ZmtpClient> = None;
    let mut n: u64 = 0;
    let say = |msg: &str| {
        line(&format!(
            "[+{:6.2}s]     minion: {msg}",
            t0.elapsed().as_secs_f64()
        ))
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep(Duration::from_millis(500)) => {}
        }
        if client.is_none() {
            match ZmtpClient::connect(sidecar, SocketType::Dealer, Duration::from_secs(2)).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    seen.send_modify(|s| s.failed += 1);
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        n += 1;
        match c
            .request(format!("ping {n}").as_bytes(), Duration::from_secs(2))
            .await
        {
            Ok(reply) => {
                let text = String::from_utf8_lossy(&reply);
                let who = text.split(':').next().unwrap_or("?").to_string();
                seen.send_modify(|s| {
                    s.answered += 1;
                    s.master = Some(who);
                });
            }
            Err(e) => {
                say(&format!("request {n} failed ({e}); reconnecting"));
                seen.send_modify(|s| {
                    s.failed += 1;
                    s.master = None;
                });
                client = None;
            }
        }
    }
}

/// Prints one line of narration; a closed stdout (`| head`) is not an error.
fn line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
