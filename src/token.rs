//! Bearer secrets: admin API tokens and Stats API keys.
//!
//! Both are 32 random bytes from the OS RNG, shown once as hex. The configuration only
//! holds their SHA-256, so a leaked config file does not grant access; a presented
//! value is checked by hashing it and comparing digests in constant time, against
//! every configured hash (no early exit).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ALL_SITES, AdminToken, StatsKey};
use crate::hex;

/// The secret of an `Authorization: Bearer <secret>` header (scheme case-insensitive,
/// surrounding space trimmed); `None` when absent, another scheme, or empty.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// A freshly generated token: `secret` is shown to the operator once, `sha256` goes in the config.
pub struct NewToken {
    pub name: String,
    pub secret: String,
    pub sha256: String,
}

impl NewToken {
    pub fn generate(name: &str) -> Self {
        let bytes: [u8; 32] = rand::random();
        let secret = hex::encode(&bytes);
        let sha256 = hex::encode(&Sha256::digest(secret.as_bytes()));
        Self {
            name: name.to_owned(),
            secret,
            sha256,
        }
    }

    /// The `[[admin.tokens]]` entry to paste into the configuration.
    pub fn config_snippet(&self) -> String {
        format!(
            "[[admin.tokens]]\nname = {}\nsha256 = \"{}\"\n",
            toml_string(&self.name),
            self.sha256
        )
    }

    /// The `[[stats.keys]]` entry for this secret used as a Stats API key that may
    /// read `sites` (domains, or `["*"]`).
    pub fn stats_key_snippet(&self, sites: &[String]) -> String {
        let sites: Vec<String> = sites.iter().map(|s| toml_string(s)).collect();
        format!(
            "[[stats.keys]]\nname = {}\nsha256 = \"{}\"\nsites = [{}]\n",
            toml_string(&self.name),
            self.sha256,
            sites.join(", ")
        )
    }
}

/// The name of the entry whose hash is `presented`'s SHA-256, comparing every entry
/// in constant time, so timing reveals neither which entry nor how much of a hash
/// matched.
fn find<'a, T>(
    entries: &'a [(String, [u8; 32], T)],
    presented: &str,
) -> Option<&'a (String, [u8; 32], T)> {
    let digest = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for entry in entries {
        if bool::from(digest.as_slice().ct_eq(&entry.1)) {
            found = Some(entry);
        }
    }
    found
}

