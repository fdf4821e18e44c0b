//! The spec a user writes (TOML: streams and feature views) and the
//! validated [`Catalog`] the engine runs on.
//!
//! Parsing is strict: an unknown key, aggregation, type, field or duration
//! is refused with a message that names it, because a silently ignored
//! typo in a feature definition is a training/serving skew bug.

use crate::error::TypesError;
use crate::time::parse_duration_ms;
use crate::value::FieldType;
use serde::{Deserialize, Serialize};

/// The spec file as written by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Event streams.
    #[serde(default)]
    pub streams: Vec<StreamSpec>,
    /// Feature views over the streams.
    #[serde(default)]
    pub views: Vec<ViewSpec>,
    /// Feature bindings of models served by `/infer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<crate::binding::BindingSpec>,
    /// Continuous aggregates over the streams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregates: Vec<crate::aggregate::AggregateSpec>,
}

const DAY_MS: i64 = 86_400_000;

/// The built-in stream every `/infer` writes its inference record to.
pub const INFERENCE_STREAM: &str = "inference_records";

/// The built-in `inference_records` stream: one record per answered
/// `/infer`, keyed by the request's entity, found by `inference_id` too.
fn inference_stream_spec() -> StreamSpec {
    let f = |name: &str, ty: FieldType, required: bool| FieldSpec {
        name: name.to_string(),
        ty,
        required,
        values: None,
        min: None,
        max: None,
    };
    StreamSpec {
        name: INFERENCE_STREAM.to_string(),
        key: "entity_id".to_string(),
        time_field: "ts".to_string(),
        lateness: Some("1m".to_string()),
        unknown_fields: UnknownFields::Reject,
        chunk_interval: None,
        retention: None,
        compress_after: None,
        fields: vec![
            f("inference_id", FieldType::String, true),
            f("entity_id", FieldType::String, true),
            f("ts", FieldType::Timestamp, true),
            f("model", FieldType::String, true),
            f("model_version", FieldType::Int, true),
            f("features", FieldType::String, false),
            f("predictions", FieldType::String, true),
            f("confidence", FieldType::Float, false),
            f("latency_ms", FieldType::Float, true),
        ],
    }
}

/// What to do with a record field the stream does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownFields {
    /// Reject the record, naming the field (the default).
    #[default]
    Reject,
    /// Drop the field and keep the record.
    Ignore,
}

/// One event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Stream name, used in URLs (`/v1/events/{name}`).
    pub name: String,
    /// The field holding the entity key (string or int, required).
    pub key: String,
    /// The field holding event time (timestamp, required).
    pub time_field: String,
    /// How far behind the watermark an event may arrive and still count in
    /// windows (`5s`, `1m`, `0s`). Default `0s`.
    #[serde(default)]
    pub lateness: Option<String>,
    /// Unknown record fields: `reject` (default) or `ignore`.
    #[serde(default)]
    pub unknown_fields: UnknownFields,
    /// History: the event-time span of one Parquet partition, like a
    /// hypertable's `chunk_time_interval` (`1d` default, `1h`, `7d`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_interval: Option<String>,
    /// History: partitions whose whole span is older than this (against the
    /// wall clock) are dropped, like TimescaleDB's retention policy
    /// `drop_after`. Default: kept forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// History: partitions older than this are recompressed at a higher
    /// zstd level, like TimescaleDB's `compress_after`. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress_after: Option<String>,
    /// The fields of a record.
    pub fields: Vec<FieldSpec>,
}

/// One field of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Field name as it appears in the JSON record.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Whether the field must be present and non-null. Default true.
    #[serde(default = "yes")]
    pub required: bool,
    /// For strings: the allowed values (an enum).
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// For numbers: the smallest allowed value.
    #[serde(default)]
    pub min: Option<f64>,
    /// For numbers: the largest allowed value.
    #[serde(default)]
    pub max: Option<f64>,
}

fn yes() -> bool {
    true
}

/// A feature view: aggregations over one stream keyed by one of its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    /// View name, used in URLs and in `view:feature` references.
    pub name: String,
    /// The stream it aggregates.
    pub stream: String,
    /// The stream field that keys the view (e.g. `entity_id`, `merchant_id`).
    pub key: String,
    /// Its features.
    pub features: Vec<FeatureSpec>,
}

