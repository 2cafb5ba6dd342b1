//! A slot's lifecycle as one state machine, in the manner of TF Serving's
//! `core/loader_harness.h` (kNew → kLoading → kReady → kQuiescing → … → kDisabled): one
//! function says which (state, event) pairs are legal, what state follows and what the
//! supervisor must do. It is pure — no I/O, no clock, no tokio — so every transition is
//! unit-tested here; the supervisor's `select!` loops only turn what they observe into
//! `Event`s and carry out the returned `Action`s. An event a state does not expect is
//! ignored (no actions, same state), as the old loops never looked for it there.

use super::slot::SlotState;
use std::time::Duration;

/// Incarnations in a row that may die before the first one ever serves; then startup
/// fails (TF Serving exits when its initial load fails) instead of looping forever.
pub const MAX_STARTUP_FAILURES: u32 = 5;
/// The first restart backoff, and what it falls back to after a long-lived incarnation.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Repeated crashes back off at most this long.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An incarnation that lived longer than this resets the backoff.
const STEADY: Duration = Duration::from_secs(10);

/// Where a slot's workers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The supervisor spawns them, and restarts them with a backoff.
    Spawn,
    /// They connect on their own (`--worker_socket`); whoever started them restarts them.
    Attach,
}

/// Where a slot is in its lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing started yet (TF Serving's kNew).
    New,
    /// Attach mode: waiting in the lobby for a worker to take the slot.
    Waiting,
    /// A worker is being spawned, or is connecting and getting its segment.
    Starting,
    /// Attached; its initial load runs (kLoading).
    Loading(Live),
    /// Its initial load is done (kReady).
    Serving(Live),
    /// It asked to stop: out of routing, answering what it holds (kQuiescing).
    Draining { live: Live, loaded: bool },
    /// It is over and being reaped; the slot still shows what it showed (kUnloading).
    Ending {
        end: End,
        served: bool,
        shown: SlotState,
    },
    /// Spawn mode: the last incarnation died; the next starts after the backoff.
    Restarting,
    /// Attach mode: its worker left for good; the pool decides whether to close the slot.
    Left,
    /// Shut down with the server, or closed (kDisabled).
    Stopped,
}

/// What an attached incarnation has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Some version became AVAILABLE on it (it "served", for the startup failure count).
    pub served: bool,
    /// A successor is being prepared beside it.
    pub succeeding: bool,
}

/// Why an incarnation is ending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// It died or was killed; another follows.
    Restart(String),
    /// The server is shutting down.
    Stop,
    /// It asked to stop and has answered what it held.
    Leave,
}

/// What the supervisor observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The supervisor starts (its worker socket is bound).
    Begin,
    /// Attach mode: a worker that said Hello was taken from the lobby.
    Arrived,
    /// The worker attached its segment and was sent its model list.
    Connected,
    /// Spawning, connecting or the handshake failed; `refused`: the worker said why it
    /// cannot serve. `lived`: since this incarnation was begun.
    LaunchFailed {
        why: String,
        refused: Option<String>,
        lived: Duration,
    },
    /// The worker reported its initial load done.
    InitialLoadDone,
    /// A version became AVAILABLE on the worker.
    VersionAvailable,
    /// After an unload: the worker's resident set, what a fresh worker with the same
    /// servables would hold, and whether the server is stopping.
    Memory {
        rss_bytes: u64,
        expected_bytes: u64,
        stopping: bool,
    },
    /// The worker asked to stop (SIGTERM: a scale-down).
    Leaving,
    /// A leaving worker has answered what it held, or its time to do so is up.
    Drained,
    /// The incarnation ended by itself (its process ended, its control socket closed).
    Died(String),
    /// It must be killed: it missed heartbeats, a run outlived its deadline, it broke
    /// the protocol, or a write to it failed.
    Hung(String),
    /// The successor has loaded everything the slot serves.
    SuccessorReady,
    /// The successor could not be prepared.
    SuccessorFailed(String),
    /// The server is shutting down.
    Stop,
    /// An ending incarnation's process is gone; `status` is its exit status ("" when
    /// there is none to give), `lived` the time since it was begun.
    Reaped { status: String, lived: Duration },
    /// The restart backoff is over.
    BackoffElapsed,
    /// Attach mode: whether the pool closed the slot of a worker that left.
    SpareChecked { closed: bool },
}

