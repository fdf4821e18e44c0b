//! A model's feature binding: how `/infer` turns an entity and a request
//! into the model's input vector.
//!
//! Declared in the spec (`[[models]]`), validated against the views here and
//! against the model's input width when the model loads. The vector is the
//! concatenation of the binding's slots, in order:
//!
//! | slot | width | value |
//! |---|---|---|
//! | `view = "v"` (optionally `features = [...]`, `key = "field"`) | one per feature | the view's features for the request's entity (or for the key in request field `key`, e.g. the merchant); null → `fill` (default 0) |
//! | `field = "f"` (transform `identity`, the default) | 1 | a number, or a bool as 0/1 |
//! | `field = "f"`, `transform = "log1p"` | 1 | ln(1 + x) (x ≥ −1) |
//! | `field = "f"`, `transform = "one_hot"`, `values = [...]` | len(values) | 1 at the value's position; an unlisted value gives all zeros |
//! | `field = "f"`, `transform = "hash_bucket"`, `buckets = n` | n | 1 at xxh3(value) mod n (strings by their bytes, numbers by their JSON text) |
//! | `time = "hour_of_day"` / `"day_of_week"` | 1 | of the request time, UTC: 0–23 / 0 = Monday … 6 |
//!
//! A request field named by a slot must be present (or the slot has a
//! `fill`); a missing or wrongly typed one is a 400 naming it.

use crate::error::TypesError;
use crate::spec::Catalog;
use crate::value::Value;
use serde::{Deserialize, Serialize};

/// One model binding as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    /// The model (repository directory name) this binding feeds.
    pub model: String,
    /// The model input the vector goes to; default: the model's only input.
    #[serde(default)]
    pub input: Option<String>,
    /// Whether `/infer` uses this model when the request names none.
    #[serde(default)]
    pub default: bool,
    /// The output answered as `predictions`; default: `predictions`, else
    /// the model's first output.
    #[serde(default)]
    pub predictions_output: Option<String>,
    /// The output answered as `confidence`; default: `confidence` when the
    /// model has it, else the largest value of the predictions.
    #[serde(default)]
    pub confidence_output: Option<String>,
    /// The slots of the input vector, in order.
    pub features: Vec<SlotSpec>,
}

/// One slot of a binding as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    /// Features of this view.
    #[serde(default)]
    pub view: Option<String>,
    /// With `view`: which of its features, in this order (default: all).
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// With `view`: the request field holding the key to read (a related
    /// entity, e.g. `merchant_id`); default: the request's `entity_id`.
    #[serde(default)]
    pub key: Option<String>,
    /// A request field.
    #[serde(default)]
    pub field: Option<String>,
    /// A request-time feature: `hour_of_day` or `day_of_week`.
    #[serde(default)]
    pub time: Option<TimeFeature>,
    /// How the value becomes numbers (default `identity`).
    #[serde(default)]
    pub transform: Option<TransformKind>,
    /// `one_hot`'s values.
    #[serde(default)]
    pub values: Option<Vec<String>>,
    /// `hash_bucket`'s bucket count.
    #[serde(default)]
    pub buckets: Option<u32>,
    /// The value used for a null view feature or a missing request field.
    /// Without it a missing request field is an error; null view features
    /// default to 0.
    #[serde(default)]
    pub fill: Option<f64>,
}

/// Request-time features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFeature {
    /// 0–23, UTC.
    HourOfDay,
    /// 0 = Monday … 6 = Sunday, UTC.
    DayOfWeek,
}

/// Transform names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformKind {
    Identity,
    Log1p,
    OneHot,
    HashBucket,
}

/// A validated transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Identity,
    Log1p,
    OneHot(Vec<String>),
    HashBucket(u32),
}

impl Transform {
    fn width(&self) -> usize {
        match self {
            Transform::Identity | Transform::Log1p => 1,
            Transform::OneHot(v) => v.len(),
            Transform::HashBucket(n) => *n as usize,
        }
    }
}

/// A validated slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Features `features` (indices) of view `view`, for the entity or for
    /// the key in request field `key`.
    View {
        view: usize,
        features: Vec<usize>,
        /// `"view:feature"` of each of `features`: the names an inference
        /// record gives them (made once here, not per request).
        names: Vec<String>,
        key: Option<String>,
        transform: Transform,
        fill: f32,
    },
    /// A request field.
    Field {
        name: String,
        transform: Transform,
        fill: Option<f32>,
    },
    /// A request-time feature.
    Time(TimeFeature),
}

