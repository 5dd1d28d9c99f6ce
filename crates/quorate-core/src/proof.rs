//! Keys, signatures, checkpoints, receipts and the trust file: the signed
//! objects that make invariants 3, 4 and 6 checkable by anyone. The signed
//! byte layouts are specified in `docs/FORMATS.md` §7–§10.
//!
//! A **checkpoint** is (cluster id, tree size, Merkle root) with the
//! cosignatures of the voters that each computed that root themselves. It is
//! *final* when the cosigners are a majority of the voters. A **receipt** is
//! one decision record, its inclusion proof and the smallest final
//! checkpoint that covers it.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::canonical::Encoder;
use crate::merkle;
use crate::record::{DecisionRecord, Digest};

/// Domain-separation tag of the bytes a voter signs for a checkpoint.
pub const CHECKPOINT_TAG: &str = "quorate/checkpoint/v1";
/// Domain-separation tag of the bytes a publisher signs for a policy.
pub const POLICY_SIGNATURE_TAG: &str = "quorate/policy-signature/v1";

/// Why a proof object did not verify. Every variant names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("malformed {what}: {message}")]
    Malformed { what: String, message: String },
    #[error("checkpoint is for cluster {found:?}, the trust file is for {expected:?}")]
    WrongCluster { expected: String, found: String },
    #[error("cosignature by node {node}: {message}")]
    BadCosignature { node: u64, message: String },
    #[error(
        "checkpoint at size {size} is judged under voters {voters:?}, which the trust file does not list as a voter set covering that size; export the trust file again (`quorate keys export`) if the membership changed"
    )]
    UnknownVoterSet { size: u64, voters: Vec<u64> },
    #[error("checkpoint at size {size} has {valid} valid voter cosignatures; {needed} are needed")]
    NotFinal {
        size: u64,
        valid: usize,
        needed: usize,
    },
    #[error("record {index}: hash does not match its contents")]
    RecordHash { index: u64 },
    #[error("record {index} is not covered by a checkpoint of size {size}")]
    NotCovered { index: u64, size: u64 },
    #[error("inclusion proof of record {index}: {source}")]
    Inclusion {
        index: u64,
        source: merkle::MerkleError,
    },
    #[error("consistency proof from size {old} to {new}: {source}")]
    Consistency {
        old: u64,
        new: u64,
        source: merkle::MerkleError,
    },
    #[error("policy signature: {0}")]
    PolicySignature(String),
}

/// An ed25519 public key. Serialised as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature. Serialised as 128 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

macro_rules! hex_type {
    ($t:ident, $n:expr, $what:expr) => {
        impl $t {
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn from_hex(s: &str) -> Result<$t, ProofError> {
                let mut out = [0u8; $n];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|e| ProofError::Malformed {
                    what: $what.into(),
                    message: format!("expected {} hex characters: {e}", 2 * $n),
                })?;
                Ok($t(out))
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($t), self.to_hex())
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::record::serialize_hex(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                crate::record::deserialize_hex(d, concat!("a hex ", $what), |s| {
                    $t::from_hex(s).map_err(|e| e.to_string())
                })
            }
        }
    };
}

hex_type!(PublicKey, 32, "public key");
hex_type!(Signature, 64, "signature");

impl PublicKey {
    /// Checks `sig` over `message` (strict ed25519: no malleable signatures,
    /// no small-order keys).
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), String> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|e| format!("bad public key: {e}"))?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(message, &sig)
            .map_err(|_| "signature does not verify".to_string())
    }
}

/// A secret signing key (a node's identity or a policy publisher's key).
/// Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl SecretKey {
    /// The key with this 32-byte seed. The caller supplies the randomness:
    /// this crate does no IO.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

/// Tag of the message a node signs to prove it holds the key it names.
pub const IDENTITY_TAG: &str = "quorate/identity/v1";

