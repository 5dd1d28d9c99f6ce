//! Stable reason and error codes. These strings reach the wire, the CLI and
//! the decision log; renaming one is a breaking change to `docs/CONTRACT.md`.

use serde::{Deserialize, Serialize};

/// Why a request was denied. A denial is an answer, not an error: every DENY
/// carries exactly one of these.
///
/// Committed reasons (`Policy`, `UnknownDomain`, `NoActivePolicy`,
/// `InvalidRequest`, and `UnverifiablePolicy` when the active version does
/// not compile) are part of a decision record in the log. Containment
/// reasons (`NoQuorum`, `CommitTimeout`, `IntegrityFailure`, `Divergence`,
/// `Unavailable`, `Unattested`) are answered by a node without a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum DenyReason {
    /// The active policy did not permit the request (or a forbid matched).
    Policy,
    /// The domain has never had a policy published.
    UnknownDomain,
    /// The domain has policy versions but none is active.
    NoActivePolicy,
    /// The request could not be evaluated (e.g. context fails the schema).
    InvalidRequest,
    /// The node cannot prove it is part of a quorum. Certainly not committed.
    NoQuorum,
    /// The proposal was not committed before the deadline. Outcome unknown.
    CommitTimeout,
    /// The node's stored state failed verification.
    IntegrityFailure,
    /// The node computed a different result than its peers.
    Divergence,
    /// The policy a decision would rest on cannot be verified.
    UnverifiablePolicy,
    /// The node could not reach the leader or is shutting down. Outcome unknown.
    Unavailable,
    /// The request id was already decided for a different request in this
    /// domain. Nothing was appended; the earlier decision stands for the
    /// earlier request only.
    RequestIdConflict,
    /// The decision was committed, but a majority of voters did not attest
    /// it (sign a checkpoint covering it, each having applied it) before
    /// the deadline. The outcome is known to be committed; the decision is
    /// not confirmed, so it is not returned. The node contains.
    Unattested,
}

impl DenyReason {
    /// The stable wire code.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::Policy => "POLICY",
            DenyReason::UnknownDomain => "UNKNOWN_DOMAIN",
            DenyReason::NoActivePolicy => "NO_ACTIVE_POLICY",
            DenyReason::InvalidRequest => "INVALID_REQUEST",
            DenyReason::NoQuorum => "NO_QUORUM",
            DenyReason::CommitTimeout => "COMMIT_TIMEOUT",
            DenyReason::IntegrityFailure => "INTEGRITY_FAILURE",
            DenyReason::Divergence => "DIVERGENCE",
            DenyReason::UnverifiablePolicy => "UNVERIFIABLE_POLICY",
            DenyReason::Unavailable => "UNAVAILABLE",
            DenyReason::RequestIdConflict => "REQUEST_ID_CONFLICT",
            DenyReason::Unattested => "UNATTESTED",
        }
    }

    /// Parses a wire code back into a reason.
    pub fn from_code(code: &str) -> Option<DenyReason> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// Every reason, for exhaustive tests and documentation.
    pub const ALL: [DenyReason; 12] = [
        DenyReason::Policy,
        DenyReason::UnknownDomain,
        DenyReason::NoActivePolicy,
        DenyReason::InvalidRequest,
        DenyReason::NoQuorum,
        DenyReason::CommitTimeout,
        DenyReason::IntegrityFailure,
        DenyReason::Divergence,
        DenyReason::UnverifiablePolicy,
        DenyReason::Unavailable,
        DenyReason::RequestIdConflict,
        DenyReason::Unattested,
    ];

    /// True when a DENY with this reason guarantees that no decision for the
    /// request was (or will be) appended by this call. False means the
    /// outcome is unknown: the proposal may still commit (see CONTRACT.md),
    /// or, for `Unattested`, that it did commit.
    pub fn certainly_not_committed_by_this_call(self) -> bool {
        !matches!(
            self,
            DenyReason::CommitTimeout | DenyReason::Unavailable | DenyReason::Unattested
        )
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Stable codes for errors (not denials) that reach gRPC status details and
/// the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The input is malformed; nothing was changed.
    InvalidArgument,
    /// The Cedar policy does not parse or does not validate; nothing committed.
    InvalidPolicy,
    /// The named domain, version or decision does not exist.
    NotFound,
    /// The caller's certificate does not allow this call.
    PermissionDenied,
    /// The caller is over its request rate limit; nothing changed.
    ResourceExhausted,
    /// The request is well formed but the state does not allow it now
    /// (e.g. promoting a rollout that is not in shadow); nothing changed.
    FailedPrecondition,
    /// The cluster cannot currently serve a consistent answer.
    Unavailable,
    /// The proposal was not committed before the deadline; outcome unknown.
    CommitTimeout,
    /// The node is contained and refuses to serve.
    Contained,
    /// An unexpected internal failure.
    Internal,
}

impl ErrorCode {
    /// The stable wire code.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::InvalidPolicy => "INVALID_POLICY",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::CommitTimeout => "COMMIT_TIMEOUT",
            ErrorCode::Contained => "CONTAINED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in DenyReason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(DenyReason::from_code(r.code()), Some(r));
            // serde's form must equal the documented wire code.
            assert_eq!(
                serde_json::to_string(&r).unwrap_or_default(),
                format!("\"{}\"", r.code())
            );
        }
    }

    #[test]
    fn only_timeouts_are_unknown_outcomes() {
        assert!(!DenyReason::CommitTimeout.certainly_not_committed_by_this_call());
        assert!(!DenyReason::Unavailable.certainly_not_committed_by_this_call());
        assert!(DenyReason::NoQuorum.certainly_not_committed_by_this_call());
    }
}
