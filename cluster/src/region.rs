//! `CIDR = region` rules: where a viewer is, by address, when neither `?region=` nor an
//! `X-Region` header (set by a CDN or geo proxy) says. The longest matching prefix wins.

use std::net::IpAddr;

/// A rule that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("region rule {rule:?}: {why} (expected \"CIDR=region\", e.g. \"10.1.0.0/16=eu-west\")")]
pub struct RuleError {
    rule: String,
    why: &'static str,
}

/// An address block `network/prefix` (IPv4 or IPv6; IPv4-mapped IPv6 addresses match IPv4
/// blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `"10.1.0.0/16"` or `"2001:db8::/32"`; a bare address is a /32 or /128.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| "bad address")?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| "bad prefix length")?,
            None => max,
        };
        if prefix > max {
            return Err("prefix length too long");
        }
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

/// One rule: addresses in `network/prefix` are in `region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRule {
    block: Cidr,
    region: String,
}

impl RegionRule {
    /// Parse `"10.1.0.0/16=eu-west"` (IPv4 or IPv6; a bare address is a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let err = |why| RuleError {
            rule: text.to_string(),
            why,
        };
        let (cidr, region) = text.split_once('=').ok_or_else(|| err("no '='"))?;
        let region = region.trim();
        if region.is_empty() {
            return Err(err("empty region"));
        }
        Ok(Self {
            block: Cidr::parse(cidr).map_err(err)?,
            region: region.to_string(),
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.block.contains(ip)
    }
}

/// An ordered set of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionRules(Vec<RegionRule>);

impl RegionRules {
    /// Parse every rule; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, RuleError> {
        rules
            .iter()
            .map(|r| RegionRule::parse(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The region of `ip`: the rule with the longest matching prefix.
    pub fn region_of(&self, ip: IpAddr) -> Option<&str> {
        self.0
            .iter()
            .filter(|r| r.contains(ip))
            .max_by_key(|r| r.block.prefix())
            .map(|r| r.region.as_str())
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(r: &[&str]) -> RegionRules {
        RegionRules::parse(r).unwrap()
    }

    #[test]
    fn the_longest_matching_prefix_decides_the_region() {
        let r = rules(&["10.0.0.0/8=eu", "10.1.0.0/16=eu-paris", "0.0.0.0/0=us"]);
        assert_eq!(r.region_of("10.1.2.3".parse().unwrap()), Some("eu-paris"));
        assert_eq!(r.region_of("10.2.0.1".parse().unwrap()), Some("eu"));
        assert_eq!(r.region_of("192.0.2.1".parse().unwrap()), Some("us"));
    }

    #[test]
    fn ipv6_rules_match_ipv6_and_ipv4_mapped_addresses_match_ipv4_rules() {
        let r = rules(&["2001:db8::/32=ap", "192.0.2.0/24=eu"]);
        assert_eq!(r.region_of("2001:db8::1".parse().unwrap()), Some("ap"));
        assert_eq!(r.region_of("::ffff:192.0.2.9".parse().unwrap()), Some("eu"));
        assert_eq!(r.region_of("2001:db9::1".parse().unwrap()), None);
    }

    #[test]
    fn malformed_rules_are_refused_with_the_rule_in_the_message() {
        for bad in [
            "10.0.0.0/8",
            "10.0.0.0/33=eu",
            "nonsense/8=eu",
            "10.0.0.0/8= ",
        ] {
            let e = RegionRules::parse(&[bad]).unwrap_err();
            assert!(e.to_string().contains(bad.trim()), "{e}");
        }
    }
}
