//! The ring consumer: takes a request descriptor, decodes its frame (never trusting the
//! bytes), runs the session and writes the outputs back through the response ring.
//! Numeric input payloads are handed to TensorFlow in place (no copy); strings and bools
//! are copied out and checked. Numeric outputs are encoded into the response arena
//! straight from TensorFlow's buffers (one copy in all).

use crate::manager::Manager;
use crate::predict::{predict, PredictCall};
use crate::signature::Ran;
use crate::tf::Feed;
use shm_protocol::{RequestReceiver, ResponseSender, SendError};
use std::time::Duration;
use tfgate_frame::{
    request_view, FrameError, RequestKind, RequestView, ResponseFrame, ResponseRef, TensorView,
    WorkerTiming,
};
use tfgate_tensor::code::Code;
use tfgate_tensor::tensor::DataType;

/// How long one wait on the request ring lasts before re-checking for shutdown.
const RECV_POLL: Duration = Duration::from_millis(100);
/// How long a response may wait for space in the response ring/arena.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

fn feed(view: &TensorView<'_>) -> Result<Feed, FrameError> {
    match view.dtype() {
        DataType::String | DataType::Bool => Ok(Feed::Copy(view.to_tensor()?)),
        dtype => Ok(Feed::InPlace {
            dtype,
            shape: view.shape().to_vec(),
            payload: view.in_place()?,
        }),
    }
}

/// What is left of a request's deadline, as TensorFlow's `timeout_in_ms` (0: no limit),
/// or `None` when it has passed: the caller has stopped waiting, so the request is not
/// run at all (it may have queued behind a slow one).
fn remaining_ms(deadline_ns: u64, now_ns: u64) -> Option<u64> {
    if deadline_ns == 0 {
        return Some(0);
    }
    let left = deadline_ns.checked_sub(now_ns)?;
    // Round up: 0 would mean "no limit" to TensorFlow.
    Some(left.div_ceil(1_000_000).max(1))
}

fn deadline_exceeded() -> ResponseFrame {
    ResponseFrame::Err {
        code: Code::DeadlineExceeded,
        message: "Deadline Exceeded".into(),
    }
}

/// What a request comes to: outputs still in TensorFlow's buffers, or a frame.
enum Reply {
    Ran {
        model_version: i64,
        ran: Ran,
        /// How long the run took, ns.
        run_ns: u64,
    },
    Frame(ResponseFrame),
}

fn handle(manager: &Manager, view: &RequestView<'_>) -> Result<Reply, FrameError> {
    let Some(timeout_ms) = remaining_ms(view.deadline_ns, shm_protocol::monotonic_ns()) else {
        return Ok(Reply::Frame(deadline_exceeded()));
    };
    let inputs = view
        .inputs
        .iter()
        .map(|(name, t)| Ok((name.clone(), feed(t)?)))
        .collect::<Result<Vec<_>, FrameError>>()?;
    Ok(match view.kind {
        RequestKind::Predict => {
            let call = PredictCall {
                model_name: &view.model_name,
                version: view.version,
                signature_name: &view.signature_name,
                inputs,
                output_filter: &view.output_filter,
                timeout_ms,
            };
            let started = shm_protocol::monotonic_ns();
            match predict(manager, call) {
                Ok((model_version, ran)) => Reply::Ran {
                    model_version,
                    ran,
                    run_ns: shm_protocol::monotonic_ns().saturating_sub(started),
                },
                Err(e) => Reply::Frame(ResponseFrame::Err {
                    code: e.code,
                    message: e.message,
                }),
            }
        }
        #[allow(unreachable_patterns)]
        _ => Reply::Frame(ResponseFrame::Err {
            code: Code::Unimplemented,
            message: "request kind not supported by this worker".into(),
        }),
    })
}

/// Why a reply did not go out; a short error frame goes out in its place.
#[derive(Debug, thiserror::Error)]
enum Unsent {
    #[error("cannot lay out the response: {0}")]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Ring(#[from] SendError),
}

