//! The config loader against fixture files, and `check-config` as a user runs it.
//!
//! Every file in `tests/fixtures/config/invalid/` starts with
//! `# expect: LINE:COL: KEY: TEXT` — the error must name that file, line,
//! column and key, and contain TEXT. Every file in `valid/` must load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use salt_sidecar::config::{self, MasterType, ProbeKind};
use salt_sidecar::master::{Host, MasterId};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn every_invalid_fixture_fails_with_file_line_and_key() {
    for path in fixtures("invalid") {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", path.display()));
        let err = config::load(&path).expect_err(&format!("{} should be rejected", path.display()));
        let shown = err.to_string();
        let want = if expect.starts_with(':') {
            format!("{}{}", path.display(), expect)
        } else {
            format!("{}:{}", path.display(), expect)
        };
        assert!(
            shown.starts_with(want.trim_end()),
            "{}:\n  got:  {shown}\n  want: {want}…",
            path.display()
        );
    }
}

#[test]
fn every_valid_fixture_loads() {
    for path in fixtures("valid") {
        if let Err(e) = config::load(&path) {
            panic!("{} should load: {e}", path.display());
        }
    }
}

#[test]
fn the_article_block_means_what_salt_means() {
    let c = config::load(
        &fixtures("valid")
            .into_iter()
            .find(|p| p.ends_with("article.yaml"))
            .expect("article.yaml"),
    )
    .expect("loads");
    assert_eq!(c.masters().len(), 2);
    assert_eq!(
        c.masters()[0].host,
        Host::Ip("192.168.57.12".parse().unwrap())
    );
    assert_eq!(
        (c.masters()[1].publish_port, c.masters()[1].ret_port),
        (4505, 4506)
    );
    assert_eq!(c.master_type, MasterType::Failover);
    assert_eq!(c.alive_interval, Duration::from_secs(60));
    assert!(c.failback);
    assert_eq!(c.failback_interval, Duration::from_secs(30));
    assert_eq!(c.reauth_delay, Duration::from_secs(60));
    assert!(!c.shuffle);
    assert!(c.warnings.is_empty());
    // Sidecar defaults.
    assert_eq!(c.sidecar.listen_publish, "127.0.0.1:4505".parse().unwrap());
    assert_eq!(c.sidecar.listen_ret, "127.0.0.1:4506".parse().unwrap());
    assert_eq!(c.sidecar.admin, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.sidecar.probe, ProbeKind::Zmtp);
    assert_eq!((c.sidecar.rise, c.sidecar.fall), (2, 2));
    assert_eq!(c.sidecar.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.sidecar.drain_timeout, Duration::from_secs(60));
}

#[test]
fn every_entry_form_and_key_is_understood() {
    let c = config::load(
        &fixtures("valid")
            .into_iter()
            .find(|p| p.ends_with("full.yaml"))
            .expect("full.yaml"),
    )
    .expect("loads");
    let m: Vec<(String, u16, u16)> = c
        .masters()
        .iter()
        .map(|m| (m.host.to_string(), m.publish_port, m.ret_port))
        .collect();
    assert_eq!(
        m,
        vec![
            ("salt-a.example.net".into(), 4505, 4506),
            ("salt-b.example.net".into(), 4505, 14506),
            ("[2001:db8::5]".into(), 4505, 4506),
            ("salt-c.example.net".into(), 5505, 5506),
        ]
    );
    assert_eq!(c.masters()[1].label, "salt-b.example.net:14506");
    assert_eq!(c.masters()[3].label, "salt-c.example.net:5506/5505");
    assert!(c.shuffle, "random_master is an alias of master_shuffle");
    assert_eq!(c.minion_id, "web-01");
    assert_eq!(c.sidecar.listen_publish, "127.0.0.1:14505".parse().unwrap());
    assert_eq!(
        c.sidecar.listen_ret,
        "127.0.0.1:4506".parse().unwrap(),
        "listen_ret defaults to <listen>:<master_port>"
    );
    assert_eq!((c.sidecar.rise, c.sidecar.fall), (3, 1));
    assert_eq!(c.sidecar.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.sidecar.drain_timeout, Duration::from_secs(120));
    assert_eq!(
        c.masters().iter().map(|m| m.id).collect::<Vec<_>>(),
        (0..4).map(MasterId).collect::<Vec<_>>()
    );
}

#[test]
fn a_single_string_master_and_transport_tcp() {
    let c = config::load(
        &fixtures("valid")
            .into_iter()
            .find(|p| p.ends_with("single-string.yaml"))
            .expect("fixture"),
    )
    .expect("loads");
    assert_eq!(c.masters().len(), 1);
    assert_eq!(c.masters()[0].host, Host::Name("salt.example.net".into()));
    assert_eq!(
        c.sidecar.probe,
        ProbeKind::Ping,
        "transport: tcp picks the ping probe"
    );
}

