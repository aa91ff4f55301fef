//! Co-streaming stages, sans-IO: the pieces a stage is made of, each without a clock, a socket
//! or a task (time comes in as `Instant`s, packets as bytes).
//!
//! - [`slots`]: which participant a viewer's K video slots show, stable while participants
//!   come and go; slot 0 is the featured one.
//! - [`speaker`]: who speaks and who is featured, from RFC 6464 audio levels (or levels of
//!   decoded audio), smoothed and held so the featured video does not flap; a pin overrides it.
//! - [`mix`]: the server-side Opus mix for single-audio-section players: decode every unmuted
//!   participant, sum, encode once per stage (not per viewer).
//!
//! The SFU wires them to its streams (docs/costreaming.md says what is built).
#![warn(missing_docs)]

pub mod mix;
pub mod slots;
pub mod speaker;

/// One participant of a stage (the host or a guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The most participants a stage holds: the host and 5 guests.
pub const MAX_PARTICIPANTS: usize = 6;
