//! The policy index: for a request, only the policies whose scope could
//! match it are handed to Cedar, so a domain with 1,000 policies costs
//! about what one with 10 does.
//!
//! Why the answer cannot change (invariant 3): Cedar evaluates a policy as
//! `scope && conditions`, left to right, and a scope is evaluated without
//! error. A policy whose scope cannot match the request is therefore never
//! satisfied and never reports an error: it contributes nothing to the
//! decision, the determining policies or the errors. The index leaves out
//! only policies whose scope *provably* cannot match from the request alone:
//! `principal == E` / `principal is T` (also `is T in G`) for another
//! principal type, `action == A` for another action, and the same for the
//! resource. Anything that depends on the entity hierarchy (`in G`,
//! `action in [..]`) is kept. The subset is a pure function of the policy
//! set and the request's (principal type, action, resource type), so every
//! replica evaluates the same policies. A set with templates is not indexed.
//! `tests::index_tests` checks the indexed answer against the full set's on
//! a grid of scopes, conditions (erroring ones included) and requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};

/// Subsets kept per compiled version; beyond it subsets are built per call
/// (still cheaper than evaluating every policy), so requests naming ever
/// new types cannot grow memory.
const MAX_CACHED_SUBSETS: usize = 4096;

/// What a policy's scope requires of a request, where it can be told from
/// the request alone (`None`: anything may match).
#[derive(Debug, Clone)]
struct Scope {
    principal_type: Option<String>,
    action: Option<String>,
    resource_type: Option<String>,
}

/// The request's part the index looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    principal_type: String,
    action: String,
    resource_type: String,
}

#[derive(Debug, Clone)]
pub(crate) struct PolicyIndex {
    /// `None` when the set cannot be indexed (templates): use it whole.
    scopes: Option<Arc<Vec<(Policy, Scope)>>>,
    cache: Arc<Mutex<HashMap<Key, Arc<PolicySet>>>>,
}

impl PolicyIndex {
    pub(crate) fn new(policies: &PolicySet) -> PolicyIndex {
        let scopes = (policies.templates().next().is_none()).then(|| {
            Arc::new(
                policies
                    .policies()
                    .map(|p| (p.clone(), scope_of(p)))
                    .collect::<Vec<_>>(),
            )
        });
        PolicyIndex {
            scopes,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The policies that could apply to a request by `principal` doing
    /// `action` on `resource`, or `None` to evaluate the whole set.
    pub(crate) fn subset(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Option<Arc<PolicySet>> {
        let scopes = self.scopes.as_ref()?;
        let key = Key {
            principal_type: principal.type_name().to_string(),
            action: action.to_string(),
            resource_type: resource.type_name().to_string(),
        };
        // A poisoned cache is only a cache: build the subset without it.
        if let Ok(cache) = self.cache.lock()
            && let Some(set) = cache.get(&key)
        {
            return Some(set.clone());
        }
        let mut set = PolicySet::new();
        for (policy, scope) in scopes.iter() {
            if scope.may_match(&key) && set.add(policy.clone()).is_err() {
                // Cannot happen for a static policy of a valid set; if it
                // does, evaluate the whole set rather than a partial one.
                return None;
            }
        }
        let set = Arc::new(set);
        if let Ok(mut cache) = self.cache.lock()
            && cache.len() < MAX_CACHED_SUBSETS
        {
            cache.insert(key, set.clone());
        }
        Some(set)
    }
}

impl Scope {
    fn may_match(&self, k: &Key) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.principal_type, &k.principal_type)
            && ok(&self.action, &k.action)
            && ok(&self.resource_type, &k.resource_type)
    }
}

fn scope_of(p: &Policy) -> Scope {
    let principal_type = match p.principal_constraint() {
        PrincipalConstraint::Eq(uid) => Some(uid.type_name().to_string()),
        PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => Some(t.to_string()),
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => None,
    };
    let action = match p.action_constraint() {
        ActionConstraint::Eq(uid) => Some(uid.to_string()),
        ActionConstraint::Any | ActionConstraint::In(_) => None,
    };
    let resource_type = match p.resource_constraint() {
        ResourceConstraint::Eq(uid) => Some(uid.type_name().to_string()),
        ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => Some(t.to_string()),
        ResourceConstraint::Any | ResourceConstraint::In(_) => None,
    };
    Scope {
        principal_type,
        action,
        resource_type,
    }
}
