//! Grows a stopped `quorate dev` node's decision history to millions of
//! decisions, for the scale runs of `docs/BENCHMARKS.md` (restart time,
//! memory, snapshot catch-up, verification at 10 M decisions). Filling a
//! history through the API takes an hour per few million decisions on a
//! small machine; this takes minutes, and what it writes is what a node
//! writes:
//!
//! - every decision goes through the node's own state machine
//!   (`StateMachine::apply`: Cedar under the domain's active policy, the
//!   hash chain, the request-id index, the Merkle tree), in Authorize
//!   entries of `--batch` requests, as a leader would batch them;
//! - every `--checkpoint-every` records a Checkpoint entry cosigned by
//!   every voter of the node's membership, with the voters' own keys from
//!   the dev directory (`node*/node.key`), so start-up verification
//!   resumes from a cosigned mark as it does in a real cluster;
//! - the entries are given the log ids of the node's last leader, the log
//!   is marked committed and purged up to the last one, and a snapshot is
//!   built there, so the node starts as if it had applied and compacted
//!   them, and any other member catches up by snapshot.
//!
//! It forges nothing a dev cluster's operator could not: it holds every
//! voter's key. It refuses a node that is running or that has entries it
//! has not applied. Only the grown node holds the new history, and the
//! others must not keep the log they had: two members that agree on an
//! older log are a majority that would elect one of them. Empty their
//! databases (keep their `node.key`: the membership names them), set
//! `bootstrap = false` in their configs, and start all three with `quorate
//! node`; the grown node is elected and the others install its history by
//! snapshot (the catch-up the benchmarks time). `deploy/bench/scale.sh`
//! does all of it and prints the figures.
//!
//! ```sh
//! target/release/quorate dev --data-dir /tmp/scale --detach   # then stop it
//! cargo run --release -p quorate --example grow_history -- \
//!     --dev-dir /tmp/scale --node 1 --records 10000000
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use futures::stream;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{Entry, EntryPayload};
use quorate_core::validate::Limits;
use quorate_core::{AuthorizeRequest, Command, Cosignature, SecretKey};
use quorate_store::{LogStore, StateMachine, Store};

