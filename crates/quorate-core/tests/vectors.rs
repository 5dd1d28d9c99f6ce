//! The test vectors of docs/FORMATS.md: decision-v1.json and policy-v1.json
//! hold values, their canonical bytes (hex) and their SHA-256; proof-v1.json
//! holds Merkle hashes, roots and proofs, signed messages with their ed25519
//! signatures, proof objects and a complete log export; history-v1.json a
//! shadowed record, two voter eras and an export with batches and a
//! rollout; canonical-json-v1.json and ed25519-v1.json the canonical JSON
//! and the signature checks. An independent verifier should reproduce them
//! from the document alone; this test recomputes every field so the code
//! and the document stay in agreement.

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

// ---- docs/vectors/proof-v1.json: Merkle tree, signatures, proof objects ----

mod proof_vectors {
    use quorate_core::export::ExportLine;
    use quorate_core::merkle::{self, MemoryTree};
    use quorate_core::proof::{
        self, ConsistencyBundle, Receipt, SecretKey, TrustFile, checkpoint_message,
        policy_signature_message,
    };
    use quorate_core::verify::ExportVerifier;
    use quorate_core::{Checkpoint, DecisionRecord, Digest, PolicySignature, PublicKey, Signature};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct File {
        merkle: Merkle,
        checkpoint_signature: CheckpointSignature,
        policy_signatures: Vec<PolicySig>,
        trust: TrustFile,
        old_checkpoint: Checkpoint,
        receipt: Receipt,
        consistency_bundle: ConsistencyBundle,
        export: Vec<String>,
    }

    #[derive(Deserialize)]
    struct Merkle {
        empty_root: Digest,
        leaf_hash: Vec<LeafHash>,
        node_hash: Vec<NodeHash>,
        tree: Tree,
    }

    #[derive(Deserialize)]
    struct LeafHash {
        data: String,
        hash: Digest,
    }

    #[derive(Deserialize)]
    struct NodeHash {
        left: Digest,
        right: Digest,
        hash: Digest,
    }

    #[derive(Deserialize)]
    struct Tree {
        leaf_data: Vec<Digest>,
        leaf_hashes: Vec<Digest>,
        /// `roots[n]` is the root of the first `n` leaves.
        roots: Vec<Digest>,
        inclusion: Vec<Inclusion>,
        consistency: Vec<Consistency>,
    }

    #[derive(Deserialize)]
    struct Inclusion {
        leaf_index: u64,
        tree_size: u64,
        proof: Vec<Digest>,
    }

    #[derive(Deserialize)]
    struct Consistency {
        old_size: u64,
        new_size: u64,
        proof: Vec<Digest>,
    }

    #[derive(Deserialize)]
    struct CheckpointSignature {
        seed: Digest,
        public_key: PublicKey,
        cluster_id: String,
        size: u64,
        root: Digest,
        message_hex: String,
        signature: Signature,
    }

    #[derive(Deserialize)]
    struct PolicySig {
        seed: Digest,
        public_key: PublicKey,
        policy_text: String,
        schema: Option<String>,
        message_hex: String,
        signature: Signature,
    }

    fn load() -> File {
        serde_json::from_str(include_str!("../../../docs/vectors/proof-v1.json"))
            .expect("proof vector file parses")
    }

    fn decision_records() -> Vec<DecisionRecord> {
        let v: Vec<super::DecisionVector> =
            serde_json::from_str(include_str!("../../../docs/vectors/decision-v1.json"))
                .expect("vector file parses");
        v.into_iter().map(|v| v.record).collect()
    }

    #[test]
    fn merkle_hashes() {
        let m = load().merkle;
        assert_eq!(merkle::empty_root(), m.empty_root);
        assert!(m.leaf_hash.len() >= 3);
        for (i, v) in m.leaf_hash.iter().enumerate() {
            let data = hex::decode(&v.data).expect("hex");
            assert_eq!(merkle::leaf_hash(&data), v.hash, "leaf_hash vector {i}");
        }
        for (i, v) in m.node_hash.iter().enumerate() {
            assert_eq!(
                merkle::node_hash(&v.left, &v.right),
                v.hash,
                "node_hash vector {i}"
            );
        }
    }

