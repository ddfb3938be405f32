//! Branch-free scalar f32 `exp`, `ln`, `softplus` and `silu` that LLVM vectorises inside loops
//! (a libm call per element would block vectorisation). Cephes-style range reduction + minimax
//! polynomials; measured max relative error ≈ 1.2e-7 for `exp` (see tests).

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so `n * LN2_HI` is exact for |n| < 2^9 (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_359_4; // = 0.693359375 exactly in f32
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting 1.5·2^23 rounds to the nearest integer (ties to even) without a libm call.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below this, e^x is under the smallest normal f32; we return 0.
const EXP_MIN: f32 = -87.336_55;
/// Above this, e^x overflows f32.
const EXP_MAX: f32 = 88.722_83;

/// Shared core of [`exp`] and [`exp_nonpositive`]: for `xc` in the clamped range, returns
/// `(e^r, n)` with `xc = n·ln2 + r`, `r ∈ [-ln2/2, ln2/2]`, so `e^xc = e^r · 2^n`.
#[inline(always)]
fn exp_reduced(xc: f32) -> (f32, i32) {
    let shifted = xc * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    // The rounded integer sits in the low mantissa bits of `shifted`: reading it from the bits avoids a
    // float→int `as` cast, whose NaN/saturation semantics LLVM cannot vectorise.
    let ni = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // e^r on [-ln2/2, ln2/2] (Cephes expf coefficients).
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    (p * r * r + r + 1.0, ni)
}

/// e^x, relative error ≤ ~2e-7 on the normal range; 0 below −87.34, +inf above 88.72, NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (er, ni) = exp_reduced(x.clamp(EXP_MIN, EXP_MAX));
    // 2^n: n ∈ [-126, 128]; build as two factors so n = 128 does not overflow the exponent field.
    let half = ni >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = er * s1 * s2;
    let y = if x < EXP_MIN { 0.0 } else { y };
    let y = if x > EXP_MAX { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// e^x for x ≤ 0 (the scan's Δ·A): same polynomial as [`exp`] without the overflow/NaN handling
/// and with a single exponent factor — a few ops less in the hottest loop.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let (er, ni) = exp_reduced(x.max(EXP_MIN));
    // n ∈ [-126, 0]: 2^n is a normal float.
    let y = er * f32::from_bits(((ni + 127) as u32) << 23);
    if x < EXP_MIN {
        0.0
    } else {
        y
    }
}

/// `a·b + c`, fused (one rounding) in kernel copies built with FMA (`F`), two roundings elsewhere:
/// WASM and baseline x86 have no FMA instruction, and `mul_add` there would be a slow libm call.
#[inline(always)]
pub fn madd<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// 2^t for t ≤ 0 with multiply-adds fused where `F` (the scan's dA = exp(Δ·A) = 2^(Δ·A·log2 e), its
/// hottest op; the caller folds log2 e into A once per block, so there is no reduction by ln 2):
/// t = k + f with k = round(t), 2^f on [-1/2, 1/2] by Cephes' exp2f polynomial, then the exponent.
/// 11 vector ops, 8 of them multiplies. No compare-and-blend for the underflow: t is clamped at
/// −127, whose rounded exponent's biased field (0) makes the scale factor +0.0, so 2^t is 0 from
/// t ≈ −126.5 down (below the smallest normal f32 anyway).
#[inline(always)]
pub fn exp2_nonpositive<const F: bool>(t: f32) -> f32 {
    let tc = t.max(-127.0);
    let shifted = tc + ROUND_MAGIC;
    let k = shifted - ROUND_MAGIC;
    let f = tc - k; // exact, in [-1/2, 1/2]
    // Biased exponent k + 127 ∈ [0, 127], read from the low mantissa bits of `shifted` in one subtract.
    let biased = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits().wrapping_sub(127));
    let mut p = 1.535_336_2e-4_f32;
    p = madd::<F>(p, f, 1.339_887_4e-3);
    p = madd::<F>(p, f, 9.618_437e-3);
    p = madd::<F>(p, f, 5.550_332_5e-2);
    p = madd::<F>(p, f, 2.402_264_8e-1);
    p = madd::<F>(p, f, 6.931_472e-1);
    madd::<F>(p, f, 1.0) * f32::from_bits(biased << 23)
}

/// Natural log for x > 0 (finite); relative error ~1e-7. Callers guarantee the domain.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    // Mantissa in [0.5, 1).
    let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= small as i32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let ef = e as f32;
    let z = m * m;
    let mut p = 7.037_683_6e-2_f32;
    p = p * m - 1.151_461e-1;
    p = p * m + 1.167_699_9e-1;
    p = p * m - 1.242_014_1e-1;
    p = p * m + 1.424_932_3e-1;
    p = p * m - 1.666_805_8e-1;
    p = p * m + 2.000_071_4e-1;
    p = p * m - 2.499_999_4e-1;
    p = p * m + 3.333_333e-1;
    let mut y = p * m * z;
    y += ef * LN2_LO;
    y -= 0.5 * z;
    m + y + ef * LN2_HI
}

