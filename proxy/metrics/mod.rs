//! Layer 2: the Prometheus families of SPEC §4, registered once at start-up.
//! Every layer above updates them; this module imports only `config` (the
//! `reason` labels of `switches_total` are handed in by the app).
//!
//! One [`Metrics`] struct is built from the master list and shared as `Arc`;
//! every labelled series is created up front so dashboards never show "no
//! data" (families stay linear in the masters: no label set of pairs).
//! Label values come from enums (`Port`, `CheckResult`, ...). The data path
//! resolves its counters once per session ([`SessionCounters`]) and then only
//! does atomic adds. Serving `/metrics` is the admin module's job.

use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::master::{MasterSpec, Port};
use crate::config::Transport;
use crate::limits::ResourceErrors;

mod labels;

pub use labels::*;

/// Every family, by name without the `salt_sidecar_` prefix.
pub struct Metrics {
    pub registry: Registry,
    /// The `reason` label values of `switches_total` (the policy's words).
    switch_reasons: Vec<&'static str>,
    /// One `/metrics` rendering at a time, on a blocking thread.
    rendering: tokio::sync::Mutex<()>,
    pub master_up: IntGaugeVec,
    pub master_active: IntGaugeVec,
    pub health_checks_total: IntCounterVec,
    pub health_check_duration_seconds: HistogramVec,
    /// Every check of a master by what it cost it (`Evidence`) and result.
    pub health_evidence_total: IntCounterVec,
    /// By the master switched to and reason; `switches_from_total` by the
    /// master left. Two families linear in the masters, not one of every
    /// pair (which grew with masters² × reasons: 3.4 GB at 1,000 masters).
    pub switches_total: IntCounterVec,
    pub switches_from_total: IntCounterVec,
    pub sessions_active: IntGaugeVec,
    pub sessions_total: IntCounterVec,
    pub bytes_total: IntCounterVec,
    pub session_moves_total: IntCounterVec,
    pub minion_reconnects_asked_total: IntCounterVec,
    pub sign_ins_paced_total: IntCounterVec,
    pub sign_in_pace_asks_total: IntCounterVec,
    pub sign_ins_held_stale_total: IntCounterVec,
    pub sign_in_pace_wait_seconds: Histogram,
    pub passive_suspicions_total: IntCounterVec,
    pub pings_deferred_total: IntCounterVec,
    pub upstream_connect_duration_seconds: HistogramVec,
    pub upstream_connect_errors_total: IntCounterVec,
    pub dns_resolutions_total: IntCounterVec,
    pub srv_lookups_total: IntCounterVec,
    pub build_info: IntGaugeVec,
    pub last_switch_timestamp_seconds: Gauge,
    /// 1 while a graceful switch still sends new connections to the master
    /// it is leaving (`control::supervisor`, lingering).
    pub graceful_switch_waiting: IntGauge,
    /// The sidecar's own exhaustion (`resource_errors_total{op,kind}`) and
    /// connections refused over a cap (`connections_refused_total`).
    pub resources: ResourceErrors,
}

/// The counters one proxied session touches, resolved once.
#[derive(Clone)]
pub struct SessionCounters {
    pub to_master: IntCounter,
    pub to_minion: IntCounter,
    pub active: IntGauge,
}

