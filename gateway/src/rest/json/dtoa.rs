//! rapidjson's double-to-text (`internal::dtoa`: Grisu2 digit generation, then
//! `Prettify` with `maxDecimalPlaces = 324`), used for doubles that appear inside
//! error messages (`JSON Value: 0.30000000000000004 ...`). Grisu2 does not always pick
//! the shortest digits, so Rust's own formatting would differ now and then.
//!
//! The cached powers of ten are computed once, exactly, with a small big-integer
//! routine rather than tabulated.

use std::sync::OnceLock;

#[derive(Clone, Copy)]
struct DiyFp {
    f: u64,
    e: i32,
}

const HIDDEN_BIT: u64 = 1 << 52;

impl DiyFp {
    fn from_f64(d: f64) -> DiyFp {
        let bits = d.to_bits();
        let biased_e = ((bits >> 52) & 0x7FF) as i32;
        let significand = bits & (HIDDEN_BIT - 1);
        if biased_e != 0 {
            DiyFp {
                f: significand + HIDDEN_BIT,
                e: biased_e - 1075,
            }
        } else {
            DiyFp {
                f: significand,
                e: -1074,
            }
        }
    }

    fn sub(self, rhs: DiyFp) -> DiyFp {
        DiyFp {
            f: self.f.wrapping_sub(rhs.f),
            e: self.e,
        }
    }

    /// 64x64 multiply keeping the rounded high half.
    fn mul(self, rhs: DiyFp) -> DiyFp {
        let p = u128::from(self.f) * u128::from(rhs.f);
        let mut h = (p >> 64) as u64;
        if (p as u64) & (1 << 63) != 0 {
            h = h.wrapping_add(1);
        }
        DiyFp {
            f: h,
            e: self.e + rhs.e + 64,
        }
    }

    fn normalize(self) -> DiyFp {
        if self.f == 0 {
            return self;
        }
        let s = self.f.leading_zeros() as i32;
        DiyFp {
            f: self.f << s,
            e: self.e - s,
        }
    }

    /// The normalized upper and lower boundaries (m+, m-) of the value's rounding
    /// interval, sharing one exponent.
    fn normalized_boundaries(self) -> (DiyFp, DiyFp) {
        let mut pl = DiyFp {
            f: (self.f << 1) + 1,
            e: self.e - 1,
        };
        while pl.f & (HIDDEN_BIT << 1) == 0 {
            pl.f <<= 1;
            pl.e -= 1;
        }
        pl.f <<= 64 - 52 - 2;
        pl.e -= 64 - 52 - 2;
        let mut mi = if self.f == HIDDEN_BIT {
            DiyFp {
                f: (self.f << 2) - 1,
                e: self.e - 2,
            }
        } else {
            DiyFp {
                f: (self.f << 1) - 1,
                e: self.e - 1,
            }
        };
        mi.f <<= (mi.e - pl.e) as u32;
        mi.e = pl.e;
        (mi, pl)
    }
}

/// Little-endian base-2^32 big integer, just enough for powers of ten.
fn big_mul_small(a: &mut Vec<u32>, m: u32) {
    let mut carry = 0u64;
    for limb in a.iter_mut() {
        let v = u64::from(*limb) * u64::from(m) + carry;
        *limb = v as u32;
        carry = v >> 32;
    }
    if carry != 0 {
        a.push(carry as u32);
    }
}

fn big_bits(a: &[u32]) -> usize {
    match a.iter().rposition(|&l| l != 0) {
        Some(i) => i * 32 + (32 - a[i].leading_zeros() as usize),
        None => 0,
    }
}

fn big_bit(a: &[u32], i: usize) -> bool {
    a.get(i / 32).is_some_and(|l| (l >> (i % 32)) & 1 == 1)
}