/// The bytes a node signs, with the key it reports, when asked who it is
/// (bootstrap, add-learner): its cluster, its id and the asker's fresh
/// nonce. The asker learns that the key's holder claims this very id, now;
/// a node cannot report another node's key as its own (FORMATS.md §8).
pub fn identity_message(cluster_id: &str, node_id: u64, nonce: &[u8; 32]) -> Vec<u8> {
    let mut e = Encoder::new(IDENTITY_TAG);
    e.str(cluster_id).u64(node_id).digest(nonce);
    e.as_bytes().to_vec()
}

/// The bytes a voter signs for a checkpoint (FORMATS.md §8).
pub fn checkpoint_message(cluster_id: &str, size: u64, root: &Digest) -> Vec<u8> {
    let mut e = Encoder::new(CHECKPOINT_TAG);
    e.str(cluster_id).u64(size).digest(&root.0);
    e.as_bytes().to_vec()
}

/// The bytes a publisher signs for a policy: the exact policy text and
/// schema (FORMATS.md §9). The domain is not signed, so one signed policy
/// can be rolled out to several domains.
pub fn policy_signature_message(policy_text: &str, schema: Option<&str>) -> Vec<u8> {
    let mut e = Encoder::new(POLICY_SIGNATURE_TAG);
    e.str(policy_text).opt_str(schema);
    e.as_bytes().to_vec()
}

/// A publisher's signature over a policy's exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySignature {
    pub publisher_key: PublicKey,
    pub signature: Signature,
}

impl PolicySignature {
    pub fn sign(key: &SecretKey, policy_text: &str, schema: Option<&str>) -> PolicySignature {
        PolicySignature {
            publisher_key: key.public(),
            signature: key.sign(&policy_signature_message(policy_text, schema)),
        }
    }

    /// Checks the signature itself (not whether the key is trusted).
    pub fn verify(&self, policy_text: &str, schema: Option<&str>) -> Result<(), ProofError> {
        self.publisher_key
            .verify(
                &policy_signature_message(policy_text, schema),
                &self.signature,
            )
            .map_err(ProofError::PolicySignature)
    }
}

/// One voter's signature over a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    pub node_id: u64,
    pub signature: Signature,
}

/// A tree head and the cosignatures collected for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub cluster_id: String,
    pub size: u64,
    pub root: Digest,
    /// Sorted by node id, at most one per node.
    pub cosignatures: Vec<Cosignature>,
    /// The voters this checkpoint is judged under, sorted: those of the
    /// membership applied when it was first cosigned. Not signed; the trust
    /// file must list this exact set as one the cluster had (see
    /// `TrustFile::voter_sets`). Empty on checkpoints made before voter
    /// sets were recorded: judged under the trust file's current voters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<u64>,
}

impl Checkpoint {
    pub fn message(&self) -> Vec<u8> {
        checkpoint_message(&self.cluster_id, self.size, &self.root)
    }
}

/// A node the verifier trusts, with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedNode {
    pub node_id: u64,
    pub public_key: PublicKey,
    /// Voters' cosignatures count towards finality; learners' do not.
    pub voter: bool,
    #[serde(default)]
    pub region: String,
}

/// A publisher whose policy signatures are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedPublisher {
    pub name: String,
    pub public_key: PublicKey,
}

/// What a verifier needs to check proofs offline (`quorate keys export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustFile {
    pub format: String,
    pub cluster_id: String,
    pub nodes: Vec<TrustedNode>,
    #[serde(default)]
    pub publishers: Vec<TrustedPublisher>,
    /// Every voter set the cluster has had, oldest first. A checkpoint that
    /// names its voters is judged under the set it names, which must be
    /// listed here and, if that set was later replaced, cover its size.
    /// Every cluster records its first voter set, so a current trust file
    /// lists at least one; empty only in trust files written before voter
    /// sets were recorded (then checkpoints are judged by current voters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voter_sets: Vec<VoterSet>,
}

