//! A timer precise to microseconds for `batch_timeout_micros`. tokio's timer wheel ticks in
//! milliseconds, so a 500 µs timeout used to wait 1 to 2.5 ms. One thread serves every
//! queue: it sleeps until shortly before the earliest due time (with the kernel's timer
//! slack cut from 50 µs to 1 ns) and spins the rest, since a sleep on a VM ends 20 to 50 µs
//! late; then it tells the queues that are due. The spin costs at most `SPIN` of one core
//! per timeout that fires. The batch then still needs a hand-off to the event loop, so
//! the queues ask for their time a little early, by a lead learned from when timed batches
//! actually start (`Timer::lead`, at most `MAX_LEAD_NS`): a timed batch starts within a
//! few µs of its due time on the median, never more than 40 µs early.

use parking_lot::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

/// How long before a due time the timer thread stops sleeping and spins.
const SPIN: std::time::Duration = std::time::Duration::from_micros(60);

/// Something to tell when its time comes (a queue, which then forms its batch).
pub trait Due: Send + Sync {
    fn due(&self);
}

struct Entry {
    at: Instant,
    seq: u64,
    who: Weak<dyn Due>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stopped: bool,
}

/// The timer thread's handle; the thread stops when the last handle is dropped.
pub struct Timer {
    shared: Arc<(Mutex<State>, Condvar)>,
    /// How long before its due time a timed batch should be formed, ns: what the hand-off
    /// from this thread to the event loop takes, learned from when batches start.
    lead_ns: AtomicI64,
}

/// The most a timed batch is formed early (`batch_timeout_micros` is honoured to ±50 µs).
const MAX_LEAD_NS: i64 = 40_000;

impl Timer {
    /// Starts the thread; what it calls runs inside `runtime` (queues spawn batches).
    pub fn start(runtime: tokio::runtime::Handle) -> std::io::Result<Timer> {
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("tfgate-batch-timer".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                // The default 50 µs of slack would make every timeout up to 50 µs late.
                let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
                run(&thread_shared);
            })?;
        Ok(Timer {
            shared,
            lead_ns: AtomicI64::new(0),
        })
    }

    /// How long before its due time to form a timed batch.
    pub fn lead(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.lead_ns.load(Ordering::Relaxed).max(0) as u64)
    }

    /// A timed batch that was due at `due` starts now: the lead moves a quarter of the way
    /// toward what would have made it start on time (between 0 and `MAX_LEAD_NS`).
    pub fn started(&self, due: Instant) {
        let now = Instant::now();
        let late = if now >= due {
            i64::try_from((now - due).as_nanos()).unwrap_or(i64::MAX)
        } else {
            -i64::try_from((due - now).as_nanos()).unwrap_or(i64::MAX)
        };
        let lead = self.lead_ns.load(Ordering::Relaxed);
        let next = (lead + late / 4).clamp(0, MAX_LEAD_NS);
        // Relaxed: a hint; racing updates lose a sample at worst.
        self.lead_ns.store(next, Ordering::Relaxed);
    }

    /// Tells `who` at `at` (or at once if that has passed). Earlier calls still fire.
    pub fn at(&self, at: Instant, who: Weak<dyn Due>) {
        let (lock, wake) = &*self.shared;
        let mut s = lock.lock();
        s.seq += 1;
        let seq = s.seq;
        let earliest = s.heap.peek().is_none_or(|Reverse(e)| at < e.at);
        s.heap.push(Reverse(Entry { at, seq, who }));
        if earliest {
            wake.notify_one();
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().stopped = true;
        wake.notify_one();
    }
}

fn run(shared: &(Mutex<State>, Condvar)) {
    let (lock, wake) = shared;
    let mut s = lock.lock();
    loop {
        if s.stopped {
            return;
        }
        let now = Instant::now();
        let mut fired = Vec::new();
        while s.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = s.heap.pop() {
                fired.push(e.who);
            }
        }
        if !fired.is_empty() {
            drop(s);
            for who in fired.iter().filter_map(Weak::upgrade) {
                who.due();
            }
            s = lock.lock();
            continue;
        }
        match s.heap.peek().map(|Reverse(e)| e.at) {
            // A sleep ends 20-50 µs late on a VM: sleep until shortly before, then spin.
            Some(at) if at > now + SPIN => {
                wake.wait_until(&mut s, at - SPIN);
            }
            Some(_) => {
                drop(s);
                std::hint::spin_loop();
                std::thread::yield_now();
                s = lock.lock();
            }
            None => wake.wait(&mut s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Stamp(Mutex<Option<Instant>>);

    impl Due for Stamp {
        fn due(&self) {
            *self.0.lock() = Some(Instant::now());
        }
    }

    #[tokio::test]
    async fn fires_at_its_time_and_earlier_ones_first() {
        let timer = Timer::start(tokio::runtime::Handle::current()).unwrap();
        let late = Arc::new(Stamp(Mutex::new(None)));
        let early = Arc::new(Stamp(Mutex::new(None)));
        let t0 = Instant::now();
        let (late_w, early_w): (Weak<dyn Due>, Weak<dyn Due>) =
            (Arc::downgrade(&late) as _, Arc::downgrade(&early) as _);
        timer.at(t0 + Duration::from_millis(40), late_w);
        timer.at(t0 + Duration::from_millis(10), early_w);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (e, l) = (early.0.lock().unwrap(), late.0.lock().unwrap());
        assert!(e >= t0 + Duration::from_millis(10) && e < l, "{e:?} {l:?}");
        assert!(l >= t0 + Duration::from_millis(40));
    }
}