#[derive(Parser)]
#[command(about = "Grow a stopped dev node's decision history (scale benchmarks)")]
struct Args {
    /// The directory `quorate dev --data-dir` made (node1.toml, node1/, ...).
    #[arg(long)]
    dev_dir: PathBuf,
    /// Which node to grow.
    #[arg(long, default_value_t = 1)]
    node: u64,
    /// Decisions to add.
    #[arg(long)]
    records: u64,
    /// Requests per Authorize entry.
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// Records between cosigned checkpoints.
    #[arg(long, default_value_t = 1024)]
    checkpoint_every: u64,
    /// Domain to decide in (must have an active policy).
    #[arg(long, default_value = "demo")]
    domain: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.batch > 0 && args.checkpoint_every > 0,
        "--batch and --checkpoint-every must be > 0"
    );
    let config = args.dev_dir.join(format!("node{}.toml", args.node));
    let cfg = quorate_server::NodeConfig::load(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let db = args.dev_dir.join(format!("node{}", args.node)).join("db");
    // RocksDB's lock refuses a database a running node holds.
    let store = Store::open(&db).with_context(|| {
        format!(
            "cannot open {} (stop the cluster first: kill $(cut -d= -f2 {}/pids))",
            db.display(),
            args.dev_dir.display()
        )
    })?;
    let mut sm =
        StateMachine::open(store.clone(), Limits::default())?.with_cluster_id(&cfg.cluster_id);
    let mut log = LogStore::new(store.clone());
    let Some(last) = log.get_log_state().await?.last_log_id else {
        bail!(
            "node {} has no Raft log yet: start the dev cluster once",
            args.node
        );
    };
    let (applied, membership) = sm.applied_state().await?;
    ensure!(
        applied.as_ref() == Some(&last),
        "node {} has log entries up to {last} but applied only {applied:?}: let the cluster \
         settle before stopping it",
        args.node
    );

    // Every voter's key, found by its public key among the dev nodes'.
    let members = membership.membership();
    let mut keys: BTreeMap<u64, SecretKey> = BTreeMap::new();
    for entry in std::fs::read_dir(&args.dev_dir)? {
        let path = entry?.path().join("node.key");
        if !path.exists() {
            continue;
        }
        let key = quorate_server::identity::load_key(&path)?;
        if let Some((id, _)) = members.nodes().find(|(_, n)| n.public_key == key.public()) {
            keys.insert(*id, key);
        }
    }
    let voters: Vec<u64> = members.voter_ids().collect();
    for v in &voters {
        ensure!(
            keys.contains_key(v),
            "no key in {} for voter {v}",
            args.dev_dir.display()
        );
    }

    let before = sm.lookup().head();
    let bar = indicatif::ProgressBar::new(args.records);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} decisions  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut next = last;
    let id_for = |n: &mut quorate_raft::LogId| {
        n.index += 1;
        *n
    };
    let (mut done, mut since_checkpoint) = (0u64, 0u64);
    while done < args.records {
        let n = args.batch.min(args.records - done);
        let requests = (done..done + n)
            .map(|k| AuthorizeRequest {
                domain: args.domain.clone(),
                request_id: format!("grow-{t0}-{k}"),
                principal: format!("User::\"{}\"", if k % 4 == 3 { "bob" } else { "alice" }),
                action: "Action::\"read\"".into(),
                resource: format!("Doc::\"{}\"", k % 1000),
                context: "{}".into(),
                entities: None,
                parent: None,
                trace_id: None,
            })
            .collect();
        let log_id = id_for(&mut next);
        let cmd = Command::Authorize {
            requests,
            timestamp_ms: t0 + log_id.index,
        };
        apply(&mut sm, log_id, cmd).await?;
        done += n;
        since_checkpoint += n;
        if since_checkpoint >= args.checkpoint_every || done == args.records {
            let (size, root) = sm.lookup().tree_head();
            let message = quorate_core::proof::checkpoint_message(&cfg.cluster_id, size, &root);
            let cosignatures = voters
                .iter()
                .filter_map(|v| keys.get(v).map(|k| (v, k)))
                .map(|(v, k)| Cosignature {
                    node_id: *v,
                    signature: k.sign(&message),
                })
                .collect();
            let cmd = Command::Checkpoint {
                size,
                root,
                cosignatures,
            };
            apply(&mut sm, id_for(&mut next), cmd).await?;
            since_checkpoint = 0;
        }
        bar.set_position(done);
    }
    bar.finish_and_clear();
    let grown = started.elapsed();

    // As if the node had applied and compacted these entries itself.
    log.save_committed(Some(next)).await?;
    log.purge(next).await?;
    let snap_started = Instant::now();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;
    let snapshot_len = snapshot.snapshot.len()?;
    let head = sm.lookup().head();
    let final_through = sm.lookup().last_final();
    println!(
        "{}",
        serde_json::json!({
            "node": args.node,
            "records_before": before.count,
            "records": head.count,
            "head": head.hash.to_hex(),
            "last_final": final_through,
            "log_index": next.index,
            "grow_s": grown.as_secs_f64(),
            "decisions_per_s": (args.records as f64 / grown.as_secs_f64()).round(),
            "snapshot_s": snap_started.elapsed().as_secs_f64(),
            "snapshot_bytes": snapshot_len,
        })
    );
    Ok(())
}

async fn apply(
    sm: &mut StateMachine,
    log_id: quorate_raft::LogId,
    cmd: Command,
) -> anyhow::Result<()> {
    let entry: quorate_raft::Entry = Entry {
        log_id,
        payload: EntryPayload::Normal(cmd),
    };
    sm.apply(stream::iter([Ok((entry, None))])).await?;
    Ok(())
}
