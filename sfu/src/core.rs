//! The sans-IO SFU core: peers, demux, forwarding, keyframe requests.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use media_core::demux::DatagramKind;
use media_core::routes::{Route, Routes};
use media_core::sdp::{self, Kind};
use media_core::sdp_codecs;
use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::format::PayloadParams;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Rtc};

use crate::forward::{OutTrack, Stream, SubscribeOptions};
use crate::negotiate;
use crate::peer::{Peer, PeerBroken, Role};
use crate::simulcast::ViewerLayer;
use crate::stats::{DropReason, SfuStats};
use crate::{
    CloseReason, IceRestarted, Input, Output, PeerId, SfuConfig, SfuError, SfuEvent, StreamId,
    Transmit,
};

/// A simulcast viewer's bandwidth estimator starts here (a low layer's worth) and probes up.
const INITIAL_ESTIMATE_KBPS: u64 = 300;

/// A publisher was accepted.
#[derive(Debug, Clone)]
pub struct Published {
    /// The new session.
    pub peer: PeerId,
    /// SDP answer for the WHIP client.
    pub answer: String,
    /// The publisher it replaced (same stream key reconnecting), if any.
    pub replaced: Option<PeerId>,
}

/// A subscriber was accepted.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The new session.
    pub peer: PeerId,
    /// SDP answer for the WHEP client.
    pub answer: String,
}

/// The sans-IO SFU. See the crate docs for the run loop.
pub struct Sfu {
    pub(crate) config: SfuConfig,
    pub(crate) peers: HashMap<PeerId, Peer>,
    pub(crate) routes: Routes<PeerId>,
    /// Peers whose engine has work due now, run once per `poll_output`.
    pub(crate) due_now: Vec<PeerId>,
    pub(crate) streams: HashMap<StreamId, Stream>,
    /// Peers with work to drain.
    pub(crate) dirty: VecDeque<PeerId>,
    pub(crate) out: VecDeque<Output>,
    pub(crate) next_id: u64,
    pub(crate) rng: u64,
    pub(crate) stats: SfuStats,
    /// The latest instant seen in any input.
    pub(crate) last_now: Instant,
}

impl Sfu {
    /// A core that puts `config.candidates` in its answers, starting at `now`. `seed` feeds
    /// session ids (take it from the OS in production, fix it in deterministic tests).
    pub fn new(config: SfuConfig, seed: u64, now: Instant) -> Self {
        Self {
            config,
            peers: HashMap::new(),
            routes: Routes::new(),
            due_now: Vec::new(),
            streams: HashMap::new(),
            dirty: VecDeque::new(),
            out: VecDeque::new(),
            next_id: 1,
            rng: seed | 1,
            stats: SfuStats::default(),
            last_now: now,
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.publishers = self.peers.values().filter(|p| p.is_publisher()).count() as u64;
        s.subscribers = self.peers.len() as u64 - s.publishers;
        s.streams = self
            .streams
            .iter()
            .map(|(id, st)| crate::stats::StreamStat {
                name: id.to_string(),
                live: st.is_live(),
                viewers: st.subscribers.len() as u64,
                relays: st.relays.len() as u64,
            })
            .collect();
        s.streams.sort();
        s
    }

    /// Whether `stream` has a publisher (or, at an edge, an upstream feeding it).
    pub fn is_live(&self, stream: &StreamId) -> bool {
        self.streams.get(stream).is_some_and(Stream::is_live)
    }

    /// Demand for `stream` on this node: its viewers plus the relays (edges below) it feeds.
    pub fn subscriber_count(&self, stream: &StreamId) -> usize {
        self.streams
            .get(stream)
            .map_or(0, |s| s.subscribers.len() + s.relays.len())
    }

    /// Whether the first frame of a new ICE-TCP connection from `from` may open it: a STUN
    /// request naming a session's ufrag (or from an address a session already uses).
    pub fn opens_tcp(&self, from: SocketAddr, frame: &[u8]) -> bool {
        matches!(
            self.routes.route(from, frame),
            media_core::routes::Route::Introduced(_) | media_core::routes::Route::Known(..)
        ) && media_core::demux::classify(frame) == media_core::demux::DatagramKind::Stun
    }

    /// Number of peers (publishers + subscribers).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*, for what needs no secrecy (first sequence numbers, the counter-free
        // half of peer ids). Credentials come from the OS: see `new_ice_creds`.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn new_ice_creds(&mut self) -> IceCreds {
        // From the OS CSPRNG, each value drawn on its own: nothing about one session's
        // credentials (or the pwd of an answer from its ufrag) follows from another's.
        IceCreds {
            ufrag: os_random_hex(8),
            pass: os_random_hex(16),
        }
    }

