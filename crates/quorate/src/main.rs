//! The `quorate` command: run a node, run the local dev cluster, and talk to
//! a cluster as a client. Output is JSON (one object, or JSON lines for
//! logs) so scripts can use it (`bench` prints a table unless `--json`); `quorate authorize` exits 0 on ALLOW, 1 on
//! DENY and 2 on bad input or error, so a script can gate execution on it.
//!
//! This is the binary edge: `anyhow` is used here and nowhere else.

mod backup;
mod bench;
mod certs;
mod client;
mod console;
mod demo;
mod dev;
mod federation;
mod mcp;
mod proofs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// jemalloc for the whole process, RocksDB's C++ included (its malloc is
/// unprefixed): it hands freed memory back to the system, where glibc's
/// per-thread arenas kept about 120 MB of it after a follower installed a
/// 10 M-decision snapshot (255 MB held, 135 MB in use), which put the
/// node over its memory budget long after the install.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    after_help = "Client commands talk mutual TLS: with --ca/--cert/--key (a certificate from `quorate certs init`; \
its role decides what you may do), or, run from where `quorate dev` keeps .quorate/dev, with the dev \
cluster's certificates. --insecure talks plaintext to a node configured with insecure = true.\n\n\
Exit codes: 0 success (ALLOW for `authorize`), 1 DENY (`authorize` only), 2 bad input or error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    tls: ClientTls,
}

/// How client commands reach a node: mutual TLS with a certificate from
/// `quorate certs init` (its role decides what you may do: admin, agent,
/// auditor), or plaintext with --insecure.
#[derive(Args, Debug, Clone)]
struct ClientTls {
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "QUORATE_CA", global = true, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// Your client certificate (PEM), e.g. agent.pem.
    #[arg(long, env = "QUORATE_CERT", global = true, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "QUORATE_KEY", global = true, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// Talk plaintext to a cluster that runs with `insecure = true`.
    #[arg(
        long,
        env = "QUORATE_INSECURE",
        global = true,
        conflicts_with = "ca",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    insecure: bool,
}

