//! `salt-sidecar enroll`: get a new minion's key accepted on every master
//! without stopping any of them.
//!
//! The article's procedure stops every other master in turn so the minion
//! presents its key to each. Instead, this walks the masters in preference
//! order through a running sidecar's admin API: pin the minion to one, tell
//! the operator to accept the key there, wait until that master has accepted
//! it, move on; unpin at the end (also on failure or Ctrl-C).
//!
//! "Accepted" is judged at layer 4, from the sidecar's own numbers: a
//! publish session to the master has stayed open for the settle time, and
//! either the minion was already on that master with a publish session when
//! it was pinned (a pending minion never opens one), or the master sent a
//! sign-in-sized burst — at least [`AUTH_REPLY_BYTES`] on the ret port within
//! [`BURST_WINDOW`] — since just before the pin (so a minion that signs in
//! while the pin is being applied counts too). An accepted sign-in reply
//! carries the master's public key and the RSA-encrypted session key (well
//! over 1 KiB); a "pending" reply is tens of bytes, every
//! `acceptance_wait_time`, so even a slow poll under load does not add up
//! pending replies to a burst. An open publish session alone proves nothing
//! for a master the minion moved to: a ZeroMQ SUB socket reconnects (or its
//! session is moved) without signing in.
//!
//! With `sidecar.move_sessions` (the default) a pin moves the minion's open
//! sessions to the pinned master at their next message boundary; the
//! minion's next sign-in — it signs in again when it cannot decrypt the new
//! master's first publication — goes there, not to a draining old master.
//! Client only: never touches the sidecar's state except through the admin
//! API.

use std::collections::VecDeque;
use std::time::Duration;

use hyper::Method;
use tokio::time::Instant;

use crate::commands::status::{self, AdminAddr, ClientError, StatusError};

/// Bytes a master must send on the ret port within one poll to count as a
/// sign-in reply (an accepted one is larger; a pending one is far smaller).
pub const AUTH_REPLY_BYTES: u64 = 1024;

/// How `enroll` runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The sidecar's admin socket (`sidecar.admin_socket`).
    pub admin: AdminAddr,
    /// Give up on one master after this long.
    pub per_master_timeout: Duration,
    /// A publish session must stay open this long.
    pub settle: Duration,
    /// How often to look at the sidecar.
    pub poll: Duration,
}

/// Why enrollment could not run.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("{0}")]
    Admin(String),
    #[error("admin endpoint: {0}")]
    Client(#[from] ClientError),
}

/// What happened on each master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `(master, accepted)` in the order walked.
    pub masters: Vec<(String, bool)>,
}

impl Outcome {
    pub fn all_accepted(&self) -> bool {
        !self.masters.is_empty() && self.masters.iter().all(|(_, ok)| *ok)
    }
}

/// A sign-in reply counts if it arrives within this long (a slow poll
/// widens the window by one poll at most).
pub const BURST_WINDOW: Duration = Duration::from_secs(2);

