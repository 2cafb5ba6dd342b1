//! TF Serving's `WriteDecimal` (json_tensor.cc): floats and doubles as the shortest
//! `%g` (6 significant digits, what `absl::StrCat` prints) when that reads back as the
//! same value, else `%.9g` (float) or `%.17g` (double); `.0` appended when the text has
//! neither `.` nor `e`; `NaN`, `Infinity`, `-Infinity` for non-finite values.
//!
//! Every value is formatted on the stack ([`Text`]): a response of many floats makes no
//! allocation per number.

use std::fmt::Write;

/// A number's text, at most 40 bytes, on the stack.
#[derive(Clone, Copy)]
pub struct Text {
    buf: [u8; 40],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text {
            buf: [0; 40],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII is ever pushed (digits, signs, '.', 'e', letters).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.len + s.len() > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.push_bytes(s.as_bytes());
        Ok(())
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

/// `{:.Ne}` text of a finite, non-negative value into a stack buffer: `precision` digits
/// after the point, exactly rounded.
fn scientific(v: f64, precision: usize) -> Text {
    let mut t = Text::new();
    let _ = write!(t, "{:.*e}", precision, v);
    t
}

/// The digits (no point) and decimal exponent of Rust's `{:e}` output (`1.2345e-7`).
fn split_sci(sci: &Text) -> (Text, i64) {
    let bytes = sci.as_bytes();
    let e = bytes.iter().position(|&b| b == b'e').unwrap_or(bytes.len());
    let mut digits = Text::new();
    for &b in &bytes[..e] {
        if b != b'.' {
            digits.push(b);
        }
    }
    let exp = std::str::from_utf8(bytes.get(e + 1..).unwrap_or(&[]))
        .ok()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (digits, exp)
}

/// C's `printf("%.*g", precision, v)` for a finite or non-finite double, with
/// round-half-to-even on exact ties as glibc does.
pub fn format_g(v: f64, precision: usize) -> Text {
    let mut out = Text::new();
    if v.is_nan() {
        out.push_bytes(if v.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        });
        return out;
    }
    if v.is_infinite() {
        out.push_bytes(if v < 0.0 { b"-inf" } else { b"inf" });
        return out;
    }
    let p = precision.max(1);
    // Rust's `{:.N e}` is exact and rounds ties to even.
    let (digits, x) = split_sci(&scientific(v.abs(), p - 1));
    layout_g(v.is_sign_negative(), &digits, x, p)
}

/// A normal, non-zero float's magnitude as `m × 2^e`, with what reading a decimal back
/// needs to know of its neighbours.
#[derive(Clone, Copy)]
struct Binary {
    m: u64,
    e: i32,
    /// The next float down is half as far as the next one up (`m` is the smallest
    /// significand of its binade, and the binade is not the lowest).
    closer_below: bool,
}

impl Binary {
    fn of_f32(v: f32) -> Binary {
        let bits = v.abs().to_bits();
        let (frac, exp) = (bits & 0x7F_FFFF, bits >> 23);
        Binary {
            m: u64::from(frac | 0x80_0000),
            e: exp as i32 - 150,
            closer_below: frac == 0 && exp > 1,
        }
    }

    fn of_f64(v: f64) -> Binary {
        let bits = v.abs().to_bits();
        let (frac, exp) = (bits & ((1 << 52) - 1), bits >> 52);
        Binary {
            m: frac | 1 << 52,
            e: exp as i32 - 1075,
            closer_below: frac == 0 && exp > 1,
        }
    }

