//! The offline verifier of a log export (FORMATS.md §11): a streaming,
//! IO-free check that a `quorate log export` is one honest history.
//!
//! Feed it the export one line at a time ([`ExportVerifier::feed_line`]),
//! then call [`ExportVerifier::finish`]. It keeps O(domains + policy
//! versions + log₂ records) state, so a log of any length verifies in
//! constant memory. The first problem found is returned as a
//! [`VerifyError`] naming the 1-based line, the record index when the line
//! is a record, and exactly what is wrong; verification stops there.
//!
//! What it proves, given a trust file: every record is hash-chained to its
//! predecessor and hashes to its contents; every record names the policy
//! version the export's own publications and activations say was active at
//! its log position; every checkpoint's root is the Merkle root of the
//! records before it and is cosigned by a majority of the trusted voters;
//! every signed policy was signed by its key (a trusted publisher's, when
//! the trust file lists publishers). With a [`Reevaluator`] it also
//! recomputes every decision (invariant 3) and demands identical records.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::chain::{Chain, ChainError, Finality};
use crate::export::{Activation, EXPORT_FORMAT, ExportHeader, ExportLine};
use crate::proof::{Checkpoint, ProofError, PublicKey, TrustFile};
use crate::reason::DenyReason;
use crate::record::{
    AuthorizeRequest, Decision, DecisionRecord, Digest, PolicyVersion, policy_content_hash,
};

pub mod parallel;

/// The policy state of a record's domain at its log position, as the export
/// shows it.
#[derive(Debug, Clone, Copy)]
pub enum PolicyAt<'a> {
    /// No policy version of the domain was published before the record.
    UnknownDomain,
    /// Versions were published but none was activated before the record.
    NoActiveVersion,
    /// The version active at the record's log position.
    Active(&'a PolicyVersion),
}

/// Recomputes a decision. Implemented with Cedar by `quorate-policy`; this
/// crate must not depend on Cedar.
pub trait Reevaluator {
    /// The record the decision function produces for `record.request` at
    /// `record`'s position (index, log index, timestamp, prev hash) under
    /// `policy`, sealed. When the record carries a shadow outcome,
    /// `candidate` is the rollout candidate it names (already checked to be
    /// published with that hash) and the result carries the outcome under
    /// it, for `record.shadow`'s rollout id. The verifier demands that the
    /// result equals `record` in every field.
    fn reevaluate(
        &mut self,
        record: &DecisionRecord,
        policy: PolicyAt<'_>,
        candidate: Option<&PolicyVersion>,
    ) -> DecisionRecord;
}

/// A verification failure: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// 1-based line number in the export. Failures found by
    /// [`ExportVerifier::finish`] that concern the header name line 1.
    pub line: u64,
    /// The record index, when the failing line is a decision record that
    /// parsed.
    pub record: Option<u64>,
    /// Boxed: errors are rare, and a small `Result` keeps the per-line
    /// path fast.
    pub problem: Box<Problem>,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            Some(r) => write!(f, "line {} (record {r}): {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.problem)
    }
}

/// Exactly what is wrong with a line (or with the export as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("the trust file is unusable: {0}")]
    Trust(ProofError),
    #[error("not a valid export line: {0}")]
    Malformed(String),
    #[error("the export is empty; line 1 must be a header")]
    Empty,
    #[error("line 1 must be a header, found a {0} line")]
    MissingHeader(&'static str),
    #[error("export format is {found:?}; this verifier reads {EXPORT_FORMAT:?}")]
    Format { found: String },
    #[error("export is of cluster {found:?}; the trust file is for cluster {expected:?}")]
    Cluster { expected: String, found: String },
    #[error("a second header; only line 1 is a header")]
    ExtraHeader,
    #[error(
        "log_index {found} is below log_index {previous} of an earlier line; lines must be in log order"
    )]
    LogOrder { previous: u64, found: u64 },
    #[error(
        "log_index {log_index} is also that of the preceding {previous} line; one Raft entry carries one command, so only the records of one batch, a publication and its own activation, a rollout's candidates, or one rollout step's activations share a log index"
    )]
    SharedLogIndex {
        log_index: u64,
        previous: &'static str,
    },
    #[error(
        "policy {domain:?} version {version}: hash {found} does not match its text and schema (they hash to {computed})"
    )]
    PolicyHash {
        domain: String,
        version: u64,
        found: Digest,
        computed: Digest,
    },
    #[error(
        "policy {domain:?} version {found}: expected version {expected} (versions are dense per domain from 1)"
    )]
    PolicyVersion {
        domain: String,
        expected: u64,
        found: u64,
    },
    #[error(
        "the shadow outcome names candidate {domain:?} version {version} with hash {hash}, which is not published earlier in the export"
    )]
    ShadowCandidate {
        domain: String,
        version: u64,
        hash: Digest,
    },
    #[error("policy {domain:?} version {version}: {source}")]
    PolicySignature {
        domain: String,
        version: u64,
        source: ProofError,
    },
    #[error(
        "activation of {domain:?} version {version}, which is not published earlier in the export (latest published version: {latest})"
    )]
    ActivationUnpublished {
        domain: String,
        version: u64,
        latest: u64,
    },
    /// A broken link, a checkpoint the records do not produce, or
    /// cosignatures that do not verify (the one chain verifier's finding).
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("decision {decision:?} with reason {reason}: {message}")]
    DecisionReason {
        decision: Decision,
        reason: String,
        message: &'static str,
    },
    #[error(
        "domain {domain:?} {state} at log_index {log_index}, so {expected}; the record has {found}"
    )]
    PolicyState {
        domain: String,
        log_index: u64,
        state: String,
        expected: String,
        found: String,
    },
    #[error(
        "re-evaluation disagrees on {field}: the record has {recorded}, re-evaluation gives {recomputed}"
    )]
    Reevaluation {
        field: &'static str,
        recorded: String,
        recomputed: String,
    },
    #[error(
        "re-evaluating this record failed (the re-evaluator panicked); nothing from here on is verified"
    )]
    ReevaluationStopped,
    #[error("checkpoint at size {size}: {source}")]
    CheckpointSignature { size: u64, source: ProofError },
    #[error("header says the export has {header} records; it has {seen}")]
    HeaderRecords { header: u64, seen: u64 },
    #[error("header says the chain head is {header}; the last record's hash is {seen}")]
    HeaderHead { header: Digest, seen: Digest },
}

/// What a verified export contains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub cluster_id: String,
    /// The node that wrote the export (from the header; not authenticated).
    pub node_id: u64,
    /// Decision records verified.
    pub records: u64,
    /// Hash of the last record (`GENESIS_HASH` when there are none).
    pub head: Digest,
    /// Merkle root of all the records (the root a checkpoint at size
    /// `records` would carry).
    pub root: Digest,
    /// Policy versions published.
    pub policies: u64,
    /// Of those, how many carried a publisher signature (all verified).
    pub signed_policies: u64,
    pub activations: u64,
    /// Checkpoints verified (root and quorum of cosignatures).
    pub checkpoints: u64,
    /// Size of the last checkpoint, if any.
    pub last_checkpoint_size: Option<u64>,
    /// Records re-evaluated by the [`Reevaluator`] (0 without one).
    pub reevaluated: u64,
    /// Records after the last checkpoint: hash-chained and checked, but not
    /// yet covered by a cosigned root. 0 means the whole log is covered.
    pub uncovered_tail: u64,
}

/// The last line that carried a log index.
struct LastEntry {
    log_index: u64,
    kind: LastKind,
}

enum LastKind {
    Start,
    Records,
    Policy { domain: String, version: u64 },
    Activation,
}

impl LastKind {
    fn name(&self) -> &'static str {
        match self {
            LastKind::Start => "header",
            LastKind::Records => "record",
            LastKind::Policy { .. } => "policy",
            LastKind::Activation => "activation",
        }
    }
}

