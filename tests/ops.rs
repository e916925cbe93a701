//! Operations: the static binary `scripts/build-static` ships and the systemd
//! unit `config/salt-sidecar.service` runs it with.
//!
//! The static binary is built once per run, with the real release profile,
//! into `<target>/static` (its own directory, so this never waits on the
//! `cargo test` that runs it, and later runs only relink what changed). A
//! cold build takes about five minutes on a 2-core machine, a warm one about
//! one. Everything runs on loopback; the name-resolution test runs in a
//! network namespace of its own (root only, skipped otherwise).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cmd::{output, repo, text};
use support::netns::{self, Netns};
use support::{static_binary, Launch, Sidecar};

const UNIT: &str = "config/salt-sidecar.service";
const SOCKET_UNIT: &str = "config/salt-sidecar.socket";
/// Where the unit expects the binary; rewritten to a real one for `verify`.
const INSTALLED_BIN: &str = "/usr/local/bin/salt-sidecar";
/// SPEC §6: the static binary stays under 10 MB.
const MAX_STATIC_BYTES: u64 = 10_000_000;

// === the static binary ===

#[test]
fn the_static_binary_needs_nothing_from_the_host() {
    let bin = static_binary();

    let file = text(&output(Command::new("file").arg("-b").arg(bin)).stdout);
    assert!(
        file.contains("static-pie linked") || file.contains("statically linked"),
        "file says: {file}"
    );
    assert!(file.contains("x86-64"), "file says: {file}");
    let ldd = output(Command::new("ldd").arg(bin));
    let ldd = text(&ldd.stdout) + &text(&ldd.stderr);
    assert!(
        ldd.contains("statically linked") || ldd.contains("not a dynamic executable"),
        "ldd says: {ldd}"
    );

    let bytes = std::fs::metadata(bin).expect("stat").len();
    assert!(
        bytes < MAX_STATIC_BYTES,
        "{} is {bytes} bytes, over {MAX_STATIC_BYTES}",
        bin.display()
    );

    // No environment at all: no PATH, HOME, locale or RUST_LOG.
    let out = output(Command::new("env").arg("-i").arg(bin).arg("--version"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("salt-sidecar {}", env!("CARGO_PKG_VERSION"))
    );
    let example = repo().join("config/example.yaml");
    let out = output(
        Command::new("env")
            .arg("-i")
            .arg(bin)
            .args(["check-config", "--config"])
            .arg(&example),
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}: ok\n", example.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("- salt-a.example.net (publish 4505, ret 4506)"),
        "{stdout}"
    );
}

// === name resolution in the static binary ===

/// A network namespace whose `/etc/hosts` names a master (`ip netns exec`
/// bind-mounts `/etc/netns/<ns>/*` over `/etc` for the process it runs) and
/// whose resolv.conf names a server that is not there. Removed on drop.
fn hosts_lab(hosts: &str) -> Netns {
    Netns::create(format!("ssc-ops-{}", std::process::id())).with_etc(&[
        ("hosts", hosts),
        (
            "resolv.conf",
            "# salt-sidecar tests/ops.rs: nothing answers here\nnameserver 127.0.0.53\noptions timeout:1 attempts:1\n",
        ),
    ])
}

/// `GET path` over plain HTTP/1.1; returns the status code.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    reply.split_whitespace().nth(1)?.parse().ok()
}

