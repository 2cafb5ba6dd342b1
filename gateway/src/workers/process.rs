//! The process behind an incarnation. A spawned worker is the gateway's child: its exit
//! is seen by `wait`, and it can be killed. An attached worker started on its own (a
//! container, `--worker_socket`) is no child of ours and may live in another pid
//! namespace: its end is seen only through its control socket, and it is made to go by
//! closing that socket (its control thread exits the process on EOF, also while a
//! TensorFlow kernel is stuck in its serving thread).

use tokio::process::Child;

pub enum WorkerProcess {
    Spawned(Child),
    Attached,
}

impl WorkerProcess {
    /// Resolves when a spawned worker exits, with its status; never for an attached one.
    pub async fn exited(&mut self) -> String {
        match self {
            WorkerProcess::Spawned(child) => child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            WorkerProcess::Attached => std::future::pending().await,
        }
    }

    /// Kills a spawned worker. An attached one goes when its control socket is dropped,
    /// which every path that ends an incarnation does.
    pub fn start_kill(&mut self) {
        if let WorkerProcess::Spawned(child) = self {
            let _ = child.start_kill();
        }
    }

    /// Kills and reaps; the exit status for the log (an attached worker has none to give).
    pub async fn reap(&mut self) -> String {
        match self {
            WorkerProcess::Spawned(child) => {
                let _ = child.start_kill();
                child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            }
            WorkerProcess::Attached => String::new(),
        }
    }

    /// Waits up to `within` for a spawned worker to exit on its own, then kills it.
    pub async fn reap_within(&mut self, within: std::time::Duration) {
        if let WorkerProcess::Spawned(child) = self {
            if tokio::time::timeout(within, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}
