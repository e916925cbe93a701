//! The Salt state that rolls salt-sidecar out (`deploy/salt/salt-sidecar`),
//! run by the real Salt 3008 of the test venv (`salt-call --local`, file_roots
//! at deploy/salt, a pillar of the test's) against a temporary root: every
//! path comes from pillar, services are not managed (no systemd here), the
//! sidecar is started by the state's `start_cmd` and the minion "restart" is
//! a command that appends a line to a file.
//!
//! 1. `state.show_sls` renders, in the tested mode and in the others
//!    (package install; systemd-managed binary with the repository's unit);
//! 2. `state.apply test=True` on an empty root reports every state as a change
//!    and writes nothing;
//! 3. a real apply while no master is up installs, configures and starts a
//!    real sidecar, but the gate (`salt-sidecar status` must say a master is
//!    up) fails: the minion drop-in is not written and the minion is not
//!    restarted;
//! 4. with a stand-in master up, the next apply passes the gate, writes the
//!    drop-in (`master:` the sidecar) and restarts the minion, once;
//! 5. a third apply changes nothing.
//!
//! Needs root and the venv of `scripts/test-deps` (Salt 3008): without the
//! venv it fails; without root it is skipped. Loopback 127.0.130.0/24 only.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

const NET: u8 = 130;
const STATE: &str = "salt-sidecar";
const ALL_STATES: [&str; 6] = [
    "salt-sidecar-installed",
    "salt-sidecar-config",
    "salt-sidecar-running",
    "salt-sidecar-master-up",
    "salt-sidecar-minion-master",
    "salt-sidecar-minion-restart",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv() -> PathBuf {
    std::env::var_os("SALT_SIDECAR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/salt-sidecar/venv"))
}

/// A temporary root, a Salt config for `salt-call --local` and a pillar.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().expect("a UTF-8 path").to_string()
    }

    fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("ssc-state-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let lab = Lab { dir };
        for d in ["conf", "pillar", "root", "salt"] {
            std::fs::create_dir_all(lab.path(d)).expect("mkdir");
        }
        std::fs::write(
            lab.path("conf/minion"),
            format!(
                "id: salt-sidecar-state-test\nroot_dir: {}\nfile_client: local\n\
                 file_roots:\n  base:\n    - {}\npillar_roots:\n  base:\n    - {}\n",
                lab.p("salt"),
                repo().join("deploy/salt").display(),
                lab.p("pillar"),
            ),
        )
        .expect("write the minion config");
        std::fs::write(
            lab.path("pillar/top.sls"),
            "base:\n  '*':\n    - salt_sidecar\n",
        )
        .expect("write the pillar top");
        let bin = lab.p("root/usr/local/bin/salt-sidecar");
        let config = lab.p("root/etc/salt-sidecar/config.yaml");
        // The state runs it in the background; it records the sidecar's PID
        // so the test can stop it (by PID) at the end.
        let start = lab.path("start-sidecar");
        std::fs::write(
            &start,
            format!(
                "#!/bin/sh\n'{bin}' --log-level info run --config '{config}' >>'{log}' 2>&1 &\necho $! >'{pid}'\n",
                log = lab.p("sidecar.log"),
                pid = lab.p("sidecar.pid"),
            ),
        )
        .expect("write start-sidecar");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let pillar = serde_json::json!({
            "salt_sidecar": {
                "masters": [format!("127.0.{NET}.2"), format!("127.0.{NET}.3")],
                "alive_interval": 1,
                "failback": true,
                "failback_interval": 5,
                "shuffle": false,
                "random_reauth_delay": 0,
                "id": "state-test-minion",
                "sidecar": {
                    "listen": format!("127.0.{NET}.1"),
                    "admin": format!("127.0.{NET}.1:9464"),
                    "admin_socket": lab.p("run/admin.sock"),
                    "connect_timeout": "500ms",
                    "rise": 1,
                },
                "install": "binary",
                "binary_source": env!("CARGO_BIN_EXE_salt-sidecar"),
                "binary": bin,
                "config": config,
                "minion_dropin": lab.p("root/etc/salt/minion.d/99-salt-sidecar.conf"),
                "manage_services": false,
                "start_cmd": lab.p("start-sidecar"),
                "gate_timeout": 10,
                "minion_restart_cmd": format!("echo restarted >>'{}'", lab.p("minion-restarts")),
            }
        });
        // JSON is YAML: the pillar file is the document as it is.
        std::fs::write(lab.path("pillar/salt_sidecar.sls"), pillar.to_string())
            .expect("write the pillar");
        lab
    }

    /// `salt-call --local --out=json <args>`; returns `local`'s value.
    fn salt_call(&self, args: &[&str]) -> Value {
        let started = Instant::now();
        let out = Command::new(venv().join("bin/salt-call"))
            .arg("--local")
            .arg("-c")
            .arg(self.path("conf"))
            .args(["--out=json", "--log-level=warning"])
            .args(args)
            .output()
            .expect("run salt-call");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "salt-call {} ({:.1}s, {})",
            args.join(" "),
            started.elapsed().as_secs_f64(),
            out.status
        );
        let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("salt-call {args:?}: {e}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
        doc.get("local")
            .cloned()
            .unwrap_or_else(|| panic!("salt-call {args:?}: no `local` in {doc}\nstderr:\n{stderr}"))
    }

    /// `state.apply` (with extra args); returns each state's result by ID.
    fn apply(&self, extra: &[&str]) -> Vec<StateRun> {
        let local = self.salt_call(&[&["state.apply", STATE][..], extra].concat());
        let map = local
            .as_object()
            .unwrap_or_else(|| panic!("state.apply did not return states: {local}"));
        let mut runs: Vec<StateRun> = map
            .values()
            .map(|v| StateRun {
                id: v["__id__"].as_str().unwrap_or_default().to_string(),
                result: v["result"].as_bool(),
                changed: v["changes"].as_object().is_some_and(|c| !c.is_empty()),
                comment: v["comment"].to_string(),
                order: v["__run_num__"].as_u64().unwrap_or(u64::MAX),
            })
            .collect();
        runs.sort_by_key(|r| r.order);
        for r in &runs {
            eprintln!(
                "  {:<28} result={:<5} changed={:<5} {}",
                r.id,
                format!("{:?}", r.result),
                r.changed,
                r.comment.chars().take(160).collect::<String>()
            );
        }
        runs
    }
}