/// Pacing waits: from "at once" to a long `random_reauth_delay`.
const PACE_BUCKETS: &[f64] = &[0.05, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// === impl Metrics ===

impl Metrics {
    /// `switch_reasons`: every `reason` a switch is counted with, so its
    /// series exist from the start.
    pub fn new(
        masters: &[MasterSpec],
        switch_reasons: &[&'static str],
    ) -> prometheus::Result<Arc<Self>> {
        let registry = Registry::new_custom(Some("salt_sidecar".into()), None)?;
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<HistogramVec> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let last_switch = Gauge::new(
            "last_switch_timestamp_seconds",
            "Unix time of the last switch of the active master (0: none since start).",
        )?;
        registry.register(Box::new(last_switch.clone()))?;
        let switch_waiting = IntGauge::new(
            "graceful_switch_waiting",
            "1 while a graceful switch (failback, drain, reload) still sends new minion connections to the master it is leaving, until that master's sessions are idle and have moved (at most sidecar.drain_timeout); 0 otherwise.",
        )?;
        registry.register(Box::new(switch_waiting.clone()))?;

        let m = Metrics {
            switch_reasons: switch_reasons.to_vec(),
            rendering: tokio::sync::Mutex::new(()),
            master_up: gauge(
                "master_up",
                "1 if the master passes its health checks (both ports).",
                &["master"],
            )?,
            master_active: gauge(
                "master_active",
                "1 for the master the minion is routed to.",
                &["master"],
            )?,
            health_checks_total: counter(
                "health_checks_total",
                "Health probes by master, port and result (ok or why not).",
                &["master", "port", "result"],
            )?,
            health_check_duration_seconds: histogram(
                "health_check_duration_seconds",
                "Duration of health probes.",
                &["master", "port"],
            )?,
            health_evidence_total: counter(
                "health_evidence_total",
                "Health checks of a master by port, by what they cost the master (kind: passive, \
                 heard on a live minion session lately, no check; ping, a ZMTP PING on a live \
                 minion session; turn, not checked this round because its other port got the \
                 PING, the ports taking turns while both answer; probe, a probe connection, as \
                 in health_checks_total; on_demand, a probe of a standby right before a switch \
                 to it) and result (ok, failed).",
                &["master", "port", "kind", "result"],
            )?,
            switches_total: counter(
                "switches_total",
                "Changes of the active master, by the master switched to (none: no master is up) and reason (failover, failback, admin, reload).",
                &["to", "reason"],
            )?,
            switches_from_total: counter(
                "switches_from_total",
                "Changes of the active master, by the master left (none: no master was up) and reason (failover, failback, admin, reload).",
                &["from", "reason"],
            )?,
            sessions_active: gauge(
                "sessions_active",
                "Open proxied sessions.",
                &["master", "port"],
            )?,
            sessions_total: counter(
                "sessions_total",
                "Proxied sessions opened.",
                &["master", "port"],
            )?,
            bytes_total: counter(
                "bytes_total",
                "Bytes forwarded, by direction (to_master, to_minion).",
                &["master", "port", "direction"],
            )?,
            session_moves_total: counter(
                "session_moves_total",
                "Minion sessions a switch or a lost master moved to another master \
                 (preserved: the minion saw no disconnect) or closed (reset).",
                &["port", "how"],
            )?,
            minion_reconnects_asked_total: counter(
                "minion_reconnects_asked_total",
                "Minion connections the sidecar closed or refused so that the minion's own \
                 alive check sees its master gone and Salt's events fire (sidecar.salt_events), \
                 by reason (all_down: no master is up; switch: a moved session's master changed).",
                &["port", "reason"],
            )?,
            sign_ins_paced_total: counter(
                "sign_ins_paced_total",
                "After a switch, how the minion's first sign-in (a new ret connection) was let \
                 through to the new master (ZeroMQ; control::pace): at_once (every ping the sidecar \
                 asked was answered within 1.5 s), paced (after slower answers), late (past the \
                 bound, R/2..R after the switch with R = random_reauth_delay, at the first answer \
                 within 2 s: the master was still behind), bound (60 s past it, whatever the answers).",
                &["master", "outcome"],
            )?,
            sign_in_pace_asks_total: counter(
                "sign_in_pace_asks_total",
                "Clear Salt pings the sidecar sent a new master to pace a sign-in (each one a \
                 connection and a worker's answer at the master), by result: fast (within \
                 1.5 s), slow, unanswered (within 2 s, or refused).",
                &["master", "result"],
            )?,
            sign_ins_held_stale_total: counter(
                "sign_ins_held_stale_total",
                "Sign-ins (new ret connections after a switch) not sent to the new master when \
                 the pacing let them go, because the minion would give up on them (its \
                 auth_timeout, 5 s) before the master answered: held until the minion sent them \
                 again on a new connection (which goes at once), or sent 12 s after they came.",
                &["master"],
            )?,
            sign_in_pace_wait_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "sign_in_pace_wait_seconds",
                        "How long the minion's first sign-in after a switch waited for the \
                         pacing (about 0 with a master that keeps up; past random_reauth_delay \
                         only while the master is still behind).",
                    )
                    .buckets(PACE_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            passive_suspicions_total: counter(
                "passive_suspicions_total",
                "Masters suspected hung because a minion's ret request went unanswered past \
                 sidecar.ret_answer_timeout, by transport (zeromq, tcp) and by the verdict \
                 of the `ping` re-check (confirmed: down at once; cleared: slow, kept).",
                &["master", "transport", "outcome"],
            )?,
            pings_deferred_total: counter(
                "pings_deferred_total",
                "Health rounds of `probe: ping` whose ret port got a plain connect instead, \
                 because it was closed or had been open less than 1 s (the sidecar's start, a master restarting).",
                &["master"],
            )?,
            upstream_connect_duration_seconds: histogram(
                "upstream_connect_duration_seconds",
                "Time to connect to a master for a minion session.",
                &["master"],
            )?,
            upstream_connect_errors_total: counter(
                "upstream_connect_errors_total",
                "Failed connects to a master for a minion session, by kind.",
                &["master", "kind"],
            )?,
            dns_resolutions_total: counter(
                "dns_resolutions_total",
                "DNS lookups of master names, by result (success, failure; self_loop: an answer held the sidecar's own address, skipped).",
                &["result"],
            )?,
            srv_lookups_total: counter(
                "srv_lookups_total",
                "Lookups of the SRV record of sidecar.master_srv, by result (success; empty: NXDOMAIN or no usable target; failure: SERVFAIL, timeout).",
                &["result"],
            )?,
            build_info: gauge(
                "build_info",
                "Always 1; the version label says which build runs.",
                &["version"],
            )?,
            last_switch_timestamp_seconds: last_switch,
            graceful_switch_waiting: switch_waiting,
            resources: ResourceErrors::new(
                counter(
                    "resource_errors_total",
                    "The sidecar's own exhaustion (never a master's fault), by operation \
                     (accept, connect, probe, admin, forward) and kind (emfile, enfile, enobufs, enomem).",
                    &["op", "kind"],
                )?,
                counter(
                    "connections_refused_total",
                    "Connections closed at accept because their listener is at its cap \
                     (sidecar.max_sessions for the minion ports).",
                    &["listener", "reason"],
                )?,
            ),
            registry,
        };
        for result in SrvLookupResult::ALL {
            m.srv_lookups_total.with_label_values(&[result.as_str()]);
        }
        m.add_masters(masters);
        Ok(Arc::new(m))
    }

    /// Creates every labelled series for `masters` (at start-up, and for
    /// masters a reload adds), so dashboards never show "no data".
    pub fn add_masters(&self, masters: &[MasterSpec]) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for port in Port::ALL {
            for how in MoveHow::ALL {
                self.session_moves_total
                    .with_label_values(&[port.as_str(), how.as_str()]);
            }
        }
        for m in masters {
            for outcome in PaceOutcome::ALL {
                self.sign_ins_paced_total
                    .with_label_values(&[m.label.as_str(), outcome.as_str()]);
            }
            self.sign_ins_held_stale_total
                .with_label_values(&[m.label.as_str()]);
            for result in PaceAsk::ALL {
                self.sign_in_pace_asks_total
                    .with_label_values(&[m.label.as_str(), result.as_str()]);
            }
        }
        for reason in NoticeReason::ALL {
            self.minion_reconnects_asked_total
                .with_label_values(&[Port::Publish.as_str(), reason.as_str()]);
        }
        for result in ["success", "failure", "self_loop"] {
            self.dns_resolutions_total.with_label_values(&[result]);
        }
        let ends = masters.iter().map(|m| m.label.as_str()).chain([NONE]);
        for end in ends {
            for reason in &self.switch_reasons {
                self.switches_total.with_label_values(&[end, reason]);
                self.switches_from_total.with_label_values(&[end, reason]);
            }
        }
        for m in masters {
            let master = m.label.as_str();
            self.master_up.with_label_values(&[master]);
            self.master_active.with_label_values(&[master]);
            self.upstream_connect_duration_seconds
                .with_label_values(&[master]);
            self.pings_deferred_total.with_label_values(&[master]);
            for transport in Transport::ALL {
                for outcome in SuspicionOutcome::ALL {
                    self.passive_suspicions_total.with_label_values(&[
                        master,
                        transport.as_str(),
                        outcome.as_str(),
                    ]);
                }
            }
            for kind in ConnectErrorKind::ALL {
                self.upstream_connect_errors_total
                    .with_label_values(&[master, kind.as_str()]);
            }
            for port in Port::ALL {
                let port = port.as_str();
                self.health_check_duration_seconds
                    .with_label_values(&[master, port]);
                self.sessions_active.with_label_values(&[master, port]);
                self.sessions_total.with_label_values(&[master, port]);
                for result in CheckResult::ALL {
                    self.health_checks_total
                        .with_label_values(&[master, port, result.as_str()]);
                }
                for kind in Evidence::ALL {
                    for result in ["ok", "failed"] {
                        self.health_evidence_total.with_label_values(&[
                            master,
                            port,
                            kind.as_str(),
                            result,
                        ]);
                    }
                }
                for dir in [Direction::ToMaster, Direction::ToMinion] {
                    self.bytes_total
                        .with_label_values(&[master, port, dir.as_str()]);
                }
            }
        }
    }

    /// A reload removed this master: drop its state gauges (counters stay,
    /// as counters should).
    pub fn retire(&self, label: &str) {
        let _ = self.master_up.remove_label_values(&[label]);
        let _ = self.master_active.remove_label_values(&[label]);
    }

    /// Counters for one session to the master labelled `label` on `port`.
    pub fn session(&self, label: &str, port: Port) -> SessionCounters {
        SessionCounters {
            to_master: self.bytes_total.with_label_values(&[
                label,
                port.as_str(),
                Direction::ToMaster.as_str(),
            ]),
            to_minion: self.bytes_total.with_label_values(&[
                label,
                port.as_str(),
                Direction::ToMinion.as_str(),
            ]),
            active: self
                .sessions_active
                .with_label_values(&[label, port.as_str()]),
        }
    }

    /// Counts one switch of the active master (`NONE`: no master).
    pub fn switched(&self, from: &str, to: &str, reason: &str) {
        self.switches_total.with_label_values(&[to, reason]).inc();
        self.switches_from_total
            .with_label_values(&[from, reason])
            .inc();
    }

    /// Counts one session moved (or closed) by a switch.
    pub fn session_moved(&self, port: Port, how: MoveHow) {
        self.session_moves_total
            .with_label_values(&[port.as_str(), how.as_str()])
            .inc();
    }

    /// Counts one minion connection closed or refused so the minion notices.
    pub fn reconnect_asked(&self, port: Port, reason: NoticeReason) {
        self.minion_reconnects_asked_total
            .with_label_values(&[port.as_str(), reason.as_str()])
            .inc();
    }

    /// [`Metrics::render`] on a blocking thread, one at a time: a scrape
    /// never holds up the runtime that forwards the minion's sessions.
    pub async fn render_off_runtime(self: &Arc<Self>) -> String {
        let _one_at_a_time = self.rendering.lock().await;
        let metrics = self.clone();
        tokio::task::spawn_blocking(move || metrics.render())
            .await
            .unwrap_or_else(|e| format!("# rendering failed: {e}\n"))
    }

    /// The text exposition format of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format except on
        // invalid metric data, which we never produce; report it inline.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding error: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
