//! `--grpc_channel_arguments`: TF Serving passes each comma-separated `key=value` to
//! gRPC's `ServerBuilder::AddChannelArgument` (as an int when it parses as one). tfgate
//! maps the arguments its HTTP/2 server has an equivalent for; the others are logged
//! and ignored, as gRPC logs the arguments it does not accept.

use std::time::Duration;

/// The gRPC server settings the arguments choose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelArgs {
    /// `grpc.max_receive_message_length`: the largest request, bytes.
    pub max_receive_message_length: usize,
    /// `grpc.max_send_message_length`: the largest response, bytes.
    pub max_send_message_length: usize,
    /// `grpc.max_concurrent_streams`.
    pub max_concurrent_streams: Option<u32>,
    /// `grpc.keepalive_time_ms`: how long a connection may send nothing before the
    /// server pings it (gRPC C++'s server: 2 hours).
    pub keepalive_time: Option<Duration>,
    /// `grpc.keepalive_timeout_ms`: how long the server waits for the ping's answer
    /// before closing the connection (gRPC C++: 20 s).
    pub keepalive_timeout: Duration,
    /// `grpc.max_connection_age_ms`.
    pub max_connection_age: Option<Duration>,
    /// `grpc.max_connection_age_grace_ms`.
    pub max_connection_age_grace: Option<Duration>,
    /// `grpc.http2.max_frame_size`.
    pub max_frame_size: Option<u32>,
    /// `grpc.server_handshake_timeout_ms`: from accept until the TLS handshake is done
    /// and the client has sent its HTTP/2 preface (gRPC C++: 120 s).
    pub server_handshake_timeout: Option<Duration>,
    /// `grpc.max_connection_idle_ms`: a connection with no RPC for this long gets GOAWAY
    /// and is closed (gRPC C++: never).
    pub max_connection_idle: Option<Duration>,
}

/// TF Serving's `SetMaxMessageSize(INT32_MAX)`, before any argument.
const TF_SERVING_MAX_MESSAGE: usize = i32::MAX as usize;
/// gRPC C++'s server defaults (`GRPC_ARG_KEEPALIVE_TIME_MS` on a server,
/// `GRPC_ARG_KEEPALIVE_TIMEOUT_MS`, `GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS`).
pub const GRPC_KEEPALIVE_TIME: Duration = Duration::from_secs(2 * 3600);
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
pub const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// A time that never comes, where a bound is required (a year: no timer overflows).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl Default for ChannelArgs {
    fn default() -> ChannelArgs {
        ChannelArgs {
            max_receive_message_length: TF_SERVING_MAX_MESSAGE,
            max_send_message_length: TF_SERVING_MAX_MESSAGE,
            max_concurrent_streams: None,
            keepalive_time: Some(GRPC_KEEPALIVE_TIME),
            keepalive_timeout: GRPC_KEEPALIVE_TIMEOUT,
            max_connection_age: None,
            max_connection_age_grace: None,
            max_frame_size: None,
            server_handshake_timeout: Some(GRPC_HANDSHAKE_TIMEOUT),
            max_connection_idle: None,
        }
    }
}

impl ChannelArgs {
    /// Parses the flag's value. An entry that is not `key=value` is an error (TF Serving
    /// reads past the end of its split there).
    pub fn parse(text: &str) -> Result<ChannelArgs, String> {
        let mut args = ChannelArgs::default();
        for entry in text.split(',').filter(|e| !e.is_empty()) {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(format!(
                    "--grpc_channel_arguments: '{entry}' is not key=value"
                ));
            };
            let Ok(n) = value.parse::<i32>() else {
                tracing::warn!("gRPC channel argument {key}={value} is not an integer; ignored");
                continue;
            };
            // gRPC reads -1 (any negative) as "no limit" for message sizes.
            let size = usize::try_from(n).unwrap_or(usize::MAX);
            // gRPC reads INT_MAX as "never" for its times.
            let millis = || {
                u64::try_from(n)
                    .ok()
                    .filter(|_| n != i32::MAX)
                    .map(Duration::from_millis)
            };
            match key {
                "grpc.max_receive_message_length" => args.max_receive_message_length = size,
                "grpc.max_send_message_length" => args.max_send_message_length = size,
                "grpc.max_concurrent_streams" => {
                    args.max_concurrent_streams = u32::try_from(n).ok()
                }
                "grpc.keepalive_time_ms" => args.keepalive_time = millis(),
                "grpc.keepalive_timeout_ms" => args.keepalive_timeout = millis().unwrap_or(NEVER),
                "grpc.server_handshake_timeout_ms" => args.server_handshake_timeout = millis(),
                "grpc.max_connection_idle_ms" => args.max_connection_idle = millis(),
                "grpc.max_connection_age_ms" => args.max_connection_age = millis(),
                "grpc.max_connection_age_grace_ms" => args.max_connection_age_grace = millis(),
                "grpc.http2.max_frame_size" => args.max_frame_size = u32::try_from(n).ok(),
                _ => {
                    tracing::warn!("gRPC channel argument {key}={value} is not used by tfgate");
                    continue;
                }
            }
            tracing::info!("gRPC channel argument {key}={value}");
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_and_unknown_keys() {
        let a = ChannelArgs::parse(
            "grpc.max_receive_message_length=1024,grpc.max_send_message_length=-1,\
             grpc.keepalive_time_ms=2000,grpc.optimization_target=throughput,grpc.foo=1",
        )
        .unwrap();
        assert_eq!(a.max_receive_message_length, 1024);
        assert_eq!(a.max_send_message_length, usize::MAX);
        assert_eq!(a.keepalive_time, Some(Duration::from_millis(2000)));
        assert_eq!(a.max_concurrent_streams, None);
        assert_eq!(a.keepalive_timeout, GRPC_KEEPALIVE_TIMEOUT);
        assert_eq!(a.server_handshake_timeout, Some(GRPC_HANDSHAKE_TIMEOUT));
        assert_eq!(a.max_connection_idle, None);
        let b = ChannelArgs::parse(
            "grpc.max_connection_idle_ms=1500,grpc.server_handshake_timeout_ms=2147483647",
        )
        .unwrap();
        assert_eq!(b.max_connection_idle, Some(Duration::from_millis(1500)));
        assert_eq!(b.server_handshake_timeout, None, "INT_MAX: never");
        assert_eq!(ChannelArgs::parse("").unwrap(), ChannelArgs::default());
        assert_eq!(
            ChannelArgs::default().max_receive_message_length,
            i32::MAX as usize
        );
        assert_eq!(
            ChannelArgs::parse("grpc.max_receive_message_length").unwrap_err(),
            "--grpc_channel_arguments: 'grpc.max_receive_message_length' is not key=value"
        );
    }
}
