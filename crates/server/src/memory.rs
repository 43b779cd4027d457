//! Memory given back to the system once the server no longer needs it.
//!
//! The server's working set rises and falls with its agents: their queues, the deliveries in
//! flight, the connections' buffers. glibc's allocator keeps what is freed in its arenas for
//! reuse and hands memory back to the system only from the top of a heap, so after a thousand
//! subscribers with full queues had left, the server kept most of its peak: 112–198 MiB above its
//! idle baseline in the `memory-return` benchmark (issue: within 50 MiB). [`release_after_departures`]
//! asks the allocator to return the whole free pages it holds (`malloc_trim`) once agents have
//! left ([`Departures`], signalled by the driver when agents leave or are lost), which brings the
//! server back to within a few MiB of idle. Only then: a release gives pages back that a busy
//! server would soon fault in again, and it walks every arena; done every 2 s whatever happened,
//! it added tens of milliseconds to the 1 ‰ tail of fan-out deliveries. With another C library it
//! does nothing.
//!
//! The one function of the server allowed `unsafe`: a call into the C library that takes no
//! pointer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long after a departure the release waits: a wave of departures (a thousand agents saying
/// goodbye) ends first, and gets one release. Departures during the wait or the release get one
/// more after it.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The driver's word that agents left or were lost: their queues and buffers were freed.
#[derive(Clone, Debug, Default)]
pub struct Departures(Arc<Notify>);

impl Departures {
    /// Agents left in the turn just committed.
    pub fn happened(&self) {
        self.0.notify_one();
    }
}

/// Asks the allocator to return every whole free page it holds to the system. `true` when it
/// returned some (always `false` where the C library is not glibc).
pub fn release() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` takes only the number of bytes to keep at the top of the main heap
    // and is thread-safe (it locks each arena while it trims it).
    let released = unsafe { libc::malloc_trim(0) } == 1;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let released = false;
    released
}

/// Calls [`release`] on a blocking thread [`SETTLE`] after each wave of [`Departures`], until
/// `stop` completes.
pub async fn release_after_departures(departures: Departures, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = departures.0.notified() => {}
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(SETTLE) => {}
        }
        // It walks every arena: not on a worker that serves calls.
        let _ = tokio::task::spawn_blocking(release).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn free_pages_between_blocks_still_in_use_are_returned() {
        // Blocks under glibc's mmap threshold (128 KiB) come from a heap; freeing every other one
        // leaves whole free pages between live blocks, which only a trim gives back.
        let mut blocks: Vec<Vec<u8>> = (0..512).map(|i| vec![i as u8; 64 * 1024]).collect();
        let kept: Vec<Vec<u8>> = blocks.drain(..).enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, b)| b).collect();
        assert!(release(), "32 MiB of free blocks between live ones: some pages go back");
        assert!(kept.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == (2 * i + 1) as u8)), "live blocks intact");
    }
}
