//! The order this minion prefers its masters in, and the seed of its
//! reconnect jitter. Pure: no clock (the caller passes the time), no I/O.

use crate::config::master::{MasterId, MasterSpec, SrvRank};
use crate::config::Config;

/// The preference order for this minion: the configured order, or with
/// `master_shuffle` the rendezvous order of [`shuffled_order`]. Empty with
/// `sidecar.master_srv` (see [`srv_order`], once the record is known).
pub fn preference_order(config: &Config) -> Vec<MasterId> {
    if config.shuffle {
        let labels: Vec<&str> = config.masters().iter().map(|m| m.label.as_str()).collect();
        shuffled_order(&config.minion_id, &labels)
    } else {
        config.masters().iter().map(|m| m.id).collect()
    }
}

/// Seed for reconnect jitter: the minion id and the start time (Unix
/// nanoseconds), so a fleet restarted together still spreads out.
pub fn jitter_seed(minion_id: &str, unix_nanos: u64) -> u64 {
    fnv1a(minion_id.bytes()) ^ unix_nanos
}

/// Preference order for `master_shuffle`: rendezvous (highest random weight)
/// hashing of (minion id, master label). Stable across restarts; when a master
/// leaves, only the minions that ranked it first move.
pub fn shuffled_order(minion_id: &str, labels: &[&str]) -> Vec<MasterId> {
    let mut scored: Vec<(u64, MasterId)> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| (rendezvous_weight(minion_id, label), MasterId(i as u16)))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, m)| m).collect()
}

/// The preference order of masters found by SRV (RFC 2782), for this
/// minion: lowest priority first; within one priority, a weighted
/// rendezvous order, then the weight-0 targets (in rendezvous order).
/// `masters[i].id` must be `MasterId(i)`; a master without an SRV rank
/// counts as priority 0, weight 0.
///
/// Weighted rendezvous: each (minion id, master) hashes to `u` in (0, 1) and
/// scores `-ln(u) / weight`; the lowest score comes first. That is an
/// exponential race with rate `weight`, so across a fleet of ids a master is
/// first with probability `weight / sum of weights` of its priority, and
/// each minion's order is stable: it changes only if its own first choice
/// leaves, or a new target beats it.
pub fn srv_order(minion_id: &str, masters: &[MasterSpec]) -> Vec<MasterId> {
    let none = SrvRank {
        priority: 0,
        weight: 0,
    };
    let mut keyed: Vec<(u16, bool, f64, MasterId)> = masters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let rank = m.srv.unwrap_or(none);
            // The top 53 bits of the hash, centred in their interval: never 0 or 1.
            let u =
                ((rendezvous_weight(minion_id, &m.label) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -u.ln() / f64::from(rank.weight.max(1));
            (rank.priority, rank.weight == 0, score, MasterId(i as u16))
        })
        .collect();
    keyed.sort_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    keyed.into_iter().map(|(.., m)| m).collect()
}

/// FNV-1a over `id \0 master`, finished with a 64-bit mixer (splitmix64) so
/// similar ids spread well. Fixed forever: changing it would move minions.
fn rendezvous_weight(minion_id: &str, master: &str) -> u64 {
    let mut h = fnv1a(minion_id.bytes().chain([0u8]).chain(master.bytes()));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::master::Host;

    fn target(i: usize, priority: u16, weight: u16) -> MasterSpec {
        let host = format!("salt-{i}.example.net");
        MasterSpec {
            id: MasterId(i as u16),
            host: Host::Name(host.clone()),
            publish_port: 4505,
            ret_port: 4506,
            label: host,
            srv: Some(SrvRank { priority, weight }),
        }
    }

    fn set(ranks: &[(u16, u16)]) -> Vec<MasterSpec> {
        ranks
            .iter()
            .enumerate()
            .map(|(i, (p, w))| target(i, *p, *w))
            .collect()
    }

    /// How many of `n` minion ids rank each master first.
    fn firsts(masters: &[MasterSpec], n: usize) -> Vec<usize> {
        let mut count = vec![0; masters.len()];
        for i in 0..n {
            let order = srv_order(&format!("minion-{i:05}.example.net"), masters);
            count[order[0].index()] += 1;
        }
        count
    }

    #[test]
    fn lower_priority_always_comes_first_then_weight_zero_last() {
        // priority 20: weights 5 and 0; priority 10: weights 0, 1, 9.
        let masters = set(&[(20, 5), (10, 0), (20, 0), (10, 1), (10, 9)]);
        for i in 0..500 {
            let order = srv_order(&format!("m{i}"), &masters);
            let ranks: Vec<(u16, bool)> = order
                .iter()
                .map(|m| {
                    let r = masters[m.index()].srv.expect("rank");
                    (r.priority, r.weight == 0)
                })
                .collect();
            assert_eq!(
                ranks,
                [
                    (10, false),
                    (10, false),
                    (10, true),
                    (20, false),
                    (20, true)
                ],
                "m{i}: {order:?}"
            );
        }
    }

    #[test]
    fn first_choices_spread_in_proportion_to_weight() {
        let n = 10_000;
        for (weights, want) in [
            (vec![3, 1], vec![0.75, 0.25]),
            (vec![1, 1, 1, 1], vec![0.25; 4]),
            (vec![60, 30, 10], vec![0.6, 0.3, 0.1]),
            (vec![0, 0], vec![0.5, 0.5]),
        ] {
            let masters = set(&weights.iter().map(|w| (1, *w)).collect::<Vec<_>>());
            let got = firsts(&masters, n);
            eprintln!("srv_order: weights {weights:?}: first choices of {n} ids: {got:?}");
            for (i, share) in want.iter().enumerate() {
                let seen = got[i] as f64 / n as f64;
                assert!(
                    (seen - share).abs() < 0.02,
                    "weights {weights:?}: master {i} first for {seen:.3} of the fleet, want {share}"
                );
            }
        }
    }

    #[test]
    fn each_minion_keeps_its_master_when_another_target_leaves_or_changes_weight() {
        let before = set(&[(1, 3), (1, 1), (1, 2)]);
        // Target 1 leaves (ids are ranks in the list: 2 becomes 1).
        let after = vec![before[0].clone(), {
            let mut m = before[2].clone();
            m.id = MasterId(1);
            m
        }];
        let mut moved = 0;
        for i in 0..2_000 {
            let id = format!("minion-{i}");
            let was = &before[srv_order(&id, &before)[0].index()].label;
            let now = &after[srv_order(&id, &after)[0].index()].label;
            if was != now {
                assert_eq!(was, &before[1].label, "{id} moved off a master that stayed");
                moved += 1;
            }
            // Same input, same answer: stable across restarts.
            assert_eq!(srv_order(&id, &before), srv_order(&id, &before));
        }
        assert!(moved > 0);
    }
}
