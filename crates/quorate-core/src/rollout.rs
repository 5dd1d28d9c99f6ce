//! Staged cross-domain rollouts: one plan for a policy change across
//! several domains, rolled out stage by stage.
//!
//! A rollout starts by publishing every candidate as a new, inactive
//! version; its first stage then goes into **shadow**: every decision in
//! that stage's domains is also evaluated under the candidate, and the
//! outcome is part of the decision record (`DecisionRecord::shadow`) and
//! counted here. **Promote** activates the stage's candidates at one log
//! index on every node and puts the next stage in shadow; **rollback**
//! reactivates, at one log index, the version every promoted domain had
//! before. All of it is state-machine state, changed only by log entries,
//! so every replica holds identical rollouts (invariant 4), and a domain
//! in a rollout always has an active version.
//!
//! This module holds the plan, the state and its pure transitions; the
//! state machine (`quorate-store`) drives them and Cedar evaluates.

use serde::{Deserialize, Serialize};

use crate::proof::PolicySignature;
use crate::record::{Decision, DecisionRecord, Digest};
use crate::validate::{self, Limits};

/// Differing decisions kept as samples per domain (the first ones).
pub const MAX_SAMPLES: usize = 10;

/// The most domains one plan may touch.
pub const MAX_DOMAINS: usize = 64;

/// A rollout as an operator writes it (`quorate rollout start --plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    /// Operator-chosen, unique in the cluster's history; the same
    /// characters as a domain name.
    pub id: String,
    /// One candidate policy per domain.
    pub candidates: Vec<Candidate>,
    /// Rolled out in order; every candidate's domain in exactly one stage.
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub domain: String,
    pub policy_text: String,
    #[serde(default)]
    pub schema: Option<String>,
    /// Required when the cluster requires signed policies.
    #[serde(default)]
    pub signature: Option<PolicySignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagePlan {
    pub domains: Vec<String>,
    /// Promote refuses (without `force`) until the stage has shadowed at
    /// least this many decisions...
    #[serde(default)]
    pub shadow_decisions: u64,
    /// ...and has been in shadow at least this long (leader clock, as
    /// recorded in the log).
    #[serde(default)]
    pub shadow_ms: u64,
}

/// Why a plan or a transition is refused. Every refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout plan: {0}")]
    Plan(String),
    #[error("rollout {id:?}: {message}")]
    State { id: String, message: String },
}

impl RolloutPlan {
    /// Checks the plan's shape (not the policies: Cedar is not here).
    pub fn check(&self, limits: &Limits) -> Result<(), RolloutError> {
        let bad = |m: String| Err(RolloutError::Plan(m));
        if validate::domain(&self.id, limits).is_err() {
            return bad(format!(
                "id {:?} must be 1-{} characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit",
                self.id, limits.max_domain_len
            ));
        }
        if self.stages.is_empty() {
            return bad("has no stages; list at least one [[stages]] with its domains".into());
        }
        if self.candidates.is_empty() || self.candidates.len() > MAX_DOMAINS {
            return bad(format!(
                "needs 1 to {MAX_DOMAINS} candidates, one per domain; it has {}",
                self.candidates.len()
            ));
        }
        for c in &self.candidates {
            if let Err(e) = validate::domain(&c.domain, limits) {
                return bad(format!("candidate domain: {e}"));
            }
            if self
                .candidates
                .iter()
                .filter(|o| o.domain == c.domain)
                .count()
                > 1
            {
                return bad(format!("domain {:?} has two candidates", c.domain));
            }
            let stages = self
                .stages
                .iter()
                .filter(|s| s.domains.contains(&c.domain))
                .count();
            if stages != 1 {
                return bad(format!(
                    "domain {:?} must be in exactly one stage; it is in {stages}",
                    c.domain
                ));
            }
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.domains.is_empty() {
                return bad(format!("stage {} lists no domains", i + 1));
            }
            for d in &s.domains {
                if self.candidate(d).is_none() {
                    return bad(format!(
                        "stage {} names domain {d:?}, which has no candidate",
                        i + 1
                    ));
                }
                if s.domains.iter().filter(|o| *o == d).count() > 1 {
                    return bad(format!("stage {} lists {d:?} twice", i + 1));
                }
            }
        }
        Ok(())
    }

    pub fn candidate(&self, domain: &str) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.domain == domain)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `stage` is in shadow.
    Shadow,
    /// Every stage was promoted.
    Complete,
    RolledBack,
}

