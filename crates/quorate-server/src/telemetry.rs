//! Every metric a node exports, in one table: name, type, labels (with
//! their values where they are a known set), unit and meaning.
//!
//! [`describe_all`] runs once, right after the Prometheus recorder is
//! installed and before the node starts: each metric gets its HELP text,
//! and every series whose labels are a known set is registered at zero, so
//! a scrape shows the whole set from the first second (an alert on
//! `rate(quorate_unattested_total[5m]) > 0` must not wait for the first
//! failure to find its series). Durations and sizes are Prometheus
//! histograms with fixed buckets ([`buckets`]), so they aggregate across
//! nodes. `docs/METRICS.md` is [`markdown`] of this table, checked by a
//! test; another test checks that the code records no metric missing here.

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One label: its name and, when they are a known set, every value it takes.
#[derive(Debug, Clone, Copy)]
pub struct Label {
    pub name: &'static str,
    /// Empty when the values are not known in advance (node ids, regions):
    /// such a series appears once it has a value.
    pub values: &'static [&'static str],
}

#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// `seconds`, `bytes`, or empty for a count.
    pub unit: &'static str,
    pub labels: &'static [Label],
    pub help: &'static str,
}

/// The Governance RPCs a client's role and rate are checked for.
pub const RPCS: &[&str] = &[
    "Authorize",
    "Probe",
    "PublishPolicy",
    "ActivatePolicy",
    "GetPolicy",
    "GetDecision",
    "ListDecisions",
    "GetLineage",
    "Status",
    "Backup",
    "GetReceipt",
    "GetCheckpoint",
    "GetConsistencyProof",
    "GetTrust",
    "ExportLog",
    "WatchDecisions",
    "AddLearner",
    "PromoteVoter",
    "RemoveNode",
    "StartRollout",
    "PromoteRollout",
    "RollbackRollout",
    "GetRollout",
    "EnvoyCheck",
    "K8sAdmit",
];

/// The doors a request can come in by (`node::Door`).
pub const DOORS: &[&str] = &["grpc", "rest", "envoy", "admission", "forwarded"];

/// Every DENY reason code (`DenyReason::ALL`, checked by a test).
pub const DENY_CODES: [&str; 12] = [
    "POLICY",
    "UNKNOWN_DOMAIN",
    "NO_ACTIVE_POLICY",
    "INVALID_REQUEST",
    "NO_QUORUM",
    "COMMIT_TIMEOUT",
    "INTEGRITY_FAILURE",
    "DIVERGENCE",
    "UNVERIFIABLE_POLICY",
    "UNAVAILABLE",
    "REQUEST_ID_CONFLICT",
    "UNATTESTED",
];

/// Every answer label: ALLOW, then each DENY reason code.
pub const ANSWERS: [&str; 13] = {
    let mut a = ["ALLOW"; 13];
    let mut i = 0;
    while i < DENY_CODES.len() {
        a[i + 1] = DENY_CODES[i];
        i += 1;
    }
    a
};

const RPC: Label = Label {
    name: "rpc",
    values: RPCS,
};
const BATCH_KIND: Label = Label {
    name: "kind",
    values: &["decisions", "probes"],
};

use Kind::{Counter, Gauge, Histogram};

