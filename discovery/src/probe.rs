//! The mesh-internal probe protocol (`/shoal/probe/1`): a direct "are you there?" and an indirect
//! "do you hear X?", so that one slow link does not get a live node declared dead.

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use serde::{Deserialize, Serialize};

use crate::membership::Heartbeat;

/// A probe request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ProbeRequest {
    /// Direct: answer [`ProbeResponse::Ack`].
    Ping,
    /// Indirect: does the receiver hear this peer (PeerId bytes)?
    DoYouHear(Vec<u8>),
    /// The full heartbeat the receiver holds for this peer (PeerId bytes; the receiver's own if
    /// it is the receiver): asked after a small beat announced a version we do not hold.
    InfoOf(Vec<u8>),
    /// A joiner's first question: every member the receiver holds alive. It carries the
    /// joiner's own heartbeat, first-hand over the authenticated connection, so that the
    /// receiver can hand the joiner on to the next joiners at once.
    Roster(Box<Heartbeat>),
    /// The asker declared the receiver dead, yet reaches it: the receiver publishes a newer
    /// heartbeat (at most once per [`crate::reconsider::RECONSIDER_EVERY`]), which revives it in
    /// every view, and answers [`ProbeResponse::Ack`].
    Refute,
}

/// A probe response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ProbeResponse {
    /// Answer to `Ping`.
    Ack,
    /// The receiver hears the peer.
    Heard,
    /// The receiver does not hear the peer.
    NotHeard,
    /// Answer to `InfoOf`: the heartbeat held, if any.
    Info(Option<Box<Heartbeat>>),
    /// Answer to `Roster`: the members held alive (the receiver first), as many as fit in a
    /// response.
    Roster(Vec<RosterEntry>),
}

/// One member of a roster: hearsay, folded in only for members the asker does not know yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RosterEntry {
    /// The member's PeerId bytes.
    pub peer: Vec<u8>,
    /// Its heartbeat as held by the responder.
    pub heartbeat: Heartbeat,
}

/// Why we sent an outbound probe.
#[derive(Debug)]
pub(crate) enum ProbePurpose {
    /// We ping a suspect ourselves.
    Direct(PeerId),
    /// We asked someone else about a suspect.
    Indirect(PeerId),
    /// We asked for the full heartbeat of `target`, announced with `version`.
    Fetch { target: PeerId, version: u64 },
    /// We asked a peer for its roster at join.
    Roster,
    /// We ask a member we declared dead whether it is alive after all.
    Reconsider(PeerId),
    /// Someone asked us about the target; answer them when our ping resolves.
    Relay {
        target: PeerId,
        channel: ResponseChannel<Vec<u8>>,
    },
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain enums of bytes into a Vec cannot fail; an empty frame would be rejected
    // by the receiver as malformed, which is the safe outcome if it ever did.
    cbor4ii::serde::to_vec(Vec::new(), value).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    cbor4ii::serde::from_slice(bytes).ok()
}
