//! `y = x · Wᵀ (+ b)` with a [`WeightMatrix`]: a custom op whose CPU body is `ops::matmul::linear_w`
//! (threaded mat-vec for one row, packed GEMM for many). `x` may be a strided 2-D view (e.g. the
//! first columns of a wider activation) without a copy.

use std::ops::Range;
use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, InplaceOp2, Layout, Shape, Tensor};

use super::cpu::{f32s_mut, for_overwrite, no_cuda};
use super::WeightMatrix;
use crate::error::{internal, Result};
use crate::ops::matmul::{linear_many, linear_with, ActivationRounding, MatRef};

pub struct Linear {
    weight: Arc<WeightMatrix>,
    bias: Option<Tensor>,
    rounding: ActivationRounding,
}

impl Linear {
    pub fn new(weight: Arc<WeightMatrix>, bias: Option<Tensor>) -> Self {
        Self { weight, bias, rounding: ActivationRounding::Quantized }
    }

    /// A head whose outputs are logits: with quantized weights its one-row product keeps the
    /// activation in f32 ([`ActivationRounding::Exact`]), so the token a greedy step picks is the
    /// one the dequantized model's float product gives.
    pub fn head(weight: Arc<WeightMatrix>, bias: Option<Tensor>) -> Self {
        Self { weight, bias, rounding: ActivationRounding::Exact }
    }

    pub fn weight(&self) -> &Arc<WeightMatrix> {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// How its one-row products round the activations (fused ops run the same product).
    pub(crate) fn rounding(&self) -> ActivationRounding {
        self.rounding
    }

    /// `residual + x · Wᵀ (+ b)`, the product accumulating straight into `residual`'s own storage
    /// (one op instead of a product and an add, and no copy of the residual: 1.5 MB per layer of a
    /// 512-token Mamba-2-130M prefill). `residual` must be a running sum no other tensor shares
    /// storage with (a layer loop's hidden state, made by the embedding): candle's in-place ops
    /// write its storage.
    pub fn add_into(&self, x: &Tensor, residual: Tensor) -> Result<Tensor> {
        residual.inplace_op2(x, &LinearAddInPlaceOp { w: &self.weight, rounding: self.rounding })?;
        self.with_bias(residual)
    }

    /// `y + b` when the linear has a bias (the last step of every form of the product).
    pub(crate) fn with_bias(&self, y: Tensor) -> Result<Tensor> {
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// `x`: `[m, in]` f32 → `[m, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_rows(x, 0..self.weight.rows)
    }

    /// The outputs of weight rows `rows` only: `[m, in]` → `[m, rows.len()]`, each value the bits
    /// [`Self::forward`] gives it (for a layer whose other outputs nothing reads).
    pub fn forward_rows(&self, x: &Tensor, rows: Range<usize>) -> Result<Tensor> {
        if rows.start > rows.end || rows.end > self.weight.rows {
            return Err(internal(format!("linear: rows {rows:?} of a {}-row weight", self.weight.rows)));
        }
        let bias = match &self.bias {
            Some(b) if rows.len() < self.weight.rows => Some(b.narrow(0, rows.start, rows.len())?),
            other => other.clone(),
        };
        let y = x.apply_op1_no_bwd(&LinearOp { w: &self.weight, rows, rounding: self.rounding })?;
        Ok(match bias {
            Some(b) => y.broadcast_add(&b)?,
            None => y,
        })
    }
}

/// The products of the same activation rows with several weights of their width (q, k and v;
/// gate and up), in one op (`ops::matmul::linear_many`): one parallel region for a decode step's
/// mat-vecs, one packing of the prompt's rows for its GEMMs. `[m, in]` → one `[m, out]` tensor per
/// linear, each what its own [`Linear::forward`] gives. `None` when the widths or roundings differ:
/// call each.
pub fn forward_many(linears: &[&Linear], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let Some(first) = linears.first() else { return Ok(None) };
    let fits = matches!(x.dims(), [_, k] if *k == first.weight.cols);
    if !fits || linears.iter().any(|l| l.weight.cols != first.weight.cols || l.rounding != first.rounding) {
        return Ok(None);
    }
    let m = x.dims()[0];
    let op = LinearManyOp { ws: linears.iter().map(|l| &*l.weight).collect(), rounding: first.rounding };
    // One buffer, product after product: each `[m, out]` part is a contiguous view of it.
    let y = x.apply_op1_no_bwd(&op)?;
    let mut start = 0;
    let mut outs = Vec::with_capacity(linears.len());
    for l in linears {
        let part = y.narrow(0, start, m * l.weight.rows)?.reshape((m, l.weight.rows))?;
        start += m * l.weight.rows;
        outs.push(match &l.bias {
            Some(b) => part.broadcast_add(b)?,
            None => part,
        });
    }
    Ok(Some(outs))
}

struct LinearManyOp<'a> {
    ws: Vec<&'a WeightMatrix>,
    rounding: ActivationRounding,
}

