//! Packages: `scripts/package` builds a .deb and an .rpm of the static
//! binary. Their file lists are checked against the manifest the script
//! writes (its one file list), lintian must find no error, the maintainer
//! scripts are those of a Debian package with a service and its socket
//! (dh_installsystemd's) and the RPM macros' equivalents, and the .deb is
//! installed on this machine (root only, skipped otherwise; systemd is not
//! running here): `dpkg -L`, the installed units under `systemd-analyze
//! verify`, both units enabled and nothing started, an upgrade that keeps
//! the admin's edit of the conffile, `dpkg -r` and `dpkg -P` leaving nothing
//! behind. tests/nspawn.rs installs, restarts, upgrades and removes it under
//! a real systemd.
//!
//! The static binary comes from `support::static_binary()` (built once per
//! run into `<target>/static`, shared with tests/ops.rs), and the man-page
//! generator is built in the same directory.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::CommandFactory;
use support::cmd::{output, repo, run, text};

const NAME: &str = "salt-sidecar";
const CONFIG: &str = "/etc/salt-sidecar/config.yaml";
const UNIT: &str = "/usr/lib/systemd/system/salt-sidecar.service";
const SOCKET_UNIT: &str = "/usr/lib/systemd/system/salt-sidecar.socket";

// === the packages and their manifest ===

/// One line of the manifest: `<file|dir> <mode> <path> <flags>`.
#[derive(Debug)]
struct Entry {
    dir: bool,
    mode: u32,
    path: String,
    flags: Vec<String>,
}

impl Entry {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
    manifest: Vec<Entry>,
    _dir: tempfile::TempDir,
}

/// Runs `scripts/package --revision N` into a temp dir.
fn package(revision: u32) -> Packages {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let stdout = run(Command::new(repo().join("scripts/package"))
        .arg("--out")
        .arg(dir.path())
        .args(["--revision", &revision.to_string()])
        .arg("--bin")
        .arg(support::static_binary())
        .env("CARGO_TARGET_DIR", support::static_target_dir()));
    eprintln!(
        "scripts/package --revision {revision}: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let paths: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    let [deb, rpm, manifest] = &paths[..] else {
        panic!("scripts/package printed {stdout:?}, not the .deb, the .rpm and the manifest")
    };
    let version = format!("{}-{revision}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        deb.file_name().unwrap().to_str(),
        Some(format!("{NAME}_{version}_amd64.deb").as_str())
    );
    assert_eq!(
        rpm.file_name().unwrap().to_str(),
        Some(format!("{NAME}-{version}.x86_64.rpm").as_str())
    );
    let manifest = std::fs::read_to_string(manifest)
        .expect("read the manifest")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [kind, mode, path, flags] = f[..] else {
                panic!("manifest line {line:?}")
            };
            assert!(kind == "file" || kind == "dir", "{line}");
            Entry {
                dir: kind == "dir",
                mode: u32::from_str_radix(mode, 8).expect("an octal mode"),
                path: path.to_string(),
                flags: flags.split(',').map(str::to_string).collect(),
            }
        })
        .collect();
    Packages {
        deb: deb.clone(),
        rpm: rpm.clone(),
        manifest,
        _dir: dir,
    }
}

impl Packages {
    fn paths(&self, pkg: &str) -> BTreeSet<String> {
        self.manifest
            .iter()
            .filter(|e| e.has(pkg))
            .map(|e| e.path.clone())
            .collect()
    }

    fn conffiles(&self) -> BTreeSet<String> {
        self.manifest
            .iter()
            .filter(|e| e.has("conffile"))
            .map(|e| e.path.clone())
            .collect()
    }

    /// What `dpkg -L` lists: the .deb's paths and every directory above them.
    fn dpkg_list(&self) -> BTreeSet<String> {
        let mut all = BTreeSet::from(["/.".to_string()]);
        for path in self.paths("deb") {
            let mut p = Path::new(&path);
            while let Some(parent) = p.parent().filter(|p| *p != Path::new("/")) {
                all.insert(parent.to_str().unwrap().to_string());
                p = parent;
            }
            all.insert(path);
        }
        all
    }
}

