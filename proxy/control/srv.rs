//! Follows the SRV record of `sidecar.master_srv` (RFC 2782): its targets
//! are the masters.
//!
//! One task asks for the record with hickory-resolver, asks again when the
//! answer's TTL runs out (clamped to [`MIN_REFRESH`] … [`MAX_REFRESH`], so a
//! TTL of 0, as Consul serves, is not a query storm), and publishes the
//! masters it names on a `watch` channel ([`SrvState`]), with the time of
//! the last good answer. A failed lookup, an empty answer and NXDOMAIN keep
//! the last good masters (counted, logged with the record's name, retried
//! with backoff): DNS trouble never takes the masters away. Each target's
//! addresses are followed by [`super::resolve`] on their own TTL, like any
//! master named by DNS.
//!
//! It decides nothing about health or order, and applies nothing: the app
//! hands each new set to the reloader, which applies it like a reloaded
//! `master:` list.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::master::{label_for, Host, MasterId, MasterSpec, SrvRank};
use crate::config::{SrvSource, DEFAULT_PUBLISH_PORT, DEFAULT_RET_PORT};
use crate::metrics::{Metrics, SrvLookupResult as LookupResult};

/// The shortest wait before asking again (a TTL below it is raised).
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// The longest (a TTL above it is lowered).
pub const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Asked again this long after the TTL ran out.
const EXPIRY_MARGIN: Duration = Duration::from_millis(250);
/// Retry backoff after a failed, empty or NXDOMAIN answer.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// At most this many targets become masters (the rest are logged and
/// ignored): each master costs probe descriptors from the budget.
pub const MAX_TARGETS: usize = 32;

/// What the follower knows of the record; published after every lookup.
#[derive(Clone, Debug, PartialEq)]
pub struct SrvState {
    /// The record's name.
    pub record: String,
    /// The masters of the last good answer (empty: none yet), ids by rank
    /// in this list (priority, then weight, then name).
    pub masters: Arc<[MasterSpec]>,
    /// When the last good answer arrived.
    pub last_refresh: Option<SystemTime>,
    /// That answer's TTL, as served.
    pub ttl: Option<Duration>,
    /// Why the last lookup failed, while it does (cleared by a good answer).
    pub last_error: Option<String>,
}

/// One SRV record's data, as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host name (trailing dot removed).
    pub host: String,
}

/// The masters `targets` name: each target a master whose ret port is the
/// record's port and whose publish port is `publish_port`. The "no service"
/// target `.` and port 0 are skipped, a target served twice is kept once (its
/// best priority), a target that is the sidecar itself (one of `listeners`)
/// is dropped, and at most [`MAX_TARGETS`] are kept. Ids are ranks in the
/// result, sorted by (priority, weight descending, label). Pure.
pub fn masters(
    targets: &[Target],
    publish_port: u16,
    listeners: &[SocketAddr],
) -> (Vec<MasterSpec>, Vec<String>) {
    let mut notes = Vec::new();
    let mut sorted: Vec<&Target> = targets.iter().collect();
    sorted.sort_by(|a, b| {
        (a.priority, std::cmp::Reverse(a.weight), &a.host, a.port).cmp(&(
            b.priority,
            std::cmp::Reverse(b.weight),
            &b.host,
            b.port,
        ))
    });
    let mut out: Vec<MasterSpec> = Vec::new();
    for t in sorted {
        let host = t.host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() || t.port == 0 {
            continue;
        }
        let host = Host::Name(host);
        let spec = MasterSpec {
            id: MasterId(0),
            label: label_for(
                &host,
                publish_port,
                t.port,
                (DEFAULT_PUBLISH_PORT, DEFAULT_RET_PORT),
            ),
            host,
            publish_port,
            ret_port: t.port,
            srv: Some(SrvRank {
                priority: t.priority,
                weight: t.weight,
            }),
        };
        if out.iter().any(|m| m.same_master(&spec)) {
            continue;
        }
        if let Some(own) = spec.loops_to(listeners) {
            notes.push(format!(
                "target `{}` is the sidecar itself (its listener {own}); skipped",
                spec.label
            ));
            continue;
        }
        if out.len() == MAX_TARGETS {
            notes.push(format!(
                "more than {MAX_TARGETS} targets; `{}` and the rest are ignored",
                spec.label
            ));
            break;
        }
        out.push(spec);
    }
    for (i, m) in out.iter_mut().enumerate() {
        m.id = MasterId(i as u16);
    }
    (out, notes)
}

