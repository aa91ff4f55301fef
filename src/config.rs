//! Typed configuration. `config.toml` at the repo root documents every key at its default;
//! a test keeps the two equal.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server.
    pub http: HttpConfig,
    /// WebRTC transport.
    pub rtc: RtcConfig,
    /// Forwarding engine.
    pub sfu: SfuConfig,
    /// Storage.
    pub storage: StorageConfig,
    /// Relay to and from other nodes (regional edges).
    pub relay: RelayConfig,
    /// Cluster state: registry, routing, playback tokens, draining.
    pub cluster: ClusterConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Analytics recording.
    pub analytics: AnalyticsConfig,
    /// Admission and flood limits.
    pub limits: LimitsConfig,
    /// Webhook delivery.
    pub webhooks: WebhooksConfig,
}

/// `[limits]`: per-client and node-wide caps. Every refusal is counted in
/// `aethex_refused_total{reason}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// WHIP + WHEP sessions per client address (IPv6: per /64).
    pub sessions_per_ip: usize,
    /// WHEP sessions still connecting (ICE + DTLS), node-wide.
    pub pending_sessions: usize,
    /// Sustained WHIP/WHEP offers per second per client address.
    pub offers_per_sec: f64,
    /// WHIP/WHEP offers per client address in a burst.
    pub offer_burst: u32,
    /// Candidates in one trickle PATCH.
    pub candidates_per_patch: usize,
    /// Trickled candidates over a session's life.
    pub candidates_per_session: usize,
    /// Channels one account may publish at once.
    pub publishers_per_account: usize,
    /// Client addresses (CIDR) exempt from the per-address limits.
    pub exempt: Vec<String>,
    /// Chat WebSockets per client address.
    pub chat_sockets_per_ip: usize,
    /// A chat socket silent this long (no message, no pong) is closed.
    pub chat_idle_timeout_ms: u64,
    /// Password hashes (Argon2, 19 MiB each) computed at once.
    pub password_hash_concurrency: usize,
    /// Password hashes waiting for a slot; beyond it: 503 with Retry-After.
    pub password_hash_queue: usize,
    /// API keys per user.
    pub api_keys_per_user: usize,
    /// ICE-TCP connections per client address.
    pub ice_tcp_per_ip: usize,
    /// An ICE-TCP connection must send a STUN request for a known ufrag within this many ms.
    pub ice_tcp_first_frame_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sessions_per_ip: 20,
            pending_sessions: 200,
            offers_per_sec: 2.0,
            offer_burst: 20,
            candidates_per_patch: 20,
            candidates_per_session: 100,
            publishers_per_account: 5,
            exempt: vec!["127.0.0.0/8".into(), "::1/128".into()],
            chat_sockets_per_ip: 20,
            chat_idle_timeout_ms: 60_000,
            password_hash_concurrency: 2,
            password_hash_queue: 32,
            api_keys_per_user: 10,
            ice_tcp_per_ip: 20,
            ice_tcp_first_frame_ms: 5_000,
        }
    }
}

/// `[webhooks]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allow destinations on loopback, private, link-local and ULA networks.
    pub allow_private_networks: bool,
    /// Webhooks per channel.
    pub max_per_channel: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            max_per_channel: 10,
        }
    }
}

fn parse_cidrs(key: &str, list: &[String]) -> Result<Vec<cluster::Cidr>, ConfigError> {
    list.iter()
        .map(|c| {
            cluster::Cidr::parse(c)
                .map_err(|why| ConfigError::Invalid(format!("{key}: {c:?}: {why}")))
        })
        .collect()
}

impl Config {
    /// The WHIP/WHEP limits for the HTTP layer.
    pub fn signaling_limits(&self) -> Result<signaling::Limits, ConfigError> {
        let l = &self.limits;
        Ok(signaling::Limits {
            sessions_per_ip: l.sessions_per_ip,
            pending_sessions: l.pending_sessions,
            offers_per_sec: l.offers_per_sec,
            offer_burst: l.offer_burst,
            candidates_per_patch: l.candidates_per_patch,
            candidates_per_session: l.candidates_per_session,
            publishers_per_account: l.publishers_per_account,
            trusted_proxies: parse_cidrs("http.trusted_proxies", &self.http.trusted_proxies)?,
            exempt: parse_cidrs("limits.exempt", &l.exempt)?,
        })
    }