fn lines(s: &str) -> BTreeSet<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The man pages the shipped CLI calls for: one for the command, one per
/// subcommand (this test is built with `demo`; the packaged binary is not).
fn expected_man_pages() -> BTreeSet<String> {
    let cli = salt_sidecar::cli::Cli::command();
    std::iter::once(format!("/usr/share/man/man1/{NAME}.1.gz"))
        .chain(
            cli.get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "demo")
                .map(|s| format!("/usr/share/man/man1/{NAME}-{}.1.gz", s.get_name())),
        )
        .collect()
}

/// Asserts `script` contains every one of `lines` (trimmed), in order.
fn assert_lines_in_order(script: &str, lines: &[&str], what: &str) {
    let mut rest = script.lines().map(str::trim);
    for want in lines {
        assert!(
            rest.any(|l| l == *want),
            "{what}: no line {want:?} (in this order) in:\n{script}"
        );
    }
}

/// The maintainer scripts: dh_installsystemd's for the service and its
/// socket (enable on install, keep an admin's disable, stop on remove,
/// purge the links), but an upgrade restarts the service alone.
fn assert_debian_lifecycle(postinst: &str, prerm: &str, postrm: &str) {
    assert_lines_in_order(
        postinst,
        &[
            "for unit in salt-sidecar.socket salt-sidecar.service; do",
            "deb-systemd-helper unmask \"$unit\" >/dev/null || true",
            "if deb-systemd-helper --quiet was-enabled \"$unit\"; then",
            "deb-systemd-helper enable \"$unit\" >/dev/null || true",
            "deb-systemd-helper update-state \"$unit\" >/dev/null || true",
            "if [ -d /run/systemd/system ]; then",
            "systemctl --system daemon-reload >/dev/null || true",
            "deb-systemd-invoke try-restart salt-sidecar.service >/dev/null || true",
            "deb-systemd-invoke start salt-sidecar.socket salt-sidecar.service >/dev/null || true",
        ],
        "postinst",
    );
    assert!(
        !postinst.contains("restart salt-sidecar.socket"),
        "an upgrade must not restart the socket (its listeners):\n{postinst}"
    );
    assert_lines_in_order(
        prerm,
        &[
            "if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then",
            "deb-systemd-invoke stop salt-sidecar.socket salt-sidecar.service >/dev/null || true",
        ],
        "prerm",
    );
    assert_lines_in_order(
        postrm,
        &[
            "deb-systemd-helper mask salt-sidecar.socket salt-sidecar.service >/dev/null || true",
            "if [ \"$1\" = purge ]; then",
            "deb-systemd-helper purge salt-sidecar.socket salt-sidecar.service >/dev/null || true",
            "deb-systemd-helper unmask salt-sidecar.socket salt-sidecar.service >/dev/null || true",
            "rm -rf /etc/salt-sidecar",
        ],
        "postrm",
    );
}

/// %systemd_post, %systemd_preun and %systemd_postun_with_restart, written
/// out; the upgrade restarts the service alone.
fn assert_rpm_lifecycle(scripts: &str) {
    assert_lines_in_order(
        scripts,
        &[
            "if [ $1 -eq 1 ]; then",
            "systemctl --no-reload preset salt-sidecar.socket salt-sidecar.service >/dev/null 2>&1 || :",
            "if [ $1 -eq 0 ]; then",
            "systemctl --no-reload disable --now salt-sidecar.socket salt-sidecar.service >/dev/null 2>&1 || :",
            "if [ $1 -ge 1 ]; then",
            "systemctl try-restart salt-sidecar.service >/dev/null 2>&1 || :",
        ],
        "the .rpm's scriptlets",
    );
}

