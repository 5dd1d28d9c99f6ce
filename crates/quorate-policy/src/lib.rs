//! quorate-policy owns everything Cedar: compiling a policy version (parse,
//! and validate against its schema when one is given), checking the Cedar
//! syntax of a request at the API edge, and the deterministic decision
//! function that every replica runs at apply time.
//!
//! Architecture invariant: evaluation is a pure function of (request, policy
//! version, leader-chosen timestamp, previous hash). This crate does no IO,
//! reads no clock and must not depend on RocksDB, openraft or tonic; the
//! offline verifier reuses it to re-evaluate an exported log.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicySet, Request, Schema, ValidationMode, Validator,
};
use quorate_core::record::ShadowOutcome;
use quorate_core::validate::{self, InputError, Limits};
use quorate_core::{
    AuthorizeRequest, Decision, DecisionRecord, DenyReason, Digest, GENESIS_HASH, PolicyVersion,
};
use thiserror::Error;

/// Why a policy version was refused. Nothing is proposed when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("policy is empty: publish at least one permit or forbid statement")]
    Empty,
    #[error("policy does not parse: {0}")]
    Parse(String),
    #[error("schema does not parse: {0}")]
    Schema(String),
    #[error("policy does not validate against the schema: {0}")]
    Validation(String),
}

/// One policy of a version's text, as the console's "why" shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    /// The id decisions name in `determining_policies`.
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// The policy's Cedar text.
    pub text: String,
}

