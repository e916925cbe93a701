//! Real Salt end to end (issue 3): two `salt-master` processes of Salt 3008 and an
//! unmodified `salt-minion` on loopback, the minion with `master: 127.0.0.1` and this
//! crate's `salt-sidecar` in front.
//!
//! The labs are driven by `tests/salt/scenarios.py` (also used by `scripts/salt-e2e`,
//! which adds the native-failover and HAProxy baselines); this test runs the
//! sidecar's scenarios once, serially (they share fixed loopback addresses and hold
//! the lab lock file), and asserts what a user would see:
//!
//! 1. crash failover, zeromq: SIGKILL master A; `test.ping` answers through B in
//!    < 3 s (median of 3 rounds, `master_alive_interval: 1`);
//! 2. the same with `transport: tcp` (< 3 s, median of 3 rounds);
//! 3. failback: A returns, the sidecar moves back after `master_failback_interval`,
//!    a stream of `test.arg` jobs issued on whichever master the minion is on all
//!    return — 0 lost, checked in the masters' job caches;
//! 4. graceful restart of A (SIGTERM, start): 0 lost the same way;
//! 5. enrollment: `salt-sidecar enroll` pins a new minion to A then B, the test
//!    accepts its key with `salt-key -a` on each, no master is stopped, the
//!    sidecar ends unpinned;
//! 6. shuffle: 20 sidecars with `master_shuffle: true` in front of 3 stand-in
//!    masters pick a spread of masters, keep it across a restart, and only the
//!    killed master's sidecars move.
//!
//! It needs root and the venv of `scripts/test-deps` (Salt 3008, pyzmq); without
//! them it fails (CI runs scripts/test-deps first), it does not skip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// The whole run (measured about 6 minutes on a 2-core machine).
const DEADLINE: Duration = Duration::from_secs(20 * 60);
/// The bar for a crash failover (kill of A -> first ping through B).
const FAILOVER_BAR_S: f64 = 3.0;

fn venv() -> PathBuf {
    std::env::var_os("SALT_SIDECAR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/salt-sidecar/venv"))
}

fn preflight() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the real-Salt tests run salt-master and salt-minion as root: run them as root"
    );
    let v = venv();
    for exe in ["python", "salt-master", "salt-minion", "salt", "salt-key"] {
        assert!(
            v.join("bin").join(exe).exists(),
            "no {exe} in the venv {}: run ./scripts/test-deps (it installs Salt 3008)",
            v.display()
        );
    }
}

