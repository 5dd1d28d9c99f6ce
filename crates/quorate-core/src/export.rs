//! The log export: one JSON object per line (`quorate log export`), the
//! input of the offline verifier (`crate::verify`). FORMATS.md §11 specifies
//! it. Lines come in log order: a header, then policy publications,
//! activations and decision records ordered by Raft log index, each
//! checkpoint right after the record that completes its tree size.

use serde::{Deserialize, Serialize};

use crate::proof::Checkpoint;
use crate::record::{DecisionRecord, Digest, PolicyVersion};

/// The `format` value of an export this code reads.
pub const EXPORT_FORMAT: &str = "quorate-export/v1";

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub cluster_id: String,
    /// Decision records in the export (the chain head's count when taken).
    pub records: u64,
    /// Hash of the last record (the chain head).
    pub head: Digest,
    /// The node that produced the export.
    pub node_id: u64,
}

/// A domain's active version changed at `log_index` (an activation, or a
/// publication with `activate`). Decisions with a greater log index use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub domain: String,
    pub version: u64,
    pub log_index: u64,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    Header(ExportHeader),
    Policy(PolicyVersion),
    Activation(Activation),
    Record(DecisionRecord),
    Checkpoint(Checkpoint),
}

impl ExportLine {
    /// The Raft log index this line sorts by (checkpoints sort by the
    /// record that completes them, handled by the writer).
    pub fn log_index(&self) -> u64 {
        match self {
            ExportLine::Header(_) => 0,
            ExportLine::Policy(p) => p.log_index,
            ExportLine::Activation(a) => a.log_index,
            ExportLine::Record(r) => r.log_index,
            ExportLine::Checkpoint(_) => 0,
        }
    }
}
