//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh machine builds with
//! plain cargo and nothing installed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; tonic-prost-build reads PROTOC from the environment.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .bytes(".lockstep.v1")
        // Hand-encoded so a routed message is encoded once for all its receivers (see wire.rs).
        .extern_path(".lockstep.v1.Deliveries", "crate::wire::Deliveries")
        .extern_path(".lockstep.v1.SyncResult", "crate::wire::SyncResult")
        .compile_protos(&["proto/lockstep/v1/lockstep.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
