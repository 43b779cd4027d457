//! lockstep's wire protocol: the generated gRPC types and services ([`v1`]) and their conversions
//! to and from the engine's types ([`convert`]).
//!
//! The code is generated at build time from `proto/lockstep/v1/lockstep.proto` with a vendored
//! `protoc`, so a fresh machine needs nothing but cargo.

pub mod v1 {
    #![allow(clippy::all)]
    tonic::include_proto!("lockstep.v1");
}

pub mod convert;
pub mod reason;
pub mod wire;
