//! The edge side of the relay: one QUIC connection to the upstream, reconnected with backoff;
//! channels subscribed while the edge has viewers for them; media fed into the edge's SFU.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sfu::driver::SfuHandle;
use sfu::{RelayIn, SfuEvent, StreamId};
use tokio::sync::Notify;

use crate::freshness::{rtp_time, Clock, Freshness, Verdict};
use crate::large::Incoming;
use crate::metrics::{PathSample, RelayMetrics};
use crate::proto::{self, Control, Role};
use crate::quic;
use crate::repair::{rtp_seq, GapTracker};
use crate::session::{relay_tracks, ControlStream};
use crate::upstream::{RelayedStage, StageSource, TRACK_BLOCK};

/// Settings of the edge role.
#[derive(Clone)]
pub struct EdgeConfig {
    /// The upstream's relay address.
    pub upstream: SocketAddr,
    /// This edge's node id.
    pub node_id: String,
    /// Region name.
    pub region: String,
    /// Base URL viewers reach this edge at.
    pub public_url: String,
    /// Viewers this edge accepts.
    pub capacity: u32,
    /// The cluster secret.
    pub secret: Arc<[u8]>,
    /// A channel without viewers is unsubscribed after this long.
    pub grace: Duration,
    /// Relay series.
    pub metrics: Arc<RelayMetrics>,
    /// Mutual TLS (none: any upstream certificate, secret handshake only).
    pub pki: Option<Arc<quic::Pki>>,
    /// The name the upstream's certificate must carry under mutual TLS (the host of its
    /// address; ignored without).
    pub server_name: String,
    /// Viewers at the edges below this one (reported upstream with this edge's own).
    pub audience: Arc<crate::Audience>,
    /// Where a channel's privacy change from upstream is announced (to close tokenless
    /// viewers here and tell the edges below).
    pub privacy: tokio::sync::broadcast::Sender<String>,
}

/// Channels an edge asks its upstream for at once (live ones and names still being tried).
pub const MAX_WANTED: usize = 1024;

/// How long [`Upstream::ensure`] waits for a channel to go live at this edge.
const ENSURE_WITHIN: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_millis(250);
/// An offline channel is asked for again this often while viewers wait.
const RESUBSCRIBE: Duration = Duration::from_secs(2);
/// The edge reports its load upstream this often (`load`; it feeds routing).
pub const LOAD_EVERY: Duration = Duration::from_secs(2);
/// Gaps are checked for due NACKs this often.
const REPAIR_EVERY: Duration = Duration::from_millis(10);
/// Added to a stream's generation when the edge restarts it for its viewers (after dropping
/// late packets); the bits below it are the upstream's generation and the connection epoch.
const RESTART: u64 = 1 << 56;

/// The edge's link to its upstream, shared with the HTTP layer.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    sfu: SfuHandle,
    /// Channels the edge wants, with when they last had a viewer.
    wanted: Mutex<HashMap<StreamId, Instant>>,
    /// Channels the upstream marked private.
    private: Mutex<HashSet<StreamId>>,
    /// When the upstream last answered `offline` or `not_found` for a wanted channel: a viewer
    /// asking after that hears "not live" at once instead of waiting out the ensure time.
    refused: Mutex<HashMap<StreamId, Instant>>,
    /// The held channels' stages, as the upstream last told them (`stage`).
    stages: Mutex<HashMap<StreamId, RelayedStage>>,
    /// The upstream's public base URL, from its `welcome`.
    upstream_url: Mutex<Option<String>>,
    /// Shutting down: say so upstream, take no new viewers.
    draining: AtomicBool,
    wake: Notify,
    /// Notified when the upstream answers a subscription (`tracks`, `offline`, `not_found`).
    answered: Notify,
}

