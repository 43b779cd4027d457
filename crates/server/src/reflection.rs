//! gRPC server reflection, v1 and its predecessor v1alpha (still what many tools ask first), so
//! that `grpcurl <addr> list` and `describe` work and generic clients can call lockstep without its
//! .proto file.
//!
//! Each port advertises what it serves: lockstep's services on it (from lockstep.proto's
//! descriptors, built in by `lockstep_proto::FILE_DESCRIPTOR_SET`), the health service and
//! reflection itself.

use tonic_reflection::server::{v1, v1alpha, Builder};

use crate::health::STANDARD_SERVICES;

/// The descriptors and advertised names of a port serving `services`.
fn builder(services: &[&str]) -> Builder<'static> {
    let builder = Builder::configure()
        .register_encoded_file_descriptor_set(lockstep_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    services.iter().chain(STANDARD_SERVICES.iter()).fold(builder, |b, name| b.with_service_name(*name))
}

/// Reflection v1 for a port serving `services`.
pub fn v1(services: &[&str]) -> v1::ServerReflectionServer<impl v1::ServerReflection> {
    // The descriptor sets are built into the binary: a failure is a broken build, which the
    // unit test below would have caught.
    builder(services).build_v1().expect("the built-in descriptor sets are valid")
}

/// Reflection v1alpha for a port serving `services`.
pub fn v1alpha(services: &[&str]) -> v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection> {
    builder(services).build_v1alpha().expect("the built-in descriptor sets are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_descriptor_sets_build_both_versions() {
        let services = ["lockstep.v1.Lockstep", "lockstep.v1.Admin"];
        assert!(builder(&services).build_v1().is_ok());
        assert!(builder(&services).build_v1alpha().is_ok());
    }
}
