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

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{Expr, FetchType, LogicalPlan, Operator, SkipType};

use super::columns::RowBuilder;
use super::{History, KeyBound};
use crate::StorageError;
use inferdb_types::{FieldType, Value};

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

/// `plan` with the scan of `want.table` reading `rows` instead.
pub(crate) fn on_rows(
    plan: LogicalPlan,
    history: &History,
    want: &LatestRows,
    rows: &[Vec<Value>],
) -> Result<LogicalPlan, StorageError> {
    let err = |e: datafusion::error::DataFusionError| StorageError::Query(e.to_string());
    let Some((schema, def)) = history.table_schema(want.table) else {
        return Err(StorageError::Query("unknown history table".into()));
    };
    let types: Vec<FieldType> = def.columns.iter().map(|c| c.1).collect();
    let mut b = RowBuilder::new(schema.clone(), &types);
    for r in rows {
        b.push(r);
    }
    let mem = Arc::new(MemTable::try_new(schema, vec![vec![b.finish()]]).map_err(err)?);
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
