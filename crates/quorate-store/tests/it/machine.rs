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

    // A tampered snapshot (one ALLOW turned into DENY, its frame's digest
    // recomputed as a forger would) is refused, and the receiving machine
    // is left as it was.
    let mut b = open(d2.path());
    let work = tempfile::tempdir().expect("t");
    let tampered = rewrite_snapshot(&snap.snapshot, work.path(), |kind, v| {
        if kind == 2 {
            let s = v.to_string().replacen("\"ALLOW\"", "\"DENY\"", 1);
            *v = serde_json::from_str(&s).expect("json");
        }
    });
    let err = b.install_snapshot(&snap.meta, tampered).await;
    assert!(err.is_err(), "tampered snapshot must not install");
    assert!(all(&b).is_empty());
    // So is one cut short at a frame boundary (its end frame missing).
    let cut = truncate_snapshot(&snap.snapshot, work.path());
    let err = b.install_snapshot(&snap.meta, cut).await;
    assert!(
        err.as_ref()
            .is_err_and(|e| e.to_string().contains("end frame")),
        "{err:?}"
    );
    assert!(all(&b).is_empty());

    b.install_snapshot(&snap.meta, snap.snapshot.clone())
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

/// A copy of the snapshot file with every frame's payload passed through
/// `edit` (kind, JSON value) and its digest recomputed: what a forger who
/// knows the container would write.
pub(crate) fn rewrite_snapshot(
    src: &quorate_raft::SnapshotData,
    dir: &std::path::Path,
    edit: impl Fn(u8, &mut serde_json::Value),
) -> quorate_raft::SnapshotData {
    let bytes = std::fs::read(src.path()).expect("read snapshot");
    let mut out = quorate_core::frames::MAGIC.to_vec();
    let mut at = 8;
    while at < bytes.len() {
        let (f, len) = quorate_core::frames::parse(&bytes[at..], at as u64)
            .expect("frame")
            .expect("whole");
        let mut v: serde_json::Value = quorate_core::codec::decode(f.payload).expect("decodes");
        edit(f.kind, &mut v);
        out.extend(quorate_core::frames::encode(
            f.kind,
            &quorate_core::codec::encode(&v),
        ));
        at += len;
    }
    let path = dir.join(format!("edited-{}.qsnap", out.len()));
    std::fs::write(&path, out).expect("write");
    quorate_raft::SnapshotData::open(&path).expect("open")
}

/// A copy of the snapshot file without its last frame.
fn truncate_snapshot(
    src: &quorate_raft::SnapshotData,
    dir: &std::path::Path,
) -> quorate_raft::SnapshotData {
    let bytes = std::fs::read(src.path()).expect("read snapshot");
    let mut at = 8;
    let mut last = at;
    while at < bytes.len() {
        last = at;
        at += quorate_core::frames::frame_len(&bytes[at..], 0)
            .expect("len")
            .expect("whole");
    }
    let path = dir.join("cut.qsnap");
    std::fs::write(&path, &bytes[..last]).expect("write");
    quorate_raft::SnapshotData::open(&path).expect("open")
}

/// Rewrites record 3's stored row through `edit` on its JSON form,
/// directly in RocksDB (re-encoded by the codec, hash left as it was).
fn tamper_record_3(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    tamper_record_at(dir, 3, edit)
}

/// Rewrites record `index`'s stored row through `edit` on its JSON form,
/// directly in RocksDB.
fn tamper_record_at(dir: &std::path::Path, index: u64, edit: impl FnOnce(&mut serde_json::Value)) {
    tamper_row(dir, "decisions", &index.to_be_bytes(), edit)
}

/// Rewrites the row at `cf`/`key` through `edit` on its JSON form.
fn tamper_row(
    dir: &std::path::Path,
    cf: &str,
    key: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).expect("list");
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, cfs).expect("raw open");
    let cf = db.cf_handle(cf).expect("cf");
    let v = db.get_cf(&cf, key).expect("get").expect("present");
    let edited = quorate_core::codec::edit(&v, edit).expect("decodes");
    assert_ne!(edited, v, "the edit changed nothing");
    db.put_cf(&cf, key, edited).expect("put");
}

