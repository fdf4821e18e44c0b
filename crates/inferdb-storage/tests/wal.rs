//! Example-based tests of the WAL: corruption outside the tail, replay from
//! a middle seq, segment removal, and the edges of recovery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use inferdb_storage::{
    FRAME_HEADER_LEN, Frame, MAX_PAYLOAD_LEN, StorageError, Wal, WalOptions, WalReader,
};
use inferdb_types::ErrorKind;

mod common;
use common::{read_all, segments};

fn open(dir: &Path, segment_bytes: u64) -> (Wal, inferdb_storage::RecoveryReport) {
    let mut opts = WalOptions::new(dir);
    opts.segment_bytes = segment_bytes;
    Wal::open(opts).unwrap()
}

fn payload(seq: u64) -> Vec<u8> {
    format!("frame number {seq}").into_bytes()
}

/// A synced log of `n` frames whose payloads are `payload(seq)`.
fn write_log(dir: &Path, segment_bytes: u64, n: u64) {
    let (mut wal, _) = open(dir, segment_bytes);
    for seq in 1..=n {
        assert_eq!(wal.append((seq % 3) as u8, &payload(seq)).unwrap(), seq);
    }
    wal.close().unwrap();
}

fn seqs(frames: &[Frame]) -> Vec<u64> {
    frames.iter().map(|f| f.seq).collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corruption_in_an_earlier_segment_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100, 12);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let (_, victim) = &segs[1];
    // The second frame of the segment: its payload's first byte.
    let first_len = (FRAME_HEADER_LEN + payload(segs[1].0).len()) as u64;
    flip_byte(victim, first_len + FRAME_HEADER_LEN as u64);

    let err = Wal::open(WalOptions::new(dir.path())).unwrap_err();
    match &err {
        StorageError::Corrupt { path, offset, .. } => {
            assert_eq!(path, victim);
            assert_eq!(*offset, first_len);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::Internal);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(name), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");

    // Replay stops with the same error after the frames before it.
    let mut reader = WalReader::open(dir.path(), 1).unwrap();
    let good: Vec<Frame> = reader.by_ref().map_while(Result::ok).collect();
    assert_eq!(seqs(&good), (1..=segs[1].0).collect::<Vec<_>>());
    assert!(reader.next().is_none(), "the reader stops after an error");
    let err = WalReader::open(dir.path(), 1)
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(matches!(err, StorageError::Corrupt { ref path, .. } if path == victim));
}

#[test]
fn oversized_length_in_an_earlier_segment_is_corruption_not_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100, 6);
    let segs = segments(dir.path());
    let (_, victim) = &segs[0];
    let mut f = OpenOptions::new().write(true).open(victim).unwrap();
    f.seek(SeekFrom::Start(2)).unwrap();
    f.write_all(&u32::MAX.to_le_bytes()).unwrap();
    drop(f);
    let err = Wal::open(WalOptions::new(dir.path())).unwrap_err();
    let StorageError::Corrupt {
        path,
        offset,
        reason,
    } = &err
    else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert_eq!((path, *offset), (victim, 0));
    assert!(reason.contains("maximum"), "{reason}");
}

#[test]
fn a_missing_segment_is_corruption_naming_the_one_after_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100, 12);
    let segs = segments(dir.path());
    fs::remove_file(&segs[1].1).unwrap();
    let err = Wal::open(WalOptions::new(dir.path())).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, offset: 0, .. } if *path == segs[2].1),
        "{err:?}"
    );
    let err = WalReader::open(dir.path(), 1)
        .unwrap()
        .find_map(Result::err)
        .unwrap();
    assert!(
        matches!(&err, StorageError::Corrupt { path, .. } if *path == segs[2].1),
        "{err:?}"
    );
}

#[test]
fn torn_tail_of_the_last_segment_is_truncated_reported_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 20);
    for seq in 1..=10 {
        wal.append(1, &payload(seq)).unwrap();
    }
    wal.sync().unwrap();
    wal.append(1, &payload(11)).unwrap();
    wal.flush().unwrap();
    drop(wal);

    let (_, path) = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    // Replay before recovery stops cleanly at the torn frame.
    assert_eq!(seqs(&read_all(dir.path(), 1)), (1..=10).collect::<Vec<_>>());

    let (mut wal, report) = open(dir.path(), 1 << 20);
    let torn = (FRAME_HEADER_LEN + payload(11).len()) as u64 - 5;
    assert_eq!(report.truncated_bytes, torn);
    assert_eq!(report.frames, 10);
    assert_eq!(report.last_seq, Some(10));
    assert_eq!(report.segments, 1);
    assert_eq!(fs::metadata(&path).unwrap().len(), len - 5 - torn);
    assert_eq!(wal.append(2, b"new eleven").unwrap(), 11);
    wal.sync().unwrap();
    let frames = read_all(dir.path(), 1);
    assert_eq!(seqs(&frames), (1..=11).collect::<Vec<_>>());
    assert_eq!(frames[10].payload, b"new eleven");
    assert_eq!(frames[10].kind, 2);
}

