//! The test vectors of docs/FORMATS.md: decision-v1.json and policy-v1.json
//! hold values, their canonical bytes (hex) and their SHA-256; proof-v1.json
//! holds Merkle hashes, roots and proofs, signed messages with their ed25519
//! signatures, proof objects and a complete log export. An independent
//! verifier should reproduce them from the document alone; this test
//! recomputes every field so the code and the document stay in agreement.

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