    /// The platform API's limits.
    pub fn platform_limits(&self) -> Result<platform::limits::Limits, ConfigError> {
        let l = &self.limits;
        Ok(platform::limits::Limits {
            password_hash_concurrency: l.password_hash_concurrency,
            password_hash_queue: l.password_hash_queue,
            api_keys_per_user: l.api_keys_per_user,
            chat_sockets_per_ip: l.chat_sockets_per_ip,
            chat_idle_timeout: Duration::from_millis(l.chat_idle_timeout_ms),
            webhooks_per_channel: self.webhooks.max_per_channel,
            webhooks_allow_private: self.webhooks.allow_private_networks,
            exempt: parse_cidrs("limits.exempt", &l.exempt)?,
        })
    }
}

/// `[analytics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Every this many seconds a node shares its viewer counts, refreshes its open viewer
    /// sessions and stores a viewer sample of each channel published here.
    pub sample_secs: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self { sample_secs: 10 }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://PATH`; empty: `aethex.db` in `storage.data_dir`.
    pub url: String,
    /// Platform API sessions last this many seconds.
    pub session_ttl_secs: i64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            session_ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL of a shared registry (empty: embedded in this node).
    pub redis_url: String,
    /// Prefix of every registry key in Redis.
    pub redis_prefix: String,
    /// An edge is dropped from routing this long after its last load report.
    pub edge_ttl_ms: u64,
    /// `CIDR=region` rules placing viewers by address.
    pub region_rules: Vec<String>,
    /// Secret of playback tokens (empty: relay.secret, else one kept in the data directory).
    pub token_secret: String,
    /// Edge role: after SIGTERM, how long existing viewers may stay before the edge closes.
    pub drain_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            redis_prefix: "aethex".into(),
            edge_ttl_ms: 6_000,
            region_rules: Vec::new(),
            token_secret: String::new(),
            drain_timeout_ms: 20_000,
        }
    }
}

impl ClusterConfig {
    /// The region rules, parsed.
    pub fn rules(&self) -> Result<cluster::RegionRules, ConfigError> {
        cluster::RegionRules::parse(&self.region_rules)
            .map_err(|e| ConfigError::Invalid(format!("cluster.region_rules: {e}")))
    }

    /// The edge TTL.
    pub fn edge_ttl(&self) -> Duration {
        Duration::from_millis(self.edge_ttl_ms)
    }
}

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// QUIC address edges connect to (empty: no relay listener).
    pub listen: String,
    /// The cluster secret shared by every node (at least 16 characters when the relay is used).
    pub secret: String,
    /// Edge role: the upstream's relay address `HOST:PORT` (empty: this node is an origin).
    pub origin: String,
    /// This node's region (required at an edge; optional at an origin).
    pub region: String,
    /// This node's id in the relay handshake (empty: the region, or "origin", and a random
    /// suffix generated once and kept in `storage.data_dir/node.id`).
    pub node_id: String,
    /// Edge role: a channel without viewers is unsubscribed upstream after this many ms.
    pub grace_ms: u64,
    /// Mutual TLS: this node's certificate (PEM; empty: self-signed, secret only).
    pub tls_cert: String,
    /// Mutual TLS: this node's private key (PEM).
    pub tls_key: String,
    /// Mutual TLS: the cluster CA certificate(s) (PEM).
    pub tls_ca: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            secret: String::new(),
            origin: String::new(),
            region: String::new(),
            node_id: String::new(),
            grace_ms: 10_000,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}