/// A voter set of the cluster's history (FORMATS.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterSet {
    /// Sorted node ids; each is listed in the trust file's `nodes`.
    pub voters: Vec<u64>,
    /// The decision-log size when a later set replaced this one; `None`
    /// for the current set. A retired set cannot vouch for a larger size,
    /// so keys of former voters cannot finalise history written after
    /// they left.
    pub until_size: Option<u64>,
}

/// The `format` value of a trust file this code reads.
pub const TRUST_FORMAT: &str = "quorate-trust/v1";

impl TrustFile {
    /// Cosignatures needed for finality: a majority of the voters.
    pub fn quorum(&self) -> usize {
        majority(self.nodes.iter().filter(|n| n.voter).count())
    }

    pub(crate) fn node_key(&self, node_id: u64) -> Option<&PublicKey> {
        self.nodes
            .iter()
            .find(|n| n.node_id == node_id)
            .map(|n| &n.public_key)
    }

    fn current_voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| n.node_id)
            .collect();
        v.sort_unstable();
        v
    }

    /// The voters `cp` is judged under: the set it names, if the trust file
    /// lists that set as covering its size; the current voters for a
    /// checkpoint that names none.
    pub(crate) fn judges(&self, cp: &Checkpoint) -> Result<Vec<u64>, ProofError> {
        if cp.voters.is_empty() {
            return Ok(self.current_voters());
        }
        let mut named = cp.voters.clone();
        named.sort_unstable();
        named.dedup();
        let listed = if self.voter_sets.is_empty() {
            named == self.current_voters()
        } else {
            self.voter_sets
                .iter()
                .any(|s| s.voters == named && s.until_size.is_none_or(|until| cp.size <= until))
        };
        if listed {
            Ok(named)
        } else {
            Err(ProofError::UnknownVoterSet {
                size: cp.size,
                voters: named,
            })
        }
    }

    /// Checks the format tag and that no node id or key appears twice.
    pub fn check(&self) -> Result<(), ProofError> {
        let bad = |m: String| ProofError::Malformed {
            what: "trust file".into(),
            message: m,
        };
        if self.format != TRUST_FORMAT {
            return Err(bad(format!(
                "format is {:?}; this verifier reads {TRUST_FORMAT:?}",
                self.format
            )));
        }
        if !self.nodes.iter().any(|n| n.voter) {
            return Err(bad("lists no voters".into()));
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.node_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut keys: Vec<PublicKey> = self.nodes.iter().map(|n| n.public_key).collect();
        keys.sort_unstable();
        keys.dedup();
        if ids.len() != self.nodes.len() || keys.len() != self.nodes.len() {
            return Err(bad("a node id or key is listed twice".into()));
        }
        for set in &self.voter_sets {
            if set.voters.is_empty() || set.voters.iter().any(|v| !ids.contains(v)) {
                return Err(bad(format!(
                    "voter set {:?} is empty or names a node without a key",
                    set.voters
                )));
            }
        }
        Ok(())
    }

    /// Checks that `cp` is final under this trust file: for this cluster,
    /// and cosigned with valid signatures by a majority of the voters.
    /// A signature that does not verify is an error, not merely uncounted:
    /// a checkpoint carrying a forged cosignature is evidence of tampering.
    pub fn verify_checkpoint(&self, cp: &Checkpoint) -> Result<(), ProofError> {
        // Fail closed on a trust file the format forbids (FORMATS.md §10):
        // one key listed under two node ids would let one signer count
        // twice towards a majority. Checked here, on every use, so that no
        // caller of the library can skip it.
        self.check()?;
        if cp.cluster_id != self.cluster_id {
            return Err(ProofError::WrongCluster {
                expected: self.cluster_id.clone(),
                found: cp.cluster_id.clone(),
            });
        }
        let judges = self.judges(cp)?;
        let keyed: Vec<(u64, Option<&PublicKey>)> =
            judges.iter().map(|id| (*id, self.node_key(*id))).collect();
        verify_cosignatures(cp, &keyed)
    }

    /// Checks a policy signature and that its key is a trusted publisher.
    pub fn verify_policy_signature(
        &self,
        sig: &PolicySignature,
        policy_text: &str,
        schema: Option<&str>,
    ) -> Result<(), ProofError> {
        if !self
            .publishers
            .iter()
            .any(|p| p.public_key == sig.publisher_key)
        {
            return Err(ProofError::PolicySignature(format!(
                "key {} is not a trusted publisher",
                sig.publisher_key
            )));
        }
        sig.verify(policy_text, schema)
    }
}

