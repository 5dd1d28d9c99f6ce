//! Requests, decision records and policy-version identities, with their
//! canonical encodings (see `docs/FORMATS.md`).

use serde::{Deserialize, Serialize};

use crate::canonical::{Encoder, sha256};
use crate::reason::DenyReason;

/// Domain-separation tag of a decision record's canonical bytes.
pub const DECISION_TAG: &str = "quorate/decision/v1";
/// Domain-separation tag of a policy version's content hash.
pub const POLICY_TAG: &str = "quorate/policy/v1";

/// A SHA-256 digest. Serialised as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

/// The `prev_hash` of the first decision record.
pub const GENESIS_HASH: Digest = Digest([0u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Digest, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Digest(out))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        deserialize_hex(d, "64 hex characters (a SHA-256 digest)", |s| {
            Digest::from_hex(s).map_err(|e| e.to_string())
        })
    }
}

/// Writes `bytes` as a lowercase hex string, without an intermediate
/// `String` (digests, keys and signatures are written on every record).
pub(crate) fn serialize_hex<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const { assert!(N <= 64, "longer than a signature") };
    let mut buf = [0u8; 128];
    let out = &mut buf[..2 * N];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // ASCII hex digits are always UTF-8.
    s.serialize_str(std::str::from_utf8(out).unwrap_or_default())
}

/// Reads a hex string through `parse` without an intermediate `String`.
pub(crate) fn deserialize_hex<'de, D: serde::Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Hex<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> serde::de::Visitor<'_> for Hex<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Hex { expecting, parse })
}

/// ALLOW or DENY. There is no third value: an error a client could mistake
/// for permission does not exist in this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    fn byte(self) -> u8 {
        match self {
            Decision::Allow => 1,
            Decision::Deny => 0,
        }
    }
}

/// An authorization request as it is committed to the log. Entity UIDs and
/// JSON have been validated and canonicalised at the API edge
/// (`crate::validate`), so every replica sees identical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    pub domain: String,
    /// Client idempotency key, unique per domain.
    pub request_id: String,
    /// Cedar entity UID, e.g. `User::"alice"`.
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// Canonical JSON object (see `canonical::canonical_json`); `{}` if none.
    pub context: String,
    /// Canonical JSON array of Cedar entities, if any.
    pub entities: Option<String>,
    /// The request id of the decision this one descends from (lineage).
    pub parent: Option<String>,
    pub trace_id: Option<String>,
}

/// A committed decision. Every field but `hash` is covered by `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Position in the decision log, dense, starting at 1.
    pub index: u64,
    /// Index of the Raft log entry that carried the request.
    pub log_index: u64,
    pub request: AuthorizeRequest,
    pub decision: Decision,
    /// Why DENY; `None` exactly when `decision` is ALLOW.
    pub reason: Option<DenyReason>,
    /// Ids of the policies that determined the decision, sorted.
    pub determining_policies: Vec<String>,
    /// Evaluation errors, sorted.
    pub errors: Vec<String>,
    /// The policy version evaluated, or `None` for unknown domain / no active version.
    pub policy_version: Option<u64>,
    pub policy_hash: Option<Digest>,
    /// Milliseconds since the Unix epoch, chosen by the leader that proposed the entry.
    pub timestamp_ms: u64,
    pub prev_hash: Digest,
    pub hash: Digest,
    /// While the record's domain is in a rollout stage's shadow: what the
    /// candidate policy would have decided. Covered by `hash`; absent from
    /// the encoding (and so from the hash) when `None`, so records outside
    /// rollouts hash exactly as before shadows existed (FORMATS.md §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Box<ShadowOutcome>>,
}

/// A decision evaluated, but not enforced, under a rollout's candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowOutcome {
    pub rollout_id: String,
    pub candidate_version: u64,
    pub candidate_hash: Digest,
    pub decision: Decision,
    /// Why the candidate would DENY; `None` exactly when it would ALLOW.
    pub reason: Option<DenyReason>,
    pub determining_policies: Vec<String>,
    pub errors: Vec<String>,
}

impl ShadowOutcome {
    /// True when the candidate would decide differently (ALLOW vs DENY).
    pub fn differs_from(&self, decision: Decision) -> bool {
        self.decision != decision
    }
}

