//! The engine's errors. Each has a [`ErrorKind`]; the server maps kinds to
//! status codes, nothing here knows about HTTP.

use inferdb_storage::StorageError;
use inferdb_types::{ErrorKind, TypesError};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The named stream is not in the catalog.
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// The named view is not in the catalog.
    #[error("unknown feature view {0:?}")]
    UnknownView(String),
    /// The named feature is not in its view.
    #[error("unknown feature {feature:?} in view {view:?}")]
    UnknownFeature {
        /// View name.
        view: String,
        /// Feature name.
        feature: String,
    },
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    InvalidInput(String),
    /// The ingest queue is full: retry later.
    #[error("ingest queue is full; retry later")]
    Overloaded,
    /// Writing to the log failed earlier; the engine refuses writes until restarted.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The spec or persisted catalog is not usable.
    #[error("catalog: {0}")]
    Catalog(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A spec or value error.
    #[error(transparent)]
    Types(#[from] TypesError),
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::UnknownStream(_)
            | EngineError::UnknownView(_)
            | EngineError::UnknownFeature { .. } => ErrorKind::NotFound,
            EngineError::InvalidInput(_) | EngineError::Catalog(_) => ErrorKind::InvalidInput,
            EngineError::Overloaded => ErrorKind::Overloaded,
            EngineError::Unavailable(_) => ErrorKind::Unavailable,
            EngineError::Storage(e) => e.kind(),
            EngineError::Types(e) => e.kind(),
            EngineError::Internal(_) => ErrorKind::Internal,
        }
    }
}