fn big_ge(a: &[u32], b: &[u32]) -> bool {
    let n = a.len().max(b.len());
    for i in (0..n).rev() {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

fn big_sub(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0i64;
    for (i, limb) in a.iter_mut().enumerate() {
        let v = i64::from(*limb) - i64::from(b.get(i).copied().unwrap_or(0)) - borrow;
        borrow = i64::from(v < 0);
        *limb = v.rem_euclid(1 << 32) as u32;
    }
}

fn big_shl1(a: &mut Vec<u32>) {
    let mut carry = 0u32;
    for limb in a.iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | carry;
        carry = next;
    }
    if carry != 0 {
        a.push(carry);
    }
}

/// The top 64 bits of a big integer `bits` long, rounded to nearest (`sticky` says
/// whether anything non-zero lies below the integer), and how far they were shifted.
fn round_top64(a: &[u32], bits: usize, sticky: bool) -> (u64, i32) {
    if bits <= 64 {
        let mut v = 0u64;
        for i in (0..bits).rev() {
            v = (v << 1) | u64::from(big_bit(a, i));
        }
        let s = 64 - bits;
        return (v << s, -(s as i32));
    }
    let shift = bits - 64;
    let mut v = 0u64;
    for i in (shift..bits).rev() {
        v = (v << 1) | u64::from(big_bit(a, i));
    }
    let half = big_bit(a, shift - 1);
    let below = sticky || (0..shift - 1).any(|i| big_bit(a, i));
    if half && (below || v & 1 == 1) {
        match v.checked_add(1) {
            Some(r) => v = r,
            None => return (1 << 63, shift as i32 + 1),
        }
    }
    (v, shift as i32)
}

/// 10^k as a normalized `DiyFp`, correctly rounded.
fn pow10_diyfp(k: i32) -> DiyFp {
    let mut p = vec![1u32];
    for _ in 0..k.unsigned_abs() {
        big_mul_small(&mut p, 10);
    }
    if k >= 0 {
        let bits = big_bits(&p);
        let (f, e) = round_top64(&p, bits, false);
        return DiyFp { f, e };
    }
    // 2^s / 10^|k| with at least 66 quotient bits, by binary long division.
    let s = big_bits(&p) + 66;
    let mut q = vec![0u32; s / 32 + 2];
    let mut r: Vec<u32> = vec![0];
    for i in (0..=s).rev() {
        big_shl1(&mut r);
        if i == s {
            r[0] |= 1;
        }
        if big_ge(&r, &p) {
            big_sub(&mut r, &p);
            q[i / 32] |= 1 << (i % 32);
        }
    }
    let sticky = r.iter().any(|&l| l != 0);
    let bits = big_bits(&q);
    let (f, e) = round_top64(&q, bits, sticky);
    DiyFp { f, e: e - s as i32 }
}

/// rapidjson's cached powers: 10^(-348 + 8i) for i in 0..87.
fn cached_power(index: usize) -> (DiyFp, i32) {
    static TABLE: OnceLock<Vec<DiyFp>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..87).map(|i| pow10_diyfp(-348 + 8 * i)).collect());
    let k = -348 + 8 * index as i32;
    let p = table
        .get(index)
        .copied()
        .unwrap_or(DiyFp { f: 1 << 63, e: 0 });
    (p, k)
}

/// The cached power c with binary exponent near `-61 - e`; returns c and `-k`.
fn get_cached_power(e: i32) -> (DiyFp, i32) {
    let dk = f64::from(-61 - e) * 0.301_029_995_663_981_14 + 347.0;
    let mut k = dk as i32;
    if dk - f64::from(k) > 0.0 {
        k += 1;
    }
    let index = ((k >> 3) + 1).max(0) as usize;
    let (c, dec) = cached_power(index);
    (c, -dec)
}

const POW10_U32: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

fn grisu_round(buf: &mut [u8], delta: u64, mut rest: u64, ten_kappa: u64, wp_w: u64) {
    let Some(last) = buf.last_mut() else {
        return;
    };
    while rest < wp_w
        && delta - rest >= ten_kappa
        && (rest.wrapping_add(ten_kappa) < wp_w
            || wp_w - rest > rest.wrapping_add(ten_kappa).wrapping_sub(wp_w))
    {
        *last = last.wrapping_sub(1);
        rest = rest.wrapping_add(ten_kappa);
    }
}

fn count_digits(n: u32) -> i32 {
    let mut d = 1;
    while d < 9 && n >= POW10_U32[d as usize] {
        d += 1;
    }
    d
}

fn digit_gen(w: DiyFp, mp: DiyFp, mut delta: u64, buf: &mut Vec<u8>, k: &mut i32) {
    let one_e = -mp.e;
    let one_f = 1u64 << one_e;
    let wp_w = mp.sub(w);
    let mut p1 = (mp.f >> one_e) as u32;
    let mut p2 = mp.f & (one_f - 1);
    let mut kappa = count_digits(p1);
    while kappa > 0 {
        let div = POW10_U32[(kappa - 1) as usize];
        let d = p1 / div;
        p1 %= div;
        if d != 0 || !buf.is_empty() {
            buf.push(b'0' + d as u8);
        }
        kappa -= 1;
        let tmp = (u64::from(p1) << one_e) + p2;
        if tmp <= delta {
            *k += kappa;
            let ten_kappa = u64::from(POW10_U32[kappa as usize]) << one_e;
            grisu_round(buf, delta, tmp, ten_kappa, wp_w.f);
            return;
        }
    }
    loop {
        p2 = p2.wrapping_mul(10);
        delta = delta.wrapping_mul(10);
        let d = (p2 >> one_e) as u8;
        if d != 0 || !buf.is_empty() {
            buf.push(b'0' + d);
        }
        p2 &= one_f - 1;
        kappa -= 1;
        if p2 < delta {
            *k += kappa;
            let index = -kappa;
            let scale = if index < 9 {
                u64::from(POW10_U32[index as usize])
            } else {
                0
            };
            grisu_round(buf, delta, p2, one_f, wp_w.f.wrapping_mul(scale));
            return;
        }
        if buf.len() > 40 {
            // Cannot happen for finite doubles; a guard against looping forever.
            return;
        }
    }
}

