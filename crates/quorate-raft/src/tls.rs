//! Mutual TLS for every connection: node to node (Raft, forwarding, read
//! index) and client to node. Certificates chain to the cluster CA; who a
//! peer is comes from its certificate's URI SAN:
//!
//! - `quorate://CLUSTER/node/ID` for a node,
//! - `quorate://CLUSTER/client/ROLE/NAME` for a client, ROLE one of
//!   `admin`, `agent`, `auditor`.
//!
//! Every node certificate also carries the DNS name [`NODE_SERVER_NAME`],
//! which clients verify, so a node is reachable under any address.
//!
//! The files are read again on [`TlsContext::reload`] (SIGHUP, or a change
//! the node notices): new connections use the new certificates at once;
//! open connections keep theirs until they close. This module does no
//! authorization: it says who the peer is; the services decide what that
//! identity may do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The DNS SAN every node certificate carries and every client verifies.
pub const NODE_SERVER_NAME: &str = "quorate-node";

/// Where a node's or client's TLS material lives (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate: peers must chain to it.
    pub ca: PathBuf,
    /// This party's certificate (chain), issued by the cluster CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("certificate identity: {0}")]
    Identity(String),
}

/// A client's role, from its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Publish, activate, rollouts, membership.
    Admin,
    /// Authorize.
    Agent,
    /// Read logs, receipts, the watch stream.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Node(u64),
    Client { role: Role, name: String },
}

/// A verified peer: its certificate chains to the cluster CA and names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub cluster_id: String,
    pub principal: Principal,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.principal {
            Principal::Node(id) => write!(f, "quorate://{}/node/{id}", self.cluster_id),
            Principal::Client { role, name } => {
                write!(
                    f,
                    "quorate://{}/client/{}/{name}",
                    self.cluster_id,
                    role.as_str()
                )
            }
        }
    }
}

/// Parses a `quorate://` identity URI.
pub fn parse_identity(uri: &str) -> Result<PeerIdentity, TlsError> {
    let bad = || {
        TlsError::Identity(format!(
            "{uri:?} is not quorate://CLUSTER/node/ID or quorate://CLUSTER/client/ROLE/NAME"
        ))
    };
    let rest = uri.strip_prefix("quorate://").ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let principal = match parts.as_slice() {
        [_, "node", id] => Principal::Node(id.parse().map_err(|_| bad())?),
        [_, "client", role, name] if !name.is_empty() => Principal::Client {
            role: Role::parse(role).ok_or_else(bad)?,
            name: (*name).to_string(),
        },
        _ => return Err(bad()),
    };
    let cluster_id = parts.first().copied().unwrap_or_default();
    if cluster_id.is_empty() {
        return Err(bad());
    }
    Ok(PeerIdentity {
        cluster_id: cluster_id.to_string(),
        principal,
    })
}

/// The identity in a (CA-verified) leaf certificate's URI SAN.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, TlsError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, x) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::Identity(format!("unreadable certificate: {e}")))?;
    let san = x
        .subject_alternative_name()
        .map_err(|e| TlsError::Identity(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| TlsError::Identity("the certificate has no subjectAltName".into()))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("quorate://") => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => parse_identity(one),
        [] => Err(TlsError::Identity(
            "the certificate names no quorate:// identity".into(),
        )),
        _ => Err(TlsError::Identity(
            "the certificate names more than one quorate:// identity".into(),
        )),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let certs = certs.map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: format!("not PEM certificates: {e}"),
    })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            message: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: format!("not a PEM private key: {e}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loaded configurations and the identity they present.
struct Loaded {
    server: Arc<ServerConfig>,
    /// The HTTP port's: the same certificate, client certificates asked for
    /// and verified when presented, but not required (browsers).
    http: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// Verifies client certificate chains against the CA (also for console
    /// tokens).
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    own: PeerIdentity,
    /// When this party's certificate expires (ms since the epoch).
    not_after_ms: Option<u64>,
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let cfg = |e: rustls::Error| TlsError::Config(e.to_string());
    let mut roots = RootCertStore::empty();
    for c in certs(&files.ca)? {
        roots.add(c).map_err(cfg)?;
    }
    let roots = Arc::new(roots);
    let chain = certs(&files.cert)?;
    let own = chain
        .first()
        .map(identity_of)
        .transpose()?
        .ok_or_else(|| TlsError::Identity("no certificate".into()))?;
    let not_after_ms = chain.first().and_then(not_after_ms);
    let key = key(&files.key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cfg)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(cfg)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut http = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cfg)?
        .with_client_cert_verifier(optional)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(cfg)?;
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cfg)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(cfg)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        http: Arc::new(http),
        client: Arc::new(client),
        verifier,
        own,
        not_after_ms,
    })
}

