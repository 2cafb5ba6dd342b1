//! The gateway's file-descriptor budget. Every connection, registered shared-memory
//! region and worker slot holds descriptors, and a process at its limit fails `accept`
//! with EMFILE. So at startup the soft `RLIMIT_NOFILE` is raised to the hard limit where
//! it can be (logged), and `--max_connections` is checked against what is left once the
//! rest is reserved: a value given on the command line that cannot fit stops startup
//! with the numbers; the default (10,000) is lowered to fit, with a warning.

/// `--max_connections` when not given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Descriptors besides connections, regions and worker slots: the listeners, the event
/// loop, log and runtime files, config polling, the request log.
const FIXED: u64 = 128;
/// Per worker slot: its socket, segment, doorbells, process handles and log pipes.
const PER_WORKER: u64 = 8;

/// What the process may hold now and what it reserved.
#[derive(Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub max_connections: usize,
}

/// Raises the soft limit to the hard one; returns (soft before, soft now).
pub fn raise_limit() -> (u64, u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let soft = before.current.unwrap_or(u64::MAX);
    if before.current != before.maximum {
        let raised = Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return (soft, before.maximum.unwrap_or(u64::MAX));
        }
    }
    (soft, soft)
}

/// Fits connections into `limit` beside `workers` slots and `regions` shared-memory
/// regions; `asked`: `--max_connections` when given.
pub fn fit(
    limit: u64,
    workers: usize,
    regions: usize,
    asked: Option<usize>,
) -> Result<Budget, String> {
    let reserved = FIXED + PER_WORKER * workers as u64 + regions as u64;
    let room = limit.saturating_sub(reserved);
    let fits = |n: usize| n as u64 <= room;
    let max_connections = match asked {
        Some(n) if fits(n) => n,
        Some(n) => {
            return Err(format!(
                "--max_connections={n} cannot fit in this process's descriptor limit of {limit} \
                 (RLIMIT_NOFILE, already raised to its hard limit): {reserved} are reserved for \
                 {workers} worker slots, {regions} shared-memory regions and the server itself, \
                 leaving {room}; raise the limit (ulimit -n) or lower --max_connections"
            ))
        }
        None if fits(DEFAULT_MAX_CONNECTIONS) => DEFAULT_MAX_CONNECTIONS,
        None if room == 0 => {
            return Err(format!(
                "this process's descriptor limit of {limit} (RLIMIT_NOFILE) leaves no room for \
                 connections beside the {reserved} reserved for {workers} worker slots, \
                 {regions} shared-memory regions and the server itself; raise it (ulimit -n)"
            ))
        }
        None => {
            tracing::warn!(
                "--max_connections lowered from {DEFAULT_MAX_CONNECTIONS} to {room}: the \
                 descriptor limit is {limit} and {reserved} are reserved"
            );
            room as usize
        }
    };
    Ok(Budget {
        limit,
        max_connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_beside_the_rest() {
        assert_eq!(
            fit(1_048_576, 1, 0, None).unwrap().max_connections,
            DEFAULT_MAX_CONNECTIONS
        );
        // The default is lowered to what fits: 1024 - 128 - 2*8 - 0.
        assert_eq!(fit(1024, 2, 0, None).unwrap().max_connections, 880);
        // With the shared-memory extension on, its regions are reserved too.
        assert_eq!(fit(2048, 1, 1024, None).unwrap().max_connections, 888);
        assert_eq!(fit(1024, 2, 0, Some(880)).unwrap().max_connections, 880);
        let e = fit(1024, 2, 0, Some(881)).unwrap_err();
        assert!(
            e.starts_with(
                "--max_connections=881 cannot fit in this process's descriptor limit of 1024"
            ),
            "{e}"
        );
        assert!(fit(100, 1, 0, None).is_err());
    }
}