/// A static glibc binary cannot use glibc's NSS (getaddrinfo would need
/// libnss_files.so); hickory-resolver reads /etc/hosts and resolv.conf
/// itself. Proof: under `env -i`, a master known only by a name in the
/// namespace's /etc/hosts is resolved, probed and selected.
#[test]
fn the_static_binary_resolves_master_names_without_nss() {
    if !netns::available("static name resolution", &["ip"]) {
        return;
    }
    let bin = static_binary();
    let lab = hosts_lab("127.0.0.2 salt-a.ops.test\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    let yaml = support::Yaml::new("127.0.0.1", &["salt-a.ops.test"])
        .no_master_type()
        .id("ops")
        .minion("master_alive_interval: 1\ntransport: tcp")
        .sidecar("drain_timeout", "1s")
        .sidecar("probe", "tcp")
        .build();
    std::fs::write(
        &config,
        support::with_admin_socket(&yaml, &dir.path().join("admin.sock")),
    )
    .expect("write config");
    // The master: both ports listening (a tcp probe is a plain connect).
    let _master = lab.run(|| {
        ["127.0.0.2:4505", "127.0.0.2:4506"].map(|a| TcpListener::bind(a).expect("bind master"))
    });
    let mut sidecar = lab
        .command("env")
        .arg("-i")
        .arg(bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the static sidecar");
    let admin: SocketAddr = "127.0.0.1:9464".parse().unwrap();
    let ready = lab.run(|| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if http_status(admin, "/readyz") == Some(200) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Readiness has no event to await from outside the process.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let _ = sidecar.kill();
    let out = sidecar.wait_with_output().expect("wait");
    let log = text(&out.stderr);
    assert!(ready, "salt-a.ops.test never became ready:\n{log}");
    assert!(
        log.contains("resolved master=salt-a.ops.test addresses=[127.0.0.2]"),
        "{log}"
    );
}

// === the systemd unit ===

/// The unit's `Key=value` lines (a key given twice keeps both values).
fn unit_directives() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(repo().join(UNIT)).expect("read the unit");
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn directive(key: &str) -> String {
    let all: Vec<String> = unit_directives()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(all.len(), 1, "{UNIT}: {key}= should be set once: {all:?}");
    all.into_iter().next().unwrap()
}

/// The unit as installed, with the binary at `bin`, in a temp dir.
fn unit_for(bin: &Path) -> (tempfile::TempDir, PathBuf) {
    let unit = std::fs::read_to_string(repo().join(UNIT)).expect("read the unit");
    assert!(unit.contains(INSTALLED_BIN));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("salt-sidecar.service");
    let bin = bin.to_str().expect("a UTF-8 path");
    std::fs::write(&path, unit.replace(INSTALLED_BIN, bin)).expect("write the unit");
    // Its socket unit beside it, as installed.
    std::fs::copy(
        repo().join(SOCKET_UNIT),
        dir.path().join("salt-sidecar.socket"),
    )
    .expect("copy the socket unit");
    (dir, path)
}

#[test]
fn the_unit_verifies_without_a_warning() {
    let (dir, unit) = unit_for(Path::new(env!("CARGO_BIN_EXE_salt-sidecar")));
    let out = output(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .arg(dir.path().join("salt-sidecar.socket")),
    );
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert_eq!(said, "", "systemd-analyze verify had something to say");

    // And the hardening adds up: systemd's own exposure score (0 = locked
    // down, 10 = unprotected; a default service scores 9.6).
    let out = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit),
    );
    let said = text(&out.stdout);
    let score: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for salt-sidecar.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}{}", text(&out.stderr)));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{said}");
}

#[test]
fn the_unit_matches_what_the_binary_does() {
    assert_eq!(directive("Before"), "salt-minion.service");
    assert_eq!(directive("Wants"), "network-online.target");
    assert_eq!(
        directive("After"),
        "network-online.target salt-sidecar.socket"
    );
    // The notify protocol and the watchdog (tests/systemd.rs checks the
    // binary speaks them), and the budgets the sidecar splits.
    assert_eq!(directive("Type"), "notify");
    assert_eq!(directive("NotifyAccess"), "main");
    assert_eq!(directive("WatchdogSec"), "30s");
    assert_eq!(directive("LimitNOFILE"), "65536");
    assert_eq!(directive("RuntimeDirectory"), "salt-sidecar");
    let socket = std::fs::read_to_string(repo().join(SOCKET_UNIT)).expect("read the socket unit");
    let listens: Vec<&str> = socket
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .collect();
    assert_eq!(
        listens,
        ["127.0.0.1:4505", "127.0.0.1:4506"],
        "publish first, then ret: the order the sidecar takes them in"
    );
    assert_eq!(
        directive("ExecStart"),
        format!("{INSTALLED_BIN} run --config /etc/salt-sidecar/config.yaml")
    );
    assert_eq!(
        directive("ExecReload"),
        format!("{INSTALLED_BIN} reload --socket /run/salt-sidecar/admin.sock")
    );
    assert_eq!(
        directive("ExecReload").split(' ').nth(3),
        Some(salt_sidecar::cli::DEFAULT_ADMIN_SOCKET),
        "reload asks the default admin socket"
    );
    assert_eq!(directive("Requires"), "salt-sidecar.socket");
    assert_eq!(directive("Restart"), "on-failure");
    // A tight crash loop (a start every RestartSec) hits the start limit;
    // the watchdog alone (a start every WatchdogSec + RestartSec at most)
    // never does (tests/nspawn.rs checks both under systemd).
    let interval =
        humantime::parse_duration(&directive("StartLimitIntervalSec")).expect("a duration");
    let burst: u32 = directive("StartLimitBurst").parse().expect("a number");
    let restart_sec = humantime::parse_duration(&directive("RestartSec")).expect("a duration");
    let watchdog = humantime::parse_duration(&directive("WatchdogSec")).expect("a duration");
    let watchdog_starts = interval.as_secs_f64() / (watchdog + restart_sec).as_secs_f64();
    assert!(
        f64::from(burst) > watchdog_starts + 10.0,
        "{burst} starts in {interval:?}: the watchdog ({watchdog_starts:.0}) and 10 restarts by hand would hit it"
    );
    assert!(
        restart_sec * burst <= Duration::from_secs(120),
        "a crash loop runs {:?} before it stops",
        restart_sec * burst
    );
    assert_eq!(directive("CapabilityBoundingSet"), "");
    assert_eq!(directive("DynamicUser"), "yes");

    // An invalid config exits with the status that stops systemd restarting.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("config.yaml");
    std::fs::write(&bad, "master: []\n").expect("write");
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
            .args(["run", "--config"])
            .arg(&bad),
    );
    let code = out.status.code().expect("an exit code");
    assert_eq!(
        directive("RestartPreventExitStatus"),
        code.to_string(),
        "{out:?}"
    );

    // SIGTERM drains for up to sidecar.drain_timeout (plus 0.5 s to close);
    // systemd must not SIGKILL the drain.
    let stop = humantime::parse_duration(&directive("TimeoutStopSec")).expect("a duration");
    let defaults = salt_sidecar::config::parse(Path::new("defaults.yaml"), "master: salt\n")
        .expect("a minimal config");
    let drain = defaults.sidecar.drain_timeout;
    assert!(
        stop >= drain + Duration::from_secs(5),
        "TimeoutStopSec {stop:?} leaves no margin over the default drain_timeout {drain:?}"
    );
}

