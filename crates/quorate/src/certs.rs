//! `quorate certs init`: a cluster CA, one certificate per node and one
//! per client role, as PEM files, for mutual TLS (see
//! `quorate_raft::tls` for the identities they carry).

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::client::print_json;

fn write(dir: &Path, name: &str, text: &str, secret: bool) -> anyhow::Result<()> {
    let path = dir.join(name);
    if path.exists() {
        bail!(
            "{} exists; certs init never overwrites (use a new --out, or delete the old files)",
            path.display()
        );
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A node certificate's DNS names: the name peers dial (`quorate-node`),
/// `localhost`, and every `--dns` (e.g. the Service the Kubernetes API
/// server calls for admission, `quorate-admission.quorate.svc`).
fn node_dns_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        quorate_raft::tls::NODE_SERVER_NAME.to_string(),
        "localhost".to_string(),
    ];
    for d in extra {
        if !names.contains(d) {
            names.push(d.clone());
        }
    }
    names
}

fn leaf(
    uri: &str,
    dns: &[String],
    ips: &[IpAddr],
    server: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<(String, String)> {
    let mut p = CertificateParams::new(dns.to_vec())?;
    p.distinguished_name.push(DnType::CommonName, uri);
    p.subject_alt_names
        .push(SanType::URI(uri.try_into().context("identity URI")?));
    for ip in ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Makes `out/ca.pem` (+ `ca.key`), `node-N.pem/.key` for N in 1..=nodes
/// and `admin|agent|auditor.pem/.key`.
pub(crate) fn init(
    out: &Path,
    cluster: &str,
    nodes: u64,
    ips: &[IpAddr],
    dns: &[String],
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("quorate cluster CA ({cluster})"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    write(out, "ca.pem", &ca_cert.pem(), false)?;
    write(out, "ca.key", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut files = vec!["ca.pem".to_string(), "ca.key".to_string()];
    let mut all_ips = vec![IpAddr::from([127, 0, 0, 1])];
    all_ips.extend_from_slice(ips);
    let names = node_dns_names(dns);
    for n in 1..=nodes {
        let uri = format!("quorate://{cluster}/node/{n}");
        let (cert, key) = leaf(&uri, &names, &all_ips, true, &issuer)?;
        write(out, &format!("node-{n}.pem"), &cert, false)?;
        write(out, &format!("node-{n}.key"), &key, true)?;
        files.push(format!("node-{n}.pem"));
    }
    for role in ["admin", "agent", "auditor"] {
        let uri = format!("quorate://{cluster}/client/{role}/{role}");
        let (cert, key) = leaf(&uri, &[], &[], false, &issuer)?;
        write(out, &format!("{role}.pem"), &cert, false)?;
        write(out, &format!("{role}.key"), &key, true)?;
        files.push(format!("{role}.pem"));
    }
    if !quiet {
        print_json(&serde_json::json!({
            "dir": out.display().to_string(),
            "cluster_id": cluster,
            "files": files,
            "next": "point each node's [tls] at ca.pem and its node-N.pem/.key; clients use --ca ca.pem --cert ROLE.pem --key ROLE.key. Keep ca.key offline.",
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `certs issue` makes.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    Node(u64),
    Client { role: String, name: String },
}

/// Issues one more certificate from the CA in `dir` (`ca.pem`, `ca.key`):
/// a node joining later, a new client, or a replacement for rotation.
/// Writes `dir/NAME.pem` and `.key`; NAME defaults to `node-N` or
/// `ROLE-NAME`. Never overwrites.
pub(crate) fn issue(
    dir: &Path,
    cluster: &str,
    subject: Subject,
    ips: &[IpAddr],
    dns: &[String],
    name: Option<String>,
) -> anyhow::Result<ExitCode> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .with_context(|| format!("cannot read {}", dir.join(f).display()))
    };
    let ca_key = KeyPair::from_pem(&read("ca.key")?).context("ca.key")?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).context("ca.pem")?;
    let mut all_ips = vec![IpAddr::from([127, 0, 0, 1])];
    all_ips.extend_from_slice(ips);
    let (uri, default_name, server) = match &subject {
        Subject::Node(n) => (
            format!("quorate://{cluster}/node/{n}"),
            format!("node-{n}"),
            true,
        ),
        Subject::Client { role, name } => {
            if quorate_raft::tls::Role::parse(role).is_none() {
                bail!("role must be admin, agent or auditor, not {role:?}");
            }
            (
                format!("quorate://{cluster}/client/{role}/{name}"),
                format!("{role}-{name}"),
                false,
            )
        }
    };
    if !server && !dns.is_empty() {
        bail!("--dns names a server: only node certificates (--node N) carry DNS names");
    }
    let names = if server {
        node_dns_names(dns)
    } else {
        Vec::new()
    };
    let ips: &[IpAddr] = if server { &all_ips } else { &[] };
    let (cert, key) = leaf(&uri, &names, ips, server, &issuer)?;
    let name = name.unwrap_or(default_name);
    write(dir, &format!("{name}.pem"), &cert, false)?;
    write(dir, &format!("{name}.key"), &key, true)?;
    print_json(&serde_json::json!({
        "identity": uri,
        "cert": dir.join(format!("{name}.pem")).display().to_string(),
        "key": dir.join(format!("{name}.key")).display().to_string(),
    }))?;
    Ok(ExitCode::SUCCESS)
}
