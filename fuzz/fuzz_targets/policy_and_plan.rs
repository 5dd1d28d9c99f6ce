//! Policy texts and schemas as publishers send them, and rollout plans:
//! compiled and checked as the API edge and the state machine do. Must
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate_core::rollout::RolloutPlan;
use quorate_core::validate::Limits;
use quorate_policy::CompiledPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    // "policy\0schema" or just a policy.
    let (policy, schema) = match text.split_once('\0') {
        Some((p, s)) => (p, Some(s)),
        None => (text, None),
    };
    let _ = CompiledPolicy::compile(policy, schema, &limits);
    if let Ok(plan) = serde_json::from_str::<RolloutPlan>(text) {
        if plan.check(&limits).is_ok() {
            for c in &plan.candidates {
                let _ = CompiledPolicy::compile(&c.policy_text, c.schema.as_deref(), &limits);
            }
        }
    }
});
