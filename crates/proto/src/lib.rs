//! lockstep's wire protocol: the generated gRPC types and services (`v1`).
pub mod v1 {
    tonic::include_proto!("lockstep.v1");
}
