//! The write-ahead log writer: [`Wal`] owns the active segment file, a
//! user-space write buffer and the list of closed segments.
//!
//! Data moves one way: [`Wal::append`] assigns the next seq and encodes the
//! frame into the buffer (large payloads skip the buffer and go to the OS in
//! one `writev` together with what is buffered, so no payload byte is copied
//! twice); [`Wal::flush`] hands the buffer to the OS; [`Wal::sync`] flushes
//! and calls `fdatasync`, after which every appended frame is durable. The
//! engine's single writer thread calls `sync` once per group of batches
//! (group commit) and picks when to call it from its [`FsyncPolicy`].
//!
//! When the active segment would grow past `segment_bytes`, it is synced and
//! closed, and a new segment named after the next seq is created and made
//! durable with its directory entry. Closed segments are therefore always
//! fully durable; only the tail of the active (last) segment can be torn by a
//! crash, which is why [`Wal::open`] truncates a bad tail there and refuses a
//! bad frame anywhere else.
//!
//! After any failed write or fsync the `Wal` is poisoned: what reached the
//! disk is unknown (and a retried fsync can report success for lost pages),
//! so every later call fails until the log is reopened, which recovers the
//! valid prefix from disk.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tracing::{debug, error, info, warn};

use crate::StorageError;
use crate::frame::{self, FRAME_HEADER_LEN, MAX_PAYLOAD_LEN};
use crate::segment::{self, Scanned, SegmentScanner};

/// Segment size used by [`WalOptions::new`].
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The write buffer is handed to the OS once it holds this many bytes.
const WRITE_BUF_CAPACITY: usize = 1 << 20;

/// Payloads at least this large are written straight from the caller's
/// slice (with the buffered bytes, in one `writev`) instead of being copied
/// into the buffer: one kernel copy instead of a user copy plus a kernel copy.
const DIRECT_WRITE_MIN: usize = 32 << 10;

/// When the engine makes appended frames durable. This crate only provides
/// the primitives ([`Wal::flush`], [`Wal::sync`]); the engine applies the
/// policy by choosing when to call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `sync` before acknowledging every batch.
    Always,
    /// `sync` once per group of batches drained together (group commit).
    Batch,
    /// Only `flush` to the OS: survives a process crash, not a power loss.
    None,
}

impl FsyncPolicy {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::None => "none",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsyncPolicy {
    type Err = StorageError;

    /// Parses `always`, `batch` or `none` (ASCII case and surrounding
    /// whitespace ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::None]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| StorageError::InvalidFsyncPolicy(s.to_string()))
    }
}

/// Where the log lives and how large its segments grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Directory holding the segment files; created if missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started before a frame would take
    /// it past this size. A single larger frame gets a segment of its own.
    pub segment_bytes: u64,
}

impl WalOptions {
    /// Options for a log in `dir` with [`DEFAULT_SEGMENT_BYTES`] segments.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in the log after opening (the active one included).
    pub segments: usize,
    /// Valid frames found across all segments.
    pub frames: u64,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// The seq of the last frame written, `None` if the log never held one.
    pub last_seq: Option<u64>,
}

/// A closed segment: fully synced, never written again.
#[derive(Debug)]
struct ClosedSegment {
    path: PathBuf,
    first_seq: u64,
    /// One past the seq of its last frame.
    end_seq: u64,
}

/// The segment appends go to.
#[derive(Debug)]
struct ActiveSegment {
    file: File,
    path: PathBuf,
    first_seq: u64,
    /// Bytes handed to the OS (the file's length).
    written: u64,
    /// Bytes known durable.
    synced: u64,
}

