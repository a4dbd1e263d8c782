//! Page URL → host name, path and UTM parameters.
//!
//! The query string and fragment never reach storage (they routinely carry tokens,
//! e-mail addresses and session ids); only the five UTM values, plus the `ref` /
//! `source` fallbacks for the source, are kept. In hash mode (single-page apps that
//! route on `#/...`) the fragment is part of the page identity and is appended.

use url::Url;

/// UTM values longer than this (in characters) are cut.
pub const MAX_UTM_CHARS: usize = 200;

/// Hard cap on the URL size this module parses, independent of the configured
/// request limits, so a misconfiguration cannot make one hit expensive.
pub const MAX_URL_BYTES: usize = 16 * 1024;

/// Campaign parameters of the landing URL; empty strings when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utm {
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub term: String,
    pub content: String,
}

impl Utm {
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
            && self.medium.is_empty()
            && self.campaign.is_empty()
            && self.term.is_empty()
            && self.content.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUrl {
    /// Lower-case host name without port or trailing dot; IDNs in punycode, as
    /// browsers report `location.hostname`.
    pub hostname: String,
    /// Path as sent (percent-encoding kept), "/" when empty, plus `#fragment` in hash mode.
    pub pathname: String,
    pub utm: Utm,
}

/// Why a page URL was refused; the message is short enough for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url is empty")]
    Empty,
    #[error("url is too long")]
    TooLong,
    #[error("url is not a valid absolute URL")]
    Invalid,
    #[error("url scheme must be http or https")]
    Scheme,
    #[error("url has no host")]
    NoHost,
}

/// Parses a page URL as sent by the tracker (`location.href`).
pub fn parse(url: &str, hash_mode: bool) -> Result<PageUrl, UrlError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if url.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong);
    }
    let parsed = Url::parse(url).map_err(|_| UrlError::Invalid)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    let host = parsed.host_str().ok_or(UrlError::NoHost)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    // The url crate lower-cases domains and punycodes IDNs already; IP literals are kept.
    let hostname = host.to_owned();

    let path = parsed.path();
    let fragment = if hash_mode {
        parsed.fragment().filter(|f| !f.is_empty())
    } else {
        None
    };
    let mut pathname =
        String::with_capacity(path.len().max(1) + fragment.map_or(0, |f| f.len() + 1));
    pathname.push_str(if path.is_empty() { "/" } else { path });
    if let Some(fragment) = fragment {
        pathname.push('#');
        pathname.push_str(fragment);
    }

    Ok(PageUrl {
        hostname,
        pathname,
        utm: utm_of(&parsed),
    })
}

fn utm_of(url: &Url) -> Utm {
    let mut utm = Utm::default();
    if url.query().is_none_or(str::is_empty) {
        return utm;
    }
    // `ref` / `source` stand in for utm_source (Plausible convention); a real
    // utm_source wins regardless of order.
    let mut fallback_source = String::new();
    for (key, value) in url.query_pairs() {
        let slot = match &*key {
            "utm_source" => &mut utm.source,
            "utm_medium" => &mut utm.medium,
            "utm_campaign" => &mut utm.campaign,
            "utm_term" => &mut utm.term,
            "utm_content" => &mut utm.content,
            "ref" | "source" => &mut fallback_source,
            _ => continue,
        };
        // The first non-empty occurrence of a parameter wins.
        if slot.is_empty() {
            set_capped(slot, &value);
        }
    }
    if utm.source.is_empty() {
        utm.source = fallback_source;
    }
    utm
}

