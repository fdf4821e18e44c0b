//! The errors of feature evaluation and the [`ErrorKind`] each maps to.

use inferdb_types::ErrorKind;

/// Why an entity's features could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The evaluation time lies before the entity's frontier: events that an
    /// evaluation at `t` would see have already been evicted.
    #[error(
        "cannot evaluate features at {t} ms: the entity's state has moved on to {frontier} ms \
         and older events are evicted"
    )]
    BeforeFrontier {
        /// The requested evaluation time (epoch ms).
        t: i64,
        /// The entity's frontier (epoch ms).
        frontier: i64,
    },
    /// The state was built for another plan (e.g. restored from a snapshot
    /// of a different version of the view).
    #[error("entity state does not match the view's plan (it was built for another version)")]
    PlanMismatch,
}

impl FeatureError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FeatureError::BeforeFrontier { .. } => ErrorKind::InvalidInput,
            FeatureError::PlanMismatch => ErrorKind::Internal,
        }
    }
}
