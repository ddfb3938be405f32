//! Granite's mixture-of-experts FFN (transformers `GraniteMoeHybridMoE`): router logits
//! `h · W_routerᵀ` in f32, the `top_k` largest per token, weights = softmax over those `k` logits;
//! each chosen expert is a SwiGLU MLP (`input_linear[e]`: gate rows then up rows; `output_linear[e]`),
//! and the token's output is the weighted sum. Tokens are grouped by expert so each expert runs one
//! product over all its tokens (a GEMM in prefill, a mat-vec in decode).

use candle_core::{DType, Tensor};

use super::config::MoeConfig;
use crate::error::Result;
use crate::models::reader::TensorReader;
use crate::nn::mlp::{SwiGluMlp, UpProjection};
use crate::nn::Linear;

pub(crate) struct MoeFeedForward {
    cfg: MoeConfig,
    router: Linear,
    experts: Vec<SwiGluMlp>,
}

/// Tensor names of a MoE layer as transformers 4.x (released checkpoints) and 5.x write them.
const NAMES: [(&str, &str, &str); 2] = [
    ("router.layer.weight", "input_linear.weight", "output_linear.weight"),
    ("router.weight", "experts.gate_up_proj", "experts.down_proj"),
];

impl MoeFeedForward {
    /// Loads `{prefix}` (`model.layers.{i}.block_sparse_moe.`) in either naming.
    pub fn load(rd: &mut TensorReader, cfg: MoeConfig, prefix: &str, hidden: usize) -> Result<Self> {
        let (router, input, output) =
            NAMES.iter().copied().find(|(r, _, _)| rd.contains(&format!("{prefix}{r}"))).unwrap_or(NAMES[0]);
        let (x, i) = (cfg.experts, cfg.intermediate_size);
        let router = Linear::new(rd.matrix(&format!("{prefix}{router}"), x, hidden)?, None);
        let ups = rd.matrix_stack(&format!("{prefix}{input}"), x, 2 * i, hidden)?;
        let downs = rd.matrix_stack(&format!("{prefix}{output}"), x, hidden, i)?;
        let experts = ups
            .into_iter()
            .zip(downs)
            .map(|(up, down)| SwiGluMlp {
                up: UpProjection::Fused(Linear::new(up, None)),
                down: Linear::new(down, None),
                intermediate: i,
            })
            .collect();
        Ok(Self { cfg, router, experts })
    }

    /// `h`: `[m, D]` normed hidden states → `[m, D]`.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let m = h.dim(0)?;
        let logits = self.router.forward(h)?.to_vec2::<f32>()?;
        // Per expert: the tokens routed to it and their weights.
        let mut routed: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); self.cfg.experts];
        for (t, row) in logits.iter().enumerate() {
            for (e, w) in top_k_softmax(row, self.cfg.top_k) {
                routed[e].0.push(t as u32);
                routed[e].1.push(w);
            }
        }
        let mut out = h.zeros_like()?;
        for (expert, (tokens, weights)) in self.experts.iter().zip(routed) {
            if tokens.is_empty() {
                continue;
            }
            let n = tokens.len();
            let index = Tensor::from_vec(tokens, n, h.device())?;
            let rows = if n == m { h.clone() } else { h.index_select(&index, 0)? };
            let y = expert.forward(&rows)?;
            let w = Tensor::from_vec(weights, (n, 1), h.device())?.to_dtype(DType::F32)?;
            out = out.index_add(&index, &y.broadcast_mul(&w)?, 0)?;
        }
        Ok(out)
    }
}

/// The `k` largest logits of `row` (ties: the lower expert first, as `torch.topk` on CPU returns
/// them) with their softmax weights over those `k`.
fn top_k_softmax(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(k);
    let max = order.first().map_or(0.0, |&e| row[e]);
    let exps: Vec<f32> = order.iter().map(|&e| (row[e] - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    order.into_iter().zip(exps).map(|(e, x)| (e, x / sum)).collect()
}

#[cfg(test)]
mod tests {
    use super::top_k_softmax;

    #[test]
    fn top_k_picks_the_largest_and_normalises_over_them_only() {
        let got = top_k_softmax(&[0.5, 2.0, -1.0, 2.0], 2);
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((got[0].1 - 0.5).abs() < 1e-6 && (got[1].1 - 0.5).abs() < 1e-6);
        let got = top_k_softmax(&[0.0, 1.0, 3.0], 1);
        assert_eq!(got, vec![(2, 1.0)]);
    }
}