/// A validated binding.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub model: String,
    pub input: Option<String>,
    pub default: bool,
    pub predictions_output: Option<String>,
    pub confidence_output: Option<String>,
    pub slots: Vec<Slot>,
    /// Total width of the vector.
    pub width: usize,
}

fn bad<T>(m: String) -> Result<T, TypesError> {
    Err(TypesError::SpecInvalid(m))
}

impl Binding {
    /// Validates a binding against the catalog's views.
    pub fn new(spec: &BindingSpec, catalog: &Catalog) -> Result<Binding, TypesError> {
        let ctx = format!("model {}", spec.model);
        if spec.features.is_empty() {
            return bad(format!("{ctx}: `features` is empty"));
        }
        let mut slots = Vec::with_capacity(spec.features.len());
        for (i, s) in spec.features.iter().enumerate() {
            let ctx = format!("{ctx}, features[{i}]");
            let sources = [s.view.is_some(), s.field.is_some(), s.time.is_some()]
                .iter()
                .filter(|&&b| b)
                .count();
            if sources != 1 {
                return bad(format!(
                    "{ctx}: give exactly one of `view`, `field` or `time`"
                ));
            }
            let transform = match (
                s.transform.unwrap_or(TransformKind::Identity),
                &s.values,
                s.buckets,
            ) {
                (TransformKind::Identity, None, None) => Transform::Identity,
                (TransformKind::Log1p, None, None) => Transform::Log1p,
                (TransformKind::OneHot, Some(v), None) if !v.is_empty() => {
                    Transform::OneHot(v.clone())
                }
                (TransformKind::OneHot, _, _) => {
                    return bad(format!("{ctx}: one_hot needs a non-empty `values` list"));
                }
                (TransformKind::HashBucket, None, Some(n)) if n > 0 => Transform::HashBucket(n),
                (TransformKind::HashBucket, _, _) => {
                    return bad(format!("{ctx}: hash_bucket needs `buckets` ≥ 1"));
                }
                (t, _, _) => {
                    return bad(format!(
                        "{ctx}: `values`/`buckets` do not apply to transform {t:?}"
                    ));
                }
            };
            if let Some(view) = &s.view {
                let Some(vi) = catalog.view_index(view) else {
                    return bad(format!("{ctx}: unknown view {view:?}"));
                };
                let v = &catalog.views[vi];
                let features = match &s.features {
                    None => (0..v.features.len()).collect(),
                    Some(names) => names
                        .iter()
                        .map(|n| {
                            v.feature_index(n).ok_or_else(|| {
                                TypesError::SpecInvalid(format!(
                                    "{ctx}: view {view} has no feature {n:?}"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                if !matches!(transform, Transform::Identity | Transform::Log1p) {
                    return bad(format!(
                        "{ctx}: view features take only the identity or log1p transform"
                    ));
                }
                let names = features
                    .iter()
                    .map(|&f| format!("{}:{}", v.name, v.features[f].name))
                    .collect();
                slots.push(Slot::View {
                    view: vi,
                    features,
                    names,
                    key: s.key.clone(),
                    transform,
                    fill: s.fill.unwrap_or(0.0) as f32,
                });
            } else if s.features.is_some() || s.key.is_some() {
                return bad(format!(
                    "{ctx}: `features` and `key` apply only to a `view` slot"
                ));
            } else if let Some(field) = &s.field {
                slots.push(Slot::Field {
                    name: field.clone(),
                    transform,
                    fill: s.fill.map(|f| f as f32),
                });
            } else if let Some(t) = s.time {
                if transform != Transform::Identity || s.fill.is_some() {
                    return bad(format!("{ctx}: a `time` slot takes no transform or fill"));
                }
                slots.push(Slot::Time(t));
            }
        }
        let width = slots
            .iter()
            .map(|s| match s {
                Slot::View { features, .. } => features.len(),
                Slot::Field { transform, .. } => transform.width(),
                Slot::Time(_) => 1,
            })
            .sum();
        Ok(Binding {
            model: spec.model.clone(),
            input: spec.input.clone(),
            default: spec.default,
            predictions_output: spec.predictions_output.clone(),
            confidence_output: spec.confidence_output.clone(),
            slots,
            width,
        })
    }

    /// Appends the input vector to `out`. `views[i]` holds the feature
    /// values of slot `i` when it is a view slot (in the view's feature
    /// order; other slots' entries are ignored); `request` is the request's
    /// `features` object; `ts_ms` the request time. Errors name the field.
    pub fn assemble(
        &self,
        views: &[&[Value]],
        request: &serde_json::Map<String, serde_json::Value>,
        ts_ms: i64,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Slot::View {
                    features,
                    transform,
                    fill,
                    ..
                } => {
                    let values = views.get(i).copied().unwrap_or(&[]);
                    for &f in features {
                        let x = match values.get(f) {
                            Some(Value::Int(v)) => *v as f64,
                            Some(Value::Float(v)) => *v,
                            Some(Value::Bool(b)) => f64::from(u8::from(*b)),
                            _ => f64::from(*fill),
                        };
                        out.push(apply_scalar(transform, x, "view feature")? as f32);
                    }
                }
                Slot::Field {
                    name,
                    transform,
                    fill,
                } => {
                    let v = request.get(name).filter(|v| !v.is_null());
                    let Some(v) = v else {
                        match fill {
                            Some(f) => {
                                let w = transform.width();
                                if w == 1 {
                                    out.push(*f);
                                } else {
                                    out.extend(std::iter::repeat_n(0.0, w));
                                }
                                continue;
                            }
                            None => return Err(format!("features.{name}: missing")),
                        }
                    };
                    match transform {
                        Transform::Identity | Transform::Log1p => {
                            let x = match v {
                                serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                                serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
                                _ => {
                                    return Err(format!(
                                        "features.{name}: expected a number or bool, got {v}"
                                    ));
                                }
                            };
                            if !x.is_finite() {
                                return Err(format!("features.{name}: not a finite number"));
                            }
                            out.push(
                                apply_scalar(transform, x, name)
                                    .map_err(|e| format!("features.{name}: {e}"))?
                                    as f32,
                            );
                        }
                        Transform::OneHot(values) => {
                            let text = category_text(v);
                            let at = values.iter().position(|x| *x == text);
                            out.extend(
                                (0..values.len()).map(|j| f32::from(u8::from(Some(j) == at))),
                            );
                        }
                        Transform::HashBucket(n) => {
                            let text = category_text(v);
                            let b = (xxhash_rust::xxh3::xxh3_64(text.as_bytes()) % u64::from(*n))
                                as usize;
                            out.extend((0..*n as usize).map(|j| f32::from(u8::from(j == b))));
                        }
                    }
                }
                Slot::Time(t) => {
                    let secs = ts_ms.div_euclid(1000);
                    let days = secs.div_euclid(86_400);
                    let x = match t {
                        TimeFeature::HourOfDay => secs.rem_euclid(86_400) / 3600,
                        // 1970-01-01 was a Thursday (3 with Monday = 0).
                        TimeFeature::DayOfWeek => (days + 3).rem_euclid(7),
                    };
                    out.push(x as f32);
                }
            }
        }
        Ok(())
    }

    /// The request fields that view slots read their key from.
    pub fn key_fields(&self) -> impl Iterator<Item = (usize, Option<&str>)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| match s {
            Slot::View { key, .. } => Some((i, key.as_deref())),
            _ => None,
        })
    }
}

fn apply_scalar(t: &Transform, x: f64, what: &str) -> Result<f64, String> {
    match t {
        Transform::Log1p if x < -1.0 => Err(format!("log1p of {x} < -1 ({what})")),
        Transform::Log1p => Ok(x.ln_1p()),
        _ => Ok(x),
    }
}

fn category_text(v: &serde_json::Value) -> std::borrow::Cow<'_, str> {
    match v {
        serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(models: &str) -> Result<Catalog, TypesError> {
        let spec = format!(
            "{}\n{models}",
            include_str!("../../../examples/payments/spec.toml")
                .split("[[models]]")
                .next()
                .unwrap_or_default()
        );
        Catalog::from_toml(&spec)
    }

    #[test]
    fn vector_follows_the_slots() {
        let c = catalog(
            r#"
[[models]]
model = "m"
features = [
  { view = "user_txn", features = ["txn_count_1h", "amount_avg_24h"] },
  { view = "merchant_txn", key = "merchant_id", features = ["txn_count_1h"], fill = -1 },
  { field = "amount" },
  { field = "amount", transform = "log1p" },
  { field = "card_present" },
  { field = "channel", transform = "one_hot", values = ["web", "app", "pos"] },
  { field = "merchant_id", transform = "hash_bucket", buckets = 4 },
  { time = "hour_of_day" },
  { time = "day_of_week" },
]
"#,
        )
        .unwrap();
        let b = c.binding(None).unwrap();
        assert_eq!(b.width, 2 + 1 + 1 + 1 + 1 + 3 + 4 + 1 + 1);
        let user = [
            Value::Int(3),
            Value::Int(7),
            Value::Int(9),
            Value::Float(1.0),
            Value::Float(12.5),
        ];
        let merchant = [Value::Null, Value::Null];
        let request: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"amount": 10.0, "card_present": true, "channel": "pos", "merchant_id": "m_0042"}"#,
        )
        .unwrap();
        // 2026-01-01T13:30:00Z, a Thursday.
        let ts = 1_767_274_200_000;
        let mut out = Vec::new();
        b.assemble(&[&user, &merchant], &request, ts, &mut out)
            .unwrap();
        let bucket = (xxhash_rust::xxh3::xxh3_64(b"m_0042") % 4) as usize;
        let mut want = vec![
            7.0,
            12.5,
            -1.0,
            10.0,
            (11.0f64).ln() as f32,
            1.0,
            0.0,
            0.0,
            1.0,
        ];
        want.extend((0..4).map(|j| if j == bucket { 1.0 } else { 0.0 }));
        want.extend([13.0, 3.0]);
        assert_eq!(out, want);
    }

    #[test]
    fn missing_and_wrong_fields_are_named() {
        let c = catalog(
            r#"
[[models]]
model = "m"
features = [{ field = "amount" }, { field = "channel", transform = "one_hot", values = ["web"] }]
"#,
        )
        .unwrap();
        let b = &c.bindings[0];
        let req = |s: &str| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).unwrap()
        };
        let mut out = Vec::new();
        let e = b
            .assemble(&[], &req(r#"{"channel": "web"}"#), 0, &mut out)
            .unwrap_err();
        assert!(e.contains("features.amount"), "{e}");
        let e = b
            .assemble(
                &[],
                &req(r#"{"amount": "x", "channel": "web"}"#),
                0,
                &mut out,
            )
            .unwrap_err();
        assert!(e.contains("features.amount") && e.contains("number"), "{e}");
        out.clear();
        b.assemble(
            &[],
            &req(r#"{"amount": 2, "channel": "other"}"#),
            0,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, vec![2.0, 0.0]);
    }

    #[test]
    fn bad_bindings_are_refused_by_name() {
        let cases = [
            (r#"features = [{ view = "nope" }]"#, "unknown view \"nope\""),
            (
                r#"features = [{ view = "user_txn", features = ["zz"] }]"#,
                "no feature \"zz\"",
            ),
            (
                r#"features = [{ field = "a", transform = "one_hot" }]"#,
                "one_hot needs",
            ),
            (
                r#"features = [{ field = "a", transform = "hash_bucket", buckets = 0 }]"#,
                "hash_bucket needs",
            ),
            (
                r#"features = [{ field = "a", view = "user_txn" }]"#,
                "exactly one of",
            ),
            (r#"features = [{ time = "minute" }]"#, "minute"),
            (r#"features = []"#, "`features` is empty"),
            (r#"features = [{ field = "a", colour = 1 }]"#, "colour"),
        ];
        for (body, want) in cases {
            let e = catalog(&format!("[[models]]\nmodel = \"m\"\n{body}\n")).unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
        let e = catalog(
            "[[models]]\nmodel = \"a\"\ndefault = true\nfeatures = [{ time = \"hour_of_day\" }]\n\
             [[models]]\nmodel = \"b\"\ndefault = true\nfeatures = [{ time = \"hour_of_day\" }]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("default"), "{e}");
    }
}
