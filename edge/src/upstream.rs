//! The upstream side of the relay: accept edges, check their handshake, serve their
//! subscriptions from the local SFU (origin, or an edge serving a tier below).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster::{EdgeRecord, Registry};
use sfu::driver::SfuHandle;
use sfu::{RelayId, RelayNotice, SfuError, StreamId};

use crate::blocks::TrackBlocks;
use crate::large::Out;
use crate::metrics::{PathSample, RelayMetrics};
use crate::proto::{self, Control, Role};
use crate::quic;
use crate::repair::{rtp_seq, SendCache};
use crate::session::{tracks_message, ControlStream};

/// Track ids per subscription on one connection: the core's tracks (0..=4) are offset by a
/// block of this size per subscribed stream.
pub const TRACK_BLOCK: u16 = 8;
/// How long a new connection has to send a valid `hello`.
const HELLO_WITHIN: Duration = Duration::from_secs(5);

/// Whether a channel is private (its viewers need a playback token). At an origin the store
/// knows; at an edge serving a tier below, its own upstream said so.
pub trait ChannelPolicy: Send + Sync + 'static {
    /// `channel` is private.
    fn private<'a>(
        &'a self,
        channel: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// Who is on each channel's stage, for the `stage` message. At an origin the sessions and the
/// stage's driver know; at an edge serving a tier below, its own upstream said so.
pub trait StageSource: Send + Sync + 'static {
    /// `channel`'s stage now; `None` while no guest is on it.
    fn stage(&self, channel: &str) -> Option<RelayedStage>;
}

/// A stage as the relay carries it (the `stage` message's content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedStage {
    /// Who is on the stage, the host first.
    pub participants: Vec<proto::StageMember>,
    /// The featured participant's stream.
    pub featured: Option<String>,
    /// The streams of the participants speaking now.
    pub speaking: Vec<String>,
}

impl RelayedStage {
    /// The `stage` message saying `channel`'s stage is `stage` (`None`: ended).
    pub fn message(channel: &str, stage: Option<&RelayedStage>) -> Control {
        let stage = stage.cloned().unwrap_or_default();
        Control::Stage {
            channel: channel.to_string(),
            participants: stage.participants,
            featured: stage.featured,
            speaking: stage.speaking,
        }
    }
}

/// Settings of the upstream role.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// This node's id (in `welcome`, and as `via` of the edges it registers).
    pub node_id: String,
    /// This node's public base URL (in `welcome`: where a draining edge sends viewers).
    pub public_url: String,
    /// The cluster secret.
    pub secret: Arc<[u8]>,
    /// At an edge serving a tier below: its own upstream, to pull a channel through on demand.
    pub pull: Option<crate::Upstream>,
    /// Where connected edges are registered for routing (none: not registered).
    pub registry: Option<Registry>,
    /// How long an edge's registration lasts without a new `load` report.
    pub edge_ttl: Duration,
    /// Which channels are private.
    pub policy: Arc<dyn ChannelPolicy>,
    /// Relay series.
    pub metrics: Arc<RelayMetrics>,
    /// Mutual TLS (none: self-signed certificate, secret handshake only).
    pub pki: Option<Arc<quic::Pki>>,
    /// Viewers at the connected edges and below them, from their load reports.
    pub audience: Arc<crate::Audience>,
    /// Channels each connected edge may hold subscribed at once.
    pub max_channels: usize,
    /// Names of channels whose privacy changed (made private here, or told from upstream):
    /// each connected edge subscribed to one is told its new state.
    pub privacy: tokio::sync::broadcast::Sender<String>,
    /// Who is on each channel's stage: told to the edges holding the channel, and the
    /// participants' streams are served to them like channels.
    pub stages: Arc<dyn StageSource>,
}

/// Default of [`UpstreamConfig::max_channels`].
pub const MAX_CHANNELS: usize = 1024;

/// Accept edges on `addr` until the endpoint is closed. Returns the bound address and the
/// endpoint (close it to stop).
pub fn listen(
    addr: SocketAddr,
    config: UpstreamConfig,
    sfu: SfuHandle,
) -> Result<(SocketAddr, quinn::Endpoint), quic::QuicError> {
    let endpoint = quic::server(addr, config.pki.as_deref())?;
    let bound = endpoint.local_addr().unwrap_or(addr);
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        let ids = Arc::new(AtomicU64::new(1));
        let connected = Connected::default();
        while let Some(incoming) = accepting.accept().await {
            let (config, sfu, ids) = (config.clone(), sfu.clone(), ids.clone());
            let connected = connected.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else {
                    return;
                };
                let relay = RelayId(ids.fetch_add(1, Ordering::Relaxed));
                let peer = conn.remote_address();
                match serve(conn, relay, &config, &sfu, &connected).await {
                    Ok(()) => tracing::info!(%peer, "edge disconnected"),
                    Err(e) => tracing::info!(%peer, error = %e, "edge connection ended"),
                }
                let _ = sfu.relay_gone(relay).await;
            });
        }
    });
    Ok((bound, endpoint))
}

