//! Snapshot files: an opaque payload from the engine, stamped with the WAL
//! seq it covers (every frame with a seq at or below it is applied in it).
//!
//! [`write_snapshot_with`] streams the payload into `snap-{seq:020}.bin.tmp`
//! through a [`SnapshotWriter`], fsyncs it, renames it to
//! `snap-{seq:020}.bin` and fsyncs the directory, so a snapshot file either
//! exists whole or not at all; then it deletes all but the two with the
//! highest seq and any leftover `.tmp`. The payload is never held whole in
//! memory, and the file is synced every [`WRITEBACK_CHUNK`] bytes as it is
//! written: a snapshot of hundreds of megabytes would otherwise leave them
//! all dirty in the page cache until its final fsync, and the WAL's
//! `fdatasync` (whose device flush waits for the writes queued before it)
//! would stall behind that writeback; this way at most one chunk is ever
//! in flight, as PostgreSQL spreads a checkpoint's writes. [`read_latest_snapshot`] returns
//! the newest one that validates, falling back (with a warning) to the older
//! one when the newest is corrupt. Each file is a 28-byte little-endian
//! header then the payload:
//!
//! ```text
//! offset size field
//!      0    4 magic    "IDBS"
//!      4    4 version  1
//!      8    8 seq      last WAL seq the snapshot covers (also in the file name)
//!     16    8 len      payload length
//!     24    4 crc      CRC-32 (IEEE) of seq ‖ len ‖ payload
//!     28  len payload
//! ```

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::StorageError;
use crate::segment::sync_dir;

const SNAPSHOT_MAGIC: [u8; 4] = *b"IDBS";
const SNAPSHOT_VERSION: u32 = 1;
/// Bytes of the fixed header in front of a snapshot's payload.
pub const SNAPSHOT_HEADER_LEN: usize = 28;
/// Snapshots kept: the newest, and one to fall back on if it is corrupt.
const KEEP: usize = 2;

const PREFIX: &str = "snap-";
const SUFFIX: &str = ".bin";
const TMP_SUFFIX: &str = ".tmp";
const SEQ_DIGITS: usize = 20;

/// Bytes of a snapshot written between two syncs of its file.
pub const WRITEBACK_CHUNK: usize = 1 << 20;

/// Writes a snapshot of `payload` covering the WAL up to `seq` into `dir`
/// (created if missing) atomically and durably, then deletes all but the two
/// snapshots with the highest seq. Returns the snapshot's path.
pub fn write_snapshot(dir: &Path, seq: u64, payload: &[u8]) -> Result<PathBuf, StorageError> {
    write_snapshot_with(dir, seq, |w| w.write_all(payload)).map(|(path, _)| path)
}

/// [`write_snapshot`] of the payload that `encode` writes into the given
/// writer, streamed to the file as it comes (see the module doc). Returns
/// the snapshot's path and its payload length. An error of `encode` (or of
/// the file) leaves no snapshot behind and the older ones in place.
pub fn write_snapshot_with<F>(
    dir: &Path,
    seq: u64,
    encode: F,
) -> Result<(PathBuf, u64), StorageError>
where
    F: FnOnce(&mut SnapshotWriter) -> io::Result<()>,
{
    write_snapshot_chunked(dir, seq, WRITEBACK_CHUNK, encode)
}

