//! The client address: which one to believe, and how little of it to keep.
//!
//! # Privacy invariant
//!
//! [`client_ip`] returns the full address, and [`truncate`] is its only consumer: the
//! ingest handler calls `truncate(client_ip(..), v4_prefix, v6_prefix)` and drops the
//! full address right there. Everything downstream (visitor hashing, geo lookup,
//! rows, logs, metrics) takes a [`TruncatedIp`], whose field is private and which has
//! no `From<IpAddr>`, so a value of that type is proof that the host bits are gone.
//! Nothing in this module logs or formats an untruncated address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Resolves the address of the client that sent a request.
///
/// The socket peer is the answer unless the peer is a trusted proxy (inside one of
/// `trusted`). Only then are forwarding headers read: `X-Forwarded-For` if present
/// (it is what most proxies and load balancers write), else RFC 7239 `Forwarded`.
/// The hop list is walked from the right (the entry the nearest proxy appended),
/// skipping trusted proxies, and the first untrusted address is the client; if every
/// hop is trusted, the leftmost one is. A header that cannot be parsed, or has no
/// entries, makes the peer the answer: a proxy that writes garbage should not let a
/// client pick its own address. Headers from untrusted peers are never read, so a
/// client talking to hush directly cannot spoof its address.
///
/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket reports for
/// IPv4 clients) are returned as IPv4, so trusted CIDRs and truncation prefixes apply
/// as configured for IPv4.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let from_header = if headers.contains_key(&X_FORWARDED_FOR) {
        walk_hops(headers, &X_FORWARDED_FOR, trusted, parse_xff_entry)
    } else if headers.contains_key(FORWARDED) {
        walk_hops(headers, &FORWARDED, trusted, parse_forwarded_element)
    } else {
        None
    };
    from_header.unwrap_or(peer_ip)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Walks comma-separated hops of every `name` header, last hop first. Multiple header
/// lines are one list in order (RFC 9110 §5.3), so the last line's last entry is the
/// nearest hop. `None` means "use the peer": malformed entry or no entry at all.
fn walk_hops(
    headers: &HeaderMap,
    name: &HeaderName,
    trusted: &[IpNet],
    parse: fn(&str) -> Option<IpAddr>,
) -> Option<IpAddr> {
    let mut leftmost = None;
    for value in headers.get_all(name).iter().rev() {
        let value = value.to_str().ok()?;
        for entry in value.rsplit(',') {
            if entry.trim().is_empty() {
                // Empty list elements are allowed by the list syntax; skip them.
                continue;
            }
            let ip = parse(entry)?.to_canonical();
            if !is_trusted(ip, trusted) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
    }
    leftmost
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`) or in brackets without one.
fn parse_xff_entry(entry: &str) -> Option<IpAddr> {
    parse_node(entry.trim())
}

/// One RFC 7239 `Forwarded` element: `;`-separated `token=value` pairs, the `for`
/// parameter (case-insensitive) holding a node, possibly quoted. Obfuscated or
/// `unknown` nodes are not addresses and make the header unusable.
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in element.split(';') {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            // Two `for` parameters in one element: ambiguous.
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"')?,
            None => value,
        };
        found = Some(parse_node(value)?);
    }
    found
}

/// `1.2.3.4`, `1.2.3.4:port`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:port`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    // Only IPv4 may carry a port without brackets; bare IPv6 parsed above.
    let (host, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// An address with its host bits cleared: the only form of a client address that may
/// leave the request handler. Built only by [`truncate`].
///
/// It holds an IPv4 address for IPv4 clients and for IPv6 addresses that embed an
/// IPv4 address (6to4, Teredo, NAT64, IPv4-mapped, -translated and -compatible): the
/// truncated embedded address, never the IPv6 form around it.
///
/// `Display` and `Debug` print the truncated form (`203.0.113.0`), never more.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TruncatedIp(IpAddr);

impl TruncatedIp {
    /// The truncated address (host bits zero), for geo lookups.
    pub fn addr(&self) -> IpAddr {
        self.0
    }

    /// The address bytes without allocating: `(buffer, len)` where `&buffer[..len]` is
    /// 4 bytes for IPv4 and 16 for IPv6, e.g. to feed a hasher.
    pub fn octets(&self) -> ([u8; 16], usize) {
        let mut buf = [0u8; 16];
        match self.0 {
            IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                (buf, 4)
            }
            IpAddr::V6(v6) => (v6.octets(), 16),
        }
    }
}

impl fmt::Display for TruncatedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TruncatedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TruncatedIp({})", self.0)
    }
}