#[derive(Args, Debug, Clone)]
struct Endpoint {
    /// gRPC address of any node (followers forward to the leader).
    #[arg(long, env = "QUORATE_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node from a config file (see config/dev/node1.toml for every key),
    /// or repair a stopped node's damaged state (`quorate node repair`).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        action: Option<NodeCmd>,
        /// The node's TOML config.
        #[arg(long)]
        config: Option<PathBuf>,
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
        /// Where the three nodes keep their data and TLS certificates.
        #[arg(long, default_value = dev::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Start the cluster, set it up, print its status and exit, leaving the
        /// nodes running (for scripts and tests).
        #[arg(long)]
        detach: bool,
    },
    /// The runtime governance demo: a narrated story against the dev cluster.
    ///
    /// Starts the dev cluster (or uses the one running in --data-dir), opens
    /// the console, then plays: an AI agent asking before each tool call
    /// (some allowed, some denied by policy), a payment whose approvals link
    /// to it, a policy rollout in shadow then promoted at one log index, two
    /// nodes killed (every answer DENY NO_QUORUM), recovery, and an offline
    /// verification of the whole log. Each step says what to look at in the
    /// console. The cluster keeps running afterwards.
    Demo {
        /// The dev cluster's data directory.
        #[arg(long, default_value = dev::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Do not try to open a browser (the link is printed either way).
        #[arg(long)]
        no_open: bool,
        /// Pause between steps, in milliseconds, so you can watch the console.
        #[arg(long, default_value_t = 1500)]
        pace_ms: u64,
    },
    /// Ask whether an operation may execute. Exit 0 on ALLOW, 1 on DENY, 2 on error.
    Authorize(AuthorizeArgs),
    /// Put an AI agent's tool calls under governance: run an MCP server
    /// (JSON-RPC over stdio) behind this gate, and point the agent at the
    /// gate instead of the server.
    ///
    /// Every message passes unchanged, except tools/call: each is decided
    /// first (principal --agent, action Action::"call", resource
    /// Tool::"<name>", the arguments in the context) and reaches the server
    /// only on a verified ALLOW; otherwise the agent gets a JSON-RPC error
    /// (code -32001) with the reason and the decision index. The session is
    /// a decision too (Action::"session" on Server::"<program>"), the
    /// parent of all its calls: open it in the console's lineage view.
    ///
    ///   quorate mcp-gate --domain agents --agent 'Agent::"claude-1"' -- npx @acme/files-server
    #[command(name = "mcp-gate")]
    McpGate {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The domain whose policy decides the calls.
        #[arg(long)]
        domain: String,
        /// The agent's identity, a Cedar entity UID, e.g. 'Agent::"claude-1"'.
        #[arg(long)]
        agent: String,
        /// Seconds to keep retrying (same request id) while no node can
        /// decide; then the call is refused.
        #[arg(long, default_value_t = 3.0)]
        retry_for: f64,
        /// The MCP server's command and arguments, after --.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Publish and activate policy versions.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Read the decision log.
    #[command(subcommand)]
    Log(LogCmd),
    /// Membership by region: list members, add learners, promote, remove.
    #[command(subcommand)]
    Cluster(federation::ClusterCmd),
    /// Staged policy rollouts across domains: shadow, promote, roll back.
    #[command(subcommand)]
    Rollout(federation::RolloutCmd),
    /// The governance console every node serves on its HTTP port (`/`):
    /// sign a browser in.
    #[command(subcommand)]
    Console(ConsoleCmd),
    /// Write a verified backup of a running node into a new directory on
    /// its machine.
    ///
    /// The node takes a consistent RocksDB checkpoint, opens it and verifies
    /// it whole (chain, Merkle tree, checkpoints, policy hashes) before
    /// answering its manifest; a backup that does not verify is removed.
    /// Backups hold no secrets (not the node key). Admin.
    Backup {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Absolute path on the node's machine; must not exist yet.
        #[arg(long)]
        out: String,
    },
    /// Seed a new cluster from a backup, offline (the node is stopped).
    ///
    /// For when the cluster the backup came from is gone. The backup is
    /// copied into the node's empty data directory and verified; the node
    /// becomes the only voter of a cluster that continues the backed-up
    /// history (same cluster id, same node id and key). A node is never
    /// restored in place into a running cluster: its old vote could let it
    /// vote twice in one term. A lost member rejoins as a learner instead.
    Restore {
        /// The backup directory (with backup.json and db/).
        #[arg(long)]
        from: PathBuf,
        /// The node's TOML config (cluster_id, node_id, key_file, address).
        #[arg(long)]
        config: PathBuf,
        /// Overrides `data_dir` from the config; its db/ must be empty.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Show a node's view of the cluster (JSON).
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Check the write path end to end: commit entries that change nothing.
    ///
    /// Each probe goes through the same batching, forwarding to the leader,
    /// replication, fsync and apply as a decision, and is answered once
    /// applied; no decision is made or recorded. Prints the log index and
    /// latency of each (JSON). Exit 0 when every probe committed, 2 when one
    /// did not (contained node, no quorum, commit timeout: the error says which).
    #[command(
        after_help = "Examples:\n  quorate probe\n  quorate probe --count 20 --endpoint 127.0.0.1:7102"
    )]
    Probe {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Probes to send, one after another.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
    },
    /// Load a running cluster with authorization requests and report decisions/s and latency.
    Bench(bench::BenchArgs),
    /// Make and export ed25519 keys: publisher keys, and the trust file verifiers need.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Make TLS certificates: a cluster CA, node certificates and client
    /// certificates for the admin, agent and auditor roles.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Verify receipts, log exports and consistency proofs offline (no node needed).
    ///
    /// Exit 0 when everything verifies, 1 when anything does not (the error
    /// names the first bad line and record index), 2 when an input cannot be read.
    /// Get the trust file from the cluster once with `quorate keys export`.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["receipt", "log", "consistency"])))]
    Verify {
        /// Trust file from `quorate keys export`: cluster id, node keys, trusted publishers.
        #[arg(long)]
        trust: PathBuf,
        /// A receipt from `quorate authorize --receipt` or `quorate log receipt`.
        #[arg(long)]
        receipt: Option<PathBuf>,
        /// A log export from `quorate log export`: recomputes every hash, the chain,
        /// the Merkle roots and cosignatures, and re-evaluates every decision.
        #[arg(long)]
        log: Option<PathBuf>,
        /// OLD is a checkpoint you kept (`quorate log checkpoint`); NEW is a consistency
        /// bundle (`quorate log consistency --old OLD`). Proves NEW extends OLD.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
        consistency: Option<Vec<PathBuf>>,
        /// With --log: skip re-evaluating decisions with Cedar (hashes, chain and proofs only).
        #[arg(long)]
        no_reevaluate: bool,
        /// With --log: threads re-evaluating decisions with Cedar beside the one that
        /// reads the export and checks hashes, chain and signatures in order (default: one
        /// per core; 0 re-evaluates on the reading thread). The result is the same for
        /// any N: the first problem by line.
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Repair a stopped node whose stored state failed verification
    /// (INTEGRITY_FAILURE) or diverged (DIVERGENCE): fetch a snapshot from a
    /// healthy peer, verify it completely (chain, Merkle roots, quorum
    /// cosignatures), and replace the damaged state with it. The snapshot is
    /// accepted only if a final checkpoint covers every record in it and
    /// that checkpoint is cosigned by a majority of voters this node already
    /// trusts: the voter sets it recorded itself, or those of --trust.
    Repair {
        /// The node's TOML config.
        #[arg(long)]
        config: PathBuf,
        /// Overrides `data_dir` from the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Peer to repair from (host:port); default: each other member in turn.
        #[arg(long)]
        from: Option<String>,
        /// Repair even if the local state verifies.
        #[arg(long)]
        force: bool,
        /// Trust the voters of this trust file (`quorate keys export`)
        /// instead of the voter sets this node recorded: for a node whose
        /// own record of them is damaged.
        #[arg(long)]
        trust: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Write ca.pem/.key, node-N.pem/.key for N in 1..=--nodes and
    /// admin|agent|auditor.pem/.key to --out. Node certificates carry
    /// quorate://CLUSTER/node/N, the DNS name quorate-node, localhost and
    /// 127.0.0.1 (plus every --ip); client certificates carry
    /// quorate://CLUSTER/client/ROLE/ROLE. Never overwrites.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// The cluster_id of the nodes' configs.
        #[arg(long)]
        cluster: String,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Extra IP addresses for the node certificates.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Extra DNS names for the node certificates, e.g. the Service the
        /// Kubernetes API server calls for admission
        /// (quorate-admission.quorate.svc). Repeatable.
        #[arg(long)]
        dns: Vec<String>,
    },
    /// Issue one more certificate from the CA in --dir (ca.pem + ca.key):
    /// for a node that joins later (--node N), a new client (--role ROLE
    /// --name NAME), or a replacement to rotate (--out-name, then move the
    /// files over the old ones: nodes reload on change or SIGHUP).
    #[command(group(clap::ArgGroup::new("subject").required(true).args(["node", "role"])))]
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        node: Option<u64>,
        /// admin, agent or auditor.
        #[arg(long, requires = "name")]
        role: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Extra DNS names (node certificates only). Repeatable.
        #[arg(long)]
        dns: Vec<String>,
        /// File name stem (default node-N or ROLE-NAME).
        #[arg(long)]
        out_name: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create an ed25519 key file (mode 0600) and print its public key.
    Gen {
        /// Where to write the secret key; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the trust file of a running cluster (redirect it to trust.json).
    Export {
        #[command(flatten)]
        endpoint: Endpoint,
    },
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
    /// Print the decision's receipt under "receipt": the record, its
    /// inclusion proof and a checkpoint cosigned by a majority of voters.
    /// An attested ALLOW (the default answer mode) carries it, so this
    /// needs no second call; otherwise it is fetched, waiting until a
    /// checkpoint covers the decision. Save it (`jq .receipt`) and check it
    /// offline with `quorate verify --receipt FILE --trust TRUST`.
    #[arg(long)]
    receipt: bool,
    /// Keep retrying (with the same request id, so a retry is never a
    /// second decision) for this many seconds while no node can decide:
    /// rides out a leader election. Then the answer is the last DENY
    /// (NO_QUORUM, ...). --endpoint may list several nodes, comma-separated.
    #[arg(long, default_value_t = 3.0)]
    retry_for: f64,
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
        /// Signature file from `quorate policy sign` over these exact files.
        #[arg(long, conflicts_with = "sign_with")]
        signature: Option<PathBuf>,
        /// Sign with this publisher key file before publishing.
        #[arg(long)]
        sign_with: Option<PathBuf>,
    },
    /// Sign a policy (and schema) as a publisher: prints the signature JSON
    /// that `policy publish --signature` sends.
    Sign {
        /// Publisher key file from `quorate keys gen`.
        #[arg(long)]
        key: PathBuf,
        /// Cedar policy file.
        #[arg(long)]
        file: PathBuf,
        /// Optional schema file; it is covered by the signature.
        #[arg(long)]
        schema: Option<PathBuf>,
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
enum ConsoleCmd {
    /// Print a URL that signs a browser into the console as ROLE.
    ///
    /// Signs a short-lived token with a client certificate of that role
    /// (--cert/--key, or the dev cluster's when run where `quorate dev`
    /// keeps its data). Any node of the cluster accepts it until it expires;
    /// it grants exactly what the certificate grants over gRPC: auditor
    /// reads the log, lineage, proofs and policies; admin also acts.
    Login {
        /// admin, auditor or agent.
        #[arg(long, default_value = "auditor", value_parser = ["admin", "auditor", "agent"])]
        role: String,
        /// Lifetime in minutes (nodes refuse tokens longer-lived than their
        /// console.token_max_ttl_s).
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u64,
        /// The console's address: a node's HTTP port.
        #[arg(long, default_value = console::DEFAULT_CONSOLE_URL)]
        url: String,
        /// Print the identity, URL and token as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LogCmd {
    /// Decision records as JSON lines, from an index.
    List(LogArgs),
    /// The whole log as verifiable JSON lines (header, policies, activations,
    /// records, checkpoints) for archiving and `quorate verify --log`.
    Export {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The receipt of one decision (by index or request id), waiting up to
    /// --wait seconds for a final checkpoint to cover it.
    Receipt {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        key: DecisionKeyArgs,
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// A final (quorum-cosigned) checkpoint: the latest, or the one at --size.
    Checkpoint {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        size: Option<u64>,
    },
    /// Proof that the latest final checkpoint (or --new-size) extends an
    /// older tree: give the checkpoint you kept (--old FILE) or its size.
    /// Verify it with `quorate verify --consistency OLD NEW`.
    #[command(group(clap::ArgGroup::new("older").required(true).args(["old", "old_size"])))]
    Consistency {
        #[command(flatten)]
        endpoint: Endpoint,
        /// A checkpoint file from `quorate log checkpoint` (its size is used).
        #[arg(long)]
        old: Option<PathBuf>,
        #[arg(long)]
        old_size: Option<u64>,
        #[arg(long)]
        new_size: Option<u64>,
    },
    /// Follow the decision log: every record from --from on, then each new
    /// one as it commits, as JSON lines. Every node streams the same
    /// sequence; on a broken connection it resumes after the last record.
    Watch {
        #[command(flatten)]
        endpoint: Endpoint,
        /// First decision index (1 is the first decision).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only this domain's decisions.
        #[arg(long)]
        domain: Option<String>,
        /// Stop after this many records (0 = follow forever).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Decisions linked by `parent` and `trace_id`, drawn as a tree: a
    /// decision with its ancestors and descendants (--index), or every
    /// decision of a trace (--trace-id, paginated with --after). --json for
    /// scripts. Auditor or admin.
    #[command(group(clap::ArgGroup::new("of").required(true).args(["index", "trace_id"])))]
    Lineage {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        index: Option<u64>,
        #[arg(long)]
        trace_id: Option<String>,
        /// At most this many decisions (the node caps it at 1000).
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Trace pages: only decisions above this index (the `next_after`
        /// the previous page printed).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// One JSON document instead of the tree.
        #[arg(long)]
        json: bool,
    },
    /// One decision, by index or by request id.
    Get {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        key: DecisionKeyArgs,
    },
}

/// Names one decision: by its index, or by (domain, request id).
#[derive(Args, Debug)]
struct DecisionKeyArgs {
    #[arg(long, conflicts_with_all = ["domain", "request_id"])]
    index: Option<u64>,
    #[arg(long, requires = "request_id")]
    domain: Option<String>,
    #[arg(long, requires = "domain")]
    request_id: Option<String>,
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
    // Without explicit certificates, the dev cluster's are used with the
    // role the command needs: agents decide, admins do everything else.
    let role = match &cli.command {
        Cmd::Authorize(_) | Cmd::McpGate { .. } | Cmd::Bench(_) | Cmd::Probe { .. } => "agent",
        _ => "admin",
    };
    if let Cmd::Console(ConsoleCmd::Login {
        role,
        ttl_minutes,
        url,
        json,
    }) = &cli.command
    {
        return console::login(
            cli.tls.cert,
            cli.tls.key,
            role,
            ttl_minutes.saturating_mul(60),
            url,
            *json,
        );
    }
    client::set_transport(
        cli.tls.ca,
        cli.tls.cert,
        cli.tls.key,
        cli.tls.insecure,
        role,
    )?;
    match cli.command {
        Cmd::Node {
            action:
                Some(NodeCmd::Repair {
                    config,
                    data_dir,
                    from,
                    force,
                    trust,
                }),
            ..
        } => proofs::repair(&config, data_dir, from, force, trust).await,
        Cmd::Node {
            action: None,
            config,
            data_dir,
        } => match config {
            Some(config) => client::run_node(config, data_dir).await,
            None => anyhow::bail!("give --config FILE (see config/dev/node1.toml)"),
        },
        Cmd::McpGate {
            endpoint,
            domain,
            agent,
            retry_for,
            command,
        } => {
            let retry_for = std::time::Duration::try_from_secs_f64(retry_for)
                .map_err(|_| anyhow::anyhow!("--retry-for must be a number of seconds >= 0"))?;
            mcp::run(mcp::Gate {
                client: client::governed_client(&endpoint.endpoint, retry_for, false)?,
                domain,
                principal: agent,
                command,
            })
            .await
        }
        Cmd::Keys(KeysCmd::Gen { out }) => proofs::keys_gen(&out),
        Cmd::Certs(CertsCmd::Init {
            out,
            cluster,
            nodes,
            ip,
            dns,
        }) => certs::init(&out, &cluster, nodes, &ip, &dns, false),
        Cmd::Certs(CertsCmd::Issue {
            dir,
            cluster,
            node,
            role,
            name,
            ip,
            dns,
            out_name,
        }) => {
            let subject = match (node, role, name) {
                (Some(n), None, _) => certs::Subject::Node(n),
                (None, Some(role), Some(name)) => certs::Subject::Client { role, name },
                _ => anyhow::bail!("give --node N, or --role ROLE --name NAME"),
            };
            certs::issue(&dir, &cluster, subject, &ip, &dns, out_name)
        }
        Cmd::Keys(KeysCmd::Export { endpoint }) => proofs::keys_export(&endpoint.endpoint).await,
        Cmd::Verify {
            trust,
            receipt,
            log,
            consistency,
            no_reevaluate,
            jobs,
        } => {
            let what = match (receipt, log, consistency) {
                (Some(r), _, _) => proofs::VerifyWhat::Receipt(r),
                (None, Some(path), _) => proofs::VerifyWhat::Log {
                    path,
                    reevaluate: !no_reevaluate,
                    jobs: jobs.unwrap_or_else(|| {
                        std::thread::available_parallelism().map_or(1, |n| n.get())
                    }),
                },
                (None, None, Some(mut c)) if c.len() == 2 => {
                    let new = c.pop().unwrap_or_default();
                    let old = c.pop().unwrap_or_default();
                    proofs::VerifyWhat::Consistency { old, new }
                }
                _ => anyhow::bail!("give --receipt FILE, --log FILE or --consistency OLD NEW"),
            };
            proofs::verify(&trust, what)
        }
        Cmd::Dev { data_dir, detach } => dev::run(data_dir, detach).await,
        Cmd::Demo {
            data_dir,
            no_open,
            pace_ms,
        } => {
            demo::run(
                data_dir,
                !no_open,
                std::time::Duration::from_millis(pace_ms),
            )
            .await
        }
        Cmd::Authorize(a) => client::authorize(a).await,
        Cmd::Policy(p) => client::policy(p).await,
        Cmd::Log(l) => client::log(l).await,
        Cmd::Status { endpoint } => client::status(&endpoint.endpoint).await,
        Cmd::Probe { endpoint, count } => client::probe(&endpoint.endpoint, count).await,
        Cmd::Cluster(c) => federation::cluster(c).await,
        Cmd::Rollout(r) => federation::rollout(r).await,
        Cmd::Bench(b) => bench::run(b).await,
        Cmd::Console(_) => unreachable_console(),
        Cmd::Backup { endpoint, out } => backup::backup(&endpoint.endpoint, &out).await,
        Cmd::Restore {
            from,
            config,
            data_dir,
        } => backup::restore(&from, &config, data_dir),
    }
}

/// `console` commands are handled before a transport is chosen.
fn unreachable_console() -> anyhow::Result<ExitCode> {
    anyhow::bail!("internal: console commands run before the transport is set up")
}
