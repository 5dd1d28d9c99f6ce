//! Conversions between wire messages and core types. A record read from the
//! wire is checked field by field; nothing here trusts the peer.

use quorate_core::{AuthorizeRequest, Decision, DecisionRecord, DenyReason, Digest, ShadowOutcome};

use crate::v1;

/// A wire message that does not describe a valid core value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn decision_to_wire(d: Decision) -> i32 {
    match d {
        Decision::Allow => v1::Decision::Allow as i32,
        Decision::Deny => v1::Decision::Deny as i32,
    }
}

/// A record as it goes on the wire.
pub fn record_to_wire(r: &DecisionRecord) -> v1::DecisionRecord {
    v1::DecisionRecord {
        index: r.index,
        log_index: r.log_index,
        domain: r.request.domain.clone(),
        request_id: r.request.request_id.clone(),
        principal: r.request.principal.clone(),
        action: r.request.action.clone(),
        resource: r.request.resource.clone(),
        context_json: r.request.context.clone(),
        entities_json: r.request.entities.clone(),
        parent: r.request.parent.clone(),
        trace_id: r.request.trace_id.clone(),
        decision: decision_to_wire(r.decision),
        reason: r.reason.map(|x| x.code().to_string()).unwrap_or_default(),
        determining_policies: r.determining_policies.clone(),
        errors: r.errors.clone(),
        policy_version: r.policy_version,
        policy_hash: r.policy_hash.map(|h| h.to_hex()),
        timestamp_ms: r.timestamp_ms,
        prev_hash: r.prev_hash.to_hex(),
        hash: r.hash.to_hex(),
        shadow: r.shadow.as_ref().map(|s| v1::ShadowOutcome {
            rollout_id: s.rollout_id.clone(),
            candidate_version: s.candidate_version,
            candidate_hash: s.candidate_hash.to_hex(),
            decision: decision_to_wire(s.decision),
            reason: s.reason.map(|x| x.code().to_string()).unwrap_or_default(),
            determining_policies: s.determining_policies.clone(),
            errors: s.errors.clone(),
        }),
    }
}

fn decision_from_wire(d: i32) -> Result<Decision, WireError> {
    match v1::Decision::try_from(d) {
        Ok(v1::Decision::Allow) => Ok(Decision::Allow),
        Ok(v1::Decision::Deny) => Ok(Decision::Deny),
        Err(_) => Err(WireError(format!("unknown decision {d}"))),
    }
}

fn reason_from_wire(code: &str) -> Result<Option<DenyReason>, WireError> {
    if code.is_empty() {
        return Ok(None);
    }
    DenyReason::from_code(code)
        .map(Some)
        .ok_or_else(|| WireError(format!("unknown reason code {code:?}")))
}

fn digest(field: &str, s: &str) -> Result<Digest, WireError> {
    Digest::from_hex(s).map_err(|e| WireError(format!("{field}: not a hex SHA-256 ({e})")))
}

/// A record read from the wire. Only the *shape* is checked here; whether
/// its hash is right is for the caller (`DecisionRecord::hash_is_valid`).
pub fn record_from_wire(w: &v1::DecisionRecord) -> Result<DecisionRecord, WireError> {
    let decision = decision_from_wire(w.decision)?;
    let reason = reason_from_wire(&w.reason)?;
    let shadow = match &w.shadow {
        None => None,
        Some(s) => Some(Box::new(ShadowOutcome {
            rollout_id: s.rollout_id.clone(),
            candidate_version: s.candidate_version,
            candidate_hash: digest("shadow.candidate_hash", &s.candidate_hash)?,
            decision: decision_from_wire(s.decision)?,
            reason: reason_from_wire(&s.reason)?,
            determining_policies: s.determining_policies.clone(),
            errors: s.errors.clone(),
        })),
    };
    Ok(DecisionRecord {
        index: w.index,
        log_index: w.log_index,
        request: AuthorizeRequest {
            domain: w.domain.clone(),
            request_id: w.request_id.clone(),
            principal: w.principal.clone(),
            action: w.action.clone(),
            resource: w.resource.clone(),
            context: w.context_json.clone(),
            entities: w.entities_json.clone(),
            parent: w.parent.clone(),
            trace_id: w.trace_id.clone(),
        },
        decision,
        reason,
        determining_policies: w.determining_policies.clone(),
        errors: w.errors.clone(),
        policy_version: w.policy_version,
        policy_hash: w
            .policy_hash
            .as_deref()
            .map(|h| digest("policy_hash", h))
            .transpose()?,
        timestamp_ms: w.timestamp_ms,
        prev_hash: digest("prev_hash", &w.prev_hash)?,
        hash: digest("hash", &w.hash)?,
        shadow,
    })
}

/// A core request as it goes on the wire (a follower forwarding to its
/// leader; clients building a request). `request_from_wire` of it gives the
/// same request back.
pub fn request_to_wire(r: &AuthorizeRequest) -> v1::AuthorizeRequest {
    v1::AuthorizeRequest {
        domain: r.domain.clone(),
        principal: r.principal.clone(),
        action: r.action.clone(),
        resource: r.resource.clone(),
        context_json: r.context.clone(),
        entities_json: r.entities.clone(),
        request_id: r.request_id.clone(),
        parent: r.parent.clone(),
        trace_id: r.trace_id.clone(),
    }
}

/// Turns a wire authorization request into a core request, canonicalising
/// its context and entities JSON (the API edge; fuzzed in `fuzz/`).
/// Malformed input is an error and nothing else happens.
pub fn request_from_wire(
    w: v1::AuthorizeRequest,
    limits: &quorate_core::validate::Limits,
) -> Result<AuthorizeRequest, quorate_core::validate::InputError> {
    use quorate_core::validate;
    let context = validate::context(&w.context_json, limits)?;
    let entities = match w.entities_json.as_deref() {
        None => None,
        Some(e) if e.trim().is_empty() => None,
        Some(e) => Some(validate::entities(e, limits)?),
    };
    Ok(AuthorizeRequest {
        domain: w.domain,
        request_id: w.request_id,
        principal: w.principal,
        action: w.action,
        resource: w.resource,
        context,
        entities,
        parent: w.parent.filter(|p| !p.is_empty()),
        trace_id: w.trace_id.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_the_wire_both_ways() {
        let limits = quorate_core::validate::Limits::default();
        let full = AuthorizeRequest {
            domain: "payments".into(),
            request_id: "r-1".into(),
            principal: r#"User::"alice""#.into(),
            action: r#"Action::"refund""#.into(),
            resource: r#"Order::"9""#.into(),
            context: r#"{"amount":12}"#.into(),
            entities: Some("[]".into()),
            parent: Some("p-1".into()),
            trace_id: Some("t-1".into()),
        };
        let bare = AuthorizeRequest {
            entities: None,
            parent: None,
            trace_id: None,
            context: "{}".into(),
            ..full.clone()
        };
        for r in [full, bare] {
            let back =
                request_from_wire(request_to_wire(&r), &limits).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, r);
        }
    }
}