fn toml_string(s: &str) -> String {
    // serde_json string escaping is a valid TOML basic string for all input.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The configured tokens, decoded once.
#[derive(Clone, Default)]
pub struct TokenSet {
    tokens: Vec<(String, [u8; 32], ())>,
}

impl TokenSet {
    /// Entries whose hash is not 64 hex digits are skipped (config validation rejects them).
    pub fn from_config(tokens: &[AdminToken]) -> Self {
        Self {
            tokens: tokens
                .iter()
                .filter_map(|t| Some((t.name.clone(), hex::decode_32(&t.sha256)?, ())))
                .collect(),
        }
    }

    /// The name of the token `presented` is, or `None`. Every configured hash is compared
    /// (no early exit), each in constant time, so timing reveals neither which token nor
    /// how much of a hash matched.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        find(&self.tokens, presented).map(|(name, _, ())| name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Why a Stats API key was refused. The HTTP answer is 401 either way, so a caller
/// cannot probe which keys exist for which sites; the log line may say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyDenied {
    /// No configured key has this value (also: empty, revoked, an admin token).
    #[error("unknown stats API key")]
    Unknown,
    /// A valid key, but its `sites` do not include the site asked for.
    #[error("the stats API key may not read this site")]
    SiteNotAllowed,
}

/// The sites one Stats API key may read.
#[derive(Debug, Clone)]
enum KeySites {
    All,
    Only(Vec<String>),
}

/// The configured Stats API keys, decoded once.
#[derive(Debug, Clone, Default)]
pub struct StatsKeys {
    keys: Vec<(String, [u8; 32], KeySites)>,
}

impl StatsKeys {
    /// Entries whose hash is not 64 hex digits are skipped (config validation rejects
    /// them).
    pub fn from_config(keys: &[StatsKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .filter_map(|k| {
                    let sites = if k.sites.iter().any(|s| s == ALL_SITES) {
                        KeySites::All
                    } else {
                        KeySites::Only(k.sites.clone())
                    };
                    Some((k.name.clone(), hex::decode_32(&k.sha256)?, sites))
                })
                .collect(),
        }
    }

    /// The name of the key `presented` is, if it may read `site` (a configured
    /// domain, compared exactly). The key is found as admin tokens are (constant
    /// time over every configured hash).
    pub fn authorize(&self, presented: &str, site: &str) -> Result<&str, KeyDenied> {
        let (name, _, sites) = find(&self.keys, presented).ok_or(KeyDenied::Unknown)?;
        match sites {
            KeySites::All => Ok(name),
            KeySites::Only(sites) if sites.iter().any(|s| s == site) => Ok(name),
            KeySites::Only(_) => Err(KeyDenied::SiteNotAllowed),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn generated_token_verifies_and_snippet_is_valid_config() {
        let t = NewToken::generate("ops \"team\"");
        assert_eq!(t.secret.len(), 64);
        let config = Config::from_toml_str(&t.config_snippet()).unwrap();
        assert_eq!(config.admin.tokens[0].name, "ops \"team\"");
        let set = TokenSet::from_config(&config.admin.tokens);
        assert_eq!(set.verify(&t.secret), Some("ops \"team\""));
        assert_eq!(set.verify(&t.sha256), None, "the hash is not the token");
        assert_eq!(set.verify(""), None);
        let mut wrong = t.secret.clone();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert_eq!(set.verify(&wrong), None);
    }

    #[test]
    fn two_tokens_are_distinct() {
        let a = NewToken::generate("a");
        let b = NewToken::generate("b");
        assert_ne!(a.secret, b.secret);
        let set = TokenSet::from_config(&[
            AdminToken {
                name: "a".into(),
                sha256: a.sha256.clone(),
            },
            AdminToken {
                name: "b".into(),
                sha256: b.sha256.to_uppercase(),
            },
        ]);
        assert_eq!(set.verify(&a.secret), Some("a"));
        assert_eq!(set.verify(&b.secret), Some("b"));
    }

    const SITES: &str = "[[sites]]\ndomain = \"a.com\"\naliases = [\"www.a.com\"]\n\
                         [[sites]]\ndomain = \"b.com\"\n[[sites]]\ndomain = \"c.com\"\n";

    /// Keys made as `hush key new` makes them, configured from their snippets.
    fn configured(keys: &[(&NewToken, &[&str])]) -> Config {
        let mut toml = SITES.to_owned();
        for (key, sites) in keys {
            let sites: Vec<String> = sites.iter().map(|s| (*s).to_owned()).collect();
            toml.push_str(&key.stats_key_snippet(&sites));
        }
        Config::from_toml_str(&toml).unwrap()
    }

    #[test]
    fn a_stats_key_reads_its_sites_only() {
        let ab = NewToken::generate("reporting \"q3\"");
        let all = NewToken::generate("everything");
        let config = configured(&[(&ab, &["a.com", "b.com"]), (&all, &["*"])]);
        assert_eq!(config.stats.keys[0].name, "reporting \"q3\"");
        assert_eq!(config.stats.keys[0].sha256, ab.sha256);
        let keys = StatsKeys::from_config(&config.stats.keys);

        assert_eq!(keys.authorize(&ab.secret, "a.com"), Ok("reporting \"q3\""));
        assert_eq!(keys.authorize(&ab.secret, "b.com"), Ok("reporting \"q3\""));
        assert_eq!(
            keys.authorize(&ab.secret, "c.com"),
            Err(KeyDenied::SiteNotAllowed)
        );
        // Sites are named by domain: an alias, a different case or a suffix is not one.
        for other in ["www.a.com", "A.com", "a.co", "xa.com", ""] {
            assert_eq!(
                keys.authorize(&ab.secret, other),
                Err(KeyDenied::SiteNotAllowed)
            );
        }
        for site in ["a.com", "c.com", "not-configured.example"] {
            assert_eq!(keys.authorize(&all.secret, site), Ok("everything"));
        }
    }

    #[test]
    fn wrong_stats_keys_are_unknown() {
        let key = NewToken::generate("k");
        let admin = NewToken::generate("admin");
        let mut config = configured(&[(&key, &["a.com"])]);
        config.admin.tokens.push(AdminToken {
            name: "admin".into(),
            sha256: admin.sha256.clone(),
        });
        let keys = StatsKeys::from_config(&config.stats.keys);
        let mut flipped = key.secret.clone();
        flipped.replace_range(63.., if flipped.ends_with('0') { "1" } else { "0" });
        for presented in [
            String::new(),
            key.sha256.clone(),
            flipped,
            key.secret.to_uppercase(),
            format!("{} ", key.secret),
            key.secret[..63].to_owned(),
            admin.secret.clone(),
        ] {
            assert_eq!(
                keys.authorize(&presented, "a.com"),
                Err(KeyDenied::Unknown),
                "{presented:?}"
            );
        }
        // A revoked key (removed from the config) is unknown too.
        let revoked = StatsKeys::from_config(&configured(&[]).stats.keys);
        assert!(revoked.is_empty());
        assert_eq!(
            revoked.authorize(&key.secret, "a.com"),
            Err(KeyDenied::Unknown)
        );
        assert_eq!(keys.authorize(&key.secret, "a.com"), Ok("k"));
    }
}
