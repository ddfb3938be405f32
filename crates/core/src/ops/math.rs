//! Branch-free scalar f32 `exp`, `softplus` and `silu` that LLVM vectorises inside loops
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
/// `(e^r, n)` with `xc = n·ln2 + r`, `r ∈ [-ln2/2, ln2/2]`, so `e^xc = e^r · 2^n`. Multiply-adds are
/// fused where `F` (see [`madd`]).
#[inline(always)]
fn exp_reduced<const F: bool>(xc: f32) -> (f32, i32) {
    let shifted = madd::<F>(xc, LOG2E, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    // The rounded integer sits in the low mantissa bits of `shifted`: reading it from the bits avoids a
    // float→int `as` cast, whose NaN/saturation semantics LLVM cannot vectorise.
    let ni = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let r = madd::<F>(-n, LN2_LO, madd::<F>(-n, LN2_HI, xc));
    // e^r on [-ln2/2, ln2/2] (Cephes expf coefficients).
    let mut p = 1.987_569_1e-4_f32;
    p = madd::<F>(p, r, 1.398_2e-3);
    p = madd::<F>(p, r, 8.333_452e-3);
    p = madd::<F>(p, r, 4.166_579_6e-2);
    p = madd::<F>(p, r, 1.666_666_5e-1);
    p = madd::<F>(p, r, 5e-1);
    (madd::<F>(p * r, r, r) + 1.0, ni)
}

/// e^x, relative error ≤ ~2e-7 on the normal range; 0 below −87.34, +inf above 88.72, NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_with::<false>(x)
}

/// [`exp`] with multiply-adds fused where `F`.
#[inline(always)]
fn exp_with<const F: bool>(x: f32) -> f32 {
    let (er, ni) = exp_reduced::<F>(x.clamp(EXP_MIN, EXP_MAX));
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

/// Below this, [`exp_nonpositive`] is 0. e^-87 ≈ 1.6e-38 is just above the smallest normal f32, so
/// e^r · 2^n is a normal float for every x from here up; between here and [`EXP_MIN`] the product
/// would be subnormal (or round to one), and Intel cores make a subnormal result in microcode
/// (~100× slower): a Mamba-2 chunk's decays past e^-87 made most of its scan's element-wise time.
const EXP_NONPOSITIVE_MIN: f32 = -87.0;

/// e^x for x ≤ 0 (Mamba-2's dA): same polynomial as [`exp`] without the overflow/NaN handling
/// and with a single exponent factor — a few ops less in a hot loop. 0 below −87.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    exp_nonpositive_with::<false>(x)
}

/// [`exp_nonpositive`] with multiply-adds fused where `F`.
#[inline(always)]
fn exp_nonpositive_with<const F: bool>(x: f32) -> f32 {
    let (er, ni) = exp_reduced::<F>(x.max(EXP_NONPOSITIVE_MIN));
    // n ∈ [-126, 0] and e^r · 2^n ≥ e^-87: a normal float.
    let y = er * f32::from_bits(((ni + 127) as u32) << 23);
    if x < EXP_NONPOSITIVE_MIN {
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

/// Δ softplus as every Mamba reference computes it: x when x > 20, else ln(1 + e^x); NaN stays NaN.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    softplus_with::<false>(x)
}

/// [`softplus`] with multiply-adds fused where `F`. About 30 vector ops, one of them a divide: the
/// general `exp` and `ln` it used before took twice that, on a dependency chain that the Mamba-1
/// scan's per-token terms waited on (a third of the scan's time).
#[inline(always)]
pub fn softplus_with<const F: bool>(x: f32) -> f32 {
    // ln(1+e^x) = max(x,0) + ln(1+e^-|x|) avoids overflow and keeps small results accurate.
    let sp = x.max(0.0) + ln_1p_unit::<F>(exp_nonpositive_with::<F>(-x.abs()));
    // Written so a NaN x fails the test and comes back (max and the clamp inside would drop it).
    if x <= 20.0 {
        sp
    } else {
        x
    }
}

/// ln(1 + t) for t ∈ [0, 1] as 2·atanh(s), s = t / (2 + t) ∈ [0, 1/3]: 2s·(1 + z/3 + z²/5 + …),
/// z = s² ≤ 1/9, summed to z⁶/13 (the rest is under 2e-8 relative). No cancellation for tiny t, no
/// exponent split: cheaper than a general log for the unit interval softplus needs.
#[inline(always)]
fn ln_1p_unit<const F: bool>(t: f32) -> f32 {
    let s2 = 2.0 * t / (2.0 + t);
    let z = 0.25 * s2 * s2;
    let mut q = 1.0 / 13.0;
    q = madd::<F>(q, z, 1.0 / 11.0);
    q = madd::<F>(q, z, 1.0 / 9.0);
    q = madd::<F>(q, z, 1.0 / 7.0);
    q = madd::<F>(q, z, 1.0 / 5.0);
    q = madd::<F>(q, z, 1.0 / 3.0);
    madd::<F>(s2 * z, q, s2)
}

/// x · sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    silu_with::<false>(x)
}

/// [`silu`] with multiply-adds fused where `F`.
#[inline(always)]
pub fn silu_with<const F: bool>(x: f32) -> f32 {
    x / (1.0 + exp_with::<F>(-x))
}

/// `out[i] = silu(gate[i]) · up[i]` (SwiGLU's product), compiled per SIMD level so it vectorises;
/// the same operations (no fused multiply-adds) in every copy, so every level gives the same bits.
pub(crate) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == out.len() && up.len() == out.len(), "silu_mul: lengths differ");
    silu_mul_leveled(gate, up, out);
}

multiversion!(fn silu_mul_leveled(gate: &[f32], up: &[f32], out: &mut [f32]) = silu_mul_body);

#[inline(always)]
fn silu_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(a) * b;
    }
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
    fn softplus_silu_match_f64() {
        let mut worst = 0.0f64;
        for i in -40_000..40_000 {
            let x = i as f32 * 1e-3;
            let want = if x > 20.0 { x as f64 } else { (x as f64).exp().ln_1p() };
            worst = worst.max(rel(softplus(x), want)).max(rel(softplus_with::<true>(x), want));
            let s = x as f64 / (1.0 + (-(x as f64)).exp());
            for got in [silu(x), silu_with::<true>(x)] {
                let err = (got as f64 - s).abs() / s.abs().max(1e-30);
                assert!(err <= 1e-6 || (got as f64 - s).abs() < 1e-37, "silu({x}) = {got} vs {s}");
            }
        }
        assert!(worst <= 3e-7, "softplus error {worst}");
        assert_eq!(softplus(25.0), 25.0);
        assert!(softplus(f32::NAN).is_nan() && softplus_with::<true>(f32::NAN).is_nan(), "a NaN Δ must not vanish");
        assert_eq!(softplus(f32::INFINITY), f32::INFINITY);
        assert_eq!(softplus(f32::NEG_INFINITY), 0.0);
        assert!(softplus(-100.0) >= 0.0 && softplus(-100.0) < 1e-37);
    }
}