impl RelayConfig {
    /// The relay listen address, if any.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "relay.listen must be IP:PORT, e.g. 0.0.0.0:8190 (got {:?})",
                self.listen
            ))
        })
    }

    /// Whether mutual TLS is configured (all three files).
    pub fn mutual_tls(&self) -> bool {
        !self.tls_cert.is_empty()
    }

    /// The host part of `origin` (`host:port`, `[v6]:port`): the name the upstream's
    /// certificate must carry under mutual TLS.
    pub fn origin_host(&self) -> &str {
        let host = self
            .origin
            .rsplit_once(':')
            .map_or(self.origin.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Whether this node is an edge.
    pub fn is_edge(&self) -> bool {
        !self.origin.is_empty()
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address for WHIP, WHEP, the web client, `/metrics` and `/healthz`.
    pub listen: SocketAddr,
    /// Public base URL for printed links; empty means derived from the advertised IP.
    pub public_url: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A client must send a request's headers within this many ms (idle keep-alive
    /// connections are closed after it too).
    pub header_read_timeout_ms: u64,
    /// A request must be received and answered within this many ms (WebSockets exempt).
    pub request_timeout_ms: u64,
    /// Open HTTP connections, node-wide.
    pub max_connections: usize,
    /// Open HTTP connections per client address (trusted proxies exempt).
    pub max_connections_per_ip: usize,
    /// Proxies (CIDR) whose X-Forwarded-For names the client.
    pub trusted_proxies: Vec<String>,
    /// Serve /metrics on this address only (empty: on `listen`).
    pub metrics_listen: String,
    /// Bearer token /metrics requires (empty: none).
    pub metrics_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: String::new(),
            max_body_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 10_000,
            max_connections_per_ip: 100,
            trusted_proxies: Vec::new(),
            metrics_listen: String::new(),
            metrics_token: String::new(),
        }
    }
}

/// One `[[rtc.ice_servers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:` or `turn:` URL.
    pub url: String,
    /// TURN username.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

/// `[rtc]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// The one UDP port for every peer's ICE, DTLS and SRTP.
    pub udp_port: u16,
    /// IP the UDP socket binds to.
    pub bind_ip: IpAddr,
    /// IPs put in SDP answers as host candidates; empty means the bind IP, or 127.0.0.1 when
    /// the bind IP is unspecified.
    pub advertise_ips: Vec<IpAddr>,
    /// STUN/TURN servers announced to clients.
    pub ice_servers: Vec<IceServerConfig>,
    /// Also accept ICE over TCP (RFC 6544) on the UDP port's number, for networks that block
    /// UDP.
    pub ice_tcp: bool,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_port: 8189,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertise_ips: Vec::new(),
            ice_servers: Vec::new(),
            ice_tcp: true,
        }
    }
}

impl RtcConfig {
    /// The IPs actually advertised.
    pub fn effective_advertise_ips(&self) -> Vec<IpAddr> {
        if !self.advertise_ips.is_empty() {
            self.advertise_ips.clone()
        } else if self.bind_ip.is_unspecified() {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else {
            vec![self.bind_ip]
        }
    }
}

/// `[sfu]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuConfig {
    /// At most one keyframe request per this many ms reaches a publisher.
    pub keyframe_request_interval_ms: u64,
    /// Sessions (publishers + viewers) this node accepts before answering 503.
    pub max_peers: usize,
    /// A session that has not connected within this many ms is closed.
    pub connect_timeout_ms: u64,
    /// Viewers of a stream whose publisher left are kept this many ms, then closed.
    pub offline_grace_ms: u64,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            keyframe_request_interval_ms: 300,
            max_peers: 2000,
            connect_timeout_ms: 15_000,
            offline_grace_ms: 10_000,
        }
    }
}

