//! The driver's side of the relay: commands from relay connection tasks (the `edge` crate) to
//! the core, relay packets from the core to those tasks, and packets from an upstream into the
//! core. The transport itself (QUIC) lives in the `edge` crate; this is only the plumbing
//! between it and the driver thread.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::driver::SfuHandle;
use crate::relay::{RelayId, RelayPacket, RelayTracks};
use crate::{Sfu, SfuError, StreamId};

/// Relay packets queued towards one relay connection before further ones are dropped (a
/// connection that cannot keep up loses packets, as a congested link would; NACK repairs).
pub const RELAY_QUEUE: usize = 4096;
/// Upstream packets queued towards the driver.
pub const INGEST_QUEUE: usize = 8192;

/// A relay command for the driver.
pub(crate) enum RelayCommand {
    Attach {
        relay: RelayId,
        sink: mpsc::Sender<RelayPacket>,
    },
    Subscribe {
        relay: RelayId,
        stream: StreamId,
        reply: oneshot::Sender<Result<RelayTracks, SfuError>>,
    },
    Unsubscribe {
        relay: RelayId,
        stream: StreamId,
    },
    Gone {
        relay: RelayId,
    },
    Keyframe {
        stream: StreamId,
        track: u16,
    },
    Tracks {
        tracks: RelayTracks,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Offline {
        stream: StreamId,
    },
    Viewers {
        stream: StreamId,
        reply: oneshot::Sender<usize>,
    },
}

/// One RTP packet from an upstream, for the core (edge side).
#[derive(Debug)]
pub struct RelayIn {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its track.
    pub track: u16,
    /// The RTP packet.
    pub data: Vec<u8>,
}

/// Where the core's relay packets go: one queue per relay connection.
#[derive(Default)]
pub(crate) struct RelaySinks {
    sinks: HashMap<RelayId, mpsc::Sender<RelayPacket>>,
    pub dropped: u64,
}

impl RelaySinks {
    pub fn send(&mut self, packet: RelayPacket) {
        match self.sinks.get(&packet.relay) {
            Some(sink) => {
                if sink.try_send(packet).is_err() {
                    self.dropped += 1;
                }
            }
            None => self.dropped += 1,
        }
    }
}

/// Apply one relay command to the core.
pub(crate) fn handle(sfu: &mut Sfu, sinks: &mut RelaySinks, cmd: RelayCommand) {
    match cmd {
        RelayCommand::Attach { relay, sink } => {
            sinks.sinks.insert(relay, sink);
        }
        RelayCommand::Subscribe {
            relay,
            stream,
            reply,
        } => {
            let _ = reply.send(sfu.relay_subscribe(relay, stream));
        }
        RelayCommand::Unsubscribe { relay, stream } => sfu.relay_unsubscribe(relay, &stream),
        RelayCommand::Gone { relay } => {
            sinks.sinks.remove(&relay);
            sfu.relay_gone(relay);
        }
        RelayCommand::Keyframe { stream, track } => sfu.relay_keyframe(&stream, track),
        RelayCommand::Tracks { tracks, reply } => {
            let _ = reply.send(sfu.relay_tracks(tracks));
        }
        RelayCommand::Offline { stream } => sfu.relay_offline(&stream),
        RelayCommand::Viewers { stream, reply } => {
            let _ = reply.send(sfu.subscriber_count(&stream));
        }
    }
}

impl SfuHandle {
    /// Upstream: packets for `relay` go to `sink` from now on.
    pub async fn relay_attach(
        &self,
        relay: RelayId,
        sink: mpsc::Sender<RelayPacket>,
    ) -> Result<(), SfuError> {
        self.relay_command(RelayCommand::Attach { relay, sink })
            .await
    }

    /// Upstream: `relay` subscribes to `stream`; the cached groups follow at once.
    pub async fn relay_subscribe(
        &self,
        relay: RelayId,
        stream: StreamId,
    ) -> Result<RelayTracks, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.relay_command(RelayCommand::Subscribe {
            relay,
            stream,
            reply,
        })
        .await?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// Upstream: `relay` no longer wants `stream`.
    pub async fn relay_unsubscribe(
        &self,
        relay: RelayId,
        stream: StreamId,
    ) -> Result<(), SfuError> {
        self.relay_command(RelayCommand::Unsubscribe { relay, stream })
            .await
    }

    /// Upstream: the connection of `relay` is gone.
    pub async fn relay_gone(&self, relay: RelayId) -> Result<(), SfuError> {
        self.relay_command(RelayCommand::Gone { relay }).await
    }

    /// Upstream: a relay asks for a keyframe.
    pub async fn relay_keyframe(&self, stream: StreamId, track: u16) -> Result<(), SfuError> {
        self.relay_command(RelayCommand::Keyframe { stream, track })
            .await
    }

    /// Edge: the upstream describes a stream (new or changed publisher).
    pub async fn relay_tracks(&self, tracks: RelayTracks) -> Result<(), SfuError> {
        let (reply, rx) = oneshot::channel();
        self.relay_command(RelayCommand::Tracks { tracks, reply })
            .await?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// Edge: the upstream says the stream has no publisher.
    pub async fn relay_offline(&self, stream: StreamId) -> Result<(), SfuError> {
        self.relay_command(RelayCommand::Offline { stream }).await
    }

    /// Viewers of `stream` on this node, plus the relays it feeds.
    pub async fn viewers(&self, stream: StreamId) -> Result<usize, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.relay_command(RelayCommand::Viewers { stream, reply })
            .await?;
        rx.await.map_err(|_| SfuError::Unavailable)
    }

    /// Edge: the queue upstream packets go into (never blocks the caller: use `try_send`).
    pub fn relay_ingest(&self) -> mpsc::Sender<RelayIn> {
        self.relay_in.clone()
    }
}
