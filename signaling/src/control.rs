//! The narrow interface between HTTP signaling and the media engine.

use std::future::Future;

use sfu::driver::SfuHandle;

use crate::stage_board::StageNow;
use sfu::{
    IceRestarted, PeerId, Pin, Published, Sections, SfuError, SfuStats, Shown, StreamId,
    SubscribeOptions, Subscribed,
};

/// Whether an edge could make a channel available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Live at this node now; `private`: viewers need a playback token.
    Live {
        /// The channel is private.
        private: bool,
    },
    /// Not live within the wait (offline, unknown, or no upstream).
    Offline,
}

/// Where an edge's streams come from: its upstream relay. At an origin there is none, and
/// channels are checked against the store instead.
pub trait ChannelSource: Send + Sync + 'static {
    /// Make `channel` available on this node (subscribe upstream) and say whether it went live
    /// within a short wait.
    fn ensure<'a>(
        &'a self,
        channel: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Availability> + Send + 'a>>;
    /// The upstream's public base URL (to send viewers to while this node drains).
    fn upstream_url(&self) -> Option<String>;
    /// Whether the upstream said `channel` is private (unknown channels count as private:
    /// nothing about them is shown).
    fn is_private(&self, channel: &str) -> bool;
    /// The stage of `channel` as the upstream tells it (while a guest is on it and the edge
    /// holds the channel).
    fn stage(&self, channel: &str) -> Option<RelayedStage>;
    /// Every stage the upstream tells of, by channel.
    fn stages(&self) -> Vec<(StreamId, RelayedStage)>;
}

/// A stage relayed to an edge: who is on it and what its driver at the origin says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedStage {
    /// The participants' streams and display names, the host first.
    pub participants: Vec<(StreamId, String)>,
    /// Who is featured and who speaks.
    pub now: StageNow,
}

impl RelayedStage {
    /// The guests' streams (every participant but the host).
    pub fn guests(&self) -> impl Iterator<Item = &StreamId> {
        self.participants
            .iter()
            .map(|(s, _)| s)
            .filter(|s| s.guest_of().is_some())
    }
}

/// What signaling needs from the SFU. Implemented by [`SfuHandle`] (a command plus a oneshot
/// reply to the driver) and by fakes in tests, so HTTP tests need no ports and no media.
pub trait SfuControl: Clone + Send + Sync + 'static {
    /// Accept a WHIP offer for a stream.
    fn publish(
        &self,
        stream: StreamId,
        offer: String,
    ) -> impl Future<Output = Result<Published, SfuError>> + Send;
    /// Accept a WHEP offer for a stream.
    fn subscribe(
        &self,
        stream: StreamId,
        offer: String,
        options: SubscribeOptions,
    ) -> impl Future<Output = Result<Subscribed, SfuError>> + Send;
    /// Show `stream` on a viewing session's free video and/or audio section (a stage
    /// participant who went live after it started; a one-section viewer's featured
    /// participant or mix); whether it was shown.
    fn bind(
        &self,
        peer: PeerId,
        stream: StreamId,
        sections: Sections,
    ) -> impl Future<Output = Result<bool, SfuError>> + Send;
    /// Stop showing `stream` on a viewing session (the session stays); whether it was shown.
    fn unbind(
        &self,
        peer: PeerId,
        stream: StreamId,
    ) -> impl Future<Output = Result<bool, SfuError>> + Send;
    /// What a viewing session shows, on which of its sections, in offer order.
    fn shown(&self, peer: PeerId) -> impl Future<Output = Result<Vec<Shown>, SfuError>> + Send;
    /// Pin a viewer's simulcast layer.
    fn set_layer(
        &self,
        peer: PeerId,
        pin: Pin,
    ) -> impl Future<Output = Result<(), SfuError>> + Send;
    /// ICE restart with the client's new credentials.
    fn restart_ice(
        &self,
        peer: PeerId,
        ufrag: String,
        pwd: String,
        candidates: Vec<String>,
    ) -> impl Future<Output = Result<IceRestarted, SfuError>> + Send;
    /// Trickle candidates to a session.
    fn trickle(
        &self,
        peer: PeerId,
        candidates: Vec<String>,
    ) -> impl Future<Output = Result<usize, SfuError>> + Send;
    /// End a session.
    fn close(&self, peer: PeerId) -> impl Future<Output = Result<(), SfuError>> + Send;
    /// Counters and gauges for `/metrics`.
    fn stats(&self) -> impl Future<Output = Result<SfuStats, SfuError>> + Send;
    /// Whether a stream has a publisher (or an upstream) here.
    fn is_live(&self, stream: StreamId) -> impl Future<Output = Result<bool, SfuError>> + Send;
}

impl SfuControl for SfuHandle {
    fn publish(
        &self,
        stream: StreamId,
        offer: String,
    ) -> impl Future<Output = Result<Published, SfuError>> + Send {
        SfuHandle::publish(self, stream, offer)
    }
    fn subscribe(
        &self,
        stream: StreamId,
        offer: String,
        options: SubscribeOptions,
    ) -> impl Future<Output = Result<Subscribed, SfuError>> + Send {
        SfuHandle::subscribe(self, stream, offer, options)
    }
    fn bind(
        &self,
        peer: PeerId,
        stream: StreamId,
        sections: Sections,
    ) -> impl Future<Output = Result<bool, SfuError>> + Send {
        SfuHandle::bind(self, peer, stream, sections)
    }
    fn unbind(
        &self,
        peer: PeerId,
        stream: StreamId,
    ) -> impl Future<Output = Result<bool, SfuError>> + Send {
        SfuHandle::unbind(self, peer, stream)
    }
    fn shown(&self, peer: PeerId) -> impl Future<Output = Result<Vec<Shown>, SfuError>> + Send {
        SfuHandle::shown(self, peer)
    }
    fn set_layer(
        &self,
        peer: PeerId,
        pin: Pin,
    ) -> impl Future<Output = Result<(), SfuError>> + Send {
        SfuHandle::set_layer(self, peer, pin)
    }
    fn restart_ice(
        &self,
        peer: PeerId,
        ufrag: String,
        pwd: String,
        candidates: Vec<String>,
    ) -> impl Future<Output = Result<IceRestarted, SfuError>> + Send {
        SfuHandle::restart_ice(self, peer, ufrag, pwd, candidates)
    }
    fn trickle(
        &self,
        peer: PeerId,
        candidates: Vec<String>,
    ) -> impl Future<Output = Result<usize, SfuError>> + Send {
        SfuHandle::trickle(self, peer, candidates)
    }
    fn close(&self, peer: PeerId) -> impl Future<Output = Result<(), SfuError>> + Send {
        SfuHandle::close(self, peer)
    }
    fn stats(&self) -> impl Future<Output = Result<SfuStats, SfuError>> + Send {
        SfuHandle::stats(self)
    }
    fn is_live(&self, stream: StreamId) -> impl Future<Output = Result<bool, SfuError>> + Send {
        SfuHandle::is_live(self, stream)
    }
}
