//! Inline or pooled: where TensorFlow runs one call's ops. With the inter-op pool (TF
//! Serving's default) the session hands every op to a pool thread, a thread wake-up per
//! hop; inline (`RunOptions.inter_op_thread_pool = -1`, what
//! `inter_op_parallelism_threads = -1` does for a whole session) runs them on the calling
//! thread. A small graph on a few cores runs faster inline (the MLP's one-row run: 27 µs
//! against 66 µs on 2 cores); a graph with independent branches and cores to spare may not.
//! So the worker measures both for each signature and batch size class and keeps using the
//! faster, trying the other again now and then: the choice follows the model and the load.
//! Intra-op parallelism (within an op's kernel) is the same either way.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where a run's ops execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunMode {
    /// On the calling thread.
    Inline,
    /// On the session's inter-op thread pool.
    Pool,
}

impl RunMode {
    pub fn name(self) -> &'static str {
        match self {
            RunMode::Inline => "inline",
            RunMode::Pool => "pool",
        }
    }

    fn index(self) -> usize {
        match self {
            RunMode::Inline => 0,
            RunMode::Pool => 1,
        }
    }

    fn other(self) -> RunMode {
        match self {
            RunMode::Inline => RunMode::Pool,
            RunMode::Pool => RunMode::Inline,
        }
    }
}

/// Runs of each mode measured before the faster one is picked.
const FIRST_SAMPLES: usize = 5;
/// After that, one run in this many tries the other mode, so a change of load is noticed.
const EXPLORE_EVERY: u64 = 64;
/// Weight of a new run in a mode's moving estimate.
const EWMA_WEIGHT: f64 = 0.125;
/// One run counts at most this many times the estimate (a descheduled run says little).
const OUTLIER_CAP: f64 = 4.0;

/// What is known of one signature at one batch size class: the pure policy, fed with
/// measured run times.
#[derive(Debug, Default, Clone)]
pub struct Learner {
    first: [Vec<u64>; 2],
    estimate: [Option<f64>; 2],
    runs: u64,
}

impl Learner {
    /// The mode the next run should use.
    pub fn choose(&self) -> RunMode {
        let (inline, pool) = (self.estimate[0], self.estimate[1]);
        let (Some(inline), Some(pool)) = (inline, pool) else {
            // Still sampling: alternate, the mode with fewer samples first.
            let samples = |i: usize| {
                if self.estimate[i].is_some() {
                    FIRST_SAMPLES
                } else {
                    self.first[i].len()
                }
            };
            return if samples(0) <= samples(1) {
                RunMode::Inline
            } else {
                RunMode::Pool
            };
        };
        let best = if inline <= pool {
            RunMode::Inline
        } else {
            RunMode::Pool
        };
        if self.runs % EXPLORE_EVERY == EXPLORE_EVERY - 1 {
            best.other()
        } else {
            best
        }
    }

    /// Records how long a run in `mode` took.
    pub fn record(&mut self, mode: RunMode, ns: u64) {
        self.runs += 1;
        let i = mode.index();
        match self.estimate[i] {
            Some(e) => {
                let x = (ns as f64).min(e * OUTLIER_CAP);
                self.estimate[i] = Some(e + EWMA_WEIGHT * (x - e));
            }
            None => {
                self.first[i].push(ns);
                if self.first[i].len() >= FIRST_SAMPLES {
                    let mut s = std::mem::take(&mut self.first[i]);
                    s.sort_unstable();
                    self.estimate[i] = Some(s[s.len() / 2] as f64);
                }
            }
        }
    }

    /// The estimated run time of each mode, ns, once known.
    #[cfg(test)]
    pub fn estimates(&self) -> (Option<f64>, Option<f64>) {
        (self.estimate[0], self.estimate[1])
    }
}

/// The batch size class of a run: rows rounded up to a power of two.
fn size_class(rows: usize) -> u32 {
    rows.max(1).next_power_of_two().trailing_zeros()
}

/// One loaded version's choices, by signature and batch size class.
#[derive(Debug, Default)]
pub struct RunModes {
    /// The session runs everything inline already (`inter_op_parallelism_threads < 0`).
    always_inline: bool,
    learners: Mutex<HashMap<(String, u32), Learner>>,
}

impl RunModes {
    /// `session_inline`: the session's config already runs every op on the caller.
    pub fn new(session_inline: bool) -> RunModes {
        RunModes {
            always_inline: session_inline,
            learners: Mutex::default(),
        }
    }

    /// The mode for a run of `signature` with `rows` rows.
    pub fn choose(&self, signature: &str, rows: usize) -> RunMode {
        if self.always_inline {
            return RunMode::Inline;
        }
        self.learners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(signature.to_string(), size_class(rows)))
            .map_or(RunMode::Inline, Learner::choose)
    }

    /// Records a successful run.
    pub fn record(&self, signature: &str, rows: usize, mode: RunMode, ns: u64) {
        if self.always_inline {
            return;
        }
        self.learners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((signature.to_string(), size_class(rows)))
            .or_default()
            .record(mode, ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(inline_ns: u64, pool_ns: u64) -> Learner {
        let mut l = Learner::default();
        for _ in 0..2 * FIRST_SAMPLES {
            let mode = l.choose();
            l.record(
                mode,
                if mode == RunMode::Inline {
                    inline_ns
                } else {
                    pool_ns
                },
            );
        }
        l
    }

    #[test]
    fn samples_both_modes_then_keeps_the_faster() {
        let l = learned(30_000, 60_000);
        assert_eq!(l.estimates(), (Some(30_000.0), Some(60_000.0)));
        assert_eq!(l.choose(), RunMode::Inline);
        let l = learned(90_000, 60_000);
        assert_eq!(l.choose(), RunMode::Pool);
    }

    #[test]
    fn tries_the_other_mode_now_and_then_and_follows_a_change() {
        let mut l = learned(30_000, 60_000);
        let mut explored = 0;
        // The pool becomes faster (say, the machine got idle cores): the occasional
        // exploration run notices and the choice flips.
        for _ in 0..EXPLORE_EVERY * 40 {
            let mode = l.choose();
            if mode == RunMode::Pool {
                explored += 1;
            }
            l.record(
                mode,
                if mode == RunMode::Inline {
                    30_000
                } else {
                    10_000
                },
            );
        }
        assert!(explored > 0);
        assert_eq!(l.choose(), RunMode::Pool);
    }

    #[test]
    fn one_slow_run_does_not_flip_the_choice() {
        let mut l = learned(30_000, 60_000);
        l.record(RunMode::Inline, 10_000_000);
        assert_eq!(l.choose(), RunMode::Inline);
    }

    #[test]
    fn a_session_that_runs_inline_is_never_pooled() {
        let m = RunModes::new(true);
        m.record("s", 1, RunMode::Pool, 1);
        assert_eq!(m.choose("s", 1), RunMode::Inline);
        let m = RunModes::new(false);
        assert_eq!(m.choose("s", 1), RunMode::Inline, "unknown: start inline");
        assert_eq!(size_class(1), 0);
        assert_eq!(size_class(3), 2);
        assert_eq!(size_class(4), 2);
        assert_eq!(size_class(0), 0);
    }
}