/// The line being ordered: a record, or a policy or activation of (domain,
/// version).
#[derive(Clone, Copy)]
enum Entry<'a> {
    Record,
    Policy(&'a str, u64),
    Activation(&'a str, u64),
}

/// Per-domain policy state: the versions published so far and the active one.
#[derive(Default)]
struct DomainPolicies {
    /// `versions[v - 1]` is version `v`.
    versions: Vec<PolicyVersion>,
    active: Option<u64>,
}

/// Whether and where decisions are recomputed.
enum Reevaluation<'a> {
    Off,
    /// On the verifying thread, record by record.
    Inline(Box<dyn Reevaluator + 'a>),
    /// On worker threads, in batches (see [`parallel`]).
    Pool(parallel::Pool),
}

/// The streaming verifier. See the module documentation.
pub struct ExportVerifier<'a> {
    trust: &'a TrustFile,
    reevaluation: Reevaluation<'a>,
    /// Set by `new` when the trust file fails `TrustFile::check`; reported
    /// for line 1.
    trust_problem: Option<ProofError>,
    /// The first error returned; every later call returns it again.
    failed: Option<VerifyError>,
    line: u64,
    header: Option<ExportHeader>,
    last_entry: LastEntry,
    domains: HashMap<String, DomainPolicies>,
    /// The records verified so far, linked and hashed (the one chain
    /// verifier, shared with the store and snapshot checks).
    chain: Chain,
    policies: u64,
    signed_policies: u64,
    activations: u64,
    checkpoints: u64,
    last_checkpoint_size: Option<u64>,
    reevaluated: u64,
}

impl fmt::Debug for ExportVerifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportVerifier")
            .field("cluster_id", &self.trust.cluster_id)
            .field("line", &self.line)
            .field("records", &self.chain.records())
            .field(
                "reevaluating",
                &!matches!(self.reevaluation, Reevaluation::Off),
            )
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<'a> ExportVerifier<'a> {
    /// A verifier for an export of `trust.cluster_id`. With `reevaluator`,
    /// every decision is recomputed and must match its record exactly.
    /// A trust file that fails [`TrustFile::check`] makes line 1 fail.
    pub fn new(
        trust: &'a TrustFile,
        reevaluator: Option<Box<dyn Reevaluator + 'a>>,
    ) -> ExportVerifier<'a> {
        let reevaluation = match reevaluator {
            Some(r) => Reevaluation::Inline(r),
            None => Reevaluation::Off,
        };
        ExportVerifier::with(trust, reevaluation)
    }

    /// A verifier that recomputes every decision on `pool`'s threads.
    /// It reports exactly what [`ExportVerifier::new`] with one of the
    /// pool's re-evaluators would: the first problem by line.
    pub fn with_pool(trust: &'a TrustFile, pool: parallel::Pool) -> ExportVerifier<'a> {
        ExportVerifier::with(trust, Reevaluation::Pool(pool))
    }

    fn with(trust: &'a TrustFile, reevaluation: Reevaluation<'a>) -> ExportVerifier<'a> {
        ExportVerifier {
            trust,
            reevaluation,
            trust_problem: trust.check().err(),
            failed: None,
            line: 0,
            header: None,
            last_entry: LastEntry {
                log_index: 0,
                kind: LastKind::Start,
            },
            domains: HashMap::new(),
            chain: Chain::new(),
            policies: 0,
            signed_policies: 0,
            activations: 0,
            checkpoints: 0,
            last_checkpoint_size: None,
            reevaluated: 0,
        }
    }

    /// Decision records verified so far (for a progress display).
    pub fn records_seen(&self) -> u64 {
        self.chain.records()
    }

    /// Lines fed so far.
    pub fn lines_seen(&self) -> u64 {
        self.line
    }

    /// Verifies the next line of the export (without its line terminator).
    /// After an error the verifier is spent: every later call returns the
    /// same error.
    pub fn feed_line(&mut self, line: &str) -> Result<(), VerifyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.line += 1;
        let mut result = self.check_line(line);
        if result.is_err()
            && let Reevaluation::Pool(pool) = &mut self.reevaluation
            && let Err(earlier) = pool.drain()
        {
            // A record the pool has not yet reported on is on an earlier
            // line than this one: its failure, if any, is the first.
            result = Err(earlier);
        }
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn fail(&self, record: Option<u64>, problem: Problem) -> VerifyError {
        VerifyError {
            line: self.line,
            record,
            problem: Box::new(problem),
        }
    }

    fn check_line(&mut self, text: &str) -> Result<(), VerifyError> {
        let parsed =
            parse_line(text).map_err(|e| self.fail(None, Problem::Malformed(e.to_string())))?;
        if self.line == 1 {
            if let Some(e) = self.trust_problem.clone() {
                return Err(self.fail(None, Problem::Trust(e)));
            }
            return match parsed {
                ExportLine::Header(h) => self.header(h),
                other => Err(self.fail(None, Problem::MissingHeader(kind(&other)))),
            };
        }
        match parsed {
            ExportLine::Header(_) => Err(self.fail(None, Problem::ExtraHeader)),
            ExportLine::Policy(p) => self.policy(p),
            ExportLine::Activation(a) => self.activation(a),
            ExportLine::Record(r) => self.record(r),
            ExportLine::Checkpoint(c) => self.checkpoint(&c),
        }
    }

    fn header(&mut self, h: ExportHeader) -> Result<(), VerifyError> {
        if h.format != EXPORT_FORMAT {
            return Err(self.fail(None, Problem::Format { found: h.format }));
        }
        if h.cluster_id != self.trust.cluster_id {
            return Err(self.fail(
                None,
                Problem::Cluster {
                    expected: self.trust.cluster_id.clone(),
                    found: h.cluster_id,
                },
            ));
        }
        self.header = Some(h);
        Ok(())
    }

    /// Log indexes never decrease across policy, activation and record
    /// lines, and lines share a log index only as one Raft entry can: the
    /// records of one batch, a publication and its own activation, the
    /// candidates a rollout start publishes (one per domain), or the
    /// activations of one rollout promote or rollback.
    fn log_order(
        &mut self,
        log_index: u64,
        record: Option<u64>,
        this: Entry<'_>,
    ) -> Result<(), VerifyError> {
        let last = &self.last_entry;
        if log_index < last.log_index {
            return Err(self.fail(
                record,
                Problem::LogOrder {
                    previous: last.log_index,
                    found: log_index,
                },
            ));
        }
        if log_index == last.log_index {
            let same_entry = match (&last.kind, this) {
                (LastKind::Start, _) | (LastKind::Records, Entry::Record) => true,
                (LastKind::Policy { domain, version }, Entry::Activation(d, v)) => {
                    domain == d && *version == v
                }
                (LastKind::Policy { domain, .. }, Entry::Policy(d, _)) => domain != d,
                (LastKind::Activation, Entry::Activation(..)) => true,
                _ => false,
            };
            if !same_entry {
                return Err(self.fail(
                    record,
                    Problem::SharedLogIndex {
                        log_index,
                        previous: last.kind.name(),
                    },
                ));
            }
        }
        let kind = match this {
            Entry::Record => LastKind::Records,
            Entry::Policy(domain, version) => LastKind::Policy {
                domain: domain.to_string(),
                version,
            },
            Entry::Activation(..) => LastKind::Activation,
        };
        self.last_entry = LastEntry { log_index, kind };
        Ok(())
    }

    fn policy(&mut self, p: PolicyVersion) -> Result<(), VerifyError> {
        self.log_order(p.log_index, None, Entry::Policy(&p.domain, p.version))?;
        let computed = policy_content_hash(&p.policy_text, p.schema.as_deref());
        if computed != p.hash {
            return Err(self.fail(
                None,
                Problem::PolicyHash {
                    domain: p.domain,
                    version: p.version,
                    found: p.hash,
                    computed,
                },
            ));
        }
        let expected = self
            .domains
            .get(&p.domain)
            .map_or(1, |d| d.versions.len() as u64 + 1);
        if p.version != expected {
            return Err(self.fail(
                None,
                Problem::PolicyVersion {
                    domain: p.domain,
                    expected,
                    found: p.version,
                },
            ));
        }
        if let Some(sig) = &p.signature {
            let checked = if self.trust.publishers.is_empty() {
                sig.verify(&p.policy_text, p.schema.as_deref())
            } else {
                self.trust
                    .verify_policy_signature(sig, &p.policy_text, p.schema.as_deref())
            };
            if let Err(source) = checked {
                return Err(self.fail(
                    None,
                    Problem::PolicySignature {
                        domain: p.domain,
                        version: p.version,
                        source,
                    },
                ));
            }
            self.signed_policies += 1;
        }
        self.policies += 1;
        match self.domains.get_mut(&p.domain) {
            Some(d) => d.versions.push(p),
            None => {
                let domain = p.domain.clone();
                self.domains.insert(
                    domain,
                    DomainPolicies {
                        versions: vec![p],
                        active: None,
                    },
                );
            }
        }
        Ok(())
    }

    fn activation(&mut self, a: Activation) -> Result<(), VerifyError> {
        self.log_order(a.log_index, None, Entry::Activation(&a.domain, a.version))?;
        let latest = self
            .domains
            .get(&a.domain)
            .map_or(0, |d| d.versions.len() as u64);
        match self.domains.get_mut(&a.domain) {
            Some(d) if a.version >= 1 && a.version <= latest => {
                d.active = Some(a.version);
                self.activations += 1;
                Ok(())
            }
            _ => Err(self.fail(
                None,
                Problem::ActivationUnpublished {
                    domain: a.domain,
                    version: a.version,
                    latest,
                },
            )),
        }
    }

    fn record(&mut self, r: DecisionRecord) -> Result<(), VerifyError> {
        let at = Some(r.index);
        // Index first, then log order, then the link and the hash: a record
        // out of sequence is reported as that, whatever else is wrong.
        if let Err(e @ ChainError::RecordIndex { .. }) = self.chain.check(&r) {
            return Err(self.fail(at, e.into()));
        }
        self.log_order(r.log_index, at, Entry::Record)?;
        self.chain.check(&r).map_err(|e| self.fail(at, e.into()))?;
        check_decision_reason(&r).map_err(|p| self.fail(at, p))?;
        let policy = policy_at(&self.domains, &r.request.domain);
        check_policy_fields(&r, policy).map_err(|p| self.fail(at, p))?;
        let candidate = match &r.shadow {
            None => None,
            Some(s) => Some(
                published(&self.domains, &r.request.domain, s.candidate_version)
                    .filter(|p| p.hash == s.candidate_hash)
                    .ok_or_else(|| {
                        self.fail(
                            at,
                            Problem::ShadowCandidate {
                                domain: r.request.domain.clone(),
                                version: s.candidate_version,
                                hash: s.candidate_hash,
                            },
                        )
                    })?,
            ),
        };
        match &mut self.reevaluation {
            Reevaluation::Off => {}
            Reevaluation::Inline(re) => {
                let recomputed = re.reevaluate(&r, policy, candidate);
                if let Some((field, recorded, recomputed)) = first_difference(&r, &recomputed) {
                    return Err(self.fail(
                        at,
                        Problem::Reevaluation {
                            field,
                            recorded,
                            recomputed,
                        },
                    ));
                }
                self.reevaluated += 1;
            }
            Reevaluation::Pool(_) => {}
        }
        self.chain.push(&r).map_err(|e| self.fail(at, e.into()))?;
        if let Reevaluation::Pool(pool) = &mut self.reevaluation {
            // Everything else about the record verified; its decision is
            // recomputed on a worker and reported by `drain`.
            pool.submit(self.line, r, policy, candidate)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, c: &Checkpoint) -> Result<(), VerifyError> {
        // Which voters judge it is the trust file's to say (its voter set
        // covering the size); everything else is the chain's rule.
        let judges = self.trust.judges(c).map_err(|source| {
            self.fail(
                None,
                Problem::CheckpointSignature {
                    size: c.size,
                    source,
                },
            )
        })?;
        let keyed: Vec<(u64, Option<&PublicKey>)> = judges
            .iter()
            .map(|id| (*id, self.trust.node_key(*id)))
            .collect();
        self.chain
            .checkpoint(c, Some(&self.trust.cluster_id), &keyed, Finality::Final)
            .map_err(|e| self.fail(None, e.into()))?;
        self.checkpoints += 1;
        self.last_checkpoint_size = Some(c.size);
        Ok(())
    }

    /// Ends verification: the header's record count and chain head must be
    /// what the export contained.
    pub fn finish(mut self) -> Result<ExportSummary, VerifyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if let Reevaluation::Pool(pool) = &mut self.reevaluation {
            // Every record's re-evaluation, before any check of the whole.
            self.reevaluated = pool.drain()?;
        }
        let at_header = |problem| VerifyError {
            line: 1,
            record: None,
            problem: Box::new(problem),
        };
        let Some(header) = self.header else {
            return Err(at_header(match self.trust_problem {
                Some(e) => Problem::Trust(e),
                None => Problem::Empty,
            }));
        };
        if header.records != self.chain.records() {
            return Err(at_header(Problem::HeaderRecords {
                header: header.records,
                seen: self.chain.records(),
            }));
        }
        if header.head != self.chain.head() {
            return Err(at_header(Problem::HeaderHead {
                header: header.head,
                seen: self.chain.head(),
            }));
        }
        Ok(ExportSummary {
            cluster_id: header.cluster_id,
            node_id: header.node_id,
            records: self.chain.records(),
            head: self.chain.head(),
            root: self.chain.root(),
            policies: self.policies,
            signed_policies: self.signed_policies,
            activations: self.activations,
            checkpoints: self.checkpoints,
            last_checkpoint_size: self.last_checkpoint_size,
            reevaluated: self.reevaluated,
            uncovered_tail: self.chain.records() - self.last_checkpoint_size.unwrap_or(0),
        })
    }
}

