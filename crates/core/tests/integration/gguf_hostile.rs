//! Hostile GGUF files: each a typed error naming the file and the key or tensor, never a panic,
//! never an allocation sized by an unchecked header number. The files are real fixtures with one
//! field rewritten (located by walking the valid header here), plus a seeded mutation run
//! (`PHOENIX_GGUF_FUZZ_ITERS` for a longer one by hand).

use crate::model_support;

use model_support::fixture;
use phoenix_core::describe::describe;
use phoenix_core::loader::ModelFiles;
use phoenix_core::models::load_model_files;
use phoenix_core::{ErrorCode, PhoenixError};

const NAME: &str = "hostile.gguf";

/// Where the fields of a valid GGUF header are (byte offsets).
struct Layout {
    tensor_count: usize,
    /// key → (offset of the key's length, offset of the value type)
    keys: Vec<(String, usize, usize)>,
    /// tensor name → (offset of the name's length, offset of its ggml type, offset of its data offset)
    tensors: Vec<(String, usize, usize, usize)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn skip_value(b: &[u8], at: usize, t: u32) -> usize {
    match t {
        0 | 1 | 7 => at + 1,
        2 | 3 => at + 2,
        4..=6 => at + 4,
        10..=12 => at + 8,
        8 => at + 8 + u64_at(b, at) as usize,
        9 => {
            let (elem, len) = (u32_at(b, at), u64_at(b, at + 4));
            (0..len).fold(at + 12, |p, _| skip_value(b, p, elem))
        }
        _ => panic!("fixture value type {t}"),
    }
}

fn layout(b: &[u8]) -> Layout {
    let tensor_count = u64_at(b, 8) as usize;
    let kv_count = u64_at(b, 16) as usize;
    let mut at = 24;
    let mut keys = Vec::new();
    for _ in 0..kv_count {
        let len = u64_at(b, at) as usize;
        let key = String::from_utf8(b[at + 8..at + 8 + len].to_vec()).unwrap();
        let type_at = at + 8 + len;
        keys.push((key, at, type_at));
        at = skip_value(b, type_at + 4, u32_at(b, type_at));
    }
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let len = u64_at(b, at) as usize;
        let name = String::from_utf8(b[at + 8..at + 8 + len].to_vec()).unwrap();
        let dims = u32_at(b, at + 8 + len) as usize;
        let type_at = at + 8 + len + 4 + 8 * dims;
        tensors.push((name, at, type_at, type_at + 4));
        at = type_at + 12;
    }
    Layout { tensor_count, keys, tensors }
}

fn llama() -> Vec<u8> {
    std::fs::read(fixture("gguf-llama-tiny/llama-tiny.f32.gguf")).unwrap()
}

fn key_at(l: &Layout, key: &str) -> (usize, usize) {
    let (_, len_at, type_at) = l.keys.iter().find(|(k, ..)| k == key).unwrap_or_else(|| panic!("{key}"));
    (*len_at, *type_at)
}

fn tensor_at(l: &Layout, name: &str) -> (usize, usize) {
    let (_, _, type_at, offset_at) = l.tensors.iter().find(|(n, ..)| n == name).unwrap();
    (*type_at, *offset_at)
}

/// Loads and describes `bytes` as a one-file model: both must fail alike, with a message naming
/// the file.
fn load_err(bytes: Vec<u8>) -> PhoenixError {
    let files = ModelFiles::from_memory(vec![(NAME.to_string(), bytes)]);
    let e = load_model_files(&files).err().expect("a hostile file must not load");
    let d = describe(&files).expect_err("a hostile file must not describe");
    assert_eq!((d.code, &d.message), (e.code, &e.message));
    assert!(e.message.contains(NAME), "{}", e.message);
    e
}

fn expect(bytes: Vec<u8>, code: ErrorCode, needles: &[&str]) {
    let e = load_err(bytes);
    assert_eq!(e.code, code, "{}", e.message);
    for n in needles {
        assert!(e.message.contains(n), "`{n}` not in: {}", e.message);
    }
}