/// The policies of `policy_text` by id, in id order (the ids are those
/// Cedar gives them at evaluation: `@id` annotations are not ids; Cedar
/// numbers policies `policy0`, `policy1`, ... in text order).
pub fn statements(policy_text: &str) -> Result<Vec<Statement>, PolicyError> {
    let set = PolicySet::from_str(policy_text).map_err(|e| PolicyError::Parse(render(&e)))?;
    let mut out: Vec<Statement> = set
        .policies()
        .map(|p| Statement {
            id: p.id().to_string(),
            effect: match p.effect() {
                cedar_policy::Effect::Permit => "permit",
                cedar_policy::Effect::Forbid => "forbid",
            },
            text: p.to_string(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A policy version ready to evaluate. Compiling is deterministic, so every
/// replica compiles the same text to an equivalent set.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    policies: PolicySet,
    schema: Option<Schema>,
    /// Action entities declared by the schema, so `action in ActionGroup` works.
    schema_entities: Entities,
    /// Which policies could apply to a request (`index.rs`).
    index: index::PolicyIndex,
}

mod index;

fn parse_schema(text: &str) -> Result<Schema, PolicyError> {
    // A schema is accepted in either of Cedar's two formats: JSON (starts
    // with '{') or the human-readable schema syntax.
    if text.trim_start().starts_with('{') {
        Schema::from_json_str(text).map_err(|e| PolicyError::Schema(render(&e)))
    } else {
        Schema::from_cedarschema_str(text)
            .map(|(s, _warnings)| s)
            .map_err(|e| PolicyError::Schema(render(&e)))
    }
}

/// Renders a Cedar error with its causes on one line, as clients see it.
fn render(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

impl CompiledPolicy {
    /// Parses `policy_text` and, if a schema is given, validates the policies
    /// against it in strict mode.
    pub fn compile(
        policy_text: &str,
        schema: Option<&str>,
        limits: &Limits,
    ) -> Result<CompiledPolicy, PolicyError> {
        if policy_text.len() > limits.max_policy_bytes {
            return Err(PolicyError::TooLarge {
                len: policy_text.len(),
                max: limits.max_policy_bytes,
            });
        }
        let policies =
            PolicySet::from_str(policy_text).map_err(|e| PolicyError::Parse(render(&e)))?;
        if policies.is_empty() {
            return Err(PolicyError::Empty);
        }
        let schema = match schema {
            None => None,
            Some(text) => {
                if text.len() > limits.max_policy_bytes {
                    return Err(PolicyError::TooLarge {
                        len: text.len(),
                        max: limits.max_policy_bytes,
                    });
                }
                let schema = parse_schema(text)?;
                let result =
                    Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
                if !result.validation_passed() {
                    let msgs: Vec<String> = result.validation_errors().map(|e| render(e)).collect();
                    return Err(PolicyError::Validation(msgs.join("; ")));
                }
                Some(schema)
            }
        };
        let schema_entities = match &schema {
            Some(s) => s.action_entities().unwrap_or_else(|_| Entities::empty()),
            None => Entities::empty(),
        };
        let index = index::PolicyIndex::new(&policies);
        Ok(CompiledPolicy {
            policies,
            schema,
            schema_entities,
            index,
        })
    }

    /// Number of policies in the set.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub use quorate_core::entity_uid;

/// Checks the Cedar syntax of a request at the API edge: entity UIDs parse,
/// the context is an object Cedar accepts, the entities document parses.
/// Schema conformance is checked at apply time (the schema that applies is
/// the one active at the request's log position).
pub fn check_request(req: &AuthorizeRequest, limits: &Limits) -> Result<(), InputError> {
    validate::domain(&req.domain, limits)?;
    validate::identifier("request_id", &req.request_id, limits)?;
    if let Some(p) = &req.parent {
        validate::identifier("parent", p, limits)?;
    }
    if let Some(t) = &req.trace_id {
        validate::identifier("trace_id", t, limits)?;
    }
    for (field, uid) in [
        ("principal", &req.principal),
        ("action", &req.action),
        ("resource", &req.resource),
    ] {
        if uid.is_empty() {
            return Err(InputError::Empty { field });
        }
        validate::bounded_text(field, uid, limits.max_uid_len)?;
        EntityUid::from_str(uid).map_err(|e| InputError::Cedar {
            field,
            message: format!(
                "not a Cedar entity UID (expected e.g. User::\"alice\"): {}",
                render(&e)
            ),
        })?;
    }
    Context::from_json_str(&req.context, None).map_err(|e| InputError::Cedar {
        field: "context",
        message: render(&e),
    })?;
    if let Some(ent) = &req.entities {
        Entities::from_json_str(ent, None).map_err(|e| InputError::Cedar {
            field: "entities",
            message: render(&e),
        })?;
    }
    Ok(())
}

/// The policy a decision is evaluated under: the active version of the
/// request's domain at the entry's log position.
#[derive(Debug, Clone, Copy)]
pub struct ActivePolicy<'a> {
    pub version: u64,
    pub hash: Digest,
    pub compiled: &'a CompiledPolicy,
}

/// What the domain's state was at the request's log position.
#[derive(Debug, Clone, Copy)]
pub enum DomainState<'a> {
    Unknown,
    NoActiveVersion,
    /// The active version is stored but cannot be compiled on this replica.
    Unverifiable {
        version: u64,
        hash: Digest,
    },
    Active(ActivePolicy<'a>),
}

/// Where a new record goes in the decision log.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub index: u64,
    pub log_index: u64,
    pub timestamp_ms: u64,
    pub prev_hash: Digest,
}

struct Evaluation {
    decision: Decision,
    reason: Option<DenyReason>,
    determining: Vec<String>,
    errors: Vec<String>,
}

fn deny(reason: DenyReason, errors: Vec<String>) -> Evaluation {
    Evaluation {
        decision: Decision::Deny,
        reason: Some(reason),
        determining: vec![],
        errors,
    }
}

fn evaluate(req: &AuthorizeRequest, policy: &CompiledPolicy) -> Evaluation {
    evaluate_with(req, policy, true)
}

/// `evaluate`, with the policy index (`use_index`) or over the whole set;
/// both give the same evaluation (`index.rs`, and its test).
fn evaluate_with(req: &AuthorizeRequest, policy: &CompiledPolicy, use_index: bool) -> Evaluation {
    let schema = policy.schema.as_ref();
    let mut subset = None;
    let parse =
        |subset: &mut Option<std::sync::Arc<PolicySet>>| -> Result<(Request, Entities), String> {
            let p = EntityUid::from_str(&req.principal).map_err(|e| render(&e))?;
            let a = EntityUid::from_str(&req.action).map_err(|e| render(&e))?;
            let r = EntityUid::from_str(&req.resource).map_err(|e| render(&e))?;
            if use_index {
                *subset = policy.index.subset(&p, &a, &r);
            }
            let ctx = Context::from_json_str(&req.context, schema.map(|s| (s, &a)))
                .map_err(|e| render(&e))?;
            let request = Request::new(p, a, r, ctx, schema).map_err(|e| render(&e))?;
            let entities = match &req.entities {
                Some(json) => Entities::from_json_str(json, schema).map_err(|e| render(&e))?,
                None => Entities::empty(),
            };
            let entities = entities
                .add_entities(policy.schema_entities.iter().cloned(), None)
                .map_err(|e| render(&e))?;
            Ok((request, entities))
        };
    let (request, entities) = match parse(&mut subset) {
        Ok(v) => v,
        // The request passed the edge checks but not the schema active at
        // its log position: a deterministic DENY, recorded with the reason.
        Err(msg) => return deny(DenyReason::InvalidRequest, vec![msg]),
    };
    let policies = subset.as_deref().unwrap_or(&policy.policies);
    let response = Authorizer::new().is_authorized(&request, policies, &entities);
    // Cedar's diagnostics come from hash sets and policy-set iteration; sort
    // them so every replica records identical bytes (invariant 3).
    let mut determining: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    determining.sort();
    let mut errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect();
    errors.sort();
    match response.decision() {
        cedar_policy::Decision::Allow => Evaluation {
            decision: Decision::Allow,
            reason: None,
            determining,
            errors,
        },
        cedar_policy::Decision::Deny => Evaluation {
            decision: Decision::Deny,
            reason: Some(DenyReason::Policy),
            determining,
            errors,
        },
    }
}

/// The decision function: a pure function of the request, the domain's state
/// at the entry's log position and the position itself (invariant 3).
/// A rollout candidate a domain's decisions are evaluated under, in shadow:
/// recorded, never enforced.
#[derive(Debug, Clone, Copy)]
pub struct ShadowPolicy<'a> {
    pub rollout_id: &'a str,
    pub version: u64,
    pub hash: Digest,
    pub compiled: &'a CompiledPolicy,
}

/// `decide`, plus the candidate's outcome in `record.shadow` when the
/// domain is in a rollout stage's shadow. The enforced decision is exactly
/// `decide`'s: the candidate only adds the shadow section.
pub fn decide_with_shadow(
    req: &AuthorizeRequest,
    domain: DomainState<'_>,
    shadow: Option<ShadowPolicy<'_>>,
    at: Position,
) -> DecisionRecord {
    let mut record = decide(req, domain, at);
    if let Some(c) = shadow {
        let e = evaluate(req, c.compiled);
        record.shadow = Some(Box::new(ShadowOutcome {
            rollout_id: c.rollout_id.to_string(),
            candidate_version: c.version,
            candidate_hash: c.hash,
            decision: e.decision,
            reason: e.reason,
            determining_policies: e.determining,
            errors: e.errors,
        }));
        record = record.seal();
    }
    record
}

pub fn decide(req: &AuthorizeRequest, domain: DomainState<'_>, at: Position) -> DecisionRecord {
    let (eval, version, hash) = match domain {
        DomainState::Unknown => (deny(DenyReason::UnknownDomain, vec![]), None, None),
        DomainState::NoActiveVersion => (deny(DenyReason::NoActivePolicy, vec![]), None, None),
        DomainState::Unverifiable { version, hash } => (
            deny(DenyReason::UnverifiablePolicy, vec![]),
            Some(version),
            Some(hash),
        ),
        DomainState::Active(p) => (evaluate(req, p.compiled), Some(p.version), Some(p.hash)),
    };
    DecisionRecord {
        index: at.index,
        log_index: at.log_index,
        request: req.clone(),
        decision: eval.decision,
        reason: eval.reason,
        determining_policies: eval.determining,
        errors: eval.errors,
        policy_version: version,
        policy_hash: hash,
        timestamp_ms: at.timestamp_ms,
        prev_hash: at.prev_hash,
        hash: GENESIS_HASH,
        shadow: None,
    }
    .seal()
}

#[cfg(test)]
mod tests;

/// Re-evaluates exported decisions for the offline verifier
/// (`quorate_core::verify`): the same `decide` every replica ran, under the
/// policy version the export says was active. Compiled versions are cached.
#[derive(Debug, Default)]
pub struct CedarReevaluator {
    limits: Limits,
    compiled: std::collections::HashMap<(String, u64), Option<CompiledPolicy>>,
}

impl CedarReevaluator {
    pub fn new(limits: Limits) -> CedarReevaluator {
        CedarReevaluator {
            limits,
            compiled: Default::default(),
        }
    }
}

impl CedarReevaluator {
    fn compiled(&mut self, pv: &PolicyVersion) -> Option<&CompiledPolicy> {
        let limits = &self.limits;
        self.compiled
            .entry((pv.domain.clone(), pv.version))
            .or_insert_with(|| {
                CompiledPolicy::compile(&pv.policy_text, pv.schema.as_deref(), limits).ok()
            })
            .as_ref()
    }
}

impl quorate_core::verify::Reevaluator for CedarReevaluator {
    fn reevaluate(
        &mut self,
        record: &DecisionRecord,
        policy: quorate_core::verify::PolicyAt<'_>,
        candidate: Option<&PolicyVersion>,
    ) -> DecisionRecord {
        use quorate_core::verify::PolicyAt;
        let at = Position {
            index: record.index,
            log_index: record.log_index,
            timestamp_ms: record.timestamp_ms,
            prev_hash: record.prev_hash,
        };
        // Compile both first: the cache hands out borrows of itself.
        if let PolicyAt::Active(pv) = policy {
            self.compiled(pv);
        }
        if let Some(c) = candidate {
            self.compiled(c);
        }
        let cached = |pv: &PolicyVersion| {
            self.compiled
                .get(&(pv.domain.clone(), pv.version))
                .and_then(Option::as_ref)
        };
        let state = match policy {
            PolicyAt::UnknownDomain => DomainState::Unknown,
            PolicyAt::NoActiveVersion => DomainState::NoActiveVersion,
            PolicyAt::Active(pv) => match cached(pv) {
                Some(c) => DomainState::Active(ActivePolicy {
                    version: pv.version,
                    hash: pv.hash,
                    compiled: c,
                }),
                None => DomainState::Unverifiable {
                    version: pv.version,
                    hash: pv.hash,
                },
            },
        };
        let rollout_id = record.shadow.as_ref().map_or("", |s| s.rollout_id.as_str());
        let shadow = candidate.and_then(|pv| {
            cached(pv).map(|c| ShadowPolicy {
                rollout_id,
                version: pv.version,
                hash: pv.hash,
                compiled: c,
            })
        });
        decide_with_shadow(&record.request, state, shadow, at)
    }
}
