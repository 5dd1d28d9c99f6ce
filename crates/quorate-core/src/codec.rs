//! The one encode/decode boundary for the bytes quorate keeps and sends
//! between its own nodes: stored rows (decision records, policies,
//! checkpoints, state-machine metadata), snapshots, Raft messages on the
//! node-to-node wire, and the test-only tamper tools that edit stored rows.
//! Changing the encoding of any of them happens here and nowhere else.
//!
//! Today every one of them is JSON (`docs/FORMATS.md` §6). Stored rows are
//! also *canonical*: the stored bytes must be exactly the encoding of the
//! value they decode to ([`decode_canonical`]), so a flipped bit that still
//! decodes to an equal value (an altered field name of an absent optional
//! field, whitespace) is found all the same. What is hashed or signed is not
//! this codec's: that is `canonical.rs` and `record.rs`, fixed by the
//! format document and its vectors.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes that do not decode to the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Malformed(String),
    #[error("stored bytes are not the canonical encoding of their value")]
    NotCanonical,
}

/// Encodes `v`. The types quorate encodes serialise infallibly (no maps
/// with non-string keys), so this returns bytes, not a result.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Decodes bytes made by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
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

/// Rewrites encoded bytes through `edit` on their generic form (test-only
/// tamper tools: what an operator with a hex editor could do).
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

    #[test]
    fn round_trips_and_refuses_what_is_not_canonical() {
        let v = vec![(1u64, "a".to_string())];
        let bytes = encode(&v);
        assert_eq!(decode::<Vec<(u64, String)>>(&bytes), Ok(v.clone()));
        assert_eq!(decode_canonical::<Vec<(u64, String)>>(&bytes), Ok(v));
        // Equal value, other bytes: decodes, but is not the stored form.
        let spaced = b"[[1, \"a\"]]";
        assert!(decode::<Vec<(u64, String)>>(spaced).is_ok());
        assert_eq!(
            decode_canonical::<Vec<(u64, String)>>(spaced),
            Err(CodecError::NotCanonical)
        );
        assert!(matches!(
            decode::<u64>(b"\"x\""),
            Err(CodecError::Malformed(_))
        ));
        let edited = edit(&bytes, |v| v[0][1] = "b".into()).unwrap_or_default();
        assert_eq!(
            decode::<Vec<(u64, String)>>(&edited),
            Ok(vec![(1, "b".into())])
        );
    }
}
