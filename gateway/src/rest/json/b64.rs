//! `{"b64": "..."}` values: recognising them (`IsValBase64Object`) and decoding them
//! with the leniency of `absl::Base64Unescape`.

use super::parser::JsonValue;
use super::writer::debug_string;
use crate::error::ServingError;

/// `IsValBase64Object`: an object with exactly one member, `b64`, whose value is a
/// string.
pub(crate) fn is_b64_object(v: &JsonValue) -> bool {
    match v.as_object() {
        Some(members) => members.len() == 1 && v.get("b64").is_some_and(|s| s.as_bytes().is_some()),
        None => false,
    }
}

/// `JsonDecodeBase64Object`.
pub(crate) fn decode_b64_object(v: &JsonValue) -> Result<Vec<u8>, ServingError> {
    let text = match v.get("b64").and_then(JsonValue::as_bytes) {
        Some(text) if is_b64_object(v) => text,
        _ => {
            return Err(ServingError::invalid_argument(format!(
                "JSON Value: {} not formatted correctly for base64 data",
                debug_string(v)
            )))
        }
    };
    absl_base64_unescape(text)
        .ok_or_else(|| ServingError::invalid_argument("Unable to base64 decode"))
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// `absl::ascii_isspace`.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// What `absl::Base64Unescape` accepts: the standard alphabet; whitespace anywhere;
/// padding with `=` or `.`, either none at all or exactly the right number, and only
/// whitespace after it; leftover bits of a partial group ignored; one lone trailing
/// character rejected.
pub(crate) fn absl_base64_unescape(src: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(src.len() / 4 * 3 + 3);
    let mut temp: u32 = 0;
    let mut state = 0;
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if let Some(v) = sextet(c) {
            temp = (temp << 6) | v;
            state += 1;
            if state == 4 {
                out.extend_from_slice(&[(temp >> 16) as u8, (temp >> 8) as u8, temp as u8]);
                state = 0;
                temp = 0;
            }
        } else if c == b'=' || c == b'.' {
            break;
        } else if !is_space(c) {
            return None;
        }
        i += 1;
    }
    let expected_equals = match state {
        0 => 0,
        2 => {
            out.push((temp >> 4) as u8);
            2
        }
        3 => {
            out.extend_from_slice(&[(temp >> 10) as u8, (temp >> 2) as u8]);
            1
        }
        _ => return None,
    };
    let mut equals = 0;
    for &c in &src[i..] {
        if c == b'=' || c == b'.' {
            equals += 1;
        } else if !is_space(c) {
            return None;
        }
    }
    (equals == 0 || equals == expected_equals).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<Vec<u8>> {
        absl_base64_unescape(s.as_bytes())
    }

    #[test]
    fn decodes_like_absl() {
        assert_eq!(d("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(d("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(d("aGVsbG8."), Some(b"hello".to_vec()));
        assert_eq!(d("aGVs bG8=\n"), Some(b"hello".to_vec()));
        assert_eq!(d("c2VydmluZw=="), Some(b"serving".to_vec()));
        assert_eq!(d("c2VydmluZw"), Some(b"serving".to_vec()));
        assert_eq!(d(""), Some(vec![]));
        assert_eq!(d("  "), Some(vec![]));
        assert_eq!(d("c2VydmluZw="), None); // wrong number of pads
        assert_eq!(d("aGVsbG8=="), None);
        assert_eq!(d("aGVsb"), None); // 6 leftover bits
        assert_eq!(d("aGVs!G8="), None);
        assert_eq!(d("aGVsbG8=x"), None);
        assert_eq!(d("aGVs\0bG8="), None);
        assert_eq!(d("AAAA="), None);
        assert_eq!(d("-_-_"), None); // web-safe alphabet is not accepted
        assert_eq!(d("+/+/"), Some(vec![0xfb, 0xff, 0xbf]));
    }

    #[test]
    fn recognises_b64_objects() {
        let obj = |members: Vec<(&str, JsonValue)>| {
            JsonValue::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v))
                    .collect(),
            )
        };
        assert!(is_b64_object(&obj(vec![(
            "b64",
            JsonValue::String(b"AA==".to_vec())
        )])));
        assert!(!is_b64_object(&obj(vec![("b64", JsonValue::Int(1))])));
        assert!(!is_b64_object(&obj(vec![
            ("b64", JsonValue::String(vec![])),
            ("x", JsonValue::Null)
        ])));
        assert!(!is_b64_object(&JsonValue::String(vec![])));
        let err = decode_b64_object(&obj(vec![("b64", JsonValue::Int(1))])).unwrap_err();
        assert_eq!(
            err.message,
            "JSON Value: {\n    \"b64\": 1\n} not formatted correctly for base64 data"
        );
        let err =
            decode_b64_object(&obj(vec![("b64", JsonValue::String(b"a".to_vec()))])).unwrap_err();
        assert_eq!(err.message, "Unable to base64 decode");
    }
}
