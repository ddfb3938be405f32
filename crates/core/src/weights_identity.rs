//! A cheap identity of a model's weight *values*, computed while the weights load.
//!
//! Snapshots carry it so a state saved from one model is refused by a model of the same shape with
//! other weights (the shape fingerprint alone cannot tell them apart). Hashing every weight would page
//! a memory-mapped checkpoint in twice, so each tensor contributes only its canonical name, its element
//! count and a sample of its values: the first, middle and last [`SAMPLE_VALUES`] f32 values (all of
//! them for a small tensor). Values are hashed as f32 after conversion, so the same weights stored as
//! HF safetensors or a state-spaces `pytorch_model.bin` (or in another float width that converts to the
//! same f32 values) agree. Two models that differ only outside every sampled window collide: the
//! identity catches a different checkpoint, not a single edited weight (the manifest's checksums do).

/// Values taken from each of the three windows of a tensor.
pub const SAMPLE_VALUES: usize = 256;

/// Accumulates tensors in load order; [`WeightsDigest::finish`] gives the identity.
#[derive(Debug, Clone)]
pub struct WeightsDigest {
    hash: u64,
}

impl Default for WeightsDigest {
    fn default() -> Self {
        Self { hash: FNV_OFFSET }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl WeightsDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one tensor under its canonical (HF) name.
    pub fn add(&mut self, name: &str, values: &[f32]) {
        self.add_values(name, values.len(), |i| values[i]);
    }

    /// Like [`Self::add`] for `n` values read (widened to f32) through `value`: a half-precision
    /// matrix gives the identity its f32 widening would.
    pub fn add_values(&mut self, name: &str, n: usize, value: impl Fn(usize) -> f32) {
        self.bytes(name.as_bytes());
        self.bytes(&(n as u64).to_le_bytes());
        // A list of ranges: one (every value) or three samples.
        #[allow(clippy::single_range_in_vec_init)]
        let ranges = if n <= 3 * SAMPLE_VALUES {
            vec![0..n]
        } else {
            let mid = n / 2 - SAMPLE_VALUES / 2;
            vec![0..SAMPLE_VALUES, mid..mid + SAMPLE_VALUES, n - SAMPLE_VALUES..n]
        };
        for i in ranges.into_iter().flatten() {
            self.bytes(&value(i).to_bits().to_le_bytes());
        }
    }

    pub fn finish(&self) -> u64 {
        self.hash
    }

    /// FNV-1a: the same value on every platform and Rust version (native and WASM must agree).
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ b as u64).wrapping_mul(FNV_PRIME);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(tensors: &[(&str, Vec<f32>)]) -> u64 {
        let mut d = WeightsDigest::new();
        for (name, values) in tensors {
            d.add(name, values);
        }
        d.finish()
    }

    #[test]
    fn sampled_values_names_and_sizes_all_count() {
        let big: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let base = identity(&[("a", big.clone()), ("b", vec![1.0, 2.0])]);
        assert_eq!(base, identity(&[("a", big.clone()), ("b", vec![1.0, 2.0])]));
        for at in [0, 5_000, 9_999] {
            let mut other = big.clone();
            other[at] += 1.0;
            assert_ne!(base, identity(&[("a", other), ("b", vec![1.0, 2.0])]), "value {at} is sampled");
        }
        assert_ne!(base, identity(&[("a", big.clone()), ("b", vec![1.0, 2.5])]));
        assert_ne!(base, identity(&[("x", big.clone()), ("b", vec![1.0, 2.0])]));
        assert_ne!(base, identity(&[("a", big[..9_999].to_vec()), ("b", vec![1.0, 2.0])]));
    }
}