/// Replaces the first `from` in the first string of `v` (in document
/// order) that holds it.
fn replace_first(v: &mut serde_json::Value, from: &str, to: &str) -> bool {
    match v {
        serde_json::Value::String(s) if s.contains(from) => {
            *s = s.replacen(from, to, 1);
            true
        }
        serde_json::Value::Array(a) => a.iter_mut().any(|x| replace_first(x, from, to)),
        serde_json::Value::Object(o) => o.values_mut().any(|x| replace_first(x, from, to)),
        _ => false,
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_record_is_found_at_its_index() {
    // ALLOW -> DENY changes the record; a flipped bit in the name of an
    // absent optional field (found by the Jepsen bit-flip nemesis) leaves
    // the decoded record unchanged, and must be found all the same.
    let edits: [fn(&mut serde_json::Value); 2] = [
        |v| {
            assert_eq!(v["decision"], "ALLOW");
            v["decision"] = "DENY".into();
        },
        |v| {
            let request = v["request"].as_object_mut().expect("request");
            let absent = request.shift_remove("trace_id").expect("trace_id");
            assert!(absent.is_null());
            request.insert("trace_iD".into(), absent);
        },
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

// ---- Review holes (issue 11): each of these was seen failing before its fix.

fn voter_key(id: u64, set: u8) -> quorate_core::SecretKey {
    quorate_core::SecretKey::from_seed([set * 16 + id as u8; 32])
}

/// A membership entry naming voters 1..=3 with the keys of `set`.
fn membership(index: u64, set: u8) -> quorate_raft::Entry {
    let nodes: std::collections::BTreeMap<u64, quorate_raft::NodeInfo> = (1..=3u64)
        .map(|id| {
            (
                id,
                quorate_raft::NodeInfo {
                    addr: format!("127.0.0.1:{}", 7100 + id),
                    public_key: voter_key(id, set).public(),
                    region: "r".into(),
                },
            )
        })
        .collect();
    let m = quorate_raft::Membership::new(
        vec![(1..=3u64).collect::<std::collections::BTreeSet<u64>>()],
        nodes,
    )
    .expect("a valid membership");
    Entry {
        log_id: log_id::<TypeConfig>(1, 1, index),
        payload: EntryPayload::Membership(m),
    }
}

/// A `Command::Checkpoint` entry: voters `signers` (of key set `set`)
/// attest `sm`'s current tree head.
fn checkpoint(sm: &StateMachine, index: u64, set: u8, signers: &[u64]) -> quorate_raft::Entry {
    let (size, root) = sm.lookup().tree_head();
    let cosignatures = signers
        .iter()
        .map(|id| quorate_core::Cosignature {
            node_id: *id,
            signature: voter_key(*id, set)
                .sign(&quorate_core::proof::checkpoint_message("c", size, &root)),
        })
        .collect();
    entry(
        index,
        Command::Checkpoint {
            size,
            root,
            cosignatures,
        },
    )
}

fn open_in(dir: &std::path::Path) -> StateMachine {
    open(dir).with_cluster_id("c")
}

#[tokio::test]
async fn a_checkpoint_entry_finalises_with_a_majority_and_counts_only_voters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_in(dir.path());
    apply(&mut sm, vec![membership(1, 1), entry(2, publish(true))]).await;
    apply(
        &mut sm,
        vec![entry(3, authorize(vec![req("demo", "a", "alice")], 20))],
    )
    .await;
    // One voter is not a majority of three.
    let e = checkpoint(&sm, 4, 1, &[1]);
    apply(&mut sm, vec![e]).await;
    assert_eq!(sm.lookup().last_final(), 0);
    // Signatures under another key set (not the membership's) are refused.
    let e = checkpoint(&sm, 5, 2, &[2, 3]);
    apply(&mut sm, vec![e]).await;
    assert_eq!(sm.lookup().last_final(), 0);
    let e = checkpoint(&sm, 6, 1, &[2, 3]);
    apply(&mut sm, vec![e]).await;
    assert_eq!(sm.lookup().last_final(), 1);
    let cp = sm
        .lookup()
        .checkpoint(1)
        .expect("read")
        .expect("checkpoint stored");
    assert_eq!(cp.cosigners(), vec![1, 2, 3]);
    assert!(sm.lookup().verify_state().is_ok());
}

#[tokio::test]
async fn a_replayed_record_that_no_longer_matches_its_hash_fails_the_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(dir.path());
    apply(&mut sm, history()).await;
    // Record 4 is bob's DENY (request id b1). Edit it to ALLOW on disk.
    drop(sm);
    tamper_record_at(dir.path(), 4, |v| {
        assert_eq!(
            (&v["decision"], &v["reason"]),
            (&"DENY".into(), &"POLICY".into())
        );
        v["decision"] = "ALLOW".into();
        v["reason"] = serde_json::Value::Null;
    });
    let mut sm = open(dir.path());
    // Retrying b1 must not answer the altered record: the apply fails on
    // this node (it stops and contains), it never returns an ALLOW.
    let s = stream::iter(vec![Ok((
        entry(7, authorize(vec![req("demo", "b1", "bob")], 15)),
        None,
    ))]);
    let r = sm.apply(s).await;
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("does not match its hash"), "{e:?}");
}

#[tokio::test]
async fn a_tampered_active_version_fails_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(dir.path());
    apply(
        &mut sm,
        vec![
            entry(1, publish(true)),
            entry(2, publish(false)),
            entry(3, authorize(vec![req("demo", "a", "alice")], 20)),
        ],
    )
    .await;
    assert!(sm.lookup().verify_state().is_ok());
    drop(sm);
    // v2 exists (so "active <= latest" holds), but it was never activated.
    tamper_row(dir.path(), "domains", b"demo", |v| {
        assert_eq!(v["active_version"], 1);
        v["active_version"] = 2.into();
    });
    let sm = open(dir.path());
    let e = sm.lookup().verify_state().err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("recorded activations")),
        "{e:?}"
    );
}

