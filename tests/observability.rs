//! Observability, end to end: `/metrics` (checked by `promtool check
//! metrics`), `/healthz`, `/readyz`, `/status`, the admin commands,
//! `salt-sidecar status`, a real Prometheus scraping a sidecar through a
//! failover, and the shipped dashboard, alert rules and scrape config.
//!
//! Each test uses its own loopback /24 (127.0.40.x .. 127.0.46.x): the
//! sidecar on .1, masters on .2, .3, Prometheus on .1:9090. Prometheus and
//! promtool come from the Debian `prometheus` package (./scripts/test-deps);
//! without them these tests fail, unless SALT_SIDECAR_SKIP_PROMETHEUS=1.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Method;
use salt_sidecar::standin::ZmtpClient;
use salt_sidecar::status::{self, AdminAddr, HealthState, Reply, StatusReport};
use salt_sidecar::zmtp::SocketType;
use support::{addr, ask, config, master, sample, series, until_answered_by, Sidecar, T};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The families of SPEC §4, with their Prometheus types.
const FAMILIES: &[(&str, &str)] = &[
    ("salt_sidecar_master_up", "gauge"),
    ("salt_sidecar_master_active", "gauge"),
    ("salt_sidecar_health_checks_total", "counter"),
    ("salt_sidecar_health_check_duration_seconds", "histogram"),
    ("salt_sidecar_switches_total", "counter"),
    // Issue 25: switches by the master left (`switches_total` counts them by
    // the master switched to), so neither family grows with masters².
    ("salt_sidecar_switches_from_total", "counter"),
    ("salt_sidecar_sessions_active", "gauge"),
    ("salt_sidecar_sessions_total", "counter"),
    ("salt_sidecar_bytes_total", "counter"),
    // SPEC §3: sessions re-routed (preserved) or cut (reset) by a switch.
    ("salt_sidecar_session_moves_total", "counter"),
    // Issue 23: minion connections closed or refused so Salt's events fire.
    ("salt_sidecar_minion_reconnects_asked_total", "counter"),
    // Issue 22.3: how sign-ins after a switch were paced, what the asks
    // cost the new master, how long the first sign-in waited.
    ("salt_sidecar_sign_ins_paced_total", "counter"),
    ("salt_sidecar_sign_in_pace_asks_total", "counter"),
    ("salt_sidecar_sign_ins_held_stale_total", "counter"),
    ("salt_sidecar_sign_in_pace_wait_seconds", "histogram"),
    (
        "salt_sidecar_upstream_connect_duration_seconds",
        "histogram",
    ),
    ("salt_sidecar_upstream_connect_errors_total", "counter"),
    ("salt_sidecar_dns_resolutions_total", "counter"),
    // SPEC §3 "Discovery": lookups of `sidecar.master_srv`, by result.
    ("salt_sidecar_srv_lookups_total", "counter"),
    ("salt_sidecar_build_info", "gauge"),
    ("salt_sidecar_last_switch_timestamp_seconds", "gauge"),
    // SPEC §3 "never the reason a minion is offline": the sidecar's own
    // exhaustion and the connections refused over a cap.
    ("salt_sidecar_resource_errors_total", "counter"),
    ("salt_sidecar_connections_refused_total", "counter"),
    // Issue 12.3: transport tcp, a ret request unanswered past
    // `sidecar.ret_answer_timeout`, by the `ping` re-probe's verdict.
    ("salt_sidecar_passive_suspicions_total", "counter"),
    // Issue 22.4: every check of a master by what it cost it (passive,
    // ping on a live session, probe connection, on-demand before a switch).
    ("salt_sidecar_health_evidence_total", "counter"),
    // Issue 12: a graceful switch still sending new connections to the
    // master it is leaving.
    ("salt_sidecar_graceful_switch_waiting", "gauge"),
    // `probe: ping` rounds given a plain connect: the ret port just opened.
    ("salt_sidecar_pings_deferred_total", "counter"),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn http(at: impl Into<AdminAddr>, method: Method, path: &str) -> Reply {
    status::request(at, method, path, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn get(at: impl Into<AdminAddr>, path: &str) -> Reply {
    http(at, Method::GET, path).await
}

async fn post(at: impl Into<AdminAddr>, path: &str) -> Reply {
    http(at, Method::POST, path).await
}

async fn status_of(admin: SocketAddr) -> StatusReport {
    let r = get(admin, "/status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// Asserts a reply is a 4xx with exactly one line of text.
fn assert_one_line(r: &Reply, status: u16, contains: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.body.ends_with('\n') && r.body.matches('\n').count() == 1,
        "not one line: {:?}",
        r.body
    );
    assert!(r.body.contains(contains), "{:?} lacks {contains:?}", r.body);
}

/// A Prometheus tool (`prometheus`, `promtool`), or `None` when skipping
/// is asked for; a missing tool fails the test.
fn tool(name: &str) -> Option<PathBuf> {
    if std::env::var("SALT_SIDECAR_SKIP_PROMETHEUS").as_deref() == Ok("1") {
        support::skip(&format!(
            "SKIPPED the {name} test: SALT_SIDECAR_SKIP_PROMETHEUS=1"
        ));
        return None;
    }
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None => panic!(
            "`{name}` is not installed: run ./scripts/test-deps (Debian package prometheus), \
             or set SALT_SIDECAR_SKIP_PROMETHEUS=1 to skip the Prometheus tests"
        ),
    }
}

/// Runs `promtool ARGS` (stdin: `input`); returns (success, stdout + stderr).
async fn promtool(promtool: &Path, args: &[&str], input: Option<&str>) -> (bool, String) {
    let mut child = tokio::process::Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).await.expect("write stdin");
    }
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool in time")
        .expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_count_sessions_bytes_and_switches() {
    let net = 40;
    let admin = addr(net, 1, 9464);
    let a = master("A", net, 2).await;
    let _b = master("B", net, 3).await;
    let (a_label, b_label) = ("127.0.40.2", "127.0.40.3");
    let sidecar = Sidecar::start(&config(
        net,
        &[a_label, b_label],
        "master_alive_interval: 1\nrandom_reauth_delay: 0",
    ));
    until_answered_by(addr(net, 1, 4506), "A", Duration::from_secs(5)).await;

    let r = get(admin, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("text/plain; version=0.0.4"));
    let text = r.body;
    for (family, kind) in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} ({kind}) missing:\n{text}"
        );
    }
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        families.len(),
        FAMILIES.len(),
        "exactly the families of SPEC §3 and §4: {families:?}"
    );
    // Every labelled series exists from the start, at 0 if nothing happened.
    for end in [a_label, b_label, "none"] {
        for reason in ["failover", "failback", "admin", "reload"] {
            for (family, label) in [
                ("salt_sidecar_switches_total", "to"),
                ("salt_sidecar_switches_from_total", "from"),
            ] {
                assert_eq!(
                    sample(&text, family, &[(label, end), ("reason", reason)]),
                    Some(0.0),
                    "{family}{{{label}={end},reason={reason}}}"
                );
            }
        }
    }
    // Linear in the masters: (2 masters + none) × 4 reasons, not pairs.
    assert_eq!(series(&text, "salt_sidecar_switches_total").len(), 12);
    for m in [a_label, b_label] {
        for kind in ["refused", "timeout", "unreachable", "unresolved", "other"] {
            assert!(sample(
                &text,
                "salt_sidecar_upstream_connect_errors_total",
                &[("master", m), ("kind", kind)]
            )
            .is_some());
        }
        for port in ["publish", "ret"] {
            for dir in ["to_master", "to_minion"] {
                assert!(sample(
                    &text,
                    "salt_sidecar_bytes_total",
                    &[("master", m), ("port", port), ("direction", dir)]
                )
                .is_some());
            }
        }
        assert!(sample(
            &text,
            "salt_sidecar_health_checks_total",
            &[("master", m), ("port", "ret"), ("result", "protocol")]
        )
        .is_some());
    }
    assert_eq!(
        sample(
            &text,
            "salt_sidecar_dns_resolutions_total",
            &[("result", "failure")]
        ),
        Some(0.0)
    );
    for result in ["success", "empty", "failure"] {
        assert_eq!(
            sample(&text, "salt_sidecar_srv_lookups_total", &[("result", result)]),
            Some(0.0),
            "srv_lookups_total{{result={result}}} exists from the start, also without an SRV record"
        );
    }
    assert_eq!(
        sample(
            &text,
            "salt_sidecar_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_master_up", &[("master", a_label)]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_master_active", &[("master", a_label)]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_master_active", &[("master", b_label)]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_last_switch_timestamp_seconds", &[]),
        Some(0.0)
    );
    // What the minion did so far is counted: sessions, bytes both ways, connects, probes.
    let ret_a = [("master", a_label), ("port", "ret")];
    assert!(sample(&text, "salt_sidecar_sessions_total", &ret_a).unwrap_or(0.0) >= 1.0);
    for dir in ["to_master", "to_minion"] {
        let bytes = sample(
            &text,
            "salt_sidecar_bytes_total",
            &[ret_a[0], ret_a[1], ("direction", dir)],
        );
        assert!(bytes.unwrap_or(0.0) > 0.0, "bytes {dir}: {bytes:?}");
    }
    assert!(
        sample(
            &text,
            "salt_sidecar_upstream_connect_duration_seconds_count",
            &[("master", a_label)]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sample(
            &text,
            "salt_sidecar_health_checks_total",
            &[("master", a_label), ("port", "publish"), ("result", "ok")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sample(
            &text,
            "salt_sidecar_health_check_duration_seconds_count",
            &[("master", a_label), ("port", "ret")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // An open session is a gauge that goes back down when it closes.
    let mut held = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("connect");
    held.request(b"x", T).await.expect("reply");
    let text = get(admin, "/metrics").await.body;
    assert_eq!(
        sample(&text, "salt_sidecar_sessions_active", &ret_a),
        Some(1.0)
    );

    if let Some(promtool_bin) = tool("promtool") {
        let (ok, out) = promtool(&promtool_bin, &["check", "metrics"], Some(&text)).await;
        assert!(ok, "promtool check metrics:\n{out}");
    }

    // A failover is counted with its reason and time.
    a.kill().await;
    sidecar
        .log
        .wait_for_async(
            &["switched master", "reason=\"failover\""],
            Duration::from_secs(5),
        )
        .await;
    let text = get(admin, "/metrics").await.body;
    assert_eq!(
        sample(
            &text,
            "salt_sidecar_switches_total",
            &[("to", b_label), ("reason", "failover")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "salt_sidecar_switches_from_total",
            &[("from", a_label), ("reason", "failover")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_master_active", &[("master", a_label)]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_master_active", &[("master", b_label)]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "salt_sidecar_master_up", &[("master", a_label)]),
        Some(0.0)
    );
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let at = sample(&text, "salt_sidecar_last_switch_timestamp_seconds", &[]).unwrap_or(0.0);
    assert!((unix - at).abs() < 30.0, "last switch at {at}, now {unix}");
    assert_eq!(
        sample(&text, "salt_sidecar_sessions_active", &ret_a),
        Some(0.0),
        "the reset session is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_readyz_and_status_follow_the_masters() {
    let net = 41;
    let admin = addr(net, 1, 9464);
    let a = master("A", net, 2).await;
    // B is configured but not running.
    let sidecar = Sidecar::start(&config(
        net,
        &["127.0.41.2", "127.0.41.3"],
        "master_alive_interval: 1\nrandom_reauth_delay: 0",
    ));
    assert_one_line(&get(admin, "/healthz").await, 200, "ok");
    sidecar
        .log
        .wait_for_async(&["selected master", "127.0.41.2"], Duration::from_secs(5))
        .await;
    let r = get(admin, "/readyz").await;
    assert_one_line(&r, 200, "ready: 127.0.41.2 is active and up");
    // A is chosen as soon as it is up; B's first (refused) probe may still be
    // in flight, so wait for its verdict before reading the status.
    sidecar
        .log
        .wait_for_async(
            &["master is down", "master=127.0.41.3"],
            Duration::from_secs(5),
        )
        .await;

    let s = status_of(admin).await;
    assert!(s.ready, "{s:?}");
    assert_eq!(s.active.as_deref(), Some("127.0.41.2"));
    assert_eq!(s.pinned, None);
    assert_eq!(s.minion_id, "test-minion");
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        s.last_switch_unix_seconds, None,
        "the first choice is not a switch"
    );
    let [sa, sb] = s.masters.as_slice() else {
        panic!("two masters: {s:?}")
    };
    assert_eq!((sa.id, sa.rank, sa.master.as_str()), (0, 0, "127.0.41.2"));
    assert_eq!((sa.publish_port, sa.ret_port), (4505, 4506));
    assert_eq!(
        sa.addresses,
        vec!["127.0.41.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(sa.health, HealthState::Up);
    assert!(sa.active && !sa.pinned && !sa.drained);
    assert_eq!(sa.last_result.as_deref(), Some("probes ok"));
    assert!(
        sa.last_probe.as_deref().is_some_and(|t| t.ends_with('Z')),
        "{:?}",
        sa.last_probe
    );
    assert!(sa
        .last_probe_age_seconds
        .is_some_and(|a| (0.0..5.0).contains(&a)));
    assert_eq!(sb.health, HealthState::Down);
    assert!(!sb.active);
    let why = sb.last_result.as_deref().unwrap_or("");
    assert!(why.contains("refused"), "{why}");

    // An open minion session shows up in /status.
    let mut c = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, T)
        .await
        .expect("connect");
    c.request(b"x", T).await.expect("reply");
    let s = status_of(admin).await;
    assert_eq!(
        (s.masters[0].sessions.publish, s.masters[0].sessions.ret),
        (0, 1)
    );

    // Every master down: not ready (a one-line reason), still alive.
    a.kill().await;
    sidecar
        .log
        .wait_for_async(
            &["supervisor", "from=\"127.0.41.2\"", "reason=\"failover\""],
            Duration::from_secs(5),
        )
        .await;
    assert_one_line(
        &get(admin, "/readyz").await,
        503,
        "not ready: no master is selected",
    );
    assert_one_line(&get(admin, "/healthz").await, 200, "ok");
    let s = status_of(admin).await;
    assert!(!s.ready && s.active.is_none(), "{s:?}");
    assert!(s.ready_reason.contains("no master is selected"));
    assert!(s.last_switch_age_seconds.is_some_and(|a| a < 30.0));
    assert!(s
        .masters
        .iter()
        .all(|m| m.health == HealthState::Down && !m.active));
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_drain_unpin_move_the_minion_and_are_logged() {
    let net = 42;
    let admin = addr(net, 1, 9464);
    let ret = addr(net, 1, 4506);
    let _a = master("A", net, 2).await;
    let _b = master("B", net, 3).await;
    let sidecar = Sidecar::start(&config(
        net,
        &["127.0.42.2", "127.0.42.3"],
        "master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 1\nrandom_reauth_delay: 0",
    ));
    until_answered_by(ret, "A", Duration::from_secs(5)).await;

    // Pin by label: the minion moves to B, and stays there.
    let r = post(&sidecar.admin_socket, "/admin/pin?master=127.0.42.3").await;
    assert_one_line(&r, 200, "ok: pinned to 127.0.42.3; active: 127.0.42.3");
    sidecar.log.wait_for(&["admin: pinned to 127.0.42.3"], T);
    assert_eq!(ask(ret).await.as_deref(), Some("B"));
    let s = status_of(admin).await;
    assert_eq!(s.pinned.as_deref(), Some("127.0.42.3"));
    assert!(s.masters[1].pinned && s.masters[1].active);
    assert_one_line(
        &get(admin, "/readyz").await,
        200,
        "127.0.42.3 is active and up",
    );

    // Unpin: back to the best master.
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/unpin").await,
        200,
        "ok: unpinned; active: 127.0.42.2",
    );
    sidecar.log.wait_for(&["admin: unpinned"], T);
    // A graceful switch: new connections reach A once B's sessions (the
    // one `ask` above just closed, if it is still open) have moved.
    until_answered_by(ret, "A", T).await;
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/unpin").await,
        200,
        "not pinned; nothing to do",
    );

    // Drain by id: A is out of rotation, the minion moves to B.
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/drain?master=0").await,
        200,
        "ok: draining 127.0.42.2; active: 127.0.42.3",
    );
    sidecar.log.wait_for(&["admin: draining 127.0.42.2"], T);
    until_answered_by(ret, "B", T).await;
    let s = status_of(admin).await;
    assert!(s.masters[0].drained && !s.masters[0].active, "{s:?}");
    assert_eq!(s.active.as_deref(), Some("127.0.42.3"));

    // Undrain (`#0` is the id as logs print it): A is usable again, and once
    // it has been up for the failback interval the minion fails back to it.
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/undrain?master=%230").await,
        200,
        "ok: undrained 127.0.42.2; active: ",
    );
    sidecar.log.wait_for(&["admin: undrained 127.0.42.2"], T);
    sidecar
        .log
        .wait_for_async(
            &[
                "switched master",
                "to=\"127.0.42.2\"",
                "reason=\"failback\"",
            ],
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(ask(ret).await.as_deref(), Some("A"));

    let text = get(admin, "/metrics").await.body;
    // Each switch counted by the master left and the master switched to;
    // here both always agree.
    let switches = |from: &str, to: &str, reason: &str| {
        let left = sample(
            &text,
            "salt_sidecar_switches_from_total",
            &[("from", from), ("reason", reason)],
        );
        let joined = sample(
            &text,
            "salt_sidecar_switches_total",
            &[("to", to), ("reason", reason)],
        );
        assert_eq!(left, joined, "{from} -> {to} ({reason})");
        joined
    };
    assert_eq!(
        switches("127.0.42.2", "127.0.42.3", "admin"),
        Some(2.0),
        "pin and drain"
    );
    assert_eq!(
        switches("127.0.42.3", "127.0.42.2", "admin"),
        Some(1.0),
        "unpin"
    );
    assert_eq!(
        switches("127.0.42.3", "127.0.42.2", "failback"),
        Some(1.0),
        "undrain"
    );
    assert_eq!(
        sidecar.log.count(&["admin: "]),
        4,
        "one line per admin action"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_admin_requests_get_a_4xx_with_a_one_line_reason() {
    let net = 43;
    let admin = addr(net, 1, 9464);
    let _a = master("A", net, 2).await;
    let sidecar = Sidecar::start(&config(net, &["127.0.43.2"], "master_alive_interval: 1"));
    sidecar
        .log
        .wait_for_async(&["selected master"], Duration::from_secs(5))
        .await;

    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/pin").await,
        400,
        "missing ?master=",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/drain?master=").await,
        404,
        "no master ``; known: 127.0.43.2 (id 0)",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/pin?master=salt-z").await,
        404,
        "no master `salt-z`",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/pin?master=1").await,
        404,
        "no master `1`",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/pin?master=0&force=1").await,
        400,
        "bad query",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/unpin?master=0").await,
        400,
        "takes no parameters",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/admin/undrain?master=0&master=1").await,
        400,
        "bad query",
    );
    assert_one_line(
        &get(admin, "/admin/pin?master=0").await,
        405,
        "GET is not allowed on /admin/pin; use POST",
    );
    assert_one_line(
        &post(&sidecar.admin_socket, "/status").await,
        405,
        "use GET",
    );
    assert_one_line(&get(admin, "/nope").await, 404, "no such endpoint: /nope");

    // Raw bytes for what the client would not send: a browser's Origin, and garbage.
    async fn raw(admin: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(admin)
            .await
            .expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(T, s.read_to_end(&mut out))
            .await
            .expect("answer in time")
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }
    // Commands over TCP: refused, naming the socket (any local user, or a
    // browser page, can reach TCP).
    let answer = raw(
        admin,
        b"POST /admin/pin?master=0 HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("admin socket only") && answer.contains("admin.sock"),
        "{answer}"
    );
    // A page whose DNS name was rebound to 127.0.0.1 cannot read /status.
    let answer = raw(
        admin,
        b"GET /status HTTP/1.1\r\nHost: evil.example:9464\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("DNS rebinding"), "{answer}");
    let answer = raw(admin, b"\x16\x03\x01 not http at all\r\n\r\n").await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );

    // Nothing of that changed anything, and the endpoint still serves.
    let s = status_of(admin).await;
    assert_eq!((s.pinned, s.masters[0].drained), (None, false));
    assert_eq!(sidecar.log.count(&["admin: "]), 0);
    assert_one_line(&get(admin, "/healthz").await, 200, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_command_prints_a_table_or_the_raw_json() {
    let net = 44;
    let _a = master("A", net, 2).await;
    let sidecar = Sidecar::start(&config(
        net,
        &["127.0.44.2", "127.0.44.3"],
        "master_alive_interval: 1",
    ));
    sidecar
        .log
        .wait_for_async(&["master is down", "127.0.44.3"], Duration::from_secs(5))
        .await;
    sidecar
        .log
        .wait_for_async(&["selected master", "127.0.44.2"], Duration::from_secs(5))
        .await;
    let socket = sidecar.admin_socket.display().to_string();
    let run = |args: Vec<&str>| {
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
                .args(args)
                .env_remove("RUST_LOG")
                .output()
                .await
                .expect("run salt-sidecar status");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };

    let (code, table, err) = run(vec!["status", "--socket", &socket]).await;
    assert_eq!(code, Some(0), "{err}");
    eprintln!("{table}");
    assert!(table.contains("for minion test-minion"), "{table}");
    assert!(
        table.contains("ready:       yes: 127.0.44.2 is active and up"),
        "{table}"
    );
    let row = |label: &str| {
        table
            .lines()
            .find(|l| l.contains(label) && !l.starts_with("ready") && !l.starts_with("active"))
            .unwrap_or_else(|| panic!("no row for {label}:\n{table}"))
            .to_string()
    };
    let a = row("127.0.44.2");
    assert!(
        a.starts_with('*') && a.contains(" up ") && a.contains("active") && a.contains("probes ok"),
        "{a}"
    );
    let b = row("127.0.44.3");
    assert!(
        b.contains(" down ") && b.contains("standby") && b.contains("refused"),
        "{b}"
    );
    assert!(table
        .lines()
        .any(|l| l.contains("MASTER") && l.contains("HEALTH") && l.contains("SESSIONS")));
    assert!(
        table.contains("resources:   ") && table.contains("ran out 0 times, refused 0 over cap"),
        "{table}"
    );
    // The TCP endpoint serves the same document to users who cannot open the socket.
    let (code, tcp_table, err) = run(vec!["status", "--admin", "127.0.44.1:9464"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        tcp_table.contains("127.0.44.2 is active and up"),
        "{tcp_table}"
    );

    let (code, json, err) = run(vec!["status", "--admin", "127.0.44.1:9464", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let report: StatusReport =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(report.active.as_deref(), Some("127.0.44.2"));
    assert_eq!(report.masters.len(), 2);

    // Nothing listening there: exit 1 with a hint.
    let (code, out, err) = run(vec!["status", "--admin", "127.0.44.1:9"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("cannot connect to 127.0.44.1:9") && err.contains("--admin"),
        "{err}"
    );
    let (code, out, err) = run(vec!["status", "--socket", "/nonexistent/admin.sock"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("cannot connect to /nonexistent/admin.sock") && err.contains("--socket"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_admin_port_fails_start_up_before_listening_for_the_minion() {
    let net = 45;
    let _taken =
        std::net::TcpListener::bind(addr(net, 1, 9464)).expect("bind the admin port first");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        config(net, &["127.0.45.2"], "master_alive_interval: 1"),
    )
    .expect("write");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits in time")
        .expect("output");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot listen on 127.0.45.1:9464 (admin endpoint"),
        "{log}"
    );
    assert!(!log.contains("listening for the minion"), "{log}");
}

#[test]
fn a_remote_admin_endpoint_needs_admin_allow_remote() {
    let parse = |sidecar: &str| {
        salt_sidecar::config::parse(
            Path::new("t.yaml"),
            &format!("master: [a]\nmaster_alive_interval: 5\nsidecar:\n{sidecar}"),
        )
    };
    let err = parse("  admin: 192.0.2.7:9464\n").expect_err("refused");
    assert_eq!(err.key, "sidecar.admin");
    assert!(err.message.contains("admin_allow_remote: true"), "{err}");
    let ok = parse("  admin: 192.0.2.7:9464\n  admin_allow_remote: true\n").expect("allowed");
    assert!(ok.sidecar.admin_allow_remote);
    let v6 = parse("  admin: \"[::1]:9464\"\n").expect("::1 is loopback");
    assert!(!v6.sidecar.admin_allow_remote);
    assert!(
        parse("  admin: \"[::]:9464\"\n").is_err(),
        "the unspecified address is not loopback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_alert_rules_their_tests_and_the_example_config() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let (ok, out) = promtool(
        &promtool_bin,
        &["check", "rules", "dashboards/alerts.yml"],
        None,
    )
    .await;
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
    let (ok, out) = promtool(
        &promtool_bin,
        &["test", "rules", "dashboards/alerts.test.yml"],
        None,
    )
    .await;
    assert!(ok, "promtool test rules:\n{out}");
    // Every alert of SPEC §4 exists and is tested.
    let rules = std::fs::read_to_string(repo("dashboards/alerts.yml")).expect("read rules");
    let tests = std::fs::read_to_string(repo("dashboards/alerts.test.yml")).expect("read tests");
    for alert in [
        "SaltSidecarNoMasterUp",
        "SaltSidecarSwitchFlapping",
        "SaltSidecarStuckOnBackup",
        "SaltSidecarProbeLatencyHigh",
        "SaltSidecarScrapeDown",
        "SaltSidecarMasterDown",
        "SaltSidecarOutOfResources",
    ] {
        assert!(
            rules.contains(&format!("- alert: {alert}\n")),
            "{alert} missing"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} untested"
        );
    }
    assert_only_known_metrics("dashboards/alerts.yml", &rules);

    // The example scrape config, with the rules file beside it as it says.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo("config/prometheus.yml"),
        dir.path().join("prometheus.yml"),
    )
    .expect("copy");
    std::fs::copy(
        repo("dashboards/alerts.yml"),
        dir.path().join("salt-sidecar-alerts.yml"),
    )
    .expect("copy");
    let cfg = dir.path().join("prometheus.yml");
    let (ok, out) = promtool(
        &promtool_bin,
        &["check", "config", &cfg.to_string_lossy()],
        None,
    )
    .await;
    assert!(ok, "promtool check config:\n{out}");
}

/// Metric names (`salt_sidecar_*`) a text refers to, histogram series
/// folded into their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("salt_sidecar_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

fn assert_only_known_metrics(file: &str, text: &str) {
    let known: BTreeSet<&str> = FAMILIES.iter().map(|(f, _)| *f).collect();
    let used = metric_names(text);
    assert!(!used.is_empty(), "{file} uses no salt_sidecar metric");
    for name in &used {
        assert!(
            known.contains(name.as_str()),
            "{file} uses `{name}`, which the sidecar does not export"
        );
    }
}

/// Every PromQL expression of the dashboard: (where, expr).
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel `{}`", p["title"]), e.to_string()));
            }
        }
    }
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("annotation `{}`", a["name"]), e.to_string()));
        }
    }
    out
}

#[test]
fn the_dashboard_uses_only_exported_metrics_and_its_variables() {
    let text =
        std::fs::read_to_string(repo("dashboards/salt-sidecar.json")).expect("read dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_only_known_metrics("dashboards/salt-sidecar.json", &text);

    // Variables: the data source, and `instance` from the sidecar's own metrics.
    let vars = dash["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name} missing"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");
    assert_eq!(
        var("instance")["definition"],
        "label_values(salt_sidecar_build_info, instance)"
    );
    assert_eq!(var("instance")["multi"], true);

    // Every panel and query uses the data source variable, never a fixed one,
    // and every expression filters by $instance.
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    for (at, expr) in dashboard_exprs(&dash) {
        assert!(expr.contains("instance=~\"$instance\""), "{at}: {expr}");
    }

    // The panels the issue asks for.
    let titles: Vec<String> = panels
        .iter()
        .filter_map(|p| p["title"].as_str().map(str::to_lowercase))
        .collect();
    for want in [
        "active master per instance",
        "masters up",
        "switches by reason",
        "sessions",
        "bytes/s",
        "probe latency p50 / p99",
        "upstream connect errors",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(want)),
            "no panel `{want}` in {titles:?}"
        );
    }
    let all_exprs: String = dashboard_exprs(&dash)
        .into_iter()
        .map(|(_, e)| e + "\n")
        .collect();
    for q in [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "salt_sidecar_health_check_duration_seconds_bucket",
    ] {
        assert!(all_exprs.contains(q), "dashboard lacks {q}");
    }
}

/// A Prometheus server on loopback, stopped by PID on drop.
struct Prometheus {
    child: std::process::Child,
    at: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(bin: &Path, at: SocketAddr, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: salt-sidecar\n    scrape_timeout: 1s\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={at}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus { child, at, dir };
        let start = Instant::now();
        loop {
            if let Ok(r) = status::request(at, Method::GET, "/-/ready", T).await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "prometheus not ready in 20 s:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<what>`; the `data` of a successful answer.
    async fn api(&self, what: &str) -> serde_json::Value {
        let r = status::request(
            self.at,
            Method::GET,
            &format!("/api/v1/{what}"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", r.body));
        assert_eq!(v["status"], "success", "{what}: {}", r.body);
        v["data"].clone()
    }

    /// An instant query: the result vector.
    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self
            .api(&format!("query?query={}", urlencode(promql)))
            .await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// `salt_sidecar_master_active` by master label, as Prometheus has it now.
    async fn master_active(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .query("salt_sidecar_master_active")
            .await
            .iter()
            .map(|s| {
                (
                    s["metric"]["master"].as_str().unwrap_or("?").to_string(),
                    s["value"][1].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Waits until `master_active` is `want`; returns how long that took.
    async fn until_master_active(&self, want: &[(&str, &str)], limit: Duration) -> Duration {
        let start = Instant::now();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(m, v)| (m.to_string(), v.to_string()))
            .collect();
        loop {
            let got = self.master_active().await;
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "Prometheus: master_active {got:?}, want {want:?} within {limit:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_sidecar_and_sees_the_active_master_flip() {
    let Some(prometheus_bin) = tool("prometheus") else {
        return;
    };
    let net = 46;
    let admin = addr(net, 1, 9464);
    let a = master("A", net, 2).await;
    let _b = master("B", net, 3).await;
    let sidecar = Sidecar::start(&config(
        net,
        &["127.0.46.2", "127.0.46.3"],
        "master_alive_interval: 1\nrandom_reauth_delay: 0",
    ));
    let prom = Prometheus::start(&prometheus_bin, addr(net, 1, 9090), admin).await;
    until_answered_by(addr(net, 1, 4506), "A", Duration::from_secs(5)).await;

    let (a_label, b_label) = ("127.0.46.2", "127.0.46.3");
    let first = prom
        .until_master_active(&[(a_label, "1"), (b_label, "0")], Duration::from_secs(15))
        .await;
    eprintln!("prometheus: master_active shows A {first:?} after its start");
    let up = prom.query("up{job=\"salt-sidecar\"}").await;
    assert_eq!(
        up.first().map(|s| s["value"][1].clone()),
        Some("1".into()),
        "{up:?}"
    );

    let killed = Instant::now();
    a.kill().await;
    sidecar
        .log
        .wait_for_async(
            &["switched master", "to=\"127.0.46.3\""],
            Duration::from_secs(5),
        )
        .await;
    let in_sidecar = killed.elapsed();
    prom.until_master_active(&[(a_label, "0"), (b_label, "1")], Duration::from_secs(15))
        .await;
    let in_prometheus = killed.elapsed();
    eprintln!(
        "prometheus: master_active flipped A -> B {in_prometheus:?} after the kill \
         (sidecar switched after {in_sidecar:?})"
    );
    let switches = prom
        .query("salt_sidecar_switches_total{reason=\"failover\", to=\"127.0.46.3\"}")
        .await;
    assert_eq!(
        switches.first().map(|s| s["value"][1].clone()),
        Some("1".into()),
        "{switches:?}"
    );

    // Every dashboard query is valid PromQL and finds data in this Prometheus,
    // with Grafana's variables filled in as Grafana would.
    let text =
        std::fs::read_to_string(repo("dashboards/salt-sidecar.json")).expect("read dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("json");
    for (at, expr) in dashboard_exprs(&dash) {
        let q = expr
            .replace("$instance", ".*")
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "15s");
        let result = prom.query(&q).await;
        if at.starts_with("panel") {
            assert!(!result.is_empty(), "{at}: no data for {q}");
        }
    }
    let instances = prom
        .api(&format!(
            "label/instance/values?{}",
            urlencode_pair("match[]", "salt_sidecar_build_info")
        ))
        .await;
    assert_eq!(
        instances,
        serde_json::json!([admin.to_string()]),
        "the $instance variable's values"
    );
}

fn urlencode_pair(k: &str, v: &str) -> String {
    format!("{}={}", urlencode(k), urlencode(v))
}
