//! quorate-proto owns the wire: the code generated from `proto/` and the
//! conversions between wire messages and `quorate-core` types.
//!
//! Architecture invariant: only this crate and its users that serve or call
//! gRPC know about prost types; the core never sees them. No RocksDB, no
//! openraft here.

#[allow(unreachable_pub, clippy::all, missing_docs)] // reason: generated code.
pub mod v1 {
    tonic::include_proto!("quorate.v1");
}

#[allow(unreachable_pub, clippy::all, missing_docs)] // reason: generated code.
pub mod internal {
    tonic::include_proto!("quorate.internal.v1");
}

/// etcd's v3 `KV.Put` (a wire-compatible subset of etcd's own definition,
/// `proto/etcd/kv.proto`): only `quorate bench --peer-etcd` uses it, to put
/// the same load on an etcd cluster in the same run.
#[allow(unreachable_pub, clippy::all, missing_docs)] // reason: generated code.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// Envoy's external authorization API (`envoy.service.auth.v3`, a
/// wire-compatible vendored subset, `proto/envoy/README.md`): every node
/// serves `Authorization/Check` on its gRPC port for Envoy's ext_authz
/// filter. The module tree mirrors the protobuf packages, as the generated
/// code refers to its neighbours by relative path.
#[allow(unreachable_pub, clippy::all, missing_docs)] // reason: generated code.
pub mod envoy_api {
    pub mod envoy {
        pub mod service {
            pub mod auth {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.auth.v3");
                }
            }
        }
        pub mod config {
            pub mod core {
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
        pub mod r#type {
            pub mod v3 {
                tonic::include_proto!("envoy.r#type.v3");
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

/// The well-known protobuf types (Struct, Timestamp, Any) the Envoy messages use.
pub use prost_types;

mod convert;

pub use convert::{
    WireError, record_from_wire, record_to_wire, request_from_wire, request_to_wire,
};

/// gRPC metadata key carrying the stable error code (see `quorate_core::ErrorCode`).
pub const CODE_METADATA_KEY: &str = "x-quorate-code";
/// gRPC metadata key set on Authorize calls a follower forwards to the leader,
/// so a forwarded call is never forwarded again.
pub const FORWARDED_METADATA_KEY: &str = "x-quorate-forwarded";
