//! Segment files on disk: their names, listing them in seq order, fsyncing
//! the directory that holds them, and scanning one frame by frame.
//!
//! A segment is named `wal-{first_seq:020}.log` after the seq of its first
//! frame, so a directory listing sorted by name is sorted by seq and a reader
//! can jump to the segment holding a given seq without opening the others.
//! [`SegmentScanner`] is the one place that decides whether bytes are a valid
//! frame; both recovery ([`crate::Wal::open`]) and replay
//! ([`crate::WalReader`]) use it, so they always agree on where valid data
//! ends.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::StorageError;
use crate::frame::{self, FRAME_HEADER_LEN};

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
/// Digits of the zero-padded seq in a segment name.
const SEQ_DIGITS: usize = 20;
/// Read buffer of the scanner: large enough that small frames cost no
/// syscall each, small enough to not matter per open reader.
const READ_BUF_CAPACITY: usize = 256 << 10;

/// A segment file found in the WAL directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    /// The seq of its first frame, from its name.
    pub(crate) first_seq: u64,
}

impl SegmentFile {
    /// The error for a segment that does not start where the previous one
    /// ended: frames are missing (a segment file was lost or deleted).
    pub(crate) fn gap_error(self, expected_seq: u64) -> StorageError {
        StorageError::Corrupt {
            reason: format!(
                "segment starts at seq {} but the previous one ends before seq {expected_seq}",
                self.first_seq
            ),
            path: self.path,
            offset: 0,
        }
    }
}

/// The path of the segment whose first frame has `first_seq`.
pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!(
        "{SEGMENT_PREFIX}{first_seq:0width$}{SEGMENT_SUFFIX}",
        width = SEQ_DIGITS
    ))
}

/// The first seq named by a segment file name, or `None` for other files.
/// Seqs start at 1, so a name with seq 0 is not ours either.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

/// The segment files of `dir`, oldest first. A missing directory holds none.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("list WAL directory", dir, e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list WAL directory", dir, e))?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_segment_name) {
            segments.push(SegmentFile {
                path: entry.path(),
                first_seq,
            });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Creates a new, empty segment file and makes it and its directory entry
/// durable, so a crash never leaves a synced frame in a file the directory
/// has forgotten.
pub(crate) fn create_segment(dir: &Path, path: &Path) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StorageError::io("create segment", path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync new segment", path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io("fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files here; the platform makes
        // metadata durable with the file itself.
        let _ = dir;
    }
    Ok(())
}

/// What the scanner found at its current position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// A valid frame; its payload is in the buffer passed in.
    Frame { seq: u64, kind: u8 },
    /// The file ends exactly after the last valid frame.
    End,
    /// The bytes at `offset` are not a valid next frame (torn or corrupt).
    Bad { offset: u64, reason: String },
}

/// Reads the frames of one segment in order, validating each one: magic,
/// length bound, length against the bytes left, checksum, and that seqs
/// continue from the one in the file name. It stops at the first failure.
pub(crate) struct SegmentScanner {
    reader: BufReader<File>,
    path: PathBuf,
    /// File length when opened; bytes appended later are not read.
    file_len: u64,
    /// End of the last valid frame.
    offset: u64,
    /// The seq the next frame must carry.
    next_seq: u64,
}

impl SegmentScanner {
    pub(crate) fn open(segment: &SegmentFile) -> Result<Self, StorageError> {
        let path = &segment.path;
        let file = File::open(path).map_err(|e| StorageError::io("open segment", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| StorageError::io("stat segment", path, e))?
            .len();
        Ok(SegmentScanner {
            reader: BufReader::with_capacity(READ_BUF_CAPACITY, file),
            path: path.clone(),
            file_len,
            offset: 0,
            next_seq: segment.first_seq,
        })
    }

    /// Reads the next frame, putting its payload in `payload` (replacing
    /// what was there). I/O failures are errors; bad bytes are
    /// [`Scanned::Bad`], after which the scanner must not be used again.
    pub(crate) fn next_frame(&mut self, payload: &mut Vec<u8>) -> Result<Scanned, StorageError> {
        let start = self.offset;
        let left = self.file_len - start;
        if left == 0 {
            return Ok(Scanned::End);
        }
        if left < FRAME_HEADER_LEN as u64 {
            return Ok(self.bad(format!("torn frame header: {left} bytes left")));
        }
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        if let Err(e) = self.reader.read_exact(&mut header_bytes) {
            return self.read_failed(e);
        }
        let header = match frame::decode_header(&header_bytes) {
            Ok(header) => header,
            Err(reason) => return Ok(self.bad(reason)),
        };
        let body_left = left - FRAME_HEADER_LEN as u64;
        if header.len as u64 > body_left {
            return Ok(self.bad(format!(
                "torn frame: payload of {} bytes but {body_left} bytes left",
                header.len
            )));
        }
        payload.clear();
        payload.resize(header.len, 0);
        if let Err(e) = self.reader.read_exact(payload) {
            return self.read_failed(e);
        }
        if frame::checksum(header.seq, header.kind, payload) != header.crc {
            return Ok(self.bad("checksum mismatch".to_string()));
        }
        if header.seq != self.next_seq {
            return Ok(self.bad(format!(
                "frame has seq {}, expected {}",
                header.seq, self.next_seq
            )));
        }
        self.offset = start + (FRAME_HEADER_LEN + header.len) as u64;
        self.next_seq += 1;
        Ok(Scanned::Frame {
            seq: header.seq,
            kind: header.kind,
        })
    }

    /// End of the last valid frame read so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the file when the scanner opened it.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The seq after the last valid frame read so far.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, reason: String) -> Scanned {
        Scanned::Bad {
            offset: self.offset,
            reason,
        }
    }

    /// The file shrank under us (someone truncated it): that is a torn
    /// tail, not an I/O failure. Anything else is.
    fn read_failed(&self, e: io::Error) -> Result<Scanned, StorageError> {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(self.bad("file ended inside a frame".to_string()))
        } else {
            Err(StorageError::io("read segment", &self.path, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_seq() {
        let dir = Path::new("/wal");
        let path = segment_path(dir, 42);
        assert_eq!(
            path,
            Path::new("/wal/wal-00000000000000000042.log").to_path_buf()
        );
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(
            parse_segment_name("wal-18446744073709551615.log"),
            Some(u64::MAX)
        );
        for other in [
            "wal-00000000000000000000.log",
            "wal-42.log",
            "wal-0000000000000000004x.log",
            "wal-00000000000000000042.log.tmp",
            "snap-00000000000000000042.bin",
        ] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }

    #[test]
    fn missing_directory_lists_no_segments() {
        let dir = tempfile::tempdir().unwrap();
        let segments = list_segments(&dir.path().join("absent")).unwrap();
        assert!(segments.is_empty());
    }
}