/// Cosignatures needed for finality among `voters` voters: a majority.
/// The one quorum rule of the product (Raft's, for checkpoints and for
/// attested answers alike).
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Checks `cp`'s cosignatures against `judges` (each voter the checkpoint
/// is judged under, with its key if known): every cosignature is by a
/// distinct judge and verifies, and they are a majority of the judges.
/// A cosignature that does not verify is an error, not merely uncounted.
pub fn verify_cosignatures(
    cp: &Checkpoint,
    judges: &[(u64, Option<&PublicKey>)],
) -> Result<(), ProofError> {
    let valid = check_cosignatures(cp, judges)?;
    let needed = majority(judges.len());
    if valid < needed {
        return Err(ProofError::NotFinal {
            size: cp.size,
            valid,
            needed,
        });
    }
    Ok(())
}

/// Checks every cosignature on `cp` as [`verify_cosignatures`] does, without
/// asking for a majority (a checkpoint still collecting them); returns how
/// many there are.
pub fn check_cosignatures(
    cp: &Checkpoint,
    judges: &[(u64, Option<&PublicKey>)],
) -> Result<usize, ProofError> {
    let message = cp.message();
    let mut seen = Vec::new();
    for c in &cp.cosignatures {
        if seen.contains(&c.node_id) {
            return Err(ProofError::BadCosignature {
                node: c.node_id,
                message: "appears twice".into(),
            });
        }
        seen.push(c.node_id);
        let Some((_, key)) = judges.iter().find(|(id, _)| *id == c.node_id) else {
            return Err(ProofError::BadCosignature {
                node: c.node_id,
                message: "not one of the voters the checkpoint is judged under".into(),
            });
        };
        let key = key.ok_or_else(|| ProofError::BadCosignature {
            node: c.node_id,
            message: "has no key in the trust file".into(),
        })?;
        key.verify(&message, &c.signature)
            .map_err(|message| ProofError::BadCosignature {
                node: c.node_id,
                message,
            })?;
    }
    Ok(seen.len())
}

/// One voter's signature over the root it computed itself at `size`,
/// sent straight to the leader after applying (not through the log). The
/// leader counts it towards an attested answer and later persists a
/// majority of them as one checkpoint (FORMATS.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub signer: u64,
    pub size: u64,
    pub root: Digest,
    pub signature: Signature,
}

impl Attestation {
    /// Signs `root` at `size` as `signer`.
    pub fn sign(
        key: &SecretKey,
        signer: u64,
        cluster_id: &str,
        size: u64,
        root: Digest,
    ) -> Attestation {
        Attestation {
            signer,
            size,
            root,
            signature: key.sign(&checkpoint_message(cluster_id, size, &root)),
        }
    }

    /// Checks the signature under `key`.
    pub fn verify(&self, cluster_id: &str, key: &PublicKey) -> Result<(), String> {
        key.verify(
            &checkpoint_message(cluster_id, self.size, &self.root),
            &self.signature,
        )
    }
}

/// Proof that one decision is in the log under a final checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    pub record: DecisionRecord,
    /// Audit path from the record's leaf (index `record.index - 1`) to
    /// `checkpoint.root`.
    pub inclusion_proof: Vec<Digest>,
    pub checkpoint: Checkpoint,
}

/// The `format` value of a receipt this code reads.
pub const RECEIPT_FORMAT: &str = "quorate-receipt/v1";

