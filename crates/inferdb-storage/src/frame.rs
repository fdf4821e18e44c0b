//! The frame: the unit the WAL writes, checksums and reads back.
//!
//! Every frame is a fixed 19-byte little-endian header followed by the
//! payload:
//!
//! ```text
//! offset size field
//!      0    2 magic    0x1DB1 (also the format version: a new layout gets a new magic)
//!      2    4 len      payload length in bytes, at most MAX_PAYLOAD_LEN (256 MiB)
//!      6    4 crc      CRC-32 (IEEE, crc32fast) of seq ‖ kind ‖ payload
//!     10    8 seq      sequence number: 1 for the first frame ever, +1 per frame
//!     18    1 kind     the caller's record type, opaque to this crate
//!     19  len payload
//! ```
//!
//! There is no padding and no per-segment header: a segment file is frames
//! back to back, and its name carries the seq of its first frame. A reader
//! trusts nothing until the checksum matches: the magic and the length bound
//! are checked first so that garbage never makes it allocate a huge buffer,
//! and the length is also checked against the bytes left in the file.
//! The writer builds the header with [`encode_header`]; the segment scanner
//! parses it with [`decode_header`] and checks the rest.

/// Marks the start of every frame; changing the layout means a new magic.
pub const FRAME_MAGIC: u16 = 0x1DB1;

/// Bytes of the fixed header in front of every payload.
pub const FRAME_HEADER_LEN: usize = 19;

/// The largest payload a frame holds. A header claiming more is corruption,
/// and [`crate::Wal::append`] refuses to write more.
pub const MAX_PAYLOAD_LEN: usize = 256 << 20;

/// One record of the log, as read back by [`crate::WalReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its sequence number (1-based, contiguous across segments).
    pub seq: u64,
    /// The caller's record type.
    pub kind: u8,
    /// The bytes the caller appended.
    pub payload: Vec<u8>,
}

/// The parsed fields of a frame header whose magic and length bound held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: usize,
    pub(crate) crc: u32,
    pub(crate) seq: u64,
    pub(crate) kind: u8,
}

/// The checksum stored in a frame: CRC-32 of seq, kind and payload.
pub(crate) fn checksum(seq: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Builds the header of a frame. The caller has checked that
/// `payload.len() <= MAX_PAYLOAD_LEN`, so the length fits the u32 field.
pub(crate) fn encode_header(seq: u64, kind: u8, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0..2].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[2..6].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[6..10].copy_from_slice(&checksum(seq, kind, payload).to_le_bytes());
    header[10..18].copy_from_slice(&seq.to_le_bytes());
    header[18] = kind;
    header
}

/// Parses a header, checking the magic and the length bound. The error is
/// the reason the bytes are not a frame header.
pub(crate) fn decode_header(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<Header, String> {
    let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
    if magic != FRAME_MAGIC {
        return Err(format!(
            "bad frame magic {magic:#06x}, expected {FRAME_MAGIC:#06x}"
        ));
    }
    let len = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(format!(
            "frame length {len} is above the maximum of {MAX_PAYLOAD_LEN}"
        ));
    }
    let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[10..18]);
    Ok(Header {
        len,
        crc,
        seq: u64::from_le_bytes(seq),
        kind: bytes[18],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_has_the_documented_layout() {
        let payload = b"hello";
        let header = encode_header(42, 7, payload);
        assert_eq!(&header[0..2], &[0xB1, 0x1D]);
        assert_eq!(&header[2..6], &5u32.to_le_bytes());
        assert_eq!(&header[10..18], &42u64.to_le_bytes());
        assert_eq!(header[18], 7);
        let parsed = decode_header(&header).unwrap();
        assert_eq!(
            parsed,
            Header {
                len: 5,
                crc: checksum(42, 7, payload),
                seq: 42,
                kind: 7
            }
        );
    }

    #[test]
    fn checksum_covers_seq_kind_and_payload() {
        let base = checksum(1, 1, b"abc");
        assert_ne!(base, checksum(2, 1, b"abc"));
        assert_ne!(base, checksum(1, 2, b"abc"));
        assert_ne!(base, checksum(1, 1, b"abd"));
    }

    #[test]
    fn bad_magic_and_oversized_length_are_rejected() {
        let mut header = encode_header(1, 0, b"");
        header[0] ^= 0xFF;
        assert!(decode_header(&header).unwrap_err().contains("magic"));

        let mut header = encode_header(1, 0, b"");
        header[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_header(&header).unwrap_err().contains("maximum"));

        let mut header = encode_header(1, 0, b"");
        header[2..6].copy_from_slice(&(MAX_PAYLOAD_LEN as u32).to_le_bytes());
        assert_eq!(decode_header(&header).unwrap().len, MAX_PAYLOAD_LEN);
    }
}