    #[test]
    fn merkle_tree_roots_and_proofs() {
        let t = load().merkle.tree;
        assert_eq!(t.leaf_data.len(), 7);
        // The first leaves are the records of decision-v1.json.
        let records = decision_records();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(t.leaf_data[i], r.hash, "leaf {i} is record {}", r.index);
            assert_eq!(proof::record_leaf(r), t.leaf_hashes[i]);
        }
        let mut tree = MemoryTree::new();
        let mut frontier = merkle::Frontier::new();
        assert_eq!(frontier.root(), t.roots[0]);
        for (i, d) in t.leaf_data.iter().enumerate() {
            let leaf = merkle::leaf_hash(&d.0);
            assert_eq!(leaf, t.leaf_hashes[i], "leaf hash {i}");
            tree.push(leaf);
            frontier.append(leaf);
            assert_eq!(
                frontier.root(),
                t.roots[i + 1],
                "frontier root at size {}",
                i + 1
            );
        }
        assert_eq!(t.roots.len(), 8);
        for (n, root) in t.roots.iter().enumerate() {
            assert_eq!(
                merkle::root_at(&tree, n as u64).expect("root"),
                *root,
                "root at size {n}"
            );
        }
        assert!(!t.inclusion.is_empty());
        for v in &t.inclusion {
            let what = format!("inclusion of leaf {} in size {}", v.leaf_index, v.tree_size);
            let proof = merkle::inclusion_proof(&tree, v.leaf_index, v.tree_size).expect("proof");
            assert_eq!(proof, v.proof, "{what}");
            let leaf = t.leaf_hashes[v.leaf_index as usize];
            let root = t.roots[v.tree_size as usize];
            merkle::verify_inclusion(&leaf, v.leaf_index, v.tree_size, &v.proof, &root)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // The proof is bound to its leaf.
            let other = t.leaf_hashes[(v.leaf_index as usize + 1) % 7];
            assert!(
                merkle::verify_inclusion(&other, v.leaf_index, v.tree_size, &v.proof, &root)
                    .is_err(),
                "{what}: accepted another leaf"
            );
        }
        assert!(!t.consistency.is_empty());
        for v in &t.consistency {
            let what = format!("consistency {} -> {}", v.old_size, v.new_size);
            let proof = merkle::consistency_proof(&tree, v.old_size, v.new_size).expect("proof");
            assert_eq!(proof, v.proof, "{what}");
            merkle::verify_consistency(
                v.old_size,
                v.new_size,
                &t.roots[v.old_size as usize],
                &t.roots[v.new_size as usize],
                &v.proof,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    #[test]
    fn checkpoint_signature() {
        let c = load().checkpoint_signature;
        let key = SecretKey::from_seed(c.seed.0);
        assert_eq!(key.public(), c.public_key);
        let msg = checkpoint_message(&c.cluster_id, c.size, &c.root);
        assert_eq!(hex::encode(&msg), c.message_hex);
        assert_eq!(key.sign(&msg), c.signature, "ed25519 is deterministic");
        c.public_key
            .verify(&msg, &c.signature)
            .expect("signature verifies");
        let roots = load().merkle.tree.roots;
        assert_eq!(
            roots[c.size as usize], c.root,
            "signs the vector tree's root"
        );
    }

    #[test]
    fn policy_signatures() {
        let file = load();
        let policies: Vec<super::PolicyVector> =
            serde_json::from_str(include_str!("../../../docs/vectors/policy-v1.json"))
                .expect("vector file parses");
        assert_eq!(file.policy_signatures.len(), policies.len());
        for (i, p) in file.policy_signatures.iter().enumerate() {
            assert_eq!(p.policy_text, policies[i].policy_text);
            assert_eq!(p.schema, policies[i].schema);
            let key = SecretKey::from_seed(p.seed.0);
            assert_eq!(key.public(), p.public_key);
            let msg = policy_signature_message(&p.policy_text, p.schema.as_deref());
            assert_eq!(
                hex::encode(&msg),
                p.message_hex,
                "policy vector {i} message"
            );
            assert_eq!(key.sign(&msg), p.signature, "policy vector {i} signature");
            let sig = PolicySignature {
                publisher_key: p.public_key,
                signature: p.signature,
            };
            assert_eq!(
                PolicySignature::sign(&key, &p.policy_text, p.schema.as_deref()),
                sig
            );
            file.trust
                .verify_policy_signature(&sig, &p.policy_text, p.schema.as_deref())
                .expect("trusted publisher's signature verifies");
        }
    }

    #[test]
    fn trust_receipt_and_consistency_objects() {
        let f = load();
        f.trust.check().expect("trust file is well formed");
        assert_eq!(f.trust.quorum(), 2);
        let keys: Vec<SecretKey> = [1u8, 2, 3]
            .iter()
            .map(|&s| SecretKey::from_seed([s; 32]))
            .collect();
        for (node, key) in f.trust.nodes.iter().zip(&keys) {
            assert_eq!(node.public_key, key.public(), "node {}", node.node_id);
        }
        let roots = f.merkle.tree.roots.clone();
        for cp in [&f.old_checkpoint, &f.receipt.checkpoint] {
            assert_eq!(cp.root, roots[cp.size as usize]);
            for c in &cp.cosignatures {
                let key = &keys[(c.node_id - 1) as usize];
                assert_eq!(key.sign(&cp.message()), c.signature);
            }
            f.trust.verify_checkpoint(cp).expect("checkpoint is final");
        }
        // Receipt: record 2 of decision-v1.json under the size-7 checkpoint.
        let records = decision_records();
        assert_eq!(f.receipt.record, records[1]);
        assert_eq!(
            f.receipt.inclusion_proof,
            merkle::inclusion_proof(&tree(&f.merkle.tree.leaf_hashes), 1, 7).expect("proof")
        );
        proof::verify_receipt(&f.trust, &f.receipt).expect("receipt verifies");
        let mut forged = f.receipt.clone();
        forged.record.timestamp_ms += 1;
        assert!(proof::verify_receipt(&f.trust, &forged).is_err());
        // Consistency bundle: size 3 to size 7.
        assert_eq!(f.consistency_bundle.checkpoint, f.receipt.checkpoint);
        assert_eq!(
            f.consistency_bundle.proof,
            merkle::consistency_proof(&tree(&f.merkle.tree.leaf_hashes), 3, 7).expect("proof")
        );
        proof::verify_consistency(&f.trust, &f.old_checkpoint, &f.consistency_bundle)
            .expect("consistency verifies");
        // Round trips: the JSON in the file is exactly what the code writes.
        let text: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/vectors/proof-v1.json"))
                .expect("parses");
        for (key, value) in [
            ("trust", serde_json::to_value(&f.trust)),
            ("old_checkpoint", serde_json::to_value(&f.old_checkpoint)),
            ("receipt", serde_json::to_value(&f.receipt)),
            (
                "consistency_bundle",
                serde_json::to_value(&f.consistency_bundle),
            ),
        ] {
            assert_eq!(value.expect("serialises"), text[key], "{key}");
        }
    }

    #[test]
    fn export_verifies() {
        let f = load();
        let records = decision_records();
        let lines: Vec<ExportLine> = f
            .export
            .iter()
            .map(|l| serde_json::from_str(l).expect("export line parses"))
            .collect();
        // The file holds exactly what the writer's serialisation produces.
        for (l, parsed) in f.export.iter().zip(&lines) {
            assert_eq!(&serde_json::to_string(parsed).expect("serialises"), l);
        }
        assert_eq!(lines[3], ExportLine::Record(records[0].clone()));
        assert_eq!(lines[4], ExportLine::Record(records[1].clone()));
        let mut v = ExportVerifier::new(&f.trust, None);
        for l in &f.export {
            v.feed_line(l).unwrap_or_else(|e| panic!("{e}"));
        }
        let s = v.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                s.records,
                s.policies,
                s.signed_policies,
                s.activations,
                s.checkpoints
            ),
            (2, 1, 1, 1, 1)
        );
        assert_eq!((s.last_checkpoint_size, s.uncovered_tail), (Some(2), 0));
        assert_eq!(s.head, records[1].hash);
        assert_eq!(s.root, f.merkle.tree.roots[2]);
        // Without the activation, record 1 names a version that is not active.
        let mut without = f.export.clone();
        without.remove(2);
        let mut v = ExportVerifier::new(&f.trust, None);
        let e = without
            .iter()
            .try_for_each(|l| v.feed_line(l))
            .expect_err("an export without the activation fails");
        assert_eq!((e.line, e.record), (3, Some(1)), "{e}");
    }

    fn tree(leaves: &[Digest]) -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in leaves {
            t.push(*l);
        }
        t
    }
}

// ---- docs/vectors/history-v1.json: batch, rollout, shadow, voter eras ----

mod history_vectors {
    use quorate_core::canonical::Encoder;
    use quorate_core::export::ExportLine;
    use quorate_core::merkle::{self, MemoryTree};
    use quorate_core::proof::{self, ConsistencyBundle, ProofError, Receipt, SecretKey, TrustFile};
    use quorate_core::verify::{ExportSummary, ExportVerifier, Problem, VerifyError};
    use quorate_core::{Checkpoint, Decision, DecisionRecord, DenyReason};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct File {
        trust: TrustFile,
        shadow_record: super::DecisionVector,
        checkpoints: Vec<CheckpointCase>,
        receipt: Receipt,
        consistency_bundle: ConsistencyBundle,
        export: Vec<String>,
    }

    #[derive(Deserialize)]
    struct CheckpointCase {
        why: String,
        verifies: bool,
        #[serde(default)]
        error: Option<String>,
        checkpoint: Checkpoint,
    }

    const TEXT: &str = include_str!("../../../docs/vectors/history-v1.json");

    fn load() -> File {
        serde_json::from_str(TEXT).expect("history vector file parses")
    }

    fn key(n: u64) -> SecretKey {
        SecretKey::from_seed([n as u8; 32])
    }

    fn lines(f: &File) -> Vec<ExportLine> {
        f.export
            .iter()
            .map(|l| serde_json::from_str(l).expect("export line parses"))
            .collect()
    }

