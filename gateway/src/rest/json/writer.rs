//! rapidjson 1.1.0's `PrettyWriter` (4-space indent, optional `kFormatSingleLineArray`)
//! and `json_tensor.cc::JsonValueToDebugString`, byte for byte.
//!
//! Strings are written as rapidjson's `Writer::WriteString` does without
//! `kWriteValidateEncodingFlag`: `"` and `\` escaped, control characters as `\b \t \n
//! \f \r` or `\u00XX` (upper-case hex), every other byte, invalid UTF-8 included, copied
//! as is.

use super::dtoa::rapidjson_dtoa;
use super::parser::JsonValue;

struct Level {
    in_array: bool,
    value_count: usize,
}

/// A streaming pretty-printer with rapidjson's exact whitespace.
pub(crate) struct PrettyWriter {
    out: Vec<u8>,
    levels: Vec<Level>,
    single_line_array: bool,
}

impl PrettyWriter {
    pub(crate) fn new() -> PrettyWriter {
        PrettyWriter {
            out: Vec::new(),
            levels: Vec::new(),
            single_line_array: false,
        }
    }

    /// A writer whose body has room for `bytes` before it grows.
    pub(crate) fn with_capacity(bytes: usize) -> PrettyWriter {
        PrettyWriter {
            out: Vec::with_capacity(bytes),
            ..PrettyWriter::new()
        }
    }

    /// `SetFormatOptions(kFormatSingleLineArray)` / `SetFormatOptions(kFormatDefault)`.
    pub(crate) fn set_single_line_array(&mut self, on: bool) {
        self.single_line_array = on;
    }

    pub(crate) fn len(&self) -> usize {
        self.out.len()
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    fn indent(&mut self) {
        let n = self.levels.len() * 4;
        self.out.resize(self.out.len() + n, b' ');
    }

    fn prefix(&mut self) {
        let single = self.single_line_array;
        let Some(level) = self.levels.last_mut() else {
            return;
        };
        let count = level.value_count;
        level.value_count += 1;
        if level.in_array {
            if count > 0 {
                self.out.push(b',');
                if single {
                    self.out.push(b' ');
                }
            }
            if !single {
                self.out.push(b'\n');
                self.indent();
            }
        } else {
            if count > 0 {
                if count % 2 == 0 {
                    self.out.extend_from_slice(b",\n");
                } else {
                    self.out.extend_from_slice(b": ");
                }
            } else {
                self.out.push(b'\n');
            }
            if count % 2 == 0 {
                self.indent();
            }
        }
    }

    pub(crate) fn null(&mut self) {
        self.prefix();
        self.out.extend_from_slice(b"null");
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.prefix();
        self.out
            .extend_from_slice(if b { b"true" as &[u8] } else { b"false" });
    }

    /// Any integer (`Int`, `Uint`, `Int64`, `Uint64` all print plain decimal), written
    /// without an allocation.
    pub(crate) fn integer(&mut self, v: impl itoa::Integer) {
        self.prefix();
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// `Writer::Double` without `kWriteNanAndInfFlag`: false (after the prefix) for
    /// NaN and infinities, which writes nothing.
    pub(crate) fn double(&mut self, d: f64) -> bool {
        self.prefix();
        if !d.is_finite() {
            return false;
        }
        self.out.extend_from_slice(rapidjson_dtoa(d).as_bytes());
        true
    }

    /// `RawValue(text, kNumberType)`.
    pub(crate) fn raw_number(&mut self, text: &[u8]) {
        self.prefix();
        self.out.extend_from_slice(text);
    }

    /// `count` numbers into the array just started, exactly as `count` calls of
    /// [`raw_number`](Self::raw_number) would lay them out, with the separator worked
    /// out once rather than per value: `write(i, out)` appends the `i`th number's text.
    pub(crate) fn numbers(&mut self, count: usize, mut write: impl FnMut(usize, &mut Vec<u8>)) {
        if count == 0 {
            return;
        }
        debug_assert!(self.levels.last().is_some_and(|l| l.in_array));
        self.prefix();
        write(0, &mut self.out);
        if let Some(level) = self.levels.last_mut() {
            level.value_count += count - 1;
        }
        let single = self.single_line_array;
        for i in 1..count {
            if single {
                self.out.extend_from_slice(b", ");
            } else {
                self.out.extend_from_slice(b",\n");
                self.indent();
            }
            write(i, &mut self.out);
        }
    }

    pub(crate) fn string(&mut self, s: &[u8]) {
        self.prefix();
        write_escaped(&mut self.out, s);
    }

    pub(crate) fn key(&mut self, s: &[u8]) {
        self.string(s);
    }

    pub(crate) fn start_object(&mut self) {
        self.prefix();
        self.levels.push(Level {
            in_array: false,
            value_count: 0,
        });
        self.out.push(b'{');
    }

    pub(crate) fn end_object(&mut self) {
        let empty = self.levels.pop().is_none_or(|l| l.value_count == 0);
        if !empty {
            self.out.push(b'\n');
            self.indent();
        }
        self.out.push(b'}');
    }

    pub(crate) fn start_array(&mut self) {
        self.prefix();
        self.levels.push(Level {
            in_array: true,
            value_count: 0,
        });
        self.out.push(b'[');
    }

    pub(crate) fn end_array(&mut self) {
        let empty = self.levels.pop().is_none_or(|l| l.value_count == 0);
        if !empty && !self.single_line_array {
            self.out.push(b'\n');
            self.indent();
        }
        self.out.push(b']');
    }
}

/// A quoted JSON string, escaped like rapidjson's writer.
pub(crate) fn write_escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x0D => out.extend_from_slice(b"\\r"),
            0x00..=0x1F => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xF)]);
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

