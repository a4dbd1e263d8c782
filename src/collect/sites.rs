//! The configured sites: which `domain` a hit may name, and which origins may send.
//!
//! Lookups run for every hit and every CORS check, so the registry is a read-only
//! `HashMap` from every accepted host name to its site, built once from the
//! configuration. Configuration validation guarantees lower-case, unique names.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;

/// One configured site, with everything per-hit code needs precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The canonical domain: the `site` column of every row of this site.
    pub domain: Arc<str>,
    /// Other host names that count as this site.
    pub aliases: Vec<String>,
    /// Days of data kept (the site's own value or `retention.default_days`).
    pub retention_days: u32,
    /// IANA time zone name.
    pub timezone: String,
    /// Hosts whose referrers are internal navigation, not a traffic source: the
    /// domain and aliases, each also with `www.` added (or removed when it has one).
    pub same_site_hosts: Vec<String>,
}

/// All configured sites, indexed by domain and alias.
#[derive(Debug, Clone, Default)]
pub struct SiteRegistry {
    sites: Vec<Arc<Site>>,
    by_host: HashMap<Box<str>, Arc<Site>>,
}

impl SiteRegistry {
    pub fn from_config(config: &Config) -> Self {
        let mut sites = Vec::with_capacity(config.sites.len());
        let mut by_host = HashMap::new();
        for sc in &config.sites {
            let mut same_site_hosts = Vec::new();
            for name in std::iter::once(&sc.domain).chain(&sc.aliases) {
                let twin = match name.strip_prefix("www.") {
                    Some(bare) => bare.to_owned(),
                    None => format!("www.{name}"),
                };
                for host in [name.clone(), twin] {
                    if !same_site_hosts.contains(&host) {
                        same_site_hosts.push(host);
                    }
                }
            }
            let site = Arc::new(Site {
                domain: Arc::from(sc.domain.as_str()),
                aliases: sc.aliases.clone(),
                retention_days: sc.retention_days(&config.retention),
                timezone: sc.timezone.clone(),
                same_site_hosts,
            });
            for name in std::iter::once(&sc.domain).chain(&sc.aliases) {
                by_host.insert(Box::from(name.as_str()), Arc::clone(&site));
            }
            sites.push(site);
        }
        Self { sites, by_host }
    }

    /// The site a hit's `domain` names: its domain or one of its aliases, compared
    /// case-insensitively and ignoring one trailing dot.
    ///
    /// A leading `www.` is tolerated when that exact name is not configured
    /// (`www.example.com` resolves to the site `example.com`): Plausible strips `www.`
    /// from site domains, so snippets copied from it may name either form. The reverse
    /// is not done: configuring `www.example.com` does not claim `example.com`.
    pub fn resolve(&self, domain: &str) -> Option<&Arc<Site>> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        with_lowercase(domain, |host| {
            self.by_host.get(host).or_else(|| {
                let bare = host.strip_prefix("www.")?;
                self.by_host.get(bare)
            })
        })
    }

    /// Whether a browser `Origin` may post hits (CORS): `http` or `https`, any port,
    /// and a host equal to a configured domain or alias or a subdomain of one
    /// (`https://blog.example.com` for site `example.com`). Subdomains are accepted
    /// because a site's pages often live on several of them; the body's `domain` still
    /// decides which site a hit counts for. `null`, other schemes, paths and user
    /// info are refused.
    pub fn is_allowed_origin(&self, origin: &str) -> bool {
        let Some(host) = origin_host(origin) else {
            return false;
        };
        with_lowercase(host, |host| {
            let mut rest = host;
            loop {
                if self.by_host.contains_key(rest) {
                    return true;
                }
                match rest.split_once('.') {
                    Some((_, parent)) if !parent.is_empty() => rest = parent,
                    _ => return false,
                }
            }
        })
    }

    /// Every configured site, in configuration order.
    pub fn all(&self) -> &[Arc<Site>] {
        &self.sites
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}

/// Runs `f` on a lower-case view of `s`, allocating only when `s` has upper case.
fn with_lowercase<T>(s: &str, f: impl FnOnce(&str) -> T) -> T {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        f(&s.to_ascii_lowercase())
    } else {
        f(s)
    }
}

