//! The state machine on real RocksDB: decisions, idempotency, determinism
//! across replicas and restarts, snapshots, and tamper detection.

use futures::stream;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use quorate_core::validate::Limits;
use quorate_core::{AuthorizeRequest, Command, Decision, DecisionRecord, DenyReason};
use quorate_raft::TypeConfig;
use quorate_store::{StateMachine, Store};

const POLICY: &str = r#"permit(principal == User::"alice", action == Action::"read", resource);"#;

fn req(domain: &str, rid: &str, who: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        domain: domain.into(),
        request_id: rid.into(),
        principal: format!("User::\"{who}\""),
        action: r#"Action::"read""#.into(),
        resource: r#"Doc::"1""#.into(),
        context: "{}".into(),
        entities: None,
        parent: None,
        trace_id: None,
    }
}

fn entry(index: u64, cmd: Command) -> quorate_raft::Entry {
    Entry {
        log_id: log_id::<TypeConfig>(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn publish(activate: bool) -> Command {
    Command::PublishPolicy {
        domain: "demo".into(),
        policy_text: POLICY.into(),
        schema: None,
        activate,
        signature: None,
        timestamp_ms: 10,
    }
}

fn authorize(requests: Vec<AuthorizeRequest>, ts: u64) -> Command {
    Command::Authorize {
        requests,
        timestamp_ms: ts,
    }
}

/// A fixed, varied history used by several tests.
fn history() -> Vec<quorate_raft::Entry> {
    vec![
        entry(1, authorize(vec![req("demo", "early", "alice")], 5)),
        entry(2, publish(false)),
        entry(3, authorize(vec![req("demo", "inactive", "alice")], 11)),
        entry(
            4,
            Command::ActivatePolicy {
                domain: "demo".into(),
                version: 1,
                timestamp_ms: 12,
            },
        ),
        entry(
            5,
            authorize(
                vec![
                    req("demo", "a1", "alice"),
                    req("demo", "b1", "bob"),
                    req("demo", "a1", "alice"),
                    req("other", "x", "alice"),
                ],
                13,
            ),
        ),
        entry(6, authorize(vec![req("demo", "b1", "bob")], 14)),
    ]
}

async fn apply(sm: &mut StateMachine, entries: Vec<quorate_raft::Entry>) {
    let s = stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(s).await.expect("apply");
}

fn open(dir: &std::path::Path) -> StateMachine {
    let store = Store::open(dir).expect("open store");
    StateMachine::open(store, Limits::default()).expect("open machine")
}

fn all(sm: &StateMachine) -> Vec<DecisionRecord> {
    sm.lookup().decisions(1, 0, None).expect("read decisions")
}

#[tokio::test]
async fn decisions_are_chained_deduplicated_and_reasoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(dir.path());
    apply(&mut sm, history()).await;
    let recs = all(&sm);
    let summary: Vec<(u64, &str, Decision, Option<DenyReason>)> = recs
        .iter()
        .map(|r| (r.index, r.request.request_id.as_str(), r.decision, r.reason))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "early", Decision::Deny, Some(DenyReason::UnknownDomain)),
            (
                2,
                "inactive",
                Decision::Deny,
                Some(DenyReason::NoActivePolicy)
            ),
            (3, "a1", Decision::Allow, None),
            (4, "b1", Decision::Deny, Some(DenyReason::Policy)),
            (5, "x", Decision::Deny, Some(DenyReason::UnknownDomain)),
        ],
        "replayed request ids (a1 in the same entry, b1 in a later one) add no record"
    );
    assert_eq!(recs[2].policy_version, Some(1));
    assert_eq!(
        recs[2].timestamp_ms, 13,
        "the leader's timestamp, not a clock read"
    );
    let head = sm.lookup().verify_chain().expect("chain verifies");
    assert_eq!(head.count, 5);
    assert_eq!(head.hash, recs[4].hash);
    assert_eq!(
        sm.lookup()
            .decision_by_request("demo", "b1")
            .expect("read")
            .map(|r| r.index),
        Some(4)
    );
}

#[tokio::test]
async fn replicas_and_restarts_compute_identical_records() {
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = open(d1.path());
    let mut b = open(d2.path());
    apply(&mut a, history()).await;
    // Replica b applies the same log in two pieces, restarting in between.
    let mut h = history();
    let tail = h.split_off(3);
    apply(&mut b, h).await;
    drop(b);
    let mut b = open(d2.path());
    apply(&mut b, tail).await;
    assert_eq!(all(&a), all(&b));
    assert_eq!(a.lookup().head(), b.lookup().head());
}

