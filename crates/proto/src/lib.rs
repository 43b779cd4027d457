//! lockstep's wire protocol: the generated gRPC types and clients ([`v1`]), the generated services
//! ([`server`], reading session streams through [`session`]), and the conversions to and from the
//! engine's types ([`convert`]).
//!
//! The code is generated at build time from `proto/lockstep/v1/lockstep.proto` with a vendored
//! `protoc`, so a fresh machine needs nothing but cargo.

pub mod v1 {
    #![allow(clippy::all)]
    tonic::include_proto!("lockstep.v1");
}

/// The encoded `FileDescriptorSet` of lockstep.proto: what server reflection tells tools such as
/// grpcurl about lockstep's services and messages.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/lockstep_descriptor.bin"));

/// The gRPC services, as the server implements them: the messages of [`v1`], except a session's
/// client messages, which arrive undecoded ([`session::RawClientMessage`]).
pub mod server {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/server/lockstep.v1.rs"));
}

pub mod collective;
pub mod convert;
pub mod group;
pub mod history;
pub mod intake;
pub mod lean;
pub mod reason;
pub mod round;
pub mod session;
pub mod shm;
pub mod streams;
pub mod systems;
pub mod task;
pub mod trace;
pub mod wire;
