//! `quorate cluster`, `quorate log watch` and `quorate rollout`: membership
//! by region, the resumable decision stream, and staged rollouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use quorate_core::rollout::{Candidate, RolloutPlan, StagePlan};
use quorate_proto::record_from_wire;
use quorate_proto::v1;
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::Endpoint;
use crate::client::{connect, connect_leader, print_json, status_error};

#[derive(Subcommand, Debug)]
pub(crate) enum ClusterCmd {
    /// Members by region: voters, learners, and (from the leader) how far
    /// each is behind.
    Members {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Add a started node (config `bootstrap = false`) as a non-voting
    /// learner. It receives the whole ordered log (snapshot, then entries)
    /// and serves reads and forwarded writes; it does not vote.
    AddLearner {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The new node's node_id.
        #[arg(long)]
        id: u64,
        /// Its gRPC address as the other nodes reach it (host:port).
        #[arg(long)]
        addr: String,
    },
    /// Make a caught-up learner a voter (quorum grows with it).
    Promote {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        id: u64,
        /// Refuse while the learner is more than this many entries behind.
        #[arg(long, default_value_t = 1000)]
        max_lag: u64,
    },
    /// Remove a voter or learner (quorum shrinks with a voter).
    Remove {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum RolloutCmd {
    /// Start a rollout from a plan file (TOML or JSON; see
    /// docs/OPERATIONS.md "Rollouts"): publishes every candidate as an
    /// inactive version and puts the first stage in shadow. A candidate
    /// that does not compile refuses the whole plan; nothing is committed.
    Start {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        plan: PathBuf,
        /// Sign every candidate with this publisher key (clusters that
        /// require signed policies).
        #[arg(long)]
        sign_with: Option<PathBuf>,
    },
    /// Activate the candidates of the stage in shadow, at one log index on
    /// every node, and put the next stage in shadow.
    Promote {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Rollout id (default: the latest).
        #[arg(long, default_value = "")]
        id: String,
        /// Promote before the stage's shadow minimum is reached.
        #[arg(long)]
        force: bool,
    },
    /// Reactivate every promoted domain's pre-rollout version, at one log
    /// index, and end the rollout.
    Rollback {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, default_value = "")]
        id: String,
    },
    /// Stage, per-domain shadow counts (same / ALLOW→DENY / DENY→ALLOW)
    /// and samples of differing decisions.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, default_value = "")]
        id: String,
    },
}

