//! Helpers of the Llama-family tests: a fixture copy with an edited config.json.
#![allow(dead_code)]

use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures").join(name)
}

/// A copy of fixture `name` in a fresh temp folder whose config.json is `edit`ed; removed on drop.
pub struct EditedCopy(pub PathBuf);

impl EditedCopy {
    /// The copy's `file`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl EditedCopy {
    pub fn new(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "phoenix-llama-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(fixture(name)).unwrap() {
            let e = e.unwrap();
            let to = dir.join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            // Fixture files may be read-only; the copy's config.json is rewritten below.
            let mut perms = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&to, perms).unwrap();
        }
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(cfg.as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
        Self(dir)
    }
}

impl Drop for EditedCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