impl Upstream {
    /// Start the connection loop (on the current runtime).
    pub fn start(config: EdgeConfig, sfu: SfuHandle) -> Result<Self, quic::QuicError> {
        let endpoint = quic::client(config.pki.as_deref())?;
        let inner = Arc::new(Inner {
            sfu,
            wanted: Mutex::new(HashMap::new()),
            private: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashMap::new()),
            stages: Mutex::new(HashMap::new()),
            upstream_url: Mutex::new(None),
            draining: AtomicBool::new(false),
            wake: Notify::new(),
            answered: Notify::new(),
        });
        let task = inner.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            let mut epoch: u64 = 0;
            loop {
                let started = Instant::now();
                epoch += 1;
                let result = run(&endpoint, &config, &task, epoch).await;
                config.metrics.upstream_up(false);
                match result {
                    Ok(()) => tracing::warn!("upstream closed the relay connection"),
                    Err(e) => {
                        tracing::warn!(error = %e, upstream = %config.upstream, "relay connection failed")
                    }
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(250);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Ok(Self { inner })
    }

    /// A viewer wants `channel` here: subscribe upstream if needed and wait (bounded) until it
    /// is live at this edge. `Some(private)` when live; `None`: not live within the wait
    /// (offline, unknown, no upstream), or the upstream answered so after this call began.
    pub async fn ensure(&self, channel: &str) -> Option<bool> {
        let stream = StreamId::parse(channel).ok()?;
        let asked = Instant::now();
        {
            let mut wanted = self.inner.lock();
            if wanted.len() >= MAX_WANTED && !wanted.contains_key(&stream) {
                // A flood of names (mostly junk): refuse new ones rather than ask upstream.
                tracing::debug!(%channel, "edge wants {MAX_WANTED} channels already");
                return None;
            }
            wanted.insert(stream.clone(), Instant::now());
        }
        self.inner.wake.notify_one();
        let until = Instant::now() + ENSURE_WITHIN;
        while Instant::now() < until {
            // Registered before the checks, so an answer between them and the wait wakes it.
            let answered = self.inner.answered.notified();
            if self
                .inner
                .sfu
                .is_live(stream.clone())
                .await
                .unwrap_or(false)
            {
                return Some(self.is_private(&stream));
            }
            if lock(&self.inner.refused)
                .get(&stream)
                .is_some_and(|at| *at >= asked)
            {
                return None;
            }
            let _ = tokio::time::timeout(Duration::from_millis(10), answered).await;
        }
        None
    }

    /// `channel`'s stage as the upstream last told it (while the edge holds the channel).
    pub fn stage(&self, channel: &str) -> Option<RelayedStage> {
        let stream = StreamId::new(channel).ok()?;
        lock(&self.inner.stages).get(&stream).cloned()
    }

    /// Every stage of a channel held here, by channel.
    pub fn stages(&self) -> Vec<(StreamId, RelayedStage)> {
        lock(&self.inner.stages)
            .iter()
            .map(|(c, s)| (c.clone(), s.clone()))
            .collect()
    }

    /// Whether the upstream marked `stream` private.
    pub fn is_private(&self, stream: &StreamId) -> bool {
        lock(&self.inner.private).contains(stream)
    }

    /// The upstream's public base URL (known once connected).
    pub fn upstream_url(&self) -> Option<String> {
        lock(&self.inner.upstream_url).clone()
    }

    /// Shutting down: report `draining` upstream at once (routing stops sending viewers here).
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }
}

impl StageSource for Upstream {
    fn stage(&self, channel: &str) -> Option<RelayedStage> {
        Upstream::stage(self, channel)
    }
}

impl crate::ChannelPolicy for Upstream {
    fn private<'a>(
        &'a self,
        channel: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move { StreamId::parse(channel).is_ok_and(|s| self.is_private(&s)) })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Instant>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `stream` is a participant's or the mix of a stage held here: wanted while its channel
    /// is (one-section viewers are shown it by the stage's binding, K-section ones as it
    /// arrives).
    fn on_stage(&self, stream: &StreamId) -> bool {
        let Ok(channel) = StreamId::new(stream.channel()) else {
            return false;
        };
        if &channel == stream {
            return false;
        }
        lock(&self.stages).get(&channel).is_some_and(|st| {
            stream.mix_of().is_some() || st.participants.iter().any(|p| p.stream == stream.as_str())
        })
    }

    /// The upstream answered `stream` is not live: tell the ensures waiting for it.
    fn refuse(&self, stream: &StreamId) {
        lock(&self.refused).insert(stream.clone(), Instant::now());
        self.answered.notify_waiters();
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("protocol: {0}")]
    Proto(#[from] proto::ProtoError),
    #[error("closed: {0}")]
    Closed(String),
}

/// Per subscribed channel on the current connection.
struct Sub {
    /// First track id of the channel's block, once `tracks` came.
    base: Option<u16>,
    asked: Instant,
}

