//! SwiGLU feed-forward: `down(silu(gate(h)) ⊙ up(h))`, the gate and the product fused in one op.
//!
//! Reuse: Llama / Qwen2 store `gate_proj` and `up_proj` separately ([`UpProjection::Separate`]);
//! Granite's `shared_mlp.input_linear` is one `[2·I, D]` matrix whose first `I` rows are the gate and
//! the last `I` the up projection ([`UpProjection::Fused`]). Load with
//! `crate::models::llama::weights::load_mlp` (separate) or `load_fused_mlp` (fused), then call
//! [`SwiGluMlp::forward`] (or [`SwiGluMlp::forward_add`] to add into the residual).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::cpu::{for_overwrite, no_cuda};
use super::linear::forward_many;
use super::Linear;
use crate::error::Result;
use crate::ops::math::silu_mul;

/// Values from which the product runs on every thread (a decode step's few thousand stay on one).
const PARALLEL_MIN: usize = 1 << 15;

pub(crate) enum UpProjection {
    Separate {
        gate: Linear,
        up: Linear,
    },
    /// `[2·I, D]`: gate rows first, then up (Granite; built by `load_fused_mlp`).
    #[allow(dead_code)]
    Fused(Linear),
}

pub(crate) struct SwiGluMlp {
    pub up: UpProjection,
    pub down: Linear,
    /// `I`.
    pub intermediate: usize,
}

impl SwiGluMlp {
    /// `down(silu(gate(h)) ⊙ up(h))`, `h`: `[m, D]`.
    // Reused by hybrid families (Granite's shared MLP); Llama adds into the residual.
    #[allow(dead_code)]
    pub(crate) fn forward(&self, h: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.activation(h)?)
    }

    /// `residual + down(silu(gate(h)) ⊙ up(h))` in one op.
    pub(crate) fn forward_add(&self, h: &Tensor, residual: Tensor) -> Result<Tensor> {
        self.down.add_into(&self.activation(h)?, residual)
    }

    fn activation(&self, h: &Tensor) -> Result<Tensor> {
        let i = self.intermediate;
        let (gate, up) = match &self.up {
            UpProjection::Separate { gate, up } => match forward_many(&[gate, up], h)? {
                Some(both) => {
                    let [g, u]: [Tensor; 2] = both.try_into().expect("two projections");
                    (g, u)
                }
                None => (gate.forward(h)?, up.forward(h)?),
            },
            UpProjection::Fused(both) => {
                let y = both.forward(h)?;
                (y.narrow(1, 0, i)?, y.narrow(1, i, i)?)
            }
        };
        Ok(gate.apply_op2_no_bwd(&up, &SiluMul)?)
    }
}

/// `silu(gate) ⊙ up` over two `[m, I]` views (row-strided views of a wider matrix allowed).
struct SiluMul;

const NAME: &str = "phoenix-silu-mul";

/// Values, row stride of a 2-D f32 view whose rows are contiguous.
fn rows<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<(&'a [f32], usize)> {
    let CpuStorage::F32(v) = s else { bail!("{NAME}: {what} must be f32") };
    match l.stride() {
        [r, 1] => Ok((&v[l.start_offset()..], *r)),
        _ => bail!("{NAME}: {what} rows must be contiguous"),
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        gl: &Layout,
        u: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, i) = gl.shape().dims2()?;
        if ul.shape().dims2()? != (m, i) {
            bail!("{NAME}: gate {:?} and up {:?} differ", gl.dims(), ul.dims());
        }
        let ((gv, gs), (uv, us)) = (rows(g, gl, "gate")?, rows(u, ul, "up")?);
        // Every value is written below (rows of a non-empty output; an empty one has none).
        let mut out = for_overwrite(m * i, NAME)?;
        let row = |(r, o): (usize, &mut [f32])| silu_mul(&gv[r * gs..][..i], &uv[r * us..][..i], o);
        if i > 0 && m * i >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
            // A prompt's [512, 1536] product: ~0.8 M exponentials, 5-7 % of a SmolLM prefill on one thread.
            use rayon::prelude::*;
            out.par_chunks_exact_mut(i).enumerate().for_each(row);
        } else if i > 0 {
            out.chunks_exact_mut(i).enumerate().for_each(row);
        }
        Ok((CpuStorage::F32(out), Shape::from((m, i))))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::{Device, Tensor};

    use super::*;
    use crate::loader::{Buf, MatrixData};
    use crate::nn::WeightMatrix;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Arc<WeightMatrix> {
        let v: Vec<f32> = (0..rows * cols).map(|i| (((i * 31 + seed * 17) % 23) as f32 - 11.0) * 0.05).collect();
        Arc::new(WeightMatrix::new(MatrixData::F32(Buf::Owned(v)), rows, cols))
    }

    /// Granite's fused `[2·I, D]` input (gate rows then up rows) is the same MLP as separate
    /// gate / up matrices holding those rows.
    #[test]
    fn fused_input_equals_separate_gate_and_up() {
        let (d, i, m) = (8, 6, 3);
        let both = matrix(2 * i, d, 1);
        let rows = |from: usize| {
            let mut v = vec![0f32; i * d];
            for r in 0..i {
                both.row_into(from + r, &mut v[r * d..(r + 1) * d]);
            }
            Arc::new(WeightMatrix::new(MatrixData::F32(Buf::Owned(v)), i, d))
        };
        let separate = SwiGluMlp {
            up: UpProjection::Separate { gate: Linear::new(rows(0), None), up: Linear::new(rows(i), None) },
            down: Linear::new(matrix(d, i, 2), None),
            intermediate: i,
        };
        let fused = SwiGluMlp {
            up: UpProjection::Fused(Linear::new(both.clone(), None)),
            down: Linear::new(matrix(d, i, 2), None),
            intermediate: i,
        };
        let x: Vec<f32> = (0..m * d).map(|k| (k as f32 * 0.37).sin()).collect();
        let x = Tensor::from_vec(x, (m, d), &Device::Cpu).unwrap();
        let a = separate.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = fused.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        // And the definition: down(silu(gate x) ⊙ up x) for one row.
        let (g, u, w) = (rows(0), rows(i), matrix(d, i, 2));
        let x0: Vec<f32> = x.get(0).unwrap().to_vec1().unwrap();
        let row = |mat: &WeightMatrix, r: usize| {
            let mut v = vec![0f32; mat.cols];
            mat.row_into(r, &mut v);
            v
        };
        let dotf = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
        let h: Vec<f64> = (0..i)
            .map(|k| {
                let gk = dotf(&row(&g, k), &x0);
                gk / (1.0 + (-gk).exp()) * dotf(&row(&u, k), &x0)
            })
            .collect();
        for o in 0..d {
            let want: f64 = row(&w, o).iter().zip(&h).map(|(p, q)| *p as f64 * q).sum();
            assert!((a[o] as f64 - want).abs() < 1e-4, "output {o}: {} vs {want}", a[o]);
        }
    }
}