#[tokio::test]
async fn invalid_commands_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(dir.path());
    apply(&mut sm, history()).await;
    let before = (all(&sm), sm.lookup().head());
    // Activating a version that does not exist, and a policy that does not
    // parse (re-checked at apply time even though the API checks first).
    apply(
        &mut sm,
        vec![
            entry(
                7,
                Command::ActivatePolicy {
                    domain: "demo".into(),
                    version: 9,
                    timestamp_ms: 20,
                },
            ),
            entry(
                8,
                Command::PublishPolicy {
                    domain: "demo".into(),
                    policy_text: "permit(".into(),
                    schema: None,
                    activate: true,
                    signature: None,
                    timestamp_ms: 21,
                },
            ),
        ],
    )
    .await;
    assert_eq!((all(&sm), sm.lookup().head()), before);
    let (pv, active) = sm
        .lookup()
        .policy("demo", None)
        .expect("read")
        .expect("active");
    assert_eq!((pv.version, active), (1, true));
    assert!(sm.lookup().policy("demo", Some(2)).expect("read").is_none());
}

#[tokio::test]
async fn snapshots_carry_the_whole_decision_log_and_tampered_ones_are_refused() {
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = open(d1.path());
    apply(&mut a, history()).await;
    let mut builder = a.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    let bytes = snap.snapshot.get_ref().clone();

    // A tampered snapshot (one ALLOW turned into DENY) is refused, and the
    // receiving machine is left as it was.
    let mut b = open(d2.path());
    let tampered =
        String::from_utf8(bytes.clone())
            .expect("json")
            .replacen("\"ALLOW\"", "\"DENY\"", 1);
    let err = b
        .install_snapshot(&snap.meta, std::io::Cursor::new(tampered.into_bytes()))
        .await;
    assert!(err.is_err(), "tampered snapshot must not install");
    assert!(all(&b).is_empty());

    b.install_snapshot(&snap.meta, std::io::Cursor::new(bytes))
        .await
        .expect("install");
    assert_eq!(all(&a), all(&b));
    assert_eq!(a.lookup().head(), b.lookup().head());
    let (applied, _) = b.applied_state().await.expect("applied");
    assert_eq!(applied.map(|l| l.index), Some(6));
    // Snapshot survives restart and is what get_current_snapshot returns.
    drop(b);
    let mut b = open(d2.path());
    assert!(b.get_current_snapshot().await.expect("read").is_some());
    assert_eq!(all(&a), all(&b));
}

/// Rewrites record 3's stored bytes with `edit`, directly in RocksDB.
fn tamper_record_3(dir: &std::path::Path, edit: impl FnOnce(String) -> String) {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).expect("list");
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, cfs).expect("raw open");
    let cf = db.cf_handle("decisions").expect("cf");
    let key = 3u64.to_be_bytes();
    let v = db.get_cf(&cf, key).expect("get").expect("present");
    let edited = edit(String::from_utf8(v).expect("utf8"));
    db.put_cf(&cf, key, edited).expect("put");
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_record_is_found_at_its_index() {
    // ALLOW -> DENY changes the record; a flipped bit in the name of an
    // absent optional field (found by the Jepsen bit-flip nemesis) leaves
    // the decoded record unchanged, and must be found all the same.
    let edits: [fn(String) -> String; 2] = [
        |v| v.replace("\"ALLOW\"", "\"DENY\""),
        |v| v.replace("\"trace_id\":null", "\"trace_iD\":null"),
    ];
    for edit in edits {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut sm = open(dir.path());
            apply(&mut sm, history()).await;
            assert!(sm.lookup().verify_chain().is_ok());
        }
        tamper_record_3(dir.path(), edit);
        let sm = open(dir.path());
        let err = sm
            .lookup()
            .verify_chain()
            .expect_err("tamper must be detected");
        assert_eq!(err.index, 3, "{err}");
    }
}

const CANDIDATE: &str = r#"permit(principal == User::"bob", action == Action::"read", resource);"#;

fn rollout_plan(id: &str, candidate: &str) -> quorate_core::rollout::RolloutPlan {
    quorate_core::rollout::RolloutPlan {
        id: id.into(),
        candidates: vec![quorate_core::rollout::Candidate {
            domain: "demo".into(),
            policy_text: candidate.into(),
            schema: None,
            signature: None,
        }],
        stages: vec![quorate_core::rollout::StagePlan {
            domains: vec!["demo".into()],
            shadow_decisions: 2,
            shadow_ms: 0,
        }],
    }
}