/// What the supervisor does about it, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Begins an incarnation: spawns a worker and hands it a segment (spawn mode), or
    /// waits for the next worker in the lobby (attach mode).
    Launch { generation: u64 },
    /// Attach mode: hands the worker taken from the lobby a segment and its models.
    Handshake { generation: u64 },
    /// The attached incarnation becomes the slot's; watch it.
    Install,
    /// Tells the servable table the worker's initial load is done.
    InitialLoadDone,
    /// Records how long the slot went without a serving worker, if it lost one.
    RecordRecovery,
    /// Takes the slot's versions out of routing.
    Unroute,
    /// Starts the clock on a leaving worker's last requests.
    StartDrain,
    /// Asks the worker to exit.
    SendShutdown,
    /// Gives it `SHUTDOWN_WAIT` to exit on its own before it is killed.
    AwaitExit,
    /// Kills it (an attached worker: closes its socket), saying why.
    Kill(String),
    /// Starts a successor with this generation beside the worker.
    PrepareSuccessor { generation: u64, why: String },
    /// The successor failed; the worker stays.
    DropSuccessor(String),
    /// The replaced worker finishes what it holds and exits.
    Retire,
    /// The successor becomes the slot's worker, with its versions; watch it.
    TakeOver,
    /// Marks the incarnation dead, closes its control socket and reaps it.
    Reap,
    /// Notes the end on the slot (`restart`: counted as a restart).
    RecordEnd { why: String, restart: bool },
    /// `worker exited (...)`, at WARN.
    LogExit { generation: u64, message: String },
    /// `worker left`, at INFO.
    LogLeft { generation: u64 },
    /// `worker refused to start: ...`, at ERROR.
    LogRefused(String),
    /// Startup fails with this reason.
    FailStartup(String),
    /// Waits this long before the next incarnation (unless the server stops).
    Backoff(Duration),
    /// Attach mode: asks the pool to close the slot if it has more than it keeps.
    CloseIfSpare,
    /// The supervisor's task ends.
    Exit,
}

/// A slot's state and what it remembers across incarnations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Harness {
    pub state: State,
    pub mode: Mode,
    /// The current (or last) incarnation's generation; 0 before the first.
    pub generation: u64,
    /// The next restart's backoff (spawn mode).
    pub backoff: Duration,
    /// Some incarnation that died had served.
    pub ever_served: bool,
    /// Incarnations in a row that died without serving.
    pub failures_in_a_row: u32,
    /// `--replace_worker_after_unload_excess_mb`, in bytes; 0: never.
    pub replace_after_unload_excess: u64,
}

/// The state that follows an event, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub next: Harness,
    pub actions: Vec<Action>,
}

impl Harness {
    pub fn new(mode: Mode, replace_after_unload_excess: u64) -> Harness {
        Harness {
            state: State::New,
            mode,
            generation: 0,
            backoff: FIRST_BACKOFF,
            ever_served: false,
            failures_in_a_row: 0,
            replace_after_unload_excess,
        }
    }

    /// The state `/tfgate/workers` and the metrics show (their names are stable).
    pub fn shown(&self) -> SlotState {
        match &self.state {
            State::New | State::Starting => SlotState::Starting,
            State::Waiting => SlotState::Waiting,
            State::Loading(_) | State::Draining { loaded: false, .. } => SlotState::Loading,
            State::Serving(_) | State::Draining { loaded: true, .. } => SlotState::Serving,
            State::Ending { shown, .. } => *shown,
            State::Restarting => SlotState::Restarting,
            State::Left | State::Stopped => SlotState::Stopped,
        }
    }
}

/// The one place that says what follows `event` in `from`'s state.
pub fn transition(from: &Harness, event: Event) -> Transition {
    let mut next = from.clone();
    let actions = match &from.state {
        State::New => begin(&mut next, event),
        State::Waiting | State::Starting => starting(&mut next, event),
        State::Loading(_) | State::Serving(_) | State::Draining { .. } => live(&mut next, event),
        State::Ending { end, served, .. } => ending(&mut next, end.clone(), *served, event),
        State::Restarting => restarting(&mut next, event),
        State::Left => left(&mut next, event),
        State::Stopped => Vec::new(),
    };
    Transition { next, actions }
}

fn begin(lc: &mut Harness, event: Event) -> Vec<Action> {
    match event {
        Event::Begin => vec![launch(lc)],
        _ => Vec::new(),
    }
}

