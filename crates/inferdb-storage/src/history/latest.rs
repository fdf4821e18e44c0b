//! The latest-rows fast path of SQL: "one entity's latest N rows",
//!
//! ```sql
//! SELECT <columns> FROM <stream> WHERE <key> = '<k>' ORDER BY <time> DESC LIMIT <n>
//! ```
//!
//! is the question the engine's hot tier (each entity's recent records)
//! answers from memory. [`latest_rows_pattern`] recognises it in a query's
//! logical plan; when the caller can vouch that it holds exactly the
//! entity's latest `n` stored rows, the table scan is swapped for a
//! one-batch `MemTable` of those rows and the *same plan* runs on them —
//! DataFusion still does the filtering, ordering, limit and projection, so
//! the answer is the one the files would give. Anything else in the query
//! (another filter, a join, an aggregate, an offset, a sort on another
//! column, computed columns under the sort) leaves it on the normal path.
//!
//! Planning costs more than answering such a query from memory, so once a
//! query of this shape has been planned, its shape is kept (a
//! [`Prepared`]: which table, how many rows, which columns under which
//! names), keyed by its SQL tokens with its one string literal — the
//! entity key — taken out ([`shape`]). A later query with the same tokens
//! and another key is the same plan on another entity: it is answered from
//! the hot tier's rows directly, without DataFusion (newest first, the
//! plan's columns). Only string keys are prepared: a string literal
//! compared with an int column is cast by the planner, and an uncastable
//! one is an error a prepared answer would not give.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{Expr, FetchType, LogicalPlan, Operator, SkipType};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use parking_lot::Mutex;

use super::columns::RowBuilder;
use super::sql::{QueryResult, SqlOptions};
use super::{History, KeyBound};
use crate::StorageError;
use inferdb_types::FieldType;

/// A query for one entity's latest rows of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRows {
    /// The table (its index among the history's tables).
    pub table: usize,
    /// The entity key, as text (an int key as its decimal digits).
    pub key: String,
    /// How many rows at most (the query's `LIMIT`).
    pub limit: usize,
}

fn is_plain_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(a) => matches!(*a.expr, Expr::Column(_)),
        _ => false,
    }
}

/// The [`LatestRows`] that `plan` asks for, if it has exactly the shape
/// above.
pub(crate) fn latest_rows_pattern(plan: &LogicalPlan, history: &History) -> Option<LatestRows> {
    let LogicalPlan::Limit(limit) = plan else {
        return None;
    };
    let Ok(FetchType::Literal(Some(n))) = limit.get_fetch_type() else {
        return None;
    };
    if !matches!(limit.get_skip_type(), Ok(SkipType::Literal(0))) {
        return None;
    }
    let mut node = limit.input.as_ref();
    let mut sort_col: Option<&str> = None;
    loop {
        match node {
            // Columns, possibly renamed; below the sort, no new name may be
            // the sort column's, so that it names the table's time column.
            LogicalPlan::Projection(p)
                if p.expr.iter().all(|e| {
                    is_plain_column(e)
                        && !matches!((e, sort_col), (Expr::Alias(a), Some(c)) if a.name == c)
                }) =>
            {
                node = p.input.as_ref();
            }
            LogicalPlan::Sort(s) if sort_col.is_none() && s.fetch.is_none_or(|f| f >= n) => {
                let [e] = s.expr.as_slice() else {
                    return None;
                };
                let Expr::Column(c) = &e.expr else {
                    return None;
                };
                if e.asc {
                    return None;
                }
                sort_col = Some(c.name.as_str());
                node = s.input.as_ref();
            }
            LogicalPlan::Filter(f) => {
                let sort_col = sort_col?;
                let LogicalPlan::TableScan(scan) = f.input.as_ref() else {
                    return None;
                };
                if !scan.filters.is_empty() || scan.fetch.is_some() {
                    return None;
                }
                let table = history.table_index(scan.table_name.table())?;
                let (_, def) = history.table_schema(table)?;
                let (time_name, _) = def.columns.get(def.time)?;
                let (key_name, key_type) = def.columns.get(def.key)?;
                if sort_col != time_name {
                    return None;
                }
                let Expr::BinaryExpr(b) = &f.predicate else {
                    return None;
                };
                if b.op != Operator::Eq {
                    return None;
                }
                let (col, lit) = match (&*b.left, &*b.right) {
                    (Expr::Column(c), lit) | (lit, Expr::Column(c)) => (c, lit),
                    _ => return None,
                };
                if &col.name != key_name {
                    return None;
                }
                let key = match (super::sql::key_literal(lit)?, key_type) {
                    (KeyBound::Str(s), FieldType::String) => s,
                    (KeyBound::Int(i), FieldType::Int) => i.to_string(),
                    _ => return None,
                };
                return Some(LatestRows {
                    table,
                    key,
                    limit: n,
                });
            }
            _ => return None,
        }
    }
}

