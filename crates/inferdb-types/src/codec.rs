//! The binary encoding of rows in WAL frames and snapshots.
//!
//! A row is its values in field order, each a tag byte then a fixed-width
//! little-endian payload (strings: a u32 length then UTF-8 bytes). The
//! format is positional: the catalog gives the field order, so a stream's
//! fields must not be reordered once data is stored. Decoding checks every
//! length, so a corrupt frame is an error, never a panic.

use crate::error::TypesError;
use crate::value::{Value, ValueRef};

const NULL: u8 = 0;
const BOOL: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const STR: u8 = 4;
const TS: u8 = 5;

/// Appends one value to `out`.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(b) => {
            out.push(BOOL);
            out.push(*b as u8);
        }
        Value::Int(i) => {
            out.push(INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            out.push(STR);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Ts(t) => {
            out.push(TS);
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
}

/// Appends a row: a u16 value count then the values.
pub fn encode_row(row: &[Value], out: &mut Vec<u8>) {
    out.extend_from_slice(&(row.len() as u16).to_le_bytes());
    for v in row {
        encode_value(v, out);
    }
}

/// Reads values back from a byte slice.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], TypesError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(TypesError::Codec("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(TypesError::Codec("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn arr8(&mut self) -> Result<[u8; 8], TypesError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, TypesError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, TypesError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, TypesError> {
        Ok(u64::from_le_bytes(self.arr8()?))
    }

    /// One value.
    pub fn value(&mut self) -> Result<Value, TypesError> {
        Ok(self.value_ref()?.to_value())
    }

    /// One value, its text borrowed from the buffer.
    pub fn value_ref(&mut self) -> Result<ValueRef<'a>, TypesError> {
        let tag = self.take(1)?[0];
        Ok(match tag {
            NULL => ValueRef::Null,
            BOOL => ValueRef::Bool(self.take(1)?[0] != 0),
            INT => ValueRef::Int(i64::from_le_bytes(self.arr8()?)),
            FLOAT => ValueRef::Float(f64::from_le_bytes(self.arr8()?)),
            STR => {
                let n = self.u32()? as usize;
                let s = std::str::from_utf8(self.take(n)?)
                    .map_err(|_| TypesError::Codec("string is not UTF-8"))?;
                ValueRef::Str(s)
            }
            TS => ValueRef::Ts(i64::from_le_bytes(self.arr8()?)),
            _ => return Err(TypesError::Codec("unknown value tag")),
        })
    }

    /// One row written by [`encode_row`].
    pub fn row(&mut self) -> Result<Vec<Value>, TypesError> {
        let n = self.u16()? as usize;
        let mut row = Vec::with_capacity(n);
        for _ in 0..n {
            row.push(self.value()?);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            ".{0,20}".prop_map(|s| Value::Str(s.into())),
            any::<i64>().prop_map(Value::Ts),
        ]
    }

    proptest! {
        #[test]
        fn rows_round_trip(rows in prop::collection::vec(prop::collection::vec(value(), 0..8), 0..8)) {
            let mut buf = Vec::new();
            for r in &rows { encode_row(r, &mut buf); }
            let mut d = Decoder::new(&buf);
            for r in &rows { prop_assert_eq!(&d.row().unwrap(), r); }
            prop_assert!(d.is_empty());
        }

        #[test]
        fn truncated_input_is_an_error_not_a_panic(row in prop::collection::vec(value(), 1..8), cut in 0usize..64) {
            let mut buf = Vec::new();
            encode_row(&row, &mut buf);
            if cut < buf.len() {
                let mut d = Decoder::new(&buf[..cut]);
                prop_assert!(d.row().is_err());
            }
        }
    }
}
