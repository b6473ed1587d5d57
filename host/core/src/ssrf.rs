//! Where deliveries may go: endpoint addresses on loopback, private,
//! link-local (cloud metadata), carrier-grade NAT, multicast and other
//! reserved ranges are refused, unless `delivery.allowed_networks` lists
//! them. A webhook server posts to URLs its users choose; without this, a
//! subscription could make it reach the operator's internal services.
//!
//! Checked twice: a URL with an IP literal (or `localhost`) when the
//! subscription is configured, and every address a host name resolves to,
//! at each connect ([`GuardedResolver`]), so DNS cannot point an accepted
//! name at an internal address later.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// An IP network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `"10.0.0.0/8"`, `"::1/128"` or a single address.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix must be 0..={max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
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
}

/// Why `ip` is not a public internet address, if it is not.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xff00 == 0xff00 {
                Some("multicast")
            } else if let Some(v4) = embedded_v4(v6) {
                // Forms that carry an IPv4 address: that address decides
                // (`::127.0.0.1` reaches 127.0.0.1 on many stacks).
                restricted_v4(v4)
            } else if first == 0x2001 && v6.segments()[1] == 0 {
                // Teredo tunnels to an address we cannot check.
                Some("Teredo tunnel")
            } else if v6.segments()[..2] == [0x2001, 0xdb8]
                || first == 0x0100 && v6.segments()[1..4] == [0, 0, 0]
            {
                Some("documentation or discard range")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address inside an IPv4-compatible (`::a.b.c.d`, deprecated but
/// still routed by some stacks), NAT64 (`64:ff9b::/96`) or 6to4
/// (`2002::/16`) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(from(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(from(s[1], s[2]))
    } else {
        None
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata lives here)")
    } else if a == 0 {
        Some("unspecified (\"this network\")")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

/// The allowlist and the check built on it.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allowed: Vec<Network>,
}

impl TargetPolicy {
    pub fn new(allowed_networks: &[String]) -> Result<TargetPolicy, String> {
        let allowed = allowed_networks
            .iter()
            .map(|n| Network::parse(n))
            .collect::<Result<_, _>>()?;
        Ok(TargetPolicy { allowed })
    }

    /// `Err(reason)` if deliveries may not go to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        match restricted(ip) {
            Some(why) if !self.allowed.iter().any(|n| n.contains(ip)) => Err(format!(
                "{ip} is {why}; list it in delivery.allowed_networks to allow it"
            )),
            _ => Ok(()),
        }
    }

    /// Checks a URL's host if it is an IP literal or `localhost` (names are
    /// checked when resolved).
    pub fn check_url(&self, uri: &http::Uri) -> Result<(), String> {
        let Some(host) = uri.host() else {
            return Err("URL has no host".into());
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
            return self
                .check(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .and(self.check(IpAddr::V6(Ipv6Addr::LOCALHOST)))
                .map_err(|e| format!("localhost: {e}"));
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }
}

/// A DNS resolver for hyper's connector that drops refused addresses and
/// fails when nothing allowed is left.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<TargetPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.get_or_insert(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{host}: refused: {}",
                        refused.unwrap_or_else(|| "no address".into())
                    ),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_and_public_ones_not() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "224.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::169.254.169.254",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
        ] {
            assert!(restricted(ip(internal)).is_some(), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::101:101",
            "::1.1.1.1",
            "2002:101:101::1",
        ] {
            assert_eq!(restricted(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn the_allowlist_opens_listed_networks_only() {
        let policy = TargetPolicy::new(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("10.200.0.1")).is_ok());
        let err = policy.check(ip("127.0.0.2")).unwrap_err();
        assert!(
            err.contains("loopback") && err.contains("allowed_networks"),
            "{err}"
        );
        assert!(policy.check(ip("169.254.169.254")).is_err());
        assert!(TargetPolicy::new(&["10.0.0.0/33".into()]).is_err());
        assert!(TargetPolicy::new(&["intranet".into()]).is_err());
    }

    #[test]
    fn urls_with_literals_and_localhost_are_checked_names_are_left_to_dns() {
        let closed = TargetPolicy::default();
        let url = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(closed.check_url(&url("http://127.0.0.1:9000/x")).is_err());
        assert!(closed.check_url(&url("http://[::1]:9000/x")).is_err());
        assert!(closed.check_url(&url("http://[::127.0.0.1]/x")).is_err());
        assert!(closed.check_url(&url("http://localhost/x")).is_err());
        assert!(
            closed
                .check_url(&url("https://hooks.example.com/x"))
                .is_ok()
        );
        let open = TargetPolicy::new(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(open.check_url(&url("http://localhost:9000/x")).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_to_internal_addresses() {
        use tower_service::Service;
        let mut closed = GuardedResolver::new(Arc::new(TargetPolicy::default()));
        let name: Name = "localhost".parse().unwrap();
        let err = closed.call(name).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("loopback"), "{err}");
        let mut open = GuardedResolver::new(Arc::new(
            TargetPolicy::new(&["127.0.0.0/8".into(), "::1".into()]).unwrap(),
        ));
        let addrs: Vec<SocketAddr> = open
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
    }
}
