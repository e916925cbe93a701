//! Hostile inputs, round 2 (issue 25): a master that is the sidecar itself
//! in any spelling, the config path as a FIFO or a device, the cap on
//! masters and what 64 of them cost, an admin socket in a directory others
//! can write, and a second stop signal during the drain. Each test runs the
//! real binary, as an operator (or an attacker) would meet it; everything is
//! on loopback (127.0.19x.x), one test in a network namespace of its own.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use salt_sidecar::standin::ZmtpClient;
use salt_sidecar::zmtp::SocketType;
use support::netns::{self, Netns};
use support::{addr, ask, config, master, Sidecar, Yaml, SLOW};

/// sysexits EX_CONFIG: `check-config` and `run` on a config error.
const EX_CONFIG: i32 = 78;

fn sidecar_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
}

/// Runs the binary with `args` and the config file `path`, killed if it
/// takes longer than `limit` (a hang is a failure, not a stuck test).
fn run_with_config(args: &[&str], path: &Path, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = sidecar_bin()
        .args(args)
        .arg("--config")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn salt-sidecar");
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{args:?} {} still running after {limit:?}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // std has no awaitable child exit; polling is the event here.
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().expect("output"), started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temp dir with `config.yaml` holding `yaml`.
fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let yaml = support::with_admin_socket(yaml, &dir.path().join("admin.sock"));
    std::fs::write(&path, yaml).expect("write config");
    (dir, path)
}

/// `check-config` and `run` both refuse `yaml` with exit 78 and a message
/// containing every one of `wants`.
fn both_refuse(yaml: &str, wants: &[&str]) {
    let (_dir, path) = config_file(yaml);
    for cmd in ["check-config", "run"] {
        let (out, _) = run_with_config(&[cmd], &path, SLOW);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{cmd}:\n{yaml}\n{err}");
        for want in wants {
            assert!(err.contains(want), "{cmd}: {want:?} not in:\n{err}");
        }
    }
}

// === self-loops ===

/// Row "master `[::ffff:127.0.0.1]:<ret port>`": the sidecar's own listener
/// in every spelling is refused at load by both commands.
#[test]
fn a_master_that_is_the_sidecar_is_refused_in_every_spelling() {
    for master in [
        "'[::ffff:127.0.190.1]:4506'",
        "'[::ffff:7f00:be01]'",
        "'[::127.0.190.1]:4506'",
        "0.0.0.0",
        "'[::]:4506'",
        "'::'",
    ] {
        let yaml = config(190, &["127.0.190.2", master], "master_alive_interval: 1");
        both_refuse(&yaml, &["master[1]", "is the sidecar itself"]);
    }
}

/// With a wildcard listener, any of the host's own addresses is the
/// sidecar: in a namespace with 10.99.0.1 on its loopback device.
#[test]
fn a_wildcard_listener_makes_every_own_address_a_self_loop() {
    let test = "a_wildcard_listener_makes_every_own_address_a_self_loop";
    if !netns::available(test, &["ip"]) {
        return;
    }
    let ns = Netns::create("sidecar-t-selfloop".into());
    ns.exec(&["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"]);
    ns.exec(&["ip", "-6", "addr", "add", "fd99::1/128", "dev", "lo"]);
    let check = |listen: &str, master: &str| -> Output {
        let yaml = Yaml::new(listen, &[master])
            .sidecar("admin", "127.0.0.1:9464")
            .sidecar("listen_allow_remote", "true")
            .build();
        let (_dir, path) = config_file(&yaml);
        ns.command(env!("CARGO_BIN_EXE_salt-sidecar"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("check-config")
    };
    for (listen, master) in [
        ("0.0.0.0", "10.99.0.1"),
        ("0.0.0.0", "'[::ffff:10.99.0.1]:4506'"),
        ("'::'", "'[fd99::1]:4506'"),
        ("'::'", "10.99.0.1"),
    ] {
        let out = check(listen, master);
        assert_eq!(
            out.status.code(),
            Some(EX_CONFIG),
            "listen {listen}, master {master}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("is the sidecar itself"),
            "{}",
            stderr(&out)
        );
    }
    // Not the host's: fine (a documentation address nobody here has).
    for (listen, master) in [("0.0.0.0", "10.99.0.2"), ("0.0.0.0", "'[fd99::1]:4506'")] {
        let out = check(listen, master);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{listen} {master}: {}",
            stderr(&out)
        );
    }
}

/// A reload that brings a self-loop is refused; the running config stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_to_a_self_loop_is_refused_and_the_master_keeps_serving() {
    let net = 191;
    let _a = master("A", net, 2).await;
    let yaml = config(net, &["127.0.191.2"], "master_alive_interval: 1");
    let sidecar = Sidecar::start(&yaml);
    sidecar.log.wait_for_async(&["selected master"], SLOW).await;
    sidecar.rewrite(&config(
        net,
        &["127.0.191.2", "'[::ffff:127.0.191.1]:4506'"],
        "master_alive_interval: 1",
    ));
    sidecar.signal("HUP");
    let line = sidecar.log.wait_for_async(&["reload refused"], SLOW).await;
    assert!(line.contains("is the sidecar itself"), "{line}");
    assert_eq!(ask(addr(net, 1, 4506)).await.as_deref(), Some("A"));
    sidecar.assert_no_panic();
}

