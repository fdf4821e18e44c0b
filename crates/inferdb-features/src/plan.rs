//! [`ViewPlan`]: a view compiled once into the layout its entity states
//! share: which fields are retained per event (slots), which windows exist
//! and which accumulators each window keeps, and where every feature's value
//! is read from.
//!
//! Features are grouped so that work is shared: all features with the same
//! window length share one window (one start position in the buffer), and
//! all features on the same (window, field) share one accumulator, so
//! `avg`, `sum` and `stddev` of `amount` over 24h update one sum pair.
//! `last` and `seconds_since_last` need no per-event state at all (the
//! latest event overall is the latest in any window that holds it).

use inferdb_types::{Agg, FieldType, Stream, View};

/// How a slot encodes one field of one event as a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SlotKind {
    /// `f64` bits of [`inferdb_types::Value::as_f64`]; null is [`crate::state::NULL_BITS`].
    Num,
    /// [`inferdb_types::stable_hash`] with bit 0 cleared (never 0); bit 0 flags
    /// the last occurrence of the hash in the buffer; null is 0.
    Hash,
}

/// One per-event column of the buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SlotPlan {
    /// Stream field index.
    pub(crate) field: usize,
    pub(crate) kind: SlotKind,
    /// Keep the last-occurrence index (some windowed `approx_distinct` reads it).
    pub(crate) distinct: bool,
}

/// What one accumulator on a (window, field) or (unwindowed, field) keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AccPlan {
    /// Stream field index.
    pub(crate) field: usize,
    /// Windowed: slot holding the value (`Num`), if any.
    pub(crate) value_slot: Option<usize>,
    /// Windowed: slot holding the hash (`Hash`), if any.
    pub(crate) hash_slot: Option<usize>,
    /// Windowed: slot read for null checks, and its kind.
    pub(crate) presence: (usize, SlotKind),
    /// Count, sum and sum of squares (`sum`, `avg`, `stddev`).
    pub(crate) moments: bool,
    pub(crate) min: bool,
    pub(crate) max: bool,
    /// `approx_distinct`.
    pub(crate) distinct: bool,
    /// `(feature index, agg)` of the features read from this accumulator.
    pub(crate) outputs: Vec<(usize, Agg)>,
}

/// One window length and everything kept for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct WindowPlan {
    pub(crate) len_ms: i64,
    /// Features that count events (`count` without a field).
    pub(crate) counts: Vec<usize>,
    pub(crate) accs: Vec<AccPlan>,
}

/// `last` of one field: the latest non-null value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LastPlan {
    pub(crate) field: usize,
    pub(crate) ty: FieldType,
    /// `(feature index, window)`.
    pub(crate) outputs: Vec<(usize, Option<i64>)>,
}

/// A view compiled for incremental evaluation; built once per view and
/// shared by all of its entity states.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewPlan {
    pub(crate) names: Vec<String>,
    /// Per-event columns of the buffer (windowed features only).
    pub(crate) slots: Vec<SlotPlan>,
    /// Windows that need the buffer (count and accumulator features).
    pub(crate) windows: Vec<WindowPlan>,
    /// Features counting all events (unwindowed `count` without a field).
    pub(crate) counts: Vec<usize>,
    /// Unwindowed accumulators (slots unused).
    pub(crate) accs: Vec<AccPlan>,
    pub(crate) lasts: Vec<LastPlan>,
    /// `seconds_since_last`: `(feature index, window)`.
    pub(crate) since: Vec<(usize, Option<i64>)>,
    /// Longest window in `windows`: events older than it are evicted.
    pub(crate) longest_ms: Option<i64>,
    /// Fingerprint of the state layout, stored in each state.
    pub(crate) shape: u64,
}

