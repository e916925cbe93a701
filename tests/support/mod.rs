//! Shared helpers for integration tests: run the real `salt-sidecar` binary
//! with a config, watch its log, and clean up by PID.
//!
//! Each test uses its own loopback /24 (127.0.N.x) so tests run in parallel
//! without port clashes; nothing leaves 127.0.0.0/8.
#![allow(dead_code)]

pub mod cmd;
pub mod dns;
pub mod netns;
pub mod py;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a test waits for what takes milliseconds when it works (an
/// answer through the sidecar, a log line, a status report, a ZMTP
/// handshake) before it fails: generous, for a loaded 2-core machine. A
/// bound on failure only; never a sleep.
pub const T: Duration = Duration::from_secs(2);

/// The same bound for what does real work first: a child process that
/// starts and exits, a sidecar short of file descriptors, a start or stop
/// under systemd's notify protocol.
pub const SLOW: Duration = Duration::from_secs(10);

/// Log lines of a child process, awaitable.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Log {
    pub fn push(&self, line: String) {
        let (lines, cv) = &*self.inner;
        if let Ok(mut l) = lines.lock() {
            l.push(line);
        }
        cv.notify_all();
    }

    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Number of lines containing every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.lines()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Blocks until `done` holds for the lines (returning what it returns), or
    /// panics after `limit` with `what` and the whole log.
    fn wait_until<T>(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        let (lines, cv) = &*self.inner;
        let mut guard = lines.lock().expect("log lock");
        loop {
            if let Some(found) = done(&guard) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!("no {what} within {limit:?}; log:\n{}", guard.join("\n"));
            }
            guard = cv.wait_timeout(guard, deadline - now).expect("log wait").0;
        }
    }

    /// Blocks until more than `seen` lines contain every one of `parts`, or panics after `limit`.
    pub fn wait_for_more(&self, parts: &[&str], seen: usize, limit: Duration) {
        let matches = |l: &String| parts.iter().all(|p| l.contains(p));
        self.wait_until(&format!("new log line with {parts:?}"), limit, |lines| {
            (lines.iter().filter(|l| matches(l)).count() > seen).then_some(())
        })
    }

    /// Blocks until a line contains every one of `parts` (returns it), or panics after `limit`.
    pub fn wait_for(&self, parts: &[&str], limit: Duration) -> String {
        self.wait_until(&format!("log line with {parts:?}"), limit, |lines| {
            lines
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
        })
    }

    /// Async-friendly wrapper of [`Log::wait_for`].
    pub async fn wait_for_async(&self, parts: &[&str], limit: Duration) -> String {
        let log = self.clone();
        let parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            log.wait_for(&refs, limit)
        })
        .await
        .expect("wait task")
    }
}

/// A running `salt-sidecar run` process; killed (by PID) on drop.
pub struct Sidecar {
    /// The sidecar, or the program it runs under ([`Launch::under`]).
    pub child: Child,
    /// Whether `child` is a wrapper with the sidecar as its child.
    wrapped: bool,
    pub log: Log,
    /// The config file the sidecar was started with (rewrite it with
    /// [`Sidecar::rewrite`] to test reloads).
    pub config_path: std::path::PathBuf,
    /// The admin socket (commands): the test's own, in its temp dir.
    pub admin_socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// How to start a [`Sidecar`]: the log level and, optionally, a network
/// namespace (entered with `ip netns exec`, so its `/etc` files apply),
/// another binary than cargo's, or a program to run it under.
pub struct Launch<'a> {
    pub level: &'a str,
    pub netns: Option<&'a netns::Netns>,
    /// The binary to run instead of the one cargo built (the static one).
    pub bin: Option<&'a std::path::Path>,
    /// A program and its arguments to run the binary under (strace); both
    /// get an empty environment (as `env -i`).
    pub under: &'a [&'a std::ffi::OsStr],
    /// Start it with this open-file limit, soft and hard (`prlimit`, which
    /// execs it: same PID), so it cannot raise it either.
    pub nofile: Option<u64>,
    /// Environment variables to set (`NOTIFY_SOCKET`, ...).
    pub env: &'a [(&'a str, &'a str)],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            level: "salt_sidecar=debug",
            netns: None,
            bin: None,
            under: &[],
            nofile: None,
            env: &[],
        }
    }
}

