//! Hostile GGUF files found by attacking the loader from outside (see the report of the `attack`
//! session): each is refused with a typed error that names the real problem.

use std::sync::Arc;

use phoenix_core::loader::gguf_guard::check_header;
use phoenix_core::loader::{FileBytes, GgufFile};
use phoenix_core::ErrorCode;

const F32: u32 = 0;
const Q4_0: u32 = 2;
const Q4_K: u32 = 12;

/// A GGUF v3 file with no metadata and `tensors` (name, ggml `ne`, type, data offset), followed by
/// `data_len` zero bytes of tensor data.
fn gguf(tensors: &[(&str, &[u64], u32, u64)], data_len: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend(0u64.to_le_bytes());
    for (name, ne, ty, offset) in tensors {
        b.extend((name.len() as u64).to_le_bytes());
        b.extend(name.as_bytes());
        b.extend((ne.len() as u32).to_le_bytes());
        for d in *ne {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    b.resize(b.len().div_ceil(32) * 32 + data_len, 0);
    b
}

fn refusal(bytes: &[u8]) -> phoenix_core::PhoenixError {
    check_header(bytes, "hostile.gguf").expect_err("the header must be refused")
}

#[test]
fn tensors_sharing_bytes_are_refused() {
    // Two tensors on the same bytes, and one starting inside another: each would read the other's data.
    for second_offset in [0u64, 32] {
        let bytes = gguf(&[("a.weight", &[16], F32, 0), ("b.weight", &[8], F32, second_offset)], 128);
        let e = refusal(&bytes);
        assert_eq!(e.code, ErrorCode::BadWeights, "{}", e.message);
        assert!(e.message.contains("overlap"), "{}", e.message);
        assert!(e.message.contains("`a.weight`") && e.message.contains("`b.weight`"), "{}", e.message);
    }
}

#[test]
fn tensors_side_by_side_in_any_order_are_accepted() {
    let bytes = gguf(&[("b.weight", &[8], F32, 64), ("a.weight", &[16], F32, 0), ("empty", &[0], F32, 0)], 96);
    let facts = check_header(&bytes, "ok.gguf").expect("disjoint tensors are fine");
    assert_eq!(facts.tensors.len(), 3);
}

#[test]
fn rows_of_partial_blocks_are_named_as_such() {
    // Enough bytes follow for any reading of the shape: the problem is the row length, not the size.
    for (ty, row, type_name, block) in [(Q4_0, 48u64, "Q4_0", 32), (Q4_K, 64, "Q4_K", 256)] {
        let bytes = gguf(&[("w.weight", &[row, 4], ty, 0)], 4096);
        let e = refusal(&bytes);
        assert_eq!(e.code, ErrorCode::BadWeights, "{}", e.message);
        assert!(
            e.message.contains(&format!("rows of {row} values, not whole {type_name} blocks of {block}")),
            "{}",
            e.message
        );
        assert!(!e.message.contains("past the end"), "{}", e.message);
    }
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/gguf-llama-tiny/llama-tiny.f32.gguf");

/// `bytes` (a GGUF file) with tensor `name`'s data offset set to `offset`.
fn with_offset(mut bytes: Vec<u8>, name: &str, offset: u64) -> Vec<u8> {
    // The tensor entry: u64 name length, the name, u32 dims, u64 per dim, u32 type, u64 offset.
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend(name.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("tensor entry") + needle.len();
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let offset_at = at + 4 + 8 * dims + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&offset.to_le_bytes());
    bytes
}

#[test]
fn a_real_file_whose_tensor_reuses_another_tensors_data_is_refused() {
    // `blk.0.attn_q.weight` pointed at `blk.0.attn_output.weight`'s bytes (same shape, same type):
    // the model loaded and ran with the wrong weights.
    let original = std::fs::read(FIXTURE).expect("fixture");
    let facts = check_header(&original, "fixture").expect("the fixture is valid");
    let offset = facts.tensors.iter().find(|t| t.name == "blk.0.attn_output.weight").expect("tensor").offset;
    let hostile = with_offset(original, "blk.0.attn_q.weight", offset);
    let e = GgufFile::read(Arc::new(FileBytes::Owned(hostile)), "llama-tiny.gguf").err().expect("refused");
    assert_eq!(e.code, ErrorCode::BadWeights, "{}", e.message);
    assert!(e.message.contains("llama-tiny.gguf") && e.message.contains("overlap"), "{}", e.message);
    assert!(e.message.contains("`blk.0.attn_q.weight`"), "{}", e.message);
}

/// An empty scratch folder for test `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("phoenix-gguf-attack-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Hugging Face cache snapshot: `snapshots/<rev>/<file>.gguf` is a link to `blobs/<hash>`.
#[cfg(unix)]
fn hf_cache_snapshot(root: &std::path::Path) -> std::path::PathBuf {
    let blobs = root.join("models--org--tiny").join("blobs");
    let snapshot = root.join("models--org--tiny").join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::copy(FIXTURE, blobs.join("6f52edf15a16")).unwrap();
    let model = snapshot.join("tiny.f32.gguf");
    std::os::unix::fs::symlink("../../blobs/6f52edf15a16", &model).unwrap();
    model
}

#[cfg(unix)]
#[test]
fn a_gguf_named_by_a_link_into_a_hugging_face_blob_store_loads() {
    // `huggingface-cli download` leaves exactly this layout; the link was refused as resolving
    // outside the model folder although it is the very file the caller named.
    let tmp = scratch("hf-load");
    let model = hf_cache_snapshot(&tmp);
    let direct = phoenix_core::session::LoadedModel::load(std::path::Path::new(FIXTURE)).expect("the fixture loads");
    let linked = phoenix_core::session::LoadedModel::load(&model).expect("the linked GGUF loads");
    let prompt = [1u32, 5, 9];
    assert_eq!(linked.logits(&prompt).unwrap(), direct.logits(&prompt).unwrap());
}

#[cfg(unix)]
#[test]
fn files_beside_a_linked_gguf_still_may_not_leave_its_folder() {
    // Only the file the caller named is followed anywhere: a tokenizer.json beside it that links
    // out of the folder is refused as before.
    let tmp = scratch("hf-side-file");
    let model = hf_cache_snapshot(&tmp);
    let secret = tmp.join("secret.json");
    std::fs::write(&secret, "{}").unwrap();
    std::os::unix::fs::symlink(&secret, model.parent().unwrap().join("tokenizer.json")).unwrap();
    let e = phoenix_core::session::LoadedModel::load(&model).err().expect("refused");
    assert_eq!(e.code, ErrorCode::Tokenizer, "{}", e.message);
    assert!(e.message.contains("resolves outside"), "{}", e.message);
}

/// `bytes` (a GGUF file) with metadata `key` = string `value` added (padded with spaces so the tensor
/// data keeps its alignment).
fn with_string_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    with_string_metadata_bytes(bytes, key, value.as_bytes())
}

/// [`with_string_metadata`] with the string's raw bytes (which GGUF says are UTF-8).
fn with_string_metadata_bytes(bytes: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    let mut value = value.to_vec();
    while !(8 + key.len() + 4 + 8 + value.len()).is_multiple_of(32) {
        value.push(b' ');
    }
    let mut entry = (key.len() as u64).to_le_bytes().to_vec();
    entry.extend(key.as_bytes());
    entry.extend(8u32.to_le_bytes());
    entry.extend((value.len() as u64).to_le_bytes());
    entry.extend(&value);
    let kv_count = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let mut out = bytes[..16].to_vec();
    out.extend((kv_count + 1).to_le_bytes());
    out.extend(entry);
    out.extend(&bytes[24..]);
    out
}

#[test]
fn a_chat_template_that_is_not_utf8_disables_chat_with_a_typed_error() {
    // candle's reader turns bytes that are not UTF-8 into U+FFFD: rendering that would be a template
    // nobody wrote. The model still loads and runs; chat says why it cannot.
    let mut template = b"{% for m in messages %}{{ m.content }}".to_vec();
    template.extend([0xFF, 0xFE]);
    template.extend(b"{% endfor %}");
    let bytes = with_string_metadata_bytes(&std::fs::read(FIXTURE).unwrap(), "tokenizer.chat_template", &template);
    let facts = check_header(&bytes, "t.gguf").unwrap();
    assert_eq!(facts.non_utf8_keys.iter().collect::<Vec<_>>(), ["tokenizer.chat_template"]);
    let dir = scratch("template-not-utf8");
    let model = dir.join("template-not-utf8.gguf");
    std::fs::write(&model, bytes).unwrap();
    let loaded = phoenix_core::session::LoadedModel::load(&model).expect("the model loads");
    assert!(!loaded.info().has_chat_template);
    let messages = [phoenix_core::chat::ChatMessage::new("user", "Hi")];
    let e = loaded.chat_prompt(&messages, true).expect_err("no chat on an altered template");
    assert_eq!(e.code, ErrorCode::BadConfig, "{}", e.message);
    assert!(e.message.contains("tokenizer.chat_template") && e.message.contains("not valid UTF-8"), "{}", e.message);
    let direct = phoenix_core::session::LoadedModel::load(std::path::Path::new(FIXTURE)).unwrap();
    assert_eq!(loaded.logits(&[1, 5, 9]).unwrap(), direct.logits(&[1, 5, 9]).unwrap());
    // A clean header has no such key.
    assert!(check_header(&std::fs::read(FIXTURE).unwrap(), "t.gguf").unwrap().non_utf8_keys.is_empty());
}

#[test]
fn a_vocabulary_token_that_is_not_utf8_is_a_typed_tokenizer_error() {
    // Token 2 of the fixture's vocabulary is "!": one byte 0xFF in its place would be read as U+FFFD,
    // a different token that tokenizes other text, without a word.
    let mut bytes = std::fs::read(FIXTURE).unwrap();
    let key = bytes.windows(21).position(|w| w == b"tokenizer.ggml.tokens").unwrap();
    let bang = key + bytes[key..].windows(9).position(|w| w == b"\x01\0\0\0\0\0\0\0!").unwrap() + 8;
    bytes[bang] = 0xFF;
    let dir = scratch("token-not-utf8");
    let model = dir.join("token-not-utf8.gguf");
    std::fs::write(&model, bytes).unwrap();
    let e = phoenix_core::session::LoadedModel::load(&model).err().expect("refused");
    assert_eq!(e.code, ErrorCode::Tokenizer, "{}", e.message);
    assert!(e.message.contains("`tokenizer.ggml.tokens`") && e.message.contains("not valid UTF-8"), "{}", e.message);
    assert!(e.message.contains("token-not-utf8.gguf"), "{}", e.message);
}

#[test]
fn loading_a_gguf_never_runs_its_chat_template() {
    // The template is file content and minijinja bounds its instructions, not the size of the values
    // it builds: this one asks for a 2^32-element list (hundreds of GB), and the process aborted
    // while merely loading the model (the end-of-turn probe rendered it), e.g. `phoenix-local info`.
    let template = "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}";
    let bytes = with_string_metadata(&std::fs::read(FIXTURE).unwrap(), "tokenizer.chat_template", template);
    let dir = scratch("template-at-load");
    let model = dir.join("hostile-template.gguf");
    std::fs::write(&model, bytes).unwrap();
    let loaded = phoenix_core::session::LoadedModel::load(&model).expect("the model loads");
    assert!(loaded.info().has_chat_template);
    let direct = phoenix_core::session::LoadedModel::load(std::path::Path::new(FIXTURE)).unwrap();
    assert_eq!(loaded.logits(&[1, 5, 9]).unwrap(), direct.logits(&[1, 5, 9]).unwrap());
}

#[test]
fn files_beside_a_gguf_are_its_own_only_when_no_other_gguf_shares_the_folder() {
    // Loose GGUFs in a models dir share the folder: a stray tokenizer.json or tokenizer_config.json
    // there would silently retokenize, or give a chat template to, every one of them.
    let dir = scratch("shared-folder");
    let fixture = std::fs::read(FIXTURE).unwrap();
    std::fs::write(dir.join("a.gguf"), &fixture).unwrap();
    std::fs::write(dir.join("b.gguf"), &fixture).unwrap();
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/llama-tiny");
    std::fs::copy(format!("{tiny}/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let template = r#"{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}"#;
    std::fs::write(dir.join("tokenizer_config.json"), template).unwrap();
    let load = || phoenix_core::session::LoadedModel::load(&dir.join("a.gguf")).expect("loads");

    let shared = load();
    let source = shared.tokenizer().expect("a tokenizer").source().to_string();
    assert!(source.contains("a.gguf") && !source.contains("tokenizer.json"), "{source}");
    assert!(!shared.info().has_chat_template, "the folder's template is not this file's");

    // Alone in its folder, the GGUF's folder is its own: the files beside it count, as documented.
    std::fs::remove_file(dir.join("b.gguf")).unwrap();
    let alone = load();
    let source = alone.tokenizer().expect("a tokenizer").source().to_string();
    assert!(source.contains("tokenizer.json"), "{source}");
    assert!(alone.info().has_chat_template);
    // A folder named like a GGUF is not one.
    std::fs::create_dir(dir.join("c.gguf")).unwrap();
    assert!(load().tokenizer().unwrap().source().contains("tokenizer.json"));
}
