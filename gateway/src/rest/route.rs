//! URL routing with TF Serving's regexes (`http_rest_api_handler.cc`), matched against the
//! whole path, case-insensitively.

use crate::error::ServingError;
use crate::servables::ServableRequest;
use hyper::Method;
use regex::Regex;
use std::sync::LazyLock;

static POST_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)$")
        .expect("static regex")
});
static GET_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?$")
        .expect("static regex")
});

/// An inference verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Predict,
    Classify,
    Regress,
}

impl Verb {
    /// The `API` label TF Serving's REST server gives it (the URL's verb).
    pub fn api(self) -> &'static str {
        match self {
            Verb::Predict => "predict",
            Verb::Classify => "classify",
            Verb::Regress => "regress",
        }
    }
}

/// A matched route.
#[derive(Debug, PartialEq)]
pub enum Route {
    Status {
        request: ServableRequest,
    },
    Metadata {
        request: ServableRequest,
    },
    Infer {
        request: ServableRequest,
        verb: Verb,
    },
}

/// Why nothing matched.
#[derive(Debug)]
pub enum NoRoute {
    /// Outside `/v1/`: a plain 404.
    NotFound,
    /// Under `/v1/`: TF Serving's JSON error.
    Error(ServingError),
}

fn unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn servable_request(
    name: &str,
    version: Option<&str>,
    label: Option<&str>,
) -> Result<ServableRequest, ServingError> {
    let name = unescape(name);
    match (version, label) {
        (Some(v), _) => v
            .parse::<i64>()
            .map(|v| ServableRequest::Specific(name, v))
            .map_err(|_| {
                ServingError::invalid_argument(format!(
                    "Failed to convert version: {v} to numeric."
                ))
            }),
        (None, Some(l)) => Ok(ServableRequest::Label(name, unescape(l))),
        (None, None) => Ok(ServableRequest::Latest(name)),
    }
}

/// Matches a request's method and path.
pub fn parse(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let lower = path.to_ascii_lowercase();
    if !lower.starts_with("/v1/") {
        return Err(NoRoute::NotFound);
    }
    let malformed = || {
        NoRoute::Error(ServingError::invalid_argument(format!(
            "Malformed request: {method} {path}"
        )))
    };
    if method == Method::POST {
        let caps = POST_RE.captures(path).ok_or_else(malformed)?;
        let verb = match caps.get(4).map(|m| m.as_str()) {
            Some("predict") => Verb::Predict,
            Some("classify") => Verb::Classify,
            Some("regress") => Verb::Regress,
            _ => return Err(malformed()),
        };
        let request = servable_request(
            caps.get(1).map_or("", |m| m.as_str()),
            caps.get(2).map(|m| m.as_str()),
            caps.get(3).map(|m| m.as_str()),
        )
        .map_err(NoRoute::Error)?;
        return Ok(Route::Infer { request, verb });
    }
    if method == Method::GET {
        let caps = GET_RE.captures(path).ok_or_else(malformed)?;
        let Some(name) = caps.get(1) else {
            return Err(NoRoute::Error(ServingError::invalid_argument(
                "Missing model name in request.",
            )));
        };
        let request = servable_request(
            name.as_str(),
            caps.get(2).map(|m| m.as_str()),
            caps.get(3).map(|m| m.as_str()),
        )
        .map_err(NoRoute::Error)?;
        return Ok(if caps.get(4).is_some() {
            Route::Metadata { request }
        } else {
            Route::Status { request }
        });
    }
    Err(malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(method: Method, path: &str) -> String {
        match parse(&method, path) {
            Err(NoRoute::Error(e)) => e.message,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn routes_like_tf_serving() {
        assert_eq!(
            parse(&Method::POST, "/v1/models/half_plus_two:predict").unwrap(),
            Route::Infer {
                request: ServableRequest::Latest("half_plus_two".into()),
                verb: Verb::Predict
            }
        );
        assert_eq!(
            parse(&Method::POST, "/V1/Models/m/Versions/2:regress").unwrap(),
            Route::Infer {
                request: ServableRequest::Specific("m".into(), 2),
                verb: Verb::Regress
            }
        );
        assert_eq!(
            parse(&Method::GET, "/v1/models/m%20x/labels/stable").unwrap(),
            Route::Status {
                request: ServableRequest::Label("m x".into(), "stable".into())
            }
        );
        assert_eq!(
            parse(&Method::GET, "/v1/models/m/versions/3/metadata").unwrap(),
            Route::Metadata {
                request: ServableRequest::Specific("m".into(), 3)
            }
        );
        assert_eq!(
            err(Method::GET, "/v1/models"),
            "Missing model name in request."
        );
        assert_eq!(
            err(Method::POST, "/v1/models/foo/version/50:predict"),
            "Malformed request: POST /v1/models/foo/version/50:predict"
        );
        assert_eq!(
            err(Method::GET, "/v1/models/m:predict"),
            "Malformed request: GET /v1/models/m:predict"
        );
        assert_eq!(
            err(Method::GET, "/v1/models/m/"),
            "Malformed request: GET /v1/models/m/"
        );
        assert_eq!(
            err(Method::PUT, "/v1/models/m"),
            "Malformed request: PUT /v1/models/m"
        );
        assert!(matches!(
            parse(&Method::GET, "/healthz"),
            Err(NoRoute::NotFound)
        ));
        assert!(err(
            Method::POST,
            "/v1/models/m/versions/99999999999999999999:predict"
        )
        .starts_with("Failed to convert version"));
    }
}
