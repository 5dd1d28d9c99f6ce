//! The governance state machine: one command at one log index, applied to
//! the in-memory state, with the rows it reads through [`StateRead`] and the
//! rows it writes returned as [`Write`]s. No IO, no clock, no async: the
//! same inputs give the same outputs on every replica (invariant 3).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quorate_core::export::Activation;
use quorate_core::merkle::{self, NodeSource};
use quorate_core::proof::{Checkpoint, checkpoint_message, record_leaf};
use quorate_core::rollout::{Rollout, RolloutError, RolloutPlan};
use quorate_core::validate::{self, Limits};
use quorate_core::{
    AuthorizeOutcome, AuthorizeRequest, Command, CommandResponse, Cosigned, DecisionRecord, Digest,
    ErrorCode, PolicyActivated, PolicyPublished, PolicySignature, PolicyVersion, Rejection,
    Signature, policy_content_hash,
};
use quorate_policy::{
    ActivePolicy, CompiledPolicy, DomainState, Position, ShadowPolicy, decide_with_shadow,
};

use crate::state::{
    ChainHead, CheckpointProgress, CheckpointState, CheckpointVoter, Divergence, DomainMeta,
    GovernanceState,
};

/// The rows a command reads, as they stood before the entry being applied
/// (the machine tracks what the entry itself writes).
pub trait StateRead {
    /// Why a read failed (IO, a row that does not decode).
    type Error: std::fmt::Display;
    /// The record index a request id of `domain` was decided at.
    fn request_index(&self, domain: &str, request_id: &str) -> Result<Option<u64>, Self::Error>;
    fn decision(&self, index: u64) -> Result<Option<DecisionRecord>, Self::Error>;
    fn policy(&self, domain: &str, version: u64) -> Result<Option<PolicyVersion>, Self::Error>;
    fn checkpoint(&self, size: u64) -> Result<Option<CheckpointState>, Self::Error>;
    fn rollout_exists(&self, id: &str) -> Result<bool, Self::Error>;
    /// A perfect Merkle node (level, index), for roots of earlier sizes.
    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Digest>, Self::Error>;
}

/// One row the machine writes; the store turns an entry's writes into one
/// atomic batch (layouts in `docs/FORMATS.md` §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Decision(DecisionRecord),
    RequestId {
        domain: String,
        request_id: String,
        index: u64,
    },
    MerkleNode {
        level: u32,
        index: u64,
        hash: Digest,
    },
    Policy(PolicyVersion),
    Domain {
        domain: String,
        meta: DomainMeta,
    },
    Activation(Activation),
    Checkpoint(CheckpointState),
    Rollout(Rollout),
    /// The id of the most recently started rollout.
    RolloutLatest(String),
    /// This node's own evidence of divergence (node-local).
    Divergence(Divergence),
}

/// What applying one command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub response: CommandResponse,
    pub writes: Vec<Write>,
    /// Where the checkpoint a cosignature named stands now (announced even
    /// when nothing was added: a leader asking again wants it known).
    pub progress: Option<CheckpointProgress>,
}

/// Why a command could not be applied on this node. Not a refusal (those
/// are responses every replica gives alike): a local fault, so the node
/// must stop and contain rather than write what its peers do not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("reading state: {0}")]
    Read(String),
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
}

/// What applying a command needs besides the state: where it is in the log
/// and who votes.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The Raft log index of the entry.
    pub log_index: u64,
    /// The applied membership's voters, with their keys.
    pub voters: &'a [CheckpointVoter],
}

/// Compiled policies and the limits and cluster id every replica applies
/// alike. Compiling is memoised: the per-request path reads no policy row.
#[derive(Debug)]
pub struct Machine {
    limits: Limits,
    cluster_id: String,
    compiled: HashMap<(String, u64), (Arc<CompiledPolicy>, Digest)>,
    /// Test-only fault: invert every decision recorded (a replica given a
    /// wrong evaluation).
    #[cfg(feature = "fault-injection")]
    pub invert_decisions: bool,
}

/// A stored active policy that failed to compile here: recorded as a
/// decision only when every replica fails the same way (the policy itself).
enum CompileError {
    Policy(String),
    Local(MachineError),
}

