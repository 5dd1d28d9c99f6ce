//! quorate-client: ask a quorate cluster whether an operation may execute,
//! from Rust, and get an answer you can act on.
//!
//! ```no_run
//! # async fn f() -> Result<(), quorate_client::Error> {
//! use quorate_client::{Client, Outcome, Request};
//! let client = Client::builder(["127.0.0.1:7101", "127.0.0.1:7102"]).certs_dir(".quorate/dev/certs", "agent")?.build()?;
//! let req = Request::new("demo", r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"1""#);
//! match client.authorize(req).await? {
//!     Outcome::Allow(a) => println!("run it: decision {}", a.record.index),
//!     Outcome::Deny(d) => println!("refused: {} ({})", d.reason, d.message),
//! }
//! # Ok(()) }
//! ```
//!
//! What it owns: the endpoint list and where to send a call (the node that
//! last answered, the leader once known), retries, and the client's half of
//! fail-closed. An [`Outcome::Allow`] exists only for an answer that was
//! checked here: a committed record whose hash verifies, that decides the
//! very request sent, with a receipt proving the record is under a
//! checkpoint a quorum cosigned (verified against a trust file when one is
//! given). Anything else is an [`Outcome::Deny`] or an [`Error`], and an
//! `Error` is never a permission.
//!
//! Retries reuse the request's id, so a retry of a call whose outcome was
//! unknown (a timeout, a dropped connection, a contained node) returns the
//! decision that was committed, if one was, and never creates a second
//! one. When no node can decide, the last containment DENY is the answer.
//!
//! Must not depend on quorate-server, quorate-store or RocksDB: callers
//! embed this crate.

mod check;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use quorate_core::proof::{Receipt, TrustFile};
use quorate_core::{DecisionRecord, ErrorCode};
use quorate_proto::v1::{self, governance_client::GovernanceClient};
use quorate_raft::tls::{TlsContext, TlsFiles};
use tonic::transport::Channel;

pub use check::{Checked, check_answer};
pub use quorate_core::entity_uid;

/// Why a call was not decided. Never a permission: act as on a refusal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client's own settings (endpoints, certificates).
    #[error("client configuration: {0}")]
    Config(String),
    /// The cluster refused the request as malformed; nothing was committed.
    /// Retrying the same request cannot succeed.
    #[error("INVALID_ARGUMENT: {0} (nothing was committed)")]
    InvalidArgument(String),
    /// This client's identity may not make the call.
    #[error("PERMISSION_DENIED: {0}")]
    PermissionDenied(String),
    /// No node answered within the attempts. The outcome is unknown:
    /// retrying with the same request id is safe and returns the committed
    /// decision, if any was made.
    #[error(
        "UNAVAILABLE: no node answered after {attempts} attempts (last: {last}); treat it as a \
         refusal, and retry later with the same request id"
    )]
    Unavailable { attempts: u32, last: String },
    /// Any other error the cluster returned, with its stable code.
    #[error("{code}: {message}")]
    Rpc { code: String, message: String },
}

/// One authorization request. Entity UIDs are Cedar's (`User::"alice"`);
/// build them from outside values with [`entity_uid`].
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub domain: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// A JSON object (the Cedar context).
    pub context: serde_json::Value,
    /// A JSON array of Cedar entities, if any.
    pub entities: Option<serde_json::Value>,
    /// The idempotency key: unique per domain, kept across retries.
    pub request_id: String,
    /// The request id of the decision this one descends from (lineage).
    pub parent: Option<String>,
    pub trace_id: Option<String>,
}

