//! The package under a real systemd (252, Debian 12) as PID 1: what an
//! operator does to a host, checked where it happens.
//!
//! A Debian 12 root is made once with debootstrap and cached under
//! `<target>/nspawn/` (about 1-2 minutes the first time); every test boots
//! it with `systemd-nspawn -b --volatile=overlay` (a clean root each boot,
//! `--private-network`: nothing leaves the container; `--register=no
//! --keep-unit`: the host has no system bus) and runs commands inside with
//! `nsenter -a`. The .debs come from `scripts/package` (two revisions: an
//! upgrade). Checked: install enables and starts both units (Type=notify
//! READY and STATUS=), 10 restarts in a row leave the socket listening and
//! the service active, a tight crash loop stops at the start limit, the
//! watchdog restarts a SIGSTOPped sidecar, `systemctl reload` fails on a
//! refused config and succeeds once a valid one is in force, restarts and an
//! upgrade refuse no connect and keep an edited conffile, `dpkg -r` leaves no
//! process and no listener, `dpkg -P` no links, config or runtime dir. And
//! the Salt state (deploy/salt) run by the test venv's Salt 3008 inside
//! (the venv and its Python bound read-only): it enables and starts both
//! units, and its minion restart timer fires on time.
//!
//! Needs root, debootstrap and systemd-nspawn (`scripts/test-deps`), and the
//! Debian mirror for the first build of the root. When that is impossible the
//! test fails, unless `SALT_SIDECAR_SKIP_NSPAWN=1`: then it records the skip
//! in `target/tmp/skipped.txt`, which `scripts/test` prints at the end.
//! MemoryMax=/TasksMax= are not checked: cgroup v1 is read-only inside the
//! container here, so systemd accepts them and does not enforce them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "/etc/salt-sidecar/config.yaml";
/// What debootstrap installs besides minbase (the cache is rebuilt when this changes).
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,procps,python3";
/// The sidecar's config in the container: one master that refuses
/// connections at once, so a start is READY after one fast probe round.
const TEST_CONFIG: &str = "master: 127.0.0.2\nmaster_alive_interval: 1\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// === prerequisites and the cached root ===

/// Records a skip where `scripts/test` prints it (`support::skip`).
fn skip(why: &str) {
    support::skip(&format!(
        "SKIPPED: tests/nspawn.rs (the package under a real systemd): {why}"
    ));
}

/// Why systemd-nspawn cannot run here, if it cannot.
fn impossible() -> Option<String> {
    if !support::netns::is_root() {
        return Some("debootstrap and systemd-nspawn need root".into());
    }
    for tool in ["debootstrap", "systemd-nspawn", "nsenter", "flock"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is missing (scripts/test-deps installs it)"));
        }
    }
    None
}

