//! quorate-jepsen owns fault-injection testing of a real quorate cluster:
//! nodes as real processes in network namespaces (`net`, `cluster`), a
//! recorded workload (`workload`, `history`), nemeses (`nemesis`), one
//! checker per invariant of `../shared/BRIEF.md` (`checkers`) and the
//! report (`report`); the message shim for delay, reordering and
//! duplication (`shim`). `jepsen/CONTRACT.md` defines ok / fail / info.
//!
//! `sim` (feature `sim`) is the whole-product deterministic simulation:
//! quorate replicas (openraft, the governance machine, attestation,
//! checkpoints, containment, handover) on virtual time under seeded network,
//! crash, power-loss, disk and evaluation faults, a thousand seeds per test
//! run (`jepsen/README.md`).
//!
//! Architecture invariant: the harness talks to nodes only through the
//! public gRPC API and the OS (processes, namespaces, iptables); it must not
//! depend on quorate-server or quorate-store, so that it tests what users
//! run. Verifying the final log reuses the offline verifier
//! (`quorate-core` + `quorate-policy`), exactly as `quorate verify` does.
//! The simulation uses openraft directly, with a simulated disk behind the
//! same storage traits, and runs `quorate-machine` (the store's decision
//! code) and `quorate_machine::containment` (the server's rules) as they
//! are; it must not depend on quorate-server, quorate-store or RocksDB.

pub mod checkers;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod shim;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tamper;
pub mod workload;