// === config reads ===

/// Row "config path is a FIFO / `/dev/zero`": refused at once, by name,
/// by both commands; a symlink to a regular file is fine; a file over 1 MiB
/// is refused.
#[test]
fn only_a_regular_file_of_at_most_1_mib_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let big = dir.path().join("big.yaml");
    let mut text = String::from("master: [127.0.192.2]\n");
    while text.len() <= 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).expect("write");
    for (path, want) in [
        (
            fifo.as_path(),
            "is a FIFO; the config must be a regular file",
        ),
        (Path::new("/dev/zero"), "is a character device"),
        (dir.path(), "is a directory"),
        (
            big.as_path(),
            "a config file may have at most 1048576 bytes",
        ),
    ] {
        for cmd in ["check-config", "run"] {
            let (out, took) = run_with_config(&[cmd], path, SLOW);
            assert_eq!(
                out.status.code(),
                Some(EX_CONFIG),
                "{cmd} {}: {}",
                path.display(),
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(want),
                "{cmd}: {want:?} not in {}",
                stderr(&out)
            );
            assert!(
                took < Duration::from_secs(2),
                "{cmd} {} took {took:?}",
                path.display()
            );
        }
    }
    let (_cfg_dir, real) = config_file(&config(192, &["127.0.192.2"], "master_alive_interval: 1"));
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let (out, _) = run_with_config(&["check-config"], &link, SLOW);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Row "SIGHUP while the path is a FIFO freezes the whole process 7 s":
/// the reload is refused at once, and requests keep being answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_with_a_fifo_as_the_config_never_stalls_forwarding() {
    let net = 193;
    let _a = master("A", net, 2).await;
    let sidecar = Sidecar::start(&config(net, &["127.0.193.2"], "master_alive_interval: 1"));
    sidecar.log.wait_for_async(&["selected master"], SLOW).await;
    let mut client = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, SLOW)
        .await
        .expect("connect");
    assert_eq!(client.request(b"0", SLOW).await.expect("reply"), b"A:0");

    std::fs::remove_file(&sidecar.config_path).expect("rm config");
    let made = Command::new("mkfifo")
        .arg(&sidecar.config_path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for _ in 0..5 {
        sidecar.signal("HUP");
    }
    // A request every 20 ms for 2 s: each answered, none slow.
    let until = Instant::now() + Duration::from_secs(2);
    let (mut n, mut slowest) = (0u32, Duration::ZERO);
    while Instant::now() < until {
        let sent = Instant::now();
        let reply = client
            .request(n.to_string().as_bytes(), SLOW)
            .await
            .expect("answered");
        assert_eq!(reply, format!("A:{n}").as_bytes());
        slowest = slowest.max(sent.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = sidecar.log.wait_for_async(&["reload refused"], SLOW).await;
    assert!(line.contains("FIFO"), "{line}");
    eprintln!("{n} requests during the SIGHUPs, slowest {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
    sidecar.assert_no_panic();
}

/// Row "a group that does not exist, a socket path over 108 bytes":
/// `check-config` performs the checks `run` does; both exit 78.
#[test]
fn check_config_and_run_agree_on_the_admin_socket() {
    let base = config(194, &["127.0.194.2"], "master_alive_interval: 1");
    both_refuse(
        &format!("{base}  admin_socket_group: no-such-group-25\n"),
        &[
            "sidecar.admin_socket_group",
            "no group `no-such-group-25` in /etc/group",
        ],
    );
    let long = format!("/run/{}/admin.sock", "d".repeat(100));
    both_refuse(
        &format!("{base}  admin_socket: {long}\n"),
        &[
            "sidecar.admin_socket",
            "the path has 116 bytes; a Unix socket path has at most 107",
        ],
    );
}

/// Row "`admin_socket_mode: \"0666\"`": accepted, with a warning.
#[test]
fn an_admin_socket_open_to_everyone_is_a_warning() {
    let base = config(194, &["127.0.194.2"], "master_alive_interval: 1");
    let (_dir, path) = config_file(&format!("{base}  admin_socket_mode: \"0666\"\n"));
    let (out, _) = run_with_config(&["check-config"], &path, SLOW);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "warning: `sidecar.admin_socket_mode` 0666 lets every local user send admin commands"
        ),
        "{}",
        stderr(&out)
    );
}

// === the admin socket's directory ===

/// Row "admin_socket in a directory another user can write": refused
/// (StrictModes) unless sticky; the socket that is made has its mode and
/// group, and no staging directory is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_socket_needs_a_directory_only_its_owner_can_write() {
    let net = 195;
    let yaml = config(net, &["127.0.195.2"], "master_alive_interval: 1");
    let top = tempfile::tempdir().expect("tempdir");
    let open = top.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = open.join("admin.sock");
    both_refuse(
        &format!("{yaml}  admin_socket: {}\n", socket.display()),
        &[
            "mode 0777 lets every user write to it, without the sticky bit",
            "another user could replace the admin socket",
        ],
    );
    let group_writable = top.path().join("group");
    std::fs::create_dir(&group_writable).expect("mkdir");
    std::fs::set_permissions(&group_writable, std::fs::Permissions::from_mode(0o770))
        .expect("chmod");
    both_refuse(
        &format!(
            "{yaml}  admin_socket: {}\n",
            group_writable.join("a.sock").display()
        ),
        &["lets its group write to it"],
    );
    if netns::root_or_skip(
        "the owner part of the_admin_socket_needs_a_directory_only_its_owner_can_write",
        "chown to another user",
    ) {
        // Owned by another user: `run` refuses (check-config, whose user
        // may not be the service's, leaves owners to it).
        let theirs = top.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
        let (_d, path) = config_file(&format!(
            "{yaml}  admin_socket: {}\n",
            theirs.join("a.sock").display()
        ));
        let (out, _) = run_with_config(&["run"], &path, SLOW);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("belongs to uid 65534"),
            "{}",
            stderr(&out)
        );
    }

    // Sticky (like /tmp): others cannot rename or remove what is ours.
    let sticky = top.path().join("sticky");
    std::fs::create_dir(&sticky).expect("mkdir");
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let socket = sticky.join("admin.sock");
    let sidecar = Sidecar::start(&format!(
        "{yaml}  admin_socket: {}\n  admin_socket_mode: \"0640\"\n  admin_socket_group: \"4242\"\n",
        socket.display()
    ));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(&socket).expect("the socket");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), 4242);
    let left: Vec<_> = std::fs::read_dir(&sticky)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("admin.sock")],
        "nothing but the socket"
    );
    sidecar.assert_no_panic();
}