/// A certificate's notAfter, in ms since the epoch.
fn not_after_ms(cert: &CertificateDer<'_>) -> Option<u64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, x) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let secs = x.validity().not_after.timestamp();
    u64::try_from(secs).ok()?.checked_mul(1000)
}

/// The TLS material of one party, reloadable.
pub struct TlsContext {
    files: TlsFiles,
    loaded: RwLock<Arc<Loaded>>,
}

impl fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.files)
            .finish()
    }
}

impl TlsContext {
    /// Reads the CA, certificate and key; fails with the file and reason.
    pub fn load(files: TlsFiles) -> Result<Arc<TlsContext>, TlsError> {
        let loaded = load(&files)?;
        Ok(Arc::new(TlsContext {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Reads the files again; the new material is used only if it loads
    /// and names the same identity as before. Otherwise the previous
    /// material stays in use (a half-written or wrong rotation never takes
    /// a node down).
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files)?;
        let own = self.own_identity();
        if loaded.own != own {
            return Err(TlsError::Identity(format!(
                "the new certificate names {}, not {own}",
                loaded.own
            )));
        }
        if let Ok(mut g) = self.loaded.write() {
            *g = Arc::new(loaded);
        }
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The identity this party's certificate names.
    pub fn own_identity(&self) -> PeerIdentity {
        self.current().own.clone()
    }

    /// An acceptor with the current server configuration (client
    /// certificates required and verified against the CA).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current().server.clone())
    }

    /// An acceptor for the HTTP port: the node's certificate; a client
    /// certificate is verified when the browser presents one, and not
    /// required.
    pub fn http_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current().http.clone())
    }

    /// When this party's certificate expires, in ms since the epoch.
    pub fn not_after_ms(&self) -> Option<u64> {
        self.current().not_after_ms
    }

    /// Judges console tokens against the current CA for `cluster_id`,
    /// accepting lifetimes up to `max_ttl_ms`.
    pub fn token_verifier(&self, cluster_id: &str, max_ttl_ms: u64) -> crate::token::TokenVerifier {
        crate::token::TokenVerifier {
            verifier: self.current().verifier.clone(),
            cluster_id: cluster_id.to_string(),
            max_ttl_ms,
        }
    }

    /// A connector with the current client configuration (this party's
    /// certificate presented; the server must be a node of the CA).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.current().client.clone())
    }

    /// The name clients verify on every node certificate.
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(NODE_SERVER_NAME)
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    }
}

