//! Network namespaces for the tests that need more than loopback: faults on
//! links (tests/chaos.rs), a resolv.conf or /etc/hosts of their own
//! (tests/dns.rs, tests/ops.rs). Needs root; every namespace and file made
//! here is removed on drop, and nothing inside can reach the host's network.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The one skip policy for what needs root: true as root; otherwise a
/// failure naming `needs`, unless `SALT_SIDECAR_SKIP_ROOT=1` is set, in
/// which case the skip of `test` is recorded for the test command's summary
/// and false returned (the caller returns: nothing was tested, and the
/// summary says so).
pub fn root_or_skip(test: &str, needs: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("SALT_SIDECAR_SKIP_ROOT").as_deref() == Ok("1"),
        "{test}: needs root ({needs}); run as root, or set SALT_SIDECAR_SKIP_ROOT=1 to skip it (reported in the summary)"
    );
    super::skip(&format!(
        "SKIPPED {test}: not root (SALT_SIDECAR_SKIP_ROOT=1)"
    ));
    false
}

/// Root, or else a failure — unless `SALT_SIDECAR_SKIP_ROOT=1` says to
/// skip what needs root: then the skip is recorded for the summary
/// (`super::skip`) and false returned. A missing tool is a failure
/// (scripts/test-deps installs `ip`, `nft` and `ss`).
pub fn available(test: &str, tools: &[&str]) -> bool {
    if !root_or_skip(test, "network namespaces (ip netns)") {
        return false;
    }
    for tool in tools {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "{test}: `{tool}` is required (scripts/test-deps installs it)"
        );
    }
    true
}

/// Runs a command; panics with its output if it fails; returns its stdout.
pub fn run(args: &[&str]) -> String {
    run_with_input(args, None)
}

/// [`run`] with `input` on its stdin.
pub fn run_with_input(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace this test created (loopback up); deleted on drop,
/// with its `/etc/netns/<name>` files.
pub struct Netns {
    pub name: String,
    etc: Option<PathBuf>,
}

impl Netns {
    /// Creates `name`, replacing one a killed earlier run left behind.
    pub fn create(name: String) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name, etc: None };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Files that processes started by [`Netns::command`] see in `/etc`
    /// (`ip netns exec` bind-mounts `/etc/netns/<name>/*` over them), e.g.
    /// `resolv.conf` and `hosts`.
    pub fn with_etc(mut self, files: &[(&str, &str)]) -> Netns {
        let etc = PathBuf::from(format!("/etc/netns/{}", self.name));
        std::fs::create_dir_all(&etc).expect("mkdir /etc/netns/<ns>");
        for (file, text) in files {
            std::fs::write(etc.join(file), text).expect("write /etc/netns/<ns>/<file>");
        }
        self.etc = Some(etc);
        self
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// `program` to run inside the namespace, with its `/etc` files.
    /// `ip netns exec` execs, so the child's PID is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a command inside the namespace; returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Loads an nftables script inside the namespace.
    pub fn nft(&self, script: &str) {
        run_with_input(
            &["ip", "netns", "exec", &self.name, "nft", "-f", "-"],
            Some(script),
        );
    }

    /// Runs `body` on a thread inside the namespace: the sockets it opens,
    /// and the threads and processes it starts, live there.
    pub fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            let t = s.spawn(move || {
                enter(&path);
                body()
            });
            t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// [`Netns::run`] with a two-thread tokio runtime (its workers are
    /// started inside, so they live there too).
    pub fn block_on<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        self.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(body())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(etc) = &self.etc {
            let _ = std::fs::remove_dir_all(etc);
            // /etc/netns itself, if no other namespace uses it (fails otherwise).
            if let Some(parent) = etc.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the namespace at `path` (sockets it opens
/// from then on, and threads and processes it starts, live there).
pub fn enter(path: &PathBuf) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: setns on a valid, open namespace fd; it changes only the
    // calling thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}