/// The table. Sorted by name; `docs/METRICS.md` renders it.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "quorate_attest_wait_seconds",
        kind: Histogram,
        unit: "seconds",
        labels: &[],
        help: "Leader: from a committed, applied ALLOW to an attested checkpoint covering it (the wait for a majority of voters' signatures).",
    },
    Metric {
        name: "quorate_attestation_mismatches_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Leader: tree heads at which a voter signed a root other than the leader's own (evidence of divergence; investigate at once).",
    },
    Metric {
        name: "quorate_attestations_refused_total",
        kind: Counter,
        unit: "",
        labels: &[Label {
            name: "why",
            values: &["invalid", "not_own"],
        }],
        help: "Leader: attestations refused: a signature that does not verify or a signer that is not a voter (invalid), or a node sending another's (not_own).",
    },
    Metric {
        name: "quorate_attestations_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Leader: voters' attestations (signed tree heads) verified and counted.",
    },
    Metric {
        name: "quorate_attestations_undelivered_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Voter: batches of this node's attestations the leader could not be reached for; they are retried.",
    },
    Metric {
        name: "quorate_attested_checkpoints_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Leader: tree heads a majority of voters attested (each releases the ALLOWs it covers).",
    },
    Metric {
        name: "quorate_authorize_answers_total",
        kind: Counter,
        unit: "",
        labels: &[
            Label {
                name: "answer",
                values: &ANSWERS,
            },
            Label {
                name: "door",
                values: DOORS,
            },
        ],
        help: "Authorize answers this node gave, by answer (ALLOW or the DENY reason code, docs/CONTRACT.md) and by the door the request came in by: grpc, rest, envoy, admission, or forwarded (a follower's relay to this leader).",
    },
    Metric {
        name: "quorate_authorize_forwarded_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Authorize requests this node forwarded to the leader.",
    },
    Metric {
        name: "quorate_authorize_seconds",
        kind: Histogram,
        unit: "seconds",
        labels: &[],
        help: "Authorize on this node, from the validated request to its answer (forwarding, commit and attestation included).",
    },
    Metric {
        name: "quorate_batch_size",
        kind: Histogram,
        unit: "",
        labels: &[BATCH_KIND],
        help: "Leader: requests (decisions) or probes carried by one proposed Raft entry.",
    },
    Metric {
        name: "quorate_checkpoints_final_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Checkpoints this node applied as final (cosigned by a majority of voters in the log).",
    },
    Metric {
        name: "quorate_console_tokens_refused_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Console requests refused for a token that did not verify (forged, edited, expired, another cluster's).",
    },
    Metric {
        name: "quorate_contained",
        kind: Gauge,
        unit: "",
        labels: &[Label {
            name: "reason",
            values: &DENY_CODES,
        }],
        help: "1 for the reason this node is contained (it denies everything), 0 for every other; all 0 when it serves.",
    },
    Metric {
        name: "quorate_decision_log_records",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "Records in this node's applied decision log.",
    },
    Metric {
        name: "quorate_decisions_total",
        kind: Counter,
        unit: "",
        labels: &[Label {
            name: "decision",
            values: &["allow", "deny"],
        }],
        help: "Decision records this node's state machine appended, by decision.",
    },
    Metric {
        name: "quorate_divergences_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Times this node found its own result differing from its peers' (it contains with DIVERGENCE).",
    },
    Metric {
        name: "quorate_forward_seconds",
        kind: Histogram,
        unit: "seconds",
        labels: &[],
        help: "Follower: waiting for the leader's answer to a forwarded Authorize.",
    },
    Metric {
        name: "quorate_integrity_failures_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Periodic verifications of stored state that failed (the node contains with INTEGRITY_FAILURE).",
    },
    Metric {
        name: "quorate_integrity_verify_seconds",
        kind: Histogram,
        unit: "seconds",
        labels: &[],
        help: "One round of the periodic verification of stored state.",
    },
    Metric {
        name: "quorate_is_leader",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "1 while this node is the Raft leader.",
    },
    Metric {
        name: "quorate_leadership_handovers_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Times this node, contained while leading, handed leadership to a peer.",
    },
    Metric {
        name: "quorate_member_lag_entries",
        kind: Gauge,
        unit: "",
        labels: &[
            Label {
                name: "node",
                values: &[],
            },
            Label {
                name: "region",
                values: &[],
            },
            Label {
                name: "role",
                values: &["voter", "learner"],
            },
        ],
        help: "Leader: Raft entries each member is behind the leader's log (one series per member, present on the leader).",
    },
    Metric {
        name: "quorate_membership_changes_total",
        kind: Counter,
        unit: "",
        labels: &[Label {
            name: "change",
            values: &["add_learner", "promote", "remove"],
        }],
        help: "Membership changes this node served as leader.",
    },
    Metric {
        name: "quorate_permission_denied_total",
        kind: Counter,
        unit: "",
        labels: &[RPC],
        help: "Calls refused because the caller's certificate role does not allow the RPC (nothing changed).",
    },
    Metric {
        name: "quorate_policy_versions_published_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Policy versions this node's state machine stored.",
    },
    Metric {
        name: "quorate_propose_seconds",
        kind: Histogram,
        unit: "seconds",
        labels: &[BATCH_KIND],
        help: "Leader: one entry from proposal to applied (append, replication to a quorum, commit, apply).",
    },
    Metric {
        name: "quorate_quorate",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "1 while this node can prove it is part of a quorum.",
    },
    Metric {
        name: "quorate_raft_last_applied_index",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "The last Raft log index this node applied.",
    },
    Metric {
        name: "quorate_raft_last_log_index",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "The last Raft log index this node holds.",
    },
    Metric {
        name: "quorate_raft_log_appended_entries_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Raft entries appended to this node's log.",
    },
    Metric {
        name: "quorate_raft_term",
        kind: Gauge,
        unit: "",
        labels: &[],
        help: "This node's current Raft term.",
    },
    Metric {
        name: "quorate_rate_limited_total",
        kind: Counter,
        unit: "",
        labels: &[RPC],
        help: "Calls refused because the client was over limits.client_requests_per_second (nothing changed).",
    },
    Metric {
        name: "quorate_relay_refused_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Follower: a leader's ALLOW refused because its receipt did not verify (answered DENY UNATTESTED).",
    },
    Metric {
        name: "quorate_snapshot_received_bytes_total",
        kind: Counter,
        unit: "bytes",
        labels: &[],
        help: "Snapshot bytes received from the leader (learner catch-up, repair).",
    },
    Metric {
        name: "quorate_snapshot_sent_bytes_total",
        kind: Counter,
        unit: "bytes",
        labels: &[],
        help: "Snapshot bytes sent to lagging members.",
    },
    Metric {
        name: "quorate_snapshots_built_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Snapshots this node built.",
    },
    Metric {
        name: "quorate_snapshots_installed_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Snapshots this node installed after verifying them completely.",
    },
    Metric {
        name: "quorate_snapshots_refused_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Snapshots this node refused to install because they did not verify.",
    },
    Metric {
        name: "quorate_tls_handshake_failures_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Incoming TLS handshakes refused or timed out (foreign CA, no client certificate, stalled peer).",
    },
    Metric {
        name: "quorate_tls_reloads_total",
        kind: Counter,
        unit: "",
        labels: &[Label {
            name: "result",
            values: &["ok", "error"],
        }],
        help: "Reloads of this node's TLS certificates from disk, by result (an error keeps the old ones).",
    },
    Metric {
        name: "quorate_unattested_total",
        kind: Counter,
        unit: "",
        labels: &[],
        help: "Committed ALLOWs answered DENY UNATTESTED because no majority attested them in time (the node contains).",
    },
    Metric {
        name: "quorate_wal_sync_batch_appends",
        kind: Histogram,
        unit: "",
        labels: &[],
        help: "Log appends made durable by one fsync of the RocksDB WAL (group commit).",
    },
    Metric {
        name: "quorate_wal_sync_seconds",
        kind: Histogram,
        unit: "seconds",
        labels: &[],
        help: "One fsync of the RocksDB write-ahead log.",
    },
];

