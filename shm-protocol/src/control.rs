//! Control messages on the gateway↔worker Unix socket. The socket carries the handshake
//! (with the segment's memfd riding along as SCM_RIGHTS), model lifecycle commands and
//! servable state reports; tensors never travel here.
//!
//! Framing: a little-endian `u32` length, then a postcard-encoded message. Lengths above
//! [`MAX_CONTROL_MESSAGE`] are refused before anything is allocated.

use crate::code::Status;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Largest control message accepted (signature maps of big models fit comfortably).
pub const MAX_CONTROL_MESSAGE: usize = 64 << 20;

/// A servable's lifecycle state, as TF Serving's `ModelVersionStatus.State` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServableState {
    Start,
    Loading,
    Available,
    Unloading,
    End,
}

/// Which versions of a model the worker should aim to serve
/// (`FileSystemStoragePathSourceConfig.ServableVersionPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionPolicy {
    /// The `num_versions` highest versions (at least 1).
    Latest { num_versions: u32 },
    /// Every version found.
    All,
    /// Exactly these versions.
    Specific { versions: Vec<i64> },
}

/// One model the worker serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    /// Absolute directory holding numeric version subdirectories.
    pub base_path: String,
    pub version_policy: VersionPolicy,
}

/// Session settings the worker applies to every SavedModel it loads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// MetaGraph tags (`--saved_model_tags`).
    pub tags: Vec<String>,
    /// A serialized `tensorflow.ConfigProto`: `--tensorflow_session_config_file` with the
    /// parallelism and GPU-memory flags applied as TF Serving applies them. A pinned
    /// worker sizes thread pools left at 0 to its share of the cores.
    pub config_proto: Vec<u8>,
}

/// How the worker loads versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadConfig {
    /// Retries after a failed load (`--max_num_load_retries`).
    pub max_num_load_retries: u32,
    /// Wait between attempts (`--load_retry_interval_micros`); negative: none.
    pub load_retry_interval_micros: i64,
    /// Replay `assets.extra/tf_serving_warmup_requests` before AVAILABLE
    /// (`--enable_model_warmup`).
    pub enable_model_warmup: bool,
    /// Times each warmup record runs (`--num_request_iterations_for_warmup`; 0 means 1).
    pub num_request_iterations_for_warmup: u32,
    /// Load a new version directory only once it has stopped changing.
    pub wait_for_stable_version_dirs: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            max_num_load_retries: 5,
            load_retry_interval_micros: 60_000_000,
            enable_model_warmup: true,
            num_request_iterations_for_warmup: 0,
            wait_for_stable_version_dirs: true,
        }
    }
}

/// Gateway → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GatewayMessage {
    /// Sent with the segment's memfd attached: attach it, checking this generation.
    Attach { generation: u64 },
    /// The models to serve (replaces the previous list).
    ServeModels {
        models: Vec<ModelConfig>,
        session: SessionConfig,
        load: LoadConfig,
        /// Seconds between polls of the base paths for new versions; 0 or less: only the
        /// initial load (`--file_system_poll_wait_seconds`).
        file_system_poll_wait_seconds: i32,
    },
    /// Liveness probe; the worker answers [`WorkerMessage::Pong`] with the same number.
    /// A worker that stops answering (stopped, wedged) is killed and replaced.
    Ping { seq: u64 },
    /// Answer to an UNLOADING report: no request for this version is in flight to the
    /// worker any more, and none will be sent; its session may close.
    Unrouted { model_name: String, version: i64 },
    /// Finish in-flight work and exit.
    Shutdown,
}

/// Worker → gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// First message after connecting.
    Hello { worker_id: u32, pid: u32 },
    /// The segment is attached; the worker is consuming the request ring.
    Attached { generation: u64 },
    /// Answer to [`GatewayMessage::Ping`].
    Pong { seq: u64 },
    /// The first poll of every base path has been acted on: each version this worker
    /// will serve from what it found is AVAILABLE (or failed). Versions a predecessor
    /// served that this worker did not report by now are not coming back.
    InitialLoadDone,
    /// A servable changed state. `signature_defs` is a serialized
    /// `tensorflow.serving.SignatureDefMap` (set when the version becomes AVAILABLE).
    ServableState {
        model_name: String,
        version: i64,
        state: ServableState,
        /// Why a load failed.
        error: Option<Status>,
        signature_defs: Vec<u8>,
        /// The version directory's `batching_params.pbtxt`, if it has one (read when the
        /// version becomes AVAILABLE; the gateway batches).
        batching_params: Option<String>,
    },
    /// Memory after an unload: the process's resident set, and what a fresh worker
    /// holding the same servables would hold (its size before any load plus each
    /// servable's growth when it loaded). TensorFlow keeps freed memory, so the two
    /// drift apart as versions come and go; the gateway replaces a worker that drifted
    /// too far.
    Memory { rss_bytes: u64, expected_bytes: u64 },
    /// No versions found under a base path (TF Serving logs this and keeps waiting).
    NoVersions {
        model_name: String,
        base_path: String,
    },
}

/// Why a control message could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("control message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed control message: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encodes one framed message.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ControlError> {
    let body = postcard::to_stdvec(msg)?;
    if body.len() > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ControlError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one framed message.
pub fn write_message<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ControlError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Checks a frame's length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, ControlError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_CONTROL_MESSAGE {
        return Err(ControlError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ControlError> {
    Ok(postcard::from_bytes(body)?)
}

/// Reads one framed message (blocking).
pub fn read_message<T: for<'a> Deserialize<'a>>(r: &mut impl Read) -> Result<T, ControlError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_oversized_frames() {
        let msg = WorkerMessage::ServableState {
            model_name: "half_plus_two".into(),
            version: 2,
            state: ServableState::Available,
            error: None,
            signature_defs: vec![1, 2, 3],
            batching_params: None,
        };
        let bytes = encode(&msg).unwrap();
        let back: WorkerMessage = read_message(&mut bytes.as_slice()).unwrap();
        assert_eq!(back, msg);

        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        let err = read_message::<WorkerMessage>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, ControlError::TooLarge(_)));

        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(read_message::<WorkerMessage>(&mut garbage.as_slice()).is_err());
    }
}
