//! A JSON reader that behaves like the rapidjson 1.1.0 `Document::ParseStream` call in
//! TF Serving's `json_tensor.cc` (flags `kParseIterativeFlag | kParseNanAndInfFlag |
//! kParseStopWhenDoneFlag`, UTF-8 `MemoryStream` input):
//!
//! - the iterative state machine, so the same error code and offset come out for the
//!   same malformed input, and nesting depth costs heap, not stack;
//! - `NaN`, `Inf`, `Infinity` and `-Infinity` number tokens;
//! - anything after the first complete root value is ignored (`StopWhenDone`);
//! - a NUL byte ends the input, as rapidjson's stream reports `'\0'` at its end;
//! - strings are byte strings: no UTF-8 validation, `\u` escapes encoded as UTF-8
//!   (lone surrogates included, as rapidjson does);
//! - numbers keep rapidjson's integer-versus-double typing (`1` is an integer, `1.0` a
//!   double) and its "normal precision" decimal conversion, bit for bit.

use std::sync::OnceLock;

/// A number as rapidjson types it: an integer that fits `int64`, one above it that fits
/// `uint64`, or a double. `JsonValue::Int` holds the first two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Uint(u64),
    Double(f64),
}

impl Number {
    /// `JsonValue::as_f64` of this number.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Uint(u) => u as f64,
            Number::Double(d) => d,
        }
    }

    /// The number as the document holds it.
    pub fn value(self) -> JsonValue {
        match self {
            Number::Int(i) => JsonValue::Int(i.into()),
            Number::Uint(u) => JsonValue::Int(u.into()),
            Number::Double(d) => JsonValue::Double(d),
        }
    }
}

/// One JSON value. Object members keep their document order and duplicates, like a
/// rapidjson DOM.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    Null,
    Bool(bool),
    /// An integer token (no fraction, no exponent) that fits in `i64` or `u64`.
    Int(i128),
    /// Any other number token, `NaN` and the infinities included.
    Double(f64),
    /// A string, as raw bytes.
    String(Vec<u8>),
    Array(Vec<JsonValue>),
    Object(Vec<(Vec<u8>, JsonValue)>),
}

impl Drop for JsonValue {
    // Deeply nested documents (TF Serving's tests send 500000 nested arrays) would
    // overflow the stack with the recursive drop glue; unnest iteratively instead. A
    // container of scalars only (a row of numbers) is left to the drop glue: one level
    // deep, and no copy of its elements.
    fn drop(&mut self) {
        if !self.holds_containers() {
            return;
        }
        let mut stack = Vec::new();
        take_children(self, &mut stack);
        while let Some(mut v) = stack.pop() {
            if v.holds_containers() {
                take_children(&mut v, &mut stack);
            }
        }
    }
}

fn take_children(v: &mut JsonValue, stack: &mut Vec<JsonValue>) {
    match v {
        JsonValue::Array(a) => stack.append(a),
        JsonValue::Object(m) => stack.extend(std::mem::take(m).into_iter().map(|(_, v)| v)),
        _ => {}
    }
}

impl JsonValue {
    fn is_container(&self) -> bool {
        matches!(self, JsonValue::Array(_) | JsonValue::Object(_))
    }

    /// Whether an element or member is itself an array or object.
    fn holds_containers(&self) -> bool {
        match self {
            JsonValue::Array(a) => a.iter().any(JsonValue::is_container),
            JsonValue::Object(m) => m.iter().any(|(_, v)| v.is_container()),
            _ => false,
        }
    }

    /// rapidjson's `GetType()` name as `json_tensor.cc::JsonTypeString` spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            JsonValue::Null => "Null",
            JsonValue::Bool(false) => "False",
            JsonValue::Bool(true) => "True",
            JsonValue::Object(_) => "Object",
            JsonValue::Array(_) => "Array",
            JsonValue::String(_) => "String",
            JsonValue::Int(_) | JsonValue::Double(_) => "Number",
        }
    }

    /// rapidjson `IsInt()`: an integer token in the `i32` range.
    pub fn as_i32(&self) -> Option<i32> {
        match self {
            JsonValue::Int(i) => i32::try_from(*i).ok(),
            _ => None,
        }
    }

    /// rapidjson `IsUint()`.
    pub fn as_u32(&self) -> Option<u32> {
        match self {
            JsonValue::Int(i) => u32::try_from(*i).ok(),
            _ => None,
        }
    }

    /// rapidjson `IsInt64()`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            JsonValue::Int(i) => i64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// rapidjson `IsUint64()`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            JsonValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// rapidjson `GetDouble()` for any number (integers rounded to nearest).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            JsonValue::Int(i) => Some(*i as f64),
            JsonValue::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// rapidjson `GetFloat()`: `static_cast<float>(GetDouble())`.
    pub fn as_f32(&self) -> Option<f32> {
        self.as_f64().map(|d| d as f32)
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            JsonValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[JsonValue]> {
        match self {
            JsonValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(Vec<u8>, JsonValue)]> {
        match self {
            JsonValue::Object(m) => Some(m),
            _ => None,
        }
    }

    /// rapidjson `FindMember`: the first member with this name.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        self.as_object()?
            .iter()
            .find(|(k, _)| k.as_slice() == key.as_bytes())
            .map(|(_, v)| v)
    }
}

