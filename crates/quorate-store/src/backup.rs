//! Backups: a consistent RocksDB checkpoint of a running node's database,
//! verified as a whole before it is called a backup, and the one restore
//! that cannot break Raft's safety: seeding a new cluster of one voter from
//! it, for when the cluster it came from is gone (docs/OPERATIONS.md,
//! "Backup and restore").
//!
//! Why not restore a node in place: a backup holds the node's Raft vote as
//! of the backup. Put back, the node could vote a second time in a term it
//! already voted in after the backup, and two leaders could be elected in
//! one term. A lost node rejoins as a learner and catches up from a peer's
//! snapshot instead; a backup is for when no peer is left.

use std::path::Path;

use quorate_raft::{LogId, Membership, NodeInfo, StoredMembership, Vote};
use rocksdb::WriteBatch;

use crate::db::{CF_LOG, CF_RAFT_META, CF_SM_META, CF_SNAPSHOT, Store, StoreError, encode};
use crate::machine::{KEY_LAST_APPLIED, KEY_MEMBERSHIP, KEY_VOTER_HISTORY};

/// Writes a consistent checkpoint of `store` into `dir` (which must not
/// exist): hard links to the immutable SST files where the file system
/// allows, copies otherwise, and the WAL, all as of one instant.
pub fn checkpoint_to(store: &Store, dir: &Path) -> Result<(), StoreError> {
    let cp = rocksdb::checkpoint::Checkpoint::new(&store.db)?;
    cp.create_checkpoint(dir)?;
    Ok(())
}

/// What a seeded store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub records: u64,
    pub last_applied: Option<LogId>,
}

fn corrupt(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "backup".into(),
        message: message.into(),
    }
}

/// Turns the restored copy of a backup (already verified by the caller)
/// into the first node of a new cluster: `node_id` its only voter, with
/// the key and address of `me`, which must carry the public key this node
/// had in the backup's membership (its identity signed the backup's
/// checkpoints). The decision log, policies, checkpoints and proofs stay
/// as they were; the Raft log is dropped (all of it is applied), and the
/// vote is this node's own, in the term of the last applied entry, so it
/// elects itself in the next term. The voter history records the new
/// voter set, so trust files list it and checkpoints made from here on are
/// judged under it.
pub fn seed_new_cluster(store: &Store, node_id: u64, me: NodeInfo) -> Result<Seeded, StoreError> {
    let state = crate::machine::load_state(store)?;
    let old = state.membership.membership();
    let Some(was) = old.get_node(&node_id) else {
        return Err(corrupt(format!(
            "node {node_id} is not a member in the backup (members: {:?}); restore a backup of \
             this node, or give its node id",
            old.nodes().map(|(id, _)| *id).collect::<Vec<_>>()
        )));
    };
    if was.public_key != me.public_key {
        return Err(corrupt(format!(
            "this node's key ({}) is not the key node {node_id} had in the backup ({}): restore \
             with the node's own key file (backups hold no secrets)",
            me.public_key.to_hex(),
            was.public_key.to_hex()
        )));
    }
    let last_applied = state.last_applied;
    let term = last_applied
        .map(|l| l.committed_leader_id().term)
        .unwrap_or(0);
    let members = std::collections::BTreeMap::from([(node_id, me)]);
    let voters = std::collections::BTreeSet::from([node_id]);
    let membership = Membership::new(vec![voters], members)
        .map_err(|e| corrupt(format!("a one-voter membership: {e}")))?;
    let mut history = state.voter_history.clone();
    crate::proofs::record_voters(&mut history, &membership, state.head.count);
    let stored = StoredMembership::new(last_applied, membership);

    let mut batch = WriteBatch::default();
    let log = store.cf(CF_LOG)?;
    batch.delete_range_cf(&log, [].as_slice(), [0xffu8; 9].as_slice());
    let raft = store.cf(CF_RAFT_META)?;
    batch.put_cf(
        &raft,
        crate::log_store::KEY_VOTE,
        encode(&Vote::new(term, node_id)),
    );
    batch.put_cf(
        &raft,
        crate::log_store::KEY_COMMITTED,
        encode(&last_applied),
    );
    batch.put_cf(&raft, crate::log_store::KEY_PURGED, encode(&last_applied));
    let meta = store.cf(CF_SM_META)?;
    batch.put_cf(&meta, KEY_MEMBERSHIP, encode(&stored));
    batch.put_cf(&meta, KEY_VOTER_HISTORY, encode(&history));
    batch.put_cf(&meta, KEY_LAST_APPLIED, encode(&last_applied));
    // The backup's snapshot file is not in the backup; the node builds a
    // new one when it needs one.
    batch.delete_cf(&store.cf(CF_SNAPSHOT)?, b"current_meta");
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    store.db.write_opt(batch, &sync)?;
    Ok(Seeded {
        records: state.head.count,
        last_applied,
    })
}
