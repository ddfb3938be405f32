//! Broken model folders (built in a temp dir from the fixtures) give the right error code, and the
//! message names the file / field / tensor at fault.

use crate::model_support;

use std::path::{Path, PathBuf};

use model_support::fixture;
use phoenix_core::models::{load_model_dir, load_model_from_memory};
use phoenix_core::{ErrorCode, PhoenixError};

/// A fresh copy of fixture `name` at `<unique temp dir>/models/m` (so a test can put files next to
/// the models dir, outside the model's reach), removed on drop.
struct TempModel {
    /// The unique temp folder holding `models/`.
    base: PathBuf,
    /// The model folder.
    dir: PathBuf,
}

impl TempModel {
    fn copy_of(name: &str, tag: &str) -> Self {
        let base = std::env::temp_dir().join(format!(
            "phoenix-core-test-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let dir = base.join("models").join("m");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Self { base, dir }
    }
    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn load_err(dir: &Path) -> PhoenixError {
    match load_model_dir(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

fn assert_err(e: &PhoenixError, code: ErrorCode, needles: &[&str]) {
    assert_eq!(e.code, code, "{}", e.to_wire());
    for n in needles {
        assert!(e.message.contains(n), "message {:?} should mention {n:?}", e.message);
    }
}

/// Rewrites the safetensors header of `file` with `edit` applied to the JSON (data left as is).
fn edit_safetensors_header(file: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut new_header = serde_json::to_vec(&header).unwrap();
    while !new_header.len().is_multiple_of(8) {
        new_header.push(b' ');
    }
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend(new_header);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

#[test]
fn missing_folder_is_model_not_found() {
    let dir = std::env::temp_dir().join("phoenix-core-test-no-such-model-folder");
    assert_err(&load_err(&dir), ErrorCode::ModelNotFound, &["phoenix-core-test-no-such-model-folder"]);
}

#[test]
fn missing_config_is_model_not_found() {
    let m = TempModel::copy_of("mamba1-tiny", "noconfig");
    std::fs::remove_file(m.path("config.json")).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::ModelNotFound, &["config.json"]);
}

#[test]
fn missing_weights_is_model_not_found() {
    let m = TempModel::copy_of("mamba1-tiny", "noweights");
    std::fs::remove_file(m.path("model.safetensors")).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::ModelNotFound, &["model.safetensors", "pytorch_model.bin"]);
}

#[test]
fn malformed_config_is_bad_config_with_line() {
    let m = TempModel::copy_of("mamba1-tiny", "badjson");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), text.replacen("\"expand\": 2,", "\"expand\": 2,,", 1)).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadConfig, &["config.json", "line 9"]);
}

#[test]
fn wrong_field_type_is_bad_config_naming_the_field() {
    let m = TempModel::copy_of("mamba1-tiny", "badfield");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), text.replacen("\"state_size\": 16", "\"state_size\": \"sixteen\"", 1))
        .unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadConfig, &["config.json", "state_size"]);
}

#[test]
fn unknown_model_type_is_unsupported() {
    for kind in ["gpt2", "rwkv"] {
        let m = TempModel::copy_of("mamba1-tiny", kind);
        let text = std::fs::read_to_string(m.path("config.json")).unwrap();
        std::fs::write(
            m.path("config.json"),
            text.replacen("\"model_type\": \"mamba\"", &format!("\"model_type\": \"{kind}\""), 1),
        )
        .unwrap();
        assert_err(&load_err(&m.dir), ErrorCode::UnsupportedModel, &[kind]);
    }
}

#[test]
fn truncated_safetensors_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny", "truncated");
    let bytes = std::fs::read(m.path("model.safetensors")).unwrap();
    let describe = || phoenix_core::describe::describe_dir(&m.dir).unwrap_err();
    std::fs::write(m.path("model.safetensors"), &bytes[..bytes.len() - 1000]).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["model.safetensors", "truncated"]);
    // Describing the folder (what the model manager lists) finds it from the header, as the load does.
    assert_eq!(describe(), load_err(&m.dir));
    // Cut inside the header too; and one byte too many is no better.
    std::fs::write(m.path("model.safetensors"), &bytes[..100]).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["model.safetensors"]);
    assert_eq!(describe(), load_err(&m.dir));
    std::fs::write(m.path("model.safetensors"), [&bytes[..], &[0]].concat()).unwrap();
    assert_eq!(describe(), load_err(&m.dir));
}