/// rapidjson's `ParseErrorCode`s that this reader can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorCode {
    DocumentEmpty,
    ValueInvalid,
    ObjectMissName,
    ObjectMissColon,
    ObjectMissCommaOrCurlyBracket,
    ArrayMissCommaOrSquareBracket,
    StringUnicodeEscapeInvalidHex,
    StringUnicodeSurrogateInvalid,
    StringEscapeInvalid,
    StringMissQuotationMark,
    NumberTooBig,
    NumberMissFraction,
    NumberMissExponent,
}

impl ParseErrorCode {
    /// `rapidjson::GetParseError_En`.
    pub fn message(self) -> &'static str {
        use ParseErrorCode::*;
        match self {
            DocumentEmpty => "The document is empty.",
            ValueInvalid => "Invalid value.",
            ObjectMissName => "Missing a name for object member.",
            ObjectMissColon => "Missing a colon after a name of object member.",
            ObjectMissCommaOrCurlyBracket => "Missing a comma or '}' after an object member.",
            ArrayMissCommaOrSquareBracket => "Missing a comma or ']' after an array element.",
            StringUnicodeEscapeInvalidHex => "Incorrect hex digit after \\u escape in string.",
            StringUnicodeSurrogateInvalid => "The surrogate pair in string is invalid.",
            StringEscapeInvalid => "Invalid escape character in string.",
            StringMissQuotationMark => "Missing a closing quotation mark in string.",
            NumberTooBig => "Number too big to be stored in double.",
            NumberMissFraction => "Miss fraction part in number.",
            NumberMissExponent => "Miss exponent in number.",
        }
    }
}

/// A parse failure: rapidjson's code and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub code: ParseErrorCode,
    pub offset: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Start,
    Finish,
    Error,
    ObjectInitial,
    MemberKey,
    KeyValueDelimiter,
    MemberValue,
    MemberDelimiter,
    ObjectFinish,
    ArrayInitial,
    Element,
    ElementDelimiter,
    ArrayFinish,
    Value,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Token {
    LeftBracket,
    RightBracket,
    LeftCurly,
    RightCurly,
    Comma,
    Colon,
    String,
    False,
    True,
    Null,
    Number,
}

fn tokenize(c: u8) -> Token {
    match c {
        b'[' => Token::LeftBracket,
        b']' => Token::RightBracket,
        b'{' => Token::LeftCurly,
        b'}' => Token::RightCurly,
        b',' => Token::Comma,
        b':' => Token::Colon,
        b'"' => Token::String,
        b'f' => Token::False,
        b't' => Token::True,
        b'n' => Token::Null,
        _ => Token::Number,
    }
}

/// rapidjson's `Predict` table: current state x lookahead token -> next state.
fn predict(state: State, token: Token) -> State {
    use State as S;
    use Token as T;
    let scalar = matches!(token, T::String | T::False | T::True | T::Null | T::Number);
    match state {
        S::Start => match token {
            T::LeftBracket => S::ArrayInitial,
            T::LeftCurly => S::ObjectInitial,
            _ if scalar => S::Value,
            _ => S::Error,
        },
        S::ObjectInitial => match token {
            T::RightCurly => S::ObjectFinish,
            T::String => S::MemberKey,
            _ => S::Error,
        },
        S::MemberKey => match token {
            T::Colon => S::KeyValueDelimiter,
            _ => S::Error,
        },
        S::KeyValueDelimiter => match token {
            T::LeftBracket => S::ArrayInitial,
            T::LeftCurly => S::ObjectInitial,
            _ if scalar => S::MemberValue,
            _ => S::Error,
        },
        S::MemberValue => match token {
            T::RightCurly => S::ObjectFinish,
            T::Comma => S::MemberDelimiter,
            _ => S::Error,
        },
        S::MemberDelimiter => match token {
            T::RightCurly => S::ObjectFinish,
            T::String => S::MemberKey,
            _ => S::Error,
        },
        S::ArrayInitial | S::ElementDelimiter => match token {
            T::LeftBracket => S::ArrayInitial,
            T::RightBracket => S::ArrayFinish,
            T::LeftCurly => S::ObjectInitial,
            _ if scalar => S::Element,
            _ => S::Error,
        },
        S::Element => match token {
            T::RightBracket => S::ArrayFinish,
            T::Comma => S::ElementDelimiter,
            _ => S::Error,
        },
        S::Finish | S::Error | S::ObjectFinish | S::ArrayFinish | S::Value => S::Error,
    }
}

/// A container under construction.
enum Frame {
    /// An array whose elements so far are `elements[start..]`.
    Array {
        start: usize,
    },
    Object(Vec<(Vec<u8>, JsonValue)>, Option<Vec<u8>>),
}

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
    error: Option<ParseError>,
    /// States to return to when a container closes (rapidjson's parse stack).
    states: Vec<State>,
    frames: Vec<Frame>,
    /// The elements of the open arrays, innermost last: an array is made, at its exact
    /// size, only when it closes (as rapidjson's stack does), not grown element by element.
    elements: Vec<JsonValue>,
    root: Option<JsonValue>,
    /// Read `, number` runs inside arrays in one tight loop ([`Reader::number_run`]);
    /// off only to hold that loop to the state machine in the tests.
    number_runs: bool,
    /// Take a fraction's digits eight at a time where rapidjson's steps would take all
    /// eight ([`eight_digits`]); off only to hold that to the steps in the tests.
    digit_chunks: bool,
}

