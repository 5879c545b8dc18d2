//! Who sent a request: the beacon node's identity, from the strongest evidence available.
//!
//! In order: the `id` claim of a verified JWT; the request path when it is not `/` (a beacon
//! node configured with `http://proxy:25590/bn-2` is `bn-2`); when the direct peer is a trusted
//! proxy (loopback unless the operator says otherwise), `X-Real-IP`, else the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy; else the peer's IP.
//! Forwarding headers from untrusted peers are ignored, so a beacon node cannot pose as another.
//!
//! Why right-most: every proxy *appends* the address it saw (nginx's
//! `$proxy_add_x_forwarded_for`), so the entries on the right were written by proxies we trust
//! and the left-most is whatever the client claimed. `X-Real-IP` comes first because nginx sets
//! it from `$remote_addr`, replacing anything the client sent: it stays right even when the
//! client itself sits on a trusted address (a beacon node on nginx's host). Without inbound JWT
//! every identity here is a claim; these rules only keep a client of a trusted proxy from
//! choosing one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Longest identity kept: ids come from paths and claims a peer controls, and end up in logs,
/// `/status` and metrics labels.
pub const MAX_IDENTITY_BYTES: usize = 64;

/// An address block, e.g. `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// Not an IP address.
    BadAddress,
    /// Prefix length not a number or longer than the address.
    BadPrefix,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrError::BadAddress => "expected an IP address or CIDR such as 10.0.0.0/8",
            CidrError::BadPrefix => "prefix length out of range (0-32 for IPv4, 0-128 for IPv6)",
        })
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| CidrError::BadAddress)?;
        let max_prefix = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max_prefix,
            Some(p) => p.parse::<u8>().map_err(|_| CidrError::BadPrefix)?,
        };
        if prefix > max_prefix {
            return Err(CidrError::BadPrefix);
        }
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    /// Whether `ip` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The facts of a request that can name its sender.
#[derive(Clone, Copy, Debug, Default)]
pub struct Evidence<'a> {
    /// The `id` claim of a verified JWT.
    pub jwt_id: Option<&'a str>,
    /// The request path.
    pub path: &'a str,
    /// `X-Forwarded-For` header value.
    pub forwarded_for: Option<&'a str>,
    /// `X-Real-IP` header value.
    pub real_ip: Option<&'a str>,
}