impl Machine {
    pub fn new(limits: Limits, cluster_id: &str) -> Machine {
        Machine {
            limits,
            cluster_id: cluster_id.to_string(),
            compiled: HashMap::new(),
            #[cfg(feature = "fault-injection")]
            invert_decisions: false,
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets compiled policies (after the state was replaced wholesale).
    pub fn clear_cache(&mut self) {
        self.compiled.clear();
    }

    /// Applies `cmd` to `st`. On `Err`, `st` may be half-changed: the caller
    /// applies to a copy and keeps it only on success.
    pub fn apply<R: StateRead>(
        &mut self,
        read: &R,
        cmd: &Command,
        cx: Context<'_>,
        st: &mut GovernanceState,
    ) -> Result<Applied, MachineError> {
        let mut out = Out::default();
        let response = self.command(read, cmd, cx, st, &mut out)?;
        Ok(Applied {
            response,
            writes: out.writes,
            progress: out.progress,
        })
    }

    fn command<R: StateRead>(
        &mut self,
        read: &R,
        cmd: &Command,
        cx: Context<'_>,
        st: &mut GovernanceState,
        out: &mut Out,
    ) -> Result<CommandResponse, MachineError> {
        let log_index = cx.log_index;
        match cmd {
            Command::Authorize {
                requests,
                timestamp_ms,
            } => {
                let mut outcomes = Vec::with_capacity(requests.len());
                // Request ids decided earlier in this same entry.
                let mut fresh: HashMap<(String, String), DecisionRecord> = HashMap::new();
                let mut shadowed = false;
                for req in requests {
                    let outcome = self.authorize_one(
                        read,
                        req,
                        log_index,
                        *timestamp_ms,
                        st,
                        out,
                        &mut fresh,
                    )?;
                    if !outcome.replayed
                        && outcome.record.shadow.is_some()
                        && let Some(r) = st.rollout.as_mut()
                    {
                        r.count(&outcome.record);
                        shadowed = true;
                    }
                    outcomes.push(outcome);
                }
                if shadowed && let Some(r) = &st.rollout {
                    out.writes.push(Write::Rollout(r.clone()));
                }
                Ok(CommandResponse::Authorized(outcomes))
            }
            Command::PublishPolicy {
                domain,
                policy_text,
                schema,
                activate,
                signature,
                timestamp_ms,
            } => {
                // A signature that does not verify is refused everywhere
                // alike; whether its key is trusted is the edge's check.
                if let Some(sig) = signature
                    && let Err(e) = sig.verify(policy_text, schema.as_deref())
                {
                    return Ok(reject(ErrorCode::InvalidArgument, e.to_string()));
                }
                // The edge validated this before proposing; checking again
                // keeps the machine total: an entry that slipped past (another
                // release, a bug) is refused identically everywhere.
                if let Err(e) = validate::domain(domain, &self.limits) {
                    return Ok(reject(ErrorCode::InvalidArgument, e.to_string()));
                }
                if *activate && let Some(refusal) = in_rollout(st, domain) {
                    return Ok(refusal);
                }
                let compiled =
                    match CompiledPolicy::compile(policy_text, schema.as_deref(), &self.limits) {
                        Ok(c) => c,
                        Err(e) => return Ok(reject(ErrorCode::InvalidPolicy, e.to_string())),
                    };
                let pv = self.put_policy_version(
                    st,
                    out,
                    NewVersion {
                        domain,
                        policy_text,
                        schema: schema.as_deref(),
                        signature: *signature,
                        log_index,
                        timestamp_ms: *timestamp_ms,
                    },
                    compiled,
                );
                if *activate {
                    activate_version(st, out, domain, pv.version, log_index);
                }
                Ok(CommandResponse::Published(PolicyPublished {
                    domain: domain.clone(),
                    version: pv.version,
                    hash: pv.hash,
                    activated: *activate,
                    log_index,
                }))
            }
            Command::ActivatePolicy {
                domain, version, ..
            } => {
                if let Some(refusal) = in_rollout(st, domain) {
                    return Ok(refusal);
                }
                let Some(meta) = st.domains.get(domain) else {
                    return Ok(reject(
                        ErrorCode::NotFound,
                        format!("domain {domain:?} has no policy versions; publish one first"),
                    ));
                };
                if *version == 0 || *version > meta.latest_version {
                    return Ok(reject(
                        ErrorCode::NotFound,
                        format!(
                            "domain {domain:?} has versions 1..={}; there is no version {version}",
                            meta.latest_version
                        ),
                    ));
                }
                let previous = meta.active_version;
                activate_version(st, out, domain, *version, log_index);
                Ok(CommandResponse::Activated(PolicyActivated {
                    domain: domain.clone(),
                    version: *version,
                    previous,
                    log_index,
                }))
            }
            Command::Cosign {
                signer,
                size,
                root,
                signature,
            } => {
                let c = Cosign {
                    signer: *signer,
                    size: *size,
                    root,
                    signature,
                };
                self.cosign(read, c, cx, st, out, &mut None)
            }
            Command::Checkpoint {
                size,
                root,
                cosignatures,
            } => {
                // Each cosignature as if it were its signer's own Cosign
                // entry, in order; a refused one changes nothing and the
                // rest still count. The last response says where the
                // checkpoint stands.
                let mut last = reject(
                    ErrorCode::InvalidArgument,
                    "a checkpoint entry without cosignatures".into(),
                );
                let mut pending = None;
                for c in cosignatures {
                    let one = Cosign {
                        signer: c.node_id,
                        size: *size,
                        root,
                        signature: &c.signature,
                    };
                    last = self.cosign(read, one, cx, st, out, &mut pending)?;
                }
                Ok(last)
            }
            Command::StartRollout { plan, timestamp_ms } => {
                self.start_rollout(read, plan, log_index, *timestamp_ms, st, out)
            }
            Command::PromoteRollout {
                id,
                force,
                timestamp_ms,
            } => {
                let mut r = match current_rollout(st, id) {
                    Ok(r) => r,
                    Err(refusal) => return Ok(refusal),
                };
                if let Err(e) = r.check_promotable(*timestamp_ms, *force) {
                    return Ok(reject(ErrorCode::FailedPrecondition, e.to_string()));
                }
                for (domain, version) in r.promote(log_index, *timestamp_ms) {
                    activate_version(st, out, &domain, version, log_index);
                }
                out.writes.push(Write::Rollout(r.clone()));
                st.rollout = Some(r.clone());
                Ok(CommandResponse::Rollout(Box::new(r)))
            }
            Command::RollbackRollout { id, .. } => {
                let mut r = match current_rollout(st, id) {
                    Ok(r) => r,
                    Err(refusal) => return Ok(refusal),
                };
                if let Err(e) = r.check_rollbackable() {
                    return Ok(reject(ErrorCode::FailedPrecondition, e.to_string()));
                }
                for (domain, version) in r.roll_back(log_index) {
                    activate_version(st, out, &domain, version, log_index);
                }
                out.writes.push(Write::Rollout(r.clone()));
                st.rollout = Some(r.clone());
                Ok(CommandResponse::Rollout(Box::new(r)))
            }
            // Nothing to decide and nothing to write: only the applied
            // index moves, as for a blank entry.
            Command::Probe { probes, .. } => Ok(CommandResponse::Probed(*probes)),
        }
    }

    /// The compiled active (or candidate) version `version` of `domain`.
    fn compiled<R: StateRead>(
        &mut self,
        read: &R,
        domain: &str,
        version: u64,
    ) -> Result<(Arc<CompiledPolicy>, Digest), CompileError> {
        let key = (domain.to_string(), version);
        if let Some(c) = self.compiled.get(&key) {
            return Ok(c.clone());
        }
        let pv = read
            .policy(domain, version)
            .map_err(|e| CompileError::Local(MachineError::Read(e.to_string())))?
            .ok_or_else(|| {
                CompileError::Local(MachineError::Corrupt {
                    what: format!("policies/{domain}/{version}"),
                    message: "active version is missing".into(),
                })
            })?;
        // Invariant 6: a stored policy whose text no longer matches its
        // content hash has been altered on this disk; refuse to evaluate it.
        if policy_content_hash(&pv.policy_text, pv.schema.as_deref()) != pv.hash {
            return Err(CompileError::Local(MachineError::Corrupt {
                what: format!("policies/{domain}/{version}"),
                message: "policy text does not match its content hash".into(),
            }));
        }
        let c = CompiledPolicy::compile(&pv.policy_text, pv.schema.as_deref(), &self.limits)
            .map_err(|e| {
                CompileError::Policy(format!(
                    "active policy {domain} v{version} does not compile here: {e}"
                ))
            })?;
        let entry = (Arc::new(c), pv.hash);
        self.compiled.insert(key, entry.clone());
        Ok(entry)
    }

    /// Stores a new, inactive version of a domain (already compiled).
    fn put_policy_version(
        &mut self,
        st: &mut GovernanceState,
        out: &mut Out,
        v: NewVersion<'_>,
        compiled: CompiledPolicy,
    ) -> PolicyVersion {
        let meta = st.domains.entry(v.domain.to_string()).or_default();
        let version = meta.latest_version + 1;
        meta.latest_version = version;
        let meta = *meta;
        let pv = PolicyVersion {
            domain: v.domain.to_string(),
            version,
            policy_text: v.policy_text.to_string(),
            schema: v.schema.map(str::to_string),
            hash: policy_content_hash(v.policy_text, v.schema),
            log_index: v.log_index,
            published_at_ms: v.timestamp_ms,
            signature: v.signature,
        };
        out.writes.push(Write::Policy(pv.clone()));
        out.writes.push(Write::Domain {
            domain: v.domain.to_string(),
            meta,
        });
        self.compiled.insert(
            (v.domain.to_string(), version),
            (Arc::new(compiled), pv.hash),
        );
        pv
    }

    /// Starts a rollout: every candidate becomes a new, inactive version of
    /// its domain and the first stage goes into shadow, all at `log_index`.
    /// Refused as a whole (nothing written) if any part is invalid.
    fn start_rollout<R: StateRead>(
        &mut self,
        read: &R,
        plan: &RolloutPlan,
        log_index: u64,
        timestamp_ms: u64,
        st: &mut GovernanceState,
        out: &mut Out,
    ) -> Result<CommandResponse, MachineError> {
        if let Err(e) = plan.check(&self.limits) {
            return Ok(reject(ErrorCode::InvalidArgument, e.to_string()));
        }
        if let Some(r) = st.rollout.as_ref().filter(|r| r.is_active()) {
            return Ok(reject(
                ErrorCode::FailedPrecondition,
                format!(
                    "rollout {:?} is still in progress; promote it to the end or roll it back first",
                    r.id
                ),
            ));
        }
        if read
            .rollout_exists(&plan.id)
            .map_err(|e| MachineError::Read(e.to_string()))?
        {
            return Ok(reject(
                ErrorCode::FailedPrecondition,
                format!(
                    "a rollout with id {:?} already exists; choose a new id",
                    plan.id
                ),
            ));
        }
        // Check everything before writing anything.
        let mut compiled = Vec::new();
        for c in &plan.candidates {
            let Some(active) = st.domains.get(&c.domain).and_then(|m| m.active_version) else {
                return Ok(reject(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "domain {:?} has no active version to shadow against; publish and                          activate one first",
                        c.domain
                    ),
                ));
            };
            if let Some(sig) = &c.signature
                && let Err(e) = sig.verify(&c.policy_text, c.schema.as_deref())
            {
                return Ok(reject(
                    ErrorCode::InvalidArgument,
                    format!("candidate for {:?}: {e}", c.domain),
                ));
            }
            match CompiledPolicy::compile(&c.policy_text, c.schema.as_deref(), &self.limits) {
                Ok(p) => compiled.push((c, active, p)),
                Err(e) => {
                    return Ok(reject(
                        ErrorCode::InvalidPolicy,
                        format!("candidate for {:?}: {e}", c.domain),
                    ));
                }
            }
        }
        let mut versions = BTreeMap::new();
        for (c, active, p) in compiled {
            let pv = self.put_policy_version(
                st,
                out,
                NewVersion {
                    domain: &c.domain,
                    policy_text: &c.policy_text,
                    schema: c.schema.as_deref(),
                    signature: c.signature,
                    log_index,
                    timestamp_ms,
                },
                p,
            );
            versions.insert(c.domain.clone(), (active, pv.version, pv.hash));
        }
        let r = Rollout::start(plan, log_index, timestamp_ms, |d| {
            versions.get(d).copied().unwrap_or_default()
        });
        out.writes.push(Write::Rollout(r.clone()));
        out.writes.push(Write::RolloutLatest(r.id.clone()));
        st.rollout = Some(r.clone());
        Ok(CommandResponse::Rollout(Box::new(r)))
    }

    /// Applies a voter's checkpoint cosignature. The checks use only the
    /// entry and replicated state (the applied membership's keys), so every
    /// replica accepts or refuses it alike; the root comparison is each
    /// node's own evidence of agreement (invariants 3 and 4).
    ///
    /// `pending` carries the checkpoint as the entry's earlier cosignatures
    /// left it (a `Checkpoint` entry holds several; they are among this
    /// entry's writes, not yet readable).
    fn cosign<R: StateRead>(
        &mut self,
        read: &R,
        c: Cosign<'_>,
        cx: Context<'_>,
        st: &mut GovernanceState,
        out: &mut Out,
        pending: &mut Option<CheckpointState>,
    ) -> Result<CommandResponse, MachineError> {
        let Cosign {
            signer,
            size,
            root,
            signature,
        } = c;
        if size == 0 || size > st.head.count {
            return Ok(reject(
                ErrorCode::InvalidArgument,
                format!(
                    "cosignature for size {size}; the log has {} records",
                    st.head.count
                ),
            ));
        }
        // A checkpoint is judged under the voters of the membership applied
        // when its first cosignature was (recorded in it), whatever the
        // membership is now.
        let earlier = match pending.as_ref().filter(|c| c.checkpoint.size == size) {
            Some(c) => Some(c.clone()),
            None => read
                .checkpoint(size)
                .map_err(|e| MachineError::Read(e.to_string()))?,
        };
        let mut cp: CheckpointState = earlier.unwrap_or_else(|| CheckpointState {
            checkpoint: Checkpoint {
                cluster_id: self.cluster_id.clone(),
                size,
                root: *root,
                cosignatures: Vec::new(),
                voters: cx.voters.iter().map(|v| v.node_id).collect(),
            },
            finalized_at: None,
            voters: cx.voters.to_vec(),
        });
        let judges = cp.judges(cx.voters);
        let Some(key) = judges
            .iter()
            .find(|v| v.node_id == signer)
            .map(|v| v.public_key)
        else {
            return Ok(reject(
                ErrorCode::InvalidArgument,
                format!(
                    "cosignature from node {signer}, which is not a voter of the membership \
                     the checkpoint at size {size} is judged under"
                ),
            ));
        };
        let message = checkpoint_message(&self.cluster_id, size, root);
        if let Err(e) = key.verify(&message, signature) {
            return Ok(reject(
                ErrorCode::InvalidArgument,
                format!("cosignature of node {signer} at size {size}: {e}"),
            ));
        }
        let own = own_root(read, st, size)?;
        if own != *root {
            // Invariant 3: a voter that recomputed every decision reached a
            // different root. This node cannot tell whose history is wrong,
            // so it contains (DENY DIVERGENCE) and never cosigns this size.
            // The evidence is node-local and kept across restarts.
            if st.divergence.is_none() {
                let d = Divergence {
                    size,
                    signer,
                    their_root: *root,
                    own_root: own,
                    log_index: cx.log_index,
                };
                out.writes.push(Write::Divergence(d.clone()));
                st.divergence = Some(d);
            }
            return Ok(reject(
                ErrorCode::Contained,
                format!("root at size {size} differs from this node's; divergence"),
            ));
        }
        let added = cp.add(signer, *signature);
        let cosigners = cp
            .checkpoint
            .cosignatures
            .iter()
            .filter(|c| judges.iter().any(|v| v.node_id == c.node_id))
            .count();
        let quorum = quorate_core::majority(judges.len());
        let became_final = added && !cp.is_final() && cosigners >= quorum;
        if became_final {
            cp.finalized_at = Some(cx.log_index);
            st.proof.last_final = st.proof.last_final.max(size);
        }
        if added {
            st.proof.last_checkpoint = st.proof.last_checkpoint.max(size);
            out.writes.push(Write::Checkpoint(cp.clone()));
            *pending = Some(cp.clone());
        }
        out.progress = Some(CheckpointProgress {
            size,
            root: *root,
            cosigners: cp.cosigners(),
            is_final: cp.is_final(),
        });
        Ok(CommandResponse::Cosigned(Cosigned {
            size,
            cosigners,
            became_final,
        }))
    }

    #[allow(clippy::too_many_arguments)] // reason: the request plus the entry's apply context.
    fn authorize_one<R: StateRead>(
        &mut self,
        read: &R,
        req: &AuthorizeRequest,
        log_index: u64,
        timestamp_ms: u64,
        st: &mut GovernanceState,
        out: &mut Out,
        fresh: &mut HashMap<(String, String), DecisionRecord>,
    ) -> Result<AuthorizeOutcome, MachineError> {
        let rkey = (req.domain.clone(), req.request_id.clone());
        // Idempotency: a request id already decided returns that decision and
        // appends nothing.
        if let Some(rec) = fresh.get(&rkey) {
            return Ok(AuthorizeOutcome {
                record: rec.clone(),
                replayed: true,
            });
        }
        let read_err = |e: R::Error| MachineError::Read(e.to_string());
        if let Some(idx) = read
            .request_index(&req.domain, &req.request_id)
            .map_err(read_err)?
        {
            let rec =
                read.decision(idx)
                    .map_err(read_err)?
                    .ok_or_else(|| MachineError::Corrupt {
                        what: format!("decisions/{idx}"),
                        message: "indexed by request id but missing".into(),
                    })?;
            // Invariant 6: a replay answers from disk, so the stored record
            // must still be the one that was decided. One that no longer
            // matches its hash fails the apply on this node alone (its
            // peers hold the intact record): it stops and contains instead
            // of serving an altered decision.
            if !rec.hash_is_valid() || rec.index != idx {
                return Err(MachineError::Corrupt {
                    what: format!("decisions/{idx}"),
                    message: "a replayed record does not match its hash".into(),
                });
            }
            return Ok(AuthorizeOutcome {
                record: rec,
                replayed: true,
            });
        }
        let position = Position {
            index: st.head.count + 1,
            log_index,
            timestamp_ms,
            prev_hash: st.head.hash,
        };
        let meta = st.domains.get(&req.domain).copied();
        let record = match meta {
            None => decide_with_shadow(req, DomainState::Unknown, None, position),
            Some(DomainMeta {
                active_version: None,
                ..
            }) => decide_with_shadow(req, DomainState::NoActiveVersion, None, position),
            Some(DomainMeta {
                active_version: Some(v),
                ..
            }) => match self.compiled(read, &req.domain, v) {
                Ok((compiled, hash)) => {
                    // While the domain is in a rollout stage's shadow, the
                    // candidate is evaluated too and recorded (not enforced).
                    let candidate = st
                        .rollout
                        .as_ref()
                        .and_then(|r| r.shadow_for(&req.domain))
                        .map(|d| (d.candidate_version, d.candidate_hash));
                    let shadow = match candidate {
                        None => None,
                        Some((cv, ch)) => match self.compiled(read, &req.domain, cv) {
                            Ok((c, _)) => Some((c, cv, ch)),
                            Err(CompileError::Local(e)) => return Err(e),
                            Err(CompileError::Policy(m)) => {
                                return Err(MachineError::Corrupt {
                                    what: format!("policies/{}/{cv}", req.domain),
                                    message: m,
                                });
                            }
                        },
                    };
                    let rollout_id = st.rollout.as_ref().map_or("", |r| r.id.as_str());
                    decide_with_shadow(
                        req,
                        DomainState::Active(ActivePolicy {
                            version: v,
                            hash,
                            compiled: &compiled,
                        }),
                        shadow.as_ref().map(|(c, version, hash)| ShadowPolicy {
                            rollout_id,
                            version: *version,
                            hash: *hash,
                            compiled: c,
                        }),
                        position,
                    )
                }
                // Only a policy that every replica fails to compile the same
                // way becomes a recorded decision. Any other failure (a read
                // error, a missing or altered row) is local to this node:
                // fail the apply so the node stops and contains, instead of
                // writing a record its peers do not have (invariant 3).
                Err(CompileError::Policy(_)) => {
                    let hash = read
                        .policy(&req.domain, v)
                        .map_err(read_err)?
                        .map(|p| p.hash)
                        .ok_or_else(|| MachineError::Corrupt {
                            what: format!("policies/{}/{v}", req.domain),
                            message: "active version is missing".into(),
                        })?;
                    decide_with_shadow(
                        req,
                        DomainState::Unverifiable { version: v, hash },
                        None,
                        position,
                    )
                }
                Err(CompileError::Local(e)) => return Err(e),
            },
        };
        #[cfg(feature = "fault-injection")]
        let record = if self.invert_decisions {
            invert(record)
        } else {
            record
        };
        for (level, index, hash) in st.proof.frontier.append(record_leaf(&record)) {
            out.writes.push(Write::MerkleNode { level, index, hash });
        }
        out.writes.push(Write::Decision(record.clone()));
        out.writes.push(Write::RequestId {
            domain: req.domain.clone(),
            request_id: req.request_id.clone(),
            index: record.index,
        });
        st.head = ChainHead {
            count: record.index,
            hash: record.hash,
        };
        fresh.insert(rkey, record.clone());
        Ok(AuthorizeOutcome {
            record,
            replayed: false,
        })
    }
}

#[cfg(feature = "fault-injection")]
fn invert(r: DecisionRecord) -> DecisionRecord {
    use quorate_core::Decision;
    let mut r = r;
    r.decision = match r.decision {
        Decision::Allow => Decision::Deny,
        Decision::Deny => Decision::Allow,
    };
    r.seal()
}

/// What one command has written so far.
#[derive(Default)]
struct Out {
    writes: Vec<Write>,
    progress: Option<CheckpointProgress>,
}

/// One cosignature as a command names it.
#[derive(Clone, Copy)]
struct Cosign<'a> {
    signer: u64,
    size: u64,
    root: &'a Digest,
    signature: &'a Signature,
}

