//! The API edge: protobuf bytes -> AuthorizeRequest -> canonicalised core
//! request -> checks -> Cedar evaluation and a sealed record, as a node
//! does for every Authorize. Must never panic; whatever is accepted must be
//! canonical (validating it again changes nothing) and hash-stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use quorate_core::validate::{self, Limits};
use quorate_core::{Digest, GENESIS_HASH};
use quorate_policy::{ActivePolicy, CompiledPolicy, DomainState, Position, decide};

const POLICY: &str = include_str!("../../config/dev/demo.cedar");

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = quorate_proto::v1::AuthorizeRequest::decode(data) else {
        return;
    };
    let limits = Limits::default();
    let Ok(req) = quorate_proto::request_from_wire(wire, &limits) else {
        return;
    };
    // Canonical output is a fixed point.
    assert_eq!(
        validate::context(&req.context, &limits).ok().as_deref(),
        Some(req.context.as_str())
    );
    if let Some(e) = &req.entities {
        assert_eq!(
            validate::entities(e, &limits).ok().as_deref(),
            Some(e.as_str())
        );
    }
    if quorate_policy::check_request(&req, &limits).is_err() {
        return;
    }
    let Ok(policy) = CompiledPolicy::compile(POLICY, None, &limits) else {
        return;
    };
    let at = Position {
        index: 1,
        log_index: 1,
        timestamp_ms: 0,
        prev_hash: GENESIS_HASH,
    };
    let state = DomainState::Active(ActivePolicy {
        version: 1,
        hash: Digest::default(),
        compiled: &policy,
    });
    let a = decide(&req, state, at);
    let b = decide(&req, state, at);
    assert_eq!(a, b, "evaluation is deterministic");
    assert!(a.hash_is_valid());
});
