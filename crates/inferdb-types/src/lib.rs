//! Plain data shared by every inferdb crate: values and field types, event
//! time, durations, the user's spec (streams and feature views) and its
//! validated form, the [`Catalog`], and the binary row codec used by the WAL
//! and snapshots.
//!
//! Nothing here does I/O or knows about threads: the crates above turn these
//! values into files, state and HTTP answers.

pub mod aggregate;
pub mod binding;
pub mod codec;
pub mod error;
pub mod spec;
pub mod time;
pub mod value;

pub use aggregate::{AggregateSpec, BucketAgg, ContinuousAggregate};
pub use binding::{Binding, BindingSpec};
pub use error::{ErrorKind, TypesError};
pub use spec::{
    Agg, Catalog, Feature, FeatureSpec, Field, FieldSpec, INFERENCE_STREAM, Spec, Stream,
    StreamSpec, UnknownFields, View, ViewSpec,
};
pub use time::{Timestamp, parse_duration_ms};
pub use value::{FieldType, PlainJson, Value, ValueRef, stable_hash};
