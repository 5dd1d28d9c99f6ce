//! quorate-jepsen owns fault-injection testing of a real quorate cluster:
//! nodes as real processes in network namespaces (`net`, `cluster`), a
//! recorded workload (`workload`, `history`), nemeses (`nemesis`), one
//! checker per invariant of `../shared/BRIEF.md` (`checkers`) and the
//! report (`report`); the message shim for delay, reordering and
//! duplication (`shim`). `jepsen/CONTRACT.md` defines ok / fail / info.
//!
//! `sim` is the deterministic simulation: openraft nodes on virtual time and
//! a seeded simulated network, hundreds of seeds per test run.
//!
//! Architecture invariant: the harness talks to nodes only through the
//! public gRPC API and the OS (processes, namespaces, iptables); it must not
//! depend on quorate-server or quorate-store, so that it tests what users
//! run. Verifying the final log reuses the offline verifier
//! (`quorate-core` + `quorate-policy`), exactly as `quorate verify` does.
//! The simulation uses openraft directly, with in-memory storage behind the
//! same traits.

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