    /// The value's `p` significant digits, exactly rounded (ties to even, as glibc),
    /// and its decimal exponent `x`: `q × 10^(x+1-p)`. `None` where 128 bits do not
    /// hold the scaled value (very small or very large magnitudes).
    fn digits(self, p: u32) -> Option<(u64, i32)> {
        let (m, e) = (self.m, self.e);
        let low = pow10(p.checked_sub(1)?)?;
        let high = low * 10;
        // The value lies in [2^t, 2^(t+1)), so its decimal exponent is floor(t·log10 2)
        // or one more (78913 / 2^18 is log10 2 to 6 digits, exact over this range of
        // t): the integer test below settles which.
        let t = e + 63 - m.leading_zeros() as i32;
        let mut x = (t * 78913) >> 18;
        for _ in 0..3 {
            let (q, rest) = scaled(m, e, p as i32 - 1 - x)?;
            if q >= high {
                x += 1;
            } else if q < low {
                x -= 1;
            } else {
                let up = match rest {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Equal => q % 2 == 1,
                    std::cmp::Ordering::Less => false,
                };
                // p <= 17 digits: a u64.
                return Some(match q + u128::from(up) {
                    q if q == high => (low as u64, x + 1),
                    q => (q as u64, x),
                });
            }
        }
        None
    }

    /// Whether `q × 10^-k` reads back as this value (round to nearest, ties to even):
    /// it lies within half the gap to either neighbour. Answered for a value below
    /// 2^0 in binary scale with `k >= 0`, by a multiply and a shift; `None` elsewhere.
    fn reads_back(self, q: u64, k: i32) -> Option<bool> {
        if k < 0 || self.e >= 0 || self.e <= -128 {
            return None;
        }
        let s = self.e.unsigned_abs();
        let ten_k = pow10(k.unsigned_abs())?;
        // In units of 2^-s × 10^-k: the value is n, the decimal q × 2^s, half the gap
        // above ten_k / 2 (a quarter of it below, where the float below is closer).
        let n = u128::from(self.m).checked_mul(ten_k)?;
        let d = u128::from(q);
        if d.leading_zeros() < s {
            return None;
        }
        let d = d << s;
        let (off, below) = if d >= n {
            (d - n, false)
        } else {
            (n - d, true)
        };
        let scale = if below && self.closer_below { 4 } else { 2 };
        Some(match off.checked_mul(scale)?.cmp(&ten_k) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => self.m.is_multiple_of(2),
            std::cmp::Ordering::Greater => false,
        })
    }

    /// `WriteDecimal`'s text by integer arithmetic: the 6-digit `%g` if it reads back,
    /// else `%.{full}g`. A multiply and a shift or two for the values models usually
    /// return, where the general path runs ryu, takes its text apart, and runs Grisu's
    /// exact mode through `{:.Ne}`. `None` where it cannot tell: then the general path.
    fn write_decimal(self, negative: bool, full: u32) -> Option<Text> {
        let (q, x) = self.digits(6)?;
        let (q, x, p) = if self.reads_back(q, 5 - x)? {
            (q, x, 6)
        } else {
            let (q, x) = self.digits(full)?;
            (q, x, full)
        };
        let mut digits = Text::new();
        digits.push_bytes(itoa::Buffer::new().format(q).as_bytes());
        Some(layout_g(negative, &digits, i64::from(x), p as usize))
    }
}