/// Every system call groups `@name` stands for, as systemd knows them.
fn syscall_groups() -> HashMap<String, Vec<String>> {
    let out = output(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager"]));
    assert!(out.status.success(), "{out:?}");
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in text(&out.stdout).lines() {
        if line.starts_with('@') {
            let name = line.split_whitespace().next().unwrap_or(line).to_string();
            groups.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(group), member) = (&current, line.trim()) {
            if !member.is_empty() && !member.starts_with('#') {
                groups.get_mut(group).unwrap().push(member.to_string());
            }
        }
    }
    groups
}

fn expand(item: &str, groups: &HashMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    match groups.get(item) {
        Some(members) => members.iter().for_each(|m| expand(m, groups, out)),
        None => {
            out.insert(item.to_string());
        }
    }
}

/// The unit's seccomp filter (SystemCallFilter=) answers EPERM to anything
/// else, which would break the sidecar only in production. Run the static
/// binary (`run`) under strace in front of two stand-in masters (started
/// here, from the library): probes, forwarding, a failover and a failback,
/// then shutdown by SIGTERM; check every call it made is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_static_binary_only_makes_syscalls_the_unit_allows() {
    let bin = tokio::task::spawn_blocking(static_binary)
        .await
        .expect("build");
    let groups = syscall_groups();
    // systemd applies the lines in order to one allow-list: a line adds its
    // calls, a `~` line removes them (so a later line can add some back).
    let mut allowed = BTreeSet::new();
    for (key, value) in unit_directives() {
        if key != "SystemCallFilter" {
            continue;
        }
        let mut listed = BTreeSet::new();
        let (deny, list) = match value.strip_prefix('~') {
            Some(list) => (true, list),
            None => (false, value.as_str()),
        };
        list.split_whitespace()
            .for_each(|i| expand(i, &groups, &mut listed));
        if deny {
            allowed.retain(|s| !listed.contains(s));
        } else {
            allowed.extend(listed);
        }
    }
    assert!(allowed.len() > 100, "no allow-list in {UNIT}: {allowed:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("strace.txt");
    let net = 153;
    let a = support::master("a", net, 2).await;
    let _b = support::master("b", net, 3).await;
    let yaml = support::config(
        net,
        &["127.0.153.2", "127.0.153.3"],
        "master_alive_interval: 1\nmaster_failback: true\nmaster_failback_interval: 1\nrandom_reauth_delay: 0",
    );
    let strace: [&OsStr; 6] = [
        "/usr/bin/strace".as_ref(),
        "-f".as_ref(),
        "-qq".as_ref(),
        "-c".as_ref(),
        "-o".as_ref(),
        summary.as_os_str(),
    ];
    let mut sidecar = tokio::task::block_in_place(|| {
        Sidecar::start_with(
            &yaml,
            Launch {
                level: "info",
                bin: Some(bin),
                under: &strace,
                ..Launch::default()
            },
        )
    });
    let ret = support::addr(net, 1, 4506);
    let limit = Duration::from_secs(15);
    support::until_answered_by(ret, "a", limit).await;
    a.kill().await;
    support::until_answered_by(ret, "b", limit).await;
    let _a = support::master("a", net, 2).await;
    support::until_answered_by(ret, "a", limit).await;
    sidecar.signal("TERM");
    let code = tokio::task::block_in_place(|| sidecar.wait_exit(Duration::from_secs(15)));
    assert_eq!(
        code,
        Some(0),
        "run under strace did not shut down cleanly:\n{}",
        sidecar.log.lines().join("\n")
    );
    // `-c` writes a table; the system call is the last column.
    let table = std::fs::read_to_string(&summary).expect("strace summary");
    let used: BTreeSet<String> = table
        .lines()
        .filter(|l| !l.starts_with('%') && !l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| *s != "total")
        .map(str::to_string)
        .collect();
    assert!(
        used.contains("accept4") && used.contains("connect"),
        "{table}"
    );
    let refused: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter refuses {refused:?}, which the sidecar uses"
    );
}