/// A store holding three records and a checkpoint over them that voters 1
/// and 2 of key set `set` attested; returns it and its snapshot.
async fn vouched_store(
    dir: &std::path::Path,
    set: u8,
) -> (
    StateMachine,
    (quorate_raft::SnapshotMeta, quorate_raft::SnapshotData),
) {
    let mut sm = open_in(dir);
    apply(&mut sm, vec![membership(1, set), entry(2, publish(true))]).await;
    apply(
        &mut sm,
        vec![entry(
            3,
            authorize(
                vec![
                    req("demo", "a", "alice"),
                    req("demo", "b", "bob"),
                    req("demo", "c", "alice"),
                ],
                20,
            ),
        )],
    )
    .await;
    let e = checkpoint(&sm, 4, set, &[1, 2]);
    apply(&mut sm, vec![e]).await;
    assert_eq!(sm.lookup().last_final(), 3);
    let snap = sm.lookup().build_snapshot().expect("snapshot");
    (sm, (snap.meta, snap.snapshot))
}

#[tokio::test]
async fn repair_accepts_only_history_vouched_for_by_voters_it_already_trusts() {
    let peer = tempfile::tempdir().expect("tempdir");
    let (mut peer_sm, (meta, raw)) = vouched_store(peer.path(), 1).await;

    // A node that trusts the same voters accepts it.
    let good = tempfile::tempdir().expect("tempdir");
    let mut sm = open_in(good.path());
    apply(&mut sm, vec![membership(1, 1)]).await;
    drop(sm);
    let store = Store::open(good.path()).expect("open");
    let trusted = quorate_store::trusted_voters(&store);
    assert_eq!(trusted.len(), 3);
    let head = quorate_store::repair_from_snapshot(&store, &meta, &raw, "c", &trusted, None)
        .expect("repair from a trusted history");
    assert_eq!(head.count, 3);
    drop(store);

    // A history whose checkpoint is vouched for by other keys (a divergent
    // cluster, or keys a peer made up) is refused, and nothing changes.
    let rogue = tempfile::tempdir().expect("tempdir");
    let (_rogue_sm, (rmeta, rraw)) = vouched_store(rogue.path(), 2).await;
    let store = Store::open(good.path()).expect("open");
    let before = quorate_store::trusted_voters(&store);
    let e = quorate_store::repair_from_snapshot(&store, &rmeta, &rraw, "c", &before, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("does not trust"), "{e}");
    drop(store);
    let sm = open_in(good.path());
    assert_eq!(sm.lookup().head(), head, "a refused repair changed nothing");
    drop(sm);

    // Records no final checkpoint covers yet are refused too.
    apply(
        &mut peer_sm,
        vec![entry(5, authorize(vec![req("demo", "d", "bob")], 21))],
    )
    .await;
    let snap2 = peer_sm.lookup().build_snapshot().expect("snapshot");
    let (meta2, raw2) = (snap2.meta, snap2.snapshot);
    let store = Store::open(good.path()).expect("open");
    let e = quorate_store::repair_from_snapshot(&store, &meta2, &raw2, "c", &before, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no later checkpoint vouches"), "{e}");
    // A later checkpoint that trusted voters cosigned vouches for the tail
    // through a consistency proof from the snapshot's tree; one by rogue
    // keys does not.
    apply(
        &mut peer_sm,
        vec![entry(6, authorize(vec![req("demo", "e", "alice")], 22))],
    )
    .await;
    let bundle_for = |sm: &StateMachine, set: u8, index: u64| {
        let e = checkpoint(sm, index, set, &[1, 2]);
        (e, sm.lookup().consistency_proof(4, 5).expect("proof"))
    };
    let (cp_entry, proof) = bundle_for(&peer_sm, 1, 7);
    apply(&mut peer_sm, vec![cp_entry]).await;
    let cp = peer_sm
        .lookup()
        .checkpoint(5)
        .expect("read")
        .expect("final at 5")
        .checkpoint;
    let bundle = quorate_core::proof::ConsistencyBundle {
        format: quorate_core::proof::CONSISTENCY_FORMAT.into(),
        old_size: 4,
        proof,
        checkpoint: cp.clone(),
    };
    let mut rogue = bundle.clone();
    for c in &mut rogue.checkpoint.cosignatures {
        c.signature = voter_key(c.node_id, 2).sign(&cp.message());
    }
    let e = quorate_store::repair_from_snapshot(&store, &meta2, &raw2, "c", &before, Some(&rogue))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("valid cosignatures"), "{e}");
    let head4 =
        quorate_store::repair_from_snapshot(&store, &meta2, &raw2, "c", &before, Some(&bundle))
            .expect("a tail vouched for by a later trusted checkpoint");
    assert_eq!(head4.count, 4);
    // And a node that trusts nobody must be given a trust file.
    let e = quorate_store::repair_from_snapshot(&store, &meta, &raw, "c", &[], None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("--trust"), "{e}");
}

