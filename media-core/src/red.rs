//! RFC 2198 redundant audio (RED), as browsers send Opus: the primary encoding of a packet,
//! for viewers that did not negotiate RED.
//!
//! A RED payload is a chain of block headers (4 bytes each: F=1, block payload type, timestamp
//! offset, block length; the last one 1 byte: F=0, payload type), then the redundant blocks in
//! order, then the primary block, which takes the rest of the payload.

/// The primary block of a RED payload: its payload type and bytes. `None` for a payload that
/// is not well-formed RED (truncated headers, block lengths beyond the payload).
pub fn primary(payload: &[u8]) -> Option<(u8, &[u8])> {
    let mut at = 0usize;
    let mut redundant = 0usize;
    // At most one header per byte: bounded by the payload length.
    loop {
        let first = *payload.get(at)?;
        if first & 0x80 == 0 {
            let pt = first & 0x7f;
            let start = at + 1 + redundant;
            return payload.get(start..).map(|p| (pt, p));
        }
        let header = payload.get(at..at + 4)?;
        let length = (usize::from(header[2] & 0x03) << 8) | usize::from(header[3]);
        redundant += length;
        at += 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_primary_block_follows_the_redundant_ones() {
        // One redundant block of 3 bytes (pt 111, offset 960), then primary pt 111.
        let mut p = vec![
            0x80 | 111,
            (960u16 >> 6) as u8,
            ((960u16 & 0x3f) << 2) as u8,
            3,
        ];
        p.push(111);
        p.extend_from_slice(&[9, 9, 9]); // redundant
        p.extend_from_slice(&[1, 2, 3, 4]); // primary
        assert_eq!(primary(&p), Some((111, &[1u8, 2, 3, 4][..])));
    }

    #[test]
    fn a_payload_with_only_the_primary_header_is_all_primary() {
        assert_eq!(primary(&[111, 7, 7]), Some((111, &[7u8, 7][..])));
    }

    #[test]
    fn truncated_red_is_rejected() {
        assert_eq!(primary(&[]), None);
        assert_eq!(primary(&[0x80 | 111, 0, 0]), None);
        // Declares a 200-byte redundant block in a 6-byte payload.
        assert_eq!(primary(&[0x80 | 111, 0, 0, 200, 111, 1]), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some((_, p)) = primary(&bytes) {
                prop_assert!(p.len() <= bytes.len());
            }
        }
    }
}
