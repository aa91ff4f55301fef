//! A node's place in the cluster: the relay listener edges connect to, the upstream (at an
//! edge), the registry and routing settings, playback-token key, live-channel announcements,
//! and draining on shutdown.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{LiveRecord, Registry, TokenKey};
use sfu::driver::SfuHandle;
use sfu::SfuEvent;
use signaling::{Availability, ChannelSource, Cluster, RelayedStage, Store};

use crate::config::Config;
use crate::public_url;

/// File in the data directory holding a generated playback-token secret (single node).
const TOKEN_SECRET_FILE: &str = "token.secret";

/// The running cluster parts of a node.
pub(crate) struct Node {
    /// Routing and token settings for the HTTP layer.
    pub cluster: Arc<Cluster>,
    /// At an edge: where channels come from.
    pub source: Option<Arc<dyn ChannelSource>>,
    /// Viewers at the edges below this node, from their load reports.
    pub audience: Arc<edge::Audience>,
    /// Channels that turned private (here, or told by the upstream), for the edges below.
    pub privacy: tokio::sync::broadcast::Sender<String>,
    upstream: Option<edge::Upstream>,
    listener: Option<edge::quic::Endpoint>,
    announcer: Option<tokio::task::JoinHandle<()>>,
}

/// `signaling`'s view of an edge's upstream.
struct EdgeSource(edge::Upstream);

impl ChannelSource for EdgeSource {
    fn ensure<'a>(
        &'a self,
        channel: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Availability> + Send + 'a>> {
        Box::pin(async move {
            match self.0.ensure(channel).await {
                Some(private) => Availability::Live { private },
                None => Availability::Offline,
            }
        })
    }

    fn upstream_url(&self) -> Option<String> {
        self.0.upstream_url()
    }

    fn is_private(&self, channel: &str) -> bool {
        // Channels here are the ones relayed from upstream, which marks the private ones.
        sfu::StreamId::new(channel).map_or(true, |s| self.0.is_private(&s))
    }

    fn stage(&self, channel: &str) -> Option<RelayedStage> {
        self.0.stage(channel).map(|s| relayed(channel, s))
    }

    fn stages(&self) -> Vec<(sfu::StreamId, RelayedStage)> {
        self.0
            .stages()
            .into_iter()
            .map(|(c, s)| {
                let stage = relayed(c.as_str(), s);
                (c, stage)
            })
            .collect()
    }
}

/// A stage as the relay told it, in `signaling`'s types (names that do not parse as
/// streams of `channel` are left out).
fn relayed(channel: &str, stage: edge::RelayedStage) -> RelayedStage {
    let ours = |name: &str| {
        sfu::StreamId::parse(name)
            .ok()
            .filter(|s| s.channel() == channel)
    };
    RelayedStage {
        participants: stage
            .participants
            .into_iter()
            .filter_map(|p| Some((ours(&p.stream)?, p.name)))
            .collect(),
        now: signaling::stage_board::StageNow {
            featured: stage.featured.as_deref().and_then(ours),
            speaking: stage.speaking.iter().filter_map(|s| ours(s)).collect(),
        },
    }
}

/// At an origin the store says which channels are private.
struct StorePolicy(Store);

impl edge::ChannelPolicy for StorePolicy {
    fn private<'a>(
        &'a self,
        channel: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move { matches!(self.0.is_private(channel).await, Ok(Some(true))) })
    }
}

/// The secret playback tokens are signed with: `cluster.token_secret`, else `relay.secret`,
/// else one generated once and kept in the data directory (a single node needs no setup).
pub fn token_secret(config: &Config) -> std::io::Result<Vec<u8>> {
    if !config.cluster.token_secret.is_empty() {
        return Ok(config.cluster.token_secret.as_bytes().to_vec());
    }
    if !config.relay.secret.is_empty() {
        return Ok(config.relay.secret.as_bytes().to_vec());
    }
    generated_secret(&config.storage.data_dir)
}

fn generated_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let secret = kept_in_data_dir(
        data_dir,
        TOKEN_SECRET_FILE,
        |s| s.len() >= 32,
        || random_hex(32),
    )?;
    Ok(secret.into_bytes())
}

/// File in the data directory holding this node's generated id.
const NODE_ID_FILE: &str = "node.id";

/// `relay.node_id`, else `{region or "origin"}-{8 random hex}` generated once and kept in the
/// data directory: stable across restarts (the registry forgets the old entries of a
/// restarted node by its id) and distinct between nodes (two edges on port 8080 must not
/// evict each other).
fn node_id(config: &Config) -> std::io::Result<String> {
    if !config.relay.node_id.is_empty() {
        return Ok(config.relay.node_id.clone());
    }
    let role = if config.relay.is_edge() {
        config.relay.region.clone()
    } else {
        "origin".to_string()
    };
    // The file holds the random part only: an origin and an edge started on one data
    // directory (tests, demos) still get distinct ids.
    let suffix = kept_in_data_dir(
        &config.storage.data_dir,
        NODE_ID_FILE,
        |s| (4..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()),
        || random_hex(4),
    )?;
    Ok(format!("{role}-{suffix}"))
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(raw))
}