#[derive(Debug)]
struct StateRun {
    id: String,
    result: Option<bool>,
    changed: bool,
    comment: String,
    order: u64,
}

fn state<'a>(runs: &'a [StateRun], id: &str) -> &'a StateRun {
    runs.iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no state {id} in {runs:#?}"))
}

fn ids(runs: &[StateRun], keep: impl Fn(&StateRun) -> bool) -> BTreeSet<&str> {
    runs.iter()
        .filter(|r| keep(r))
        .map(|r| r.id.as_str())
        .collect()
}

/// Stops the sidecar the state started (by the PID it recorded) on drop.
struct StopSidecar(PathBuf);

impl Drop for StopSidecar {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(&self.0) else {
            return;
        };
        let pid = pid.trim();
        // Only the process this test started: its command line names our root.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("ssc-state-") {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_salt_state_gates_the_minion_switch_on_a_healthy_master_and_converges() {
    if !support::netns::root_or_skip("the Salt state test", "salt-call runs as root") {
        return;
    }
    let salt_call = venv().join("bin/salt-call");
    assert!(
        salt_call.exists(),
        "no {}: run ./scripts/test-deps (it installs Salt 3008)",
        salt_call.display()
    );
    let started = Instant::now();
    let lab = Lab::new();
    let _stop = StopSidecar(lab.path("sidecar.pid"));
    let dropin = lab.path("root/etc/salt/minion.d/99-salt-sidecar.conf");
    let restarts = lab.path("minion-restarts");

