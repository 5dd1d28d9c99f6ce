//! The commands carried by Raft log entries and the responses the state
//! machine returns when it applies them. Serialised with serde into the log;
//! only the decision record's canonical bytes are hashed.

use serde::{Deserialize, Serialize};

use crate::proof::{Cosignature, PolicySignature, Signature};
use crate::reason::ErrorCode;
use crate::record::{AuthorizeRequest, DecisionRecord, Digest};
use crate::rollout::{Rollout, RolloutPlan};

/// One Raft log entry's payload. Every variant carries the leader-chosen
/// timestamp, so that applying it never reads a clock (invariant 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of authorization requests, decided in order at apply time.
    Authorize {
        requests: Vec<AuthorizeRequest>,
        timestamp_ms: u64,
    },
    /// Publishes a new immutable policy version (optionally activating it).
    PublishPolicy {
        domain: String,
        policy_text: String,
        schema: Option<String>,
        activate: bool,
        /// Checked at the edge against the trusted publishers and again on
        /// apply (a signature that does not verify is refused everywhere).
        signature: Option<PolicySignature>,
        timestamp_ms: u64,
    },
    /// Makes an existing version the domain's active one.
    ActivatePolicy {
        domain: String,
        version: u64,
        timestamp_ms: u64,
    },
    /// A voter's signature over the Merkle root it computed itself at
    /// `size` (FORMATS.md §8). Verified against the signer's key in the
    /// applied membership and compared with the applying node's own root.
    Cosign {
        signer: u64,
        size: u64,
        root: Digest,
        signature: Signature,
    },
    /// A checkpoint the leader collected attestations for: voters'
    /// signatures over the root each computed itself at `size`, sent to the
    /// leader directly and persisted here together. Each cosignature is
    /// applied exactly like a `Cosign` of its signer, in order.
    Checkpoint {
        size: u64,
        root: Digest,
        cosignatures: Vec<Cosignature>,
    },
    /// Publishes every candidate of the plan as a new, inactive version and
    /// puts the first stage in shadow (`crate::rollout`).
    StartRollout {
        plan: RolloutPlan,
        timestamp_ms: u64,
    },
    /// Activates the candidates of the stage in shadow, at this entry's log
    /// index, and puts the next stage in shadow.
    PromoteRollout {
        id: String,
        /// Promote although the stage's shadow minimum is not reached.
        force: bool,
        timestamp_ms: u64,
    },
    /// Reactivates the pre-rollout version of every promoted domain, at this
    /// entry's log index, and ends the rollout.
    RollbackRollout { id: String, timestamp_ms: u64 },
    /// A batch of commit probes (`quorate probe`, `quorate bench --peer-noop`):
    /// committed and applied like every entry, through the same batcher and
    /// replication as an authorize batch, and changes no state. It proves
    /// the write path (leader, quorum, fsync, apply) end to end, and its
    /// rate is the cluster's own ceiling that governed decisions are
    /// measured against.
    Probe { probes: u32, timestamp_ms: u64 },
}

/// The result of one authorization request within a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeOutcome {
    pub record: DecisionRecord,
    /// True when the request id had already been decided: `record` is the
    /// earlier committed decision and no new record was appended.
    pub replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPublished {
    pub domain: String,
    pub version: u64,
    pub hash: Digest,
    pub activated: bool,
    pub log_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyActivated {
    pub domain: String,
    pub version: u64,
    pub previous: Option<u64>,
    pub log_index: u64,
}

/// The effect of a cosignature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosigned {
    pub size: u64,
    /// Valid voter cosignatures now held for this root.
    pub cosigners: usize,
    /// True when this cosignature made the checkpoint final.
    pub became_final: bool,
}

/// A command the state machine refused deterministically: every replica
/// refuses it the same way and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Blank and membership entries produce nothing.
    #[default]
    None,
    Authorized(Vec<AuthorizeOutcome>),
    Published(PolicyPublished),
    Activated(PolicyActivated),
    Cosigned(Cosigned),
    /// The rollout's state after the command.
    Rollout(Box<Rollout>),
    /// A probe batch was applied: how many probes it carried.
    Probed(u32),
    Rejected(Rejection),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Authorize { requests, .. } => write!(f, "Authorize(x{})", requests.len()),
            Command::PublishPolicy {
                domain, activate, ..
            } => write!(f, "PublishPolicy({domain}, activate={activate})"),
            Command::ActivatePolicy {
                domain, version, ..
            } => write!(f, "ActivatePolicy({domain}, v{version})"),
            Command::Cosign { signer, size, .. } => write!(f, "Cosign(node {signer}, size {size})"),
            Command::Checkpoint {
                size, cosignatures, ..
            } => write!(f, "Checkpoint(size {size}, x{})", cosignatures.len()),
            Command::StartRollout { plan, .. } => write!(f, "StartRollout({})", plan.id),
            Command::PromoteRollout { id, force, .. } => {
                write!(f, "PromoteRollout({id}, force={force})")
            }
            Command::RollbackRollout { id, .. } => write!(f, "RollbackRollout({id})"),
            Command::Probe { probes, .. } => write!(f, "Probe(x{probes})"),
        }
    }
}
