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
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:.N e}` is exact and rounds ties to even.
    let sci = format!("{:.*e}", p - 1, v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let x: i64 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let p_i = p as i64;
    if -4 <= x && x < p_i {
        // Fixed notation with p - 1 - x decimals.
        let mut s = String::new();
        if x >= 0 {
            let int_len = (x + 1) as usize;
            s.push_str(&digits[..int_len.min(digits.len())]);
            s.push('.');
            s.push_str(&digits[int_len.min(digits.len())..]);
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
    let short = format_g(f64::from(v), 6);
    let s = if short.parse::<f32>().ok() == Some(v) {
        short
    } else {
        format_g(f64::from(v), 9)
    };
    finish(s)
}

/// `WriteDecimal<double>`.
pub fn decimal_f64(v: f64) -> String {
    if !v.is_finite() {
        return non_finite(v).to_string();
    }
    let short = format_g(v, 6);
    let s = if short.parse::<f64>().ok() == Some(v) {
        short
    } else {
        format_g(v, 17)
    };
    finish(s)
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
}
