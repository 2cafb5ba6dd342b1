//! Reading a request body: bounded by `--max_request_body_mb`, and gunzipped when the
//! client sent `Content-Encoding: gzip` (TF Serving accepts compressed bodies). The bound
//! applies to the decompressed size too, so a small bomb cannot blow up memory.

use crate::error::ServingError;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::Request;
use std::io::Read;

fn too_large(limit: usize) -> ServingError {
    ServingError::resource_exhausted(format!(
        "Request body exceeds {limit} bytes; raise --max_request_body_mb"
    ))
}

/// The body of `req`, decompressed if needed, at most `limit` bytes, received within
/// `timeout` (`--rest_api_body_timeout_ms`: a client trickling its body holds nothing
/// for long).
pub async fn read(
    req: Request<Incoming>,
    limit: usize,
    timeout: Option<std::time::Duration>,
) -> Result<Bytes, ServingError> {
    let Some(timeout) = timeout else {
        return read_all(req, limit).await;
    };
    tokio::time::timeout(timeout, read_all(req, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ServingError::new(
                crate::error::Code::DeadlineExceeded,
                format!(
                    "Request body not received within {} ms; raise --rest_api_body_timeout_ms",
                    timeout.as_millis()
                ),
            ))
        })
}

async fn read_all(req: Request<Incoming>, limit: usize) -> Result<Bytes, ServingError> {
    let gzip = req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let raw = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(limit)),
        Err(e) => {
            return Err(ServingError::invalid_argument(format!(
                "Failed to read request body: {e}"
            )))
        }
    };
    if !gzip {
        return Ok(raw);
    }
    gunzip(&raw, limit)
}

fn gunzip(raw: &[u8], limit: usize) -> Result<Bytes, ServingError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ServingError::invalid_argument(format!("Failed to decompress gzip request body: {e}"))
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzips_within_the_limit() {
        assert_eq!(
            &gunzip(&gz(b"{\"inputs\": [1.0]}"), 100).unwrap()[..],
            b"{\"inputs\": [1.0]}"
        );
        let bomb = gz(&vec![b' '; 10_000]);
        assert!(bomb.len() < 100);
        assert_eq!(
            gunzip(&bomb, 1000).unwrap_err().code,
            crate::error::Code::ResourceExhausted
        );
        assert_eq!(
            gunzip(b"not gzip", 1000).unwrap_err().code,
            crate::error::Code::InvalidArgument
        );
    }
}
