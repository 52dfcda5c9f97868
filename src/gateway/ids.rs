//! The key that matches a node's answer to the call that asked for it, made
//! the same way from the call's id (read whole) and from the answer's id (read
//! as it streams, of any length, without holding it).
//!
//! A short id is keyed by its value, so that the node may re-encode it (anvil
//! answers `"a\u0041"` as `"aA"`). A long one cannot be held to be parsed, so
//! it is keyed by a hash of its text without insignificant whitespace, as geth
//! and Erigon echo it. Either way the key only matches answers to calls: an
//! answer whose key matches nothing is still billed once (see `meter`), so a
//! key that differs, or two that collide, can move a weight between one
//! activity's own calls but never change how many are billed.

use std::hash::{DefaultHasher, Hasher};

use serde_json::Value;

/// Ids up to this many bytes (whitespace aside) are keyed by their value.
pub const MAX_ID: usize = 256;

/// Reads one id's JSON text a piece at a time.
#[derive(Debug, Default)]
pub struct IdHasher {
    /// The first `MAX_ID + 1` bytes, enough to parse a short id.
    kept: Vec<u8>,
    /// Every byte, once the id is longer than `MAX_ID` (a short one, nearly
    /// every id, is never hashed byte by byte).
    hash: DefaultHasher,
    len: usize,
    in_str: bool,
    escaped: bool,
}

impl IdHasher {
    /// Starts over, keeping the allocation.
    pub fn clear(&mut self) {
        let mut kept = std::mem::take(&mut self.kept);
        kept.clear();
        *self = IdHasher {
            kept,
            ..IdHasher::default()
        };
    }

    pub fn push(&mut self, b: u8) {
        if self.in_str {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_str = false;
            }
        } else if b.is_ascii_whitespace() {
            return;
        } else if b == b'"' {
            self.in_str = true;
        }
        if self.kept.len() <= MAX_ID {
            self.kept.push(b);
            if self.kept.len() > MAX_ID {
                self.hash.write(&self.kept);
            }
        } else {
            self.hash.write_u8(b);
        }
        self.len = self.len.saturating_add(1);
    }

    /// Bytes held for the id, whatever its length.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.kept.capacity()
    }

    /// The key, or `None` for text that is no JSON value (a short id that
    /// does not parse: it matches no call).
    pub fn finish(&self) -> Option<u64> {
        if self.len <= MAX_ID {
            let value: Value = serde_json::from_slice(&self.kept).ok()?;
            return Some(value_key(&value));
        }
        let mut hash = self.hash.clone();
        hash.write_usize(self.len);
        // Long keys never equal short ones' by construction of the input;
        // the top bit keeps the two spaces apart anyway.
        Some(hash.finish() | 1 << 63)
    }
}

/// The key of a short id's value: its canonical JSON text, hashed as it is
/// written (no text is allocated: this runs for every call and answer).
fn value_key(value: &Value) -> u64 {
    struct Hashing(DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hash = Hashing(DefaultHasher::new());
    // Writing a Value to a writer that cannot fail cannot fail.
    let _ = serde_json::to_writer(&mut hash, value);
    hash.0.finish() & !(1 << 63)
}

/// The key of an id read whole (a call's): `raw` is its text, `value` what it
/// parsed to. A short text's key is its value's, with no second parse.
pub fn key_of_parsed(raw: &[u8], value: &Value) -> Option<u64> {
    match raw.len() <= MAX_ID {
        true => Some(value_key(value)),
        false => key_of(raw),
    }
}

/// The key of an id read whole, from its text alone.
pub fn key_of(raw: &[u8]) -> Option<u64> {
    let mut hasher = IdHasher::default();
    for &b in raw {
        hasher.push(b);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_match_by_value_and_long_ones_by_text() {
        assert_eq!(key_of(br#""a\u0041""#), key_of(br#""aA""#));
        assert_eq!(key_of(b"1"), key_of(b" 1 "));
        assert_ne!(key_of(b"1"), key_of(br#""1""#));
        assert_eq!(key_of(br#"{"a": [1, 2]}"#), key_of(br#"{"a":[1,2]}"#));
        let long = format!(r#""{}""#, "x".repeat(300));
        let spaced = format!(r#""{} ""#, "x".repeat(300));
        assert!(key_of(long.as_bytes()).is_some());
        assert_ne!(key_of(long.as_bytes()), key_of(spaced.as_bytes()));
        let object = format!(r#"{{"k": "{}"}}"#, "y".repeat(300));
        let compact = format!(r#"{{"k":"{}"}}"#, "y".repeat(300));
        assert_eq!(key_of(object.as_bytes()), key_of(compact.as_bytes()));
        assert_eq!(key_of(b"nul"), None);
        // Parsed or not, a key is the same.
        for raw in [
            &b" 1 "[..],
            br#""a\u0041""#,
            long.as_bytes(),
            object.as_bytes(),
        ] {
            let value: Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(key_of_parsed(raw, &value), key_of(raw), "{raw:?}");
        }
    }
}