impl Sidecar {
    /// Starts the binary with `yaml` as its config and waits until it listens.
    pub fn start(yaml: &str) -> Sidecar {
        Sidecar::start_with(yaml, Launch::default())
    }

    /// [`Sidecar::start`] with a log level or a namespace of its own.
    pub fn start_with(yaml: &str, launch: Launch<'_>) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let admin_socket = dir.path().join("admin.sock");
        std::fs::write(&path, with_admin_socket(yaml, &admin_socket)).expect("write config");
        let bin = launch
            .bin
            .unwrap_or(std::path::Path::new(env!("CARGO_BIN_EXE_salt-sidecar")));
        let mut cmd = match (launch.netns, launch.under.split_first()) {
            (Some(ns), _) => ns.command(bin),
            (None, None) => match launch.nofile {
                Some(n) => {
                    let mut cmd = Command::new("/usr/bin/prlimit");
                    cmd.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
                    cmd
                }
                None => Command::new(bin),
            },
            (None, Some((program, args))) => {
                let mut cmd = Command::new(program);
                cmd.env_clear().args(args).arg(bin);
                cmd
            }
        };
        let mut child = cmd
            .args(["--log-level", launch.level, "run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(launch.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn salt-sidecar");
        let log = Log::default();
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("SIDECAR_TEST_ECHO").is_some() {
                    eprintln!("sidecar| {line}");
                }
                sink.push(line);
            }
            sink.push("<process exited>".into());
        });
        let sidecar = Sidecar {
            child,
            wrapped: !launch.under.is_empty(),
            log,
            config_path: path,
            admin_socket,
            _dir: dir,
        };
        sidecar
            .log
            .wait_for(&["listening for the minion"], Duration::from_secs(10));
        sidecar
    }

    /// Replaces the config file (for a reload), keeping the admin socket.
    pub fn rewrite(&self, yaml: &str) {
        std::fs::write(
            &self.config_path,
            with_admin_socket(yaml, &self.admin_socket),
        )
        .expect("rewrite config");
    }

    /// Fails the test, with the whole log, if the sidecar panicked.
    pub fn assert_no_panic(&self) {
        assert_eq!(
            self.log.count(&["panicked"]),
            0,
            "the sidecar panicked:\n{}",
            self.log.lines().join("\n")
        );
    }

    /// Open file descriptors (sockets included).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The sidecar's PID (under a wrapper: the wrapper's first child).
    pub fn pid(&self) -> u32 {
        let own = self.child.id();
        if !self.wrapped {
            return own;
        }
        std::fs::read_to_string(format!("/proc/{own}/task/{own}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or(own)
    }

    /// Sends a signal by PID.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Waits for the process to exit (up to `limit`); returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling a child's exit status has no awaitable event in std.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines `child` writes on its (piped) stdout, collected as they come;
/// `closed` is pushed once it closes.
pub fn stdout_log(child: &mut Child, closed: &'static str) -> Log {
    let log = Log::default();
    let sink = log.clone();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.push(line);
        }
        sink.push(closed.into());
    });
    log
}

/// `yaml` with `sidecar.admin_socket` set to `socket` unless it sets one:
/// every test sidecar gets its own socket (the default is one per host).
pub fn with_admin_socket(yaml: &str, socket: &std::path::Path) -> String {
    if yaml.contains("admin_socket:") {
        return yaml.to_string();
    }
    let line = format!("  admin_socket: {}\n", socket.display());
    match yaml.find("\nsidecar:\n") {
        Some(i) => {
            let at = i + "\nsidecar:\n".len();
            format!("{}{line}{}", &yaml[..at], &yaml[at..])
        }
        None if yaml.starts_with("sidecar:\n") => format!("sidecar:\n{line}{}", &yaml[9..]),
        None => format!("{}\nsidecar:\n{line}", yaml.trim_end()),
    }
}

/// `127.0.<net>.<host>:<port>`.
pub fn addr(net: u8, host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, net, host], port))
}

/// A sidecar config for masters on 127.0.<net>.2.. and the sidecar on .1.
pub fn config(net: u8, masters: &[&str], extra: &str) -> String {
    Yaml::new(&format!("127.0.{net}.1"), masters)
        .minion(extra)
        .sidecar("drain_timeout", "3s")
        .build()
}

