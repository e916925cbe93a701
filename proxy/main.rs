//! The `salt-sidecar` binary: parses the command line, sets up logging and
//! signals, and runs the chosen subcommand. All logic lives in the library.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use salt_sidecar::cli::{Cli, Command};
use salt_sidecar::{app, check, config, convert, enroll, reload, status};

/// Exit status for an invalid configuration (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => {
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("salt-sidecar: invalid configuration: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let rt = runtime();
            let code = rt.block_on(run(config));
            // Exit now: a cut drain leaves sessions (and maybe a config read
            // on a blocking thread) behind, which dropping would wait for.
            rt.shutdown_background();
            code
        }
        Command::ConvertMinionConfig {
            minion_config,
            output,
        } => convert_minion_config(&minion_config, output.as_deref()),
        Command::Status {
            socket,
            admin,
            json,
        } => {
            let addr = admin.map_or(status::AdminAddr::Socket(socket), status::AdminAddr::Tcp);
            runtime().block_on(show_status(addr, json))
        }
        Command::Enroll {
            socket,
            per_master_timeout,
            settle,
        } => {
            let opts = enroll::Options {
                admin: status::AdminAddr::Socket(socket),
                per_master_timeout,
                settle,
                poll: std::time::Duration::from_millis(500),
            };
            runtime().block_on(run_enroll(opts))
        }
        Command::Reload { socket, timeout } => {
            runtime().block_on(run_reload(status::AdminAddr::Socket(socket), timeout))
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            net,
            alive_interval,
        } => run_demo(&net, alive_interval),
    }
}

#[cfg(feature = "demo")]
fn run_demo(net: &str, alive_interval: u64) -> ExitCode {
    runtime().block_on(async {
        match salt_sidecar::demo::run(net, alive_interval).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// One thread for everything: the sidecar serves one minion (two ports, a
/// handful of sessions), so a current-thread runtime costs no worker thread
/// (its stack and malloc arena: RSS), no cross-thread wake-ups (latency,
/// conn/s; see `scripts/bench`). Nothing on it blocks: sockets and DNS are
/// async; a reload reads the config file, and `/metrics` is rendered, on
/// tokio's blocking threads (started on demand, one of each at a time).
fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salt-sidecar: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// `salt-sidecar reload`: 0 in force, 1 refused, 2 no verdict.
async fn run_reload(socket: status::AdminAddr, timeout: std::time::Duration) -> ExitCode {
    match reload::reload(&socket, timeout).await {
        Ok(reload::Verdict::Reloaded(summary)) => {
            emit(&format!("salt-sidecar reload: {summary}\n"));
            ExitCode::SUCCESS
        }
        Ok(reload::Verdict::Refused(why)) => {
            eprintln!("salt-sidecar reload: refused: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("salt-sidecar reload: no verdict: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_enroll(opts: enroll::Options) -> ExitCode {
    let mut say = |line: &str| emit(&format!("{line}\n"));
    let result = tokio::select! {
        r = enroll::run(&opts, &mut say) => r,
        _ = tokio::signal::ctrl_c() => {
            let unpinned = enroll::unpin(&opts.admin).await;
            eprintln!("salt-sidecar enroll: interrupted; {}", match unpinned {
                Ok(()) => "unpinned".to_string(),
                Err(e) => format!("could not unpin ({e}): run `curl --unix-socket {} -X POST http://localhost/admin/unpin`", opts.admin),
            });
            return ExitCode::from(130);
        }
    };
    match result {
        Ok(outcome) if outcome.all_accepted() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("salt-sidecar enroll: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes command output to stdout; a closed pipe (`| head`) just ends it.
fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

fn convert_minion_config(path: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
    match convert::convert_minion_config(path) {
        Ok(c) => {
            match output {
                None => emit(&c.sidecar_yaml),
                Some(out) => {
                    if let Err(e) = write_atomically(out, &c.sidecar_yaml) {
                        eprintln!(
                            "salt-sidecar convert-minion-config: cannot write {}: {e}",
                            out.display()
                        );
                        return ExitCode::FAILURE;
                    }
                    eprintln!("wrote {}", out.display());
                }
            }
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!("minion change: {}", c.minion_change);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("salt-sidecar convert-minion-config: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to `path` through a temporary file in the same directory
/// and a rename, so `path` is either what it was or the whole new text.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            // 0644 whatever the umask: the unit runs as a DynamicUser.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `check-config`: warnings, then the summary (exit 0) or why `run` would
/// refuse the config (exit 78, as `run`).
fn check_config(path: &std::path::Path) -> ExitCode {
    let report = check::check_config(path);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    match report.verdict {
        Ok(summary) => {
            emit(&summary);
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn show_status(admin: status::AdminAddr, json: bool) -> ExitCode {
    match status::fetch(&admin, std::time::Duration::from_secs(5)).await {
        Ok((report, raw)) => {
            if json {
                emit(&raw);
            } else {
                emit(&status::render_table(&report, &admin));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("salt-sidecar status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status when a second SIGTERM or SIGINT cut the drain short: 128 +
/// the signal's number, as a shell reports a process that signal ended
/// (143 for SIGTERM, 130 for SIGINT). A drain that ends, even at
/// `drain_timeout`, exits 0.
const fn cut_status(signal: i32) -> u8 {
    (128 + signal) as u8
}

async fn run(config: config::Config) -> ExitCode {
    // Handlers first: a SIGHUP (say `systemctl reload`) that arrives while
    // the sidecar starts must not kill it with the default action.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let token = CancellationToken::new();
    let running = match app::start(&config, token.clone()).await {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return if e.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let cut = signals.run(token, running.reloader.clone());
    let socket = running.admin_socket.clone();
    tokio::select! {
        // A drain that hit its timeout is logged by `wait`; stopping is
        // still a success.
        _ = running.wait() => ExitCode::SUCCESS,
        signal = cut => {
            warn!(signal, "second stop signal: drain cut short, exiting now (open sessions are closed)");
            // What the admin endpoint would have removed after the drain.
            let _ = std::fs::remove_file(&socket);
            ExitCode::from(cut_status(signal))
        }
    }
}

/// The signals `run` handles; installed before anything starts.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// SIGHUP: reload the config file (in a task of its own, so a slow
    /// reload never delays a stop; SIGHUPs during a reload make one more).
    /// The first SIGTERM / SIGINT: drain (cancel `token`). The second:
    /// returns its number, and `run` exits without waiting for the drain.
    async fn run(
        mut self,
        token: CancellationToken,
        reloader: std::sync::Arc<salt_sidecar::Reloader>,
    ) -> i32 {
        let wanted = std::sync::Arc::new(tokio::sync::Notify::new());
        tokio::spawn(reload_on_demand(reloader, wanted.clone(), token.clone()));
        loop {
            tokio::select! {
                _ = self.term.recv() => { info!("SIGTERM: draining sessions, then exiting (send it again to stop at once)"); break }
                _ = self.int.recv() => { info!("SIGINT: draining sessions, then exiting (send it again to stop at once)"); break }
                _ = self.hup.recv() => wanted.notify_one(),
            }
        }
        token.cancel();
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}

/// Reloads once per `wanted` notification until `token` ends (the outcome
/// is logged by the reloader).
async fn reload_on_demand(
    reloader: std::sync::Arc<salt_sidecar::Reloader>,
    wanted: std::sync::Arc<tokio::sync::Notify>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = wanted.notified() => {}
        }
        info!("SIGHUP: reloading the config");
        let _ = reloader.reload().await;
    }
}
