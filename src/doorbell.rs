//! An eventfd the Raft thread parks on, rung by producers only when the
//! thread is (about to be) parked, so a busy server makes no syscall per
//! request.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Wake-up signal for a thread that parks in `poll(2)`.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
    parked: AtomicBool,
}

impl Doorbell {
    /// A new, silent doorbell.
    ///
    /// # Errors
    /// When the kernel refuses an eventfd.
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Doorbell {
            // SAFETY: `fd` is a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            parked: AtomicBool::new(false),
        })
    }

    /// Producer side: wakes the consumer if it is parked (or parking).
    pub fn ring(&self) {
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.ring_always();
        }
    }

    /// Wakes the consumer unconditionally (shutdown).
    pub fn ring_always(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. EAGAIN (counter
        // saturated) still leaves the fd readable, which is all we need.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }

    /// Consumer side, step 1: announce parking. The consumer must re-check
    /// its queues after this and before [`Doorbell::park`].
    pub fn prepare_park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    /// Consumer side: gives up parking (work was found after `prepare_park`).
    pub fn cancel_park(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Consumer side, step 2: sleeps until the doorbell rings, `other` (if
    /// any) becomes readable, or `timeout_ms` passes; then drains the bell.
    pub fn park(&self, other: Option<RawFd>, timeout_ms: i32) {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: other.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds (a negative fd is ignored).
        unsafe {
            libc::poll(fds.as_mut_ptr(), 2, timeout_ms);
        }
        self.parked.store(false, Ordering::SeqCst);
        // Drain the bell only when it rang: a wake-up by `other` (a WAL
        // completion) or by the timeout would pay a read syscall for
        // nothing. A ring landing after the poll stays counted in the
        // eventfd, so the next park's poll returns at once and drains it.
        if fds[0].revents != 0 {
            let mut buf = 0u64;
            // SAFETY: reads at most 8 bytes into a live u64; EAGAIN is fine.
            unsafe {
                libc::read(self.fd.as_raw_fd(), (&raw mut buf).cast(), 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn ring_wakes_a_parked_thread() {
        let bell = Arc::new(Doorbell::new().unwrap());
        bell.prepare_park();
        let b = bell.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.ring();
        });
        let start = Instant::now();
        bell.park(None, 10_000);
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn ring_without_parking_is_silent() {
        let bell = Doorbell::new().unwrap();
        bell.ring();
        let start = Instant::now();
        bell.park(None, 50);
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}
