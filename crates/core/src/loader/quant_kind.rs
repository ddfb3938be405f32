//! The block-quantized tensor types GGUF files carry (ggml's formats), as the loader names them:
//! how many values a block holds and how many bytes it takes. The kernels that read them live in
//! `crate::ops`; this is only the storage layout, shared by the GGUF reader and the kernels.

use candle_core::quantized::GgmlDType;

/// A ggml block-quantized type. Rows of a quantized matrix are whole blocks (`cols` a multiple of
/// [`QuantKind::block_elems`]), as ggml requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantKind {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantKind {
    pub const ALL: [QuantKind; 8] = [
        QuantKind::Q8_0,
        QuantKind::Q4_0,
        QuantKind::Q4_1,
        QuantKind::Q5_0,
        QuantKind::Q5_1,
        QuantKind::Q4K,
        QuantKind::Q5K,
        QuantKind::Q6K,
    ];

    /// ggml's name (`Q4_K`), as `info` and messages show it.
    pub fn name(self) -> &'static str {
        match self {
            QuantKind::Q8_0 => "Q8_0",
            QuantKind::Q4_0 => "Q4_0",
            QuantKind::Q4_1 => "Q4_1",
            QuantKind::Q5_0 => "Q5_0",
            QuantKind::Q5_1 => "Q5_1",
            QuantKind::Q4K => "Q4_K",
            QuantKind::Q5K => "Q5_K",
            QuantKind::Q6K => "Q6_K",
        }
    }

    /// Values per block: 32 for the legacy types, 256 for the k-quants.
    pub fn block_elems(self) -> usize {
        match self {
            QuantKind::Q8_0 | QuantKind::Q4_0 | QuantKind::Q4_1 | QuantKind::Q5_0 | QuantKind::Q5_1 => 32,
            QuantKind::Q4K | QuantKind::Q5K | QuantKind::Q6K => 256,
        }
    }

    /// Bytes per block (ggml's `block_q*` struct sizes).
    pub fn block_bytes(self) -> usize {
        match self {
            QuantKind::Q8_0 => 34, // f16 scale + 32 × i8
            QuantKind::Q4_0 => 18, // f16 scale + 16 bytes of nibbles
            QuantKind::Q4_1 => 20, // f16 scale + f16 min + 16 bytes of nibbles
            QuantKind::Q5_0 => 22, // f16 scale + 4 bytes of high bits + 16 bytes of nibbles
            QuantKind::Q5_1 => 24, // f16 scale + f16 min + 4 + 16
            QuantKind::Q4K => 144, // 2 × f16 + 12 bytes of 6-bit scales + 128 bytes of nibbles
            QuantKind::Q5K => 176, // 2 × f16 + 12 + 32 bytes of high bits + 128
            QuantKind::Q6K => 210, // 128 low nibbles + 64 high bits + 16 × i8 scales + f16
        }
    }

    /// Bits per value, for sizes in messages and `info`.
    pub fn bits_per_value(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_elems() as f64
    }

    /// Bytes of one row of `cols` values; `None` when `cols` is not a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_elems()).then(|| cols / self.block_elems() * self.block_bytes())
    }

    /// Bytes of a tensor of `shape` (row-major, the last dimension the row); `None` when the last
    /// dimension is not whole blocks or the size overflows.
    pub fn tensor_bytes(self, shape: &[usize]) -> Option<usize> {
        let (&cols, outer) = shape.split_last()?;
        outer.iter().try_fold(self.row_bytes(cols)?, |acc, &d| acc.checked_mul(d))
    }

    /// The kind of a ggml type; `None` for float types and for block types this build does not run.
    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q8_0 => QuantKind::Q8_0,
            GgmlDType::Q4_0 => QuantKind::Q4_0,
            GgmlDType::Q4_1 => QuantKind::Q4_1,
            GgmlDType::Q5_0 => QuantKind::Q5_0,
            GgmlDType::Q5_1 => QuantKind::Q5_1,
            GgmlDType::Q4K => QuantKind::Q4K,
            GgmlDType::Q5K => QuantKind::Q5K,
            GgmlDType::Q6K => QuantKind::Q6K,
            _ => return None,
        })
    }

    /// The ggml type (candle's block types implement the reference quantize / dequantize / dot).
    pub fn to_ggml(self) -> GgmlDType {
        match self {
            QuantKind::Q8_0 => GgmlDType::Q8_0,
            QuantKind::Q4_0 => GgmlDType::Q4_0,
            QuantKind::Q4_1 => GgmlDType::Q4_1,
            QuantKind::Q5_0 => GgmlDType::Q5_0,
            QuantKind::Q5_1 => GgmlDType::Q5_1,
            QuantKind::Q4K => GgmlDType::Q4K,
            QuantKind::Q5K => GgmlDType::Q5K,
            QuantKind::Q6K => GgmlDType::Q6K,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_candles_block_types() {
        for kind in QuantKind::ALL {
            let g = kind.to_ggml();
            assert_eq!(kind.block_bytes(), g.type_size(), "{}", kind.name());
            assert_eq!(kind.block_elems(), g.block_size(), "{}", kind.name());
            assert_eq!(QuantKind::from_ggml(g), Some(kind));
        }
        assert_eq!(QuantKind::from_ggml(GgmlDType::F32), None);
    }

    #[test]
    fn tensor_bytes_need_whole_blocks_and_no_overflow() {
        assert_eq!(QuantKind::Q4_1.tensor_bytes(&[3, 64]), Some(3 * 2 * 20));
        assert_eq!(QuantKind::Q4_1.tensor_bytes(&[3, 48]), None);
        assert_eq!(QuantKind::Q6K.tensor_bytes(&[usize::MAX, 256]), None);
        assert_eq!(QuantKind::Q8_0.tensor_bytes(&[]), None);
    }
}