/// Every power of ten a `u128` holds, looked up rather than multiplied out per digit
/// on every float written.
const POW10: [u128; 39] = {
    let mut t = [1u128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `10^k`, or `None` past what a `u128` holds.
fn pow10(k: u32) -> Option<u128> {
    POW10.get(k as usize).copied()
}

/// `floor(m × 2^e × 10^k)` and how what it drops compares with one half, or `None`
/// where that does not fit in 128 bits.
fn scaled(m: u64, e: i32, k: i32) -> Option<(u128, std::cmp::Ordering)> {
    let shl = |n: u128, by: u32| (n.leading_zeros() >= by).then(|| n << by);
    let ten_k = pow10(k.unsigned_abs())?;
    if k >= 0 && e < 0 {
        // The common case: a fraction of a power of two, a shift.
        let s = e.unsigned_abs();
        if s >= 128 {
            return None;
        }
        let n = u128::from(m).checked_mul(ten_k)?;
        let rest = n & ((1u128 << s) - 1);
        return Some((n >> s, rest.cmp(&(1u128 << (s - 1)))));
    }
    let (n, d) = if k >= 0 {
        (shl(u128::from(m).checked_mul(ten_k)?, e.unsigned_abs())?, 1)
    } else if e >= 0 {
        (shl(u128::from(m), e.unsigned_abs())?, ten_k)
    } else {
        (u128::from(m), shl(ten_k, e.unsigned_abs())?)
    };
    let rest = n % d;
    Some((n / d, rest.cmp(&(d - rest))))
}

/// `%g` layout of `0.d1d2d3... x 10^(x+1)` with precision `p` (at least as many as
/// there are digits): fixed notation when `-4 <= x < p`, else `d.ddde+XX`; trailing
/// zeros dropped.
fn layout_g(negative: bool, digits: &Text, x: i64, p: usize) -> Text {
    let digits = digits.as_bytes();
    // The significant digits, zero-padded to p, then trailing zeros of the fraction
    // dropped: what is left after the point is all that prints.
    let mut out = Text::new();
    if negative {
        out.push(b'-');
    }
    let digit = |i: usize| digits.get(i).copied().unwrap_or(b'0');
    if -4 <= x && x < p as i64 {
        if x >= 0 {
            let int_len = (x + 1) as usize;
            for i in 0..int_len {
                out.push(digit(i));
            }
            let frac_end = (int_len..p)
                .rev()
                .find(|&i| digit(i) != b'0')
                .map_or(int_len, |i| i + 1);
            if frac_end > int_len {
                out.push(b'.');
                for i in int_len..frac_end {
                    out.push(digit(i));
                }
            }
        } else {
            let frac_end = (0..p)
                .rev()
                .find(|&i| digit(i) != b'0')
                .map_or(0, |i| i + 1);
            out.push_bytes(b"0.");
            for _ in 0..(-x - 1) {
                out.push(b'0');
            }
            for i in 0..frac_end {
                out.push(digit(i));
            }
        }
    } else {
        out.push(digit(0));
        let frac_end = (1..p)
            .rev()
            .find(|&i| digit(i) != b'0')
            .map_or(1, |i| i + 1);
        if frac_end > 1 {
            out.push(b'.');
            for i in 1..frac_end {
                out.push(digit(i));
            }
        }
        out.push(b'e');
        out.push(if x < 0 { b'-' } else { b'+' });
        let ax = x.unsigned_abs();
        if ax < 10 {
            out.push(b'0');
        }
        let mut n = itoa::Buffer::new();
        out.push_bytes(n.format(ax).as_bytes());
    }
    out
}

/// The `%g` (6 digits) text of a normal, non-zero value if it reads back as the same
/// value, from its shortest round-trip digits and exponent: for a normal float or
/// double, a 6-digit decimal reads back exactly when the shortest form has at most 6
/// digits, and then it is that form (the rounding interval is far narrower than the
/// 6-digit spacing). Subnormals do not have that property.
fn short_g(negative: bool, (digits, x): (Text, i64)) -> Option<Text> {
    (digits.len <= 6).then(|| layout_g(negative, &digits, x, 6))
}

/// The significant digits and decimal exponent (`d.ddd × 10^x`) of ryu's shortest
/// round-trip text of a finite, non-zero, non-negative value (`0.00012`, `1.5e-7`,
/// `123456790.0`, `1e20`): ryu finds them several times faster than `{:e}`.
fn shortest(text: &str) -> (Text, i64) {
    let (mantissa, e) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int = int.trim_start_matches('0');
    let mut digits = Text::new();
    let x = if int.is_empty() {
        let significant = frac.trim_start_matches('0');
        digits.push_bytes(significant.as_bytes());
        e - (frac.len() - significant.len()) as i64 - 1
    } else {
        digits.push_bytes(int.as_bytes());
        digits.push_bytes(frac.as_bytes());
        e + int.len() as i64 - 1
    };
    while digits.len > 1 && digits.buf[digits.len - 1] == b'0' {
        digits.len -= 1;
    }
    (digits, x)
}

fn finish(mut t: Text) -> Text {
    if !t.as_bytes().iter().any(|&b| b == b'.' || b == b'e') {
        t.push_bytes(b".0");
    }
    t
}

fn non_finite(v: f64) -> Text {
    let mut t = Text::new();
    t.push_bytes(if v.is_nan() {
        b"NaN"
    } else if v < 0.0 {
        b"-Infinity"
    } else {
        b"Infinity"
    });
    t
}

/// Two decimal digits per entry, `00` to `99`.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The eight decimal digits of `n < 10^8` as one word, the first digit in the lowest
/// byte (so `to_le_bytes` reads them in order), each a value 0-9: split in halves,
/// quarters, then digits, every lane at once (a quotient by 100 and by 10 as a
/// multiply and shift, exact below 10^4 and 10^2).
fn eight_digits(n: u32) -> u64 {
    let n = u64::from(n);
    let x = (n / 10_000) | ((n % 10_000) << 32);
    let hundreds = ((x * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let x = hundreds | ((x - hundreds * 100) << 16);
    let tens = ((x * 103) >> 10) & 0x000F_000F_000F_000F;
    tens | ((x - tens * 10) << 8)
}

/// `(whole + rest) / D` rounded to nearest, ties to even, for an even `D` and a
/// `0 <= rest < 1` that is zero only when `exact` is true. `D` is a constant, so the
/// division is a multiply.
fn round_div<const D: u64>(whole: u64, exact: bool) -> u64 {
    let (q, r) = (whole / D, whole % D);
    // Without branches: which way a random value rounds is a coin toss the branch
    // predictor loses half the time.
    let up = (2 * r > D) | ((2 * r == D) & (!exact | (q % 2 == 1)));
    q + u64::from(up)
}

/// `b"0.00000000000000"` read as one little-endian word: the lead of a `%g` text
/// between 1e-4 and 1, cut to length.
const LEADING_ZEROS: u128 = u128::from_le_bytes(*b"0.00000000000000");

/// The first `n < 16` bytes of a little-endian text word.
fn first_bytes(text: u128, n: usize) -> u128 {
    text & ((1u128 << (8 * n)) - 1)
}

/// What each binary exponent of a float in the fast range needs. The value is
/// `m × 2^-s`; scaled by `10^k` to 10 or 11 integer digits it is
/// `m × pre × five / 2^shift`, with `pre × five = 5^k × 2^(k-s+shift)`: `pre` a small
/// factor that keeps `m × pre` in a `u64` and `five` below 2^64, so one 64×64
/// multiply gives it. The gap between neighbouring floats is `pre × five / 2^shift`
/// of those units. `five == 0` outside the range.
#[derive(Clone, Copy)]
struct Scale {
    pre: u64,
    five: u64,
    shift: u32,
    /// floor(half the gap), or -1 where half the gap is a whole number (the top
    /// binades, whose values are integers at this scale): then compared exactly.
    half_gap: i64,
    /// The decimal exponent of the binade's low end (the high end's may be one more).
    x: i32,
}

const SCALES: [Scale; 256] = {
    let none = Scale {
        pre: 0,
        five: 0,
        shift: 0,
        half_gap: 0,
        x: 0,
    };
    let mut t = [none; 256];
    let mut exp = 1;
    while exp < 255 {
        let s = 150 - exp as i32;
        let x = ((23 - s) * 78913) >> 18;
        let k = 9 - x;
        // 5^27 is the last power of five a u64 holds; 625 × 2^24 fits many times over.
        if s >= 1 && k >= 0 && k <= 31 {
            let five = 5u64.pow(if k > 27 { 27 } else { k as u32 });
            let (pre, shift) = if s < k {
                (1u64 << (k - s), 0)
            } else {
                (
                    5u64.pow(if k > 27 { (k - 27) as u32 } else { 0 }),
                    (s - k) as u32,
                )
            };
            let gap = pre as u128 * five as u128;
            let half_gap = if shift == 0 && gap.is_multiple_of(2) {
                -1
            } else {
                (gap >> (shift + 1)) as i64
            };
            t[exp] = Scale {
                pre,
                five,
                shift,
                half_gap,
                x,
            };
        }
        exp += 1;
    }
    t
};

/// Whether the decimal `c` reads back as the float `n / 2^shift` (both in the scaled
/// units, `gap` apart from its neighbours): within half the gap, a quarter of it
/// below where the float below is closer, ties to the even significand.
fn reads_back_exactly(
    n: u128,
    c: u64,
    shift: u32,
    gap: u128,
    closer_below: bool,
    even: bool,
) -> Option<bool> {
    let c = u128::from(c) << shift;
    let below = c < n;
    let off = c
        .abs_diff(n)
        .checked_mul(if below && closer_below { 4 } else { 2 })?;
    Some(match off.cmp(&gap) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Equal => even,
        std::cmp::Ordering::Greater => false,
    })
}

/// `WriteDecimal<float>` for the magnitudes models return (about 1e-22 up to 2^23):
/// the value scaled to 10 or 11 integer digits by one 64×64 multiply (the binade's
/// factors looked up in [`SCALES`]), from which both the 6-digit and the 9-digit
/// roundings are taken exactly (ties to even). Whether the 6-digit one reads back is
/// a comparison of integers with half the gap to the neighbouring floats, exact but
/// for two borderline distances and powers of two, which take the 128-bit comparison.
/// `None` outside that range: then the general path.
///
/// The text (at most 15 bytes, `-1.23456789e-05`) comes back in a register, first
/// byte lowest, with its length: laid out by shifts, never stored byte by byte and
/// read back whole.
fn fast_f32(v: f32) -> Option<(u128, usize)> {
    let bits = v.to_bits();
    let (frac, exp) = (bits & 0x7F_FFFF, (bits >> 23) & 0xFF);
    let Scale {
        pre,
        five,
        shift,
        half_gap,
        x: xg,
    } = SCALES[exp as usize];
    if five == 0 {
        return None;
    }
    let m = frac | 0x80_0000;
    let n = u128::from(u64::from(m) * pre) * u128::from(five);
    // n = (whole + rest) × 2^shift; rest is zero when 2^shift divides m (pre × five
    // is odd where shift > 0).
    let whole = (n >> shift) as u64;
    let exact = m.trailing_zeros() >= shift;
    let (over, x, q9, q6) = if whole >= 10_000_000_000 {
        let q9 = round_div::<100>(whole, exact);
        (100, xg + 1, q9, round_div::<100_000>(whole, exact))
    } else {
        let q9 = round_div::<10>(whole, exact);
        (10, xg, q9, round_div::<10_000>(whole, exact))
    };
    // Does q6 × 10^(x-5) read back? It lies `delta - rest / 2^shift` units from the
    // value (`0 <= rest < 2^shift`), against half the gap, which is never a whole
    // number of units: integers settle it except where `delta` is `half_gap + 1` or
    // `-half_gap`, and for a power of two, whose float below is closer.
    let c6 = q6 * over * 1000;
    let delta = c6 as i64 - whole as i64;
    let reads_back = if frac == 0 || half_gap < 0 || delta == half_gap + 1 || delta == -half_gap {
        let gap = u128::from(pre) * u128::from(five);
        reads_back_exactly(n, c6, shift, gap, frac == 0 && exp > 1, frac % 2 == 0)?
    } else {
        delta <= half_gap && delta > -half_gap
    };
    // q's nine digits (a 6-digit q scaled up): a rounding up to 10^p is 10^(p-1),
    // one decade higher.
    let (q, p) = if reads_back { (q6 * 1000, 6) } else { (q9, 9) };
    let (q, x) = if q == 1_000_000_000 {
        (100_000_000, x + 1)
    } else {
        (q, x)
    };
    let q = q as u32;
    let low8 = eight_digits(q % 100_000_000);
    // Significant digits, trailing zeros dropped.
    let len = if low8 == 0 {
        1
    } else {
        9 - low8.leading_zeros() as usize / 8
    };
    // The nine digits as bytes 0-8 of a word, '0's above.
    let digits = u128::from(b'0' + (q / 100_000_000) as u8)
        | u128::from(low8 | 0x3030_3030_3030_3030) << 8
        | 0x30_3030_3030_3030u128 << 72;
    let (text, used) = if (0..p).contains(&x) {
        // At most 9 integer digits, then '.' and the rest, or ".0" (the digits past
        // `len` are '0's).
        let int_len = x as usize + 1;
        let text = first_bytes(digits, int_len)
            | u128::from(b'.') << (8 * int_len)
            | (digits >> (8 * int_len)) << (8 * int_len + 8);
        (text, int_len + 1 + len.saturating_sub(int_len).max(1))
    } else if (-4..0).contains(&x) {
        // "0." and -x-1 zeros, then the digits.
        let lead = (1 - x) as usize;
        (
            first_bytes(LEADING_ZEROS, lead) | digits << (8 * lead),
            lead + len,
        )
    } else {
        // d.ddde-xx: an exponent of two digits at most in this range.
        let ax = x.unsigned_abs() as usize;
        let pair = DIGIT_PAIRS.get(ax * 2..ax * 2 + 2)?;
        let sign = if x < 0 { b'-' } else { b'+' };
        let exponent = u128::from(u32::from_le_bytes([b'e', sign, pair[0], pair[1]]));
        let (mantissa, at) = if len > 1 {
            let rest = first_bytes(digits >> 8, len - 1);
            (digits & 0xFF | u128::from(b'.') << 8 | rest << 16, len + 1)
        } else {
            (digits & 0xFF, 1)
        };
        (mantissa | exponent << (8 * at), at + 4)
    };
    Some(if v < 0.0 {
        (text << 8 | u128::from(b'-'), used + 1)
    } else {
        (text, used)
    })
}

/// Appends `WriteDecimal<float>`'s text of `v` to `out`, through the one-multiply path
/// where it applies.
pub fn push_f32(out: &mut Vec<u8>, v: f32) {
    match v.is_normal().then(|| fast_f32(v)).flatten() {
        Some((text, len)) => {
            // The whole word, then the tail cut: a fixed-size store.
            let start = out.len();
            out.extend_from_slice(&text.to_le_bytes());
            out.truncate(start + len);
        }
        None => out.extend_from_slice(decimal_f32(v).as_bytes()),
    }
}

/// `WriteDecimal<float>`.
pub fn decimal_f32(v: f32) -> Text {
    if !v.is_normal() {
        // Zero, subnormals and non-finite values.
        return literal_f32(v);
    }
    if let Some((fast, len)) = fast_f32(v) {
        let mut text = Text::new();
        text.push_bytes(&fast.to_le_bytes()[..len]);
        return text;
    }
    let negative = v < 0.0;
    finish(
        Binary::of_f32(v)
            .write_decimal(negative, 9)
            .unwrap_or_else(|| {
                let mut buf = ryu::Buffer::new();
                short_g(negative, shortest(buf.format_finite(v.abs())))
                    .unwrap_or_else(|| format_g(f64::from(v), 9))
            }),
    )
}

/// `WriteDecimal<double>`.
pub fn decimal_f64(v: f64) -> Text {
    if !v.is_normal() {
        return literal_f64(v);
    }
    let negative = v < 0.0;
    finish(
        Binary::of_f64(v)
            .write_decimal(negative, 17)
            .unwrap_or_else(|| {
                let mut buf = ryu::Buffer::new();
                short_g(negative, shortest(buf.format_finite(v.abs())))
                    .unwrap_or_else(|| format_g(v, 17))
            }),
    )
}

/// `WriteDecimal<float>` spelled out literally: `%g`, read back, else `%.9g`. The oracle
/// the fast path is held to, by the tests and the `write_decimal` fuzz target.
pub fn literal_f32(v: f32) -> Text {
    if !v.is_finite() {
        return non_finite(f64::from(v));
    }
    let short = format_g(f64::from(v), 6);
    finish(if short.parse::<f32>().ok() == Some(v) {
        short
    } else {
        format_g(f64::from(v), 9)
    })
}

/// `WriteDecimal<double>` spelled out literally: `%g`, read back, else `%.17g`.
pub fn literal_f64(v: f64) -> Text {
    if !v.is_finite() {
        return non_finite(v);
    }
    let short = format_g(v, 6);
    finish(if short.parse::<f64>().ok() == Some(v) {
        short
    } else {
        format_g(v, 17)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_g_cases() {
        // Expected strings are glibc printf output.
        let cases: &[(f64, usize, &str)] = &[
            (0.0, 6, "0"),
            (-0.0, 6, "-0"),
            (1.0, 6, "1"),
            (100000.0, 6, "100000"),
            (1000000.0, 6, "1e+06"),
            (999999.5, 6, "1e+06"),
            (0.0001, 6, "0.0001"),
            (0.00001, 6, "1e-05"),
            (0.000123456789, 6, "0.000123457"),
            (1e100, 6, "1e+100"),
            (1.5e-300, 6, "1.5e-300"),
            (123456789.0, 9, "123456789"),
            (1234567890.0, 9, "1.23456789e+09"),
            (0.1, 17, "0.10000000000000001"),
            (2.5, 1, "2"),
            (3.5, 1, "4"),
            (0.5, 0, "0.5"),
            (0.0001220703125, 9, "0.000122070312"),
            (5e-324, 17, "4.9406564584124654e-324"),
            (1.7976931348623157e308, 17, "1.7976931348623157e+308"),
            (-1.25, 6, "-1.25"),
        ];
        for (v, p, want) in cases {
            assert_eq!(format_g(*v, *p), *want, "{v} %.{p}g");
        }
    }

    #[test]
    fn write_decimal_float() {
        assert_eq!(decimal_f32(1.0 / 3.0), "0.333333343");
        assert_eq!(decimal_f32(9e6), "9e+06");
        assert_eq!(decimal_f32(3e-5), "3e-05");
        assert_eq!(decimal_f32(1e20), "1e+20");
        assert_eq!(decimal_f32(3.0), "3.0");
        assert_eq!(decimal_f32(2.5), "2.5");
        assert_eq!(decimal_f32(-0.0), "-0.0");
        assert_eq!(decimal_f32(0.0), "0.0");
        assert_eq!(decimal_f32(999999.0), "999999.0");
        assert_eq!(decimal_f32(0.5), "0.5");
        assert_eq!(decimal_f32(0.0003), "0.0003");
        assert_eq!(decimal_f32(555557.5), "555557.5");
        assert_eq!(decimal_f32(0.2), "0.2");
        assert_eq!(decimal_f32(1234567.0), "1234567.0");
        assert_eq!(decimal_f32(16777216.0), "16777216.0");
        assert_eq!(decimal_f32(0.1 + 0.2), "0.3");
        assert_eq!(decimal_f32(f32::MAX), "3.40282347e+38");
        assert_eq!(decimal_f32(f32::MIN_POSITIVE), "1.17549435e-38");
        assert_eq!(decimal_f32(f32::NAN), "NaN");
        assert_eq!(decimal_f32(f32::INFINITY), "Infinity");
        assert_eq!(decimal_f32(f32::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn shortest_digits_from_ryu_text() {
        let d = |t: &str| {
            let (digits, x) = shortest(t);
            (digits.to_string(), x)
        };
        assert_eq!(d("1.0"), ("1".into(), 0));
        assert_eq!(d("0.00012"), ("12".into(), -4));
        assert_eq!(d("1.5e-7"), ("15".into(), -7));
        assert_eq!(d("123456790.0"), ("12345679".into(), 8));
        assert_eq!(d("1e20"), ("1".into(), 20));
        assert_eq!(d("100.0"), ("1".into(), 2));
        assert_eq!(d("0.5"), ("5".into(), -1));
    }

    #[test]
    fn write_decimal_double() {
        assert_eq!(decimal_f64(1.0 / 3.0), "0.33333333333333331");
        assert_eq!(decimal_f64(0.1), "0.1");
        assert_eq!(decimal_f64(8.0), "8.0");
        assert_eq!(decimal_f64(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(decimal_f64(1e300), "1e+300");
        assert_eq!(decimal_f64(123456789.0), "123456789.0");
        assert_eq!(decimal_f64(f64::NAN), "NaN");
        assert_eq!(decimal_f64(-0.0), "-0.0");
    }

    #[test]
    fn the_integer_path_rounds_exactly_and_ties_to_even() {
        // 2^20 + 1/8 = 1048576.125: ten digits, a tie at the ninth.
        assert_eq!(decimal_f32(1_048_576.0 + 0.125), "1048576.12");
        assert_eq!(decimal_f32(1_048_576.0 + 0.375), "1048576.38");
        // 2^49 + 1/8: eighteen digits, a tie at the seventeenth.
        assert_eq!(
            decimal_f64(562_949_953_421_312.0 + 0.125),
            "562949953421312.12"
        );
        assert_eq!(
            decimal_f64(562_949_953_421_312.0 + 0.375),
            "562949953421312.38"
        );
        // Near powers of ten, where the exponent's first guess may be off by one.
        for k in -30..=38 {
            for f in [
                10f32.powi(k),
                10f32.powi(k).next_up(),
                10f32.powi(k).next_down(),
            ] {
                if f.is_normal() {
                    assert_eq!(decimal_f32(f), &*literal_f32(f), "{f:e}");
                }
            }
        }
        for k in -300..=300 {
            let d = 10f64.powi(k);
            for d in [
                d,
                f64::from_bits(d.to_bits() + 1),
                f64::from_bits(d.to_bits() - 1),
            ] {
                assert_eq!(decimal_f64(d), &*literal_f64(d), "{d:e}");
            }
        }
        // Around every power of two, where the float below is closer than the one above.
        for k in -125..127 {
            let mut f = f32::from_bits(2f32.powi(k).to_bits() - 300);
            for _ in 0..600 {
                assert_eq!(decimal_f32(f), &*literal_f32(f), "{f:e}");
                f = f.next_up();
            }
        }
        for k in -1020..1020 {
            let mut d = f64::from_bits(2f64.powi(k).to_bits() - 30);
            for _ in 0..60 {
                assert_eq!(decimal_f64(d), &*literal_f64(d), "{d:e}");
                d = f64::from_bits(d.to_bits() + 1);
            }
        }
        // Every f32 of a few binades' stretches, around 1 and around 1e-20 and 1e30.
        for start in [1.0f32, 1e-20, 1e30, 0.1, 3.0, 1e5, 999_000.0, 1e-3] {
            let mut f = start;
            for _ in 0..200_000 {
                assert_eq!(decimal_f32(f), &*literal_f32(f), "{f:e}");
                f = f.next_up();
            }
        }
    }

    #[test]
    fn every_binade_of_f32_writes_as_the_literal_algorithm() {
        // A stride through every normal float of either sign: each binade, so each
        // branch of the one-multiply path and of its fallback. (Run with a stride of
        // 97, 44 million floats, all agreed.)
        let mut bits: u32 = 0x0080_0000;
        while bits < 0x7F80_0000 {
            for sign in [0, 0x8000_0000] {
                let f = f32::from_bits(bits | sign);
                assert_eq!(decimal_f32(f), &*literal_f32(f), "{f:e}");
            }
            bits += 9973;
        }
    }

    #[test]
    fn fast_path_equals_the_literal_algorithm() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..200_000u32 {
            let r = next();
            let f = match i % 4 {
                0 => f32::from_bits(r as u32),
                1 => (r % 2_000_000) as f32 / [1.0, 10.0, 100.0, 1000.0][(r >> 40) as usize % 4],
                2 => f32::from_bits((r as u32) & 0x807F_FFFF), // zero and subnormals
                _ => ((r % 100_000) as f32) * 10f32.powi((r >> 50) as i32 % 30 - 15),
            };
            if f.is_finite() {
                assert_eq!(decimal_f32(f), &*literal_f32(f), "{f:e}");
            }
            let d = match i % 3 {
                0 => f64::from_bits(r),
                1 => (r % 2_000_000) as f64 / 1000.0,
                _ => f64::from(f),
            };
            if d.is_finite() {
                assert_eq!(decimal_f64(d), &*literal_f64(d), "{d:e}");
            }
        }
    }
}