    fn records(f: &File) -> Vec<DecisionRecord> {
        lines(f)
            .into_iter()
            .filter_map(|l| match l {
                ExportLine::Record(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn tree(f: &File) -> MemoryTree {
        let mut t = MemoryTree::new();
        for r in records(f) {
            t.push(proof::record_leaf(&r));
        }
        t
    }

    fn verify(trust: &TrustFile, export: &[String]) -> Result<ExportSummary, VerifyError> {
        let mut v = ExportVerifier::new(trust, None);
        for l in export {
            v.feed_line(l)?;
        }
        v.finish()
    }

    #[test]
    fn trust_file_with_two_voter_eras() {
        let f = load();
        f.trust.check().expect("trust file is well formed");
        for n in &f.trust.nodes {
            assert_eq!(n.public_key, key(n.node_id).public(), "node {}", n.node_id);
        }
        let voters: Vec<u64> = f
            .trust
            .nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| n.node_id)
            .collect();
        assert_eq!(voters, [1, 2, 4], "node 3 is a former voter");
        let sets: Vec<(Vec<u64>, Option<u64>)> = f
            .trust
            .voter_sets
            .iter()
            .map(|s| (s.voters.clone(), s.until_size))
            .collect();
        assert_eq!(sets, [(vec![1, 2, 3], Some(3)), (vec![1, 2, 4], None)]);
        let text: serde_json::Value = serde_json::from_str(TEXT).expect("parses");
        assert_eq!(
            serde_json::to_value(&f.trust).expect("serialises"),
            text["trust"]
        );
    }

    #[test]
    fn shadow_record_bytes() {
        let f = load();
        let v = &f.shadow_record;
        let bytes = v.record.canonical_bytes();
        assert_eq!(hex::encode(&bytes), v.canonical_hex);
        assert_eq!(v.record.compute_hash().to_hex(), v.hash);
        assert_eq!(v.record.hash.to_hex(), v.hash);
        // The bytes are those of the record without its shadow, then the
        // shadow section of FORMATS.md section 2, byte for byte.
        let s = v.record.shadow.as_deref().expect("the vector has a shadow");
        let mut plain = v.record.clone();
        plain.shadow = None;
        let prefix = plain.canonical_bytes();
        assert!(bytes.starts_with(&prefix));
        let mut e = Encoder::new("");
        e.str("shadow")
            .str(&s.rollout_id)
            .u64(s.candidate_version)
            .digest(&s.candidate_hash.0)
            .u8(u8::from(s.decision == Decision::Allow))
            .str(s.reason.map_or("", DenyReason::code))
            .str_list(&s.determining_policies)
            .str_list(&s.errors);
        // `Encoder::new("")` starts with the empty tag's 0x00 terminator.
        assert_eq!(&bytes[prefix.len()..], &e.as_bytes()[1..]);
        assert_eq!(
            hex::encode(&bytes[prefix.len()..prefix.len() + 10]),
            "00000006736861646f77"
        );
        // It is record 4 of the export, and names a candidate the export
        // published before it.
        assert_eq!(records(&f)[3], v.record);
        let text: serde_json::Value = serde_json::from_str(TEXT).expect("parses");
        assert_eq!(
            serde_json::to_value(&v.record).expect("serialises"),
            text["shadow_record"]["record"],
            "the record JSON is what the code writes"
        );
    }

    #[test]
    fn checkpoints_are_judged_by_their_era() {
        let f = load();
        let t = tree(&f);
        assert!(f.checkpoints.iter().any(|c| c.verifies));
        assert!(f.checkpoints.iter().any(|c| !c.verifies));
        for c in &f.checkpoints {
            let cp = &c.checkpoint;
            assert_eq!(
                cp.root,
                merkle::root_at(&t, cp.size).expect("root"),
                "{}",
                c.why
            );
            for s in &cp.cosignatures {
                assert_eq!(key(s.node_id).sign(&cp.message()), s.signature, "{}", c.why);
            }
            let got = f.trust.verify_checkpoint(cp);
            assert_eq!(got.is_ok(), c.verifies, "{}: {got:?}", c.why);
            let kind = got.err().map(|e| match e {
                ProofError::UnknownVoterSet { .. } => "unknown_voter_set",
                ProofError::BadCosignature { .. } => "bad_cosignature",
                ProofError::NotFinal { .. } => "not_final",
                other => panic!("{}: unexpected {other}", c.why),
            });
            assert_eq!(kind, c.error.as_deref(), "{}", c.why);
        }
    }

    #[test]
    fn receipt_and_consistency_across_eras() {
        let f = load();
        let t = tree(&f);
        assert_eq!(f.receipt.record, f.shadow_record.record);
        assert_eq!(
            f.receipt.inclusion_proof,
            merkle::inclusion_proof(&t, f.receipt.record.index - 1, 7).expect("proof")
        );
        proof::verify_receipt(&f.trust, &f.receipt).expect("receipt verifies");
        let mut forged = f.receipt.clone();
        if let Some(s) = forged.record.shadow.as_mut() {
            s.decision = Decision::Allow;
            s.reason = None;
        }
        assert!(
            proof::verify_receipt(&f.trust, &forged).is_err(),
            "the shadow is hashed"
        );
        let old = f
            .checkpoints
            .iter()
            .find(|c| c.verifies && c.checkpoint.size == 3)
            .map(|c| c.checkpoint.clone())
            .expect("size-3 checkpoint");
        assert_eq!(old.voters, [1, 2, 3]);
        assert_eq!(f.consistency_bundle.checkpoint.voters, [1, 2, 4]);
        assert_eq!(
            f.consistency_bundle.proof,
            merkle::consistency_proof(&t, 3, 7).expect("proof")
        );
        proof::verify_consistency(&f.trust, &old, &f.consistency_bundle)
            .expect("consistency verifies");
        let text: serde_json::Value = serde_json::from_str(TEXT).expect("parses");
        assert_eq!(
            serde_json::to_value(&f.receipt).expect("serialises"),
            text["receipt"]
        );
        assert_eq!(
            serde_json::to_value(&f.consistency_bundle).expect("serialises"),
            text["consistency_bundle"]
        );
    }

    #[test]
    fn export_with_a_batch_a_rollout_and_two_eras_verifies() {
        let f = load();
        let parsed = lines(&f);
        for (l, p) in f.export.iter().zip(&parsed) {
            assert_eq!(&serde_json::to_string(p).expect("serialises"), l);
        }
        let s = verify(&f.trust, &f.export).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                s.records,
                s.policies,
                s.signed_policies,
                s.activations,
                s.checkpoints
            ),
            (7, 5, 3, 6, 3)
        );
        assert_eq!((s.last_checkpoint_size, s.uncovered_tail), (Some(7), 0));
        assert_eq!(s.root, tree(&f).root());
        // (line type, log_index) of every line but the header.
        let shape: Vec<(&str, u64)> = parsed[1..]
            .iter()
            .map(|l| match l {
                ExportLine::Policy(p) => ("policy", p.log_index),
                ExportLine::Activation(a) => ("activation", a.log_index),
                ExportLine::Record(r) => ("record", r.log_index),
                ExportLine::Checkpoint(c) => ("checkpoint", c.size),
                ExportLine::Header(_) => ("header", 0),
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("policy", 2),
                ("activation", 2),
                ("policy", 3),
                ("activation", 3),
                ("record", 4), // a batch of three
                ("record", 4),
                ("record", 4),
                ("checkpoint", 3), // size 3
                ("policy", 7),     // StartRollout: both candidates
                ("policy", 7),
                ("record", 8), // a batch of two, both shadowed
                ("record", 8),
                ("activation", 9), // PromoteRollout: both domains
                ("activation", 9),
                ("record", 10),
                ("checkpoint", 6),
                ("activation", 11), // RollbackRollout: both domains
                ("activation", 11),
                ("record", 12),
                ("checkpoint", 7),
                ("policy", 13), // after the last record
            ]
        );
        let rs = records(&f);
        let shadowed: Vec<u64> = rs
            .iter()
            .filter(|r| r.shadow.is_some())
            .map(|r| r.index)
            .collect();
        assert_eq!(shadowed, [4, 5]);
        assert_eq!(rs[2].reason, Some(DenyReason::UnknownDomain));
        assert_eq!((rs[2].policy_version, rs[2].policy_hash), (None, None));
        // A candidate's content hash does not depend on its domain: pay v2
        // is policy-v1.json vector 0 (published there in domain "demo").
        let policies: Vec<super::PolicyVector> =
            serde_json::from_str(include_str!("../../../docs/vectors/policy-v1.json"))
                .expect("vector file parses");
        assert_eq!(
            rs[3].shadow.as_ref().map(|s| s.candidate_hash.to_hex()),
            Some(policies[0].hash.clone())
        );
    }

    /// The lines of `f.export` with line `i` (0-based) replaced by `edit` of it.
    fn edited(f: &File, i: usize, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<String> {
        let mut out = f.export.clone();
        let mut v: serde_json::Value = serde_json::from_str(&out[i]).expect("parses");
        edit(&mut v);
        out[i] = serde_json::to_string(&v).expect("serialises");
        out
    }

    #[test]
    fn what_the_export_does_not_authenticate() {
        let f = load();
        let must_pass = |what: &str, export: &[String]| {
            verify(&f.trust, export).unwrap_or_else(|e| panic!("{what}: {e}"));
        };
        must_pass(
            "header node_id",
            &edited(&f, 0, |v| v["node_id"] = 99.into()),
        );
        must_pass(
            "published_at_ms",
            &edited(&f, 1, |v| v["published_at_ms"] = 0.into()),
        );
        must_pass(
            "a policy's log_index",
            &edited(&f, 1, |v| v["log_index"] = 1.into()),
        );
        must_pass(
            "a trailing line's log_index",
            &edited(&f, 21, |v| v["log_index"] = 1000.into()),
        );
        must_pass(
            "a signature removed",
            &edited(&f, 9, |v| {
                v.as_object_mut().map(|o| o.remove("signature"));
            }),
        );
        must_pass(
            "an unknown field",
            &edited(&f, 6, |v| v["note"] = "ignored".into()),
        );
        must_pass(
            "checkpoint voters dropped (the current set)",
            &edited(&f, 16, |v| {
                v.as_object_mut().map(|o| o.remove("voters"));
            }),
        );
        must_pass(
            "cosignatures reordered",
            &edited(&f, 20, |v| {
                if let Some(c) = v["cosignatures"].as_array_mut() {
                    c.reverse();
                }
            }),
        );
        let mut swapped = f.export.clone();
        swapped.swap(9, 10);
        must_pass("the lines of one rollout entry in another order", &swapped);
        let mut no_trailing = f.export.clone();
        no_trailing.pop();
        must_pass("the trailing policy line dropped", &no_trailing);
        let mut no_checkpoint = f.export.clone();
        no_checkpoint.remove(16);
        must_pass("a checkpoint dropped", &no_checkpoint);
        // A prefix with a header to match: an export does not prove that
        // it is complete.
        let rs = records(&f);
        let mut prefix = edited(&f, 0, |v| {
            v["records"] = 3.into();
            v["head"] = rs[2].hash.to_hex().into();
        });
        prefix.truncate(9);
        let s = verify(&f.trust, &prefix).unwrap_or_else(|e| panic!("prefix: {e}"));
        assert_eq!((s.records, s.uncovered_tail), (3, 0));
        // But lines of different commands cannot share a log index: record 6
        // moved to the PromoteRollout entry's log index fails there.
        let bad = edited(&f, 15, |v| v["log_index"] = 9.into());
        let e = verify(&f.trust, &bad).expect_err("a record at an activation's log index");
        assert_eq!((e.line, e.record), (16, Some(6)), "{e}");
        assert!(
            matches!(
                *e.problem,
                Problem::SharedLogIndex {
                    previous: "activation",
                    ..
                }
            ),
            "{e}"
        );
        // ...and a voter set's keys cannot vouch past the size it was
        // replaced at.
        let bad = edited(&f, 16, |v| v["voters"] = serde_json::json!([1, 2, 3]));
        let e = verify(&f.trust, &bad).expect_err("a retired voter set");
        assert_eq!(e.line, 17, "{e}");
        assert!(
            matches!(*e.problem, Problem::CheckpointSignature { .. }),
            "{e}"
        );
    }
}

// ---- docs/vectors/canonical-json-v1.json: section 4 ----

#[test]
fn canonical_json_vectors_match() {
    #[derive(serde::Deserialize)]
    struct V {
        input: String,
        canonical: String,
    }
    let vectors: Vec<V> =
        serde_json::from_str(include_str!("../../../docs/vectors/canonical-json-v1.json"))
            .expect("vector file parses");
    assert!(vectors.len() >= 5);
    let limits = quorate_core::validate::Limits::default();
    for v in &vectors {
        let parsed: serde_json::Value = serde_json::from_str(&v.input).expect("input parses");
        let canonical = quorate_core::canonical::canonical_json(&parsed);
        assert_eq!(canonical, v.canonical, "{}", v.input);
        // The canonical form is a fixed point.
        let again: serde_json::Value = serde_json::from_str(&canonical).expect("canonical parses");
        assert_eq!(quorate_core::canonical::canonical_json(&again), canonical);
        // It is what the API edge stores for a context or entities.
        let edge = if parsed.is_object() {
            quorate_core::validate::context(&v.input, &limits)
        } else {
            quorate_core::validate::entities(&v.input, &limits)
        };
        assert_eq!(
            edge.ok().as_deref(),
            Some(canonical.as_str()),
            "{}",
            v.input
        );
    }
}

// ---- docs/vectors/ed25519-v1.json: section 8 ----

#[test]
fn ed25519_vectors_match() {
    use quorate_core::{PublicKey, Signature};
    #[derive(serde::Deserialize)]
    struct File {
        signatures: Vec<Sig>,
        public_keys: Vec<Key>,
    }
    #[derive(serde::Deserialize)]
    struct Sig {
        why: String,
        public_key: PublicKey,
        message_hex: String,
        signature: Signature,
        verifies: bool,
    }
    #[derive(serde::Deserialize)]
    struct Key {
        why: String,
        public_key: PublicKey,
        decodes: bool,
        #[serde(default)]
        small_order: bool,
    }
    let f: File = serde_json::from_str(include_str!("../../../docs/vectors/ed25519-v1.json"))
        .expect("vector file parses");
    for s in &f.signatures {
        let msg = hex::decode(&s.message_hex).expect("hex");
        let got = s.public_key.verify(&msg, &s.signature);
        assert_eq!(got.is_ok(), s.verifies, "{}: {got:?}", s.why);
    }
    let node1 = quorate_core::SecretKey::from_seed([1; 32]);
    let valid = &f.signatures[0];
    assert_eq!(node1.public(), valid.public_key);
    assert_eq!(
        node1.sign(&hex::decode(&valid.message_hex).expect("hex")),
        valid.signature
    );
    for k in &f.public_keys {
        let decoded = ed25519_dalek::VerifyingKey::from_bytes(&k.public_key.0);
        assert_eq!(decoded.is_ok(), k.decodes, "{}", k.why);
        if let Ok(d) = decoded {
            assert_eq!(d.is_weak(), k.small_order, "{}", k.why);
        }
        // Small-order and undecodable keys verify nothing.
        if !k.decodes || k.small_order {
            assert!(
                k.public_key.verify(b"", &valid.signature).is_err(),
                "{}",
                k.why
            );
        }
    }
}

// ---- Generator of docs/vectors/{history,canonical-json,ed25519,attested-answer,storage}-v1.json ----
//
// Not a check: the checks below recompute every value from the files with
// the primitives alone. This writes the files, for when a format changes on
// purpose (then FORMATS.md changes with it):
//   QUORATE_WRITE_VECTORS=1 cargo test -p quorate-core --test vectors -- --ignored regenerate
// Decisions are written as Cedar would make them for the policy texts
// shown (the vectors do not depend on Cedar; `quorate verify --log`
// re-evaluates them with it).

mod regenerate {
    use std::collections::HashMap;

    use quorate_core::canonical::canonical_json;
    use quorate_core::export::{Activation, EXPORT_FORMAT, ExportHeader, ExportLine};
    use quorate_core::merkle::{self, MemoryTree};
    use quorate_core::proof::{
        self, CONSISTENCY_FORMAT, ConsistencyBundle, RECEIPT_FORMAT, Receipt, SecretKey,
        TRUST_FORMAT, TrustFile, TrustedNode, TrustedPublisher, VoterSet, checkpoint_message,
    };
    use quorate_core::{
        AuthorizeRequest, Checkpoint, Cosignature, Decision, DecisionRecord, DenyReason, Digest,
        GENESIS_HASH, PolicySignature, PolicyVersion, ShadowOutcome, policy_content_hash,
    };
    use serde_json::{Value, json};

    const CLUSTER: &str = "vectors";
    const T0: u64 = 1_764_150_000_000;
    const ROLLOUT: &str = "tighten-read";

    const PAY_V1: &str = r#"permit(principal, action == Action::"read", resource);"#;
    const PAY_V2: &str =
        r#"permit(principal == User::"alice", action == Action::"read", resource);"#;
    const SHIP_V1: &str =
        r#"permit(principal, action == Action::"deploy", resource) when { context.approved };"#;
    const SHIP_V2: &str = "permit(principal, action == Action::\"deploy\", resource) when { context.approved };\nforbid(principal == User::\"mallory\", action, resource);";
    const AUTH_V1: &str = r#"permit(principal, action == Action::"login", resource);"#;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    struct Log {
        lines: Vec<ExportLine>,
        versions: HashMap<String, Vec<PolicyVersion>>,
        active: HashMap<String, u64>,
        tree: MemoryTree,
        records: Vec<DecisionRecord>,
    }

    struct Req<'a> {
        domain: &'a str,
        id: &'a str,
        principal: &'a str,
        action: &'a str,
        resource: &'a str,
        context: &'a str,
        entities: Option<&'a str>,
        parent: Option<&'a str>,
        trace_id: Option<&'a str>,
    }

