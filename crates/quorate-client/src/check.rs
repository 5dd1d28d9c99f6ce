//! The client's half of fail-closed: what a node's answer is worth.

use quorate_core::proof::{Receipt, TrustFile, verify_receipt, verify_receipt_inclusion};
use quorate_core::{Decision, DenyReason};
use quorate_proto::{record_from_wire, v1};

use crate::{Allowed, Denied};

/// A node's answer, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    Allow(Allowed),
    Deny(Denied),
}

/// Believes an ALLOW only with a well-formed committed record that says
/// ALLOW, whose hash verifies and that decides the very request `sent`
/// (every field, the context compared after the node's canonicalisation),
/// and with a receipt for that record whose inclusion proof verifies
/// (and whose checkpoint is final under `trust`, when given). Without a
/// receipt the ALLOW is a DENY `UNATTESTED` unless `accept_committed`.
/// Every failure is a DENY `INTEGRITY_FAILURE` or `UNATTESTED` saying why:
/// never an ALLOW.
pub fn check_answer(
    sent: &v1::AuthorizeRequest,
    resp: &v1::AuthorizeResponse,
    trust: Option<&TrustFile>,
    accept_committed: bool,
) -> Checked {
    let served_by = resp.served_by;
    let refuse = |reason: DenyReason, why: String, record| {
        Checked::Deny(Denied {
            reason: reason.code().into(),
            message: why,
            record,
            replayed: false,
            served_by,
        })
    };
    let integrity = |why: String, record| {
        refuse(
            DenyReason::IntegrityFailure,
            format!("{why}; do not trust this node"),
            record,
        )
    };
    let record = match resp.record.as_ref().map(record_from_wire).transpose() {
        Ok(r) => r,
        Err(e) => return integrity(format!("the node sent a malformed record: {e}"), None),
    };
    if resp.decision != v1::Decision::Allow as i32 {
        // A DENY is believed as it comes: refusing is always safe. Its
        // record, if any, is kept only when it verifies.
        let record = record.filter(|r| r.hash_is_valid() && r.decision == Decision::Deny);
        return Checked::Deny(Denied {
            reason: if resp.reason.is_empty() {
                "DENY".into()
            } else {
                resp.reason.clone()
            },
            message: resp.message.clone(),
            replayed: resp.replayed && record.is_some(),
            record,
            served_by,
        });
    }
    let Some(r) = record else {
        return integrity("ALLOW without a committed record".into(), None);
    };
    if !r.hash_is_valid() || r.decision != Decision::Allow {
        return integrity(
            "the ALLOW's record does not verify or does not say ALLOW".into(),
            None,
        );
    }
    let ours = match quorate_proto::request_from_wire(
        sent.clone(),
        &quorate_core::validate::Limits::default(),
    ) {
        Ok(q) => q,
        Err(e) => {
            return integrity(
                format!("the request sent does not validate here ({e})"),
                None,
            );
        }
    };
    if r.request != ours {
        return integrity(
            format!(
                "the record at index {} decides another request (request id {:?}, principal {}), \
                 not the one sent",
                r.index, r.request.request_id, r.request.principal
            ),
            None,
        );
    }
    let receipt: Option<Receipt> = match resp.receipt_json.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(rc)) => Some(rc),
        Some(Err(e)) => return integrity(format!("the node sent a malformed receipt: {e}"), None),
    };
    match &receipt {
        None if !accept_committed => {
            return refuse(
                DenyReason::Unattested,
                "the ALLOW carries no quorum's receipt (is the cluster in committed mode? \
                 build the client with accept_committed to take such answers)"
                    .into(),
                None,
            );
        }
        None => {}
        Some(rc) => {
            if rc.record != r {
                return integrity(
                    "the receipt is for another record than the answer".into(),
                    None,
                );
            }
            let verified = match trust {
                Some(t) => verify_receipt(t, rc),
                None => verify_receipt_inclusion(rc),
            };
            if let Err(e) = verified {
                return integrity(format!("the answer's receipt does not verify: {e}"), None);
            }
        }
    }
    Checked::Allow(Allowed {
        record: r,
        receipt: receipt.map(Box::new),
        receipt_json: resp.receipt_json.clone(),
        replayed: resp.replayed,
        served_by,
    })
}