#[test]
fn the_packages_hold_exactly_the_manifest_and_lintian_finds_no_error() {
    let pkgs = package(1);
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));

    // The manifest itself: the binary, the unit, the conffile, the docs, a
    // man page per command.
    let deb_paths = pkgs.paths("deb");
    for path in [
        "/usr/bin/salt-sidecar",
        UNIT,
        CONFIG,
        "/usr/share/doc/salt-sidecar/copyright",
        "/usr/share/doc/salt-sidecar/changelog.Debian.gz",
        "/usr/share/doc/salt-sidecar/README.md",
        "/usr/share/doc/salt-sidecar/changelog.gz",
        "/usr/share/doc/salt-sidecar/docs/install.md",
        "/usr/share/doc/salt-sidecar/docs/design.md",
    ] {
        assert!(deb_paths.contains(path), "{path} not in {deb_paths:?}");
    }
    let man: BTreeSet<String> = deb_paths
        .iter()
        .filter(|p| p.starts_with("/usr/share/man/"))
        .cloned()
        .collect();
    assert_eq!(man, expected_man_pages());
    assert_eq!(pkgs.conffiles(), BTreeSet::from([CONFIG.to_string()]));

    // lintian: no error.
    let started = Instant::now();
    let out = output(
        Command::new("lintian")
            .args(["--display-info", "--show-overrides"])
            .arg(&pkgs.deb),
    );
    let said = text(&out.stdout) + &text(&out.stderr);
    eprintln!("lintian ({:.1}s):\n{said}", started.elapsed().as_secs_f64());
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // Nor a warning: those that are on purpose are overridden, with the reason.
    let warnings: Vec<&str> = said.lines().filter(|l| l.starts_with("W:")).collect();
    assert!(
        warnings.is_empty(),
        "lintian warnings (fix, or override with a reason in scripts/package):\n{}",
        warnings.join("\n")
    );
    assert!(
        out.status.success(),
        "lintian exited {}:\n{said}",
        out.status
    );

    // The .deb: its contents, control fields, conffiles and scripts.
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&pkgs.deb));
    let contents: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| match p.trim_start_matches('.').trim_end_matches('/') {
            "" => "/.".to_string(),
            p => p.to_string(),
        })
        .collect();
    assert_eq!(contents, pkgs.dpkg_list(), "dpkg-deb --contents");
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not owned by root: {line}");
    }
    let field = |name: &str| {
        run(Command::new("dpkg-deb")
            .arg("--field")
            .arg(&pkgs.deb)
            .arg(name))
        .trim()
        .to_string()
    };
    assert_eq!(field("Package"), NAME);
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), "amd64");
    assert_eq!(field("Section"), "admin");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('@'));
    assert_eq!(field("Depends"), "", "a static binary depends on nothing");
    let description = field("Description");
    assert!(
        description.lines().count() > 3,
        "a long description: {description}"
    );
    let info = |member: &str| {
        run(Command::new("dpkg-deb")
            .arg("--info")
            .arg(&pkgs.deb)
            .arg(member))
    };
    assert_eq!(lines(&info("conffiles")), pkgs.conffiles());
    assert_debian_lifecycle(&info("postinst"), &info("prerm"), &info("postrm"));

    // The .rpm: the same files (less Debian's own metadata), the conffile as
    // %config(noreplace), the same scriptlets.
    let rpm_q = |flags: &[&str]| run(Command::new("rpm").arg("-qp").args(flags).arg(&pkgs.rpm));
    assert_eq!(lines(&rpm_q(&["-l"])), pkgs.paths("rpm"), "rpm -qlp");
    assert_eq!(lines(&rpm_q(&["-c"])), pkgs.conffiles(), "rpm -qcp");
    assert_eq!(
        rpm_q(&[
            "--queryformat",
            "%{NAME} %{VERSION}-%{RELEASE} %{ARCH} %{LICENSE}"
        ]),
        format!("{NAME} {version} x86_64 Apache-2.0")
    );
    let config_flags = rpm_q(&["--queryformat", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]);
    assert!(
        config_flags.contains(&format!("{CONFIG} cn")),
        "{CONFIG} is not %config(noreplace):\n{config_flags}"
    );
    let rpm_modes = rpm_q(&["--queryformat", "[%{FILENAMES} %{FILEMODES:perms}\n]"]);
    for e in pkgs.manifest.iter().filter(|e| e.has("rpm")) {
        let perms = rpm_modes
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{} ", e.path)))
            .unwrap_or_else(|| panic!("{} not in\n{rpm_modes}", e.path));
        let expected = if e.dir {
            "drwxr-xr-x"
        } else if e.mode == 0o755 {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(perms, expected, "{}", e.path);
    }
    assert_rpm_lifecycle(&rpm_q(&["--scripts"]));
    assert_eq!(
        rpm_q(&["--requires"])
            .lines()
            .filter(|l| !l.starts_with("rpmlib(") && l.trim() != "/bin/sh")
            .count(),
        0,
        "the .rpm requires nothing but a shell for its scriptlets"
    );
}

