//! The two-way byte copy of one proxied session.
//!
//! Each direction waits for readiness, then borrows a buffer only while bytes
//! are in flight, so an idle session holds no buffer. EOF on one side shuts
//! down the write side of the other (half-close); either side's error ends
//! the session. Bytes are counted per read into pre-resolved counters. The
//! session also watches its tokens: `reset` ends it at once (the caller sends
//! RST), `drain` ends it once it is idle or at the drain deadline. Never logs.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::IntCounter;
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::master::Port;
use crate::sessions::SessionTokens;

/// Bytes moved per read at most (and the size of a borrowed buffer).
const CHUNK: usize = 16 * 1024;
/// Quiet time after which a draining session counts as idle.
pub const IDLE_QUIET: Duration = Duration::from_millis(250);

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their write halves.
    Closed,
    /// The minion's side failed (reset, broken pipe).
    MinionError(io::Error),
    /// The master's side failed: worth a re-probe.
    MasterError(io::Error),
    /// A switch away from this master (failover): close with RST.
    Reset,
    /// Drained after a graceful switch (idle, or the drain deadline passed).
    Drained,
}

/// What the copy needs besides the two sockets.
pub struct Control<'a> {
    pub port: Port,
    pub tokens: &'a SessionTokens,
    /// The sidecar is stopping: drain as for a failback.
    pub shutdown: &'a CancellationToken,
    pub drain_timeout: Duration,
    pub to_master: &'a IntCounter,
    pub to_minion: &'a IntCounter,
}

/// Last activity per direction, in ms since the session started.
struct Activity {
    start: Instant,
    to_master_ms: AtomicU64,
    to_minion_ms: AtomicU64,
}

impl Activity {
    fn touch(&self, slot: &AtomicU64) {
        slot.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Idle: nothing moved for [`IDLE_QUIET`] and, on the ret port, the last
    /// bytes went to the minion (its last request was answered).
    fn is_idle(&self, port: Port) -> bool {
        let up = self.to_master_ms.load(Ordering::Relaxed);
        let down = self.to_minion_ms.load(Ordering::Relaxed);
        let quiet =
            self.start.elapsed().as_millis() as u64 >= up.max(down) + IDLE_QUIET.as_millis() as u64;
        quiet && (port == Port::Publish || down >= up)
    }
}

/// Which side an I/O error came from.
enum Side {
    Minion(io::Error),
    Master(io::Error),
}

/// Copies between `minion` and `master` until the session ends.
pub async fn run(minion: &TcpStream, master: &TcpStream, ctl: Control<'_>) -> End {
    let activity = Activity {
        start: Instant::now(),
        to_master_ms: AtomicU64::new(0),
        to_minion_ms: AtomicU64::new(0),
    };
    let up = pump(
        minion,
        master,
        ctl.to_master,
        &activity,
        &activity.to_master_ms,
        true,
    );
    let down = pump(
        master,
        minion,
        ctl.to_minion,
        &activity,
        &activity.to_minion_ms,
        false,
    );
    let both = async { tokio::try_join!(up, down) };
    tokio::select! {
        biased;
        _ = ctl.tokens.reset.cancelled() => End::Reset,
        result = both => match result {
            Ok(_) => End::Closed,
            Err(Side::Minion(e)) => End::MinionError(e),
            Err(Side::Master(e)) => End::MasterError(e),
        },
        _ = drained(&ctl, &activity) => End::Drained,
    }
}

/// Resolves when a drain was requested and the session is idle, or at the deadline.
async fn drained(ctl: &Control<'_>, activity: &Activity) {
    let (port, drain_timeout) = (ctl.port, ctl.drain_timeout);
    tokio::select! {
        _ = ctl.tokens.drain.cancelled() => {}
        _ = ctl.shutdown.cancelled() => {}
    }
    let deadline = Instant::now() + drain_timeout;
    while !activity.is_idle(port) && Instant::now() < deadline {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        tokio::time::sleep(step).await;
    }
}

/// One direction: `from` → `to`. `from_minion` says which side errors belong to.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    counter: &IntCounter,
    activity: &Activity,
    slot: &AtomicU64,
    from_minion: bool,
) -> Result<(), Side> {
    let read_err = |e| {
        if from_minion {
            Side::Minion(e)
        } else {
            Side::Master(e)
        }
    };
    let write_err = |e| {
        if from_minion {
            Side::Master(e)
        } else {
            Side::Minion(e)
        }
    };
    loop {
        from.readable().await.map_err(read_err)?;
        // Borrow a buffer only while this readiness lasts.
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.try_read(&mut buf) {
                Ok(0) => {
                    // Half-close: pass the EOF on, keep the other direction.
                    return match SockRef::from(to).shutdown(Shutdown::Write) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                        Err(e) => Err(write_err(e)),
                    };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            counter.inc_by(n as u64);
            activity.touch(slot);
            write_all(to, &buf[..n]).await.map_err(write_err)?;
        }
    }
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