/// Writes one owned frame into the response arena.
fn send_frame(
    responses: &mut ResponseSender,
    id: u64,
    frame: &ResponseFrame,
) -> Result<(), Unsent> {
    Ok(responses.send(id, &frame.encode()?, SEND_TIMEOUT)?)
}

/// Writes the reply into the response arena. Nothing reads TensorFlow's buffers (which
/// may alias the request's in-place inputs) once it is sent.
fn send(
    responses: &mut ResponseSender,
    id: u64,
    reply: &Reply,
    received_ns: u64,
) -> Result<(), Unsent> {
    match reply {
        Reply::Frame(frame) => send_frame(responses, id, frame),
        Reply::Ran {
            model_version,
            ran,
            run_ns,
        } => {
            let views = match ran.outputs.views() {
                Ok(v) => v,
                Err(e) => {
                    let frame = ResponseFrame::Err {
                        code: e.code,
                        message: e.message,
                    };
                    return send_frame(responses, id, &frame);
                }
            };
            let outputs: Vec<_> = ran
                .aliases
                .iter()
                .zip(&views)
                .map(|(alias, view)| (alias.as_str(), view.as_frame_ref()))
                .collect();
            let frame = ResponseRef::Ok {
                model_version: *model_version,
                outputs: &outputs,
                timing: WorkerTiming {
                    received_ns,
                    run_ns: *run_ns,
                    replied_ns: shm_protocol::monotonic_ns(),
                },
            };
            Ok(responses.send(id, &frame.encode()?, SEND_TIMEOUT)?)
        }
    }
}

/// Serves requests until the gateway closes the request ring, which it does when it lets
/// this worker go (after `Shutdown`) or when it exits: either way an orderly end, not a
/// failure, so that a worker asked to stop exits with 0 whichever thread sees it first.
pub fn serve(
    manager: &Manager,
    mut requests: RequestReceiver,
    mut responses: ResponseSender,
) -> anyhow::Result<()> {
    loop {
        let request = match requests.recv(RECV_POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(shm_protocol::RecvError::Closed) => {
                tracing::info!("the gateway closed the request ring; exiting");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let id = request.id();
        let received_ns = shm_protocol::monotonic_ns();
        let reply = match request_view(&request).and_then(|view| handle(manager, &view)) {
            Ok(r) => r,
            Err(e) => Reply::Frame(ResponseFrame::Err {
                code: Code::InvalidArgument,
                message: format!("malformed request frame: {e}"),
            }),
        };
        // Once sent, the gateway may reuse the request's arena block: the reply (whose
        // outputs may alias in-place inputs) is not read again, only dropped.
        let sent = send(&mut responses, id, &reply, received_ns);
        drop(reply);
        drop(request);
        if let Err(e) = sent {
            // A response that cannot fit is replaced by an error naming the gateway flag
            // that sizes the response arena.
            let message = match e {
                Unsent::Ring(SendError::TooLarge { .. }) => {
                    format!("{e}; raise --shm_response_arena_mb")
                }
                e => e.to_string(),
            };
            tracing::warn!("cannot send response {id}: {message}");
            let frame = ResponseFrame::Err {
                code: Code::ResourceExhausted,
                message,
            };
            send_frame(&mut responses, id, &frame)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_become_run_timeouts() {
        assert_eq!(remaining_ms(0, 5), Some(0), "no deadline: no limit");
        assert_eq!(remaining_ms(3_000_000_000, 1_000_000_000), Some(2000));
        assert_eq!(
            remaining_ms(1_000_000_001, 1_000_000_000),
            Some(1),
            "never 0"
        );
        assert_eq!(remaining_ms(1_000, 1_000), Some(1));
        assert_eq!(remaining_ms(1_000, 1_001), None, "passed: not run");
    }
}
