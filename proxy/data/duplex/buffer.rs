//! The copy's buffers: [`CHUNK`]-byte buffers lent from a per-thread pool
//! only while bytes are in flight (an idle session holds none), and the
//! [`Carry`] a moving session keeps of the minion's unsent bytes.

use std::cell::RefCell;

/// Bytes moved per read at most, and the size of a borrowed buffer. 64 KiB
/// is the loopback MTU and about what one read of a busy socket returns;
/// 16 KiB halved single-stream throughput in the benchmark.
pub(super) const CHUNK: usize = 64 * 1024;
/// Idle buffers a thread keeps for the next burst (the rest are freed).
const POOL_MAX: usize = 8;

/// Minion bytes a moving session read but did not send: `buf[pos..end]`.
/// The buffer goes back to the pool when dropped.
pub struct Carry {
    pub(super) buf: Option<Box<[u8]>>,
    pub(super) pos: usize,
    pub(super) end: usize,
}

impl Carry {
    pub fn bytes(&self) -> &[u8] {
        self.buf
            .as_deref()
            .and_then(|b| b.get(self.pos..self.end))
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Carry({} bytes)", self.end - self.pos)
    }
}

impl Drop for Carry {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            pool::give(buf);
        }
    }
}

/// Per-thread buffers of [`CHUNK`] bytes. Zeroed once when made (safe Rust
/// reads only into initialised memory), then reused as they are: a buffer
/// lent out is overwritten by the read before any byte of it is sent.
pub(super) mod pool {
    use super::{RefCell, CHUNK, POOL_MAX};

    thread_local! {
        static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    }

    pub(in crate::data::duplex) fn take() -> Box<[u8]> {
        FREE.try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())
    }

    pub(in crate::data::duplex) fn give(buf: Box<[u8]>) {
        // At thread exit the pool is gone: the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < POOL_MAX {
                free.push(buf);
            }
        });
    }
}
