//! `--rest_api_enable_cors_support`: TF Serving's CORS headers on every REST answer, and
//! its preflight rule (200 when `Origin` is an http(s) URL, else 400).

use crate::error::ServingError;
use hyper::header::{HeaderMap, HeaderValue};

/// Adds the CORS headers TF Serving sends.
pub fn add_headers(headers: &mut HeaderMap) {
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Content-Type"),
    );
}

/// Checks an OPTIONS preflight.
pub fn preflight(headers: &HeaderMap) -> Result<(), ServingError> {
    let origin = headers
        .get(hyper::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let lower = origin.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(())
    } else {
        Err(ServingError::invalid_argument(
            "Origin header is missing in CORS preflight",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_needs_an_http_origin() {
        let mut h = HeaderMap::new();
        assert_eq!(
            preflight(&h).unwrap_err().message,
            "Origin header is missing in CORS preflight"
        );
        h.insert(
            hyper::header::ORIGIN,
            HeaderValue::from_static("https://example.com"),
        );
        assert!(preflight(&h).is_ok());
        h.insert(
            hyper::header::ORIGIN,
            HeaderValue::from_static("ftp://example.com"),
        );
        assert!(preflight(&h).is_err());
    }
}