/// The cached Debian 12 root, built on first use (under a lock: one build
/// at a time), into a temporary directory renamed when complete.
fn debian_root() -> Result<PathBuf, String> {
    let dir = support::static_target_dir()
        .parent()
        .map(|p| p.join("nspawn"))
        .ok_or("no target directory")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let root = dir.join("bookworm");
    let stamp = dir.join("bookworm.include");
    let script = format!(
        "set -e
if [ -d '{root}' ] && [ \"$(cat '{stamp}' 2>/dev/null)\" = '{INCLUDE}' ]; then exit 0; fi
rm -rf '{root}' '{root}.tmp' '{stamp}'
debootstrap --variant=minbase --include={INCLUDE} bookworm '{root}.tmp' http://deb.debian.org/debian >'{dir}/debootstrap.log' 2>&1 ||
  {{ tail -20 '{dir}/debootstrap.log' >&2; exit 1; }}
mv '{root}.tmp' '{root}'
echo '{INCLUDE}' >'{stamp}'",
        root = root.display(),
        stamp = stamp.display(),
        dir = dir.display(),
    );
    let started = Instant::now();
    let out = Command::new("flock")
        .arg(dir.join(".lock"))
        .args(["sh", "-c", &script])
        .output()
        .map_err(|e| format!("flock: {e}"))?;
    if !out.status.success() {
        return Err(format!("debootstrap failed: {}", text(&out.stderr)));
    }
    eprintln!(
        "Debian 12 root {} ready in {:.0}s",
        root.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

// === the packages ===

/// `scripts/package --revision N` into `out`; the .deb's path.
fn package(out: &Path, revision: u32) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let o = Command::new(root.join("scripts/package"))
        .arg("--out")
        .arg(out)
        .args(["--revision", &revision.to_string()])
        .arg("--bin")
        .arg(support::static_binary())
        .env("CARGO_TARGET_DIR", support::static_target_dir())
        .output()
        .expect("run scripts/package");
    assert!(o.status.success(), "scripts/package: {}", text(&o.stderr));
    eprintln!(
        "scripts/package --revision {revision}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    PathBuf::from(text(&o.stdout).lines().next().expect("the .deb"))
}

// === the booted container ===

/// A booted container; powered off (then killed, by PID) when dropped.
struct Machine {
    nspawn: Child,
    /// Its systemd, PID 1 inside.
    init: u32,
}

impl Machine {
    /// Boots `root` with `packages` bound read-only at /mnt/pkg, and the
    /// `binds` (read-only, at the same path inside).
    fn boot(root: &Path, packages: &Path, binds: &[PathBuf]) -> Machine {
        let started = Instant::now();
        let nspawn = Command::new("systemd-nspawn")
            .args(["-b", "-D"])
            .arg(root)
            .args([
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--volatile=overlay",
                "--console=read-only",
            ])
            .arg(format!("--bind-ro={}:/mnt/pkg", packages.display()))
            .args(binds.iter().map(|b| format!("--bind-ro={}", b.display())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn systemd-nspawn");
        let mut m = Machine { nspawn, init: 0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.init == 0 {
            let out = Command::new("pgrep")
                .args(["-P", &m.nspawn.id().to_string(), "-x", "systemd"])
                .output()
                .expect("pgrep");
            m.init = text(&out.stdout).trim().parse().unwrap_or(0);
            if let Ok(Some(status)) = m.nspawn.try_wait() {
                panic!("systemd-nspawn exited {status} before its systemd started");
            }
            assert!(Instant::now() < deadline, "no systemd in the container");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its manager answers once its private socket is up; then wait for the boot.
        m.until(
            "systemctl show -p Version --value >/dev/null 2>&1",
            Duration::from_secs(30),
        );
        let state = m.sh("timeout 60 systemctl is-system-running --wait 2>&1 || true");
        eprintln!(
            "booted in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            state.trim()
        );
        m
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "-a", "sh", "-c", script]);
        cmd
    }

    fn output(&self, script: &str) -> Output {
        self.command(script)
            .output()
            .unwrap_or_else(|e| panic!("nsenter {script}: {e}"))
    }

    /// Runs a shell script inside; panics with its output unless it succeeds.
    fn sh(&self, script: &str) -> String {
        let out = self.output(script);
        assert!(
            out.status.success(),
            "in the container: {script}\nexited {}:\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `systemctl show -p PROP --value UNIT`.
    fn show(&self, unit: &str, prop: &str) -> String {
        self.sh(&format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_string()
    }

    /// Waits until `script` succeeds inside.
    fn until(&self, script: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        while !self.output(script).status.success() {
            assert!(
                started.elapsed() < limit,
                "not within {limit:?}: {script}\njournal:\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    fn journal(&self) -> String {
        text(
            &self
                .output(
                    "journalctl -n 40 --no-pager -u salt-sidecar.service -u salt-sidecar.socket",
                )
                .stdout,
        )
    }

    /// One TCP connect to the ret port from inside: "ok", "refused" or else.
    fn connect(&self) -> String {
        self.sh(CONNECT_ONCE).trim().to_string()
    }

    /// Starts a client that connects to the ret port in a loop, counting
    /// refused connects, until [`ConnectLoop::stop`].
    fn connect_loop(&self) -> ConnectLoop<'_> {
        let _ = self.output("rm -f /run/stop-connect-loop");
        let child = self
            .command(CONNECT_LOOP)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the connect loop");
        // Running once it has made a connect.
        self.until("test -e /run/connect-loop-started", Duration::from_secs(10));
        ConnectLoop {
            machine: self,
            child: Some(child),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM: nspawn asks the container's systemd to power off.
        let pid = self.nspawn.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

const CONNECT_ONCE: &str = r#"python3 - <<'EOF'
import socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", 4506)); print("ok")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(e)
EOF"#;

const CONNECT_LOOP: &str = r#"python3 - <<'EOF'
import os, socket, time
ok = refused = 0
while not os.path.exists("/run/stop-connect-loop"):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", 4506)); ok += 1
    except ConnectionRefusedError:
        refused += 1
    finally:
        s.close()
    if ok + refused == 1:
        open("/run/connect-loop-started", "w").close()
    time.sleep(0.002)
print(ok, refused)
EOF"#;

struct ConnectLoop<'a> {
    machine: &'a Machine,
    child: Option<Child>,
}

impl ConnectLoop<'_> {
    /// Stops the loop; (accepted, refused).
    fn stop(mut self) -> (u64, u64) {
        self.machine.sh("touch /run/stop-connect-loop");
        let child = self.child.take().expect("running");
        let out = child.wait_with_output().expect("the connect loop");
        let said = text(&out.stdout);
        let mut n = said.split_whitespace().map(|w| w.parse::<u64>());
        match (n.next(), n.next()) {
            (Some(Ok(ok)), Some(Ok(refused))) => (ok, refused),
            _ => panic!("connect loop said {said:?} {}", text(&out.stderr)),
        }
    }
}

impl Drop for ConnectLoop<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.machine.output("touch /run/stop-connect-loop");
            let _ = child.wait();
        }
    }
}

// === the tests ===

/// The cached root; `None` when nspawn is impossible here and
/// `SALT_SIDECAR_SKIP_NSPAWN=1` says to skip (recorded); else a failure.
fn root_or_skip() -> Option<PathBuf> {
    let skipping = std::env::var("SALT_SIDECAR_SKIP_NSPAWN").as_deref() == Ok("1");
    match impossible().map_or_else(debian_root, Err) {
        Ok(root) => Some(root),
        Err(why) if skipping => {
            skip(&why);
            None
        }
        Err(why) => panic!(
            "cannot run the package under systemd: {why} (set SALT_SIDECAR_SKIP_NSPAWN=1 to skip, recorded)"
        ),
    }
}

/// Everything in one boot (one build of the root and of the packages).
#[test]
fn the_package_under_systemd_restarts_reloads_upgrades_and_removes_cleanly() {
    let Some(root) = root_or_skip() else { return };
    let started = Instant::now();
    let pkgs = tempfile::tempdir().expect("tempdir");
    let v1 = package(pkgs.path(), 1);
    let v2 = package(pkgs.path(), 2);
    let deb = |p: &Path| {
        format!(
            "/mnt/pkg/{}",
            p.file_name().and_then(|n| n.to_str()).expect("a name")
        )
    };
    let m = Machine::boot(&root, pkgs.path(), &[]);

    // 1. Install: both units enabled and started; Type=notify READY with STATUS=.
    let t = Instant::now();
    m.sh(&format!("dpkg -i {} >/dev/null", deb(&v1)));
    eprintln!(
        "dpkg -i: {:.1}s (includes the start)",
        t.elapsed().as_secs_f64()
    );
    for unit in ["salt-sidecar.socket", "salt-sidecar.service"] {
        assert_eq!(
            m.sh(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled"
        );
        assert_eq!(
            m.sh(&format!("systemctl is-active {unit}")).trim(),
            "active"
        );
    }
    assert_eq!(m.show("salt-sidecar.service", "Type"), "notify");
    assert!(
        m.show("salt-sidecar.service", "StatusText")
            .contains("master"),
        "STATUS= from the sidecar: {}",
        m.show("salt-sidecar.service", "StatusText")
    );
    // The test's config: a master that refuses at once (fast READY).
    m.sh(&format!(
        "cat >{CONFIG} <<'EOF'\n{TEST_CONFIG}EOF\nsystemctl restart salt-sidecar"
    ));
    assert_eq!(m.connect(), "ok");

    // 2. Ten restarts in a row: the socket keeps listening, the service is
    //    active, and no connect is refused meanwhile.
    let client = m.connect_loop();
    let t = Instant::now();
    for _ in 0..10 {
        m.sh("systemctl restart salt-sidecar.service");
    }
    let took = t.elapsed();
    let (ok, refused) = client.stop();
    eprintln!(
        "10 restarts in {:.1}s: {ok} connects, {refused} refused",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(20), "10 restarts took {took:?}");
    assert_eq!(
        refused, 0,
        "refused connects during restarts ({ok} accepted)"
    );
    assert!(ok > 50, "the connect loop ran: {ok}");
    assert_eq!(
        m.sh("systemctl is-active salt-sidecar.socket salt-sidecar.service")
            .trim(),
        "active\nactive"
    );
    assert_eq!(m.connect(), "ok");

    // 3. systemctl reload: fails on a refused config (the journal names file,
    //    line and key), succeeds once a valid one is in force.
    m.sh(&format!(
        "printf 'master: 127.0.0.2\\nmaster_alive_interval: soon\\n' >{CONFIG}"
    ));
    let out = m.output("systemctl reload salt-sidecar");
    assert!(
        !out.status.success(),
        "reload of an invalid config succeeded"
    );
    let journal = m.journal();
    assert!(
        journal.contains("refused")
            && journal.contains("config.yaml:2:")
            && journal.contains("master_alive_interval"),
        "{journal}"
    );
    assert_eq!(m.sh("systemctl is-active salt-sidecar").trim(), "active");
    m.sh(&format!(
        "printf 'master:\\n  - 127.0.0.2\\n  - 127.0.0.3\\nmaster_alive_interval: 1\\n' >{CONFIG}"
    ));
    m.sh("systemctl reload salt-sidecar");
    // In force when reload returned: /status lists the new master.
    let status = m.sh("salt-sidecar status --json");
    assert!(status.contains("127.0.0.3"), "{status}");
    assert_eq!(m.show("salt-sidecar.service", "ActiveState"), "active");

    // 4. The watchdog restarts a stopped (SIGSTOP) sidecar, through the socket.
    m.sh("mkdir -p /run/systemd/system/salt-sidecar.service.d && printf '[Service]\\nWatchdogSec=3s\\n' >/run/systemd/system/salt-sidecar.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart salt-sidecar");
    let before = m.show("salt-sidecar.service", "MainPID");
    let client = m.connect_loop();
    m.sh(&format!("kill -STOP {before}"));
    let waited = m.until(
        &format!("test \"$(systemctl show -p MainPID --value salt-sidecar)\" != {before} && systemctl is-active salt-sidecar"),
        Duration::from_secs(30),
    );
    let (ok, refused) = client.stop();
    eprintln!("watchdog (WatchdogSec=3s) restarted a stopped sidecar after {:.1}s; {ok} connects, {refused} refused", waited.as_secs_f64());
    assert_eq!(refused, 0);
    assert!(m.journal().contains("Watchdog timeout"), "{}", m.journal());
    m.sh("rm -r /run/systemd/system/salt-sidecar.service.d && systemctl daemon-reload && systemctl reset-failed salt-sidecar.service");

    // 5. Upgrade to the next package: the edited conffile stays, the
    //    service restarts through the socket, no connect is refused.
    let edited = m.sh(&format!(
        "echo '# edited by the admin (tests/nspawn.rs)' >>{CONFIG} && cat {CONFIG}"
    ));
    let before = m.show("salt-sidecar.service", "MainPID");
    let client = m.connect_loop();
    let t = Instant::now();
    m.sh(&format!("dpkg -i {} >/dev/null", deb(&v2)));
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, refused) = client.stop();
    eprintln!(
        "upgrade -1 -> -2 in {:.1}s: {ok} connects, {refused} refused",
        took.as_secs_f64()
    );
    assert_eq!(refused, 0, "refused connects during the upgrade");
    assert_eq!(
        m.sh(&format!("cat {CONFIG}")),
        edited,
        "the edited conffile"
    );
    assert_ne!(
        m.show("salt-sidecar.service", "MainPID"),
        before,
        "restarted on upgrade"
    );
    assert_eq!(
        m.sh("dpkg-query -W -f '${Version}' salt-sidecar"),
        format!("{}-2", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        m.sh("systemctl is-active salt-sidecar.socket salt-sidecar.service")
            .trim(),
        "active\nactive"
    );

    // 6. A binary that crashes at once, again and again, stops being
    //    restarted at the start limit (RestartSec shortened to keep it quick).
    m.sh("mkdir -p /run/systemd/system/salt-sidecar.service.d && printf '[Service]\\nExecStart=\\nExecStart=/bin/sh -c \"exit 3\"\\nRestartSec=50ms\\n' >/run/systemd/system/salt-sidecar.service.d/crash.conf && systemctl daemon-reload");
    let _ = m.output("systemctl restart salt-sidecar.service");
    // systemd 252 says "Start request repeated too quickly", leaves the
    // service failed, and fails its socket with it (that is what the start
    // limit is kept far above restarts for).
    let waited = m.until(
        "test \"$(systemctl show -p Result --value salt-sidecar.socket)\" = service-start-limit-hit",
        Duration::from_secs(60),
    );
    let burst: u32 = m
        .show("salt-sidecar.service", "StartLimitBurst")
        .parse()
        .expect("a number");
    let restarts: u32 = m
        .show("salt-sidecar.service", "NRestarts")
        .parse()
        .expect("a number");
    eprintln!(
        "crash loop: stopped after {restarts} restarts in {:.1}s (StartLimitBurst={burst})",
        waited.as_secs_f64()
    );
    assert_eq!(m.show("salt-sidecar.service", "ActiveState"), "failed");
    assert!(restarts < burst + 2, "{restarts} restarts");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        m.show("salt-sidecar.service", "NRestarts"),
        restarts.to_string(),
        "restarted again after the limit"
    );
    m.sh("rm -r /run/systemd/system/salt-sidecar.service.d && systemctl daemon-reload && systemctl reset-failed salt-sidecar.service salt-sidecar.socket && systemctl start salt-sidecar.socket salt-sidecar.service");
    assert_eq!(m.connect(), "ok");

    // 7. Remove: no process, no listener; the conffile stays.
    m.sh("dpkg -r salt-sidecar >/dev/null");
    assert_eq!(
        m.sh("pgrep -x salt-sidecar || true").trim(),
        "",
        "a sidecar still runs"
    );
    assert_eq!(
        m.sh("ss -Hltn 'sport = :4505 or sport = :4506'").trim(),
        "",
        "a listener is left"
    );
    assert_eq!(m.connect(), "refused");
    m.sh(&format!("test -f {CONFIG}"));

    // 8. Purge: no links, no config, no runtime dir, no helper state.
    m.sh("dpkg -P salt-sidecar >/dev/null");
    let left = m.sh("find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked /etc/salt-sidecar /run/salt-sidecar -name '*salt-sidecar*' 2>/dev/null || true");
    assert_eq!(left.trim(), "", "left after dpkg -P");
    eprintln!(
        "the package under systemd: {:.0}s",
        started.elapsed().as_secs_f64()
    );
}

/// The Salt state (deploy/salt, `install: package`) run by the real Salt
/// 3008 of the test venv inside the container, against a stand-in ZeroMQ
/// master: it installs the package, enables and starts both units, switches
/// the minion once a master is up, and its restart timer fires 5 s later
/// (AccuracySec=1s), not ~9; a second run changes nothing.
#[test]
fn the_salt_state_enables_the_socket_and_restarts_the_minion_on_time() {
    let Some(root) = root_or_skip() else { return };
    let venv = PathBuf::from(
        std::env::var("SALT_SIDECAR_VENV")
            .unwrap_or_else(|_| "/var/cache/salt-sidecar/venv".into()),
    );
    assert!(
        venv.join("bin/salt-call").exists(),
        "no salt-call in {} (scripts/test-deps installs it)",
        venv.display()
    );
    // The venv's Python, when it is not the system's (pyenv): bound too.
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).expect("read pyvenv.cfg");
    let home = cfg
        .lines()
        .find_map(|l| l.strip_prefix("home = "))
        .map(PathBuf::from)
        .expect("home in pyvenv.cfg");
    let mut binds = vec![venv.clone(), PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    if !home.starts_with("/usr") {
        binds.push(home.parent().expect("the Python's prefix").to_path_buf());
    }
    let pkgs = tempfile::tempdir().expect("tempdir");
    let deb = package(pkgs.path(), 1);
    let deb = format!(
        "/mnt/pkg/{}",
        deb.file_name().and_then(|n| n.to_str()).expect("a name")
    );
    let m = Machine::boot(&root, pkgs.path(), &binds);
    let repo = env!("CARGO_MANIFEST_DIR");
    let python = venv.join("bin/python");
    // A stand-in salt-minion unit, a stand-in master (ZeroMQ) on 127.0.0.2,
    // and a masterless Salt with the state and its pillar.
    m.sh(&format!(
        "set -e
printf '[Unit]\\nDescription=stand-in salt-minion\\n[Service]\\nExecStart=/bin/sleep infinity\\n' >/etc/systemd/system/salt-minion.service
systemctl daemon-reload && systemctl start salt-minion
systemd-run --quiet --unit=zmq-master {python} {repo}/tests/helpers/zmq_master.py --name A --publish 127.0.0.2:4505 --ret 127.0.0.2:4506
mkdir -p /etc/salt-test /srv/pillar
printf 'file_client: local\\nid: vm\\nfile_roots:\\n  base:\\n    - {repo}/deploy/salt\\npillar_roots:\\n  base:\\n    - /srv/pillar\\n' >/etc/salt-test/minion
printf 'base:\\n  \"*\":\\n    - salt_sidecar\\n' >/srv/pillar/top.sls
printf 'salt_sidecar:\\n  masters: [127.0.0.2]\\n  alive_interval: 1\\n  install: package\\n  package_source: {deb}\\n' >/srv/pillar/salt_sidecar.sls",
        python = python.display(),
    ));
    let minion_started = || m.show("salt-minion.service", "ExecMainStartTimestampMonotonic");
    let before = minion_started();
    let salt_call = format!(
        "{} --local -c /etc/salt-test --out=json state.apply salt-sidecar",
        venv.join("bin/salt-call").display()
    );
    let t = Instant::now();
    let out = m.sh(&salt_call);
    let applied = Instant::now();
    eprintln!("state.apply: {:.1}s", (applied - t).as_secs_f64());
    let doc: serde_json::Value = serde_json::from_str(&out).expect("salt-call's JSON");
    let states = doc["local"].as_object().expect("state results");
    for (id, run) in states {
        assert_eq!(
            run["result"],
            serde_json::Value::Bool(true),
            "{id}: {run:#}"
        );
    }
    for unit in ["salt-sidecar.socket", "salt-sidecar.service"] {
        assert_eq!(
            m.sh(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled"
        );
        assert_eq!(
            m.sh(&format!("systemctl is-active {unit}")).trim(),
            "active"
        );
    }
    m.sh("grep -qx 'master: 127.0.0.1' /etc/salt/minion.d/99-salt-sidecar.conf");
    // The minion restart: 5 s after the state returned (AccuracySec=1s).
    m.until(
        &format!("test \"$(systemctl show -p ExecMainStartTimestampMonotonic --value salt-minion)\" != {before}"),
        Duration::from_secs(30),
    );
    let after_return = applied.elapsed();
    eprintln!(
        "the minion restarted {:.1}s after the state returned",
        after_return.as_secs_f64()
    );
    assert!(
        after_return < Duration::from_millis(7500),
        "the restart timer fired {after_return:?} after the state returned (5 s asked)"
    );
    // A second run changes nothing.
    let out = m.sh(&salt_call);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("salt-call's JSON");
    let changed: Vec<&String> = doc["local"]
        .as_object()
        .expect("state results")
        .iter()
        .filter(|(_, run)| run["changes"].as_object().is_some_and(|c| !c.is_empty()))
        .map(|(id, _)| id)
        .collect();
    assert!(changed.is_empty(), "a second run changed {changed:?}");
}
