//! RTP fixed-header parsing and in-place rewriting (RFC 3550 section 5.1, RFC 8285).
//!
//! SRTP (RFC 3711) encrypts only the payload: the RTP header of an SRTP packet is readable on
//! the wire, so the load generator can count sequence numbers of what it receives without
//! decrypting, and a forwarder working at packet level rewrites sequence number, timestamp and
//! SSRC in place before protecting the packet for each subscriber. Both run per packet, so the
//! parser is zero-copy and allocation-free, and total over any bytes.

use thiserror::Error;

/// Why a datagram is not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header, or than the CSRC list/extension it announces.
    #[error("rtp packet truncated")]
    Truncated,
    /// The version field is not 2.
    #[error("rtp version is not 2")]
    BadVersion,
    /// RTCP packet types 192..=223 share the first byte with RTP (RFC 5761 section 4).
    #[error("an rtcp packet, not rtp")]
    Rtcp,
}

/// A parsed view of an RTP header. Offsets refer to the slice it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit: the last packet of a video frame.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Number of CSRCs.
    pub csrc_count: u8,
    /// The header extension profile (`0xBEDE` one-byte, `0x1000` two-byte), when present.
    pub extension_profile: Option<u16>,
    /// Where the payload starts: fixed header + CSRCs + extension.
    pub payload_offset: usize,
    /// Padding bytes at the end (the P bit), counted in the packet length.
    pub padding: usize,
}

impl RtpHeader {
    /// Parse the header of `packet`. Never panics; rejects RTCP by payload type.
    pub fn parse(packet: &[u8]) -> Result<Self, RtpError> {
        if packet.len() < 12 {
            return Err(RtpError::Truncated);
        }
        let b0 = packet[0];
        if b0 >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let b1 = packet[1];
        if (192..=223).contains(&b1) {
            return Err(RtpError::Rtcp);
        }
        let csrc_count = b0 & 0x0f;
        let mut offset = 12 + 4 * usize::from(csrc_count);
        let mut extension_profile = None;
        if b0 & 0x10 != 0 {
            let ext = packet.get(offset..offset + 4).ok_or(RtpError::Truncated)?;
            extension_profile = Some(u16::from_be_bytes([ext[0], ext[1]]));
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            offset += 4 + 4 * words;
        }
        if offset > packet.len() {
            return Err(RtpError::Truncated);
        }
        let mut padding = 0;
        if b0 & 0x20 != 0 {
            padding = usize::from(*packet.last().ok_or(RtpError::Truncated)?);
            if padding == 0 || offset + padding > packet.len() {
                return Err(RtpError::Truncated);
            }
        }
        Ok(Self {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            csrc_count,
            extension_profile,
            payload_offset: offset,
            padding,
        })
    }

    /// The payload of `packet` (which this header was parsed from), padding excluded.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        let end = packet.len().saturating_sub(self.padding);
        packet.get(self.payload_offset..end).unwrap_or(&[])
    }
}

/// New values for the fields a forwarder changes per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// Payload type negotiated with the subscriber.
    pub payload_type: u8,
    /// Continuous sequence number of the subscriber's stream.
    pub sequence: u16,
    /// Rebased timestamp (see [`crate::timeline::Rebaser`]).
    pub timestamp: u32,
    /// The subscriber-facing SSRC.
    pub ssrc: u32,
}

/// Rewrite payload type, sequence number, timestamp and SSRC of an RTP packet in place.
/// The marker bit, CSRCs, extensions and payload are untouched.
pub fn rewrite(packet: &mut [u8], to: Rewrite) -> Result<(), RtpError> {
    RtpHeader::parse(packet)?;
    packet[1] = (packet[1] & 0x80) | (to.payload_type & 0x7f);
    packet[2..4].copy_from_slice(&to.sequence.to_be_bytes());
    packet[4..8].copy_from_slice(&to.timestamp.to_be_bytes());
    packet[8..12].copy_from_slice(&to.ssrc.to_be_bytes());
    Ok(())
}

/// Counts RTP packets of one SSRC by sequence number and reports gaps: the receiver's view of
/// loss (RFC 3550 appendix A.3), with 16-bit wrap-around handled by extension.
#[derive(Debug, Clone, Default)]
pub struct SequenceCounter {
    base: Option<u64>,
    highest: u64,
    received: u64,
}

impl SequenceCounter {
    /// Record a received sequence number.
    pub fn record(&mut self, sequence: u16) {
        let Some(_) = self.base else {
            self.base = Some(u64::from(sequence));
            self.highest = u64::from(sequence);
            self.received = 1;
            return;
        };
        // Extend to 64 bits relative to the highest seen (the closest candidate wins).
        let cycle = self.highest & !0xffff;
        let candidates = [
            cycle.wrapping_sub(0x1_0000) | u64::from(sequence),
            cycle | u64::from(sequence),
            (cycle + 0x1_0000) | u64::from(sequence),
        ];
        let extended = candidates
            .into_iter()
            .filter(|c| *c <= self.highest + 0x8000)
            .min_by_key(|c| c.abs_diff(self.highest))
            .unwrap_or(self.highest);
        self.highest = self.highest.max(extended);
        self.received += 1;
    }

