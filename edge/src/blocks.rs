//! Track-id blocks of one relay connection (sans-IO). Each subscribed live channel holds a
//! block of [`TRACK_BLOCK`] consecutive datagram track ids. Blocks come from a free list and go
//! back to it on unsubscribe, so ids never wrap into a block another channel still holds; a
//! freed block is reused last (oldest freed first, after every never-used block), so datagrams
//! of the old channel still in flight find no new owner; and a connection holds at most
//! `max` channels.

use std::collections::{HashMap, VecDeque};

use sfu::StreamId;

use crate::upstream::TRACK_BLOCK;

/// Blocks in the whole `u16` id space.
pub const BLOCKS: usize = (u16::MAX as usize + 1) / TRACK_BLOCK as usize;

/// Why a block was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this relay connection already holds {0} channels")]
pub struct TooMany(pub usize);

/// The blocks of one connection.
#[derive(Debug)]
pub struct TrackBlocks {
    by_stream: HashMap<StreamId, u16>,
    /// Never-used blocks start here.
    next_fresh: usize,
    /// Freed blocks, oldest first.
    freed: VecDeque<u16>,
    max: usize,
}

impl TrackBlocks {
    /// At most `max` channels at once (capped at the id space).
    pub fn new(max: usize) -> Self {
        Self {
            by_stream: HashMap::new(),
            next_fresh: 0,
            freed: VecDeque::new(),
            max: max.min(BLOCKS),
        }
    }

    /// The first id of `stream`'s block, allocating one if it has none.
    pub fn assign(&mut self, stream: &StreamId) -> Result<u16, TooMany> {
        if let Some(base) = self.by_stream.get(stream) {
            return Ok(*base);
        }
        if self.by_stream.len() >= self.max {
            return Err(TooMany(self.max));
        }
        let base = if self.next_fresh < BLOCKS {
            let b = (self.next_fresh * TRACK_BLOCK as usize) as u16;
            self.next_fresh += 1;
            b
        } else {
            // Every block was used once: reuse the one freed longest ago. There is one, as
            // fewer than BLOCKS are held.
            self.freed.pop_front().ok_or(TooMany(self.max))?
        };
        self.by_stream.insert(stream.clone(), base);
        Ok(base)
    }

    /// `stream`'s block, if it holds one.
    pub fn base(&self, stream: &StreamId) -> Option<u16> {
        self.by_stream.get(stream).copied()
    }

    /// Give `stream`'s block back; its first id.
    pub fn release(&mut self, stream: &StreamId) -> Option<u16> {
        let base = self.by_stream.remove(stream)?;
        self.freed.push_back(base);
        Some(base)
    }

    /// The stream whose block holds `track`, and the track's index inside the block.
    pub fn lookup(&self, track: u16) -> Option<(StreamId, u16)> {
        let base = track - track % TRACK_BLOCK;
        self.by_stream
            .iter()
            .find(|(_, b)| **b == base)
            .map(|(s, _)| (s.clone(), track - base))
    }

    /// Every channel holding a block, with its first id.
    pub fn held(&self) -> Vec<(StreamId, u16)> {
        self.by_stream
            .iter()
            .map(|(s, b)| (s.clone(), *b))
            .collect()
    }

    /// Channels holding a block.
    pub fn len(&self) -> usize {
        self.by_stream.len()
    }

    /// No channel holds a block.
    pub fn is_empty(&self) -> bool {
        self.by_stream.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn s(n: u32) -> StreamId {
        StreamId::new(&format!("c{n}")).unwrap()
    }

    #[test]
    fn more_subscriptions_than_the_id_space_never_share_a_block() {
        // The old counter wrapped after 8,192 blocks: channel 8,192 got channel 0's ids.
        let mut b = TrackBlocks::new(1024);
        let live_a = b.assign(&s(1_000_000)).unwrap();
        let live_b = b.assign(&s(1_000_001)).unwrap();
        for n in 0..20_000 {
            let junk = s(n);
            let base = b.assign(&junk).unwrap();
            assert_ne!(base, live_a);
            assert_ne!(base, live_b);
            b.release(&junk);
        }
        assert_ne!(live_a, live_b);
        assert_eq!(b.lookup(live_a + 3), Some((s(1_000_000), 3)));
        assert_eq!(b.lookup(live_b), Some((s(1_000_001), 0)));
    }

    #[test]
    fn a_connection_holds_at_most_its_cap() {
        let mut b = TrackBlocks::new(3);
        for n in 0..3 {
            b.assign(&s(n)).unwrap();
        }
        assert_eq!(b.assign(&s(9)), Err(TooMany(3)));
        assert_eq!(
            b.assign(&s(1)),
            Ok(TRACK_BLOCK),
            "a held channel keeps its block"
        );
        b.release(&s(0));
        assert!(b.assign(&s(9)).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_two_held_channels_share_an_id_over_long_sequences(
            ops in proptest::collection::vec((any::<bool>(), 0u32..40), 1..30_000)
        ) {
            let mut b = TrackBlocks::new(32);
            let mut held: HashSet<u32> = HashSet::new();
            for (subscribe, n) in ops {
                if subscribe {
                    match b.assign(&s(n)) {
                        Ok(_) => { held.insert(n); }
                        Err(TooMany(_)) => prop_assert!(held.len() >= 32),
                    }
                } else if b.release(&s(n)).is_some() {
                    held.remove(&n);
                }
                prop_assert_eq!(b.len(), held.len());
            }
            let mut bases = HashSet::new();
            for n in &held {
                let base = b.base(&s(*n)).unwrap();
                prop_assert_eq!(base % TRACK_BLOCK, 0);
                prop_assert!(bases.insert(base), "block {} held twice", base);
                for i in 0..TRACK_BLOCK {
                    prop_assert_eq!(b.lookup(base + i), Some((s(*n), i)));
                }
            }
        }
    }
}
