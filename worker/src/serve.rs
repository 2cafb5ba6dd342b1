//! The ring consumer: takes a request descriptor, decodes its frame (never trusting the
//! bytes), runs the session and writes the outputs back through the response ring.

use crate::manager::Manager;
use crate::predict::{predict, PredictCall};
use shm_protocol::frame::{RequestFrame, RequestKind, ResponseFrame};
use shm_protocol::{RequestReceiver, ResponseSender};
use std::time::Duration;

/// How long one wait on the request ring lasts before re-checking for shutdown.
const RECV_POLL: Duration = Duration::from_millis(100);
/// How long a response may wait for space in the response ring/arena.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

fn handle(manager: &Manager, frame: &RequestFrame) -> ResponseFrame {
    match frame.kind {
        RequestKind::Predict => {
            let call = PredictCall {
                model_name: &frame.model_name,
                version: frame.version,
                signature_name: &frame.signature_name,
                inputs: &frame.inputs,
                output_filter: &frame.output_filter,
            };
            match predict(manager, &call) {
                Ok((model_version, outputs)) => ResponseFrame::Ok {
                    model_version,
                    outputs,
                },
                Err(e) => ResponseFrame::Err {
                    code: e.code,
                    message: e.message,
                },
            }
        }
        #[allow(unreachable_patterns)]
        _ => ResponseFrame::Err {
            code: 12,
            message: "request kind not supported by this worker".into(),
        },
    }
}

/// Serves requests until the gateway goes away.
pub fn serve(
    manager: &Manager,
    mut requests: RequestReceiver,
    mut responses: ResponseSender,
) -> anyhow::Result<()> {
    loop {
        let Some(request) = requests.recv(RECV_POLL)? else {
            continue;
        };
        let id = request.id();
        let response = match request.frame().and_then(|view| view.to_frame()) {
            Ok(frame) => handle(manager, &frame),
            Err(e) => ResponseFrame::Err {
                code: 3,
                message: format!("malformed request frame: {e}"),
            },
        };
        drop(request);
        if let Err(e) = responses.send(id, &response, SEND_TIMEOUT) {
            // A response that cannot fit is replaced by an error naming the flag to raise.
            let message = e.to_string();
            tracing::warn!("cannot send response {id}: {message}");
            responses.send(id, &ResponseFrame::Err { code: 8, message }, SEND_TIMEOUT)?;
        }
    }
}