const MAX_DEBUG_STRING_BYTES: usize = 256;

/// `JsonValueToDebugString`: the value pretty-printed with single-line arrays, cut
/// short once 256 bytes have been written (each event checks the size before it
/// writes, so the last item may run past the limit).
pub(crate) fn debug_string(v: &JsonValue) -> String {
    let mut w = PrettyWriter::new();
    w.set_single_line_array(true);
    accept(v, &mut w);
    String::from_utf8_lossy(&w.into_bytes()).into_owned()
}

/// rapidjson's `Value::Accept` into a `JsonWriterWithLimit`; false stops the walk.
/// Recursion depth is bounded: every level writes at least one byte.
fn accept(v: &JsonValue, w: &mut PrettyWriter) -> bool {
    let in_limit = |w: &PrettyWriter| w.len() < MAX_DEBUG_STRING_BYTES;
    if !in_limit(w) {
        return false;
    }
    match v {
        JsonValue::Null => w.null(),
        JsonValue::Bool(b) => w.bool(*b),
        JsonValue::Int(i) => w.integer(*i),
        JsonValue::Double(d) => return w.double(*d),
        JsonValue::String(s) => w.string(s),
        JsonValue::Object(members) => {
            w.start_object();
            for (k, val) in members {
                if !in_limit(w) {
                    return false;
                }
                w.key(k);
                if !accept(val, w) {
                    return false;
                }
            }
            if !in_limit(w) {
                return false;
            }
            w.end_object();
        }
        JsonValue::Array(items) => {
            w.start_array();
            for item in items {
                if !accept(item, w) {
                    return false;
                }
            }
            if !in_limit(w) {
                return false;
            }
            w.end_array();
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse_value;
    use super::*;

    fn dbg(s: &str) -> String {
        match parse_value(s.as_bytes()) {
            Ok(v) => debug_string(&v),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn pretty_layout_matches_rapidjson() {
        let mut w = PrettyWriter::new();
        w.start_object();
        w.key(b"a");
        w.start_array();
        w.integer(1);
        w.integer(2);
        w.end_array();
        w.key(b"b");
        w.start_object();
        w.end_object();
        w.key(b"c");
        w.start_array();
        w.end_array();
        w.end_object();
        assert_eq!(
            String::from_utf8_lossy(&w.into_bytes()),
            "{\n    \"a\": [\n        1,\n        2\n    ],\n    \"b\": {},\n    \"c\": []\n}"
        );
    }

    #[test]
    fn escapes_like_rapidjson() {
        let mut out = Vec::new();
        write_escaped(&mut out, b"a\"b\\c/\x01\x1f\x7f\n\t\x08\x0c\r\xff");
        assert_eq!(
            out,
            b"\"a\\\"b\\\\c/\\u0001\\u001F\x7f\\n\\t\\b\\f\\r\xff\"".to_vec()
        );
    }

    #[test]
    fn debug_strings() {
        assert_eq!(dbg("[1, 2.50, \"x\"]"), "[1, 2.5, \"x\"]");
        assert_eq!(
            dbg(r#"{"a": [1, {"b": null}], "c": true}"#),
            "{\n    \"a\": [1, {\n            \"b\": null\n        }],\n    \"c\": true\n}"
        );
        assert_eq!(dbg("{}"), "{}");
        assert_eq!(dbg("[]"), "[]");
        assert_eq!(dbg("[[], {}]"), "[[], {}]");
        // NaN stops the writer after the separator, as rapidjson's Double() fails.
        assert_eq!(dbg("[1, NaN, 2]"), "[1, ");
        assert_eq!(dbg("-Infinity"), "");
        assert_eq!(dbg("-0.0"), "-0.0");
        assert_eq!(dbg("1E3"), "1000.0");
    }

    #[test]
    fn debug_strings_are_cut_after_256_bytes() {
        let items: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let s = dbg(&format!("[{}]", items.join(",")));
        // Items are written while fewer than 256 bytes are out; the closer is not.
        assert!(s.len() >= 256 && s.len() < 262, "{}", s.len());
        assert!(s.starts_with("[0, 1, 2, "));
        assert!(!s.ends_with(']'));
        let long = "x".repeat(1000);
        let s = dbg(&format!("[\"{long}\", 1]"));
        assert_eq!(s, format!("[\"{long}\""));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(dbg(&deep), "[".repeat(256));
    }
}