/// Stores `value` trimmed and cut to [`MAX_UTM_CHARS`] characters.
fn set_capped(slot: &mut String, value: &str) {
    let value = value.trim();
    let end = value
        .char_indices()
        .nth(MAX_UTM_CHARS)
        .map_or(value.len(), |(i, _)| i);
    slot.clear();
    slot.push_str(value[..end].trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> PageUrl {
        parse(url, false).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn host_path_and_query_stripping() {
        let p = ok("https://Example.COM:8443/Blog/Post-1?id=7&email=a@b.c#comments");
        assert_eq!(p.hostname, "example.com");
        assert_eq!(p.pathname, "/Blog/Post-1");
        assert_eq!(p.utm, Utm::default());
    }

    #[test]
    fn empty_path_becomes_slash_and_trailing_slash_is_kept() {
        assert_eq!(ok("https://example.com").pathname, "/");
        assert_eq!(ok("https://example.com?x=1").pathname, "/");
        assert_eq!(ok("https://example.com/docs/").pathname, "/docs/");
    }

    #[test]
    fn percent_encoding_is_kept_as_sent() {
        assert_eq!(
            ok("https://example.com/caf%C3%A9/a%20b").pathname,
            "/caf%C3%A9/a%20b"
        );
        // Raw non-ASCII is encoded the way the browser's location.href would be.
        assert_eq!(ok("https://example.com/café").pathname, "/caf%C3%A9");
    }

    #[test]
    fn hash_mode_keeps_the_fragment() {
        let p = parse("https://app.example.com/#/settings/profile?tab=2", true).unwrap();
        assert_eq!(p.pathname, "/#/settings/profile?tab=2");
        let p = parse("https://app.example.com/app#", true).unwrap();
        assert_eq!(p.pathname, "/app");
        let p = parse("https://app.example.com/app#/x", false).unwrap();
        assert_eq!(p.pathname, "/app");
    }

    #[test]
    fn idn_ip_and_trailing_dot_hosts() {
        assert_eq!(ok("https://münchen.de/").hostname, "xn--mnchen-3ya.de");
        assert_eq!(
            ok("https://xn--mnchen-3ya.de/").hostname,
            "xn--mnchen-3ya.de"
        );
        assert_eq!(ok("http://192.168.1.10:8080/x").hostname, "192.168.1.10");
        assert_eq!(ok("http://[2001:db8::1]:8080/").hostname, "[2001:db8::1]");
        assert_eq!(ok("https://example.com./a").hostname, "example.com");
    }

    #[test]
    fn utm_parameters() {
        let p = ok(
            "https://example.com/?utm_source=Newsletter&utm_medium=email&utm_campaign=spring%20sale&utm_term=shoes+red&utm_content=hero",
        );
        assert_eq!(
            p.utm,
            Utm {
                source: "Newsletter".into(),
                medium: "email".into(),
                campaign: "spring sale".into(),
                term: "shoes red".into(),
                content: "hero".into(),
            }
        );
    }

    #[test]
    fn ref_and_source_are_fallbacks_for_utm_source() {
        assert_eq!(
            ok("https://example.com/?ref=producthunt").utm.source,
            "producthunt"
        );
        assert_eq!(ok("https://example.com/?source=hn").utm.source, "hn");
        assert_eq!(
            ok("https://example.com/?ref=x&utm_source=y").utm.source,
            "y",
            "utm_source wins even when it comes later"
        );
        assert_eq!(ok("https://example.com/?utm_source=&ref=z").utm.source, "z");
    }

    #[test]
    fn utm_values_are_trimmed_and_capped() {
        let long = "é".repeat(MAX_UTM_CHARS + 50);
        let p = ok(&format!(
            "https://example.com/?utm_campaign=%20%20spaced%20&utm_term={long}"
        ));
        assert_eq!(p.utm.campaign, "spaced");
        assert_eq!(p.utm.term.chars().count(), MAX_UTM_CHARS);
        assert!(p.utm.term.chars().all(|c| c == 'é'));
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(
            ok("https://example.com/?utm_source=a&utm_source=b")
                .utm
                .source,
            "a"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert_eq!(parse("", false), Err(UrlError::Empty));
        assert_eq!(parse("   ", false), Err(UrlError::Empty));
        assert_eq!(parse("/relative/path", false), Err(UrlError::Invalid));
        assert_eq!(parse("example.com/page", false), Err(UrlError::Invalid));
        assert_eq!(parse("http://", false), Err(UrlError::Invalid));
        assert_eq!(
            parse("https://exa mple.com/", false),
            Err(UrlError::Invalid)
        );
        assert_eq!(parse("javascript:alert(1)", false), Err(UrlError::Scheme));
        assert_eq!(parse("data:text/html,hi", false), Err(UrlError::Scheme));
        assert_eq!(parse("file:///etc/passwd", false), Err(UrlError::Scheme));
        assert_eq!(parse("ftp://example.com/", false), Err(UrlError::Scheme));
        assert_eq!(
            parse("chrome-extension://abc/popup.html", false),
            Err(UrlError::Scheme)
        );
        assert_eq!(parse("http://./", false), Err(UrlError::NoHost));
        let huge = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(parse(&huge, false), Err(UrlError::TooLong));
        assert_eq!(
            UrlError::Scheme.to_string(),
            "url scheme must be http or https"
        );
    }

    #[test]
    fn long_but_allowed_urls_parse() {
        let path = "a/".repeat(4_000);
        let p = ok(&format!("https://example.com/{path}?utm_source=x"));
        assert_eq!(p.pathname.len(), path.len() + 1);
        assert_eq!(p.utm.source, "x");
    }
}
