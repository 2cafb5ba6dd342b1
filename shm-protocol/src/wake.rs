//! Spin-then-park wake-ups on a 32-bit word in the shared region.
//!
//! A waiter first spins for [`SpinConfig::spin`] re-checking its condition (a ring index),
//! then parks in `futex(FUTEX_WAIT)` on a [`WakeWord`] — a *shared* futex, without
//! `FUTEX_PRIVATE_FLAG`, because the waker is another process — always with a timeout so
//! that a waiter whose peer died returns.
//!
//! # Latency / CPU trade-off
//!
//! Measured with `shm-bench` on the 2-vCPU development VM (small message, round trip):
//! * Under load a spinning waiter sees the next descriptor within ~0.1–1 µs; the round
//!   trip is ~1.3–2.7 µs (a Unix socket: 8–40 µs). Nobody enters the kernel, but each
//!   waiting side burns its core for up to `spin` per wait.
//! * Parking at once (`spin = 0`) costs a `futex(FUTEX_WAKE)` syscall on the producer
//!   and a scheduler wake-up on the consumer for *every* message: ~40 µs round trip
//!   under load on this VM, but no CPU is spent waiting.
//! * At idle (a message every 1.5 ms) both sides are parked whatever the spin is, and the
//!   round trip pays one wake-up. The side waiting for an answer should then park at
//!   once rather than spin: [`WakeWord::notify`] tells the sender whether it had to wake
//!   its peer, and the gateway's receiver uses that (7.5 µs instead of 17 µs on the 2-vCPU
//!   VM, below a Unix socket's 10.5 µs; docs/benchmarks.md).
//!
//! After the first 5 µs of the budget the spin loop calls `sched_yield` between
//! checks: this VM's scheduler likes to wake the peer onto the *waiter's* busy vCPU, and a
//! pure spin would then delay the peer by the whole budget (we measured idle round trips
//! of `2 × spin`, 120 µs at 50 µs and 420 µs at 200 µs, before adding the yield).
//!
//! The default of 50 µs serves back-to-back traffic and batch pipelines (gaps of a few
//! µs) at spin latency while bounding the waste at idle to 50 µs per message (5 % of a
//! core at 1,000 idle messages per second).

//! # Handshake (no lost wake-ups)
//!
//! ```text
//! waiter                                  waker (after publishing, e.g. head.store)
//! s = seq.load(Acquire)                   fence(SeqCst)                       // F2
//! waiters.store(1)                        if waiters.load() != 0 {
//! fence(SeqCst)                    // F1      seq.fetch_add(1); futex_wake(seq)
//! if condition() { return }               }
//! futex_wait(seq, s, timeout)
//! ```
//! A waiter in an event loop runs the same handshake with a doorbell (`doorbell.rs`) instead of the
//! futex: `announce` (the left column up to the check), then await the doorbell, then
//! `retract`; the waker's `notify_doorbell` rings the doorbell where `notify` would
//! `futex_wake`.
//!
//! F1 and F2 order "announce, then check" against "publish, then check": either the waker
//! sees the waiter flag (and bumps `seq`, so `futex_wait` either returns `EAGAIN` or is
//! woken), or the waiter's `condition()` sees the published index. A peer that scribbles
//! over these words can cause spurious wake-ups or missed ones; the timeout bounds both.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::futex;

use crate::doorbell::{Chime, Ringer};

/// How long a waiter spins before parking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinConfig {
    /// Busy-wait budget before the futex wait; `Duration::ZERO` parks immediately.
    /// Default 50 µs.
    pub spin: Duration,
}

impl Default for SpinConfig {
    fn default() -> Self {
        SpinConfig {
            spin: Duration::from_micros(50),
        }
    }
}

/// Spin without yielding for at most this long: a busy peer answers within ~1-3 µs.
const PURE_SPIN: Duration = Duration::from_micros(5);

