//! Reloading the config while running: SIGHUP and `POST /admin/reload`.

mod support;

use std::time::Duration;

use hyper::Method;
use salt_sidecar::standin::{StandinError, ZmtpClient};
use salt_sidecar::status;
use salt_sidecar::zmtp::SocketType;
use support::{addr, config, Sidecar, T};

/// `POST /admin/reload` on the sidecar's admin socket.
async fn reload(sidecar: &Sidecar) -> status::Reply {
    status::request(&sidecar.admin_socket, Method::POST, "/admin/reload", T)
        .await
        .expect("http")
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_new_settings_without_touching_open_sessions() {
    let net = 70;
    let a = support::master("A", net, 2).await;
    let _b = support::master("B", net, 3).await;
    let masters = ["127.0.70.2", "127.0.70.3"];
    let sidecar = Sidecar::start(&config(
        net,
        &masters,
        "master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: false",
    ));
    sidecar
        .log
        .wait_for_async(&["selected master", "127.0.70.2"], Duration::from_secs(5))
        .await;
    let mut stream = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("connect");
    assert_eq!(stream.request(b"1", T).await.expect("reply"), b"A:1");

    // Turn failback on, by reload.
    sidecar.rewrite(&config(
        net,
        &masters, "master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: true\nmaster_failback_interval: 1"),
    );
    sidecar.signal("HUP");
    sidecar
        .log
        .wait_for_async(
            &["reload: applied settings; sessions to kept masters untouched"],
            T,
        )
        .await;
    assert_eq!(
        stream
            .request(b"2", T)
            .await
            .expect("the open session survived the reload"),
        b"A:2"
    );

    // The new policy is in force: after a failover, the sidecar now fails back.
    a.kill().await;
    sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failover\""],
            Duration::from_secs(5),
        )
        .await;
    let _a = support::master("A", net, 2).await;
    sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failback\""],
            Duration::from_secs(10),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_or_unsupported_reload_is_refused_and_the_running_config_kept() {
    let net = 71;
    let _a = support::master("A", net, 2).await;
    let sidecar = Sidecar::start(&config(net, &["127.0.71.2"], "master_alive_interval: 1"));
    sidecar
        .log
        .wait_for_async(&["selected master"], Duration::from_secs(5))
        .await;

    // A broken file: refused with file, line and key; the sidecar keeps serving.
    sidecar.rewrite("master: [127.0.71.2]\nmaster_alive_interval: soon\n");
    sidecar.signal("HUP");
    let line = sidecar
        .log
        .wait_for_async(&["reload refused", "invalid config"], T)
        .await;
    assert!(
        line.contains("config.yaml:2:24: master_alive_interval:"),
        "{line}"
    );
    let mut c = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("still serving");
    assert_eq!(c.request(b"x", T).await.expect("reply"), b"A:x");

    // The same through the admin API: 409 and one line.
    let reply = reload(&sidecar).await;
    assert_eq!(reply.status, 409);
    assert!(
        reply.body.starts_with("reload refused: invalid config")
            && reply.body.trim().lines().count() == 1,
        "{}",
        reply.body
    );

    // New listeners need new sockets: refused, named.
    sidecar.rewrite(
        &config(net, &["127.0.71.2"], "master_alive_interval: 1")
            .replace("listen: 127.0.71.1", "listen: 127.0.71.9"),
    );
    let reply = reload(&sidecar).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("sidecar.listen") && reply.body.contains("restart"),
        "{}",
        reply.body
    );

    // Back to the original file: a no-op reload succeeds.
    sidecar.rewrite(&config(net, &["127.0.71.2"], "master_alive_interval: 1"));
    let reply = reload(&sidecar).await;
    assert_eq!(
        (reply.status, reply.body.trim()),
        (200, "ok: reloaded: no change")
    );
}

/// The default: a removed master's sessions move to the new active master
/// (same connection, answered there).
#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_master_list_keeps_sessions_to_kept_masters_and_moves_removed_ones() {
    reload_master_list(72, Sessions::Move).await;
}

/// `move_sessions: false`: a removed master's sessions drain (closed once
/// idle, not reset).
#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_master_list_drains_removed_ones_with_moves_off() {
    reload_master_list(73, Sessions::Drain).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Sessions {
    Move,
    Drain,
}