/// Starts following `source`; the receiver starts with no masters.
pub fn start(
    source: &SrvSource,
    listeners: [SocketAddr; 2],
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    token: &CancellationToken,
) -> watch::Receiver<SrvState> {
    let (tx, rx) = watch::channel(SrvState {
        record: source.name.clone(),
        masters: Arc::from(Vec::new()),
        last_refresh: None,
        ttl: None,
        last_error: None,
    });
    let follower = Follower {
        source: source.clone(),
        listeners,
        tx,
        metrics: metrics.clone(),
    };
    tracker.spawn(follower.run(token.clone()));
    rx
}

/// The task's state.
struct Follower {
    source: SrvSource,
    listeners: [SocketAddr; 2],
    tx: watch::Sender<SrvState>,
    metrics: Arc<Metrics>,
}

/// One lookup's outcome: the targets and their TTL, or why not.
type Answer = Result<(Vec<Target>, Duration), (LookupResult, String)>;

impl Follower {
    async fn run(self, token: CancellationToken) {
        let mut resolver: Option<TokioResolver> = None;
        let mut retry = RETRY_MIN;
        loop {
            let answer = match &resolver {
                Some(r) => self.lookup(r).await,
                None => match TokioResolver::builder_tokio() {
                    Ok(builder) => {
                        let r = builder.build();
                        let answer = self.lookup(&r).await;
                        resolver = Some(r);
                        answer
                    }
                    Err(e) => Err((
                        LookupResult::Failure,
                        format!(
                            "cannot set up DNS resolution (system resolver configuration): {e}"
                        ),
                    )),
                },
            };
            let wait = match answer {
                Ok((targets, ttl)) => match self.accept(&targets, ttl) {
                    Ok(()) => {
                        retry = RETRY_MIN;
                        // Just after the TTL, so the resolver's cache has let
                        // the answer go and the server is asked again.
                        (ttl + EXPIRY_MARGIN).clamp(MIN_REFRESH, MAX_REFRESH)
                    }
                    Err(why) => self.failed(LookupResult::Empty, why, &mut retry),
                },
                Err((result, why)) => self.failed(result, why, &mut retry),
            };
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Asks for the record once.
    async fn lookup(&self, resolver: &TokioResolver) -> Answer {
        // Absolute: the record's name is never completed with a search domain.
        let name = format!("{}.", self.source.name);
        match resolver.srv_lookup(name).await {
            Ok(lookup) => {
                let ttl = lookup
                    .as_lookup()
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now());
                let targets = lookup
                    .iter()
                    .map(|srv| Target {
                        priority: srv.priority(),
                        weight: srv.weight(),
                        port: srv.port(),
                        host: srv.target().to_utf8(),
                    })
                    .collect();
                Ok((targets, ttl))
            }
            Err(e) => {
                let code = match e.proto().map(|p| p.kind()) {
                    Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
                        Some(*response_code)
                    }
                    _ => None,
                };
                match code {
                    Some(ResponseCode::NXDomain) => {
                        Err((LookupResult::Empty, "no such name (NXDOMAIN)".to_string()))
                    }
                    Some(ResponseCode::NoError) => Err((
                        LookupResult::Empty,
                        "no SRV records at this name".to_string(),
                    )),
                    Some(other) => Err((
                        LookupResult::Failure,
                        format!("the server answered {other} ({})", u16::from(other)),
                    )),
                    None => Err((LookupResult::Failure, format!("lookup failed: {e}"))),
                }
            }
        }
    }