/// One feature of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Feature name.
    pub name: String,
    /// The aggregation.
    pub agg: Agg,
    /// The stream field aggregated (not needed by `count` and `seconds_since_last`).
    #[serde(default)]
    pub field: Option<String>,
    /// Sliding window over event time (`5m`, `1h`, `24h`); none = since the
    /// first event.
    #[serde(default)]
    pub window: Option<String>,
}

/// The aggregations a feature can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    /// Number of events (of non-null values when a field is named).
    Count,
    /// Sum of a numeric field; 0 for an empty window.
    Sum,
    /// Mean; null for an empty window.
    Avg,
    /// Minimum; null for an empty window.
    Min,
    /// Maximum; null for an empty window.
    Max,
    /// Population standard deviation; null for an empty window.
    Stddev,
    /// The value of the latest event (by event time); null for an empty window.
    Last,
    /// Number of distinct values (HyperLogLog when unwindowed).
    ApproxDistinct,
    /// Seconds from the entity's latest event to the evaluation time.
    SecondsSinceLast,
}

impl Agg {
    /// The spec's name of the aggregation.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Stddev => "stddev",
            Agg::Last => "last",
            Agg::ApproxDistinct => "approx_distinct",
            Agg::SecondsSinceLast => "seconds_since_last",
        }
    }
}

/// A validated stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Name.
    pub name: String,
    /// Fields in declaration order; a row holds one value per field in this order.
    pub fields: Vec<Field>,
    /// Index of the entity key field.
    pub key: usize,
    /// Index of the event-time field.
    pub time: usize,
    /// Allowed lateness in milliseconds.
    pub lateness_ms: i64,
    /// Policy for undeclared record fields.
    pub unknown_fields: UnknownFields,
    /// Indices (into [`Catalog::views`]) of the views over this stream.
    pub views: Vec<usize>,
    /// A field whose value identifies one record (the built-in
    /// `inference_records` stream's `inference_id`): records are then also
    /// found by it, from the hot tier.
    pub id_field: Option<usize>,
    /// History partition span in milliseconds (default one day).
    pub chunk_ms: i64,
    /// History retention in milliseconds, if any.
    pub retention_ms: Option<i64>,
    /// Age in milliseconds after which history is recompressed, if any.
    pub compress_after_ms: Option<i64>,
}

impl Stream {
    /// The index of the named field.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// A validated field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: FieldType,
    /// Must be present and non-null.
    pub required: bool,
    /// Allowed values of a string field, sorted for binary search.
    pub values: Option<Vec<String>>,
    /// Smallest allowed number.
    pub min: Option<f64>,
    /// Largest allowed number.
    pub max: Option<f64>,
}

/// A validated feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Name.
    pub name: String,
    /// Index into [`Catalog::streams`].
    pub stream: usize,
    /// Index of the key field in the stream.
    pub key: usize,
    /// Features in declaration order.
    pub features: Vec<Feature>,
}

impl View {
    /// The index of the named feature.
    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    /// The longest window of any feature, if any feature is windowed.
    pub fn longest_window_ms(&self) -> Option<i64> {
        self.features.iter().filter_map(|f| f.window_ms).max()
    }
}

/// A validated feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Name.
    pub name: String,
    /// Aggregation.
    pub agg: Agg,
    /// Index of the aggregated field in the stream, if any.
    pub field: Option<usize>,
    /// Window length in milliseconds; `None` = unwindowed.
    pub window_ms: Option<i64>,
}

/// The validated spec: what the engine runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// The spec it was built from (persisted in the data directory).
    pub spec: Spec,
    /// Streams, in spec order.
    pub streams: Vec<Stream>,
    /// Views, in spec order.
    pub views: Vec<View>,
    /// Model feature bindings, in spec order.
    pub bindings: Vec<crate::binding::Binding>,
    /// Continuous aggregates, in spec order.
    pub aggregates: Vec<crate::aggregate::ContinuousAggregate>,
}