/// The Merkle leaf of a decision record: `leaf_hash(record.hash)`.
pub fn record_leaf(record: &DecisionRecord) -> Digest {
    merkle::leaf_hash(&record.hash.0)
}

/// Verifies a receipt completely: the record's own hash, its inclusion in
/// the checkpoint's tree, and the checkpoint's finality under `trust`.
pub fn verify_receipt(trust: &TrustFile, receipt: &Receipt) -> Result<(), ProofError> {
    verify_receipt_inclusion(receipt)?;
    trust.verify_checkpoint(&receipt.checkpoint)
}

/// The part of a receipt's verification that needs no trust: the format,
/// the record's own hash and its inclusion under the checkpoint's root.
/// A node runs it on every receipt it hands out, so a record altered on
/// its disk is never served as attested.
pub fn verify_receipt_inclusion(receipt: &Receipt) -> Result<(), ProofError> {
    if receipt.format != RECEIPT_FORMAT {
        return Err(ProofError::Malformed {
            what: "receipt".into(),
            message: format!(
                "format is {:?}; this verifier reads {RECEIPT_FORMAT:?}",
                receipt.format
            ),
        });
    }
    let rec = &receipt.record;
    if !rec.hash_is_valid() {
        return Err(ProofError::RecordHash { index: rec.index });
    }
    let size = receipt.checkpoint.size;
    if rec.index == 0 || rec.index > size {
        return Err(ProofError::NotCovered {
            index: rec.index,
            size,
        });
    }
    merkle::verify_inclusion(
        &record_leaf(rec),
        rec.index - 1,
        size,
        &receipt.inclusion_proof,
        &receipt.checkpoint.root,
    )
    .map_err(|source| ProofError::Inclusion {
        index: rec.index,
        source,
    })
}

/// Proof that `checkpoint` extends an older tree of `old_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyBundle {
    pub format: String,
    pub old_size: u64,
    pub proof: Vec<Digest>,
    /// The newer checkpoint, cosigned.
    pub checkpoint: Checkpoint,
}

/// The `format` value of a consistency bundle this code reads.
pub const CONSISTENCY_FORMAT: &str = "quorate-consistency/v1";

/// Verifies that `new` (a consistency bundle) extends the checkpoint `old`:
/// both are final under `trust` and the proof links their roots. A fork,
/// one history at `old` and another at `new.checkpoint`, fails here.
pub fn verify_consistency(
    trust: &TrustFile,
    old: &Checkpoint,
    new: &ConsistencyBundle,
) -> Result<(), ProofError> {
    if new.format != CONSISTENCY_FORMAT {
        return Err(ProofError::Malformed {
            what: "consistency bundle".into(),
            message: format!(
                "format is {:?}; this verifier reads {CONSISTENCY_FORMAT:?}",
                new.format
            ),
        });
    }
    if new.old_size != old.size {
        return Err(ProofError::Malformed {
            what: "consistency bundle".into(),
            message: format!(
                "proves size {} but the old checkpoint has size {}",
                new.old_size, old.size
            ),
        });
    }
    trust.verify_checkpoint(old)?;
    trust.verify_checkpoint(&new.checkpoint)?;
    merkle::verify_consistency(
        old.size,
        new.checkpoint.size,
        &old.root,
        &new.checkpoint.root,
        &new.proof,
    )
    .map_err(|source| ProofError::Consistency {
        old: old.size,
        new: new.checkpoint.size,
        source,
    })
}