/// A stored checkpoint marked final must carry a majority of its voters'
/// cosignatures, not merely say so: start-up and periodic verification used
/// to check only that the cosignatures present verify, so a "final"
/// checkpoint edited down to one cosignature went unnoticed. The same
/// stored state travelling in a snapshot is refused too.
#[tokio::test]
async fn a_final_checkpoint_without_a_quorum_fails_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (sm, _) = vouched_store(dir.path(), 1).await;
        sm.lookup()
            .verify_chain()
            .expect("an honest store verifies");
    }
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).expect("list");
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).expect("raw open");
        let cf = db.cf_handle("checkpoints").expect("cf");
        let key = 3u64.to_be_bytes();
        let v = db.get_cf(&cf, key).expect("get").expect("checkpoint at 3");
        let mut cp: serde_json::Value = quorate_core::codec::decode(&v).expect("decodes");
        assert!(!cp["finalized_at"].is_null(), "final before the edit: {cp}");
        let sigs = cp["checkpoint"]["cosignatures"]
            .as_array_mut()
            .expect("cosignatures");
        assert_eq!(sigs.len(), 2);
        sigs.truncate(1);
        db.put_cf(&cf, key, quorate_core::codec::encode(&cp))
            .expect("put");
    }
    let sm = open_in(dir.path());
    let err = sm
        .lookup()
        .verify_chain()
        .expect_err("a final checkpoint without a quorum must be found");
    assert!(
        err.message
            .contains("1 valid voter cosignatures; 2 are needed"),
        "{err}"
    );
    let snap = sm.lookup().build_snapshot().expect("snapshot");
    let e = quorate_store::verify_stream(
        &snap.snapshot,
        &snap.meta,
        "c",
        quorate_store::ChainHead::default(),
    )
    .expect_err("nor may it travel in a snapshot");
    assert!(e.to_string().contains("2 are needed"), "{e}");
}

// ---- Issue 13: snapshots as streamed files, incremental verification.

/// Opens the store's RocksDB directly (the node stopped), as an operator
/// or a fault would.
fn raw_db(dir: &std::path::Path) -> rocksdb::DB {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).expect("list");
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, cfs).expect("raw open")
}

/// Entries 1..: membership, the demo policy, then `n` authorize entries of
/// 50 requests each (50 n records).
fn long_history(n: u64) -> Vec<quorate_raft::Entry> {
    let mut out = vec![membership(1, 1), entry(2, publish(true))];
    for k in 0..n {
        let reqs = (0..50)
            .map(|j| {
                req(
                    "demo",
                    &format!("r{k}-{j}"),
                    if j % 3 == 0 { "bob" } else { "alice" },
                )
            })
            .collect();
        out.push(entry(3 + k, authorize(reqs, 100 + k)));
    }
    out
}

#[tokio::test]
async fn a_long_snapshot_streams_in_frames_extends_a_prefix_and_an_interrupted_install_resumes() {
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let history = long_history(60);
    let mut a = open_in(da.path());
    apply(&mut a, history.clone()).await;
    let e = checkpoint(&a, 63, 1, &[1, 2]);
    apply(&mut a, vec![e]).await;
    assert_eq!(
        (a.lookup().head().count, a.lookup().last_final()),
        (3000, 3000)
    );
    let snap = a.lookup().build_snapshot().expect("snapshot");

    // The file is a run of frames: one header, several record batches of at
    // most 1,024 records, the checkpoint after the record that makes its
    // size, one end.
    let bytes = std::fs::read(snap.snapshot.path()).expect("read");
    let mut kinds = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let (f, len) = quorate_core::frames::parse(&bytes[at..], at as u64)
            .expect("frame")
            .expect("whole");
        if f.kind == 2 {
            let v: serde_json::Value = quorate_core::codec::decode(f.payload).expect("decodes");
            assert!(v["records"].as_array().expect("records").len() <= 1024);
        }
        kinds.push(f.kind);
        at += len;
    }
    assert_eq!(kinds.first(), Some(&1));
    assert_eq!(&kinds[kinds.len() - 2..], &[3, 4]);
    assert!(kinds.iter().filter(|k| **k == 2).count() >= 3, "{kinds:?}");

    // B holds the first 1,000 records of the same history: the snapshot
    // extends them, and B ends with exactly A's state.
    let mut b = open_in(db.path());
    apply(&mut b, history[..22].to_vec()).await;
    let prefix = b.lookup().head();
    assert_eq!(prefix.count, 1000);
    b.install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .expect("install");
    assert_eq!(all(&a), all(&b));
    b.lookup().verify_state().expect("installed state verifies");
    let applied = b.applied_state().await.expect("applied").0;
    drop(b);

    // A crash half-way through an install: the marker is set, some records
    // beyond the old head are written, the head is the old one. Until it is
    // completed the state does not verify; completing it needs nothing but
    // the saved snapshot file.
    {
        let raw = raw_db(db.path());
        let meta = raw.cf_handle("sm_meta").expect("cf");
        let decisions = raw.cf_handle("decisions").expect("cf");
        raw.put_cf(
            &meta,
            b"installing",
            quorate_core::codec::encode(&(applied, false)),
        )
        .expect("put");
        raw.put_cf(&meta, b"chain_head", quorate_core::codec::encode(&prefix))
            .expect("put");
        for i in 1501..=3000u64 {
            raw.delete_cf(&decisions, i.to_be_bytes()).expect("delete");
        }
    }
    let mut b = open_in(db.path());
    let e = b
        .lookup()
        .verify_state()
        .expect_err("a half-installed state");
    assert!(e.message.contains("interrupted"), "{e}");
    assert!(b.resume_interrupted_install().expect("resume"));
    b.lookup()
        .verify_state()
        .expect("completed install verifies");
    assert_eq!(all(&a), all(&b));
    assert!(!b.resume_interrupted_install().expect("nothing left"));
}

