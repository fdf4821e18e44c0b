//! Point-in-time feature values for training data.
//!
//! For each requested (key, t) the view's features are computed exactly as
//! the online path would at evaluation time t over the stored events of
//! that key with event time ≤ t — the same `EntityState` code, fed the
//! key's events from the history (Parquet files and head) in event-time
//! order, so nothing after t leaks in. For an in-order stream this equals
//! the online read made when the stream's watermark was t; with
//! out-of-order events it counts every stored event with time ≤ t (also
//! those the online windows had judged too late).

use crate::{Engine, EngineError};
use inferdb_features::{EntityState, ViewPlan};
use inferdb_types::Value;
use std::collections::{HashMap, HashSet};

fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Engine {
    /// The features of `view` for each (key, t) request, in request order
    /// (one value per feature, in the view's order). Waits until the
    /// history holds every acknowledged event. Blocking.
    pub fn features_at(
        &self,
        view: &str,
        requests: &[(String, i64)],
    ) -> Result<Vec<Vec<Value>>, EngineError> {
        let catalog = self.catalog();
        let vi = catalog
            .view_index(view)
            .ok_or_else(|| EngineError::UnknownView(view.to_string()))?;
        let v = &catalog.views[vi];
        let stream = &catalog.streams[v.stream];
        let plan = ViewPlan::new(v, stream);
        if !self.history_caught_up() {
            return Err(EngineError::Unavailable(
                "the history is more than 10 s behind the log; retry".into(),
            ));
        }
        let keys: HashSet<String> = requests.iter().map(|r| r.0.clone()).collect();
        let rows = self.history().rows_with_keys(v.stream, v.key, &keys)?;
        let mut events: HashMap<String, Vec<(i64, Vec<Value>)>> = HashMap::new();
        for r in rows {
            let (Some(k), Some(Value::Ts(ts))) =
                (r.get(v.key).and_then(key_text), r.get(stream.time))
            else {
                continue;
            };
            let ts = *ts;
            events.entry(k).or_default().push((ts, r));
        }
        let mut by_key: HashMap<&str, Vec<(i64, usize)>> = HashMap::new();
        for (i, (k, t)) in requests.iter().enumerate() {
            by_key.entry(k.as_str()).or_default().push((*t, i));
        }
        let mut out: Vec<Vec<Value>> = vec![Vec::new(); requests.len()];
        for (k, mut reqs) in by_key {
            reqs.sort_unstable();
            let mut evs = events.remove(k).unwrap_or_default();
            evs.sort_by_key(|e| e.0);
            let mut state = EntityState::new(&plan);
            let mut next = 0;
            for (t, i) in reqs {
                while let Some((ts, row)) = evs.get(next)
                    && *ts <= t
                {
                    state.insert(&plan, *ts, row, *ts);
                    next += 1;
                }
                let mut vals = Vec::with_capacity(plan.len());
                match state.eval(&plan, t, &mut vals) {
                    Ok(()) => out[i] = vals,
                    Err(e) => {
                        return Err(EngineError::Internal(format!(
                            "point-in-time evaluation of {k} at {t}: {e}"
                        )));
                    }
                }
            }
        }
        Ok(out)
    }
}