    /// Packets expected from the first to the highest sequence number seen.
    pub fn expected(&self) -> u64 {
        self.base.map_or(0, |b| self.highest.saturating_sub(b) + 1)
    }

    /// Packets received (duplicates included, as in RFC 3550).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Expected but never received.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }
}

/// Maps a forwarded stream's extended sequence numbers onto one continuous outgoing sequence
/// for one subscriber: the first packet of a source continues right after the last packet sent,
/// and within a source numbers shift by a constant, so reordering and gaps (which the
/// subscriber may NACK) are preserved.
///
/// Each source (or restart) opens a segment. A packet numbered before its segment's first is
/// placed only if it falls inside the previous segment (a repair of a hole the subscriber
/// already saw, which lands in that hole); any other is refused (`None`), since its number
/// would collide with one already sent. Found by the relay loss test: a NACK repair that
/// arrived after a viewer jumped to a fresh keyframe was numbered into the new segment, the
/// hole stayed open, and an aiortc viewer's jitter buffer (512 packets) froze on it.
#[derive(Debug, Clone)]
pub struct SequenceMap {
    current: Option<Segment>,
    previous: Option<Segment>,
    restarting: bool,
    next: u64,
}

/// One source's stretch of a [`SequenceMap`]: output = input + `offset`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    generation: u64,
    offset: i128,
    /// The first and highest input numbers mapped.
    first: u64,
    high: u64,
}

impl Segment {
    fn place(&self, seq: u64) -> u64 {
        (i128::from(seq) + self.offset).clamp(0, i128::from(u64::MAX)) as u64
    }
}

impl SequenceMap {
    /// A map whose first output is `first` (pick it below 2^15 so the first packets never carry
    /// a rollover counter the receiver does not know).
    pub fn new(first: u16) -> Self {
        Self {
            current: None,
            previous: None,
            restarting: false,
            next: u64::from(first),
        }
    }

    /// The outgoing sequence number for `seq` (extended) of source `generation`, or `None` for
    /// a packet from before the current segment that has no place in the outgoing sequence.
    pub fn map(&mut self, generation: u64, seq: u64) -> Option<u64> {
        // Into the previous segment's own holes only (a late packet of the source before, or
        // of this source from before a restart).
        let in_previous =
            |p: &Segment| p.generation == generation && (p.first..=p.high).contains(&seq);
        let current = self.current.map(|c| c.generation);
        let previous = self.previous.map(|p| p.generation);
        let out = match self.current.as_mut() {
            Some(c) if c.generation == generation && !self.restarting => {
                if seq < c.first {
                    return self.previous.filter(in_previous).map(|p| p.place(seq));
                }
                c.high = c.high.max(seq);
                c.place(seq)
            }
            _ if current != Some(generation) && previous == Some(generation) => {
                return self.previous.filter(in_previous).map(|p| p.place(seq));
            }
            _ => self.open(generation, seq),
        };
        self.next = self.next.max(out.saturating_add(1));
        Some(out)
    }

    fn open(&mut self, generation: u64, seq: u64) -> u64 {
        if let Some(c) = self.current.take() {
            self.previous = Some(c);
        }
        self.restarting = false;
        let segment = Segment {
            generation,
            offset: i128::from(self.next) - i128::from(seq),
            first: seq,
            high: seq,
        };
        self.current = Some(segment);
        segment.place(seq)
    }

