//! Replay: [`WalReader`] yields the frames of a WAL directory with
//! `seq >= from_seq`, in order.
//!
//! It lists the segments once when opened, starts at the last segment whose
//! first seq is at or below `from_seq` (segment names carry their first seq),
//! and scans forward with the same [`SegmentScanner`] that recovery uses,
//! validating every frame, including the ones it skips, so that it never
//! yields a frame that [`crate::Wal::open`] would truncate. A bad frame in
//! the last segment ends the iteration cleanly (a torn tail); anywhere else
//! it yields [`StorageError::Corrupt`] once and stops.

use std::collections::VecDeque;
use std::mem;
use std::path::Path;

use tracing::debug;

use crate::StorageError;
use crate::frame::Frame;
use crate::segment::{self, Scanned, SegmentFile, SegmentScanner};

/// Iterator over the frames with `seq >= from_seq` of a WAL directory.
///
/// Frames appended after the reader opened a segment are not seen. If the
/// segments holding `from_seq` were removed, it starts at the oldest frame
/// kept; callers that care compare the first seq with what they expected.
pub struct WalReader {
    /// Segments not opened yet, oldest first.
    pending: VecDeque<SegmentFile>,
    current: Option<SegmentScanner>,
    from_seq: u64,
    /// The seq the next segment must start at, once one has been read.
    next_seq: Option<u64>,
    /// Payload buffer: reused for skipped frames, moved out for yielded ones.
    payload: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("pending_segments", &self.pending.len())
            .field("current", &self.current.as_ref().map(|s| s.path()))
            .field("from_seq", &self.from_seq)
            .field("done", &self.done)
            .finish()
    }
}

impl WalReader {
    /// A reader over the log in `dir` starting at `from_seq` (0 reads like
    /// 1). A missing directory is an empty log.
    pub fn open(dir: &Path, from_seq: u64) -> Result<WalReader, StorageError> {
        let segments = segment::list_segments(dir)?;
        // The last segment starting at or before from_seq holds it (or the
        // first segment, if every segment starts after it).
        let start = segments
            .iter()
            .rposition(|s| s.first_seq <= from_seq)
            .unwrap_or(0);
        Ok(WalReader {
            pending: segments.into_iter().skip(start).collect(),
            current: None,
            from_seq,
            next_seq: None,
            payload: Vec::new(),
            done: false,
        })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, StorageError> {
        loop {
            let scanner = match &mut self.current {
                Some(scanner) => scanner,
                None => {
                    let Some(seg) = self.pending.pop_front() else {
                        return Ok(None);
                    };
                    if let Some(expected) = self.next_seq
                        && seg.first_seq != expected
                    {
                        return Err(seg.gap_error(expected));
                    }
                    self.current.insert(SegmentScanner::open(&seg)?)
                }
            };
            match scanner.next_frame(&mut self.payload)? {
                Scanned::Frame { seq, kind } => {
                    if seq >= self.from_seq {
                        return Ok(Some(Frame {
                            seq,
                            kind,
                            payload: mem::take(&mut self.payload),
                        }));
                    }
                }
                Scanned::End => {
                    self.next_seq = Some(scanner.next_seq());
                    self.current = None;
                }
                Scanned::Bad { offset, reason } if self.pending.is_empty() => {
                    debug!(
                        path = %scanner.path().display(),
                        offset,
                        reason = %reason,
                        "WAL replay stopped at the torn tail of the last segment"
                    );
                    return Ok(None);
                }
                Scanned::Bad { offset, reason } => {
                    return Err(StorageError::Corrupt {
                        path: scanner.path().to_path_buf(),
                        offset,
                        reason,
                    });
                }
            }
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<Frame, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_frame() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for WalReader {}