/// The write-ahead log, owned by the engine's single writer thread.
///
/// Frames appended but not yet flushed are lost when the `Wal` is dropped,
/// exactly as in a crash; call [`Wal::sync`] (or [`Wal::close`]) first.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    closed: VecDeque<ClosedSegment>,
    active: ActiveSegment,
    /// Encoded frames not yet handed to the OS.
    buf: Vec<u8>,
    next_seq: u64,
    poisoned: bool,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("closed_segments", &self.closed.len())
            .field("active", &self.active.path)
            .field("buffered_bytes", &self.buf.len())
            .field("next_seq", &self.next_seq)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Wal {
    /// Opens (creating the directory if needed) and scans the log,
    /// validating every frame's checksum and the seq order within and across
    /// segments. A torn or corrupt tail in the last segment is truncated
    /// (logged with `warn!` and counted in the report); a bad frame in an
    /// earlier segment, or a gap between segments, is
    /// [`StorageError::Corrupt`] naming the file and offset. The last
    /// segment is then fsynced, so every frame recovered here is durable
    /// before the engine applies it, and the writer is positioned after the
    /// last good frame.
    pub fn open(opts: WalOptions) -> Result<(Wal, RecoveryReport), StorageError> {
        let WalOptions { dir, segment_bytes } = opts;
        fs::create_dir_all(&dir).map_err(|e| StorageError::io("create WAL directory", &dir, e))?;
        let segments = segment::list_segments(&dir)?;
        let mut report = RecoveryReport {
            segments: segments.len(),
            ..RecoveryReport::default()
        };

        let mut closed = VecDeque::with_capacity(segments.len());
        let mut scratch = Vec::new();
        let mut expected_seq: Option<u64> = None;
        let mut last = None;
        let count = segments.len();
        for (i, seg) in segments.into_iter().enumerate() {
            if let Some(expected) = expected_seq
                && seg.first_seq != expected
            {
                return Err(seg.gap_error(expected));
            }
            let is_last = i + 1 == count;
            let mut scanner = SegmentScanner::open(&seg)?;
            let mut bad = None;
            loop {
                match scanner.next_frame(&mut scratch)? {
                    Scanned::Frame { .. } => report.frames += 1,
                    Scanned::End => break,
                    Scanned::Bad { offset, reason } if is_last => {
                        bad = Some((offset, reason));
                        break;
                    }
                    Scanned::Bad { offset, reason } => {
                        return Err(StorageError::Corrupt {
                            path: seg.path,
                            offset,
                            reason,
                        });
                    }
                }
            }
            expected_seq = Some(scanner.next_seq());
            if is_last {
                last = Some((seg, scanner.offset(), scanner.file_len(), bad));
            } else {
                closed.push_back(ClosedSegment {
                    path: seg.path,
                    first_seq: seg.first_seq,
                    end_seq: scanner.next_seq(),
                });
            }
        }

        let (active, next_seq) = match last {
            None => {
                let path = segment::segment_path(&dir, 1);
                let file = segment::create_segment(&dir, &path)?;
                report.segments = 1;
                (ActiveSegment::new(file, path, 1, 0), 1)
            }
            Some((seg, good_len, file_len, bad)) => {
                let next_seq = expected_seq.unwrap_or(seg.first_seq);
                let path = seg.path;
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StorageError::io("open segment", &path, e))?;
                if let Some((offset, reason)) = bad {
                    let truncated = file_len - good_len;
                    warn!(
                        path = %path.display(),
                        offset,
                        truncated_bytes = truncated,
                        reason = %reason,
                        "truncating torn or corrupt tail of the last WAL segment"
                    );
                    file.set_len(good_len)
                        .map_err(|e| StorageError::io("truncate segment", &path, e))?;
                    report.truncated_bytes = truncated;
                }
                // Frames recovered here may only have been in the page cache;
                // the engine is about to apply them and may snapshot past them,
                // so they must not be lost later.
                file.sync_all()
                    .map_err(|e| StorageError::io("fsync segment", &path, e))?;
                file.seek(SeekFrom::Start(good_len))
                    .map_err(|e| StorageError::io("seek segment", &path, e))?;
                (
                    ActiveSegment::new(file, path, seg.first_seq, good_len),
                    next_seq,
                )
            }
        };
        report.last_seq = (next_seq > 1).then(|| next_seq - 1);
        info!(
            dir = %dir.display(),
            segments = report.segments,
            frames = report.frames,
            truncated_bytes = report.truncated_bytes,
            next_seq,
            "opened write-ahead log"
        );
        let wal = Wal {
            dir,
            segment_bytes,
            closed,
            active,
            buf: Vec::with_capacity(WRITE_BUF_CAPACITY + DIRECT_WRITE_MIN + FRAME_HEADER_LEN),
            next_seq,
            poisoned: false,
        };
        Ok((wal, report))
    }

    /// Appends a frame and returns its seq. The frame is not durable until
    /// [`Wal::sync`]; small frames wait in the user-space buffer, large ones
    /// are handed to the OS at once. The payload is copied at most once.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<u64, StorageError> {
        self.check_usable()?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(StorageError::FrameTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
        let size = self.active.written + self.buf.len() as u64;
        if size > 0 && size + frame_len > self.segment_bytes {
            self.rotate()?;
        }
        let seq = self.next_seq;
        self.buf
            .extend_from_slice(&frame::encode_header(seq, kind, payload));
        if payload.len() >= DIRECT_WRITE_MIN {
            let mut slices = [IoSlice::new(&self.buf), IoSlice::new(payload)];
            if let Err(e) = write_all_vectored(&mut self.active.file, &mut slices) {
                return Err(self.poison("write segment", e));
            }
            self.active.written += (self.buf.len() + payload.len()) as u64;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(payload);
            if self.buf.len() >= WRITE_BUF_CAPACITY {
                self.write_buffer()?;
            }
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Hands buffered frames to the OS without fsync: they survive a crash
    /// of this process but not of the machine. Enough for
    /// [`FsyncPolicy::None`].
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.write_buffer()
    }

    /// Flushes and `fdatasync`s: every frame appended so far is durable when
    /// this returns. A call with nothing new since the last one costs no
    /// syscall.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.write_buffer()?;
        self.sync_active()
    }

    /// Hands buffered frames to the OS and returns the `fdatasync` that
    /// makes every frame appended so far durable, to be run on another
    /// thread ([`SyncJob::run`]) while this one goes on appending; give its
    /// outcome back to [`Wal::end_sync`]. `None` when they already are.
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob>, StorageError> {
        self.check_usable()?;
        self.write_buffer()?;
        if self.active.synced == self.active.written {
            return Ok(None);
        }
        let file = match self.active.file.try_clone() {
            Ok(f) => f,
            Err(e) => return Err(self.poison("duplicate segment descriptor", e)),
        };
        Ok(Some(SyncJob {
            file,
            first_seq: self.active.first_seq,
            written: self.active.written,
        }))
    }

    /// Takes the outcome of a [`SyncJob`]: on success the frames it covered
    /// are durable (a later [`Wal::sync`] need not repeat it); a failed
    /// `fdatasync` poisons the log, as it does in [`Wal::sync`].
    pub fn end_sync(&mut self, done: SyncDone) -> Result<(), StorageError> {
        if let Err(e) = done.result {
            return Err(self.poison("fdatasync segment", e));
        }
        self.check_usable()?;
        // A job of a segment closed since was overtaken by the rotation's
        // own sync.
        if done.first_seq == self.active.first_seq && done.written > self.active.synced {
            self.active.synced = done.written;
        }
        Ok(())
    }

    /// Syncs and closes the log.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.sync()
    }

    /// The seq the next appended frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq of the oldest frame the log still holds (or would give the
    /// next frame, if it holds none): above 1 once segments were removed.
    pub fn first_seq(&self) -> u64 {
        self.closed
            .front()
            .map_or(self.active.first_seq, |c| c.first_seq)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the closed segments whose frames all have a seq below `seq`
    /// (oldest first), then fsyncs the directory. The active segment is never
    /// deleted, so the seq order survives a reopen. Returns how many segments
    /// were deleted.
    pub fn remove_segments_before(&mut self, seq: u64) -> Result<usize, StorageError> {
        let mut removed = 0;
        while let Some(oldest) = self.closed.front() {
            if oldest.end_seq > seq {
                break;
            }
            match fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("remove segment", &oldest.path, e)),
            }
            debug!(
                path = %oldest.path.display(),
                first_seq = oldest.first_seq,
                end_seq = oldest.end_seq,
                "removed WAL segment"
            );
            self.closed.pop_front();
            removed += 1;
        }
        if removed > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Marks the log unusable after a failed write or fsync.
    fn poison(&mut self, op: &'static str, e: io::Error) -> StorageError {
        self.poisoned = true;
        error!(
            path = %self.active.path.display(),
            op,
            error = %e,
            "WAL write failed; the log must be reopened"
        );
        StorageError::io(op, &self.active.path, e)
    }

    fn write_buffer(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.file.write_all(&self.buf) {
            return Err(self.poison("write segment", e));
        }
        self.active.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if self.active.synced == self.active.written {
            return Ok(());
        }
        if let Err(e) = self.active.file.sync_data() {
            return Err(self.poison("fdatasync segment", e));
        }
        self.active.synced = self.active.written;
        Ok(())
    }

    /// Closes the active segment (durable first) and starts the next one,
    /// named after the next seq.
    fn rotate(&mut self) -> Result<(), StorageError> {
        self.write_buffer()?;
        self.sync_active()?;
        let path = segment::segment_path(&self.dir, self.next_seq);
        let file = match segment::create_segment(&self.dir, &path) {
            Ok(file) => file,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        let new = ActiveSegment::new(file, path, self.next_seq, 0);
        let old = mem::replace(&mut self.active, new);
        debug!(
            closed = %old.path.display(),
            bytes = old.written,
            next = %self.active.path.display(),
            "rotated WAL segment"
        );
        self.closed.push_back(ClosedSegment {
            path: old.path,
            first_seq: old.first_seq,
            end_seq: self.next_seq,
        });
        Ok(())
    }
}