/// A store with 5 records, a final checkpoint at 3, and the verified-up-to
/// mark at 3 after a first (full) incremental run.
async fn marked_store(dir: &std::path::Path) {
    let (mut sm, _) = vouched_store(dir, 1).await;
    apply(
        &mut sm,
        vec![entry(
            5,
            authorize(vec![req("demo", "d", "bob"), req("demo", "e", "alice")], 21),
        )],
    )
    .await;
    let first = sm
        .lookup()
        .verify_state_incremental(0, 0)
        .expect("verifies");
    assert_eq!((first.resumed_at, first.head.count, first.mark), (0, 5, 3));
    let again = sm
        .lookup()
        .verify_state_incremental(0, 0)
        .expect("verifies");
    assert_eq!((again.resumed_at, again.sampled), (3, 0));
}

#[tokio::test]
async fn start_up_verification_resumes_at_a_cosigned_mark_and_the_rest_is_sampled_and_swept() {
    // After the mark everything is checked.
    let d = tempfile::tempdir().expect("t");
    marked_store(d.path()).await;
    tamper_record_at(d.path(), 5, |v| {
        assert!(replace_first(v, "alice", "mallory"));
    });
    let e = open_in(d.path())
        .lookup()
        .verify_state_incremental(0, 0)
        .expect_err("after the mark");
    assert_eq!(e.index, 5, "{e}");

    // Below the mark a change is found by the sample (every record, when
    // the sample is as large as what lies below), by the sweep, and by a
    // full check; a run with no sample leaves it to those.
    let d = tempfile::tempdir().expect("t");
    marked_store(d.path()).await;
    tamper_record_at(d.path(), 2, |v| {
        assert!(replace_first(v, "bob", "eve"));
    });
    let sm = open_in(d.path());
    let l = sm.lookup();
    assert_eq!(
        l.verify_state_incremental(0, 0)
            .expect("unsampled")
            .resumed_at,
        3
    );
    assert_eq!(
        l.verify_state_incremental(0, 3).expect_err("sampled").index,
        2
    );
    assert_eq!(l.verify_slice(0, 100).expect_err("swept").index, 2);
    assert_eq!(
        l.verify_state_incremental(10, 0)
            .expect_err("small: full")
            .index,
        2
    );
    drop(sm);

    // A stored leaf that is not its record's is found by the sample.
    let d = tempfile::tempdir().expect("t");
    marked_store(d.path()).await;
    {
        let raw = raw_db(d.path());
        let merkle = raw.cf_handle("merkle").expect("cf");
        let mut key = [0u8; 9];
        key[1..].copy_from_slice(&1u64.to_be_bytes());
        raw.put_cf(&merkle, key, [7u8; 32]).expect("put");
    }
    let e = open_in(d.path())
        .lookup()
        .verify_state_incremental(0, 3)
        .expect_err("a bad leaf");
    assert!(e.message.contains("Merkle"), "{e}");

    // A mark that is not a final checkpoint is not believed: everything is
    // verified again.
    let d = tempfile::tempdir().expect("t");
    marked_store(d.path()).await;
    {
        let raw = raw_db(d.path());
        let meta = raw.cf_handle("sm_meta").expect("cf");
        raw.put_cf(&meta, b"verified_upto", b"4").expect("put");
    }
    let c = open_in(d.path())
        .lookup()
        .verify_state_incremental(0, 0)
        .expect("verifies");
    assert_eq!(c.resumed_at, 0);

    // Nor is one whose checkpoint lost its quorum.
    let d = tempfile::tempdir().expect("t");
    marked_store(d.path()).await;
    {
        let raw = raw_db(d.path());
        let cf = raw.cf_handle("checkpoints").expect("cf");
        let v = raw
            .get_cf(&cf, 3u64.to_be_bytes())
            .expect("get")
            .expect("cp");
        let mut cp: serde_json::Value = quorate_core::codec::decode(&v).expect("decodes");
        cp["checkpoint"]["cosignatures"]
            .as_array_mut()
            .expect("cosignatures")
            .truncate(1);
        raw.put_cf(&cf, 3u64.to_be_bytes(), quorate_core::codec::encode(&cp))
            .expect("put");
    }
    let e = open_in(d.path())
        .lookup()
        .verify_state_incremental(0, 0)
        .expect_err("the mark's checkpoint");
    assert!(e.message.contains("mark"), "{e}");
}