/// A policy version about to be stored.
struct NewVersion<'a> {
    domain: &'a str,
    policy_text: &'a str,
    schema: Option<&'a str>,
    signature: Option<PolicySignature>,
    log_index: u64,
    timestamp_ms: u64,
}

/// Makes `version` the active version of `domain` at `log_index`.
fn activate_version(
    st: &mut GovernanceState,
    out: &mut Out,
    domain: &str,
    version: u64,
    log_index: u64,
) {
    let meta = st.domains.entry(domain.to_string()).or_default();
    meta.active_version = Some(version);
    let meta = *meta;
    out.writes.push(Write::Domain {
        domain: domain.to_string(),
        meta,
    });
    out.writes.push(Write::Activation(Activation {
        domain: domain.to_string(),
        version,
        log_index,
    }));
}

/// Perfect Merkle nodes through [`StateRead`].
struct Nodes<'a, R>(&'a R);

impl<R: StateRead> NodeSource for Nodes<'_, R> {
    type Error = MachineError;

    fn node(&self, level: u32, index: u64) -> Result<Digest, MachineError> {
        self.0
            .merkle_node(level, index)
            .map_err(|e| MachineError::Read(e.to_string()))?
            .ok_or_else(|| MachineError::Corrupt {
                what: format!("merkle/{level}/{index}"),
                message: "perfect node missing".into(),
            })
    }
}