/// Bucket upper bounds: durations from 100 µs to 30 s; sizes (requests per
/// batch, appends per sync) in powers of two up to 4,096.
pub fn buckets(m: &Metric) -> &'static [f64] {
    const SECONDS: &[f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ];
    const SIZES: &[f64] = &[
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
    ];
    if m.unit == "seconds" { SECONDS } else { SIZES }
}

/// Describes every metric and registers each series of known labels at zero.
pub fn describe_all() {
    for m in METRICS {
        let unit = match m.unit {
            "seconds" => Some(metrics::Unit::Seconds),
            "bytes" => Some(metrics::Unit::Bytes),
            _ => None,
        };
        match (m.kind, unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
        // Only series whose every label has a known set of values.
        if m.labels.iter().any(|l| l.values.is_empty()) {
            continue;
        }
        for labels in label_sets(m.labels) {
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels.clone()).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels.clone()).set(0.0),
                Kind::Histogram => drop(metrics::histogram!(m.name, labels.clone())),
            }
        }
    }
}

/// Every combination of the labels' values (one empty set without labels).
fn label_sets(labels: &[Label]) -> Vec<Vec<metrics::Label>> {
    let mut sets = vec![Vec::new()];
    for l in labels {
        let mut next = Vec::with_capacity(sets.len() * l.values.len());
        for set in &sets {
            for v in l.values {
                let mut s: Vec<metrics::Label> = set.clone();
                s.push(metrics::Label::new(l.name, *v));
                next.push(s);
            }
        }
        sets = next;
    }
    sets
}