/// Writes the snapshot fuzz target's seeds (`fuzz/corpus/snapshot/seed-*`):
/// a small history's snapshot and one of 100 records with a final
/// checkpoint cosigned for cluster `"c"`. Run only when the snapshot
/// format changes on purpose:
/// `cargo test -p quorate-store --test it -- --ignored write_snapshot_fuzz_seeds`.
#[tokio::test]
#[ignore = "writes fuzz/corpus/snapshot; run when the snapshot format changes"]
async fn write_snapshot_fuzz_seeds() {
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/snapshot");
    std::fs::create_dir_all(&corpus).expect("corpus dir");
    let d = tempfile::tempdir().expect("t");
    let mut small = open_in(d.path());
    apply(&mut small, history()).await;
    let snap = small.lookup().build_snapshot().expect("snapshot");
    std::fs::copy(snap.snapshot.path(), corpus.join("seed-small.qsnap")).expect("copy");

    let d = tempfile::tempdir().expect("t");
    let mut long = open_in(d.path());
    apply(&mut long, long_history(2)).await;
    let e = checkpoint(&long, 5, 1, &[1, 2]);
    apply(&mut long, vec![e]).await;
    assert_eq!(long.lookup().last_final(), 100);
    let snap = long.lookup().build_snapshot().expect("snapshot");
    std::fs::copy(snap.snapshot.path(), corpus.join("seed-checkpointed.qsnap")).expect("copy");
}

/// Receipts' inclusion proofs come from the node cache the apply path
/// fills; they are the proofs RFC 9162 gives over the records, before and
/// after a snapshot extends the history. Verification at rest never reads
/// that cache: a node changed on disk is found while the cache still holds
/// its honest value. (Needs `fault-injection`, which `cargo test
/// --workspace` switches on through the server's dev-dependencies.)
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn receipts_use_cached_merkle_nodes_and_verification_still_reads_the_disk() {
    use quorate_core::merkle;
    let (da, db) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let history = long_history(20);
    let mut a = open_in(da.path());
    apply(&mut a, history.clone()).await;
    let leaves: Vec<_> = all(&a)
        .iter()
        .map(quorate_core::proof::record_leaf)
        .collect();
    assert_eq!(leaves.len(), 1000);
    let expect = |i: u64, size: u64| {
        let mut tree = merkle::MemoryTree::new();
        for l in &leaves[..size as usize] {
            tree.push(*l);
        }
        merkle::inclusion_proof(&tree, i - 1, size).expect("reference proof")
    };
    for (i, size) in [(1, 1000), (500, 1000), (999, 1000), (1000, 1000), (7, 640)] {
        assert_eq!(
            a.lookup().inclusion_proof(i, size).expect("proof"),
            expect(i, size)
        );
    }
    // Again, now from the warm cache, and the roots agree with the tree.
    for (i, size) in [(1, 1000), (500, 1000), (1000, 1000)] {
        assert_eq!(
            a.lookup().inclusion_proof(i, size).expect("proof"),
            expect(i, size)
        );
    }
    assert_eq!(
        a.lookup().root_at(1000).expect("root"),
        a.lookup().tree_head().1
    );

    // B holds a prefix, warms its cache on it, then a snapshot extends it:
    // its proofs are A's.
    let mut b = open_in(db.path());
    apply(&mut b, history[..12].to_vec()).await;
    assert_eq!(b.lookup().head().count, 500);
    let _ = b.lookup().inclusion_proof(250, 500).expect("proof");
    let snap = a.lookup().build_snapshot().expect("snapshot");
    b.install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .expect("install");
    for (i, size) in [(250, 500), (250, 1000), (1000, 1000)] {
        assert_eq!(
            b.lookup().inclusion_proof(i, size).expect("proof"),
            expect(i, size)
        );
    }

    // The leaf of record 999 (level 0, index 998) is in A's cache. Changed
    // on disk, verification finds it, although receipts still get the
    // honest value from the cache.
    a.lookup().verify_state().expect("honest state verifies");
    let honest = expect(1000, 1000);
    quorate_store::fault::tamper_merkle_live(&a.lookup(), 0, 998, quorate_core::Digest([7; 32]))
        .expect("tamper");
    assert_eq!(
        a.lookup().inclusion_proof(1000, 1000).expect("proof"),
        honest
    );
    let e = a
        .lookup()
        .verify_state()
        .expect_err("a changed Merkle node");
    assert!(
        e.message.contains("merkle") || e.message.contains("node"),
        "{e}"
    );
}

/// Every row of every column family, for "nothing changed" checks.
fn dump(dir: &std::path::Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let db = raw_db(dir);
    let mut out = Vec::new();
    for name in rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).expect("list") {
        let cf = db.cf_handle(&name).expect("cf");
        for kv in db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
            let (k, v) = kv.expect("row");
            out.push((name.clone(), k.to_vec(), v.to_vec()));
        }
    }
    out
}

