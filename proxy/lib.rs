//! salt-sidecar: a transport-layer failover proxy for SaltStack minions.
//!
//! The minion keeps `master: 127.0.0.1`; the sidecar listens on the master
//! ports, health-checks the configured masters and forwards every TCP session
//! byte for byte to the one master currently selected.
//!
//! # Layout
//!
//! The crate's source (`proxy/`) is in layers; each imports only the layers
//! below it (lower numbers), never one above, and `ops::app` is the only
//! place that wires and starts things:
//! 1. `config/`: the YAML file → a typed [`config::Config`], once: `load`
//!    (reading the file), `yaml` (no tags, no key twice), `raw` (serde,
//!    unknown keys rejected), `validate/` (one file per section: masters,
//!    Salt's other keys, listen, admin, health, sessions), `host`
//!    (this host's groups and addresses); the master vocabulary ([`master`]:
//!    `MasterId`, `MasterSpec`, `Port`, `Host`) and the live tunables
//!    (`settings`). Beside it, `clock.rs`: wall-clock time as Unix time
//!    (metrics, `/status`, the jitter seed).
//! 2. `metrics/` (the families; `labels`: one enum per label), `limits.rs`:
//!    the Prometheus families every layer updates, and the resource budgets (open files → a reserve and the
//!    session cap) with the sidecar's own exhaustion (EMFILE, ...), which is
//!    counted and never blamed on a master.
//! 3. `net.rs`: connecting to a master (timeouts, socket options, RST on
//!    close).
//! 4. `zmtp/`: the ZMTP 3.0 codec ([`zmtp`]`::codec`, pure), the health
//!    [`probe`] of one port, and `saltreq`, the little of Salt's tcp framing
//!    the `ping` probe needs.
//! 5. `control/`: which master is up and which is active: `select/` (the
//!    pure policy, [`select`]; `words`: its events and actions; `order`:
//!    preference, shuffle, jitter seed), [`hysteresis`], `health/` (one
//!    probe task per master; `judge` and `gate` are its pure core, `handle`
//!    what it shares, `verify` the check right before a switch), `evidence`
//!    (what the minion's live sessions say of a master: heard, ZMTP PING),
//!    `answers` (ret requests left unanswered),
//!    `resolve` (DNS), `srv` (the masters of an SRV record), `masters` (the
//!    plane: everything kept per master), `sessions` (the per-master reset
//!    and drain tokens), `supervisor` (drives `select` and carries out its
//!    actions), `route` (the decision forwarding reads), `liveness` (ticks
//!    for the systemd watchdog).
//! 6. `data/`: the minion's sessions: `forward/` (accept, connect to the
//!    route's master, move a session on a switch, and `notice`: make a ZeroMQ
//!    minion notice a switch or every master down, for Salt's events),
//!    `admit` (who gets a slot when the session cap is full), `duplex/` (one
//!    session: `copy`, the two-way copy, its `buffer`s, and the policy of
//!    when it ends), `track` (the frame boundaries of a relayed ZMTP
//!    session) and `rejoin` (opening it on another master).
//! 7. `ops/`: [`app`] (the wiring), `reload` (a pure diff, then commands
//!    down), `admin/` (the HTTP routes: the read-only endpoints, the admin
//!    `commands`, the `report` of `/readyz` and `/status`), `listen` (serving them on TCP and
//!    the admin socket, within budgets), `api` (the `/status` schema),
//!    `systemd` (notify, watchdog, socket activation).
//! 8. `commands/`: the subcommands besides `run` ([`check`] for
//!    `check-config`, [`status`], [`reload`], [`enroll`], [`convert`] (a
//!    folder: reading the minion file, what each key becomes, writing the
//!    YAML), and with the `demo` cargo feature — on by
//!    default, left out by `scripts/build-static` — `demo/` and its stand-in
//!    master).
//!
//! `lib.rs` is the public surface, `main.rs` the binary, `cli.rs` its
//! command line.
//!
//! Around the crate:
//! - `config/`: the example config, the systemd units (service, socket), an
//!   example Prometheus scrape config;
//! - `deploy/salt/`: the Salt state that rolls it out (`salt-sidecar/`) and
//!   `pillar.example`;
//! - `examples/manpage.rs`: the man pages, generated from the CLI, for the
//!   packages;
//! - `docs/`: install, design (how failover works), operations, testing,
//!   reliability, performance, salt-versions, salt-semantics, fleet;
//! - `dashboards/`: the Grafana dashboard, the Prometheus alert rules and
//!   their promtool tests;
//! - `tests/`: integration tests (real sockets on loopback; `support/` the
//!   shared harness, `fixtures/`, `helpers/` the Python stand-ins, `salt/`
//!   the real-Salt lab harness and scenarios);
//! - `scripts/`: `test` (the one test command; `.ci/run` calls it),
//!   `test-deps` (idempotent installer), `build-static`, `package` (.deb and
//!   .rpm), `bench`, `soak`, `salt-e2e` (real Salt vs native failover vs
//!   HAProxy), `salt-venv` (other Salt releases), `salt-suite` (Salt's own
//!   multimaster scenario), `fleet` (N sidecars against real masters: master
//!   CPU, herds);
//! - `bench/`: `loadgen.c` (the benchmark client and upstream) and the
//!   published results.
//!
//! This crate's public surface is what `main.rs` and the integration tests
//! need; everything else is private.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
mod clock;
mod commands;
pub mod config;
mod control;
mod data;
mod limits;
mod metrics;
mod net;
mod ops;
pub mod zmtp;

#[cfg(feature = "demo")]
pub use commands::demo::{self, standin};
pub use commands::{check, convert, enroll, reload, status};
pub use config::master;
pub use control::{hysteresis, select, srv};
pub use limits::DEFAULT_MAX_SESSIONS;
pub use ops::api;
pub use ops::app;
pub use ops::listen;
pub use ops::reload::{ReloadError, Reloader};
pub use zmtp::probe;