/// How the export writer starts a record line (serde writes an internally
/// tagged enum's tag first).
const RECORD_PREFIX: &str = "{\"type\":\"record\",";

/// Parses one export line. Record lines, nearly all of an export, take a
/// fast path: serde's internally tagged enums buffer the whole object before
/// dispatching on the tag, and `Digest`'s own deserialiser allocates a
/// string per hash; together that doubled the cost of a record. Any line the
/// fast path does not recognise is parsed as an [`ExportLine`] as usual.
fn parse_line(text: &str) -> Result<ExportLine, serde_json::Error> {
    if text.starts_with(RECORD_PREFIX) {
        return serde_json::from_str::<RecordLine>(text).map(|r| ExportLine::Record(r.into()));
    }
    serde_json::from_str(text)
}

/// [`DecisionRecord`]'s serde shape with faster digests. The conversion
/// below names every field, so a field added to `DecisionRecord` fails to
/// compile here instead of being dropped silently.
#[derive(Deserialize)]
struct RecordLine {
    index: u64,
    log_index: u64,
    request: AuthorizeRequest,
    decision: Decision,
    reason: Option<DenyReason>,
    determining_policies: Vec<String>,
    errors: Vec<String>,
    policy_version: Option<u64>,
    policy_hash: Option<HexDigest>,
    timestamp_ms: u64,
    prev_hash: HexDigest,
    hash: HexDigest,
    #[serde(default)]
    shadow: Option<Box<crate::record::ShadowOutcome>>,
}

impl From<RecordLine> for DecisionRecord {
    fn from(r: RecordLine) -> DecisionRecord {
        DecisionRecord {
            index: r.index,
            log_index: r.log_index,
            request: r.request,
            decision: r.decision,
            reason: r.reason,
            determining_policies: r.determining_policies,
            errors: r.errors,
            policy_version: r.policy_version,
            policy_hash: r.policy_hash.map(|h| h.0),
            timestamp_ms: r.timestamp_ms,
            prev_hash: r.prev_hash.0,
            hash: r.hash.0,
            shadow: r.shadow,
        }
    }
}

/// A digest read from 64 hex characters (either case, as `Digest::from_hex`
/// accepts) without allocating.
struct HexDigest(Digest);

impl<'de> Deserialize<'de> for HexDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HexDigest, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HexDigest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a SHA-256 digest as 64 hex characters")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HexDigest, E> {
                decode_digest(s)
                    .map(HexDigest)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// Hex digit values; 0xff marks a byte that is not a hex digit.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0u8;
    while i < 16 {
        t[b"0123456789abcdef"[i as usize] as usize] = i;
        t[b"0123456789ABCDEF"[i as usize] as usize] = i;
        i += 1;
    }
    t
};

fn decode_digest(s: &str) -> Option<Digest> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    // Branch-free: accumulate every digit value and check once.
    let mut seen = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        seen |= hi | lo;
        *o = (hi << 4) | lo;
    }
    (seen < 16).then_some(Digest(out))
}

fn kind(line: &ExportLine) -> &'static str {
    match line {
        ExportLine::Header(_) => "header",
        ExportLine::Policy(_) => "policy",
        ExportLine::Activation(_) => "activation",
        ExportLine::Record(_) => "record",
        ExportLine::Checkpoint(_) => "checkpoint",
    }
}

/// Version `version` of `domain`, if the export published it so far.
fn published<'d>(
    domains: &'d HashMap<String, DomainPolicies>,
    domain: &str,
    version: u64,
) -> Option<&'d PolicyVersion> {
    let i = usize::try_from(version.checked_sub(1)?).ok()?;
    domains.get(domain)?.versions.get(i)
}