// === the one config builder ===

/// A sidecar config file, built up. By default: `master_type: failover`,
/// `id: test-minion`, the sidecar listening on `listen` with its admin
/// endpoint on `listen:9464`, `connect_timeout: 500ms`.
#[derive(Clone, Debug)]
pub struct Yaml {
    masters: Vec<String>,
    master_type: Option<String>,
    id: String,
    /// Further top-level (minion) keys, as YAML lines.
    minion: String,
    /// `sidecar:` keys in order; a later `sidecar()` replaces a key's value.
    sidecar: Vec<(String, String)>,
}

impl Yaml {
    pub fn new(listen: &str, masters: &[impl AsRef<str>]) -> Yaml {
        Yaml {
            masters: masters.iter().map(|m| m.as_ref().to_string()).collect(),
            master_type: Some("failover".into()),
            id: "test-minion".into(),
            minion: String::new(),
            sidecar: vec![
                ("listen".into(), listen.into()),
                ("admin".into(), format!("{listen}:9464")),
                ("connect_timeout".into(), "500ms".into()),
            ],
        }
    }

    /// Masters from the SRV record `record` (`sidecar.master_srv`) instead
    /// of a `master:` list; no `master_type` (failover is the only one).
    pub fn srv(listen: &str, record: &str) -> Yaml {
        let no_masters: [&str; 0] = [];
        let mut yaml = Yaml::new(listen, &no_masters).no_master_type();
        yaml.sidecar.insert(0, ("master_srv".into(), record.into()));
        yaml
    }

    pub fn id(mut self, id: &str) -> Yaml {
        self.id = id.into();
        self
    }

    /// Leaves `master_type` out (Salt's default).
    pub fn no_master_type(mut self) -> Yaml {
        self.master_type = None;
        self
    }

    /// More top-level keys (`master_alive_interval: 1\n...`).
    pub fn minion(mut self, yaml: &str) -> Yaml {
        self.minion.push_str(yaml);
        if !self.minion.ends_with('\n') {
            self.minion.push('\n');
        }
        self
    }

    /// Sets `sidecar.<key>`.
    pub fn sidecar(mut self, key: &str, value: &str) -> Yaml {
        match self.sidecar.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.into(),
            None => self.sidecar.push((key.into(), value.into())),
        }
        self
    }

    /// More `sidecar:` keys as indented YAML lines (`  rise: 3\n`).
    pub fn sidecar_lines(mut self, yaml: &str) -> Yaml {
        for line in yaml.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.trim().split_once(':').expect("`key: value`");
            self = self.sidecar(k.trim(), v.trim());
        }
        self
    }

    pub fn build(&self) -> String {
        let mut out = String::new();
        if !self.masters.is_empty() {
            out.push_str("master:\n");
        }
        for m in &self.masters {
            out.push_str(&format!("  - {m}\n"));
        }
        if let Some(t) = &self.master_type {
            out.push_str(&format!("master_type: {t}\n"));
        }
        out.push_str(&format!("id: {}\n{}sidecar:\n", self.id, self.minion));
        for (k, v) in &self.sidecar {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out
    }
}

// === skips ===

/// Records a skipped test where `scripts/test` prints it at the end
/// (`target/tmp/skipped.txt`), and on this test's stderr. Only behind an
/// explicit, documented environment variable (docs/testing.md, "Skips").
pub fn skip(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("could not record the skip in {}: {e}", path.display());
    }
}

// === the one Prometheus text parser ===

/// `GET /metrics` from the admin endpoint at `admin` (plain HTTP/1.0): the
/// whole response, headers included.
pub fn scrape(admin: SocketAddr) -> String {
    get(admin, "/metrics")
}

/// `GET path` from the admin endpoint at `admin` (plain HTTP/1.0): the
/// whole response, headers included.
pub fn get(admin: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).expect("admin endpoint");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// `/status` from the admin endpoint at `admin`, parsed.
pub fn status(admin: SocketAddr) -> salt_sidecar::api::StatusReport {
    let text = get(admin, "/status");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/status: {e}: {text}"))
}

