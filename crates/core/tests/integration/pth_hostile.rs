//! Hostile and unusual PyTorch checkpoints (`pytorch_model.bin`): every one gives `E_BAD_WEIGHTS` naming
//! the file (and the tensor at fault), quickly, on a small stack, with the process alive; tensors that
//! share storages at offsets (as torch.save writes views of one buffer) load exactly the plain numbers.
//!
//! The hostile checkpoints are the real fixture `mamba1-tiny-original` with its pickle replaced or
//! edited, built here in memory.

use crate::model_support;

use std::io::{Cursor, Read, Write};
use std::time::{Duration, Instant};

use model_support::{fixture, read_reference};
use phoenix_core::models::{load_model_dir, load_model_from_memory};
use phoenix_core::{ErrorCode, LanguageModel, LogitsWanted, PhoenixError};

const PTH: &str = "pytorch_model.bin";

/// The original checkpoint's zip entries, in order.
fn original_entries() -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(fixture("mamba1-tiny-original").join(PTH)).unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

fn original_pickle() -> Vec<u8> {
    original_entries().into_iter().find(|(n, _)| n.ends_with("data.pkl")).unwrap().1
}

/// The original checkpoint with its pickle replaced by `pickle` (all storages kept).
fn checkpoint_with_pickle(pickle: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in original_entries() {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(if name.ends_with("data.pkl") { pickle } else { &data }).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Loads `config.json` + a checkpoint from memory on a thread with a 1 MiB stack (WASM's default; a
/// Node worker has more), within `limit`.
fn load(pth: Vec<u8>, limit: Duration) -> Result<Box<dyn LanguageModel>, PhoenixError> {
    let config = std::fs::read(fixture("mamba1-tiny-original").join("config.json")).unwrap();
    let started = Instant::now();
    let result = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || load_model_from_memory(vec![("config.json".into(), config), (PTH.into(), pth)]))
        .unwrap()
        .join()
        .expect("loading panicked");
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    result
}

fn load_err(pth: Vec<u8>) -> PhoenixError {
    match load(pth, Duration::from_secs(10)) {
        Ok(_) => panic!("a hostile checkpoint loaded"),
        Err(e) => e,
    }
}

fn assert_bad_weights(e: &PhoenixError, needles: &[&str]) {
    assert_eq!(e.code, ErrorCode::BadWeights, "{}", e.to_wire());
    for n in [PTH].iter().chain(needles) {
        assert!(e.message.contains(n), "message {:?} should mention {n:?}", e.message);
    }
}

/// A pickle: protocol 2 header, `body`, STOP.
fn pickle(body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend_from_slice(body);
    p.push(b'.');
    p
}

fn repeat(bytes: &[u8], n: usize) -> Vec<u8> {
    bytes.repeat(n)
}

const DEEP: usize = 1_000_000;

#[test]
fn deeply_nested_pickles_are_bad_weights_not_a_stack_overflow() {
    // Lists: EMPTY_LIST ×N, APPEND ×(N-1): each list inside the one below it.
    let lists = [repeat(b"]", DEEP), repeat(b"a", DEEP - 1)].concat();
    // The same, memoized at the end (candle clones the tree into its memo).
    let memoized = [lists.clone(), b"q\x00".to_vec()].concat();
    // Tuples: MARK ×N, TUPLE ×N.
    let tuples = [repeat(b"(", DEEP), repeat(b"t", DEEP)].concat();
    // Dicts under a state dict: {0: {0: {…}}} via EMPTY_DICT, BININT1 0 pairs and SETITEM ×N.
    let dicts = [repeat(b"}K\x00", DEEP), b"}".to_vec(), repeat(b"s", DEEP)].concat();
    // Persistent ids of persistent ids (BINPERSID wraps the top).
    let persids = [b"N".to_vec(), repeat(b"Q", DEEP)].concat();
    for (what, body) in [("lists", lists), ("memo", memoized), ("tuples", tuples), ("dicts", dicts), ("ids", persids)] {
        let e = load_err(checkpoint_with_pickle(&pickle(&body)));
        assert_bad_weights(&e, &["levels deep"]);
        eprintln!("{what}: {}", e.message);
    }
}

#[test]
fn memo_amplification_is_bad_weights_quickly() {
    // A few hundred bytes each; every round at least doubles the tree candle would clone.
    let list_into_itself = [b"]q\x00".to_vec(), repeat(b"h\x00aq\x00", 60)].concat();
    let pairs = [b"]q\x00".to_vec(), repeat(b"h\x00h\x00\x86q\x00", 60)].concat();
    let dict_of_copies = [b"}q\x00".to_vec(), repeat(b"(K\x01h\x00K\x02h\x00uq\x00", 40)].concat();
    let wide =
        [b"]q\x00".to_vec(), repeat(&[b"(".to_vec(), repeat(b"h\x00", 16), b"eq\x00".to_vec()].concat(), 20)].concat();
    for body in [list_into_itself, pairs, dict_of_copies, wide] {
        assert!(body.len() < 800);
        let e = load_err(checkpoint_with_pickle(&pickle(&body)));
        assert_bad_weights(&e, &["objects"]);
    }
    // One 1 MiB string fetched from the memo 1000 times: a few objects, a GiB of copies.
    let big = [b"X".to_vec(), (1u32 << 20).to_le_bytes().to_vec(), vec![b'x'; 1 << 20], b"q\x00(".to_vec()].concat();
    let body = [big, repeat(b"h\x00", 1000), b"t".to_vec()].concat();
    assert_bad_weights(&load_err(checkpoint_with_pickle(&pickle(&body))), &["bytes of strings"]);
}

#[test]
fn lengths_read_from_the_pickle_are_checked_before_use() {
    // A string claiming 4 GiB in a 10-byte pickle; a LONG1 wider than 64 bits; a truncated pickle.
    for body in [&b"X\xf0\xff\xff\xffabc"[..], b"\x8a\xff\x01\x02", b"J\x01\x02"] {
        let mut p = pickle(body);
        p.pop(); // no STOP either
        assert_bad_weights(&load_err(checkpoint_with_pickle(&p)), &["data.pkl"]);
    }
}

/// The original pickle with its first occurrence of `from` replaced by `to`.
fn edited_pickle(from: &[u8], to: &[u8]) -> Vec<u8> {
    let p = original_pickle();
    let at = p.windows(from.len()).position(|w| w == from).expect("pattern in the fixture pickle");
    [&p[..at], to, &p[at + from.len()..]].concat()
}

/// LONG1 of a 64-bit value.
fn long1(v: i64) -> Vec<u8> {
    [vec![0x8a, 8], v.to_le_bytes().to_vec()].concat()
}

#[test]
fn storage_offsets_outside_the_storage_are_bad_weights() {
    // The first tensor (the embedding) is `BINPERSID, BININT1 0` (offset 0): give it other offsets.
    // 2^62 elements × 4 bytes × 4 wraps to 0 in unchecked arithmetic: it must not load as offset 0.
    for offset in [1i64 << 62, -1, 1, i64::MAX] {
        let p = edited_pickle(b"QK\x00", &[b"Q".to_vec(), long1(offset)].concat());
        let e = load_err(checkpoint_with_pickle(&p));
        assert_bad_weights(&e, &["backbone.embedding.weight"]);
    }
}

#[test]
fn a_tensor_named_twice_is_bad_weights() {
    // Before the final SETITEMS, a second `backbone.norm_f.weight` (64 floats) viewing layer 0's norm
    // storage ("1"); a dict cannot hold a key twice, so one of them would be silently dropped.
    let name = b"backbone.norm_f.weight";
    let mut entry = b"X".to_vec();
    entry.extend((name.len() as u32).to_le_bytes());
    entry.extend(name);
    // _rebuild_tensor_v2((storage, FloatStorage, "1", "cpu", 64), 0, (64,), (1,), False, OrderedDict())
    // using the memo entries the fixture's first tensor stored (2: the function, 3: "storage",
    // 4: FloatStorage, 6: "cpu", 10: OrderedDict).
    entry.extend(b"h\x02((h\x03h\x04X\x01\x00\x00\x001h\x06K\x40tQK\x00K\x40\x85K\x01\x85\x89h\x0a)RtR");
    let p = original_pickle();
    assert_eq!(&p[p.len() - 2..], b"u.");
    let p = [&p[..p.len() - 2], &entry, b"u."].concat();
    assert_bad_weights(&load_err(checkpoint_with_pickle(&p)), &["backbone.norm_f.weight", "twice"]);
}

/// A minimal state dict `{name: _rebuild_tensor_v2(<storage "0" of `class`, numel>, 0, size, stride, …)}`
/// built from opcodes, with `args` the rebuild arguments after the storage reference.
fn one_tensor_pickle(class: &str, numel: u8, args: &[u8]) -> Vec<u8> {
    let mut b = b"}X\x19\x00\x00\x00backbone.embedding.weight".to_vec();
    b.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    b.extend(b"(X\x07\x00\x00\x00storagectorch\n");
    b.extend(class.as_bytes());
    b.extend(b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
    b.push(numel);
    b.extend(b"tQ");
    b.extend(args);
    b.extend(b"tRs");
    pickle(&b)
}

#[test]
fn short_or_malformed_rebuild_arguments_are_bad_weights_not_panics() {
    // Only the storage; storage, offset; a size that is not a tuple; strides missing a dimension.
    for args in [&b""[..], b"K\x00", b"K\x00K\x02K\x01\x85\x89N", b"K\x00K\x02K\x02\x86K\x01\x85\x89N"] {
        let e = load_err(checkpoint_with_pickle(&one_tensor_pickle("FloatStorage", 4, args)));
        assert_bad_weights(&e, &["backbone.embedding.weight"]);
    }
}

#[test]
fn strided_views_and_unsupported_dtypes_stay_typed_errors() {
    // A transposed 2×2 view (stride (1, 2)) of storage "0".
    let transposed = one_tensor_pickle("FloatStorage", 4, b"K\x00K\x02K\x02\x86K\x01K\x02\x86\x89N");
    assert_bad_weights(&load_err(checkpoint_with_pickle(&transposed)), &["backbone.embedding.weight", "contiguous"]);
    let longs = one_tensor_pickle("LongStorage", 4, b"K\x00K\x04\x85K\x01\x85\x89N");
    assert_bad_weights(&load_err(checkpoint_with_pickle(&longs)), &["backbone.embedding.weight", "int64"]);
}

#[test]
fn a_storage_entry_of_the_wrong_size_is_bad_weights() {
    // The fixture's storage "0" holds 32768 floats; declare 4 (a view of 4 inside it).
    let p = one_tensor_pickle("FloatStorage", 4, b"K\x00K\x04\x85K\x01\x85\x89N");
    assert_bad_weights(&load_err(checkpoint_with_pickle(&p)), &["backbone.embedding.weight", "131072 bytes"]);
}

/// All logits for the reference prompt.
fn logits(model: &dyn LanguageModel, ids: &[u32]) -> Vec<f32> {
    let mut st = model.new_state().unwrap();
    model.forward(ids, st.as_mut(), LogitsWanted::All).unwrap()
}

#[test]
fn tensors_sharing_storages_at_offsets_load_the_plain_numbers() {
    // mamba1-tiny-shared-storage (test/fixtures/make-shared-storage-pth.py): the original's 32 tensors
    // as views at element offsets into two shared storages.
    let plain = load_model_dir(&fixture("mamba1-tiny-original")).unwrap();
    let shared = load_model_dir(&fixture("mamba1-tiny-shared-storage")).unwrap();
    assert_eq!(shared.info().format, "state-spaces-pth");
    assert_eq!(shared.info().param_count, plain.info().param_count);
    let ids = read_reference(fixture("mamba1-tiny/reference.json")).input_ids;
    let (a, b) = (logits(plain.as_ref(), &ids), logits(shared.as_ref(), &ids));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "shared-storage logits differ");
    // The original re-zipped without torch's 64-byte alignment (storages at odd offsets, so converted
    // rather than borrowed in place), from memory: the same numbers again.
    let unaligned = checkpoint_with_pickle(&original_pickle());
    let mut zip = zip::ZipArchive::new(Cursor::new(&unaligned[..])).unwrap();
    let misaligned = (0..zip.len())
        .filter(|&i| {
            let f = zip.by_index_raw(i).unwrap();
            f.name().unwrap().contains("/data/") && !f.data_start().unwrap().is_multiple_of(4)
        })
        .count();
    assert!(misaligned > 0, "the re-zipped storages happen to be aligned");
    let rezipped = load(unaligned, Duration::from_secs(10)).unwrap();
    let c = logits(rezipped.as_ref(), &ids);
    assert!(a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()), "unaligned checkpoint logits differ");
}
