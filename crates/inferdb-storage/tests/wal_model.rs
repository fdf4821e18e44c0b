//! Model-based property test of the WAL: random appends, flushes, syncs,
//! clean reopens and crashes (with the tail of the last segment truncated
//! or overwritten past the last synced byte) are applied both to a real
//! [`Wal`] and to a naive model, a `Vec` of frames; after every reopen the
//! log read back must be a prefix of the model holding every synced frame.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use inferdb_storage::{FRAME_HEADER_LEN, Frame, Wal, WalOptions};
use proptest::prelude::*;

mod common;
use common::{read_all, segments};

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut the last segment somewhere between its last synced byte and its end.
    Truncate {
        at: u64,
    },
    /// Overwrite bytes somewhere past the last synced byte (may extend the file).
    Garbage {
        at: u64,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Append { kind: u8, len: usize, fill: u8 },
    Flush { from: u64 },
    Sync { from: u64 },
    Reopen,
    Crash(Damage),
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(0usize),
        10 => 1..64usize,
        5 => 64..1_500usize,
        // Above the writer's direct-write threshold (32 KiB).
        1 => 32_000..40_000usize,
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::None),
        any::<u64>().prop_map(|at| Damage::Truncate { at }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
        (any::<u64>(), 1..40usize).prop_map(|(at, n)| Damage::Garbage {
            at,
            bytes: vec![0; n]
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (any::<u8>(), payload_len(), any::<u8>())
            .prop_map(|(kind, len, fill)| Op::Append { kind, len, fill }),
        2 => any::<u64>().prop_map(|from| Op::Flush { from }),
        3 => any::<u64>().prop_map(|from| Op::Sync { from }),
        1 => Just(Op::Reopen),
        2 => damage().prop_map(Op::Crash),
    ]
}

fn payload(len: usize, fill: u8) -> Vec<u8> {
    (0..len)
        .map(|i| fill.wrapping_add((i % 251) as u8))
        .collect()
}

struct Harness {
    dir: tempfile::TempDir,
    segment_bytes: u64,
    wal: Option<Wal>,
    /// (kind, payload) of every frame appended; frame i has seq i + 1.
    model: Vec<(u8, Vec<u8>)>,
    /// Frames known to be handed to the OS.
    flushed: usize,
    /// Frames known to be durable.
    synced: usize,
}

impl Harness {
    fn new(segment_bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness {
            dir,
            segment_bytes,
            wal: None,
            model: Vec::new(),
            flushed: 0,
            synced: 0,
        };
        let report = h.open();
        assert_eq!(report.frames, 0);
        assert_eq!(report.last_seq, None);
        h
    }

    fn open(&mut self) -> inferdb_storage::RecoveryReport {
        let mut opts = WalOptions::new(self.dir.path());
        opts.segment_bytes = self.segment_bytes;
        let (wal, report) = Wal::open(opts).unwrap();
        self.wal = Some(wal);
        report
    }

    fn wal(&mut self) -> &mut Wal {
        self.wal.as_mut().unwrap()
    }

    fn check_frames(&self, frames: &[Frame], from: u64) {
        let expected_len = self.model.len().saturating_sub(from as usize - 1);
        assert_eq!(frames.len(), expected_len, "frames read from seq {from}");
        for (i, frame) in frames.iter().enumerate() {
            let seq = from + i as u64;
            let (kind, payload) = &self.model[seq as usize - 1];
            assert_eq!(frame.seq, seq);
            assert_eq!(frame.kind, *kind, "kind of seq {seq}");
            assert!(frame.payload == *payload, "payload of seq {seq}");
        }
    }

    /// Everything appended is in the OS: a reader sees exactly the model.
    fn check_visible(&self, from: u64) {
        let from = 1 + from % (self.model.len() as u64 + 2);
        self.check_frames(&read_all(self.dir.path(), from), from);
    }

    /// Byte offset, in the segment starting at `first_seq`, just past the
    /// last synced frame.
    fn synced_offset(&self, first_seq: u64) -> u64 {
        (first_seq..=self.synced as u64)
            .map(|seq| (FRAME_HEADER_LEN + self.model[seq as usize - 1].1.len()) as u64)
            .sum()
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append { kind, len, fill } => {
                let data = payload(len, fill);
                let seq = self.wal().append(kind, &data).unwrap();
                assert_eq!(seq, self.model.len() as u64 + 1);
                self.model.push((kind, data));
                assert_eq!(self.wal().next_seq(), seq + 1);
            }
            Op::Flush { from } => {
                self.wal().flush().unwrap();
                self.flushed = self.model.len();
                self.check_visible(from);
            }
            Op::Sync { from } => {
                self.wal().sync().unwrap();
                self.flushed = self.model.len();
                self.synced = self.model.len();
                self.check_visible(from);
            }
            Op::Reopen => {
                self.wal.take().unwrap().close().unwrap();
                let report = self.open();
                let n = self.model.len() as u64;
                assert_eq!(report.frames, n);
                assert_eq!(report.truncated_bytes, 0);
                assert_eq!(report.last_seq, (n > 0).then_some(n));
                assert_eq!(self.wal().next_seq(), n + 1);
                self.flushed = self.model.len();
                self.synced = self.model.len();
                self.check_visible(0);
            }
            Op::Crash(damage) => self.crash(damage),
        }
    }

    fn crash(&mut self, damage: Damage) {
        // Dropped without flushing: buffered frames are lost, as in a crash.
        drop(self.wal.take());
        let segs = segments(self.dir.path());
        let (first_seq, last) = segs.last().unwrap().clone();
        let synced_off = self.synced_offset(first_seq);
        let file_len = fs::metadata(&last).unwrap().len();
        assert!(
            synced_off <= file_len,
            "synced bytes {synced_off} missing from {}: {file_len} bytes",
            last.display()
        );
        let damaged = !matches!(damage, Damage::None);
        match damage {
            Damage::None => {}
            Damage::Truncate { at } => {
                let len = synced_off + at % (file_len - synced_off + 1);
                OpenOptions::new()
                    .write(true)
                    .open(&last)
                    .unwrap()
                    .set_len(len)
                    .unwrap();
            }
            Damage::Garbage { at, bytes } => {
                let off = if file_len > synced_off {
                    synced_off + at % (file_len - synced_off)
                } else {
                    file_len
                };
                let mut f = OpenOptions::new().write(true).open(&last).unwrap();
                f.seek(SeekFrom::Start(off)).unwrap();
                f.write_all(&bytes).unwrap();
            }
        }
        let damaged_len = fs::metadata(&last).unwrap().len();

        // Replay before open must agree with what recovery keeps.
        let before = read_all(self.dir.path(), 1);
        let report = self.open();
        let after = read_all(self.dir.path(), 1);
        assert_eq!(before, after, "reader before open disagrees with recovery");

        let n = after.len();
        assert!(
            n >= self.synced,
            "lost synced frames: {n} < {}",
            self.synced
        );
        if !damaged {
            assert!(
                n >= self.flushed,
                "lost flushed frames: {n} < {}",
                self.flushed
            );
            assert_eq!(report.truncated_bytes, 0);
        }
        assert!(n <= self.model.len());
        self.model.truncate(n);
        self.check_frames(&after, 1);
        assert_eq!(report.frames, n as u64);
        assert_eq!(report.last_seq, (n > 0).then_some(n as u64));
        assert_eq!(
            report.truncated_bytes,
            damaged_len - self.segment_len(first_seq),
            "truncated bytes"
        );
        assert_eq!(self.wal().next_seq(), n as u64 + 1);
        self.flushed = n;
        self.synced = n;
    }

    /// Length of the segment starting at `first_seq` holding every model
    /// frame from there on.
    fn segment_len(&self, first_seq: u64) -> u64 {
        (first_seq..=self.model.len() as u64)
            .map(|seq| (FRAME_HEADER_LEN + self.model[seq as usize - 1].1.len()) as u64)
            .sum()
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn wal_matches_model_across_syncs_reopens_and_crashes(
        segment_bytes in prop_oneof![Just(64u64), Just(300), Just(4_096), Just(1 << 20)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::new(segment_bytes);
        for op in ops {
            h.apply(op);
        }
        // Appends continue after whatever was recovered, and all of it is
        // read back once synced.
        h.apply(Op::Append { kind: 9, len: 10, fill: 1 });
        h.apply(Op::Sync { from: 0 });
        h.apply(Op::Reopen);
        // Rotation: segments are contiguous from seq 1, and a closed one
        // only outgrows segment_bytes when it holds a single frame.
        let segs = segments(h.dir.path());
        prop_assert_eq!(segs[0].0, 1);
        for pair in segs.windows(2) {
            let ((first, path), (next, _)) = (&pair[0], &pair[1]);
            let size = fs::metadata(path).unwrap().len();
            prop_assert!(
                size <= segment_bytes || next - first == 1,
                "{} holds {} frames in {} bytes", path.display(), next - first, size
            );
        }
    }
}
