//! SwiGLU feed-forward: `down(silu(gate(h)) ⊙ up(h))`, the gate and the product fused in one op.
//!
//! Reuse: Llama / Qwen2 store `gate_proj` and `up_proj` separately ([`UpProjection::Separate`]);
//! Granite's `shared_mlp.input_linear` is one `[2·I, D]` matrix whose first `I` rows are the gate and
//! the last `I` the up projection ([`UpProjection::Fused`]). Load with
//! `crate::models::llama::weights::load_mlp` (separate) or `load_fused_mlp` (fused), then call
//! [`SwiGluMlp::forward`] (or [`SwiGluMlp::forward_add`] to add into the residual).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::cpu::{no_cuda, zeros};
use super::Linear;
use crate::error::Result;
use crate::ops::math::silu;

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
    pub(crate) fn forward_add(&self, h: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.down.forward_add(&self.activation(h)?, residual)
    }

    fn activation(&self, h: &Tensor) -> Result<Tensor> {
        let i = self.intermediate;
        let (gate, up) = match &self.up {
            UpProjection::Separate { gate, up } => (gate.forward(h)?, up.forward(h)?),
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
        let mut out = zeros(m * i, NAME)?;
        for (r, o) in out.chunks_exact_mut(i.max(1)).enumerate().take(m) {
            let (gr, ur) = (&gv[r * gs..][..i], &uv[r * us..][..i]);
            for ((o, &a), &b) in o.iter_mut().zip(gr).zip(ur) {
                *o = silu(a) * b;
            }
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