/// A rollout through the state machine: an invalid plan changes nothing;
/// shadowed records carry and count the candidate's outcome; promote and
/// rollback switch the active version at their own log index; a domain in
/// the rollout refuses hand activation; snapshots carry rollouts; stored
/// state verifies.
#[tokio::test]
async fn rollouts_shadow_promote_roll_back_and_travel_in_snapshots() {
    use quorate_core::rollout::Phase;
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = open(d1.path());
    apply(&mut a, vec![entry(1, publish(true))]).await;
    let start = |i, id: &str, text: &str| {
        entry(
            i,
            Command::StartRollout {
                plan: rollout_plan(id, text),
                timestamp_ms: 20,
            },
        )
    };
    // A candidate that does not compile: refused whole, nothing written.
    apply(&mut a, vec![start(2, "bad", "permit(")]).await;
    assert!(a.lookup().rollout("").expect("read").is_none());
    assert!(a.lookup().policy("demo", Some(2)).expect("read").is_none());

    apply(&mut a, vec![start(3, "r1", CANDIDATE)]).await;
    let r = a.lookup().rollout("r1").expect("read").expect("started");
    assert_eq!(
        (r.phase, r.stages[0].domains[0].candidate_version),
        (Phase::Shadow, 2)
    );
    apply(
        &mut a,
        vec![
            entry(
                4,
                authorize(
                    vec![req("demo", "s1", "alice"), req("demo", "s2", "bob")],
                    21,
                ),
            ),
            // Hand activation of a domain in the rollout: refused.
            entry(
                5,
                Command::ActivatePolicy {
                    domain: "demo".into(),
                    version: 2,
                    timestamp_ms: 22,
                },
            ),
        ],
    )
    .await;
    let recs = all(&a);
    let shadow = |i: usize| recs[i].shadow.as_ref().map(|s| s.decision);
    assert_eq!(recs[0].decision, Decision::Allow);
    assert_eq!(
        shadow(0),
        Some(Decision::Deny),
        "alice loses read under the candidate"
    );
    assert_eq!(recs[1].decision, Decision::Deny);
    assert_eq!(shadow(1), Some(Decision::Allow), "bob gains it");
    assert!(recs.iter().all(DecisionRecord::hash_is_valid));
    let r = a.lookup().rollout("").expect("read").expect("latest");
    let c = r.stages[0].domains[0].counts;
    assert_eq!((c.shadowed, c.allow_to_deny, c.deny_to_allow), (2, 1, 1));
    assert_eq!(
        a.lookup()
            .policy("demo", None)
            .expect("read")
            .map(|p| p.0.version),
        Some(1)
    );

    apply(
        &mut a,
        vec![entry(
            6,
            Command::PromoteRollout {
                id: "r1".into(),
                force: false,
                timestamp_ms: 23,
            },
        )],
    )
    .await;
    assert_eq!(
        a.lookup()
            .policy("demo", None)
            .expect("read")
            .map(|p| p.0.version),
        Some(2)
    );
    let r = a.lookup().rollout("").expect("read").expect("latest");
    assert_eq!((r.phase, r.ended_log_index), (Phase::Complete, Some(6)));
    apply(
        &mut a,
        vec![entry(7, authorize(vec![req("demo", "after", "bob")], 24))],
    )
    .await;
    let last = all(&a).pop().expect("a record");
    assert_eq!(
        (last.decision, last.policy_version),
        (Decision::Allow, Some(2))
    );
    assert!(
        last.shadow.is_none(),
        "a promoted stage is no longer shadowed"
    );

    apply(
        &mut a,
        vec![entry(
            8,
            Command::RollbackRollout {
                id: "r1".into(),
                timestamp_ms: 25,
            },
        )],
    )
    .await;
    assert_eq!(
        a.lookup()
            .policy("demo", None)
            .expect("read")
            .map(|p| p.0.version),
        Some(1)
    );
    let acts = a.lookup().activations().expect("read");
    let at = |i: u64| {
        acts.iter()
            .filter(|x| x.log_index == i)
            .map(|x| x.version)
            .collect::<Vec<_>>()
    };
    assert_eq!((at(6), at(8)), (vec![2], vec![1]));
    a.lookup().verify_state().expect("state verifies");

    // A snapshot carries the rollout to another replica.
    let mut builder = a.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    let mut b = open(d2.path());
    b.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    assert_eq!(
        b.lookup().rollout("").expect("read"),
        a.lookup().rollout("").expect("read")
    );
    b.lookup().verify_state().expect("state verifies");
}
