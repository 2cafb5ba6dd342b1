//! TF Serving's `WriteDecimal` (json_tensor.cc): floats and doubles as the shortest
//! `%g` (6 significant digits, what `absl::StrCat` prints) when that reads back as the
//! same value, else `%.9g` (float) or `%.17g` (double); `.0` appended when the text has
//! neither `.` nor `e`; `NaN`, `Infinity`, `-Infinity` for non-finite values.

/// C's `printf("%.*g", precision, v)` for a finite or non-finite double, with
/// round-half-to-even on exact ties as glibc does.
pub fn format_g(v: f64, precision: usize) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() { "-nan" } else { "nan" }.to_string();
    }
    if v.is_infinite() {
        return if v < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    let p = precision.max(1);
    // Rust's `{:.N e}` is exact and rounds ties to even.
    let (digits, x) = split_sci(&format!("{:.*e}", p - 1, v.abs()));
    layout_g(v.is_sign_negative(), &digits, x, p)
}

/// Digits and decimal exponent of Rust's `{:e}` output (`1.2345e-7`).
fn split_sci(sci: &str) -> (String, i64) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let digits = mantissa.chars().filter(|c| *c != '.').collect();
    (digits, exp.parse().unwrap_or(0))
}

/// `%g` layout of `0.d1d2d3... x 10^(x+1)` with precision `p` (at least as many as
/// there are digits): fixed notation when `-4 <= x < p`, else `d.ddde+XX`; trailing
/// zeros dropped.
fn layout_g(negative: bool, digits: &str, x: i64, p: usize) -> String {
    let mut digits = digits.to_string();
    while digits.len() < p {
        digits.push('0');
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if -4 <= x && x < p as i64 {
        let mut s = String::new();
        if x >= 0 {
            let int_len = ((x + 1) as usize).min(digits.len());
            s.push_str(&digits[..int_len]);
            s.push('.');
            s.push_str(&digits[int_len..]);
        } else {
            s.push_str("0.");
            for _ in 0..(-x - 1) {
                s.push('0');
            }
            s.push_str(&digits);
        }
        out.push_str(strip_fraction_zeros(&s));
    } else {
        let (a, b) = digits.split_at(1.min(digits.len()));
        let mut m = String::from(a);
        m.push('.');
        m.push_str(b);
        out.push_str(strip_fraction_zeros(&m));
        out.push('e');
        out.push(if x < 0 { '-' } else { '+' });
        let ax = x.unsigned_abs();
        if ax < 10 {
            out.push('0');
        }
        out.push_str(&ax.to_string());
    }
    out
}

/// The `%g` (6 digits) text of a normal, non-zero value if it reads back as the same
/// value, from the shortest round-trip digits `sci` (Rust's `{:e}`): for a normal
/// float or double, a 6-digit decimal reads back exactly when the shortest form has
/// at most 6 digits, and then it is that form (the rounding interval is far narrower
/// than the 6-digit spacing). Subnormals do not have that property.
fn short_g(negative: bool, sci: &str) -> Option<String> {
    let (digits, x) = split_sci(sci);
    (digits.len() <= 6).then(|| layout_g(negative, &digits, x, 6))
}

fn strip_fraction_zeros(s: &str) -> &str {
    if !s.contains('.') {
        return s;
    }
    s.trim_end_matches('0').trim_end_matches('.')
}

fn finish(mut s: String) -> String {
    if !s.contains('.') && !s.contains('e') {
        s.push_str(".0");
    }
    s
}

fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v < 0.0 {
        "-Infinity"
    } else {
        "Infinity"
    }
}

/// `WriteDecimal<float>`.
pub fn decimal_f32(v: f32) -> String {
    if !v.is_finite() {
        return non_finite(f64::from(v)).to_string();
    }
    let short = if v.is_normal() {
        short_g(v < 0.0, &format!("{:e}", v.abs()))
    } else {
        // Zero and subnormals: the literal algorithm.
        Some(format_g(f64::from(v), 6)).filter(|s| s.parse::<f32>().ok() == Some(v))
    };
    finish(short.unwrap_or_else(|| format_g(f64::from(v), 9)))
}

/// `WriteDecimal<double>`.
pub fn decimal_f64(v: f64) -> String {
    if !v.is_finite() {
        return non_finite(v).to_string();
    }
    let short = if v.is_normal() {
        short_g(v < 0.0, &format!("{:e}", v.abs()))
    } else {
        Some(format_g(v, 6)).filter(|s| s.parse::<f64>().ok() == Some(v))
    };
    finish(short.unwrap_or_else(|| format_g(v, 17)))
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

    /// `WriteDecimal` spelled out literally: `%g`, read back, else full precision.
    fn reference_f32(v: f32) -> String {
        let short = format_g(f64::from(v), 6);
        finish(if short.parse::<f32>().ok() == Some(v) {
            short
        } else {
            format_g(f64::from(v), 9)
        })
    }

    fn reference_f64(v: f64) -> String {
        let short = format_g(v, 6);
        finish(if short.parse::<f64>().ok() == Some(v) {
            short
        } else {
            format_g(v, 17)
        })
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
                assert_eq!(decimal_f32(f), reference_f32(f), "{f:e}");
            }
            let d = match i % 3 {
                0 => f64::from_bits(r),
                1 => (r % 2_000_000) as f64 / 1000.0,
                _ => f64::from(f),
            };
            if d.is_finite() {
                assert_eq!(decimal_f64(d), reference_f64(d), "{d:e}");
            }
        }
    }
}
