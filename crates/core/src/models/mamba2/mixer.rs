//! One Mamba-2 mixer (reference §3.3 / §3.5): in_proj → (z, xBC, dt); causal conv + SiLU over xBC;
//! SSD scan (Δ = clamp(softplus(dt + dt_bias)), A = −exp(A_log), D skip); gated group RMSNorm with
//! z; out_proj. Prefill and decode are the same graph: the SSD op picks the chunked scan for many
//! tokens and the recurrence for one.
//!
//! Reuse by a hybrid stack (Granite-4.0-H): build one [`Mamba2Mixer`] per Mamba layer with
//! [`Mamba2Mixer::load`]`(reader, cfg, "model.layers.{i}.mamba.")`, where `cfg` comes from
//! [`super::config::mixer_from_fields`] over the `mamba_*` keys (with the hybrid's own
//! [`super::config::MixerFieldNames`] and `norm_eps = rms_norm_eps`) and has passed
//! [`Mamba2MixerConfig::validate`]. Keep a [`Mamba2LayerState`] per Mamba layer
//! ([`Mamba2LayerState::new`]), and call [`Mamba2Mixer::forward`]`(&normed_hidden, &mut layer_state)`
//! → `[l, D]` (no residual added; apply `residual_multiplier` and add yourself). Split prompts at
//! multiples of [`Mamba2Mixer::ssd_chunk`] to keep split prefills bit-identical.

use candle_core::Tensor;

use super::config::Mamba2MixerConfig;
use super::state::Mamba2LayerState;
use crate::error::{bad_weights, Result};
use crate::models::mamba::weights::{zeros, Reader};
use crate::nn::gated_norm::{GateOperand, GatedGroupRmsNorm};
use crate::nn::ssd::{DtOperand, SsdScan, SsdShape};
use crate::nn::{CausalConvSilu, Linear, RmsNorm};

/// Largest SSD tile. 32 beats 64 on the CPU scan (Mamba-2-130M's 512-token scan 3.5 vs 3.8 ms
/// on one core, `ssd_probe`): the intra-chunk products shrink quadratically with the tile while
/// the state passing grows only linearly, and a 32-token chunk's `X` and `C·Bᵀ` stay in L1.
/// A power of two, so it divides any prefill piece that is a multiple of 32.
pub(crate) const MAX_SSD_CHUNK: usize = 32;

pub(crate) struct Mamba2Mixer {
    cfg: Mamba2MixerConfig,
    in_proj: Linear,
    conv: CausalConvSilu,
    ssd: SsdScan,
    norm: GatedGroupRmsNorm,
    out_proj: Linear,
}

