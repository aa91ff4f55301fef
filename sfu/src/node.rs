//! The public [`Sfu`]: the sans-IO core with the relay attached as its sink and feed.
//!
//! Every session call goes straight to the core. The relay calls (`relay_*`) translate the
//! relay's wire shapes to the core's neutral sinks and feeds, and [`Sfu::poll_output`]
//! translates back: sink packets become [`RelayPacket`]s, source notices become
//! [`SfuEvent::RelayTracks`] / [`SfuEvent::RelayOffline`], feed keyframe requests become
//! [`SfuEvent::UpstreamKeyframe`].

use std::net::SocketAddr;
use std::time::Instant;

use crate::core::{Core, CoreOutput};
use crate::ids::{PeerId, StreamId};
use crate::relay::{self, Feeds};
use crate::sink::SinkNotice;
use crate::stats::{DropReason, SfuStats};
use crate::types::{
    IceRestarted, Input, Output, Pin, Published, SfuConfig, SfuError, SfuEvent, SubscribeOptions,
    Subscribed,
};
use crate::wire::{video_track, RelayId, RelayTracks};

#[cfg(doc)]
use crate::wire::RelayPacket;

/// The sans-IO SFU. See the crate docs for the run loop.
pub struct Sfu {
    core: Core,
    feeds: Feeds,
}

