//! The gateway's end of a worker's control socket: messages framed by
//! `tfgate_frame::control`, in `proto/tfgate/control.proto`'s terms; reports turned into
//! what the servable table and the metrics take.

use crate::servables::{Reported, ServableId};
use anyhow::anyhow;
use prost::Message;
use std::time::Duration;
use tfgate_frame::control;
use tfgate_proto::control::gateway_message as gm;
use tfgate_proto::control::worker_message as wm;
use tfgate_proto::control::{GatewayMessage, WorkerMessage};
use tfgate_proto::tensorflow::serving::model_version_status::State;
use tfgate_proto::tensorflow::serving::SignatureDefMap;
use tfgate_tensor::code::{Code, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;

/// A control write that does not finish in this long counts as a hung worker.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads a worker's next message (a message with nothing set is an error).
pub async fn read_message(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> anyhow::Result<wm::Message> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; control::frame_len(prefix)?];
    stream.read_exact(&mut body).await?;
    control::decode::<WorkerMessage>(&body)?
        .message
        .ok_or_else(|| anyhow!("empty control message"))
}

/// The framed bytes of a message to the worker.
pub fn encode(msg: gm::Message) -> Result<Vec<u8>, control::ControlError> {
    control::encode(&GatewayMessage { message: Some(msg) })
}

pub async fn write_message(stream: &mut OwnedWriteHalf, msg: gm::Message) -> anyhow::Result<()> {
    let bytes = encode(msg)?;
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes))
        .await
        .map_err(|_| anyhow!("control socket write timed out"))??;
    Ok(())
}

/// A servable report as the table takes it; none for a state this gateway does not know.
pub fn reported(report: wm::ServableState) -> Option<Reported> {
    let state = State::try_from(report.state)
        .ok()
        .filter(|s| *s != State::Unknown)?;
    Some(Reported {
        id: ServableId {
            name: report.model_name,
            version: report.version,
        },
        state,
        error: report
            .error
            .map(|e| Status::new(Code::from_canonical(e.error_code), e.error_message)),
        signatures: SignatureDefMap::decode(report.signature_defs.as_slice()).unwrap_or_default(),
        batching_params: report.batching_params,
    })
}

/// Records a worker's load or warmup report in TF Serving's series.
pub fn record_load(msg: &wm::Message) {
    match msg {
        wm::Message::LoadAttempt(a) => {
            crate::monitoring::series::load_attempt(&a.model_path, a.success, a.latency_us)
        }
        wm::Message::Warmup(w) => {
            crate::monitoring::series::warmup(&w.model_path, &w.status, w.latency_us, w.records)
        }
        _ => {}
    }
}
