//! Continuous aggregates: a stream's events in `time_bucket` buckets,
//! grouped by some fields, with count/sum/avg/min/max columns — declared in
//! the spec, maintained as events arrive, queryable as a table.
//!
//! ```toml
//! [[aggregates]]
//! name = "payments_5m"
//! stream = "transactions"
//! bucket = "5m"
//! group_by = ["category"]
//! columns = [
//!   { name = "payments", agg = "count" },
//!   { name = "amount_avg", agg = "avg", field = "amount" },
//! ]
//! ```
//!
//! The table has a `bucket` timestamp column (TimescaleDB's `time_bucket`
//! of the stream's time field, origin 2000-01-03), the group-by fields, then
//! the columns, and equals
//! `SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, category,
//! count(*) AS payments, avg(amount) AS amount_avg FROM transactions
//! GROUP BY bucket, category`.

use crate::error::TypesError;
use crate::spec::Stream;
use crate::time::parse_duration_ms;
use crate::value::FieldType;
use serde::{Deserialize, Serialize};

/// The aggregations a continuous aggregate column can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketAgg {
    /// Rows (of non-null values when a field is named).
    Count,
    /// Sum of a numeric field (null when no value).
    Sum,
    /// Mean of a numeric field.
    Avg,
    /// Smallest value of a numeric or timestamp field.
    Min,
    /// Largest value.
    Max,
}

/// A continuous aggregate as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// Table name.
    pub name: String,
    /// The stream aggregated.
    pub stream: String,
    /// Bucket width (`1m`, `5m`, `1h`, `1d`).
    pub bucket: String,
    /// Fields to group by besides the bucket.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The aggregate columns.
    pub columns: Vec<AggregateColumnSpec>,
}

/// One aggregate column as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateColumnSpec {
    /// Column name.
    pub name: String,
    /// Aggregation.
    pub agg: BucketAgg,
    /// The field aggregated (`count` without one counts rows).
    #[serde(default)]
    pub field: Option<String>,
}

/// A validated continuous aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuousAggregate {
    /// Table name.
    pub name: String,
    /// Index of the stream.
    pub stream: usize,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// Indices of the group-by fields in the stream.
    pub group_by: Vec<usize>,
    /// Columns: name, aggregation, field index.
    pub columns: Vec<(String, BucketAgg, Option<usize>)>,
}

impl ContinuousAggregate {
    /// Validates one spec entry against its stream.
    pub fn new(
        a: &AggregateSpec,
        stream_idx: usize,
        stream: &Stream,
    ) -> Result<ContinuousAggregate, TypesError> {
        let bad = |m: String| TypesError::SpecInvalid(format!("aggregate {}: {m}", a.name));
        let bucket_ms = parse_duration_ms(&a.bucket).map_err(|e| bad(format!("bucket: {e}")))?;
        let field = |name: &str| {
            stream
                .field_index(name)
                .ok_or_else(|| bad(format!("stream {} has no field {name:?}", stream.name)))
        };
        let mut group_by = Vec::new();
        for g in &a.group_by {
            let i = field(g)?;
            if stream.fields[i].ty == FieldType::Float {
                return Err(bad(format!(
                    "group_by {g}: a float field cannot be a group"
                )));
            }
            group_by.push(i);
        }
        let mut columns = Vec::new();
        let mut names: Vec<&str> = vec!["bucket"];
        names.extend(a.group_by.iter().map(String::as_str));
        for c in &a.columns {
            if names.contains(&c.name.as_str()) {
                return Err(bad(format!("column {:?} is declared twice", c.name)));
            }
            names.push(&c.name);
            let f = match &c.field {
                None if c.agg == BucketAgg::Count => None,
                None => return Err(bad(format!("column {}: {:?} needs a field", c.name, c.agg))),
                Some(f) => Some(field(f)?),
            };
            if let Some(i) = f {
                let ty = stream.fields[i].ty;
                let ok = match c.agg {
                    BucketAgg::Count => true,
                    BucketAgg::Sum | BucketAgg::Avg => {
                        matches!(ty, FieldType::Int | FieldType::Float)
                    }
                    BucketAgg::Min | BucketAgg::Max => {
                        matches!(ty, FieldType::Int | FieldType::Float | FieldType::Timestamp)
                    }
                };
                if !ok {
                    return Err(bad(format!(
                        "column {}: {:?} does not apply to {} field {}",
                        c.name,
                        c.agg,
                        ty.name(),
                        stream.fields[i].name
                    )));
                }
            }
            columns.push((c.name.clone(), c.agg, f));
        }
        if columns.is_empty() {
            return Err(bad("needs at least one column".into()));
        }
        Ok(ContinuousAggregate {
            name: a.name.clone(),
            stream: stream_idx,
            bucket_ms,
            group_by,
            columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Catalog;

    const BASE: &str = r#"
[[streams]]
name = "tx"
key = "user"
time_field = "ts"
chunk_interval = "1h"
retention = "30d"
fields = [
  { name = "user", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "amount", type = "float" },
  { name = "kind", type = "string" },
]
"#;

    fn with(agg: &str) -> Result<Catalog, String> {
        Catalog::from_toml(&format!("{BASE}\n{agg}")).map_err(|e| e.to_string())
    }

    #[test]
    fn aggregates_and_history_settings_are_validated_by_name() {
        let c = with(
            r#"[[aggregates]]
name = "tx_5m"
stream = "tx"
bucket = "5m"
group_by = ["kind"]
columns = [{ name = "n", agg = "count" }, { name = "avg_amount", agg = "avg", field = "amount" }]"#,
        )
        .unwrap();
        assert_eq!(c.aggregates[0].bucket_ms, 300_000);
        assert_eq!(c.aggregates[0].group_by, vec![3]);
        assert_eq!(c.streams[0].chunk_ms, 3_600_000);
        assert_eq!(c.streams[0].retention_ms, Some(30 * 86_400_000));
        assert_eq!(c.streams[0].compress_after_ms, None);
        for (agg, needle) in [
            (
                r#"[[aggregates]]
name = "a"
stream = "nope"
bucket = "5m"
columns = [{ name = "n", agg = "count" }]"#,
                "unknown stream",
            ),
            (
                r#"[[aggregates]]
name = "a"
stream = "tx"
bucket = "5m"
group_by = ["amount"]
columns = [{ name = "n", agg = "count" }]"#,
                "float field cannot be a group",
            ),
            (
                r#"[[aggregates]]
name = "a"
stream = "tx"
bucket = "5m"
columns = [{ name = "s", agg = "sum", field = "kind" }]"#,
                "does not apply to string field kind",
            ),
            (
                r#"[[aggregates]]
name = "a"
stream = "tx"
bucket = "5m"
columns = [{ name = "s", agg = "sum" }]"#,
                "needs a field",
            ),
            (
                r#"[[aggregates]]
name = "tx"
stream = "tx"
bucket = "5m"
columns = [{ name = "n", agg = "count" }]"#,
                "name is taken",
            ),
            (
                r#"[[aggregates]]
name = "a"
stream = "tx"
bucket = "soon"
columns = [{ name = "n", agg = "count" }]"#,
                "bucket",
            ),
            (
                r#"[[aggregates]]
name = "a"
stream = "tx"
bucket = "5m"
colums = []"#,
                "colums",
            ),
        ] {
            let e = with(agg).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = Catalog::from_toml(&BASE.replace("retention = \"30d\"", "retention = \"forever\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("retention"), "{e}");
    }
}