    type Outcome<'a> = (Decision, Option<DenyReason>, &'a [&'a str]);

    impl Log {
        fn publish(
            &mut self,
            log_index: u64,
            domain: &str,
            text: &str,
            signed: bool,
        ) -> PolicyVersion {
            let versions = self.versions.entry(domain.to_string()).or_default();
            let pv = PolicyVersion {
                domain: domain.into(),
                version: versions.len() as u64 + 1,
                policy_text: text.into(),
                schema: None,
                hash: policy_content_hash(text, None),
                log_index,
                published_at_ms: T0 + log_index * 1000,
                signature: signed.then(|| PolicySignature::sign(&key(9), text, None)),
            };
            versions.push(pv.clone());
            self.lines.push(ExportLine::Policy(pv.clone()));
            pv
        }

        fn activate(&mut self, log_index: u64, domain: &str, version: u64) {
            self.active.insert(domain.to_string(), version);
            self.lines.push(ExportLine::Activation(Activation {
                domain: domain.into(),
                version,
                log_index,
            }));
        }

        fn decide(
            &mut self,
            log_index: u64,
            r: Req<'_>,
            (decision, reason, determining): Outcome<'_>,
            shadow: Option<Outcome<'_>>,
        ) {
            let (policy_version, policy_hash) = match self.active.get(r.domain) {
                Some(&v) => (Some(v), Some(self.versions[r.domain][v as usize - 1].hash)),
                None => (None, None),
            };
            let shadow = shadow.map(|(d, reason, det)| {
                // The candidate: the rollout's version of this domain.
                let c = self.versions[r.domain].last().cloned().expect("candidate");
                Box::new(ShadowOutcome {
                    rollout_id: ROLLOUT.into(),
                    candidate_version: c.version,
                    candidate_hash: c.hash,
                    decision: d,
                    reason,
                    determining_policies: det.iter().map(|s| s.to_string()).collect(),
                    errors: vec![],
                })
            });
            let context: Value = serde_json::from_str(r.context).expect("context");
            let rec = DecisionRecord {
                index: self.records.len() as u64 + 1,
                log_index,
                request: AuthorizeRequest {
                    domain: r.domain.into(),
                    request_id: r.id.into(),
                    principal: r.principal.into(),
                    action: r.action.into(),
                    resource: r.resource.into(),
                    context: canonical_json(&context),
                    entities: r
                        .entities
                        .map(|e| canonical_json(&serde_json::from_str(e).expect("entities"))),
                    parent: r.parent.map(str::to_string),
                    trace_id: r.trace_id.map(str::to_string),
                },
                decision,
                reason,
                determining_policies: determining.iter().map(|s| s.to_string()).collect(),
                errors: vec![],
                policy_version,
                policy_hash,
                timestamp_ms: T0 + log_index * 1000,
                prev_hash: self.records.last().map_or(GENESIS_HASH, |p| p.hash),
                hash: GENESIS_HASH,
                shadow,
            }
            .seal();
            self.tree.push(proof::record_leaf(&rec));
            self.records.push(rec.clone());
            self.lines.push(ExportLine::Record(rec));
        }

        fn checkpoint(&self, size: u64, voters: &[u64], signers: &[u8]) -> Checkpoint {
            let root = merkle::root_at(&self.tree, size).expect("root");
            let msg = checkpoint_message(CLUSTER, size, &root);
            Checkpoint {
                cluster_id: CLUSTER.into(),
                size,
                root,
                cosignatures: signers
                    .iter()
                    .map(|&n| Cosignature {
                        node_id: u64::from(n),
                        signature: key(n).sign(&msg),
                    })
                    .collect(),
                voters: voters.to_vec(),
            }
        }
    }

    fn history() -> Value {
        use Decision::{Allow, Deny};
        let mut log = Log {
            lines: vec![],
            versions: HashMap::new(),
            active: HashMap::new(),
            tree: MemoryTree::new(),
            records: vec![],
        };
        let deny = Some(DenyReason::Policy);
        // Log index 1 is the cluster's first membership entry (not exported).
        log.publish(2, "pay", PAY_V1, true);
        log.activate(2, "pay", 1);
        log.publish(3, "ship", SHIP_V1, false);
        log.activate(3, "ship", 1);
        // One Raft entry, three requests: a batch.
        let req = |domain, id, principal, action, resource, context| Req {
            domain,
            id,
            principal,
            action,
            resource,
            context,
            entities: None,
            parent: None,
            trace_id: None,
        };
        log.decide(
            4,
            req(
                "pay",
                "r-1",
                r#"User::"alice""#,
                r#"Action::"read""#,
                r#"Doc::"1""#,
                "{}",
            ),
            (Allow, None, &["policy0"]),
            None,
        );
        log.decide(
            4,
            Req {
                trace_id: Some("t-2"),
                ..req(
                    "ship",
                    "r-2",
                    r#"User::"bob""#,
                    r#"Action::"deploy""#,
                    r#"Service::"api""#,
                    r#"{"approved": false}"#,
                )
            },
            (Deny, deny, &[]),
            None,
        );
        log.decide(
            4,
            req(
                "auth",
                "r-3",
                r#"User::"carol""#,
                r#"Action::"login""#,
                r#"App::"console""#,
                "{}",
            ),
            (Deny, Some(DenyReason::UnknownDomain), &[]),
            None,
        );
        let cp3 = log.checkpoint(3, &[1, 2, 3], &[1, 3]);
        log.lines.push(ExportLine::Checkpoint(cp3.clone()));
        // Log indexes 5 and 6: the membership change (joint, then final)
        // that makes node 4 a voter in place of node 3, at size 3.
        // Log index 7: StartRollout publishes both candidates.
        log.publish(7, "pay", PAY_V2, true);
        log.publish(7, "ship", SHIP_V2, true);
        log.decide(
            8,
            req(
                "pay",
                "r-4",
                r#"User::"bob""#,
                r#"Action::"read""#,
                r#"Doc::"2""#,
                "{}",
            ),
            (Allow, None, &["policy0"]),
            Some((Deny, deny, &[])),
        );
        log.decide(
            8,
            Req {
                entities: Some(
                    r#"[{"uid": {"type": "User", "id": "mallory"}, "attrs": {}, "parents": []}]"#,
                ),
                parent: Some("r-2"),
                ..req(
                    "ship",
                    "r-5",
                    r#"User::"mallory""#,
                    r#"Action::"deploy""#,
                    r#"Service::"api""#,
                    r#"{"approved": true}"#,
                )
            },
            (Allow, None, &["policy0"]),
            Some((Deny, deny, &["policy1"])),
        );
        // Log index 9: PromoteRollout activates both candidates.
        log.activate(9, "pay", 2);
        log.activate(9, "ship", 2);
        log.decide(
            10,
            req(
                "pay",
                "r-6",
                r#"User::"bob""#,
                r#"Action::"read""#,
                r#"Doc::"2""#,
                "{}",
            ),
            (Deny, deny, &[]),
            None,
        );
        let cp6 = log.checkpoint(6, &[1, 2, 4], &[2, 4]);
        log.lines.push(ExportLine::Checkpoint(cp6.clone()));
        // Log index 11: RollbackRollout reactivates the previous versions.
        log.activate(11, "pay", 1);
        log.activate(11, "ship", 1);
        log.decide(
            12,
            Req {
                parent: Some("r-6"),
                trace_id: Some("t-7"),
                ..req(
                    "pay",
                    "r-7",
                    r#"User::"bob""#,
                    r#"Action::"read""#,
                    r#"Doc::"2""#,
                    "{}",
                )
            },
            (Allow, None, &["policy0"]),
            None,
        );
        let cp7 = log.checkpoint(7, &[1, 2, 4], &[1, 2, 4]);
        log.lines.push(ExportLine::Checkpoint(cp7.clone()));
        // Log index 13: a publication without activation, after the last record.
        log.publish(13, "auth", AUTH_V1, false);

        let head = log.records.last().expect("records").hash;
        let mut lines = vec![ExportLine::Header(ExportHeader {
            format: EXPORT_FORMAT.into(),
            cluster_id: CLUSTER.into(),
            records: log.records.len() as u64,
            head,
            node_id: 2,
        })];
        lines.append(&mut log.lines);
        let export: Vec<String> = lines
            .iter()
            .map(|l| serde_json::to_string(l).expect("line"))
            .collect();

        let regions = ["eu-west", "us-east", "ap-south", "sa-east"];
        let trust = TrustFile {
            format: TRUST_FORMAT.into(),
            cluster_id: CLUSTER.into(),
            nodes: (1..=4u8)
                .map(|n| TrustedNode {
                    node_id: u64::from(n),
                    public_key: key(n).public(),
                    voter: n != 3,
                    region: regions[n as usize - 1].into(),
                })
                .collect(),
            publishers: vec![TrustedPublisher {
                name: "policy-team".into(),
                public_key: key(9).public(),
            }],
            voter_sets: vec![
                VoterSet {
                    voters: vec![1, 2, 3],
                    until_size: Some(3),
                },
                VoterSet {
                    voters: vec![1, 2, 4],
                    until_size: None,
                },
            ],
        };
        let mut unnamed = log.checkpoint(3, &[], &[1, 3]);
        unnamed.voters.clear();
        let checkpoints = json!([
            {"why": "size 3, judged under the voter set it names, [1,2,3] (replaced at size 3); node 3, no longer a voter, counts here",
             "verifies": true, "checkpoint": cp3},
            {"why": "size 6, judged under [1,2,4]: 2 of 3", "verifies": true, "checkpoint": cp6},
            {"why": "size 7, judged under [1,2,4]: 3 of 3", "verifies": true, "checkpoint": cp7},
            {"why": "size 6 named under [1,2,3]: that set was replaced at size 3 and cannot vouch for size 6",
             "verifies": false, "error": "unknown_voter_set", "checkpoint": log.checkpoint(6, &[1, 2, 3], &[1, 3])},
            {"why": "size 3 without `voters`: judged under the current voters [1,2,4], of which node 3 is not one",
             "verifies": false, "error": "bad_cosignature", "checkpoint": unnamed},
            {"why": "size 3 named under [1,2]: the trust file lists no such voter set",
             "verifies": false, "error": "unknown_voter_set", "checkpoint": log.checkpoint(3, &[1, 2], &[1, 2])},
            {"why": "size 6 under [1,2,4] with one cosignature: 2 are needed",
             "verifies": false, "error": "not_final", "checkpoint": log.checkpoint(6, &[1, 2, 4], &[4])},
        ]);
        let shadowed = log.records[3].clone();
        let receipt = Receipt {
            format: RECEIPT_FORMAT.into(),
            inclusion_proof: merkle::inclusion_proof(&log.tree, 3, 7).expect("proof"),
            record: shadowed.clone(),
            checkpoint: cp7.clone(),
        };
        let bundle = ConsistencyBundle {
            format: CONSISTENCY_FORMAT.into(),
            old_size: 3,
            proof: merkle::consistency_proof(&log.tree, 3, 7).expect("proof"),
            checkpoint: cp7,
        };
        json!({
            "description": "Test vectors of docs/FORMATS.md sections 2, 8, 10, 11 and 12 for a history with a batch, a rollout (shadowed records, several policy and activation lines at one log index) and a membership change; checked by crates/quorate-core/tests/vectors.rs. Keys as in proof-v1.json: node n has the ed25519 seed of 32 bytes n, the publisher 32 bytes 9. The voters were nodes 1, 2, 3 up to size 3, then nodes 1, 2, 4 (node 3 stays listed as a former voter). Raft log: 1 membership; 2 publish+activate pay v1 (signed); 3 publish+activate ship v1 (unsigned); 4 a batch of records 1-3; 5-6 the membership change; 7 StartRollout tighten-read (pay v2 and ship v2, one stage); 8 a batch of records 4-5, both shadowed; 9 PromoteRollout (activates pay v2 and ship v2); 10 record 6; 11 RollbackRollout (reactivates pay v1 and ship v1); 12 record 7; 13 publish auth v1 (not activated). `shadow_record` is record 4 with its canonical bytes; `checkpoints` lists checkpoints that are and are not final under `trust`; `receipt` proves record 4 under the size-7 checkpoint; `consistency_bundle` extends the size-3 checkpoint (first era) to size 7 (second era); `export` is the complete log export.",
            "trust": trust,
            "shadow_record": {
                "record": shadowed,
                "canonical_hex": hex::encode(shadowed.canonical_bytes()),
                "hash": shadowed.hash,
            },
            "checkpoints": checkpoints,
            "receipt": receipt,
            "consistency_bundle": bundle,
            "export": export,
        })
    }

    const CANONICAL_INPUTS: &[&str] = &[
        r#"{ "b": 1, "a": { "z": true, "y": [1, 2] }, "c": null }"#,
        r#"{"é": 1, "z": 2, "a": 3, "A": 4, "aa": 5, "a b": 6, "\u0000": 7}"#,
        r#"{"a": 1, "a": 2}"#,
        r#"{"s": "tab\t nl\n cr\r bs\b ff\f quote\" backslash\\ slash\/ \u00e9 \u0001 \u001f \u007f \u2028 \ud83d\ude00"}"#,
        r#"{"n": [0, -0, 1, -1, 18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]}"#,
        r#"{"f": [1.0, 2.50, 1e2, 1E+2, 0.0, -0.0, 0.1, -1.5, 1e15, 1e16, 1.5e16, 1e21, 0.00001, 0.000001, 1.5e-7, 5e-324, 1.7976931348623157e308, 0.30000000000000004]}"#,
        r#"[{"uid": {"type": "User", "id": "alice"}, "attrs": {}, "parents": []}]"#,
        "{}",
    ];

    fn canonical() -> Value {
        Value::Array(
            CANONICAL_INPUTS
                .iter()
                .map(|i| {
                    let v: Value = serde_json::from_str(i).expect("input");
                    json!({"input": i, "canonical": canonical_json(&v)})
                })
                .collect(),
        )
    }

    /// The order of the ed25519 base point's group.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn ed25519() -> Value {
        let k = key(1);
        let msg = checkpoint_message(CLUSTER, 7, &Digest([0x5a; 32]));
        let sig = k.sign(&msg);
        // S + L: the same signature with S not reduced.
        let mut unreduced = sig.0;
        let mut carry = 0u16;
        for i in 0..32 {
            let s = u16::from(unreduced[32 + i]) + u16::from(L[i]) + carry;
            unreduced[32 + i] = s as u8;
            carry = s >> 8;
        }
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut weak_sig = [0u8; 64];
        weak_sig[..32].copy_from_slice(&identity);
        let hex = |b: &[u8]| hex::encode(b);
        json!({
            "description": "ed25519 as quorate verifies it (FORMATS.md section 8): ed25519-dalek verify_strict. `signatures`: each verifies or not. `public_keys`: whether 32 bytes decode to a point, and whether that point has small order (rejected by every verification).",
            "signatures": [
                {"why": "valid: node 1 signs a checkpoint message", "public_key": k.public(),
                 "message_hex": hex(&msg), "signature": hex(&sig.0), "verifies": true},
                {"why": "the same signature with S + L (S not reduced mod L)", "public_key": k.public(),
                 "message_hex": hex(&msg), "signature": hex(&unreduced), "verifies": false},
                {"why": "A and R the identity (small order), S = 0: [S]B = R + [k]A holds, strict verification refuses",
                 "public_key": hex(&identity), "message_hex": hex(&msg), "signature": hex(&weak_sig), "verifies": false},
            ],
            "public_keys": [
                {"why": "node 1's key", "public_key": k.public(), "decodes": true, "small_order": false},
                {"why": "the identity, y = 1", "public_key": hex(&identity), "decodes": true, "small_order": true},
                {"why": "y = 0, a point of order 4", "public_key": hex(&[0u8; 32]), "decodes": true, "small_order": true},
                {"why": "y = p + 3, not reduced mod p = 2^255 - 19: decodes as y = 3, a point of large order",
                 "public_key": noncanonical(3, false), "decodes": true, "small_order": false},
                {"why": "y = p + 3 with the sign bit set", "public_key": noncanonical(3, true), "decodes": true, "small_order": false},
                {"why": "y = p + 2: no x satisfies the curve equation for y = 2", "public_key": noncanonical(2, false), "decodes": false},
            ],
        })
    }

