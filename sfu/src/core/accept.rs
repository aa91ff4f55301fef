//! Answering an offer with a new engine, and adding or removing a session's peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use media_core::sdp;
use media_core::sdp::Kind;
use media_core::sdp_codecs;
use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid};
use str0m::net::TcpType;
use str0m::{Candidate, Rtc};

use super::{Core, CoreOutput};
use crate::ids::PeerId;
use crate::negotiate;
use crate::peer::Peer;
use crate::sink::SinkNotice;
use crate::types::{CloseReason, SfuError, SfuEvent};

/// A simulcast viewer's bandwidth estimator starts here (a low layer's worth) and probes up.
const INITIAL_ESTIMATE_KBPS: u64 = 300;

impl Core {
    /// Answer `offer` with a new engine configured by `plan` (its codecs; its rejected
    /// sections answered with port 0). The answer carries every candidate in every accepted
    /// section and never a payload type without its `a=rtpmap`.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        offer: &str,
        plan: negotiate::Plan,
        bwe: bool,
    ) -> Result<(Rtc, String, String), SfuError> {
        let edited = sdp_codecs::reject_sections(offer, &plan.rejected);
        let parsed =
            SdpOffer::from_sdp_string(&edited).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let codecs = plan.codecs;
        let silent = plan.silent;
        let creds = self.new_ice_creds();
        let ufrag = creds.ufrag.clone();
        let mut builder = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(creds)
            .clear_codecs();
        if bwe {
            builder = builder.enable_bwe(Some(Bitrate::kbps(INITIAL_ESTIMATE_KBPS)));
        }
        *builder.codec_config() = codecs;
        let candidates = self.config.candidates.clone();
        let tcp_candidates = self.config.tcp_candidates.clone();
        let result = catch_unwind(AssertUnwindSafe(move || {
            let mut rtc = builder.build(now);
            for addr in candidates {
                if let Ok(c) = Candidate::host(addr, "udp") {
                    rtc.add_local_candidate(c);
                }
            }
            for addr in tcp_candidates {
                if let Some(c) = passive_tcp_candidate(addr) {
                    rtc.add_local_candidate(c);
                }
            }
            let answer = rtc
                .sdp_api()
                .accept_offer(parsed)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((rtc, answer.to_sdp_string()))
        }));
        match result {
            Ok(Ok((rtc, answer))) => {
                let answer = sdp_codecs::set_inactive(&answer, &silent);
                let answer = sdp::spread_candidates(&sdp_codecs::complete_rejected(&answer, offer));
                let unmapped = sdp_codecs::unmapped_payload_types(&answer);
                if !unmapped.is_empty() {
                    tracing::warn!(?unmapped, "answer would list payload types without rtpmap");
                    return Err(SfuError::CodecMismatch(
                        "no codec of the offer could be matched in every section it wants".into(),
                    ));
                }
                Ok((rtc, answer, ufrag))
            }
            Ok(Err(e)) => Err(SfuError::BadOffer(e)),
            Err(_) => Err(SfuError::BadOffer(
                "the offer could not be negotiated".into(),
            )),
        }
    }

    pub(super) fn insert_peer(&mut self, peer: Peer) {
        let id = peer.id();
        self.routes.add_session(peer.ufrag(), id);
        self.peers.insert(id, peer);
        self.dirty.push_back(id);
        self.drain();
    }

    pub(super) fn remove_peer(&mut self, id: PeerId, reason: CloseReason) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        peer.disconnect();
        // Flush what the engine still wants to send (DTLS close_notify).
        while let Ok(out) = peer.poll_output() {
            match out {
                str0m::Output::Transmit(t) => self.push_transmit(t),
                str0m::Output::Timeout(_) => break,
                str0m::Output::Event(_) => {}
            }
        }
        self.routes.remove_session(peer.ufrag(), id);
        if reason == CloseReason::Failed {
            self.stats.peer_failures += 1;
        }
        if reason == CloseReason::Disconnected {
            self.stats.disconnects += 1;
        }
        let mut went_offline = false;
        let mut sinks = Vec::new();
        let stream_id = peer.stream().clone();
        for slot in peer.slots() {
            if slot.stream != stream_id {
                if let Some(stream) = self.streams.get_mut(&slot.stream) {
                    stream.remove_viewer(id);
                }
                self.drop_idle(&slot.stream);
            }
        }
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            stream.remove_viewer(id);
            if stream.publisher_left(id, self.last_now) {
                went_offline = true;
                sinks.extend(stream.sinks().iter().copied());
            }
            if stream.is_idle() {
                self.streams.remove(&stream_id);
            }
        }
        if reason != CloseReason::Replaced {
            for sink in sinks {
                self.out.push_back(CoreOutput::Notice(
                    sink,
                    SinkNotice::Offline(stream_id.clone()),
                ));
            }
        }
        tracing::info!(peer = %id, stream = %stream_id, ?reason, "session closed");
        self.event(SfuEvent::PeerClosed(id, reason));
        if went_offline && reason != CloseReason::Replaced {
            self.event(SfuEvent::StreamOffline(stream_id));
        }
    }
}