/// The trimmed content of `name` in `data_dir`, made by `make` (mode 0600) when missing. A
/// file `valid` refuses is an error naming it (never silently replaced).
fn kept_in_data_dir(
    data_dir: &Path,
    name: &str,
    valid: impl Fn(&str) -> bool,
    make: impl Fn() -> std::io::Result<String>,
) -> std::io::Result<String> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if valid(s.trim()) => return Ok(s.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not valid: delete it to generate a new one",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let value = make()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut f) => std::io::Write::write_all(&mut f, value.as_bytes())?,
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return kept_in_data_dir(data_dir, name, valid, make)
        }
        Err(e) => return Err(e),
    }
    Ok(value)
}

/// The registry: Redis when configured; embedded when this node accepts edges; none otherwise.
async fn registry(config: &Config, accepts_edges: bool) -> std::io::Result<Option<Registry>> {
    let c = &config.cluster;
    if !c.redis_url.is_empty() {
        let r = Registry::redis(&c.redis_url, &c.redis_prefix)
            .await
            .map_err(|e| std::io::Error::other(format!("cluster.redis_url: {e}")))?;
        return Ok(Some(r));
    }
    Ok(accepts_edges.then(Registry::embedded))
}

pub(crate) async fn start(
    config: &Config,
    http: SocketAddr,
    sfu: &SfuHandle,
    store: &Store,
    origin_stages: Arc<dyn edge::StageSource>,
) -> std::io::Result<Node> {
    let secret: Arc<[u8]> = Arc::from(config.relay.secret.as_bytes());
    let node_id = node_id(config)?;
    let public = public_url(config, http);
    let listen = config
        .relay
        .listen_addr()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let registry = registry(config, listen.is_some()).await?;
    if let Some(r) = &registry {
        // A restart must not leave this node's old channels and edges behind.
        if let Err(e) = r.forget_node(&node_id).await {
            tracing::warn!(error = %e, "could not clear this node's old registry entries");
        }
        println!("  registry        {} (node {node_id})", r.backend());
    }
    let metrics = Arc::new(edge::RelayMetrics::new());
    let pki = if config.relay.mutual_tls() {
        let r = &config.relay;
        let pki = edge::quic::Pki::load(
            Path::new(&r.tls_cert),
            Path::new(&r.tls_key),
            Path::new(&r.tls_ca),
        )
        .map_err(|e| std::io::Error::other(format!("relay mutual TLS: {e}")))?;
        Some(Arc::new(pki))
    } else {
        None
    };
    let mut cluster = Cluster::new(
        node_id.clone(),
        config.relay.region.clone(),
        TokenKey::new(&token_secret(config)?),
    );
    cluster.registry = registry.clone();
    cluster.rules = config
        .cluster
        .rules()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut node = Node {
        cluster: Arc::new(Cluster::new(
            String::new(),
            String::new(),
            TokenKey::new(b""),
        )),
        source: None,
        audience: Arc::default(),
        privacy: tokio::sync::broadcast::channel(64).0,
        upstream: None,
        listener: None,
        announcer: None,
    };
    let mut policy: Arc<dyn edge::ChannelPolicy> = Arc::new(StorePolicy(store.clone()));
    // An edge serving a tier below tells it the stages its own upstream told.
    let mut stages = origin_stages;
    if config.relay.is_edge() {
        let upstream = tokio::net::lookup_host(config.relay.origin.as_str())
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::other(format!("cannot resolve {}", config.relay.origin))
            })?;
        let edge_config = edge::EdgeConfig {
            upstream,
            node_id: node_id.clone(),
            region: config.relay.region.clone(),
            public_url: public.clone(),
            capacity: u32::try_from(config.sfu.max_peers).unwrap_or(u32::MAX),
            secret: secret.clone(),
            grace: Duration::from_millis(config.relay.grace_ms),
            metrics: metrics.clone(),
            pki: pki.clone(),
            server_name: config.relay.origin_host().to_string(),
            audience: node.audience.clone(),
            privacy: node.privacy.clone(),
        };
        let up = edge::Upstream::start(edge_config, sfu.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        println!(
            "  upstream        {} (region {})",
            config.relay.origin, config.relay.region
        );
        node.source = Some(Arc::new(EdgeSource(up.clone())));
        policy = Arc::new(up.clone());
        stages = Arc::new(up.clone());
        node.upstream = Some(up);
    } else if let Some(r) = &registry {
        node.announcer = Some(announce_live(
            r.clone(),
            sfu,
            node_id.clone(),
            public.clone(),
            config.cluster.edge_ttl(),
        ));
    }
    if let Some(addr) = listen {
        let upstream_config = edge::UpstreamConfig {
            node_id: node_id.clone(),
            public_url: public.clone(),
            secret: secret.clone(),
            pull: node.upstream.clone(),
            registry,
            edge_ttl: config.cluster.edge_ttl(),
            policy,
            metrics: metrics.clone(),
            pki,
            audience: node.audience.clone(),
            max_channels: edge::upstream::MAX_CHANNELS,
            privacy: node.privacy.clone(),
            stages,
        };
        let (bound, endpoint) = edge::upstream::listen(addr, upstream_config, sfu.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(%bound, "relay listening (QUIC)");
        let auth = if config.relay.mutual_tls() {
            "cluster secret + mutual TLS"
        } else {
            "cluster secret"
        };
        println!("  relay (QUIC)    {bound}  edges connect here ({auth})");
        node.listener = Some(endpoint);
    }
    if node.listener.is_some() || node.upstream.is_some() {
        cluster.extra_metrics = Some(Arc::new(move || metrics.render()));
    }
    node.cluster = Arc::new(cluster);
    Ok(node)
}

