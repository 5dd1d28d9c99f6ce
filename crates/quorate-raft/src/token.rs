//! Console tokens: a short-lived statement "the holder of this client
//! certificate's key acts as its identity until `exp_ms`", for browsers that
//! cannot present the certificate themselves (docs/CONSOLE.md, "Signing in").
//!
//! `qct1.<payload>.<signature>`, both base64url without padding. The payload
//! is JSON naming the cluster, role and identity, the validity window and
//! the signer's certificate chain; the signature, by the certificate's key,
//! covers `quorate/console-token/v1\n` followed by the payload's base64url
//! text. A node accepts a token only if the chain verifies against its CA
//! now, the certificate names exactly the identity and role the payload
//! claims (a client, never a node), the signature verifies, and the window
//! is open and no longer than the node allows. The token grants nothing the
//! certificate does not: the node applies the same role checks to it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use crate::tls::{PeerIdentity, Principal, TlsError, identity_of};

const PREFIX: &str = "qct1.";
const SIGNED_TAG: &[u8] = b"quorate/console-token/v1\n";
/// Longer tokens are refused before anything is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signed statement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPayload {
    pub v: u32,
    pub cluster: String,
    pub role: String,
    /// The identity URI the certificate names.
    pub sub: String,
    pub iat_ms: u64,
    pub exp_ms: u64,
    /// The TLS `SignatureScheme` code of the signature.
    pub scheme: u16,
    /// Base64 (standard, padded) DER certificates, leaf first.
    pub chain: Vec<String>,
}

/// Why a token is refused. Every refusal grants nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a console token (it must start with {PREFIX:?} and have three parts)")]
    Shape,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("the token's payload is not valid: {0}")]
    Payload(String),
    #[error("the token's certificate is not accepted: {0}")]
    Certificate(String),
    #[error("the token claims {claimed}, but its certificate names {actual}")]
    Identity { claimed: String, actual: String },
    #[error("the token's signature does not verify under its certificate")]
    Signature,
    #[error("the token expired; get a new one with `quorate console login`")]
    Expired,
    #[error("the token is not valid yet (issued in the future: check the clocks)")]
    NotYetValid,
    #[error("the token is valid for {lifetime_s} s, longer than this node allows ({max_s} s)")]
    TooLongLived { lifetime_s: u64, max_s: u64 },
}

/// Signs a token for the certificate chain `chain` (leaf first) with its
/// private key, valid from `now_ms` for `ttl_ms`.
pub fn issue(
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<String, TlsError> {
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::Identity("no certificate".into()))?;
    let id = identity_of(leaf)?;
    let Principal::Client { role, .. } = &id.principal else {
        return Err(TlsError::Identity(format!(
            "{id} is a node; console tokens are for client certificates"
        )));
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| TlsError::Config(format!("the private key: {e}")))?;
    let signer = signing
        .choose_scheme(&[
            SignatureScheme::ED25519,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
        ])
        .ok_or_else(|| TlsError::Config("the private key cannot sign with any scheme".into()))?;
    let payload = TokenPayload {
        v: 1,
        cluster: id.cluster_id.clone(),
        role: role.as_str().to_string(),
        sub: id.to_string(),
        iat_ms: now_ms,
        exp_ms: now_ms.saturating_add(ttl_ms),
        scheme: u16::from(signer.scheme()),
        chain: chain
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_ref()))
            .collect(),
    };
    let json = serde_json::to_vec(&payload).map_err(|e| TlsError::Config(e.to_string()))?;
    let body = B64.encode(json);
    let sig = signer
        .sign(&signed_bytes(&body))
        .map_err(|e| TlsError::Config(format!("signing: {e}")))?;
    Ok(format!("{PREFIX}{body}.{}", B64.encode(sig)))
}

fn signed_bytes(body: &str) -> Vec<u8> {
    let mut m = SIGNED_TAG.to_vec();
    m.extend_from_slice(body.as_bytes());
    m
}

/// What a node needs to judge tokens: its CA's verifier and its limits.
#[derive(Clone)]
pub struct TokenVerifier {
    pub(crate) verifier: Arc<dyn ClientCertVerifier>,
    pub(crate) cluster_id: String,
    pub(crate) max_ttl_ms: u64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("cluster_id", &self.cluster_id)
            .field("max_ttl_ms", &self.max_ttl_ms)
            .finish_non_exhaustive()
    }
}

