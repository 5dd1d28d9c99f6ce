//! The `quorate` command: run a node, run the local dev cluster, and talk to
//! a cluster as a client. Output is JSON (one object, or JSON lines for
//! logs) so scripts can use it; `quorate authorize` exits 0 on ALLOW, 1 on
//! DENY and 2 on bad input or error, so a script can gate execution on it.
//!
//! This is the binary edge: `anyhow` is used here and nowhere else.

mod bench;
mod client;
mod dev;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7101";

#[derive(Parser, Debug)]
#[command(
    name = "quorate",
    version,
    about = "A Raft-replicated execution governance cluster: ask it whether an operation may execute.",
    long_about = "quorate decides whether an operation may execute. Every decision is evaluated \
against the domain's active Cedar policy, committed to a Raft-replicated, hash-chained decision \
log, and only then answered. A node that cannot prove it is part of a quorum denies everything.\n\n\
Start here:\n  quorate dev                      # local 3-node cluster with a demo policy\n  \
quorate status                   # what the cluster looks like\n  \
quorate authorize --domain demo --principal 'User::\"alice\"' --action 'Action::\"read\"' --resource 'Doc::\"1\"'",
    after_help = "Exit codes: 0 success (ALLOW for `authorize`), 1 DENY (`authorize` only), 2 bad input or error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Endpoint {
    /// gRPC address of any node (followers forward to the leader).
    #[arg(long, env = "QUORATE_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node from a config file (see config/dev/node1.toml for every key).
    Node {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Overrides `data_dir` from the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the local 3-node development cluster (the main job).
    ///
    /// Starts the three nodes of config/dev as child processes (so you can kill
    /// one), waits until the cluster is quorate, publishes and activates a demo
    /// policy in domain `demo`, and prints what to try next. Ctrl-C stops all
    /// three; rerunning resumes on the same data.
    Dev {
        /// Where the three nodes keep their data.
        #[arg(long, default_value = ".quorate/dev")]
        data_dir: PathBuf,
        /// Start the cluster, set it up, print its status and exit, leaving the
        /// nodes running (for scripts and tests).
        #[arg(long)]
        detach: bool,
    },
    /// Ask whether an operation may execute. Exit 0 on ALLOW, 1 on DENY, 2 on error.
    Authorize(AuthorizeArgs),
    /// Publish and activate policy versions.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Read the decision log.
    #[command(subcommand)]
    Log(LogCmd),
    /// Show a node's view of the cluster (JSON).
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Load a running cluster with authorization requests and report decisions/s and latency.
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
struct AuthorizeArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Governance domain, e.g. `demo`.
    #[arg(long)]
    domain: String,
    /// Cedar entity UID of the principal, e.g. 'User::"alice"'.
    #[arg(long)]
    principal: String,
    /// Cedar entity UID of the action, e.g. 'Action::"read"'.
    #[arg(long)]
    action: String,
    /// Cedar entity UID of the resource, e.g. 'Doc::"1"'.
    #[arg(long)]
    resource: String,
    /// Cedar context as a JSON object.
    #[arg(long, default_value = "{}")]
    context: String,
    /// File with a JSON array of Cedar entities.
    #[arg(long)]
    entities: Option<PathBuf>,
    /// Idempotency key; retrying with the same id returns the same committed decision.
    /// Defaults to a fresh random id.
    #[arg(long)]
    request_id: Option<String>,
    /// Request id of the parent decision (lineage).
    #[arg(long)]
    parent: Option<String>,
    /// Trace id to record with the decision.
    #[arg(long)]
    trace_id: Option<String>,
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Publish a new immutable policy version (validated before anything is committed).
    Publish {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        domain: String,
        /// Cedar policy file.
        #[arg(long)]
        file: PathBuf,
        /// Optional Cedar schema file (Cedar schema syntax or JSON).
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Make the new version active in the same log entry.
        #[arg(long)]
        activate: bool,
    },
    /// Make an existing version the domain's active one.
    Activate {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        version: u64,
    },
    /// Show a policy version (the active one unless --version is given).
    Get {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        domain: String,
        #[arg(long)]
        version: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum LogCmd {
    /// Decision records as JSON lines, from an index.
    List(LogArgs),
    /// The whole decision log (or a domain's part) as JSON lines, for archiving and verification.
    Export(LogArgs),
    /// One decision, by index or by request id.
    Get {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long, conflicts_with_all = ["domain", "request_id"])]
        index: Option<u64>,
        #[arg(long, requires = "request_id")]
        domain: Option<String>,
        #[arg(long, requires = "domain")]
        request_id: Option<String>,
    },
}

#[derive(Args, Debug)]
struct LogArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only this domain's decisions.
    #[arg(long)]
    domain: Option<String>,
    /// First decision index (1 is the first decision).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// At most this many records (0 = no limit).
    #[arg(long, default_value_t = 0)]
    limit: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Node { config, data_dir } => client::run_node(config, data_dir).await,
        Cmd::Dev { data_dir, detach } => dev::run(data_dir, detach).await,
        Cmd::Authorize(a) => client::authorize(a).await,
        Cmd::Policy(p) => client::policy(p).await,
        Cmd::Log(l) => client::log(l).await,
        Cmd::Status { endpoint } => client::status(&endpoint.endpoint).await,
        Cmd::Bench(b) => bench::run(b).await,
    }
}
