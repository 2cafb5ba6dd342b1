//! When a queue's batches run, and what the queue may hold: pure functions of the queue's
//! groups, the time, the free capacity and the parameters, so that TF Serving's
//! scheduling rules can be tested without a clock, a runtime or workers.
//!
//! The rules (TensorFlow's `SharedBatchScheduler`, as TF Serving configures it):
//! - a batch runs only while a batch slot is free (`num_batch_threads`, and here also
//!   one per worker holding the version);
//! - a group whose queued rows fill a batch runs at once; an under-full one runs once its
//!   *own* oldest request has waited `batch_timeout_micros` (0: at once);
//! - of the groups that may run, the one whose oldest request has waited longest goes
//!   first;
//! - a batch takes requests in arrival order while they fit `max_execution_batch_size`
//!   rows (a request is never split; one larger than that runs alone);
//! - a request that needs a new batch is refused once the queue holds
//!   `max_enqueued_batches` batches, counted over the whole queue.

use std::time::Duration;
use tokio::time::Instant;

/// What the policy needs to know of one group of requests that may share a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// When its oldest queued request arrived.
    pub oldest: Instant,
    /// Rows queued in it.
    pub rows: usize,
}

/// What a queue does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Form a batch from this group (an index into the views) now.
    Run(usize),
    /// Nothing may run before then (an under-full batch's timeout); look again at that time
    /// or when something changes.
    WaitUntil(Instant),
    /// Nothing to do until a request arrives or a batch slot frees up.
    Idle,
}

/// The next step for a queue whose groups are `groups`, with `free` batch slots.
pub fn next(
    groups: &[GroupView],
    now: Instant,
    free: usize,
    timeout: Duration,
    batch_rows: usize,
) -> Next {
    if free == 0 {
        return Next::Idle;
    }
    let mut ready: Option<(Instant, usize)> = None;
    let mut wake: Option<Instant> = None;
    for (i, g) in groups.iter().enumerate() {
        if g.rows == 0 {
            continue;
        }
        let due = g.oldest + timeout;
        if g.rows >= batch_rows || now >= due {
            if ready.is_none_or(|(oldest, _)| g.oldest < oldest) {
                ready = Some((g.oldest, i));
            }
        } else {
            wake = Some(wake.map_or(due, |w: Instant| w.min(due)));
        }
    }
    match (ready, wake) {
        (Some((_, i)), _) => Next::Run(i),
        (None, Some(at)) => Next::WaitUntil(at),
        (None, None) => Next::Idle,
    }
}

/// How many of a group's requests (their rows, in arrival order) the next batch takes: as
/// many as fit `batch_rows`, and at least one.
pub fn take(rows: impl IntoIterator<Item = usize>, batch_rows: usize) -> usize {
    let mut n = 0;
    let mut sum = 0;
    for r in rows {
        if n > 0 && sum + r > batch_rows {
            break;
        }
        sum += r;
        n += 1;
    }
    n
}

/// How a group's requests pack into batches: how many batches, and the rows of the last
/// (open) one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packing {
    pub batches: usize,
    pub open_rows: usize,
}

impl Packing {
    /// The packing after one more request of `rows`, and whether it opened a batch.
    pub fn add(self, rows: usize, batch_rows: usize) -> (Packing, bool) {
        if self.batches > 0 && self.open_rows + rows <= batch_rows {
            (
                Packing {
                    batches: self.batches,
                    open_rows: self.open_rows + rows,
                },
                false,
            )
        } else {
            (
                Packing {
                    batches: self.batches + 1,
                    open_rows: rows,
                },
                true,
            )
        }
    }

    /// The packing of requests of these rows, in order.
    pub fn of(rows: impl IntoIterator<Item = usize>, batch_rows: usize) -> Packing {
        rows.into_iter()
            .fold(Packing::default(), |p, r| p.add(r, batch_rows).0)
    }
}