#[test]
fn corrupt_safetensors_header_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny", "corrupt");
    let mut bytes = std::fs::read(m.path("model.safetensors")).unwrap();
    for b in &mut bytes[8..40] {
        *b = b'#';
    }
    std::fs::write(m.path("model.safetensors"), &bytes).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["model.safetensors"]);
    // A header length pointing past the end of the file.
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(m.path("model.safetensors"), &bytes).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["model.safetensors"]);
}

#[test]
fn corrupt_pytorch_checkpoint_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny-original", "corruptpth");
    let bytes = std::fs::read(m.path("pytorch_model.bin")).unwrap();
    std::fs::write(m.path("pytorch_model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["pytorch_model.bin"]);
}

#[test]
fn missing_tensor_is_bad_weights_naming_it() {
    let m = TempModel::copy_of("mamba1-tiny", "missingtensor");
    edit_safetensors_header(&m.path("model.safetensors"), |h| {
        // Renamed rather than removed: safetensors requires the data ranges to stay contiguous.
        let t = h.remove("backbone.layers.1.mixer.x_proj.weight").unwrap();
        h.insert("backbone.layers.1.mixer.x_proj.renamed".into(), t);
    });
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["backbone.layers.1.mixer.x_proj.weight", "missing"]);
}

#[test]
fn wrong_shape_is_bad_weights_with_both_shapes() {
    let m = TempModel::copy_of("mamba1-tiny", "wrongshape");
    edit_safetensors_header(&m.path("model.safetensors"), |h| {
        // Same byte count, different shape: [128, 16] → [16, 128].
        h.get_mut("backbone.layers.2.mixer.A_log").unwrap()["shape"] = serde_json::json!([16, 128]);
    });
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["backbone.layers.2.mixer.A_log", "[16, 128]", "[128, 16]"]);
}

#[test]
fn config_disagreeing_with_tensors_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny", "sizes");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), text.replacen("\"time_step_rank\": 4", "\"time_step_rank\": 5", 1)).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["x_proj", "[37, 128]", "[36, 128]"]);
}