impl Mamba2Mixer {
    /// Loads the mixer's tensors under `prefix` (`backbone.layers.{i}.mixer.`,
    /// `model.layers.{i}.mamba.`), shapes checked against `cfg` (validated).
    pub fn load(rd: &mut Reader, cfg: &Mamba2MixerConfig, prefix: &str) -> Result<Self> {
        let (d, e, h, k) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.conv_kernel);
        let (c, w_in) = (cfg.conv_dim(), cfg.in_proj_dim());
        let name = |t: &str| format!("{prefix}{t}");
        let conv_name = name("conv1d.weight");
        // Accept the squeezed [C, K] form some converters write as well as PyTorch's [C, 1, K].
        let conv = if rd.store.shape(&conv_name) == Some(&[c, k][..]) {
            rd.small(&conv_name, &[c, k])?
        } else {
            rd.small(&conv_name, &[c, 1, k])?
        };
        let mut conv_t = zeros(c * k, &conv_name)?;
        for ch in 0..c {
            for j in 0..k {
                conv_t[j * c + ch] = conv[ch * k + j];
            }
        }
        let conv_bias =
            if cfg.use_conv_bias { rd.small(&name("conv1d.bias"), &[c])?.to_vec() } else { zeros(c, "conv1d.bias")? };
        // A = −exp(A_log) in f32 (reference §7.1); an A_log so large that A is −∞ would turn the
        // chunked scan's decay differences into NaN (∞ − ∞), so it is refused here.
        let a: Vec<f32> = rd.small(&name("A_log"), &[h])?.iter().map(|x| -x.exp()).collect();
        if let Some(at) = a.iter().position(|v| !v.is_finite()) {
            return Err(bad_weights(format!(
                "tensor `{}` value at element {at} is too large (exp(A_log) overflows f32)",
                name("A_log")
            )));
        }
        let dt_bias = rd.tensor(&name("dt_bias"), &[h])?;
        let d_skip = rd.tensor(&name("D"), &[h])?;
        let norm_w = rd.tensor(&name("norm.weight"), &[e])?;
        let in_w = rd.matrix(&name("in_proj.weight"), w_in, d)?;
        let in_b = if cfg.use_bias { Some(rd.tensor(&name("in_proj.bias"), &[w_in])?) } else { None };
        let out_w = rd.matrix(&name("out_proj.weight"), d, e)?;
        let out_b = if cfg.use_bias { Some(rd.tensor(&name("out_proj.bias"), &[d])?) } else { None };
        let device = rd.device;
        let shape = SsdShape {
            heads: h,
            head_dim: cfg.head_dim,
            state_size: cfg.state_size,
            groups: cfg.n_groups,
            chunk: ssd_chunk(cfg),
            dt_min: cfg.dt_min,
            dt_max: cfg.dt_max,
        };
        Ok(Self {
            cfg: cfg.clone(),
            in_proj: Linear::new(in_w, in_b),
            // xBC is read in place from the in_proj output, after z's E columns.
            conv: CausalConvSilu::new(
                Tensor::from_slice(&conv_t, (k, c), device)?,
                Tensor::from_slice(&conv_bias, c, device)?,
                c,
                k,
            )
            .reading_from_column(e),
            ssd: SsdScan::new(dt_bias, Tensor::from_slice(&a, h, device)?, d_skip, shape),
            norm: GatedGroupRmsNorm::new(norm_w, cfg.n_groups, cfg.norm_eps),
            out_proj: Linear::new(out_w, out_b),
        })
    }

    /// Tokens per SSD tile: prompts split at multiples of it give bit-identical results.
    #[allow(dead_code)] // the hybrid family's entry point
    pub fn ssd_chunk(&self) -> usize {
        ssd_chunk(&self.cfg)
    }

    /// `x`: `[l, D]` normed hidden states → `[l, D]` mixer output; `state` advances by `l` tokens.
    #[allow(dead_code)] // the hybrid family's entry point
    pub fn forward(&self, x: &Tensor, state: &mut Mamba2LayerState) -> Result<Tensor> {
        let y = self.gated(x, state)?;
        self.out_proj.forward(&y)
    }

    /// `residual + forward(x)` in one product: out_proj accumulates into `residual`'s own storage
    /// ([`Linear::add_into`]: a running sum no other tensor shares).
    #[cfg(test)]
    pub fn add_into(&self, x: &Tensor, residual: Tensor, state: &mut Mamba2LayerState) -> Result<Tensor> {
        let zxbcdt = self.in_proj.forward(x)?;
        self.scan_then_add(zxbcdt, residual, state)
    }

    /// [`Self::add_into`] of `norm(residual)`, the norm's rows made as in_proj packs them
    /// ([`RmsNorm::project`]) instead of a normalised matrix in memory: the same bits.
    pub fn add_into_normed(&self, norm: &RmsNorm, residual: Tensor, state: &mut Mamba2LayerState) -> Result<Tensor> {
        let zxbcdt = norm.project(&residual, &self.in_proj)?;
        self.scan_then_add(zxbcdt, residual, state)
    }

    /// Conv, scan, gated norm and out_proj from the in_proj output, added into `residual`.
    fn scan_then_add(&self, zxbcdt: Tensor, residual: Tensor, state: &mut Mamba2LayerState) -> Result<Tensor> {
        let y = self.ungated(&zxbcdt, state)?;
        // The gated norm's rows go straight into out_proj's operand packing.
        self.norm.project_add(&y, &GateOperand { rows: &zxbcdt, offset: 0 }, &self.out_proj, residual)
    }

    /// [`Self::add_into`] for a layer of whose outputs only the last `keep` rows are read (the
    /// model's last layer, when the head reads the last row or none): the state advances over every
    /// row as there, while the gate z (E of in_proj's outputs), the gated norm and out_proj run for
    /// those rows only — 63 % of a Mamba-2-130M layer's products. Returns `residual`'s last `keep`
    /// rows (a copy), updated: `add_into`'s values up to float rounding (one-row products run as
    /// mat-vecs). `keep` ≤ rows of `x`.
    pub fn add_into_last(
        &self,
        x: &Tensor,
        residual: &Tensor,
        state: &mut Mamba2LayerState,
        keep: usize,
    ) -> Result<Tensor> {
        let (l, e, c, h) = (x.dim(0)?, self.cfg.intermediate_size, self.cfg.conv_dim(), self.cfg.num_heads);
        // Columns of in_proj's outputs from xBC on: xBC [0, C), dt [C, C + H).
        let xbcdt = self.in_proj.forward_rows(x, e..e + c + h)?;
        let (xbc, conv) = self.conv.clone().reading_from_column(0).forward(&xbcdt, &state.conv)?;
        let y = self.scan(&xbc, conv, &DtOperand { rows: &xbcdt, offset: c }, state)?;
        let from = l.saturating_sub(keep);
        if from == l {
            return Ok(residual.narrow(0, l, 0)?);
        }
        let z = self.in_proj.forward_rows(&x.narrow(0, from, l - from)?, 0..e)?;
        let gated = self.norm.forward(&y.narrow(0, from, l - from)?, &GateOperand { rows: &z, offset: 0 })?;
        self.out_proj.add_into(&gated, residual.narrow(0, from, l - from)?.copy()?)
    }

    /// Everything before out_proj: the gated, normalised SSM output `[l, E]`.
    fn gated(&self, x: &Tensor, state: &mut Mamba2LayerState) -> Result<Tensor> {
        let zxbcdt = self.in_proj.forward(x)?;
        let y = self.ungated(&zxbcdt, state)?;
        self.norm.forward(&y, &GateOperand { rows: &zxbcdt, offset: 0 })
    }

    /// Conv and scan from the in_proj output `zxbcdt` (columns: z [0, E), xBC [E, E + C), dt
    /// [E + C, E + C + H)): the SSM output `y` `[l, E]`, before the gated norm.
    fn ungated(&self, zxbcdt: &Tensor, state: &mut Mamba2LayerState) -> Result<Tensor> {
        let (e, c) = (self.cfg.intermediate_size, self.cfg.conv_dim());
        let (xbc, conv) = self.conv.forward(zxbcdt, &state.conv)?;
        self.scan(&xbc, conv, &DtOperand { rows: zxbcdt, offset: e + c }, state)
    }

    /// The SSD scan over `xbc`, advancing `state` (its conv part becomes `conv`): in place on a
    /// state no clone shares (no new 786 KB buffer per Mamba-2-130M layer, prompt or step), else
    /// into a new state. Returns `y` `[l, E]`.
    fn scan(&self, xbc: &Tensor, conv: Tensor, dt: &DtOperand, state: &mut Mamba2LayerState) -> Result<Tensor> {
        if state.ssm_exclusive() {
            let y = self.ssd.forward_in_place(xbc, dt, &state.ssm)?;
            state.conv = conv;
            Ok(y)
        } else {
            let (y, ssm) = self.ssd.forward(xbc, dt, &state.ssm)?;
            *state = Mamba2LayerState::from_tensors(conv, ssm);
            Ok(y)
        }
    }
}