    fn admit(&self) -> Result<(), SfuError> {
        if self.peers.len() >= self.config.max_peers {
            return Err(SfuError::Full(self.peers.len()));
        }
        Ok(())
    }

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
            .is_some_and(|s| s.publisher.is_some());
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
        let replaced = entry.publisher.take();
        entry.generation += 1;
        entry.params = params;
        // A local publisher takes over a stream an upstream was feeding.
        entry.upstream = None;
        entry.layers.clear();
        entry.keyframes_before_layers.reset();
        entry.simulcast = sections
            .iter()
            .any(|m| m.kind == Kind::Video && m.simulcast && !m.disabled);
        entry.publisher = Some(id);
        entry.offline_since = None;
        let generation = entry.generation;
        let subscribers: Vec<PeerId> = entry.subscribers.iter().copied().collect();

        let mut peer = Peer::new(
            id,
            stream.clone(),
            Role::Publisher { generation },
            ufrag.clone(),
            rtc,
            now,
        );
        peer.kinds = kinds;
        self.insert_peer(peer);
        if let Some(old) = replaced {
            tracing::info!(stream = %stream, old = %old, new = %id, "publisher replaced");
            self.remove_peer(old, CloseReason::Replaced);
        }
        for sub in subscribers {
            if let Some(p) = self.peers.get_mut(&sub) {
                p.needs_keyframe = true;
                p.layer.reset();
            }
        }
        self.announce_to_relays(&stream);
        tracing::info!(stream = %stream, peer = %id, "publisher accepted");
        Ok(Published {
            peer: id,
            answer,
            replaced,
        })
    }

    /// Accept a WHEP offer for `stream`, which must be live, with default options.
    pub fn subscribe(
        &mut self,
        now: Instant,
        stream: StreamId,
        offer: &str,
    ) -> Result<Subscribed, SfuError> {
        self.subscribe_with(now, stream, offer, SubscribeOptions::default())
    }

    /// Accept a WHEP offer for `stream`, which must be live. A viewer of a simulcast stream gets
    /// a bandwidth estimator (TWCC) that drives its layer unless `options.layer` pins one.
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
        let Some(entry) = self.streams.get(&stream).filter(|s| s.is_live()) else {
            return Err(SfuError::Offline(stream));
        };
        let plan = negotiate::viewer_plan(
            &sections,
            &sdp_codecs::section_formats(offer),
            &entry.params,
        )?;
        let has_video = entry.params.iter().any(|p| p.spec().codec.is_video());
        let has_audio = entry.params.iter().any(|p| p.spec().codec.is_audio());
        let simulcast = entry.simulcast;
        self.admit()?;
        let (rtc, answer, ufrag) = self.accept(now, offer, plan, simulcast)?;
        let kinds = accepted_kinds(&sections, &answer);
        let out_video = first_of_kind(&sections, &kinds, MediaKind::Video);
        let out_audio = first_of_kind(&sections, &kinds, MediaKind::Audio);
        let wants = |k: Kind| {
            sections
                .iter()
                .any(|m| m.kind == k && !m.disabled && m.direction.offerer_receives())
        };
        if has_video && wants(Kind::Video) && out_video.is_none() {
            return Err(SfuError::CodecMismatch(format!(
                "the stream's video codec is {}; the viewer offered none that matches",
                codec_names(&entry_codecs(&rtc, true))
            )));
        }
        if has_audio && wants(Kind::Audio) && out_audio.is_none() {
            return Err(SfuError::CodecMismatch(
                "the stream's audio is Opus; the viewer did not offer it".into(),
            ));
        }
        if out_video.is_none() && out_audio.is_none() {
            return Err(SfuError::CodecMismatch(
                "the viewer supports none of the stream's codecs".into(),
            ));
        }
        let id = self.alloc_id();
        let mut peer = Peer::new(id, stream.clone(), Role::Subscriber, ufrag, rtc, now);
        peer.kinds = kinds;
        let first_seq = (self.random() & 0x3fff) as u16;
        peer.out_video = out_video.map(|mid| OutTrack::new(mid, first_seq));
        peer.out_audio = out_audio.map(|mid| {
            let mut t = OutTrack::new(mid, first_seq);
            t.red_offered = sdp::offers_codec(offer, &mid.to_string(), "red/48000");
            t
        });
        peer.layer = ViewerLayer::new(options.layer);
        self.insert_peer(peer);
        if let Some(s) = self.streams.get_mut(&stream) {
            s.subscribers.insert(id);
        }
        tracing::info!(stream = %stream, peer = %id, layer = options.layer.as_str(), "subscriber accepted");
        Ok(Subscribed { peer: id, answer })
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
                let rtc = &mut p.rtc;
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
        let rtc = &mut p.rtc;
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
        p.ice_restarting = true;
        let old = std::mem::replace(&mut p.ufrag, local.ufrag.clone());
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

    /// Which stream a session belongs to, and whether it publishes.
    pub fn peer_info(&self, peer: PeerId) -> Option<(StreamId, bool)> {
        self.peers
            .get(&peer)
            .map(|p| (p.stream.clone(), p.is_publisher()))
    }

    fn alloc_id(&mut self) -> PeerId {
        // Random high bits, a counter below so ids never repeat. Peer ids are not secrets:
        // session URLs carry their own token.
        let id = (self.random() & 0xFFFF_FFFF_0000_0000) | (self.next_id & 0xFFFF_FFFF);
        self.next_id += 1;
        PeerId(id)
    }

    /// Answer `offer` with a new engine configured by `plan` (its codecs; its rejected
    /// sections answered with port 0). The answer carries every candidate in every accepted
    /// section and never a payload type without its `a=rtpmap`.
    fn accept(
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

    fn insert_peer(&mut self, peer: Peer) {
        let id = peer.id;
        self.routes.add_session(&peer.ufrag, id);
        self.peers.insert(id, peer);
        self.dirty.push_back(id);
        self.drain();
    }

    pub(crate) fn remove_peer(&mut self, id: PeerId, reason: CloseReason) {
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
        self.routes.remove_session(&peer.ufrag, id);
        if reason == CloseReason::Failed {
            self.stats.peer_failures += 1;
        }
        if reason == CloseReason::Disconnected {
            self.stats.disconnects += 1;
        }
        let mut went_offline = false;
        let mut relays = Vec::new();
        if let Some(stream) = self.streams.get_mut(&peer.stream) {
            stream.subscribers.remove(&id);
            if stream.publisher == Some(id) {
                stream.publisher = None;
                stream.offline_since = Some(self.last_now);
                went_offline = true;
                relays.extend(stream.relays.iter().copied());
            }
            if stream.is_idle() {
                self.streams.remove(&peer.stream);
            }
        }
        if reason != CloseReason::Replaced {
            for relay in relays {
                self.out.push_back(Output::Event(SfuEvent::RelayOffline(
                    relay,
                    peer.stream.clone(),
                )));
            }
        }
        tracing::info!(peer = %id, stream = %peer.stream, ?reason, "session closed");
        self.out
            .push_back(Output::Event(SfuEvent::PeerClosed(id, reason)));
        if went_offline && reason != CloseReason::Replaced {
            self.out
                .push_back(Output::Event(SfuEvent::StreamOffline(peer.stream)));
        }
    }

    /// Feed one input; then drain [`Sfu::poll_output`].
    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::Timeout(now) => self.handle_timeout(now),
            Input::Datagram { at, from, to, data } => {
                self.handle_datagram(at, from, to, data, Protocol::Udp)
            }
            Input::Framed { at, from, to, data } => {
                self.handle_datagram(at, from, to, data, Protocol::Tcp)
            }
        }
        self.drain();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let due: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.deadline <= now)
            .map(|p| p.id)
            .collect();
        for id in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.handle_input(str0m::Input::Timeout(now)).is_err() {
                self.remove_peer(id, CloseReason::Failed);
                continue;
            }
            self.dirty.push_back(id);
        }
        let replays: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.replay.is_empty() && p.replay_at <= now)
            .map(|p| p.id)
            .collect();
        for id in replays {
            self.pump_replay(id, now);
        }
        let timeout = self.config.connect_timeout;
        let stale: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.connected && now >= p.created + timeout)
            .map(|p| p.id)
            .collect();
        for id in stale {
            self.remove_peer(id, CloseReason::ConnectTimeout);
        }
        let due_streams: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.keyframe_deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for stream in due_streams {
            self.poll_keyframes(&stream, now);
        }
        self.evaluate_layers(now);
        let grace = self.config.offline_grace;
        let ended: Vec<PeerId> = self
            .streams
            .values()
            .filter(|s| s.offline_since.is_some_and(|t| now >= t + grace))
            .flat_map(|s| s.subscribers.iter().copied())
            .collect();
        for id in ended {
            self.remove_peer(id, CloseReason::StreamEnded);
        }
    }

    fn handle_datagram(
        &mut self,
        at: Instant,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
        proto: Protocol,
    ) {
        self.last_now = self.last_now.max(at);
        self.stats.packets_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let (id, kind) = match self.routes.route(from, data) {
            Route::Known(id, kind) => (id, kind),
            Route::Introduced(id) => (id, DatagramKind::Stun),
            Route::Malformed => {
                self.stats.drop(DropReason::Malformed);
                return;
            }
            Route::UnknownSource => {
                self.stats.drop(DropReason::UnknownSource);
                return;
            }
        };
        let to = self.local_address(to, proto);
        let Ok(receive) = Receive::new(proto, from, to, data) else {
            self.stats.drop(DropReason::Malformed);
            return;
        };
        let input = str0m::Input::Receive(at, receive);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.rtc.accepts(&input) {
            self.stats.drop(DropReason::Rejected);
            return;
        }
        let introduced =
            kind == DatagramKind::Stun && !self.routes.addresses_of(id).contains(&from);
        if kind == DatagramKind::Stun {
            // A valid check from a new address (peer-reflexive, NAT rebinding): route it here.
            self.routes.learn(from, id);
        }
        if peer.handle_input(input).is_err() {
            self.remove_peer(id, CloseReason::Failed);
            return;
        }
        if introduced && peer.ice_restarting {
            // The restarted peer proved a new address with its new credentials: the old
            // paths are retired so media moves over.
            peer.ice_restarting = false;
            let old: Vec<SocketAddr> = self
                .routes
                .addresses_of(id)
                .iter()
                .copied()
                .filter(|a| *a != from)
                .collect();
            peer.retire_remote_addresses(&old);
        }
        self.dirty.push_back(id);
    }

    fn local_address(&self, to: SocketAddr, proto: Protocol) -> SocketAddr {
        if to.ip().is_unspecified() {
            let list = if proto == Protocol::Tcp {
                &self.config.tcp_candidates
            } else {
                &self.config.candidates
            };
            if let Some(first) = list.first() {
                return SocketAddr::new(first.ip(), to.port());
            }
        }
        to
    }

    /// Next output. Returns [`Output::Timeout`] when drained.
    pub fn poll_output(&mut self) -> Output {
        self.drain();
        if self.out.is_empty() && !self.due_now.is_empty() {
            self.run_due_timeouts();
        }
        if let Some(out) = self.out.pop_front() {
            return out;
        }
        let far = self.last_now + Duration::from_secs(1);
        let peers = self.peers.values().map(|p| p.deadline);
        let replays = self
            .peers
            .values()
            .filter(|p| !p.replay.is_empty())
            .map(|p| p.replay_at);
        let streams = self
            .streams
            .values()
            .filter_map(|s| s.keyframe_deadline())
            .chain(self.streams.values().filter_map(|s| s.next_evaluation));
        let connect = self
            .peers
            .values()
            .filter(|p| !p.connected)
            .map(|p| p.created + self.config.connect_timeout);
        let grace = self
            .streams
            .values()
            .filter_map(|s| s.offline_since.map(|t| t + self.config.offline_grace));
        Output::Timeout(
            peers
                .chain(replays)
                .chain(streams)
                .chain(connect)
                .chain(grace)
                .min()
                .unwrap_or(far)
                .min(far),
        )
    }

    /// Give every peer whose work is due its timeout, once, and drain it.
    fn run_due_timeouts(&mut self) {
        let now = self.last_now;
        for id in std::mem::take(&mut self.due_now) {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            peer.due_queued = false;
            if peer.handle_input(str0m::Input::Timeout(now)).is_err() {
                self.remove_peer(id, CloseReason::Failed);
                continue;
            }
            self.dirty.push_back(id);
        }
        self.drain();
    }

    pub(crate) fn drain(&mut self) {
        while let Some(id) = self.dirty.pop_front() {
            if let Err(PeerBroken) = self.drain_peer(id) {
                self.remove_peer(id, CloseReason::Failed);
            }
        }
    }

    pub(crate) fn drain_peer(&mut self, id: PeerId) -> Result<(), PeerBroken> {
        // Bounded: an engine yields a finite burst before its next timeout.
        for _ in 0..100_000 {
            let Some(peer) = self.peers.get_mut(&id) else {
                return Ok(());
            };
            if !peer.rtc.is_alive() {
                self.remove_peer(id, CloseReason::Disconnected);
                return Ok(());
            }
            match peer.poll_output()? {
                str0m::Output::Timeout(t) => {
                    peer.deadline = t;
                    // Work is due now (str0m releases written packets in its timeout handler).
                    // Run it in the next `poll_output`, after the whole receive batch: one
                    // timeout per subscriber per batch, not one per forwarded packet.
                    if t <= self.last_now && !peer.due_queued {
                        peer.due_queued = true;
                        self.due_now.push(id);
                    }
                    return Ok(());
                }
                str0m::Output::Transmit(t) => self.push_transmit(t),
                str0m::Output::Event(e) => self.handle_event(id, e),
            }
        }
        Ok(())
    }

    fn push_transmit(&mut self, t: str0m::net::Transmit) {
        let data: Vec<u8> = t.contents.into();
        self.stats.packets_out += 1;
        self.stats.bytes_out += data.len() as u64;
        self.out.push_back(Output::Transmit(Transmit {
            to: t.destination,
            data,
            tcp: t.proto != Protocol::Udp,
        }));
    }

    fn handle_event(&mut self, id: PeerId, event: Event) {
        match event {
            Event::Connected => self.on_connected(id),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.remove_peer(id, CloseReason::Disconnected);
            }
            Event::RtpPacket(packet) => self.forward(id, packet),
            Event::KeyframeRequest(_) => {
                if let Some(p) = self.peers.get(&id) {
                    let stream = p.stream.clone();
                    let layer = p.layer.current.or(p.layer.target);
                    self.request_keyframe(&stream, layer);
                }
            }
            Event::EgressBitrateEstimate(kind) => self.on_estimate(id, kind),
            _ => {}
        }
    }

    fn on_connected(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.connected = true;
        let stream = peer.stream.clone();
        let publisher = peer.is_publisher();
        let target = peer.layer.target;
        tracing::info!(peer = %id, stream = %stream, publisher, "session connected");
        self.out
            .push_back(Output::Event(SfuEvent::PeerConnected(id)));
        if publisher {
            self.out
                .push_back(Output::Event(SfuEvent::StreamLive(stream.clone())));
            let has_viewers = self
                .streams
                .get(&stream)
                .is_some_and(|s| !s.subscribers.is_empty());
            if has_viewers {
                self.request_keyframe(&stream, None);
            }
        } else {
            // With a cached group the viewer starts from it on the next video packet (a frame
            // after its DTLS completes); without one it needs a fresh keyframe.
            let now = self.last_now;
            let Some(s) = self.streams.get_mut(&stream) else {
                return;
            };
            if !s.has_cache() {
                let layer = target.or_else(|| s.layers.lowest(now));
                self.request_keyframe(&stream, layer);
            }
        }
    }
}