fn write_snapshot_chunked<F>(
    dir: &Path,
    seq: u64,
    chunk: usize,
    encode: F,
) -> Result<(PathBuf, u64), StorageError>
where
    F: FnOnce(&mut SnapshotWriter) -> io::Result<()>,
{
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create snapshot directory", dir, e))?;
    let path = dir.join(snapshot_name(seq));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", snapshot_name(seq)));
    let len = match write_file(&tmp, seq, chunk, encode) {
        Ok(len) => len,
        Err(e) => {
            // Best effort: a leftover .tmp is ignored by readers and removed
            // by the next successful write.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename snapshot", &tmp, e))?;
    sync_dir(dir)?;
    info!(path = %path.display(), seq, bytes = len, "wrote snapshot");
    // The new snapshot is durable; failing to delete old ones only costs
    // disk space, so it is not an error of this call.
    if let Err(e) = prune(dir) {
        warn!(dir = %dir.display(), error = %e, "could not delete old snapshots");
    }
    Ok((path, len))
}

/// Where a snapshot's payload goes while it is encoded: checksums each
/// write, appends it to the file, and syncs the file after each `chunk`
/// bytes (see the module doc). It does not buffer: write it in large pieces
/// (the engine gathers 256 KiB at a time).
pub struct SnapshotWriter {
    file: File,
    /// CRC-32 of the payload written so far.
    crc: crc32fast::Hasher,
    /// Payload bytes written.
    written: u64,
    /// Payload bytes covered by the last sync.
    synced: u64,
    chunk: u64,
    /// The first error of the file, kept for the caller: an encoder may
    /// report a failed write as an error of its own.
    failed: Option<io::Error>,
}

impl SnapshotWriter {
    fn new(file: File, chunk: usize) -> SnapshotWriter {
        SnapshotWriter {
            file,
            crc: crc32fast::Hasher::new(),
            written: 0,
            synced: 0,
            chunk: chunk.max(1) as u64,
            failed: None,
        }
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        if self.written - self.synced >= self.chunk {
            self.file.sync_data()?;
            self.synced = self.written;
        }
        Ok(())
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let result = self.append(data);
        if let Err(e) = &result
            && self.failed.is_none()
        {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        }
        result.map(|()| data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The newest valid snapshot in `dir` as `(seq, payload)`, or `None` when
/// there is none (or no directory). A corrupt snapshot is skipped with a
/// warning in favour of the next older one; if every snapshot is corrupt the
/// error of the newest is returned, since starting empty would silently drop
/// the data they held.
pub fn read_latest_snapshot(dir: &Path) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
    let mut snapshots = list_snapshots(dir)?;
    snapshots.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let mut newest_error = None;
    for (seq, path) in snapshots {
        match read_snapshot(&path, seq) {
            Ok(payload) => return Ok(Some((seq, payload))),
            Err(e @ StorageError::Corrupt { .. }) => {
                warn!(
                    path = %path.display(),
                    error = %e,
                    "snapshot is corrupt; falling back to an older one"
                );
                newest_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    match newest_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

fn snapshot_name(seq: u64) -> String {
    format!("{PREFIX}{seq:0width$}{SUFFIX}", width = SEQ_DIGITS)
}

/// The seq in a snapshot file name (not a `.tmp`), or `None`.
fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn is_leftover_tmp(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .and_then(parse_snapshot_name)
        .is_some()
}

/// Snapshot files in `dir` as `(seq, path)`, unordered.
fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("list snapshot directory", dir, e)),
    };
    let mut snapshots = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list snapshot directory", dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            snapshots.push((seq, entry.path()));
        }
    }
    Ok(snapshots)
}

/// Deletes all but the [`KEEP`] snapshots with the highest seq, and leftover
/// temporary files (only one thread writes snapshots, so none is in flight).
fn prune(dir: &Path) -> Result<(), StorageError> {
    let mut snapshots = list_snapshots(dir)?;
    snapshots.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    for (_, path) in snapshots.into_iter().skip(KEEP) {
        fs::remove_file(&path).map_err(|e| StorageError::io("remove snapshot", &path, e))?;
    }
    let entries =
        fs::read_dir(dir).map_err(|e| StorageError::io("list snapshot directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list snapshot directory", dir, e))?;
        if entry.file_name().to_str().is_some_and(is_leftover_tmp) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| StorageError::io("remove snapshot", &path, e))?;
        }
    }
    Ok(())
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut payload_crc = crc32fast::Hasher::new();
    payload_crc.update(payload);
    checksum_of(seq, payload.len() as u64, &payload_crc)
}

/// The header's CRC of `seq ‖ len ‖ payload`, from the payload's own CRC.
fn checksum_of(seq: u64, len: u64, payload_crc: &crc32fast::Hasher) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.combine(payload_crc);
    hasher.finalize()
}

fn encode_header(seq: u64, len: u64, crc: u32) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0..4].copy_from_slice(&SNAPSHOT_MAGIC);
    header[4..8].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&len.to_le_bytes());
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Writes a new file at `path`: a header of zeros, the payload `encode`
/// streams (synced every `chunk` bytes), then the real header over the
/// zeros, and fsyncs it. Returns the payload length.
fn write_file<F>(path: &Path, seq: u64, chunk: usize, encode: F) -> Result<u64, StorageError>
where
    F: FnOnce(&mut SnapshotWriter) -> io::Result<()>,
{
    let write_err = |e| StorageError::io("write snapshot", path, e);
    let mut file = File::create(path).map_err(|e| StorageError::io("create snapshot", path, e))?;
    file.write_all(&[0u8; SNAPSHOT_HEADER_LEN])
        .map_err(write_err)?;
    let mut w = SnapshotWriter::new(file, chunk);
    if let Err(e) = encode(&mut w) {
        return Err(write_err(w.failed.take().unwrap_or(e)));
    }
    let SnapshotWriter {
        mut file,
        crc,
        written,
        ..
    } = w;
    let header = encode_header(seq, written, checksum_of(seq, written, &crc));
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&header))
        .map_err(write_err)?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync snapshot", path, e))?;
    Ok(written)
}

