//! Admission and flood limits: who the client is (its address, behind trusted proxies), token
//! buckets per address, and the WHIP/WHEP caps. Every refusal is a 4xx/503 with a JSON body and
//! a count in `aethex_refused_total{reason}`; nothing here touches the media thread.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use cluster::Cidr;

// Moved to http-common (the platform API uses them too); re-exported where they were.
pub use http_common::limits::{client_key, loopback, ClientAddr, TokenBuckets};

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
}