/// Keep the registry's record of the channels live at this origin: set when a publisher
/// arrives, removed when it leaves, refreshed well within the TTL.
fn announce_live(
    registry: Registry,
    sfu: &SfuHandle,
    node_id: String,
    public_url: String,
    ttl: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut events = sfu.events();
    tokio::spawn(async move {
        let mut live: HashSet<String> = HashSet::new();
        let mut refresh = tokio::time::interval(ttl / 3);
        let record = |channel: &str| LiveRecord {
            channel: channel.to_string(),
            node_id: node_id.clone(),
            public_url: public_url.clone(),
        };
        loop {
            let result = tokio::select! {
                event = events.recv() => match event {
                    // A stage guest's stream is found through its channel's host.
                    Ok(SfuEvent::StreamLive(s) | SfuEvent::StreamOffline(s))
                        if s.guest_of().is_some() || s.mix_of().is_some() => Ok(()),
                    Ok(SfuEvent::StreamLive(s)) => {
                        live.insert(s.to_string());
                        registry.put_live(&record(s.as_str()), ttl).await
                    }
                    Ok(SfuEvent::StreamOffline(s)) => {
                        live.remove(s.as_str());
                        registry.remove_live(s.as_str(), &node_id).await
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => Ok(()),
                },
                _ = refresh.tick() => {
                    let mut result = Ok(());
                    for channel in &live {
                        result = result.and(registry.put_live(&record(channel), ttl).await);
                    }
                    result
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "registry update failed");
            }
        }
    })
}

impl Node {
    /// What to do between the shutdown signal and closing: an edge drains (reports itself
    /// draining, sends new viewers upstream, waits for its viewers to leave, bounded).
    pub fn drain(
        &self,
        sfu: SfuHandle,
        timeout_ms: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        let cluster = self.cluster.clone();
        let upstream = self.upstream.clone();
        async move {
            let Some(upstream) = upstream else {
                return;
            };
            cluster.start_draining();
            upstream.drain();
            let until = Instant::now() + Duration::from_millis(timeout_ms);
            tracing::info!(
                timeout_ms,
                "draining: new viewers go upstream; waiting for viewers to leave"
            );
            loop {
                let viewers = sfu.stats().await.map_or(0, |s| s.subscribers);
                if viewers == 0 {
                    tracing::info!("drained: no viewers left");
                    return;
                }
                if Instant::now() >= until {
                    tracing::info!(viewers, "drain timeout: closing the remaining sessions");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Close the relay listener and take this node out of the registry.
    pub async fn stop(self) {
        if let Some(endpoint) = self.listener {
            endpoint.close(0u32.into(), b"shutting down");
        }
        if let Some(task) = self.announcer {
            task.abort();
        }
        if let Some(r) = &self.cluster.registry {
            let _ = r.forget_node(&self.cluster.node_id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_stage_keeps_only_streams_of_its_own_channel() {
        let member = |stream: &str, name: &str| edge::proto::StageMember {
            stream: stream.into(),
            name: name.into(),
        };
        let told = edge::RelayedStage {
            participants: vec![
                member("duo", "duo"),
                member("duo~g1", "Ann"),
                member("other~g2", "Eve"),
                member("duo~BAD", "Mallory"),
            ],
            featured: Some("other~g2".into()),
            speaking: vec!["duo~g1".into(), "duo~~mix".into(), "junk~~".into()],
        };
        let stage = relayed("duo", told);
        let duo = sfu::StreamId::new("duo").unwrap();
        let ann = sfu::StreamId::guest(&duo, "g1");
        assert_eq!(
            stage.participants,
            [
                (duo.clone(), "duo".to_string()),
                (ann.clone(), "Ann".to_string())
            ]
        );
        assert_eq!(stage.guests().collect::<Vec<_>>(), [&ann]);
        assert_eq!(
            stage.now.featured, None,
            "another channel's stream is nobody here"
        );
        assert_eq!(stage.now.speaking, [ann, sfu::StreamId::mix(&duo)]);
    }
}