const MANY_NAME: &str = "phoenix-linear-many";

impl CustomOp1 for LinearManyOp<'_> {
    fn name(&self) -> &'static str {
        MANY_NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some(first) = self.ws.first() else { bail!("{MANY_NAME}: no weights") };
        let x = lhs(MANY_NAME, first, storage, layout)?;
        if self.ws.iter().any(|w| w.cols != x.cols) {
            bail!("{MANY_NAME}: the weights' widths differ");
        }
        let m = x.rows;
        let total = self.ws.iter().try_fold(0usize, |t, w| t.checked_add(w.rows.checked_mul(m)?));
        let Some(total) = total else { bail!("{MANY_NAME}: output size overflows") };
        // Every product path stores each output when not accumulating (`ops::product_tests`).
        let mut out = for_overwrite(total, MANY_NAME)?;
        let mut parts = Vec::with_capacity(self.ws.len());
        let mut rest = &mut out[..];
        for w in &self.ws {
            let (mine, after) = rest.split_at_mut(m * w.rows);
            parts.push((w.weight_ref(), mine));
            rest = after;
        }
        linear_many(x, parts, self.rounding);
        Ok((CpuStorage::F32(out), Shape::from(total)))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(MANY_NAME)
    }
}

struct LinearOp<'a> {
    w: &'a WeightMatrix,
    /// The weight rows (outputs) computed.
    rows: Range<usize>,
    rounding: ActivationRounding,
}

const NAME: &str = "phoenix-linear";
const ADD_NAME: &str = "phoenix-linear-add";

/// The lhs view of a 2-D (possibly strided) f32 input.
fn lhs<'a>(op: &str, w: &WeightMatrix, storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<MatRef<'a>> {
    let (m, k) = layout.shape().dims2()?;
    if k != w.cols {
        bail!("{op}: input has {k} columns, the weight {} ({}x{})", w.cols, w.rows, w.cols);
    }
    let CpuStorage::F32(values) = storage else { bail!("{op}: input must be f32") };
    let (row_stride, col_stride) = match layout.stride() {
        [r, c] => (*r, *c),
        _ => bail!("{op}: input must be 2-D"),
    };
    Ok(MatRef { data: &values[layout.start_offset()..], rows: m, cols: k, row_stride, col_stride })
}

struct LinearAddInPlaceOp<'a> {
    w: &'a WeightMatrix,
    rounding: ActivationRounding,
}

impl InplaceOp2 for LinearAddInPlaceOp<'_> {
    fn name(&self) -> &'static str {
        ADD_NAME
    }

    /// `s1` (the residual, updated) `+= s2 · Wᵀ`.
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let x = lhs(ADD_NAME, self.w, s2, l2)?;
        let n = self.w.rows;
        if l1.shape().dims2()? != (x.rows, n) {
            bail!("{ADD_NAME}: residual {:?} is not [{}, {n}]", l1.dims(), x.rows);
        }
        let out = f32s_mut(s1, l1, ADD_NAME, "residual")?;
        linear_with(x, self.w.weight_ref(), None, out, true, self.rounding);
        Ok(())
    }
}

impl CustomOp1 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = lhs(NAME, self.w, storage, layout)?;
        let (m, n) = (x.rows, self.rows.len());
        let Some(len) = m.checked_mul(n) else { bail!("{NAME}: output size overflows") };
        // Every product path stores each output when not accumulating (`ops::product_tests`).
        let mut out = for_overwrite(len, NAME)?;
        let w = self.w.weight_ref().slice(self.rows.start * self.w.cols, n * self.w.cols);
        linear_with(x, w, None, &mut out, false, self.rounding);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        no_cuda(NAME)
    }
}
