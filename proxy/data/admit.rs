//! Who gets a session slot when the session cap is full: the minion.
//!
//! A local flood of idle connections (any local user can open hundreds to
//! the minion's ports) would otherwise hold every slot, and the real minion,
//! reconnecting after a master switch or its own restart, would be refused
//! for as long as the flood lasts. A real minion introduces itself at once:
//! a ZeroMQ minion sends its greeting and READY the moment it connects, a
//! tcp-transport one its first request. So at the cap the oldest connection
//! that has **not introduced itself** (no complete ZMTP greeting and READY;
//! on an unfollowed session, not a byte) gives its slot to the newcomer
//! ([`Newcomers::evict_oldest_silent`]); one that has is never evicted, and
//! with no silent one left the newcomer is refused as before. Nothing
//! happens below the cap.
//!
//! Each admitted connection gets a [`Newcomer`]: its session marks it
//! spoken on its first byte from the minion and ends when it is evicted.
//! The list is bounded: finished and spoken entries are dropped as the
//! list is scanned.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// One admitted minion connection, as the admission sees it.
#[derive(Debug, Default)]
pub struct Newcomer {
    spoke: AtomicBool,
    evict: CancellationToken,
}

impl Newcomer {
    /// The minion introduced itself: never evicted from now on.
    #[inline]
    pub fn spoke(&self) {
        if !self.spoke.load(Ordering::Relaxed) {
            self.spoke.store(true, Ordering::Relaxed);
        }
    }

    fn has_spoken(&self) -> bool {
        self.spoke.load(Ordering::Relaxed)
    }

    /// Resolves when this connection is evicted to make room.
    pub async fn evicted(&self) {
        self.evict.cancelled().await
    }
}

/// The connections admitted and not yet known to have spoken, oldest first.
#[derive(Debug, Default)]
pub struct Newcomers {
    list: Mutex<VecDeque<Arc<Newcomer>>>,
}

impl Newcomers {
    /// Registers a newly admitted connection.
    pub fn admit(&self) -> Arc<Newcomer> {
        let newcomer = Arc::new(Newcomer::default());
        if let Ok(mut list) = self.list.lock() {
            list.push_back(newcomer.clone());
        }
        newcomer
    }

    /// Evicts the oldest connection that is still open and has never
    /// spoken; false if there is none. Entries that spoke or ended are
    /// dropped on the way.
    pub fn evict_oldest_silent(&self) -> bool {
        let Ok(mut list) = self.list.lock() else {
            return false;
        };
        while let Some(oldest) = list.pop_front() {
            // Only the list holds it: its session has ended.
            let open = Arc::strong_count(&oldest) > 1;
            if open && !oldest.has_spoken() && !oldest.evict.is_cancelled() {
                oldest.evict.cancel();
                return true;
            }
        }
        false
    }

    /// Drops the entries of connections that spoke or ended (called now
    /// and then so the list stays as long as the silent connections).
    pub fn tidy(&self) {
        if let Ok(mut list) = self.list.lock() {
            list.retain(|n| Arc::strong_count(n) > 1 && !n.has_spoken());
        }
    }

    /// Entries held (for tests and the tidy bound).
    pub fn len(&self) -> usize {
        self.list.lock().map(|l| l.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_oldest_silent_connection_is_evicted_never_one_that_spoke() {
        let n = Newcomers::default();
        let (first, second, third) = (n.admit(), n.admit(), n.admit());
        first.spoke();
        assert!(n.evict_oldest_silent());
        let evicted = tokio::time::timeout(Duration::from_millis(10), second.evicted());
        assert!(evicted.await.is_ok(), "the oldest silent one");
        let kept = tokio::time::timeout(Duration::from_millis(10), first.evicted());
        assert!(kept.await.is_err(), "one that spoke is kept");
        let kept = tokio::time::timeout(Duration::from_millis(10), third.evicted());
        assert!(kept.await.is_err(), "a younger silent one is kept");
        third.spoke();
        assert!(!n.evict_oldest_silent(), "nobody silent is left");
    }

    #[test]
    fn ended_connections_are_not_evicted_and_the_list_is_tidied() {
        let n = Newcomers::default();
        let gone = n.admit();
        let open = n.admit();
        drop(gone);
        for _ in 0..10 {
            n.admit().spoke();
        }
        n.tidy();
        assert_eq!(n.len(), 1, "only the open, silent one");
        assert!(n.evict_oldest_silent());
        assert!(open.evict.is_cancelled());
        assert!(!n.evict_oldest_silent());
    }
}