/// A row as `inferdb_types::codec::encode_row` wrote it (the hot tier
/// keeps rows so, shared).
pub type EncodedRow = std::sync::Arc<[u8]>;

impl History {
    /// One batch of `rows` of table `table`, in the table's schema.
    fn rows_batch(&self, table: usize, rows: &[EncodedRow]) -> Result<RecordBatch, StorageError> {
        let Some((schema, def)) = self.table_schema(table) else {
            return Err(StorageError::Query("unknown history table".into()));
        };
        let types: Vec<FieldType> = def.columns.iter().map(|c| c.1).collect();
        let mut b = RowBuilder::with_capacity(schema, &types, rows.len());
        for r in rows {
            b.push_encoded(r)
                .map_err(|e| StorageError::Query(format!("a hot-tier row: {e}")))?;
        }
        Ok(b.finish())
    }
}

/// `plan` with the scan of `want.table` reading `rows` instead.
pub(crate) fn on_rows(
    plan: LogicalPlan,
    history: &History,
    want: &LatestRows,
    rows: &[EncodedRow],
) -> Result<LogicalPlan, StorageError> {
    let err = |e: datafusion::error::DataFusionError| StorageError::Query(e.to_string());
    let batch = history.rows_batch(want.table, rows)?;
    let mem = Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(err)?);
    let plan = plan
        .transform_up(|n| match n {
            LogicalPlan::TableScan(mut s) => {
                s.source = provider_as_source(mem.clone());
                Ok(Transformed::yes(LogicalPlan::TableScan(s)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map_err(err)?;
    Ok(plan.data)
}

/// A latest-rows query as planned once: enough to answer another query of
/// the same shape (another entity key) without planning it.
#[derive(Debug)]
pub struct Prepared {
    /// The table (its index among the history's tables).
    table: usize,
    /// The query's `LIMIT`.
    limit: usize,
    /// The table's columns the query returns, in order.
    columns: Vec<usize>,
    /// The result's schema (the columns under the query's names).
    schema: SchemaRef,
}

/// Shapes kept at most; the cache is emptied when it is full.
const PREPARED_MAX: usize = 1024;

/// Latest-rows queries planned so far, by [`shape`].
#[derive(Debug, Default)]
pub(crate) struct PreparedCache {
    map: Mutex<HashMap<String, Arc<Prepared>>>,
}

/// The shape of `sql`: its tokens (whitespace and comments left out) with
/// its single-quoted string literal replaced by a marker, and that
/// literal's value. `None` unless `sql` has exactly one such literal.
pub(crate) fn shape(sql: &str) -> Option<(String, String)> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    let mut key = String::with_capacity(sql.len() * 4);
    let mut literal = None;
    for t in tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::SingleQuotedString(s) => {
                if literal.replace(s).is_some() {
                    return None;
                }
                key.push('\u{1}');
            }
            t => {
                let _ = write!(key, "{t:?}");
            }
        }
        key.push('\0');
    }
    Some((key, literal?))
}

/// The table columns `plan` returns, in order, if it is made only of
/// plain columns over one table scan (the latest-rows shape).
fn output_columns(plan: &LogicalPlan) -> Option<Vec<usize>> {
    match plan {
        LogicalPlan::TableScan(s) => Some(match &s.projection {
            Some(p) => p.clone(),
            None => (0..s.source.schema().fields().len()).collect(),
        }),
        LogicalPlan::Limit(l) => output_columns(&l.input),
        LogicalPlan::Sort(s) => output_columns(&s.input),
        LogicalPlan::Filter(f) => output_columns(&f.input),
        LogicalPlan::Projection(p) => {
            let below = output_columns(&p.input)?;
            p.expr
                .iter()
                .map(|e| {
                    let c = match e {
                        Expr::Column(c) => c,
                        Expr::Alias(a) => match a.expr.as_ref() {
                            Expr::Column(c) => c,
                            _ => return None,
                        },
                        _ => return None,
                    };
                    let i = p.input.schema().index_of_column(c).ok()?;
                    below.get(i).copied()
                })
                .collect()
        }
        _ => None,
    }
}

impl PreparedCache {
    /// Keeps the shape of `sql`, planned as `plan` asking for `want`, when
    /// its one string literal is `want`'s key.
    pub(crate) fn remember(
        &self,
        sql: &str,
        plan: &LogicalPlan,
        want: &LatestRows,
        history: &History,
    ) {
        let Some((_, def)) = history.table_schema(want.table) else {
            return;
        };
        if def.columns.get(def.key).map(|c| c.1) != Some(FieldType::String) {
            return;
        }
        let Some((key, literal)) = shape(sql) else {
            return;
        };
        let Some(columns) = output_columns(plan) else {
            return;
        };
        if literal != want.key {
            return;
        }
        let p = Prepared {
            table: want.table,
            limit: want.limit,
            columns,
            schema: Arc::new(plan.schema().as_arrow().clone()),
        };
        let mut map = self.map.lock();
        if map.len() >= PREPARED_MAX {
            map.clear();
        }
        map.insert(key, Arc::new(p));
    }

    /// The prepared query `sql` is, with what it asks for.
    pub(crate) fn get(&self, sql: &str) -> Option<(Arc<Prepared>, LatestRows)> {
        let (key, literal) = shape(sql)?;
        let p = self.map.lock().get(&key)?.clone();
        let want = LatestRows {
            table: p.table,
            key: literal,
            limit: p.limit,
        };
        Some((p, want))
    }
}

impl History {
    /// Answers `sql` without planning it when it is a latest-rows query of
    /// a shape planned before and `latest` returns the entity's latest
    /// rows (newest first, as [`History::query_latest`] asks); `None`
    /// otherwise (the caller runs [`History::query_latest`]).
    pub fn query_prepared(
        &self,
        sql: &str,
        opts: &SqlOptions,
        latest: impl FnOnce(&LatestRows) -> Option<Vec<EncodedRow>>,
    ) -> Option<Result<QueryResult, StorageError>> {
        let (p, want) = self.inner.prepared.get(sql)?;
        let rows = latest(&want)?;
        Some(self.answer_prepared(&p, &rows, opts))
    }

    /// `rows` (the entity's latest, newest first) as `p` answers them.
    fn answer_prepared(
        &self,
        p: &Prepared,
        rows: &[EncodedRow],
        opts: &SqlOptions,
    ) -> Result<QueryResult, StorageError> {
        let all = self.rows_batch(p.table, &rows[..rows.len().min(p.limit)])?;
        let columns = p.columns.iter().map(|&i| all.column(i).clone()).collect();
        let batch = RecordBatch::try_new(p.schema.clone(), columns)
            .map_err(|e| StorageError::Query(e.to_string()))?;
        let truncated = batch.num_rows() > opts.max_rows;
        let batch = match truncated {
            true => batch.slice(0, opts.max_rows),
            false => batch,
        };
        Ok(QueryResult {
            schema: p.schema.clone(),
            batches: vec![batch],
            truncated,
            from_memory: true,
        })
    }
}
