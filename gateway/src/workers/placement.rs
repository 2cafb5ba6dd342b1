//! Where each worker runs: `--worker_gpus=0,1` makes one worker per listed GPU (its
//! process sees only that GPU through `CUDA_VISIBLE_DEVICES`), else `--num_workers=N`
//! CPU workers. Either way the gateway's cores are split into one share per worker
//! (contiguous, as even as possible; shared round-robin when there are more workers than
//! cores); each worker pins itself to its share and sizes TensorFlow's pools to it.

use crate::servables::WorkerId;

/// The device a worker serves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu(u32),
    /// Attach mode: whatever the worker that connected was started with.
    Attached,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(id) => write!(f, "gpu:{id}"),
            Device::Attached => write!(f, "attached"),
        }
    }
}

/// One worker slot's placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerPlan {
    pub id: WorkerId,
    pub device: Device,
    /// The cores it is pinned to.
    pub cpus: Vec<usize>,
}

impl WorkerPlan {
    /// Environment the worker process gets on top of the gateway's. Without
    /// `--worker_gpus` nothing is changed, so a single default worker sees the GPUs
    /// `tensorflow_model_server` would.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.device {
            Device::Cpu | Device::Attached => Vec::new(),
            Device::Gpu(id) => vec![("CUDA_VISIBLE_DEVICES", id.to_string())],
        }
    }

    /// The core list as the worker's `--cpus` flag takes it.
    pub fn cpu_list(&self) -> String {
        self.cpus
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Plans the workers: one per GPU when `gpus` is not empty, else `num_workers` on CPU,
/// each with its share of `cpus` (the cores the gateway may use).
pub fn plan(num_workers: usize, gpus: &[u32], cpus: &[usize]) -> Vec<WorkerPlan> {
    let devices: Vec<Device> = if gpus.is_empty() {
        vec![Device::Cpu; num_workers.max(1)]
    } else {
        gpus.iter().map(|g| Device::Gpu(*g)).collect()
    };
    let n = devices.len();
    let c = cpus.len();
    devices
        .into_iter()
        .enumerate()
        .map(|(i, device)| {
            let share = if c == 0 {
                Vec::new()
            } else if n <= c {
                cpus[i * c / n..(i + 1) * c / n].to_vec()
            } else {
                vec![cpus[i % c]]
            };
            WorkerPlan {
                id: WorkerId(i as u32),
                device,
                cpus: share,
            }
        })
        .collect()
}

/// The cores this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    use rustix::thread::{sched_getaffinity, CpuSet};
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(p: &[WorkerPlan]) -> Vec<Vec<usize>> {
        p.iter().map(|w| w.cpus.clone()).collect()
    }

    #[test]
    fn splits_cores_between_cpu_workers() {
        let cpus: Vec<usize> = (0..8).collect();
        assert_eq!(shares(&plan(1, &[], &cpus)), vec![cpus.clone()]);
        assert_eq!(
            shares(&plan(2, &[], &cpus)),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]
        );
        assert_eq!(
            shares(&plan(3, &[], &cpus)),
            vec![vec![0, 1], vec![2, 3, 4], vec![5, 6, 7]]
        );
        assert_eq!(
            shares(&plan(3, &[], &[0, 1])),
            vec![vec![0], vec![1], vec![0]]
        );
        assert_eq!(plan(0, &[], &cpus).len(), 1, "at least one worker");
        let p = plan(2, &[], &[2, 5]);
        assert_eq!(p[1].cpu_list(), "5");
        assert!(p
            .iter()
            .all(|w| w.device == Device::Cpu && w.env().is_empty()));
    }

    #[test]
    fn one_worker_per_gpu_sees_only_its_gpu() {
        let p = plan(1, &[0, 3], &[0, 1, 2, 3]);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].id, WorkerId(1));
        assert_eq!(p[1].device, Device::Gpu(3));
        assert_eq!(p[1].env(), vec![("CUDA_VISIBLE_DEVICES", "3".to_string())]);
        assert_eq!(p[0].cpus, vec![0, 1]);
        assert_eq!(p[1].device.to_string(), "gpu:3");
    }
}
