//! [`StoredKey`]: an entity key as the in-memory tables hold it.
//!
//! A table lookup compares the key it is given with the key stored in the
//! bucket its hash leads to. With the key behind a pointer (`Arc<str>`),
//! that comparison read another heap object: a cache miss per lookup, on
//! the writer's critical path, for every row and every view and the hot
//! tier. Keys of up to [`INLINE`] bytes (`user_000001`, `merchant_00042`)
//! are held in the bucket itself; longer ones (UUIDs) stay shared behind
//! an `Arc`, so a copy never allocates.
//!
//! Serialized as the string it holds: snapshots are unchanged.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// Longest key held inline: with its length and the enum's tag, a key is
/// 24 bytes, the size of a `String`.
pub(crate) const INLINE: usize = 22;

/// An entity key: inline up to [`INLINE`] bytes, shared beyond.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoredKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

const _: () = assert!(std::mem::size_of::<StoredKey>() == 24);

impl StoredKey {
    pub(crate) fn new(key: &str) -> StoredKey {
        let mut bytes = [0u8; INLINE];
        match bytes.get_mut(..key.len()) {
            Some(place) => {
                place.copy_from_slice(key.as_bytes());
                // At most INLINE (22): fits.
                let len = key.len() as u8;
                StoredKey::Inline { len, bytes }
            }
            None => StoredKey::Shared(key.into()),
        }
    }

    /// Whether this is `key`: a comparison of bytes held in place.
    #[inline]
    pub(crate) fn is(&self, key: &str) -> bool {
        self.bytes() == key.as_bytes()
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            StoredKey::Shared(s) => s.as_bytes(),
        }
    }

    /// The key. Always valid UTF-8: it was made from a `&str`.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            StoredKey::Inline { .. } => std::str::from_utf8(self.bytes()).unwrap_or_default(),
            StoredKey::Shared(s) => s,
        }
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for StoredKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_str().serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoredKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StoredKey, D::Error> {
        std::borrow::Cow::<'de, str>::deserialize(d).map(|k| StoredKey::new(&k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_whole_inline_or_shared_and_serialize_as_their_string() {
        let long = "x".repeat(INLINE + 1);
        let multibyte = "clé-ü-ß-日本"; // 17 bytes of UTF-8
        for k in ["", "user_000001", multibyte, &"y".repeat(INLINE), &long] {
            let s = StoredKey::new(k);
            assert_eq!(s.as_str(), k);
            assert!(s.is(k));
            assert!(!s.is(&format!("{k}0")));
            assert_eq!(
                matches!(s, StoredKey::Inline { .. }),
                k.len() <= INLINE,
                "{k}"
            );
            let bytes = postcard::to_allocvec(&s).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(k).unwrap());
            assert_eq!(postcard::from_bytes::<StoredKey>(&bytes).unwrap(), s);
        }
        // A shorter key is not a prefix match of a longer one.
        assert!(!StoredKey::new("user_1").is("user_10"));
        assert!(!StoredKey::new("user_10").is("user_1"));
    }
}
