//! URL routing as TF Serving's regexes ([`POST_PATTERN`], [`GET_PATTERN`]) route, matched
//! against the whole path, case-insensitively.
//!
//! Matched by hand rather than by a regex engine, which cost ~2 % of the gateway's CPU
//! under load; the tests and the `rest_route` fuzz target hold the two to the same
//! answers. A path here is ASCII (hyper refuses other bytes in a URI), and a name or
//! label is a whole segment: a shorter one would leave a character that nothing after
//! it can match.

use crate::error::ServingError;
use crate::servables::ServableRequest;
use hyper::Method;

/// TF Serving's POST route (`http_rest_api_handler.cc`), `\d` written as RE2 reads it
/// (ASCII): the oracle the hand matcher is held to.
pub const POST_PATTERN: &str = r"^(?i)/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)$";
/// TF Serving's GET route, likewise.
pub const GET_PATTERN: &str = r"^(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?$";

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

/// What a GET path names: `(name, version, label, metadata)`, as the regex captures them.
pub type GetCaptures<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `[^/:]+`, a whole segment, and what follows it.
fn segment(s: &str) -> Option<(&str, &str)> {
    let end = s.find(['/', ':']).unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// `(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?` then `end`, in the regex's order: the
/// version, else the label, else neither.
fn version_or_label<'a, T>(
    s: &'a str,
    end: impl Fn(&'a str) -> Option<T>,
) -> Option<(Option<&'a str>, Option<&'a str>, T)> {
    if let Some(rest) = strip_ci(s, "/versions/") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            if let Some(t) = end(&rest[digits..]) {
                return Some((Some(&rest[..digits]), None, t));
            }
        }
    }
    if let Some((label, rest)) = strip_ci(s, "/labels/").and_then(segment) {
        if let Some(t) = end(rest) {
            return Some((None, Some(label), t));
        }
    }
    end(s).map(|t| (None, None, t))
}

/// What a POST path names: `(name, version, label, verb)`, as the regex captures them.
pub type PostCaptures<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str);

/// The POST regex: name, version, label and the verb's text.
pub fn match_post(path: &str) -> Option<PostCaptures<'_>> {
    let (name, rest) = segment(strip_ci(path, "/v1/models/")?)?;
    fn verb(s: &str) -> Option<&str> {
        let v = s.strip_prefix(':')?;
        ["classify", "regress", "predict"]
            .iter()
            .any(|w| v.eq_ignore_ascii_case(w))
            .then_some(v)
    }
    let (version, label, verb) = version_or_label(rest, verb)?;
    Some((name, version, label, verb))
}

/// The GET regex.
pub fn match_get(path: &str) -> Option<GetCaptures<'_>> {
    let rest = strip_ci(path, "/v1/models")?;
    let metadata = |s: &str| match s {
        "" => Some(false),
        s if s.eq_ignore_ascii_case("/metadata") => Some(true),
        _ => None,
    };
    // With a name first; then, as the regex backtracks, without one.
    let named = rest
        .strip_prefix('/')
        .and_then(segment)
        .and_then(|(name, after)| {
            let (v, l, m) = version_or_label(after, metadata)?;
            Some((Some(name), v, l, m))
        });
    named.or_else(|| {
        let (v, l, m) = version_or_label(rest, metadata)?;
        Some((None, v, l, m))
    })
}

/// Matches a request's method and path.
pub fn parse(method: &Method, path: &str) -> Result<Route, NoRoute> {
    if strip_ci(path, "/v1/").is_none() {
        return Err(NoRoute::NotFound);
    }
    let malformed = || {
        NoRoute::Error(ServingError::invalid_argument(format!(
            "Malformed request: {method} {path}"
        )))
    };
    if method == Method::POST {
        let (name, version, label, verb) = match_post(path).ok_or_else(malformed)?;
        // The regex matches the verb in any case; the handler then compares it as
        // written, so only lower case serves.
        let verb = match verb {
            "predict" => Verb::Predict,
            "classify" => Verb::Classify,
            "regress" => Verb::Regress,
            _ => return Err(malformed()),
        };
        let request = servable_request(name, version, label).map_err(NoRoute::Error)?;
        return Ok(Route::Infer { request, verb });
    }
    if method == Method::GET {
        let (name, version, label, metadata) = match_get(path).ok_or_else(malformed)?;
        let Some(name) = name else {
            return Err(NoRoute::Error(ServingError::invalid_argument(
                "Missing model name in request.",
            )));
        };
        let request = servable_request(name, version, label).map_err(NoRoute::Error)?;
        return Ok(if metadata {
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

    use regex::Regex;

    #[test]
    fn matches_what_tf_servings_regexes_match() {
        let (post_re, get_re) = (
            Regex::new(POST_PATTERN).unwrap(),
            Regex::new(GET_PATTERN).unwrap(),
        );
        let pieces = [
            "/",
            ":",
            "v1",
            "V1",
            "models",
            "MODELS",
            "m",
            "m%20x",
            "versions",
            "VERSIONS",
            "Labels",
            "labels",
            "metadata",
            "MetaData",
            "12",
            "x1",
            "predict",
            "PREDICT",
            "classify",
            "regress",
            "",
            "/v1/models",
            "/v1/models/",
            "/versions/",
            "/labels/",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut matched = 0;
        for i in 0..200_000 {
            let mut path = String::from(["/v1/models", "/V1/Models/", "/v1/"][i % 3]);
            for _ in 0..next() % 7 {
                path.push_str(pieces[next() as usize % pieces.len()]);
            }
            fn cap<'h>(c: &regex::Captures<'h>, i: usize) -> Option<&'h str> {
                c.get(i).map(|m| m.as_str())
            }
            let want = post_re.captures(&path).map(|c| {
                let verb = cap(&c, 4).unwrap_or_default();
                (cap(&c, 1).unwrap_or_default(), cap(&c, 2), cap(&c, 3), verb)
            });
            assert_eq!(match_post(&path), want, "POST {path}");
            let want = get_re
                .captures(&path)
                .map(|c| (cap(&c, 1), cap(&c, 2), cap(&c, 3), c.get(4).is_some()));
            assert_eq!(match_get(&path), want, "GET {path}");
            matched += usize::from(want.is_some());
        }
        assert!(
            matched > 10_000,
            "the paths exercise the matches: {matched}"
        );
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
