//! Who a request comes from, as the rate limits see it (`spec/verification.md` §5).
//!
//! Without trusted proxies, that is the TCP peer. Behind a reverse proxy the peer is the proxy,
//! so the operator lists the proxies (`server.trusted_proxies`): when the peer is one of them,
//! `X-Forwarded-For` is read from the right, past every trusted proxy, and the first address
//! that is not one is the client. A client cannot spoof its way around the limit: entries it
//! wrote itself lie left of the first untrusted hop and are never read. Addresses are used only
//! as rate-limit input; they are never stored or logged.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::error::{Error, Result};

/// The header proxies append the address they received a request from to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";
/// Most `X-Forwarded-For` entries read; a longer chain is cut at this many from the right.
const MAX_HOPS: usize = 16;

/// The reverse proxies whose `X-Forwarded-For` entries are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.7`) and networks (`10.0.0.0/8`, `fd00::/8`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first entry that is neither.
    pub fn parse(entries: &[String]) -> Result<Self> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        Error::Config(format!(
                            "server.trusted_proxies: {entry:?} is not an address or a network"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        for entry in forwarded_for(headers).into_iter().rev().take(MAX_HOPS) {
            // A malformed entry ends the chain: the proxy that appended it is the best known.
            let Some(hop) = parse_hop(entry) else {
                return client;
            };
            client = hop;
            if !self.contains(hop) {
                return hop;
            }
        }
        client
    }
}

/// Every `X-Forwarded-For` entry, leftmost first, across repeated headers in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect()
}

/// An entry as proxies write it: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let address = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|socket| socket.ip()))?;
    Some(canonical(address))
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:a.b.c.d`) as plain IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|entry| (*entry).to_owned()).collect();
        TrustedProxies::parse(&entries).unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        let spoofed = headers(&["203.0.113.9"]);
        assert_eq!(none.client(ip("10.0.0.7"), &spoofed), ip("10.0.0.7"));
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        // The client wrote a false entry itself; the proxies appended the real ones.
        let chain = headers(&["198.51.100.1, 203.0.113.9", "192.0.2.1"]);
        assert_eq!(trusted.client(ip("10.0.0.7"), &chain), ip("203.0.113.9"));
        // From an untrusted peer, the header is not read at all.
        assert_eq!(
            trusted.client(ip("203.0.113.50"), &chain),
            ip("203.0.113.50")
        );
        // Only proxies in the chain: the leftmost is as far as it goes.
        let inside = headers(&["10.1.1.1, 192.0.2.1"]);
        assert_eq!(trusted.client(ip("10.0.0.7"), &inside), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.7"), &HeaderMap::new()),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn ports_mapped_addresses_and_malformed_entries() {
        let trusted = proxies(&["10.0.0.7", "::1"]);
        let ported = headers(&["203.0.113.9:4711"]);
        assert_eq!(trusted.client(ip("10.0.0.7"), &ported), ip("203.0.113.9"));
        let mapped = ip("::ffff:10.0.0.7");
        let v6 = headers(&["[2001:db8::5]:443"]);
        assert_eq!(trusted.client(mapped, &v6), ip("2001:db8::5"));
        let garbage = headers(&["203.0.113.9, not-an-address"]);
        assert_eq!(trusted.client(ip("10.0.0.7"), &garbage), ip("10.0.0.7"));
    }

    #[test]
    fn bad_entries_are_refused_with_their_name() {
        let error = TrustedProxies::parse(&["10.0.0.0/8".to_owned(), "proxy".to_owned()]);
        assert!(error.unwrap_err().to_string().contains("\"proxy\""));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".to_owned()]).is_err());
    }
}
