//! Every command's logic, on the in-memory rows: what it answers, what it
//! writes, and that a refusal writes nothing and changes no state.

use quorate_core::proof::checkpoint_message;
use quorate_core::rollout::{Candidate, RolloutPlan, StagePlan};
use quorate_core::validate::Limits;
use quorate_core::{
    AuthorizeRequest, Command, CommandResponse, Cosignature, Decision, DenyReason, Digest,
    ErrorCode, SecretKey,
};

use crate::{
    Applied, CheckpointVoter, Context, GovernanceState, Machine, MachineError, MemoryRows, Write,
};

const ALICE_ONLY: &str = r#"permit(principal == User::"alice", action, resource);"#;
const ALICE_AND_BOB: &str = r#"permit(principal, action, resource) when { principal == User::"alice" || principal == User::"bob" };"#;

/// One replica: the machine, its rows, its in-memory state, its voters.
struct Replica {
    machine: Machine,
    rows: MemoryRows,
    st: GovernanceState,
    keys: Vec<SecretKey>,
    voters: Vec<CheckpointVoter>,
    log_index: u64,
}

impl Replica {
    fn new() -> Replica {
        let keys: Vec<SecretKey> = (1..=3u8).map(|b| SecretKey::from_seed([b; 32])).collect();
        let voters = keys
            .iter()
            .enumerate()
            .map(|(i, k)| CheckpointVoter {
                node_id: i as u64 + 1,
                public_key: k.public(),
            })
            .collect();
        Replica {
            machine: Machine::new(Limits::default(), "c"),
            rows: MemoryRows::default(),
            st: GovernanceState::default(),
            keys,
            voters,
            log_index: 0,
        }
    }

    /// Applies `cmd` as the next entry, as the store does: on a copy of the
    /// state, kept (with the writes) only on success.
    fn apply(&mut self, cmd: &Command) -> Result<Applied, MachineError> {
        self.log_index += 1;
        let mut st = self.st.clone();
        let cx = Context {
            log_index: self.log_index,
            voters: &self.voters,
        };
        let applied = self.machine.apply(&self.rows, cmd, cx, &mut st)?;
        self.rows.write(&applied.writes);
        self.st = st;
        Ok(applied)
    }

    fn ok(&mut self, cmd: &Command) -> Applied {
        self.apply(cmd).unwrap_or_else(|e| panic!("apply: {e}"))
    }

    /// A cosignature of voter `i` (0-based) over this replica's root at
    /// `size` (or over `root` if given).
    fn cosignature(&self, i: usize, size: u64, root: Option<Digest>) -> Cosignature {
        let root = root.unwrap_or_else(|| self.root_at(size));
        Cosignature {
            node_id: i as u64 + 1,
            signature: self.keys[i].sign(&checkpoint_message("c", size, &root)),
        }
    }

    fn root_at(&self, size: u64) -> Digest {
        assert_eq!(size, self.st.proof.frontier.size(), "tests sign the head");
        self.st.proof.frontier.root()
    }
}

fn req(domain: &str, id: &str, who: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        domain: domain.into(),
        request_id: id.into(),
        principal: format!(r#"User::"{who}""#),
        action: r#"Action::"read""#.into(),
        resource: r#"Doc::"1""#.into(),
        context: "{}".into(),
        entities: None,
        parent: None,
        trace_id: None,
    }
}

fn authorize(requests: Vec<AuthorizeRequest>) -> Command {
    Command::Authorize {
        requests,
        timestamp_ms: 1_000,
    }
}

fn publish(domain: &str, text: &str, activate: bool) -> Command {
    Command::PublishPolicy {
        domain: domain.into(),
        policy_text: text.into(),
        schema: None,
        activate,
        signature: None,
        timestamp_ms: 10,
    }
}

fn activate(domain: &str, version: u64) -> Command {
    Command::ActivatePolicy {
        domain: domain.into(),
        version,
        timestamp_ms: 20,
    }
}

fn outcomes(a: &Applied) -> Vec<(Decision, Option<DenyReason>, bool)> {
    match &a.response {
        CommandResponse::Authorized(o) => o
            .iter()
            .map(|o| (o.record.decision, o.record.reason, o.replayed))
            .collect(),
        other => panic!("not an authorization: {other:?}"),
    }
}

