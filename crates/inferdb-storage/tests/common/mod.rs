//! Helpers shared by the WAL test files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use inferdb_storage::{Frame, WalReader};
use std::fs;
use std::path::{Path, PathBuf};

/// The WAL segment files of `dir`, by first sequence number.
pub fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segs: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let seq = name
                .strip_prefix("wal-")?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((seq, p))
        })
        .collect();
    segs.sort();
    segs
}

/// Every frame from `from` on.
pub fn read_all(dir: &Path, from: u64) -> Vec<Frame> {
    WalReader::open(dir, from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}
