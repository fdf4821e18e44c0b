//! The manifest: which Parquet files make up the history, and up to which
//! WAL seq they hold every frame.
//!
//! It is one JSON file, `MANIFEST.json`, replaced atomically (write
//! `MANIFEST.json.tmp`, fsync, rename, fsync the directory). A data file
//! that the manifest does not list is not part of the history: it is the
//! leftover of a flush or compaction that crashed before its manifest was
//! committed (or after the commit that replaced it), and [`super::History`]
//! deletes it at open. So every change of the file set is one rename.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::StorageError;
use crate::segment::sync_dir;

pub(crate) const MANIFEST: &str = "MANIFEST.json";
const MANIFEST_TMP: &str = "MANIFEST.json.tmp";

/// The smallest and largest entity key in a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyBound {
    /// A string key.
    Str(String),
    /// An integer key.
    Int(i64),
}

/// One Parquet file of a table's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Table (stream name, or `dead_letters`).
    pub table: String,
    /// Start of its partition (ms since epoch, a multiple of the chunk
    /// interval).
    pub partition: i64,
    /// File name inside the partition's directory.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Smallest and largest event time (ms).
    pub min_ts: i64,
    /// Largest event time (ms).
    pub max_ts: i64,
    /// Smallest key, if any row has one.
    pub min_key: Option<KeyBound>,
    /// Largest key.
    pub max_key: Option<KeyBound>,
    /// The zstd level it was written with.
    pub zstd_level: i32,
}

impl FileMeta {
    /// The path relative to the history directory.
    pub fn rel_path(&self) -> String {
        format!("{}/{}/{}", self.table, self.partition, self.name)
    }
}

/// The committed state of the history files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Every WAL frame with a seq at or below this is in the files.
    pub flushed_seq: u64,
    /// The next file number to use.
    pub next_file: u64,
    /// The files.
    pub files: Vec<FileMeta>,
}

impl Manifest {
    /// Reads the manifest of `dir`; a directory without one has an empty
    /// history.
    pub fn load(dir: &Path) -> Result<Manifest, StorageError> {
        let path = dir.join(MANIFEST);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    version: 1,
                    ..Manifest::default()
                });
            }
            Err(e) => return Err(StorageError::io("read history manifest", &path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| StorageError::Corrupt {
            path,
            offset: e.column() as u64,
            reason: format!("history manifest is not valid: {e}"),
        })
    }

    /// Replaces the manifest of `dir` atomically and durably.
    pub fn commit(&self, dir: &Path) -> Result<(), StorageError> {
        let tmp = dir.join(MANIFEST_TMP);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StorageError::Corrupt {
            path: tmp.clone(),
            offset: 0,
            reason: format!("cannot encode the history manifest: {e}"),
        })?;
        let mut f =
            File::create(&tmp).map_err(|e| StorageError::io("create history manifest", &tmp, e))?;
        f.write_all(&bytes)
            .map_err(|e| StorageError::io("write history manifest", &tmp, e))?;
        f.sync_all()
            .map_err(|e| StorageError::io("fsync history manifest", &tmp, e))?;
        drop(f);
        super::failpoint(super::FailPoint::ManifestWritten)?;
        let path = dir.join(MANIFEST);
        fs::rename(&tmp, &path)
            .map_err(|e| StorageError::io("rename history manifest", &tmp, e))?;
        sync_dir(dir)?;
        super::failpoint(super::FailPoint::ManifestCommitted)?;
        Ok(())
    }
}
