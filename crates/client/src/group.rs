//! Replica groups from a Rust agent: [`Agent::join_group`], [`Agent::leave_group`],
//! [`Agent::publish_group_state`], [`Agent::fetch_group_state`], and the group's events
//! ([`GroupEvent::from_delivery`]).
//!
//! Ranks are join order (see docs/PROTOCOL.md, "Replica groups"). A state blob is published by one
//! member at a time and becomes the group's next version (1, 2, ...) once all its bytes arrived
//! and hashed to their SHA-256; a late joiner joins, then fetches the current version, whose
//! checksum this client verifies before handing the bytes over. At a collective over the group
//! ([`Collective::replica`](crate::Collective::replica)) a member can present the checksum of
//! its own state ([`Collective::checksum`](crate::Collective::checksum)); members that diverge are
//! named in the outcome ([`CollectiveOutcome::diverged`](crate::CollectiveOutcome)).

use bytes::Bytes;
use lockstep_proto::group::{Checksum, GROUP_CHUNK_BYTES};
use lockstep_proto::v1;
use lockstep_proto::v1::group_state_download::Kind as Down;
use lockstep_proto::v1::group_state_upload::Kind as Up;
use serde::Deserialize;

use crate::agent::unexpected;
use crate::{Agent, Delivery, Detail, Error, Reason};

/// A member's place in its group, as a join answers it.
pub type GroupMembership = v1::GroupMembership;

/// A version of a group's state (without its bytes).
pub type GroupState = v1::GroupState;

/// A fetched version of a group's state: its description and its bytes, whose SHA-256 matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStateBlob {
    pub state: GroupState,
    pub bytes: Bytes,
}

/// A change of a group, as published on its topic `lockstep.groups.<group_id>`: agents interested
/// in it (members or not) receive it among their deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GroupEvent {
    pub group: String,
    /// `joined`, `left`, `lost` or `published`.
    pub event: String,
    /// The agent that joined, left, was lost, or published.
    pub agent: String,
    /// Members after the change, in rank order.
    pub members: Vec<String>,
    /// The current state version after the change (0: none).
    pub version: u64,
    pub checksum: String,
}

/// The topic prefix of groups' events.
pub const GROUP_EVENT_PREFIX: &str = "lockstep.groups.";

impl GroupEvent {
    /// The group event a delivery carries, if it is one.
    pub fn from_delivery(d: &Delivery) -> Option<GroupEvent> {
        if !d.topic.starts_with(GROUP_EVENT_PREFIX) {
            return None;
        }
        serde_json::from_slice(&d.payload).ok()
    }
}

/// The SHA-256 (lowercase hex) of `bytes`: a group state's checksum, as the server computes it.
pub fn state_checksum(bytes: &[u8]) -> String {
    Checksum::of(bytes)
}

