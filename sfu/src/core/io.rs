//! The core's I/O: inputs in (time, datagrams, ICE-TCP frames), every engine drained, outputs
//! and the next deadline out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media_core::demux::DatagramKind;
use media_core::routes::Route;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState};

use super::{Core, CoreOutput};
use crate::ids::{LayerId, PeerId, StreamId};
use crate::stats::DropReason;
use crate::types::PeerBroken;
use crate::types::{CloseReason, Input, SfuEvent, Transmit};

impl Core {
    /// Feed one input; then drain [`Core::poll_output`].
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
            .filter(|p| p.deadline() <= now)
            .map(|p| p.id())
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
            .filter(|p| {
                p.slots()
                    .iter()
                    .filter_map(|s| s.viewer.replay_deadline())
                    .any(|at| at <= now)
            })
            .map(|p| p.id())
            .collect();
        for id in replays {
            self.pump_replay(id, now);
        }
        let timeout = self.config.connect_timeout;
        let stale: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.is_connected() && now >= p.created() + timeout)
            .map(|p| p.id())
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
        let ended: Vec<(StreamId, PeerId)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.offline_since().is_some_and(|t| now >= t + grace))
            .flat_map(|(id, s)| s.viewers().iter().map(move |v| (id.clone(), *v)))
            .collect();
        for (stream, id) in ended {
            // A stage viewer keeps watching the others; a session with nothing left ends.
            let left = self.peers.get_mut(&id).is_some_and(|p| p.unbind(&stream));
            if let Some(s) = self.streams.get_mut(&stream) {
                s.remove_viewer(id);
            }
            if left {
                self.drop_idle(&stream);
            } else {
                self.remove_peer(id, CloseReason::StreamEnded);
            }
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
        if !peer.rtc().accepts(&input) {
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
        if introduced && peer.finish_ice_restart() {
            // The restarted peer proved a new address with its new credentials: the old
            // paths are retired so media moves over.
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

    /// Next output. Returns [`CoreOutput::Timeout`] when drained.
    pub fn poll_output(&mut self) -> CoreOutput {
        self.drain();
        if self.out.is_empty() && !self.due_now.is_empty() {
            self.run_due_timeouts();
        }
        if let Some(out) = self.out.pop_front() {
            return out;
        }
        let far = self.last_now + Duration::from_secs(1);
        let peers = self.peers.values().map(|p| p.deadline());
        let replays = self
            .peers
            .values()
            .flat_map(|p| p.slots().iter().filter_map(|s| s.viewer.replay_deadline()));
        let streams = self
            .streams
            .values()
            .filter_map(|s| s.keyframe_deadline())
            .chain(self.streams.values().filter_map(|s| s.next_evaluation()));
        let connect = self
            .peers
            .values()
            .filter(|p| !p.is_connected())
            .map(|p| p.created() + self.config.connect_timeout);
        let grace = self
            .streams
            .values()
            .filter_map(|s| s.offline_since().map(|t| t + self.config.offline_grace));
        CoreOutput::Timeout(
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
            peer.unlist_due();
            if peer.handle_input(str0m::Input::Timeout(now)).is_err() {
                self.remove_peer(id, CloseReason::Failed);
                continue;
            }
            self.dirty.push_back(id);
        }
        self.drain();
    }

    pub(super) fn drain(&mut self) {
        while let Some(id) = self.dirty.pop_front() {
            if let Err(PeerBroken) = self.drain_peer(id) {
                self.remove_peer(id, CloseReason::Failed);
            }
        }
    }

    pub(super) fn drain_peer(&mut self, id: PeerId) -> Result<(), PeerBroken> {
        // Bounded: an engine yields a finite burst before its next timeout.
        for _ in 0..100_000 {
            let Some(peer) = self.peers.get_mut(&id) else {
                return Ok(());
            };
            if !peer.rtc().is_alive() {
                self.remove_peer(id, CloseReason::Disconnected);
                return Ok(());
            }
            match peer.poll_output()? {
                str0m::Output::Timeout(t) => {
                    // Work is due now (str0m releases written packets in its timeout handler).
                    // Run it in the next `poll_output`, after the whole receive batch: one
                    // timeout per subscriber per batch, not one per forwarded packet.
                    if peer.set_deadline(t, self.last_now) {
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

    pub(super) fn push_transmit(&mut self, t: str0m::net::Transmit) {
        let data: Vec<u8> = t.contents.into();
        self.stats.packets_out += 1;
        self.stats.bytes_out += data.len() as u64;
        self.out.push_back(CoreOutput::Transmit(Transmit {
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
            Event::KeyframeRequest(req) => {
                // The stream shown on the section asked about (a stage viewer shows several).
                if let Some(p) = self.peers.get_mut(&id) {
                    let Some(stream) = p.stream_on(req.mid).cloned() else {
                        return;
                    };
                    let layer = p.viewer_of(&stream).and_then(|v| v.layer().wanted());
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
        peer.set_connected();
        let stream = peer.stream().clone();
        let publisher = peer.is_publisher();
        let targets: Vec<(StreamId, Option<LayerId>)> = peer
            .slots()
            .iter()
            .map(|s| (s.stream.clone(), s.viewer.layer().target()))
            .collect();
        tracing::info!(peer = %id, stream = %stream, publisher, "session connected");
        self.event(SfuEvent::PeerConnected(id));
        if publisher {
            self.event(SfuEvent::StreamLive(stream.clone()));
            let has_viewers = self
                .streams
                .get(&stream)
                .is_some_and(|s| !s.viewers().is_empty());
            if has_viewers {
                self.request_keyframe(&stream, None);
            }
        } else {
            // With a cached group the viewer starts from it on the next video packet (a frame
            // after its DTLS completes); without one it needs a fresh keyframe.
            let now = self.last_now;
            for (stream, target) in targets {
                let Some(s) = self.streams.get_mut(&stream) else {
                    continue;
                };
                if !s.has_cache() {
                    let layer = target.or_else(|| s.lowest_layer(now));
                    self.request_keyframe(&stream, layer);
                }
            }
        }
    }
}
