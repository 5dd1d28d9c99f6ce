//! Micro-benchmarks of the pure functions every decision pays for on every
//! replica, and the offline verifier pays for per record: the canonical
//! encoding and hash of a record, the codec's encode/decode of a stored
//! record and of a Raft entry (beside the JSON codec it replaced, measured
//! in the same run), the Merkle append, ed25519 checkpoint signatures, and
//! the chain verifier. `cargo bench -p quorate-core`; the
//! figures and their method are in docs/BENCHMARKS.md.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use quorate_core::merkle::{Frontier, leaf_hash};
use quorate_core::proof::{checkpoint_message, record_leaf};
use quorate_core::{
    AuthorizeRequest, Chain, Command, Decision, DecisionRecord, DenyReason, Digest, GENESIS_HASH,
    SecretKey, codec,
};
use std::hint::black_box;

fn request(n: u64) -> AuthorizeRequest {
    AuthorizeRequest {
        domain: "payments".into(),
        request_id: format!("bench-7f3a-12-{n}"),
        principal: r#"User::"alice""#.into(),
        action: r#"Action::"read""#.into(),
        resource: format!(r#"Doc::"{}""#, n % 1000),
        context: r#"{"amount":120,"mfa":true,"region":"eu-west-1"}"#.into(),
        entities: None,
        parent: None,
        trace_id: Some("trace-0001".into()),
    }
}

/// A chain of `n` sealed records, as the decision function makes them.
fn records(n: u64) -> Vec<DecisionRecord> {
    let mut prev = GENESIS_HASH;
    (1..=n)
        .map(|i| {
            let deny = i % 4 == 0;
            let r = DecisionRecord {
                index: i,
                log_index: i + 3,
                request: request(i),
                decision: if deny {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
                reason: deny.then_some(DenyReason::Policy),
                determining_policies: vec!["policy0".into()],
                errors: vec![],
                policy_version: Some(1),
                policy_hash: Some(Digest([7; 32])),
                timestamp_ms: 1_764_000_000_000 + i,
                prev_hash: prev,
                hash: GENESIS_HASH,
                shadow: None,
            }
            .seal();
            prev = r.hash;
            r
        })
        .collect()
}

fn record_bytes(c: &mut Criterion) {
    let r = records(1).remove(0);
    let stored = codec::encode(&r);
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("canonical_bytes", |b| {
        b.iter(|| black_box(&r).canonical_bytes())
    });
    g.bench_function("compute_hash", |b| b.iter(|| black_box(&r).compute_hash()));
    g.bench_function("codec_encode", |b| b.iter(|| codec::encode(black_box(&r))));
    g.bench_function("codec_decode_canonical", |b| {
        b.iter(|| codec::decode_canonical::<DecisionRecord>(black_box(&stored)))
    });
    g.bench_function("codec_decode", |b| {
        b.iter(|| codec::decode::<DecisionRecord>(black_box(&stored)))
    });
    // The JSON codec this replaced, for comparison in the same run.
    let json = serde_json::to_vec(&r).unwrap_or_default();
    g.bench_function("json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&r)).unwrap_or_default())
    });
    g.bench_function("json_decode_canonical", |b| {
        b.iter(|| {
            let r: DecisionRecord = serde_json::from_slice(black_box(&json)).expect("decodes");
            assert_eq!(serde_json::to_vec(&r).unwrap_or_default(), json);
            r
        })
    });
    g.finish();

    // One Raft entry of a 64-request batch: what every AppendEntries and
    // every stored log entry carries.
    let batch = Command::Authorize {
        requests: (0..64).map(request).collect(),
        timestamp_ms: 1_764_000_000_000,
    };
    let bytes = codec::encode(&batch);
    let mut g = c.benchmark_group("raft_entry_64_requests");
    g.throughput(Throughput::Elements(64));
    g.bench_function("codec_encode", |b| {
        b.iter(|| codec::encode(black_box(&batch)))
    });
    g.bench_function("codec_decode", |b| {
        b.iter(|| codec::decode::<Command>(black_box(&bytes)))
    });
    let json = serde_json::to_vec(&batch).unwrap_or_default();
    g.bench_function("json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&batch)).unwrap_or_default())
    });
    g.bench_function("json_decode", |b| {
        b.iter(|| serde_json::from_slice::<Command>(black_box(&json)).expect("decodes"))
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let leaves: Vec<Digest> = records(1024).iter().map(record_leaf).collect();
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(1));
    g.bench_function("leaf_hash", |b| b.iter(|| leaf_hash(black_box(&[9u8; 32]))));
    g.throughput(Throughput::Elements(leaves.len() as u64));
    g.bench_function("frontier_append_1024", |b| {
        b.iter_batched(
            Frontier::new,
            |mut f| {
                for l in &leaves {
                    black_box(f.append(*l));
                }
                f
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let mut f = Frontier::new();
    for l in &leaves {
        f.append(*l);
    }
    g.bench_function("frontier_root_at_1024", |b| b.iter(|| black_box(&f).root()));
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let key = SecretKey::from_seed([3; 32]);
    let public = key.public();
    let msg = checkpoint_message("bench-cluster", 1_000_000, &Digest([5; 32]));
    let sig = key.sign(&msg);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_checkpoint", |b| b.iter(|| key.sign(black_box(&msg))));
    g.bench_function("verify_checkpoint", |b| {
        b.iter(|| public.verify(black_box(&msg), black_box(&sig)))
    });
    g.finish();
}

fn chain(c: &mut Criterion) {
    // The chain verifier's per-record work (link, hash, Merkle append), as
    // start-up, periodic verification, snapshot checks and `quorate verify`
    // run it.
    let rs = records(10_000);
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(rs.len() as u64));
    g.sample_size(20);
    g.bench_function("push_10k_records", |b| {
        b.iter(|| {
            let mut chain = Chain::new();
            for r in &rs {
                if chain.push(r).is_err() {
                    panic!("the bench chain is valid");
                }
            }
            chain.root()
        })
    });
    g.finish();
}

criterion_group!(benches, record_bytes, merkle, signatures, chain);
criterion_main!(benches);