#[test]
fn crash_right_after_rotation_reuses_the_empty_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 100);
    for seq in 1..=4 {
        wal.append(0, &[seq as u8; 60]).unwrap();
    }
    // Every 79-byte frame fills a segment: seq 4 sits buffered in the fourth.
    drop(wal);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 4);
    assert_eq!(fs::metadata(&segs[3].1).unwrap().len(), 0);

    let (mut wal, report) = open(dir.path(), 100);
    assert_eq!(report.frames, 3);
    assert_eq!(report.segments, 4);
    assert_eq!(report.last_seq, Some(3));
    assert_eq!(wal.next_seq(), 4);
    assert_eq!(wal.append(0, b"four").unwrap(), 4);
    wal.sync().unwrap();
    assert_eq!(segments(dir.path()), segs, "no new segment file");
    assert_eq!(seqs(&read_all(dir.path(), 1)), vec![1, 2, 3, 4]);
}

#[test]
fn reader_from_a_middle_seq_starts_exactly_there() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    write_log(dir.path(), 120, n);
    assert!(segments(dir.path()).len() > 10);
    for from in 0..=n + 2 {
        let frames = read_all(dir.path(), from);
        let first = from.max(1);
        assert_eq!(
            seqs(&frames),
            (first..=n).collect::<Vec<_>>(),
            "from seq {from}"
        );
        for f in &frames {
            assert_eq!(f.payload, payload(f.seq));
            assert_eq!(f.kind, (f.seq % 3) as u8);
        }
    }
}

#[test]
fn reader_of_a_missing_directory_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_all(&dir.path().join("absent"), 1).is_empty());
}

#[test]
fn remove_segments_before_keeps_every_segment_holding_later_frames() {
    let dir = tempfile::tempdir().unwrap();
    let n = 30;
    let (mut wal, _) = open(dir.path(), 120);
    for seq in 1..=n {
        wal.append(0, &payload(seq)).unwrap();
    }
    wal.sync().unwrap();
    let all = segments(dir.path());
    let active = all.last().unwrap().clone();
    for cut in 0..=n + 5 {
        let before = segments(dir.path());
        let removed = wal.remove_segments_before(cut).unwrap();
        let after = segments(dir.path());
        assert_eq!(before.len() - after.len(), removed, "cut {cut}");
        // Every frame >= cut is still readable, from cut on.
        let from = cut.max(1);
        assert_eq!(
            seqs(&read_all(dir.path(), from)),
            (from.max(after[0].0)..=n).collect::<Vec<_>>(),
            "cut {cut}"
        );
        assert!(
            after[0].0 <= cut.max(1),
            "frames >= {cut} removed: {after:?}"
        );
        // Tight: the oldest segment kept holds a frame >= cut (its last frame,
        // the one before the next segment starts), or is the active one.
        if after.len() > 1 {
            assert!(after[1].0 > cut, "cut {cut} kept {after:?}");
        }
        assert!(
            after.contains(&active),
            "the active segment is never removed"
        );
    }
    assert_eq!(segments(dir.path()), vec![active.clone()]);

    // The seq order survives a reopen with the old segments gone.
    wal.close().unwrap();
    let (mut wal, report) = open(dir.path(), 120);
    assert_eq!(report.last_seq, Some(n));
    assert_eq!(report.segments, 1);
    assert_eq!(wal.append(0, &payload(n + 1)).unwrap(), n + 1);
    wal.sync().unwrap();
    let frames = read_all(dir.path(), 1);
    assert_eq!(frames.last().map(|f| f.seq), Some(n + 1));
    assert_eq!(frames.first().map(|f| f.seq), Some(active.0));
}

#[test]
fn zero_byte_and_large_payloads_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (mut wal, _) = open(dir.path(), 1 << 20);
    assert_eq!(wal.append(1, b"").unwrap(), 1);
    assert_eq!(wal.append(2, &big).unwrap(), 2);
    assert_eq!(wal.append(3, b"").unwrap(), 3);
    assert_eq!(wal.append(4, &big[..100_000]).unwrap(), 4);
    wal.flush().unwrap();
    let frames = read_all(dir.path(), 1);
    assert_eq!(seqs(&frames), vec![1, 2, 3, 4]);
    assert!(frames[0].payload.is_empty() && frames[2].payload.is_empty());
    assert!(frames[1].payload == big);
    assert!(frames[3].payload == big[..100_000]);
}

#[test]
fn a_payload_above_the_maximum_is_rejected_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), 1 << 20);
    // Zeroed pages are mapped lazily: this does not touch 256 MiB.
    let huge = vec![0u8; MAX_PAYLOAD_LEN + 1];
    let err = wal.append(0, &huge).unwrap_err();
    assert!(matches!(err, StorageError::FrameTooLarge { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(wal.append(0, b"ok").unwrap(), 1, "the log is still usable");
}