impl Agent {
    /// Joins replica group `group_id` (created by its first join); joining again keeps the rank.
    pub async fn join_group(&self, group_id: &str) -> Result<GroupMembership, Error> {
        let kind = v1::client_message::Kind::JoinGroup(v1::JoinGroup { group_id: group_id.to_owned() });
        match self.call_with(kind, false).await? {
            v1::reply::Outcome::GroupMembership(m) => Ok(m),
            v1::reply::Outcome::Error(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Leaves replica group `group_id`.
    pub async fn leave_group(&self, group_id: &str) -> Result<(), Error> {
        let leave = v1::LeaveGroup { group_id: group_id.to_owned(), forget_state: false };
        let kind = v1::client_message::Kind::LeaveGroup(leave);
        match self.call_with(kind, false).await? {
            v1::reply::Outcome::Error(e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Leaves replica group `group_id` as its last member, forgetting the group and its state
    /// (refused with [`Error::InvalidArgument`] while other members remain). Without it, a group's
    /// state outlives its members.
    pub async fn forget_group(&self, group_id: &str) -> Result<(), Error> {
        let leave = v1::LeaveGroup { group_id: group_id.to_owned(), forget_state: true };
        match self.call_with(v1::client_message::Kind::LeaveGroup(leave), false).await? {
            v1::reply::Outcome::Error(e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Publishes `bytes` as the group's next state version (the caller must be a member); the
    /// answer is that version, once it is the current one. The bytes go in chunks of 256 KiB on a
    /// stream beside the session, with their SHA-256, which the server checks.
    pub async fn publish_group_state(&self, group_id: &str, bytes: impl Into<Bytes>) -> Result<GroupState, Error> {
        let bytes: Bytes = bytes.into();
        let (mut grpc, namespace, agent_id, resume_token) = self.collective_parts();
        let header = v1::GroupStateHeader {
            namespace,
            agent_id,
            resume_token,
            group_id: group_id.to_owned(),
            size: bytes.len() as u64,
            checksum: state_checksum(&bytes),
        };
        let first = v1::GroupStateUpload { kind: Some(Up::Header(header)) };
        // Slices of the one buffer: nothing is copied before the transport encodes it.
        let chunks = (0..bytes.len())
            .step_by(GROUP_CHUNK_BYTES)
            .map(move |at| bytes.slice(at..(at + GROUP_CHUNK_BYTES).min(bytes.len())))
            .map(|c| v1::GroupStateUpload { kind: Some(Up::Chunk(c)) });
        let upload = tokio_stream::iter(std::iter::once(first).chain(chunks));
        Ok(grpc.publish_group_state(upload).await?.into_inner())
    }

    /// The group's current state (the caller must be a member), its SHA-256 verified here:
    /// bytes that do not match fail with [`Error::GroupStateFailed`] (reason `CHECKSUM_MISMATCH`).
    pub async fn fetch_group_state(&self, group_id: &str) -> Result<GroupStateBlob, Error> {
        let (mut grpc, namespace, agent_id, resume_token) = self.collective_parts();
        let request = v1::FetchGroupStateRequest { namespace, agent_id, resume_token, group_id: group_id.to_owned() };
        let mut stream = grpc.fetch_group_state(request).await?.into_inner();
        let mut state = None;
        let mut bytes = Vec::new();
        while let Some(msg) = stream.message().await? {
            match msg.kind {
                Some(Down::State(s)) => {
                    let size =
                        usize::try_from(s.size).map_err(|_| Error::Input("the state does not fit in memory".into()))?;
                    bytes.reserve_exact(size);
                    state = Some(s);
                }
                Some(Down::Chunk(c)) => bytes.extend_from_slice(&c),
                None => {}
            }
        }
        let state = state.ok_or_else(|| Error::SessionEnded("the server sent no group state".into()))?;
        verify(&state, &bytes)?;
        Ok(GroupStateBlob { state, bytes: Bytes::from(bytes) })
    }
}

/// Checks fetched bytes against their state's size and checksum.
fn verify(state: &GroupState, bytes: &[u8]) -> Result<(), Error> {
    let got = state_checksum(bytes);
    if bytes.len() as u64 != state.size || got != state.checksum {
        let message = format!(
            "checksum mismatch for replica group '{}': version {} should be {} bytes hashing to {}, but {} bytes hashing to {got} arrived",
            state.group_id,
            state.version,
            state.size,
            state.checksum,
            bytes.len()
        );
        return Err(Error::GroupStateFailed(Detail::new(message, Some(Reason::ChecksumMismatch))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_bytes_are_verified_against_their_checksum() {
        let state = GroupState {
            group_id: "g".into(),
            version: 2,
            checksum: state_checksum(b"abc"),
            size: 3,
            ..Default::default()
        };
        verify(&state, b"abc").expect("matches");
        let e = verify(&state, b"abd").unwrap_err();
        assert_eq!(e.reason(), Some(Reason::ChecksumMismatch));
        assert!(matches!(e, Error::GroupStateFailed(_)));
    }
}