/// The blocks trusted when the operator names none: loopback, where nginx usually runs.
pub fn default_trusted() -> Vec<Cidr> {
    vec![
        Cidr {
            network: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            prefix: 8,
        },
        Cidr {
            network: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

/// Whether forwarding headers from `peer` are believed: it lies in a trusted block.
pub fn is_trusted(peer: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|cidr| cidr.contains(peer))
}

/// The beacon node's identity for a request from `peer`.
pub fn identify(evidence: &Evidence<'_>, peer: IpAddr, trusted: &[Cidr]) -> String {
    if let Some(id) = evidence.jwt_id.and_then(clean) {
        return id;
    }
    if let Some(id) = path_identity(evidence.path) {
        return id;
    }
    if is_trusted(peer, trusted) {
        let real_ip = evidence.real_ip.and_then(parse_ip).map(|ip| ip.to_string());
        let forwarded = || {
            evidence
                .forwarded_for
                .and_then(|list| forwarded_client(list, trusted))
        };
        if let Some(id) = real_ip.or_else(forwarded) {
            return id;
        }
    }
    canonical(peer).to_string()
}

/// The client a chain of trusted proxies names in `X-Forwarded-For`: walking from the right,
/// the first entry that is not a trusted proxy's address. An entry that names nobody (`unknown`,
/// garbage) ends the walk: what stands left of it was not vouched for. When every entry is a
/// trusted address, the left-most is the origin (a beacon node on a trusted host).
fn forwarded_client(list: &str, trusted: &[Cidr]) -> Option<String> {
    let mut origin = None;
    for entry in list.rsplit(',') {
        match parse_ip(entry) {
            Some(ip) if is_trusted(ip, trusted) => origin = Some(ip.to_string()),
            Some(ip) => return Some(ip.to_string()),
            None => return forwarded_name(entry),
        }
    }
    origin
}

/// The first path segment, when there is one: `/bn-2` and `/bn-2/` are `bn-2`.
fn path_identity(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segment = path.trim_start_matches('/').split('/').next()?;
    clean(segment)
}

/// Keeps identities printable and short, so they are safe in logs and metrics labels.
fn clean(raw: &str) -> Option<String> {
    let id: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        .take(MAX_IDENTITY_BYTES)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// A name a chained sync-proxy passed on (e.g. `bn-2` from a path identity).
fn forwarded_name(text: &str) -> Option<String> {
    let text = text.trim();
    // nginx writes `unknown` when it has no address; that names nobody.
    if text.eq_ignore_ascii_case("unknown") {
        return None;
    }
    clean(text)
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    // nginx writes bare addresses, but some proxies bracket IPv6 or append a port.
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| canonical(addr.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn prefix_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_parses_and_matches() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let single: Cidr = "192.0.2.7".parse().unwrap();
        assert!(single.contains(ip("192.0.2.7")));
        assert!(!single.contains(ip("192.0.2.8")));
    }

    #[test]
    fn cidr_bad_input_is_refused() {
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!("::/129".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!("ten/8".parse::<Cidr>(), Err(CidrError::BadAddress));
        assert_eq!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::BadPrefix));
    }

    #[test]
    fn jwt_id_wins_over_everything() {
        let evidence = Evidence {
            jwt_id: Some("lighthouse-1"),
            path: "/bn-2",
            forwarded_for: Some("10.0.0.1"),
            real_ip: None,
        };
        assert_eq!(
            identify(&evidence, ip("127.0.0.1"), &default_trusted()),
            "lighthouse-1"
        );
    }

    #[test]
    fn path_names_the_beacon_node() {
        let evidence = Evidence {
            path: "/bn-2/",
            ..Evidence::default()
        };
        assert_eq!(identify(&evidence, ip("192.0.2.1"), &[]), "bn-2");
        let root = Evidence {
            path: "/",
            ..Evidence::default()
        };
        assert_eq!(identify(&root, ip("192.0.2.1"), &[]), "192.0.2.1");
    }

    fn forwarded(list: &str) -> Evidence<'_> {
        Evidence {
            path: "/",
            forwarded_for: Some(list),
            ..Evidence::default()
        }
    }

    #[test]
    fn forwarded_for_from_loopback_names_the_address_the_proxy_saw() {
        let evidence = forwarded("203.0.113.5, 198.51.100.7");
        assert_eq!(
            identify(&evidence, ip("127.0.0.1"), &default_trusted()),
            "198.51.100.7"
        );
        assert_eq!(
            identify(&evidence, ip("::1"), &default_trusted()),
            "198.51.100.7"
        );
    }

    /// nginx's `$proxy_add_x_forwarded_for` appends the real peer to whatever the client sent:
    /// the left-most entry is the client's own claim and must never become its identity.
    #[test]
    fn forwarded_for_client_claim_on_the_left_is_not_believed() {
        let trusted = default_trusted();
        let spoof = forwarded("10.66.66.66, 198.51.100.7");
        assert_eq!(identify(&spoof, ip("127.0.0.1"), &trusted), "198.51.100.7");
        let several = forwarded("10.66.66.66, 10.66.66.67 ,198.51.100.7");
        assert_eq!(
            identify(&several, ip("127.0.0.1"), &trusted),
            "198.51.100.7"
        );
    }

    #[test]
    fn forwarded_for_trusted_hops_on_the_right_are_skipped() {
        let trusted = [
            default_trusted(),
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        ]
        .concat();
        let chain = forwarded("10.66.66.66, 198.51.100.7, 10.0.0.2, fd00::3");
        assert_eq!(identify(&chain, ip("10.0.0.1"), &trusted), "198.51.100.7");
        // Every hop trusted: the left-most is where the request started.
        let inside = forwarded("10.0.0.9, 10.0.0.2");
        assert_eq!(identify(&inside, ip("10.0.0.1"), &trusted), "10.0.0.9");
        let local = forwarded("127.0.0.1");
        assert_eq!(identify(&local, ip("127.0.0.1"), &trusted), "127.0.0.1");
    }

    #[test]
    fn forwarded_for_entry_naming_nobody_stops_the_walk() {
        let evidence = forwarded("10.66.66.66, unknown");
        assert_eq!(
            identify(&evidence, ip("127.0.0.1"), &default_trusted()),
            "127.0.0.1"
        );
        let empty = forwarded("10.66.66.66, ");
        assert_eq!(
            identify(&empty, ip("127.0.0.1"), &default_trusted()),
            "127.0.0.1"
        );
    }

    #[test]
    fn real_ip_from_trusted_peer_wins_over_forwarded_for() {
        // A beacon node on nginx's own host: its address is trusted, so X-Forwarded-For alone
        // would walk past it to the client's claim; nginx's X-Real-IP ($remote_addr) does not.
        let evidence = Evidence {
            path: "/",
            forwarded_for: Some("10.66.66.66, 127.0.0.1"),
            real_ip: Some("127.0.0.1"),
            ..Evidence::default()
        };
        assert_eq!(
            identify(&evidence, ip("127.0.0.1"), &default_trusted()),
            "127.0.0.1"
        );
    }

    #[test]
    fn forwarded_for_from_untrusted_peer_is_ignored() {
        let evidence = Evidence {
            path: "/",
            forwarded_for: Some("203.0.113.5"),
            real_ip: Some("203.0.113.6"),
            ..Evidence::default()
        };
        assert_eq!(
            identify(&evidence, ip("192.0.2.9"), &default_trusted()),
            "192.0.2.9"
        );
        assert_eq!(
            identify(&evidence, ip("127.0.0.1"), &[]),
            "127.0.0.1",
            "loopback untrusted by choice"
        );
        let trusted = ["192.0.2.0/24".parse().unwrap()];
        assert_eq!(
            identify(&evidence, ip("192.0.2.9"), &trusted),
            "203.0.113.6"
        );
    }

    #[test]
    fn real_ip_is_used_without_forwarded_for() {
        let evidence = Evidence {
            path: "/",
            real_ip: Some("2001:db8::7"),
            ..Evidence::default()
        };
        assert_eq!(
            identify(&evidence, ip("127.0.0.1"), &default_trusted()),
            "2001:db8::7"
        );
    }

    #[test]
    fn forwarded_name_from_a_chained_proxy_is_kept() {
        let trusted = default_trusted();
        let evidence = forwarded("bn-2");
        assert_eq!(identify(&evidence, ip("127.0.0.1"), &trusted), "bn-2");
        // Appended by the trusted proxy, so right of anything the client claimed.
        let claimed = forwarded("10.66.66.66, bn-2");
        assert_eq!(identify(&claimed, ip("127.0.0.1"), &trusted), "bn-2");
    }

    #[test]
    fn garbage_forwarded_for_falls_back_to_peer() {
        let evidence = Evidence {
            path: "/",
            forwarded_for: Some("unknown"),
            ..Evidence::default()
        };
        assert_eq!(identify(&evidence, ip("::1"), &[]), "::1");
    }

    #[test]
    fn ipv4_mapped_peer_is_shown_as_ipv4() {
        let root = Evidence {
            path: "/",
            ..Evidence::default()
        };
        assert_eq!(identify(&root, ip("::ffff:192.0.2.1"), &[]), "192.0.2.1");
    }

    #[test]
    fn hostile_identities_are_cleaned_and_bounded() {
        let long = format!("/{}", "a".repeat(500));
        let evidence = Evidence {
            path: &long,
            ..Evidence::default()
        };
        assert_eq!(
            identify(&evidence, ip("::1"), &[]).len(),
            MAX_IDENTITY_BYTES
        );
        let evidence = Evidence {
            jwt_id: Some("bn\"\n{}"),
            path: "/",
            ..Evidence::default()
        };
        assert_eq!(identify(&evidence, ip("::1"), &[]), "bn");
    }
}
