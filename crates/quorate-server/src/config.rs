//! Node configuration: the TOML file `quorate node --config` reads. Every key
//! is documented in `config/dev/node1.toml`; keep the two in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config is not usable: {0}")]
    Invalid(String),
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    /// gRPC address peers and clients use to reach this member.
    pub addr: String,
    /// The member's ed25519 public key (hex). The bootstrapping node asks
    /// every member for its key over the internal transport; when this is
    /// given, the key the member proves must be this one.
    #[serde(default)]
    pub public_key: Option<quorate_core::PublicKey>,
    /// The member's region; learned from the member when absent.
    #[serde(default)]
    pub region: Option<String>,
}

/// Checkpoint cadence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The leader proposes a checkpoint at most this often. Milliseconds.
    pub interval_ms: u64,
    /// ... or as soon as this many records were appended since the last one.
    pub max_entries: u64,
    /// A node whose own signed root no quorum has cosigned for this long
    /// (while it is otherwise quorate) contains with DIVERGENCE.
    /// Milliseconds.
    pub finality_timeout_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> CheckpointConfig {
        CheckpointConfig {
            interval_ms: 250,
            max_entries: 1024,
            finality_timeout_ms: 5000,
        }
    }
}

/// Re-verification of stored state at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Re-verify stored state this often (it is also verified on every
    /// start): everything after the verified-up-to mark, a random sample
    /// below it, and the next `sweep_records` of the rolling sweep.
    /// Seconds; 0 disables.
    pub verify_interval_s: u64,
    /// Records below the verified-up-to mark that each periodic run
    /// re-verifies in full, continuing where the last run stopped, so the
    /// whole history is re-read every (records / sweep_records) runs while
    /// no run stalls serving.
    pub sweep_records: u64,
    /// Records below the mark checked at random on start and on every run.
    pub sample_records: u64,
    /// Below this many records everything is verified on start, mark or
    /// not (it takes well under a second).
    pub full_verify_below: u64,
}

impl Default for IntegrityConfig {
    fn default() -> IntegrityConfig {
        IntegrityConfig {
            verify_interval_s: 300,
            sweep_records: 200_000,
            sample_records: 1024,
            full_verify_below: 100_000,
        }
    }
}

/// A publisher whose policy signatures this node accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherConfig {
    pub name: String,
    pub public_key: quorate_core::PublicKey,
}

/// Policy signing requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Refuse PublishPolicy unless it carries a valid signature by one of
    /// `trusted_publishers` over the exact policy bytes.
    pub require_signed_policies: bool,
    pub trusted_publishers: Vec<PublisherConfig>,
}

/// Kubernetes admission on the HTTP port (`POST /k8s/admit`,
/// docs/INTEGRATIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// The domain whose policy decides admission reviews; none: off.
    pub domain: Option<String>,
}

/// Envoy's ext_authz on the gRPC port (`envoy.service.auth.v3`,
/// docs/INTEGRATIONS.md): how an HTTP request becomes a Cedar request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvoyConfig {
    /// The domain of a check whose route sets no `quorate_domain` context
    /// extension; none: such checks are refused.
    pub default_domain: Option<String>,
    /// One mapping per domain a check may be decided in.
    pub domains: Vec<EnvoyDomainConfig>,
}

/// How the HTTP requests of one domain map to Cedar requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoyDomainConfig {
    pub domain: String,
    /// Where the principal comes from: `peer` (the mTLS peer's identity
    /// Envoy verified: its URI SAN, e.g. a SPIFFE id), `header:<name>` (a
    /// header Envoy sets or strips from clients), or `jwt:<claim>` (a
    /// claim of the payload Envoy's jwt_authn filter verified).
    pub principal: String,
    /// The principal's Cedar entity type.
    #[serde(default = "default_principal_type")]
    pub principal_type: String,
    /// The resource's Cedar entity type; its id is `<host><path>`.
    #[serde(default = "default_resource_type")]
    pub resource_type: String,
    /// Request headers copied into the context (lowercase). Only these: the
    /// log keeps what it is given for years, and credentials have no place
    /// in it.
    #[serde(default)]
    pub context_headers: Vec<String>,
    /// jwt_authn's `payload_in_metadata` key, for `jwt:` principals.
    #[serde(default = "default_jwt_payload_key")]
    pub jwt_payload_key: String,
}

fn default_principal_type() -> String {
    "User".into()
}

fn default_resource_type() -> String {
    "Route".into()
}

fn default_jwt_payload_key() -> String {
    "jwt_payload".into()
}

/// The governance console on the HTTP port (docs/CONSOLE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console (`/`, `/console/...`). Off: those paths are 404.
    pub enabled: bool,
    /// Serve the health dashboard's data to callers with no identity. The
    /// other views always need a role that may read them over gRPC.
    pub public_health: bool,
    /// The longest console-token lifetime this node accepts, in seconds.
    pub token_max_ttl_s: u64,
    /// This node's console URL as browsers reach it (e.g. behind a load
    /// balancer). Default: `https://` (`http://` when insecure), the host of
    /// this node's advertised gRPC address and the port of `http_addr`. The
    /// console links to the leader's with it, where actions are taken.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> ConsoleConfig {
        ConsoleConfig {
            enabled: true,
            public_health: false,
            token_max_ttl_s: 8 * 3600,
            public_url: None,
        }
    }
}

