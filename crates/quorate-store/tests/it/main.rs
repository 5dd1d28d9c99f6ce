//! quorate-store's integration tests, one binary: openraft's storage
//! conformance suite on real RocksDB, durability across reopen, and the
//! determinism and integrity of the state machine.

mod conformance;
mod machine;
