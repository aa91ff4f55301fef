//! A viewer's outgoing tracks: how the stream's packets are renumbered and retyped for one
//! viewer, and the write into its engine.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use media_core::rtp::SequenceMap;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Pt};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::Rtc;

use super::layer::ViewerLayer;
use crate::types::PeerBroken;

/// A subscriber's outgoing track (its video or audio m-line).
pub(crate) struct OutTrack {
    mid: Mid,
    seq: SequenceMap,
    /// Publisher payload type -> this viewer's, for the current publisher generation.
    pts: Vec<(u64, Pt, Option<ViewerPt>)>,
    /// The viewer offered RFC 2198 RED for this track.
    red_offered: bool,
}

/// The viewer's payload types for one publisher codec: the main one, and its RED (RFC 2198)
/// payload type when the viewer negotiated redundant audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ViewerPt {
    main: Pt,
    red: Option<Pt>,
}

impl OutTrack {
    /// The track on `mid`, numbering from `first_seq`; `red_offered`: the viewer's offer had
    /// RFC 2198 RED for it.
    pub fn new(mid: Mid, first_seq: u16, red_offered: bool) -> Self {
        Self {
            mid,
            seq: SequenceMap::new(first_seq),
            pts: Vec::new(),
            red_offered,
        }
    }

    pub fn mid(&self) -> Mid {
        self.mid
    }

    /// Someone else is shown on this track: new numbering segment, payload types looked up
    /// afresh (the generation numbers of two streams may coincide).
    pub fn rebind(&mut self) {
        self.seq.restart();
        self.pts.clear();
    }

    /// A cut: the next packet written starts a new segment of this track's numbering.
    pub fn restart(&mut self) {
        self.seq.restart();
    }

    /// The viewer's payload type for the publisher's `params` (looked up once per publisher
    /// generation and payload type).
    fn payload_type(
        &mut self,
        rtc: &Rtc,
        generation: u64,
        params: PayloadParams,
    ) -> Option<ViewerPt> {
        if let Some((_, _, out)) = self
            .pts
            .iter()
            .find(|(g, p, _)| *g == generation && *p == params.pt())
        {
            return *out;
        }
        self.pts.retain(|(g, _, _)| *g == generation);
        // The engine's codec list keeps RED even when the viewer did not offer it: RED counts
        // only if the viewer's offer had it.
        let out = rtc.codec_config().match_params(params).map(|p| ViewerPt {
            main: p.pt(),
            red: p.red().filter(|_| self.red_offered),
        });
        self.pts.push((generation, params.pt(), out));
        out
    }
}

/// What every viewer's copy of a forwarded packet shares.
pub(crate) struct Outgoing<'a> {
    pub generation: u64,
    pub params: PayloadParams,
    pub seq: u64,
    pub time: u32,
    pub wallclock: Instant,
    pub marker: bool,
    pub ext_vals: &'a ExtensionValues,
    pub payload: &'a Arc<[u8]>,
    /// The payload is RFC 2198 RED; `primary` is its primary block for viewers without RED.
    pub red: bool,
    pub primary: Option<Arc<[u8]>>,
}

impl OutTrack {
    /// Hand one packet to the viewer's engine on this track. `layer` (video) rewrites VP8
    /// picture ids to stay continuous across switches. `Ok(false)`: this viewer cannot carry
    /// it (no matching codec, no send stream, or from before its cut).
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        layer: Option<&mut ViewerLayer>,
        out: &Outgoing<'_>,
    ) -> Result<bool, PeerBroken> {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let Some(pts) = self.payload_type(rtc, out.generation, out.params) else {
                return false;
            };
            // RED goes out as RED to viewers that negotiated it, as its primary block to others.
            let (pt, payload) = match (out.red, pts.red, &out.primary) {
                (false, _, _) => (pts.main, out.payload.clone()),
                (true, Some(red), _) => (red, out.payload.clone()),
                (true, None, Some(primary)) => (pts.main, primary.clone()),
                (true, None, None) => return false,
            };
            let Some(seq) = self.seq.map(out.generation, out.seq) else {
                return false; // from before this viewer's cut: its number is taken
            };
            let codec = out.params.spec().codec;
            let patch = match layer {
                Some(l) if codec == Codec::Vp8 => l.vp8_patch(out.payload),
                _ => None,
            };
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(self.mid, None) else {
                return false;
            };
            let mut write = RtpWrite::new(pt, seq.into(), out.time, out.wallclock, payload)
                .marker(out.marker)
                .ext_vals(out.ext_vals.clone())
                .nackable(codec.is_video());
            if let Some(patch) = patch {
                write = write.vp8_patch(patch);
            }
            tx.write_rtp(write);
            true
        }));
        result.map_err(|_| {
            tracing::error!("engine panicked on write; closing peer");
            PeerBroken
        })
    }
}
