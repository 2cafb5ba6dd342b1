//! A doorbell: a pipe one process writes a byte into to wake a peer that waits in an event
//! loop (epoll, tokio's reactor) rather than on a futex. The gateway makes one per worker
//! incarnation, keeps the [`Chime`] (the read end) and hands the [`Ringer`] (the write
//! end) over with the segment; the worker rings when it pushes a response while the
//! gateway's receiver has announced that it parks (the futex's handshake, `wake.rs`). So a
//! response wakes the task that completes the caller straight from the kernel's event
//! queue, with no thread of the gateway's in between.
//!
//! A ring is only a hint: a peer that rings too often causes spurious wake-ups, one that
//! never rings is caught by the waiter's timeout. A pipe, not an eventfd, because tokio
//! adopts a pipe's read end safely (`tokio::net::unix::pipe::Receiver::from_owned_fd`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::pipe::{pipe_with, PipeFlags};

/// A new doorbell: its ringer (for the worker) and its chime (for the gateway), both
/// non-blocking and close-on-exec.
pub fn doorbell() -> io::Result<(Ringer, Chime)> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok((Ringer(write), Chime(read)))
}

/// The side that rings.
#[derive(Debug)]
pub struct Ringer(OwnedFd);

impl Ringer {
    /// The ringer the gateway sent over the control socket.
    pub fn from_fd(fd: OwnedFd) -> Ringer {
        Ringer(fd)
    }

    /// Rings. A full pipe (EAGAIN) means it is ringing already; other errors are ignored
    /// too: the waiter's timeout covers a lost ring.
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.0, &[1]);
    }
}

impl AsFd for Ringer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The side that hears rings.
#[derive(Debug)]
pub struct Chime(OwnedFd);

impl Chime {
    /// Silences it; true if it had rung since the last call.
    pub fn clear(&self) -> bool {
        let mut buf = [0u8; 64];
        let mut rang = false;
        while let Ok(n) = rustix::io::read(&self.0, &mut buf) {
            if n == 0 {
                break; // every ringer is gone
            }
            rang = true;
        }
        rang
    }

    /// Waits up to `timeout` for a ring (a blocking wait, for threads).
    pub fn wait(&self, timeout: Duration) {
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        // EINTR and timeouts just mean "look again".
        let _ = poll(&mut fds, Some(&ts));
    }

    /// Another fd for the same chime, for an event loop to watch.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn rings_and_clears() {
        let (ringer, chime) = doorbell().expect("pipe");
        assert!(!chime.clear(), "silent at first");
        ringer.ring();
        ringer.ring();
        assert!(chime.clear());
        assert!(!chime.clear(), "one clear silences every ring before it");
        let t = Instant::now();
        chime.wait(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(15));
        ringer.ring();
        let t = Instant::now();
        chime.wait(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1), "a ring ends the wait");
    }
}
