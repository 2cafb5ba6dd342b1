//! One servable's batch queue. Requests wait here, in groups of requests that may share a
//! batch (`merge::same_group`), and leave as batches when `policy::next` says so. The
//! state sits behind a mutex that whoever changes it takes — the request that arrives, the
//! batch that finishes, the timer that fires — and no task of the queue's own stands in
//! between: a lone request on an idle queue forms its batch of one and runs it in its own
//! task, as if there were no queue.

use super::merge::same_group;
use super::params::Parameters;
use super::policy::{self, GroupView, Next, Packing};
use super::runner::Runner;
use super::threads::Waiter;
use super::timer::Due;
use super::{Shared, Stats};
use crate::error::ServingError;
use crate::monitoring::series;
use crate::servables::ServableId;
use crate::validation::ValidRun;
use crate::workers::RunOutput;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A request's answer.
pub type Answer = Result<RunOutput, ServingError>;

/// A request waiting for its batch.
pub struct Task {
    pub run: ValidRun,
    pub rows: usize,
    pub reply: oneshot::Sender<Answer>,
    pub enqueued: Instant,
    /// How long it waited in the queue, µs (set when its batch takes it).
    pub queue_us: u64,
    id: u64,
}

struct Group {
    tasks: VecDeque<Task>,
    rows: usize,
    packing: Packing,
}

#[derive(Default)]
struct State {
    groups: Vec<Group>,
    /// Batches formed and not yet answered.
    in_flight: usize,
    /// Batches the queued requests fill, over every group (`max_enqueued_batches`).
    enqueued: usize,
    next_id: u64,
    /// When the timer was last asked to wake the queue (none pending: `None`).
    armed: Option<Instant>,
}

/// A batch, holding its slots (the queue's and a shared batch thread's) until it is
/// dropped, when the queue forms its next.
pub struct Batch<R: Runner> {
    pub tasks: Vec<Task>,
    pub queue: Arc<Queue<R>>,
    /// When an under-full batch formed because its timeout came was due to start.
    pub due: Option<Instant>,
}

impl<R: Runner> Batch<R> {
    /// The batch starts now: a timed one tells the timer how late (or early) it is.
    pub fn started(&self) {
        if let Some(due) = self.due {
            self.queue.shared.timer.started(due.into_std());
        }
    }
}

impl<R: Runner> Drop for Batch<R> {
    fn drop(&mut self) {
        self.queue.finish();
    }
}

/// How a request left `Queue::submit`.
pub enum Submitted<R: Runner> {
    /// It is a batch of its own, to run now in the caller's task.
    Alone(Batch<R>),
    /// It waits for a batch; the answer comes here.
    Queued(oneshot::Receiver<Answer>),
}

/// One servable's queue.
pub struct Queue<R: Runner> {
    pub servable: ServableId,
    pub params: Parameters,
    pub runner: R,
    shared: Arc<Shared>,
    /// What runs a formed batch (given, so that the queue does not know how batches run).
    start: fn(Batch<R>),
    state: Mutex<State>,
    me: Weak<Queue<R>>,
}