/// The SSD tile for `cfg`: the checkpoint's `chunk_size` rounded down to a power of two, at most
/// [`MAX_SSD_CHUNK`] (results do not depend on it beyond float rounding).
fn ssd_chunk(cfg: &Mamba2MixerConfig) -> usize {
    let q = cfg.chunk_size.clamp(1, MAX_SSD_CHUNK);
    1 << (usize::BITS - 1 - q.leading_zeros())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::loader::{ModelFiles, TensorStore};
    use crate::models::mamba2::config::Mamba2Config;

    /// Layer `i`'s mixer of the `mamba2-groups` fixture (loaded under its own tensor prefix).
    fn mixer_of_layer(i: usize) -> (Mamba2Config, Mamba2Mixer) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/mamba2-groups");
        let files = ModelFiles::from_dir(&dir).unwrap();
        let cfg = Mamba2Config::from_json_str(&files.text("config.json").unwrap(), 64).unwrap();
        let store = TensorStore::open(&files).unwrap();
        let mut rd = Reader::new(&store, &Device::Cpu);
        let mixer = Mamba2Mixer::load(&mut rd, &cfg.mixer, &format!("backbone.layers.{i}.mixer.")).unwrap();
        (cfg, mixer)
    }

    /// The hybrid's entry points: `forward` (no residual) plus the residual is `add_into`, and the
    /// state advances the same way, from a mixer loaded under an arbitrary tensor prefix.
    #[test]
    fn forward_without_residual_matches_add_into() {
        let (cfg, mixer) = mixer_of_layer(1);
        let device = Device::Cpu;
        assert_eq!(mixer.ssd_chunk(), 8);
        let d = cfg.mixer.hidden_size;
        let x =
            Tensor::from_vec((0..20 * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect(), (20, d), &device)
                .unwrap();
        let residual = Tensor::from_vec((0..20 * d).map(|i| (i % 7) as f32 * 0.1).collect(), (20, d), &device).unwrap();
        let (mut s1, mut s2) =
            (Mamba2LayerState::new(&cfg.mixer, &device).unwrap(), Mamba2LayerState::new(&cfg.mixer, &device).unwrap());
        let a =
            (mixer.forward(&x, &mut s1).unwrap() + &residual).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let own = residual.copy().unwrap();
        let b = mixer.add_into(&x, own, &mut s2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Unit-test builds fill outputs made for overwriting with NaN: one a kernel left unwritten
        // (the SSD's output or state, the gated norm's) shows here.
        let ssm = s1.ssm.to_vec1::<f32>().unwrap();
        assert!(a.iter().chain(&b).chain(&ssm).all(|v| v.is_finite()), "a NaN or infinite output or state");
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "forward + residual vs add_into differ by {worst}");
        assert_eq!(s1.ssm.to_vec1::<f32>().unwrap(), s2.ssm.to_vec1::<f32>().unwrap());
        // In place: the sum is written into the storage it was given (a handle sharing it sees
        // it); the tensor it was copied from is untouched.
        let own = residual.copy().unwrap();
        let handle = own.clone();
        let mut s3 = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
        mixer.add_into(&x, own, &mut s3).unwrap();
        assert_eq!(handle.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b);
        assert_eq!(residual.to_vec2::<f32>().unwrap()[0][1], 0.1);
        assert_eq!(s1.conv.to_vec1::<f32>().unwrap(), s2.conv.to_vec1::<f32>().unwrap());
        assert!(b.iter().any(|v| v.abs() > 1e-3), "the mixer output is not all zeros");
    }

    /// The block's norm fused into in_proj's packing gives the bits of the norm, then the mixer.
    #[test]
    fn add_into_normed_equals_the_norm_then_add_into() {
        let (cfg, mixer) = mixer_of_layer(1);
        let device = Device::Cpu;
        let (l, d) = (40, cfg.mixer.hidden_size);
        let norm = RmsNorm::new(
            Tensor::from_vec((0..d).map(|i| 0.5 + (i % 5) as f32 * 0.1).collect(), d, &device).unwrap(),
            1e-5,
        );
        let residual =
            Tensor::from_vec((0..l * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect(), (l, d), &device)
                .unwrap();
        let mut s1 = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
        let mut s2 = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
        let want = mixer.add_into(&norm.forward(&residual).unwrap(), residual.copy().unwrap(), &mut s1).unwrap();
        let got = mixer.add_into_normed(&norm, residual.copy().unwrap(), &mut s2).unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        assert_eq!(s1.ssm.to_vec1::<f32>().unwrap(), s2.ssm.to_vec1::<f32>().unwrap());
    }

    /// The last layer's trimmed form: the state advances exactly as the full layer's (bit for bit),
    /// and the rows it keeps are the full layer's rows up to rounding (none, the last, several).
    #[test]
    fn last_layer_keeps_its_state_and_the_rows_asked_for() {
        let (cfg, mixer) = mixer_of_layer(1);
        let device = Device::Cpu;
        let (l, d) = (20, cfg.mixer.hidden_size);
        let x = Tensor::from_vec((0..l * d).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect(), (l, d), &device)
            .unwrap();
        let residual = Tensor::from_vec((0..l * d).map(|i| (i % 7) as f32 * 0.1).collect(), (l, d), &device).unwrap();
        let mut full_state = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
        let full = mixer.add_into(&x, residual.copy().unwrap(), &mut full_state).unwrap().to_vec2::<f32>().unwrap();
        for keep in [0, 1, 3] {
            let mut state = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
            let kept = mixer.add_into_last(&x, &residual, &mut state, keep).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(kept.len(), keep);
            for (row, want) in kept.iter().zip(&full[l - keep..]) {
                let worst = row.iter().zip(want).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "keep {keep}: rows differ from the full layer's by {worst}");
            }
            assert_eq!(state.ssm.to_vec1::<f32>().unwrap(), full_state.ssm.to_vec1::<f32>().unwrap(), "keep {keep}");
            assert_eq!(state.conv.to_vec1::<f32>().unwrap(), full_state.conv.to_vec1::<f32>().unwrap(), "keep {keep}");
        }
        assert_eq!(residual.to_vec2::<f32>().unwrap()[l - 1][0], ((l - 1) * d % 7) as f32 * 0.1, "residual written");
    }

    /// A prompt on a state no clone shares runs in place as well: the same outputs and state as
    /// the functional scan on a shared state, written into the state's own storage, and a clone
    /// keeps its values.
    #[test]
    fn in_place_prefill_matches_the_functional_one_and_never_touches_a_clone() {
        let (cfg, mixer) = mixer_of_layer(0);
        let device = Device::Cpu;
        let d = cfg.mixer.hidden_size;
        let rows = |seed: usize, len: usize| {
            let v = (0..len * d).map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 40.0).collect();
            Tensor::from_vec(v, (len, d), &device).unwrap()
        };
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut shared = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
        mixer.forward(&rows(1, 5), &mut shared).unwrap();
        shared.compact().unwrap();
        let clone = shared.clone();
        let before = values(&shared.ssm);
        let mut own = Mamba2LayerState::from_tensors(shared.conv.copy().unwrap(), shared.ssm.copy().unwrap());
        assert!(own.ssm_exclusive() && !shared.ssm_exclusive());
        let handle = own.ssm.clone();
        let a = values(&mixer.forward(&rows(7, 20), &mut shared).unwrap());
        let b = values(&mixer.forward(&rows(7, 20), &mut own).unwrap());
        assert_eq!(a, b, "in-place and functional prompt outputs differ");
        assert_eq!(values(&shared.ssm), values(&own.ssm), "states differ");
        assert_eq!(values(&handle), values(&own.ssm), "the prompt did not run in place");
        assert_ne!(values(&own.ssm), before, "the prompt did not advance the state");
        assert_eq!(values(&clone.ssm), before, "a prompt changed a clone's state");
    }

    /// A decode step on a state no clone shares runs in place; one whose state is shared (a fork,
    /// a checkpoint) must leave the other holder's values untouched — and both give the same output.
    #[test]
    fn in_place_decode_matches_the_functional_step_and_never_touches_a_clone() {
        let (cfg, mixer) = mixer_of_layer(0);
        let device = Device::Cpu;
        let d = cfg.mixer.hidden_size;
        let row = |seed: usize, len: usize| {
            let v = (0..len * d).map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 40.0).collect();
            Tensor::from_vec(v, (len, d), &device).unwrap()
        };
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // After a prefill the state is exclusive once compacted.
        let mut exclusive = Mamba2LayerState::new(&cfg.mixer, &device).unwrap();
        mixer.forward(&row(1, 5), &mut exclusive).unwrap();
        exclusive.compact().unwrap();
        let mut shared = exclusive.clone();
        let snapshot = values(&shared.ssm);
        for step in 0..3 {
            assert!(!exclusive.clone().ssm_exclusive(), "a live clone makes a state shared");
            let in_place = exclusive.ssm_exclusive();
            assert_eq!(in_place, step > 0, "the first step shares its state with `shared`; later ones own theirs");
            let a = values(&mixer.forward(&row(10 + step, 1), &mut exclusive).unwrap());
            let b = values(&mixer.forward(&row(10 + step, 1), &mut shared).unwrap());
            assert_eq!(a, b, "step {step}: in-place and functional outputs differ");
            assert_eq!(values(&exclusive.ssm), values(&shared.ssm), "step {step}: states differ");
            if step == 0 {
                // A checkpoint/fork taken now must keep its values through the next step.
                let before = values(&shared.ssm);
                let kept = shared.clone();
                mixer.forward(&row(99, 1), &mut shared).unwrap();
                assert_eq!(values(&kept.ssm), before, "a step changed a clone's state");
                assert_ne!(values(&shared.ssm), before);
                shared = kept;
            }
        }
        assert_ne!(snapshot, values(&exclusive.ssm), "the steps advanced the state");
    }
}
