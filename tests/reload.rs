//! Reloading the config while running: SIGHUP and `POST /admin/reload`.

mod support;

use std::time::Duration;

use hyper::Method;
use salt_sidecar::standin::{StandinMaster, ZmtpClient};
use salt_sidecar::status;
use salt_sidecar::zmtp::SocketType;
use support::{addr, config, Sidecar};

const T: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_new_settings_without_touching_open_sessions() {
    let net = 70;
    let a = StandinMaster::start("A", addr(net, 2, 4505), addr(net, 2, 4506))
        .await
        .expect("A");
    let _b = StandinMaster::start("B", addr(net, 3, 4505), addr(net, 3, 4506))
        .await
        .expect("B");
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
    std::fs::write(
        &sidecar.config_path,
        config(net, &masters, "master_alive_interval: 1\nrandom_reauth_delay: 0\nmaster_failback: true\nmaster_failback_interval: 1"),
    )
    .expect("rewrite config");
    sidecar.signal("HUP");
    sidecar
        .log
        .wait_for_async(&["reload: applied; open sessions untouched"], T)
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
    let _a = StandinMaster::start("A", addr(net, 2, 4505), addr(net, 2, 4506))
        .await
        .expect("A again");
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
    let _a = StandinMaster::start("A", addr(net, 2, 4505), addr(net, 2, 4506))
        .await
        .expect("A");
    let sidecar = Sidecar::start(&config(net, &["127.0.71.2"], "master_alive_interval: 1"));
    sidecar
        .log
        .wait_for_async(&["selected master"], Duration::from_secs(5))
        .await;
    let admin = addr(net, 1, 9464);

    // A broken file: refused with file, line and key; the sidecar keeps serving.
    std::fs::write(
        &sidecar.config_path,
        "master: [127.0.71.2]\nmaster_alive_interval: soon\n",
    )
    .expect("write");
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
    let reply = status::request(admin, Method::POST, "/admin/reload", T)
        .await
        .expect("http");
    assert_eq!(reply.status, 409);
    assert!(
        reply.body.starts_with("reload refused: invalid config")
            && reply.body.trim().lines().count() == 1,
        "{}",
        reply.body
    );

    // A new master list needs a restart (for now): refused, named.
    std::fs::write(
        &sidecar.config_path,
        config(
            net,
            &["127.0.71.2", "127.0.71.3"],
            "master_alive_interval: 1",
        ),
    )
    .expect("write");
    let reply = status::request(admin, Method::POST, "/admin/reload", T)
        .await
        .expect("http");
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body.contains("`master`") && reply.body.contains("restart"),
        "{}",
        reply.body
    );

    // Back to the original file: a no-op reload succeeds.
    std::fs::write(
        &sidecar.config_path,
        config(net, &["127.0.71.2"], "master_alive_interval: 1"),
    )
    .expect("write");
    let reply = status::request(admin, Method::POST, "/admin/reload", T)
        .await
        .expect("http");
    assert_eq!(
        (reply.status, reply.body.trim()),
        (200, "ok: reloaded: no change")
    );
}