/// Mutual TLS for every connection, node to node and client to node
/// (`quorate certs init` makes the files). Relative paths are relative to
/// the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA: every peer and client certificate must chain to it.
    pub ca_file: PathBuf,
    /// This node's certificate; its URI SAN must be
    /// quorate://CLUSTER_ID/node/NODE_ID.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsConfig {
    pub fn files(&self) -> quorate_raft::tls::TlsFiles {
        quorate_raft::tls::TlsFiles {
            ca: self.ca_file.clone(),
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }
}

/// Raft timing and log retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and let the Raft log be compacted) after this many entries.
    pub snapshot_after_entries: u64,
    /// ... and only once the decision log has grown by this percentage of
    /// its size at the last snapshot. A snapshot holds the whole history, so
    /// building one costs time in proportion to it; spacing them in
    /// proportion to it too keeps the cost per decision constant as the
    /// history grows (with 20,000 entries alone, a 10 M-decision node spent
    /// most of its time building 5 GB snapshots). The Raft log kept grows
    /// accordingly: up to this share of the history. 0 snapshots on entries
    /// alone.
    pub snapshot_after_growth_percent: u64,
    /// Raft log entries kept behind a snapshot for lagging followers.
    pub keep_entries_after_snapshot: u64,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_after_entries: 20_000,
            snapshot_after_growth_percent: 25,
            keep_entries_after_snapshot: 1_000,
        }
    }
}

/// Batching of client requests into Raft entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most authorization requests carried by one Raft entry.
    pub max_requests: usize,
    /// Most entries proposed but not yet committed at once.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig {
            max_requests: 256,
            max_in_flight: 2,
        }
    }
}

/// Admission limits per client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second each client may send (its certificate identity,
    /// or its address on an insecure cluster); 0 means unlimited. Nodes
    /// forwarding for their clients are not limited here.
    pub client_requests_per_second: u64,
    /// How many requests a client may send at once after being idle.
    pub client_burst: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            client_requests_per_second: 10_000,
            client_burst: 20_000,
        }
    }
}

/// When an ALLOW may be answered (docs/CONTRACT.md "Attested answers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// Only once a majority of voters, each having applied the decision
    /// itself, has signed a checkpoint covering it; the answer carries that
    /// receipt. One node-to-node round trip more than `committed`.
    #[default]
    Attested,
    /// As soon as the leader has applied the committed decision: its own
    /// evaluation alone vouches for an ALLOW until checkpoints catch up.
    Committed,
}

/// A node's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub cluster_id: String,
    pub node_id: u64,
    #[serde(default = "default_region")]
    pub region: String,
    /// Where RocksDB and the node's files live; `--data-dir` overrides it.
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (Governance API and Raft transport).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (/metrics, /healthz, /readyz, /status).
    pub http_addr: SocketAddr,
    /// Serve GET /status (the cluster's layout) to any caller, not only to
    /// loopback ones.
    #[serde(default)]
    pub public_status: bool,
    /// Deadline for a proposal to commit before the answer is DENY COMMIT_TIMEOUT.
    #[serde(default = "default_commit_timeout")]
    pub commit_timeout_ms: u64,
    /// "attested" (default): ALLOW only with a majority's attestation;
    /// "committed": ALLOW on the leader's own applied evaluation.
    #[serde(default)]
    pub answer: AnswerMode,
    /// Initialise the cluster from `members` on the first start of a fresh
    /// cluster, once every member has answered and none holds state. Safe
    /// to leave on: it is a no-op once the cluster exists, and a node whose
    /// database was lost waits to be repaired by its peers rather than
    /// starting a second cluster beside them.
    #[serde(default = "default_true")]
    pub bootstrap: bool,
    pub members: Vec<MemberConfig>,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Log format: "text" or "json".
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// This node's ed25519 identity key (hex seed). Created with mode 0600 on
    /// first start when absent. Default: `<data_dir>/node.key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub integrity: IntegrityConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub admission: AdmissionConfig,
    #[serde(default)]
    pub envoy: EnvoyConfig,
    /// Mutual TLS; required unless `insecure`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plaintext with no authentication: anyone who reaches the port
    /// may do anything. Only for throwaway test clusters.
    #[serde(default)]
    pub insecure: bool,
}