impl SfuConfig {
    /// The sans-IO core's configuration for these candidates.
    pub fn core(
        &self,
        candidates: Vec<SocketAddr>,
        tcp_candidates: Vec<SocketAddr>,
        limits: &LimitsConfig,
    ) -> sfu::SfuConfig {
        sfu::SfuConfig {
            candidates,
            tcp_candidates,
            keyframe_request_interval: Duration::from_millis(self.keyframe_request_interval_ms),
            max_peers: self.max_peers,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            offline_grace: Duration::from_millis(self.offline_grace_ms),
            tcp_per_ip: limits.ice_tcp_per_ip,
            tcp_first_frame: Duration::from_millis(limits.ice_tcp_first_frame_ms),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the SQLite database (`aethex.db`).
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (names the key and why).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The documented default configuration, as shipped.
pub const SHIPPED: &str = include_str!("../config.toml");

impl Config {
    /// Parse TOML text.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Load a file; a missing file at the default path means defaults.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text, p)
            }
            None => {
                let p = std::path::Path::new("config.toml");
                match std::fs::read_to_string(p) {
                    Ok(text) => Self::from_toml(&text, p),
                    Err(_) => Ok(Config::default()),
                }
            }
        }
    }

    /// Range checks serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "http.max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.sfu.max_peers == 0 {
            return Err(ConfigError::Invalid(
                "sfu.max_peers must be at least 1".into(),
            ));
        }
        if !(50..=10_000).contains(&self.sfu.keyframe_request_interval_ms) {
            return Err(ConfigError::Invalid(
                "sfu.keyframe_request_interval_ms must be 50..=10000".into(),
            ));
        }
        if self.sfu.connect_timeout_ms < 1000 {
            return Err(ConfigError::Invalid(
                "sfu.connect_timeout_ms must be at least 1000".into(),
            ));
        }
        self.relay.listen_addr()?;
        if (self.relay.listen_addr()?.is_some() || self.relay.is_edge())
            && self.relay.secret.len() < 16
        {
            return Err(ConfigError::Invalid(
                "relay.secret (or AETHEX_RELAY_SECRET) must be set to at least 16 characters \
                 when relay.listen or an origin is configured: it authenticates the nodes"
                    .into(),
            ));
        }
        let tls = [
            &self.relay.tls_cert,
            &self.relay.tls_key,
            &self.relay.tls_ca,
        ];
        if tls.iter().any(|p| p.is_empty()) && tls.iter().any(|p| !p.is_empty()) {
            return Err(ConfigError::Invalid(
                "mutual TLS needs all three of relay.tls_cert, relay.tls_key and relay.tls_ca"
                    .into(),
            ));
        }
        let db = &self.database.url;
        if !db.is_empty()
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| db.starts_with(p))
        {
            return Err(ConfigError::Invalid(
                "database.url must be sqlite://PATH or postgres://... (or empty)".into(),
            ));
        }
        if !(1..=60).contains(&self.analytics.sample_secs) {
            return Err(ConfigError::Invalid(
                "analytics.sample_secs must be 1..=60".into(),
            ));
        }
        if self.database.session_ttl_secs < 60 {
            return Err(ConfigError::Invalid(
                "database.session_ttl_secs must be at least 60".into(),
            ));
        }
        self.cluster.rules()?;
        self.signaling_limits()?;
        if !self.http.metrics_listen.is_empty()
            && self.http.metrics_listen.parse::<SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid(
                "http.metrics_listen must be IP:PORT (or empty)".into(),
            ));
        }
        if self.http.header_read_timeout_ms < 1000 || self.http.request_timeout_ms < 1000 {
            return Err(ConfigError::Invalid(
                "http.header_read_timeout_ms and http.request_timeout_ms must be at least 1000"
                    .into(),
            ));
        }
        let l = &self.limits;
        if l.sessions_per_ip == 0
            || l.pending_sessions == 0
            || l.offer_burst == 0
            || !l.offers_per_sec.is_finite()
            || l.offers_per_sec <= 0.0
            || l.password_hash_concurrency == 0
            || self.http.max_connections == 0
            || self.http.max_connections_per_ip == 0
            || l.chat_sockets_per_ip == 0
            || l.ice_tcp_per_ip == 0
        {
            return Err(ConfigError::Invalid(
                "limits.* and http.max_connections* must be positive".into(),
            ));
        }
        if l.chat_idle_timeout_ms < 5_000 || l.ice_tcp_first_frame_ms < 500 {
            return Err(ConfigError::Invalid(
                "limits.chat_idle_timeout_ms must be at least 5000 and \
                 limits.ice_tcp_first_frame_ms at least 500"
                    .into(),
            ));
        }
        let url = &self.cluster.redis_url;
        if !url.is_empty() && !url.starts_with("redis://") && !url.starts_with("rediss://") {
            return Err(ConfigError::Invalid(
                "cluster.redis_url must start with redis:// or rediss:// (or be empty)".into(),
            ));
        }
        if self.cluster.edge_ttl_ms < 2_500 {
            return Err(ConfigError::Invalid(
                "cluster.edge_ttl_ms must be at least 2500 (edges report every 2 s)".into(),
            ));
        }
        if !self.cluster.token_secret.is_empty() && self.cluster.token_secret.len() < 16 {
            return Err(ConfigError::Invalid(
                "cluster.token_secret must be at least 16 characters (or empty)".into(),
            ));
        }
        if self.relay.is_edge() && self.relay.region.is_empty() {
            return Err(ConfigError::Invalid(
                "an edge needs a region (--region or relay.region)".into(),
            ));
        }
        if self
            .rtc
            .effective_advertise_ips()
            .iter()
            .any(|ip| ip.is_unspecified())
        {
            return Err(ConfigError::Invalid(
                "rtc.advertise_ips must not contain 0.0.0.0 or ::".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_toml_equals_defaults() {
        let shipped = Config::from_toml(SHIPPED, std::path::Path::new("config.toml")).unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn every_default_key_is_documented_in_config_toml() {
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let shipped: toml::Value = toml::from_str(SHIPPED).unwrap();
        let lines: Vec<&str> = SHIPPED.lines().collect();
        for (section, table) in defaults.as_table().unwrap() {
            for key in table.as_table().unwrap().keys() {
                assert!(
                    shipped.get(section).and_then(|s| s.get(key)).is_some(),
                    "config.toml lacks {section}.{key}"
                );
                let at = lines
                    .iter()
                    .position(|l| l.starts_with(&format!("{key} =")))
                    .unwrap();
                assert!(
                    lines[at - 1].starts_with('#'),
                    "{section}.{key} has no comment above it"
                );
            }
        }
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::from_toml(
            "[http]\nlisten_adress = \"0.0.0.0:1\"\n",
            std::path::Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let err = Config::from_toml("[sfu]\nmax_peers = 0\n", std::path::Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("max_peers"), "{err}");
    }

    #[test]
    fn mutual_tls_needs_all_three_files_and_names_the_origin_host() {
        let err = Config::from_toml("[relay]\ntls_cert = \"a.pem\"\n", std::path::Path::new("x"))
            .unwrap_err();
        assert!(err.to_string().contains("tls_ca"), "{err}");
        let mut r = RelayConfig {
            origin: "origin.example:8190".into(),
            ..RelayConfig::default()
        };
        assert_eq!(r.origin_host(), "origin.example");
        r.origin = "[2001:db8::1]:8190".into();
        assert_eq!(r.origin_host(), "2001:db8::1");
    }

    proptest::proptest! {
        // The property `fuzz/fuzz_targets/config_files.rs` fuzzes, kept in CI: any text is
        // loaded or refused with a message, and what loads is valid.
        #[test]
        fn any_config_text_is_loaded_or_refused_never_a_panic(
            text in "(\\[(http|limits|sfu|rtc|webhooks)\\]\n|[a-z_]{1,24} = ([0-9]{1,6}|\"[a-z0-9:./]{0,12}\"|true|\\[\\])\n|[ -~]{0,16}\n){0,12}"
        ) {
            if let Ok(config) = Config::from_toml(&text, std::path::Path::new("p.toml")) {
                proptest::prop_assert!(config.validate().is_ok());
                proptest::prop_assert!(config.signaling_limits().is_ok());
            }
        }
    }

    #[test]
    fn advertise_defaults_to_loopback_when_binding_everywhere() {
        assert_eq!(
            RtcConfig::default().effective_advertise_ips(),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        );
    }
}
