//! Visitor ids: a daily-salted hash of site, truncated address and User-Agent.
//!
//! `id = first 8 bytes, big-endian, of SHA-256(salt ‖ len(site) ‖ site ‖ family ‖ ip ‖
//! len(ua) ‖ ua)`, where lengths are 8-byte big-endian and `family` is 4 or 6 followed
//! by exactly 4 or 16 address bytes. Length prefixes make the encoding injective: no
//! two different (site, ip, ua) triples feed the hash the same bytes, so `("ab", "c")`
//! and `("a", "bc")` cannot collide by construction. Only the truncated address ever
//! enters the hash, and the salt is deleted after a day, after which no id can be
//! recomputed from a guessed address.
//!
//! Hot path: no allocation, a handful of SHA-256 blocks (SHA-NI when the CPU has it).

use sha2::{Digest, Sha256};

use crate::collect::client_ip::TruncatedIp;
use crate::enrich::salt::SALT_LEN;

/// The visitor id of one hit. Never 0 for a real visitor in practice (0 marks anonymous
/// hits); a hash of 0 has probability 2^-64.
pub fn visitor_id(salt: &[u8; SALT_LEN], site: &str, ip: &TruncatedIp, user_agent: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update((site.len() as u64).to_be_bytes());
    hasher.update(site.as_bytes());
    let (octets, len) = ip.octets();
    let family: u8 = if len == 4 { 4 } else { 6 };
    hasher.update([family]);
    hasher.update(&octets[..len]);
    hasher.update((user_agent.len() as u64).to_be_bytes());
    hasher.update(user_agent.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use super::*;
    use crate::collect::client_ip::truncate;

    fn ip(s: &str) -> TruncatedIp {
        truncate(s.parse::<IpAddr>().unwrap(), 24, 48)
    }

    const SALT: [u8; SALT_LEN] = [7; SALT_LEN];
    const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0";

    #[test]
    fn is_the_documented_hash() {
        // Recompute the documented encoding by hand.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&SALT);
        bytes.extend_from_slice(&11u64.to_be_bytes());
        bytes.extend_from_slice(b"example.com");
        bytes.push(4);
        bytes.extend_from_slice(&[203, 0, 113, 0]);
        bytes.extend_from_slice(&(UA.len() as u64).to_be_bytes());
        bytes.extend_from_slice(UA.as_bytes());
        let digest = Sha256::digest(&bytes);
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(
            visitor_id(&SALT, "example.com", &ip("203.0.113.77"), UA),
            expected
        );
    }

    #[test]
    fn is_stable_and_ignores_truncated_bits() {
        let a = visitor_id(&SALT, "example.com", &ip("203.0.113.5"), UA);
        let b = visitor_id(&SALT, "example.com", &ip("203.0.113.200"), UA);
        assert_eq!(a, b, "same /24 is the same visitor");
        assert_eq!(a, visitor_id(&SALT, "example.com", &ip("203.0.113.5"), UA));
    }

    #[test]
    fn every_input_changes_the_id() {
        let base = visitor_id(&SALT, "example.com", &ip("203.0.113.5"), UA);
        let mut other_salt = SALT;
        other_salt[31] ^= 1;
        let variants = [
            visitor_id(&other_salt, "example.com", &ip("203.0.113.5"), UA),
            visitor_id(&SALT, "example.org", &ip("203.0.113.5"), UA),
            visitor_id(&SALT, "example.com", &ip("203.0.114.5"), UA),
            visitor_id(&SALT, "example.com", &ip("2001:db8::1"), UA),
            visitor_id(&SALT, "example.com", &ip("203.0.113.5"), "curl/8.0"),
            visitor_id(&SALT, "example.com", &ip("203.0.113.5"), ""),
        ];
        let mut seen = HashSet::from([base]);
        for v in variants {
            assert!(seen.insert(v), "collision: {v}");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let addr = ip("10.1.2.3");
        // Moving bytes between site and User-Agent must change the id.
        assert_ne!(
            visitor_id(&SALT, "ab", &addr, "c"),
            visitor_id(&SALT, "a", &addr, "bc")
        );
        assert_ne!(
            visitor_id(&SALT, "", &addr, "abc"),
            visitor_id(&SALT, "abc", &addr, "")
        );
        // An IPv4 address and an IPv6 address whose bytes start the same way.
        let v4 = ip("32.1.13.0");
        let v6 = ip("2001:d00::");
        assert_ne!(
            visitor_id(&SALT, "s", &v4, ""),
            visitor_id(&SALT, "s", &v6, "")
        );
        // A site name that ends in what would otherwise be the length prefix.
        let mut tricky = String::from("s");
        tricky.push('\0');
        assert_ne!(
            visitor_id(&SALT, "s", &addr, UA),
            visitor_id(&SALT, &tricky, &addr, UA)
        );
    }
}