impl ActiveSegment {
    /// `len` bytes already in the file, all durable.
    fn new(file: File, path: PathBuf, first_seq: u64, len: u64) -> Self {
        ActiveSegment {
            file,
            path,
            first_seq,
            written: len,
            synced: len,
        }
    }
}

/// An `fdatasync` of the active segment, run away from the thread that
/// appends ([`Wal::begin_sync`]).
#[derive(Debug)]
pub struct SyncJob {
    /// A duplicate of the segment's descriptor.
    file: File,
    first_seq: u64,
    /// Bytes of the segment it makes durable.
    written: u64,
}

impl SyncJob {
    /// Runs the `fdatasync` (blocks for the disk).
    pub fn run(self) -> SyncDone {
        let t = std::time::Instant::now();
        let result = self.file.sync_data();
        SyncDone {
            first_seq: self.first_seq,
            written: self.written,
            result,
            elapsed: t.elapsed(),
        }
    }
}

/// The outcome of a [`SyncJob`], for [`Wal::end_sync`].
#[derive(Debug)]
pub struct SyncDone {
    first_seq: u64,
    written: u64,
    result: io::Result<()>,
    /// How long the `fdatasync` took.
    pub elapsed: std::time::Duration,
}

/// `write_all` for several slices: one `writev` per round until all is
/// written (std's `write_all_vectored` is not stable).
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_its_names_and_lists_the_choices_otherwise() {
        for p in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::None] {
            assert_eq!(p.as_str().parse::<FsyncPolicy>().unwrap(), p);
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(
            " Batch ".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Batch
        );
        let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sometimes"), "{msg}");
        assert!(msg.contains("always, batch, none"), "{msg}");
        assert_eq!(err.kind(), inferdb_types::ErrorKind::InvalidInput);
    }

    #[test]
    fn write_all_vectored_writes_every_slice_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        let a = vec![1u8; 10];
        let b = vec![2u8; 100_000];
        let mut slices = [IoSlice::new(&a), IoSlice::new(&[]), IoSlice::new(&b)];
        write_all_vectored(&mut file, &mut slices).unwrap();
        let back = fs::read(&path).unwrap();
        assert_eq!(back.len(), 100_010);
        assert_eq!(&back[..10], &a[..]);
        assert!(back[10..].iter().all(|&x| x == 2));
    }

    #[test]
    fn a_sync_job_run_elsewhere_makes_the_frames_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WalOptions::new(dir.path());
        opts.segment_bytes = 1_000;
        let (mut wal, _) = Wal::open(opts).unwrap();
        assert!(wal.begin_sync().unwrap().is_none(), "nothing to sync yet");
        wal.append(1, &[7u8; 60]).unwrap();
        let job = wal.begin_sync().unwrap().expect("a frame to sync");
        // The frame reached the OS before the job was handed out.
        assert_eq!(wal.buf.len(), 0);
        assert_eq!(wal.active.written, 79);
        // The log goes on appending while the job runs on another thread.
        let running = std::thread::spawn(move || job.run());
        wal.append(1, &[8u8; 60]).unwrap();
        let done = running.join().unwrap();
        wal.end_sync(done).unwrap();
        assert_eq!(wal.active.synced, 79, "only what the job covered");
        // The next job covers the rest; a job of a segment closed since is
        // ignored (the rotation synced it).
        let job = wal.begin_sync().unwrap().unwrap();
        assert_eq!(job.written, 158);
        for _ in 0..12 {
            wal.append(1, &[9u8; 60]).unwrap();
        }
        assert!(wal.active.first_seq > 0, "rotated");
        let synced = wal.active.synced;
        wal.end_sync(job.run()).unwrap();
        assert_eq!(wal.active.synced, synced);
        wal.sync().unwrap();
        drop(wal);
        let (_, report) = Wal::open(WalOptions::new(dir.path())).unwrap();
        assert_eq!(report.frames, 14);
    }

    #[test]
    fn a_failed_sync_job_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(WalOptions::new(dir.path())).unwrap();
        wal.append(1, b"x").unwrap();
        let done = SyncDone {
            first_seq: wal.active.first_seq,
            written: wal.active.written,
            result: Err(io::Error::other("disk gone")),
            elapsed: std::time::Duration::ZERO,
        };
        let err = wal.end_sync(done).unwrap_err().to_string();
        assert!(err.contains("disk gone"), "{err}");
        assert!(wal.append(1, b"y").is_err(), "poisoned");
        assert!(wal.begin_sync().is_err(), "poisoned");
    }

    #[test]
    fn sync_without_new_frames_is_free_and_rotation_keeps_closed_segments_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WalOptions::new(dir.path());
        opts.segment_bytes = 100;
        let (mut wal, _) = Wal::open(opts).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.active.synced, 0);
        for _ in 0..5 {
            wal.append(1, &[0u8; 60]).unwrap();
        }
        // Every frame of 79 bytes fills a segment of 100 on its own.
        assert_eq!(wal.closed.len(), 4);
        assert_eq!(wal.active.first_seq, 5);
        assert_eq!(wal.buf.len(), 79);
        assert_eq!(wal.closed.back().map(|c| c.end_seq), Some(5));
        wal.sync().unwrap();
        assert_eq!(wal.active.synced, 79);
    }
}