/// The longest single futex wait; longer waits loop, so a corrupt word costs at most this.
const MAX_PARK: Duration = Duration::from_millis(100);

/// A futex word plus the "a waiter is parked" flag, on its own cache line.
#[repr(C, align(64))]
pub struct WakeWord {
    /// Bumped by the waker whenever it saw a waiter; the futex word.
    seq: AtomicU32,
    /// Non-zero while the waiter is (about to be) parked.
    waiters: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<WakeWord>() == 64);
const _: () = assert!(std::mem::align_of::<WakeWord>() == 64);

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Ready,
    TimedOut,
}

impl WakeWord {
    /// Wakes the waiter if it announced that it parks; true when it did (the waiter was
    /// parked, or about to be). Call after publishing the change the waiter waits for
    /// (with Release or stronger).
    pub fn notify(&self) -> bool {
        if !self.claim_waiter() {
            return false;
        }
        // Shared futex (no PRIVATE flag): the waiter is another process. Errors are
        // ignored: the waiter's timeout covers a failed wake.
        let _ = futex::wake(&self.seq, futex::Flags::empty(), u32::MAX >> 1);
        true
    }

    /// Like [`WakeWord::notify`], for a waiter that parks in an event loop on `doorbell`
    /// instead of on the futex.
    pub fn notify_doorbell(&self, doorbell: &Ringer) -> bool {
        if !self.claim_waiter() {
            return false;
        }
        doorbell.ring();
        true
    }

    /// True when a waiter announced that it parks; takes its announcement and bumps the
    /// futex word, so exactly one notify pays for waking it.
    fn claim_waiter(&self) -> bool {
        // F2: orders our preceding publish (e.g. `head.store(Release)`) before the load
        // of `waiters`; pairs with F1 in `announce`.
        fence(Ordering::SeqCst);
        // Relaxed: the fences (F2 here, F1 in `announce`) provide the ordering. The
        // plain load keeps the common case (nobody parked) free of an RMW; the swap makes
        // only the first notify after a park pay for the wake-up, while the waiter is
        // still waking up, later notifies see 0.
        if self.waiters.load(Ordering::Relaxed) == 0 || self.waiters.swap(0, Ordering::Relaxed) == 0
        {
            return false;
        }
        // Release: pairs with the waiter's Acquire load of `seq`; the kernel compares
        // the value atomically in FUTEX_WAIT, so a bump before the wait makes it
        // return EAGAIN instead of sleeping.
        self.seq.fetch_add(1, Ordering::Release);
        true
    }

    /// Announces that the caller is about to park, then checks `ready()` once more: true
    /// means it is ready after all (the announcement is withdrawn; do not park). Otherwise
    /// the caller parks (on the futex word's value returned through `seq`, or its
    /// doorbell) and calls [`WakeWord::retract`] when it wakes. This is the half of the
    /// handshake an event loop's task runs itself.
    pub fn announce(&self, mut ready: impl FnMut() -> bool) -> Result<(), u32> {
        // Acquire: pairs with the waker's Release `fetch_add`.
        let seq = self.seq.load(Ordering::Acquire);
        // Relaxed store, ordered by F1 below.
        self.waiters.store(1, Ordering::Relaxed);
        // F1: orders the announcement before re-checking the condition; pairs with F2
        // in `claim_waiter`.
        fence(Ordering::SeqCst);
        if ready() {
            self.retract();
            return Ok(());
        }
        Err(seq)
    }

