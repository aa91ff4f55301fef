//! Per-address limit helpers: the key a client is counted under, token buckets per key, the
//! resolved client address of a request, and where refusals are counted.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster::Cidr;

/// Where refusals by a limit are counted. On a node this is signaling's `Metrics`, which
/// exports them as `aethex_refused_total{reason}`; the platform API counts into the same
/// series through this trait, without depending on the media side.
pub trait Refusals: Send + Sync {
    /// Count one refusal (`reason`: a fixed label such as `chat_sockets_per_ip`).
    fn refused(&self, reason: &'static str);
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

/// The client address of a request, set once per request by the router's middleware
/// (signaling's `limits::remember_client`, trusted proxies considered); without it, readers
/// fall back to the socket peer.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

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

#[cfg(test)]
mod tests {
    use super::*;

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