/// The Merkle root of the first `size` records as this node computed it.
fn own_root<R: StateRead>(
    read: &R,
    st: &GovernanceState,
    size: u64,
) -> Result<Digest, MachineError> {
    if size == st.proof.frontier.size() {
        return Ok(st.proof.frontier.root());
    }
    merkle::root_at(&Nodes(read), size).map_err(|e| match e {
        merkle::ProofError::Source(s) => s,
        merkle::ProofError::Merkle(m) => MachineError::Corrupt {
            what: "merkle".into(),
            message: m.to_string(),
        },
    })
}

fn reject(code: ErrorCode, message: String) -> CommandResponse {
    CommandResponse::Rejected(Rejection { code, message })
}

/// A domain in an active rollout changes version only through the rollout
/// (promote, rollback): a manual activation would silently undo a stage
/// or shadow against the wrong version.
fn in_rollout(st: &GovernanceState, domain: &str) -> Option<CommandResponse> {
    let r = st.rollout.as_ref().filter(|r| r.is_active())?;
    r.domains().any(|d| d.domain == domain).then(|| {
        reject(
            ErrorCode::FailedPrecondition,
            format!(
                "domain {domain:?} is in rollout {:?}; promote or roll back the rollout instead                  of activating by hand",
                r.id
            ),
        )
    })
}

/// The rollout a promote or rollback names ("" = the latest), as a copy to
/// change; a refusal if there is none or it is not the latest.
fn current_rollout(st: &GovernanceState, id: &str) -> Result<Rollout, CommandResponse> {
    match &st.rollout {
        Some(r) if id.is_empty() || r.id == id => Ok(r.clone()),
        Some(r) => Err(reject(
            ErrorCode::FailedPrecondition,
            RolloutError::State {
                id: id.to_string(),
                message: format!("is not the latest rollout ({:?} is)", r.id),
            }
            .to_string(),
        )),
        None => Err(reject(
            ErrorCode::NotFound,
            "no rollout has been started; start one with `quorate rollout start --plan FILE`"
                .into(),
        )),
    }
}
