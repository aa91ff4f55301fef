//! Continuous VP8 picture ids across source changes (simulcast layer switches, publisher
//! reconnects).
//!
//! The VP8 payload descriptor (RFC 7741 section 4.2) numbers pictures (PictureID, 7 or 15 bits)
//! and base-layer pictures (TL0PICIDX, 8 bits). Each simulcast layer has its own numbering, so a
//! viewer moved from one layer to another would see the ids jump, and a decoder that uses them
//! for loss detection (libwebrtc does) takes the jump for lost frames. Like
//! [`crate::rtp::SequenceMap`] for sequence numbers, this map shifts every source by a constant
//! so the viewer's ids continue by one across a switch.

/// The picture-id rewrite for one viewer's VP8 track.
#[derive(Debug, Clone, Default)]
pub struct PictureIdMap {
    /// Offset added to the source's picture id and TL0PICIDX (modular), once a source started.
    offset: Option<(u16, u8)>,
    /// The last ids sent (after rewriting).
    last: Option<(u16, u8)>,
}

/// The ids to put in one packet's descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// PictureID, in the same width (7 or 15 bits) as the source's.
    pub picture_id: u16,
    /// TL0PICIDX, if the source has one.
    pub tl0_pic_idx: Option<u8>,
    /// Whether anything differs from the source (no patch needed when false).
    pub changed: bool,
}

impl PictureIdMap {
    /// A map whose first source passes through unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next packet comes from a new source (a layer switch): its first picture continues
    /// right after the last picture sent.
    pub fn restart(&mut self) {
        self.offset = None;
    }

    /// Rewrite the ids of one packet. `picture_id` is the source's (with `wide` telling 15-bit
    /// from 7-bit), `tl0` its TL0PICIDX if present.
    pub fn map(&mut self, picture_id: u16, wide: bool, tl0: Option<u8>) -> Rewritten {
        let modulus: u16 = if wide { 0x8000 } else { 0x80 };
        let picture_id = picture_id % modulus;
        let (pic_off, tl0_off) = match self.offset {
            Some(o) => o,
            None => {
                let o = match self.last {
                    // Nothing sent yet: pass the first source through.
                    None => (0, 0),
                    Some((last_pic, last_tl0)) => {
                        let next_pic = (last_pic + 1) % modulus;
                        let pic_off = (next_pic + modulus - picture_id) % modulus;
                        let tl0_off = tl0.map_or(0, |t| last_tl0.wrapping_add(1).wrapping_sub(t));
                        (pic_off, tl0_off)
                    }
                };
                self.offset = Some(o);
                o
            }
        };
        let out_pic = (picture_id + pic_off) % modulus;
        let out_tl0 = tl0.map(|t| t.wrapping_add(tl0_off));
        let last_tl0 = out_tl0.or(self.last.map(|l| l.1)).unwrap_or(0);
        self.last = Some((out_pic, last_tl0));
        Rewritten {
            picture_id: out_pic,
            tl0_pic_idx: out_tl0,
            changed: pic_off != 0 || (tl0.is_some() && tl0_off != 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_first_source_passes_through() {
        let mut m = PictureIdMap::new();
        let r = m.map(1234, true, Some(7));
        assert_eq!(
            (r.picture_id, r.tl0_pic_idx, r.changed),
            (1234, Some(7), false)
        );
    }

    #[test]
    fn a_switch_continues_the_numbering_by_one() {
        let mut m = PictureIdMap::new();
        m.map(100, true, Some(10));
        m.map(101, true, Some(11));
        m.restart();
        let r = m.map(9_000, true, Some(200));
        assert_eq!((r.picture_id, r.tl0_pic_idx), (102, Some(12)));
        assert!(r.changed);
        // Packets of the same picture and the next ones keep the offset.
        assert_eq!(m.map(9_000, true, Some(200)).picture_id, 102);
        assert_eq!(m.map(9_001, true, Some(201)).picture_id, 103);
    }

    #[test]
    fn wraps_in_the_sources_width() {
        let mut m = PictureIdMap::new();
        m.map(0x7fff, true, None);
        m.restart();
        assert_eq!(m.map(5, true, None).picture_id, 0);
        let mut short = PictureIdMap::new();
        short.map(0x7f, false, Some(255));
        short.restart();
        let r = short.map(3, false, Some(9));
        assert_eq!((r.picture_id, r.tl0_pic_idx), (0, Some(0)));
    }

    proptest! {
        #[test]
        fn after_any_switch_ids_continue_by_one(
            sources in proptest::collection::vec((0u16..0x8000, any::<u8>(), 1usize..20), 1..10)
        ) {
            let mut m = PictureIdMap::new();
            let mut last: Option<(u16, u8)> = None;
            for (start, tl0, pictures) in sources {
                m.restart();
                for i in 0..pictures {
                    let pic = (start as usize + i) as u16 % 0x8000;
                    let r = m.map(pic, true, Some(tl0.wrapping_add(i as u8)));
                    if let Some((lp, lt)) = last {
                        prop_assert_eq!(r.picture_id, (lp + 1) % 0x8000);
                        prop_assert_eq!(r.tl0_pic_idx, Some(lt.wrapping_add(1)));
                    }
                    last = Some((r.picture_id, r.tl0_pic_idx.unwrap()));
                }
            }
        }
    }
}
