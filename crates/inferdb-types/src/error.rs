//! The error kinds every crate maps its errors onto, and the errors of this
//! crate. Only the server turns an [`ErrorKind`] into a status code.

/// What went wrong, in the terms a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller sent something wrong; retrying the same input fails again.
    InvalidInput,
    /// The named thing does not exist.
    NotFound,
    /// The system is at capacity; retry later.
    Overloaded,
    /// The request's deadline passed.
    Timeout,
    /// A dependency (disk, a remote service) is not available.
    Unavailable,
    /// A bug or a broken invariant.
    Internal,
}

/// Errors raised while parsing and validating specs and values.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TypesError {
    /// The spec is not valid TOML or does not have the expected shape.
    #[error("spec is not valid: {0}")]
    SpecSyntax(String),
    /// The spec is well formed but inconsistent; the message names the item.
    #[error("spec is not valid: {0}")]
    SpecInvalid(String),
    /// A duration such as `5m` could not be parsed.
    #[error(
        "invalid duration {0:?}: expected a number followed by ms, s, m, h or d (e.g. 5m, 24h)"
    )]
    Duration(String),
    /// A timestamp could not be parsed.
    #[error("invalid timestamp {0:?}: expected RFC 3339 or epoch milliseconds")]
    Timestamp(String),
    /// A stored row could not be decoded.
    #[error("corrupt row encoding: {0}")]
    Codec(&'static str),
}

impl TypesError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TypesError::Codec(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidInput,
        }
    }
}