    /// The 32-byte encoding with y = p + k (not reduced mod p).
    fn noncanonical(k: u8, sign: bool) -> String {
        let mut b = [0xffu8; 32];
        b[0] = 0xed + k;
        b[31] = if sign { 0xff } else { 0x7f };
        hex::encode(b)
    }

    /// An attested ALLOW as a client receives it (FORMATS.md §10,
    /// "Attested answers"), built from proof-v1.json's receipt.
    fn attested_answer() -> Value {
        let proof: Value =
            serde_json::from_str(include_str!("../../../docs/vectors/proof-v1.json"))
                .expect("proof vectors");
        // Record 1 of decision-v1.json (alice's ALLOW) is leaf 0 of the
        // size-7 tree that proof-v1.json's checkpoint cosigns.
        let mut receipt: quorate_core::Receipt =
            serde_json::from_value(proof["receipt"].clone()).expect("receipt");
        let decisions: Vec<super::DecisionVector> =
            serde_json::from_str(include_str!("../../../docs/vectors/decision-v1.json"))
                .expect("decision vectors");
        let allow = decisions[0].record.clone();
        assert_eq!(allow.decision, quorate_core::Decision::Allow);
        let leaves: Vec<Digest> =
            serde_json::from_value(proof["merkle"]["tree"]["leaf_hashes"].clone()).expect("leaves");
        assert_eq!(leaves[0], quorate_core::proof::record_leaf(&allow));
        let mut tree = quorate_core::merkle::MemoryTree::new();
        for l in &leaves {
            tree.push(*l);
        }
        receipt.inclusion_proof =
            quorate_core::merkle::inclusion_proof(&tree, 0, 7).expect("proof");
        receipt.record = allow;
        let receipt_json = serde_json::to_string(&receipt).expect("json");
        let mut tampered = receipt_json.clone().into_bytes();
        // One byte of the first cosignature's signature, changed.
        let at = receipt_json.find("\"signature\":\"").expect("a signature") + 13;
        tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
        serde_json::json!({
            "description": "An attested ALLOW as Authorize answers it (FORMATS.md section 10, \
                \"Attested answers\"), checked by crates/quorate-core/tests/vectors.rs. \
                `request` is the request sent (the core form of section 2's nine request \
                fields); `answer` holds the AuthorizeResponse fields a client checks: decision, \
                reason and receipt_json, the receipt as one JSON string exactly as the node \
                sends it (record 1 of decision-v1.json under the size-7 checkpoint of proof-v1.json). A client believes the ALLOW only if \
                the receipt's record decides the request sent, field for field, says ALLOW, \
                and the receipt verifies under `trust` (section 10). `tampered_receipt_json` \
                differs in one byte of a cosignature and must fail.",
            "request": receipt.record.request,
            "answer": {
                "decision": "ALLOW",
                "reason": "",
                "receipt_json": receipt_json,
            },
            "tampered_receipt_json": String::from_utf8(tampered).expect("utf8"),
            "trust": proof["trust"],
        })
    }