/// Waiting for a worker, or starting one.
fn starting(lc: &mut Harness, event: Event) -> Vec<Action> {
    match (&lc.state, event) {
        (State::Waiting, Event::Arrived) => {
            lc.state = State::Starting;
            vec![Action::Handshake {
                generation: lc.generation,
            }]
        }
        (State::Starting, Event::Connected) => {
            lc.state = State::Loading(Live::default());
            vec![Action::Install]
        }
        (
            State::Starting,
            Event::LaunchFailed {
                why,
                refused,
                lived,
            },
        ) => {
            let mut actions = Vec::new();
            if let Some(refused) = refused {
                actions.push(Action::LogRefused(refused.clone()));
                // A spawned worker would refuse again: startup fails at once.
                if lc.mode == Mode::Spawn {
                    actions.push(Action::FailStartup(refused));
                }
            }
            actions.extend(died(lc, why, false, lived));
            actions
        }
        (_, Event::Stop) => {
            lc.state = State::Stopped;
            vec![Action::Unroute, shut_down(), Action::Exit]
        }
        _ => Vec::new(),
    }
}

/// An attached incarnation: loading, serving or draining.
fn live(lc: &mut Harness, event: Event) -> Vec<Action> {
    let (mut live, loaded, draining) = match lc.state {
        State::Loading(live) => (live, false, false),
        State::Serving(live) => (live, true, false),
        State::Draining { live, loaded } => (live, loaded, true),
        _ => return Vec::new(),
    };
    let shown = lc.shown();
    let set = |lc: &mut Harness, live: Live, loaded: bool, draining: bool| {
        lc.state = match (draining, loaded) {
            (true, _) => State::Draining { live, loaded },
            (false, true) => State::Serving(live),
            (false, false) => State::Loading(live),
        };
    };
    let end = |lc: &mut Harness, end: End, served: bool, actions: Vec<Action>| {
        lc.state = State::Ending { end, served, shown };
        actions
    };
    match event {
        Event::InitialLoadDone => {
            set(lc, live, true, draining);
            vec![Action::InitialLoadDone, Action::RecordRecovery]
        }
        Event::VersionAvailable => {
            live.served = true;
            set(lc, live, loaded, draining);
            Vec::new()
        }
        Event::Memory {
            rss_bytes,
            expected_bytes,
            stopping,
        } => {
            let limit = lc.replace_after_unload_excess;
            let excess = rss_bytes.saturating_sub(expected_bytes);
            if limit == 0 || excess <= limit || live.succeeding || stopping {
                return Vec::new();
            }
            live.succeeding = true;
            set(lc, live, loaded, draining);
            vec![Action::PrepareSuccessor {
                generation: lc.generation + 1,
                why: format!(
                    "replaced: {} MiB resident after unloading, {} MiB expected",
                    rss_bytes >> 20,
                    expected_bytes >> 20
                ),
            }]
        }
        Event::Leaving => {
            set(lc, live, loaded, true);
            if draining {
                vec![Action::Unroute]
            } else {
                vec![Action::Unroute, Action::StartDrain]
            }
        }
        Event::Drained if draining => end(
            lc,
            End::Leave,
            live.served,
            vec![Action::SendShutdown, Action::Reap],
        ),
        Event::Died(why) => end(lc, End::Restart(why), live.served, vec![Action::Reap]),
        Event::Hung(why) => end(
            lc,
            End::Restart(why.clone()),
            live.served,
            vec![Action::Kill(why), Action::Reap],
        ),
        Event::Stop => end(
            lc,
            End::Stop,
            live.served,
            vec![Action::SendShutdown, Action::AwaitExit, Action::Reap],
        ),
        Event::SuccessorReady if live.succeeding => {
            lc.generation += 1;
            lc.state = State::Serving(Live {
                served: true,
                succeeding: false,
            });
            vec![Action::Retire, Action::TakeOver]
        }
        Event::SuccessorFailed(why) if live.succeeding => {
            live.succeeding = false;
            set(lc, live, loaded, draining);
            vec![Action::DropSuccessor(why)]
        }
        _ => Vec::new(),
    }
}

/// An incarnation being reaped; what follows depends on why it ended.
fn ending(lc: &mut Harness, end: End, served: bool, event: Event) -> Vec<Action> {
    let Event::Reaped { status, lived } = event else {
        return Vec::new();
    };
    match end {
        End::Restart(why) => {
            let why = if status.is_empty() {
                why
            } else {
                format!("{why}: {status}")
            };
            died(lc, why, served, lived)
        }
        End::Stop => {
            lc.state = State::Stopped;
            vec![Action::Unroute, shut_down(), Action::Exit]
        }
        End::Leave => {
            let mut actions = vec![
                Action::Unroute,
                Action::LogLeft {
                    generation: lc.generation,
                },
                Action::RecordEnd {
                    why: "left when asked to stop".into(),
                    restart: false,
                },
            ];
            match lc.mode {
                // A spawned worker someone else stopped is started again, at once.
                Mode::Spawn => actions.push(launch(lc)),
                Mode::Attach => {
                    lc.state = State::Left;
                    actions.push(Action::CloseIfSpare);
                }
            }
            actions
        }
    }
}