/// Modification times of the files, to notice a rotation.
pub fn files_stamp(files: &TlsFiles) -> Vec<Option<std::time::SystemTime>> {
    [&files.ca, &files.cert, &files.key]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A TLS (or, without TLS, plain) connection to a node as a tonic client
/// channel: TCP, then the handshake with the current client config.
///
/// The CA proves only that the server holds *some* certificate of this CA;
/// whom we reached is its URI SAN, checked here before anything is sent:
/// a node of our own cluster (the cluster our certificate names), and the
/// node we dialled when `expect` names it. A node certificate of another
/// cluster under the same CA, or of a node at an address it does not own,
/// is refused.
pub async fn connect_tls(
    tls: &TlsContext,
    addr: &str,
    expect: Option<u64>,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>
{
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let stream = tls
        .connector()
        .connect(TlsContext::server_name(), tcp)
        .await?;
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(identity_of)
        .transpose()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
    check_server(presented.as_ref(), &tls.own_identity().cluster_id, expect)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    Ok(hyper_util::rt::TokioIo::new(stream))
}

/// Whether the identity a server presented is a node of `cluster` (and
/// node `expect`, when given).
pub fn check_server(
    presented: Option<&PeerIdentity>,
    cluster: &str,
    expect: Option<u64>,
) -> Result<(), String> {
    let Some(id) = presented else {
        return Err("the server presented no certificate".into());
    };
    if id.cluster_id != cluster {
        return Err(format!(
            "the server is {id}, of another cluster than {cluster:?}"
        ));
    }
    match (&id.principal, expect) {
        (Principal::Node(n), Some(e)) if *n != e => Err(format!(
            "the server is {id}, but node {e} was dialled (a moved or removed node?)"
        )),
        (Principal::Node(_), _) => Ok(()),
        (Principal::Client { .. }, _) => {
            Err(format!("the server presents a client certificate ({id})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_accepts_only_the_node_of_its_cluster_it_dialled() {
        let node = |c: &str, n| PeerIdentity {
            cluster_id: c.into(),
            principal: Principal::Node(n),
        };
        assert!(check_server(Some(&node("prod", 2)), "prod", Some(2)).is_ok());
        assert!(check_server(Some(&node("prod", 2)), "prod", None).is_ok());
        assert!(check_server(Some(&node("prod", 3)), "prod", Some(2)).is_err());
        assert!(check_server(Some(&node("staging", 2)), "prod", Some(2)).is_err());
        assert!(check_server(Some(&node("staging", 2)), "prod", None).is_err());
        let client = PeerIdentity {
            cluster_id: "prod".into(),
            principal: Principal::Client {
                role: Role::Admin,
                name: "ops".into(),
            },
        };
        assert!(check_server(Some(&client), "prod", None).is_err());
        assert!(check_server(None, "prod", None).is_err());
    }

    #[test]
    fn identities_parse_and_print() {
        let n = parse_identity("quorate://prod/node/3").expect("node");
        assert_eq!(n.principal, Principal::Node(3));
        assert_eq!(n.to_string(), "quorate://prod/node/3");
        let c = parse_identity("quorate://prod/client/agent/payments-svc").expect("client");
        assert_eq!(
            c.principal,
            Principal::Client {
                role: Role::Agent,
                name: "payments-svc".into()
            }
        );
        for bad in [
            "https://prod/node/3",
            "quorate://prod/node/x",
            "quorate://prod/client/root/x",
            "quorate://prod/client/agent/",
            "quorate:///node/1",
            "quorate://prod/node/1/extra",
        ] {
            assert!(parse_identity(bad).is_err(), "{bad}");
        }
    }
}

/// Who is at the other end of a server connection. tonic puts it in every
/// request's extensions (`Request::extensions().get::<PeerInfo>()`).
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote: Option<std::net::SocketAddr>,
    /// Set on TLS connections: the identity the CA-verified client
    /// certificate names. `None` on plaintext (`insecure`) connections.
    pub identity: Option<PeerIdentity>,
    /// The connection is TLS (on the HTTP port a TLS node also takes
    /// plaintext, for scrapers and probes).
    pub tls: bool,
}

enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// One accepted connection, plain or TLS, with its peer.
pub struct ServerConn {
    io: Io,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for ServerConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for ServerConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections on `listener` for tonic: with `tls`, each completes
/// a mutual-TLS handshake (off the accept loop) and is admitted only with a
/// CA-verified certificate that names a quorate identity; a failed
/// handshake is logged and dropped. Without `tls`, connections are plain.
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<TlsContext>>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>> {
    incoming_with(listener, tls, ClientAuth::Required)
}

/// Whether a connection must present a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// The gRPC port: no certificate, no connection.
    Required,
    /// The HTTP port: verified when presented (`PeerInfo::identity` then
    /// names it), else the connection is anonymous and its requests are
    /// judged by what they carry (a console token) or refused.
    Optional,
}

impl ServerConn {
    /// Who is at the other end.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }
}

/// `incoming`, with the client-certificate rule of `auth`.
pub fn incoming_with(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<TlsContext>>,
    auth: ClientAuth,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                let conn = ServerConn {
                    io: Io::Plain(tcp),
                    info: PeerInfo {
                        remote: Some(remote),
                        identity: None,
                        tls: false,
                    },
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                // The HTTP port also takes plaintext (Prometheus, probes):
                // a TLS connection opens with a handshake record (0x16),
                // an HTTP/1 or h2c one with ASCII. A plaintext connection
                // has no identity and `tls: false`; the HTTP service serves
                // it only what needs none.
                if auth == ClientAuth::Optional {
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
                        Ok(Ok(1)) if first[0] != 0x16 => {
                            let conn = ServerConn {
                                io: Io::Plain(tcp),
                                info: PeerInfo {
                                    remote: Some(remote),
                                    identity: None,
                                    tls: false,
                                },
                            };
                            let _ = tx.send(Ok(conn)).await;
                            return;
                        }
                        Ok(Ok(1)) => {}
                        _ => return,
                    }
                }
                let acceptor = match auth {
                    ClientAuth::Required => tls.acceptor(),
                    ClientAuth::Optional => tls.http_acceptor(),
                };
                let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                let stream = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        metrics::counter!("quorate_tls_handshake_failures_total").increment(1);
                        tracing::info!(%remote, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        metrics::counter!("quorate_tls_handshake_failures_total").increment(1);
                        return;
                    }
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(identity_of);
                let identity = match (identity, auth) {
                    (Some(Ok(id)), _) => Some(id),
                    (Some(Err(e)), _) => {
                        metrics::counter!("quorate_tls_handshake_failures_total").increment(1);
                        tracing::info!(%remote, "client certificate refused: {e}");
                        return;
                    }
                    (None, ClientAuth::Required) => return,
                    (None, ClientAuth::Optional) => None,
                };
                let conn = ServerConn {
                    io: Io::Tls(Box::new(stream)),
                    info: PeerInfo {
                        remote: Some(remote),
                        identity,
                        tls: true,
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