/// Whether a request of `rows` may join a group packed as `group`, in a queue holding
/// `enqueued` batches in all: the group's new packing, or the refusal (TensorFlow refuses
/// a task that needs a new batch once `max_enqueued_batches` are enqueued).
pub fn admit(
    group: Packing,
    enqueued: usize,
    rows: usize,
    batch_rows: usize,
    max_enqueued: usize,
) -> Result<Packing, usize> {
    let (packed, opened) = group.add(rows, batch_rows);
    if opened && enqueued >= max_enqueued {
        return Err(enqueued);
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn without_a_timeout_whatever_is_queued_runs_while_a_slot_is_free() {
        let t0 = Instant::now();
        let g = [GroupView {
            oldest: t0,
            rows: 1,
        }];
        assert_eq!(next(&g, t0, 1, Duration::ZERO, 8), Next::Run(0));
        assert_eq!(next(&g, t0, 0, Duration::ZERO, 8), Next::Idle, "no slot");
        assert_eq!(next(&[], t0, 1, Duration::ZERO, 8), Next::Idle);
    }

    #[test]
    fn an_under_full_batch_waits_from_its_own_oldest_request() {
        let t0 = Instant::now();
        let timeout = 5 * MS;
        let g = [GroupView {
            oldest: at(t0, 2),
            rows: 3,
        }];
        assert_eq!(
            next(&g, at(t0, 4), 1, timeout, 8),
            Next::WaitUntil(at(t0, 7)),
            "due 5 ms after its oldest request, not after the group's first"
        );
        assert_eq!(next(&g, at(t0, 7), 1, timeout, 8), Next::Run(0));
        // A full batch does not wait.
        let full = [GroupView {
            oldest: at(t0, 4),
            rows: 8,
        }];
        assert_eq!(next(&full, at(t0, 4), 1, timeout, 8), Next::Run(0));
    }

    #[test]
    fn the_longest_waiting_ready_group_goes_first_and_the_earliest_due_sets_the_wake() {
        let t0 = Instant::now();
        let groups = [
            GroupView {
                oldest: at(t0, 3),
                rows: 8,
            },
            GroupView {
                oldest: at(t0, 1),
                rows: 8,
            },
            GroupView {
                oldest: at(t0, 0),
                rows: 0,
            },
        ];
        assert_eq!(next(&groups, at(t0, 3), 1, 10 * MS, 8), Next::Run(1));
        let waiting = [
            GroupView {
                oldest: at(t0, 3),
                rows: 1,
            },
            GroupView {
                oldest: at(t0, 1),
                rows: 1,
            },
        ];
        assert_eq!(
            next(&waiting, at(t0, 3), 2, 10 * MS, 8),
            Next::WaitUntil(at(t0, 11))
        );
    }

    #[test]
    fn batches_take_requests_in_order_while_they_fit() {
        assert_eq!(take([3, 3, 3], 8), 2);
        assert_eq!(
            take([9, 1], 8),
            1,
            "a request larger than a batch runs alone"
        );
        assert_eq!(take([1, 1, 1], 8), 3);
        assert_eq!(take(std::iter::empty(), 8), 0);
    }

    #[test]
    fn the_queue_bound_counts_batches_over_every_group() {
        // Requests of 3 rows into batches of 4: each opens a batch.
        let g = Packing::of([3, 3], 4);
        assert_eq!(
            g,
            Packing {
                batches: 2,
                open_rows: 3
            }
        );
        // A 1-row request fits the open batch, even at the bound.
        assert_eq!(
            admit(g, 2, 1, 4, 2),
            Ok(Packing {
                batches: 2,
                open_rows: 4
            })
        );
        // One that needs a new batch is refused at the bound, naming what is enqueued.
        assert_eq!(admit(g, 2, 2, 4, 2), Err(2));
        // Another group's batches count too: a new group's first request needs a batch.
        assert_eq!(admit(Packing::default(), 2, 1, 4, 2), Err(2));
        assert!(admit(Packing::default(), 1, 1, 4, 2).is_ok());
    }
}