    /// A good answer: publishes its masters; `Err` if it names none.
    fn accept(&self, targets: &[Target], ttl: Duration) -> Result<(), String> {
        let (masters, notes) = masters(targets, self.source.publish_port, &self.listeners);
        for note in &notes {
            warn!(record = %self.source.name, "SRV record: {note}");
        }
        if masters.is_empty() {
            return Err(if targets.is_empty() {
                "the answer has no targets".to_string()
            } else {
                "the answer names no usable target (`.` means the service is not available)"
                    .to_string()
            });
        }
        self.count(LookupResult::Success);
        let now = SystemTime::now();
        self.tx.send_modify(|state| {
            if *state.masters != *masters {
                let targets: Vec<String> = masters
                    .iter()
                    .map(|m| {
                        let r = m.srv.unwrap_or(SrvRank {
                            priority: 0,
                            weight: 0,
                        });
                        format!("{} (priority {}, weight {})", m.label, r.priority, r.weight)
                    })
                    .collect();
                info!(
                    record = %self.source.name,
                    ttl_s = ttl.as_secs(),
                    targets = ?targets,
                    "SRV record resolved"
                );
                state.masters = Arc::from(masters);
            } else {
                debug!(record = %self.source.name, ttl_s = ttl.as_secs(), "SRV record unchanged");
            }
            if state.last_error.take().is_some() {
                info!(record = %self.source.name, "SRV record answers again");
            }
            state.last_refresh = Some(now);
            state.ttl = Some(ttl);
        });
        Ok(())
    }

    /// A failed, empty or NXDOMAIN answer: counted, logged, the last good
    /// masters kept; returns when to ask again.
    fn failed(&self, result: LookupResult, why: String, retry: &mut Duration) -> Duration {
        self.count(result);
        let wait = *retry;
        *retry = (*retry * 2).min(RETRY_MAX);
        let name = &self.source.name;
        self.tx.send_modify(|state| {
            let kept = state.masters.len();
            let repeated = state.last_error.as_deref() == Some(why.as_str());
            if kept == 0 {
                error!(record = %name, retry_in_s = wait.as_secs(), "SRV record `{name}`: {why}; no masters yet, retrying");
            } else if !repeated {
                warn!(record = %name, kept_masters = kept, retry_in_s = wait.as_secs(), "SRV record `{name}`: {why}; keeping the last good masters and retrying");
            }
            state.last_error = Some(why);
        });
        wait
    }

    fn count(&self, result: LookupResult) {
        self.metrics
            .srv_lookups_total
            .with_label_values(&[result.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(priority: u16, weight: u16, port: u16, host: &str) -> Target {
        Target {
            priority,
            weight,
            port,
            host: host.into(),
        }
    }

    const OWN: [SocketAddr; 2] = [
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4505),
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4506),
    ];

    #[test]
    fn targets_become_masters_ranked_by_priority_then_weight() {
        let (masters, notes) = masters(
            &[
                t(20, 10, 4506, "salt-c.example.net."),
                t(10, 10, 4506, "Salt-B.example.net."),
                t(10, 60, 14506, "salt-a.example.net."),
                t(10, 5, 4506, "salt-b.example.net."), // served twice: kept once
                t(0, 0, 4506, "."),                    // "no service"
            ],
            4505,
            &OWN,
        );
        assert!(notes.is_empty(), "{notes:?}");
        let got: Vec<(u16, &str, u16, u16, Option<SrvRank>)> = masters
            .iter()
            .map(|m| (m.id.0, m.label.as_str(), m.publish_port, m.ret_port, m.srv))
            .collect();
        let rank = |priority, weight| Some(SrvRank { priority, weight });
        assert_eq!(
            got,
            [
                (0, "salt-a.example.net:14506", 4505, 14506, rank(10, 60)),
                (1, "salt-b.example.net", 4505, 4506, rank(10, 10)),
                (2, "salt-c.example.net", 4505, 4506, rank(20, 10)),
            ]
        );
    }

    #[test]
    fn the_sidecar_itself_is_never_a_master() {
        let (masters, notes) = masters(
            &[
                t(10, 1, 4506, "localhost."),
                t(10, 1, 4506, "salt.example.net."),
            ],
            4505,
            &OWN,
        );
        assert_eq!(masters.len(), 1);
        assert_eq!(masters[0].label, "salt.example.net");
        assert_eq!(masters[0].id, MasterId(0));
        assert!(
            notes[0].contains("`localhost` is the sidecar itself"),
            "{notes:?}"
        );
    }

    #[test]
    fn at_most_max_targets() {
        let many: Vec<Target> = (0..40)
            .map(|i| t(10, 1, 4506, &format!("salt-{i:02}.example.net.")))
            .collect();
        let (masters, notes) = masters(&many, 4505, &OWN);
        assert_eq!(masters.len(), MAX_TARGETS);
        assert!(notes[0].contains("more than 32 targets"), "{notes:?}");
    }
}
