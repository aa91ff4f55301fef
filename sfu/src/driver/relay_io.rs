//! The driver's side of the relay: commands from relay connection tasks (the `edge` crate) to
//! the core, relay packets from the core to those tasks, and packets from an upstream into the
//! core. The transport itself (QUIC) lives in the `edge` crate; this is only the plumbing
//! between it and the driver thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::SfuHandle;
use crate::wire::{RelayId, RelayPacket, RelayTracks};
use crate::{Sfu, SfuError, StreamId};

/// Relay packets queued towards one relay connection before further ones are dropped (a
/// connection that cannot keep up loses packets, as a congested link would; NACK repairs).
pub const RELAY_QUEUE: usize = 4096;
/// Upstream packets queued towards the driver.
pub const INGEST_QUEUE: usize = 8192;
/// Stream notices queued towards one relay connection. When its task falls this far behind,
/// further notices are not queued and the connection is marked
/// [`RelayQueues::overflowed`]: it then asks again for the state of every stream it holds.
pub const NOTICE_QUEUE: usize = 256;

/// A change to a stream one relay connection holds, on that connection's own queue (not the
/// node-wide event broadcast, where one busy connection's notices could be lost among every
/// other session's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayNotice {
    /// The stream has a new publisher (`tracks`).
    Tracks(RelayTracks),
    /// The stream lost its publisher (`offline`).
    Offline(StreamId),
}

/// What one relay connection's task reads: its packets, its notices, and whether a notice was
/// lost because the notice queue was full.
#[derive(Debug)]
pub struct RelayQueues {
    /// RTP packets of the streams it subscribed.
    pub packets: mpsc::Receiver<RelayPacket>,
    /// Stream changes, in order.
    pub notices: mpsc::Receiver<RelayNotice>,
    /// Set when a notice could not be queued: resynchronise every held stream, then clear it.
    pub overflowed: Arc<AtomicBool>,
}

impl RelayQueues {
    /// Whether a notice was lost since the last call (clears the mark).
    pub fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }
}

/// The driver's end of one relay connection's queues.
struct RelaySink {
    packets: mpsc::Sender<RelayPacket>,
    notices: mpsc::Sender<RelayNotice>,
    overflowed: Arc<AtomicBool>,
}

/// A relay command for the driver.
pub(crate) enum RelayCommand {
    Attach {
        relay: RelayId,
        reply: oneshot::Sender<RelayQueues>,
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
    sinks: HashMap<RelayId, RelaySink>,
    pub dropped: u64,
}

impl RelaySinks {
    pub fn send(&mut self, packet: RelayPacket) {
        match self.sinks.get(&packet.relay) {
            Some(sink) => {
                if sink.packets.try_send(packet).is_err() {
                    self.dropped += 1;
                }
            }
            None => self.dropped += 1,
        }
    }

    /// Queue `notice` for `relay`; a full queue marks the relay overflowed instead of waiting.
    pub fn notice(&mut self, relay: RelayId, notice: RelayNotice) {
        if let Some(sink) = self.sinks.get(&relay) {
            if sink.notices.try_send(notice).is_err() {
                sink.overflowed.store(true, Ordering::Release);
            }
        }
    }

    /// New queues for `relay` (replacing any it had).
    fn attach(&mut self, relay: RelayId) -> RelayQueues {
        let (packets, packets_rx) = mpsc::channel(RELAY_QUEUE);
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.sinks.insert(
            relay,
            RelaySink {
                packets,
                notices,
                overflowed: overflowed.clone(),
            },
        );
        RelayQueues {
            packets: packets_rx,
            notices: notices_rx,
            overflowed,
        }
    }
}

/// Apply one relay command to the core.
pub(crate) fn handle(sfu: &mut Sfu, sinks: &mut RelaySinks, cmd: RelayCommand) {
    match cmd {
        RelayCommand::Attach { relay, reply } => {
            let _ = reply.send(sinks.attach(relay));
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
    /// Upstream: the queues `relay`'s packets and stream notices arrive on from now on.
    pub async fn relay_attach(&self, relay: RelayId) -> Result<RelayQueues, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.relay_command(RelayCommand::Attach { relay, reply })
            .await?;
        rx.await.map_err(|_| SfuError::Unavailable)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str) -> StreamId {
        StreamId::new(name).unwrap()
    }

    #[test]
    fn notices_go_to_their_own_relay_in_order() {
        let mut sinks = RelaySinks::default();
        let mut a = sinks.attach(RelayId(1));
        let mut b = sinks.attach(RelayId(2));
        sinks.notice(RelayId(1), RelayNotice::Offline(stream("one")));
        sinks.notice(RelayId(2), RelayNotice::Offline(stream("two")));
        sinks.notice(RelayId(1), RelayNotice::Offline(stream("three")));
        assert_eq!(
            a.notices.try_recv().unwrap(),
            RelayNotice::Offline(stream("one"))
        );
        assert_eq!(
            a.notices.try_recv().unwrap(),
            RelayNotice::Offline(stream("three"))
        );
        assert!(a.notices.try_recv().is_err());
        assert_eq!(
            b.notices.try_recv().unwrap(),
            RelayNotice::Offline(stream("two"))
        );
        assert!(!a.take_overflow() && !b.take_overflow());
        // A relay that is gone (or never attached) gets nothing, and harms no other.
        sinks.notice(RelayId(3), RelayNotice::Offline(stream("four")));
        assert!(b.notices.try_recv().is_err());
    }

    #[test]
    fn a_full_notice_queue_marks_only_that_relay_overflowed() {
        let mut sinks = RelaySinks::default();
        let mut slow = sinks.attach(RelayId(1));
        let mut other = sinks.attach(RelayId(2));
        for i in 0..NOTICE_QUEUE + 10 {
            sinks.notice(RelayId(1), RelayNotice::Offline(stream(&format!("s{i}"))));
        }
        sinks.notice(RelayId(2), RelayNotice::Offline(stream("fine")));
        assert!(slow.take_overflow(), "the lost notices are marked");
        assert!(!slow.take_overflow(), "taking the mark clears it");
        assert!(!other.take_overflow());
        assert_eq!(
            other.notices.try_recv().unwrap(),
            RelayNotice::Offline(stream("fine"))
        );
        let mut queued = 0;
        while slow.notices.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, NOTICE_QUEUE, "the queue is bounded");
    }
}