impl Catalog {
    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str) -> Result<Catalog, TypesError> {
        let spec: Spec = toml::from_str(text).map_err(|e| TypesError::SpecSyntax(e.to_string()))?;
        Catalog::new(spec)
    }

    /// Validates a spec.
    pub fn new(spec: Spec) -> Result<Catalog, TypesError> {
        let bad = |m: String| Err(TypesError::SpecInvalid(m));
        let mut streams: Vec<Stream> = Vec::new();
        if spec.streams.iter().any(|s| s.name == "dead_letters") {
            return bad(
                "stream name \"dead_letters\" is reserved for the table of rejected records"
                    .to_string(),
            );
        }
        if spec.streams.iter().any(|s| s.name == INFERENCE_STREAM) {
            return bad(format!(
                "stream name {INFERENCE_STREAM:?} is reserved for the built-in inference records"
            ));
        }
        let builtin = inference_stream_spec();
        for s in spec.streams.iter().chain(std::iter::once(&builtin)) {
            check_name("stream", &s.name)?;
            if streams.iter().any(|x| x.name == s.name) {
                return bad(format!("stream {:?} is declared twice", s.name));
            }
            let mut fields: Vec<Field> = Vec::new();
            for f in &s.fields {
                check_name(&format!("stream {}: field", s.name), &f.name)?;
                if fields.iter().any(|x| x.name == f.name) {
                    return bad(format!(
                        "stream {}: field {:?} is declared twice",
                        s.name, f.name
                    ));
                }
                if f.values.is_some() && f.ty != FieldType::String {
                    return bad(format!(
                        "stream {}: field {}: `values` applies only to string fields",
                        s.name, f.name
                    ));
                }
                if (f.min.is_some() || f.max.is_some())
                    && !matches!(f.ty, FieldType::Int | FieldType::Float)
                {
                    return bad(format!(
                        "stream {}: field {}: `min`/`max` apply only to int and float fields",
                        s.name, f.name
                    ));
                }
                if let (Some(lo), Some(hi)) = (f.min, f.max)
                    && lo > hi
                {
                    return bad(format!(
                        "stream {}: field {}: min {lo} > max {hi}",
                        s.name, f.name
                    ));
                }
                let values = f.values.clone().map(|mut v| {
                    v.sort();
                    v.dedup();
                    v
                });
                fields.push(Field {
                    name: f.name.clone(),
                    ty: f.ty,
                    required: f.required,
                    values,
                    min: f.min,
                    max: f.max,
                });
            }
            let find = |what: &str, name: &str| {
                fields.iter().position(|f| f.name == name).ok_or_else(|| {
                    TypesError::SpecInvalid(format!(
                        "stream {}: {what} names unknown field {name:?} (fields: {})",
                        s.name,
                        names(&fields)
                    ))
                })
            };
            let key = find("key", &s.key)?;
            let time = find("time_field", &s.time_field)?;
            let kf = &fields[key];
            if !matches!(kf.ty, FieldType::String | FieldType::Int) || !kf.required {
                return bad(format!(
                    "stream {}: key field {} must be a required string or int",
                    s.name, kf.name
                ));
            }
            let tf = &fields[time];
            if tf.ty != FieldType::Timestamp || !tf.required {
                return bad(format!(
                    "stream {}: time_field {} must be a required timestamp",
                    s.name, tf.name
                ));
            }
            let lateness_ms = match s.lateness.as_deref() {
                None => 0,
                Some(l) if l.trim().trim_end_matches(|c: char| c.is_alphabetic()) == "0" => 0,
                Some(l) => parse_duration_ms(l).map_err(|e| {
                    TypesError::SpecInvalid(format!("stream {}: lateness: {e}", s.name))
                })?,
            };
            let duration = |what: &str, v: &Option<String>| -> Result<Option<i64>, TypesError> {
                match v.as_deref() {
                    None => Ok(None),
                    Some(d) => match parse_duration_ms(d) {
                        Ok(ms) if ms > 0 => Ok(Some(ms)),
                        Ok(_) => Err(TypesError::SpecInvalid(format!(
                            "stream {}: {what}: must be longer than zero",
                            s.name
                        ))),
                        Err(e) => Err(TypesError::SpecInvalid(format!(
                            "stream {}: {what}: {e}",
                            s.name
                        ))),
                    },
                }
            };
            let chunk_ms = duration("chunk_interval", &s.chunk_interval)?.unwrap_or(DAY_MS);
            streams.push(Stream {
                name: s.name.clone(),
                fields,
                key,
                time,
                lateness_ms,
                unknown_fields: s.unknown_fields,
                views: Vec::new(),
                id_field: None,
                chunk_ms,
                retention_ms: duration("retention", &s.retention)?,
                compress_after_ms: duration("compress_after", &s.compress_after)?,
            });
        }

        if let Some(st) = streams.iter_mut().find(|s| s.name == INFERENCE_STREAM) {
            st.id_field = st.field_index("inference_id");
        }

        let mut views: Vec<View> = Vec::new();
        for v in &spec.views {
            check_name("view", &v.name)?;
            if views.iter().any(|x| x.name == v.name) {
                return bad(format!("view {:?} is declared twice", v.name));
            }
            let Some(si) = streams.iter().position(|s| s.name == v.stream) else {
                return bad(format!(
                    "view {}: unknown stream {:?} (streams: {})",
                    v.name,
                    v.stream,
                    streams
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            let stream = &streams[si];
            let Some(key) = stream.field_index(&v.key) else {
                return bad(format!(
                    "view {}: key names unknown field {:?} of stream {} (fields: {})",
                    v.name,
                    v.key,
                    stream.name,
                    names(&stream.fields)
                ));
            };
            if !matches!(stream.fields[key].ty, FieldType::String | FieldType::Int) {
                return bad(format!(
                    "view {}: key field {} must be a string or int",
                    v.name, v.key
                ));
            }
            if v.features.is_empty() {
                return bad(format!("view {}: declares no features", v.name));
            }
            let mut features: Vec<Feature> = Vec::new();
            for f in &v.features {
                let ctx = format!("view {}, feature {}", v.name, f.name);
                check_name(&format!("view {}: feature", v.name), &f.name)?;
                if features.iter().any(|x| x.name == f.name) {
                    return bad(format!("{ctx}: declared twice"));
                }
                let field = match &f.field {
                    None => None,
                    Some(name) => Some(stream.field_index(name).ok_or_else(|| {
                        TypesError::SpecInvalid(format!(
                            "{ctx}: unknown field {name:?} (stream {} has: {})",
                            stream.name,
                            names(&stream.fields)
                        ))
                    })?),
                };
                match (f.agg, field) {
                    (Agg::Count, _) => {}
                    (Agg::SecondsSinceLast, None) => {}
                    (Agg::SecondsSinceLast, Some(_)) => {
                        return bad(format!(
                            "{ctx}: seconds_since_last uses event time and takes no field"
                        ));
                    }
                    (agg, None) => {
                        return bad(format!("{ctx}: aggregation {} needs a field", agg.name()));
                    }
                    (Agg::ApproxDistinct, Some(_)) => {}
                    (agg, Some(i)) => {
                        if !stream.fields[i].ty.is_numeric() {
                            return bad(format!(
                                "{ctx}: aggregation {} needs a numeric field, and {} is a {}",
                                agg.name(),
                                stream.fields[i].name,
                                stream.fields[i].ty.name()
                            ));
                        }
                    }
                }
                let window_ms = match &f.window {
                    None => None,
                    Some(w) => Some(
                        parse_duration_ms(w)
                            .map_err(|e| TypesError::SpecInvalid(format!("{ctx}: window: {e}")))?,
                    ),
                };
                features.push(Feature {
                    name: f.name.clone(),
                    agg: f.agg,
                    field,
                    window_ms,
                });
            }
            views.push(View {
                name: v.name.clone(),
                stream: si,
                key,
                features,
            });
            streams[si].views.push(views.len() - 1);
        }
        let mut aggregates: Vec<crate::aggregate::ContinuousAggregate> = Vec::new();
        for a in &spec.aggregates {
            check_name("aggregate", &a.name)?;
            if a.name == "dead_letters"
                || streams.iter().any(|s| s.name == a.name)
                || aggregates.iter().any(|x| x.name == a.name)
            {
                return bad(format!(
                    "aggregate {:?}: the name is taken by a stream, dead_letters or another aggregate",
                    a.name
                ));
            }
            let Some(si) = streams.iter().position(|s| s.name == a.stream) else {
                return bad(format!(
                    "aggregate {}: unknown stream {:?}",
                    a.name, a.stream
                ));
            };
            aggregates.push(crate::aggregate::ContinuousAggregate::new(
                a,
                si,
                &streams[si],
            )?);
        }
        let mut catalog = Catalog {
            spec,
            streams,
            views,
            bindings: Vec::new(),
            aggregates,
        };
        catalog.bindings = catalog
            .spec
            .models
            .iter()
            .map(|b| crate::binding::Binding::new(b, &catalog))
            .collect::<Result<_, _>>()?;
        if catalog.bindings.iter().filter(|b| b.default).count() > 1 {
            return bad("more than one model binding says `default = true`".to_string());
        }
        Ok(catalog)
    }

    /// The named stream's index.
    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }

    /// The named view's index.
    pub fn view_index(&self, name: &str) -> Option<usize> {
        self.views.iter().position(|v| v.name == name)
    }

    /// The binding of `model`, or the default binding when `model` is
    /// `None` (the one marked `default`, or the only one).
    pub fn binding(&self, model: Option<&str>) -> Option<&crate::binding::Binding> {
        match model {
            Some(m) => self.bindings.iter().find(|b| b.model == m),
            None => {
                let only = match self.bindings.as_slice() {
                    [only] => Some(only),
                    _ => None,
                };
                self.bindings.iter().find(|b| b.default).or(only)
            }
        }
    }
}

fn names(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_name(what: &str, name: &str) -> Result<(), TypesError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(TypesError::SpecInvalid(format!(
            "{what} name {name:?} must be 1-128 letters, digits or '_', not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[streams]]
name = "tx"
key = "entity_id"
time_field = "ts"
lateness = "5s"
fields = [
  { name = "entity_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "amount", type = "float", min = 0 },
  { name = "merchant_id", type = "string" },
  { name = "category", type = "string", values = ["b", "a"] },
  { name = "note", type = "string", required = false },
]
[[views]]
name = "u"
stream = "tx"
key = "entity_id"
features = [
  { name = "n5m", agg = "count", window = "5m" },
  { name = "s1h", agg = "sum", field = "amount", window = "1h" },
  { name = "dm", agg = "approx_distinct", field = "merchant_id", window = "24h" },
  { name = "since", agg = "seconds_since_last" },
]
"#;

    #[test]
    fn valid_spec_resolves_indices() {
        let c = Catalog::from_toml(BASE).unwrap();
        let s = &c.streams[0];
        assert_eq!((s.key, s.time, s.lateness_ms), (0, 1, 5_000));
        assert_eq!(s.views, vec![0]);
        assert_eq!(
            s.fields[4].values.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        let v = &c.views[0];
        assert_eq!(v.features[1].field, Some(2));
        assert_eq!(v.features[1].window_ms, Some(3_600_000));
        assert_eq!(v.longest_window_ms(), Some(86_400_000));
    }

    fn refused(from: &str, to: &str) -> String {
        let text = BASE.replacen(from, to, 1);
        assert_ne!(text, BASE, "replacement {from:?} did not apply");
        match Catalog::from_toml(&text) {
            Ok(_) => panic!("spec with {to:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_specs_are_refused_naming_the_item() {
        let e = refused(
            r#"field = "amount", window = "1h""#,
            r#"field = "amout", window = "1h""#,
        );
        assert!(e.contains("amout") && e.contains("s1h"), "{e}");
        let e = refused(r#"agg = "sum""#, r#"agg = "median""#);
        assert!(e.contains("median"), "{e}");
        let e = refused(r#"window = "5m""#, r#"window = "5 minutes""#);
        assert!(e.contains("5 minutes") && e.contains("n5m"), "{e}");
        let e = refused(r#"stream = "tx""#, r#"stream = "txx""#);
        assert!(e.contains("txx"), "{e}");
        let e = refused(r#"type = "float""#, r#"type = "decimal""#);
        assert!(e.contains("decimal"), "{e}");
        let e = refused(r#"lateness = "5s""#, r#"latenes = "5s""#);
        assert!(e.contains("latenes"), "{e}");
        let e = refused(
            r#"field = "amount", window = "1h""#,
            r#"field = "category", window = "1h""#,
        );
        assert!(e.contains("numeric") && e.contains("category"), "{e}");
        let e = refused(
            r#"key = "entity_id"
time_field"#,
            r#"key = "nope"
time_field"#,
        );
        assert!(e.contains("nope"), "{e}");
    }
}