    /// Start over at the next packet (a viewer that restarts on a keyframe after a pause):
    /// what was skipped is not presented as loss.
    pub fn restart(&mut self) {
        self.restarting = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(seq: u16, ts: u32, ssrc: u32, ext_words: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80 | if ext_words > 0 { 0x10 } else { 0 }, 0x80 | 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        if ext_words > 0 {
            p.extend_from_slice(&[0xBE, 0xDE]);
            p.extend_from_slice(&ext_words.to_be_bytes());
            p.extend(std::iter::repeat_n(0u8, 4 * usize::from(ext_words)));
        }
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn parses_fields_extension_and_payload() {
        let p = packet(7, 90_000, 0xdead_beef, 2, b"frame");
        let h = RtpHeader::parse(&p).unwrap();
        assert!(h.marker);
        assert_eq!((h.payload_type, h.sequence, h.timestamp), (96, 7, 90_000));
        assert_eq!(h.ssrc, 0xdead_beef);
        assert_eq!(h.extension_profile, Some(0xBEDE));
        assert_eq!(h.payload(&p), b"frame");
    }

    #[test]
    fn rtcp_and_short_packets_are_refused() {
        let mut rr = vec![0x81, 201, 0, 1];
        rr.extend_from_slice(&[0; 8]);
        assert_eq!(RtpHeader::parse(&rr), Err(RtpError::Rtcp));
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::Truncated));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(RtpError::BadVersion));
        let mut bad_ext = packet(1, 1, 1, 3, b"");
        bad_ext.truncate(20);
        assert_eq!(RtpHeader::parse(&bad_ext), Err(RtpError::Truncated));
    }

    #[test]
    fn rewrite_changes_only_the_forwarded_fields() {
        let mut p = packet(7, 90_000, 1, 1, b"payload");
        let before = p.clone();
        let to = Rewrite {
            payload_type: 100,
            sequence: 65_535,
            timestamp: 3_000,
            ssrc: 42,
        };
        rewrite(&mut p, to).unwrap();
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            (h.payload_type, h.sequence, h.timestamp, h.ssrc),
            (100, 65_535, 3_000, 42)
        );
        assert!(h.marker, "marker bit kept");
        assert_eq!(p[12..], before[12..], "extension and payload untouched");
    }

    #[test]
    fn sequence_map_is_continuous_across_sources_and_keeps_reordering() {
        let mut m = SequenceMap::new(100);
        assert_eq!(m.map(1, 5_000), Some(100));
        assert_eq!(m.map(1, 5_002), Some(102), "a gap stays a gap");
        assert_eq!(m.map(1, 5_001), Some(101), "reordering is kept");
        // A new publisher with its own numbering continues after the highest sent.
        assert_eq!(m.map(2, 70_000), Some(103));
        assert_eq!(m.map(2, 70_001), Some(104));
        m.restart();
        assert_eq!(
            m.map(2, 90_000),
            Some(105),
            "a restart skips nothing visible"
        );
    }

    #[test]
    fn a_repair_that_arrives_after_a_restart_fills_its_own_hole() {
        let mut m = SequenceMap::new(100);
        assert_eq!(m.map(1, 10), Some(100));
        assert_eq!(m.map(1, 12), Some(102), "11 is lost on the way");
        // The viewer jumps to a keyframe at 20 (13..19 skipped).
        m.restart();
        assert_eq!(m.map(1, 20), Some(103));
        assert_eq!(
            m.map(1, 11),
            Some(101),
            "the repair lands in the hole it left"
        );
        assert_eq!(
            m.map(1, 15),
            None,
            "skipped, never placed: its number is taken"
        );
        assert_eq!(m.map(1, 19), None);
        assert_eq!(m.map(1, 9), None, "before anything this viewer saw");
        assert_eq!(m.map(1, 21), Some(104), "the new segment goes on");
    }

    #[test]
    fn a_late_packet_of_the_old_source_does_not_renumber_the_new_one() {
        let mut m = SequenceMap::new(100);
        assert_eq!(m.map(1, 10), Some(100));
        assert_eq!(m.map(1, 12), Some(102));
        assert_eq!(m.map(2, 500), Some(103));
        assert_eq!(m.map(1, 11), Some(101), "its own hole");
        assert_eq!(m.map(1, 13), None, "past the old source's end");
        assert_eq!(
            m.map(2, 501),
            Some(104),
            "the new source keeps its numbering"
        );
    }

    #[test]
    fn sequence_counter_sees_gaps_across_wraparound() {
        let mut c = SequenceCounter::default();
        for s in (65_530u16..=65_535).chain(0..5) {
            if s != 2 && s != 65_533 {
                c.record(s);
            }
        }
        assert_eq!(c.expected(), 11);
        assert_eq!(c.received(), 9);
        assert_eq!(c.lost(), 2);
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = RtpHeader::parse(&data);
            let mut d = data.clone();
            let _ = rewrite(&mut d, Rewrite { payload_type: 1, sequence: 2, timestamp: 3, ssrc: 4 });
        }

        #[test]
        // Payload types 64..=95 are not used with RTCP multiplexing (RFC 5761 section 4).
        fn rewrite_round_trips(seq in any::<u16>(), ts in any::<u32>(), ssrc in any::<u32>(), pt in prop_oneof![0u8..64, 96u8..128], ext in 0u16..4) {
            let mut p = packet(1, 2, 3, ext, b"xyz");
            rewrite(&mut p, Rewrite { payload_type: pt, sequence: seq, timestamp: ts, ssrc }).unwrap();
            let h = RtpHeader::parse(&p).unwrap();
            prop_assert_eq!((h.payload_type, h.sequence, h.timestamp, h.ssrc), (pt, seq, ts, ssrc));
            prop_assert_eq!(h.payload(&p), b"xyz");
        }

        #[test]
        fn counter_counts_in_order_runs(start in any::<u16>(), len in 1u16..3000, drop_every in 2u16..50) {
            let mut c = SequenceCounter::default();
            let mut dropped = 0u64;
            for i in 0..len {
                if i != 0 && i != len - 1 && i % drop_every == 0 {
                    dropped += 1;
                    continue;
                }
                c.record(start.wrapping_add(i));
            }
            prop_assert_eq!(c.expected(), u64::from(len));
            prop_assert_eq!(c.lost(), dropped);
        }
    }
}
