//! quorate-core owns the vocabulary of quorate and the bytes it hashes:
//! authorization requests, decision records, policy-version identities, the
//! stable reason codes, the Raft commands, and the canonical encoding and hash
//! chain specified in `docs/FORMATS.md`.
//!
//! Architecture invariant: this crate does no IO and has no async. It must
//! not depend on RocksDB, openraft, tonic, tokio or Cedar, so that an offline
//! verifier can reuse it unchanged.

pub mod canonical;
pub mod chain;
pub mod codec;
pub mod command;
pub mod export;
pub mod frames;
pub mod merkle;
pub mod proof;
pub mod reason;
pub mod record;
pub mod rollout;
pub mod validate;
pub mod verify;

pub use chain::{Chain, ChainError, Finality};
pub use command::{
    AuthorizeOutcome, Command, CommandResponse, Cosigned, PolicyActivated, PolicyPublished,
    Rejection,
};
pub use proof::{
    Attestation, Checkpoint, Cosignature, PolicySignature, PublicKey, Receipt, SecretKey,
    Signature, TrustFile, majority,
};
pub use reason::{DenyReason, ErrorCode};
pub use record::{
    AuthorizeRequest, Decision, DecisionRecord, Digest, GENESIS_HASH, PolicyVersion, ShadowOutcome,
    policy_content_hash,
};
pub use validate::entity_uid;