async fn run(
    endpoint: &quinn::Endpoint,
    config: &EdgeConfig,
    inner: &Inner,
    epoch: u64,
) -> Result<(), RunError> {
    let conn = endpoint
        .connect(config.upstream, &config.server_name)
        .map_err(|e| RunError::Connect(e.to_string()))?
        .await
        .map_err(|e| RunError::Connect(e.to_string()))?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| RunError::Connect(e.to_string()))?;
    let mut control = ControlStream::new(send, recv);
    let exporter = quic::exporter(&conn).ok_or(RunError::Handshake("no TLS exporter".into()))?;
    control
        .write(&Control::Hello {
            version: proto::VERSION,
            node_id: config.node_id.clone(),
            region: config.region.clone(),
            public_url: config.public_url.clone(),
            capacity: config.capacity,
            auth: proto::auth_tag(&config.secret, Role::Edge, &exporter, &config.node_id),
            stamps: true,
            large: true,
        })
        .await
        .map_err(|e| RunError::Connect(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(5), control.read()).await {
        Ok(Ok(Some(Control::Welcome {
            node_id,
            auth,
            public_url,
            ..
        }))) if proto::verify_auth(&config.secret, Role::Upstream, &exporter, &node_id, &auth) => {
            tracing::info!(upstream = %node_id, addr = %config.upstream, "relay connected");
            *lock(&inner.upstream_url) = Some(public_url).filter(|u| !u.is_empty());
            config.metrics.upstream_up(true);
        }
        Ok(Ok(Some(Control::Error { code, message }))) => {
            return Err(RunError::Handshake(format!("{code}: {message}")))
        }
        _ => return Err(RunError::Handshake("no valid welcome".into())),
    }

    // Stages are told again for every channel this connection subscribes.
    lock(&inner.stages).clear();
    let ingest = inner.sfu.relay_ingest();
    let mut events = inner.sfu.events();
    let mut subs: HashMap<StreamId, Sub> = HashMap::new();
    let mut by_base: HashMap<u16, StreamId> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    let mut last_load = Instant::now() - LOAD_EVERY;
    let mut gaps = GapTracker::default();
    let mut fresh = Freshness::new(Instant::now());
    // What each block's stream was last described as to the SFU.
    let mut current: HashMap<u16, sfu::RelayTracks> = HashMap::new();
    let mut repair = tokio::time::interval(REPAIR_EVERY);
    repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut counted = (0, 0, 0);
    let mut reported_draining = false;
    let mut large = Incoming::new(&conn);
    loop {
        tokio::select! {
            frame = control.read() => {
                let Some(msg) = frame? else {
                    return Ok(());
                };
                match msg {
                    Control::Tracks { channel, generation, tracks, codecs, private } => {
                        // Generations count per upstream process: after a reconnect (the
                        // upstream may have restarted and counts from 1 again) every stream is
                        // a new source for this edge's viewers.
                        let generation = (epoch << 32) | (generation & 0xffff_ffff);
                        let Some((mut described, base)) = relay_tracks(&channel, generation, &tracks, &codecs) else {
                            continue;
                        };
                        // The same source again (a resync) keeps a local restart's generation.
                        if let Some(prev) = current.get(&base) {
                            if prev.stream == described.stream && prev.generation % RESTART == generation {
                                described.generation = prev.generation;
                            }
                        }
                        let stream = described.stream.clone();
                        if private {
                            lock(&inner.private).insert(stream.clone());
                        } else {
                            lock(&inner.private).remove(&stream);
                        }
                        if let Err(e) = inner.sfu.relay_tracks(described.clone()).await {
                            tracing::warn!(%channel, error = %e, "cannot relay this channel");
                            continue;
                        }
                        current.insert(base, described);
                        inner.answered.notify_waiters();
                        lock(&inner.refused).remove(&stream);
                        by_base.insert(base, stream.clone());
                        gaps.reset(base, TRACK_BLOCK);
                        fresh.reset(base, TRACK_BLOCK);
                        if let Some(s) = subs.get_mut(&stream) {
                            s.base = Some(base);
                        }
                    }
                    Control::Privacy { channel, private } => {
                        if let Ok(stream) = StreamId::parse(&channel) {
                            if private {
                                lock(&inner.private).insert(stream);
                            } else {
                                lock(&inner.private).remove(&stream);
                            }
                            let _ = config.privacy.send(channel);
                        }
                    }
                    Control::Offline { channel } => {
                        if let Ok(stream) = StreamId::parse(&channel) {
                            let _ = inner.sfu.relay_offline(stream.clone()).await;
                            if let Some(s) = subs.get_mut(&stream) {
                                s.base = None;
                            }
                            // Nobody watches it here (a junk name, or a viewer that gave up):
                            // forget it now rather than hold one of MAX_WANTED for the grace
                            // period. Watched channels stay wanted and are asked for again.
                            if inner.sfu.viewers(stream.clone()).await.unwrap_or(0) == 0
                                && !inner.on_stage(&stream)
                            {
                                subs.remove(&stream);
                                inner.lock().remove(&stream);
                            }
                            inner.refuse(&stream);
                        }
                    }
                    Control::Stage { channel, participants, featured, speaking } => {
                        let Ok(stream) = StreamId::new(&channel) else { continue };
                        if !subs.contains_key(&stream) {
                            continue;
                        }
                        if participants.is_empty() {
                            lock(&inner.stages).remove(&stream);
                        } else {
                            // Every participant's stream and the mix are asked for at once,
                            // not when a viewer wants them: the stage's viewers are here.
                            let mut wanted = inner.lock();
                            let members = participants
                                .iter()
                                .filter_map(|p| StreamId::parse(&p.stream).ok())
                                .filter(|p| p.channel() == stream.as_str() && *p != stream);
                            for p in members.chain(std::iter::once(StreamId::mix(&stream))) {
                                if wanted.len() < MAX_WANTED {
                                    wanted.entry(p).or_insert_with(Instant::now);
                                }
                            }
                            drop(wanted);
                            let told = RelayedStage { participants, featured, speaking };
                            lock(&inner.stages).insert(stream, told);
                            inner.wake.notify_one();
                        }
                    }
                    Control::NotFound { channel } => {
                        if let Ok(stream) = StreamId::parse(&channel) {
                            inner.refuse(&stream);
                            subs.remove(&stream);
                            inner.lock().remove(&stream);
                        }
                    }
                    Control::Keepalive { t } => {
                        control.write(&Control::KeepaliveAck { t }).await.ok();
                    }
                    Control::Error { code, message } => {
                        return Err(RunError::Closed(format!("{code}: {message}")));
                    }
                    _ => {}
                }
            }
            datagram = large.next(&conn) => {
                let bytes = datagram.map_err(|e| RunError::Closed(e.to_string()))?;
                let Ok(proto::Datagram { track, stamp, rtp }) = proto::decode_datagram(&bytes) else {
                    config.metrics.dropped(1);
                    continue;
                };
                let base = track - track % TRACK_BLOCK;
                let Some(stream) = by_base.get(&base) else {
                    config.metrics.dropped(1);
                    continue;
                };
                let now = Instant::now();
                // Late packets count as arrived too: no NACK for what is dropped below. A packet
                // that fills a gap (a NACK's resend, or reordered) is behind by nature (a cold
                // edge's cache burst is repaired so) and is judged apart.
                let filled = rtp_seq(rtp).is_some_and(|seq| gaps.on_packet(track, seq, now));
                // Judged on the upstream's stamp where it sends one (the relay path's delay
                // alone), else on the media time.
                let clock = match stamp {
                    Some(s) => Some((s, Clock::Stamp)),
                    None => rtp_time(rtp).map(|ts| (ts, Clock::Media)),
                };
                if let Some((ts, clock)) = clock {
                    let verdict = if filled {
                        fresh.observe_repair(track, track - base, now)
                    } else {
                        fresh.observe_on(track, track - base, ts, clock, now)
                    };
                    match verdict {
                        // A stalled path's backlog: viewers get a fresh keyframe, not the past.
                        Verdict::Late => {
                            config.metrics.late(1);
                            continue;
                        }
                        Verdict::Forward { restart, ask_keyframe } => {
                            // The picture cannot go on from what was dropped: the stream starts
                            // again for the viewers as a new source (they wait for a keyframe,
                            // and their sequence numbers go on without a gap).
                            if let Some(d) = current.get_mut(&base).filter(|_| restart) {
                                d.generation = d.generation.wrapping_add(RESTART);
                                let _ = inner.sfu.relay_tracks(d.clone()).await;
                            }
                            if ask_keyframe {
                                control.write(&Control::Keyframe { track }).await.ok();
                            }
                        }
                    }
                }
                let packet = RelayIn { stream: stream.clone(), track: track - base, data: rtp.to_vec() };
                if ingest.try_send(packet).is_err() {
                    config.metrics.dropped(1);
                }
            }
            event = events.recv() => {
                if let Ok(SfuEvent::UpstreamKeyframe(stream, track)) = event {
                    if let Some(base) = subs.get(&stream).and_then(|s| s.base) {
                        control.write(&Control::Keyframe { track: base + track }).await.ok();
                    }
                }
            }
            _ = tick.tick() => {
                maintain(&mut control, inner, &mut subs, config.grace).await;
                config.metrics.upstream_sample(PathSample::of(&conn, false));
                if last_load.elapsed() >= LOAD_EVERY {
                    last_load = Instant::now();
                    report_load(&mut control, inner, config.capacity, &config.audience).await;
                }
            }
            _ = repair.tick() => {
                for (track, seqs) in gaps.due(Instant::now(), conn.rtt()) {
                    control.write(&Control::Nack { track, seqs }).await.ok();
                }
                // A video packet lost for good leaves every viewer's picture broken until the
                // next keyframe, and players are slow to ask (aiortc waits for its jitter
                // buffer to overflow: seconds). The upstream coalesces the requests.
                for track in gaps.take_lost() {
                    if track % TRACK_BLOCK != sfu::AUDIO_TRACK {
                        control.write(&Control::Keyframe { track }).await.ok();
                    }
                }
                let now = (gaps.nacked, gaps.repaired, gaps.unrepaired);
                if now != counted {
                    config.metrics.repair(now.0 - counted.0, now.1 - counted.1, now.2 - counted.2);
                    counted = now;
                }
            }
            () = inner.wake.notified() => {
                maintain(&mut control, inner, &mut subs, config.grace).await;
                if inner.draining.load(Ordering::SeqCst) && !reported_draining {
                    reported_draining = true;
                    report_load(&mut control, inner, config.capacity, &config.audience).await;
                }
            }
            reason = conn.closed() => return Err(RunError::Closed(reason.to_string())),
        }
    }
}