/// Every series of `family` in a Prometheus text exposition: its labels and
/// value. Lines that are not samples (comments, headers) are passed over.
pub fn series(text: &str, family: &str) -> Vec<(Vec<(String, String)>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
                None => (name_labels, Vec::new()),
            };
            (name == family).then_some((labels, value.parse().ok()?))
        })
        .collect()
}

/// `k="v",k2="v2"` (values with `\"` and `\\` escapes).
fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        text = &rest[end + 1..];
    }
    Some(out)
}

/// The value of the first series of `family` whose labels include `labels`.
pub fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text, family).into_iter().find_map(|(have, value)| {
        labels
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            .then_some(value)
    })
}

/// `salt_sidecar_session_moves_total{port, how="preserved"}` of the
/// sidecar whose admin endpoint is `admin` (0 before the first move).
pub fn moved(admin: SocketAddr, port: &str) -> u64 {
    sample(
        &scrape(admin),
        "salt_sidecar_session_moves_total",
        &[("port", port), ("how", "preserved")],
    )
    .unwrap_or(0.0) as u64
}

/// Waits until the sidecar at `admin` has moved more than `seen` sessions
/// on `port` (a graceful switch moves a session once it has been quiet for
/// 2 s); panics after `limit`. Returns how long it took.
pub async fn until_moved(admin: SocketAddr, port: &str, seen: u64, limit: Duration) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let now = tokio::task::spawn_blocking({
            let port = port.to_string();
            move || moved(admin, &port)
        })
        .await
        .expect("scrape");
        if now > seen {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no {port} session moved within {limit:?} (still {now})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The series of `family`, summed by the value of `label`.
pub fn sum_by(text: &str, family: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    for (labels, value) in series(text, family) {
        let key = labels
            .into_iter()
            .find_map(|(k, v)| (k == label).then_some(v))
            .unwrap_or_default();
        *sums.entry(key).or_insert(0.0) += value;
    }
    sums
}

/// A stand-in master (ZMTP PUB/ROUTER) on 127.0.<net>.<host>:4505/4506.
pub async fn master(name: &str, net: u8, host: u8) -> salt_sidecar::standin::StandinMaster {
    salt_sidecar::standin::StandinMaster::start(name, addr(net, host, 4505), addr(net, host, 4506))
        .await
        .expect("start stand-in master")
}

/// Sends one request through the sidecar's ret port on a fresh connection;
/// returns the name of the master that answered.
pub async fn ask(sidecar_ret: SocketAddr) -> Option<String> {
    use salt_sidecar::standin::ZmtpClient;
    use salt_sidecar::zmtp::SocketType;
    let limit = Duration::from_secs(2);
    let mut c = ZmtpClient::connect(sidecar_ret, SocketType::Dealer, limit)
        .await
        .ok()?;
    let reply = c.request(b"ping", limit).await.ok()?;
    String::from_utf8_lossy(&reply)
        .split(':')
        .next()
        .map(str::to_string)
}

/// Keeps asking (a fresh connection each time, as a reconnecting minion does)
/// until `name` answers; returns how long that took.
pub async fn until_answered_by(sidecar_ret: SocketAddr, name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if ask(sidecar_ret).await.as_deref() == Some(name) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "master {name} did not answer within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === the static binary ===

/// Where the tests build what they build outside `cargo test`'s own target
/// directory (which `cargo test` keeps locked while tests run): `<target>/static`.
/// `scripts/build-static` builds the release binary there, and
/// `scripts/package` its man-page generator.
pub fn static_target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
        .join("static")
}

/// Builds the static binary with `scripts/build-static` (once per test
/// binary; cargo makes later calls a no-op) into [`static_target_dir`] and
/// returns its path.
pub fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let started = Instant::now();
        let mut cmd = Command::new(root.join("scripts/build-static"));
        let out = cmd
            .env("CARGO_TARGET_DIR", static_target_dir())
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "scripts/build-static failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "<path> <bytes> bytes (<MiB> MiB)"
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "scripts/build-static ({:.0}s): {}",
            started.elapsed().as_secs_f64(),
            stdout.trim()
        );
        let path = stdout.split_whitespace().next().expect("a path on stdout");
        PathBuf::from(path)
    })
}
