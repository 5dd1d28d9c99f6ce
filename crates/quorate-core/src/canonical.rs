//! The canonical byte encoder behind every hash quorate computes. The layout
//! is specified in `docs/FORMATS.md`; this module and that document change
//! together, and the test vectors in `tests/vectors.rs` pin both.
//!
//! Primitives (all integers big-endian):
//! - `u8`, `u32`, `u64`: fixed width.
//! - `bytes`: `u32` length, then the bytes.
//! - `str`: `bytes` of the UTF-8 encoding.
//! - `opt<T>`: `0x00` for absent, or `0x01` followed by `T`.
//! - `list<T>`: `u32` count, then each `T`.
//! - `digest`: 32 raw bytes.

use sha2::{Digest as _, Sha256};

/// Accumulates canonical bytes. Construct with a domain-separation tag so a
/// record's bytes can never be mistaken for another type's.
#[derive(Debug, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// Starts an encoding with `tag` followed by a 0x00 terminator.
    pub fn new(tag: &str) -> Encoder {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(tag.as_bytes());
        buf.push(0);
        Encoder { buf }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Lengths above u32::MAX cannot occur: requests are bounded far below
        // 4 GiB at the API edge. Saturating keeps this total rather than
        // panicking; such an input would hash distinctly anyway.
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(s) => self.u8(1).str(s),
        }
    }

    pub fn str_list<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        for s in v {
            self.str(s.as_ref());
        }
        self
    }

    pub fn digest(&mut self, d: &[u8; 32]) -> &mut Self {
        self.buf.extend_from_slice(d);
        self
    }

    /// The bytes encoded so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// SHA-256 of the bytes encoded so far.
    pub fn sha256(&self) -> [u8; 32] {
        sha256(&self.buf)
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant
/// whitespace, strings and numbers as serde_json prints them. Keys are
/// sorted explicitly: another crate in the build may switch serde_json's
/// maps to insertion order (`preserve_order`), so serialising a `Value` as
/// it is would not be canonical.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // Serialising a string cannot fail.
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        // Scalars have one serde_json form; serialising them cannot fail.
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_are_big_endian_and_length_prefixed() {
        let mut e = Encoder::new("t");
        e.u8(1)
            .u32(2)
            .u64(3)
            .str("ab")
            .opt_str(None)
            .opt_str(Some("c"));
        assert_eq!(
            e.as_bytes(),
            &[
                b't', 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, b'a', b'b', 0, 1, 0, 0,
                0, 1, b'c'
            ]
        );
    }

    #[test]
    fn canonical_json_sorts_keys_and_strips_space() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{ "b": 1, "a": {"z": true, "y": [1, 2]} }"#)
                .unwrap_or_default();
        assert_eq!(canonical_json(&v), r#"{"a":{"y":[1,2],"z":true},"b":1}"#);
    }
}
