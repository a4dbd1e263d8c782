//! Admin API bearer tokens.
//!
//! A token is 32 random bytes from the OS RNG, shown once as hex. The configuration only
//! holds its SHA-256, so a leaked config file does not grant access; a token is checked
//! by hashing the presented value and comparing digests in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminToken;
use crate::hex;

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
}

fn toml_string(s: &str) -> String {
    // serde_json string escaping is a valid TOML basic string for all input.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The configured tokens, decoded once.
#[derive(Clone, Default)]
pub struct TokenSet {
    tokens: Vec<(String, [u8; 32])>,
}

impl TokenSet {
    /// Entries whose hash is not 64 hex digits are skipped (config validation rejects them).
    pub fn from_config(tokens: &[AdminToken]) -> Self {
        Self {
            tokens: tokens
                .iter()
                .filter_map(|t| Some((t.name.clone(), hex::decode_32(&t.sha256)?)))
                .collect(),
        }
    }

    /// The name of the token `presented` is, or `None`. Every configured hash is compared
    /// (no early exit), each in constant time, so timing reveals neither which token nor
    /// how much of a hash matched.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for (name, hash) in &self.tokens {
            if bool::from(digest.as_slice().ct_eq(hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
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
}
