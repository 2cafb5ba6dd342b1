//! With `--log_format=json`, a worker's stderr comes through the gateway: its own lines
//! are JSON already and pass as they are; anything else — TensorFlow's C++ logging, a
//! crash message — is wrapped in a JSON object naming the worker, so a log pipeline
//! reads one object per line from the whole server.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStderr;

/// Copies a worker's stderr to the gateway's, line by line, until it closes.
pub fn forward(stderr: ChildStderr, worker: String, pid: Option<u32>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut out = tokio::io::stderr();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = as_json_line(&line, &worker, pid);
            text.push('\n');
            if out.write_all(text.as_bytes()).await.is_err() {
                break;
            }
        }
    });
}

/// The line itself if it is a JSON object, else one that carries it.
fn as_json_line(line: &str, worker: &str, pid: Option<u32>) -> String {
    if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).is_ok() {
        return line.to_string();
    }
    serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": "INFO",
        "target": "tfgate_worker::stderr",
        "fields": { "message": line, "worker": worker, "pid": pid },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_passes_and_anything_else_is_wrapped() {
        let own = r#"{"level":"INFO","fields":{"message":"loaded"}}"#;
        assert_eq!(as_json_line(own, "0", Some(7)), own);
        let tf =
            "I0000 00:00:1796018205.526573   11751 loader.cc:236] Restoring SavedModel bundle.";
        let wrapped: serde_json::Value =
            serde_json::from_str(&as_json_line(tf, "1", Some(42))).unwrap();
        assert_eq!(wrapped["fields"]["message"], tf);
        assert_eq!(wrapped["fields"]["worker"], "1");
        assert_eq!(wrapped["fields"]["pid"], 42);
        let ts = wrapped["timestamp"].as_str().unwrap();
        assert!(
            ts.starts_with("20") && ts.ends_with('Z') && ts.len() == 27,
            "{ts}"
        );
    }
}