// === a second stop signal ===

/// Row "second SIGTERM / SIGINT during a drain": ignored until
/// drain_timeout before; now the process exits at once with 143 (128 +
/// SIGTERM), which says the drain was cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_cuts_the_drain_and_exits_143() {
    let net = 196;
    let _a = master("A", net, 2).await;
    let yaml = Yaml::new("127.0.196.1", &["127.0.196.2"])
        .minion("master_alive_interval: 1")
        .sidecar("drain_timeout", "60s")
        .build();
    let mut sidecar = Sidecar::start(&yaml);
    sidecar.log.wait_for_async(&["selected master"], SLOW).await;
    let mut busy = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, SLOW)
        .await
        .expect("connect");
    assert_eq!(busy.request(b"1", SLOW).await.expect("reply"), b"A:1");
    sidecar.signal("TERM");
    sidecar
        .log
        .wait_for_async(&["SIGTERM: draining sessions"], SLOW)
        .await;
    // Still draining: the busy session is served.
    assert_eq!(busy.request(b"2", SLOW).await.expect("reply"), b"A:2");
    let cut = Instant::now();
    sidecar.signal("TERM");
    let (code, sidecar) = tokio::task::spawn_blocking(move || {
        let code = sidecar.wait_exit(Duration::from_secs(5));
        (code, sidecar)
    })
    .await
    .expect("join");
    let took = cut.elapsed();
    assert_eq!(code, Some(143), "{}", sidecar.log.lines().join("\n"));
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after the second SIGTERM"
    );
    // The last line may still be on its way from the pipe.
    sidecar.log.wait_for(&["drain cut short"], SLOW);
    assert_eq!(sidecar.log.count(&["drain cut short"]), 1);
    assert!(
        !sidecar.admin_socket.exists(),
        "the admin socket is removed"
    );
}