const HTTP_LIMIT: Duration = Duration::from_secs(5);
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Walks every master; `say` receives one line per step.
pub async fn run(opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Outcome, EnrollError> {
    let (report, _) = status::fetch(&opts.admin, HTTP_LIMIT).await?;
    let id = report.minion_id.clone();
    let masters: Vec<String> = report.masters.iter().map(|m| m.master.clone()).collect();
    say(&format!(
        "enrolling minion {id} on {} master(s): {}",
        masters.len(),
        masters.join(", ")
    ));
    let mut outcome = Outcome {
        masters: Vec::new(),
    };
    let walked = walk(opts, &id, &masters, &mut outcome, say).await;
    // Always unpin, whatever happened above.
    let unpinned = admin(&opts.admin, "/admin/unpin").await;
    walked?;
    unpinned?;
    say("unpinned: the sidecar selects masters normally again");
    for (m, ok) in &outcome.masters {
        say(&format!(
            "  {m}: {}",
            if *ok {
                "accepted"
            } else {
                "NOT accepted (timed out)"
            }
        ));
    }
    Ok(outcome)
}

async fn walk(
    opts: &Options,
    id: &str,
    masters: &[String],
    outcome: &mut Outcome,
    say: &mut dyn FnMut(&str),
) -> Result<(), EnrollError> {
    for master in masters {
        // Read before the pin: a sign-in right after it must count.
        let baseline = ret_bytes_to_minion(&opts.admin, master).await?;
        let mut burst = Burst::new(Instant::now(), baseline);
        let (before, _) = status::fetch(&opts.admin, HTTP_LIMIT).await?;
        let already_on_it = before
            .masters
            .iter()
            .any(|m| &m.master == master && m.active && m.sessions.publish > 0);
        admin(
            &opts.admin,
            &format!("/admin/pin?master={}", query_escape(master)),
        )
        .await?;
        say(&format!(
            "pinned to {master}: accept the key of {id} on {master}  (salt-key -a {id})"
        ));
        say(&format!(
            "  (a ZeroMQ minion signs in to a new master on its first job from it: if the key is not listed by `salt-key -l pre` there, run any job on {master}, e.g. salt '*' test.ping)"
        ));
        let ok = wait_accepted(opts, id, master, already_on_it, &mut burst, say).await?;
        if ok {
            say(&format!("{master} accepted {id}"));
        } else {
            say(&format!(
                "{master}: no sign of {id} being accepted within {}; moving on",
                humantime::format_duration(opts.per_master_timeout)
            ));
        }
        outcome.masters.push((master.clone(), ok));
    }
    Ok(())
}

/// Waits until `master` shows the signs of having accepted the minion.
async fn wait_accepted(
    opts: &Options,
    id: &str,
    master: &str,
    already_on_it: bool,
    burst: &mut Burst,
    say: &mut dyn FnMut(&str),
) -> Result<bool, EnrollError> {
    let start = Instant::now();
    let deadline = start + opts.per_master_timeout;
    let mut open_since: Option<Instant> = None;
    let mut signed_in = already_on_it;
    let mut next_reminder = start + REMIND_EVERY;
    while Instant::now() < deadline {
        let (report, _) = status::fetch(&opts.admin, HTTP_LIMIT).await?;
        let publish_open = report
            .masters
            .iter()
            .any(|m| m.master == master && m.sessions.publish > 0);
        open_since = if publish_open {
            open_since.or(Some(Instant::now()))
        } else {
            None
        };
        let bytes = ret_bytes_to_minion(&opts.admin, master).await?;
        signed_in |= burst.push(Instant::now(), bytes);
        if signed_in && open_since.is_some_and(|t| t.elapsed() >= opts.settle) {
            return Ok(true);
        }
        if Instant::now() >= next_reminder {
            say(&format!(
                "  still waiting for {master} to accept {id} ({}s)",
                start.elapsed().as_secs()
            ));
            next_reminder += REMIND_EVERY;
        }
        tokio::time::sleep(opts.poll).await;
    }
    Ok(false)
}

/// The master's ret bytes to the minion, sampled at each poll: tells a
/// sign-in reply (one burst of [`AUTH_REPLY_BYTES`] or more) from pending
/// replies (small ones, spread out), whatever the poll's pace.
#[derive(Debug)]
pub struct Burst {
    samples: VecDeque<(Instant, u64)>,
}

impl Burst {
    /// Starts from the counter's value `bytes` at `at`.
    pub fn new(at: Instant, bytes: u64) -> Burst {
        Burst {
            samples: VecDeque::from([(at, bytes)]),
        }
    }

    /// Adds a sample; `true` if the master sent at least
    /// [`AUTH_REPLY_BYTES`] since the latest sample taken at least
    /// [`BURST_WINDOW`] before `at` (or since the first sample, if none is
    /// that old). A counter that went back (a restarted sidecar) counts
    /// nothing until its old samples age out.
    pub fn push(&mut self, at: Instant, bytes: u64) -> bool {
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) >= BURST_WINDOW)
        {
            self.samples.pop_front();
        }
        let from = self.samples.front().map_or(bytes, |(_, b)| *b);
        self.samples.push_back((at, bytes));
        bytes.saturating_sub(from) >= AUTH_REPLY_BYTES
    }
}

/// Unpins (for an interrupted enrollment).
pub async fn unpin(addr: &AdminAddr) -> Result<(), EnrollError> {
    admin(addr, "/admin/unpin").await
}

