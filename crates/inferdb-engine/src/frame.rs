//! The payload of a WAL frame: one ingest batch — the stream, the accepted
//! rows and the rejected records (dead letters) — encoded by the request's
//! thread before it reaches the writer, so that the writer only copies bytes.
//!
//! Layout (little endian): `u16` stream-name length, name, `i64` receive
//! time (ms, wall clock), `u32` row count, rows ([`inferdb_types::codec`]),
//! `u32` dead-letter count, then per dead letter `u32` index, field
//! (`u16` length, `0xFFFF` = none), reason and raw text (`u32` length each).

use crate::error::EngineError;
use inferdb_types::Value;
use inferdb_types::codec::{Decoder, encode_row};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Frame kind of an ingest batch.
pub const KIND_BATCH: u8 = 1;
/// Frame kind of an erasure: the payload is the entity key (UTF-8).
pub const KIND_ERASE: u8 = 2;

/// A rejected record as kept in the dead-letter store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Position in its batch.
    pub index: u32,
    /// Offending field, if one is to blame.
    pub field: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The record's text (truncated to 2 KiB).
    pub raw: String,
    /// When the batch arrived (ms since epoch, wall clock).
    pub received_ms: i64,
}

/// A decoded batch frame. It keeps its encoded payload: the hot tier
/// stores each record as its slice of it (`spans`), already encoded.
#[derive(Debug)]
pub struct BatchFrame {
    /// Stream name.
    pub stream: String,
    /// Receive time (ms).
    pub received_ms: i64,
    /// Accepted rows.
    pub rows: Vec<Vec<Value>>,
    /// Rejected records.
    pub dead: Vec<DeadLetter>,
    /// The encoded frame.
    pub payload: Vec<u8>,
    /// Where each row's encoding lies in `payload`.
    pub spans: Vec<(u32, u32)>,
    /// Each row's key hashes, row-major, as
    /// [`crate::state::OnlineState::routes`] lays them out; computed on
    /// the submitter's thread so that the writer's apply threads only look
    /// them up. Empty until computed (a frame read back from the log gets
    /// them when it is applied).
    pub routes: Vec<u64>,
    /// Each row's encoding (its `spans` slice of the payload) as the hot
    /// tier keeps it, one allocation shared by the entity's records and
    /// the id index; made on the submitter's thread like `routes`, and
    /// empty until then.
    pub records: Vec<Arc<[u8]>>,
}

/// Encodes a batch; also returns where each row's encoding lies.
pub fn encode(
    stream: &str,
    received_ms: i64,
    rows: &[Vec<Value>],
    dead: &[DeadLetter],
) -> (Vec<u8>, Vec<(u32, u32)>) {
    let mut out = Vec::with_capacity(64 + rows.len() * 112);
    let mut spans = Vec::with_capacity(rows.len());
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(&received_ms.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        let start = out.len() as u32;
        encode_row(r, &mut out);
        spans.push((start, out.len() as u32));
    }
    out.extend_from_slice(&(dead.len() as u32).to_le_bytes());
    for d in dead {
        out.extend_from_slice(&d.index.to_le_bytes());
        match &d.field {
            Some(f) => {
                let f = &f.as_bytes()[..f.len().min(0xFFFE)];
                out.extend_from_slice(&(f.len() as u16).to_le_bytes());
                out.extend_from_slice(f);
            }
            None => out.extend_from_slice(&0xFFFFu16.to_le_bytes()),
        }
        for s in [&d.reason, &d.raw] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    (out, spans)
}

fn text(d: &mut Decoder<'_>, n: usize) -> Result<String, EngineError> {
    let b = d.take(n)?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// Decodes a batch frame payload.
pub fn decode(payload: Vec<u8>) -> Result<BatchFrame, EngineError> {
    let mut d = Decoder::new(&payload);
    let n = d.u16()? as usize;
    let stream = text(&mut d, n)?;
    let received_ms = d.u64()? as i64;
    let nrows = d.u32()? as usize;
    let mut rows = Vec::with_capacity(nrows.min(1 << 20));
    let mut spans = Vec::with_capacity(nrows.min(1 << 20));
    for _ in 0..nrows {
        let start = d.position() as u32;
        rows.push(d.row()?);
        spans.push((start, d.position() as u32));
    }
    let ndead = d.u32()? as usize;
    let mut dead = Vec::with_capacity(ndead.min(1 << 16));
    for _ in 0..ndead {
        let index = d.u32()?;
        let fl = d.u16()?;
        let field = if fl == 0xFFFF {
            None
        } else {
            Some(text(&mut d, fl as usize)?)
        };
        let rl = d.u32()? as usize;
        let reason = text(&mut d, rl)?;
        let wl = d.u32()? as usize;
        let raw = text(&mut d, wl)?;
        dead.push(DeadLetter {
            index,
            field,
            reason,
            raw,
            received_ms,
        });
    }
    if !d.is_empty() {
        return Err(EngineError::Internal(
            "trailing bytes in a batch frame".into(),
        ));
    }
    Ok(BatchFrame {
        stream,
        received_ms,
        rows,
        dead,
        routes: Vec::new(),
        records: Vec::new(),
        payload,
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip() {
        let rows = vec![vec![
            Value::Str("u".into()),
            Value::Ts(5),
            Value::Float(1.5),
        ]];
        let dead = vec![
            DeadLetter {
                index: 1,
                field: Some("amount".into()),
                reason: "bad".into(),
                raw: "{}".into(),
                received_ms: 7,
            },
            DeadLetter {
                index: 2,
                field: None,
                reason: "invalid JSON".into(),
                raw: "{".into(),
                received_ms: 7,
            },
        ];
        let (payload, spans) = encode("tx", 7, &rows, &dead);
        let b = decode(payload.clone()).unwrap();
        assert_eq!((b.stream.as_str(), b.received_ms), ("tx", 7));
        assert_eq!(b.rows, rows);
        assert_eq!(b.dead, dead);
        assert_eq!(b.spans, spans);
        let (s, e) = spans[0];
        let row = Decoder::new(&payload[s as usize..e as usize])
            .row()
            .unwrap();
        assert_eq!(row, rows[0]);
        assert!(decode(payload[..20].to_vec()).is_err());
    }
}