/// Tell the upstream how loaded this edge is (and whether it drains).
async fn report_load(
    control: &mut ControlStream,
    inner: &Inner,
    capacity: u32,
    below: &crate::Audience,
) {
    let Ok(stats) = inner.sfu.stats().await else {
        return;
    };
    let channels: BTreeMap<String, u32> = stats
        .streams
        .iter()
        .map(|st| {
            (
                st.name.clone(),
                u32::try_from(st.viewers + st.relays).unwrap_or(u32::MAX),
            )
        })
        .collect();
    // Each viewer once, under its channel (a stage's viewer may show a guest and the mix).
    let mut audience: BTreeMap<String, u32> = stats
        .streams
        .iter()
        .filter(|st| !st.name.contains('~'))
        .map(|st| {
            (
                st.name.clone(),
                u32::try_from(st.audience).unwrap_or(u32::MAX),
            )
        })
        .collect();
    for (channel, n) in below.totals() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let e = audience.entry(channel).or_insert(0);
        *e = e.saturating_add(n);
    }
    let msg = Control::Load {
        viewers: channels.values().fold(0u32, |a, v| a.saturating_add(*v)),
        capacity,
        channels,
        draining: inner.draining.load(Ordering::SeqCst),
        audience,
    };
    control.write(&msg).await.ok();
}