impl<R: Runner> Queue<R> {
    /// A queue whose formed batches `start` runs (`batch::start`: in a task of their
    /// own, answering each request).
    pub fn new(
        servable: ServableId,
        params: Parameters,
        runner: R,
        shared: Arc<Shared>,
        start: fn(Batch<R>),
    ) -> Arc<Queue<R>> {
        Arc::new_cyclic(|me| Queue {
            servable,
            params,
            runner,
            shared,
            start,
            state: Mutex::default(),
            me: me.clone(),
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Rows per batch.
    fn batch_rows(&self) -> usize {
        self.params.max_execution_batch_size.max(1)
    }

    /// Queues a request of `rows` rows (checked against `max_batch_size` already), or
    /// refuses it when it needs a new batch and the queue holds `max_enqueued_batches`.
    pub fn submit(&self, run: ValidRun, rows: usize) -> Result<Submitted<R>, ServingError> {
        let (reply, answer) = oneshot::channel();
        let now = Instant::now();
        let batch_rows = self.batch_rows();
        let (batches, id) = {
            let mut s = self.state.lock();
            let pad = self.params.pad_variable_length_inputs;
            let g = match s.groups.iter().position(|g| {
                g.tasks
                    .front()
                    .is_some_and(|t| same_group(&t.run, &run, pad))
            }) {
                Some(g) => g,
                None => {
                    s.groups.push(Group {
                        tasks: VecDeque::new(),
                        rows: 0,
                        packing: Packing::default(),
                    });
                    s.groups.len() - 1
                }
            };
            let before = s.groups[g].packing;
            let packing = match policy::admit(
                before,
                s.enqueued,
                rows,
                batch_rows,
                self.params.max_enqueued_batches,
            ) {
                Ok(p) => p,
                Err(enqueued) => {
                    if s.groups[g].tasks.is_empty() {
                        s.groups.remove(g);
                    }
                    return Err(ServingError::unavailable(format!(
                        "The batch scheduling queue to which this task was submitted is full; currently {enqueued} batches enqueued and max_enqueued_batches is {}",
                        self.params.max_enqueued_batches
                    )));
                }
            };
            s.enqueued += packing.batches - before.batches;
            s.next_id += 1;
            let id = s.next_id;
            let group = &mut s.groups[g];
            group.packing = packing;
            group.rows += rows;
            group.tasks.push_back(Task {
                run,
                rows,
                reply,
                enqueued: now,
                queue_us: 0,
                id,
            });
            (self.form(&mut s, now), id)
        };
        let mut alone = None;
        for b in batches {
            if b.tasks.len() == 1 && b.tasks[0].id == id && !self.pads(&b) {
                alone = Some(b);
            } else {
                (self.start)(b);
            }
        }
        Ok(match alone {
            Some(b) => Submitted::Alone(b),
            None => Submitted::Queued(answer),
        })
    }

    /// Whether a batch must be padded up to an allowed size (then it cannot run as is).
    fn pads(&self, b: &Batch<R>) -> bool {
        let rows: usize = b.tasks.iter().map(|t| t.rows).sum();
        super::merge::padded_size(rows, &self.params.allowed_batch_sizes) != rows
    }

    /// Forms every batch that may run now; asks the timer to come back for one that waits
    /// out its timeout, and the shared threads for one that waits for a slot.
    fn form(&self, s: &mut State, now: Instant) -> Vec<Batch<R>> {
        let Some(me) = self.me.upgrade() else {
            return Vec::new();
        };
        let capacity = self.runner.capacity(&self.servable).max(1);
        let batch_rows = self.batch_rows();
        let mut out = Vec::new();
        let mut spare_thread = false;
        loop {
            let views: Vec<GroupView> = s
                .groups
                .iter()
                .map(|g| GroupView {
                    oldest: g.tasks.front().map_or(now, |t| t.enqueued),
                    rows: g.rows,
                })
                .collect();
            let free = capacity.saturating_sub(s.in_flight);
            // A timed batch is formed this much before its due time, so that it starts
            // on time after the hand-off to the event loop (`Timer::lead`).
            let lead = self.shared.timer.lead();
            match policy::next(
                &views,
                now + lead,
                free,
                self.params.batch_timeout,
                batch_rows,
            ) {
                Next::Run(g) => {
                    let timed = (views[g].rows < batch_rows
                        && !self.params.batch_timeout.is_zero())
                    .then(|| views[g].oldest + self.params.batch_timeout);
                    let waiter: Weak<dyn Waiter> = self.me.clone();
                    if !spare_thread && !self.shared.threads.try_acquire(&waiter) {
                        break;
                    }
                    spare_thread = false;
                    let tasks = self.take(s, g, now);
                    if tasks.is_empty() {
                        spare_thread = true; // every one of them had expired
                        continue;
                    }
                    s.in_flight += 1;
                    out.push(Batch {
                        tasks,
                        queue: me.clone(),
                        due: timed,
                    });
                }
                Next::WaitUntil(at) => {
                    // `at` is already `lead` early (the policy saw `now + lead`).
                    let at = at - lead;
                    if s.armed.is_none_or(|armed| at < armed) {
                        s.armed = Some(at);
                        let due: Weak<dyn Due> = self.me.clone();
                        self.shared.timer.at(at.into_std(), due);
                    }
                    break;
                }
                Next::Idle => break,
            }
        }
        s.groups.retain(|g| !g.tasks.is_empty());
        if spare_thread {
            // Not under our lock: the release may make another queue form its batch.
            let threads = self.shared.threads.clone();
            tokio::spawn(async move { threads.release() });
        }
        out
    }

    /// Takes the next batch's requests from group `g`; answers and drops those whose
    /// caller has stopped waiting.
    fn take(&self, s: &mut State, g: usize, now: Instant) -> Vec<Task> {
        let batch_rows = self.batch_rows();
        let group = &mut s.groups[g];
        let n = policy::take(group.tasks.iter().map(|t| t.rows), batch_rows);
        let mut tasks = Vec::with_capacity(n);
        for mut t in group.tasks.drain(..n) {
            group.rows -= t.rows;
            if t.run.deadline() <= now || t.reply.is_closed() {
                let _ = t.reply.send(Err(ServingError::deadline_exceeded()));
                continue;
            }
            t.queue_us = now.saturating_duration_since(t.enqueued).as_micros() as u64;
            series::queuing(&self.params.thread_pool_name, t.queue_us);
            tasks.push(t);
        }
        let before = group.packing;
        group.packing = Packing::of(group.tasks.iter().map(|t| t.rows), batch_rows);
        // The rest packs as it did minus the batch just taken; saturating all the same.
        s.enqueued = s
            .enqueued
            .saturating_sub(before.batches.saturating_sub(group.packing.batches));
        tasks
    }

    /// Forms and starts what may run now.
    pub fn dispatch(&self) {
        self.dispatch_with(|_| {});
    }

    fn dispatch_with(&self, before: impl FnOnce(&mut State)) {
        let batches = {
            let mut s = self.state.lock();
            before(&mut s);
            self.form(&mut s, Instant::now())
        };
        for b in batches {
            (self.start)(b);
        }
    }

    /// A batch was answered: its slots free up, and the next may form.
    fn finish(&self) {
        self.state.lock().in_flight -= 1;
        self.shared.threads.release();
        self.dispatch();
    }

    /// Nothing queued and nothing running.
    pub fn is_idle(&self) -> bool {
        let s = self.state.lock();
        s.in_flight == 0 && s.groups.is_empty()
    }
}

impl<R: Runner> Waiter for Queue<R> {
    fn slot_free(&self) {
        self.dispatch();
    }
}

impl<R: Runner> Due for Queue<R> {
    fn due(&self) {
        self.dispatch_with(|s| s.armed = None);
    }
}
