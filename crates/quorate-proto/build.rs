//! Generates the gRPC code from `proto/` with the vendored protoc, so a fresh
//! machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Read at run time, not with env!(): cargo shares build-script binaries
    // between checkouts of the same workspace (metadata hashes use paths
    // relative to the workspace), so a compiled-in path could point into
    // another clone and miss changes to this one's protos.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        root.join("quorate/v1/governance.proto"),
        root.join("quorate/internal/v1/raft.proto"),
        // etcd's Put, for `quorate bench --peer-etcd` (client only).
        root.join("etcd/kv.proto"),
        // Envoy's ext_authz v3 (a vendored subset, proto/envoy/README.md).
        root.join("envoy/envoy/service/auth/v3/external_auth.proto"),
    ];
    let envoy = root.join("envoy");
    for dep in [
        "envoy/service/auth/v3/attribute_context.proto",
        "envoy/config/core/v3/base.proto",
        "envoy/config/core/v3/address.proto",
        "envoy/type/v3/http_status.proto",
        "google/rpc/status.proto",
    ] {
        println!("cargo:rerun-if-changed={}", envoy.join(dep).display());
    }
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let includes = [root.clone(), envoy, protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure().compile_with_config(config, &files, &includes)?;
    Ok(())
}