/// `sidecar.master_srv` instead of `master:`: no masters in the file, the
/// record's name (lower case, no trailing dot) and the publish port every
/// target gets; failover without a note; `check-config` names the record.
#[test]
fn an_srv_record_instead_of_a_master_list() {
    let path = fixtures("valid")
        .into_iter()
        .find(|p| p.ends_with("srv.yaml"))
        .expect("fixture");
    let c = config::load(&path).expect("loads");
    assert!(c.masters().is_empty(), "{:?}", c.masters());
    assert_eq!(
        c.srv(),
        Some(&config::SrvSource {
            name: "_salt._tcp.example.net".into(),
            publish_port: 4505,
        })
    );
    assert_eq!(c.master_type, MasterType::Failover);
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    let out = sidecar()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the targets of the SRV record _salt._tcp.example.net (publish port 4505, ret port from each record)"),
        "{stdout}"
    );
    // Neither: the error says both ways to name the masters.
    let e = config::parse(Path::new("n.yaml"), "id: x\n").expect_err("no masters");
    assert!(e.to_string().contains("`sidecar.master_srv`"), "{e}");
}

#[test]
fn missing_alive_interval_defaults_with_a_warning_never_no_checks() {
    let c = config::parse(Path::new("m.yaml"), "master: [a, b]\n").expect("loads");
    assert_eq!(c.alive_interval, config::DEFAULT_ALIVE_INTERVAL);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("master_alive_interval")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.notes.iter().any(|n| n.contains("failover")),
        "a list without master_type is logged as failover"
    );
}

#[test]
fn a_truly_empty_file_says_so() {
    let e = config::parse(Path::new("e.yaml"), "  \n").expect_err("empty");
    assert_eq!(
        e.to_string(),
        "e.yaml: master: the file is empty; at least `master:` is required"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = config::load(Path::new("/nonexistent/salt-sidecar.yaml")).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/salt-sidecar.yaml: cannot read config file"),
        "{e}"
    );
}

#[test]
fn hostile_input_never_panics() {
    let samples = [
        "master: &a [*a]",
        "master: !!binary aGVsbG8=",
        "master:\n  - {host: [1, 2]}",
        "master: [\"[::1\"]",
        "master: [\"[::1]x\"]",
        "master: [\"host:\"]",
        "master: [\":\"]",
        "master: [\"-bad\"]",
        "master: [a]\nsidecar: 5",
        "master: [a]\nsidecar:\n  connect_timeout: -3",
        "master: [a]\nsidecar:\n  connect_timeout: 1e400",
        "master: [a]\nsidecar:\n  drain_timeout: 99999999999999999999d",
        "\u{feff}master: [a]",
        "---\n...\n---\n",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    for s in samples {
        let _ = config::parse(Path::new("h.yaml"), s);
    }
}

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_salt-sidecar"))
}

#[test]
fn check_config_exit_codes_and_messages() {
    let ok = fixtures("valid")
        .into_iter()
        .find(|p| p.ends_with("article.yaml"))
        .expect("fixture");
    let out = sidecar()
        .args(["check-config", "--config"])
        .arg(&ok)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": ok") && stdout.contains("192.168.57.12"),
        "{stdout}"
    );

    let bad = fixtures("invalid")
        .into_iter()
        .find(|p| p.ends_with("hot-multimaster.yaml"))
        .expect("fixture");
    let out = sidecar()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG, as `run` exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hot-multimaster.yaml:5:14: master_type:") && stderr.contains("failover"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_an_invalid_config_with_exit_78() {
    let bad = fixtures("invalid")
        .into_iter()
        .find(|p| p.ends_with("unknown-key.yaml"))
        .expect("fixture");
    let out = sidecar()
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("master_alive_intervall"));
}

#[test]
fn help_explains_every_subcommand() {
    let out = sidecar().arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "run",
        "check-config",
        "convert-minion-config",
        "status",
        "enroll",
        "demo",
        "failover",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
    let c = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    // `salt-sidecar check-config ... | head -1`: the reader goes away early.
    let ok = fixtures("valid")
        .into_iter()
        .find(|p| p.ends_with("full.yaml"))
        .expect("fixture");
    let mut child = sidecar()
        .args(["check-config", "--config"])
        .arg(&ok)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{out:?}");
}