// === installing the .deb ===

/// Purges the package when dropped, so a failed test leaves nothing installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", NAME]).output();
    }
}

fn dpkg_status() -> Option<String> {
    let out = output(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${db:Status-Abbrev}${Version}",
        NAME,
    ]));
    out.status.success().then(|| text(&out.stdout))
}

fn dpkg(args: &[&str], deb: Option<&Path>) {
    let mut cmd = Command::new("dpkg");
    cmd.args(args);
    if let Some(deb) = deb {
        cmd.arg(deb);
    }
    run(cmd.env("DEBIAN_FRONTEND", "noninteractive"));
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

/// Runs a maintainer script in a mount namespace of its own where
/// `/run/systemd/system` exists (`running`) or not, with a `systemctl` that
/// only logs its arguments; returns what it logged.
fn systemctl_calls(script: &Path, args: &[&str], running: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("systemctl.log");
    let fake = dir.path().join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"systemctl $*\" >>{}\n", log.display()),
    )
    .expect("write the fake systemctl");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let setup = if running {
        "mount -t tmpfs salt-sidecar-test /run/systemd && mkdir /run/systemd/system"
    } else {
        "mount -t tmpfs salt-sidecar-test /run/systemd"
    };
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!(
            "{setup}; PATH={}:$PATH; export PATH; sh -e \"$0\" \"$@\"",
            dir.path().display()
        ))
        .arg(script)
        .args(args));
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// Every enablement link or mask of the units, one a line.
fn unit_links() -> String {
    run(Command::new("find").args(["/etc/systemd/system", "-name", "salt-sidecar*"]))
}