/// The host of a serialized origin `scheme://host[:port]`, if it is http(s).
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return None;
    }
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => rest,
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> SiteRegistry {
        let config = Config::from_toml_str(
            r#"
            [retention]
            default_days = 100
            [[sites]]
            domain = "example.com"
            aliases = ["www.example.com", "example.org"]
            timezone = "Europe/Berlin"
            [[sites]]
            domain = "shop.test"
            retention_days = 30
            [[sites]]
            domain = "www.other.net"
            "#,
        )
        .unwrap();
        SiteRegistry::from_config(&config)
    }

    #[test]
    fn resolves_domains_and_aliases() {
        let r = registry();
        for name in [
            "example.com",
            "www.example.com",
            "example.org",
            "EXAMPLE.Org",
        ] {
            assert_eq!(&*r.resolve(name).unwrap().domain, "example.com", "{name}");
        }
        assert_eq!(&*r.resolve("shop.test").unwrap().domain, "shop.test");
        assert_eq!(&*r.resolve("example.com.").unwrap().domain, "example.com");
        assert!(r.resolve("example.net").is_none());
        assert!(r.resolve("").is_none());
        assert!(r.resolve("com").is_none());
        assert!(r.resolve("sub.example.com").is_none());
    }

    #[test]
    fn leading_www_is_tolerated_one_way() {
        let r = registry();
        assert_eq!(&*r.resolve("www.shop.test").unwrap().domain, "shop.test");
        assert_eq!(
            &*r.resolve("WWW.example.org").unwrap().domain,
            "example.com"
        );
        // Configured with www: the bare name is someone else's.
        assert!(r.resolve("other.net").is_none());
        assert_eq!(
            &*r.resolve("www.other.net").unwrap().domain,
            "www.other.net"
        );
        assert!(r.resolve("www.www.shop.test").is_none());
    }

    #[test]
    fn site_fields_are_precomputed() {
        let r = registry();
        let site = r.resolve("example.com").unwrap();
        assert_eq!(site.retention_days, 100);
        assert_eq!(site.timezone, "Europe/Berlin");
        assert_eq!(site.aliases, vec!["www.example.com", "example.org"]);
        assert_eq!(
            site.same_site_hosts,
            vec![
                "example.com",
                "www.example.com",
                "example.org",
                "www.example.org"
            ]
        );
        let shop = r.resolve("shop.test").unwrap();
        assert_eq!(shop.retention_days, 30);
        assert_eq!(shop.timezone, "UTC");
        let other = r.resolve("www.other.net").unwrap();
        assert_eq!(other.same_site_hosts, vec!["www.other.net", "other.net"]);
        // Alias lookups share the one Arc.
        assert!(Arc::ptr_eq(site, r.resolve("example.org").unwrap()));
        let names: Vec<&str> = r.all().iter().map(|s| &*s.domain).collect();
        assert_eq!(names, ["example.com", "shop.test", "www.other.net"]);
    }

    #[test]
    fn allowed_origins() {
        let r = registry();
        for ok in [
            "https://example.com",
            "http://example.com",
            "https://example.com:8443",
            "HTTPS://Blog.Example.com",
            "https://a.b.example.org",
            "http://www.other.net",
            "https://x.www.other.net",
            "https://shop.test:3000",
        ] {
            assert!(r.is_allowed_origin(ok), "{ok}");
        }
        for bad in [
            "null",
            "",
            "example.com",
            "ftp://example.com",
            "https://",
            "https://evil.com",
            "https://example.com.evil.com",
            "https://notexample.com",
            "https://other.net",
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com:",
            "https://example.com:80x",
            "https://[::1]:80",
            "https://com",
            "https://.example.com.",
        ] {
            assert!(!r.is_allowed_origin(bad), "{bad}");
        }
    }

    #[test]
    fn empty_registry() {
        let r = SiteRegistry::from_config(&Config::default());
        assert!(r.is_empty());
        assert!(r.resolve("example.com").is_none());
        assert!(!r.is_allowed_origin("https://example.com"));
    }
}