    /// Stored rows and a Raft command in the binary codec (FORMATS.md
    /// §6.0), each beside the JSON text quorate writes for the same value.
    fn storage() -> Value {
        use quorate_core::{Command, codec};
        let decisions: Vec<super::DecisionVector> =
            serde_json::from_str(include_str!("../../../docs/vectors/decision-v1.json"))
                .expect("decision vectors");
        let shadowed: Value = history()["shadow_record"]["record"].clone();
        let shadowed: DecisionRecord = serde_json::from_value(shadowed).expect("shadow record");
        let policy = PolicyVersion {
            domain: "payments".into(),
            version: 1,
            policy_text: PAY_V1.into(),
            schema: None,
            hash: policy_content_hash(PAY_V1, None),
            log_index: 3,
            published_at_ms: T0,
            signature: None,
        };
        let command = Command::Authorize {
            requests: vec![
                decisions[0].record.request.clone(),
                decisions[1].record.request.clone(),
            ],
            timestamp_ms: T0 + 9,
        };
        let probe = Command::Probe {
            probes: 3,
            timestamp_ms: T0 + 10,
        };
        fn case<T: serde::Serialize>(what: &str, kind: &str, v: &T) -> Value {
            json!({
                "what": what,
                "type": kind,
                "json": serde_json::to_string(v).expect("json"),
                "stored_hex": hex::encode(codec::encode(v)),
            })
        }
        let record = &decisions[0].record;
        let mut padded = codec::encode(record);
        // `index` (1) as a uint64 instead of a positive fixint: the same
        // value in bytes that are not its encoding.
        let at = padded
            .windows(6)
            .position(|w| w == b"\xa5index")
            .expect("index key")
            + 6;
        assert_eq!(padded[at], 0x01);
        padded.splice(at..at + 1, [0xcf, 0, 0, 0, 0, 0, 0, 0, 1]);
        json!({
            "description": "The binary codec of stored rows, snapshot frames and Raft messages \
                (FORMATS.md section 6.0), checked by crates/quorate-core/tests/vectors.rs. \
                Each case holds `json`, the JSON text quorate writes for a value, and \
                `stored_hex`, the bytes it stores for it: the MessagePack spelling of that JSON \
                text, key for key in the same order, every length and integer in its shortest \
                form. `noncanonical_hex` decodes to the first case's record but is not its \
                encoding (index 1 written as a uint64), so a stored row holding it is refused.",
            "cases": [
                case("decision record 1 of decision-v1.json (column family decisions, key u64(1))", "record", record),
                case("decision record 2 of decision-v1.json (a DENY)", "record", &decisions[1].record),
                case("the shadowed record of history-v1.json", "record", &shadowed),
                case("a policy version (column family policies)", "policy", &policy),
                case("an authorize batch of two requests (the command a raft_log entry carries)", "command", &command),
                case("a batch of three commit probes (a raft_log entry that changes no state)", "command", &probe),
            ],
            "noncanonical_hex": hex::encode(padded),
        })
    }

