//! Sinks and feeds, in neutral terms (the relay, outside the core, speaks the wire).
//!
//! A sink attached to a stream gets every packet entering it ([`CoreOutput::Sink`]), first
//! the cached groups of pictures so a cold edge starts its viewers at once, and a notice of
//! each new source or its end. A fed stream has no local publisher: the node above feeds it
//! through [`Core::feed_packet`], and everything downstream (keyframe caches, layers,
//! viewers) is the same code as for a local publisher; keyframe requests go up as
//! [`CoreOutput::FeedKeyframe`].

use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::rtp::{ExtensionValues, Ssrc};

use super::{Core, CoreOutput};
use crate::ids::{LayerId, PeerId, StreamId};
use crate::sink::{FeedPacket, SinkId, SinkNotice, SinkPacket, StreamShape};
use crate::stats::DropReason;
use crate::stream::{Ingress, Stream};
use crate::types::{SfuError, SfuEvent};

impl Core {
    /// `sink` wants `stream`: returns what it carries, and queues the cached groups of
    /// pictures for the sink at once.
    pub fn sink_subscribe(
        &mut self,
        sink: SinkId,
        stream: StreamId,
    ) -> Result<StreamShape, SfuError> {
        let Some(s) = self.streams.get_mut(&stream).filter(|s| s.is_live()) else {
            return Err(SfuError::Offline(stream));
        };
        s.add_sink(sink);
        let shape = s.shape(&stream);
        let mut burst = Vec::new();
        for (layer, packets) in s.caches() {
            for p in packets {
                burst.push(CoreOutput::Sink(SinkPacket {
                    sink,
                    stream: stream.clone(),
                    layer: Some(layer),
                    pt: *p.params.pt(),
                    red: false,
                    seq: p.seq as u16,
                    time: p.time,
                    marker: p.marker,
                    payload: p.payload.clone(),
                    at: p.wallclock,
                    level: None,
                }));
            }
        }
        self.stats.relay_packets += burst.len() as u64;
        self.out.extend(burst);
        Ok(shape)
    }

    /// `sink` no longer wants `stream`.
    pub fn sink_unsubscribe(&mut self, sink: SinkId, stream: &StreamId) {
        if let Some(s) = self.streams.get_mut(stream) {
            s.remove_sink(sink);
        }
        self.drop_idle(stream);
    }

    /// `sink` went away: detach it everywhere.
    pub fn sink_gone(&mut self, sink: SinkId) {
        let ids: Vec<StreamId> = self
            .streams
            .iter_mut()
            .filter_map(|(id, s)| s.remove_sink(sink).then(|| id.clone()))
            .collect();
        for id in ids {
            self.drop_idle(&id);
        }
    }

    /// A sink asks for a keyframe on `layer` (`None`: audio, i.e. every layer).
    pub fn sink_keyframe(&mut self, stream: &StreamId, layer: Option<LayerId>) {
        self.request_keyframe(stream, layer);
    }

    /// Tell the stream's sinks about its (new) source.
    pub(super) fn announce_to_sinks(&mut self, stream: &StreamId) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let shape = s.shape(stream);
        for sink in s.sinks().iter().copied() {
            self.out
                .push_back(CoreOutput::Notice(sink, SinkNotice::Source(shape.clone())));
        }
    }

    /// The source of `stream` changed: its viewers wait for the new source's keyframe.
    pub(super) fn source_changed(&mut self, stream: &StreamId, viewers: &[PeerId]) {
        for id in viewers {
            if let Some(v) = self.peers.get_mut(id).and_then(|p| p.viewer_of(stream)) {
                v.source_changed();
            }
        }
    }

    /// `stream` is fed from above with `params`, as `generation` there. A new generation (its
    /// source changed) is a new source for the viewers here, as a republish is. Returns
    /// whether it was new.
    pub fn feed_source(
        &mut self,
        stream: StreamId,
        generation: u64,
        params: Vec<PayloadParams>,
    ) -> Result<bool, SfuError> {
        let interval = self.config.keyframe_request_interval;
        let entry = self
            .streams
            .entry(stream.clone())
            .or_insert_with(|| Stream::new(interval));
        let Ok(new) = entry.feed(generation, params) else {
            return Err(SfuError::Unusable(
                "the stream has a local publisher; it cannot also be relayed".into(),
            ));
        };
        if !new {
            return Ok(false);
        }
        let viewers: Vec<PeerId> = entry.viewers().iter().copied().collect();
        self.source_changed(&stream, &viewers);
        tracing::info!(stream = %stream, generation, "relayed stream live");
        self.event(SfuEvent::StreamLive(stream));
        Ok(true)
    }

    /// The node above says the stream has no source now. Viewers stay for the offline grace,
    /// as with a local publisher that left.
    pub fn feed_offline(&mut self, stream: &StreamId) {
        let now = self.last_now;
        if self
            .streams
            .get_mut(stream)
            .is_some_and(|s| s.feed_ended(now))
        {
            self.event(SfuEvent::StreamOffline(stream.clone()));
        }
        self.drop_idle(stream);
    }

    /// One packet of a fed stream. A stream that is not fed counts it as a drop.
    pub fn feed_packet(&mut self, at: Instant, stream: &StreamId, packet: FeedPacket) {
        self.last_now = self.last_now.max(at);
        let Some(s) = self.streams.get(stream).filter(|s| s.is_fed()) else {
            self.stats.drop(DropReason::UnknownSource);
            return;
        };
        let generation = s.generation();
        let ext = ExtensionValues::default();
        let track = packet.layer.map_or(0, |l| 1 + l as u32);
        self.forward_ingress(
            stream,
            Ingress {
                generation,
                pt: packet.pt,
                ssrc: Ssrc::from(track),
                rid: None,
                layer: packet.layer,
                seq: packet.seq,
                ticks: packet.ticks,
                wallclock: at,
                marker: packet.marker,
                ext_vals: &ext,
                payload: packet.payload,
            },
        );
        self.drain();
    }
}