fn default_region() -> String {
    "default".to_string()
}
fn default_commit_timeout() -> u64 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_log_format() -> String {
    "text".to_string()
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut cfg = cfg;
        if let (Some(tls), Some(dir)) = (cfg.tls.as_mut(), path.parent()) {
            for p in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file] {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks the relations between keys that serde cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty() {
            return Err(ConfigError::Invalid("cluster_id must not be empty".into()));
        }
        if !self.members.iter().any(|m| m.id == self.node_id) {
            return Err(ConfigError::Invalid(format!(
                "node_id {} is not listed in [[members]]; add it or fix node_id",
                self.node_id
            )));
        }
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return Err(ConfigError::Invalid("[[members]] lists an id twice".into()));
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_min_ms must exceed raft.heartbeat_interval_ms (> 0)".into(),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(ConfigError::Invalid(
                "raft.election_timeout_max_ms must exceed raft.election_timeout_min_ms".into(),
            ));
        }
        if let Some(u) = &self.console.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(ConfigError::Invalid(format!(
                "console.public_url must be an http:// or https:// URL, not {u:?}"
            )));
        }
        if self.console.token_max_ttl_s == 0 || self.console.token_max_ttl_s > 7 * 24 * 3600 {
            return Err(ConfigError::Invalid(
                "console.token_max_ttl_s must be between 1 and 604800 (a week)".into(),
            ));
        }
        if self.commit_timeout_ms == 0 {
            return Err(ConfigError::Invalid("commit_timeout_ms must be > 0".into()));
        }
        crate::envoy::check_config(&self.envoy).map_err(ConfigError::Invalid)?;
        if self.batch.max_requests == 0 || self.batch.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "batch.max_requests and batch.max_in_flight must be > 0".into(),
            ));
        }
        let c = &self.checkpoint;
        if c.interval_ms == 0 || c.max_entries == 0 || c.finality_timeout_ms <= c.interval_ms {
            return Err(ConfigError::Invalid(
                "checkpoint.interval_ms and checkpoint.max_entries must be > 0, and \
                 checkpoint.finality_timeout_ms must exceed checkpoint.interval_ms"
                    .into(),
            ));
        }
        if self.security.require_signed_policies && self.security.trusted_publishers.is_empty() {
            return Err(ConfigError::Invalid(
                "security.require_signed_policies is on but no [[security.trusted_publishers]] \
                 are listed; add one (quorate keys gen prints a public key)"
                    .into(),
            ));
        }
        match (&self.tls, self.insecure) {
            (None, false) => {
                return Err(ConfigError::Invalid(
                    "no [tls] table: give ca_file, cert_file and key_file (`quorate certs init` \
                     makes them), or set insecure = true for a plaintext test cluster"
                        .into(),
                ));
            }
            (Some(_), true) => {
                return Err(ConfigError::Invalid(
                    "both [tls] and insecure = true; choose one".into(),
                ));
            }
            _ => {}
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(
                "log_format must be \"text\" or \"json\"".into(),
            ));
        }
        Ok(())
    }

    /// This node's advertised address, from `members`.
    pub fn advertised_addr(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .map(|m| m.addr.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }

    #[test]
    fn example_configs_load() {
        for f in [
            "config/dev/node1.toml",
            "config/dev/node2.toml",
            "config/dev/node3.toml",
            "config/production/node.toml",
        ] {
            let cfg = NodeConfig::load(&repo(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(
                cfg.security.require_signed_policies,
                f.contains("production"),
                "{f}: signed policies are required in production only"
            );
        }
    }

    /// Every key a config can hold is documented in config/dev/node1.toml.
    #[test]
    fn every_key_is_documented_in_the_dev_config() {
        let text = std::fs::read_to_string(repo("config/dev/node1.toml")).unwrap_or_default();
        let mut cfg = NodeConfig::load(&repo("config/dev/node1.toml"))
            .unwrap_or_else(|e| panic!("load: {e}"));
        cfg.key_file = Some(PathBuf::from("k"));
        for m in &mut cfg.members {
            m.public_key = Some(quorate_core::PublicKey([0; 32]));
            m.region = Some("r".into());
        }
        cfg.security.trusted_publishers.push(PublisherConfig {
            name: "n".into(),
            public_key: quorate_core::PublicKey([0; 32]),
        });
        let value = toml::Value::try_from(&cfg).unwrap_or_else(|e| panic!("to toml: {e}"));
        fn keys(v: &toml::Value, out: &mut Vec<String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        out.push(k.clone());
                        keys(v, out);
                    }
                }
                toml::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        keys(&value, &mut all);
        for k in all {
            assert!(
                text.contains(&format!("{k} ="))
                    || text.contains(&format!("[{k}]"))
                    || text.contains(&format!(".{k}]"))
                    || text.contains(&format!("# {k} =")),
                "config key {k} is not documented in config/dev/node1.toml"
            );
        }
    }

    #[test]
    fn signed_policies_need_a_trusted_publisher() {
        let mut cfg = NodeConfig::load(&repo("config/dev/node1.toml"))
            .unwrap_or_else(|e| panic!("load: {e}"));
        cfg.security.require_signed_policies = true;
        assert!(cfg.check().is_err());
    }
}