#[tokio::test]
async fn a_database_in_another_storage_format_is_refused_before_any_row_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut sm = open(dir.path());
        apply(&mut sm, history()).await;
    }
    let set_format = |v: Option<&[u8]>| {
        let db = raw_db(dir.path());
        let meta = db.cf_handle("raft_meta").expect("cf");
        match v {
            Some(v) => db.put_cf(&meta, b"format", v).expect("put"),
            None => db.delete_cf(&meta, b"format").expect("delete"),
        }
        db.flush_wal(true).expect("flush");
    };
    {
        let db = raw_db(dir.path());
        let meta = db.cf_handle("raft_meta").expect("cf");
        assert_eq!(
            db.get_cf(&meta, b"format").expect("get").as_deref(),
            Some(b"quorate-store/2 msgpack".as_slice()),
            "a new database is marked with its format"
        );
    }
    // No marker but rows: what a build that stored JSON left behind.
    // Another marker: a build with another codec.
    for (marker, named) in [
        (None, "JSON (written before the format was recorded)"),
        (
            Some(b"quorate-store/9 other".as_slice()),
            "quorate-store/9 other",
        ),
    ] {
        set_format(marker);
        let before = dump(dir.path());
        let err = Store::open(dir.path()).expect_err("another format is refused");
        let text = err.to_string();
        assert!(
            matches!(err, quorate_store::StoreError::Format { .. }),
            "{text}"
        );
        assert!(text.contains(named), "{text}");
        assert!(
            text.contains("catches up from its peers by snapshot"),
            "{text}"
        );
        assert_eq!(dump(dir.path()), before, "refusing changed nothing");
    }
    // Marked again, it opens and its history is intact.
    set_format(Some(b"quorate-store/2 msgpack"));
    let sm = open(dir.path());
    assert!(sm.lookup().verify_state().is_ok());
    assert_eq!(all(&sm).len(), 5);
}

#[tokio::test]
async fn a_node_that_installed_a_snapshot_restarts_from_its_final_checkpoint() {
    // A learner that caught up on a long history must not re-verify all of
    // it on its next start: the install verified every record on its way
    // in, so verification resumes at the snapshot's newest final
    // checkpoint, and records damaged below it are still found by a full
    // check (and by the sample and sweep).
    let peer = tempfile::tempdir().expect("tempdir");
    let (_peer_sm, (meta, raw)) = vouched_store(peer.path(), 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut sm = open_in(dir.path());
        sm.install_snapshot(&meta, raw).await.expect("install");
        assert_eq!(sm.lookup().last_final(), 3);
    }
    let sm = open_in(dir.path());
    let c = sm
        .lookup()
        .verify_state_incremental(0, 0)
        .expect("an installed history verifies");
    assert_eq!((c.resumed_at, c.head.count, c.mark), (3, 3, 3));
    drop(sm);
    tamper_record_at(dir.path(), 2, |v| {
        assert!(replace_first(v, "bob", "eve"));
    });
    let sm = open_in(dir.path());
    let e = sm
        .lookup()
        .verify_state()
        .expect_err("a full check finds it");
    assert_eq!(e.index, 2, "{e}");
}

/// A payment, two approvals naming it as their parent, one grandchild, all
/// in trace "t-1"; a same-named parent in another domain; one request with
/// no lineage at all.
fn lineage_history() -> Vec<quorate_raft::Entry> {
    let with = |domain: &str, rid: &str, parent: Option<&str>, trace: Option<&str>| {
        let mut r = req(domain, rid, "alice");
        r.parent = parent.map(Into::into);
        r.trace_id = trace.map(Into::into);
        r
    };
    vec![
        entry(1, publish(true)),
        entry(
            2,
            authorize(
                vec![
                    with("demo", "pay", None, Some("t-1")),
                    with("demo", "approve-a", Some("pay"), Some("t-1")),
                    with("other", "elsewhere", Some("pay"), None),
                ],
                20,
            ),
        ),
        entry(
            3,
            authorize(
                vec![
                    with("demo", "approve-b", Some("pay"), Some("t-1")),
                    with("demo", "plain", None, None),
                    with("demo", "notify", Some("approve-a"), Some("t-1")),
                ],
                21,
            ),
        ),
    ]
}

/// What the lineage index answers about `lineage_history`, as one value.
fn lineage_answers(sm: &StateMachine) -> Vec<Vec<u64>> {
    let l = sm.lookup();
    vec![
        l.children("demo", "pay", 0, 100).expect("children"),
        l.children("demo", "pay", 2, 100).expect("children after 2"),
        l.children("demo", "pay", 0, 1).expect("children, one page"),
        l.children("other", "pay", 0, 100).expect("other domain"),
        l.children("demo", "approve-a", 0, 100).expect("grandchild"),
        l.children("demo", "plain", 0, 100).expect("no children"),
        l.children("demo", "pa", 0, 100)
            .expect("a prefix is not a parent"),
        l.trace("t-1", 0, 100).expect("trace"),
        l.trace("t-1", 4, 100).expect("trace after 4"),
        l.trace("t-", 0, 100).expect("a prefix is not a trace"),
    ]
}