fn policy_at<'d>(domains: &'d HashMap<String, DomainPolicies>, domain: &str) -> PolicyAt<'d> {
    match domains.get(domain) {
        None => PolicyAt::UnknownDomain,
        Some(d) => match d.active {
            None => PolicyAt::NoActiveVersion,
            Some(v) => match usize::try_from(v - 1).ok().and_then(|i| d.versions.get(i)) {
                Some(p) => PolicyAt::Active(p),
                // Activations are checked against `versions`; unreachable.
                None => PolicyAt::NoActiveVersion,
            },
        },
    }
}

fn reason_text(r: Option<DenyReason>) -> String {
    r.map_or_else(|| "none".to_string(), |r| r.code().to_string())
}

/// A committed record's decision and reason agree, and the reason is one
/// that can be committed (FORMATS.md §5).
fn check_decision_reason(r: &DecisionRecord) -> Result<(), Problem> {
    let message = match (r.decision, r.reason) {
        (Decision::Allow, None) => return Ok(()),
        (Decision::Allow, Some(_)) => "an ALLOW has no reason",
        (Decision::Deny, None) => "a DENY carries a reason",
        (
            Decision::Deny,
            Some(
                DenyReason::Policy
                | DenyReason::UnknownDomain
                | DenyReason::NoActivePolicy
                | DenyReason::InvalidRequest
                | DenyReason::UnverifiablePolicy,
            ),
        ) => return Ok(()),
        (Decision::Deny, Some(_)) => {
            "this reason is answered without a record and never appears in the log"
        }
    };
    Err(Problem::DecisionReason {
        decision: r.decision,
        reason: reason_text(r.reason),
        message,
    })
}

/// The record's policy fields agree with the domain's state at its position.
fn check_policy_fields(r: &DecisionRecord, policy: PolicyAt<'_>) -> Result<(), Problem> {
    let found = || {
        format!(
            "decision {:?}, reason {}, policy_version {}, policy_hash {}",
            r.decision,
            reason_text(r.reason),
            r.policy_version
                .map_or_else(|| "none".to_string(), |v| v.to_string()),
            r.policy_hash
                .map_or_else(|| "none".to_string(), |h| h.to_hex()),
        )
    };
    let ok = match policy {
        PolicyAt::UnknownDomain => {
            r.reason == Some(DenyReason::UnknownDomain)
                && r.policy_version.is_none()
                && r.policy_hash.is_none()
        }
        PolicyAt::NoActiveVersion => {
            r.reason == Some(DenyReason::NoActivePolicy)
                && r.policy_version.is_none()
                && r.policy_hash.is_none()
        }
        PolicyAt::Active(p) => {
            r.policy_version == Some(p.version)
                && r.policy_hash == Some(p.hash)
                && !matches!(
                    r.reason,
                    Some(DenyReason::UnknownDomain | DenyReason::NoActivePolicy)
                )
        }
    };
    if ok {
        return Ok(());
    }
    let (state, expected) = match policy {
        PolicyAt::UnknownDomain => (
            "has no published policy".to_string(),
            "the record must be DENY UNKNOWN_DOMAIN with no policy version or hash".to_string(),
        ),
        PolicyAt::NoActiveVersion => (
            "has no active policy version".to_string(),
            "the record must be DENY NO_ACTIVE_POLICY with no policy version or hash".to_string(),
        ),
        PolicyAt::Active(p) => (
            format!("has version {} active", p.version),
            format!(
                "the record must name policy_version {} and policy_hash {}",
                p.version, p.hash
            ),
        ),
    };
    Err(Problem::PolicyState {
        domain: r.request.domain.clone(),
        log_index: r.log_index,
        state,
        expected,
        found: found(),
    })
}

