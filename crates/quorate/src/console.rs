//! `quorate console login`: a short-lived console token signed with a
//! client certificate, printed as a URL that signs a browser in
//! (docs/CONSOLE.md, "Signing in").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The dev cluster's first node's console.
pub(crate) const DEFAULT_CONSOLE_URL: &str = "https://127.0.0.1:7201/";

/// A token for the certificate at `cert` (chain) with key `key`, valid for
/// `ttl_s` seconds from now.
pub(crate) fn token(cert: &Path, key: &Path, ttl_s: u64) -> anyhow::Result<String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no PEM certificate", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(quorate_raft::token::issue(
        &chain,
        &key,
        now,
        ttl_s.saturating_mul(1000),
    )?)
}

/// The URL that signs a browser in: the token rides in the fragment, which
/// browsers never send to a server.
pub(crate) fn login_url(base: &str, token: &str) -> String {
    let base = base.trim_end_matches('/');
    format!("{base}/#token={token}")
}

/// Which certificate signs: the one given, else the dev cluster's of `role`.
fn certificate(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    role: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(c), Some(k)) = (cert, key) {
        return Ok((c, k));
    }
    let dir = Path::new(crate::dev::DEFAULT_DATA_DIR).join("certs");
    let (c, k) = (
        dir.join(format!("{role}.pem")),
        dir.join(format!("{role}.key")),
    );
    if !c.exists() {
        bail!(
            "no {role} certificate: give --cert and --key (a client certificate of the \
             cluster; `quorate certs issue --role {role}` makes one), or run from the directory \
             where `quorate dev` keeps {}",
            crate::dev::DEFAULT_DATA_DIR
        );
    }
    Ok((c, k))
}

pub(crate) fn login(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    role: &str,
    ttl_s: u64,
    url: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let explicit = cert.is_some();
    let (cert, key) = certificate(cert, key, role)?;
    let pem = std::fs::read(&cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let leaf = CertificateDer::pem_slice_iter(&pem)
        .next()
        .transpose()
        .ok()
        .flatten()
        .with_context(|| format!("{} holds no certificate", cert.display()))?;
    let id = quorate_raft::tls::identity_of(&leaf)?;
    if let quorate_raft::tls::Principal::Client { role: r, .. } = &id.principal
        && explicit
        && r.as_str() != role
    {
        bail!(
            "{} is a {} certificate, not {role}: a token carries its certificate's role; \
             pass --role {} or another certificate",
            cert.display(),
            r.as_str(),
            r.as_str()
        );
    }
    let token = token(&cert, &key, ttl_s)?;
    let link = login_url(url, &token);
    if json {
        crate::client::print_json(&serde_json::json!({
            "identity": id.to_string(), "ttl_s": ttl_s, "url": link, "token": token,
        }))?;
    } else {
        eprintln!(
            "console token for {id}, valid {} min. Open this URL (it signs the browser in; \
             keep it private):",
            ttl_s / 60
        );
        println!("{link}");
    }
    Ok(ExitCode::SUCCESS)
}