/// Grisu2: decimal digits and exponent K with value = digits x 10^K, for a finite
/// positive double.
fn grisu2(value: f64) -> (Vec<u8>, i32) {
    let v = DiyFp::from_f64(value);
    let (w_m, w_p) = v.normalized_boundaries();
    let (c_mk, mut k) = get_cached_power(w_p.e);
    let w = v.normalize().mul(c_mk);
    let mut wp = w_p.mul(c_mk);
    let mut wm = w_m.mul(c_mk);
    wm.f = wm.f.wrapping_add(1);
    wp.f = wp.f.wrapping_sub(1);
    let mut buf = Vec::with_capacity(20);
    digit_gen(w, wp, wp.f.wrapping_sub(wm.f), &mut buf, &mut k);
    (buf, k)
}

fn write_exponent(k: i32, out: &mut String) {
    out.push_str(&k.to_string());
}

/// rapidjson `Writer::WriteDouble` for a finite double.
pub(crate) fn rapidjson_dtoa(d: f64) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    let mut out = String::new();
    if d < 0.0 {
        out.push('-');
    }
    let (digits, k) = grisu2(d.abs());
    let digits = String::from_utf8_lossy(&digits).into_owned();
    let length = digits.len() as i32;
    let kk = length + k;
    if (0..).contains(&k) && kk <= 21 {
        out.push_str(&digits);
        for _ in length..kk {
            out.push('0');
        }
        out.push_str(".0");
    } else if 0 < kk && kk <= 21 {
        let (a, b) = digits.split_at(kk as usize);
        out.push_str(a);
        out.push('.');
        out.push_str(b);
    } else if -6 < kk && kk <= 0 {
        out.push_str("0.");
        for _ in 0..-kk {
            out.push('0');
        }
        out.push_str(&digits);
    } else if kk < -324 {
        out.push_str("0.0");
    } else {
        let (a, b) = digits.split_at(1.min(digits.len()));
        out.push_str(a);
        if !b.is_empty() {
            out.push('.');
            out.push_str(b);
        }
        out.push('e');
        write_exponent(kk - 1, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_powers_are_exact() {
        // 10^-348 and 10^340, the ends of the table, as published with Grisu.
        let first = pow10_diyfp(-348);
        assert_eq!((first.f, first.e), (0xfa8f_d5a0_081c_0288, -1220));
        let last = pow10_diyfp(340);
        assert_eq!((last.f, last.e), (0xaf87_023b_9bf0_ee6b, 1066));
        let p = pow10_diyfp(4);
        assert_eq!((p.f, p.e), (10_000u64 << 50, -50));
    }

    #[test]
    fn formats_like_rapidjson() {
        assert_eq!(rapidjson_dtoa(1.0), "1.0");
        assert_eq!(rapidjson_dtoa(-0.0), "-0.0");
        assert_eq!(rapidjson_dtoa(0.0), "0.0");
        assert_eq!(rapidjson_dtoa(1.5), "1.5");
        assert_eq!(rapidjson_dtoa(-2.25), "-2.25");
        assert_eq!(rapidjson_dtoa(123456.0), "123456.0");
        assert_eq!(rapidjson_dtoa(1e20), "100000000000000000000.0");
        assert_eq!(rapidjson_dtoa(1e21), "1e21");
        assert_eq!(rapidjson_dtoa(1.5e21), "1.5e21");
        assert_eq!(rapidjson_dtoa(0.001), "0.001");
        assert_eq!(rapidjson_dtoa(0.000001), "0.000001");
        assert_eq!(rapidjson_dtoa(1e-7), "1e-7");
        assert_eq!(rapidjson_dtoa(1.25e-7), "1.25e-7");
        assert_eq!(rapidjson_dtoa(0.1), "0.1");
        // Not the shortest form: Grisu2 as rapidjson 1.1.0 prints it.
        assert_eq!(rapidjson_dtoa(0.1 + 0.2), "0.30000000000000007");
        assert_eq!(
            rapidjson_dtoa(1.7976931348623157e308),
            "1.7976931348623157e308"
        );
        assert_eq!(rapidjson_dtoa(5e-324), "5e-324");
        // Cases where Grisu2 does not return the shortest/closest digits.
        assert_eq!(
            rapidjson_dtoa(f64::from_bits(0xb771_1c1c_574e_0ef6)),
            "-1.2275684815052436e-41"
        );
        assert_eq!(
            rapidjson_dtoa(f64::from_bits(0x4b4d_cc2d_4bbf_93a5)),
            "5.7080796586953689e54"
        );
    }
}