fn rejected(a: &Applied) -> Option<ErrorCode> {
    match &a.response {
        CommandResponse::Rejected(r) => Some(r.code),
        _ => None,
    }
}

#[test]
fn decisions_follow_the_active_version_and_chain() {
    let mut r = Replica::new();
    let unknown = r.ok(&authorize(vec![req("docs", "a", "alice")]));
    assert_eq!(
        outcomes(&unknown),
        vec![(Decision::Deny, Some(DenyReason::UnknownDomain), false)]
    );
    r.ok(&publish("docs", ALICE_ONLY, false));
    let inactive = r.ok(&authorize(vec![req("docs", "b", "alice")]));
    assert_eq!(
        outcomes(&inactive),
        vec![(Decision::Deny, Some(DenyReason::NoActivePolicy), false)]
    );
    r.ok(&activate("docs", 1));
    let batch = r.ok(&authorize(vec![
        req("docs", "c", "alice"),
        req("docs", "d", "bob"),
    ]));
    assert_eq!(
        outcomes(&batch),
        vec![
            (Decision::Allow, None, false),
            (Decision::Deny, Some(DenyReason::Policy), false)
        ]
    );
    // Chained from genesis, dense, each hash valid; the head and the Merkle
    // frontier are the records'.
    let mut chain = quorate_core::Chain::new();
    for rec in r.rows.decisions.values() {
        chain.push(rec).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(chain.records(), 4);
    assert_eq!(
        (r.st.head.count, r.st.head.hash),
        (chain.records(), chain.head())
    );
    assert_eq!(r.st.proof.frontier.root(), chain.root());
    // Each record's writes: its Merkle nodes, itself, its request id.
    let kinds: Vec<&str> = batch
        .writes
        .iter()
        .map(|w| match w {
            Write::Decision(_) => "decision",
            Write::RequestId { .. } => "request",
            Write::MerkleNode { .. } => "merkle",
            _ => "other",
        })
        .filter(|k| *k != "merkle")
        .collect();
    assert_eq!(kinds, ["decision", "request", "decision", "request"]);
}

#[test]
fn a_request_id_is_decided_once() {
    let mut r = Replica::new();
    r.ok(&publish("docs", ALICE_ONLY, true));
    let first = r.ok(&authorize(vec![req("docs", "x", "alice")]));
    assert_eq!(outcomes(&first), vec![(Decision::Allow, None, false)]);
    // Retried under the same id (even with another principal): the stored
    // decision, nothing appended.
    let again = r.ok(&authorize(vec![req("docs", "x", "bob")]));
    assert_eq!(outcomes(&again), vec![(Decision::Allow, None, true)]);
    assert!(again.writes.is_empty(), "{:?}", again.writes);
    // Twice in one entry: decided once.
    let twice = r.ok(&authorize(vec![
        req("docs", "y", "bob"),
        req("docs", "y", "bob"),
    ]));
    assert_eq!(
        outcomes(&twice),
        vec![
            (Decision::Deny, Some(DenyReason::Policy), false),
            (Decision::Deny, Some(DenyReason::Policy), true)
        ]
    );
    assert_eq!(r.st.head.count, 2);
    // The same id in another domain is another request.
    let other = r.ok(&authorize(vec![req("other", "x", "alice")]));
    assert!(!outcomes(&other)[0].2);
}

#[test]
fn a_replayed_record_altered_at_rest_fails_the_apply() {
    let mut r = Replica::new();
    r.ok(&publish("docs", ALICE_ONLY, true));
    r.ok(&authorize(vec![req("docs", "b", "bob")]));
    if let Some(rec) = r.rows.decisions.get_mut(&1) {
        rec.decision = Decision::Allow;
        rec.reason = None;
    }
    let before = (r.st.clone(), r.rows.clone());
    let e = r.apply(&authorize(vec![req("docs", "b", "bob")]));
    assert!(matches!(e, Err(MachineError::Corrupt { .. })), "{e:?}");
    assert_eq!((r.st.clone(), r.rows.clone()), before, "nothing changed");
}

#[test]
fn refusals_write_nothing_and_change_nothing() {
    let mut base = Replica::new();
    base.ok(&publish("docs", ALICE_ONLY, true));
    base.ok(&authorize(vec![req("docs", "a", "alice")]));
    let other = SecretKey::from_seed([9; 32]);
    let mut forged_sig = quorate_core::PolicySignature::sign(&other, ALICE_AND_BOB, None);
    forged_sig.signature = other.sign(b"something else");
    let rows: Vec<(&str, Command, ErrorCode)> = vec![
        (
            "policy that does not compile",
            publish("docs", "permit(", false),
            ErrorCode::InvalidPolicy,
        ),
        (
            "domain name out of bounds",
            publish("no spaces allowed", ALICE_ONLY, false),
            ErrorCode::InvalidArgument,
        ),
        (
            "signature that does not verify",
            Command::PublishPolicy {
                domain: "docs".into(),
                policy_text: ALICE_AND_BOB.into(),
                schema: None,
                activate: false,
                signature: Some(forged_sig),
                timestamp_ms: 10,
            },
            ErrorCode::InvalidArgument,
        ),
        (
            "activate an unknown domain",
            activate("nope", 1),
            ErrorCode::NotFound,
        ),
        (
            "activate version 0",
            activate("docs", 0),
            ErrorCode::NotFound,
        ),
        (
            "activate a version not published",
            activate("docs", 2),
            ErrorCode::NotFound,
        ),
        (
            "cosign beyond the log",
            Command::Cosign {
                signer: 1,
                size: 9,
                root: Digest([0; 32]),
                signature: base.keys[0].sign(b"x"),
            },
            ErrorCode::InvalidArgument,
        ),
        (
            "checkpoint without cosignatures",
            Command::Checkpoint {
                size: 1,
                root: base.root_at(1),
                cosignatures: vec![],
            },
            ErrorCode::InvalidArgument,
        ),
        (
            "promote with no rollout",
            Command::PromoteRollout {
                id: String::new(),
                force: false,
                timestamp_ms: 30,
            },
            ErrorCode::NotFound,
        ),
        (
            "rollout with a candidate that does not compile",
            Command::StartRollout {
                plan: plan("r1", "permit("),
                timestamp_ms: 30,
            },
            ErrorCode::InvalidPolicy,
        ),
        (
            "rollout of a domain with no active version",
            Command::StartRollout {
                plan: RolloutPlan {
                    candidates: vec![Candidate {
                        domain: "fresh".into(),
                        ..plan("r1", ALICE_AND_BOB).candidates[0].clone()
                    }],
                    stages: vec![StagePlan {
                        domains: vec!["fresh".into()],
                        shadow_decisions: 0,
                        shadow_ms: 0,
                    }],
                    ..plan("r1", ALICE_AND_BOB)
                },
                timestamp_ms: 30,
            },
            ErrorCode::FailedPrecondition,
        ),
    ];
    for (name, cmd, code) in rows {
        let mut r = Replica {
            machine: Machine::new(Limits::default(), "c"),
            rows: base.rows.clone(),
            st: base.st.clone(),
            keys: base.keys.clone(),
            voters: base.voters.clone(),
            log_index: base.log_index,
        };
        let a = r.ok(&cmd);
        assert_eq!(rejected(&a), Some(code), "{name}: {:?}", a.response);
        assert!(a.writes.is_empty(), "{name}: wrote {:?}", a.writes);
        assert_eq!(r.st, base.st, "{name}: state changed");
        assert_eq!(r.rows, base.rows, "{name}: rows changed");
    }
}

#[test]
fn a_checkpoint_is_final_with_a_majority_of_valid_voter_cosignatures() {
    let mut r = Replica::new();
    r.ok(&publish("docs", ALICE_ONLY, true));
    r.ok(&authorize(vec![
        req("docs", "a", "alice"),
        req("docs", "b", "bob"),
    ]));
    let one = r.cosignature(0, 2, None);
    let a = r.ok(&Command::Checkpoint {
        size: 2,
        root: r.root_at(2),
        cosignatures: vec![one],
    });
    assert!(matches!(
        a.response,
        CommandResponse::Cosigned(quorate_core::Cosigned {
            cosigners: 1,
            became_final: false,
            ..
        })
    ));
    assert_eq!(r.st.proof.last_final, 0);
    // A learner's (not a voter's) signature, then a forged one: refused,
    // nothing counted.
    let learner = SecretKey::from_seed([7; 32]);
    let not_voter = r.ok(&Command::Cosign {
        signer: 4,
        size: 2,
        root: r.root_at(2),
        signature: learner.sign(&checkpoint_message("c", 2, &r.root_at(2))),
    });
    assert_eq!(rejected(&not_voter), Some(ErrorCode::InvalidArgument));
    let forged = r.ok(&Command::Cosign {
        signer: 2,
        size: 2,
        root: r.root_at(2),
        signature: r.keys[2].sign(&checkpoint_message("c", 2, &r.root_at(2))),
    });
    assert_eq!(rejected(&forged), Some(ErrorCode::InvalidArgument));
    // Voter 1 again (counted once) and voter 3: final at this entry.
    let (again, third) = (r.cosignature(0, 2, None), r.cosignature(2, 2, None));
    let a = r.ok(&Command::Checkpoint {
        size: 2,
        root: r.root_at(2),
        cosignatures: vec![again, third],
    });
    assert!(matches!(
        a.response,
        CommandResponse::Cosigned(quorate_core::Cosigned {
            cosigners: 2,
            became_final: true,
            ..
        })
    ));
    assert_eq!(r.st.proof.last_final, 2);
    let stored = &r.rows.checkpoints[&2];
    assert_eq!(stored.finalized_at, Some(r.log_index));
    assert_eq!(stored.cosigners(), vec![1, 3]);
    assert_eq!(a.progress.as_ref().map(|p| p.is_final), Some(true));
    // What it stored verifies as a final checkpoint under its voters.
    let judges: Vec<(u64, Option<&quorate_core::PublicKey>)> = stored
        .voters
        .iter()
        .map(|v| (v.node_id, Some(&v.public_key)))
        .collect();
    quorate_core::proof::verify_cosignatures(&stored.checkpoint, &judges)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_validly_signed_other_root_is_divergence_and_never_cosigned() {
    let mut r = Replica::new();
    r.ok(&publish("docs", ALICE_ONLY, true));
    r.ok(&authorize(vec![req("docs", "a", "alice")]));
    let theirs = Digest([5; 32]);
    let c = r.cosignature(1, 1, Some(theirs));
    let a = r.ok(&Command::Cosign {
        signer: 2,
        size: 1,
        root: theirs,
        signature: c.signature,
    });
    assert_eq!(rejected(&a), Some(ErrorCode::Contained));
    let d =
        r.st.divergence
            .clone()
            .unwrap_or_else(|| panic!("divergence"));
    assert_eq!((d.size, d.signer, d.their_root), (1, 2, theirs));
    assert_eq!(a.writes, vec![Write::Divergence(d)]);
    assert!(r.rows.checkpoints.is_empty(), "nothing cosigned");
}

fn plan(id: &str, candidate: &str) -> RolloutPlan {
    RolloutPlan {
        id: id.into(),
        candidates: vec![Candidate {
            domain: "docs".into(),
            policy_text: candidate.into(),
            schema: None,
            signature: None,
        }],
        stages: vec![StagePlan {
            domains: vec!["docs".into()],
            shadow_decisions: 1,
            shadow_ms: 0,
        }],
    }
}

#[test]
fn a_rollout_shadows_promotes_and_rolls_back() {
    let mut r = Replica::new();
    r.ok(&publish("docs", ALICE_ONLY, true));
    let started = r.ok(&Command::StartRollout {
        plan: plan("r1", ALICE_AND_BOB),
        timestamp_ms: 30,
    });
    assert!(
        matches!(started.response, CommandResponse::Rollout(_)),
        "{:?}",
        started.response
    );
    assert_eq!(r.rows.rollout_latest.as_deref(), Some("r1"));
    assert_eq!(r.st.domains["docs"].latest_version, 2);
    assert_eq!(r.st.domains["docs"].active_version, Some(1), "still v1");
    // In shadow: enforced by v1, the candidate's outcome recorded and
    // counted.
    let bob = r.ok(&authorize(vec![req("docs", "b", "bob")]));
    assert_eq!(
        outcomes(&bob),
        vec![(Decision::Deny, Some(DenyReason::Policy), false)]
    );
    let shadow = r.rows.decisions[&1]
        .shadow
        .clone()
        .unwrap_or_else(|| panic!("shadowed"));
    assert_eq!(
        (shadow.decision, shadow.candidate_version),
        (Decision::Allow, 2)
    );
    // A domain in the rollout refuses activation by hand.
    let by_hand = r.ok(&activate("docs", 2));
    assert_eq!(rejected(&by_hand), Some(ErrorCode::FailedPrecondition));
    // Another rollout while this one runs, or under its id: refused.
    let second = r.ok(&Command::StartRollout {
        plan: plan("r2", ALICE_AND_BOB),
        timestamp_ms: 31,
    });
    assert_eq!(rejected(&second), Some(ErrorCode::FailedPrecondition));
    let promoted = r.ok(&Command::PromoteRollout {
        id: "r1".into(),
        force: false,
        timestamp_ms: 40,
    });
    assert!(matches!(promoted.response, CommandResponse::Rollout(_)));
    assert_eq!(r.st.domains["docs"].active_version, Some(2));
    let bob = r.ok(&authorize(vec![req("docs", "b2", "bob")]));
    assert_eq!(outcomes(&bob), vec![(Decision::Allow, None, false)]);
    let back = r.ok(&Command::RollbackRollout {
        id: String::new(),
        timestamp_ms: 50,
    });
    assert!(matches!(back.response, CommandResponse::Rollout(_)));
    assert_eq!(r.st.domains["docs"].active_version, Some(1));
    // Every activation is recorded at its own log index.
    let versions: Vec<u64> = r.rows.activations.values().map(|a| a.version).collect();
    assert_eq!(versions, vec![1, 2, 1]);
    // The id stays taken once the rollout has ended.
    let reuse = r.ok(&Command::StartRollout {
        plan: plan("r1", ALICE_AND_BOB),
        timestamp_ms: 60,
    });
    assert_eq!(rejected(&reuse), Some(ErrorCode::FailedPrecondition));
}

#[test]
fn a_probe_is_answered_and_writes_and_changes_nothing() {
    let mut r = Replica::new();
    r.ok(&publish("docs", ALICE_ONLY, true));
    r.ok(&authorize(vec![req("docs", "a", "alice")]));
    let (rows, st) = (r.rows.clone(), r.st.clone());
    let applied = r.ok(&Command::Probe {
        probes: 7,
        timestamp_ms: 99,
    });
    assert_eq!(applied.response, CommandResponse::Probed(7));
    assert!(applied.writes.is_empty(), "{:?}", applied.writes);
    assert_eq!((r.rows.clone(), r.st.clone()), (rows, st));
    // The next decision chains on as if the probe had not been there.
    let next = r.ok(&authorize(vec![req("docs", "b", "alice")]));
    let mut plain = Replica::new();
    plain.ok(&publish("docs", ALICE_ONLY, true));
    plain.ok(&authorize(vec![req("docs", "a", "alice")]));
    plain.log_index += 1;
    assert_eq!(plain.ok(&authorize(vec![req("docs", "b", "alice")])), next);
}

#[test]
fn replicas_fed_the_same_commands_write_the_same_rows() {
    let cmds = [
        publish("docs", ALICE_ONLY, true),
        authorize(vec![req("docs", "a", "alice"), req("docs", "b", "bob")]),
        Command::StartRollout {
            plan: plan("r1", ALICE_AND_BOB),
            timestamp_ms: 30,
        },
        authorize(vec![req("docs", "c", "bob")]),
        activate("nope", 1),
    ];
    let run = || {
        let mut r = Replica::new();
        let writes: Vec<Vec<Write>> = cmds.iter().map(|c| r.ok(c).writes).collect();
        (writes, r.rows, r.st)
    };
    assert_eq!(run(), run());
}

#[cfg(feature = "fault-injection")]
#[test]
fn the_evaluation_fault_inverts_every_decision() {
    let mut honest = Replica::new();
    let mut wrong = Replica::new();
    wrong.machine.invert_decisions = true;
    for r in [&mut honest, &mut wrong] {
        r.ok(&publish("docs", ALICE_ONLY, true));
        r.ok(&authorize(vec![req("docs", "b", "bob")]));
    }
    assert_eq!(honest.rows.decisions[&1].decision, Decision::Deny);
    assert_eq!(wrong.rows.decisions[&1].decision, Decision::Allow);
    assert_ne!(
        honest.st.proof.frontier.root(),
        wrong.st.proof.frontier.root()
    );
}
