//! Issue 23 point 1: what a ZeroMQ minion sees through the sidecar, so that
//! Salt's own events fire as with native failover (`sidecar.salt_events`,
//! on by default; `proxy/data/forward/notice.rs`).
//!
//! A Salt minion's alive check (`status.master`) looks for an ESTABLISHED
//! connection to its master's publish port: these tests play the minion
//! with raw ZMTP clients (a SUB on the publish port, a DEALER on the ret
//! port) against real libzmq masters (`tests/helpers/zmq_master.py`, PUB and
//! ROUTER, SIGKILLed by PID), and assert what that check would find:
//! with every master down the publish connection is closed and new ones are
//! refused while ret connections are held; after a switch the moved publish
//! session first delivers the new master's publications (none missed), is
//! closed at its first quiet moment, reconnects are refused until the
//! minion reacts, and the reconnect is then served by the new master.
//!
//! Needs the test venv (`./scripts/test-deps`); fails with that advice if missing.

mod support;

use std::time::{Duration, Instant};

use salt_sidecar::api::MinionNotice;
use salt_sidecar::standin::{StandinError, ZmtpClient};
use salt_sidecar::zmtp::SocketType;
use support::py::zmq_master;
use support::{addr, sample, scrape, status, until_answered_by, Sidecar, Yaml};

const T: Duration = Duration::from_secs(2);

/// `salt_sidecar_minion_reconnects_asked_total{port="publish",reason}`.
fn asked(admin: std::net::SocketAddr, reason: &str) -> f64 {
    sample(
        &scrape(admin),
        "salt_sidecar_minion_reconnects_asked_total",
        &[("port", "publish"), ("reason", reason)],
    )
    .unwrap_or_else(|| panic!("no minion_reconnects_asked_total series for {reason}"))
}

/// A SUB through the sidecar: connected and handshaken, or why not.
async fn subscribe(net: u8) -> Result<ZmtpClient, StandinError> {
    ZmtpClient::connect(addr(net, 1, 4505), SocketType::Sub, T).await
}

