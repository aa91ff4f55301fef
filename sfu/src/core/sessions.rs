//! Sessions: accepting publishers and viewers, trickle and ICE restarts, closing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use media_core::sdp::{self, Kind};
use media_core::sdp_codecs;
use str0m::media::MediaKind;
use str0m::{Candidate, IceCreds};

use super::accept::{
    accepted_kinds, codec_names, entry_codecs, mids_of_kind, negotiated_params,
    passive_tcp_candidate,
};
use super::Core;
use crate::ids::{PeerId, StreamId};
use crate::negotiate;
use crate::peer::{Peer, Role, Slot};
use crate::stream::Stream;
use crate::types::{
    CloseReason, IceRestarted, Pin, Published, Sections, SfuError, SubscribeOptions, Subscribed,
};
use crate::viewer::{OutTrack, Viewer, ViewerLayer};

impl Core {
    /// Accept a WHIP offer for `stream`. A live publisher on the same stream is replaced.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: StreamId,
        offer: &str,
    ) -> Result<Published, SfuError> {
        let sections = sdp::media_sections(offer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let sending = sections
            .iter()
            .filter(|m| {
                !m.disabled
                    && matches!(m.kind, Kind::Audio | Kind::Video)
                    && m.direction.offerer_sends()
            })
            .count();
        if sending == 0 {
            return Err(SfuError::Unusable(
                "a WHIP offer must send audio or video (sendonly)".into(),
            ));
        }
        // A reconnecting publisher takes its predecessor's place: it needs no extra room.
        let replacing = self
            .streams
            .get(&stream)
            .is_some_and(|s| s.publisher().is_some());
        if !replacing {
            self.admit()?;
        }
        let plan = negotiate::publisher_plan(&sections, &sdp_codecs::section_formats(offer))?;
        let (rtc, answer, ufrag) = self.accept(now, offer, plan, false)?;
        let kinds = accepted_kinds(&sections, &answer);
        if kinds.is_empty() {
            return Err(SfuError::Unusable(
                "no offered codec is supported (H264, VP8, VP9, AV1, Opus)".into(),
            ));
        }
        let params = negotiated_params(&rtc, &kinds);

        let id = self.alloc_id();
        let interval = self.config.keyframe_request_interval;
        let entry = self
            .streams
            .entry(stream.clone())
            .or_insert_with(|| Stream::new(interval));
        let simulcast = sections
            .iter()
            .any(|m| m.kind == Kind::Video && m.simulcast && !m.disabled);
        // A local publisher also takes over a stream a feed was feeding.
        let (replaced, generation) = entry.publish(id, params, simulcast);
        let subscribers: Vec<PeerId> = entry.viewers().iter().copied().collect();

        let role = Role::Publisher { generation };
        self.insert_peer(Peer::new(id, stream.clone(), role, ufrag, rtc, kinds, now));
        if let Some(old) = replaced {
            tracing::info!(stream = %stream, old = %old, new = %id, "publisher replaced");
            self.remove_peer(old, CloseReason::Replaced);
        }
        self.source_changed(&stream, &subscribers);
        self.announce_to_sinks(&stream);
        tracing::info!(stream = %stream, peer = %id, "publisher accepted");
        Ok(Published {
            peer: id,
            answer,
            replaced,
        })
    }

    /// Accept a WHEP offer for `stream` and the streams of `options.also` (a stage: its
    /// participants). The first live one of them is the session's stream and goes into the
    /// offer's first video and first audio section, the next live one into the second of each,
    /// and so on; streams beyond the offer's sections are left out, sections beyond the
    /// streams stay silent. None live: `Offline`. A viewer of a simulcast stream gets a
    /// bandwidth estimator (TWCC) that drives its layer unless `options.layer` pins one.
    pub fn subscribe_with(
        &mut self,
        now: Instant,
        stream: StreamId,
        offer: &str,
        options: SubscribeOptions,
    ) -> Result<Subscribed, SfuError> {
        let sections = sdp::media_sections(offer).map_err(|e| SfuError::BadOffer(e.to_string()))?;
        let receiving = sections.iter().any(|m| {
            !m.disabled
                && matches!(m.kind, Kind::Audio | Kind::Video)
                && m.direction.offerer_receives()
        });
        if !receiving {
            return Err(SfuError::Unusable(
                "a WHEP offer must receive audio or video (recvonly)".into(),
            ));
        }
        let mut watched: Vec<StreamId> = Vec::new();
        for s in std::iter::once(&stream).chain(&options.also) {
            if !watched.contains(s) && self.streams.get(s).is_some_and(Stream::is_live) {
                watched.push(s.clone());
            }
        }
        if watched.is_empty() {
            return Err(SfuError::Offline(stream));
        }
        let wants = |k: Kind| {
            sections
                .iter()
                .filter(|m| m.kind == k && !m.disabled && m.direction.offerer_receives())
                .count()
        };
        // One stream per section pair: those beyond the offer's sections are not negotiated.
        watched.truncate(wants(Kind::Video).max(wants(Kind::Audio)).max(1));
        let entries: Vec<&Stream> = watched.iter().filter_map(|s| self.streams.get(s)).collect();
        let params: Vec<_> = entries
            .iter()
            .flat_map(|e| e.params().iter().copied())
            .collect();
        // A session with more than one section pair is a stage's: a participant who arrives
        // later may send another codec, so every format the viewer offers that can be
        // forwarded is negotiated (`bind`).
        let open = options.open || wants(Kind::Video) > 1 || wants(Kind::Audio) > 1;
        let formats = sdp_codecs::section_formats(offer);
        let plan = negotiate::viewer_plan(&sections, &formats, &params, open)?;
        let has_video = params.iter().any(|p| p.spec().codec.is_video());
        let has_audio = params.iter().any(|p| p.spec().codec.is_audio());
        let simulcast = entries.iter().any(|e| e.simulcast());
        self.admit()?;
        let (rtc, answer, ufrag) = self.accept(now, offer, plan, simulcast)?;
        let kinds = accepted_kinds(&sections, &answer);
        let video_mids = mids_of_kind(&sections, &kinds, MediaKind::Video);
        let audio_mids = mids_of_kind(&sections, &kinds, MediaKind::Audio);
        if has_video && wants(Kind::Video) > 0 && video_mids.is_empty() {
            return Err(SfuError::CodecMismatch(format!(
                "the stream's video codec is {}; the viewer offered none that matches",
                codec_names(&entry_codecs(&rtc, true))
            )));
        }
        if has_audio && wants(Kind::Audio) > 0 && audio_mids.is_empty() {
            return Err(SfuError::CodecMismatch(
                "the stream's audio is Opus; the viewer did not offer it".into(),
            ));
        }
        if video_mids.is_empty() && audio_mids.is_empty() {
            return Err(SfuError::CodecMismatch(
                "the viewer supports none of the stream's codecs".into(),
            ));
        }
        let id = self.alloc_id();
        let mut video: Vec<OutTrack> = Vec::with_capacity(video_mids.len());
        for mid in video_mids {
            video.push(OutTrack::new(mid, (self.random() & 0x3fff) as u16, false));
        }
        let mut audio: Vec<OutTrack> = Vec::with_capacity(audio_mids.len());
        for mid in audio_mids {
            let red = sdp::offers_codec(offer, &mid.to_string(), "red/48000");
            audio.push(OutTrack::new(mid, (self.random() & 0x3fff) as u16, red));
        }
        let mut slots = Vec::with_capacity(watched.len());
        for stream in &watched {
            let v = (!video.is_empty()).then(|| video.remove(0));
            let a = (!audio.is_empty()).then(|| audio.remove(0));
            if v.is_none() && a.is_none() {
                break;
            }
            let viewer = Viewer::new(v, a, ViewerLayer::new(options.layer), now);
            slots.push(Slot {
                stream: stream.clone(),
                viewer,
            });
        }
        let primary = watched[0].clone();
        for slot in &slots {
            if let Some(s) = self.streams.get_mut(&slot.stream) {
                s.add_viewer(id);
            }
        }
        let shown: Vec<String> = slots.iter().map(|s| s.stream.to_string()).collect();
        let peer = Peer::new(
            id,
            primary.clone(),
            Role::Subscriber,
            ufrag,
            rtc,
            kinds,
            now,
        );
        let order = sections
            .iter()
            .filter_map(|m| m.mid.as_deref().map(str0m::media::Mid::from))
            .collect();
        self.insert_peer(peer.with_slots(slots, (video, audio), order));
        tracing::info!(stream = %primary, peer = %id, layer = options.layer.as_str(), slots = ?shown, "subscriber accepted");
        Ok(Subscribed { peer: id, answer })
    }

    /// Show `stream` on `peer`'s first free video and/or audio section (`sections`): a stage
    /// participant who went live after the session started, or a one-section viewer's
    /// featured participant or mix. `Ok(false)`: shown already, no free section, not live, or
    /// a codec the session did not negotiate; a publishing session is `Unusable`.
    pub fn bind(
        &mut self,
        peer: PeerId,
        stream: &StreamId,
        sections: Sections,
    ) -> Result<bool, SfuError> {
        let now = self.last_now;
        if !self.can_show(peer, stream, sections)? {
            return Ok(false);
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err(SfuError::UnknownPeer);
        };
        let pin = p
            .slots()
            .first()
            .map_or(Pin::Auto, |s| s.viewer.layer().pin());
        let bound = p.bind(stream, sections, |mut video, mut audio| {
            for t in video.iter_mut().chain(audio.iter_mut()) {
                t.rebind();
            }
            Viewer::new(video, audio, ViewerLayer::new(pin), now)
        });
        if !bound {
            return Ok(false);
        }
        let connected = p.is_connected();
        if let Some(s) = self.streams.get_mut(stream) {
            s.add_viewer(peer);
        }
        tracing::info!(peer = %peer, stream = %stream, "stream shown on a free section");
        // With a cached group the viewer starts from it on the next video packet; without
        // one it needs a fresh keyframe.
        if connected && self.streams.get(stream).is_some_and(|s| !s.has_cache()) {
            self.request_keyframe(stream, None);
        }
        Ok(true)
    }

    /// Whether viewing session `peer` can show `stream` on `sections` now: the stream is
    /// live, and the codecs the session negotiated carry its video (for a video section) and
    /// its audio (for an audio section). A publishing session is `Unusable`.
    fn can_show(
        &self,
        peer: PeerId,
        stream: &StreamId,
        sections: Sections,
    ) -> Result<bool, SfuError> {
        let p = self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?;
        if p.is_publisher() {
            return Err(SfuError::Unusable(
                "only a viewing session shows streams".into(),
            ));
        }
        let Some(s) = self.streams.get(stream).filter(|s| s.is_live()) else {
            return Ok(false);
        };
        let config = p.rtc().codec_config();
        let carries = |video: bool| {
            let mut kind = s
                .params()
                .iter()
                .filter(|q| q.spec().codec.is_video() == video)
                .peekable();
            // A stream without this kind needs nothing carried.
            kind.peek().is_none() || kind.any(|q| config.match_params(*q).is_some())
        };
        Ok((!sections.video() || carries(true)) && (!sections.audio() || carries(false)))
    }

    /// Show `to` instead of `from` (`None`: on free sections only) on a viewing session, at
    /// once: when the session cannot show `to` (not live, or a codec it did not negotiate)
    /// nothing changes and the answer is `Ok(false)`.
    pub fn rebind(
        &mut self,
        peer: PeerId,
        from: Option<&StreamId>,
        to: &StreamId,
        sections: Sections,
    ) -> Result<bool, SfuError> {
        if !self.can_show(peer, to, sections)? {
            return Ok(false);
        }
        if let Some(from) = from.filter(|f| *f != to) {
            self.unbind(peer, from)?;
        }
        self.bind(peer, to, sections)
    }

    /// Stop showing `stream` on a viewing session, its sections free for another (the session
    /// stays, even with nothing shown); whether it was shown.
    pub fn unbind(&mut self, peer: PeerId, stream: &StreamId) -> Result<bool, SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        if p.is_publisher() || !p.slots().iter().any(|s| &s.stream == stream) {
            return Ok(false);
        }
        p.unbind(stream);
        if let Some(s) = self.streams.get_mut(stream) {
            s.remove_viewer(peer);
        }
        self.drop_idle(stream);
        Ok(true)
    }

    /// What a viewing session shows, on which sections, in offer order.
    pub fn shown(&self, peer: PeerId) -> Result<Vec<crate::types::Shown>, SfuError> {
        Ok(self.peers.get(&peer).ok_or(SfuError::UnknownPeer)?.shown())
    }

    /// Add a remote ICE candidate (WHIP/WHEP PATCH trickle). Unparseable lines are ignored.
    pub fn add_remote_candidates(
        &mut self,
        peer: PeerId,
        candidates: &[String],
    ) -> Result<usize, SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        let mut added = 0;
        for line in candidates {
            let text = line.trim().trim_start_matches("a=");
            if let Ok(c) = Candidate::from_sdp_string(text) {
                let rtc = p.rtc_mut();
                if catch_unwind(AssertUnwindSafe(|| rtc.add_remote_candidate(c))).is_ok() {
                    added += 1;
                }
            }
        }
        self.dirty.push_back(peer);
        self.drain();
        Ok(added)
    }

    /// ICE restart (RFC 9725 section 4.4): the client sent new credentials (and maybe
    /// candidates) in a PATCH. The session keeps its DTLS association, SRTP contexts and
    /// forwarding state; it gets fresh local credentials, returned for the PATCH response,
    /// and connectivity checks with the new ones (from any address) move it over.
    pub fn restart_ice(
        &mut self,
        peer: PeerId,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<IceRestarted, SfuError> {
        let remote = IceCreds {
            ufrag: ufrag.trim().to_string(),
            pass: pwd.trim().to_string(),
        };
        if remote.ufrag.is_empty() || remote.pass.is_empty() {
            return Err(SfuError::Unusable(
                "an ICE restart needs a=ice-ufrag and a=ice-pwd".into(),
            ));
        }
        if !self.peers.contains_key(&peer) {
            return Err(SfuError::UnknownPeer);
        }
        let local = self.new_ice_creds();
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err(SfuError::UnknownPeer);
        };
        let rtc = p.rtc_mut();
        let creds = local.clone();
        let applied = catch_unwind(AssertUnwindSafe(|| {
            let mut api = rtc.direct_api();
            api.set_local_ice_credentials(creds);
            api.set_remote_ice_credentials(remote);
        }));
        if applied.is_err() {
            self.remove_peer(peer, CloseReason::Failed);
            return Err(SfuError::Unavailable);
        }
        p.start_ice_restart();
        let old = p.set_ufrag(local.ufrag.clone());
        // Known addresses keep routing here; new ones are learned from checks naming the new
        // ufrag.
        self.routes.rename_session(&old, &local.ufrag, peer);
        self.stats.ice_restarts += 1;
        tracing::info!(peer = %peer, "ICE restart");
        self.add_remote_candidates(peer, candidates)?;
        Ok(IceRestarted {
            ufrag: local.ufrag,
            pwd: local.pass,
            candidates: self.local_candidates(),
        })
    }

    /// The `a=candidate:` lines this node puts in answers (for ICE restart responses).
    pub fn local_candidates(&self) -> Vec<String> {
        let udp = self
            .config
            .candidates
            .iter()
            .filter_map(|a| Candidate::host(*a, "udp").ok());
        let tcp = self
            .config
            .tcp_candidates
            .iter()
            .filter_map(|a| passive_tcp_candidate(*a));
        udp.chain(tcp)
            .map(|c| format!("a={}", c.to_sdp_string()))
            .collect()
    }

    /// End a session (WHIP/WHEP DELETE).
    pub fn close(&mut self, peer: PeerId) -> Result<(), SfuError> {
        if !self.peers.contains_key(&peer) {
            return Err(SfuError::UnknownPeer);
        }
        self.remove_peer(peer, CloseReason::Closed);
        Ok(())
    }

    /// Close every session (shutdown).
    pub fn close_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id, CloseReason::Closed);
        }
    }
}