/// Reads and validates the snapshot at `path`, whose name says `seq`.
fn read_snapshot(path: &Path, seq: u64) -> Result<Vec<u8>, StorageError> {
    let corrupt = |offset: u64, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut file = File::open(path).map_err(|e| StorageError::io("open snapshot", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| StorageError::io("stat snapshot", path, e))?
        .len();
    if file_len < SNAPSHOT_HEADER_LEN as u64 {
        return Err(corrupt(
            0,
            format!("file of {file_len} bytes is shorter than the snapshot header"),
        ));
    }
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    file.read_exact(&mut header)
        .map_err(|e| StorageError::io("read snapshot", path, e))?;
    if header[0..4] != SNAPSHOT_MAGIC {
        return Err(corrupt(0, "bad snapshot magic".to_string()));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != SNAPSHOT_VERSION {
        return Err(corrupt(
            4,
            format!("unsupported snapshot version {version}"),
        ));
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&header[8..16]);
    let header_seq = u64::from_le_bytes(word);
    if header_seq != seq {
        return Err(corrupt(
            8,
            format!("header says seq {header_seq} but the file name says {seq}"),
        ));
    }
    word.copy_from_slice(&header[16..24]);
    let len = u64::from_le_bytes(word);
    let body = file_len - SNAPSHOT_HEADER_LEN as u64;
    if len != body {
        return Err(corrupt(
            16,
            format!("header says {len} payload bytes but the file holds {body}"),
        ));
    }
    let crc = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
    let len = usize::try_from(len).map_err(|_| corrupt(16, format!("payload of {len} bytes")))?;
    let mut payload = vec![0u8; len];
    file.read_exact(&mut payload)
        .map_err(|e| StorageError::io("read snapshot", path, e))?;
    if checksum(seq, &payload) != crc {
        return Err(corrupt(24, "checksum mismatch".to_string()));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_tmp_files_are_not_snapshots() {
        assert_eq!(snapshot_name(7), "snap-00000000000000000007.bin");
        assert_eq!(
            parse_snapshot_name("snap-00000000000000000007.bin"),
            Some(7)
        );
        assert_eq!(
            parse_snapshot_name("snap-00000000000000000007.bin.tmp"),
            None
        );
        assert!(is_leftover_tmp("snap-00000000000000000007.bin.tmp"));
        assert!(!is_leftover_tmp("other.tmp"));
        assert_eq!(parse_snapshot_name("snap-7.bin"), None);
    }

    #[test]
    fn header_has_the_documented_layout() {
        let header = encode_header(9, 3, checksum(9, b"abc"));
        assert_eq!(&header[0..4], b"IDBS");
        assert_eq!(&header[4..8], &1u32.to_le_bytes());
        assert_eq!(&header[8..16], &9u64.to_le_bytes());
        assert_eq!(&header[16..24], &3u64.to_le_bytes());
        assert_eq!(&header[24..28], &checksum(9, b"abc").to_le_bytes());
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn the_checksum_from_the_payloads_crc_is_the_crc_of_seq_len_and_payload() {
        let p = payload(100_000);
        let mut whole = crc32fast::Hasher::new();
        whole.update(&5u64.to_le_bytes());
        whole.update(&(p.len() as u64).to_le_bytes());
        whole.update(&p);
        assert_eq!(checksum(5, &p), whole.finalize());
    }

    #[test]
    fn a_payload_streamed_in_pieces_over_many_chunks_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = payload(800_000);
        // Pieces of 1 byte, small ones, and ones larger than a chunk.
        let cuts = [1, 2, 7, 1000, 300_003, 60_000];
        let (path, len) = write_snapshot_chunked(dir.path(), 11, 4096, |w| {
            let mut rest = &p[..];
            for &n in cuts.iter().cycle() {
                if rest.is_empty() {
                    return Ok(());
                }
                let (head, tail) = rest.split_at(n.min(rest.len()));
                w.write_all(head)?;
                rest = tail;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(len, p.len() as u64);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            (SNAPSHOT_HEADER_LEN + p.len()) as u64
        );
        let header = fs::read(&path).unwrap()[..SNAPSHOT_HEADER_LEN].to_vec();
        assert_eq!(header, encode_header(11, len, checksum(11, &p)));
        assert_eq!(read_latest_snapshot(dir.path()).unwrap(), Some((11, p)));
    }

    #[test]
    fn an_encoding_error_leaves_the_older_snapshot_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 3, b"old state").unwrap();
        let err = write_snapshot_chunked(dir.path(), 9, 4096, |w| {
            w.write_all(&payload(50_000))?;
            Err(io::Error::other("the encoder failed"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("the encoder failed"), "{err}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![snapshot_name(3)]);
        assert_eq!(
            read_latest_snapshot(dir.path()).unwrap(),
            Some((3, b"old state".to_vec()))
        );
    }
}