#[test]
fn wrong_magic_and_versions() {
    let mut b = llama();
    b[0] = b'X';
    expect(b, ErrorCode::BadWeights, &["not a GGUF file"]);
    for version in [1u32, 4, u32::MAX] {
        let mut b = llama();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        expect(b, ErrorCode::UnsupportedModel, &[&format!("version {version}")]);
    }
}

#[test]
fn truncated_files_are_bad_weights() {
    let b = llama();
    let header_end = {
        let l = layout(&b);
        let (_, _, _, last) = l.tensors.last().unwrap();
        last + 8
    };
    for cut in (0..header_end).step_by(97).chain([header_end, header_end + 100, b.len() - 1]) {
        expect(b[..cut].to_vec(), ErrorCode::BadWeights, &[]);
    }
}

#[test]
fn declared_counts_and_lengths_past_the_file() {
    let b = llama();
    let l = layout(&b);
    // 2^40 tensors; 2^40 metadata entries.
    for at in [8, 16] {
        let mut m = b.clone();
        m[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        expect(m, ErrorCode::BadWeights, &["GGUF header"]);
    }
    // A key, a string value and a tensor name claiming 2^40 / 2^63 bytes.
    let (len_at, _) = key_at(&l, "general.architecture");
    let (_, arch_type_at) = key_at(&l, "general.architecture");
    let (name_len_at, ..) = (l.tensors[0].1, 0);
    for at in [len_at, arch_type_at + 4, name_len_at] {
        for huge in [1u64 << 40, 1 << 63, u64::MAX] {
            let mut m = b.clone();
            m[at..at + 8].copy_from_slice(&huge.to_le_bytes());
            expect(m, ErrorCode::BadWeights, &["past the end"]);
        }
    }
    // The token list claiming 2^40 strings.
    let (_, tokens_type_at) = key_at(&l, "tokenizer.ggml.tokens");
    let mut m = b.clone();
    m[tokens_type_at + 8..tokens_type_at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect(m, ErrorCode::BadWeights, &["tokenizer.ggml.tokens", "more than the file holds"]);
    assert_eq!(l.tensor_count, l.tensors.len());
}

#[test]
fn tensor_ranges_types_and_alignment() {
    let b = llama();
    let l = layout(&b);
    let (type_at, offset_at) = tensor_at(&l, "blk.1.attn_q.weight");
    let offset = u64_at(&b, offset_at);
    // Past the end, and so far that start + size overflows.
    for bad in [b.len() as u64, u64::MAX - 31] {
        let mut m = b.clone();
        m[offset_at..offset_at + 8].copy_from_slice(&bad.to_le_bytes());
        expect(m, ErrorCode::BadWeights, &["blk.1.attn_q.weight", "past the end"]);
    }
    let mut m = b.clone();
    m[offset_at..offset_at + 8].copy_from_slice(&(offset + 4).to_le_bytes());
    expect(m, ErrorCode::BadWeights, &["blk.1.attn_q.weight", "alignment 32"]);
    for (id, name) in [(16u32, "IQ2_XXS"), (10, "Q2_K"), (11, "Q3_K"), (15, "Q8_K"), (35, "TQ2_0"), (28, "F64")] {
        let mut m = b.clone();
        m[type_at..type_at + 4].copy_from_slice(&id.to_le_bytes());
        expect(m, ErrorCode::UnsupportedModel, &["blk.1.attn_q.weight", name]);
    }
    let mut m = b.clone();
    m[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    expect(m, ErrorCode::UnsupportedModel, &["blk.1.attn_q.weight", "type id 99"]);
    // A block type whose rows are not whole blocks (64 columns of Q4_K's 256).
    let mut m = b.clone();
    m[type_at..type_at + 4].copy_from_slice(&12u32.to_le_bytes());
    expect(m, ErrorCode::BadWeights, &["blk.1.attn_q.weight"]);
}

#[test]
fn alignment_zero_or_odd_is_refused_not_a_division_by_zero() {
    let b = llama();
    let l = layout(&b);
    // `general.file_type` (u32 0) renamed to `general.alignment` (same length).
    let (len_at, _) = key_at(&l, "general.file_type");
    for value in [0u32, 3, 48] {
        let mut m = b.clone();
        m[len_at + 8..len_at + 8 + 17].copy_from_slice(b"general.alignment");
        let (_, type_at) = key_at(&l, "general.file_type");
        m[type_at + 4..type_at + 8].copy_from_slice(&value.to_le_bytes());
        expect(m, ErrorCode::BadWeights, &["general.alignment"]);
    }
}

#[test]
fn wrong_architecture_and_missing_keys() {
    let b = llama();
    let l = layout(&b);
    let (_, arch_type_at) = key_at(&l, "general.architecture");
    let mut m = b.clone();
    m[arch_type_at + 12..arch_type_at + 17].copy_from_slice(b"bloom");
    expect(m, ErrorCode::UnsupportedModel, &["architecture `bloom`"]);
    for key in ["llama.block_count", "llama.embedding_length", "llama.attention.head_count", "general.architecture"] {
        let (len_at, _) = key_at(&l, key);
        let mut m = b.clone();
        m[len_at + 8] = b'X'; // the key is now spelled differently: absent
        expect(m, ErrorCode::BadConfig, &[key, "missing"]);
    }
    // A key of the wrong type.
    let (_, type_at) = key_at(&l, "llama.block_count");
    let mut m = b.clone();
    m[type_at..type_at + 4].copy_from_slice(&6u32.to_le_bytes()); // f32 instead of u32: a fraction
    let e = load_err(m);
    assert!(matches!(e.code, ErrorCode::BadConfig), "{}", e.message);
}

/// Tensors this build does not map are refused by name, never ignored: per-frequency RoPE factors
/// (how GGUF stores Llama 3.1 scaling) and an unknown tensor.
#[test]
fn unmapped_tensors_are_refused_by_name() {
    let b = llama();
    let l = layout(&b);
    for (from, to, needles) in [
        ("token_embd.weight", "rope_freqs.weight", vec!["rope_freqs.weight"]),
        ("blk.0.attn_q.weight", "blk.0.attn_z.weight", vec!["blk.0.attn_z.weight", "not one this build maps"]),
    ] {
        assert_eq!(from.len(), to.len());
        let (_, len_at, ..) = l.tensors.iter().find(|(n, ..)| n == from).unwrap();
        let mut m = b.clone();
        m[len_at + 8..len_at + 8 + to.len()].copy_from_slice(to.as_bytes());
        expect(m, ErrorCode::UnsupportedModel, &needles);
    }
}

/// A tokenizer is only read from a file beside the model until GGUF tokenizers are built.
#[test]
fn a_gguf_without_tokenizer_json_uses_its_header_vocabulary_and_one_beside_it_wins() {
    let files = ModelFiles::from_memory(vec![(NAME.to_string(), llama())]);
    let header = phoenix_core::tokenizer::load_optional(&files).unwrap().unwrap();
    assert!(header.source().contains(NAME), "{}", header.source());
    let tokenizer = std::fs::read(fixture("llama-tiny/tokenizer.json")).unwrap();
    let files = ModelFiles::from_memory(vec![(NAME.to_string(), llama()), ("tokenizer.json".into(), tokenizer)]);
    assert!(phoenix_core::tokenizer::load_optional(&files).unwrap().is_some());
}

/// Seeded mutations (byte flips, stored small/huge numbers, cuts) of every fixture's header: no
/// panic, only typed errors or a model that loads.
#[test]
fn seeded_header_mutations_never_panic() {
    let iters: usize = std::env::var("PHOENIX_GGUF_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for model in ["llama-tiny", "qwen2-tiny-bias", "mamba1-tiny", "mamba2-tiny", "granite-hybrid-tiny"] {
        let b = std::fs::read(fixture(&format!("gguf-{model}/{model}.f16.gguf"))).unwrap();
        let l = layout(&b);
        let header_end = l.tensors.last().unwrap().3 + 8;
        for _ in 0..iters {
            let mut m = b.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % header_end.min(m.len());
                match next() % 4 {
                    0 => m[at] ^= 1 << (next() % 8),
                    1 if at + 8 <= m.len() => m[at..at + 8].copy_from_slice(&(next() % 64).to_le_bytes()),
                    2 if at + 8 <= m.len() => m[at..at + 8].copy_from_slice(&(next() | 1 << 40).to_le_bytes()),
                    _ => m.truncate(at.max(1)),
                }
            }
            let files = ModelFiles::from_memory(vec![(NAME.to_string(), m)]);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_model_files(&files).err()));
            match outcome {
                Ok(None) => {}
                Ok(Some(e)) => assert!(
                    matches!(e.code, ErrorCode::BadWeights | ErrorCode::BadConfig | ErrorCode::UnsupportedModel),
                    "{model}: {:?} {}",
                    e.code,
                    e.message
                ),
                Err(_) => panic!("{model}: a mutated header panicked"),
            }
        }
    }
}

