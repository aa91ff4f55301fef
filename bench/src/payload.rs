//! The synthetic video frame the bench publishes: a valid VP8 frame tag (so the SFU's keyframe
//! detection works) followed by a frame counter and the send time, then filler to the frame size.
//! Subscribers read the counter (loss, order) and the send time (forwarding delay).

/// Bytes before the filler: VP8 tag (10 for a keyframe, 3 otherwise) + counter + send time.
const KEY_TAG: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
const DELTA_TAG: [u8; 3] = [0x11, 0x02, 0x00];
/// Marks our frames, so a stray frame is never misread.
pub const MAGIC: [u8; 4] = *b"AXB1";

/// What a subscriber reads back out of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Frame counter from the publisher (0, 1, 2, ...).
    pub counter: u32,
    /// Send time in microseconds since the bench's epoch.
    pub sent_us: u64,
    /// Whether the frame is a keyframe.
    pub keyframe: bool,
}

/// Build a frame of `size` bytes (at least the header).
pub fn frame(counter: u32, sent_us: u64, keyframe: bool, size: usize) -> Vec<u8> {
    let tag: &[u8] = if keyframe { &KEY_TAG } else { &DELTA_TAG };
    let mut f = Vec::with_capacity(size.max(tag.len() + 16));
    f.extend_from_slice(tag);
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&counter.to_be_bytes());
    f.extend_from_slice(&sent_us.to_be_bytes());
    let fill = (counter % 251) as u8;
    f.resize(size.max(f.len()), fill);
    f
}

/// Read a frame back; `None` if it is not one of ours.
pub fn parse(data: &[u8]) -> Option<Stamp> {
    let first = *data.first()?;
    let keyframe = first & 0x01 == 0;
    let header = if keyframe {
        KEY_TAG.len()
    } else {
        DELTA_TAG.len()
    };
    let rest = data.get(header..header + 16)?;
    if rest[..4] != MAGIC {
        return None;
    }
    let counter = u32::from_be_bytes(rest[4..8].try_into().ok()?);
    let sent_us = u64::from_be_bytes(rest[8..16].try_into().ok()?);
    Some(Stamp {
        counter,
        sent_us,
        keyframe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn frames_round_trip(counter in any::<u32>(), sent in any::<u64>(), key in any::<bool>(), size in 0usize..20_000) {
            let f = frame(counter, sent, key, size);
            prop_assert!(f.len() >= size);
            prop_assert_eq!(parse(&f), Some(Stamp { counter, sent_us: sent, keyframe: key }));
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&data);
        }
    }

    #[test]
    fn foreign_frames_are_not_ours() {
        assert_eq!(parse(&[0x10; 40]), None);
        assert_eq!(parse(&[]), None);
    }
}
