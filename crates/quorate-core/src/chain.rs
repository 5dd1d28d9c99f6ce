//! The one chain verifier (invariant 6: tamper evident). Every place that
//! checks a decision log link by link uses it: the offline export verifier,
//! a node's start-up and periodic verification of its own store, and the
//! checks on a snapshot before it may replace local state (install and
//! repair). Each of them reads records from somewhere else; what a valid
//! chain is lives here only.
//!
//! A valid chain: records dense from index 1, each `prev_hash` the previous
//! record's hash (the genesis hash for the first), each hash the hash of
//! the record's contents; a checkpoint at size n has the Merkle root of
//! records 1..=n, and every cosignature on it is by a distinct voter it is
//! judged under and verifies; a checkpoint that claims to be final has a
//! majority of them ([`crate::majority`]).

use crate::merkle::Frontier;
use crate::proof::{self, Checkpoint, ProofError, PublicKey};
use crate::record::{DecisionRecord, Digest, GENESIS_HASH};

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("index is {found}; expected {expected} (record indexes are dense from 1)")]
    RecordIndex { expected: u64, found: u64 },
    #[error("prev_hash of the first record is {found}, not the genesis hash (64 zeros)")]
    PrevHashGenesis { found: Digest },
    #[error(
        "prev_hash does not link to record {previous}: it is {found}, record {previous}'s hash is {expected}"
    )]
    PrevHash {
        previous: u64,
        found: Digest,
        expected: Digest,
    },
    #[error("hash {found} does not match the record's contents (they hash to {computed})")]
    RecordHash { found: Digest, computed: Digest },
    #[error("checkpoint size is {size}, but {records} records precede it")]
    CheckpointSize { size: u64, records: u64 },
    #[error("checkpoint is for cluster {found:?}, not {expected:?}")]
    CheckpointCluster { expected: String, found: String },
    #[error(
        "checkpoint root {found} at size {size} is not the Merkle root of records 1..={size} ({computed})"
    )]
    CheckpointRoot {
        size: u64,
        found: Digest,
        computed: Digest,
    },
    #[error("checkpoint at size {size}: {source}")]
    Cosignatures { size: u64, source: ProofError },
    #[error("a checkpoint is stored for size {size}, but the log has {records} records")]
    CheckpointBeyondLog { size: u64, records: u64 },
    #[error(
        "the chain head says {claimed} records ending {claimed_hash}; the log has {found} ending {found_hash}"
    )]
    Head {
        claimed: u64,
        claimed_hash: Digest,
        found: u64,
        found_hash: Digest,
    },
}

/// Whether a checkpoint must carry a majority of its judges' cosignatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// It claims to be final (or is exported as such): a majority.
    Final,
    /// Still collecting: the cosignatures it has must be valid, however few.
    Partial,
}

/// A chain verified up to some record: the state a verifier carries from
/// one link to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    records: u64,
    head: Digest,
    frontier: Frontier,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain::new()
    }
}

impl Chain {
    /// The empty chain, before record 1.
    pub fn new() -> Chain {
        Chain {
            records: 0,
            head: GENESIS_HASH,
            frontier: Frontier::new(),
        }
    }

    /// A chain verified elsewhere up to record `records`, whose hash is
    /// `head`, with the Merkle frontier of those records: what a verifier
    /// resumes from when it checks only what follows. The caller vouches
    /// for the three (a store re-reads them and checks them against a
    /// cosigned root); this checks only that they agree in size.
    pub fn resume(records: u64, head: Digest, frontier: Frontier) -> Result<Chain, ChainError> {
        if frontier.size() != records {
            return Err(ChainError::Head {
                claimed: records,
                claimed_hash: head,
                found: frontier.size(),
                found_hash: head,
            });
        }
        Ok(Chain {
            records,
            head,
            frontier,
        })
    }

    /// Records verified so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The last verified record's hash (the genesis hash before any).
    pub fn head(&self) -> Digest {
        self.head
    }

    /// The Merkle frontier of the verified records.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The Merkle root of the verified records.
    pub fn root(&self) -> Digest {
        self.frontier.root()
    }

