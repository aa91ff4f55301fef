//! AeThex LIVE: the `aethex` binary's library side. `serve` wires the SFU driver, the HTTP
//! signaling and storage together; `main.rs` only parses flags and calls it, and tests call the
//! same function in-process on `127.0.0.1:0`.

pub mod config;
mod http_server;
mod node;
mod stage_edge;
mod stage_live;

pub use node::token_secret;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use signaling::{AppState, HttpSettings, IceServer, Metrics, Sessions, Store};
use tokio::net::{TcpListener, UdpSocket};

pub use config::Config;

/// Sockets bound before serving, so callers learn the real ports first.
pub struct Listeners {
    /// HTTP.
    pub http: TcpListener,
    /// Media (ICE/DTLS/SRTP).
    pub udp: UdpSocket,
    /// ICE-TCP, on the UDP port's number (when `rtc.ice_tcp`).
    pub tcp: Option<TcpListener>,
}

impl Listeners {
    /// Bind both sockets from the configuration.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        let http = TcpListener::bind(config.http.listen).await?;
        let media = SocketAddr::new(config.rtc.bind_ip, config.rtc.udp_port);
        if !config.rtc.ice_tcp {
            let udp = UdpSocket::bind(media).await?;
            return Ok(Self {
                http,
                udp,
                tcp: None,
            });
        }
        // ICE-TCP listens on the UDP port's number. With an ephemeral UDP port (0) that number
        // may be taken on TCP: try a few.
        let attempts = if config.rtc.udp_port == 0 { 16 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(media).await?;
            let port = udp.local_addr()?.port();
            match TcpListener::bind(SocketAddr::new(config.rtc.bind_ip, port)).await {
                Ok(tcp) => {
                    return Ok(Self {
                        http,
                        udp,
                        tcp: Some(tcp),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no port for ICE-TCP")))
    }

    /// Bound ICE-TCP address, when ICE-TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Bound UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
            .local_addr()
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// The public base URL for printed links.
pub fn public_url(config: &Config, http_addr: SocketAddr) -> String {
    if !config.http.public_url.is_empty() {
        return config.http.public_url.trim_end_matches('/').to_string();
    }
    let ip = if http_addr.ip().is_unspecified() {
        config.rtc.effective_advertise_ips()[0]
    } else {
        http_addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, http_addr.port()))
}

/// Open the database: `database.url`, else `aethex.db` in the data directory; run storage's
/// migrations, then the platform's (what [`serve`] and every command that uses the store
/// expect).
pub async fn open_store(config: &Config) -> Result<Store, signaling::StoreError> {
    let store = if config.database.url.is_empty() {
        Store::open_data_dir(&config.storage.data_dir).await?
    } else {
        Store::open(&config.database.url).await?
    };
    platform::migrate(&store).await?;
    Ok(store)
}

/// Where the database is, for messages (no password).
pub fn store_location(config: &Config) -> String {
    if config.database.url.is_empty() {
        config
            .storage
            .data_dir
            .join("aethex.db")
            .display()
            .to_string()
    } else {
        storage::redacted(&config.database.url)
    }
}

/// The platform API's view of the media side: which channels are live with how many viewers,
/// playback tokens, and what a channel change does to live sessions.
#[derive(Clone)]
struct MediaSide {
    sfu: sfu::driver::SfuHandle,
    sessions: Arc<Sessions>,
    cluster: Arc<signaling::Cluster>,
    /// Channels turned private, for the relay to tell the edges below.
    privacy: tokio::sync::broadcast::Sender<String>,
    /// What the live stages' drivers say, and the owners' controls for them.
    stages: Arc<signaling::stage_board::StageBoard>,
}

impl MediaSide {
    async fn close_tokenless(&self, channel: &str) {
        let peers = self.sessions.take_tokenless_viewers(channel);
        if !peers.is_empty() {
            tracing::info!(%channel, viewers = peers.len(), "channel private: closing viewers without a token");
        }
        self.close_all(peers).await;
    }

    /// At an edge: close tokenless viewers of each channel the upstream says turned private.
    fn follow_upstream_privacy(
        &self,
        source: Arc<dyn signaling::ChannelSource>,
    ) -> tokio::task::JoinHandle<()> {
        let media = self.clone();
        let mut changes = self.privacy.subscribe();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(channel) if source.is_private(&channel) => {
                        media.close_tokenless(&channel).await
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    async fn close_all(&self, peers: Vec<sfu::PeerId>) {
        for peer in peers {
            self.sessions.forget_peer(peer);
            let _ = self.sfu.close(peer).await;
        }
    }
}

impl platform::LiveInfo for MediaSide {
    fn channels(&self) -> platform::LiveChannels<'_> {
        Box::pin(async move {
            let Ok(stats) = self.sfu.stats().await else {
                return Vec::new();
            };
            stats
                .streams
                .into_iter()
                // A stage's guests and mix are its channel's: one entry, one audience.
                .filter(|s| !s.name.contains('~'))
                .map(|s| {
                    // Co-streamers watching the others are on the stage, not in the audience.
                    let participants = self.sessions.participants_watching(&s.name);
                    let state = platform::LiveState {
                        live: s.live,
                        viewers: s.audience.saturating_sub(participants),
                    };
                    (s.name, state)
                })
                .collect()
        })
    }

    fn stage<'a>(&'a self, channel: &'a str) -> platform::LiveStage<'a> {
        Box::pin(async move {
            let now = self.stages.get(channel).unwrap_or_default();
            let controls = self.stages.controls(channel);
            let Ok(host) = sfu::StreamId::new(channel) else {
                return Vec::new();
            };
            let mut on_stage: Vec<platform::OnStage> = self
                .sessions
                .presence(channel)
                .into_iter()
                .map(|p| {
                    let stream = participant_stream(&host, p.invite.as_deref());
                    platform::OnStage {
                        invite: p.invite,
                        live: p.publishing,
                        watching: p.watching,
                        speaking: now.speaking.contains(&stream),
                        featured: now.featured.as_ref() == Some(&stream),
                        pinned: controls.pinned.as_ref() == Some(&stream),
                        muted: controls.muted.contains(&stream),
                        slot: None,
                    }
                })
                .collect();
            // The slots a joining viewer gets: the featured participant first, then the
            // others that publish in this order (signaling::stage::watch).
            let mut slots: Vec<usize> = (0..on_stage.len()).filter(|i| on_stage[*i].live).collect();
            if let Some(at) = slots.iter().position(|i| on_stage[*i].featured) {
                let featured = slots.remove(at);
                slots.insert(0, featured);
            }
            for (slot, i) in slots.into_iter().enumerate() {
                on_stage[i].slot = Some(slot);
            }
            on_stage
        })
    }

    fn end_guest<'a>(&'a self, channel: &'a str, invite: &'a str) -> platform::LiveAction<'a> {
        Box::pin(async move {
            let peers = self.sessions.take_guest(channel, invite);
            if !peers.is_empty() {
                tracing::info!(%channel, guest = %invite, "stage guest removed: ending its sessions");
            }
            for peer in peers {
                let _ = self.sfu.close(peer).await;
            }
        })
    }

    fn stage_control<'a>(
        &'a self,
        channel: &'a str,
        control: platform::StageControl,
    ) -> platform::LiveAction<'a> {
        Box::pin(async move {
            let Ok(host) = sfu::StreamId::new(channel) else {
                return;
            };
            match control {
                platform::StageControl::Feature(pick) => {
                    tracing::info!(%channel, pinned = ?pick, "the owner picked who is featured");
                    let stream = pick.map(|who| participant_stream(&host, who.as_deref()));
                    self.stages.pin(channel, stream);
                }
                platform::StageControl::Mute(who, muted) => {
                    self.stages
                        .mute(channel, &participant_stream(&host, who.as_deref()), muted);
                }
            }
        })
    }

    fn token_allows(&self, channel: &str, token: &str) -> bool {
        self.cluster
            .tokens
            .verify(token, channel, cluster::token::unix_now())
            .is_ok()
    }

    fn end_publisher<'a>(&'a self, channel: &'a str) -> platform::LiveAction<'a> {
        Box::pin(async move {
            if let Some(peer) = self.sessions.publisher_of(channel) {
                tracing::info!(%channel, "stream key rotated: ending the live publisher");
                self.close_all(vec![peer]).await;
            }
        })
    }

    fn privatised<'a>(&'a self, channel: &'a str) -> platform::LiveAction<'a> {
        Box::pin(async move {
            self.close_tokenless(channel).await;
            // Edges below close theirs when the relay tells them (no receiver: no edges).
            let _ = self.privacy.send(channel.to_string());
        })
    }
}

/// Run a node until `shutdown` resolves; then stop accepting, close every session, return.
/// `store` comes from [`open_store`] (or has had [`platform::migrate`] run on it).
pub async fn serve(
    config: Config,
    store: Store,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let udp_port = listeners.udp_addr().port();
    let advertised = config.rtc.effective_advertise_ips();
    let candidates: Vec<SocketAddr> = advertised
        .iter()
        .map(|ip| SocketAddr::new(*ip, udp_port))
        .collect();
    let tcp_candidates: Vec<SocketAddr> = match listeners.tcp_addr() {
        Some(a) => advertised
            .iter()
            .map(|ip| SocketAddr::new(*ip, a.port()))
            .collect(),
        None => Vec::new(),
    };
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let core = config.sfu.core(candidates, tcp_candidates, &config.limits);
    let http_addr = listeners.http_addr();
    let (sfu, driver) = sfu::driver::spawn(listeners.udp, listeners.tcp, core, seed)?;
    let sessions = Arc::new(Sessions::default());
    let stage_board = Arc::new(signaling::stage_board::StageBoard::default());
    let origin_stages = Arc::new(stage_live::OriginStages {
        sessions: sessions.clone(),
        board: stage_board.clone(),
    });
    let node = node::start(&config, http_addr, &sfu, &store, origin_stages).await?;
    let media = MediaSide {
        sfu: sfu.clone(),
        sessions: sessions.clone(),
        cluster: node.cluster.clone(),
        privacy: node.privacy.clone(),
        stages: stage_board.clone(),
    };
    let privacy_follower = node
        .source
        .clone()
        .map(|source| media.follow_upstream_privacy(source));
    // At an edge: one-section viewers of a relayed stage follow its featured participant.
    let stage_follower = node
        .source
        .clone()
        .map(|source| stage_edge::follow(sfu.clone(), sessions.clone(), source));
    let mut events = sfu.events();
    let forget = sessions.clone();
    let stage_sfu = sfu.clone();
    let stages = stage_live::Stages::new(sfu.clone(), sessions.clone(), stage_board.clone());
    let (tracker, board) = analytics(&config, &store, &node).await?;
    // Viewer sessions are written in the background: the watcher never waits for the database.
    let (viewers, recorder) = platform::viewer_sessions::Recorder::spawn(tracker.clone());
    // At an origin, a publisher's arrival and departure are stream records and webhook events
    // (an edge relays streams whose records live at the origin).
    let records =
        (!config.relay.is_edge()).then(|| (store.clone(), public_url(&config, http_addr)));
    let watcher = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(sfu::SfuEvent::PeerConnected(peer)) => {
                    forget.connected(peer);
                    if let Some((channel, client)) = forget.viewer(peer) {
                        viewers.joined(peer.0, &channel, &client);
                    }
                }
                Ok(sfu::SfuEvent::PeerClosed(peer, _)) => {
                    forget.forget_peer(peer);
                    viewers.left(peer.0);
                }
                // A stage's mix is the stage's own work, not a publisher.
                Ok(sfu::SfuEvent::StreamLive(s) | sfu::SfuEvent::StreamOffline(s))
                    if s.mix_of().is_some() => {}
                Ok(sfu::SfuEvent::StreamLive(s)) if s.guest_of().is_some() => {
                    // Shown to the stage's watchers here, origin or edge; mixed at the origin.
                    show_on_stage(&forget, &stage_sfu, &s);
                    if records.is_some() {
                        stages.ensure(s.channel());
                    }
                    if let (Some((store, url)), Some((channel, guest))) = (&records, s.guest_of()) {
                        if let Err(e) =
                            platform::stage::guest_joined(store, channel, guest, url).await
                        {
                            tracing::warn!(stream = %s, error = %e, "stage.joined not written");
                        }
                    }
                }
                Ok(sfu::SfuEvent::StreamOffline(s)) if s.guest_of().is_some() => {
                    if let (Some((store, url)), Some((channel, guest))) = (&records, s.guest_of()) {
                        if let Err(e) =
                            platform::stage::guest_left(store, channel, guest, url).await
                        {
                            tracing::warn!(stream = %s, error = %e, "stage.left not written");
                        }
                    }
                }
                Ok(sfu::SfuEvent::StreamLive(s)) => {
                    tracing::info!(stream = %s, "stream live");
                    show_on_stage(&forget, &stage_sfu, &s);
                    if let Some((store, url)) = &records {
                        if let Err(e) = platform::streams::started(store, s.as_str(), url).await {
                            tracing::warn!(stream = %s, error = %e, "stream record not written");
                        }
                    }
                }
                Ok(sfu::SfuEvent::StreamOffline(s)) => {
                    tracing::info!(stream = %s, "stream offline");
                    if let Some((store, url)) = &records {
                        if let Err(e) = platform::streams::ended(store, s.as_str(), url).await {
                            tracing::warn!(stream = %s, error = %e, "stream record not closed");
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event watcher lagged");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });

    // An edge keeps its own database unless told the origin's (database.url): then it is
    // only a relay, and takes no publishers and serves no platform API.
    let relay_only = config.relay.is_edge() && config.database.url.is_empty();
    let wrong_role = relay_only.then(|| {
        format!(
            "this node is an edge relay: publish and use the platform API at the origin \
             (relay upstream {})",
            config.relay.origin_host()
        )
    });
    let settings = HttpSettings {
        max_body_bytes: config.http.max_body_bytes,
        ice_servers: config
            .rtc
            .ice_servers
            .iter()
            .map(|s| IceServer {
                url: s.url.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect(),
        refuse_publishers: wrong_role.clone(),
        metrics_token: config.http.metrics_token.clone(),
        metrics_on_main: config.http.metrics_listen.is_empty(),
        request_timeout: std::time::Duration::from_millis(config.http.request_timeout_ms),
    };
    let invalid = |e: config::ConfigError| std::io::Error::other(e.to_string());
    let metrics = Arc::new(Metrics::new());
    let state = AppState {
        sfu: sfu.clone(),
        store: store.clone(),
        sessions,
        settings: Arc::new(settings),
        metrics: metrics.clone(),
        upstream: node.source.clone(),
        cluster: node.cluster.clone(),
        admission: Arc::new(signaling::Admission::new(
            config.signaling_limits().map_err(invalid)?,
        )),
        stages: stage_board,
    };
    // A stream key replaced under this node (`aethex channel rotate-key`, another origin) ends
    // the publisher that used it.
    let key_watch = tokio::spawn(signaling::key_watch::watch_keys(state.clone()));
    let chat = if config.cluster.redis_url.is_empty() {
        platform::chat_hub::ChatHub::local()
    } else {
        platform::chat_hub::ChatHub::redis(&config.cluster.redis_url, &config.cluster.redis_prefix)
            .await
            .map_err(|e| std::io::Error::other(format!("chat over Redis: {e}")))?
    };
    let platform_state = platform::State {
        chat,
        buckets: Default::default(),
        board: board.clone(),
        guards: Arc::new(platform::limits::Guards::new(
            config.platform_limits().map_err(invalid)?,
            Some(metrics.clone()),
        )),
        store: store.clone(),
        live: Arc::new(media.clone()),
        settings: Arc::new(platform::Settings {
            session_ttl_secs: config.database.session_ttl_secs,
            public_url: public_url(&config, http_addr),
        }),
    };
    let api = match &wrong_role {
        Some(why) => platform::refused_router(why.clone()),
        None => platform::router(platform_state),
    };
    let metrics_only = http_server::bind_metrics(&config).await?;
    let metrics_app = signaling::metrics_router(state.clone());
    let app = signaling::router_with(state, api);
    let webhooks = platform::webhooks::spawn_worker_as(
        store.clone(),
        platform::webhooks::WorkerConfig {
            allow_private_networks: config.webhooks.allow_private_networks,
            ..Default::default()
        },
        node.cluster.node_id.clone(),
    );
    let sampler = tokio::spawn(sample_forever(
        tracker.clone(),
        board.clone(),
        media,
        !config.relay.is_edge(),
        config.analytics.sample_secs,
    ));
    let drain = node.drain(sfu.clone(), config.cluster.drain_timeout_ms);
    let stopping = async move {
        shutdown.await;
        drain.await;
    };
    let server_limits = http_server::limits(&config).map_err(invalid)?;
    let metrics_server = metrics_only.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            println!("  metrics         http://{addr}/metrics");
        }
        tokio::spawn(http_server::serve(
            listener,
            metrics_app,
            server_limits.clone(),
            metrics.clone(),
            std::future::pending(),
        ))
    });
    http_server::serve(listeners.http, app, server_limits, metrics, stopping).await?;
    if let Some(task) = metrics_server {
        task.abort();
    }
    tracing::info!("HTTP stopped; closing sessions");
    node.stop().await;
    sfu.shutdown().await;
    driver.finished().await;
    watcher.abort();
    webhooks.abort();
    sampler.abort();
    key_watch.abort();
    if let Some(task) = stage_follower {
        task.abort();
    }
    if let Some(task) = privacy_follower {
        task.abort();
    }
    // The watcher's end drops the last recorder handle: what was queued is written, then the
    // writer ends.
    let _ = watcher.await;
    if tokio::time::timeout(std::time::Duration::from_secs(5), recorder)
        .await
        .is_err()
    {
        tracing::warn!("viewer session writer did not finish within 5 s");
    }
    board.withdraw().await;
    if let Err(e) = tracker.finish().await {
        tracing::warn!(error = %e, "open viewer sessions not closed");
    }
    store.close().await;
    Ok(())
}

/// The viewers at this node's edges, as the platform counts them.
struct EdgeAudience(Arc<edge::Audience>);

impl platform::analytics::Below for EdgeAudience {
    fn of(&self, channel: &str) -> u64 {
        self.0.of(channel)
    }
    fn all(&self) -> std::collections::HashMap<String, u64> {
        self.0.totals()
    }
}

/// Viewer-session recording and the cluster's viewer counts (through Redis when configured).
async fn analytics(
    config: &Config,
    store: &Store,
    node: &node::Node,
) -> std::io::Result<(
    Arc<platform::viewer_sessions::Tracker>,
    Arc<platform::analytics::ViewerBoard>,
)> {
    use platform::analytics::ViewerBoard;
    use platform::viewer_sessions::Tracker;
    let node_id = node.cluster.node_id.as_str();
    let salt = token_secret(config)?;
    let tracker = Arc::new(Tracker::new(store.clone(), node_id, &salt));
    match tracker.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "closed viewer sessions left open by a crash"),
        Err(e) => tracing::warn!(error = %e, "viewer sessions left open not closed"),
    }
    let c = &config.cluster;
    let board = if c.redis_url.is_empty() {
        ViewerBoard::local(node_id)
    } else {
        // A node's counts outlive three missed samples, no more.
        let ttl = std::time::Duration::from_secs(3 * config.analytics.sample_secs);
        ViewerBoard::redis(&c.redis_url, &c.redis_prefix, node_id, ttl)
            .await
            .map_err(|e| std::io::Error::other(format!("viewer counts over Redis: {e}")))?
    };
    let board = board.with_below(Arc::new(EdgeAudience(node.audience.clone())));
    let board = if config.relay.is_edge() {
        board.at_edge()
    } else {
        board
    };
    Ok((tracker, Arc::new(board)))
}

/// Every `period_secs`: share this node's viewer counts, refresh its sessions, store samples.
async fn sample_forever(
    tracker: Arc<platform::viewer_sessions::Tracker>,
    board: Arc<platform::analytics::ViewerBoard>,
    live: MediaSide,
    origin: bool,
    period_secs: u64,
) {
    use platform::LiveInfo;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(period_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let here = live.channels().await;
        platform::analytics::sample(&tracker, &board, &here, origin, period_secs).await;
    }
}

/// The stream of a stage participant: the host's is its channel's (`invite` `None`), a
/// guest's is the channel's guest stream.
fn participant_stream(host: &sfu::StreamId, invite: Option<&str>) -> sfu::StreamId {
    match invite {
        Some(g) => sfu::StreamId::guest(host, g),
        None => host.clone(),
    }
}

/// A stream went live at the origin: show it to the stage's watching sessions with a free
/// section, without holding up the event watcher.
fn show_on_stage(sessions: &Arc<Sessions>, sfu: &sfu::driver::SfuHandle, stream: &sfu::StreamId) {
    let (sessions, sfu, stream) = (sessions.clone(), sfu.clone(), stream.clone());
    tokio::spawn(async move {
        let shown = signaling::stage::show_arrival(&sessions, &sfu, &stream).await;
        if !shown.is_empty() {
            tracing::info!(stream = %stream, sessions = shown.len(), "shown to the stage's watchers");
        }
    });
}