const DIGITS: std::ops::RangeInclusive<u8> = b'0'..=b'9';

impl<'a> Reader<'a> {
    fn peek(&self) -> u8 {
        self.s.get(self.pos).copied().unwrap_or(0)
    }

    fn take(&mut self) -> u8 {
        let c = self.peek();
        if self.pos < self.s.len() {
            self.pos += 1;
        }
        c
    }

    fn consume(&mut self, c: u8) -> bool {
        if self.peek() == c {
            self.take();
            true
        } else {
            false
        }
    }

    fn peek_digit(&self) -> bool {
        DIGITS.contains(&self.peek())
    }

    fn fail(&mut self, code: ParseErrorCode, offset: usize) {
        if self.error.is_none() {
            self.error = Some(ParseError { code, offset });
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), b' ' | b'\n' | b'\r' | b'\t') {
            self.take();
        }
    }

    /// A completed value goes into the enclosing container, or becomes the root.
    fn emit(&mut self, v: JsonValue) {
        match self.frames.last_mut() {
            Some(Frame::Array { .. }) => self.elements.push(v),
            Some(Frame::Object(m, key)) => {
                let k = key.take().unwrap_or_default();
                m.push((k, v));
            }
            None => self.root = Some(v),
        }
    }

    fn parse(mut self) -> Result<JsonValue, ParseError> {
        let mut state = State::Start;
        self.skip_whitespace();
        while self.peek() != 0 {
            let t = tokenize(self.peek());
            let n = predict(state, t);
            let d = self.transit(state, n);
            if d == State::Error {
                self.handle_error(state);
                break;
            }
            state = d;
            if state == State::Finish {
                break;
            }
            if state == State::Element && self.number_runs && !self.number_run() {
                // As the state machine ends when a value after a delimiter fails.
                self.handle_error(State::ElementDelimiter);
                break;
            }
            self.skip_whitespace();
        }
        if state != State::Finish {
            self.handle_error(state);
        }
        match (self.error, self.root.take()) {
            (Some(e), _) => Err(e),
            (None, Some(root)) => Ok(root),
            (None, None) => Err(ParseError {
                code: ParseErrorCode::DocumentEmpty,
                offset: self.pos,
            }),
        }
    }

    /// After an array element: the run of `, number` that follows, read without the
    /// state machine's dispatch — exactly the steps it takes (Element, comma,
    /// ElementDelimiter, a Number token, Element) for the rows of numbers a tensor is.
    /// Stops, with the position back on the comma, before anything else, so the state
    /// machine reads that; false when a number fails to parse (its error is set).
    fn number_run(&mut self) -> bool {
        loop {
            self.skip_whitespace();
            if self.peek() != b',' {
                return true;
            }
            let comma = self.pos;
            self.take();
            self.skip_whitespace();
            let c = self.peek();
            if c == 0 || tokenize(c) != Token::Number {
                self.pos = comma;
                return true;
            }
            match self.parse_number() {
                Some(n) => self.emit(n.value()),
                None => return false,
            }
        }
    }

    fn handle_error(&mut self, src: State) {
        use ParseErrorCode as E;
        let code = match src {
            State::Start => E::DocumentEmpty,
            // Unreachable with StopWhenDone; rapidjson would say "root not singular".
            State::Finish => E::ValueInvalid,
            State::ObjectInitial | State::MemberDelimiter => E::ObjectMissName,
            State::MemberKey => E::ObjectMissColon,
            State::MemberValue => E::ObjectMissCommaOrCurlyBracket,
            State::KeyValueDelimiter | State::ArrayInitial | State::ElementDelimiter => {
                E::ValueInvalid
            }
            _ => E::ArrayMissCommaOrSquareBracket,
        };
        self.fail(code, self.pos);
    }

    fn transit(&mut self, src: State, dst: State) -> State {
        match dst {
            State::Error => State::Error,
            State::ObjectInitial | State::ArrayInitial => {
                let n = match src {
                    State::ArrayInitial | State::ElementDelimiter => State::Element,
                    State::KeyValueDelimiter => State::MemberValue,
                    other => other,
                };
                self.states.push(n);
                self.frames.push(if dst == State::ObjectInitial {
                    Frame::Object(Vec::new(), None)
                } else {
                    Frame::Array {
                        start: self.elements.len(),
                    }
                });
                self.take();
                dst
            }
            State::MemberKey => match self.parse_string() {
                Some(key) => {
                    if let Some(Frame::Object(_, k)) = self.frames.last_mut() {
                        *k = Some(key);
                    }
                    dst
                }
                None => State::Error,
            },
            State::KeyValueDelimiter => {
                self.take();
                dst
            }
            State::MemberValue | State::Element => {
                if self.parse_value() {
                    dst
                } else {
                    State::Error
                }
            }
            State::MemberDelimiter | State::ElementDelimiter => {
                self.take();
                dst
            }
            State::ObjectFinish | State::ArrayFinish => {
                let from_delimiter = if dst == State::ObjectFinish {
                    src == State::MemberDelimiter
                } else {
                    src == State::ElementDelimiter
                };
                if from_delimiter {
                    let code = if dst == State::ObjectFinish {
                        ParseErrorCode::ObjectMissName
                    } else {
                        ParseErrorCode::ValueInvalid
                    };
                    self.fail(code, self.pos);
                    return State::Error;
                }
                let mut n = self.states.pop().unwrap_or(State::Start);
                if n == State::Start {
                    n = State::Finish;
                }
                let v = match self.frames.pop() {
                    Some(Frame::Array { start }) => {
                        JsonValue::Array(self.elements.drain(start..).collect())
                    }
                    Some(Frame::Object(m, _)) => JsonValue::Object(m),
                    None => JsonValue::Null,
                };
                self.emit(v);
                self.take();
                n
            }
            // The single-value root.
            _ => {
                if self.parse_value() {
                    State::Finish
                } else {
                    State::Error
                }
            }
        }
    }

    /// A scalar value; false on error.
    fn parse_value(&mut self) -> bool {
        let v = match self.peek() {
            b'n' => self.parse_literal(b"ull", JsonValue::Null),
            b't' => self.parse_literal(b"rue", JsonValue::Bool(true)),
            b'f' => self.parse_literal(b"alse", JsonValue::Bool(false)),
            b'"' => self.parse_string().map(JsonValue::String),
            _ => self.parse_number().map(Number::value),
        };
        match v {
            Some(v) => {
                self.emit(v);
                true
            }
            None => false,
        }
    }

    fn parse_literal(&mut self, rest: &[u8], v: JsonValue) -> Option<JsonValue> {
        self.take();
        for &c in rest {
            if !self.consume(c) {
                self.fail(ParseErrorCode::ValueInvalid, self.pos);
                return None;
            }
        }
        Some(v)
    }

    fn parse_hex4(&mut self, escape_offset: usize) -> Option<u32> {
        let mut cp = 0u32;
        for _ in 0..4 {
            let c = self.peek();
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'A'..=b'F' => c - b'A' + 10,
                b'a'..=b'f' => c - b'a' + 10,
                _ => {
                    self.fail(ParseErrorCode::StringUnicodeEscapeInvalidHex, escape_offset);
                    return None;
                }
            };
            cp = (cp << 4) | u32::from(d);
            self.take();
        }
        Some(cp)
    }

    fn parse_string(&mut self) -> Option<Vec<u8>> {
        self.take(); // the opening quote
        let mut out = Vec::new();
        loop {
            // Fast path: copy the run of plain bytes.
            let start = self.pos;
            let rest = &self.s[start..];
            let run = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            out.extend_from_slice(&rest[..run]);
            self.pos += run;

            let c = self.peek();
            if c == b'\\' {
                let escape_offset = self.pos;
                self.take();
                let e = self.peek();
                let simple = match e {
                    b'"' => Some(b'"'),
                    b'\\' => Some(b'\\'),
                    b'/' => Some(b'/'),
                    b'b' => Some(0x08),
                    b'f' => Some(0x0c),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    _ => None,
                };
                if let Some(b) = simple {
                    self.take();
                    out.push(b);
                } else if e == b'u' {
                    self.take();
                    let mut cp = self.parse_hex4(escape_offset)?;
                    if (0xD800..=0xDBFF).contains(&cp) {
                        if !(self.consume(b'\\') && self.consume(b'u')) {
                            self.fail(ParseErrorCode::StringUnicodeSurrogateInvalid, escape_offset);
                            return None;
                        }
                        let cp2 = self.parse_hex4(escape_offset)?;
                        if !(0xDC00..=0xDFFF).contains(&cp2) {
                            self.fail(ParseErrorCode::StringUnicodeSurrogateInvalid, escape_offset);
                            return None;
                        }
                        cp = (((cp - 0xD800) << 10) | (cp2 - 0xDC00)) + 0x10000;
                    }
                    encode_utf8(cp, &mut out);
                } else {
                    self.fail(ParseErrorCode::StringEscapeInvalid, escape_offset);
                    return None;
                }
            } else if c == b'"' {
                self.take();
                return Some(out);
            } else if c == 0 {
                // End of input, or a NUL byte (rapidjson cannot tell them apart).
                self.fail(ParseErrorCode::StringMissQuotationMark, self.pos);
                return None;
            } else {
                // Other control characters must be escaped.
                self.fail(ParseErrorCode::StringEscapeInvalid, self.pos);
                return None;
            }
        }
    }

    /// rapidjson's `ParseNumber` without `kParseFullPrecisionFlag`, step for step.
    /// Inlined where it is called: its result then stays in registers (a returned value
    /// read back through memory cost the numeric reader a store-forwarding stall per
    /// number, behind the division that ends the conversion).
    #[inline(always)]
    fn parse_number(&mut self) -> Option<Number> {
        let start = self.pos;
        let minus = self.consume(b'-');
        let mut i: u32 = 0;
        let mut i64v: u64 = 0;
        let mut use64 = false;
        let mut significand_digit: i32 = 0;
        let mut d: f64 = 0.0;
        let mut use_nan_or_inf = false;

        let c = self.peek();
        if c == b'0' {
            self.take();
        } else if (b'1'..=b'9').contains(&c) {
            i = u32::from(self.take() - b'0');
            let (limit, last) = if minus {
                (214_748_364u32, b'8')
            } else {
                (429_496_729u32, b'5')
            };
            while self.peek_digit() {
                if i >= limit && (i != limit || self.peek() > last) {
                    i64v = u64::from(i);
                    use64 = true;
                    break;
                }
                i = i * 10 + u32::from(self.take() - b'0');
                significand_digit += 1;
            }
        } else if c == b'I' || c == b'N' {
            use_nan_or_inf = true;
            if self.consume(b'N') && self.consume(b'a') && self.consume(b'N') {
                d = f64::NAN;
            } else if self.consume(b'I') && self.consume(b'n') && self.consume(b'f') {
                d = if minus {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                if self.peek() == b'i'
                    && !(self.consume(b'i')
                        && self.consume(b'n')
                        && self.consume(b'i')
                        && self.consume(b't')
                        && self.consume(b'y'))
                {
                    self.fail(ParseErrorCode::ValueInvalid, self.pos);
                    return None;
                }
            } else {
                self.fail(ParseErrorCode::ValueInvalid, self.pos);
                return None;
            }
        } else {
            self.fail(ParseErrorCode::ValueInvalid, self.pos);
            return None;
        }

        let mut use_double = false;
        if use64 {
            let (limit, last) = if minus {
                (0x0CCC_CCCC_CCCC_CCCCu64, b'8')
            } else {
                (0x1999_9999_9999_9999u64, b'5')
            };
            while self.peek_digit() {
                if i64v >= limit && (i64v != limit || self.peek() > last) {
                    d = i64v as f64;
                    use_double = true;
                    break;
                }
                i64v = i64v * 10 + u64::from(self.take() - b'0');
                significand_digit += 1;
            }
        }

        if use_double {
            while self.peek_digit() {
                if d >= 1.797_693_134_862_315_7e307 {
                    self.fail(ParseErrorCode::NumberTooBig, start);
                    return None;
                }
                d = d * 10.0 + f64::from(self.take() - b'0');
            }
        }

        let mut exp_frac: i64 = 0;
        if self.consume(b'.') {
            if !self.peek_digit() {
                self.fail(ParseErrorCode::NumberMissFraction, self.pos);
                return None;
            }
            if !use_double {
                if !use64 {
                    i64v = u64::from(i);
                }
                while self.peek_digit() {
                    // Eight digits at once where the eight steps below would all take
                    // them: below this bound, eight more digits cannot pass 2^53 - 1
                    // before the last is added.
                    if self.digit_chunks && i64v < 90_071_991 {
                        if let Some(chunk) = eight_digits(self.s, self.pos) {
                            // The steps count a digit once the value is non-zero.
                            significand_digit += if i64v != 0 {
                                8
                            } else {
                                chunk.checked_ilog10().map_or(0, |l| l as i32 + 1)
                            };
                            i64v = i64v * 100_000_000 + chunk;
                            exp_frac -= 8;
                            self.pos += 8;
                            continue;
                        }
                    }
                    if i64v > 0x1F_FFFF_FFFF_FFFF {
                        break;
                    }
                    i64v = i64v * 10 + u64::from(self.take() - b'0');
                    exp_frac -= 1;
                    if i64v != 0 {
                        significand_digit += 1;
                    }
                }
                d = i64v as f64;
                use_double = true;
            }
            while self.peek_digit() {
                if significand_digit < 17 {
                    d = d * 10.0 + f64::from(self.take() - b'0');
                    exp_frac -= 1;
                    if d > 0.0 {
                        significand_digit += 1;
                    }
                } else {
                    self.take();
                }
            }
        }

        let mut exp: i64 = 0;
        if self.consume(b'e') || self.consume(b'E') {
            if !use_double {
                d = if use64 { i64v as f64 } else { f64::from(i) };
                use_double = true;
            }
            let mut exp_minus = false;
            if self.consume(b'+') {
            } else if self.consume(b'-') {
                exp_minus = true;
            }
            if self.peek_digit() {
                exp = i64::from(self.take() - b'0');
                if exp_minus {
                    while self.peek_digit() {
                        exp = exp * 10 + i64::from(self.take() - b'0');
                        if exp >= 214_748_364 {
                            while self.peek_digit() {
                                self.take();
                            }
                        }
                    }
                } else {
                    let max_exp = 308 - exp_frac;
                    while self.peek_digit() {
                        exp = exp * 10 + i64::from(self.take() - b'0');
                        if exp > max_exp {
                            self.fail(ParseErrorCode::NumberTooBig, start);
                            return None;
                        }
                    }
                }
            } else {
                self.fail(ParseErrorCode::NumberMissExponent, self.pos);
                return None;
            }
            if exp_minus {
                exp = -exp;
            }
        }

        Some(if use_double {
            let d = strtod_normal_precision(d, exp + exp_frac);
            Number::Double(if minus { -d } else { d })
        } else if use_nan_or_inf {
            Number::Double(d)
        } else if use64 {
            if minus {
                // At most 2^63 here (the loop stops before passing it): fits an i64.
                Number::Int(i64::try_from(-i128::from(i64v)).unwrap_or(i64::MIN))
            } else {
                match i64::try_from(i64v) {
                    Ok(i) => Number::Int(i),
                    Err(_) => Number::Uint(i64v),
                }
            }
        } else if minus {
            Number::Int(-i64::from(i))
        } else {
            Number::Int(i64::from(i))
        })
    }
}