/// Runs `scenarios.py run <plan...>` with this build's sidecar and returns its
/// JSON lines (one per scenario); on a failure or timeout, the log tail is in the
/// panic message.
fn run_scenarios(plan: &[&str]) -> Vec<Value> {
    let script = Path::new(MANIFEST).join("tests/salt/scenarios.py");
    // Short: the minions' Unix sockets live in it (a sun_path holds 108 bytes).
    let work = tempfile::Builder::new()
        .prefix("se2e-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let err_path = work.path().join("scenarios.stderr");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("run")
        .args(plan)
        .arg("--sidecar")
        .arg(env!("CARGO_BIN_EXE_salt-sidecar"))
        .arg("--workdir")
        .arg(work.path())
        .env("SALT_SIDECAR_VENV", venv())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawn python3 tests/salt/scenarios.py");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if start.elapsed() > DEADLINE {
            // SIGTERM: scenarios.py stops its labs (masters, minions, sidecars) on exit.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = reader.join().expect("reader");
    let log = std::fs::read_to_string(&err_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(150).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for l in &lines {
        eprintln!("{l}");
    }
    match status {
        None => panic!(
            "scenarios.py ran longer than {DEADLINE:?}; output so far:\n{out}\n--- stderr tail:\n{}",
            tail.join("\n")
        ),
        Some(st) if lines.len() != plan.len() => panic!(
            "scenarios.py exited {st} with {} of {} result lines:\n{out}\n--- stderr tail:\n{}",
            lines.len(),
            plan.len(),
            tail.join("\n")
        ),
        Some(_) => {}
    }
    // Keep the kept labs (failed rounds) for a look; remove the rest.
    if lines.iter().all(|l| l["ok"] == Value::Bool(true)) {
        drop(work);
    } else {
        eprintln!(
            "scenarios.py stderr tail:\n{}\nfiles kept in {}",
            tail.join("\n"),
            work.keep().display()
        );
    }
    lines
}

fn scenario<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["scenario"] == name)
        .unwrap_or_else(|| panic!("no result line for {name}"))
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// Scenarios 1 and 2: every round answered through B, the job cache has the job
/// run through B, and the median is under the bar.
fn check_crash(lines: &[Value], name: &str, rounds: usize, failures: &mut Vec<String>) {
    let s = scenario(lines, name);
    let rs = s["rounds"].as_array().cloned().unwrap_or_default();
    if rs.len() != rounds {
        failures.push(format!(
            "{name}: {} rounds, expected {rounds}: {s}",
            rs.len()
        ));
        return;
    }
    for r in &rs {
        if f(&r["seconds"]).is_none() || r["job_cache_ok"] != Value::Bool(true) {
            failures.push(format!(
                "{name}: the minion did not answer through master B after A was killed: {r}"
            ));
        }
    }
    match f(&s["median"]) {
        Some(m) if m < FAILOVER_BAR_S => {}
        m => failures.push(format!(
            "{name}: kill of A -> first ping through B: median {m:?} s, bar < {FAILOVER_BAR_S} s: {}",
            s["values"]
        )),
    }
}

/// Scenarios 3 and 4: no job lost or misrouted, the minion ends on A.
fn check_stream(lines: &[Value], name: &str, failures: &mut Vec<String>) {
    let s = scenario(lines, name);
    let Some(r) = s["rounds"].get(0) else {
        failures.push(format!("{name}: no round: {s}"));
        return;
    };
    if r.get("error").is_some() {
        failures.push(format!("{name}: {}", r["error"]));
        return;
    }
    if u(&r["issued"]) < 50 {
        failures.push(format!("{name}: only {} jobs issued: {r}", r["issued"]));
    }
    if u(&r["lost"]) != 0 || u(&r["misrouted"]) != 0 {
        failures.push(format!(
            "{name}: {} jobs lost and {} misrouted of {} (job caches of A and B): {}",
            r["lost"], r["misrouted"], r["issued"], r["not_on_issuer"]
        ));
    }
    if f(&r["failback_after_start_s"]).is_none() {
        failures.push(format!("{name}: the sidecar never moved back to A: {r}"));
    }
    let segs = r["segments"].as_array().cloned().unwrap_or_default();
    let last = segs.last().and_then(|x| x.get(0)).and_then(Value::as_str);
    if last != Some("A") {
        failures.push(format!(
            "{name}: the job stream did not end on A: segments {}",
            r["segments"]
        ));
    }
}

fn check_enroll(lines: &[Value], failures: &mut Vec<String>) {
    let s = scenario(lines, "enroll");
    let Some(r) = s["rounds"].get(0) else {
        failures.push(format!("enroll: no round: {s}"));
        return;
    };
    let want_keys = serde_json::json!({"A": "accepted", "B": "accepted"});
    if r["enroll_rc"] != 0
        || r["keys_after"] != want_keys
        || !r["pinned_after"].is_null()
        || r["masters_never_stopped"] != Value::Bool(true)
        || f(&r["ping_after_s"]).is_none()
        || s["ok"] != Value::Bool(true)
    {
        failures.push(format!(
            "enroll: expected exit 0, the key accepted on A and B, the sidecar unpinned, \
             no master stopped and a ping afterwards: {r}"
        ));
    }
}

fn check_shuffle(lines: &[Value], failures: &mut Vec<String>) {
    let s = scenario(lines, "shuffle");
    let Some(r) = s["rounds"].get(0) else {
        failures.push(format!("shuffle: no round: {s}"));
        return;
    };
    if r.get("error").is_some() {
        failures.push(format!("shuffle: {}", r["error"]));
        return;
    }
    let chosen = r["choice"]
        .as_object()
        .map(|m| m.values().filter(|v| v.is_string()).count())
        .unwrap_or(0);
    if chosen != 20 {
        failures.push(format!(
            "shuffle: {chosen} of 20 sidecars picked a master: {}",
            r["choice"]
        ));
    }
    // Rendezvous hashing of 20 ids over 3 masters: about 6.7 each; 3 is a generous floor.
    let spread: Vec<u64> = r["spread"]
        .as_object()
        .map(|m| m.values().map(u).collect())
        .unwrap_or_default();
    if spread.len() != 3 || spread.iter().any(|&n| n < 3) {
        failures.push(format!("shuffle: uneven spread {}", r["spread"]));
    }
    if u(&r["restart_same"]) != 20 {
        failures.push(format!(
            "shuffle: only {} of 20 sidecars kept their master across a restart",
            r["restart_same"]
        ));
    }
    if u(&r["moved"]) == 0 || r["moved_ok"] != r["moved"] || r["others_unchanged"] != r["others"] {
        failures.push(format!(
            "shuffle: killing {} should move exactly its {} sidecars: moved_ok {}, others unchanged {} of {}",
            r["killed"], r["moved"], r["moved_ok"], r["others_unchanged"], r["others"]
        ));
    }
}

#[test]
fn real_salt_failover_failback_enroll_shuffle() {
    preflight();
    let plan = [
        "sidecar_zeromq_crash:3",
        "sidecar_tcp_crash:3",
        "failback:1",
        "graceful_restart:1",
        "enroll:1",
        "shuffle:1",
    ];
    let lines = run_scenarios(&plan);
    let mut failures = Vec::new();
    check_crash(&lines, "sidecar_zeromq_crash", 3, &mut failures);
    check_crash(&lines, "sidecar_tcp_crash", 3, &mut failures);
    check_stream(&lines, "failback", &mut failures);
    check_stream(&lines, "graceful_restart", &mut failures);
    check_enroll(&lines, &mut failures);
    check_shuffle(&lines, &mut failures);
    assert!(
        failures.is_empty(),
        "real Salt end to end:\n  {}",
        failures.join("\n  ")
    );
}