#[tokio::test]
async fn lineage_is_indexed_at_apply_in_snapshots_and_for_older_databases() {
    let expected: Vec<Vec<u64>> = vec![
        vec![2, 4],
        vec![4],
        vec![2],
        vec![3],
        vec![6],
        vec![],
        vec![],
        vec![1, 2, 4, 6],
        vec![6],
        vec![],
    ];
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let mut a = open(d1.path());
    apply(&mut a, lineage_history()).await;
    assert_eq!(lineage_answers(&a), expected, "indexed as applied");
    assert_eq!(
        a.lookup().index_of_request("demo", "pay").expect("read"),
        Some(1)
    );

    // A replica that catches up from a snapshot answers the same.
    let mut builder = a.get_snapshot_builder().await;
    let snap = builder.build_snapshot().await.expect("build");
    let mut b = open(d2.path());
    b.install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .expect("install");
    assert_eq!(lineage_answers(&b), expected, "indexed from a snapshot");

    // A database written before the index existed: its rows and mark gone,
    // the index is built when it is opened, and only then.
    drop((a, builder));
    {
        let db = rocksdb::DB::open_cf(
            &rocksdb::Options::default(),
            d1.path(),
            rocksdb::DB::list_cf(&rocksdb::Options::default(), d1.path()).expect("cfs"),
        )
        .expect("raw open");
        let cf = db.cf_handle("lineage").expect("lineage cf");
        db.delete_range_cf(&cf, [].as_slice(), [0xffu8; 64].as_slice())
            .expect("drop rows");
        let meta = db.cf_handle("sm_meta").expect("sm_meta cf");
        db.delete_cf(&meta, b"lineage_index").expect("drop mark");
    }
    let a = open(d1.path());
    assert_eq!(lineage_answers(&a), expected, "rebuilt on open");
}

/// The key of a lineage row (docs/FORMATS.md §6): `kind ‖ u32(len) s ‖ …
/// ‖ u64(index)`.
fn lineage_key(kind: u8, parts: &[&str], index: u64) -> Vec<u8> {
    let mut k = vec![kind];
    for p in parts {
        k.extend_from_slice(&(p.len() as u32).to_be_bytes());
        k.extend_from_slice(p.as_bytes());
    }
    k.extend_from_slice(&index.to_be_bytes());
    k
}

#[tokio::test]
async fn a_changed_index_row_is_found_at_rest_and_on_read() {
    // Invariant 6 for the rows derived from the records: the request-id
    // index (idempotency, parents) and the lineage index. A row deleted or
    // moved is found by verification like a flipped record; a row forged
    // beside the honest ones is found by the full verification's count and
    // refused when a query reads it, never answered as a child.
    type Tamper = fn(&rocksdb::DB);
    let cases: [(&str, Tamper); 5] = [
        ("request id deleted", |db| {
            let cf = db.cf_handle("request_ids").expect("cf");
            db.delete_cf(&cf, b"demo\0approve-a").expect("delete");
        }),
        ("request id moved", |db| {
            let cf = db.cf_handle("request_ids").expect("cf");
            db.put_cf(&cf, b"demo\0approve-a", quorate_core::codec::encode(&5u64))
                .expect("put");
        }),
        ("child row deleted", |db| {
            let cf = db.cf_handle("lineage").expect("cf");
            db.delete_cf(&cf, lineage_key(1, &["demo", "pay"], 4))
                .expect("delete");
        }),
        ("trace row deleted", |db| {
            let cf = db.cf_handle("lineage").expect("cf");
            db.delete_cf(&cf, lineage_key(2, &["t-1"], 6))
                .expect("delete");
        }),
        ("child row forged", |db| {
            let cf = db.cf_handle("lineage").expect("cf");
            db.put_cf(&cf, lineage_key(1, &["demo", "pay"], 5), [])
                .expect("put");
        }),
    ];
    for (case, tamper) in cases {
        let d = tempfile::tempdir().expect("t");
        let mut a = open(d.path());
        apply(&mut a, lineage_history()).await;
        a.lookup().verify_state().expect("honest state verifies");
        drop(a);
        tamper(&raw_db(d.path()));
        let a = open(d.path());
        let e = a
            .lookup()
            .verify_state()
            .expect_err(&format!("{case}: not found by verification"));
        assert!(
            e.message.contains("index") && e.message.contains("row"),
            "{case}: {e}"
        );
        if case == "child row forged" {
            let read = a.lookup().children("demo", "pay", 0, 100);
            assert!(
                matches!(read, Err(quorate_store::StoreError::Corrupt { .. })),
                "{case}: the forged child was answered: {read:?}"
            );
        }
        if case == "request id moved" {
            let read = a.lookup().decision_by_request("demo", "approve-a");
            assert!(
                matches!(read, Err(quorate_store::StoreError::Corrupt { .. })),
                "{case}: another request's record was answered: {read:?}"
            );
        }
    }
}

#[tokio::test]
#[ignore = "a measurement: cargo test --release -p quorate-store --test it -- --ignored --nocapture full_verification_rate"]
async fn full_verification_rate() {
    let d = tempfile::tempdir().expect("t");
    let mut a = open(d.path());
    apply(&mut a, long_history(2000)).await;
    let start = std::time::Instant::now();
    let head = a.lookup().verify_state().expect("verifies");
    let s = start.elapsed().as_secs_f64();
    println!(
        "full verification: {} records in {s:.2} s, {:.1} µs per record",
        head.count,
        s * 1e6 / head.count as f64
    );
}
