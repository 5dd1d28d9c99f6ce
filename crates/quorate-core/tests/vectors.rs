//! The test vectors of docs/FORMATS.md: each file in docs/vectors/ holds a
//! value, its canonical bytes (hex) and its SHA-256. An independent verifier
//! should reproduce them from the document alone; this test keeps the code
//! and the document in agreement.

use quorate_core::{DecisionRecord, policy_content_hash};

#[derive(serde::Deserialize)]
struct DecisionVector {
    record: DecisionRecord,
    canonical_hex: String,
    hash: String,
}

#[derive(serde::Deserialize)]
struct PolicyVector {
    policy_text: String,
    schema: Option<String>,
    hash: String,
}

#[test]
fn decision_vectors_match() {
    let vectors: Vec<DecisionVector> =
        serde_json::from_str(include_str!("../../../docs/vectors/decision-v1.json"))
            .expect("vector file parses");
    assert!(vectors.len() >= 2);
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(
            hex::encode(v.record.canonical_bytes()),
            v.canonical_hex,
            "vector {i} bytes"
        );
        assert_eq!(v.record.compute_hash().to_hex(), v.hash, "vector {i} hash");
        assert_eq!(v.record.hash.to_hex(), v.hash, "vector {i} record.hash");
    }
    // The second vector chains onto the first.
    assert_eq!(vectors[1].record.prev_hash, vectors[0].record.hash);
}

#[test]
fn policy_vectors_match() {
    let vectors: Vec<PolicyVector> =
        serde_json::from_str(include_str!("../../../docs/vectors/policy-v1.json"))
            .expect("vector file parses");
    for v in vectors {
        assert_eq!(
            policy_content_hash(&v.policy_text, v.schema.as_deref()).to_hex(),
            v.hash
        );
    }
}
