//! A deliberately plain float64 Mamba-1 forward (per token, per channel, per state; libm everywhere),
//! written from the reference maths (model-reference §2.3, §2.6), independent of the crate's kernels.
//! Reads an HF-layout safetensors folder directly.

use std::collections::HashMap;
use std::path::Path;

pub struct NaiveMamba {
    t: HashMap<String, (Vec<usize>, Vec<f64>)>,
    d: usize,
    e: usize,
    n: usize,
    k: usize,
    r: usize,
    layers: usize,
    vocab: usize,
    eps: f64,
    /// FalconMamba's weightless dt/B/C RMSNorm epsilon.
    pub falcon_eps: Option<f64>,
}

impl NaiveMamba {
    pub fn load(dir: &Path) -> Self {
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut t = HashMap::new();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
            t.insert(name, (view.shape().to_vec(), data));
        }
        let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
        let d = u("hidden_size");
        Self {
            d,
            e: u("intermediate_size"),
            n: u("state_size"),
            k: u("conv_kernel"),
            r: u("time_step_rank"),
            layers: u("num_hidden_layers"),
            vocab: u("vocab_size"),
            eps: cfg["layer_norm_epsilon"].as_f64().unwrap(),
            falcon_eps: None,
            t,
        }
    }

    fn w(&self, name: &str) -> &[f64] {
        &self.t[name].1
    }

    fn rms(x: &[f64], w: Option<&[f64]>, eps: f64) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + eps).sqrt();
        x.iter().enumerate().map(|(i, v)| v * s * w.map_or(1.0, |w| w[i])).collect()
    }

    fn matvec(w: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
        let cols = x.len();
        (0..rows).map(|o| (0..cols).map(|i| w[o * cols + i] * x[i]).sum()).collect()
    }

    /// Logits for every position of `ids` (fresh state).
    pub fn logits(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let (d, e, n, k, r) = (self.d, self.e, self.n, self.k, self.r);
        let emb = self.w("backbone.embeddings.weight");
        let mut conv = vec![vec![0f64; e * k]; self.layers];
        let mut ssm = vec![vec![0f64; e * n]; self.layers];
        let mut out = Vec::new();
        for &id in ids {
            let mut x: Vec<f64> = emb[id as usize * d..(id as usize + 1) * d].to_vec();
            for l in 0..self.layers {
                let p = format!("backbone.layers.{l}.");
                let h = Self::rms(&x, Some(self.w(&format!("{p}norm.weight"))), self.eps);
                let xz = Self::matvec(self.w(&format!("{p}mixer.in_proj.weight")), &h, 2 * e);
                let cw = self.w(&format!("{p}mixer.conv1d.weight"));
                let cb = self.w(&format!("{p}mixer.conv1d.bias"));
                let mut u = vec![0f64; e];
                for c in 0..e {
                    let s = &mut conv[l][c * k..(c + 1) * k];
                    s.rotate_left(1);
                    s[k - 1] = xz[c];
                    let v: f64 = cb[c] + (0..k).map(|j| s[j] * cw[c * k + j]).sum::<f64>();
                    u[c] = v / (1.0 + (-v).exp());
                }
                let xdbl = Self::matvec(self.w(&format!("{p}mixer.x_proj.weight")), &u, r + 2 * n);
                let (mut dt_low, mut b, mut cm) = (xdbl[..r].to_vec(), xdbl[r..r + n].to_vec(), xdbl[r + n..].to_vec());
                if let Some(fe) = self.falcon_eps {
                    dt_low = Self::rms(&dt_low, None, fe);
                    b = Self::rms(&b, None, fe);
                    cm = Self::rms(&cm, None, fe);
                }
                let dt = Self::matvec(self.w(&format!("{p}mixer.dt_proj.weight")), &dt_low, e);
                let dtb = self.w(&format!("{p}mixer.dt_proj.bias"));
                let a_log = self.w(&format!("{p}mixer.A_log"));
                let dskip = self.w(&format!("{p}mixer.D"));
                let mut y = vec![0f64; e];
                for c in 0..e {
                    let raw = dt[c] + dtb[c];
                    let delta = if raw > 20.0 { raw } else { raw.exp().ln_1p() };
                    let mut acc = 0.0;
                    for j in 0..n {
                        let a = -a_log[c * n + j].exp();
                        let s = &mut ssm[l][c * n + j];
                        *s = (delta * a).exp() * *s + delta * b[j] * u[c];
                        acc += *s * cm[j];
                    }
                    let z = xz[e + c];
                    y[c] = (acc + dskip[c] * u[c]) * (z / (1.0 + (-z).exp()));
                }
                let o = Self::matvec(self.w(&format!("{p}mixer.out_proj.weight")), &y, d);
                for i in 0..d {
                    x[i] += o[i];
                }
            }
            let h = Self::rms(&x, Some(self.w("backbone.norm_f.weight")), self.eps);
            out.push(Self::matvec(emb, &h, self.vocab));
        }
        out
    }
}
