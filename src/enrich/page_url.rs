//! Page URL → host name, path and UTM parameters.
//!
//! The query string and fragment never reach storage (they routinely carry tokens,
//! e-mail addresses and session ids); only the five UTM values, plus the `ref` /
//! `source` fallbacks for the source, are kept. In hash mode (single-page apps that
//! route on `#/...`) the fragment's route is part of the page identity and is
//! appended: the fragment up to its first `?`, whose query part is dropped like the
//! URL's own (`#/cb?access_token=…` is stored as `#/cb`). A fragment that is itself a
//! parameter list (a route part holding `=` or `&`, such as OAuth's implicit-flow
//! answer `#access_token=…&state=…`) is no route and is dropped whole.

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
    /// Path as sent (percent-encoding kept), "/" when empty, plus `#route` in hash mode
    /// (see [`fragment_route`]).
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
    let url = checked_len(url)?;
    match split_simple(url) {
        Some(simple) => Ok(build(
            simple.host,
            simple.path,
            simple.query,
            simple.fragment,
            hash_mode,
        )),
        None => parse_full(url, hash_mode),
    }
}

/// The url crate's WHATWG parse of a checked URL that `split_simple` did not claim.
fn parse_full(url: &str, hash_mode: bool) -> Result<PageUrl, UrlError> {
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
    Ok(build(
        host,
        parsed.path(),
        parsed.query(),
        parsed.fragment(),
        hash_mode,
    ))
}

/// Whether [`parse`] accepts `url`, without building the result: for a simple URL
/// (most of them) nothing is allocated. Used to check every item of a batch before
/// any of them is enriched.
pub fn validate(url: &str, hash_mode: bool) -> Result<(), UrlError> {
    let url = checked_len(url)?;
    match split_simple(url) {
        Some(_) => Ok(()),
        None => parse_full(url, hash_mode).map(drop),
    }
}

/// `url` without surrounding ASCII white space, when it is neither empty nor too long.
fn checked_len(url: &str) -> Result<&str, UrlError> {
    let url = url.trim_ascii();
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if url.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong);
    }
    Ok(url)
}

fn build(
    host: &str,
    path: &str,
    query: Option<&str>,
    fragment: Option<&str>,
    hash_mode: bool,
) -> PageUrl {
    let fragment = fragment.filter(|_| hash_mode).and_then(fragment_route);
    let path = if path.is_empty() { "/" } else { path };
    let mut pathname = String::with_capacity(path.len() + fragment.map_or(0, |f| f.len() + 1));
    pathname.push_str(path);
    if let Some(fragment) = fragment {
        pathname.push('#');
        pathname.push_str(fragment);
    }
    PageUrl {
        hostname: host.to_owned(),
        pathname,
        utm: query.map(utm_of_query).unwrap_or_default(),
    }
}

/// The route a hash-mode page keeps from its fragment: the part before the first
/// `?` (the fragment's query part is dropped, as the URL's own query is), or `None`
/// when that part is empty or is a parameter list (holds `=` or `&`: OAuth's
/// implicit flow answers with `#access_token=…&token_type=…`) rather than a route.
pub fn fragment_route(fragment: &str) -> Option<&str> {
    let route = fragment
        .split_once('?')
        .map_or(fragment, |(route, _)| route);
    (!route.is_empty() && !route.contains(['=', '&'])).then_some(route)
}

/// An absolute http(s) URL split by hand. Only produced when the url crate would
/// give exactly the same host, path, query and fragment (no normalisation to do):
/// most real URLs are like that, and splitting is several times cheaper than a full
/// WHATWG parse, which stays the fallback for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SimpleUrl<'a> {
    /// Lower-case host name without port or trailing dot.
    pub host: &'a str,
    /// Path as the url crate would serialise it (never empty: "/" at least).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