#[cfg(test)]
mod voter_set_tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    /// Nodes 1-5; the cluster went from voters {1,2,3} to {1,2,3,4,5} at
    /// size 100, then to {1,2,4} at size 200.
    fn trust() -> TrustFile {
        TrustFile {
            format: TRUST_FORMAT.into(),
            cluster_id: "c".into(),
            nodes: (1..=5)
                .map(|n| TrustedNode {
                    node_id: u64::from(n),
                    public_key: key(n).public(),
                    voter: [1, 2, 4].contains(&n),
                    region: String::new(),
                })
                .collect(),
            publishers: vec![],
            voter_sets: vec![
                VoterSet {
                    voters: vec![1, 2, 3],
                    until_size: Some(100),
                },
                VoterSet {
                    voters: vec![1, 2, 3, 4, 5],
                    until_size: Some(200),
                },
                VoterSet {
                    voters: vec![1, 2, 4],
                    until_size: None,
                },
            ],
        }
    }

    fn cp(size: u64, voters: &[u64], signers: &[u8]) -> Checkpoint {
        let root = Digest([7; 32]);
        let message = checkpoint_message("c", size, &root);
        Checkpoint {
            cluster_id: "c".into(),
            size,
            root,
            cosignatures: signers
                .iter()
                .map(|&n| Cosignature {
                    node_id: u64::from(n),
                    signature: key(n).sign(&message),
                })
                .collect(),
            voters: voters.to_vec(),
        }
    }

    #[test]
    fn checkpoints_are_judged_under_the_voter_set_they_name() {
        let t = trust();
        t.check().expect("valid trust file");
        // Under the first set: node 3 (no longer a voter) counts there.
        t.verify_checkpoint(&cp(50, &[1, 2, 3], &[1, 3]))
            .expect("final under {1,2,3}");
        // Under the five-voter set two cosignatures are not a majority.
        assert!(matches!(
            t.verify_checkpoint(&cp(150, &[1, 2, 3, 4, 5], &[1, 3])),
            Err(ProofError::NotFinal { needed: 3, .. })
        ));
        t.verify_checkpoint(&cp(150, &[1, 2, 3, 4, 5], &[3, 4, 5]))
            .expect("3 of 5");
        // Current set.
        t.verify_checkpoint(&cp(250, &[1, 2, 4], &[2, 4]))
            .expect("2 of 3");
        // A checkpoint without named voters: the current voters.
        t.verify_checkpoint(&cp(250, &[], &[1, 4]))
            .expect("current voters");
    }

    #[test]
    fn a_trust_file_listing_one_key_twice_vouches_for_nothing() {
        // Node 5 listed with node 4's key: one signer would count twice.
        let mut dup = trust();
        dup.nodes[4].public_key = key(4).public();
        let mut c = cp(150, &[1, 2, 3, 4, 5], &[3, 4]);
        c.cosignatures.push(Cosignature {
            node_id: 5,
            signature: key(4).sign(&c.message()),
        });
        assert!(dup.check().is_err());
        // Checked on every use, not only by callers that remember to.
        assert!(matches!(
            dup.verify_checkpoint(&c),
            Err(ProofError::Malformed { .. })
        ));
        // The honest file judges the same two real signers: not final.
        assert!(trust().verify_checkpoint(&c).is_err());
    }

    #[test]
    fn retired_or_unknown_voter_sets_cannot_vouch() {
        let t = trust();
        // {1,2,3} was replaced at size 100: its keys cannot finalise size 101.
        assert!(matches!(
            t.verify_checkpoint(&cp(101, &[1, 2, 3], &[1, 2, 3])),
            Err(ProofError::UnknownVoterSet { size: 101, .. })
        ));
        // A set the cluster never had.
        assert!(matches!(
            t.verify_checkpoint(&cp(50, &[3, 5], &[3, 5])),
            Err(ProofError::UnknownVoterSet { .. })
        ));
        // A cosigner outside the named set is evidence of tampering.
        assert!(matches!(
            t.verify_checkpoint(&cp(250, &[1, 2, 4], &[1, 2, 5])),
            Err(ProofError::BadCosignature { node: 5, .. })
        ));
        // A voter set naming a node with no key is a malformed trust file.
        let mut bad = trust();
        bad.voter_sets[0].voters.push(9);
        assert!(bad.check().is_err());
    }
}