#[test]
fn the_deb_installs_upgrades_keeping_the_config_and_purges_to_nothing() {
    if !support::netns::root_or_skip("the .deb install test", "dpkg -i") {
        return;
    }
    assert_eq!(
        dpkg_status(),
        None,
        "{NAME} is installed on this machine; this test would remove it"
    );
    let v1 = package(1);
    let v2 = package(2);
    let version = env!("CARGO_PKG_VERSION");
    let _purge = Purge;

    // Install: exactly the manifest's files, with their modes; nothing enabled.
    dpkg(&["--install"], Some(&v1.deb));
    assert_eq!(
        dpkg_status().as_deref(),
        Some(format!("ii {version}-1").as_str())
    );
    let listed = lines(&run(Command::new("dpkg").args(["--listfiles", NAME])));
    assert_eq!(listed, v1.dpkg_list(), "dpkg -L");
    for e in &v1.manifest {
        let meta = std::fs::metadata(&e.path).unwrap_or_else(|err| panic!("{}: {err}", e.path));
        assert_eq!(meta.is_dir(), e.dir, "{}", e.path);
        assert_eq!(meta.permissions().mode() & 0o7777, e.mode, "{}", e.path);
    }
    // Both units enabled (deb-systemd-helper: systemd need not run), none started.
    assert_eq!(
        lines(&unit_links()),
        BTreeSet::from([
            "/etc/systemd/system/multi-user.target.wants/salt-sidecar.service".to_string(),
            "/etc/systemd/system/sockets.target.wants/salt-sidecar.socket".to_string(),
        ]),
        "the enablement links"
    );
    // (Other tests on this machine run their own salt-sidecar: look for the installed one.)
    let running = output(Command::new("pgrep").args(["-f", "^/usr/bin/salt-sidecar "]));
    assert!(
        !running.status.success(),
        "installing started a sidecar here: {}",
        text(&running.stdout)
    );

    // The installed units, as systemd would load them (the binary is in place).
    let out = output(Command::new("systemd-analyze").args(["verify", UNIT, SOCKET_UNIT]));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify {UNIT}:\n{said}"
    );
    assert_eq!(said, "", "systemd-analyze verify had something to say");
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    assert!(
        unit.contains(
            "\nExecStart=/usr/bin/salt-sidecar run --config /etc/salt-sidecar/config.yaml\n"
        ),
        "{unit}"
    );
    // The installed binary runs, and the installed config is valid.
    assert_eq!(
        run(Command::new("/usr/bin/salt-sidecar").arg("--version")).trim(),
        format!("{NAME} {version}")
    );
    run(Command::new("/usr/bin/salt-sidecar").args(["check-config", "--config", CONFIG]));
    run(Command::new("man").args(["-w", NAME]));

    // The admin's edit survives a reinstall and an upgrade.
    let edited = std::fs::read_to_string(CONFIG).expect("read the config")
        + "# edited by the admin (tests/package.rs)\n";
    std::fs::write(CONFIG, &edited).expect("edit the config");
    dpkg(&["--install"], Some(&v1.deb));
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        edited,
        "after a reinstall"
    );
    dpkg(&["--install"], Some(&v2.deb));
    assert_eq!(
        dpkg_status().as_deref(),
        Some(format!("ii {version}-2").as_str())
    );
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        edited,
        "after an upgrade"
    );
    assert!(
        !exists(&format!("{CONFIG}.dpkg-dist")),
        "a .dpkg-dist beside the config"
    );

    // Without systemd running, the maintainer scripts call no systemctl
    // (tests/nspawn.rs runs them under systemd).
    let info = Path::new("/var/lib/dpkg/info");
    for (script, args) in [
        ("postinst", &["configure", "0.0.0-1"][..]),
        ("postinst", &["configure"][..]),
        ("prerm", &["remove"][..]),
        ("postrm", &["remove"][..]),
    ] {
        let path = info.join(format!("{NAME}.{script}"));
        assert_eq!(
            systemctl_calls(&path, args, false),
            "",
            "{script} {args:?} without systemd"
        );
    }
    // (postrm remove masked the units: the reinstall's postinst unmasks them.)
    dpkg(&["--install"], Some(&v2.deb));

    // Remove: everything but the conffile and its directory.
    dpkg(&["--remove", NAME], None);
    assert_eq!(
        dpkg_status().as_deref(),
        Some(format!("rc {version}-2").as_str())
    );
    for e in v2.manifest.iter().filter(|e| e.has("deb")) {
        let kept = e.path == CONFIG || e.path == "/etc/salt-sidecar";
        assert_eq!(exists(&e.path), kept, "{} after dpkg -r", e.path);
    }
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        edited,
        "after dpkg -r"
    );

    // Purge: nothing left at all, no enablement link either.
    dpkg(&["--purge", NAME], None);
    assert_eq!(dpkg_status(), None, "dpkg still knows {NAME}");
    assert_eq!(unit_links(), "", "links left after dpkg -P");
    for e in &v2.manifest {
        assert!(!exists(&e.path), "{} after dpkg -P", e.path);
    }
}
