//! Triton's model repository layout, read from disk:
//!
//! ```text
//! <root>/<model>/config.pbtxt          (optional for ONNX models)
//! <root>/<model>/<version>/model.onnx  (or the config's default_model_filename)
//! ```
//!
//! [`scan_repository`] lists the model directories (sorted by name; hidden
//! entries and plain files are skipped) and [`scan_model`] reads one. A
//! model's config is parsed here, but a bad config does not fail the scan: it
//! is kept as the model's `Err` so that one broken model does not hide the
//! others. Versions are the numeric subdirectories that hold the model file
//! (others are ignored, as Triton does); an ensemble has no model file, and
//! Triton's version directory is optional for it here (version 1 if none).
//! [`ModelDir::fingerprint`] summarises the config's bytes and the version
//! directories' and model files' mtime and length, so that a poller can tell
//! when to reload a model without reading the model files.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{MAX_CONFIG_BYTES, ModelConfig, Platform};
use crate::error::InferenceError;

/// The configuration file of a model directory.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// One model directory of the repository.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDir {
    /// The directory's name, which is the model's name.
    pub name: String,
    /// The directory.
    pub path: PathBuf,
    /// The parsed config (`ModelConfig::minimal` when there is no
    /// `config.pbtxt`), or why it is invalid.
    pub config: Result<ModelConfig, InferenceError>,
    /// `(version, version directory)` of the numeric subdirectories that hold
    /// the model file, ascending. For an ensemble: the numeric
    /// subdirectories, or version 1 when there are none.
    pub versions: Vec<(i64, PathBuf)>,
    /// Changes when `config.pbtxt` or a version directory or model file
    /// changes (bytes of the config; mtime and length of the rest). Compare
    /// fingerprints only within one process (std's hasher may change between
    /// Rust releases).
    pub fingerprint: u64,
}

/// Scans every model directory under `root`, sorted by name.
pub fn scan_repository(root: &Path) -> Result<Vec<ModelDir>, InferenceError> {
    let entries = fs::read_dir(root).map_err(|e| repo_error(root, &e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| repo_error(root, &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: cannot be a model name in a URL
        };
        if name.starts_with('.') {
            continue;
        }
        // `metadata` follows symlinks: a model directory may be a link.
        if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            names.push(name);
        }
    }
    names.sort();
    names
        .iter()
        .map(|name| read_model(root, name))
        .collect::<Result<Vec<_>, _>>()
}

/// Scans the model directory `root/name`; [`InferenceError::UnknownModel`]
/// when there is none (or `name` is not a plain directory name).
pub fn scan_model(root: &Path, name: &str) -> Result<ModelDir, InferenceError> {
    let unknown = || InferenceError::UnknownModel {
        name: name.to_string(),
        version: None,
    };
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return Err(unknown());
    }
    if !fs::metadata(root.join(name)).is_ok_and(|m| m.is_dir()) {
        return Err(unknown());
    }
    read_model(root, name)
}

fn repo_error(root: &Path, e: &std::io::Error) -> InferenceError {
    InferenceError::Config {
        model: String::new(),
        message: format!("cannot read model repository {}: {e}", root.display()),
    }
}

fn read_model(root: &Path, name: &str) -> Result<ModelDir, InferenceError> {
    let path = root.join(name);
    let config_err = |message: String| InferenceError::Config {
        model: name.to_string(),
        message,
    };
    let mut hasher = DefaultHasher::new();

    let config_path = path.join(CONFIG_FILE);
    let config = match read_config(&config_path) {
        Ok(None) => {
            0u8.hash(&mut hasher);
            Ok(ModelConfig::minimal(name))
        }
        Ok(Some(bytes)) => {
            1u8.hash(&mut hasher);
            bytes.hash(&mut hasher);
            match String::from_utf8(bytes) {
                Ok(text) => ModelConfig::parse(&text, name),
                Err(_) => Err(config_err(format!("{CONFIG_FILE} is not UTF-8"))),
            }
        }
        Err(message) => {
            2u8.hash(&mut hasher);
            Err(config_err(message))
        }
    };

    let (platform, model_file) = match &config {
        Ok(c) => (c.platform, c.default_model_filename.clone()),
        Err(_) => (
            Platform::Onnx,
            crate::config::DEFAULT_MODEL_FILENAME.to_string(),
        ),
    };
    let entries = fs::read_dir(&path).map_err(|e| {
        config_err(format!(
            "cannot read model directory {}: {e}",
            path.display()
        ))
    })?;
    let mut numeric = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Some(version) = entry.file_name().to_str().and_then(parse_version) else {
            continue;
        };
        let dir = entry.path();
        if let Ok(meta) = fs::metadata(&dir)
            && meta.is_dir()
        {
            numeric.push((version, dir, meta));
        }
    }
    numeric.sort_by_key(|(v, _, _)| *v);

    let mut versions = Vec::new();
    for (version, dir, meta) in numeric {
        version.hash(&mut hasher);
        hash_meta(&meta, &mut hasher);
        let file_meta = fs::metadata(dir.join(&model_file)).ok();
        match &file_meta {
            Some(m) => hash_meta(m, &mut hasher),
            None => u64::MAX.hash(&mut hasher),
        }
        if platform == Platform::Ensemble || file_meta.is_some() {
            versions.push((version, dir));
        }
    }
    if platform == Platform::Ensemble && versions.is_empty() {
        versions.push((1, path.join("1")));
    }

    Ok(ModelDir {
        name: name.to_string(),
        path,
        config,
        versions,
        fingerprint: hasher.finish(),
    })
}

/// A version directory's name: ASCII digits only (Triton ignores others).
fn parse_version(name: &str) -> Option<i64> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The config's bytes, `None` when there is no config file.
fn read_config(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {CONFIG_FILE}: {e}")),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_CONFIG_BYTES).unwrap_or(u64::MAX) + 1;
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {CONFIG_FILE}: {e}"))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "{CONFIG_FILE} is larger than the {MAX_CONFIG_BYTES} bytes inferdb reads"
        ));
    }
    Ok(Some(bytes))
}

fn hash_meta(meta: &fs::Metadata, hasher: &mut DefaultHasher) {
    meta.len().hash(hasher);
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .hash(hasher);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_plain_digits() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("0012"), Some(12));
        assert_eq!(parse_version("-1"), None);
        assert_eq!(parse_version("+1"), None);
        assert_eq!(parse_version("v1"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("99999999999999999999"), None);
    }
}