    #[test]
    #[ignore = "writes docs/vectors; run with QUORATE_WRITE_VECTORS=1 when a format changes on purpose"]
    fn regenerate() {
        if std::env::var_os("QUORATE_WRITE_VECTORS").is_none() {
            return;
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/vectors");
        for (name, value) in [
            ("history-v1.json", history()),
            ("canonical-json-v1.json", canonical()),
            ("ed25519-v1.json", ed25519()),
            ("attested-answer-v1.json", attested_answer()),
            ("storage-v1.json", storage()),
        ] {
            // Keys sorted (FORMATS.md §1): re-read from the canonical text,
            // whose keys are in byte order.
            let sorted: Value = serde_json::from_str(&canonical_json(&value)).expect("json");
            let text = serde_json::to_string_pretty(&sorted).expect("json") + "\n";
            std::fs::write(format!("{dir}/{name}"), text).expect("write");
        }
    }
}

// ---- docs/vectors/attested-answer-v1.json: the receipt an ALLOW carries ----

#[test]
fn attested_answer_vector_verifies_and_its_tampered_copy_does_not() {
    let v: serde_json::Value = serde_json::from_str(include_str!(
        "../../../docs/vectors/attested-answer-v1.json"
    ))
    .expect("attested answer vector parses");
    let trust: quorate_core::TrustFile =
        serde_json::from_value(v["trust"].clone()).expect("trust file");
    let sent: quorate_core::AuthorizeRequest =
        serde_json::from_value(v["request"].clone()).expect("request");
    let text = v["answer"]["receipt_json"].as_str().expect("receipt_json");
    let receipt: quorate_core::Receipt = serde_json::from_str(text).expect("receipt");
    assert_eq!(v["answer"]["decision"], "ALLOW");
    assert_eq!(
        receipt.record.request, sent,
        "the receipt decides the request sent"
    );
    assert_eq!(receipt.record.decision, quorate_core::Decision::Allow);
    quorate_core::proof::verify_receipt(&trust, &receipt).expect("the receipt verifies");
    let bad = v["tampered_receipt_json"].as_str().expect("tampered copy");
    assert_eq!(
        bad.len(),
        text.len(),
        "the tampered copy differs in one byte only"
    );
    let bad: quorate_core::Receipt = serde_json::from_str(bad).expect("still parses");
    assert!(quorate_core::proof::verify_receipt(&trust, &bad).is_err());
}

// ---- docs/vectors/storage-v1.json: the binary codec of section 6.0 ----

#[test]
fn storage_vectors_match() {
    use quorate_core::{Command, PolicyVersion, codec};
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/vectors/storage-v1.json"))
            .expect("storage vectors parse");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(json: &str, stored: &[u8]) {
        let value: T = serde_json::from_str(json).expect("json form parses");
        assert_eq!(hex::encode(codec::encode(&value)), hex::encode(stored));
        let back: T = codec::decode_canonical(stored).expect("stored bytes decode");
        assert_eq!(serde_json::to_string(&back).expect("json"), json);
    }
    for c in cases {
        let json = c["json"].as_str().expect("json");
        let stored = hex::decode(c["stored_hex"].as_str().expect("hex")).expect("hex");
        // The rule an outsider applies: the MessagePack spelling of the
        // JSON text, keys in their order, shortest forms.
        let generic: serde_json::Value = serde_json::from_str(json).expect("json parses");
        assert_eq!(
            hex::encode(codec::encode(&generic)),
            hex::encode(&stored),
            "{}",
            c["what"]
        );
        match c["type"].as_str() {
            Some("record") => typed::<DecisionRecord>(json, &stored),
            Some("policy") => typed::<PolicyVersion>(json, &stored),
            Some("command") => typed::<Command>(json, &stored),
            other => panic!("unknown case type {other:?}"),
        }
    }
    let first = hex::decode(cases[0]["stored_hex"].as_str().expect("hex")).expect("hex");
    let padded = hex::decode(v["noncanonical_hex"].as_str().expect("hex")).expect("hex");
    assert_eq!(
        codec::decode::<DecisionRecord>(&padded),
        codec::decode::<DecisionRecord>(&first),
        "the same value"
    );
    assert_eq!(
        codec::decode_canonical::<DecisionRecord>(&padded),
        Err(codec::CodecError::NotCanonical)
    );
}