impl Sfu {
    /// A core that puts `config.candidates` in its answers, starting at `now`. `seed` feeds
    /// session ids (take it from the OS in production, fix it in deterministic tests).
    pub fn new(config: SfuConfig, seed: u64, now: Instant) -> Self {
        Self {
            core: Core::new(config, seed, now),
            feeds: Feeds::default(),
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> SfuStats {
        self.core.stats()
    }

    /// Whether `stream` has a publisher (or, at an edge, an upstream feeding it).
    pub fn is_live(&self, stream: &StreamId) -> bool {
        self.core.is_live(stream)
    }

    /// Demand for `stream` on this node: its viewers plus the relays (edges below) it feeds.
    pub fn subscriber_count(&self, stream: &StreamId) -> usize {
        self.core.subscriber_count(stream)
    }

    /// Whether the first frame of a new ICE-TCP connection from `from` may open it: a STUN
    /// request naming a session's ufrag (or from an address a session already uses).
    pub fn opens_tcp(&self, from: SocketAddr, frame: &[u8]) -> bool {
        self.core.opens_tcp(from, frame)
    }

    /// Number of peers (publishers + subscribers).
    pub fn peer_count(&self) -> usize {
        self.core.peer_count()
    }

    /// Accept a WHIP offer for `stream`. A live publisher on the same stream is replaced; a
    /// stream fed by a relay is taken over.
    pub fn publish(
        &mut self,
        now: Instant,
        stream: StreamId,
        offer: &str,
    ) -> Result<Published, SfuError> {
        let published = self.core.publish(now, stream.clone(), offer)?;
        self.feeds.end(&stream);
        Ok(published)
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

    /// Accept a WHEP offer for `stream`, which must be live. A viewer of a simulcast stream
    /// gets a bandwidth estimator (TWCC) that drives its layer unless `options.layer` pins one.
    pub fn subscribe_with(
        &mut self,
        now: Instant,
        stream: StreamId,
        offer: &str,
        options: SubscribeOptions,
    ) -> Result<Subscribed, SfuError> {
        self.core.subscribe_with(now, stream, offer, options)
    }

    /// Show `stream` on a viewing session's first free video and/or audio section
    /// (`sections`): a stage participant who went live after the session started, or the
    /// featured participant and the mix of a one-section viewer; `Ok(false)` when there is
    /// none, it is shown already, or it is not live.
    pub fn bind(
        &mut self,
        peer: PeerId,
        stream: &StreamId,
        sections: crate::Sections,
    ) -> Result<bool, SfuError> {
        self.core.bind(peer, stream, sections)
    }

    /// Show `to` instead of `from` on a viewing session at once, or change nothing when it
    /// cannot show `to` (not live, or a codec the session did not negotiate): `Ok(false)`.
    pub fn rebind(
        &mut self,
        peer: PeerId,
        from: Option<&StreamId>,
        to: &StreamId,
        sections: crate::Sections,
    ) -> Result<bool, SfuError> {
        self.core.rebind(peer, from, to, sections)
    }

    /// Mute or unmute `stream`'s audio everywhere (viewers, edges, a stage's mix).
    pub fn set_muted(&mut self, stream: &StreamId, muted: bool) {
        self.core.set_muted(stream, muted)
    }

    /// Stop showing `stream` on a viewing session (its sections free for another; the
    /// session stays); whether it was shown.
    pub fn unbind(&mut self, peer: PeerId, stream: &StreamId) -> Result<bool, SfuError> {
        self.core.unbind(peer, stream)
    }

    /// What a viewing session shows, on which of its sections, in offer order.
    pub fn shown(&self, peer: PeerId) -> Result<Vec<crate::types::Shown>, SfuError> {
        self.core.shown(peer)
    }

    /// Change a viewer's layer preference (the player's quality menu).
    pub fn set_layer(&mut self, peer: PeerId, pin: Pin) -> Result<(), SfuError> {
        self.core.set_layer(peer, pin)
    }

    /// Add a remote ICE candidate (WHIP/WHEP PATCH trickle). Unparseable lines are ignored.
    pub fn add_remote_candidates(
        &mut self,
        peer: PeerId,
        candidates: &[String],
    ) -> Result<usize, SfuError> {
        self.core.add_remote_candidates(peer, candidates)
    }

    /// ICE restart (RFC 9725 section 4.4): the client sent new credentials (and maybe
    /// candidates) in a PATCH. The session keeps its DTLS association, SRTP contexts and
    /// forwarding state; it gets fresh local credentials, returned for the PATCH response.
    pub fn restart_ice(
        &mut self,
        peer: PeerId,
        ufrag: &str,
        pwd: &str,
        candidates: &[String],
    ) -> Result<IceRestarted, SfuError> {
        self.core.restart_ice(peer, ufrag, pwd, candidates)
    }

    /// The `a=candidate:` lines this node puts in answers (for ICE restart responses).
    pub fn local_candidates(&self) -> Vec<String> {
        self.core.local_candidates()
    }

    /// End a session (WHIP/WHEP DELETE).
    pub fn close(&mut self, peer: PeerId) -> Result<(), SfuError> {
        self.core.close(peer)
    }

    /// Close every session (shutdown).
    pub fn close_all(&mut self) {
        self.core.close_all()
    }

    /// Which stream a session belongs to, and whether it publishes.
    pub fn peer_info(&self, peer: PeerId) -> Option<(StreamId, bool)> {
        self.core.peer_info(peer)
    }

    /// Feed one input; then drain [`Sfu::poll_output`].
    pub fn handle_input(&mut self, input: Input<'_>) {
        self.core.handle_input(input)
    }

    /// Next output. Returns [`Output::Timeout`] when drained.
    pub fn poll_output(&mut self) -> Output {
        // Bounded: each turn takes one output off the core's finite queue.
        loop {
            return match self.core.poll_output() {
                CoreOutput::Transmit(t) => Output::Transmit(t),
                CoreOutput::Event(e) => Output::Event(e),
                CoreOutput::Sink(p) => match relay::encode(p) {
                    Some(p) => Output::Relay(p),
                    None => continue,
                },
                CoreOutput::Notice(sink, SinkNotice::Source(shape)) => {
                    Output::Event(SfuEvent::RelayTracks(sink.into(), relay::describe(&shape)))
                }
                CoreOutput::Notice(sink, SinkNotice::Offline(stream)) => {
                    Output::Event(SfuEvent::RelayOffline(sink.into(), stream))
                }
                CoreOutput::FeedKeyframe(stream, layer) => Output::Event(
                    SfuEvent::UpstreamKeyframe(stream, video_track(layer.unwrap_or(0))),
                ),
                CoreOutput::Timeout(t) => Output::Timeout(t),
            };
        }
    }

    /// Upstream: a downstream relay wants `stream`. Returns its tracks, and queues the cached
    /// groups of pictures for the relay at once.
    pub fn relay_subscribe(
        &mut self,
        relay: RelayId,
        stream: StreamId,
    ) -> Result<RelayTracks, SfuError> {
        let shape = self.core.sink_subscribe(relay.into(), stream)?;
        Ok(relay::describe(&shape))
    }

    /// Upstream: a downstream relay no longer wants `stream`.
    pub fn relay_unsubscribe(&mut self, relay: RelayId, stream: &StreamId) {
        self.core.sink_unsubscribe(relay.into(), stream)
    }

    /// Upstream: a downstream relay disconnected: forget it everywhere.
    pub fn relay_gone(&mut self, relay: RelayId) {
        self.core.sink_gone(relay.into())
    }

    /// Upstream: a downstream relay asks for a keyframe on `track` of `stream`.
    pub fn relay_keyframe(&mut self, stream: &StreamId, track: u16) {
        self.core.sink_keyframe(stream, relay::track_layer(track))
    }

    /// Edge: `stream` is fed by the upstream with these tracks. A new upstream generation (its
    /// publisher changed) is a new source for the edge's viewers, as a republish is.
    pub fn relay_tracks(&mut self, tracks: RelayTracks) -> Result<(), SfuError> {
        let params = relay::codec_params(&tracks.codecs)?;
        let stream = tracks.stream.clone();
        if self
            .core
            .feed_source(tracks.stream, tracks.generation, params)?
        {
            self.feeds.restart(&stream);
        }
        Ok(())
    }

    /// Edge: the upstream says the stream has no publisher now. Viewers stay for the offline
    /// grace, as with a local publisher that left.
    pub fn relay_offline(&mut self, stream: &StreamId) {
        self.feeds.end(stream);
        self.core.feed_offline(stream)
    }

    /// Edge: one RTP packet from the upstream on `track` of `stream`. Malformed or unexpected
    /// packets are counted drops.
    pub fn relay_ingest(&mut self, at: Instant, stream: &StreamId, track: u16, rtp: &[u8]) {
        match self.feeds.packet(stream, track, rtp) {
            Ok(Some(packet)) => self.core.feed_packet(at, stream, packet),
            Ok(None) => self.core.count_drop(DropReason::UnknownSource),
            Err(()) => self.core.count_drop(DropReason::Malformed),
        }
    }
}
