//! The order this minion prefers its masters in, and the seed of its
//! reconnect jitter. Pure: no clock (the caller passes the time), no I/O.

use crate::config::master::MasterId;
use crate::config::Config;

/// The preference order for this minion: the configured order, or with
/// `master_shuffle` the rendezvous order of [`shuffled_order`].
pub fn preference_order(config: &Config) -> Vec<MasterId> {
    if config.shuffle {
        let labels: Vec<&str> = config.masters.iter().map(|m| m.label.as_str()).collect();
        shuffled_order(&config.minion_id, &labels)
    } else {
        config.masters.iter().map(|m| m.id).collect()
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