/// `docs/METRICS.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Metrics\n\n\
         Every metric a node exports on `GET /metrics` (Prometheus text format, on\n\
         the node's HTTP port). Generated from the table in\n\
         `crates/quorate-server/src/telemetry.rs`, and checked against it and\n\
         against a running node's `/metrics` by tests: edit the table, then\n\
         `QUORATE_WRITE_DOCS=1 cargo test -p quorate-server telemetry`.\n\n\
         Every series whose labels take a known set of values is exported from the\n\
         node's start, at zero; `quorate_member_lag_entries` has one series per\n\
         member, on the leader. Histograms have fixed buckets: durations from\n\
         100 µs to 30 s, sizes in powers of two up to 4,096.\n\n\
         | name | type | unit | labels | meaning |\n|---|---|---|---|---|\n",
    );
    for m in METRICS {
        let labels: Vec<String> = m
            .labels
            .iter()
            .map(|l| {
                if l.values.is_empty() || l.values.len() > 3 {
                    format!("`{}`", l.name)
                } else {
                    let vals: Vec<String> = l.values.iter().map(|v| format!("`{v}`")).collect();
                    format!("`{}` ({})", l.name, vals.join(", "))
                }
            })
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            if m.unit.is_empty() { "" } else { m.unit },
            labels.join(", "),
            m.help
        ));
    }
    out.push_str(
        "\n`rpc` takes the Governance RPC names (`Authorize`, `Probe`, `PublishPolicy`, ...);\n\
         `answer` is `ALLOW` or a DENY reason code, `reason` a DENY reason code\n\
         (docs/CONTRACT.md).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_by_the_book() {
        let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "sorted by name, each once");
        for m in METRICS {
            assert!(m.name.starts_with("quorate_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            if !m.unit.is_empty() {
                assert!(m.name.contains(&format!("_{}", m.unit)), "{}", m.name);
            }
            assert!(m.help.ends_with('.') && m.help.len() > 20, "{}", m.name);
        }
    }

    #[test]
    fn label_values_follow_the_reason_codes() {
        let deny: Vec<&str> = quorate_core::DenyReason::ALL
            .iter()
            .map(|r| r.code())
            .collect();
        assert_eq!(DENY_CODES.as_slice(), deny.as_slice());
        assert_eq!(&ANSWERS[1..], deny.as_slice());
        assert_eq!(ANSWERS[0], "ALLOW");
    }

    /// Every metric the code records is in the table: the macros' first
    /// argument, read from the sources of every crate.
    #[test]
    fn the_code_records_no_metric_missing_from_the_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeSet::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("telemetry.rs") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    for macro_ in ["counter!(", "gauge!(", "histogram!("] {
                        for (at, _) in text.match_indices(macro_) {
                            let rest = text[at + macro_.len()..].trim_start();
                            if let Some(name) =
                                rest.strip_prefix('"').and_then(|r| r.split('"').next())
                            {
                                found.insert(name.to_string());
                            }
                        }
                    }
                }
            }
        }
        assert!(found.len() > 30, "read the sources: {found:?}");
        let known: std::collections::BTreeSet<String> =
            METRICS.iter().map(|m| m.name.to_string()).collect();
        let missing: Vec<&String> = found.difference(&known).collect();
        assert!(
            missing.is_empty(),
            "recorded but not in the table: {missing:?}"
        );
        let unused: Vec<&String> = known.difference(&found).collect();
        assert!(
            unused.is_empty(),
            "in the table but never recorded: {unused:?}"
        );
    }

    #[test]
    fn every_metric_renders_with_help_and_type_from_the_start() {
        let mut b = metrics_exporter_prometheus::PrometheusBuilder::new();
        for m in METRICS.iter().filter(|m| m.kind == Kind::Histogram) {
            b = b
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(m.name.into()),
                    buckets(m),
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let recorder = b.build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe_all);
        let text = handle.render();
        // A metric with labels of unknown values has no series (and so no
        // HELP line) until it has a value.
        for m in METRICS
            .iter()
            .filter(|m| m.labels.iter().all(|l| !l.values.is_empty()))
        {
            assert!(
                text.contains(&format!("# HELP {} ", m.name)),
                "no HELP for {}",
                m.name
            );
            assert!(
                text.contains(&format!("# TYPE {} {}", m.name, m.kind.as_str())),
                "no TYPE for {}:\n{text}",
                m.name
            );
        }
        assert!(text.contains("quorate_unattested_total 0"), "{text}");
        for door in DOORS {
            assert!(text.contains(&format!(
                "quorate_authorize_answers_total{{answer=\"UNATTESTED\",door=\"{door}\"}} 0"
            )));
        }
        assert!(text.contains("quorate_propose_seconds_bucket{kind=\"probes\",le=\"0.001\"} 0"));
    }

    #[test]
    fn docs_metrics_md_is_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/METRICS.md");
        let want = markdown();
        if std::env::var_os("QUORATE_WRITE_DOCS").is_some() {
            std::fs::write(path, &want).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/METRICS.md is not the table: QUORATE_WRITE_DOCS=1 cargo test -p quorate-server telemetry"
        );
    }
}