/// The first field (in canonical order) in which `a` and `b` differ, with
/// both values rendered for a human.
fn first_difference(
    a: &DecisionRecord,
    b: &DecisionRecord,
) -> Option<(&'static str, String, String)> {
    fn show<T: fmt::Debug>(v: &T) -> String {
        let mut s = format!("{v:?}");
        if s.len() > 300 {
            let mut cut = 300;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        s
    }
    macro_rules! cmp {
        ($($name:literal => $($f:ident).+),* $(,)?) => {
            $(
                if a.$($f).+ != b.$($f).+ {
                    return Some(($name, show(&a.$($f).+), show(&b.$($f).+)));
                }
            )*
        };
    }
    cmp!(
        "index" => index,
        "log_index" => log_index,
        "request.domain" => request.domain,
        "request.request_id" => request.request_id,
        "request.principal" => request.principal,
        "request.action" => request.action,
        "request.resource" => request.resource,
        "request.context" => request.context,
        "request.entities" => request.entities,
        "request.parent" => request.parent,
        "request.trace_id" => request.trace_id,
        "decision" => decision,
        "reason" => reason,
        "determining_policies" => determining_policies,
        "errors" => errors,
        "policy_version" => policy_version,
        "policy_hash" => policy_hash,
        "timestamp_ms" => timestamp_ms,
        "prev_hash" => prev_hash,
        "shadow" => shadow,
        "hash" => hash,
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::Frontier;
    use crate::proof;
    use crate::proof::{
        Cosignature, PolicySignature, SecretKey, TRUST_FORMAT, TrustedNode, TrustedPublisher,
        checkpoint_message,
    };
    use crate::record::{AuthorizeRequest, GENESIS_HASH};
    use proptest::prelude::*;
    use std::sync::Arc;

    const CLUSTER: &str = "test-cluster";
    const T0: u64 = 1_764_150_000_000;

    fn voters() -> [SecretKey; 3] {
        [1u8, 2, 3].map(|s| SecretKey::from_seed([s; 32]))
    }

    fn publisher() -> SecretKey {
        SecretKey::from_seed([9; 32])
    }

    fn trust() -> TrustFile {
        let mut nodes: Vec<TrustedNode> = voters()
            .iter()
            .enumerate()
            .map(|(i, k)| TrustedNode {
                node_id: i as u64 + 1,
                public_key: k.public(),
                voter: true,
                region: format!("r{i}"),
            })
            .collect();
        nodes.push(TrustedNode {
            node_id: 4,
            public_key: SecretKey::from_seed([4; 32]).public(),
            voter: false,
            region: "learner".into(),
        });
        TrustFile {
            format: TRUST_FORMAT.into(),
            cluster_id: CLUSTER.into(),
            nodes,
            publishers: vec![TrustedPublisher {
                name: "policy-team".into(),
                public_key: publisher().public(),
            }],
            voter_sets: vec![],
        }
    }

    /// A stand-in for the Cedar decision function: pure, deterministic, and
    /// sensitive to the request and the policy text.
    fn fake_decide(
        pos: &DecisionRecord,
        request: &AuthorizeRequest,
        policy: PolicyAt<'_>,
    ) -> DecisionRecord {
        let (decision, reason, determining, errors, version, hash) = match policy {
            PolicyAt::UnknownDomain => (
                Decision::Deny,
                Some(DenyReason::UnknownDomain),
                vec![],
                vec![],
                None,
                None,
            ),
            PolicyAt::NoActiveVersion => (
                Decision::Deny,
                Some(DenyReason::NoActivePolicy),
                vec![],
                vec![],
                None,
                None,
            ),
            PolicyAt::Active(p) if p.policy_text.contains("unverifiable") => (
                Decision::Deny,
                Some(DenyReason::UnverifiablePolicy),
                vec![],
                vec![],
                Some(p.version),
                Some(p.hash),
            ),
            PolicyAt::Active(p) if p.policy_text.contains(&request.principal) => (
                Decision::Allow,
                None,
                vec!["policy0".to_string()],
                vec![],
                Some(p.version),
                Some(p.hash),
            ),
            PolicyAt::Active(p) => (
                Decision::Deny,
                Some(DenyReason::Policy),
                vec![],
                vec![format!("no permit for {}", request.principal)],
                Some(p.version),
                Some(p.hash),
            ),
        };
        DecisionRecord {
            index: pos.index,
            log_index: pos.log_index,
            request: request.clone(),
            decision,
            reason,
            determining_policies: determining,
            errors,
            policy_version: version,
            policy_hash: hash,
            timestamp_ms: pos.timestamp_ms,
            prev_hash: pos.prev_hash,
            hash: GENESIS_HASH,
            shadow: None,
        }
        .seal()
    }

    /// Recomputes with the fake decision function (an honest replica).
    struct Honest;
    impl Reevaluator for Honest {
        fn reevaluate(
            &mut self,
            r: &DecisionRecord,
            policy: PolicyAt<'_>,
            _: Option<&PolicyVersion>,
        ) -> DecisionRecord {
            fake_decide(r, &r.request, policy)
        }
    }

    /// Returns the record unchanged.
    struct Echo;
    impl Reevaluator for Echo {
        fn reevaluate(
            &mut self,
            r: &DecisionRecord,
            _: PolicyAt<'_>,
            _: Option<&PolicyVersion>,
        ) -> DecisionRecord {
            r.clone()
        }
    }

    /// A diverging replica: flips every decision.
    struct Flip;
    impl Reevaluator for Flip {
        fn reevaluate(
            &mut self,
            r: &DecisionRecord,
            _: PolicyAt<'_>,
            _: Option<&PolicyVersion>,
        ) -> DecisionRecord {
            let mut out = r.clone();
            (out.decision, out.reason) = match r.decision {
                Decision::Allow => (Decision::Deny, Some(DenyReason::Policy)),
                Decision::Deny => (Decision::Allow, None),
            };
            out.seal()
        }
    }

    fn request(domain: &str, principal: &str, n: u64) -> AuthorizeRequest {
        AuthorizeRequest {
            domain: domain.into(),
            request_id: format!("req-{n}"),
            principal: format!("User::\"{principal}\""),
            action: "Action::\"read\"".into(),
            resource: format!("Doc::\"{}\"", n % 7),
            context: format!("{{\"amount\":{n},\"currency\":\"EUR\"}}"),
            entities: None,
            parent: (n % 5 == 0 && n > 0).then(|| format!("req-{}", n - 1)),
            trace_id: (n % 3 == 0).then(|| format!("trace-{n}")),
        }
    }

    fn line(l: &ExportLine) -> String {
        serde_json::to_string(l).unwrap_or_default()
    }

    /// Writes an honest export, keeping the state a cluster would.
    struct Builder {
        lines: Vec<String>,
        log_index: u64,
        domains: HashMap<String, DomainPolicies>,
        count: u64,
        head: Digest,
        frontier: Frontier,
        voters: [SecretKey; 3],
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                lines: vec![],
                log_index: 2,
                domains: HashMap::new(),
                count: 0,
                head: GENESIS_HASH,
                frontier: Frontier::new(),
                voters: voters(),
            }
        }

        fn publish(
            &mut self,
            domain: &str,
            text: &str,
            schema: Option<&str>,
            sign: Option<&SecretKey>,
            activate: bool,
        ) {
            self.log_index += 1;
            let d = self.domains.entry(domain.to_string()).or_default();
            let version = d.versions.len() as u64 + 1;
            let pv = PolicyVersion {
                domain: domain.into(),
                version,
                policy_text: text.into(),
                schema: schema.map(str::to_string),
                hash: policy_content_hash(text, schema),
                log_index: self.log_index,
                published_at_ms: T0 + self.log_index,
                signature: sign.map(|k| PolicySignature::sign(k, text, schema)),
            };
            self.lines.push(line(&ExportLine::Policy(pv.clone())));
            d.versions.push(pv);
            if activate {
                d.active = Some(version);
                self.lines.push(line(&ExportLine::Activation(Activation {
                    domain: domain.into(),
                    version,
                    log_index: self.log_index,
                })));
            }
        }

        fn activate(&mut self, domain: &str, version: u64) {
            self.log_index += 1;
            if let Some(d) = self.domains.get_mut(domain) {
                d.active = Some(version);
            }
            self.lines.push(line(&ExportLine::Activation(Activation {
                domain: domain.into(),
                version,
                log_index: self.log_index,
            })));
        }

        /// One Raft entry carrying a batch of requests.
        fn decide(&mut self, batch: &[(&str, &str)]) {
            self.log_index += 1;
            for (domain, principal) in batch {
                let pos = DecisionRecord {
                    index: self.count + 1,
                    log_index: self.log_index,
                    request: request(domain, principal, self.count),
                    decision: Decision::Deny,
                    reason: None,
                    determining_policies: vec![],
                    errors: vec![],
                    policy_version: None,
                    policy_hash: None,
                    timestamp_ms: T0 + self.log_index * 10,
                    prev_hash: self.head,
                    hash: GENESIS_HASH,
                    shadow: None,
                };
                let rec = fake_decide(&pos, &pos.request, policy_at(&self.domains, domain));
                self.count = rec.index;
                self.head = rec.hash;
                self.frontier.append(proof::record_leaf(&rec));
                self.lines.push(line(&ExportLine::Record(rec)));
            }
        }

        fn checkpoint(&mut self, signers: &[usize]) {
            let root = self.frontier.root();
            let msg = checkpoint_message(CLUSTER, self.count, &root);
            let cosignatures = signers
                .iter()
                .map(|&i| Cosignature {
                    node_id: i as u64 + 1,
                    signature: self.voters[i].sign(&msg),
                })
                .collect();
            self.lines.push(line(&ExportLine::Checkpoint(Checkpoint {
                cluster_id: CLUSTER.into(),
                size: self.count,
                root,
                cosignatures,
                voters: vec![1, 2, 3],
            })));
        }

        fn finish(self) -> Vec<String> {
            let header = line(&ExportLine::Header(ExportHeader {
                format: EXPORT_FORMAT.into(),
                cluster_id: CLUSTER.into(),
                records: self.count,
                head: self.head,
                node_id: 2,
            }));
            std::iter::once(header).chain(self.lines).collect()
        }
    }

    const ALPHA_V1: &str =
        r#"permit(principal in [User::"alice", User::"carol"], action, resource);"#;

    /// A small honest export exercising every line type and policy state.
    fn honest() -> Vec<String> {
        let mut b = Builder::new();
        b.publish("alpha", ALPHA_V1, None, Some(&publisher()), true);
        b.decide(&[("alpha", "alice")]);
        b.decide(&[("alpha", "bob"), ("gamma", "alice"), ("alpha", "carol")]);
        b.checkpoint(&[0, 1, 2]);
        b.publish(
            "beta",
            r#"permit(principal == User::"bob", action, resource);"#,
            None,
            None,
            false,
        );
        b.decide(&[("beta", "bob")]);
        b.decide(&[("alpha", "alice")]);
        b.checkpoint(&[0, 2]);
        b.activate("beta", 1);
        b.publish(
            "alpha",
            "// unverifiable on purpose",
            Some("entity User;"),
            Some(&publisher()),
            true,
        );
        b.decide(&[("alpha", "alice"), ("beta", "bob")]);
        b.activate("alpha", 1);
        for n in 0..20u64 {
            let domain = ["alpha", "beta", "gamma"][(n % 3) as usize];
            let principal = ["alice", "bob", "carol", "dave"][(n % 4) as usize];
            b.decide(&[(domain, principal)]);
            if n % 7 == 6 {
                b.checkpoint(&[1, 2]);
            }
        }
        b.decide(&[("beta", "bob"), ("alpha", "dave")]);
        b.finish()
    }

    fn verify(
        lines: &[String],
        re: Option<Box<dyn Reevaluator + '_>>,
    ) -> Result<ExportSummary, VerifyError> {
        let trust = trust();
        let mut v = ExportVerifier::new(&trust, re);
        for l in lines {
            v.feed_line(l)?;
        }
        v.finish()
    }

    fn err(lines: &[String]) -> VerifyError {
        match verify(lines, Some(Box::new(Honest))) {
            Ok(s) => panic!("verification passed: {s:?}"),
            Err(e) => e,
        }
    }

    fn parsed(l: &str) -> ExportLine {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))
    }

    /// The 0-based position of the first line of type `want` after `from`.
    fn find(lines: &[String], want: &str, from: usize) -> usize {
        (from..lines.len())
            .find(|&i| kind(&parsed(&lines[i])) == want)
            .unwrap_or_else(|| panic!("no {want} line after {from}"))
    }

    #[test]
    fn honest_export_passes() {
        let lines = honest();
        let reevaluators: Vec<Option<Box<dyn Reevaluator>>> =
            vec![None, Some(Box::new(Echo)), Some(Box::new(Honest))];
        for re in reevaluators {
            let with = re.is_some();
            let s = verify(&lines, re).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.records, 30);
            assert_eq!(s.policies, 3);
            assert_eq!(s.signed_policies, 2);
            assert_eq!(s.activations, 4);
            assert_eq!(s.checkpoints, 4);
            assert_eq!(s.last_checkpoint_size, Some(22));
            assert_eq!(s.uncovered_tail, 8);
            assert_eq!(s.reevaluated, if with { 30 } else { 0 });
            assert_eq!(s.cluster_id, CLUSTER);
        }
    }

    #[test]
    fn every_policy_state_occurs_in_the_honest_export() {
        let reasons: Vec<Option<DenyReason>> = honest()
            .iter()
            .filter_map(|l| match parsed(l) {
                ExportLine::Record(r) => Some(r.reason),
                _ => None,
            })
            .collect();
        for want in [
            None,
            Some(DenyReason::Policy),
            Some(DenyReason::UnknownDomain),
            Some(DenyReason::NoActivePolicy),
            Some(DenyReason::UnverifiablePolicy),
        ] {
            assert!(reasons.contains(&want), "{want:?} missing");
        }
    }

    #[test]
    fn diverging_reevaluation_names_the_field() {
        let lines = honest();
        let e = verify(&lines, Some(Box::new(Flip)))
            .err()
            .unwrap_or_else(|| panic!("passed"));
        let first = find(&lines, "record", 0);
        assert_eq!(e.line, first as u64 + 1);
        assert_eq!(e.record, Some(1));
        assert!(
            matches!(
                &*e.problem,
                Problem::Reevaluation {
                    field: "decision",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("re-evaluation disagrees on decision"),
            "{e}"
        );
    }

    #[test]
    fn broken_link_message_names_line_and_records() {
        let mut lines = honest();
        let i = find(&lines, "record", find(&lines, "record", 0) + 1);
        let ExportLine::Record(mut r) = parsed(&lines[i]) else {
            unreachable!()
        };
        r.prev_hash.0[0] ^= 1;
        lines[i] = line(&ExportLine::Record(r.seal()));
        let e = err(&lines);
        assert_eq!(e.line, i as u64 + 1);
        assert!(
            e.to_string().starts_with(&format!(
                "line {} (record 2): prev_hash does not link to record 1",
                i + 1
            )),
            "{e}"
        );
    }

    #[test]
    fn header_checks() {
        let lines = honest();
        // Missing header.
        let e = err(&lines[1..]);
        assert_eq!(
            (e.line, &*e.problem),
            (1, &Problem::MissingHeader("policy"))
        );
        // Second header.
        let mut two = lines.clone();
        two.insert(3, lines[0].clone());
        let e = err(&two);
        assert_eq!((e.line, &*e.problem), (4, &Problem::ExtraHeader));
        // Wrong cluster and format.
        let ExportLine::Header(h) = parsed(&lines[0]) else {
            unreachable!()
        };
        let mut other = lines.clone();
        other[0] = line(&ExportLine::Header(ExportHeader {
            cluster_id: "other".into(),
            ..h.clone()
        }));
        assert!(matches!(*err(&other).problem, Problem::Cluster { .. }));
        other[0] = line(&ExportLine::Header(ExportHeader {
            format: "quorate-export/v2".into(),
            ..h.clone()
        }));
        assert!(matches!(*err(&other).problem, Problem::Format { .. }));
        // Header totals are checked at the end, against line 1.
        other[0] = line(&ExportLine::Header(ExportHeader {
            records: h.records + 1,
            ..h.clone()
        }));
        let e = err(&other);
        assert_eq!(e.line, 1);
        assert!(matches!(*e.problem, Problem::HeaderRecords { .. }), "{e}");
        other[0] = line(&ExportLine::Header(ExportHeader {
            head: GENESIS_HASH,
            ..h
        }));
        assert!(matches!(*err(&other).problem, Problem::HeaderHead { .. }));
        // A truncated export fails at the end.
        let e = err(&lines[..lines.len() - 1]);
        assert!(matches!(*e.problem, Problem::HeaderRecords { .. }), "{e}");
        // An empty one too.
        assert_eq!(*err(&[]).problem, Problem::Empty);
        // Garbage.
        let mut bad = lines.clone();
        bad[5] = "{\"type\":\"record\"".into();
        let e = err(&bad);
        assert_eq!(e.line, 6);
        assert!(matches!(*e.problem, Problem::Malformed(_)));
    }

    #[test]
    fn errors_are_sticky() {
        let trust = trust();
        let mut v = ExportVerifier::new(&trust, None);
        let first = v.feed_line("not json").err();
        assert!(first.is_some());
        assert_eq!(v.feed_line(&honest()[0]).err(), first);
        assert_eq!(v.finish().err(), first);
    }

    #[test]
    fn unusable_trust_file_fails_line_one() {
        let mut t = trust();
        t.format = "quorate-trust/v0".into();
        let mut v = ExportVerifier::new(&t, None);
        let e = v
            .feed_line(&honest()[0])
            .err()
            .unwrap_or_else(|| panic!("passed"));
        assert_eq!(e.line, 1);
        assert!(matches!(*e.problem, Problem::Trust(_)), "{e}");
    }

    #[test]
    fn policy_checks() {
        let lines = honest();
        let p = find(&lines, "policy", 0);
        let ExportLine::Policy(pv) = parsed(&lines[p]) else {
            unreachable!()
        };
        // Version gap.
        let mut bad = lines.clone();
        bad[p] = line(&ExportLine::Policy(PolicyVersion {
            version: 2,
            ..pv.clone()
        }));
        let e = err(&bad);
        assert_eq!(e.line, p as u64 + 1);
        assert!(
            matches!(
                *e.problem,
                Problem::PolicyVersion {
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{e}"
        );
        // Signed by a key that is not a trusted publisher.
        let stranger = SecretKey::from_seed([77; 32]);
        bad[p] = line(&ExportLine::Policy(PolicyVersion {
            signature: Some(PolicySignature::sign(&stranger, &pv.policy_text, None)),
            ..pv.clone()
        }));
        let e = err(&bad);
        assert!(e.to_string().contains("not a trusted publisher"), "{e}");
        // ...which is accepted when the trust file lists no publishers.
        let mut open = trust();
        open.publishers.clear();
        let mut v = ExportVerifier::new(&open, None);
        for l in &bad {
            v.feed_line(l).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(v.finish().is_ok());
        // A signature over other bytes never verifies.
        bad[p] = line(&ExportLine::Policy(PolicyVersion {
            signature: Some(PolicySignature::sign(
                &publisher(),
                "permit(principal, action, resource);",
                None,
            )),
            ..pv
        }));
        assert!(matches!(
            *err(&bad).problem,
            Problem::PolicySignature { .. }
        ));
    }

    #[test]
    fn activation_and_order_checks() {
        let lines = honest();
        // The standalone activation of beta version 1 (its own Raft entry).
        let a = find(&lines, "activation", find(&lines, "activation", 0) + 1);
        let ExportLine::Activation(act) = parsed(&lines[a]) else {
            unreachable!()
        };
        assert_eq!((act.domain.as_str(), act.version), ("beta", 1));
        let mut bad = lines.clone();
        bad[a] = line(&ExportLine::Activation(Activation {
            version: 2,
            ..act.clone()
        }));
        let e = err(&bad);
        assert_eq!(e.line, a as u64 + 1);
        assert!(
            matches!(*e.problem, Problem::ActivationUnpublished { latest: 1, .. }),
            "{e}"
        );
        bad[a] = line(&ExportLine::Activation(Activation {
            domain: "nowhere".into(),
            ..act.clone()
        }));
        assert!(matches!(
            *err(&bad).problem,
            Problem::ActivationUnpublished { latest: 0, .. }
        ));
        bad[a] = line(&ExportLine::Activation(Activation {
            log_index: 1,
            ..act
        }));
        let e = err(&bad);
        assert_eq!(e.line, a as u64 + 1);
        assert!(matches!(*e.problem, Problem::LogOrder { .. }), "{e}");
    }

    #[test]
    fn one_command_per_log_index() {
        let lines = honest();
        let batch = (1..lines.len())
            .find(|&i| {
                matches!((parsed(&lines[i]), parsed(&lines[i - 1])),
                    (ExportLine::Record(a), ExportLine::Record(b)) if a.log_index == b.log_index)
            })
            .unwrap_or_else(|| panic!("no batch"));
        let ExportLine::Record(r) = parsed(&lines[batch]) else {
            unreachable!()
        };
        // An activation slipped into the middle of a batch.
        let mut bad = lines.clone();
        bad.insert(
            batch,
            line(&ExportLine::Activation(Activation {
                domain: "alpha".into(),
                version: 1,
                log_index: r.log_index,
            })),
        );
        let e = err(&bad);
        assert_eq!(e.line, batch as u64 + 1, "{e}");
        assert!(
            matches!(
                *e.problem,
                Problem::SharedLogIndex {
                    previous: "record",
                    ..
                }
            ),
            "{e}"
        );
        // An activation for another domain than the publication it shares
        // an entry with.
        let p = find(&lines, "policy", 0);
        let ExportLine::Activation(mut a) = parsed(&lines[p + 1]) else {
            panic!("publish-with-activate expected")
        };
        a.domain = "beta".into();
        let mut bad = lines.clone();
        bad[p + 1] = line(&ExportLine::Activation(a));
        let e = err(&bad);
        assert_eq!(e.line, p as u64 + 2, "{e}");
        assert!(
            matches!(
                *e.problem,
                Problem::SharedLogIndex {
                    previous: "policy",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn record_must_name_the_active_policy() {
        let lines = honest();
        // Claim version 1 for the unknown domain "gamma", resealed so the
        // hash chain alone cannot catch it (the next record's prev_hash
        // would, one line later).
        let (i, mut r) = lines
            .iter()
            .enumerate()
            .find_map(|(i, l)| match parsed(l) {
                ExportLine::Record(r) if r.request.domain == "gamma" => Some((i, r)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no gamma record"));
        r.policy_version = Some(1);
        let mut bad = lines.clone();
        bad[i] = line(&ExportLine::Record(r.clone().seal()));
        let e = err(&bad);
        assert_eq!(e.line, i as u64 + 1);
        assert!(matches!(*e.problem, Problem::PolicyState { .. }), "{e}");
        // ALLOW with a reason.
        r.policy_version = None;
        r.decision = Decision::Allow;
        bad[i] = line(&ExportLine::Record(r.seal()));
        assert!(matches!(*err(&bad).problem, Problem::DecisionReason { .. }));
    }

    #[test]
    fn checkpoint_checks() {
        let lines = honest();
        let c = find(&lines, "checkpoint", 0);
        let ExportLine::Checkpoint(cp) = parsed(&lines[c]) else {
            unreachable!()
        };
        let mut bad = lines.clone();
        // One cosignature of three voters is not a quorum.
        bad[c] = line(&ExportLine::Checkpoint(Checkpoint {
            cosignatures: cp.cosignatures[..1].to_vec(),
            ..cp.clone()
        }));
        let e = err(&bad);
        assert_eq!(e.line, c as u64 + 1);
        assert!(
            e.to_string()
                .contains("1 valid voter cosignatures; 2 are needed"),
            "{e}"
        );
        // A learner's cosignature does not count (and is rejected).
        let learner = SecretKey::from_seed([4; 32]);
        let mut cos = cp.cosignatures[..1].to_vec();
        cos.push(Cosignature {
            node_id: 4,
            signature: learner.sign(&cp.message()),
        });
        bad[c] = line(&ExportLine::Checkpoint(Checkpoint {
            cosignatures: cos,
            ..cp.clone()
        }));
        assert!(matches!(
            *err(&bad).problem,
            Problem::Chain(ChainError::Cosignatures { .. })
        ));
        // Size.
        bad[c] = line(&ExportLine::Checkpoint(Checkpoint {
            size: cp.size - 1,
            ..cp
        }));
        assert!(matches!(
            *err(&bad).problem,
            Problem::Chain(ChainError::CheckpointSize { .. })
        ));
    }

    #[test]
    fn fast_record_path_agrees_with_the_tagged_parse() {
        let lines = honest();
        let mut fast = 0;
        for l in &lines {
            let tagged: ExportLine = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}"));
            fast += usize::from(l.starts_with(RECORD_PREFIX));
            assert_eq!(parse_line(l).ok(), Some(tagged));
        }
        assert_eq!(fast, 30, "record lines take the fast path");
        // Digests: the same inputs are accepted and refused either way.
        let rec = find(&lines, "record", 0);
        let hash = match parsed(&lines[rec]) {
            ExportLine::Record(r) => r.hash.to_hex(),
            _ => unreachable!(),
        };
        for (replacement, ok) in [
            (hash.to_uppercase(), true),
            (hash[..63].to_string(), false),
            (format!("{}g", &hash[..63]), false),
            (format!("{hash}00"), false),
            (format!("{}\\u0030", &hash[..63]), true),
        ] {
            let l = lines[rec].replace(&hash, &replacement);
            let tagged = serde_json::from_str::<ExportLine>(&l).ok();
            assert_eq!(tagged.is_some(), ok, "{replacement}");
            assert_eq!(parse_line(&l).ok(), tagged, "{replacement}");
        }
        // A record line written differently takes the general path.
        let spaced = lines[rec].replacen("{\"type\":\"record\",", "{ \"type\": \"record\", ", 1);
        assert!(!spaced.starts_with(RECORD_PREFIX));
        assert_eq!(parse_line(&spaced).ok(), parse_line(&lines[rec]).ok());
    }

    #[derive(Debug, Clone, Copy)]
    enum Mutation {
        RecordHash,
        Decision,
        Principal,
        PolicyText,
        PolicyHash,
        CheckpointRoot,
        Cosignature,
        PrevHash,
        Index,
    }

    /// Applies `m` to the `pick`-th applicable line; returns its position.
    fn mutate(lines: &mut [String], m: Mutation, pick: usize, byte: usize, bit: u8) -> usize {
        let want = match m {
            Mutation::PolicyText | Mutation::PolicyHash => "policy",
            Mutation::CheckpointRoot | Mutation::Cosignature => "checkpoint",
            _ => "record",
        };
        let candidates: Vec<usize> = (0..lines.len())
            .filter(|&i| kind(&parsed(&lines[i])) == want)
            .collect();
        let i = candidates[pick % candidates.len()];
        let flip = 1u8 << (bit % 8);
        let out = match (m, parsed(&lines[i])) {
            (Mutation::RecordHash, ExportLine::Record(mut r)) => {
                r.hash.0[byte % 32] ^= flip;
                ExportLine::Record(r)
            }
            (Mutation::Decision, ExportLine::Record(mut r)) => {
                r.decision = match r.decision {
                    Decision::Allow => Decision::Deny,
                    Decision::Deny => Decision::Allow,
                };
                ExportLine::Record(r)
            }
            (Mutation::Principal, ExportLine::Record(mut r)) => {
                let name = r.request.principal.trim_end_matches('"').to_string();
                r.request.principal = format!("{name}{}\"", (b'a' + bit % 26) as char);
                ExportLine::Record(r)
            }
            (Mutation::PrevHash, ExportLine::Record(mut r)) => {
                r.prev_hash.0[byte % 32] ^= flip;
                ExportLine::Record(r)
            }
            (Mutation::Index, ExportLine::Record(mut r)) => {
                r.index ^= 1 << (byte % 64);
                ExportLine::Record(r)
            }
            (Mutation::PolicyText, ExportLine::Policy(mut p)) => {
                let mut bytes = p.policy_text.into_bytes();
                let at = byte % bytes.len();
                bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
                p.policy_text = String::from_utf8(bytes).unwrap_or_default();
                ExportLine::Policy(p)
            }
            (Mutation::PolicyHash, ExportLine::Policy(mut p)) => {
                p.hash.0[byte % 32] ^= flip;
                ExportLine::Policy(p)
            }
            (Mutation::CheckpointRoot, ExportLine::Checkpoint(mut c)) => {
                c.root.0[byte % 32] ^= flip;
                ExportLine::Checkpoint(c)
            }
            (Mutation::Cosignature, ExportLine::Checkpoint(mut c)) => {
                let n = c.cosignatures.len();
                c.cosignatures[pick / 7 % n].signature.0[byte % 64] ^= flip;
                ExportLine::Checkpoint(c)
            }
            (m, other) => panic!("{m:?} does not apply to {other:?}"),
        };
        lines[i] = line(&out);
        i
    }

    fn honest_cached() -> &'static [String] {
        static LINES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        LINES.get_or_init(honest)
    }

    /// Every kind of single-field tamper the property tests draw from.
    fn any_mutation() -> impl Strategy<Value = Mutation> {
        prop::sample::select(vec![
            Mutation::RecordHash,
            Mutation::Decision,
            Mutation::Principal,
            Mutation::PolicyText,
            Mutation::PolicyHash,
            Mutation::CheckpointRoot,
            Mutation::Cosignature,
            Mutation::PrevHash,
            Mutation::Index,
        ])
    }

    // Each case verifies a whole export, including ed25519 cosignatures,
    // which are slow in an unoptimised test build: the case counts keep the
    // suite under ~15 s. Raise them locally when changing the verifier.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_single_mutation_fails_at_its_line(
            m in any_mutation(),
            pick in any::<usize>(),
            byte in any::<usize>(),
            bit in any::<u8>(),
            reevaluate in any::<bool>(),
        ) {
            let mut lines = honest_cached().to_vec();
            let i = mutate(&mut lines, m, pick, byte, bit);
            let re: Option<Box<dyn Reevaluator>> = if reevaluate { Some(Box::new(Honest)) } else { None };
            let e = match verify(&lines, re) {
                Ok(_) => return Err(TestCaseError::fail(format!("{m:?} on line {} passed", i + 1))),
                Err(e) => e,
            };
            prop_assert_eq!(e.line, i as u64 + 1, "{:?}: {}", m, e);
            if let ExportLine::Record(r) = parsed(&lines[i]) {
                prop_assert_eq!(e.record, Some(r.index), "{}", e);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn dropping_or_swapping_lines_fails(pick in any::<usize>(), swap in any::<bool>()) {
            let mut lines = honest_cached().to_vec();
            let i = pick % lines.len();
            let kinds: Vec<&str> = lines.iter().map(|l| kind(&parsed(l))).collect();
            if swap {
                let j = if i + 1 < lines.len() { i + 1 } else { i - 1 };
                // A checkpoint has no log index: moving it across a policy
                // or activation line changes nothing it vouches for.
                if (kinds[i] == "checkpoint" || kinds[j] == "checkpoint")
                    && kinds[i] != "record"
                    && kinds[j] != "record"
                {
                    return Ok(());
                }
                lines.swap(i, j);
            } else {
                // Checkpoints are optional: without one, the tail is just
                // longer (ExportSummary::uncovered_tail).
                if kinds[i] == "checkpoint" {
                    return Ok(());
                }
                lines.remove(i);
            }
            prop_assert!(verify(&lines, None).is_err(), "swap {} at line {}", swap, i + 1);
        }
    }

    /// Flips every decision from record `0` on (a replica that diverges
    /// part-way through the log).
    struct FlipFrom(u64);
    impl Reevaluator for FlipFrom {
        fn reevaluate(
            &mut self,
            r: &DecisionRecord,
            policy: PolicyAt<'_>,
            c: Option<&PolicyVersion>,
        ) -> DecisionRecord {
            if r.index >= self.0 {
                Flip.reevaluate(r, policy, c)
            } else {
                Honest.reevaluate(r, policy, c)
            }
        }
    }

    /// Panics on record `0`.
    struct PanicAt(u64);
    impl Reevaluator for PanicAt {
        fn reevaluate(
            &mut self,
            r: &DecisionRecord,
            policy: PolicyAt<'_>,
            c: Option<&PolicyVersion>,
        ) -> DecisionRecord {
            assert!(
                r.index != self.0,
                "re-evaluator fault injected at {}",
                self.0
            );
            Honest.reevaluate(r, policy, c)
        }
    }

    fn verify_pooled(
        lines: &[String],
        jobs: usize,
        batch: usize,
        make: parallel::MakeReevaluator,
    ) -> Result<ExportSummary, VerifyError> {
        let trust = trust();
        let mut v =
            ExportVerifier::with_pool(&trust, parallel::Pool::with_batch(jobs, batch, make));
        for l in lines {
            v.feed_line(l)?;
        }
        v.finish()
    }

    /// The 1-based line of record `index`.
    fn line_of_record(lines: &[String], index: u64) -> u64 {
        let i = lines
            .iter()
            .position(|l| matches!(parsed(l), ExportLine::Record(r) if r.index == index))
            .unwrap_or_else(|| panic!("no record {index}"));
        i as u64 + 1
    }

    #[test]
    fn pooled_reevaluation_passes_what_inline_passes() {
        let lines = honest_cached();
        let inline = verify(lines, Some(Box::new(Honest))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inline.reevaluated, 30);
        for jobs in [1, 2, 3] {
            for batch in [1, 4, 256] {
                let pooled = verify_pooled(lines, jobs, batch, Arc::new(|| Box::new(Honest)));
                assert_eq!(pooled.as_ref(), Ok(&inline), "jobs {jobs}, batch {batch}");
            }
        }
    }

    #[test]
    fn pooled_reevaluation_reports_the_first_divergence_whichever_worker_finds_it() {
        let lines = honest_cached();
        for from in [1, 2, 13, 30] {
            let inline = verify(lines, Some(Box::new(FlipFrom(from))));
            let e = inline.clone().err().unwrap_or_else(|| panic!("passed"));
            assert_eq!(e.line, line_of_record(lines, from));
            assert_eq!(e.record, Some(from));
            for (jobs, batch) in [(1, 1), (2, 1), (3, 2), (2, 256)] {
                let pooled = verify_pooled(
                    lines,
                    jobs,
                    batch,
                    Arc::new(move || Box::new(FlipFrom(from))),
                );
                assert_eq!(pooled, inline, "from {from}, jobs {jobs}, batch {batch}");
            }
        }
    }

    #[test]
    fn a_reevaluator_that_panics_fails_verification_at_its_record() {
        let lines = honest_cached();
        for (jobs, batch) in [(1, 1), (3, 2)] {
            let e = verify_pooled(lines, jobs, batch, Arc::new(|| Box::new(PanicAt(17))))
                .err()
                .unwrap_or_else(|| panic!("a panicking re-evaluator passed"));
            assert_eq!(e.line, line_of_record(lines, 17), "{e}");
            assert!(matches!(*e.problem, Problem::ReevaluationStopped), "{e}");
        }
        // A re-evaluator that cannot even be made verifies nothing.
        let make: parallel::MakeReevaluator = Arc::new(|| panic!("no re-evaluator"));
        let e = verify_pooled(lines, 2, 4, make)
            .err()
            .unwrap_or_else(|| panic!("passed without a re-evaluator"));
        assert_eq!(e.line, line_of_record(lines, 1), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever is wrong, and wherever a replica starts to diverge, the
        /// pool reports exactly what the inline verifier reports.
        #[test]
        fn pooled_reevaluation_reports_what_inline_reports(
            m in any_mutation(),
            pick in any::<usize>(),
            byte in any::<usize>(),
            bit in any::<u8>(),
            from in 1u64..=31,
            jobs in 1usize..=3,
            batch in 1usize..=5,
        ) {
            let mut lines = honest_cached().to_vec();
            mutate(&mut lines, m, pick, byte, bit);
            let inline = verify(&lines, Some(Box::new(FlipFrom(from))));
            let pooled = verify_pooled(&lines, jobs, batch, Arc::new(move || Box::new(FlipFrom(from))));
            prop_assert_eq!(pooled, inline);
        }
    }

    /// Run with `cargo test --release -p quorate-core -- --ignored --nocapture throughput`.
    #[test]
    #[ignore = "throughput measurement; run in release"]
    fn throughput() {
        const N: u64 = 100_000;
        let mut b = Builder::new();
        b.publish("alpha", ALPHA_V1, None, Some(&publisher()), true);
        for n in 0..N {
            let principal = ["alice", "bob", "carol", "dave"][(n % 4) as usize];
            b.decide(&[("alpha", principal)]);
            if n % 1000 == 999 {
                b.checkpoint(&[0, 1, 2]);
            }
        }
        let lines = b.finish();
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        let trust = trust();
        // Best of five: the figure is what one core sustains, not what a
        // busy machine leaves over.
        let mut times = vec![];
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let mut v = ExportVerifier::new(&trust, None);
            for l in &lines {
                v.feed_line(l).unwrap_or_else(|e| panic!("{e}"));
            }
            let s = v.finish().unwrap_or_else(|e| panic!("{e}"));
            times.push(start.elapsed().as_secs_f64());
            assert_eq!((s.records, s.checkpoints), (N, N / 1000));
        }
        times.sort_by(f64::total_cmp);
        println!(
            "verified {N} records ({} lines, {:.1} MB, {} checkpoints of 3 cosignatures): \
             best {:.3}s = {:.0} records/s ({:.0} MB/s), median {:.3}s = {:.0} records/s",
            lines.len(),
            bytes as f64 / 1e6,
            N / 1000,
            times[0],
            N as f64 / times[0],
            bytes as f64 / 1e6 / times[0],
            times[2],
            N as f64 / times[2],
        );
    }
}