impl ViewPlan {
    /// Compiles a validated view of `stream`.
    pub fn new(view: &View, stream: &Stream) -> ViewPlan {
        let field_ty = |i: usize| stream.fields.get(i).map_or(FieldType::Float, |f| f.ty);
        let mut slots: Vec<SlotPlan> = Vec::new();
        let mut windows: Vec<WindowPlan> = Vec::new();
        let mut counts = Vec::new();
        let mut accs: Vec<AccPlan> = Vec::new();
        let mut lasts: Vec<LastPlan> = Vec::new();
        let mut since = Vec::new();

        for (i, f) in view.features.iter().enumerate() {
            match (f.agg, f.field) {
                (Agg::SecondsSinceLast, _) => since.push((i, f.window_ms)),
                (Agg::Last, Some(field)) => match lasts.iter_mut().find(|l| l.field == field) {
                    Some(l) => l.outputs.push((i, f.window_ms)),
                    None => lasts.push(LastPlan {
                        field,
                        ty: field_ty(field),
                        outputs: vec![(i, f.window_ms)],
                    }),
                },
                (Agg::Count, None) => match f.window_ms {
                    None => counts.push(i),
                    Some(w) => window_mut(&mut windows, w).counts.push(i),
                },
                (agg, Some(field)) => {
                    let list = match f.window_ms {
                        None => &mut accs,
                        Some(w) => &mut window_mut(&mut windows, w).accs,
                    };
                    let acc = match list.iter().position(|a| a.field == field) {
                        Some(p) => &mut list[p],
                        None => {
                            list.push(AccPlan {
                                field,
                                value_slot: None,
                                hash_slot: None,
                                presence: (0, SlotKind::Num),
                                moments: false,
                                min: false,
                                max: false,
                                distinct: false,
                                outputs: Vec::new(),
                            });
                            let last = list.len() - 1;
                            &mut list[last]
                        }
                    };
                    match agg {
                        Agg::Sum | Agg::Avg => acc.moments = true,
                        // Min and max bound the variance: 0 when they are equal.
                        Agg::Stddev => (acc.moments, acc.min, acc.max) = (true, true, true),
                        Agg::Min => acc.min = true,
                        Agg::Max => acc.max = true,
                        Agg::ApproxDistinct => acc.distinct = true,
                        _ => {}
                    }
                    acc.outputs.push((i, agg));
                }
                // Refused by validation (these aggregations need a field): stays null.
                (_, None) => {}
            }
        }

        // Slots for windowed accumulators: a value column for numeric work
        // (and null checks of numeric fields), a hash column for distinct
        // (and null checks of text fields).
        for w in &mut windows {
            for a in &mut w.accs {
                let numeric = field_ty(a.field).is_numeric();
                if a.moments || a.min || a.max || (numeric && !a.distinct) {
                    a.value_slot = Some(slot(&mut slots, a.field, SlotKind::Num, false));
                }
                if a.distinct || !numeric {
                    a.hash_slot = Some(slot(&mut slots, a.field, SlotKind::Hash, a.distinct));
                }
                a.presence = match (a.value_slot, a.hash_slot) {
                    (Some(s), _) => (s, SlotKind::Num),
                    (None, Some(s)) => (s, SlotKind::Hash),
                    (None, None) => (0, SlotKind::Num),
                };
            }
        }
        windows.sort_by_key(|w| w.len_ms);
        let longest_ms = windows.last().map(|w| w.len_ms);
        let shape = {
            let layout = format!("{slots:?}|{windows:?}|{counts:?}|{accs:?}|{lasts:?}|{since:?}");
            xxhash_rust::xxh3::xxh3_64(layout.as_bytes())
        };
        ViewPlan {
            names: view.features.iter().map(|f| f.name.clone()).collect(),
            slots,
            windows,
            counts,
            accs,
            lasts,
            since,
            longest_ms,
            shape,
        }
    }

    /// Feature names, in view order (the order of [`crate::EntityState::eval`]'s output).
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the view has no features (validated views always have some).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn window_mut(windows: &mut Vec<WindowPlan>, len_ms: i64) -> &mut WindowPlan {
    let p = match windows.iter().position(|w| w.len_ms == len_ms) {
        Some(p) => p,
        None => {
            windows.push(WindowPlan {
                len_ms,
                counts: Vec::new(),
                accs: Vec::new(),
            });
            windows.len() - 1
        }
    };
    &mut windows[p]
}

/// The index of the slot for `(field, kind)`, added if new.
fn slot(slots: &mut Vec<SlotPlan>, field: usize, kind: SlotKind, distinct: bool) -> usize {
    match slots
        .iter()
        .position(|s| s.field == field && s.kind == kind)
    {
        Some(p) => {
            slots[p].distinct |= distinct;
            p
        }
        None => {
            slots.push(SlotPlan {
                field,
                kind,
                distinct,
            });
            slots.len() - 1
        }
    }
}
