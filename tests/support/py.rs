//! Python helpers from the test venv (`tests/helpers/*.py`, the venv of
//! `scripts/test-deps`): the venv's python, a helper process whose stdout
//! lines are collected and which is killed by PID on drop, and the pyzmq
//! stand-in master (`zmq_master.py`: real libzmq PUB + ROUTER sockets).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{addr, Log};

/// The test venv's python (`SALT_SIDECAR_VENV`, default
/// /var/cache/salt-sidecar/venv); a missing venv fails the test, naming the
/// command that installs it.
pub fn python() -> PathBuf {
    let venv = std::env::var("SALT_SIDECAR_VENV")
        .unwrap_or_else(|_| "/var/cache/salt-sidecar/venv".into());
    let py = PathBuf::from(venv).join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run ./scripts/test-deps (or ./scripts/test) first",
        py.display()
    );
    py
}

/// `tests/helpers/<name>`.
pub fn helper(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(name)
}

/// A Python helper process; its stdout lines are collected in `out`.
/// Continued (if stopped) and killed by PID on drop.
pub struct Py {
    child: Child,
    pub out: Log,
}

impl Py {
    pub fn spawn(script: &str, args: &[String]) -> Py {
        let mut child = Command::new(python())
            .arg(helper(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
        let out = super::stdout_log(&mut child, "(python helper's stdout closed)");
        Py { child, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -SIG pid` (e.g. "-STOP", "-CONT").
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    }

    /// SIGKILL, as a crash; returns once the process is gone.
    pub fn sigkill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-CONT", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a [`zmq_master`] behaves.
#[derive(Clone, Debug)]
pub struct ZmqMaster<'a> {
    pub name: &'a str,
    pub publish: SocketAddr,
    pub ret: SocketAddr,
    /// Seconds between its `NAME:tick N` publications.
    pub tick: f64,
    /// Seconds each request waits before its answer, one after another (a
    /// master whose one worker is busy that long per request).
    pub answer_delay: f64,
    /// Prints `request PAYLOAD` for each request it receives (`Py::out`).
    pub log_requests: bool,
}

impl<'a> ZmqMaster<'a> {
    /// On 127.0.<net>.<host>:4505/4506, ticking every `tick` s, answering
    /// at once.
    pub fn on(name: &'a str, net: u8, host: u8, tick: f64) -> Self {
        ZmqMaster {
            name,
            publish: addr(net, host, 4505),
            ret: addr(net, host, 4506),
            tick,
            answer_delay: 0.0,
            log_requests: false,
        }
    }

    /// Started; returns once both sockets are bound.
    pub fn start(&self) -> Py {
        let mut args = vec![
            "--name".to_string(),
            self.name.to_string(),
            "--publish".to_string(),
            self.publish.to_string(),
            "--ret".to_string(),
            self.ret.to_string(),
            "--tick".to_string(),
            self.tick.to_string(),
            "--answer-delay".to_string(),
            self.answer_delay.to_string(),
        ];
        if self.log_requests {
            args.push("--log-requests".to_string());
        }
        let p = Py::spawn("zmq_master.py", &args);
        p.out.wait_for(&["ready"], Duration::from_secs(20));
        p
    }
}

/// A pyzmq stand-in master on 127.0.<net>.<host>:4505/4506 ticking every
/// `tick` s, answering at once; returns once it is ready.
pub fn zmq_master(name: &str, net: u8, host: u8, tick: f64) -> Py {
    ZmqMaster::on(name, net, host, tick).start()
}