impl Request {
    /// A request with an empty context and a fresh request id.
    pub fn new(
        domain: impl Into<String>,
        principal: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> Request {
        Request {
            domain: domain.into(),
            principal: principal.into(),
            action: action.into(),
            resource: resource.into(),
            context: serde_json::json!({}),
            entities: None,
            request_id: fresh_id(),
            parent: None,
            trace_id: None,
        }
    }

    pub fn context(mut self, context: serde_json::Value) -> Request {
        self.context = context;
        self
    }

    pub fn entities(mut self, entities: serde_json::Value) -> Request {
        self.entities = Some(entities);
        self
    }

    /// Sets the idempotency key (e.g. an id your system already has for the
    /// operation, so that its retries are one decision).
    pub fn request_id(mut self, id: impl Into<String>) -> Request {
        self.request_id = id.into();
        self
    }

    pub fn parent(mut self, request_id: impl Into<String>) -> Request {
        self.parent = Some(request_id.into());
        self
    }

    pub fn trace_id(mut self, id: impl Into<String>) -> Request {
        self.trace_id = Some(id.into());
        self
    }

    /// The request as it goes on the wire.
    pub fn to_wire(&self) -> v1::AuthorizeRequest {
        v1::AuthorizeRequest {
            domain: self.domain.clone(),
            principal: self.principal.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            context_json: self.context.to_string(),
            entities_json: self.entities.as_ref().map(|e| e.to_string()),
            request_id: self.request_id.clone(),
            parent: self.parent.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// A request id unique to this process and moment: time, process id and a
/// counter (uniqueness, not secrecy, is what an idempotency key needs).
pub fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "rc-{t:x}-{:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Allow(Allowed),
    Deny(Denied),
}

impl Outcome {
    pub fn is_allow(&self) -> bool {
        matches!(self, Outcome::Allow(_))
    }
}

/// A verified permission: execute the operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    /// The committed decision (its hash verified, deciding the request sent).
    pub record: DecisionRecord,
    /// The record's receipt under a checkpoint a quorum cosigned; `None`
    /// only for a client built with `accept_committed`.
    pub receipt: Option<Box<Receipt>>,
    /// The receipt's JSON exactly as the node sent it (store this to verify
    /// later with `quorate verify --receipt`).
    pub receipt_json: Option<String>,
    /// The request id had been decided before; this is that decision.
    pub replayed: bool,
    /// The node that answered.
    pub served_by: u64,
}

/// A refusal: do not execute.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    /// The stable reason code (`POLICY`, `NO_QUORUM`, `INTEGRITY_FAILURE`,
    /// `UNATTESTED`, ...; docs/CONTRACT.md).
    pub reason: String,
    pub message: String,
    /// The committed decision, for reasons decided by the policy; `None`
    /// for containment (no node could commit the request).
    pub record: Option<DecisionRecord>,
    /// The request id had been decided before; this is that decision.
    pub replayed: bool,
    pub served_by: u64,
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct Builder {
    endpoints: Vec<String>,
    tls: Option<Arc<TlsContext>>,
    insecure: bool,
    attempts: u32,
    retry_for: Duration,
    attempt_timeout: Duration,
    backoff: Duration,
    accept_committed: bool,
    trust: Option<TrustFile>,
}

impl Builder {
    /// Mutual TLS with `ca`, and `cert` / `key` as this client's identity.
    pub fn tls_files(
        mut self,
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Builder, Error> {
        let files = TlsFiles {
            ca: ca.as_ref().to_path_buf(),
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
        };
        self.tls = Some(TlsContext::load(files).map_err(|e| Error::Config(e.to_string()))?);
        Ok(self)
    }

    /// `dir/ca.pem` with `dir/ROLE.pem` and `.key` (`quorate certs init`).
    pub fn certs_dir(self, dir: impl AsRef<Path>, role: &str) -> Result<Builder, Error> {
        let d = dir.as_ref();
        self.tls_files(
            d.join("ca.pem"),
            d.join(format!("{role}.pem")),
            d.join(format!("{role}.key")),
        )
    }

    /// A TLS context already loaded (shared with other clients).
    pub fn tls(mut self, tls: Arc<TlsContext>) -> Builder {
        self.tls = Some(tls);
        self
    }

    /// Plaintext, for a cluster configured `insecure = true`. Never chosen
    /// without this call.
    pub fn insecure(mut self) -> Builder {
        self.insecure = true;
        self
    }

    /// At most this many calls for one request, across endpoints
    /// (default 64).
    pub fn attempts(mut self, n: u32) -> Builder {
        self.attempts = n.max(1);
        self
    }

    /// Keep retrying for this long after the first call (default 5 s:
    /// longer than a leader election). At least one call is always made.
    pub fn retry_for(mut self, d: Duration) -> Builder {
        self.retry_for = d;
        self
    }

    /// How long one call may take (default 10 s).
    pub fn attempt_timeout(mut self, d: Duration) -> Builder {
        self.attempt_timeout = d;
        self
    }

    /// The pause before a retry, doubled after each (default 100 ms).
    pub fn backoff(mut self, d: Duration) -> Builder {
        self.backoff = d;
        self
    }

    /// Accept an ALLOW without a receipt, from a cluster configured
    /// `answer = "committed"`. Off by default: an unattested ALLOW is a
    /// DENY `UNATTESTED`.
    pub fn accept_committed(mut self, yes: bool) -> Builder {
        self.accept_committed = yes;
        self
    }

    /// Verify every receipt's checkpoint as final under this trust file
    /// (`quorate keys export`), not only its inclusion proof.
    pub fn trust(mut self, trust: TrustFile) -> Builder {
        self.trust = Some(trust);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config(
                "give at least one endpoint (host:port)".into(),
            ));
        }
        if self.tls.is_none() && !self.insecure {
            return Err(Error::Config(
                "no client certificate: call certs_dir/tls_files, or insecure() for a cluster \
                 configured insecure = true"
                    .into(),
            ));
        }
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for e in &self.endpoints {
            let addr = e
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|err| Error::Config(format!("{e:?} is not host:port: {err}")))?;
            endpoints.push(addr.to_string());
        }
        let channels = endpoints.iter().map(|_| OnceLock::new()).collect();
        Ok(Client {
            inner: Arc::new(Inner {
                tls: self.tls,
                endpoints,
                channels,
                preferred: AtomicUsize::new(0),
                attempts: self.attempts,
                retry_for: self.retry_for,
                attempt_timeout: self.attempt_timeout,
                backoff: self.backoff,
                accept_committed: self.accept_committed,
                trust: self.trust,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    /// The identity every channel presents (None: plaintext).
    tls: Option<Arc<TlsContext>>,
    endpoints: Vec<String>,
    /// One per endpoint, made (lazily connecting) on first use: inside the
    /// caller's Tokio runtime.
    channels: Vec<OnceLock<Result<Channel, String>>>,
    /// Where the next call goes first: the node that last answered, or the
    /// leader once `leader` found it.
    preferred: AtomicUsize,
    attempts: u32,
    retry_for: Duration,
    attempt_timeout: Duration,
    backoff: Duration,
    accept_committed: bool,
    trust: Option<TrustFile>,
}

/// A client of one cluster. Cheap to clone; channels connect lazily.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What one attempt came to.
enum Attempt {
    /// Final: return it.
    Done(Result<Outcome, Error>),
    /// Try another node; keep this as the answer if none does better.
    Next(Result<Outcome, Error>),
    /// Overloaded: pause, then try again.
    Later(Error),
}

impl Client {
    /// A builder for a cluster reachable at `endpoints` (host:port of any
    /// nodes' gRPC ports; order is the first preference).
    pub fn builder<I, S>(endpoints: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Builder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            insecure: false,
            attempts: 64,
            retry_for: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
            accept_committed: false,
            trust: None,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The Governance API of endpoint `i` (for the calls this crate does
    /// not wrap).
    pub fn governance(&self, i: usize) -> Result<GovernanceClient<Channel>, Error> {
        let i = i % self.inner.channels.len();
        let ch = self.inner.channels[i]
            .get_or_init(|| {
                quorate_raft::network::channel(
                    &self.inner.endpoints[i],
                    self.inner.tls.clone(),
                    None,
                )
                .map_err(|e| format!("{}: {e}", self.inner.endpoints[i]))
            })
            .clone()
            .map_err(Error::Config)?;
        Ok(GovernanceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Asks whether `req` may execute. `Ok(Outcome::Allow)` is a verified,
    /// attested permission; everything else is a refusal.
    pub async fn authorize(&self, req: Request) -> Result<Outcome, Error> {
        let wire = req.to_wire();
        let n = self.inner.channels.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut backoff = self.inner.backoff;
        let mut fallback: Option<Result<Outcome, Error>> = None;
        let mut last_error = String::from("no attempt made");
        let mut node = first;
        let started = tokio::time::Instant::now();
        let mut made = 0;
        while made < self.inner.attempts {
            if made > 0 {
                let left = self.inner.retry_for.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            made += 1;
            match self.attempt(node, &wire).await {
                Attempt::Done(r) => {
                    self.inner.preferred.store(node, Ordering::Relaxed);
                    return r;
                }
                Attempt::Next(r) => {
                    if let Err(e) = &r {
                        last_error = format!("{}: {e}", self.inner.endpoints[node]);
                    }
                    // A DENY a node gave outranks a transport error.
                    if r.is_ok() || fallback.is_none() {
                        fallback = Some(r);
                    }
                    node = (node + 1) % n;
                }
                Attempt::Later(e) => {
                    last_error = format!("{}: {e}", self.inner.endpoints[node]);
                }
            }
        }
        match fallback {
            Some(Ok(deny)) => Ok(deny),
            _ => Err(Error::Unavailable {
                attempts: made,
                last: last_error,
            }),
        }
    }

    async fn attempt(&self, node: usize, wire: &v1::AuthorizeRequest) -> Attempt {
        let mut api = match self.governance(node) {
            Ok(api) => api,
            Err(e) => return Attempt::Done(Err(e)),
        };
        let call = tokio::time::timeout(self.inner.attempt_timeout, api.authorize(wire.clone()));
        let resp = match call.await {
            Err(_) => {
                return Attempt::Next(Err(Error::Rpc {
                    code: "DEADLINE_EXCEEDED".into(),
                    message: format!(
                        "no answer within {:?}; outcome unknown",
                        self.inner.attempt_timeout
                    ),
                }));
            }
            Ok(Err(status)) => return classify(&status),
            Ok(Ok(r)) => r.into_inner(),
        };
        let checked = check_answer(
            wire,
            &resp,
            self.inner.trust.as_ref(),
            self.inner.accept_committed,
        );
        match checked {
            Checked::Allow(a) => Attempt::Done(Ok(Outcome::Allow(a))),
            // A policy's DENY is the cluster's decision.
            Checked::Deny(d) if d.record.is_some() => Attempt::Done(Ok(Outcome::Deny(d))),
            // Containment, an unattested or an unverifiable ALLOW: another
            // node may do better; this stays the answer if none does.
            Checked::Deny(d) => Attempt::Next(Ok(Outcome::Deny(d))),
        }
    }

    /// Finds the leader (through any endpoint) and prefers it from now on
    /// when it is in the endpoint list. Returns its Governance API, for
    /// writes such as publishing a policy.
    pub async fn leader(&self) -> Result<GovernanceClient<Channel>, Error> {
        let mut last = String::from("no endpoint answered");
        for round in 0..20 {
            for i in 0..self.inner.channels.len() {
                let mut api = self.governance(i)?;
                let call = tokio::time::timeout(
                    self.inner.attempt_timeout,
                    api.status(v1::StatusRequest {}),
                );
                let s = match call.await {
                    Ok(Ok(s)) => s.into_inner(),
                    Ok(Err(e)) => {
                        last = format!("{}: {}", self.inner.endpoints[i], e.message());
                        continue;
                    }
                    Err(_) => {
                        last = format!("{}: timed out", self.inner.endpoints[i]);
                        continue;
                    }
                };
                if s.role == "leader" {
                    self.inner.preferred.store(i, Ordering::Relaxed);
                    return Ok(api);
                }
                let Some(addr) = s
                    .leader_id
                    .and_then(|l| s.members.iter().find(|m| m.node_id == l))
                    .map(|m| m.addr.clone())
                else {
                    continue;
                };
                if let Some(j) = self.inner.endpoints.iter().position(|e| e.ends_with(&addr)) {
                    self.inner.preferred.store(j, Ordering::Relaxed);
                    return self.governance(j);
                }
                // The leader is not in our list: reach it with our identity.
                let ch = quorate_raft::network::channel(&addr, self.inner.tls.clone(), None)
                    .map_err(|e| Error::Config(format!("leader address {addr:?}: {e}")))?;
                return Ok(GovernanceClient::new(ch));
            }
            if round < 19 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Err(Error::Unavailable {
            attempts: 20,
            last: format!("no leader known ({last}); is the cluster quorate?"),
        })
    }
}

/// What a gRPC error means for a retry.
fn classify(s: &tonic::Status) -> Attempt {
    let code = s
        .metadata()
        .get(quorate_proto::CODE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let message = s.message().to_string();
    let err = |code: String| Error::Rpc {
        code,
        message: message.clone(),
    };
    match code.as_str() {
        c if c == ErrorCode::InvalidArgument.code() => {
            Attempt::Done(Err(Error::InvalidArgument(message)))
        }
        c if c == ErrorCode::PermissionDenied.code() => {
            Attempt::Done(Err(Error::PermissionDenied(message)))
        }
        c if c == ErrorCode::ResourceExhausted.code() => Attempt::Later(err(code)),
        // The node could not decide (unavailable, commit timeout, not the
        // leader and cannot reach it): the outcome is unknown; another node
        // may know it.
        c if c == ErrorCode::Unavailable.code() || c == ErrorCode::CommitTimeout.code() => {
            Attempt::Next(Err(err(code)))
        }
        "" => match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                Attempt::Done(Err(Error::PermissionDenied(message)))
            }
            tonic::Code::InvalidArgument => Attempt::Done(Err(Error::InvalidArgument(message))),
            // Transport: the node is down, unreachable or restarting.
            c => Attempt::Next(Err(err(format!("{c:?}")))),
        },
        _ => Attempt::Done(Err(err(code))),
    }
}

#[cfg(test)]
mod tests;