    // 1. It renders: as tested, from the package, and as a systemd service.
    let shown = lab.salt_call(&["state.show_sls", STATE]);
    let shown_ids: BTreeSet<&str> = shown
        .as_object()
        .expect("states")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(shown_ids, BTreeSet::from(ALL_STATES), "{shown:#}");
    assert!(
        shown["salt-sidecar-master-up"]["cmd"]
            .as_array()
            .expect("cmd.run args")
            .iter()
            .any(|a| a.get("prereq").is_some()),
        "the gate is not a prereq of the minion change: {shown:#}"
    );
    let package = lab.salt_call(&[
        "state.show_sls",
        STATE,
        r#"pillar={"salt_sidecar": {"install": "package", "binary": "", "status_cmd": "", "manage_services": true}}"#,
    ]);
    let text = package.to_string();
    assert!(text.contains("\"pkg\""), "{package:#}");
    assert!(
        package.get("salt-sidecar-reloaded").is_some(),
        "{package:#}"
    );
    assert!(package.get("salt-sidecar-unit").is_none(), "{package:#}");
    // The socket unit is enabled and started too (the listeners systemd holds).
    let socket = package["salt-sidecar-socket"].to_string();
    assert!(
        socket.contains("\"salt-sidecar.socket\"") && socket.contains("\"enable\":true"),
        "{package:#}"
    );
    assert!(
        text.contains("/usr/bin/salt-sidecar status --json --admin 127.0.130.1:9464"),
        "the default status_cmd: {package:#}"
    );
    let service = lab.salt_call(&[
        "state.show_sls",
        STATE,
        r#"pillar={"salt_sidecar": {"manage_services": true}}"#,
    ]);
    let unit = service["salt-sidecar-unit"].to_string();
    assert!(
        unit.contains(&format!(
            "ExecStart={} run --config",
            lab.p("root/usr/local/bin/salt-sidecar")
        )),
        "the unit's ExecStart is not the pillar's binary: {unit}"
    );
    assert!(
        unit.contains(&format!(
            "ExecReload={} reload --socket",
            lab.p("root/usr/local/bin/salt-sidecar")
        )),
        "the unit's ExecReload is not the pillar's binary: {unit}"
    );
    let socket_unit = service["salt-sidecar-socket-unit"].to_string();
    assert!(
        socket_unit.contains("salt://salt-sidecar/files/salt-sidecar.socket"),
        "{service:#}"
    );
    assert!(service.get("salt-sidecar-socket").is_some(), "{service:#}");
    // The minion restart timer fires on time (a timer's default accuracy is 1 min).
    // (The lab's pillar replaces the command: check the default's text.)
    let defaults = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/salt/salt-sidecar/defaults.yaml"),
    )
    .expect("read defaults.yaml");
    assert!(
        defaults.contains(
            "minion_restart_cmd: systemd-run --on-active=5 --timer-property=AccuracySec=1s "
        ),
        "{defaults}"
    );

    // 2. test=True on an empty root: every state would change, nothing is written.
    let runs = lab.apply(&["test=True"]);
    assert_eq!(ids(&runs, |_| true), BTreeSet::from(ALL_STATES));
    assert_eq!(
        ids(&runs, |r| r.result.is_none()),
        BTreeSet::from(ALL_STATES),
        "test=True: every state should be a pending change"
    );
    let written: Vec<_> = walk(&lab.path("root"));
    assert!(written.is_empty(), "test=True wrote {written:?}");

    // 3. No master up: installed, configured, started, but the gate holds the minion.
    let runs = lab.apply(&[]);
    for id in [
        "salt-sidecar-installed",
        "salt-sidecar-config",
        "salt-sidecar-running",
    ] {
        let r = state(&runs, id);
        assert!(r.result == Some(true) && r.changed, "{r:#?}");
    }
    assert_eq!(
        state(&runs, "salt-sidecar-master-up").result,
        Some(false),
        "{runs:#?}"
    );
    assert_ne!(
        state(&runs, "salt-sidecar-minion-master").result,
        Some(true),
        "{runs:#?}"
    );
    assert!(
        !state(&runs, "salt-sidecar-minion-restart").changed,
        "{runs:#?}"
    );
    assert!(
        !dropin.exists(),
        "the minion was switched with no master up"
    );
    assert!(
        !restarts.exists(),
        "the minion was restarted with no master up"
    );
    let bin = lab.path("root/usr/local/bin/salt-sidecar");
    assert_eq!(
        std::fs::read(&bin).expect("the installed binary"),
        std::fs::read(env!("CARGO_BIN_EXE_salt-sidecar")).expect("the built binary")
    );
    let config = read(&lab.path("root/etc/salt-sidecar/config.yaml"));
    for line in [
        "\nmaster:\n  - \"127.0.130.2\"\n  - \"127.0.130.3\"\n",
        "\nmaster_type: failover\n",
        "\nmaster_alive_interval: 1\n",
        "\nmaster_failback: true\n",
        "\nmaster_failback_interval: 5\n",
        "\nmaster_shuffle: false\n",
        "\nrandom_reauth_delay: 0\n",
        "\nid: \"state-test-minion\"\n",
        "\nsidecar:\n  admin: \"127.0.130.1:9464\"\n  admin_socket: ",
        "/run/admin.sock\"\n  connect_timeout: \"500ms\"\n  listen: \"127.0.130.1\"\n  rise: 1\n",
    ] {
        assert!(
            config.contains(line),
            "{line:?} not in the config:\n{config}"
        );
    }
    let check = Command::new(&bin)
        .args(["check-config", "--config"])
        .arg(lab.path("root/etc/salt-sidecar/config.yaml"))
        .output()
        .expect("check-config");
    assert!(check.status.success(), "{check:?}");

    // 4. A master comes up: the gate opens, the minion is switched and restarted once.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _a = rt.block_on(support::master("A", NET, 2));
    let runs = lab.apply(&[]);
    assert!(runs.iter().all(|r| r.result == Some(true)), "{runs:#?}");
    assert_eq!(
        ids(&runs, |r| r.changed),
        BTreeSet::from([
            "salt-sidecar-master-up",
            "salt-sidecar-minion-master",
            "salt-sidecar-minion-restart"
        ]),
        "{runs:#?}"
    );
    let minion = read(&dropin);
    assert!(
        minion.contains("\nmaster: 127.0.130.1\nmaster_type: str\n")
            && minion.contains("\nmaster_alive_interval: "),
        "{minion}"
    );
    assert_eq!(read(&restarts), "restarted\n");
    let status = Command::new(&bin)
        .args(["status", "--json", "--admin", "127.0.130.1:9464"])
        .output()
        .expect("status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(status["active"].is_string(), "{status:#}");
    assert_eq!(
        status["active"], status["masters"][0]["master"],
        "{status:#}"
    );

    // 5. Converged: nothing changes, the minion is not restarted again.
    let runs = lab.apply(&[]);
    assert!(runs.iter().all(|r| r.result == Some(true)), "{runs:#?}");
    assert_eq!(ids(&runs, |r| r.changed), BTreeSet::new(), "{runs:#?}");
    assert_eq!(read(&restarts), "restarted\n");

    eprintln!(
        "the state test took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Every file under `dir` (recursively).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