    /// Checks that `r` is the next link, without taking it.
    pub fn check(&self, r: &DecisionRecord) -> Result<(), ChainError> {
        let expected = self.records + 1;
        if r.index != expected {
            return Err(ChainError::RecordIndex {
                expected,
                found: r.index,
            });
        }
        if r.prev_hash != self.head {
            return Err(if self.records == 0 {
                ChainError::PrevHashGenesis { found: r.prev_hash }
            } else {
                ChainError::PrevHash {
                    previous: self.records,
                    found: r.prev_hash,
                    expected: self.head,
                }
            });
        }
        let computed = r.compute_hash();
        if computed != r.hash {
            return Err(ChainError::RecordHash {
                found: r.hash,
                computed,
            });
        }
        Ok(())
    }

    /// Takes `r` as the next link after checking it. Returns the Merkle
    /// nodes its leaf completed, `(level, index, hash)`, for a store to
    /// compare with the ones it holds.
    pub fn push(&mut self, r: &DecisionRecord) -> Result<Vec<(u32, u64, Digest)>, ChainError> {
        self.check(r)?;
        let nodes = self.frontier.append(proof::record_leaf(r));
        self.records = r.index;
        self.head = r.hash;
        Ok(nodes)
    }

    /// Checks a checkpoint at the current size: its cluster (when the
    /// caller knows which it must be), its root, and its cosignatures
    /// against `judges` (each voter it is judged under, with its key if
    /// known; a cosignature that does not verify is an error, never merely
    /// uncounted).
    pub fn checkpoint(
        &self,
        cp: &Checkpoint,
        cluster_id: Option<&str>,
        judges: &[(u64, Option<&PublicKey>)],
        finality: Finality,
    ) -> Result<(), ChainError> {
        if cp.size != self.records {
            return Err(ChainError::CheckpointSize {
                size: cp.size,
                records: self.records,
            });
        }
        if let Some(expected) = cluster_id
            && cp.cluster_id != expected
        {
            return Err(ChainError::CheckpointCluster {
                expected: expected.to_string(),
                found: cp.cluster_id.clone(),
            });
        }
        let computed = self.root();
        if computed != cp.root {
            return Err(ChainError::CheckpointRoot {
                size: cp.size,
                found: cp.root,
                computed,
            });
        }
        let checked = match finality {
            Finality::Final => proof::verify_cosignatures(cp, judges),
            Finality::Partial => proof::check_cosignatures(cp, judges).map(|_| ()),
        };
        checked.map_err(|source| ChainError::Cosignatures {
            size: cp.size,
            source,
        })
    }

