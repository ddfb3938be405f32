//! Which files to hand the core when it cannot open them itself (WASM: JS reads a folder or fetches
//! URLs). The caller asks, reads what it is told, and asks again until the answer is empty; the
//! order and the choice of weight container are the core's, so a folder holding both
//! `model.safetensors` and `pytorch_model.bin` is read once, and no binding keeps a copy of the rules.

use super::files::{in_root, is_gguf_name, plain_file_name, the_one_gguf};
use super::{safetensors_file, SAFETENSORS_INDEX_FILE, WEIGHT_CONTAINERS};
use crate::chat::{CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE};
use crate::config::CONFIG_FILE;
use crate::error::{invalid_option, model_not_found, Result};
use crate::tokenizer::TOKENIZER_FILE;

/// Read whenever present, before any weights (so a bad config fails before megabytes are fetched).
pub const SIDE_FILES: [&str; 4] = [CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE];

/// Read beside a GGUF model when present (its config comes from the header, so no `config.json`).
pub const GGUF_SIDE_FILES: [&str; 3] = [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE];

/// What the caller has looked for so far.
#[derive(Debug, Default, Clone)]
pub struct ReadProgress<'a> {
    /// Files read (present).
    pub present: &'a [String],
    /// Files looked for and not found.
    pub absent: &'a [String],
    /// Files found but refused by the reader (a FIFO, a link out of the folder): counted as found,
    /// never read, so a refused shard index ends the plan and the load reports the refusal.
    pub refused: &'a [String],
    /// The bytes of `model.safetensors.index.json` once it is present (its shards come next).
    pub index: Option<&'a [u8]>,
    /// Where the files come from (folder path / base URL), for messages about a bad index.
    pub root: &'a str,
    /// The `.gguf` file that is the model ([`model_gguf`]), when there is one.
    pub gguf: Option<&'a str>,
    /// That file shares its folder with other `.gguf` files ([`gguf_shares_folder`]): nothing
    /// beside it is read.
    pub gguf_shares_folder: bool,
}

/// Whether the model file `gguf` shares its folder with another `.gguf` among the names the reader
/// `listed` (loose GGUFs in a models dir), as [`super::ModelFiles::from_dir`] decides on disk: the
/// folder is then not the model's, and files beside it are not its.
pub fn gguf_shares_folder(gguf: &str, listed: Option<&[String]>) -> bool {
    listed.is_some_and(|names| names.iter().any(|n| n != gguf && is_gguf_name(n)))
}

/// The `.gguf` file that is the model of a reader's files, as [`super::ModelFiles::gguf_file`]
/// decides for a folder on disk: `named` (the model was named by a path to a file: that file's
/// name; anything but a `.gguf` is not a model), else the one `.gguf` among the names the reader
/// `listed` when they hold no `config.json`. `None`: a Hugging Face folder.
pub fn model_gguf(named: Option<&str>, listed: Option<&[String]>, root: &str) -> Result<Option<String>> {
    if let Some(name) = named {
        if !is_gguf_name(name) || plain_file_name(name).is_err() {
            return Err(model_not_found(format!("model path {} is not a folder", in_root(root, name))));
        }
        return Ok(Some(name.to_string()));
    }
    match listed {
        Some(names) if !names.iter().any(|n| n == CONFIG_FILE) => the_one_gguf(names.to_vec(), root),
        _ => Ok(None),
    }
}

