//! The wire side of replica groups: the chunk size of a state blob's bytes, and the conversions
//! between the engine's group types and their messages.

use lockstep_core::replica_group::{GroupStatus, GroupView, StateVersion};
use lockstep_core::GroupCall;

use crate::v1;

/// Largest chunk of a group state's bytes (as for collectives: well under the gRPC message cap,
/// and one HTTP/2 frame).
pub const GROUP_CHUNK_BYTES: usize = crate::collective::COLLECTIVE_CHUNK_BYTES;

/// A state version on the wire.
pub fn state(group_id: &str, s: &StateVersion) -> v1::GroupState {
    v1::GroupState {
        group_id: group_id.to_owned(),
        version: s.version,
        checksum: s.checksum.clone(),
        size: s.size,
        published_by: s.published_by.clone(),
        published_at_ms: s.published_at,
    }
}

/// A member's view of its group on the wire.
pub fn membership(v: &GroupView) -> v1::GroupMembership {
    v1::GroupMembership {
        group_id: v.group_id.clone(),
        rank: v.rank,
        members: v.members.clone(),
        state: v.state.as_ref().map(|s| state(&v.group_id, s)),
    }
}

/// A group's status for listings on the wire.
pub fn info(g: &GroupStatus) -> v1::GroupInfo {
    v1::GroupInfo {
        group_id: g.group_id.clone(),
        members: g.members.clone(),
        state: g.state.as_ref().map(|s| state(&g.group_id, s)),
        publishing: g.publishing.clone().unwrap_or_default(),
    }
}

/// The engine's call for a publish header.
pub fn publish_call(h: &v1::GroupStateHeader) -> GroupCall {
    GroupCall {
        namespace: h.namespace.clone(),
        agent_id: h.agent_id.clone(),
        resume_token: h.resume_token.clone(),
        group_id: h.group_id.clone(),
    }
}

/// The engine's call for a fetch request.
pub fn fetch_call(r: v1::FetchGroupStateRequest) -> GroupCall {
    GroupCall { namespace: r.namespace, agent_id: r.agent_id, resume_token: r.resume_token, group_id: r.group_id }
}

/// SHA-256 of a state blob's bytes, fed piece by piece; lowercase hex at the end. The one
/// definition of a group state's checksum, for the server and the clients alike.
#[derive(Default)]
pub struct Checksum(sha2::Sha256);

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    /// The checksum, lowercase hex (64 characters).
    pub fn finish(self) -> String {
        use std::fmt::Write;
        let digest = sha2::Digest::finalize(self.0);
        digest.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> String {
        let mut c = Checksum::default();
        c.update(bytes);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_sha256_in_lowercase_hex_whatever_the_pieces() {
        assert_eq!(Checksum::of(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let mut c = Checksum::default();
        c.update(b"a");
        c.update(b"bc");
        assert_eq!(c.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