pub(crate) fn split_simple(s: &str) -> Option<SimpleUrl<'_>> {
    let rest = match s.strip_prefix("https://") {
        Some(rest) => rest,
        None => s.strip_prefix("http://")?,
    };
    let bytes = rest.as_bytes();

    // Host: lower-case LDH labels, none empty, no punycode (the url crate validates
    // it), last label starting with a letter (else it may be an IPv4 address).
    let mut i = 0;
    let mut label_start = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => {
                if i == label_start && bytes[i..].starts_with(b"xn--") {
                    return None;
                }
            }
            b'.' if i > label_start => label_start = i + 1,
            b'.' => return None,
            _ => break,
        }
        i += 1;
    }
    if label_start >= i || !bytes[label_start].is_ascii_lowercase() {
        return None;
    }
    let host = &rest[..i];

    // Port: digits within u16; the url crate refuses larger ones.
    if bytes.get(i) == Some(&b':') {
        let start = i + 1;
        i = start;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 5 || rest[start..i].parse::<u32>().ok()? > 65_535 {
            return None;
        }
    }

    // Path, query, fragment: one pass checking every byte and finding the separators.
    let tail = &bytes[i..];
    if !matches!(tail.first(), None | Some(b'/' | b'?' | b'#')) {
        return None;
    }
    // Separate tight passes: each compiles to a simple loop, unlike one loop doing all.
    if !tail.iter().all(|&b| PLAIN_URL_BYTE[usize::from(b)]) {
        return None;
    }
    let fragment_at = tail.iter().position(|&b| b == b'#');
    let before_fragment = &tail[..fragment_at.unwrap_or(tail.len())];
    let query_at = before_fragment.iter().position(|&b| b == b'?');
    let path = &before_fragment[..query_at.unwrap_or(before_fragment.len())];
    // Dot segments, also percent-encoded, are resolved by the url crate.
    for (j, &b) in path.iter().enumerate() {
        match b {
            b'.' if j > 0 && path[j - 1] == b'/' => return None,
            b'%' if matches!(path.get(j + 1..j + 3), Some([b'2', b'e' | b'E'])) => return None,
            _ => {}
        }
    }
    let tail = &rest[i..];
    let (before_fragment, fragment) = match fragment_at {
        Some(at) => (&tail[..at], Some(&tail[at + 1..])),
        None => (tail, None),
    };
    let (path, query) = match query_at {
        Some(at) => (&before_fragment[..at], Some(&before_fragment[at + 1..])),
        None => (before_fragment, None),
    };
    Some(SimpleUrl {
        host,
        path: if path.is_empty() { "/" } else { path },
        query,
        fragment,
    })
}

/// Printable ASCII that no part of an http(s) URL percent-encodes or rewrites.
const PLAIN_URL_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b <= 0x7e {
        table[b] = !matches!(
            b as u8,
            b'"' | b'\'' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        );
        b += 1;
    }
    table
};

