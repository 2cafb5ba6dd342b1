//! When a call stops waiting, per API, as TF Serving has it (V2 takes its transport's
//! rule). The deadline becomes the run's timeout in the worker (`RunOptions`).

use std::time::Duration;
use tokio::time::Instant;

/// REST without `--rest_api_timeout_in_ms` (0 or less): no limit, as a year.
const REST_NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// gRPC without a client deadline waits at most this long.
const GRPC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// REST (`/v1` and `/v2` alike): `--rest_api_timeout_in_ms` from now (`None`: no limit).
pub fn rest(timeout: Option<Duration>) -> Instant {
    Instant::now() + timeout.unwrap_or(REST_NO_TIMEOUT)
}

/// gRPC (TF Serving's services and V2's alike): the client's `grpc-timeout`, else an
/// hour. tonic's server also enforces the header, answering CANCELLED "Timeout
/// expired"; ending our own wait a little earlier (5 %, at most 10 ms) makes the answer
/// TF Serving's DEADLINE_EXCEEDED instead.
pub fn grpc<T>(request: &tonic::Request<T>) -> Instant {
    let timeout = match request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(d) => d.saturating_sub((d / 20).min(Duration::from_millis(10))),
        None => GRPC_DEFAULT_TIMEOUT,
    };
    Instant::now() + timeout
}

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn each_api_has_its_rule() {
        let now = Instant::now();
        let rest = rest(Some(Duration::from_millis(500)));
        assert!(rest >= now + Duration::from_millis(500) && rest < now + Duration::from_secs(5));
        assert!(super::rest(None) > now + Duration::from_secs(300 * 24 * 3600));
        let plain = tonic::Request::new(());
        assert!(grpc(&plain) >= now + GRPC_DEFAULT_TIMEOUT);
        let mut timed = tonic::Request::new(());
        timed
            .metadata_mut()
            .insert("grpc-timeout", "1000m".parse().unwrap());
        let d = grpc(&timed);
        // 5 % earlier, at most 10 ms: 990 ms.
        assert!(d >= now + Duration::from_millis(990) && d < now + Duration::from_millis(1000));
    }
}