/// The next files to read (empty: everything needed has been looked for; load now). A load then
/// reports anything still missing with its usual error, e.g. no weights → `E_MODEL_NOT_FOUND`.
pub fn files_to_read(progress: &ReadProgress) -> Result<Vec<String>> {
    let seen = |name: &str| progress.present.iter().chain(progress.absent).chain(progress.refused).any(|f| f == name);
    if let Some(gguf) = progress.gguf {
        // The tokenizer and chat template files beside it first (small), then the model itself.
        let beside: &[&str] = if progress.gguf_shares_folder { &[] } else { &GGUF_SIDE_FILES };
        let wanted = beside.iter().copied().filter(|f| !seen(f)).map(str::to_string).collect::<Vec<_>>();
        if !wanted.is_empty() || seen(gguf) {
            return Ok(wanted);
        }
        return Ok(vec![gguf.to_string()]);
    }
    let side: Vec<String> = SIDE_FILES.iter().filter(|f| !seen(f)).map(|f| f.to_string()).collect();
    if !side.is_empty() {
        return Ok(side);
    }
    for container in WEIGHT_CONTAINERS {
        if progress.absent.iter().any(|f| f == container) {
            continue;
        }
        if progress.refused.iter().any(|f| f == container) {
            return Ok(Vec::new());
        }
        if !progress.present.iter().any(|f| f == container) {
            return Ok(vec![container.to_string()]);
        }
        if container != SAFETENSORS_INDEX_FILE {
            return Ok(Vec::new());
        }
        let index = progress.index.ok_or_else(|| {
            invalid_option(format!(
                "files_to_read: {SAFETENSORS_INDEX_FILE} was read; pass its bytes to list its shards"
            ))
        })?;
        let label = in_root(progress.root, SAFETENSORS_INDEX_FILE);
        let text = String::from_utf8_lossy(index);
        let index = safetensors_file::ShardIndex::parse(&text, &label)?;
        // A shard found absent is reported by the load ("shard … is missing"), not asked for again.
        return Ok(index.shards().into_iter().filter(|s| !seen(s)).map(str::to_string).collect());
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::loader::{PTH_FILE, SAFETENSORS_FILE};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn plan(present: &[&str], absent: &[&str], index: Option<&[u8]>) -> Result<Vec<String>> {
        let (present, absent) = (names(present), names(absent));
        files_to_read(&ReadProgress {
            present: &present,
            absent: &absent,
            refused: &[],
            index,
            root: "models/m",
            gguf: None,
            gguf_shares_folder: false,
        })
    }

    #[test]
    fn side_files_come_first_then_containers_in_detection_order() {
        assert_eq!(plan(&[], &[], None).unwrap(), names(&SIDE_FILES));
        let side = SIDE_FILES;
        assert_eq!(plan(&side, &[], None).unwrap(), names(&[SAFETENSORS_INDEX_FILE]));
        assert_eq!(
            plan(
                &[CONFIG_FILE],
                &[TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SAFETENSORS_INDEX_FILE],
                None
            )
            .unwrap(),
            names(&[SAFETENSORS_FILE])
        );
        let no_st =
            [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SAFETENSORS_INDEX_FILE, SAFETENSORS_FILE];
        assert_eq!(plan(&[CONFIG_FILE], &no_st, None).unwrap(), names(&[PTH_FILE]));
    }

    #[test]
    fn stops_at_the_first_container_present() {
        let present = [CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SAFETENSORS_FILE];
        assert!(plan(&present, &[SAFETENSORS_INDEX_FILE], None).unwrap().is_empty());
        // Nothing found at all: done, and the load reports the missing weights.
        let absent = [
            TOKENIZER_FILE,
            TOKENIZER_CONFIG_FILE,
            CHAT_TEMPLATE_FILE,
            SAFETENSORS_INDEX_FILE,
            SAFETENSORS_FILE,
            PTH_FILE,
        ];
        assert!(plan(&[CONFIG_FILE], &absent, None).unwrap().is_empty());
    }

    #[test]
    fn an_index_asks_for_each_shard_once() {
        let index = br#"{"weight_map": {"a": "s-1.safetensors", "b": "s-2.safetensors", "c": "s-1.safetensors"}}"#;
        let present = [CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SAFETENSORS_INDEX_FILE];
        assert_eq!(plan(&present, &[], Some(index)).unwrap(), names(&["s-1.safetensors", "s-2.safetensors"]));
        let present = [
            CONFIG_FILE,
            TOKENIZER_FILE,
            TOKENIZER_CONFIG_FILE,
            CHAT_TEMPLATE_FILE,
            SAFETENSORS_INDEX_FILE,
            "s-1.safetensors",
        ];
        assert!(plan(&present, &["s-2.safetensors"], Some(index)).unwrap().is_empty());
    }

    /// A refused index (a FIFO, a link out of the folder) has no bytes to list shards from: the plan
    /// ends there and the load reports the refusal, as a folder on disk does.
    #[test]
    fn a_refused_container_ends_the_plan() {
        let (present, refused) = (names(&[CONFIG_FILE]), names(&[TOKENIZER_FILE, SAFETENSORS_INDEX_FILE]));
        let absent = names(&[TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE]);
        let progress = ReadProgress {
            present: &present,
            absent: &absent,
            refused: &refused,
            index: None,
            root: "models/m",
            gguf: None,
            gguf_shares_folder: false,
        };
        assert!(files_to_read(&progress).unwrap().is_empty());
    }

    #[test]
    fn a_bad_index_is_a_typed_error_naming_the_file() {
        let present = [CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SAFETENSORS_INDEX_FILE];
        let e = plan(&present, &[], Some(b"{not json")).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadWeights);
        assert!(e.message.contains("models/m/model.safetensors.index.json"), "{}", e.message);
        assert_eq!(plan(&present, &[], None).unwrap_err().code, ErrorCode::InvalidOption);
    }

    #[test]
    fn shards_outside_the_folder_are_never_asked_for() {
        let present = [CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE, SAFETENSORS_INDEX_FILE];
        for bad in ["/etc/passwd", "../m2/model.safetensors", "sub/s.safetensors", "..\\x", ""] {
            let index = serde_json::json!({"weight_map": {"a": "s-1.safetensors", "b": bad}}).to_string();
            let e = plan(&present, &[], Some(index.as_bytes())).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadWeights, "{bad}");
            assert!(e.message.contains("plain file name") && !e.message.contains("passwd"), "{}", e.message);
        }
    }

    /// A GGUF model is its one file plus the tokenizer / chat template files beside it; a folder's
    /// `config.json` (e.g. of the models dir) is not read for it.
    #[test]
    fn a_gguf_model_reads_its_side_files_then_the_file() {
        let step = |present: &[&str], absent: &[&str], shares: bool| {
            let (present, absent) = (names(present), names(absent));
            let progress = ReadProgress {
                present: &present,
                absent: &absent,
                refused: &[],
                index: None,
                root: "models",
                gguf: Some("m.Q4_1.gguf"),
                gguf_shares_folder: shares,
            };
            files_to_read(&progress).unwrap()
        };
        assert_eq!(step(&[], &[], false), names(&GGUF_SIDE_FILES));
        assert_eq!(
            step(&[TOKENIZER_FILE], &[TOKENIZER_CONFIG_FILE, CHAT_TEMPLATE_FILE], false),
            names(&["m.Q4_1.gguf"])
        );
        assert!(step(&["m.Q4_1.gguf"], &GGUF_SIDE_FILES, false).is_empty());
        // Sharing its folder with other GGUFs, it reads only itself.
        assert_eq!(step(&[], &[], true), names(&["m.Q4_1.gguf"]));
        assert!(step(&["m.Q4_1.gguf"], &[], true).is_empty());
    }

    #[test]
    fn a_gguf_shares_its_folder_when_another_gguf_is_listed_beside_it() {
        let listed = names(&["m.Q4_1.gguf", "tokenizer.json", "README.md"]);
        assert!(!gguf_shares_folder("m.Q4_1.gguf", Some(&listed)));
        assert!(!gguf_shares_folder("m.Q4_1.gguf", None), "a reader that cannot list: the folder is the model's");
        let listed = names(&["m.Q4_1.gguf", "tokenizer.json", "other.GGUF"]);
        assert!(gguf_shares_folder("m.Q4_1.gguf", Some(&listed)));
    }

    #[test]
    fn the_model_gguf_is_the_named_file_or_the_one_listed() {
        assert_eq!(model_gguf(Some("a.gguf"), None, "models").unwrap().as_deref(), Some("a.gguf"));
        let e = model_gguf(Some("a.bin"), None, "models").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::ModelNotFound, "model path models/a.bin is not a folder"));
        assert_eq!(model_gguf(Some("../a.gguf"), None, "models").unwrap_err().code, ErrorCode::ModelNotFound);
        let listed = names(&["README.md", "m.Q8_0.GGUF"]);
        assert_eq!(model_gguf(None, Some(&listed), "m").unwrap().as_deref(), Some("m.Q8_0.GGUF"));
        let with_config = names(&[CONFIG_FILE, "m.gguf"]);
        assert_eq!(model_gguf(None, Some(&with_config), "m").unwrap(), None);
        assert_eq!(model_gguf(None, None, "m").unwrap(), None);
        let two = names(&["a.gguf", "b.gguf"]);
        let e = model_gguf(None, Some(&two), "m").unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelNotFound);
        assert!(e.message.contains("holds 2 .gguf files"), "{}", e.message);
    }
}
