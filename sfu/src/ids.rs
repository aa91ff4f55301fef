//! Typed identifiers.

use std::fmt;

/// A stream, named by its channel (`[a-z0-9_-]`, 1 to 64 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel names are 1-64 characters of a-z, 0-9, '-' and '_'")]
pub struct StreamIdError;

impl StreamId {
    /// Validate and wrap a channel name.
    pub fn new(name: &str) -> Result<Self, StreamIdError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(StreamIdError)
        }
    }

    /// Any stream's name as [`Display`](fmt::Display) writes it: a channel's, a guest's
    /// (`{channel}~{guest}`, the guest id 1-32 of `[a-z0-9]`) or a stage mix's
    /// (`{channel}~~mix`). For names that come from another node (the relay), never from a
    /// URL: a WHIP or WHEP path names a channel, parsed with [`StreamId::new`].
    pub fn parse(name: &str) -> Result<Self, StreamIdError> {
        let Some((channel, rest)) = name.split_once(GUEST_MARK) else {
            return Self::new(name);
        };
        let channel = Self::new(channel)?;
        if rest == MIX {
            return Ok(Self::mix(&channel));
        }
        let guest_ok = (1..=32).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if guest_ok {
            Ok(Self::guest(&channel, rest))
        } else {
            Err(StreamIdError)
        }
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stream a stage guest publishes into: `{channel}~{guest}`. `~` is not allowed in a
    /// channel name, so no WHIP or WHEP URL can name it and it never collides with a channel.
    /// `guest` (an invite id) keeps only its `[a-z0-9]`, at most 32 characters.
    pub fn guest(channel: &StreamId, guest: &str) -> Self {
        let id: String = guest
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .take(32)
            .collect();
        Self(format!("{}{GUEST_MARK}{id}", channel.0))
    }

    /// For a guest's stream, its channel and guest id; `None` for a channel's own stream and
    /// for a stage's mix.
    pub fn guest_of(&self) -> Option<(&str, &str)> {
        self.0
            .split_once(GUEST_MARK)
            .filter(|(_, guest)| !guest.starts_with(GUEST_MARK))
    }

    /// The stream of a stage's server-side audio mix: `{channel}~~mix` (a guest id never
    /// starts with `~`, so it is nobody's guest stream).
    pub fn mix(channel: &StreamId) -> Self {
        Self(format!("{}{GUEST_MARK}{MIX}", channel.0))
    }

    /// For a stage's mix stream, its channel.
    pub fn mix_of(&self) -> Option<&str> {
        self.0
            .split_once(GUEST_MARK)
            .filter(|(_, rest)| *rest == MIX)
            .map(|(channel, _)| channel)
    }

    /// The channel this stream belongs to: itself, a guest's channel, or a mix's.
    pub fn channel(&self) -> &str {
        self.0.split_once(GUEST_MARK).map_or(&self.0, |(c, _)| c)
    }
}

/// What follows the channel and the guest mark in a mix's stream name.
const MIX: &str = "~mix";

/// Separates a channel from a guest in a guest's stream name.
const GUEST_MARK: char = '~';

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One peer connection (a publisher or a subscriber session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for PeerId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(PeerId)
    }
}

/// Index of one of a stream's video layers (0 without simulcast; the relay numbers them the
/// same way on every node).
pub(crate) type LayerId = usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_validated() {
        assert!(StreamId::new("demo").is_ok());
        assert!(StreamId::new("my_chan-2").is_ok());
        assert!(StreamId::new("").is_err());
        assert!(StreamId::new("Upper").is_err());
        assert!(StreamId::new("a/b").is_err());
        assert!(StreamId::new(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_guest_stream_names_its_channel_and_no_url_can_name_it() {
        let channel = StreamId::new("duo").unwrap();
        let guest = StreamId::guest(&channel, "0a1b2c~/X");
        assert_eq!(guest.as_str(), "duo~0a1b2c");
        assert_eq!(guest.guest_of(), Some(("duo", "0a1b2c")));
        assert_eq!(channel.guest_of(), None);
        assert!(StreamId::new(guest.as_str()).is_err());
        assert_ne!(guest, channel);
        let mix = StreamId::mix(&channel);
        assert_eq!(mix.mix_of(), Some("duo"));
        assert_eq!(mix.guest_of(), None, "the mix is nobody's guest stream");
        assert_eq!((guest.mix_of(), channel.mix_of()), (None, None));
        assert_eq!(
            [mix.channel(), guest.channel(), channel.channel()],
            ["duo"; 3]
        );
        assert!(StreamId::new(mix.as_str()).is_err());
    }

    #[test]
    fn every_stream_name_parses_back_from_its_text_and_nothing_else_does() {
        let channel = StreamId::new("duo").unwrap();
        for s in [
            channel.clone(),
            StreamId::guest(&channel, "0a1b2c"),
            StreamId::mix(&channel),
        ] {
            assert_eq!(StreamId::parse(s.as_str()), Ok(s));
        }
        for bad in [
            "duo~", "duo~~", "duo~~max", "duo~A1", "duo~a~b", "~g1", "Duo~g1", "duo~a-b",
        ] {
            assert!(StreamId::parse(bad).is_err(), "{bad}");
        }
        assert!(StreamId::parse(&format!("duo~{}", "a".repeat(33))).is_err());
    }

    #[test]
    fn peer_id_round_trips_through_text() {
        let id = PeerId(0xdead_beef_0123);
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
    }
}