/// A passive ICE-TCP host candidate (RFC 6544): clients connect to it.
pub(super) fn passive_tcp_candidate(addr: SocketAddr) -> Option<Candidate> {
    Candidate::builder()
        .tcp()
        .host(addr)
        .tcptype(TcpType::Passive)
        .build()
        .ok()
}

/// Kind of every audio/video mid of the offer that the answer accepted (port not 0).
pub(super) fn accepted_kinds(offer: &[sdp::MediaSection], answer: &str) -> HashMap<Mid, MediaKind> {
    let answered = sdp::media_sections(answer).unwrap_or_default();
    let mut kinds = HashMap::new();
    for s in offer {
        let kind = match s.kind {
            Kind::Audio => MediaKind::Audio,
            Kind::Video => MediaKind::Video,
            _ => continue,
        };
        let Some(mid) = &s.mid else { continue };
        if answered
            .iter()
            .any(|a| a.mid.as_ref() == Some(mid) && !a.disabled)
        {
            kinds.insert(Mid::from(mid.as_str()), kind);
        }
    }
    kinds
}

/// Video (or audio) codecs configured on an engine.
pub(super) fn entry_codecs(rtc: &Rtc, video: bool) -> Vec<str0m::format::Codec> {
    let mut out = Vec::new();
    for p in rtc.codec_config().params() {
        let c = p.spec().codec;
        if c.is_video() == video && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

pub(super) fn codec_names(codecs: &[str0m::format::Codec]) -> String {
    let names: Vec<String> = codecs.iter().map(|c| c.to_string()).collect();
    names.join("/")
}

/// The payload types the publisher negotiated, to restrict its viewers to them.
pub(super) fn negotiated_params(rtc: &Rtc, kinds: &HashMap<Mid, MediaKind>) -> Vec<PayloadParams> {
    let mut out: Vec<PayloadParams> = Vec::new();
    for mid in kinds.keys() {
        let Some(media) = rtc.media(*mid) else {
            continue;
        };
        for pt in media.remote_pts() {
            if let Some(p) = rtc.codec_config().find(|p| p.pt() == *pt) {
                if !out.iter().any(|o| o.pt() == p.pt()) {
                    out.push(*p);
                }
            }
        }
    }
    out
}

/// The accepted mids of kind `want` the viewer receives on, in offer order.
pub(super) fn mids_of_kind(
    sections: &[sdp::MediaSection],
    kinds: &HashMap<Mid, MediaKind>,
    want: MediaKind,
) -> Vec<Mid> {
    sections
        .iter()
        .filter(|s| s.direction.offerer_receives())
        .filter_map(|s| s.mid.as_deref().map(Mid::from))
        .filter(|m| kinds.get(m) == Some(&want))
        .collect()
}
