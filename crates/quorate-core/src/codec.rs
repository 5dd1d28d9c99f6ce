//! The one encode/decode boundary for the bytes quorate keeps and sends
//! between its own nodes: stored rows (decision records, policies,
//! checkpoints, state-machine metadata), snapshot frames, Raft messages on
//! the node-to-node wire, and the test-only tamper tools that edit stored
//! rows. Changing the encoding of any of them happens here and nowhere else.
//!
//! The encoding is MessagePack with structs as maps from field name to
//! value (`docs/FORMATS.md` §6.0): the JSON form of every value, spelled
//! in binary. No JSON escaping, no number formatting, nothing nested as
//! text. Stored rows are also *canonical*: the stored bytes must be exactly
//! the encoding of the value they decode to ([`decode_canonical`]), so a
//! flipped bit that still decodes to an equal value (an altered field name
//! of an absent optional field, a longer length prefix) is found all the
//! same. What is hashed or signed is not this codec's: that is
//! `canonical.rs` and `record.rs`, fixed by the format document and its
//! vectors.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Nesting deeper than this is refused before it can exhaust a stack; the
/// deepest value quorate encodes (a Raft entry of an authorize batch) is
/// under 10 levels.
const MAX_DEPTH: usize = 128;

/// Bytes that do not decode to the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Malformed(String),
    #[error("stored bytes are not the canonical encoding of their value")]
    NotCanonical,
}

/// Encodes `v`. The types quorate encodes serialise infallibly (every
/// length fits in 32 bits, no sequence without a known length), so this
/// returns bytes, not a result.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(v, &mut out);
    out
}

/// Appends the encoding of `v` to `out` (a frame or batch being built).
pub fn encode_into<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let start = out.len();
    let mut ser = rmp_serde::Serializer::new(&mut *out).with_struct_map();
    if v.serialize(&mut ser).is_err() {
        // Unreachable for quorate's types (see `encode`); leave nothing
        // half-written: an empty value decodes to an error, never to a
        // truncated one.
        out.truncate(start);
    }
}

/// Decodes bytes made by [`encode`]: exactly one value, nothing after it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_DEPTH);
    let t = T::deserialize(&mut de).map_err(|e| CodecError::Malformed(e.to_string()))?;
    drop(de);
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} bytes after the value",
            rest.len()
        )));
    }
    Ok(t)
}

/// Decodes a stored row and checks that its bytes are exactly the
/// encoding of the value (invariant 6: a change that decodes to an equal
/// value is a change all the same).
pub fn decode_canonical<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, CodecError> {
    let t: T = decode(bytes)?;
    if encode(&t) != bytes {
        return Err(CodecError::NotCanonical);
    }
    Ok(t)
}

/// Rewrites encoded bytes through `edit` on their JSON form (test-only
/// tamper tools: what an operator with a hex editor could do). Works on
/// values whose maps have string keys (records, policies, checkpoints,
/// domain rows), which is every row the tamper tools touch; the edited
/// value is re-encoded with its keys in the order they were read.
pub fn edit(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<Vec<u8>, CodecError> {
    let mut v: serde_json::Value = decode(bytes)?;
    edit(&mut v);
    Ok(encode(&v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Plain,
        Sized(u64),
        Named { a: u8, b: String },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        n: u64,
        s: String,
        opt: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        omitted: Option<String>,
        kinds: Vec<Kind>,
        flag: bool,
    }

    fn row() -> Row {
        Row {
            n: 300,
            s: "ab".into(),
            opt: None,
            omitted: None,
            kinds: vec![
                Kind::Plain,
                Kind::Sized(u64::MAX),
                Kind::Named {
                    a: 7,
                    b: String::new(),
                },
            ],
            flag: true,
        }
    }

    #[test]
    fn a_struct_is_a_map_of_its_json_form_in_shortest_form() {
        let bytes = encode(&row());
        let mut want = vec![0x85]; // map of 5 (the omitted field is left out)
        want.extend(b"\xa1n\xcd\x01\x2c"); // "n": uint16 300
        want.extend(b"\xa1s\xa2ab"); // "s": fixstr "ab"
        want.extend(b"\xa3opt\xc0"); // "opt": nil
        want.extend(b"\xa5kinds\x93"); // "kinds": array of 3
        want.extend(b"\xa5Plain"); // unit variant: its name
        want.extend(b"\x81\xa5Sized\xcf\xff\xff\xff\xff\xff\xff\xff\xff"); // {"Sized": u64}
        want.extend(b"\x81\xa5Named\x82\xa1a\x07\xa1b\xa0"); // {"Named": {a, b}}
        want.extend(b"\xa4flag\xc3"); // "flag": true
        assert_eq!(hex(&bytes), hex(&want));
        assert_eq!(decode_canonical::<Row>(&bytes), Ok(row()));
    }

    #[test]
    fn the_json_form_encodes_to_the_same_bytes() {
        // What `edit` relies on, and what lets FORMATS.md define a stored
        // row as the MessagePack spelling of its JSON form.
        let r = row();
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(hex(&encode(&json)), hex(&encode(&r)));
        let back: serde_json::Value = decode(&encode(&r)).unwrap_or_default();
        assert_eq!(back, json);
    }

    #[test]
    fn an_equal_value_in_other_bytes_decodes_but_is_not_canonical() {
        let bytes = encode(&row());
        // 300 as a uint64 instead of a uint16: the same value.
        let mut long = bytes.clone();
        let at = long
            .windows(3)
            .position(|w| w == b"\xcd\x01\x2c")
            .unwrap_or_default();
        long.splice(at..at + 3, *b"\xcf\0\0\0\0\0\0\x01\x2c");
        // A renamed absent optional field: ignored on decode.
        let mut renamed = bytes.clone();
        let at = renamed
            .windows(4)
            .position(|w| w == b"\xa3opt")
            .unwrap_or_default();
        renamed[at + 3] = b'O';
        for other in [long, renamed] {
            assert_ne!(other, bytes);
            assert_eq!(decode::<Row>(&other), Ok(row()), "{}", hex(&other));
            assert_eq!(
                decode_canonical::<Row>(&other),
                Err(CodecError::NotCanonical)
            );
        }
        // The struct as an array (rmp-serde's other spelling) is refused
        // as a stored row whether or not it decodes.
        let mut array = Vec::new();
        let _ = row().serialize(&mut rmp_serde::Serializer::new(&mut array));
        assert!(!array.is_empty());
        assert!(decode_canonical::<Row>(&array).is_err());
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let bytes = encode(&row());
        let mut trailing = bytes.clone();
        trailing.push(0);
        let cut = &bytes[..bytes.len() - 1];
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100_000).chain([0]).collect();
        let huge = b"\xdd\xff\xff\xff\xff".to_vec(); // an array of 2^32-1
        for bad in [trailing, cut.to_vec(), deep, huge, b"\xc1".to_vec(), vec![]] {
            assert!(matches!(
                decode::<serde_json::Value>(&bad),
                Err(CodecError::Malformed(_))
            ));
            assert!(decode::<Row>(&bad).is_err());
        }
        assert!(matches!(
            decode::<u64>(&encode("x")),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn edit_rewrites_a_field_and_keeps_the_rest_canonical() {
        let bytes = encode(&row());
        let edited = edit(&bytes, |v| v["s"] = "zz".into()).unwrap_or_default();
        let want = Row {
            s: "zz".into(),
            ..row()
        };
        assert_eq!(decode_canonical::<Row>(&edited), Ok(want));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