/// Spawn mode, between incarnations.
fn restarting(lc: &mut Harness, event: Event) -> Vec<Action> {
    match event {
        Event::BackoffElapsed => vec![launch(lc)],
        Event::Stop => {
            lc.state = State::Stopped;
            vec![shut_down(), Action::Exit]
        }
        _ => Vec::new(),
    }
}

/// Attach mode: the worker left for good; the slot closes or waits for the next.
fn left(lc: &mut Harness, event: Event) -> Vec<Action> {
    match event {
        Event::SpareChecked { closed: true } => {
            lc.state = State::Stopped;
            vec![Action::Exit]
        }
        Event::SpareChecked { closed: false } => vec![launch(lc)],
        _ => Vec::new(),
    }
}

/// The next incarnation begins, with the next generation.
fn launch(lc: &mut Harness) -> Action {
    lc.generation += 1;
    lc.state = match lc.mode {
        Mode::Spawn => State::Starting,
        Mode::Attach => State::Waiting,
    };
    Action::Launch {
        generation: lc.generation,
    }
}

fn shut_down() -> Action {
    Action::RecordEnd {
        why: "shut down".into(),
        restart: false,
    }
}

/// An incarnation died (or never started): out of routing, counted, and the next one
/// comes — after a backoff that grows while crashes repeat, in spawn mode. Startup fails
/// once too many in a row died before any ever served.
fn died(lc: &mut Harness, why: String, served: bool, lived: Duration) -> Vec<Action> {
    let next = match lc.mode {
        Mode::Spawn => "restarting",
        Mode::Attach => "waiting for a worker to attach",
    };
    let mut actions = vec![
        // Out of routing first, so that re-dispatched requests look elsewhere.
        Action::Unroute,
        Action::LogExit {
            generation: lc.generation,
            message: format!("worker exited ({why}); {next}"),
        },
        Action::RecordEnd {
            why: why.clone(),
            restart: true,
        },
    ];
    lc.ever_served |= served;
    lc.failures_in_a_row = if served { 0 } else { lc.failures_in_a_row + 1 };
    if !lc.ever_served && lc.failures_in_a_row >= MAX_STARTUP_FAILURES {
        actions.push(Action::FailStartup(format!(
            "the worker died {} times before serving; last: {why}",
            lc.failures_in_a_row
        )));
    }
    match lc.mode {
        // Whoever restarts attached workers backs off; the slot just waits.
        Mode::Attach => actions.push(launch(lc)),
        Mode::Spawn => {
            if lived > STEADY {
                lc.backoff = FIRST_BACKOFF;
            }
            actions.push(Action::Backoff(lc.backoff));
            lc.backoff = (lc.backoff * 2).min(MAX_BACKOFF);
            lc.state = State::Restarting;
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SHORT: Duration = Duration::from_secs(1);

    fn step(lc: &Harness, event: Event) -> (Harness, Vec<Action>) {
        let t = transition(lc, event);
        (t.next, t.actions)
    }

    /// The lifecycle after `events`, whatever their actions.
    fn after(mut lc: Harness, events: impl IntoIterator<Item = Event>) -> Harness {
        for event in events {
            lc = transition(&lc, event).next;
        }
        lc
    }

    fn serving(mode: Mode, limit: u64) -> Harness {
        let mut events = vec![Event::Begin];
        if mode == Mode::Attach {
            events.push(Event::Arrived);
        }
        events.extend([Event::Connected, Event::InitialLoadDone]);
        after(Harness::new(mode, limit), events)
    }

    fn failed(why: &str) -> Event {
        Event::LaunchFailed {
            why: why.into(),
            refused: None,
            lived: SHORT,
        }
    }

    fn reaped(status: &str) -> Event {
        Event::Reaped {
            status: status.into(),
            lived: SHORT,
        }
    }

    fn record_end(why: &str, restart: bool) -> Action {
        Action::RecordEnd {
            why: why.into(),
            restart,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn started_spawns_the_first_generation() {
        let (lc, actions) = step(&Harness::new(Mode::Spawn, 0), Event::Begin);
        assert_eq!(lc.state, State::Starting);
        assert_eq!(lc.generation, 1);
        assert_eq!(lc.shown(), SlotState::Starting);
        assert_eq!(actions, vec![Action::Launch { generation: 1 }]);
    }

    #[test]
    fn started_in_attach_mode_waits_then_handshakes() {
        let (lc, actions) = step(&Harness::new(Mode::Attach, 0), Event::Begin);
        assert_eq!(lc.state, State::Waiting);
        assert_eq!(lc.shown(), SlotState::Waiting);
        assert_eq!(actions, vec![Action::Launch { generation: 1 }]);
        let (lc, actions) = step(&lc, Event::Arrived);
        assert_eq!(lc.state, State::Starting);
        assert_eq!(actions, vec![Action::Handshake { generation: 1 }]);
    }

    #[test]
    fn connected_installs_and_loads() {
        let lc = after(Harness::new(Mode::Spawn, 0), [Event::Begin]);
        let (lc, actions) = step(&lc, Event::Connected);
        assert_eq!(lc.state, State::Loading(Live::default()));
        assert_eq!(lc.shown(), SlotState::Loading);
        assert_eq!(actions, vec![Action::Install]);
    }

    #[test]
    fn initial_load_done_is_serving_and_records_recovery() {
        let lc = after(
            Harness::new(Mode::Spawn, 0),
            [Event::Begin, Event::Connected],
        );
        let (lc, actions) = step(&lc, Event::InitialLoadDone);
        assert_eq!(lc.state, State::Serving(Live::default()));
        assert_eq!(lc.shown(), SlotState::Serving);
        assert_eq!(
            actions,
            vec![Action::InitialLoadDone, Action::RecordRecovery]
        );
    }

    #[test]
    fn an_available_version_counts_as_served() {
        let lc = after(
            Harness::new(Mode::Spawn, 0),
            [Event::Begin, Event::Connected],
        );
        let (lc, actions) = step(&lc, Event::VersionAvailable);
        let live = Live {
            served: true,
            succeeding: false,
        };
        assert_eq!(lc.state, State::Loading(live));
        assert!(actions.is_empty());
    }

    #[test]
    fn hung_is_killed_then_reaped_and_restarted_after_a_backoff() {
        let lc = after(serving(Mode::Spawn, 0), [Event::VersionAvailable]);
        let why = "no heartbeat for 3012 ms";
        let (lc, actions) = step(&lc, Event::Hung(why.into()));
        assert_eq!(
            lc.state,
            State::Ending {
                end: End::Restart(why.into()),
                served: true,
                shown: SlotState::Serving,
            }
        );
        // Until it is reaped the slot shows what it showed.
        assert_eq!(lc.shown(), SlotState::Serving);
        assert_eq!(actions, vec![Action::Kill(why.into()), Action::Reap]);

        let (lc, actions) = step(&lc, reaped("signal: 9 (SIGKILL)"));
        let full = "no heartbeat for 3012 ms: signal: 9 (SIGKILL)";
        assert_eq!(lc.state, State::Restarting);
        assert_eq!(lc.shown(), SlotState::Restarting);
        assert_eq!(
            actions,
            vec![
                Action::Unroute,
                Action::LogExit {
                    generation: 1,
                    message: format!("worker exited ({full}); restarting"),
                },
                record_end(full, true),
                Action::Backoff(ms(100)),
            ]
        );
        assert!(lc.ever_served);
        assert_eq!(lc.failures_in_a_row, 0);

        let (lc, actions) = step(&lc, Event::BackoffElapsed);
        assert_eq!(lc.state, State::Starting);
        assert_eq!(actions, vec![Action::Launch { generation: 2 }]);
    }

    #[test]
    fn died_is_reaped_without_a_kill() {
        let lc = serving(Mode::Spawn, 0);
        let why = "its control socket closed";
        let (lc, actions) = step(&lc, Event::Died(why.into()));
        assert_eq!(actions, vec![Action::Reap]);
        // No exit status to add (an attached worker has none).
        let (_, actions) = step(&lc, reaped(""));
        assert_eq!(actions[2], record_end(why, true));
    }

    #[test]
    fn died_in_attach_mode_waits_for_the_next_worker_at_once() {
        let lc = serving(Mode::Attach, 0);
        let lc = after(lc, [Event::Died("its control socket closed".into())]);
        let (lc, actions) = step(&lc, reaped(""));
        assert_eq!(lc.state, State::Waiting);
        assert_eq!(lc.generation, 2);
        assert_eq!(
            actions,
            vec![
                Action::Unroute,
                Action::LogExit {
                    generation: 1,
                    message:
                        "worker exited (its control socket closed); waiting for a worker to attach"
                            .into(),
                },
                record_end("its control socket closed", true),
                Action::Launch { generation: 2 },
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds_and_resets_after_a_long_life() {
        let mut lc = after(serving(Mode::Spawn, 0), [Event::VersionAvailable]);
        lc = after(lc, [Event::Died("crash".into())]);
        let mut backoffs = Vec::new();
        for _ in 0..8 {
            let (next, actions) = step(&lc, reaped(""));
            backoffs.extend(actions.into_iter().filter_map(|a| match a {
                Action::Backoff(d) => Some(d),
                _ => None,
            }));
            lc = after(next, [Event::BackoffElapsed, Event::Connected]);
            lc = after(lc, [Event::Died("crash".into())]);
        }
        let expected: Vec<Duration> = [100, 200, 400, 800, 1600, 3200, 5000, 5000]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(backoffs, expected);
        let long = Event::Reaped {
            status: String::new(),
            lived: Duration::from_secs(11),
        };
        let (lc, actions) = step(&lc, long);
        assert_eq!(actions.last(), Some(&Action::Backoff(ms(100))));
        assert_eq!(lc.backoff, ms(200));
    }

    #[test]
    fn given_up_after_five_failures_before_serving() {
        let mut lc = after(Harness::new(Mode::Spawn, 0), [Event::Begin]);
        for n in 1..=5 {
            let (next, actions) = step(&lc, failed("worker failed: boom"));
            let gave_up = actions.iter().any(|a| matches!(a, Action::FailStartup(_)));
            assert_eq!(gave_up, n == 5, "after {n} failures");
            if n == 5 {
                assert_eq!(
                    actions[3],
                    Action::FailStartup(
                        "the worker died 5 times before serving; last: worker failed: boom".into()
                    )
                );
                // It keeps restarting: the gateway exits on the failure.
                assert_eq!(next.state, State::Restarting);
            }
            lc = after(next, [Event::BackoffElapsed]);
        }
    }

    #[test]
    fn never_given_up_once_an_incarnation_that_died_had_served() {
        let lc = after(
            serving(Mode::Spawn, 0),
            [Event::VersionAvailable, Event::Died("crash".into())],
        );
        let mut lc = after(lc, [reaped(""), Event::BackoffElapsed]);
        for _ in 0..6 {
            let (next, actions) = step(&lc, failed("worker failed: boom"));
            assert!(!actions.iter().any(|a| matches!(a, Action::FailStartup(_))));
            lc = after(next, [Event::BackoffElapsed]);
        }
        assert_eq!(lc.failures_in_a_row, 6);
    }

    #[test]
    fn a_refusing_spawned_worker_fails_startup_at_once() {
        let lc = after(Harness::new(Mode::Spawn, 0), [Event::Begin]);
        let refused = Event::LaunchFailed {
            why: "worker failed: worker refused to start: no op library".into(),
            refused: Some("no op library".into()),
            lived: SHORT,
        };
        let (_, actions) = step(&lc, refused.clone());
        assert_eq!(actions[0], Action::LogRefused("no op library".into()));
        assert_eq!(actions[1], Action::FailStartup("no op library".into()));
        assert_eq!(actions[2], Action::Unroute);
        assert_eq!(actions.len(), 6);

        // An attached one is only logged: another worker may attach.
        let lc = after(
            Harness::new(Mode::Attach, 0),
            [Event::Begin, Event::Arrived],
        );
        let (lc, actions) = step(&lc, refused);
        assert_eq!(actions[0], Action::LogRefused("no op library".into()));
        assert_eq!(actions[1], Action::Unroute);
        assert!(!actions.iter().any(|a| matches!(a, Action::FailStartup(_))));
        assert_eq!(actions.last(), Some(&Action::Launch { generation: 2 }));
        assert_eq!(lc.state, State::Waiting);
    }

    #[test]
    fn draining_unroutes_once_clocked_and_ends_when_drained() {
        let lc = serving(Mode::Attach, 0);
        let (lc, actions) = step(&lc, Event::Leaving);
        assert_eq!(
            lc.state,
            State::Draining {
                live: Live::default(),
                loaded: true
            }
        );
        assert_eq!(lc.shown(), SlotState::Serving);
        assert_eq!(actions, vec![Action::Unroute, Action::StartDrain]);
        // Said twice: out of routing again, the clock not restarted.
        let (lc, actions) = step(&lc, Event::Leaving);
        assert_eq!(actions, vec![Action::Unroute]);
        let (lc, actions) = step(&lc, Event::Drained);
        assert_eq!(actions, vec![Action::SendShutdown, Action::Reap]);
        assert!(matches!(
            lc.state,
            State::Ending {
                end: End::Leave,
                ..
            }
        ));
    }

    #[test]
    fn draining_while_loading_shows_serving_once_loaded() {
        let lc = after(
            Harness::new(Mode::Spawn, 0),
            [Event::Begin, Event::Connected, Event::Leaving],
        );
        assert_eq!(lc.shown(), SlotState::Loading);
        let (lc, actions) = step(&lc, Event::InitialLoadDone);
        assert_eq!(lc.shown(), SlotState::Serving);
        assert_eq!(
            actions,
            vec![Action::InitialLoadDone, Action::RecordRecovery]
        );
    }

    #[test]
    fn drained_is_ignored_unless_draining() {
        let lc = serving(Mode::Spawn, 0);
        let (next, actions) = step(&lc, Event::Drained);
        assert_eq!(next, lc);
        assert!(actions.is_empty());
    }

    #[test]
    fn left_spawned_worker_is_started_again_without_a_backoff() {
        let lc = after(serving(Mode::Spawn, 0), [Event::Leaving, Event::Drained]);
        let (lc, actions) = step(&lc, reaped("exit status: 0"));
        assert_eq!(lc.state, State::Starting);
        assert_eq!(
            actions,
            vec![
                Action::Unroute,
                Action::LogLeft { generation: 1 },
                record_end("left when asked to stop", false),
                Action::Launch { generation: 2 },
            ]
        );
        assert_eq!(lc.failures_in_a_row, 0);
        assert_eq!(lc.backoff, ms(100));
    }

    #[test]
    fn left_attached_worker_closes_a_spare_slot_or_waits() {
        let lc = after(serving(Mode::Attach, 0), [Event::Leaving, Event::Drained]);
        let (lc, actions) = step(&lc, reaped(""));
        assert_eq!(lc.state, State::Left);
        assert_eq!(lc.shown(), SlotState::Stopped);
        assert_eq!(
            actions,
            vec![
                Action::Unroute,
                Action::LogLeft { generation: 1 },
                record_end("left when asked to stop", false),
                Action::CloseIfSpare,
            ]
        );
        let (closed, actions) = step(&lc, Event::SpareChecked { closed: true });
        assert_eq!(closed.state, State::Stopped);
        assert_eq!(actions, vec![Action::Exit]);
        let (kept, actions) = step(&lc, Event::SpareChecked { closed: false });
        assert_eq!(kept.state, State::Waiting);
        assert_eq!(actions, vec![Action::Launch { generation: 2 }]);
    }

    fn memory(rss_mib: u64, expected_mib: u64, stopping: bool) -> Event {
        Event::Memory {
            rss_bytes: rss_mib * MIB,
            expected_bytes: expected_mib * MIB,
            stopping,
        }
    }

    #[test]
    fn replaced_by_a_successor_that_takes_over() {
        let lc = serving(Mode::Spawn, 100 * MIB);
        let (lc, actions) = step(&lc, memory(500, 100, false));
        let succeeding = Live {
            served: false,
            succeeding: true,
        };
        assert_eq!(lc.state, State::Serving(succeeding));
        assert_eq!(
            actions,
            vec![Action::PrepareSuccessor {
                generation: 2,
                why: "replaced: 500 MiB resident after unloading, 100 MiB expected".into(),
            }]
        );
        // One successor at a time.
        let (lc, actions) = step(&lc, memory(600, 100, false));
        assert!(actions.is_empty());
        let (lc, actions) = step(&lc, Event::SuccessorReady);
        assert_eq!(actions, vec![Action::Retire, Action::TakeOver]);
        assert_eq!(lc.generation, 2);
        assert_eq!(
            lc.state,
            State::Serving(Live {
                served: true,
                succeeding: false
            })
        );
        // The successor counts as having served: its death resets the failure count.
        let lc = after(lc, [Event::Died("crash".into()), reaped("")]);
        assert!(lc.ever_served);
        assert_eq!(lc.failures_in_a_row, 0);
    }

    #[test]
    fn no_successor_below_the_limit_without_one_or_when_stopping() {
        for (limit, event) in [
            (100 * MIB, memory(200, 100, false)),
            (0, memory(5000, 100, false)),
            (100 * MIB, memory(500, 100, true)),
        ] {
            let lc = serving(Mode::Spawn, limit);
            let (next, actions) = step(&lc, event);
            assert_eq!(next, lc);
            assert!(actions.is_empty());
        }
    }

    #[test]
    fn a_failed_successor_leaves_the_worker_in_place() {
        let lc = after(serving(Mode::Spawn, 100 * MIB), [memory(500, 100, false)]);
        let (lc, actions) = step(&lc, Event::SuccessorFailed("it exited".into()));
        assert_eq!(lc.state, State::Serving(Live::default()));
        assert_eq!(actions, vec![Action::DropSuccessor("it exited".into())]);
        assert_eq!(lc.generation, 1);
        // A stray "ready" is not a take-over.
        let (next, actions) = step(&lc, Event::SuccessorReady);
        assert_eq!(next, lc);
        assert!(actions.is_empty());
        // And another successor may be tried.
        let (_, actions) = step(&lc, memory(500, 100, false));
        assert_eq!(actions.len(), 1);
    }

    #[test]
    fn stop_shuts_a_live_worker_down_and_exits() {
        let lc = serving(Mode::Spawn, 0);
        let (lc, actions) = step(&lc, Event::Stop);
        assert_eq!(
            actions,
            vec![Action::SendShutdown, Action::AwaitExit, Action::Reap]
        );
        let (lc, actions) = step(&lc, reaped("exit status: 0"));
        assert_eq!(lc.state, State::Stopped);
        assert_eq!(lc.shown(), SlotState::Stopped);
        assert_eq!(
            actions,
            vec![
                Action::Unroute,
                record_end("shut down", false),
                Action::Exit
            ]
        );
    }

    #[test]
    fn stop_while_starting_waiting_or_backing_off() {
        let exit = vec![
            Action::Unroute,
            record_end("shut down", false),
            Action::Exit,
        ];
        let starting = after(Harness::new(Mode::Spawn, 0), [Event::Begin]);
        assert_eq!(step(&starting, Event::Stop).1, exit);
        let waiting = after(Harness::new(Mode::Attach, 0), [Event::Begin]);
        let (lc, actions) = step(&waiting, Event::Stop);
        assert_eq!(actions, exit);
        assert_eq!(lc.shown(), SlotState::Stopped);
        // Already out of routing while it backs off.
        let restarting = after(starting, [failed("worker failed: boom")]);
        assert_eq!(restarting.state, State::Restarting);
        let (lc, actions) = step(&restarting, Event::Stop);
        assert_eq!(actions, vec![record_end("shut down", false), Action::Exit]);
        assert_eq!(lc.state, State::Stopped);
    }

    #[test]
    fn events_a_state_does_not_expect_are_ignored() {
        let new = Harness::new(Mode::Spawn, 0);
        let starting = after(new.clone(), [Event::Begin]);
        let waiting = after(Harness::new(Mode::Attach, 0), [Event::Begin]);
        let ending = after(serving(Mode::Spawn, 0), [Event::Died("crash".into())]);
        let restarting = after(ending.clone(), [reaped("")]);
        let stopped = after(starting.clone(), [Event::Stop]);
        let cases = [
            (&new, Event::Stop),
            (&new, Event::Connected),
            (&starting, Event::InitialLoadDone),
            (&starting, Event::Arrived),
            (&waiting, Event::Connected),
            (&ending, Event::Died("again".into())),
            (&ending, Event::Stop),
            (&restarting, Event::Connected),
            (&restarting, Event::Died("late".into())),
            (&stopped, Event::Begin),
            (&stopped, Event::BackoffElapsed),
        ];
        for (lc, event) in cases {
            let (next, actions) = step(lc, event.clone());
            assert_eq!(&next, lc, "{event:?} in {:?}", lc.state);
            assert!(actions.is_empty(), "{event:?} in {:?}", lc.state);
        }
    }

    #[test]
    fn shown_names_are_stable() {
        let names: Vec<&str> = [
            SlotState::Waiting,
            SlotState::Starting,
            SlotState::Loading,
            SlotState::Serving,
            SlotState::Restarting,
            SlotState::Stopped,
        ]
        .into_iter()
        .map(SlotState::name)
        .collect();
        assert_eq!(
            names,
            [
                "waiting",
                "starting",
                "loading",
                "serving",
                "restarting",
                "stopped"
            ]
        );
    }
}