#[test]
fn in_memory_files_load_like_a_folder() {
    let dir = fixture("mamba1-tiny");
    let files = ["config.json", "model.safetensors"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    let model = load_model_from_memory(files).unwrap();
    assert_eq!(model.info().format, "hf-safetensors");
    let e = match load_model_from_memory(vec![("model.safetensors".into(), vec![0; 16])]) {
        Ok(_) => panic!("loaded without config"),
        Err(e) => e,
    };
    assert_err(&e, ErrorCode::ModelNotFound, &["config.json"]);
    // The original layout from bytes too (pickle read from memory, not a path).
    let dir = fixture("mamba1-tiny-original");
    let files = ["config.json", "pytorch_model.bin"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    assert_eq!(load_model_from_memory(files).unwrap().info().format, "state-spaces-pth");
}

/// Writes `tensors` (name → (dtype, shape, bytes)) as one safetensors file.
fn write_safetensors(path: &Path, tensors: &[(String, String, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn sharded_safetensors_with_f32_and_bf16_shards_load() {
    let m = TempModel::copy_of("mamba1-tiny", "sharded");
    let bytes = std::fs::read(m.path("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // Shard 1 keeps f32; shard 2 stores its tensors as bf16 (per-tensor dtype must be honoured).
    let (mut s1, mut s2) = (Vec::new(), Vec::new());
    let mut weight_map = serde_json::Map::new();
    for (name, view) in st.tensors() {
        let in_first = name.starts_with("backbone.layers.0.") || name.starts_with("backbone.embeddings");
        if in_first {
            s1.push((name.clone(), "F32".to_string(), view.shape().to_vec(), view.data().to_vec()));
            weight_map.insert(name.clone(), "model-00001-of-00002.safetensors".into());
        } else {
            let bf: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| half::bf16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
                .collect();
            s2.push((name.clone(), "BF16".to_string(), view.shape().to_vec(), bf));
            weight_map.insert(name.clone(), "model-00002-of-00002.safetensors".into());
        }
    }
    write_safetensors(&m.path("model-00001-of-00002.safetensors"), &s1);
    write_safetensors(&m.path("model-00002-of-00002.safetensors"), &s2);
    std::fs::remove_file(m.path("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(m.path("model.safetensors.index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

    let model = load_model_dir(&m.dir).unwrap();
    assert_eq!(model.info().format, "hf-safetensors-sharded");
    let reference = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let ids = [285u32, 71, 262, 69];
    let (mut a, mut b) = (model.new_state().unwrap(), reference.new_state().unwrap());
    let la = model.forward(&ids, a.as_mut(), phoenix_core::LogitsWanted::Last).unwrap();
    let lb = reference.forward(&ids, b.as_mut(), phoenix_core::LogitsWanted::Last).unwrap();
    let diff = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // bf16 rounding of most weights moves logits a little, but the model is the same.
    assert!(diff > 0.0 && diff < 0.5, "max diff {diff}");

    // A shard the index names but the folder lacks.
    std::fs::remove_file(m.path("model-00002-of-00002.safetensors")).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["model-00002-of-00002.safetensors"]);
}

// ---- hostile folders: sizes, file kinds, escapes, contents in messages, numbers, weight_map ----

/// Replaces `from` by `to` in the model's config.json (the text must be there).
fn edit_config(m: &TempModel, from: &str, to: &str) {
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    assert!(text.contains(from), "config.json lacks {from:?}");
    std::fs::write(m.path("config.json"), text.replacen(from, to, 1)).unwrap();
}

/// Overwrites element `index` of f32 tensor `name` in `file` with `value` (header left as is).
fn poke_f32(file: &Path, name: &str, index: usize, value: f32) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header[name]["dtype"], "F32", "{name}");
    let at = 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize + index * 4;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_layer_count_beyond_the_weights_is_bad_config_not_an_abort() {
    // 10**8 layers made the loader reserve ~50 GB up front and abort the process.
    for (fixture_name, field) in [("mamba1-tiny", "num_hidden_layers"), ("mamba1-tiny-original", "n_layer")] {
        for count in ["100000000", "1000000000000", "2", "4"] {
            let m = TempModel::copy_of(fixture_name, "layers");
            let text = std::fs::read_to_string(m.path("config.json")).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let mut v = v;
            assert_eq!(v[field], 3);
            v[field] = serde_json::from_str(count).unwrap();
            std::fs::write(m.path("config.json"), serde_json::to_vec(&v).unwrap()).unwrap();
            assert_err(&load_err(&m.dir), ErrorCode::BadConfig, &["config.json", field, "3 layers"]);
        }
    }
}

#[test]
fn size_products_that_overflow_are_bad_config() {
    let m = TempModel::copy_of("mamba1-tiny", "overflow");
    // E = 2 * D overflows usize; state bytes overflow too.
    edit_config(&m, "\"hidden_size\": 64", &format!("\"hidden_size\": {}", u64::MAX / 2));
    edit_config(&m, "\"intermediate_size\": 128,", "");
    // Refused as a config problem before any tensor is looked at (it wrapped silently before).
    assert_err(&load_err(&m.dir), ErrorCode::BadConfig, &["config.json", "overflow", "`hidden_size`"]);
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Runs `f` on another thread; a hang past 20 s fails the test instead of blocking the suite.
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20)).expect("hung reading a file that is not a regular file")
}

#[cfg(unix)]
#[test]
fn fifos_folders_and_devices_are_refused_by_name() {
    // A config.json that is a FIFO, a folder or /dev/zero: E_BAD_CONFIG saying so, not "not found".
    for kind in ["fifo", "folder", "device"] {
        let m = TempModel::copy_of("mamba1-tiny", kind);
        let config = m.path("config.json");
        std::fs::remove_file(&config).unwrap();
        match kind {
            "fifo" => mkfifo(&config),
            "folder" => std::fs::create_dir(&config).unwrap(),
            _ => {
                // Inside the folder (a symlink out would be refused as an escape first).
                let ok = std::process::Command::new("cp").args(["-a", "/dev/null"]).arg(&config).status();
                if !ok.map(|s| s.success()).unwrap_or(false) {
                    continue; // creating device nodes needs privileges
                }
            }
        }
        let dir = m.dir.clone();
        let e = within_seconds(move || load_model_dir(&dir).err().expect("loaded"));
        assert_err(&e, ErrorCode::BadConfig, &["config.json", "not a regular file"]);
    }
    // Weights that are a FIFO or a folder: E_BAD_WEIGHTS naming the file, not "no weights found".
    for kind in ["fifo", "folder"] {
        let m = TempModel::copy_of("mamba1-tiny", kind);
        let weights = m.path("model.safetensors");
        std::fs::remove_file(&weights).unwrap();
        if kind == "fifo" {
            mkfifo(&weights)
        } else {
            std::fs::create_dir(&weights).unwrap()
        }
        let dir = m.dir.clone();
        let e = within_seconds(move || load_model_dir(&dir).err().expect("loaded"));
        assert_err(&e, ErrorCode::BadWeights, &["model.safetensors", "not a regular file"]);
    }
    // The tokenizer read by path (a FIFO blocked the reading thread forever).
    let m = TempModel::copy_of("mamba1-tiny", "tokfifo");
    let tok = m.path("tokenizer.json");
    std::fs::remove_file(&tok).unwrap();
    mkfifo(&tok);
    let e = within_seconds(move || phoenix_core::tokenizer::Tokenizer::from_file(&tok).unwrap_err());
    assert_err(&e, ErrorCode::Tokenizer, &["tokenizer.json", "not a regular file"]);
}

#[test]
fn an_oversized_config_is_refused_before_parsing() {
    let m = TempModel::copy_of("mamba1-tiny", "bigconfig");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    // Valid JSON, padded past the metadata cap with whitespace.
    std::fs::write(m.path("config.json"), format!("{}{}", " ".repeat(9 << 20), text)).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadConfig, &["config.json", "too large"]);
}

#[cfg(unix)]
#[test]
fn files_resolving_outside_the_folder_are_refused_without_quoting_them() {
    // config.json symlinked to a file beside the models dir: refused, and nothing of it is shown.
    let m = TempModel::copy_of("mamba1-tiny", "escape");
    let secret = m.base.join("secret.json");
    std::fs::write(&secret, r#"{"model_type": "root:x:0:0:SECRET-LINE"}"#).unwrap();
    std::fs::remove_file(m.path("config.json")).unwrap();
    std::os::unix::fs::symlink(&secret, m.path("config.json")).unwrap();
    let e = load_err(&m.dir);
    assert_err(&e, ErrorCode::BadConfig, &["config.json", "outside"]);
    assert!(!e.message.contains("SECRET"), "{}", e.message);

    // Weights symlinked out of reach: refused (they loaded before).
    let m = TempModel::copy_of("mamba1-tiny", "escapeweights");
    let outside = m.base.join("elsewhere.safetensors");
    std::fs::rename(m.path("model.safetensors"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, m.path("model.safetensors")).unwrap();
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["model.safetensors", "outside"]);

    // …while a link to a file in the models dir (the folder's parent) or inside the folder is fine.
    let shared = m.base.join("models").join("shared.safetensors");
    std::fs::rename(&outside, &shared).unwrap();
    std::fs::remove_file(m.path("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("../shared.safetensors", m.path("model.safetensors")).unwrap();
    load_model_dir(&m.dir).expect("a weight file in the models dir is inside reach");
}

#[test]
fn config_values_are_never_quoted_in_messages() {
    let m = TempModel::copy_of("mamba1-tiny", "quote");
    edit_config(&m, "\"state_size\": 16", "\"state_size\": \"root:x:0:0:SECRET\"");
    let e = load_err(&m.dir);
    assert_err(&e, ErrorCode::BadConfig, &["config.json", "state_size"]);
    assert!(!e.message.contains("SECRET"), "{}", e.message);

    let m = TempModel::copy_of("mamba1-tiny", "quotetype");
    edit_config(&m, "\"model_type\": \"mamba\"", "\"model_type\": \"root:x:0:0:SECRET /bin/sh\"");
    let e = load_err(&m.dir);
    assert_err(&e, ErrorCode::UnsupportedModel, &["config.json", "model_type"]);
    assert!(!e.message.contains("SECRET"), "{}", e.message);

    // A safetensors header whose dtype is not one safetensors knows: serde named the bad value.
    let m = TempModel::copy_of("mamba1-tiny", "quotedtype");
    edit_safetensors_header(&m.path("model.safetensors"), |h| {
        h.get_mut("backbone.norm_f.weight").unwrap()["dtype"] = serde_json::json!("SECRET-DTYPE");
    });
    let e = load_err(&m.dir);
    assert_err(&e, ErrorCode::BadWeights, &["model.safetensors"]);
    assert!(!e.message.contains("SECRET"), "{}", e.message);

    // tokenizer.json with a value its schema does not know.
    let m = TempModel::copy_of("mamba1-tiny", "quotetok");
    let text = std::fs::read_to_string(m.path("tokenizer.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut v = v;
    v["model"]["type"] = serde_json::json!("SECRET-MODEL-KIND");
    std::fs::write(m.path("tokenizer.json"), serde_json::to_vec(&v).unwrap()).unwrap();
    let e = phoenix_core::tokenizer::Tokenizer::from_file(&m.path("tokenizer.json")).unwrap_err();
    assert_err(&e, ErrorCode::Tokenizer, &["tokenizer.json"]);
    assert!(!e.message.contains("SECRET"), "{}", e.message);
}

#[test]
fn non_finite_small_tensors_are_bad_weights_naming_tensor_and_file() {
    for (name, value) in [
        ("backbone.layers.1.mixer.A_log", f32::NAN),
        ("backbone.layers.0.mixer.D", f32::INFINITY),
        ("backbone.layers.2.mixer.dt_proj.bias", f32::NAN),
        ("backbone.layers.0.mixer.conv1d.bias", f32::NEG_INFINITY),
        ("backbone.layers.1.norm.weight", f32::NAN),
        ("backbone.norm_f.weight", f32::INFINITY),
    ] {
        let m = TempModel::copy_of("mamba1-tiny", "nonfinite");
        poke_f32(&m.path("model.safetensors"), name, 3, value);
        assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &[name, "model.safetensors", "non-finite"]);
    }
}

#[test]
fn an_untied_head_must_be_stored() {
    let m = TempModel::copy_of("mamba1-tiny", "untied");
    edit_config(&m, "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["lm_head.weight", "tie_word_embeddings"]);
}

/// Splits the fixture's weights into two shards by `in_first`, with an index built by `map_for`
/// (tensor name → shard names it is written to; the weight_map gets the first).
fn write_shards(m: &TempModel, place: impl Fn(&str) -> Vec<&'static str>, map: impl Fn(&str) -> Option<String>) {
    let bytes = std::fs::read(m.path("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut shards: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (name, view) in st.tensors() {
        for shard in place(&name) {
            shards.entry(shard).or_default().push((
                name.clone(),
                "F32".to_string(),
                view.shape().to_vec(),
                view.data().to_vec(),
            ));
        }
        if let Some(shard) = map(&name) {
            weight_map.insert(name.clone(), shard.into());
        }
    }
    for (shard, tensors) in shards {
        write_safetensors(&m.path(shard), &tensors);
    }
    std::fs::remove_file(m.path("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(m.path("model.safetensors.index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

const S1: &str = "s-1.safetensors";
const S2: &str = "s-2.safetensors";

fn first(name: &str) -> bool {
    name.starts_with("backbone.layers.0.") || name.starts_with("backbone.embeddings")
}

#[test]
fn sharded_weights_follow_the_weight_map_exactly() {
    let home = |name: &str| if first(name) { S1 } else { S2 };
    // The map as written: loads.
    let m = TempModel::copy_of("mamba1-tiny", "mapok");
    write_shards(&m, |n| vec![home(n)], |n| Some(home(n).to_string()));
    load_model_dir(&m.dir).expect("a consistent sharded checkpoint loads");

    // The same tensor in both shards (one of them not the map's): refused, not "last shard wins".
    let m = TempModel::copy_of("mamba1-tiny", "twice");
    write_shards(
        &m,
        |n| if n == "backbone.norm_f.weight" { vec![S1, S2] } else { vec![home(n)] },
        |n| Some(home(n).to_string()),
    );
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["backbone.norm_f.weight", S1, "weight_map"]);

    // The map names a shard that lacks the tensor.
    let m = TempModel::copy_of("mamba1-tiny", "wrongshard");
    write_shards(
        &m,
        |n| vec![home(n)],
        |n| Some(if n == "backbone.layers.2.mixer.D" { S1 } else { home(n) }.to_string()),
    );
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["backbone.layers.2.mixer.D", "weight_map"]);

    // A tensor in a shard the map does not list at all.
    let m = TempModel::copy_of("mamba1-tiny", "unlisted");
    write_shards(&m, |n| vec![home(n)], |n| (n != "backbone.layers.1.mixer.A_log").then(|| home(n).to_string()));
    assert_err(&load_err(&m.dir), ErrorCode::BadWeights, &["backbone.layers.1.mixer.A_log", "weight_map"]);
}

#[test]
fn shard_names_must_be_plain_file_names_in_the_folder() {
    // The index points at a valid checkpoint outside the folder: it loaded before (absolute path or `..`).
    for bad in ["ABSOLUTE", "../../outside.safetensors", "sub/s-1.safetensors", "..", ""] {
        let m = TempModel::copy_of("mamba1-tiny", "shardname");
        std::fs::copy(m.path("model.safetensors"), m.base.join("outside.safetensors")).unwrap();
        std::fs::create_dir(m.path("sub")).unwrap();
        std::fs::copy(m.path("model.safetensors"), m.path("sub/s-1.safetensors")).unwrap();
        let shard =
            if bad == "ABSOLUTE" { m.base.join("outside.safetensors").display().to_string() } else { bad.into() };
        write_shards(&m, |_| vec![S1], |_| Some(shard.clone()));
        let e = load_err(&m.dir);
        assert_err(&e, ErrorCode::BadWeights, &["model.safetensors.index.json", "plain file name"]);
        // The in-memory (WASM / browser) path applies the same rule.
        let files: Vec<(String, Vec<u8>)> = ["config.json", "model.safetensors.index.json", S1]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(m.path(f)).unwrap()))
            .chain([(shard.clone(), std::fs::read(m.path(S1)).unwrap())])
            .collect();
        let e = load_model_from_memory(files).err().expect("loaded");
        assert_err(&e, ErrorCode::BadWeights, &["plain file name"]);
    }
}

/// `describe` (what the TypeScript manager lists and hashes) agrees with what a load reads and reports,
/// for every container, and fails the way a load fails first.
#[test]
fn describe_names_the_files_and_format_a_load_uses() {
    use phoenix_core::describe::describe_dir;
    for (fixture_name, format, weights) in [
        ("mamba1-tiny", "hf-safetensors", vec!["model.safetensors"]),
        ("mamba1-tiny-original", "state-spaces-pth", vec!["pytorch_model.bin"]),
    ] {
        let layout = describe_dir(&fixture(fixture_name)).unwrap();
        let info = load_model_dir(&fixture(fixture_name)).unwrap().info().clone();
        assert_eq!((layout.format.as_str(), layout.family.as_str()), (format, "mamba"), "{fixture_name}");
        assert_eq!(
            (layout.format.as_str(), layout.model_type.as_str()),
            (info.format.as_str(), info.model_type.as_str())
        );
        assert_eq!((layout.engine, layout.family), (info.engine, info.family));
        assert_eq!(layout.weight_files, weights);
    }
    // Shards: every shard once, sorted; the index is a side file.
    let m = TempModel::copy_of("mamba1-tiny", "describe-shards");
    write_shards(&m, |n| vec![if first(n) { S1 } else { S2 }], |n| Some(if first(n) { S1 } else { S2 }.to_string()));
    let layout = describe_dir(&m.dir).unwrap();
    assert_eq!(layout.weight_files, vec![S1, S2]);
    assert_eq!(
        layout.side_files,
        vec!["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"]
    );
    assert_eq!(layout.format, load_model_dir(&m.dir).unwrap().info().format);
    // A truncated shard, a listed shard that is missing, an unknown family, no weights: the codes a
    // load gives.
    let whole = std::fs::read(m.path(S2)).unwrap();
    std::fs::write(m.path(S2), &whole[..whole.len() - 1]).unwrap();
    let e = describe_dir(&m.dir).unwrap_err();
    assert_eq!(e, load_err(&m.dir));
    assert_err(&e, ErrorCode::BadWeights, &[S2, "truncated"]);
    std::fs::remove_file(m.path(S2)).unwrap();
    assert_err(&describe_dir(&m.dir).unwrap_err(), ErrorCode::BadWeights, &[S2, "missing"]);
    let m = TempModel::copy_of("mamba1-tiny", "describe-family");
    edit_config(&m, "\"model_type\": \"mamba\"", "\"model_type\": \"gpt9\"");
    let e = describe_dir(&m.dir).unwrap_err();
    assert_eq!(e, load_err(&m.dir));
    assert_err(&e, ErrorCode::UnsupportedModel, &["gpt9", "mamba, falcon_mamba"]);
    let m = TempModel::copy_of("mamba1-tiny", "describe-noweights");
    std::fs::remove_file(m.path("model.safetensors")).unwrap();
    assert_eq!(describe_dir(&m.dir).unwrap_err(), load_err(&m.dir));
}

/// `use_mmap: false` (llama.cpp's `--no-mmap`): the weights are read into memory, so a file cut short
/// in place under the loaded model (what `cp` over it does) leaves it generating the same tokens. A
/// mapped model would fault (`SIGBUS`) here, which is why the mapped case is not run.
#[test]
fn a_model_read_into_memory_outlives_its_file_being_truncated() {
    use phoenix_core::generate::GenerateOptions;
    use phoenix_core::session::{LoadedModel, Prompt};
    use std::sync::Arc;
    let m = TempModel::copy_of("mamba1-tiny", "no-mmap");
    let greedy = || GenerateOptions { max_tokens: 6, temperature: 0.0, ..Default::default() };
    let tokens = |model: &Arc<LoadedModel>| {
        let mut g = model.generate(Prompt::Ids(vec![1, 2, 3]), greedy(), None).unwrap();
        let mut ids = Vec::new();
        while let Some(step) = g.next_step().unwrap() {
            ids.extend(step.token_id);
        }
        ids
    };
    let mapped = Arc::new(LoadedModel::load(&m.dir).unwrap());
    let expected = tokens(&mapped);
    drop(mapped);
    let options = phoenix_core::LoadOptions { use_mmap: false, ..Default::default() };
    let read = Arc::new(LoadedModel::load_with(&m.dir, &options).unwrap());
    std::fs::OpenOptions::new().write(true).open(m.path("model.safetensors")).unwrap().set_len(100).unwrap();
    assert_eq!(tokens(&read), expected);
    // Loading it again now fails typed, as any load of a truncated file.
    assert_err(&LoadedModel::load_with(&m.dir, &options).err().unwrap(), ErrorCode::BadWeights, &["model.safetensors"]);
}
