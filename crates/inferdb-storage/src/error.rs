//! The errors of this crate and the [`ErrorKind`] each maps onto.
//!
//! Every I/O failure is wrapped with the operation and the path it hit, so a
//! log line names the file; corruption names the file and the byte offset of
//! the first bad byte. The server maps [`StorageError::kind`] to a status.

use std::io;
use std::path::{Path, PathBuf};

use inferdb_types::ErrorKind;

/// What went wrong while reading or writing the log or a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation on `path`.
    #[error("storage I/O error: {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "open segment", "fdatasync".
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },
    /// Stored bytes failed validation where a torn tail cannot explain them.
    #[error("corrupt data in {} at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Offset of the first bad byte (the start of the bad frame or header).
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A payload larger than a frame can hold was appended.
    #[error("WAL frame payload of {len} bytes is above the maximum of {max} bytes")]
    FrameTooLarge {
        /// The payload length that was offered.
        len: usize,
        /// The largest payload a frame accepts.
        max: usize,
    },
    /// An earlier write or fdatasync failed, so what reached the disk is
    /// unknown; the log must be reopened (which recovers a consistent prefix).
    #[error(
        "write-ahead log in {} is unusable after an earlier I/O error; reopen it",
        dir.display()
    )]
    Poisoned {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// A failure injected by a test at a named step (see
    /// [`crate::history::fail_at`]).
    #[error("injected failure at {0}")]
    Injected(String),
    /// A SQL query failed: planning, execution, a limit.
    #[error("{0}")]
    Query(String),
    /// A SQL query ran past its time limit.
    #[error("query exceeded its time limit of {0:?}")]
    QueryTimeout(std::time::Duration),
    /// A fsync policy name that is not one of the choices.
    #[error("invalid fsync policy {0:?}: expected one of always, batch, none")]
    InvalidFsyncPolicy(String),
}

impl StorageError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Io { .. } | StorageError::Poisoned { .. } | StorageError::Injected(_) => {
                ErrorKind::Unavailable
            }
            StorageError::Query(_) => ErrorKind::InvalidInput,
            StorageError::QueryTimeout(_) => ErrorKind::Timeout,
            StorageError::Corrupt { .. } => ErrorKind::Internal,
            StorageError::FrameTooLarge { .. } | StorageError::InvalidFsyncPolicy(_) => {
                ErrorKind::InvalidInput
            }
        }
    }

    /// Wraps an I/O error with the operation and the path it hit. Call it
    /// inside `map_err(|e| ..)` so the path is only copied on failure.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