impl DecisionRecord {
    /// The canonical bytes of this record, excluding `hash` (FORMATS.md §2).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.encoder().as_bytes().to_vec()
    }

    fn encoder(&self) -> Encoder {
        let r = &self.request;
        let mut e = Encoder::new(DECISION_TAG);
        e.u64(self.index)
            .u64(self.log_index)
            .str(&r.domain)
            .str(&r.request_id)
            .str(&r.principal)
            .str(&r.action)
            .str(&r.resource)
            .str(&r.context)
            .opt_str(r.entities.as_deref())
            .opt_str(r.parent.as_deref())
            .opt_str(r.trace_id.as_deref())
            .u8(self.decision.byte())
            .str(self.reason.map(DenyReason::code).unwrap_or(""))
            .str_list(&self.determining_policies)
            .str_list(&self.errors)
            .u64(self.policy_version.unwrap_or(0))
            .digest(&self.policy_hash.unwrap_or_default().0)
            .u64(self.timestamp_ms)
            .digest(&self.prev_hash.0);
        if let Some(s) = &self.shadow {
            // A trailing section, present only with a shadow: the fields
            // before it are a fixed sequence, so this stays unambiguous.
            e.str("shadow")
                .str(&s.rollout_id)
                .u64(s.candidate_version)
                .digest(&s.candidate_hash.0)
                .u8(s.decision.byte())
                .str(s.reason.map(DenyReason::code).unwrap_or(""))
                .str_list(&s.determining_policies)
                .str_list(&s.errors);
        }
        e
    }

    /// Computes the hash this record should carry.
    pub fn compute_hash(&self) -> Digest {
        Digest(self.encoder().sha256())
    }

    /// Sets `hash` from the other fields.
    pub fn seal(mut self) -> DecisionRecord {
        self.hash = self.compute_hash();
        self
    }

    /// True when `hash` matches the other fields.
    pub fn hash_is_valid(&self) -> bool {
        self.compute_hash() == self.hash
    }
}

/// Content hash of a policy version: identical text and schema give the same
/// hash in every domain, so a policy owner can see that two domains run the
/// same policy (FORMATS.md §3).
pub fn policy_content_hash(policy_text: &str, schema: Option<&str>) -> Digest {
    let mut e = Encoder::new(POLICY_TAG);
    e.str(policy_text).opt_str(schema);
    Digest(sha256(e.as_bytes()))
}

/// An immutable, published policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub domain: String,
    /// Monotonic per domain, starting at 1.
    pub version: u64,
    pub policy_text: String,
    pub schema: Option<String>,
    pub hash: Digest,
    /// Raft log index of the entry that published it.
    pub log_index: u64,
    pub published_at_ms: u64,
    /// The publisher's signature over the exact policy bytes, when signed.
    /// Not part of `hash`: the content hash identifies the policy, the
    /// signature says who vouched for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::proof::PolicySignature>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> DecisionRecord {
        DecisionRecord {
            index: 1,
            log_index: 3,
            request: AuthorizeRequest {
                domain: "demo".into(),
                request_id: "r1".into(),
                principal: r#"User::"alice""#.into(),
                action: r#"Action::"read""#.into(),
                resource: r#"Doc::"1""#.into(),
                context: "{}".into(),
                entities: None,
                parent: None,
                trace_id: None,
            },
            decision: Decision::Allow,
            reason: None,
            determining_policies: vec!["policy0".into()],
            errors: vec![],
            policy_version: Some(1),
            policy_hash: Some(policy_content_hash(
                "permit(principal, action, resource);",
                None,
            )),
            timestamp_ms: 1_700_000_000_000,
            prev_hash: GENESIS_HASH,
            hash: GENESIS_HASH,
            shadow: None,
        }
        .seal()
    }

    #[test]
    fn seal_then_verify() {
        let r = sample();
        assert!(r.hash_is_valid());
        let mut t = r.clone();
        t.decision = Decision::Deny;
        assert!(
            !t.hash_is_valid(),
            "flipping ALLOW to DENY must change the hash"
        );
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = sample().hash;
        assert_eq!(Digest::from_hex(&d.to_hex()).ok(), Some(d));
        assert!(Digest::from_hex("zz").is_err());
    }
}