/// Head counts and widths that do not fit together are a bad config naming the keys (listed as an
/// error by describe too), never taken for an unsupported feature: a head size computed from them is
/// not a partial RoPE.
#[test]
fn head_counts_that_do_not_fit_the_width_are_bad_config() {
    let b = llama();
    let l = layout(&b);
    let set = |m: &mut Vec<u8>, key: &str, value: u32| {
        let (_, type_at) = key_at(&l, key);
        assert_eq!(u32_at(&b, type_at), 4, "{key} is a u32 in the fixture");
        m[type_at + 4..type_at + 8].copy_from_slice(&value.to_le_bytes());
    };
    // The fixture: width 64, 4 heads of 16 (`key_length`), 2 KV heads, RoPE over all 16.
    for (key, value, code, needles) in [
        ("llama.attention.head_count", 0u32, ErrorCode::BadConfig, &["`num_attention_heads` must be > 0"][..]),
        (
            "llama.attention.head_count",
            7,
            ErrorCode::BadConfig,
            &["`num_attention_heads` = 7", "`num_key_value_heads` = 2"],
        ),
        ("llama.attention.head_count_kv", 0, ErrorCode::BadConfig, &["`num_key_value_heads` must be > 0"]),
        ("llama.attention.head_count_kv", 3, ErrorCode::BadConfig, &["`num_key_value_heads` = 3"]),
        (
            "llama.rope.dimension_count",
            64,
            ErrorCode::BadConfig,
            &["`llama.rope.dimension_count` = 64", "head size 16"],
        ),
        ("llama.rope.dimension_count", 8, ErrorCode::UnsupportedModel, &["partial RoPE"]),
    ] {
        let mut m = b.clone();
        set(&mut m, key, value);
        expect(m, code, needles);
    }
    // Without `key_length` (as llama.cpp writes most Llama files) the head size is width / heads.
    let mut derived = b.clone();
    for key in ["llama.attention.key_length", "llama.attention.value_length"] {
        let (len_at, _) = key_at(&l, key);
        derived[len_at + 8] = b'X';
    }
    assert!(load_model_files(&ModelFiles::from_memory(vec![(NAME.to_string(), derived.clone())])).is_ok());
    for (key, value, code, needles) in [
        (
            "llama.attention.head_count",
            0u32,
            ErrorCode::BadConfig,
            &["`llama.embedding_length` = 64", "`llama.attention.head_count` = 0"][..],
        ),
        ("llama.attention.head_count", 6, ErrorCode::BadConfig, &["not a whole number of heads", "= 6"]),
        ("llama.attention.head_count", 8, ErrorCode::BadConfig, &["`llama.rope.dimension_count` = 16", "head size 8"]),
        ("llama.embedding_length", 32, ErrorCode::BadConfig, &["`llama.rope.dimension_count` = 16", "head size 8"]),
        ("llama.rope.dimension_count", 8, ErrorCode::UnsupportedModel, &["partial RoPE"]),
    ] {
        let mut m = derived.clone();
        set(&mut m, key, value);
        expect(m, code, needles);
    }
}