/// The value of the eight bytes at `pos` if all are ASCII digits, read at once (the
/// digit test and the conversion of the `fast_float` library, on one word).
fn eight_digits(s: &[u8], pos: usize) -> Option<u64> {
    let bytes: [u8; 8] = s.get(pos..pos.checked_add(8)?)?.try_into().ok()?;
    let v = u64::from_le_bytes(bytes);
    let digits = (v & 0xF0F0_F0F0_F0F0_F0F0)
        | ((v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
    if digits != 0x3333_3333_3333_3333 {
        return None;
    }
    let v = v - 0x3030_3030_3030_3030;
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v = ((v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32)))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
}

fn encode_utf8(cp: u32, out: &mut Vec<u8>) {
    if cp <= 0x7F {
        out.push(cp as u8);
    } else if cp <= 0x7FF {
        out.push(0xC0 | ((cp >> 6) & 0xFF) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else if cp <= 0xFFFF {
        out.push(0xE0 | ((cp >> 12) & 0xFF) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else {
        out.push(0xF0 | ((cp >> 18) & 0xFF) as u8);
        out.push(0x80 | ((cp >> 12) & 0x3F) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    }
}

/// `10^n` for `n` in `0..=308`, each correctly rounded like a C++ literal.
fn pow10(n: i64) -> f64 {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=308)
            .map(|k| format!("1e{k}").parse::<f64>().unwrap_or(f64::INFINITY))
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|k| table.get(k).copied())
        .unwrap_or(f64::INFINITY)
}

fn fast_path(significand: f64, exp: i64) -> f64 {
    if exp < -308 {
        0.0
    } else if exp >= 0 {
        significand * pow10(exp)
    } else {
        significand / pow10(-exp)
    }
}

/// rapidjson's `StrtodNormalPrecision`: not always correctly rounded, on purpose.
#[inline]
fn strtod_normal_precision(d: f64, p: i64) -> f64 {
    if p < -308 {
        let d = fast_path(d, -308);
        fast_path(d, p + 308)
    } else {
        fast_path(d, p)
    }
}

/// Parses a whole request body the way rapidjson does for TF Serving.
/// Number tokens read anywhere in a body exactly as the document parser reads them
/// (rapidjson's typing, normal-precision conversion, NaN and the infinities), for a
/// reader that walks a body of known shape itself (`numeric.rs`).
pub(crate) struct NumberReader<'a>(Reader<'a>);

impl<'a> NumberReader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> NumberReader<'a> {
        NumberReader(Reader {
            s: body,
            pos: 0,
            error: None,
            states: Vec::new(),
            frames: Vec::new(),
            elements: Vec::new(),
            root: None,
            number_runs: false,
            digit_chunks: true,
        })
    }

    /// The number at `pos` and the position after it; `None` where the parser would
    /// stop with an error.
    #[inline(always)]
    pub(crate) fn number(&mut self, pos: usize) -> Option<(Number, usize)> {
        self.0.pos = pos;
        self.0.error = None;
        let v = self.0.parse_number()?;
        Some((v, self.0.pos))
    }
}

pub fn parse_value(body: &[u8]) -> Result<JsonValue, ParseError> {
    read(body, true)
}

fn read(body: &[u8], number_runs: bool) -> Result<JsonValue, ParseError> {
    read_with(body, number_runs, true)
}

fn read_with(body: &[u8], number_runs: bool, digit_chunks: bool) -> Result<JsonValue, ParseError> {
    let mut pos = 0;
    // The UTF-8 MemoryStream wrapper skips each byte of a BOM independently.
    for b in [0xEF, 0xBB, 0xBF] {
        if body.get(pos) == Some(&b) {
            pos += 1;
        }
    }
    Reader {
        s: body,
        pos,
        error: None,
        states: Vec::new(),
        frames: Vec::new(),
        // Room for a typical body's numbers at once (each takes two bytes or more),
        // bounded so that a large body grows it as it goes.
        elements: Vec::with_capacity((body.len() / 2).min(1024)),
        root: None,
        number_runs,
        digit_chunks,
    }
    .parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tight loop for runs of numbers reads every document as the state machine
    /// alone does: the same value, or the same error code at the same offset. Documents
    /// are random strings of JSON's pieces, valid and not (NUL, bad numbers, stray
    /// tokens, truncation), around arrays of numbers.
    #[test]
    fn number_runs_read_as_the_state_machine_does() {
        const PIECES: &[&str] = &[
            "[",
            "]",
            ",",
            ", ",
            " ",
            "\n",
            "1",
            "-",
            "-0",
            "0.5",
            "1e",
            "1e5",
            "2.5E-3",
            "NaN",
            "Inf",
            "Infinity",
            "-Infinity",
            "\"a\"",
            "{",
            "}",
            ":",
            "\"k\":",
            "\u{0}",
            "x",
            "tru",
            "true",
            "null",
            "01",
            "1.",
            ".5",
            "123456789012345678901",
            "4.9e-324",
            "1e400",
            "[1, 2, 3]",
            "[[1.5, -2], [3, 4e1]]",
            ", ,",
            ",]",
        ];
        let mut rng = fastrand::Rng::with_seed(31);
        let mut differ = Vec::new();
        for _ in 0..20_000 {
            let mut doc = String::from(if rng.bool() { "[" } else { "{\"instances\": [" });
            for _ in 0..rng.usize(0..12) {
                doc.push_str(PIECES[rng.usize(..PIECES.len())]);
            }
            if rng.bool() {
                doc.push(']');
            }
            let body = doc.as_bytes();
            // Debug text, so that a NaN compares equal to itself.
            let (fast, plain) = (read(body, true), read(body, false));
            if format!("{fast:?}") != format!("{plain:?}") {
                differ.push(doc);
            }
        }
        assert!(
            differ.is_empty(),
            "{} documents read differently: {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        );
    }

    /// A fraction's digits taken eight at a time read as rapidjson's steps read them:
    /// the same value, or the same error at the same offset, for numbers of every length
    /// of integer part, fraction and exponent, with zeros where the counting of
    /// significant digits turns, and cut off or followed by stray bytes.
    #[test]
    fn digits_eight_at_a_time_read_as_one_at_a_time() {
        let mut rng = fastrand::Rng::with_seed(8);
        let digits = |rng: &mut fastrand::Rng, n: usize| -> String {
            let zeros = rng.u8(..4);
            (0..n)
                .map(|_| match rng.u8(..8) {
                    x if x < zeros => '0',
                    _ => char::from(b'0' + rng.u8(..10)),
                })
                .collect()
        };
        let mut differ = Vec::new();
        for _ in 0..100_000 {
            let mut n = String::new();
            if rng.bool() {
                n.push('-');
            }
            let len = rng.usize(1..22);
            n.push_str(&digits(&mut rng, len));
            if rng.u8(..8) > 0 {
                n.push('.');
                let len = rng.usize(0..40);
                n.push_str(&digits(&mut rng, len));
            }
            if rng.u8(..4) == 0 {
                n.push_str(["e", "e-", "E+"][rng.usize(..3)]);
                let len = rng.usize(0..4);
                n.push_str(&digits(&mut rng, len));
            }
            if rng.u8(..8) == 0 {
                n.push(['x', '\0', '.', '9', ' '][rng.usize(..5)]);
            }
            let body = format!("[{n}]");
            let (chunked, steps) = (
                read_with(body.as_bytes(), true, true),
                read_with(body.as_bytes(), true, false),
            );
            if format!("{chunked:?}") != format!("{steps:?}") {
                differ.push(n);
            }
        }
        assert!(
            differ.is_empty(),
            "{} numbers read differently: {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        );
    }

    fn ok(s: &str) -> JsonValue {
        match parse_value(s.as_bytes()) {
            Ok(v) => v,
            Err(e) => panic!("{s:?}: {e:?}"),
        }
    }

    fn err(s: &[u8]) -> (ParseErrorCode, usize) {
        match parse_value(s) {
            Ok(v) => panic!("{s:?} parsed as {v:?}"),
            Err(e) => (e.code, e.offset),
        }
    }

    #[test]
    fn integer_and_double_tokens_stay_distinct() {
        assert_eq!(ok("1"), JsonValue::Int(1));
        assert_eq!(ok("1.0"), JsonValue::Double(1.0));
        assert_eq!(ok("1e2"), JsonValue::Double(100.0));
        assert_eq!(ok("-0"), JsonValue::Int(0));
        assert!(matches!(ok("-0.0"), JsonValue::Double(d) if d == 0.0 && d.is_sign_negative()));
        assert_eq!(ok("-2147483648"), JsonValue::Int(-2147483648));
        assert_eq!(ok("4294967296"), JsonValue::Int(4294967296));
        assert_eq!(
            ok("-9223372036854775808"),
            JsonValue::Int(i128::from(i64::MIN))
        );
        assert_eq!(
            ok("18446744073709551615"),
            JsonValue::Int(i128::from(u64::MAX))
        );
        assert_eq!(
            ok("18446744073709551616"),
            JsonValue::Double(18446744073709551616.0)
        );
        assert_eq!(
            ok("-9223372036854775809"),
            JsonValue::Double(-9223372036854775808.0)
        );
        assert_eq!(ok("0.1"), JsonValue::Double(0.1));
        assert_eq!(ok("2.5E-3"), JsonValue::Double(0.0025));
        assert_eq!(ok("1e308"), JsonValue::Double(1e308));
        assert_eq!(ok("1e-400"), JsonValue::Double(0.0));
    }

    #[test]
    fn typed_accessors_follow_rapidjson_flags() {
        let v = ok("3000000000");
        assert_eq!(v.as_i32(), None);
        assert_eq!(v.as_u32(), Some(3_000_000_000));
        assert_eq!(v.as_i64(), Some(3_000_000_000));
        let v = ok("-1");
        assert_eq!(v.as_u32(), None);
        assert_eq!(v.as_u64(), None);
        assert_eq!(v.as_i32(), Some(-1));
        assert_eq!(ok("1.0").as_i32(), None);
        assert_eq!(ok("16777217").as_f32(), Some(16777216.0));
    }

    #[test]
    fn nan_and_infinity_tokens() {
        assert!(matches!(ok("NaN"), JsonValue::Double(d) if d.is_nan()));
        assert_eq!(ok("Infinity"), JsonValue::Double(f64::INFINITY));
        assert_eq!(ok("-Infinity"), JsonValue::Double(f64::NEG_INFINITY));
        assert_eq!(ok("Inf"), JsonValue::Double(f64::INFINITY));
        assert!(matches!(ok("-NaN"), JsonValue::Double(d) if d.is_nan()));
        assert_eq!(err(b"[Infinit]"), (ParseErrorCode::ValueInvalid, 8));
        assert_eq!(err(b"[Nan]"), (ParseErrorCode::ValueInvalid, 3));
        assert_eq!(err(b"[nan]"), (ParseErrorCode::ValueInvalid, 2));
    }

    #[test]
    fn strings_are_bytes() {
        assert_eq!(
            ok(r#""a\"\\\/\b\f\n\r\t""#),
            JsonValue::String(b"a\"\\/\x08\x0c\n\r\t".to_vec())
        );
        assert_eq!(
            ok(r#""\u00e9\ud83d\ude00""#),
            JsonValue::String("é😀".as_bytes().to_vec())
        );
        assert_eq!(ok(r#""\u0000""#), JsonValue::String(vec![0]));
        // A lone low surrogate is encoded anyway, as rapidjson does.
        assert_eq!(ok(r#""\udc00""#), JsonValue::String(vec![0xED, 0xB0, 0x80]));
        assert_eq!(
            parse_value(b"\"\xff\xfe\"").ok(),
            Some(JsonValue::String(vec![0xff, 0xfe]))
        );
    }

    #[test]
    fn error_codes_and_offsets_match_rapidjson() {
        use ParseErrorCode::*;
        assert_eq!(err(b"   "), (DocumentEmpty, 3));
        assert_eq!(err(b"x"), (ValueInvalid, 0));
        assert_eq!(err(b"{x"), (ObjectMissName, 1));
        assert_eq!(err(b"{\"a\" 1}"), (ObjectMissColon, 5));
        assert_eq!(err(b"{\"a\":}"), (ValueInvalid, 5));
        assert_eq!(err(b"{\"a\":1 2}"), (ObjectMissCommaOrCurlyBracket, 7));
        assert_eq!(err(b"{\"a\":1,}"), (ObjectMissName, 7));
        assert_eq!(err(b"[1 2]"), (ArrayMissCommaOrSquareBracket, 3));
        assert_eq!(err(b"[1,]"), (ValueInvalid, 3));
        assert_eq!(err(b"[01]"), (ArrayMissCommaOrSquareBracket, 2));
        assert_eq!(err(b"[1."), (NumberMissFraction, 3));
        assert_eq!(err(b"[1e]"), (NumberMissExponent, 3));
        assert_eq!(err(b"[-]"), (ValueInvalid, 2));
        assert_eq!(err(b"[1, 1e309]"), (NumberTooBig, 4));
        assert_eq!(err(b"[tru]"), (ValueInvalid, 4));
        assert_eq!(err(b"\"abc"), (StringMissQuotationMark, 4));
        assert_eq!(err(b"\"a\x01\""), (StringEscapeInvalid, 2));
        assert_eq!(err(b"\"a\\x\""), (StringEscapeInvalid, 2));
        assert_eq!(err(b"\"a\\u12G4\""), (StringUnicodeEscapeInvalidHex, 2));
        assert_eq!(err(b"\"\\ud800x\""), (StringUnicodeSurrogateInvalid, 1));
        assert_eq!(
            err(b"\"\\ud800\\u0041\""),
            (StringUnicodeSurrogateInvalid, 1)
        );
        assert_eq!(err(b"{\"a\":[1,2"), (ArrayMissCommaOrSquareBracket, 9));
        assert_eq!(err(b"{\"a\":[1,2]"), (ObjectMissCommaOrCurlyBracket, 10));
        // A NUL byte ends the input.
        assert_eq!(err(b"[1,\x002]"), (ValueInvalid, 3));
    }

    #[test]
    fn stops_after_the_root_value() {
        assert_eq!(ok("{} trailing garbage"), JsonValue::Object(vec![]));
        assert_eq!(ok("[1]]"), JsonValue::Array(vec![JsonValue::Int(1)]));
        assert_eq!(ok("1 2"), JsonValue::Int(1));
    }

    #[test]
    fn skips_bom_bytes() {
        assert_eq!(
            parse_value(b"\xEF\xBB\xBF{}").ok(),
            Some(JsonValue::Object(vec![]))
        );
        assert_eq!(err(b"\xEF\xBB\xBF"), (ParseErrorCode::DocumentEmpty, 3));
    }

    #[test]
    fn deep_nesting_uses_no_stack() {
        let mut s = String::from(r#"{"a":"#);
        s.push_str(&"[".repeat(500_000));
        s.push_str(&"]".repeat(500_000));
        s.push('}');
        let v = ok(&s);
        assert!(v.get("a").is_some());
        drop(v);
        // Unbalanced: error, and the partial tree is dropped without recursion.
        let s = "[".repeat(300_000);
        assert_eq!(err(s.as_bytes()), (ParseErrorCode::ValueInvalid, 300_000));
    }

    #[test]
    fn duplicate_keys_are_kept_in_order() {
        let v = ok(r#"{"a":1,"a":2}"#);
        assert_eq!(v.as_object().map(|m| m.len()), Some(2));
        assert_eq!(v.get("a"), Some(&JsonValue::Int(1)));
    }
}
