//! The worker's share of the machine's cores: `--cpus=0-3,6` pins the process
//! (`sched_setaffinity`) before TensorFlow starts any thread, so every thread it makes
//! inherits the set, and sizes TensorFlow's thread pools to the share unless the
//! parallelism flags say otherwise.

use anyhow::{bail, Context};
use rustix::thread::{sched_setaffinity, CpuSet};

/// Parses a Linux CPU list (`0-3,6`, as in `/proc/PID/status`'s `Cpus_allowed_list`).
pub fn parse_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let lo: usize = lo
            .parse()
            .with_context(|| format!("bad CPU list {list:?}"))?;
        let hi: usize = hi
            .parse()
            .with_context(|| format!("bad CPU list {list:?}"))?;
        if lo > hi || hi >= CpuSet::MAX_CPU {
            bail!("bad CPU range {part:?} in {list:?}");
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        bail!("empty CPU list {list:?}");
    }
    Ok(cpus)
}

/// Pins this process (every thread created from now on) to `cpus`.
pub fn pin(cpus: &[usize]) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    sched_setaffinity(None, &set).with_context(|| format!("cannot pin to CPUs {cpus:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_list("1").unwrap(), vec![1]);
        assert_eq!(parse_list("2,1,1-2").unwrap(), vec![1, 2]);
        assert!(parse_list("").is_err());
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("x").is_err());
        assert!(parse_list("0-100000").is_err());
    }
}