/// `convert-minion-config`: the article's minion config in, a sidecar config
/// on stdout that `check-config` accepts as is, the minion change on stderr.
#[test]
fn convert_minion_config_prints_a_config_that_loads_and_the_minion_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let minion = dir.path().join("minion");
    std::fs::write(
        &minion,
        "master:\n  - 192.168.57.12\n  - 192.168.57.13\nmaster_type: failover\n\
         master_alive_interval: 60\nmaster_failback: True\nmaster_failback_interval: 30\n\
         random_reauth_delay: 60\nlog_level: warning\n",
    )
    .expect("write");
    // Salt keeps the minion's id next to its config when `id:` is not set.
    std::fs::write(dir.path().join("minion_id"), "web-01\n").expect("write");
    let out = sidecar()
        .arg("convert-minion-config")
        .arg(&minion)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("minion change: ")
            && stderr.contains("set `master: 127.0.0.1` and `master_alive_interval: 60`")
            && stderr.contains("; remove master_type, master_failback, master_failback_interval;"),
        "{stderr}"
    );

    let converted = dir.path().join("config.yaml");
    std::fs::write(&converted, &out.stdout).expect("write");
    let cfg = config::load(&converted).unwrap_or_else(|e| panic!("{e}"));
    let labels: Vec<&str> = cfg.masters().iter().map(|m| m.label.as_str()).collect();
    assert_eq!(labels, ["192.168.57.12", "192.168.57.13"]);
    assert_eq!(cfg.minion_id, "web-01");
    assert_eq!(cfg.alive_interval, Duration::from_secs(60));
    assert!(cfg.failback);
    let out = sidecar()
        .args(["check-config", "--config"])
        .arg(&converted)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");

    // -o writes the same config, readable by the unit's DynamicUser.
    let written = dir.path().join("etc-sidecar.yaml");
    let out = sidecar()
        .arg("convert-minion-config")
        .arg(&minion)
        .arg("-o")
        .arg(&written)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&written).expect("written"),
        std::fs::read_to_string(&converted).expect("converted")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&written)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);

    // A minion config the sidecar cannot serve: exit 1, the minion's line,
    // and the config written before is left as it was.
    std::fs::write(&minion, "master: a.example\ntransport: ws\n").expect("write");
    let before = std::fs::read_to_string(&written).expect("written");
    let out = sidecar()
        .arg("convert-minion-config")
        .arg(&minion)
        .arg("--output")
        .arg(&written)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(&written).expect("kept"), before);
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        4,
        "a temporary file was left behind"
    );
    let out = sidecar()
        .arg("convert-minion-config")
        .arg(&minion)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "printed a config on error: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", minion.display())) && stderr.contains("transport"),
        "{stderr}"
    );
}

/// `sidecar.ret_answer_timeout`: one alive interval by default, at least
/// 1 s with `transport: tcp` and 10 s with ZeroMQ's `probe: zmtp` (the
/// default); off by default with `probe: tcp` on ZeroMQ (bytes not
/// followed); as written when given, off with `0`.
#[test]
fn the_ret_answer_timeout_defaults_to_one_alive_interval_unless_only_connects_are_checked() {
    let parse = |text: &str| config::parse(Path::new("t.yaml"), text).expect("valid");
    let tcp = "master: [a, b]\ntransport: tcp\n";
    let with = |extra: &str| parse(&format!("{tcp}{extra}")).sidecar.ret_answer_timeout;
    assert_eq!(
        with("master_alive_interval: 5\n"),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        with(""),
        Some(Duration::from_secs(30)),
        "Salt's alive default"
    );
    assert_eq!(
        with("sidecar:\n  ret_answer_timeout: 1500ms\n"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(with("sidecar:\n  ret_answer_timeout: 0\n"), None);
    let c = parse("master: [a, b]\nmaster_alive_interval: 5\n");
    assert_eq!(
        c.sidecar.ret_answer_timeout,
        Some(Duration::from_secs(10)),
        "transport zeromq, probe zmtp: on, at least 10 s"
    );
    let c = parse("master: [a, b]\n");
    assert_eq!(
        c.sidecar.ret_answer_timeout,
        Some(Duration::from_secs(30)),
        "zeromq: Salt's alive default"
    );
    let c = parse("master: [a, b]\nmaster_alive_interval: 5\nsidecar:\n  probe: tcp\n");
    assert_eq!(
        c.sidecar.ret_answer_timeout, None,
        "zeromq with plain connect checks: off unless set"
    );
    let c = parse("master: [a, b]\nsidecar:\n  ret_answer_timeout: 2s\n");
    assert_eq!(
        c.sidecar.ret_answer_timeout,
        Some(Duration::from_secs(2)),
        "zeromq, set"
    );
    assert_eq!(
        with("master_alive_interval: 1\n"),
        Some(Duration::from_secs(1)),
        "tcp: at least 1 s"
    );
    let c = parse("master: [a, b]\nsidecar:\n  ret_answer_timeout: 0\n");
    assert_eq!(c.sidecar.ret_answer_timeout, None, "zeromq, off");
    let c = parse(&format!("{tcp}sidecar:\n  probe: tcp\n"));
    assert_eq!(
        (c.sidecar.probe, c.sidecar.ret_answer_timeout),
        (ProbeKind::Tcp, Some(Duration::from_secs(30))),
        "a plain connect probe still gets the passive check"
    );
}