// === 64 masters ===

/// Row "1,000 masters": at most 64 now (65 is refused, see the
/// `too-many-masters` fixture), and 64 cost little: RSS ≤ 64 MB, `/metrics`
/// ≤ 2 MB in ≤ 1 s, and scraping it in a loop never holds up forwarding.
#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_masters_stay_small_and_scrapes_never_stall_forwarding() {
    let net = 197;
    let _a = master("A", net, 2).await;
    // A answers; the 63 others refuse (nothing listens there).
    let masters: Vec<String> = (2..=65).map(|h| format!("127.0.{net}.{h}")).collect();
    let yaml = Yaml::new(&format!("127.0.{net}.1"), &masters)
        .minion("master_alive_interval: 1")
        .build();
    let sidecar = Sidecar::start(&yaml);
    sidecar.log.wait_for_async(&["selected master"], SLOW).await;
    let admin = addr(net, 1, 9464);
    // A few probe rounds of every master.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = Instant::now();
    let text = tokio::task::spawn_blocking(move || support::scrape(admin))
        .await
        .expect("join");
    let took = started.elapsed();
    let rss_mib = sidecar.rss_kib() as f64 / 1024.0;
    eprintln!(
        "64 masters: RSS {rss_mib:.1} MiB, /metrics {} bytes in {took:?}",
        text.len()
    );
    assert!(text.contains("salt_sidecar_master_up{master=\"127.0.197.65\"}"));
    assert!(
        text.len() <= 2 * 1024 * 1024,
        "/metrics is {} bytes",
        text.len()
    );
    assert!(took <= Duration::from_secs(1), "/metrics took {took:?}");
    assert!(rss_mib <= 64.0, "RSS {rss_mib:.1} MiB");

    // Scrapes back to back on another thread while the minion asks.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(support::scrape(admin).contains("salt_sidecar_build_info"));
                n += 1;
            }
            n
        })
    };
    let mut client = ZmtpClient::connect(addr(net, 1, 4506), SocketType::Dealer, SLOW)
        .await
        .expect("connect");
    let mut rtts = Vec::new();
    for i in 0..200u32 {
        let sent = Instant::now();
        let reply = client
            .request(i.to_string().as_bytes(), SLOW)
            .await
            .expect("answered");
        rtts.push(sent.elapsed());
        assert_eq!(reply, format!("A:{i}").as_bytes());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().expect("scraper");
    rtts.sort();
    let (p50, p99, max) = (rtts[100], rtts[198], rtts[199]);
    eprintln!("during {scrapes} scrapes: round trip p50 {p50:?}, p99 {p99:?}, max {max:?}");
    assert!(scrapes >= 5, "only {scrapes} scrapes");
    assert!(
        max < Duration::from_millis(250),
        "a round trip took {max:?}"
    );
    sidecar.assert_no_panic();
}
