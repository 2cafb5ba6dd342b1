//! CPU time of a process, from `/proc`: what the gateway and the worker spend per request
//! and at idle.

/// `/proc` reports times in USER_HZ ticks, which Linux fixes at 100 per second.
const USER_HZ: f64 = 100.0;

/// CPU seconds `pid` has used (user + system, every thread, exited ones included), from
/// `/proc/PID/stat`; 0 if the process is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the comm: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / USER_HZ
}

/// CPU seconds of several processes together.
pub fn cpu_seconds_of(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}
