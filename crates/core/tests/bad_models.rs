//! Broken model folders (built in a temp dir from the fixtures) give the right error code, and the
//! message names the file / field / tensor at fault.

mod model_support;

use std::path::{Path, PathBuf};

use model_support::fixture;
use phoenix_core::models::{load_model_dir, load_model_from_memory};
use phoenix_core::{ErrorCode, PhoenixError};

/// A fresh copy of fixture `name` in a unique temp folder, removed on drop.
struct TempModel(PathBuf);

impl TempModel {
    fn copy_of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "phoenix-core-test-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Self(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
    assert_err(&load_err(&m.0), ErrorCode::ModelNotFound, &["config.json"]);
}

#[test]
fn missing_weights_is_model_not_found() {
    let m = TempModel::copy_of("mamba1-tiny", "noweights");
    std::fs::remove_file(m.path("model.safetensors")).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::ModelNotFound, &["model.safetensors", "pytorch_model.bin"]);
}

#[test]
fn malformed_config_is_bad_config_with_line() {
    let m = TempModel::copy_of("mamba1-tiny", "badjson");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), text.replacen("\"expand\": 2,", "\"expand\": 2,,", 1)).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadConfig, &["config.json", "line 9"]);
}

#[test]
fn wrong_field_type_is_bad_config_naming_the_field() {
    let m = TempModel::copy_of("mamba1-tiny", "badfield");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), text.replacen("\"state_size\": 16", "\"state_size\": \"sixteen\"", 1))
        .unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadConfig, &["config.json", "state_size"]);
}

#[test]
fn unknown_model_type_is_unsupported() {
    for kind in ["llama", "mamba2"] {
        let m = TempModel::copy_of("mamba1-tiny", kind);
        let text = std::fs::read_to_string(m.path("config.json")).unwrap();
        std::fs::write(
            m.path("config.json"),
            text.replacen("\"model_type\": \"mamba\"", &format!("\"model_type\": \"{kind}\""), 1),
        )
        .unwrap();
        assert_err(&load_err(&m.0), ErrorCode::UnsupportedModel, &[kind]);
    }
}

#[test]
fn truncated_safetensors_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny", "truncated");
    let bytes = std::fs::read(m.path("model.safetensors")).unwrap();
    std::fs::write(m.path("model.safetensors"), &bytes[..bytes.len() - 1000]).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["model.safetensors"]);
    // Cut inside the header too.
    std::fs::write(m.path("model.safetensors"), &bytes[..100]).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["model.safetensors"]);
}

#[test]
fn corrupt_safetensors_header_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny", "corrupt");
    let mut bytes = std::fs::read(m.path("model.safetensors")).unwrap();
    for b in &mut bytes[8..40] {
        *b = b'#';
    }
    std::fs::write(m.path("model.safetensors"), &bytes).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["model.safetensors"]);
    // A header length pointing past the end of the file.
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(m.path("model.safetensors"), &bytes).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["model.safetensors"]);
}

#[test]
fn corrupt_pytorch_checkpoint_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny-original", "corruptpth");
    let bytes = std::fs::read(m.path("pytorch_model.bin")).unwrap();
    std::fs::write(m.path("pytorch_model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["pytorch_model.bin"]);
}

#[test]
fn missing_tensor_is_bad_weights_naming_it() {
    let m = TempModel::copy_of("mamba1-tiny", "missingtensor");
    edit_safetensors_header(&m.path("model.safetensors"), |h| {
        // Renamed rather than removed: safetensors requires the data ranges to stay contiguous.
        let t = h.remove("backbone.layers.1.mixer.x_proj.weight").unwrap();
        h.insert("backbone.layers.1.mixer.x_proj.renamed".into(), t);
    });
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["backbone.layers.1.mixer.x_proj.weight", "missing"]);
}

#[test]
fn wrong_shape_is_bad_weights_with_both_shapes() {
    let m = TempModel::copy_of("mamba1-tiny", "wrongshape");
    edit_safetensors_header(&m.path("model.safetensors"), |h| {
        // Same byte count, different shape: [128, 16] → [16, 128].
        h.get_mut("backbone.layers.2.mixer.A_log").unwrap()["shape"] = serde_json::json!([16, 128]);
    });
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["backbone.layers.2.mixer.A_log", "[16, 128]", "[128, 16]"]);
}

#[test]
fn config_disagreeing_with_tensors_is_bad_weights() {
    let m = TempModel::copy_of("mamba1-tiny", "sizes");
    let text = std::fs::read_to_string(m.path("config.json")).unwrap();
    std::fs::write(m.path("config.json"), text.replacen("\"time_step_rank\": 4", "\"time_step_rank\": 5", 1)).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["x_proj", "[37, 128]", "[36, 128]"]);
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

    let model = load_model_dir(&m.0).unwrap();
    assert_eq!(model.info().format, "hf-safetensors-sharded");
    let reference = load_model_dir(&fixture("mamba1-tiny")).unwrap();
    let ids = [285u32, 71, 262, 69];
    let (mut a, mut b) = (model.new_state(), reference.new_state());
    let la = model.forward(&ids, a.as_mut(), phoenix_core::LogitsWanted::Last).unwrap();
    let lb = reference.forward(&ids, b.as_mut(), phoenix_core::LogitsWanted::Last).unwrap();
    let diff = la.iter().zip(&lb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // bf16 rounding of most weights moves logits a little, but the model is the same.
    assert!(diff > 0.0 && diff < 0.5, "max diff {diff}");

    // A shard the index names but the folder lacks.
    std::fs::remove_file(m.path("model-00002-of-00002.safetensors")).unwrap();
    assert_err(&load_err(&m.0), ErrorCode::BadWeights, &["model-00002-of-00002.safetensors"]);
}