/// `POST path` on the admin endpoint; any answer but 2xx is an error.
async fn admin(addr: &AdminAddr, path: &str) -> Result<(), EnrollError> {
    let reply = status::request(addr.clone(), Method::POST, path, HTTP_LIMIT).await?;
    if (200..300).contains(&reply.status) {
        Ok(())
    } else {
        Err(EnrollError::Admin(format!(
            "{path}: {} {}",
            reply.status,
            reply.body.trim()
        )))
    }
}

/// `salt_sidecar_bytes_total{master, port="ret", direction="to_minion"}`.
async fn ret_bytes_to_minion(addr: &AdminAddr, master: &str) -> Result<u64, EnrollError> {
    let reply = status::request(addr.clone(), Method::GET, "/metrics", HTTP_LIMIT).await?;
    Ok(counter_value(
        &reply.body,
        "salt_sidecar_bytes_total",
        &[
            ("direction", "to_minion"),
            ("master", master),
            ("port", "ret"),
        ],
    )
    .unwrap_or(0.0) as u64)
}

/// The value of the series of `family` whose labels include all of `labels`,
/// in Prometheus text format.
pub fn counter_value(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(family)?;
            let (set, value) = rest.strip_prefix('{')?.rsplit_once('}')?;
            let all = labels
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if all {
                value.trim().parse().ok()
            } else {
                None
            }
        })
}

/// Percent-encodes what a master label may contain that a query cannot.
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# HELP salt_sidecar_bytes_total Bytes forwarded\n\
        salt_sidecar_bytes_total{direction=\"to_minion\",master=\"127.0.0.2\",port=\"publish\"} 10\n\
        salt_sidecar_bytes_total{direction=\"to_minion\",master=\"127.0.0.2\",port=\"ret\"} 2048\n\
        salt_sidecar_bytes_total{direction=\"to_master\",master=\"127.0.0.2\",port=\"ret\"} 99\n\
        salt_sidecar_bytes_total{direction=\"to_minion\",master=\"127.0.0.20\",port=\"ret\"} 7\n";

    #[test]
    fn reads_the_right_series() {
        let ret = |m| {
            counter_value(
                METRICS,
                "salt_sidecar_bytes_total",
                &[("direction", "to_minion"), ("master", m), ("port", "ret")],
            )
        };
        assert_eq!(ret("127.0.0.2"), Some(2048.0));
        assert_eq!(
            ret("127.0.0.20"),
            Some(7.0),
            "no prefix confusion between masters"
        );
        assert_eq!(ret("127.0.0.3"), None);
        assert_eq!(
            counter_value("garbage{{{", "salt_sidecar_bytes_total", &[]),
            None
        );
    }

    #[test]
    fn a_sign_in_burst_counts_whatever_the_poll_pace() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // One reply of 1.5 KiB between two quick polls.
        let mut b = Burst::new(at(0), 100);
        assert!(!b.push(at(250), 160));
        assert!(b.push(at(500), 160 + 1536));
        // A poll that took 4 s under load still sees it (against the
        // sample before it).
        let mut b = Burst::new(at(0), 100);
        assert!(b.push(at(4000), 100 + 1536));
        // Signed in while the pin was applied: the baseline is from before.
        let mut b = Burst::new(at(0), 0);
        assert!(b.push(at(300), 1700));
    }

    #[test]
    fn pending_replies_never_add_up_to_a_burst() {
        let t0 = Instant::now();
        // 60-byte pending replies every second for ten minutes, polled
        // every 250 ms.
        let mut b = Burst::new(t0, 0);
        let mut bytes = 0;
        for tick in 1..=2400u64 {
            if tick % 4 == 0 {
                bytes += 60;
            }
            let at = t0 + Duration::from_millis(250 * tick);
            assert!(!b.push(at, bytes), "false burst at {tick}");
        }
        // A sidecar restart (counter back to 0) is no burst either.
        let later = t0 + Duration::from_secs(700);
        assert!(!b.push(later, 0));
        assert!(!b.push(later + Duration::from_millis(250), 60));
    }

    #[test]
    fn labels_are_query_safe() {
        assert_eq!(
            query_escape("salt-b.example.net:14506"),
            "salt-b.example.net:14506"
        );
        assert_eq!(
            query_escape("[2001:db8::5]:4506/4505"),
            "%5B2001:db8::5%5D:4506%2F4505"
        );
    }
}