async fn reload_master_list(net: u8, sessions: Sessions) {
    let _a = support::master("A", net, 2).await;
    let _b = support::master("B", net, 3).await;
    let _c = support::master("C", net, 4).await;
    let extra = "master_alive_interval: 1\nrandom_reauth_delay: 0";
    let config = |net: u8, masters: &[&str], extra: &str| {
        let mut yaml = support::Yaml::new(&format!("127.0.{net}.1"), masters)
            .minion(extra)
            .sidecar("drain_timeout", "3s");
        if sessions == Sessions::Drain {
            yaml = yaml.sidecar("move_sessions", "false");
        }
        yaml.build()
    };
    let m = |host: u8| format!("127.0.{net}.{host}");
    let (a, b, c) = (m(2), m(3), m(4));
    let sidecar = Sidecar::start(&config(net, &[&a, &b], extra));
    sidecar
        .log
        .wait_for_async(&["selected master", &a], Duration::from_secs(5))
        .await;
    let admin = addr(net, 1, 9464);
    let mut on_a = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("connect");
    assert_eq!(on_a.request(b"1", T).await.expect("reply"), b"A:1");

    // Add C at the end: A stays active, the session to A is untouched, C is probed.
    sidecar.rewrite(&config(net, &[&a, &b, &c], extra));
    let reply = reload(&sidecar).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains(&format!("added: [{c}], removed: []")),
        "{}",
        reply.body
    );
    assert_eq!(
        on_a.request(b"2", T)
            .await
            .expect("the session to a kept master survived"),
        b"A:2"
    );
    sidecar
        .log
        .wait_for_async(
            &["master is up", &format!("master={c}")],
            Duration::from_secs(5),
        )
        .await;
    let (report, _) = status::fetch(&admin.into(), T).await.expect("status");
    let names: Vec<&str> = report.masters.iter().map(|m| m.master.as_str()).collect();
    assert_eq!(names, [&a, &b, &c]);
    assert_eq!(report.active.as_deref(), Some(a.as_str()));

    // Remove A: the minion moves to B (reason reload); its session to A
    // moves to B (the default) or drains (closed once idle, not reset); new
    // connections go to B.
    let moved_before = support::moved(admin, "ret");
    sidecar.rewrite(&config(net, &[&b, &c], extra));
    sidecar.signal("HUP");
    let fate = match sessions {
        Sessions::Move => "reload: master removed; its sessions move",
        Sessions::Drain => "reload: master removed; its sessions drain",
    };
    sidecar.log.wait_for_async(&[fate, &a], T).await;
    sidecar
        .log
        .wait_for_async(
            &[
                "switched master",
                "from=\"none\"",
                &format!("to=\"{b}\""),
                "reason=\"reload\"",
            ],
            T,
        )
        .await;
    if sessions == Sessions::Move {
        support::until_moved(admin, "ret", moved_before, Duration::from_secs(6)).await;
    }
    match sessions {
        // Same connection, now answered by B (moved once quiet for 2 s).
        Sessions::Move => assert_eq!(
            on_a.request(b"3", T)
                .await
                .expect("the moved session answers"),
            b"B:3"
        ),
        // Idle, the drained session is closed gracefully (EOF), not reset.
        Sessions::Drain => match on_a.recv(Duration::from_secs(5)).await {
            Err(StandinError::Closed(_)) => {}
            other => panic!("expected a graceful close of the drained session, got {other:?}"),
        },
    }
    let mut fresh = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("connect");
    assert_eq!(fresh.request(b"4", T).await.expect("reply"), b"B:4");
    let metrics = status::request(admin, Method::GET, "/metrics", T)
        .await
        .expect("metrics")
        .body;
    assert!(
        !metrics.contains(&format!("salt_sidecar_master_up{{master=\"{a}\"}}")),
        "a removed master's state gauges are gone"
    );
    assert!(
        metrics.contains(&format!("salt_sidecar_master_up{{master=\"{c}\"}} 1")),
        "the added master is up"
    );
}

/// `salt-sidecar reload` (what `systemctl reload` runs): exit 0 once the new
/// config is in force, 1 with the file, line and key when it is refused, 2
/// when no sidecar answers.
#[tokio::test(flavor = "multi_thread")]
async fn the_reload_subcommand_reports_the_verdict_and_returns_once_in_force() {
    let net = 74;
    let _a = support::master("A", net, 2).await;
    let _b = support::master("B", net, 3).await;
    let (a, b) = ("127.0.74.2", "127.0.74.3");
    let sidecar = Sidecar::start(&config(net, &[a], "master_alive_interval: 1"));
    sidecar
        .log
        .wait_for_async(&["selected master", a], Duration::from_secs(5))
        .await;
    let bin = env!("CARGO_BIN_EXE_salt-sidecar");
    let reload_cmd = |socket: &std::path::Path| {
        let out = std::process::Command::new(bin)
            .arg("reload")
            .arg("--socket")
            .arg(socket)
            .output()
            .expect("run salt-sidecar reload");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A new master list: when the command returns, /status already shows it.
    sidecar.rewrite(&config(net, &[a, b], "master_alive_interval: 1"));
    let (code, stdout, stderr) = reload_cmd(&sidecar.admin_socket);
    assert_eq!(code, Some(0), "stdout {stdout:?} stderr {stderr:?}");
    assert!(
        stdout.contains(&format!("added: [{b}], removed: []")),
        "{stdout}"
    );
    let (report, _) = status::fetch(&addr(net, 1, 9464).into(), T)
        .await
        .expect("status");
    let names: Vec<&str> = report.masters.iter().map(|m| m.master.as_str()).collect();
    assert_eq!(names, [a, b], "in force when `reload` returned");

    // A broken file: exit 1, the reason on stderr with file, line and key.
    sidecar.rewrite("master: [127.0.74.2]\nmaster_alive_interval: soon\n");
    let (code, stdout, stderr) = reload_cmd(&sidecar.admin_socket);
    assert_eq!(code, Some(1), "stdout {stdout:?} stderr {stderr:?}");
    assert!(
        stderr.contains("refused") && stderr.contains("config.yaml:2:24: master_alive_interval:"),
        "{stderr}"
    );
    let (report, _) = status::fetch(&addr(net, 1, 9464).into(), T)
        .await
        .expect("status");
    assert_eq!(report.masters.len(), 2, "the running config stays");

    // No sidecar behind the socket: exit 2, saying so.
    let (code, _, stderr) = reload_cmd(&sidecar.admin_socket.with_file_name("none.sock"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is salt-sidecar running"), "{stderr}");
}
