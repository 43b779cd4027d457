//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh machine builds with
//! plain cargo and nothing installed.
//!
//! Two passes over the same file: the messages and the clients (`lockstep_proto::v1`), then the
//! servers alone (`lockstep_proto::server`), which use the generated messages and lockstep's own
//! codec (`crate::session::Codec`): a session's client messages reach the server undecoded, so
//! that one it cannot decode is answered with an error instead of ending the stream.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; tonic-prost-build reads PROTOC from the environment.
    std::env::set_var("PROTOC", protoc);
    let proto = ["proto/lockstep/v1/lockstep.proto"];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_server(false)
        // What server reflection describes (`FILE_DESCRIPTOR_SET`).
        .file_descriptor_set_path(out.join("lockstep_descriptor.bin"))
        .bytes(".lockstep.v1")
        // Hand-encoded so a routed message is encoded once for all its receivers (see wire.rs).
        .extern_path(".lockstep.v1.Deliveries", "crate::wire::Deliveries")
        .extern_path(".lockstep.v1.SyncResult", "crate::wire::SyncResult")
        .compile_protos(&proto, &["proto"])?;
    let servers = out.join("server");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(servers)
        .codec_path("crate::session::Codec")
        .extern_path(".lockstep.v1", "crate::v1")
        .extern_path(".lockstep.v1.ClientMessage", "crate::session::RawClientMessage")
        .compile_protos(&proto, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
