//! Keeps each master's addresses current.
//!
//! A literal IP is constant. A DNS name gets one task that resolves it with
//! hickory-resolver, re-resolves when the answer's TTL runs out, and on
//! failure keeps the last good addresses (counting the failure and retrying
//! with backoff). An unresolved name has *no* address — never 127.0.0.1.
//! Consumers read a `watch` channel; nothing here decides health.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::master::{Host, MasterSpec};
use crate::metrics::Metrics;

/// The current addresses of one master (empty: not resolved yet).
pub type Addresses = watch::Receiver<Arc<[IpAddr]>>;

/// Bounds on how long an answer is trusted.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);
/// Retry backoff after a failed lookup.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Starts resolution for every master; returns one receiver per master, by
/// rank. An address that would reach one of `listeners` (the sidecar's own)
/// is dropped from every answer: forwarding there is a self-loop.
pub fn start(
    masters: &[MasterSpec],
    listeners: [SocketAddr; 2],
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    token: &CancellationToken,
    seed: impl Fn(&MasterSpec) -> Option<Arc<[IpAddr]>>,
) -> Vec<Addresses> {
    let mut resolver: Option<Arc<TokioResolver>> = None;
    masters
        .iter()
        .map(|m| match &m.host {
            Host::Ip(ip) => watch::channel(Arc::from(vec![*ip])).1,
            Host::Name(name) => {
                // A reload starts from the last good addresses, not from none.
                let (tx, rx) = watch::channel(seed(m).unwrap_or_else(|| Arc::from(Vec::new())));
                match resolver_for(&mut resolver) {
                    Ok(r) => {
                        let own = SelfLoop { spec: m.clone(), listeners };
                        tracker.spawn(follow(r, name.clone(), own, tx, metrics.clone(), token.clone()));
                    }
                    Err(e) => {
                        metrics.dns_resolutions_total.with_label_values(&["failure"]).inc();
                        warn!(master = %m.label, error = %e, "cannot set up DNS resolution (system resolver configuration); the master stays unresolved");
                    }
                }
                rx
            }
        })
        .collect()
}

fn resolver_for(slot: &mut Option<Arc<TokioResolver>>) -> Result<Arc<TokioResolver>, String> {
    if let Some(r) = slot {
        return Ok(r.clone());
    }
    let builder = TokioResolver::builder_tokio().map_err(|e| e.to_string())?;
    let r = Arc::new(builder.build());
    *slot = Some(r.clone());
    Ok(r)
}

/// What an answer for one master must not contain.
struct SelfLoop {
    spec: MasterSpec,
    listeners: [SocketAddr; 2],
}

impl SelfLoop {
    /// Drops the addresses that are the sidecar itself; logs and counts it.
    fn remove(&self, addrs: &mut Vec<IpAddr>, metrics: &Metrics) {
        let before = addrs.len();
        let mut own = None;
        addrs.retain(|ip| match self.spec.loops_at(*ip, &self.listeners) {
            Some(l) => {
                own = Some((*ip, l));
                false
            }
            None => true,
        });
        if let Some((ip, listener)) = own {
            metrics
                .dns_resolutions_total
                .with_label_values(&["self_loop"])
                .inc();
            warn!(master = %self.spec.label, address = %ip, %listener, skipped = before - addrs.len(), "DNS answered with the sidecar's own address; skipping it (forwarding there would loop)");
        }
    }
}

/// Resolves `name` for as long as the sidecar runs.
async fn follow(
    resolver: Arc<TokioResolver>,
    name: String,
    own: SelfLoop,
    tx: watch::Sender<Arc<[IpAddr]>>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let mut retry = RETRY_MIN;
    let mut failing = false;
    loop {
        let wait = match resolver.lookup_ip(name.as_str()).await {
            Ok(lookup) => {
                metrics
                    .dns_resolutions_total
                    .with_label_values(&["success"])
                    .inc();
                let label = own.spec.label.as_str();
                let mut addrs: Vec<IpAddr> = lookup.iter().collect();
                addrs.sort();
                addrs.dedup();
                own.remove(&mut addrs, &metrics);
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now());
                if addrs.is_empty() {
                    metrics
                        .dns_resolutions_total
                        .with_label_values(&["failure"])
                        .inc();
                    warn!(master = %label, "DNS answer has no addresses; keeping the last good ones");
                    failing = true;
                    retry_step(&mut retry)
                } else {
                    if failing || **tx.borrow() != *addrs {
                        info!(master = %label, addresses = ?addrs, ttl_s = ttl.as_secs(), "resolved");
                    }
                    failing = false;
                    retry = RETRY_MIN;
                    tx.send_if_modified(|cur| {
                        let changed = **cur != *addrs;
                        if changed {
                            *cur = Arc::from(addrs);
                        }
                        changed
                    });
                    ttl.clamp(MIN_TTL, MAX_TTL)
                }
            }
            Err(e) => {
                let label = own.spec.label.as_str();
                metrics
                    .dns_resolutions_total
                    .with_label_values(&["failure"])
                    .inc();
                if !failing {
                    let kept = tx.borrow().len();
                    warn!(master = %label, error = %e, kept_addresses = kept, "DNS lookup failed; keeping the last good addresses and retrying");
                }
                failing = true;
                retry_step(&mut retry)
            }
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Returns the current retry delay and doubles it for next time.
fn retry_step(retry: &mut Duration) -> Duration {
    let now = *retry;
    *retry = (*retry * 2).min(RETRY_MAX);
    now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::master::MasterId;

    fn spec(host: Host) -> MasterSpec {
        MasterSpec {
            id: MasterId(0),
            host,
            publish_port: 4505,
            ret_port: 4506,
            label: "m".into(),
            srv: None,
        }
    }

    #[tokio::test]
    async fn literal_addresses_need_no_lookup() {
        let metrics = Metrics::new(&[spec(Host::Ip("127.0.0.2".parse().unwrap()))], &[]).unwrap();
        let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
        let rx = start(
            &[spec(Host::Ip("127.0.0.2".parse().unwrap()))],
            [
                "127.0.0.1:4505".parse().unwrap(),
                "127.0.0.1:4506".parse().unwrap(),
            ],
            &metrics,
            &tracker,
            &token,
            |_| None,
        );
        assert_eq!(&**rx[0].borrow(), &["127.0.0.2".parse::<IpAddr>().unwrap()]);
        assert!(tracker.is_empty());
    }

    /// `.invalid` is answered NXDOMAIN by the resolver itself (RFC 6761): no
    /// packet leaves the machine.
    #[tokio::test]
    async fn unresolvable_name_stays_empty_and_is_counted_never_localhost() {
        let m = spec(Host::Name("no-such-master.invalid".into()));
        let metrics = Metrics::new(std::slice::from_ref(&m), &[]).unwrap();
        let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
        let own = [
            "127.0.0.1:4505".parse().unwrap(),
            "127.0.0.1:4506".parse().unwrap(),
        ];
        let rx = start(&[m], own, &metrics, &tracker, &token, |_| None);
        let failures = metrics
            .dns_resolutions_total
            .with_label_values(&["failure"]);
        tokio::time::timeout(Duration::from_secs(10), async {
            while failures.get() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the failed lookup is counted");
        assert!(
            rx[0].borrow().is_empty(),
            "an unresolved master has no address: {:?}",
            rx[0].borrow()
        );
        token.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