/// Why an edge connection ended.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("{0}")]
    Proto(#[from] proto::ProtoError),
    #[error("connection: {0}")]
    Connection(String),
    #[error("handshake: {0}")]
    Handshake(&'static str),
    #[error("media engine unavailable")]
    Sfu,
}

/// The live connection of each edge (by node id). An edge that reconnects while its old
/// connection has not timed out yet (it restarted, or its network moved) replaces it.
#[derive(Clone, Default)]
struct Connected(Arc<std::sync::Mutex<HashMap<String, (RelayId, quinn::Connection)>>>);

impl Connected {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (RelayId, quinn::Connection)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `relay` is now `node`'s connection; the one it replaces is closed.
    fn insert(&self, node: &str, relay: RelayId, conn: &quinn::Connection) {
        if let Some((_, old)) = self.lock().insert(node.to_string(), (relay, conn.clone())) {
            old.close(
                0u32.into(),
                b"replaced by a new connection of the same edge",
            );
        }
    }

    /// `relay` ended; whether it was still `node`'s current connection.
    fn remove(&self, node: &str, relay: RelayId) -> bool {
        let mut map = self.lock();
        if map.get(node).is_some_and(|(r, _)| *r == relay) {
            map.remove(node);
            return true;
        }
        false
    }
}

/// Sample the connection's transport figures this often.
const SAMPLE: Duration = Duration::from_millis(250);

async fn serve(
    conn: quinn::Connection,
    relay: RelayId,
    config: &UpstreamConfig,
    sfu: &SfuHandle,
    connected: &Connected,
) -> Result<(), ServeError> {
    let (mut control, edge, reads) = handshake(&conn, config).await?;
    tracing::info!(edge = %edge.node_id, region = %edge.region, peer = %conn.remote_address(), "edge connected");
    connected.insert(&edge.node_id, relay, &conn);
    config.metrics.edge_connected();
    register(config, &edge).await;
    let result = relay_loop(&conn, &mut control, relay, edge.clone(), reads, config, sfu).await;
    config.metrics.edge_gone(&edge.node_id, &edge.region);
    // A connection replaced by the edge's newer one leaves the registration to that one.
    if connected.remove(&edge.node_id, relay) {
        config.audience.remove(&edge.node_id);
        if let Some(registry) = &config.registry {
            if let Err(e) = registry.remove_edge(&edge.node_id, &config.node_id).await {
                tracing::warn!(error = %e, edge = %edge.node_id, "could not unregister the edge");
            }
        }
    }
    result
}

/// What an edge's hello says it reads beyond plain datagrams.
#[derive(Debug, Clone, Copy)]
struct Reads {
    /// Stamped datagrams.
    stamps: bool,
    /// Datagrams too large for the path, on unidirectional streams.
    large: bool,
}

/// Check `hello` and answer `welcome`; the edge as it described itself, and what it reads.
async fn handshake(
    conn: &quinn::Connection,
    config: &UpstreamConfig,
) -> Result<(ControlStream, EdgeRecord, Reads), ServeError> {
    let (send, recv) = tokio::time::timeout(HELLO_WITHIN, conn.accept_bi())
        .await
        .map_err(|_| ServeError::Handshake("no control stream"))?
        .map_err(|e| ServeError::Connection(e.to_string()))?;
    let mut control = ControlStream::new(send, recv);
    let hello = tokio::time::timeout(HELLO_WITHIN, control.read())
        .await
        .map_err(|_| ServeError::Handshake("no hello"))??;
    let exporter = quic::exporter(conn).ok_or(ServeError::Handshake("no TLS exporter"))?;
    let Some(Control::Hello {
        version,
        node_id,
        region,
        public_url,
        capacity,
        auth,
        stamps,
        large,
    }) = hello
    else {
        control
            .error("protocol", "the first frame must be hello")
            .await;
        linger(conn).await;
        return Err(ServeError::Handshake("first frame is not hello"));
    };
    if !proto::verify_auth(&config.secret, Role::Edge, &exporter, &node_id, &auth) {
        control.error("unauthorized", "wrong cluster secret").await;
        linger(conn).await;
        return Err(ServeError::Handshake("wrong cluster secret"));
    }
    if version < 1 {
        control
            .error("version", "this upstream speaks version 1")
            .await;
        linger(conn).await;
        return Err(ServeError::Handshake("version"));
    }
    let auth = proto::auth_tag(&config.secret, Role::Upstream, &exporter, &config.node_id);
    control
        .write(&Control::Welcome {
            version: proto::VERSION,
            node_id: config.node_id.clone(),
            auth,
            public_url: config.public_url.clone(),
        })
        .await
        .map_err(|e| ServeError::Connection(e.to_string()))?;
    let edge = EdgeRecord {
        node_id,
        region,
        public_url,
        viewers: 0,
        capacity,
        draining: false,
        via: config.node_id.clone(),
    };
    Ok((control, edge, Reads { stamps, large }))
}

/// Put the edge in the registry for one TTL (routing is best effort: a registry error is
/// logged, and the relay goes on).
async fn register(config: &UpstreamConfig, edge: &EdgeRecord) {
    if let Some(registry) = &config.registry {
        if let Err(e) = registry.put_edge(edge, config.edge_ttl).await {
            tracing::warn!(error = %e, edge = %edge.node_id, "could not register the edge");
        }
    }
}

async fn relay_loop(
    conn: &quinn::Connection,
    control: &mut ControlStream,
    relay: RelayId,
    mut edge: EdgeRecord,
    reads: Reads,
    config: &UpstreamConfig,
    sfu: &SfuHandle,
) -> Result<(), ServeError> {
    // This connection's own queues: its packets, and its streams' notices (a lost notice is
    // marked, and answered by resynchronising every held stream).
    let mut queues = sfu.relay_attach(relay).await.map_err(|_| ServeError::Sfu)?;
    let mut privacy = config.privacy.subscribe();
    // Live channels' track-id blocks, and whether each is private.
    let mut blocks = TrackBlocks::new(config.max_channels);
    let mut private: HashMap<StreamId, bool> = HashMap::new();
    // The held channels' stages as last told to the edge.
    let mut stages: HashMap<StreamId, Option<RelayedStage>> = HashMap::new();
    let mut sample = tokio::time::interval(SAMPLE);
    let mut cache = SendCache::default();
    let out = Out::new(conn.clone(), reads.large, config.metrics.clone());
    loop {
        tokio::select! {
            frame = control.read() => {
                let Some(msg) = frame? else {
                    return Ok(());
                };
                match msg {
                    Control::Subscribe { channel } => {
                        // A channel, or a stage participant's or mix's stream of one.
                        let Ok(stream) = StreamId::parse(&channel) else {
                            control.write(&Control::NotFound { channel }).await.ok();
                            continue;
                        };
                        let mut result = sfu.relay_subscribe(relay, stream.clone()).await;
                        if let (Err(SfuError::Offline(_)), Some(pull)) = (&result, &config.pull) {
                            // A tier above us may have it: pull it through, then serve it.
                            if pull.ensure(&channel).await.is_some() {
                                result = sfu.relay_subscribe(relay, stream.clone()).await;
                            }
                        }
                        // Only a live channel gets ids: junk names cost none.
                        let tracks = match result {
                            Ok(tracks) => tracks,
                            Err(SfuError::Offline(_)) => {
                                control.write(&Control::Offline { channel }).await.ok();
                                continue;
                            }
                            Err(_) => return Err(ServeError::Sfu),
                        };
                        let base = match blocks.assign(&stream) {
                            Ok(base) => base,
                            Err(e) => {
                                tracing::warn!(edge = %edge.node_id, %channel, error = %e, "subscription refused");
                                let _ = sfu.relay_unsubscribe(relay, stream).await;
                                control.write(&Control::Offline { channel }).await.ok();
                                continue;
                            }
                        };
                        let is_private = config.policy.private(stream.channel()).await;
                        private.insert(stream.clone(), is_private);
                        // A channel's stage first: by the time its tracks make it live at
                        // the edge, the edge knows its participants.
                        if stream.as_str() == stream.channel() {
                            let now = config.stages.stage(&channel);
                            if now.is_some() {
                                control.write(&RelayedStage::message(&channel, now.as_ref())).await.ok();
                            }
                            stages.insert(stream, now);
                        }
                        control.write(&tracks_message(&tracks, base, is_private)).await.ok();
                    }
                    Control::Unsubscribe { channel } => {
                        if let Ok(stream) = StreamId::parse(&channel) {
                            stages.remove(&stream);
                            // Unsubscribe first: no packet of it is queued after its block is
                            // free (those already queued find no block and are dropped).
                            let _ = sfu.relay_unsubscribe(relay, stream.clone()).await;
                            if let Some(base) = blocks.release(&stream) {
                                cache.forget(base, TRACK_BLOCK);
                            }
                            private.remove(&stream);
                        }
                    }
                    Control::Keyframe { track } => {
                        if let Some((stream, core)) = blocks.lookup(track) {
                            let _ = sfu.relay_keyframe(stream, core).await;
                        }
                    }
                    Control::Keepalive { t } => {
                        control.write(&Control::KeepaliveAck { t }).await.ok();
                    }
                    Control::Load { viewers, capacity, draining, audience, .. } => {
                        config.audience.set(&edge.node_id, audience);
                        edge.viewers = viewers;
                        edge.capacity = capacity;
                        edge.draining = draining;
                        config.metrics.edge_load(&edge.node_id, &edge.region, viewers);
                        if draining {
                            tracing::info!(edge = %edge.node_id, "edge draining: no new viewers routed to it");
                        }
                        register(config, &edge).await;
                    }
                    Control::Nack { track, seqs } => {
                        let now = std::time::Instant::now();
                        let mut resent = 0;
                        for seq in seqs {
                            if let Some(d) = cache.get(track, seq, now) {
                                out.send(d);
                                resent += 1;
                            }
                        }
                        config.metrics.resent(resent);
                    }
                    _ => {}
                }
            }
            Some(p) = queues.packets.recv() => {
                let Some(stream_base) = blocks.base(&p.stream) else { continue };
                let track = stream_base + p.track;
                let datagram = if reads.stamps {
                    proto::encode_stamped(track, proto::stamp_of(p.at), &p.data)
                } else {
                    proto::encode_datagram(track, &p.data)
                };
                let bytes = bytes::Bytes::from(datagram);
                if let Some(seq) = rtp_seq(&p.data) {
                    cache.record(track, seq, std::time::Instant::now(), bytes.clone());
                }
                out.send(bytes);
            }
            Some(notice) = queues.notices.recv() => {
                let msg = match notice {
                    RelayNotice::Tracks(tracks) => blocks.base(&tracks.stream).map(|base| {
                        let is_private = private.get(&tracks.stream).copied().unwrap_or(true);
                        tracks_message(&tracks, base, is_private)
                    }),
                    RelayNotice::Offline(stream) => Some(Control::Offline { channel: stream.to_string() }),
                };
                if let Some(msg) = msg {
                    control.write(&msg).await.ok();
                }
                if queues.take_overflow() {
                    resync(control, relay, &blocks, &private, sfu, &edge).await?;
                }
            }
            changed = privacy.recv() => {
                let channel = match changed {
                    Ok(c) => c,
                    // Missed some: re-check every channel this edge holds.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => String::new(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => continue,
                };
                // A channel's stage participants and mix share its privacy.
                let held: Vec<StreamId> = private
                    .keys()
                    .filter(|s| channel.is_empty() || s.channel() == channel)
                    .cloned()
                    .collect();
                for stream in held {
                    let now_private = config.policy.private(stream.channel()).await;
                    if private.insert(stream.clone(), now_private) != Some(now_private) {
                        let msg = Control::Privacy { channel: stream.to_string(), private: now_private };
                        control.write(&msg).await.ok();
                    }
                }
            }
            _ = sample.tick() => {
                config.metrics.edge_sample(&edge.node_id, PathSample::of(conn, true));
                for (channel, told) in stages.iter_mut() {
                    let now = config.stages.stage(channel.as_str());
                    if now != *told {
                        control.write(&RelayedStage::message(channel.as_str(), now.as_ref())).await.ok();
                        *told = now;
                    }
                }
                if queues.take_overflow() {
                    resync(control, relay, &blocks, &private, sfu, &edge).await?;
                }
            }
            reason = conn.closed() => return Err(ServeError::Connection(reason.to_string())),
        }
    }
}

/// Notices for this relay were lost (its queue was full): tell the edge the state of every
/// channel it holds again (tracks, or offline) instead of guessing.
async fn resync(
    control: &mut ControlStream,
    relay: RelayId,
    blocks: &TrackBlocks,
    private: &HashMap<StreamId, bool>,
    sfu: &SfuHandle,
    edge: &EdgeRecord,
) -> Result<(), ServeError> {
    tracing::warn!(edge = %edge.node_id, "relay notices overflowed: resynchronising");
    for (stream, base) in blocks.held() {
        let msg = match sfu.relay_subscribe(relay, stream.clone()).await {
            Ok(tracks) => {
                let is_private = private.get(&stream).copied().unwrap_or(true);
                tracks_message(&tracks, base, is_private)
            }
            Err(SfuError::Offline(_)) => Control::Offline {
                channel: stream.to_string(),
            },
            Err(_) => return Err(ServeError::Sfu),
        };
        control.write(&msg).await.ok();
    }
    Ok(())
}

/// Give an `error` frame time to arrive: wait (bounded) for the peer to close.
async fn linger(conn: &quinn::Connection) {
    let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
}
