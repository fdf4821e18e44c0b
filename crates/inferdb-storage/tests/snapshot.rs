//! Snapshot files: round trip, fall back past a corrupt newest one, keep
//! two, ignore leftovers of an interrupted write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use inferdb_storage::{SNAPSHOT_HEADER_LEN, StorageError, read_latest_snapshot, write_snapshot};
use inferdb_types::ErrorKind;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn snapshot_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snapshots");
    assert_eq!(read_latest_snapshot(&snaps).unwrap(), None);

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let path = write_snapshot(&snaps, 17, &payload).unwrap();
    assert_eq!(path.file_name().unwrap(), "snap-00000000000000000017.bin");
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (SNAPSHOT_HEADER_LEN + payload.len()) as u64
    );
    assert_eq!(read_latest_snapshot(&snaps).unwrap(), Some((17, payload)));

    write_snapshot(&snaps, 18, b"").unwrap();
    assert_eq!(
        read_latest_snapshot(&snaps).unwrap(),
        Some((18, Vec::new()))
    );
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 5, b"older state").unwrap();
    let newest = write_snapshot(dir.path(), 9, b"newer state").unwrap();

    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&newest, &bytes).unwrap();
    assert_eq!(
        read_latest_snapshot(dir.path()).unwrap(),
        Some((5, b"older state".to_vec()))
    );

    // A truncated newest one falls back too.
    fs::write(&newest, &bytes[..SNAPSHOT_HEADER_LEN + 3]).unwrap();
    assert_eq!(
        read_latest_snapshot(dir.path())
            .unwrap()
            .map(|(seq, _)| seq),
        Some(5)
    );
    fs::write(&newest, &bytes[..10]).unwrap();
    assert_eq!(
        read_latest_snapshot(dir.path())
            .unwrap()
            .map(|(seq, _)| seq),
        Some(5)
    );
}

#[test]
fn a_snapshot_renamed_to_another_seq_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 3, b"three").unwrap();
    let path = write_snapshot(dir.path(), 4, b"four").unwrap();
    fs::rename(&path, dir.path().join("snap-00000000000000000008.bin")).unwrap();
    assert_eq!(
        read_latest_snapshot(dir.path()).unwrap(),
        Some((3, b"three".to_vec()))
    );
}

#[test]
fn every_snapshot_corrupt_is_an_error_not_an_empty_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_snapshot(dir.path(), 1, b"a").unwrap();
    let b = write_snapshot(dir.path(), 2, b"b").unwrap();
    fs::write(&a, b"garbage").unwrap();
    fs::write(&b, b"more garbage that is longer than a header").unwrap();
    let err = read_latest_snapshot(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if *path == b),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[test]
fn only_the_two_newest_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    for seq in [10, 20, 30, 40] {
        write_snapshot(dir.path(), seq, format!("at {seq}").as_bytes()).unwrap();
    }
    assert_eq!(
        files(dir.path()),
        vec![
            "snap-00000000000000000030.bin",
            "snap-00000000000000000040.bin"
        ]
    );
    assert_eq!(
        read_latest_snapshot(dir.path()).unwrap(),
        Some((40, b"at 40".to_vec()))
    );
}

#[test]
fn a_leftover_tmp_file_is_ignored_and_removed_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 7, b"seven").unwrap();
    // An interrupted write of a newer snapshot.
    let tmp = dir.path().join("snap-00000000000000000009.bin.tmp");
    fs::write(&tmp, b"half a snap").unwrap();
    fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
    assert_eq!(
        read_latest_snapshot(dir.path()).unwrap(),
        Some((7, b"seven".to_vec()))
    );

    write_snapshot(dir.path(), 8, b"eight").unwrap();
    assert!(!tmp.exists());
    assert_eq!(
        files(dir.path()),
        vec![
            "snap-00000000000000000007.bin",
            "snap-00000000000000000008.bin",
            "unrelated.txt"
        ]
    );
}
