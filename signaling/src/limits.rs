//! Admission and flood limits: who the client is (its address, behind trusted proxies), token
//! buckets per address, and the WHIP/WHEP caps. Every refusal is a 4xx/503 with a JSON body and
//! a count in `aethex_refused_total{reason}`; nothing here touches the media thread.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use cluster::Cidr;

/// WHIP/WHEP limits (`[limits]` in `config.toml`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Live sessions (WHIP + WHEP) per client address (IPv6: per /64).
    pub sessions_per_ip: usize,
    /// WHEP sessions not yet connected (ICE + DTLS), node-wide.
    pub pending_sessions: usize,
    /// Sustained WHIP/WHEP offers per second per client address.
    pub offers_per_sec: f64,
    /// Offers a client address may send in a burst.
    pub offer_burst: u32,
    /// `a=candidate` lines in one trickle PATCH.
    pub candidates_per_patch: usize,
    /// Trickled candidates over a session's life.
    pub candidates_per_session: usize,
    /// Channels one account may publish at once.
    pub publishers_per_account: usize,
    /// Addresses whose `X-Forwarded-For` is believed (a CDN or reverse proxy).
    pub trusted_proxies: Vec<Cidr>,
    /// Client addresses no per-address limit applies to (default: loopback, for tools and
    /// load tests on the node itself).
    pub exempt: Vec<Cidr>,
}

impl Limits {
    /// Whether per-address limits apply to `ip`.
    pub fn applies_to(&self, ip: IpAddr) -> bool {
        !self.exempt.iter().any(|c| c.contains(ip))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions_per_ip: 20,
            pending_sessions: 200,
            offers_per_sec: 2.0,
            offer_burst: 20,
            candidates_per_patch: 20,
            candidates_per_session: 100,
            publishers_per_account: 5,
            trusted_proxies: Vec::new(),
            exempt: loopback(),
        }
    }
}

/// `127.0.0.0/8` and `::1`.
pub fn loopback() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|c| Cidr::parse(c).ok())
        .collect()
}

/// The key limits are counted under: an IPv4 address, or the /64 of an IPv6 address (one
/// subscriber line usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not a trusted proxy itself (entries to its left are
/// what the client claimed and are ignored).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    hops.iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .or_else(|| hops.first().copied())
        .unwrap_or(peer)
}

/// The client address of a request, set once per request by [`remember_client`] (falls back
/// to the socket peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Middleware: resolve the client address (trusted proxies considered) into [`ClientAddr`].
pub async fn remember_client(
    axum::extract::State(trusted): axum::extract::State<std::sync::Arc<Vec<Cidr>>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let ip = client_ip(peer, req.headers(), &trusted);
        req.extensions_mut().insert(ClientAddr(ip));
    }
    next.run(req).await
}

/// Token buckets per key, with bounded memory: beyond `MAX_KEYS`, buckets that have refilled
/// (idle clients) are forgotten.
pub struct TokenBuckets<K> {
    per_sec: f64,
    burst: f64,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

const MAX_KEYS: usize = 100_000;

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Buckets of `burst` tokens refilled at `per_sec`.
    pub fn new(per_sec: f64, burst: u32) -> Self {
        Self {
            per_sec: per_sec.max(0.001),
            burst: f64::from(burst.max(1)),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Take a token for `key` at `now`; when empty, how long until one is back.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (rate, burst) = (self.per_sec, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_KEYS {
                // Every key is mid-burst: a flood from many addresses. Refuse newcomers
                // rather than grow without bound.
                return Err(Duration::from_secs(1));
            }
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.per_sec;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens < 1.0 {
            let wait = (1.0 - *tokens) / self.per_sec;
            return Err(Duration::from_secs_f64(wait.min(3600.0)));
        }
        *tokens -= 1.0;
        Ok(())
    }
}

/// The limits with their live state: offer buckets per client address.
pub struct Admission {
    /// The configured limits.
    pub limits: Limits,
    offers: TokenBuckets<IpAddr>,
}

impl Admission {
    /// Fresh state for `limits`.
    pub fn new(limits: Limits) -> Self {
        let offers = TokenBuckets::new(limits.offers_per_sec, limits.offer_burst);
        Self { limits, offers }
    }

    /// The key per-address limits count `ip` under; `None` when exempt or unknown.
    pub fn key(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.filter(|ip| self.limits.applies_to(*ip)).map(client_key)
    }

    /// Take an offer token for `key` (`None`: not limited).
    pub fn offer(&self, key: Option<IpAddr>) -> Result<(), Duration> {
        match key {
            Some(k) => self.offers.take(&k, Instant::now()),
            None => Ok(()),
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Compare a presented secret with the expected one in time independent of where they differ.
pub fn same_secret(given: &str, want: &str) -> bool {
    let (a, b) = (given.as_bytes(), want.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whole seconds for `Retry-After` (at least 1).
pub fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_ipv4_per_address() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(client_key(ip("10.0.0.1")), client_key(ip("10.0.0.2")));
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        let cdn = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        // Untrusted peer: its header is ignored.
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &cdn), ip("198.51.100.1"));
        // Trusted peer: the nearest untrusted hop, not the client-supplied leftmost one.
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &cdn), ip("203.0.113.9"));
        // A chain of trusted proxies is walked through.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.9.9.9"),
        );
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &cdn), ip("203.0.113.9"));
        // Garbage stops the walk; the peer stands.
        h.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &cdn), ip("10.1.2.3"));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_sustained_rate() {
        let b = TokenBuckets::new(2.0, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(b.take(&1u8, t0).is_ok());
        }
        let wait = b.take(&1u8, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(b.take(&2u8, t0).is_ok(), "another key has its own bucket");
        assert!(b.take(&1u8, t0 + Duration::from_millis(500)).is_ok());
        assert!(b.take(&1u8, t0 + Duration::from_millis(500)).is_err());
    }
}