    /// Withdraws an announcement (after waking, or when the caller did not park).
    pub fn retract(&self) {
        // Relaxed: only a hint for the waker; a stale 1 costs one spurious wake.
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// Spins for `spin.spin` (yielding after the first few µs) or until `deadline`; true
    /// as soon as `ready()` is.
    fn spin(spin: SpinConfig, deadline: Instant, ready: &mut impl FnMut() -> bool) -> bool {
        if spin.spin.is_zero() {
            return false;
        }
        let start = Instant::now();
        let spin_end = start + spin.spin;
        let pure_end = start + spin.spin.min(PURE_SPIN);
        loop {
            for _ in 0..32 {
                std::hint::spin_loop();
                if ready() {
                    return true;
                }
            }
            let now = Instant::now();
            if now >= spin_end || now >= deadline {
                return false;
            }
            if now >= pure_end {
                // The peer we are waiting for may have been woken onto *our* CPU (the
                // scheduler packs tasks onto busy vCPUs); yielding lets it run now
                // instead of after our spin budget. Returns at once if nobody waits.
                std::thread::yield_now();
            }
        }
    }

    /// Waits until `ready()` is true or `deadline` passes: spin for `spin.spin`, then park
    /// on `doorbell` (a waker that rings it, [`WakeWord::notify_doorbell`]).
    pub fn wait_with_doorbell(
        &self,
        spin: SpinConfig,
        deadline: Instant,
        doorbell: &Chime,
        mut ready: impl FnMut() -> bool,
    ) -> Wait {
        if ready() || Self::spin(spin, deadline, &mut ready) {
            return Wait::Ready;
        }
        loop {
            if self.announce(&mut ready).is_ok() {
                return Wait::Ready;
            }
            let now = Instant::now();
            if now >= deadline {
                self.retract();
                return Wait::TimedOut;
            }
            doorbell.wait((deadline - now).min(MAX_PARK));
            doorbell.clear();
            self.retract();
            if ready() {
                return Wait::Ready;
            }
        }
    }

    /// Waits until `ready()` is true or `deadline` passes: spin for `spin.spin`, then park.
    pub fn wait_until(
        &self,
        spin: SpinConfig,
        deadline: Instant,
        mut ready: impl FnMut() -> bool,
    ) -> Wait {
        if ready() || Self::spin(spin, deadline, &mut ready) {
            return Wait::Ready;
        }
        loop {
            let seq = match self.announce(&mut ready) {
                Ok(()) => return Wait::Ready,
                Err(seq) => seq,
            };
            let now = Instant::now();
            if now >= deadline {
                self.retract();
                return Wait::TimedOut;
            }
            let park = (deadline - now).min(MAX_PARK);
            let ts = futex::Timespec {
                tv_sec: park.as_secs() as _,
                tv_nsec: park.subsec_nanos() as _,
            };
            // Shared futex (flags empty = no FUTEX_PRIVATE_FLAG); relative timeout.
            // EAGAIN (seq changed), EINTR and ETIMEDOUT all just mean "look again".
            let _ = futex::wait(&self.seq, futex::Flags::empty(), seq, Some(&ts));
            self.retract();
            if ready() {
                return Wait::Ready;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn wait_times_out_and_wakes() {
        let w = Arc::new((
            WakeWord {
                seq: AtomicU32::new(0),
                waiters: AtomicU32::new(0),
            },
            AtomicBool::new(false),
        ));
        let t0 = Instant::now();
        let r = w.0.wait_until(
            SpinConfig::default(),
            t0 + Duration::from_millis(30),
            || w.1.load(Ordering::Acquire),
        );
        assert_eq!(r, Wait::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert!(!w.0.notify(), "nobody is parked: nothing to wake");
        assert!(t0.elapsed() < Duration::from_millis(500));

        let w2 = w.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.1.store(true, Ordering::Release);
            w2.0.notify()
        });
        let t0 = Instant::now();
        let r = w.0.wait_until(
            SpinConfig {
                spin: Duration::ZERO,
            },
            t0 + Duration::from_secs(10),
            || w.1.load(Ordering::Acquire),
        );
        assert_eq!(r, Wait::Ready);
        // Woken by the futex, not by the 100 ms MAX_PARK re-check.
        assert!(
            t0.elapsed() < Duration::from_millis(90),
            "{:?}",
            t0.elapsed()
        );
        assert!(h.join().unwrap(), "the waiter was parked: notify woke it");
    }
}