pub(crate) async fn cluster(cmd: ClusterCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ClusterCmd::Members { endpoint } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            let s = c
                .status(v1::StatusRequest {})
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            print_json(&members_json(&s))?;
        }
        ClusterCmd::AddLearner { endpoint, id, addr } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            let r = c
                .add_learner(v1::AddLearnerRequest { node_id: id, addr })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            print_json(&membership_json(&r))?;
        }
        ClusterCmd::Promote {
            endpoint,
            id,
            max_lag,
        } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            let r = c
                .promote_voter(v1::MembershipChangeRequest {
                    node_id: id,
                    max_lag,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            print_json(&membership_json(&r))?;
        }
        ClusterCmd::Remove { endpoint, id } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            let r = c
                .remove_node(v1::MembershipChangeRequest {
                    node_id: id,
                    max_lag: 0,
                })
                .await
                .map_err(|e| status_error(&e))?
                .into_inner();
            print_json(&membership_json(&r))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn member_json(m: &v1::Member) -> serde_json::Value {
    serde_json::json!({
        "node_id": m.node_id, "addr": m.addr, "region": m.region,
        "role": if m.voter { "voter" } else { "learner" },
        "matched_index": m.matched_index, "lag": m.lag,
    })
}

/// Members grouped by region, voters and learners apart.
pub(crate) fn members_json(s: &v1::StatusResponse) -> serde_json::Value {
    let mut regions: BTreeMap<&str, (Vec<serde_json::Value>, Vec<serde_json::Value>)> =
        BTreeMap::new();
    for m in &s.members {
        let e = regions.entry(m.region.as_str()).or_default();
        if m.voter {
            e.0.push(member_json(m));
        } else {
            e.1.push(member_json(m));
        }
    }
    let voters = s.members.iter().filter(|m| m.voter).count();
    serde_json::json!({
        "leader_id": s.leader_id,
        "voters": voters,
        "learners": s.members.len() - voters,
        // Voters that may fail with the cluster still deciding.
        "tolerates_failures": voters.saturating_sub(quorate_core::majority(voters)),
        "last_log_index": s.last_log_index,
        "regions": regions.into_iter().map(|(r, (v, l))| {
            (r.to_string(), serde_json::json!({"voters": v, "learners": l}))
        }).collect::<serde_json::Map<_, _>>(),
    })
}

fn membership_json(r: &v1::MembershipResponse) -> serde_json::Value {
    serde_json::json!({
        "log_index": r.log_index,
        "members": r.members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

/// `quorate log watch`: JSON lines, forever (or until --limit); on a broken
/// stream it reconnects and resumes after the last record it printed.
pub(crate) async fn watch(
    endpoint: &str,
    from: u64,
    domain: Option<String>,
    limit: u64,
) -> anyhow::Result<ExitCode> {
    let mut next = from.max(1);
    let mut printed = 0u64;
    let mut failures = 0u32;
    loop {
        let result: anyhow::Result<()> = async {
            let mut c = connect(endpoint).await?;
            let mut stream = c
                .watch_decisions(v1::WatchDecisionsRequest {
                    from_index: next,
                    domain: domain.clone(),
                })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            while let Some(item) = stream.next().await {
                let w = item.map_err(|s| status_error(&s))?;
                let rec = record_from_wire(&w).map_err(|e| anyhow!("malformed record: {e}"))?;
                if !rec.hash_is_valid() {
                    bail!("record {} does not match its hash; stopping", rec.index);
                }
                next = rec.index + 1;
                failures = 0;
                if !crate::client::print_line(&rec)? {
                    return Ok(()); // stdout closed (`| head`)
                }
                printed += 1;
                if limit != 0 && printed >= limit {
                    return Ok(());
                }
            }
            Err(anyhow!("the stream ended"))
        }
        .await;
        match result {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) => {
                failures += 1;
                if failures > 30 {
                    return Err(e.context(format!(
                        "watch gave up after 30 attempts; resume with --from {next}"
                    )));
                }
                eprintln!("watch: {e:#}; resuming from index {next}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A plan file as written: candidates may name a policy file (relative to
/// the plan) instead of inlining the text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    id: String,
    candidates: Vec<CandidateFile>,
    stages: Vec<StagePlan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateFile {
    domain: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    policy_text: Option<String>,
    #[serde(default)]
    schema_file: Option<PathBuf>,
}

fn read_plan(path: &Path, sign_with: Option<&Path>) -> anyhow::Result<RolloutPlan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the plan {}", path.display()))?;
    let raw: PlanFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not a plan", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not a plan", path.display()))?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let key = sign_with
        .map(quorate_server::identity::load_key)
        .transpose()?;
    let mut candidates = Vec::new();
    for c in raw.candidates {
        let policy_text = match (c.file, c.policy_text) {
            (Some(f), None) => {
                let p = dir.join(f);
                std::fs::read_to_string(&p).with_context(|| {
                    format!("candidate for {:?}: cannot read {}", c.domain, p.display())
                })?
            }
            (None, Some(t)) => t,
            _ => bail!(
                "candidate for {:?}: give exactly one of `file` and `policy_text`",
                c.domain
            ),
        };
        let schema = c
            .schema_file
            .map(|f| {
                let p = dir.join(f);
                std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
            })
            .transpose()?;
        let signature = key
            .as_ref()
            .map(|k| quorate_core::PolicySignature::sign(k, &policy_text, schema.as_deref()));
        candidates.push(Candidate {
            domain: c.domain,
            policy_text,
            schema,
            signature,
        });
    }
    Ok(RolloutPlan {
        id: raw.id,
        candidates,
        stages: raw.stages,
    })
}

pub(crate) async fn rollout(cmd: RolloutCmd) -> anyhow::Result<ExitCode> {
    let doc = match cmd {
        RolloutCmd::Start {
            endpoint,
            plan,
            sign_with,
        } => {
            let plan = read_plan(&plan, sign_with.as_deref())?;
            let mut c = connect_leader(&endpoint.endpoint).await?;
            c.start_rollout(v1::StartRolloutRequest {
                plan_json: serde_json::to_string(&plan)?,
            })
            .await
        }
        RolloutCmd::Promote {
            endpoint,
            id,
            force,
        } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            c.promote_rollout(v1::RolloutRequest {
                rollout_id: id,
                force,
            })
            .await
        }
        RolloutCmd::Rollback { endpoint, id } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            c.rollback_rollout(v1::RolloutRequest {
                rollout_id: id,
                force: false,
            })
            .await
        }
        RolloutCmd::Status { endpoint, id } => {
            let mut c = connect(&endpoint.endpoint).await?;
            c.get_rollout(v1::RolloutRequest {
                rollout_id: id,
                force: false,
            })
            .await
        }
    }
    .map_err(|s| status_error(&s))?
    .into_inner();
    let v: serde_json::Value = serde_json::from_str(&doc.json)?;
    print_json(&v)?;
    Ok(ExitCode::SUCCESS)
}