/// Keeps the leading `v4_prefix` bits of an IPv4 address or `v6_prefix` bits of an
/// IPv6 address and zeroes the rest. Prefixes larger than the address keep it whole
/// (configuration validation prevents that).
///
/// An IPv6 address that carries an IPv4 address inside it is truncated as that IPv4
/// address, and the result *is* the truncated IPv4 address (so geo lookup and the
/// visitor hash see the client's IPv4 network): a /48 applied to the IPv6 form would
/// keep the whole IPv4 address in some of these forms (6to4 puts it in bits 16..48)
/// and a /24 applied to others would keep nothing useful. See `embedded_ipv4` for
/// the forms recognised.
pub fn truncate(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> TruncatedIp {
    let truncated = match ip {
        IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4, v4_prefix)),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => IpAddr::V4(mask_v4(v4, v4_prefix)),
            None => {
                let mask = u128::MAX
                    .checked_shl(128u32.saturating_sub(u32::from(v6_prefix)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    };
    TruncatedIp(truncated)
}

fn mask_v4(v4: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(v4) & mask)
}

/// The client IPv4 address carried by an IPv6 address of a well-known form, if any:
///
/// | form | prefix | where the IPv4 address is |
/// | --- | --- | --- |
/// | IPv4-mapped (RFC 4291) | `::ffff:0:0/96` | bits 96..128 |
/// | IPv4-translated (RFC 2765, SIIT) | `::ffff:0:0:0/96` | bits 96..128 |
/// | IPv4-compatible (RFC 4291, deprecated) | `::/96`, except `::` and `::1` | bits 96..128 |
/// | NAT64 well-known (RFC 6052) | `64:ff9b::/96` | bits 96..128 |
/// | NAT64 local-use (RFC 8215) | `64:ff9b:1::/48`, bits 48..96 zero | bits 96..128 |
/// | 6to4 (RFC 3056) | `2002::/16` | bits 16..48 |
/// | Teredo (RFC 4380) | `2001::/32` | bits 96..128, inverted |
///
/// Teredo also carries the Teredo *server's* IPv4 address in bits 32..64 and the
/// client's obfuscated port in bits 80..96; both are dropped with everything else.
///
/// The local-use NAT64 prefix may be any of RFC 6052's lengths (/48 to /96) inside
/// `64:ff9b:1::/48`, so the IPv4 address is only read from the last 32 bits when the
/// bits between are zero (the /96 layout, by far the usual one); otherwise it is left
/// to IPv6 truncation, which at a prefix of /48 or less (the most validation allows)
/// keeps none of its bits. Operator-specific embeddings (6rd, NAT64 under an ISP's
/// own prefix, ISATAP in the interface id) cannot be recognised from the address;
/// at /48 or less, RFC 6052 and 6rd layouts keep at most the leading 16 bits of the
/// IPv4 address, never its host byte.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    let top = |n: u32| bits >> (128 - n);
    if top(96) == 0xffff {
        // ::ffff:a.b.c.d
        return Some(low32);
    }
    if top(96) == 0xffff_0000 {
        // ::ffff:0:a.b.c.d
        return Some(low32);
    }
    if top(96) == 0 {
        // ::a.b.c.d, but :: (unspecified) and ::1 (loopback) are IPv6 addresses.
        return (bits > 1).then_some(low32);
    }
    if top(96) == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low32);
    }
    if top(48) == 0x0064_ff9b_0001 && (bits >> 32) & ((1u128 << 48) - 1) == 0 {
        return Some(low32);
    }
    if top(16) == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    if top(32) == 0x2001_0000 {
        return Some(Ipv4Addr::from(!(bits as u32)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 40_000)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const PROXY: &str = "10.0.0.5";

    fn trusted() -> Vec<IpNet> {
        nets(&["10.0.0.0/8", "fd00::/8"])
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.8"),
        ]);
        assert_eq!(
            client_ip(peer("203.0.113.9"), &h, &trusted()),
            ip("203.0.113.9")
        );
        // With no trusted proxies at all, nothing is trusted.
        assert_eq!(client_ip(peer(PROXY), &h, &[]), ip(PROXY));
    }

    #[test]
    fn trusted_peer_without_headers_is_the_client() {
        assert_eq!(
            client_ip(peer(PROXY), &HeaderMap::new(), &trusted()),
            ip(PROXY)
        );
    }

    #[test]
    fn xff_is_walked_from_the_right_skipping_trusted_hops() {
        // The client lied with a leading fake entry; the real client is the first
        // untrusted address from the right.
        let h = headers(&[(
            "x-forwarded-for",
            "1.1.1.1, 198.51.100.7, 10.1.2.3 ,10.9.9.9",
        )]);
        assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip("198.51.100.7"));
    }

    #[test]
    fn xff_over_several_header_lines_is_one_list() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip("198.51.100.7"));
        let h = headers(&[
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip("198.51.100.9"));
    }

    #[test]
    fn xff_entries_with_ports_and_ipv6() {
        let cases = [
            ("198.51.100.7:4711", "198.51.100.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
        ];
        for (entry, want) in cases {
            let h = headers(&[("x-forwarded-for", entry)]);
            assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip(want), "{entry}");
        }
    }

    #[test]
    fn all_hops_trusted_gives_the_leftmost() {
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.2.2.2")]);
        assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip("10.3.3.3"));
    }

    #[test]
    fn malformed_headers_fall_back_to_the_peer() {
        for bad in [
            "not-an-ip",
            "198.51.100.7, garbage",
            "198.51.100.7:99999999",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[198.51.100.7]",
            "",
            " , ",
            "2001:db8::1:80:",
        ] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip(PROXY), "{bad:?}");
        }
        // Non-ASCII header bytes.
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip(PROXY));
    }

    #[test]
    fn forwarded_header_forms() {
        let cases = [
            ("for=198.51.100.7", "198.51.100.7"),
            ("For=\"198.51.100.7:8080\"", "198.51.100.7"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            (
                "for=\"[2001:db8:cafe::17]\";proto=https",
                "2001:db8:cafe::17",
            ),
            (
                "for=198.51.100.7;proto=http;by=10.0.0.5, for=10.2.2.2",
                "198.51.100.7",
            ),
            (
                "proto=https; for=198.51.100.7 ;host=example.com",
                "198.51.100.7",
            ),
        ];
        for (value, want) in cases {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip(want), "{value}");
        }
    }

    #[test]
    fn malformed_forwarded_falls_back_to_the_peer() {
        for bad in [
            "for=unknown",
            "for=_hidden",
            "for=\"198.51.100.7",
            "proto=https",
            "for=198.51.100.7;for=198.51.100.8",
            "for",
            "for=2001:db8::1:80x",
        ] {
            let h = headers(&[("forwarded", bad)]);
            assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip(PROXY), "{bad:?}");
        }
    }

    #[test]
    fn xff_wins_over_forwarded() {
        let h = headers(&[
            ("forwarded", "for=198.51.100.8"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(peer(PROXY), &h, &trusted()), ip("198.51.100.7"));
    }

    #[test]
    fn ipv4_mapped_peer_is_ipv4() {
        let mapped = peer("::ffff:10.0.0.5");
        // Trusted as IPv4 even though the socket reported IPv6.
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(client_ip(mapped, &h, &trusted()), ip("198.51.100.7"));
        let direct = peer("::ffff:203.0.113.9");
        assert_eq!(
            client_ip(direct, &HeaderMap::new(), &trusted()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn ipv6_trusted_proxy() {
        let h = headers(&[("x-forwarded-for", "2001:db8::42")]);
        assert_eq!(
            client_ip(peer("fd00::1"), &h, &trusted()),
            ip("2001:db8::42")
        );
    }

    #[test]
    fn truncate_masks_host_bits() {
        let t = truncate(ip("203.0.113.77"), 24, 48);
        assert_eq!(t.addr(), ip("203.0.113.0"));
        assert_eq!(t.to_string(), "203.0.113.0");
        assert_eq!(format!("{t:?}"), "TruncatedIp(203.0.113.0)");
        assert_eq!(truncate(ip("203.0.113.77"), 16, 48).addr(), ip("203.0.0.0"));
        assert_eq!(
            truncate(ip("203.0.113.77"), 32, 48).addr(),
            ip("203.0.113.77")
        );
        assert_eq!(truncate(ip("203.0.113.77"), 0, 48).addr(), ip("0.0.0.0"));
        assert_eq!(
            truncate(ip("203.0.113.77"), 200, 48).addr(),
            ip("203.0.113.77")
        );
        assert_eq!(
            truncate(ip("2001:db8:abcd:1234:5678::1"), 24, 48).addr(),
            ip("2001:db8:abcd::")
        );
        assert_eq!(
            truncate(ip("2001:db8:abcd:1234:5678::1"), 24, 52).addr(),
            ip("2001:db8:abcd:1000::")
        );
        assert_eq!(truncate(ip("2001:db8::1"), 24, 0).addr(), ip("::"));
    }

    #[test]
    fn truncate_treats_mapped_addresses_as_ipv4() {
        let t = truncate(ip("::ffff:203.0.113.77"), 24, 48);
        assert_eq!(t.addr(), ip("203.0.113.0"));
        assert!(!t.to_string().contains("77"));
    }

    /// Every form of IPv6 address that embeds 203.0.113.77, written out by hand
    /// (203 = 0xcb, 113 = 0x71, 77 = 0x4d; Teredo stores the inverse 34ff:8eb2).
    const EMBEDDING_203_0_113_77: &[&str] = &[
        "::ffff:203.0.113.77",
        "::ffff:0:203.0.113.77",
        "::203.0.113.77",
        "64:ff9b::cb00:714d",
        "64:ff9b:1::cb00:714d",
        "2002:cb00:714d::",
        "2002:cb00:714d:abcd:1234:5678:9abc:def0",
        "2001:0:c000:201:8000:f227:34ff:8eb2",
        "2001:0:4136:e378:0:ffff:34ff:8eb2",
    ];

    #[test]
    fn ipv6_forms_embedding_ipv4_truncate_as_ipv4() {
        for form in EMBEDDING_203_0_113_77 {
            let t = truncate(ip(form), 24, 48);
            assert_eq!(t.addr(), ip("203.0.113.0"), "{form}");
            let (buf, len) = t.octets();
            assert_eq!(&buf[..len], &[203, 0, 113, 0], "{form}");
            // The prefix applies as an IPv4 prefix.
            assert_eq!(truncate(ip(form), 16, 48).addr(), ip("203.0.0.0"), "{form}");
        }
        // RFC 4380's own example: server 65.54.227.120, client 192.0.2.45.
        assert_eq!(
            truncate(ip("2001:0000:4136:e378:8000:63bf:3fff:fdd2"), 24, 48).addr(),
            ip("192.0.2.0")
        );
    }

    #[test]
    fn no_embedding_form_keeps_the_host_byte() {
        // For each form, every host byte (and every Teredo server, port and flag
        // value, every 6to4 subnet and interface id) gives the same truncated value:
        // nothing of the host byte can be recovered from it.
        let forms: [fn(u8) -> String; 7] = [
            |h| format!("::ffff:198.51.100.{h}"),
            |h| format!("::ffff:0:198.51.100.{h}"),
            |h| format!("::198.51.100.{h}"),
            |h| format!("64:ff9b::198.51.100.{h}"),
            |h| format!("64:ff9b:1::198.51.100.{h}"),
            // 198.51.100.h = c633:64hh
            |h| format!("2002:c633:64{h:02x}:{h:x}::{h:x}"),
            // inverse of c633:64hh = 39cc:9b(ff-h); server and port vary with h too
            |h| format!("2001:0:{h:x}:{h:x}:8000:{h:x}:39cc:9b{:02x}", 255 - h),
        ];
        for (i, form) in forms.iter().enumerate() {
            for h in 0..=255u8 {
                let addr = form(h);
                let t = truncate(ip(&addr), 24, 48);
                assert_eq!(t.addr(), ip("198.51.100.0"), "form {i}: {addr}");
            }
        }
    }

    #[test]
    fn ipv6_outside_the_embedding_forms_stays_ipv6() {
        let cases = [
            ("::1", "::"),
            ("::", "::"),
            // 2001:db8::/32 is not Teredo (2001:0::/32).
            ("2001:db8:abcd:1234::1", "2001:db8:abcd::"),
            // Inside 64:ff9b::/32 but not the /96 well-known NAT64 prefix.
            ("64:ff9b:1234:5678::cb00:714d", "64:ff9b:1234::"),
            // Local-use NAT64 with a prefix longer than /48: the IPv4 address is not
            // at the end, and a /48 keeps none of it.
            ("64:ff9b:1:cb00:714d::", "64:ff9b:1::"),
        ];
        for (addr, want) in cases {
            assert_eq!(truncate(ip(addr), 24, 48).addr(), ip(want), "{addr}");
        }
    }

    #[test]
    fn octets_match_the_truncated_address() {
        let (buf, len) = truncate(ip("203.0.113.77"), 24, 48).octets();
        assert_eq!(&buf[..len], &[203, 0, 113, 0]);
        let (buf, len) = truncate(ip("2001:db8:abcd:1234::1"), 24, 48).octets();
        assert_eq!(len, 16);
        assert_eq!(
            &buf[..len],
            &ip("2001:db8:abcd::")
                .to_canonical()
                .to_string()
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    #[test]
    fn same_network_truncates_equal() {
        let a = truncate(ip("198.51.100.1"), 24, 48);
        let b = truncate(ip("198.51.100.254"), 24, 48);
        let c = truncate(ip("198.51.101.1"), 24, 48);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
