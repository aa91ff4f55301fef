//! Where a webhook may be delivered. A webhook URL is chosen by any user, so unless the
//! operator allows it (`webhooks.allow_private_networks`), deliveries never reach loopback,
//! private, link-local (cloud metadata at 169.254.169.254 among them), CGNAT, ULA or other
//! special-purpose addresses. The check runs on the addresses DNS returns, inside the HTTP
//! client's resolver, so the connection goes to an address that was checked (no second lookup
//! to rebind). IP-literal URLs skip the resolver and are checked before sending.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Whether `ip` is a destination only an on-premises receiver would have.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address inside.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return internal_v4(Ipv4Addr::new(a, b, c, d));
            }
            if seg[0] == 0x2002 {
                let [a, b] = seg[1].to_be_bytes();
                let [c, d] = seg[2].to_be_bytes();
                return internal_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
                || (seg[0] == 0 && seg[1..5] == [0, 0, 0, 0] && seg[5] == 0) // IPv4-compatible ::/96
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // 0.0.0.0/8
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved
}

/// Why a destination was refused (coarse on purpose: no port or reachability details).
pub const REFUSED: &str = "destination refused: a private or local network address";

/// The HTTP client's resolver: system DNS, internal addresses dropped.
struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(REFUSED.into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The delivery client: no redirects, no proxy from the environment, 10 s per attempt, and
/// (unless `allow_private`) the guarded resolver.
pub fn client(allow_private: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if !allow_private {
        b = b.dns_resolver(Arc::new(Resolver));
    }
    b.build().unwrap_or_default()
}

/// Check a URL before it is stored or sent: http(s), a host, and (unless `allow_private`) not
/// an internal IP literal or `localhost`. Names are checked again, resolved, at delivery.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "url: not a valid URL")?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url: http or https only");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url: no credentials in the URL (sign with the webhook secret instead)");
    }
    let host = match parsed.host() {
        Some(h) => h,
        None => return Err("url: a host is required"),
    };
    if allow_private {
        return Ok(());
    }
    let internal = match host {
        url::Host::Ipv4(v4) => is_internal(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => is_internal(IpAddr::V6(v6)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal")
        }
    };
    if internal {
        return Err("url: private and local network destinations are refused \
             (an operator may allow them: webhooks.allow_private_networks)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_destinations_are_recognised_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} should be internal");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls_to_internal_literals_and_localhost_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/healthz",
            "http://127.0.0.1:1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://localhost:9000/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert!(check_url(url, false).is_err(), "{url} should be refused");
            assert!(check_url(url, true).is_ok(), "{url} is allowed on premises");
        }
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("ftp://example.com/", true).is_err());
        assert!(check_url("http://user:pw@example.com/", true).is_err());
    }
}