/// A rollout's state, identical on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub started_log_index: u64,
    pub started_ms: u64,
    pub phase: Phase,
    /// The stage in shadow (while `phase` is `shadow`), 0-based.
    pub stage: usize,
    pub stages: Vec<StageState>,
    /// The log index that completed or rolled back the rollout.
    pub ended_log_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageState {
    pub domains: Vec<DomainRollout>,
    pub shadow_decisions: u64,
    pub shadow_ms: u64,
    /// When the stage went into shadow.
    pub shadow_since_log_index: Option<u64>,
    pub shadow_since_ms: Option<u64>,
    /// The log index at which its candidates became active.
    pub promoted_log_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRollout {
    pub domain: String,
    /// The version active when the rollout started; rollback restores it.
    pub previous_version: u64,
    pub candidate_version: u64,
    pub candidate_hash: Digest,
    pub counts: ShadowCounts,
    /// The first differing decisions.
    pub samples: Vec<ShadowSample>,
}

/// Shadowed decisions of one domain, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowCounts {
    pub shadowed: u64,
    /// The candidate decides the same (ALLOW/DENY) as the active version.
    pub same: u64,
    /// ALLOW now, DENY under the candidate.
    pub allow_to_deny: u64,
    /// DENY now, ALLOW under the candidate.
    pub deny_to_allow: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowSample {
    pub index: u64,
    pub request_id: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    pub current: Decision,
    pub candidate: Decision,
}

impl Rollout {
    /// A new rollout whose first stage goes into shadow at `log_index`.
    /// `versions` gives, per candidate domain, (previous active version,
    /// candidate version, candidate hash).
    pub fn start(
        plan: &RolloutPlan,
        log_index: u64,
        timestamp_ms: u64,
        versions: impl Fn(&str) -> (u64, u64, Digest),
    ) -> Rollout {
        let stages = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StageState {
                domains: s
                    .domains
                    .iter()
                    .map(|d| {
                        let (previous_version, candidate_version, candidate_hash) = versions(d);
                        DomainRollout {
                            domain: d.clone(),
                            previous_version,
                            candidate_version,
                            candidate_hash,
                            counts: ShadowCounts::default(),
                            samples: Vec::new(),
                        }
                    })
                    .collect(),
                shadow_decisions: s.shadow_decisions,
                shadow_ms: s.shadow_ms,
                shadow_since_log_index: (i == 0).then_some(log_index),
                shadow_since_ms: (i == 0).then_some(timestamp_ms),
                promoted_log_index: None,
            })
            .collect();
        Rollout {
            id: plan.id.clone(),
            started_log_index: log_index,
            started_ms: timestamp_ms,
            phase: Phase::Shadow,
            stage: 0,
            stages,
            ended_log_index: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.phase == Phase::Shadow
    }

    /// Every domain of the rollout.
    pub fn domains(&self) -> impl Iterator<Item = &DomainRollout> {
        self.stages.iter().flat_map(|s| s.domains.iter())
    }

    /// The candidate `domain`'s decisions are shadowed under now, if any.
    pub fn shadow_for(&self, domain: &str) -> Option<&DomainRollout> {
        if !self.is_active() {
            return None;
        }
        self.stages
            .get(self.stage)?
            .domains
            .iter()
            .find(|d| d.domain == domain)
    }

    /// Counts a committed record that carries this rollout's shadow.
    pub fn count(&mut self, record: &DecisionRecord) {
        let Some(shadow) = record.shadow.as_ref().filter(|s| s.rollout_id == self.id) else {
            return;
        };
        let Some(d) = self
            .stages
            .iter_mut()
            .flat_map(|s| s.domains.iter_mut())
            .find(|d| d.domain == record.request.domain)
        else {
            return;
        };
        let c = &mut d.counts;
        c.shadowed += 1;
        match (record.decision, shadow.decision) {
            (Decision::Allow, Decision::Deny) => c.allow_to_deny += 1,
            (Decision::Deny, Decision::Allow) => c.deny_to_allow += 1,
            _ => c.same += 1,
        }
        if shadow.differs_from(record.decision) && d.samples.len() < MAX_SAMPLES {
            d.samples.push(ShadowSample {
                index: record.index,
                request_id: record.request.request_id.clone(),
                principal: record.request.principal.clone(),
                action: record.request.action.clone(),
                resource: record.request.resource.clone(),
                current: record.decision,
                candidate: shadow.decision,
            });
        }
    }

    fn refuse(&self, message: impl Into<String>) -> RolloutError {
        RolloutError::State {
            id: self.id.clone(),
            message: message.into(),
        }
    }

    /// Whether the stage in shadow may be promoted at `now_ms`.
    pub fn check_promotable(&self, now_ms: u64, force: bool) -> Result<(), RolloutError> {
        if !self.is_active() {
            return Err(self.refuse(format!(
                "is {:?}; only a rollout in shadow can be promoted",
                self.phase
            )));
        }
        let Some(s) = self.stages.get(self.stage) else {
            return Err(self.refuse("has no stage in shadow"));
        };
        if force {
            return Ok(());
        }
        let shadowed: u64 = s.domains.iter().map(|d| d.counts.shadowed).sum();
        if shadowed < s.shadow_decisions {
            return Err(self.refuse(format!(
                "stage {} has shadowed {shadowed} of the {} decisions its plan asks for; \
                 wait, or promote with --force",
                self.stage + 1,
                s.shadow_decisions
            )));
        }
        let since = s.shadow_since_ms.unwrap_or(now_ms);
        let elapsed = now_ms.saturating_sub(since);
        if elapsed < s.shadow_ms {
            return Err(self.refuse(format!(
                "stage {} has been in shadow {elapsed} ms of the {} ms its plan asks for; \
                 wait, or promote with --force",
                self.stage + 1,
                s.shadow_ms
            )));
        }
        Ok(())
    }

    /// Marks the stage in shadow promoted at `log_index` and puts the next
    /// one in shadow (or completes). Returns the (domain, version) pairs to
    /// activate, all at `log_index`.
    pub fn promote(&mut self, log_index: u64, timestamp_ms: u64) -> Vec<(String, u64)> {
        let Some(s) = self.stages.get_mut(self.stage) else {
            return Vec::new();
        };
        s.promoted_log_index = Some(log_index);
        let activate = s
            .domains
            .iter()
            .map(|d| (d.domain.clone(), d.candidate_version))
            .collect();
        self.stage += 1;
        match self.stages.get_mut(self.stage) {
            Some(next) => {
                next.shadow_since_log_index = Some(log_index);
                next.shadow_since_ms = Some(timestamp_ms);
            }
            None => {
                self.phase = Phase::Complete;
                self.ended_log_index = Some(log_index);
            }
        }
        activate
    }

    /// Whether the rollout may be rolled back: in shadow, or complete.
    pub fn check_rollbackable(&self) -> Result<(), RolloutError> {
        match self.phase {
            Phase::Shadow | Phase::Complete => Ok(()),
            Phase::RolledBack => Err(self.refuse("is already rolled back")),
        }
    }

    /// Ends the rollout at `log_index`. Returns, for every promoted domain,
    /// the version to reactivate (its version before the rollout).
    pub fn roll_back(&mut self, log_index: u64) -> Vec<(String, u64)> {
        let restore = self
            .stages
            .iter()
            .filter(|s| s.promoted_log_index.is_some())
            .flat_map(|s| s.domains.iter())
            .map(|d| (d.domain.clone(), d.previous_version))
            .collect();
        self.phase = Phase::RolledBack;
        self.ended_log_index = Some(log_index);
        restore
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AuthorizeRequest, GENESIS_HASH, ShadowOutcome};

    fn plan() -> RolloutPlan {
        let cand = |d: &str| Candidate {
            domain: d.into(),
            policy_text: "permit(principal, action, resource);".into(),
            schema: None,
            signature: None,
        };
        RolloutPlan {
            id: "r1".into(),
            candidates: vec![cand("a"), cand("b"), cand("c")],
            stages: vec![
                StagePlan {
                    domains: vec!["a".into()],
                    shadow_decisions: 2,
                    shadow_ms: 0,
                },
                StagePlan {
                    domains: vec!["b".into(), "c".into()],
                    shadow_decisions: 0,
                    shadow_ms: 1000,
                },
            ],
        }
    }

    fn record(domain: &str, index: u64, now: Decision, cand: Option<Decision>) -> DecisionRecord {
        DecisionRecord {
            index,
            log_index: index,
            request: AuthorizeRequest {
                domain: domain.into(),
                request_id: format!("q{index}"),
                principal: "User::\"u\"".into(),
                action: "Action::\"a\"".into(),
                resource: "Doc::\"d\"".into(),
                context: "{}".into(),
                entities: None,
                parent: None,
                trace_id: None,
            },
            decision: now,
            reason: None,
            determining_policies: vec![],
            errors: vec![],
            policy_version: Some(1),
            policy_hash: None,
            timestamp_ms: 0,
            prev_hash: GENESIS_HASH,
            hash: GENESIS_HASH,
            shadow: cand.map(|d| {
                Box::new(ShadowOutcome {
                    rollout_id: "r1".into(),
                    candidate_version: 2,
                    candidate_hash: Digest::default(),
                    decision: d,
                    reason: None,
                    determining_policies: vec![],
                    errors: vec![],
                })
            }),
        }
    }

    #[test]
    fn plans_are_checked() {
        let limits = Limits::default();
        assert!(plan().check(&limits).is_ok());
        let mut p = plan();
        p.stages[1].domains.push("a".into());
        assert!(p.check(&limits).is_err(), "a domain in two stages");
        let mut p = plan();
        p.stages[1].domains.pop();
        assert!(p.check(&limits).is_err(), "a candidate in no stage");
        let mut p = plan();
        p.stages[0].domains.push("zz".into());
        assert!(
            p.check(&limits).is_err(),
            "a stage domain without candidate"
        );
        let mut p = plan();
        p.id = "Bad Id".into();
        assert!(p.check(&limits).is_err());
        let mut p = plan();
        p.stages.clear();
        assert!(p.check(&limits).is_err());
        let mut p = plan();
        p.candidates.push(p.candidates[0].clone());
        assert!(p.check(&limits).is_err(), "two candidates for one domain");
    }

    #[test]
    fn stages_shadow_promote_and_roll_back_in_order() {
        let mut r = Rollout::start(&plan(), 10, 1_000, |d| (1, 2, Digest([d.len() as u8; 32])));
        assert!(r.shadow_for("a").is_some());
        assert!(r.shadow_for("b").is_none(), "stage 2 is not in shadow yet");
        // The shadow minimum holds promote back, unless forced.
        assert!(r.check_promotable(1_000, false).is_err());
        assert!(r.check_promotable(1_000, true).is_ok());
        r.count(&record("a", 1, Decision::Allow, Some(Decision::Deny)));
        r.count(&record("a", 2, Decision::Allow, Some(Decision::Allow)));
        r.count(&record("a", 3, Decision::Deny, Some(Decision::Allow)));
        r.count(&record("a", 4, Decision::Deny, None));
        let c = r.stages[0].domains[0].counts;
        assert_eq!(
            (c.shadowed, c.same, c.allow_to_deny, c.deny_to_allow),
            (3, 1, 1, 1)
        );
        assert_eq!(r.stages[0].domains[0].samples.len(), 2);
        assert!(r.check_promotable(1_000, false).is_ok());
        assert_eq!(r.promote(20, 2_000), vec![("a".to_string(), 2)]);
        assert!(r.shadow_for("a").is_none());
        assert!(r.shadow_for("c").is_some());
        // Stage 2 asks for a second in shadow.
        assert!(r.check_promotable(2_500, false).is_err());
        assert!(r.check_promotable(3_000, false).is_ok());
        // Rollback restores only what was promoted.
        assert_eq!(r.roll_back(30), vec![("a".to_string(), 1)]);
        assert_eq!(r.phase, Phase::RolledBack);
        assert!(r.check_rollbackable().is_err());
        assert!(r.check_promotable(9_000, true).is_err());
    }

    #[test]
    fn samples_are_bounded() {
        let mut r = Rollout::start(&plan(), 1, 0, |_| (1, 2, Digest::default()));
        for i in 0..100 {
            r.count(&record("a", i, Decision::Allow, Some(Decision::Deny)));
        }
        let d = &r.stages[0].domains[0];
        assert_eq!(d.counts.allow_to_deny, 100);
        assert_eq!(d.samples.len(), MAX_SAMPLES);
        assert_eq!(d.samples[0].index, 0, "the first ones are kept");
    }

    #[test]
    fn completes_after_the_last_stage() {
        let mut r = Rollout::start(&plan(), 1, 0, |_| (1, 2, Digest::default()));
        r.promote(2, 0);
        let activated = r.promote(3, 0);
        assert_eq!(activated.len(), 2);
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(r.ended_log_index, Some(3));
        assert_eq!(r.roll_back(4).len(), 3);
    }
}