/// Keeps connecting a SUB (as libzmq reconnects) until the handshake
/// completes; returns it and how long that took.
async fn until_subscribed(net: u8, limit: Duration) -> (ZmtpClient, Duration) {
    let start = Instant::now();
    loop {
        if let Ok(sub) = subscribe(net).await {
            return (sub, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "no publish session through the sidecar within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next publication's text.
async fn next_tick(sub: &mut ZmtpClient, limit: Duration) -> String {
    let msg = sub.recv(limit).await.expect("a publication");
    String::from_utf8_lossy(&msg.concat()).into_owned()
}

/// Every master down: the minion's publish connection is closed, new ones
/// are refused (Salt's alive check finds none and fires
/// `__master_disconnected`), a ret request is held and served once a
/// master is back, and then the publish port accepts again.
#[tokio::test(flavor = "multi_thread")]
async fn with_every_master_down_the_publish_connection_is_closed_and_refused_and_ret_is_held() {
    let net = 230;
    let mut a = zmq_master("A", net, 2, 0.2);
    let sidecar = Sidecar::start(
        &Yaml::new("127.0.230.1", &["127.0.230.2"])
            .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
            .build(),
    );
    let admin = addr(net, 1, 9464);
    until_answered_by(addr(net, 1, 4506), "A", Duration::from_secs(10)).await;
    let (mut sub, _) = until_subscribed(net, Duration::from_secs(5)).await;
    assert!(next_tick(&mut sub, T).await.starts_with("A:tick"));

    a.sigkill();
    sidecar
        .log
        .wait_for_async(
            &["every master is down", "refusing"],
            Duration::from_secs(10),
        )
        .await;
    // The publish session is closed, not held: the minion sees it go.
    let closed = loop {
        match sub.recv(Duration::from_secs(5)).await {
            Ok(_) => continue, // publications already on their way
            Err(e) => break e,
        }
    };
    assert!(
        matches!(closed, StandinError::Closed(_) | StandinError::Io(_)),
        "the publish session ended, not timed out: {closed}"
    );
    // A new publish connection is refused; a ret request is held.
    let refused = subscribe(net).await;
    assert!(
        refused.is_err(),
        "a publish connection completed its handshake with every master down"
    );
    assert!(
        asked(admin, "all_down") >= 2.0,
        "the close and the refusal are counted"
    );
    let held = tokio::spawn(async move {
        // Held: its handshake completes only once a master is back (started
        // below, then up after `rise` probes), so not within `T`.
        let mut c = ZmtpClient::connect(
            addr(net, 1, 4506),
            SocketType::Dealer,
            Duration::from_secs(30),
        )
        .await?;
        c.request(b"held", Duration::from_secs(30)).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !held.is_finished(),
        "nothing can answer while every master is down"
    );

    // A master is back: the held request is served, and publish sessions
    // are accepted again (Salt's alive check finds one: `__master_connected`,
    // or the sign-in of a 3006+ minion's new publish channel).
    let mut _a = zmq_master("A", net, 2, 0.2);
    let reply = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("served in time")
        .expect("task")
        .expect("the held request was answered");
    assert_eq!(reply, b"A:held");
    let (mut sub, _) = until_subscribed(net, Duration::from_secs(5)).await;
    assert!(next_tick(&mut sub, T).await.starts_with("A:tick"));
    sidecar.assert_no_panic();
}

/// A failover moves the publish session (the new master's first publication
/// arrives on the same connection: none missed at the switch), then closes
/// it at its first quiet moment; reconnects are refused until the minion
/// reacts (a ret session it had before is closed, as Salt 3006+ closes its
/// request channel before signing in again), and the reconnect is served
/// by the new master at once.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_switch_the_moved_publish_session_closes_when_quiet_and_a_reconnect_reaches_the_new_master(
) {
    let net = 231;
    // Ticks every 3 s: the publish session is quiet for 2 s after each.
    let mut a = zmq_master("A", net, 2, 3.0);
    let mut _b = zmq_master("B", net, 3, 3.0);
    let sidecar = Sidecar::start(
        &Yaml::new("127.0.231.1", &["127.0.231.2", "127.0.231.3"])
            // The window's longest: one alive interval (5 s) + 2 s; the
            // minion's reaction below ends it sooner.
            .minion("master_alive_interval: 5\nrandom_reauth_delay: 0")
            .sidecar("drain_timeout", "30s")
            .build(),
    );
    let admin = addr(net, 1, 9464);
    sidecar
        .log
        .wait_for_async(&["master is up", "127.0.231.3"], Duration::from_secs(15))
        .await;
    // The minion's request channel, kept open across the switch.
    let mut req = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("ret session");
    assert!(req
        .request(b"hello", T)
        .await
        .expect("A answers")
        .starts_with(b"A:"));
    let (mut sub, _) = until_subscribed(net, Duration::from_secs(5)).await;
    assert!(next_tick(&mut sub, Duration::from_secs(5))
        .await
        .starts_with("A:tick"));

    assert_eq!(status(admin).minion_notice, None, "nothing to notice yet");
    a.sigkill();
    // No publication missed: B's first tick comes on the moved session.
    let tick = next_tick(&mut sub, Duration::from_secs(10)).await;
    assert!(tick.starts_with("B:tick"), "{tick}");
    let ticked = Instant::now();
    assert_eq!(
        status(admin).minion_notice,
        Some(MinionNotice::Closing),
        "/status says the moved session is to be closed"
    );
    assert!(req
        .request(b"moved", T)
        .await
        .expect("B answers")
        .starts_with(b"B:"));
    // Closed at its first quiet moment (2 s after that tick), long before
    // the drain timeout (30 s).
    let closed = sub.recv(Duration::from_secs(10)).await;
    let quiet = ticked.elapsed();
    assert!(
        matches!(closed, Err(StandinError::Closed(_) | StandinError::Io(_))),
        "the moved publish session was closed: {closed:?}"
    );
    assert!(
        quiet >= Duration::from_millis(1500) && quiet < Duration::from_secs(4),
        "closed {quiet:?} after the last publication"
    );
    // Reconnects are refused while the minion has not reacted ...
    let refused = subscribe(net).await;
    assert!(
        refused.is_err(),
        "a reconnect was accepted during the window"
    );
    assert!(
        asked(admin, "switch") >= 2.0,
        "the close and the refusal are counted"
    );
    assert_eq!(
        status(admin).minion_notice,
        Some(MinionNotice::Refusing),
        "/status says the minion's publish connections are refused"
    );
    sidecar
        .log
        .wait_for_async(&["so the minion's alive check sees it"], T)
        .await;

    // ... which it does by closing its request channel: the window ends at
    // once, and the reconnect is served by B.
    drop(req);
    let reacted = Instant::now();
    let (mut sub, took) = until_subscribed(net, Duration::from_secs(5)).await;
    assert!(
        reacted.elapsed() < Duration::from_secs(2),
        "the window ended when the minion reacted, not at its end: {took:?}"
    );
    assert!(next_tick(&mut sub, Duration::from_secs(5))
        .await
        .starts_with("B:tick"));
    sidecar
        .log
        .wait_for_async(
            &["publish connections accepted again", "request channel"],
            T,
        )
        .await;
    assert_eq!(status(admin).minion_notice, None, "noticed");
    sidecar.assert_no_panic();
}

/// A minion that never reacts (Salt 2019.2 with `master_type: str` only
/// waits for the connection): the window ends after one alive interval and
/// the margin, and the reconnect is served. With `salt_events: false` a
/// switch stays invisible: the moved publish session is never closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_ends_by_itself_and_salt_events_false_keeps_the_switch_hidden() {
    let net = 232;
    let mut a = zmq_master("A", net, 2, 3.0);
    let mut _b = zmq_master("B", net, 3, 3.0);
    let sidecar = Sidecar::start(
        &Yaml::new("127.0.232.1", &["127.0.232.2", "127.0.232.3"])
            .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
            .sidecar("drain_timeout", "30s")
            .build(),
    );
    sidecar
        .log
        .wait_for_async(&["master is up", "127.0.232.3"], Duration::from_secs(15))
        .await;
    let (mut sub, _) = until_subscribed(net, Duration::from_secs(5)).await;
    assert!(next_tick(&mut sub, Duration::from_secs(5))
        .await
        .starts_with("A:tick"));
    a.sigkill();
    assert!(next_tick(&mut sub, Duration::from_secs(10))
        .await
        .starts_with("B:tick"));
    assert!(
        sub.recv(Duration::from_secs(10)).await.is_err(),
        "closed when quiet"
    );
    let closed = Instant::now();
    // Refused for one alive interval (1 s) + 2 s, then served.
    let (mut sub, _) = until_subscribed(net, Duration::from_secs(10)).await;
    let window = closed.elapsed();
    assert!(
        window >= Duration::from_millis(2500) && window < Duration::from_secs(5),
        "the window lasted {window:?}"
    );
    assert!(next_tick(&mut sub, Duration::from_secs(5))
        .await
        .starts_with("B:tick"));
    sidecar
        .log
        .wait_for_async(&["publish connections accepted again", "window passed"], T)
        .await;
    drop(sidecar);

    // The same switch with `salt_events: false`: hidden.
    let mut a2 = zmq_master("A", net, 2, 3.0);
    let hidden = Sidecar::start(
        &Yaml::new("127.0.232.1", &["127.0.232.2", "127.0.232.3"])
            .minion("master_alive_interval: 1\nrandom_reauth_delay: 0")
            .sidecar("drain_timeout", "30s")
            .sidecar("salt_events", "false")
            .build(),
    );
    hidden
        .log
        .wait_for_async(&["master is up", "127.0.232.3"], Duration::from_secs(15))
        .await;
    let (mut sub, _) = until_subscribed(net, Duration::from_secs(5)).await;
    assert!(next_tick(&mut sub, Duration::from_secs(5))
        .await
        .starts_with("A:tick"));
    a2.sigkill();
    for _ in 0..3 {
        let tick = next_tick(&mut sub, Duration::from_secs(10)).await;
        assert!(
            tick.starts_with("B:tick"),
            "{tick}: the session stays open on B"
        );
    }
    assert_eq!(asked(addr(net, 1, 9464), "switch"), 0.0);
    hidden.assert_no_panic();
}