/// A passive ICE-TCP host candidate (RFC 6544): clients connect to it.
fn passive_tcp_candidate(addr: SocketAddr) -> Option<Candidate> {
    Candidate::builder()
        .tcp()
        .host(addr)
        .tcptype(TcpType::Passive)
        .build()
        .ok()
}

/// Kind of every audio/video mid of the offer that the answer accepted (port not 0).
fn accepted_kinds(offer: &[sdp::MediaSection], answer: &str) -> HashMap<Mid, MediaKind> {
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
fn entry_codecs(rtc: &Rtc, video: bool) -> Vec<str0m::format::Codec> {
    let mut out = Vec::new();
    for p in rtc.codec_config().params() {
        let c = p.spec().codec;
        if c.is_video() == video && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn codec_names(codecs: &[str0m::format::Codec]) -> String {
    let names: Vec<String> = codecs.iter().map(|c| c.to_string()).collect();
    names.join("/")
}

/// The payload types the publisher negotiated, to restrict its viewers to them.
fn negotiated_params(rtc: &Rtc, kinds: &HashMap<Mid, MediaKind>) -> Vec<PayloadParams> {
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

fn first_of_kind(
    sections: &[sdp::MediaSection],
    kinds: &HashMap<Mid, MediaKind>,
    want: MediaKind,
) -> Option<Mid> {
    sections
        .iter()
        .filter(|s| s.direction.offerer_receives())
        .filter_map(|s| s.mid.as_deref().map(Mid::from))
        .find(|m| kinds.get(m) == Some(&want))
}

/// `bytes` bytes from the OS CSPRNG, hex-encoded. Should the OS source ever fail, a keyed
/// SipHash of a counter stands in (its key is itself drawn from the OS at process start).
fn os_random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    let mut raw = vec![0u8; bytes];
    if getrandom::fill(&mut raw).is_err() {
        use std::hash::{BuildHasher, Hasher};
        static FALLBACK: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let keyed = FALLBACK.get_or_init(Default::default);
        for chunk in raw.chunks_mut(8) {
            let mut h = keyed.build_hasher();
            h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    raw.iter()
        .fold(String::with_capacity(bytes * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