/// ln(1 + y) for y ≥ 0, accurate for tiny y (Goldberg's trick: ln(u)·y/(u−1) with u = 1 + y).
#[inline(always)]
pub fn ln_1p(y: f32) -> f32 {
    let u = 1.0 + y;
    let d = u - 1.0;
    if d == 0.0 {
        y
    } else {
        ln(u) * (y / d)
    }
}

/// Δ softplus as every Mamba reference computes it: x when x > 20, else ln(1 + e^x).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    // ln(1+e^x) = max(x,0) + ln(1+e^-|x|) avoids overflow and keeps small results accurate.
    let sp = x.max(0.0) + ln_1p(exp(-x.abs()));
    if x > 20.0 {
        x
    } else {
        sp
    }
}

/// x · sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b).abs()
    }

    #[test]
    fn exp_is_accurate_over_the_normal_range() {
        let mut worst = 0.0f64;
        let n = 2_000_000;
        for i in 0..=n {
            let x = -87.0 + 175.0 * (i as f32 / n as f32);
            let x = x.min(88.7);
            worst = worst.max(rel(exp(x), (x as f64).exp()));
        }
        assert!(worst <= 2e-7, "max relative error {worst}");
        let mut worst_np = 0.0f64;
        for i in 0..=n {
            let x = -87.0 * (i as f32 / n as f32);
            worst_np = worst_np.max(rel(exp_nonpositive(x), (x as f64).exp()));
        }
        assert!(worst_np <= 2e-7, "exp_nonpositive max relative error {worst_np}");
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    /// Both copies of the scan's 2^t (fused multiply-adds or not): accurate down to the smallest
    /// normal result, exactly 0 below the flush point, never negative, monotone.
    #[test]
    fn exp2_nonpositive_is_accurate_and_flushes_to_zero() {
        fn check<const F: bool>() {
            let n = 2_000_000;
            let (mut worst, mut prev) = (0.0f64, 0.0f32);
            for i in 0..=n {
                let t = -126.0 + 126.0 * (i as f32 / n as f32);
                let y = exp2_nonpositive::<F>(t);
                worst = worst.max(rel(y, (t as f64).exp2()));
                assert!(y >= prev, "not monotone at {t} (fma {F})");
                prev = y;
            }
            assert!(worst <= 2e-7, "max relative error {worst} (fma {F})");
            assert_eq!(exp2_nonpositive::<F>(0.0), 1.0);
            assert_eq!(exp2_nonpositive::<F>(-1.0), 0.5);
            for t in [-126.6f32, -127.0, -200.0, -1e6, f32::MIN, f32::NEG_INFINITY] {
                assert_eq!(exp2_nonpositive::<F>(t).to_bits(), 0, "2^{t} (fma {F})");
            }
            // Between the flush point and the smallest normal: tiny, finite, non-negative.
            for i in 0..=1000 {
                let t = -126.6 + 0.6 * (i as f32 / 1000.0);
                let y = exp2_nonpositive::<F>(t);
                assert!((0.0..=f32::MIN_POSITIVE).contains(&y), "2^{t} = {y} (fma {F})");
            }
        }
        check::<true>();
        check::<false>();
    }

    #[test]
    fn ln_softplus_silu_match_f64() {
        let mut worst_ln = 0.0f64;
        for i in 1..200_000 {
            let x = (i as f32) * 1e-3;
            worst_ln = worst_ln.max(rel(ln(x), (x as f64).ln()).min(((ln(x) as f64) - (x as f64).ln()).abs()));
        }
        assert!(worst_ln <= 3e-7, "ln error {worst_ln}");
        let mut worst = 0.0f64;
        for i in -40_000..40_000 {
            let x = i as f32 * 1e-3;
            let want = if x > 20.0 { x as f64 } else { (x as f64).exp().ln_1p() };
            worst = worst.max(rel(softplus(x), want));
            let s = x as f64 / (1.0 + (-(x as f64)).exp());
            let err = (silu(x) as f64 - s).abs() / s.abs().max(1e-30);
            assert!(err <= 1e-6 || (silu(x) as f64 - s).abs() < 1e-37, "silu({x}) = {} vs {s}", silu(x));
        }
        assert!(worst <= 1e-6, "softplus error {worst}");
        assert_eq!(softplus(25.0), 25.0);
        assert!(softplus(-100.0) >= 0.0 && softplus(-100.0) < 1e-37);
    }
}
