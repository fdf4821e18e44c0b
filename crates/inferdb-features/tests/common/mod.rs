//! Shared fixtures of the integration tests: a stream with fields of every
//! type (some optional) and a view built from a list of features.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use inferdb_features::ViewPlan;
use inferdb_types::{Catalog, Value};

/// Field indices of the test stream.
pub const ID: usize = 0;
pub const TS: usize = 1;
pub const AMOUNT: usize = 2;
pub const OPT: usize = 3;
pub const N: usize = 4;
pub const FLAG: usize = 5;
pub const MERCHANT: usize = 6;

/// Field names, by index.
pub const FIELDS: [&str; 7] = ["id", "ts", "amount", "opt", "n", "flag", "merchant"];

/// One feature: name, agg (spec name), field, window (spec text).
pub struct FeatureDef {
    pub name: String,
    pub agg: &'static str,
    pub field: Option<usize>,
    pub window: Option<String>,
}

/// A catalog with the test stream and one view `v` of `features`.
pub fn catalog(lateness_ms: i64, features: &[FeatureDef]) -> Catalog {
    let lateness = if lateness_ms == 0 {
        "0s".to_string()
    } else {
        format!("{lateness_ms}ms")
    };
    let mut text = format!(
        r#"
[[streams]]
name = "ev"
key = "id"
time_field = "ts"
lateness = "{lateness}"
fields = [
  {{ name = "id", type = "string" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "amount", type = "float" }},
  {{ name = "opt", type = "float", required = false }},
  {{ name = "n", type = "int", required = false }},
  {{ name = "flag", type = "bool" }},
  {{ name = "merchant", type = "string", required = false }},
]
[[views]]
name = "v"
stream = "ev"
key = "id"
features = [
"#
    );
    for f in features {
        text.push_str(&format!("  {{ name = \"{}\", agg = \"{}\"", f.name, f.agg));
        if let Some(i) = f.field {
            text.push_str(&format!(", field = \"{}\"", FIELDS[i]));
        }
        if let Some(w) = &f.window {
            text.push_str(&format!(", window = \"{w}\""));
        }
        text.push_str(" },\n");
    }
    text.push_str("]\n");
    Catalog::from_toml(&text).unwrap()
}

/// The plan of the catalog's only view.
pub fn plan_of(cat: &Catalog) -> ViewPlan {
    let view = &cat.views[0];
    ViewPlan::new(view, &cat.streams[view.stream])
}

/// A feature definition.
pub fn feat(agg: &'static str, field: Option<usize>, window_ms: Option<i64>) -> FeatureDef {
    let wname = window_ms.map_or("all".to_string(), |w| format!("{w}ms"));
    let fname = field.map_or("events", |i| FIELDS[i]);
    FeatureDef {
        name: format!("{agg}_{fname}_{wname}"),
        agg,
        field,
        window: window_ms.map(|w| format!("{w}ms")),
    }
}

/// A row of the test stream.
pub fn row(
    ts: i64,
    amount: f64,
    opt: Option<f64>,
    n: Option<i64>,
    flag: bool,
    merchant: Option<&str>,
) -> Vec<Value> {
    vec![
        Value::Str("e1".into()),
        Value::Ts(ts),
        Value::Float(amount),
        opt.map_or(Value::Null, Value::Float),
        n.map_or(Value::Null, Value::Int),
        Value::Bool(flag),
        merchant.map_or(Value::Null, |m| Value::Str(m.into())),
    ]
}
