//! A deterministic stand-in `LanguageModel` for session logic tests: its "state" is a hash of every
//! token consumed, its logits a pseudo-random function of that hash. Different `vocab`/`layers`
//! give different shapes (for state-mismatch tests). The real-model tests live in `session_models.rs`.

use std::any::Any;

use phoenix_core::error::state_mismatch;
use phoenix_core::{LanguageModel, LogitsWanted, ModelInfo, ModelState, Result};

pub struct ToyModel {
    info: ModelInfo,
    /// `prefill_chunk()` (the trait's default unless set).
    chunk: Option<usize>,
    /// Called with the length of every forward call (to observe or interfere with feeding).
    on_forward: Option<Box<dyn Fn(usize) + Send + Sync>>,
    /// Calls `interrupt::check` after `on_forward`, as a real family does before its first layer.
    layer_check: bool,
}

#[derive(Clone)]
pub struct ToyState {
    hash: u64,
    count: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ToyModel {
    pub fn new(vocab_size: usize, num_layers: usize, eos: Vec<u32>) -> Self {
        Self {
            info: ModelInfo {
                model_type: "toy".into(),
                family: "toy".into(),
                engine: phoenix_core::models::EngineKind::Ssm,
                format: "test".into(),
                dtype: "f32".into(),
                vocab_size,
                hidden_size: 8,
                num_layers,
                param_count: 0,
                weight_bytes: 0,
                state_bytes: 16,
                state_bytes_per_token: 0,
                context_length: None,
                bos_token_id: Some(0),
                eos_token_ids: eos,
                architecture: Default::default(),
            },
            chunk: None,
            on_forward: None,
            layer_check: false,
        }
    }

    /// Reports a context limit of `tokens` (as an attention model does).
    #[allow(dead_code)] // used by some test files only
    pub fn with_context_length(mut self, tokens: usize) -> Self {
        self.info.context_length = Some(tokens);
        self
    }

    /// Reports `chunk` as its prefill piece and calls `on_forward(ids.len())` on every forward call.
    pub fn with_prefill_chunk(mut self, chunk: usize, on_forward: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.chunk = Some(chunk);
        self.on_forward = Some(Box::new(on_forward));
        self
    }
}

impl ToyModel {
    /// Checks for a stop (`models::interrupt::check`) at the start of every forward of several
    /// tokens, after `on_forward`: a stop there fails the call with the state untouched.
    #[allow(dead_code)] // used by some test files only
    pub fn with_layer_check(mut self) -> Self {
        self.layer_check = true;
        self
    }
}

impl LanguageModel for ToyModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self) -> Result<Box<dyn ModelState>> {
        Ok(Box::new(ToyState { hash: 0, count: 0 }))
    }

    fn prefill_chunk(&self) -> usize {
        self.chunk.unwrap_or(usize::MAX)
    }

    /// The toy's "weights" are its shape: a different vocabulary or depth is another model.
    fn weights_identity(&self) -> u64 {
        (self.info.vocab_size as u64) << 16 | self.info.num_layers as u64
    }

    fn forward(&self, ids: &[u32], state: &mut dyn ModelState, which: LogitsWanted) -> Result<Vec<f32>> {
        assert!(!ids.is_empty(), "forward with no ids");
        if let Some(hook) = &self.on_forward {
            hook(ids.len());
        }
        if self.layer_check && ids.len() > 1 {
            phoenix_core::models::interrupt::check()?;
        }
        let s = state.as_any_mut().downcast_mut::<ToyState>().expect("toy state");
        let v = self.info.vocab_size;
        let mut out = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            assert!((id as usize) < v, "id out of range");
            s.hash = mix(s.hash ^ (id as u64 + 1));
            s.count += 1;
            if which == LogitsWanted::All || i + 1 == ids.len() {
                out.extend(
                    (0..v).map(|j| (mix(s.hash.wrapping_add(j as u64)) >> 40) as f32 / (1u64 << 24) as f32 * 8.0),
                );
            }
        }
        Ok(out)
    }
}

impl ModelState for ToyState {
    fn layout(&self) -> phoenix_core::model::StateLayout {
        phoenix_core::model::StateLayout {
            family: "toy".into(),
            dtype: "u64".into(),
            dims: vec![2],
            tokens: self.count,
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok([self.hash.to_le_bytes(), self.count.to_le_bytes()].concat())
    }

    fn load_bytes(&mut self, bytes: &[u8], _tokens: u64) -> Result<()> {
        if bytes.len() != 16 {
            return Err(state_mismatch(format!("toy state: {} bytes, expected 16", bytes.len())));
        }
        self.hash = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        self.count = u64::from_le_bytes(bytes[8..].try_into().unwrap());
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn ModelState> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
