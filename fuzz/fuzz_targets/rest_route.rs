//! A URL path through the gateway's REST router (`rest/route.rs`, matched by hand), held
//! to TF Serving's two routing regexes (`tfgate::fuzzing::{POST,GET}_PATTERN`):
//! for an ASCII path (all a URI's path can hold) the same match and the same captures;
//! for any path, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regex::Regex;
use std::sync::LazyLock;

static POST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(tfgate::fuzzing::POST_PATTERN).expect("static regex"));
static GET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(tfgate::fuzzing::GET_PATTERN).expect("static regex"));

fn cap<'h>(c: &regex::Captures<'h>, i: usize) -> Option<&'h str> {
    c.get(i).map(|m| m.as_str())
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let (post, get) = tfgate::fuzzing::rest_route(path);
    if !path.is_ascii() {
        return;
    }
    let want_post = POST.captures(path).map(|c| {
        (
            cap(&c, 1).unwrap_or_default(),
            cap(&c, 2),
            cap(&c, 3),
            cap(&c, 4).unwrap_or_default(),
        )
    });
    assert_eq!(post, want_post, "POST {path:?}");
    let want_get = GET
        .captures(path)
        .map(|c| (cap(&c, 1), cap(&c, 2), cap(&c, 3), c.get(4).is_some()));
    assert_eq!(get, want_get, "GET {path:?}");
});
