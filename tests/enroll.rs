//! `salt-sidecar enroll` against a running sidecar and stand-in masters.
//!
//! The stand-in minion keeps a publish (SUB) session open and "signs in" on
//! the ret port with a large request, which the stand-in master echoes back
//! (> 1 KiB, like an accepted sign-in reply). Like a Salt minion, it signs
//! in again when a publication comes from a master it did not sign in with
//! (Salt: it cannot decrypt it). When a pin moves its sessions (the
//! default) they stay open and it signs in to the pinned master on its
//! first publication; when they are cut, it reconnects — to the pinned
//! master.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use salt_sidecar::standin::{StandinMaster, ZmtpClient};
use salt_sidecar::status;
use salt_sidecar::zmtp::SocketType;
use support::{addr, Log, Sidecar, T};
use tokio_util::sync::CancellationToken;

/// A minion that stays connected; `sign_in_bytes` is the size of its
/// sign-in request on the ret port (the master's reply is as large).
async fn minion(net: u8, sign_in_bytes: usize, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let session = async {
            let mut sub = ZmtpClient::connect(addr(net, 1, 4505), SocketType::Sub, T)
                .await
                .ok()?;
            let mut req = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
                .await
                .ok()?;
            let sign_in = vec![b'k'; sign_in_bytes];
            // The master whose "key" it has: the reply's "NAME:" prefix.
            let name = |reply: &[u8]| reply.split(|&b| b == b':').next().map(<[u8]>::to_vec);
            let mut signed_with = name(&req.request(&sign_in, T).await.ok()?);
            // Stay subscribed until the session is closed; a publication
            // from another master makes it sign in again.
            while let Ok(parts) = sub.recv(Duration::from_secs(5)).await {
                let from = parts.first().and_then(|p| name(p));
                if from.is_some() && from != signed_with {
                    signed_with = name(&req.request(&sign_in, T).await.ok()?);
                }
            }
            Some(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = session => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn enroll(socket: &std::path::Path, per_master: &str) -> (std::process::Child, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
        .args([
            "enroll",
            "--socket",
            &socket.display().to_string(),
            "--settle",
            "1s",
            "--per-master-timeout",
            per_master,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn enroll");
    let out = support::stdout_log(&mut child, STDOUT_CLOSED);
    (child, out)
}

/// The last line of an `enroll` child's output, once all of it was read.
const STDOUT_CLOSED: &str = "<stdout closed>";

/// Waits for `child` to exit and for all of its output to be read.
async fn exit_and_output(mut child: std::process::Child, out: &Log) -> std::process::ExitStatus {
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    let out = out.clone();
    tokio::task::spawn_blocking(move || out.wait_for(&[STDOUT_CLOSED], Duration::from_secs(5)))
        .await
        .expect("join");
    status
}

/// Waits until the sidecar shows a publish session to `master`.
async fn publish_session_to(admin: SocketAddr, master: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (report, _) = status::fetch(&admin.into(), T).await.expect("status");
        if report
            .masters
            .iter()
            .any(|m| m.master == master && m.sessions.publish > 0)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no publish session to {master}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stand-in masters A (127.0.<net>.2) and B (.3), and a sidecar in front of
/// them that has selected one; `move_sessions` as given.
async fn lab(net: u8, move_sessions: bool) -> (StandinMaster, StandinMaster, Sidecar) {
    let a = support::master("A", net, 2).await;
    let b = support::master("B", net, 3).await;
    let masters = [format!("127.0.{net}.2"), format!("127.0.{net}.3")];
    let sidecar = Sidecar::start(
        &support::Yaml::new(&format!("127.0.{net}.1"), &masters)
            .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
            .sidecar("drain_timeout", "3s")
            .sidecar("move_sessions", &move_sessions.to_string())
            .build(),
    );
    sidecar
        .log
        .wait_for_async(&["selected master"], Duration::from_secs(5))
        .await;
    (a, b, sidecar)
}

async fn pinned(admin: SocketAddr) -> Option<String> {
    status::fetch(&admin.into(), T)
        .await
        .expect("status")
        .0
        .pinned
}

/// The minion's sessions move to the pinned master (the default): it signs
/// in there on the first publication it gets from it, on the same
/// connections.
#[tokio::test(flavor = "multi_thread")]
async fn enroll_walks_every_master_and_unpins() {
    let sidecar = enroll_walk(60, true).await;
    sidecar.assert_no_panic();
    let metrics = support::scrape(addr(60, 1, 9464));
    let moved = support::sample(
        &metrics,
        "salt_sidecar_session_moves_total",
        &[("port", "ret"), ("how", "preserved")],
    );
    assert!(
        moved.unwrap_or(0.0) >= 1.0,
        "the ret session was not moved by the pin: {moved:?}"
    );
}

/// With `move_sessions: false` a pin drains the minion's sessions and it
/// reconnects to the pinned master, where it signs in.
#[tokio::test(flavor = "multi_thread")]
async fn enroll_walks_every_master_and_unpins_with_moves_off() {
    enroll_walk(62, false).await;
}

/// Runs `enroll` over A and B with a stand-in minion that has a big
/// (accepted-sized) sign-in; asserts every step and the exit.
async fn enroll_walk(net: u8, move_sessions: bool) -> Sidecar {
    let (_a, _b, sidecar) = lab(net, move_sessions).await;
    let admin = addr(net, 1, 9464);
    let stop = CancellationToken::new();
    let m = tokio::spawn(minion(net, 1500, stop.clone()));
    publish_session_to(admin, &format!("127.0.{net}.2")).await;

    let (child, out) = enroll(&sidecar.admin_socket, "20s");
    let o = out.clone();
    tokio::task::spawn_blocking(move || {
        o.wait_for(
            &[&format!("accept the key of test-minion on 127.0.{net}.2")],
            Duration::from_secs(10),
        );
        o.wait_for(
            &[&format!("127.0.{net}.2 accepted test-minion")],
            Duration::from_secs(20),
        );
        o.wait_for(
            &[&format!("accept the key of test-minion on 127.0.{net}.3")],
            Duration::from_secs(5),
        );
        o.wait_for(
            &[&format!("127.0.{net}.3 accepted test-minion")],
            Duration::from_secs(20),
        );
        o.wait_for(&["unpinned"], Duration::from_secs(5));
    })
    .await
    .expect("enroll steps");
    let status = exit_and_output(child, &out).await;
    assert!(
        status.success(),
        "enroll exits 0 when every master accepted: {status:?}\n{}",
        out.lines().join("\n")
    );
    assert_eq!(
        pinned(admin).await,
        None,
        "the sidecar is unpinned at the end"
    );
    sidecar
        .log
        .wait_for_async(&[&format!("admin: pinned to 127.0.{net}.3")], T)
        .await;
    stop.cancel();
    let _ = m.await;
    sidecar
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_fails_when_a_master_never_accepts_and_still_unpins() {
    let net = 61;
    let (_a, _b, sidecar) = lab(net, true).await;
    let admin = addr(net, 1, 9464);
    let stop = CancellationToken::new();
    // After the move to B, publish sessions are open but sign-in replies stay
    // small: like a key that is pending there, never accepted.
    let m = tokio::spawn(minion(net, 10, stop.clone()));
    publish_session_to(admin, "127.0.61.2").await;

    let (child, out) = enroll(&sidecar.admin_socket, "3s");
    let status = exit_and_output(child, &out).await;
    assert_eq!(status.code(), Some(1), "{}", out.lines().join("\n"));
    let text = out.lines().join("\n");
    // A: the minion was already on it with a publish session (a pending
    // minion never opens one). B: its sessions only ever saw small replies.
    assert!(
        text.contains("127.0.61.2: accepted") && text.contains("127.0.61.3: NOT accepted"),
        "{text}"
    );
    assert_eq!(pinned(admin).await, None, "unpinned even after a failure");
    stop.cancel();
    let _ = m.await;
}
