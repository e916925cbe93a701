//! Command-line interface: what each subcommand is and what it takes.
//!
//! Only argument definitions live here; `main` dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Transport-layer failover proxy for SaltStack minions.
///
/// Runs next to an unmodified salt-minion (which keeps `master: 127.0.0.1`),
/// listens on the master ports 4505/4506, health-checks your ordered list of
/// masters and forwards the minion's TCP sessions to one healthy master at a
/// time: failover, failback, shuffle and jittered reconnect, done once,
/// outside the minion.
#[derive(Debug, Parser)]
#[command(name = "salt-sidecar", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    /// RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar with a config file (see config/example.yaml).
    ///
    /// Exits 78 if the config is invalid (so systemd does not restart-loop),
    /// 1 if it cannot listen. SIGTERM/SIGINT stop accepting and drain open
    /// sessions for up to `sidecar.drain_timeout`.
    Run {
        /// Path of the YAML config file.
        #[arg(short, long, default_value = "/etc/salt-sidecar/config.yaml")]
        config: PathBuf,
    },
    /// Validate a config file and print what it means; exit 0 if valid, 1 if
    /// not (the error, with file, line and key, goes to stderr).
    CheckConfig {
        /// Path of the YAML config file.
        #[arg(short, long, default_value = "/etc/salt-sidecar/config.yaml")]
        config: PathBuf,
    },
    /// Turn a salt-minion config's failover block into a sidecar config.
    ///
    /// Reads the minion config (`master` list, `master_type`,
    /// `master_alive_interval`, `master_failback*`, `master_shuffle`,
    /// `publish_port`, `master_port`, `transport`, `id`, ...) and prints the
    /// sidecar config (already validated: it loads as is) on stdout, or
    /// writes it with `--output`; on stderr, the one change the minion
    /// needs: `master: 127.0.0.1`, and the keys to remove. Never touches the
    /// minion config. Typical use:
    ///
    ///   salt-sidecar convert-minion-config /etc/salt/minion -o /etc/salt-sidecar/config.yaml
    ///
    /// Exits 0 on success, 1 if the minion config cannot be read or converted
    /// (the error names the file, line and key) or the output cannot be
    /// written; on failure an existing output file is left as it was.
    ConvertMinionConfig {
        /// The minion config to read (its `minion_id` file next to it names
        /// the minion when there is no `id:`).
        #[arg(default_value = "/etc/salt/minion")]
        minion_config: PathBuf,
        /// Write the sidecar config to this file (mode 0644, replaced
        /// atomically, only once the conversion succeeded) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Show a running sidecar's masters: health, last probe, which one is
    /// active, pin/drain state and open sessions (from its `/status`).
    ///
    /// Exits 0 when the status was shown (whatever it says), 1 when the admin
    /// endpoint cannot be reached or answers something else.
    Status {
        /// The sidecar's admin socket (`sidecar.admin_socket`).
        #[arg(long, default_value = DEFAULT_ADMIN_SOCKET)]
        socket: PathBuf,
        /// Read the TCP endpoint (`sidecar.admin`, e.g. 127.0.0.1:9464)
        /// instead of the socket: for users who may not open the socket.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Print the raw JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the running sidecar's config file, and say whether it took it.
    ///
    /// Asks the sidecar over its admin socket (`POST /admin/reload`) and
    /// waits for the verdict. The sidecar validates the file it was started
    /// with exactly as at start-up: a valid file is applied live (health
    /// settings, timeouts, failback, the master list; sessions to masters
    /// that stay are not touched) and this command returns once it is in
    /// force; an invalid one is refused, the running config stays, and the
    /// error names the file, line and key. Changes that need new sockets
    /// (`sidecar.listen*`, `sidecar.admin*`, `max_sessions`, `master_srv`)
    /// are refused with that reason: restart to apply them.
    ///
    /// `systemctl reload salt-sidecar` runs it (the unit's `ExecReload=`), so
    /// a refused config makes `systemctl reload` fail. By hand:
    ///
    ///   salt-sidecar check-config && salt-sidecar reload
    ///
    /// Exits 0 when the new config is in force (stdout: what changed), 1 when
    /// it was refused (stderr: why), 2 when no verdict came (the sidecar is
    /// not running, the socket is elsewhere or not yours, or no answer
    /// within --timeout). Needs permission on the admin socket (root, the
    /// unit's own user, or `sidecar.admin_socket_group`).
    Reload {
        /// The sidecar's admin socket (`sidecar.admin_socket`).
        #[arg(long, default_value = DEFAULT_ADMIN_SOCKET)]
        socket: PathBuf,
        /// Give up waiting for the verdict after this long (e.g. 30s).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Get this minion's key accepted on every master, without stopping any.
    ///
    /// Talks to the running sidecar's admin API: pins the minion to each
    /// master in turn, prints `accept the key of <id> on <master>`, waits
    /// until that master has accepted it (a publish session that stays open
    /// and a sign-in reply on the ret port), moves on, and unpins at the end
    /// (also on Ctrl-C). Exits 0 only if every master accepted the minion.
    Enroll {
        /// The sidecar's admin socket (`sidecar.admin_socket`): enroll pins
        /// and unpins, which only the socket accepts.
        #[arg(long, default_value = DEFAULT_ADMIN_SOCKET)]
        socket: PathBuf,
        /// Give up on a master after this long (e.g. 90s, 5m).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        per_master_timeout: std::time::Duration,
        /// How long a publish session must stay open to count.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        settle: std::time::Duration,
    },
    /// Watch a failover live: starts two stand-in masters on loopback, the
    /// sidecar in front and a stand-in minion, kills the primary, brings it
    /// back, and narrates each step with timestamps. Needs nothing installed.
    /// (Only in builds with the `demo` feature: not in the packages.)
    #[cfg(feature = "demo")]
    Demo {
        /// Loopback address prefix for the demo (masters on .2 and .3 of it,
        /// the sidecar on .1 of it, ports 4505/4506).
        #[arg(long, default_value = "127.0.77")]
        net: String,
        /// Seconds between health checks in the demo.
        #[arg(long, default_value_t = 1)]
        alive_interval: u64,
    },
}

/// Default admin socket (`sidecar.admin_socket`), for `status`, `reload` and `enroll`.
pub const DEFAULT_ADMIN_SOCKET: &str = crate::config::DEFAULT_ADMIN_SOCKET;