/// Subscribe what viewers want, re-ask for offline channels, and let go of channels that have
/// had no viewer for the grace period.
async fn maintain(
    control: &mut ControlStream,
    inner: &Inner,
    subs: &mut HashMap<StreamId, Sub>,
    grace: Duration,
) {
    let now = Instant::now();
    let wanted: Vec<(StreamId, Instant)> =
        inner.lock().iter().map(|(s, t)| (s.clone(), *t)).collect();
    // An answer matters only to ensures already waiting (at most ENSURE_WITHIN).
    lock(&inner.refused).retain(|_, at| now.saturating_duration_since(*at) < ENSURE_WITHIN);
    if wanted.is_empty() {
        return;
    }
    // One query for every channel (viewers + relays below), not one round trip per wanted
    // name: this runs inside the loop that also reads the relay's datagrams.
    let Ok(stats) = inner.sfu.stats().await else {
        return;
    };
    let demand: HashMap<&str, u64> = stats
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.viewers + s.relays))
        .collect();
    for (stream, last_viewer) in wanted {
        let mut viewers = demand.get(stream.as_str()).copied().unwrap_or(0);
        if inner.on_stage(&stream) {
            viewers += demand.get(stream.channel()).copied().unwrap_or(0);
        }
        if viewers > 0 {
            inner.lock().insert(stream.clone(), now);
        } else if now.saturating_duration_since(last_viewer) > grace {
            inner.lock().remove(&stream);
            lock(&inner.stages).remove(&stream);
            if subs.remove(&stream).is_some() {
                control
                    .write(&Control::Unsubscribe {
                        channel: stream.to_string(),
                    })
                    .await
                    .ok();
            }
            // Forget the stream here too: a later viewer must not start from a stale cache.
            let _ = inner.sfu.relay_offline(stream).await;
            continue;
        }
        let ask = match subs.get(&stream) {
            None => true,
            Some(s) => s.base.is_none() && now.saturating_duration_since(s.asked) > RESUBSCRIBE,
        };
        if ask {
            let base = subs.get(&stream).and_then(|s| s.base);
            subs.insert(stream.clone(), Sub { base, asked: now });
            control
                .write(&Control::Subscribe {
                    channel: stream.to_string(),
                })
                .await
                .ok();
        }
    }
}