/// An accepted token: who it speaks for, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub identity: PeerIdentity,
    pub expires_ms: u64,
}

impl TokenVerifier {
    /// Judges `token` at `now_ms`. Nothing about it is trusted before the
    /// chain and the signature have verified.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Accepted, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Shape)?;
        let (body, sig) = rest.split_once('.').ok_or(TokenError::Shape)?;
        if sig.contains('.') {
            return Err(TokenError::Shape);
        }
        let json = B64
            .decode(body)
            .map_err(|e| TokenError::Payload(format!("base64: {e}")))?;
        let sig = B64
            .decode(sig)
            .map_err(|e| TokenError::Payload(format!("signature base64: {e}")))?;
        let p: TokenPayload =
            serde_json::from_slice(&json).map_err(|e| TokenError::Payload(e.to_string()))?;
        if p.v != 1 {
            return Err(TokenError::Payload(format!("version {} is not 1", p.v)));
        }
        let chain: Vec<CertificateDer<'static>> = p
            .chain
            .iter()
            .map(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map(CertificateDer::from)
                    .map_err(|e| TokenError::Payload(format!("chain base64: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| TokenError::Payload("the chain is empty".into()))?;
        // The certificate: chains to this cluster's CA, valid now.
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(now_ms));
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| TokenError::Certificate(e.to_string()))?;
        let id = identity_of(leaf).map_err(|e| TokenError::Certificate(e.to_string()))?;
        let actual_role = match &id.principal {
            Principal::Client { role, .. } => role.as_str(),
            Principal::Node(_) => {
                return Err(TokenError::Certificate(format!(
                    "{id} is a node; console tokens are for clients"
                )));
            }
        };
        if id.cluster_id != self.cluster_id {
            return Err(TokenError::Certificate(format!(
                "{id} belongs to another cluster"
            )));
        }
        if p.sub != id.to_string() || p.role != actual_role || p.cluster != id.cluster_id {
            return Err(TokenError::Identity {
                claimed: format!("{} ({})", p.sub, p.role),
                actual: id.to_string(),
            });
        }
        // The signature, by the certificate's key.
        if !signature_verifies(leaf, p.scheme, &signed_bytes(body), &sig) {
            return Err(TokenError::Signature);
        }
        // The window.
        if now_ms < p.iat_ms.saturating_sub(CLOCK_SKEW_MS) {
            return Err(TokenError::NotYetValid);
        }
        if now_ms >= p.exp_ms {
            return Err(TokenError::Expired);
        }
        let lifetime = p.exp_ms.saturating_sub(p.iat_ms);
        if lifetime > self.max_ttl_ms {
            return Err(TokenError::TooLongLived {
                lifetime_s: lifetime / 1000,
                max_s: self.max_ttl_ms / 1000,
            });
        }
        Ok(Accepted {
            identity: id,
            expires_ms: p.exp_ms,
        })
    }
}

/// How far a token's issue time may be ahead of the node's clock.
const CLOCK_SKEW_MS: u64 = 60_000;

/// Whether `sig` is `leaf`'s key's signature of `msg` under `scheme`.
fn signature_verifies(leaf: &CertificateDer<'_>, scheme: u16, msg: &[u8], sig: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, x)) = X509Certificate::from_der(leaf.as_ref()) else {
        return false;
    };
    let public_key = x
        .tbs_certificate
        .subject_pki
        .subject_public_key
        .data
        .as_ref();
    let scheme = SignatureScheme::from(scheme);
    let provider = rustls::crypto::ring::default_provider();
    let Some((_, algs)) = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
    else {
        return false;
    };
    // Each algorithm checks the key's type itself: one of another type
    // refuses the key rather than verifying anything.
    algs.iter()
        .any(|alg| alg.verify_signature(public_key, msg, sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn new_ca() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("ca");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(ca: &Ca, uri: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names
            .push(SanType::URI(uri.try_into().expect("uri")));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &ca.issuer).expect("leaf");
        let der = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        (cert.der().clone(), der)
    }

    fn verifier(ca: &Ca, cluster: &str) -> TokenVerifier {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        TokenVerifier {
            verifier: v,
            cluster_id: cluster.into(),
            max_ttl_ms: 3_600_000,
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Re-encodes the payload of `token` after `edit`, keeping its signature.
    fn edited(token: &str, edit: impl FnOnce(&mut TokenPayload)) -> String {
        let rest = token.strip_prefix(PREFIX).expect("prefix");
        let (body, sig) = rest.split_once('.').expect("parts");
        let mut p: TokenPayload =
            serde_json::from_slice(&B64.decode(body).expect("b64")).expect("json");
        edit(&mut p);
        let body = B64.encode(serde_json::to_vec(&p).expect("json"));
        format!("{PREFIX}{body}.{sig}")
    }

    #[test]
    fn a_token_speaks_for_its_certificate_only_while_valid() {
        let ca = new_ca();
        let (cert, key) = leaf(&ca, "quorate://dev/client/auditor/ann");
        let v = verifier(&ca, "dev");
        let t0 = now();
        let token = issue(std::slice::from_ref(&cert), &key, t0, 600_000).expect("issue");
        let ok = v.verify(&token, t0 + 1).expect("accepted");
        assert_eq!(ok.identity.to_string(), "quorate://dev/client/auditor/ann");
        assert_eq!(ok.expires_ms, t0 + 600_000);

        assert_eq!(v.verify(&token, t0 + 600_000), Err(TokenError::Expired));
        assert_eq!(v.verify(&token, t0 - 120_000), Err(TokenError::NotYetValid));
        // Another cluster's node sees the same CA but not its cluster.
        assert!(matches!(
            verifier(&ca, "prod").verify(&token, t0 + 1),
            Err(TokenError::Certificate(_))
        ));
        // Longer-lived than the node allows.
        let long = issue(std::slice::from_ref(&cert), &key, t0, 7_200_000).expect("issue");
        assert!(matches!(
            v.verify(&long, t0 + 1),
            Err(TokenError::TooLongLived { .. })
        ));
    }

    #[test]
    fn an_edited_or_forged_token_is_refused() {
        let ca = new_ca();
        let (cert, key) = leaf(&ca, "quorate://dev/client/auditor/ann");
        let v = verifier(&ca, "dev");
        let t0 = now();
        let token = issue(std::slice::from_ref(&cert), &key, t0, 600_000).expect("issue");

        // Claiming a bigger role, or a longer life, breaks the signature or
        // the identity check; nothing in the payload is believed unsigned.
        let admin = edited(&token, |p| p.role = "admin".into());
        assert!(matches!(
            v.verify(&admin, t0 + 1),
            Err(TokenError::Identity { .. })
        ));
        let admin_sub = edited(&token, |p| {
            p.role = "admin".into();
            p.sub = "quorate://dev/client/admin/ann".into();
        });
        assert!(matches!(
            v.verify(&admin_sub, t0 + 1),
            Err(TokenError::Identity { .. })
        ));
        let longer = edited(&token, |p| p.exp_ms += 1);
        assert_eq!(v.verify(&longer, t0 + 1), Err(TokenError::Signature));

        // Another certificate's key cannot sign for this one.
        let (other_cert, other_key) = leaf(&ca, "quorate://dev/client/admin/eve");
        let forged = issue(&[other_cert], &other_key, t0, 600_000).expect("issue");
        let swapped = edited(&forged, |p| {
            p.chain = vec![base64::engine::general_purpose::STANDARD.encode(cert.as_ref())];
            p.sub = "quorate://dev/client/auditor/ann".into();
            p.role = "auditor".into();
        });
        assert_eq!(v.verify(&swapped, t0 + 1), Err(TokenError::Signature));

        // A certificate of another CA.
        let stranger = new_ca();
        let (s_cert, s_key) = leaf(&stranger, "quorate://dev/client/admin/mallory");
        let t = issue(&[s_cert], &s_key, t0, 600_000).expect("issue");
        assert!(matches!(
            v.verify(&t, t0 + 1),
            Err(TokenError::Certificate(_))
        ));

        // Not a token at all.
        for bad in [
            "",
            "qct1.",
            "qct1.a",
            "qct1.a.b.c",
            "bearer x",
            "qct1.!!.!!",
        ] {
            assert!(v.verify(bad, t0).is_err(), "{bad:?}");
        }
        assert_eq!(
            v.verify(&"q".repeat(MAX_TOKEN_BYTES + 1), t0),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn nodes_get_no_tokens() {
        let ca = new_ca();
        let (cert, key) = leaf(&ca, "quorate://dev/node/1");
        assert!(issue(&[cert], &key, now(), 60_000).is_err());
    }
}