    /// Checks that the chain ends where a stored or exported head says.
    pub fn finish(&self, claimed: u64, claimed_hash: Digest) -> Result<(), ChainError> {
        if (claimed, claimed_hash) != (self.records, self.head) {
            return Err(ChainError::Head {
                claimed,
                claimed_hash,
                found: self.records,
                found_hash: self.head,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::{Cosignature, SecretKey};

    /// The record module's sample, as record `index` linked to `prev`.
    fn record(index: u64, prev: Digest) -> DecisionRecord {
        let mut r = crate::record::tests::sample();
        r.index = index;
        r.log_index = index + 2;
        r.request.request_id = format!("r{index}");
        r.prev_hash = prev;
        r.seal()
    }

    fn chain_of(n: u64) -> (Chain, Vec<DecisionRecord>) {
        let mut c = Chain::new();
        let mut out = Vec::new();
        for i in 1..=n {
            let r = record(i, c.head());
            c.push(&r).unwrap_or_else(|e| panic!("{e}"));
            out.push(r);
        }
        (c, out)
    }

    fn keys() -> Vec<SecretKey> {
        (1..=3u8).map(|b| SecretKey::from_seed([b; 32])).collect()
    }

    fn signed(c: &Chain, by: &[usize]) -> Checkpoint {
        let ks = keys();
        let mut cp = Checkpoint {
            cluster_id: "c".into(),
            size: c.records(),
            root: c.root(),
            cosignatures: Vec::new(),
            voters: vec![1, 2, 3],
        };
        let msg = cp.message();
        cp.cosignatures = by
            .iter()
            .map(|&i| Cosignature {
                node_id: i as u64 + 1,
                signature: ks[i].sign(&msg),
            })
            .collect();
        cp
    }

    #[test]
    fn every_broken_link_is_named() {
        let (c, recs) = chain_of(3);
        type Edit = fn(&mut DecisionRecord);
        type Want = fn(&ChainError) -> bool;
        let rows: Vec<(&str, u64, Edit, Want)> = vec![
            (
                "skipped index",
                4,
                |r| {
                    r.index = 5;
                    *r = r.clone().seal();
                },
                |e| {
                    matches!(
                        e,
                        ChainError::RecordIndex {
                            expected: 4,
                            found: 5
                        }
                    )
                },
            ),
            (
                "prev_hash of another record",
                4,
                |r| {
                    r.prev_hash = Digest([7; 32]);
                    *r = r.clone().seal();
                },
                |e| matches!(e, ChainError::PrevHash { previous: 3, .. }),
            ),
            (
                "contents edited, hash kept",
                4,
                |r| r.request.principal = r#"User::"mallory""#.into(),
                |e| matches!(e, ChainError::RecordHash { .. }),
            ),
        ];
        for (name, index, edit, want) in rows {
            let mut r = record(index, c.head());
            edit(&mut r);
            let mut after = c.clone();
            let got = after.push(&r);
            assert!(got.as_ref().is_err_and(want), "{name}: {got:?}");
            assert_eq!(after, c, "{name}: a refused link changes nothing");
        }
        let mut first = recs[0].clone();
        first.prev_hash = Digest([1; 32]);
        let first = first.seal();
        assert!(matches!(
            Chain::new().push(&first),
            Err(ChainError::PrevHashGenesis { .. })
        ));
    }

    #[test]
    fn a_checkpoint_needs_the_records_root_and_valid_cosignatures() {
        let (c, _) = chain_of(5);
        let ks = keys();
        let pubs: Vec<_> = ks.iter().map(|k| k.public()).collect();
        let judges: Vec<(u64, Option<&PublicKey>)> = pubs
            .iter()
            .enumerate()
            .map(|(i, k)| (i as u64 + 1, Some(k)))
            .collect();
        let ok = |cp: &Checkpoint, f| c.checkpoint(cp, Some("c"), &judges, f);
        // A majority: final. One: only partial.
        assert_eq!(ok(&signed(&c, &[0, 2]), Finality::Final), Ok(()));
        assert_eq!(ok(&signed(&c, &[1]), Finality::Partial), Ok(()));
        assert!(matches!(
            ok(&signed(&c, &[1]), Finality::Final),
            Err(ChainError::Cosignatures {
                source: ProofError::NotFinal {
                    valid: 1,
                    needed: 2,
                    ..
                },
                ..
            })
        ));
        // A forged cosignature is an error even on a partial checkpoint.
        let mut forged = signed(&c, &[0]);
        forged.cosignatures[0].node_id = 2;
        assert!(matches!(
            ok(&forged, Finality::Partial),
            Err(ChainError::Cosignatures { .. })
        ));
        let mut root = signed(&c, &[0, 1]);
        root.root = Digest([9; 32]);
        assert!(matches!(
            ok(&root, Finality::Final),
            Err(ChainError::CheckpointRoot { size: 5, .. })
        ));
        let mut size = signed(&c, &[0, 1]);
        size.size = 4;
        assert!(matches!(
            ok(&size, Finality::Final),
            Err(ChainError::CheckpointSize {
                size: 4,
                records: 5
            })
        ));
        let mut other = signed(&c, &[0, 1]);
        other.cluster_id = "d".into();
        assert!(matches!(
            ok(&other, Finality::Final),
            Err(ChainError::CheckpointCluster { .. })
        ));
    }

    #[test]
    fn the_head_must_be_where_the_chain_ends() {
        let (c, recs) = chain_of(2);
        assert_eq!(c.finish(2, recs[1].hash), Ok(()));
        assert!(matches!(
            c.finish(3, recs[1].hash),
            Err(ChainError::Head { found: 2, .. })
        ));
        assert!(c.finish(2, recs[0].hash).is_err());
    }
}