fn utm_of_query(query: &str) -> Utm {
    let mut utm = Utm::default();
    // `ref` / `source` stand in for utm_source (Plausible convention); a real
    // utm_source wins regardless of order.
    let mut fallback_source = String::new();
    let bytes = query.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let pair_start = start;
        let mut end = start;
        let mut eq = None;
        let mut encoded = false;
        while let Some(&b) = bytes.get(end) {
            match b {
                b'&' => break,
                b'=' if eq.is_none() => eq = Some(end),
                b'%' | b'+' => encoded = true,
                _ => {}
            }
            end += 1;
        }
        let pair = &query[pair_start..end];
        start = end + 1;
        // Most pairs hold nothing to decode; only the others pay for decoding.
        let decoded;
        let (key, value) = if encoded {
            decoded = url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .unwrap_or_default();
            (decoded.0.as_ref(), decoded.1.as_ref())
        } else {
            match eq {
                Some(at) => (&query[pair_start..at], &query[at + 1..end]),
                None => (pair, ""),
            }
        };
        let slot = match key {
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
            set_capped(slot, value);
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
    // Byte length bounds the character count, so short values skip the count.
    let end = if value.len() <= MAX_UTM_CHARS {
        value.len()
    } else {
        value
            .char_indices()
            .nth(MAX_UTM_CHARS)
            .map_or(value.len(), |(i, _)| i)
    };
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
    fn hash_mode_keeps_the_fragment_route() {
        let p = parse("https://app.example.com/#/settings/profile", true).unwrap();
        assert_eq!(p.pathname, "/#/settings/profile");
        let p = parse("https://app.example.com/app#!/inbox", true).unwrap();
        assert_eq!(p.pathname, "/app#!/inbox");
        let p = parse("https://app.example.com/app#", true).unwrap();
        assert_eq!(p.pathname, "/app");
        let p = parse("https://app.example.com/app#/x", false).unwrap();
        assert_eq!(p.pathname, "/app");
    }

    #[test]
    fn hash_mode_drops_the_fragment_query() {
        // Both the fast path and the WHATWG fallback (the IDN host forces it).
        for host in ["app.example.com", "äpp.example.com"] {
            let url = format!("https://{host}/#/cb?access_token=SECRET&state=xyz");
            let p = parse(&url, true).unwrap();
            assert!(p.pathname == "/#/cb", "{url}: {}", p.pathname);
            let url = format!("https://{host}/#/settings/profile?tab=2");
            assert_eq!(parse(&url, true).unwrap().pathname, "/#/settings/profile");
            // Nothing but a query: no route.
            let url = format!("https://{host}/app#?token=SECRET");
            assert_eq!(parse(&url, true).unwrap().pathname, "/app");
            // A fragment that is a parameter list (OAuth implicit flow) is no route.
            for fragment in ["access_token=SECRET&token_type=bearer", "a&SECRET"] {
                let url = format!("https://{host}/cb#{fragment}");
                assert_eq!(parse(&url, true).unwrap().pathname, "/cb", "{url}");
            }
            // Query and fragment query together: neither is kept.
            let url = format!("https://{host}/p?email=a@b.c#/r?x=SECRET");
            let p = parse(&url, true).unwrap();
            assert_eq!(p.pathname, "/p#/r");
            assert!(!p.pathname.contains("SECRET") && !p.pathname.contains('@'));
        }
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
    fn utm_decoding_matches_form_urlencoded() {
        let queries = [
            "utm_source=a%20b&utm_medium=c+d",
            "utm%5Fsource=encoded-key&utm_term=%E2%9C%93",
            "&&utm_campaign=x&=y&utm_content",
            "utm_content=a=b=c&utm_term=%ZZ%",
            "utm_source=%FF%FE",
            "ref=one+two",
        ];
        for query in queries {
            let mut want = Utm::default();
            let mut fallback = String::new();
            for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                let slot = match &*k {
                    "utm_source" => &mut want.source,
                    "utm_medium" => &mut want.medium,
                    "utm_campaign" => &mut want.campaign,
                    "utm_term" => &mut want.term,
                    "utm_content" => &mut want.content,
                    "ref" | "source" => &mut fallback,
                    _ => continue,
                };
                if slot.is_empty() {
                    *slot = v.trim().to_owned();
                }
            }
            if want.source.is_empty() {
                want.source = fallback;
            }
            assert_eq!(utm_of_query(query), want, "{query}");
        }
        assert_eq!(
            utm_of_query("utm%5Fsource=encoded-key").source,
            "encoded-key"
        );
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

    /// The hand split must agree with the url crate whenever it claims a URL.
    fn assert_split_agrees(url: &str) -> bool {
        let Some(simple) = split_simple(url) else {
            return false;
        };
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: split but url says {e}"));
        assert_eq!(parsed.host_str(), Some(simple.host), "{url:?}");
        assert_eq!(parsed.path(), simple.path, "{url:?}");
        assert_eq!(parsed.query(), simple.query, "{url:?}");
        assert_eq!(parsed.fragment(), simple.fragment, "{url:?}");
        assert_eq!(
            parse(url, true),
            Ok(build(
                parsed.host_str().unwrap(),
                parsed.path(),
                parsed.query(),
                parsed.fragment(),
                true
            )),
            "{url:?}"
        );
        true
    }

    #[test]
    fn fast_split_agrees_with_the_url_crate() {
        let bases = [
            "https://example.com",
            "https://example.com/",
            "http://www.example.co.uk/a/b/c.html?x=1&utm_source=y#frag",
            "https://shop.example.com:8443/cart?",
            "https://example.com/?#",
            "https://a-b.example/p%20q?r=%41#/route?x=1",
            "https://example.com/search?q=a+b&utm_campaign=spring%20sale",
            "https://t.co/AbCdEf123",
        ];
        // Characters the url crate treats specially somewhere.
        let specials = [
            " ", "\"", "'", "<", ">", "\\", "^", "`", "{", "|", "}", "%", "%2e", "%2E", ".", "..",
            "/.", "/..", "#", "?", "@", ":", ":99999", ":0", "\t", "\n", "é", "[", "]", "A", "0",
            "xn--", "&", "=", "+", ";", "~", "!", "$", "(", ")", "*", ",",
        ];
        let mut claimed = 0;
        let mut total = 0;
        for base in bases {
            total += 1;
            claimed += usize::from(assert_split_agrees(base));
            for special in specials {
                for at in (0..=base.len()).filter(|&i| base.is_char_boundary(i)) {
                    let mutated = format!("{}{special}{}", &base[..at], &base[at..]);
                    total += 1;
                    claimed += usize::from(assert_split_agrees(&mutated));
                }
            }
        }
        // The fast path must actually be taken for ordinary URLs.
        assert!(claimed > total / 5, "fast path took {claimed} of {total}");
        for plain in bases {
            assert!(split_simple(plain).is_some(), "{plain}");
        }
        for odd in [
            "https://Example.com/",
            "https://example.com./",
            "https://1.2.3.4/",
            "https://example.123/",
            "https://xn--mnchen-3ya.de/",
            "https://user@example.com/",
            "https://example.com:99999/",
            "https://example.com/a/../b",
            "https://example.com/a b",
            "HTTPS://example.com/",
            "https://",
        ] {
            assert!(split_simple(odd).is_none(), "{odd}");
        }
    }

    #[test]
    fn validate_accepts_exactly_what_parse_accepts() {
        let mut urls: Vec<String> = [
            "",
            "   ",
            "/relative/path",
            "example.com/page",
            "http://",
            "http://./",
            "https://exa mple.com/",
            "javascript:alert(1)",
            "ftp://example.com/",
            "https://Example.com/",
            "https://xn--mnchen-3ya.de/",
            "https://example.com/a/../b",
            " https://example.com/?utm_source=x ",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        urls.push(format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES)));
        for base in ["https://example.com/a?b=c#d", "http://www.example.co.uk/"] {
            for special in [
                " ", "%", "..", "#", "?", "@", ":", ":99999", "\n", "é", "[", "A",
            ] {
                for at in (0..=base.len()).filter(|&i| base.is_char_boundary(i)) {
                    urls.push(format!("{}{special}{}", &base[..at], &base[at..]));
                }
            }
        }
        for url in &urls {
            for hash_mode in [false, true] {
                assert_eq!(
                    validate(url, hash_mode),
                    parse(url, hash_mode).map(drop),
                    "{url:?}"
                );
            }
        }
    }

    #[test]
    fn long_but_allowed_urls_parse() {
        let path = "a/".repeat(4_000);
        let p = ok(&format!("https://example.com/{path}?utm_source=x"));
        assert_eq!(p.pathname.len(), path.len() + 1);
        assert_eq!(p.utm.source, "x");
    }
}
