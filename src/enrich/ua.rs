//! User-Agent → browser, OS, device class and bot flag.
//!
//! woothee does the parsing; this module fixes what it gets wrong or names badly for
//! current browsers (Chromium Edge, Samsung Internet, in-app webviews, frozen macOS
//! versions, ...), adds a maintained bot list matched with one Aho-Corasick pass, and
//! caches results per distinct User-Agent: real traffic repeats a few thousand strings,
//! so after warm-up a hit costs one hash lookup in a sharded cache and an `Arc` clone.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use quick_cache::sync::Cache;

use crate::config::UserAgentConfig;

pub const DESKTOP: &str = "desktop";
pub const MOBILE: &str = "mobile";
pub const TABLET: &str = "tablet";
pub const OTHER: &str = "other";

/// User-Agents longer than this are parsed every time instead of cached, so a client
/// sending huge random headers cannot make the cache hold megabytes of keys.
const MAX_CACHED_UA_BYTES: usize = 1024;

/// The built-in bot list, one case-insensitive substring per line.
const BOT_PATTERNS: &str = include_str!("data/bot_patterns.txt");

/// Tokens of browsers, engines and devices: a User-Agent with none is a tool.
const BROWSER_TOKENS: &str = include_str!("data/browser_tokens.txt");

/// Device class rules, in order (the file says how they read).
const DEVICE_RULES: &str = include_str!("data/device_rules.txt");

/// What may follow `(compatible;` in a browser's User-Agent (old Internet Explorer,
/// Konqueror, feature-phone and vintage browsers). Anything else there is a tool
/// naming itself, `Mozilla/5.0 (compatible; Examplebot/1.0)`; measured on
/// benches/accuracy: 38 more labelled bots, no human UA.
const COMPATIBLE_BROWSERS: &[&str] = &[
    "msie",
    "iemobile",
    "ie ",
    "konqueror",
    "opera",
    "safari",
    "netfront",
    "blackberry",
    "linux",
    "windows",
    "mac",
    "symbian",
    "series",
    "nokia",
    "android",
    "nintendo",
    "playstation",
    "u;",
    "x11",
    "i;",
    "elinks",
    "webtv",
    "msn",
    "avantgo",
    "palm",
    "docomo",
    "ibrowse",
    "netpositive",
    "offbyone",
    "ms-office",
    "polaris",
    "antgalio",
    "risc os",
    "ncbrowser",
    "gecko",
    "oregano",
];

/// What a User-Agent says about the visitor's software. Unknown parts are empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaInfo {
    pub browser: Arc<str>,
    /// `major.minor` (or just `major` when the UA gives no minor).
    pub browser_version: Arc<str>,
    pub os: Arc<str>,
    pub os_version: Arc<str>,
    /// One of [`DESKTOP`], [`MOBILE`], [`TABLET`], [`OTHER`].
    pub device: &'static str,
    /// Crawlers, monitors, headless browsers, HTTP libraries and empty UAs: the caller
    /// drops these hits.
    pub is_bot: bool,
    /// For a bot, a short label of the rule that caught it: woothee's crawler name
    /// (`Googlebot`), else the built-in or configured pattern that matched; empty
    /// when it was caught by its shape alone or is no bot. Never text of the UA that
    /// no rule names, so it may be stored (the `dropped` table).
    pub bot_family: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
pub enum UaError {
    /// The bot list (built-in plus `user_agent.extra_bot_patterns`) cannot be compiled;
    /// `serve` does not start.
    #[error("cannot build the bot pattern matcher: {0}")]
    BotPatterns(#[from] aho_corasick::BuildError),
    /// A line of the built-in device rules is malformed (a bug caught by the tests).
    #[error("device rule {line}: {reason}")]
    DeviceRule { line: usize, reason: &'static str },
}

/// The User-Agent Client Hints a Chromium browser sends with every request unasked
/// (the low-entropy ones), as the raw header values; empty when absent. hush never
/// asks for more (`Accept-CH`) and never stores these: they only correct what the
/// User-Agent says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientHints<'a> {
    /// `Sec-CH-UA`: the brand list, `"Chromium";v="131", "Brave";v="131", ...`.
    pub brands: &'a str,
    /// `Sec-CH-UA-Mobile`: `?1` from a phone's browser, `?0` otherwise.
    pub mobile: &'a str,
    /// `Sec-CH-UA-Platform`: `"Windows"`, `"Android"`, `"macOS"`, ...
    pub platform: &'a str,
}

impl ClientHints<'_> {
    /// No hints: a browser that sends none (Firefox, Safari), or a caller without
    /// request headers.
    pub const NONE: ClientHints<'static> = ClientHints {
        brands: "",
        mobile: "",
        platform: "",
    };

    fn is_empty(&self) -> bool {
        self.brands.is_empty() && self.mobile.is_empty() && self.platform.is_empty()
    }

    /// `Sec-CH-UA-Mobile` as a structured-header boolean: 1 for `?1`, 0 for `?0`,
    /// 2 when absent or anything else.
    fn mobile_flag(&self) -> u8 {
        match self.mobile.trim() {
            "?1" => 1,
            "?0" => 0,
            _ => 2,
        }
    }
}

/// The cache's key: the User-Agent and the hints that change its answer, in one
/// allocation. Looked up through [`KeyRef`], so a cache hit allocates nothing.
struct CacheKey {
    /// The User-Agent, then `Sec-CH-UA`, then `Sec-CH-UA-Platform`.
    text: Box<str>,
    ua_len: usize,
    brands_len: usize,
    mobile: u8,
}

impl CacheKey {
    fn as_ref(&self) -> KeyRef<'_> {
        let (ua, rest) = self.text.split_at(self.ua_len);
        let (brands, platform) = rest.split_at(self.brands_len);
        KeyRef {
            ua,
            brands,
            platform,
            mobile: self.mobile,
        }
    }
}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for CacheKey {}

/// A borrowed [`CacheKey`]: what a request has.
#[derive(PartialEq, Eq)]
struct KeyRef<'a> {
    ua: &'a str,
    brands: &'a str,
    platform: &'a str,
    mobile: u8,
}

/// The hints first, then the User-Agent, the most varied part.
impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u8(self.mobile);
        self.platform.hash(state);
        self.brands.hash(state);
        self.ua.hash(state);
    }
}

impl quick_cache::Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *self == key.as_ref()
    }
}

impl KeyRef<'_> {
    fn len(&self) -> usize {
        self.ua.len() + self.brands.len() + self.platform.len()
    }

    fn to_owned_key(&self) -> CacheKey {
        let mut text = String::with_capacity(self.len());
        text.push_str(self.ua);
        text.push_str(self.brands);
        text.push_str(self.platform);
        CacheKey {
            text: text.into_boxed_str(),
            ua_len: self.ua.len(),
            brands_len: self.brands.len(),
            mobile: self.mobile,
        }
    }
}

/// Thread-safe parser with a bounded cache; share it behind an `Arc`.
pub struct UaParser {
    woothee: woothee::parser::Parser,
    bots: AhoCorasick,
    /// The family label of each pattern of `bots`, by pattern index.
    bot_labels: Vec<Arc<str>>,
    /// `user_agent.allowed_patterns`: never a bot (`None` when there are none, so the
    /// default costs nothing).
    allowed: Option<AhoCorasick>,
    browser_tokens: AhoCorasick,
    devices: Vec<DeviceRule>,
    /// Requests without client hints, keyed on the User-Agent alone; `None` when the
    /// configured capacity is 0 (caching disabled).
    cache: Option<Cache<Box<str>, Arc<UaInfo>>>,
    /// Requests with client hints, keyed on the User-Agent and the hints; as large.
    /// Two caches, so a lookup without hints costs what it did before hints (a key of
    /// four parts made it 400 ns instead of 70 in benches/hot_path).
    hinted: Option<Cache<CacheKey, Arc<UaInfo>>>,
    empty: Arc<UaInfo>,
}

impl std::fmt::Debug for UaParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaParser")
            .field("bot_patterns", &self.bots.patterns_len())
            .field("browser_tokens", &self.browser_tokens.patterns_len())
            .field("device_rules", &self.devices.len())
            .field("cached", &self.cached_entries())
            .finish_non_exhaustive()
    }
}

impl UaParser {
    pub fn new(cfg: &UserAgentConfig) -> Result<Self, UaError> {
        let patterns: Vec<&str> = listed(BOT_PATTERNS)
            .chain(cfg.extra_bot_patterns.iter().map(|p| p.trim()))
            // An empty pattern would match every User-Agent and drop all traffic.
            .filter(|p| !p.is_empty())
            .collect();
        // A DFA: one table lookup per byte of the UA. The automatic choice falls back
        // to a slower NFA past about 150 patterns; this DFA takes about 760 KiB.
        let bots = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)?;
        let bot_labels = patterns.iter().map(|p| family_label(p)).collect();
        let allowed: Vec<&str> = cfg
            .allowed_patterns
            .iter()
            .map(|p| p.trim())
            // An empty pattern would let every bot through.
            .filter(|p| !p.is_empty())
            .collect();
        let allowed = if allowed.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&allowed)?,
            )
        };
        let browser_tokens = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(listed(BROWSER_TOKENS))?;
        let cache = (cfg.cache_entries > 0).then(|| Cache::new(cfg.cache_entries));
        let hinted = (cfg.cache_entries > 0).then(|| Cache::new(cfg.cache_entries));
        let empty = Arc::new(UaInfo {
            browser: Arc::from(""),
            browser_version: Arc::from(""),
            os: Arc::from(""),
            os_version: Arc::from(""),
            device: OTHER,
            is_bot: true,
            bot_family: Arc::from(""),
        });
        Ok(Self {
            woothee: woothee::parser::Parser::new(),
            bots,
            bot_labels,
            allowed,
            browser_tokens,
            devices: device_rules(DEVICE_RULES)?,
            cache,
            hinted,
            empty,
        })
    }

    /// Parses a User-Agent, from the cache when it was seen recently.
    pub fn parse(&self, ua: &str) -> Arc<UaInfo> {
        self.parse_with_hints(ua, &ClientHints::NONE)
    }

    /// Parses a User-Agent and the request's client hints, from the cache when the
    /// same User-Agent came with the same hints recently.
    pub fn parse_with_hints(&self, ua: &str, hints: &ClientHints<'_>) -> Arc<UaInfo> {
        let ua = ua.trim();
        if ua.is_empty() || ua == "-" {
            return Arc::clone(&self.empty);
        }
        if hints.is_empty() {
            let Some(cache) = self
                .cache
                .as_ref()
                .filter(|_| ua.len() <= MAX_CACHED_UA_BYTES)
            else {
                return Arc::new(self.parse_uncached(ua, hints));
            };
            if let Some(info) = cache.get(ua) {
                return info;
            }
            let info = Arc::new(self.parse_uncached(ua, hints));
            cache.insert(Box::from(ua), Arc::clone(&info));
            return info;
        }
        let key = KeyRef {
            ua,
            brands: hints.brands,
            platform: hints.platform,
            mobile: hints.mobile_flag(),
        };
        let Some(cache) = self
            .hinted
            .as_ref()
            .filter(|_| key.len() <= MAX_CACHED_UA_BYTES)
        else {
            return Arc::new(self.parse_uncached(ua, hints));
        };
        if let Some(info) = cache.get(&key) {
            return info;
        }
        let info = Arc::new(self.parse_uncached(ua, hints));
        cache.insert(key.to_owned_key(), Arc::clone(&info));
        info
    }

    /// Number of User-Agents (with or without hints) currently cached.
    pub fn cached_entries(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len()) + self.hinted.as_ref().map_or(0, |c| c.len())
    }

    /// Most User-Agents the cache holds: `user_agent.cache_entries`, rounded up to a
    /// multiple of the cache's shard count (quick_cache splits the capacity evenly
    /// over its shards and keeps at least 32 entries per shard, using fewer shards
    /// for small caches), so at most `cache_entries + shards - 1`; exactly
    /// `cache_entries` when that is at most 62 (one shard). The cache of User-Agents
    /// with client hints is as large.
    pub fn cache_capacity(&self) -> usize {
        self.cache
            .as_ref()
            .map_or(0, |c| usize::try_from(c.capacity()).unwrap_or(usize::MAX))
    }

    /// Bytes the rules take: the bot and browser-token DFAs and the device rules.
    pub fn rules_memory(&self) -> usize {
        self.bots.memory_usage()
            + self.browser_tokens.memory_usage()
            + self.devices.capacity() * std::mem::size_of::<DeviceRule>()
    }

    /// Whether the User-Agent is a tool's by the bot list or by its shape.
    fn looks_automated(&self, ua: &str) -> bool {
        self.bots.is_match(ua)
            || !self.browser_tokens.is_match(ua)
            || names_a_contact(ua)
            || compatible_tool(ua)
    }

    fn parse_uncached(&self, ua: &str, hints: &ClientHints<'_>) -> UaInfo {
        let allowed = self.allowed.as_ref().is_some_and(|a| a.is_match(ua));
        let listed_bot = !allowed && self.looks_automated(ua);
        let Some(w) = self.woothee.parse(ua) else {
            // The rule table still knows browsers woothee cannot place (`UCWEB/2.0 ...`).
            let (browser, version) = browser_of(ua, woothee::woothee::VALUE_UNKNOWN, "");
            let device = if listed_bot {
                OTHER
            } else {
                device_rule(&self.devices, ua).unwrap_or(OTHER)
            };
            return UaInfo {
                browser: Arc::from(browser),
                browser_version: Arc::from(version),
                os: Arc::from(""),
                os_version: Arc::from(""),
                device,
                is_bot: listed_bot,
                bot_family: if listed_bot {
                    self.pattern_family(ua)
                } else {
                    Arc::from("")
                },
            };
        };
        // woothee's "misc" category is HTTP libraries, feed readers and similar tools.
        let is_bot = !allowed && (listed_bot || w.category == "crawler" || w.category == "misc");
        let (mut browser, mut browser_version) = browser_of(ua, w.name, w.version);
        let (mut os, mut os_version) = os_of(ua, w.os, &w.os_version);
        let mut device = if is_bot {
            OTHER
        } else {
            device_rule(&self.devices, ua).unwrap_or_else(|| device_of(ua, w.category, os))
        };
        let bot_family = if !is_bot {
            Arc::from("")
        } else if w.category == "crawler" && w.name != woothee::woothee::VALUE_UNKNOWN {
            Arc::from(w.name)
        } else {
            self.pattern_family(ua)
        };
        if !is_bot && !hints.is_empty() {
            if let Some((name, version)) = hinted_browser(hints.brands, browser) {
                browser = name;
                browser_version = version;
            }
            if let Some(name) = hinted_platform(hints.platform)
                && name != os
            {
                os = name;
                os_version = String::new();
            }
            device = hinted_device(device, hints.mobile_flag());
        }
        UaInfo {
            browser: Arc::from(browser),
            browser_version: Arc::from(browser_version),
            os: Arc::from(os),
            os_version: Arc::from(os_version.as_str()),
            device,
            is_bot,
            bot_family,
        }
    }

    /// The label of the first bot pattern in `ua`, or empty (caught by shape only).
    fn pattern_family(&self, ua: &str) -> Arc<str> {
        self.bots
            .find(ua)
            .and_then(|m| self.bot_labels.get(m.pattern().as_usize()))
            .map_or_else(|| Arc::from(""), Arc::clone)
    }
}

/// Longest bot family label, bytes: a configured pattern is cut to it.
pub const MAX_FAMILY_BYTES: usize = 40;

/// A pattern as a family label: without the separators that anchor it (`curl/` is
/// `curl`), at most [`MAX_FAMILY_BYTES`].
fn family_label(pattern: &str) -> Arc<str> {
    let label =
        pattern.trim_matches(|c: char| c == '/' || c == ';' || c == '(' || c == ')' || c == ' ');
    let mut end = label.len().min(MAX_FAMILY_BYTES);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&label[..end])
}

/// The non-comment lines of a pattern file.
fn listed(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `(compatible` followed by nothing, or by something no browser puts there.
fn compatible_tool(ua: &str) -> bool {
    let bytes = ua.as_bytes();
    let needle = b"(compatible";
    let Some(at) = bytes
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
    else {
        return false;
    };
    let rest = &bytes[at + needle.len()..];
    let skip = rest
        .iter()
        .take_while(|b| matches!(b, b';' | b':' | b' ' | b','))
        .count();
    let rest = &rest[skip..];
    if rest.is_empty() || rest[0] == b')' {
        return true;
    }
    !COMPATIBLE_BROWSERS.iter().any(|name| {
        rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    })
}

/// Whether a User-Agent carries a URL or an e-mail address: how crawlers, monitors and
/// scripts tell site owners who they are (`+https://...`, `(+http://...)`,
/// `admin@example.com`). Browsers never do; in the benches/accuracy corpus one of
/// 36,459 human UAs (a 2009 toolbar) has a URL and none an address, against 935 of
/// 1,350 bots.
fn names_a_contact(ua: &str) -> bool {
    let bytes = ua.as_bytes();
    let url = ua.match_indices("://").any(|(at, _)| {
        let before = &bytes[..at];
        let ends_with = |scheme: &[u8]| {
            before.len() >= scheme.len()
                && before[before.len() - scheme.len()..].eq_ignore_ascii_case(scheme)
        };
        ends_with(b"http") || ends_with(b"https")
    });
    url || ua.match_indices('@').any(|(at, _)| is_email_at(bytes, at)) || names_a_domain(bytes)
}

/// Top-level domains of the sites tools name themselves after (`devin.ai`,
/// `visionheight.com/scan`); country codes are left out, they collide with versions
/// and model names more often.
const TOOL_TLDS: &[&[u8]] = &[
    b"com", b"net", b"org", b"io", b"ai", b"edu", b"gov", b"info", b"biz", b"dev", b"app", b"me",
    b"cc", b"ly",
];

/// A domain name ending in one of [`TOOL_TLDS`]: `label.tld` followed by the end or
/// a separator, the label at least two characters with a letter (so neither the
/// phone model `Q.Me` nor a version `1.7.1.ai` counts). In the benches/accuracy
/// corpus: 8 more labelled bots, no human UA.
fn names_a_domain(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, b)| *b == b'.')
        .any(|(dot, _)| {
            let after = &bytes[dot + 1..];
            let tld_len = after.iter().take_while(|b| b.is_ascii_alphabetic()).count();
            let tld = &after[..tld_len];
            let separated = after
                .get(tld_len)
                .is_none_or(|b| matches!(b, b'/' | b' ' | b';' | b')' | b']' | b','));
            if !separated || !TOOL_TLDS.iter().any(|t| tld.eq_ignore_ascii_case(t)) {
                return false;
            }
            let label_len = bytes[..dot]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
                .count();
            let label = &bytes[dot - label_len..dot];
            label_len >= 2 && label.iter().any(u8::is_ascii_alphabetic)
        })
}

/// `local@domain.tld` around the `@` at `at`: a local-part character before it, and a
/// domain after it whose last label is two or more letters (so `android@62.0.3202`,
/// a version, is not an address).
fn is_email_at(bytes: &[u8], at: usize) -> bool {
    let local_ok = at > 0
        && matches!(bytes[at - 1], b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'%' | b'+' | b'-');
    if !local_ok {
        return false;
    }
    let domain_len = bytes[at + 1..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.' || **b == b'-')
        .count();
    let domain = &bytes[at + 1..at + 1 + domain_len];
    let domain = domain.strip_suffix(b".").unwrap_or(domain);
    match domain.iter().rposition(|b| *b == b'.') {
        Some(dot) if dot > 0 => {
            let tld = &domain[dot + 1..];
            tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
        }
        _ => false,
    }
}

/// One rule of the browser table: every marker of `all` present, none of `none`.
struct BrowserRule {
    all: &'static [&'static str],
    none: &'static [&'static str],
    name: &'static str,
    /// Tokens whose following digits are the version, tried in order; none = no version.
    version: &'static [&'static str],
}

impl BrowserRule {
    fn matches(&self, ua: &str) -> bool {
        self.all.iter().all(|m| ua.contains(m)) && !self.none.iter().any(|m| ua.contains(m))
    }

    fn version<'a>(&self, ua: &'a str) -> &'a str {
        self.version
            .iter()
            .map(|token| version_after(ua, token))
            .find(|v| !v.is_empty())
            .unwrap_or("")
    }
}

/// Browsers woothee misses or misnames, checked in order; the first rule that matches
/// wins, so in-app browsers and Chromium forks come before the generic shapes.
#[rustfmt::skip]
const BROWSER_RULES: &[BrowserRule] = &[
    // In-app browsers first: their UAs also contain Safari/Chrome tokens.
    BrowserRule { all: &["FBAN/"], none: &[], name: "Facebook", version: &["FBAV/"] },
    BrowserRule { all: &["FBAV/"], none: &[], name: "Facebook", version: &["FBAV/"] },
    BrowserRule { all: &["FB_IAB/"], none: &[], name: "Facebook", version: &["FBAV/"] },
    BrowserRule { all: &["Instagram "], none: &[], name: "Instagram", version: &["Instagram "] },
    BrowserRule { all: &["LinkedInApp"], none: &[], name: "LinkedIn", version: &["LinkedInApp/"] },
    BrowserRule { all: &["Snapchat"], none: &[], name: "Snapchat", version: &["Snapchat/"] },
    BrowserRule { all: &["musical_ly"], none: &[], name: "TikTok", version: &[] },
    BrowserRule { all: &["BytedanceWebview"], none: &[], name: "TikTok", version: &[] },
    BrowserRule { all: &["Pinterest/"], none: &[], name: "Pinterest", version: &["Pinterest/"] },
    BrowserRule { all: &["MicroMessenger/"], none: &[], name: "WeChat", version: &["MicroMessenger/"] },
    BrowserRule { all: &[" Line/"], none: &[], name: "LINE", version: &[" Line/"] },
    BrowserRule { all: &["Twitter for iPhone"], none: &[], name: "X", version: &[] },
    BrowserRule { all: &["TwitterAndroid"], none: &[], name: "X", version: &[] },
    // Browsers built on Chromium or WebKit that woothee reports as Chrome/Safari.
    BrowserRule { all: &["DuckDuckGo/"], none: &[], name: "DuckDuckGo", version: &["DuckDuckGo/"] },
    BrowserRule { all: &["SamsungBrowser/"], none: &[], name: "Samsung Internet", version: &["SamsungBrowser/"] },
    BrowserRule { all: &["Silk/"], none: &[], name: "Amazon Silk", version: &["Silk/"] },
    BrowserRule { all: &["OPR/"], none: &[], name: "Opera", version: &["OPR/"] },
    BrowserRule { all: &["OPT/"], none: &[], name: "Opera", version: &["OPT/"] },
    BrowserRule { all: &["OPX/"], none: &[], name: "Opera", version: &["OPX/"] },
    BrowserRule { all: &["OPiOS/"], none: &[], name: "Opera", version: &["OPiOS/"] },
    BrowserRule { all: &["UCWEB/"], none: &[], name: "UC Browser", version: &["UCBrowser/"] },
    BrowserRule { all: &["UCBrowser"], none: &[], name: "UC Browser", version: &["UCBrowser/"] },
    BrowserRule { all: &["Opera Mini/"], none: &[], name: "Opera Mini", version: &["Opera Mini/"] },
    BrowserRule { all: &["EdgA/"], none: &[], name: "Microsoft Edge", version: &["EdgA/"] },
    BrowserRule { all: &["EdgiOS/"], none: &[], name: "Microsoft Edge", version: &["EdgiOS/"] },
    BrowserRule { all: &["Edg/"], none: &[], name: "Microsoft Edge", version: &["Edg/"] },
    BrowserRule { all: &["Edge/"], none: &[], name: "Microsoft Edge", version: &["Edge/"] },
    BrowserRule { all: &["YaBrowser/"], none: &[], name: "Yandex Browser", version: &["YaBrowser/"] },
    BrowserRule { all: &["YaSearchBrowser/"], none: &[], name: "Yandex Browser", version: &["YaSearchBrowser/"] },
    BrowserRule { all: &["YandexSearch"], none: &[], name: "Yandex Browser", version: &["YandexSearch/"] },
    BrowserRule { all: &["Vivaldi/"], none: &[], name: "Vivaldi", version: &["Vivaldi/"] },
    BrowserRule { all: &["Brave/"], none: &[], name: "Brave", version: &["Brave/"] },
    BrowserRule { all: &["Whale/"], none: &[], name: "Whale", version: &["Whale/"] },
    BrowserRule { all: &["MiuiBrowser/"], none: &[], name: "MIUI Browser", version: &["MiuiBrowser/"] },
    BrowserRule { all: &["HuaweiBrowser/"], none: &[], name: "Huawei Browser", version: &["HuaweiBrowser/"] },
    BrowserRule { all: &["QQBrowser/"], none: &[], name: "QQ Browser", version: &["QQBrowser/"] },
    BrowserRule { all: &["HeyTapBrowser/"], none: &[], name: "HeyTap Browser", version: &["HeyTapBrowser/"] },
    BrowserRule { all: &["VivoBrowser/"], none: &[], name: "vivo Browser", version: &["VivoBrowser/"] },
    BrowserRule { all: &["GSA/"], none: &[], name: "Google App", version: &["GSA/"] },
    BrowserRule { all: &["GoogleApp/"], none: &[], name: "Google App", version: &["GoogleApp/"] },
    BrowserRule { all: &["FxiOS/"], none: &[], name: "Firefox", version: &["FxiOS/"] },
    BrowserRule { all: &["CriOS/"], none: &[], name: "Chrome", version: &["CriOS/"] },
    // Opera before version 7 posed as Internet Explorer and named itself after it.
    BrowserRule { all: &[") Opera "], none: &[], name: "Opera", version: &[") Opera "] },
    BrowserRule { all: &["Opera/9.80"], none: &[], name: "Opera", version: &["Version/", "Opera/"] },
    BrowserRule { all: &["Chromium/"], none: &[], name: "Chromium", version: &["Chromium/"] },
    // Firefox's pre-release code names.
    BrowserRule { all: &["Minefield/"], none: &[], name: "Firefox", version: &["Minefield/"] },
    BrowserRule { all: &["GranParadiso/"], none: &[], name: "Firefox", version: &["GranParadiso/"] },
    BrowserRule { all: &["Shiretoko/"], none: &[], name: "Firefox", version: &["Shiretoko/"] },
    BrowserRule { all: &["Namoroka/"], none: &[], name: "Firefox", version: &["Namoroka/"] },
    BrowserRule { all: &["BonEcho/"], none: &[], name: "Firefox", version: &["BonEcho/"] },
    // Generic shapes, after every named browser: an Android web view that leaves out
    // `wv` still carries the stock browser's `Version/4.0` next to `Chrome/`...
    BrowserRule { all: &["Android", "Version/", "Chrome/"], none: &[], name: "WebView", version: &["Chrome/"] },
    // ...and the stock Android Browser (before Chrome) is WebKit with no Chrome token.
    // (Windows Phone's Internet Explorer says `Android` too.)
    BrowserRule { all: &["Android", "Safari"], none: &["Chrome/", "Trident/"], name: "Android Browser", version: &["Version/"] },
    // Safari's own HTTP stack on old macOS (`Safari5530.18 CFNetwork/438.12 Darwin/9.7.1`).
    BrowserRule { all: &["Safari", "CFNetwork/"], none: &[], name: "Safari", version: &[] },
];

fn browser_of<'a>(ua: &'a str, name: &'a str, version: &'a str) -> (&'a str, &'a str) {
    if let Some(rule) = BROWSER_RULES.iter().find(|r| r.matches(ua)) {
        return (rule.name, rule.version(ua));
    }
    match name {
        woothee::woothee::VALUE_UNKNOWN => ("", ""),
        "Webview" => {
            // Android webviews carry the Chromium version; iOS ones carry nothing useful.
            let version = if ua.contains("Android") {
                version_after(ua, "Chrome/")
            } else {
                ""
            };
            ("WebView", version)
        }
        "SamsungBrowser" => ("Samsung Internet", major_minor(version)),
        "Edge" => ("Microsoft Edge", major_minor(version)),
        "Google Search App" => ("Google App", major_minor(version)),
        // woothee names Internet Explorer on a console after the console.
        "Xbox One" | "Xbox 360" if ua.contains("MSIE ") => {
            ("Internet Explorer", version_after(ua, "MSIE "))
        }
        _ => (name, major_minor(version)),
    }
}

/// The `major.minor` of the version that follows `token` in `ua`, or "".
fn version_after<'a>(ua: &'a str, token: &str) -> &'a str {
    match ua.find(token) {
        Some(at) => major_minor(&ua[at + token.len()..]),
        None => "",
    }
}

/// The leading `digits[.digits]` of `v`; "" when `v` does not start with a digit.
fn major_minor(v: &str) -> &str {
    let bytes = v.as_bytes();
    let mut end = 0;
    let mut dots = 0;
    while end < bytes.len() {
        match bytes[end] {
            b'0'..=b'9' => end += 1,
            b'.' if dots == 0 && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) => {
                dots += 1;
                end += 1;
            }
            _ => break,
        }
    }
    &v[..end]
}

/// Up to three dotted numeric components, from a `10_15_7`-style or dotted version.
fn dotted_version(v: &str) -> String {
    let mut out = String::new();
    for (i, part) in v
        .split(['.', '_'])
        .take(3)
        .take_while(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .enumerate()
    {
        if i > 0 {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// `v` unless it is woothee's "UNKNOWN" placeholder.
fn known(v: &str) -> &str {
    if v == woothee::woothee::VALUE_UNKNOWN {
        ""
    } else {
        v
    }
}

fn leading_version(v: &str) -> &str {
    let end = v
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.' || b == b'_'))
        .unwrap_or(v.len());
    &v[..end]
}

fn os_of(ua: &str, os: &str, version: &str) -> (&'static str, String) {
    match os {
        "Mac OSX" => {
            // Browsers freeze the reported version at 10.15.7; report what the UA says.
            let v = match ua.find("Mac OS X ") {
                Some(at) => dotted_version(leading_version(&ua[at + "Mac OS X ".len()..])),
                None => String::new(),
            };
            ("macOS", v)
        }
        "iPhone" | "iPod" | "iOS" => ("iOS", major_minor(known(version)).to_owned()),
        "iPad" => ("iPadOS", major_minor(known(version)).to_owned()),
        "Android" => ("Android", major_minor(known(version)).to_owned()),
        "ChromeOS" => {
            // woothee gives "x86_64 14541.0.0": keep the platform version only.
            let v = known(version).rsplit(' ').next().unwrap_or("");
            ("ChromeOS", v.to_owned())
        }
        "Linux" => ("Linux", String::new()),
        "BSD" => {
            let name = if ua.contains("OpenBSD") {
                "OpenBSD"
            } else if ua.contains("NetBSD") {
                "NetBSD"
            } else {
                "FreeBSD"
            };
            (name, String::new())
        }
        "Windows Phone OS" => ("Windows Phone", major_minor(known(version)).to_owned()),
        "Windows CE" => ("Windows CE", String::new()),
        "Windows UNKNOWN Ver" => ("Windows", String::new()),
        _ if os.starts_with("Windows ") => ("Windows", os["Windows ".len()..].to_owned()),
        "Xbox One" | "Xbox 360" => ("Xbox", String::new()),
        "PlayStation 3" | "PlayStation 4" | "PlayStation Vita" | "PlayStation Portable" => {
            ("PlayStation", String::new())
        }
        "Firefox OS" => ("Firefox OS", String::new()),
        "BlackBerry" | "BlackBerry 10" => ("BlackBerry", major_minor(known(version)).to_owned()),
        _ => {
            // Platforms woothee does not know (or reports under a vendor name).
            let name = if ua.contains("OpenBSD") {
                "OpenBSD"
            } else if ua.contains("Tizen") {
                "Tizen"
            } else if ua.contains("Web0S") || ua.contains("webOS") {
                "webOS"
            } else if ua.contains("PlayStation") {
                "PlayStation"
            } else if ua.contains("Windows NT") {
                "Windows"
            } else if ua.contains("X11; Linux") {
                "Linux"
            } else {
                ""
            };
            (name, String::new())
        }
    }
}

const TABLET_MARKERS: &[&str] = &["iPad", "Tablet", "Kindle", "Silk/", "PlayBook"];

/// The device class from woothee's category and the OS, when no device rule matched.
fn device_of(ua: &str, category: &str, os: &str) -> &'static str {
    let handheld = || {
        // Android phones say "Mobile"; Android tablets leave it out.
        let android_tablet = ua.contains("Android") && !ua.contains("Mobile");
        if android_tablet || TABLET_MARKERS.iter().any(|m| ua.contains(m)) {
            TABLET
        } else {
            MOBILE
        }
    };
    match category {
        "pc" => DESKTOP,
        "smartphone" | "mobilephone" => handheld(),
        "appliance" | "crawler" | "misc" => OTHER,
        _ => match os {
            "Windows" | "macOS" | "Linux" | "ChromeOS" | "FreeBSD" | "OpenBSD" | "NetBSD" => {
                DESKTOP
            }
            "Android" | "iOS" | "iPadOS" => handheld(),
            _ => OTHER,
        },
    }
}

/// `Sec-CH-UA` brands → hush's browser name, the most specific first: a browser built
/// on Chromium lists its own brand beside `Chromium` (and often beside `Google
/// Chrome`). Brands not listed (and GREASE brands) are ignored: hush stores no name
/// the client made up.
const HINT_BRANDS: &[(&str, &str)] = &[
    ("Microsoft Edge", "Microsoft Edge"),
    ("Opera", "Opera"),
    ("Opera GX", "Opera"),
    ("OperaMobile", "Opera"),
    ("Brave", "Brave"),
    ("Yandex", "Yandex Browser"),
    ("YaBrowser", "Yandex Browser"),
    ("Samsung Internet", "Samsung Internet"),
    ("DuckDuckGo", "DuckDuckGo"),
    ("Vivaldi", "Vivaldi"),
    ("Whale", "Whale"),
    ("HuaweiBrowser", "Huawei Browser"),
    ("Android WebView", "WebView"),
    ("Google Chrome", "Chrome"),
    ("Chromium", "Chromium"),
];

/// The browsers whose User-Agent a Chromium fork copies: only these are replaced by
/// the brand the hints name. A UA that names its browser (Opera's `OPR/`, an in-app
/// browser's `FBAV/`) keeps that name.
const GENERIC_CHROMIUM: &[&str] = &["Chrome", "Chromium", "WebView", ""];

/// `Sec-CH-UA-Platform` values → hush's OS name (`"Unknown"` and others: ignored).
const HINT_PLATFORMS: &[(&str, &str)] = &[
    ("Windows", "Windows"),
    ("macOS", "macOS"),
    ("Linux", "Linux"),
    ("Android", "Android"),
    ("Chrome OS", "ChromeOS"),
    ("Chromium OS", "ChromeOS"),
    ("iOS", "iOS"),
];

/// The browser and major version the `Sec-CH-UA` brand list names, when it names one
/// of [`HINT_BRANDS`] and `ua_browser` (what the User-Agent said) is a generic
/// Chromium name; `None` keeps the User-Agent's answer. Also `None` when the list
/// names a brand hush does not know besides Chrome's and Chromium's (a fork hush has
/// no family for), and when the field is not a valid structured-header list.
fn hinted_browser<'h>(brands: &'h str, ua_browser: &str) -> Option<(&'static str, &'h str)> {
    if brands.is_empty() || !GENERIC_CHROMIUM.contains(&ua_browser) {
        return None;
    }
    let mut best: Option<(usize, &'h str)> = None;
    let mut unknown = false;
    brand_list(brands, |name, version| {
        match HINT_BRANDS
            .iter()
            .position(|(brand, _)| unescaped_eq(name, brand))
        {
            Some(rank) if best.is_none_or(|(r, _)| rank < r) => best = Some((rank, version)),
            Some(_) => {}
            None if !is_grease(name) => unknown = true,
            None => {}
        }
    })?;
    let (rank, version) = best?;
    let name = HINT_BRANDS[rank].1;
    // An unknown brand beside the generic ones: some other fork; keep the UA's name.
    if unknown && matches!(name, "Chrome" | "Chromium") {
        return None;
    }
    // A list of Chromium alone comes from Chrome builds too: it does not make a
    // Chrome User-Agent Chromium's.
    if name == ua_browser || (name == "Chromium" && ua_browser == "Chrome") {
        return None;
    }
    Some((name, major_minor(version)))
}

/// hush's OS name for a `Sec-CH-UA-Platform` value (a structured-header string).
fn hinted_platform(platform: &str) -> Option<&'static str> {
    let value = platform.trim().strip_prefix('"')?.strip_suffix('"')?;
    HINT_PLATFORMS
        .iter()
        .find(|(name, _)| *name == value)
        .map(|&(_, os)| os)
}

/// The device class once `Sec-CH-UA-Mobile` is known: `?1` (a phone's browser) makes
/// a tablet or desktop answer mobile; TVs and other devices keep theirs.
fn hinted_device(device: &'static str, mobile: u8) -> &'static str {
    match (mobile, device) {
        (1, TABLET | DESKTOP) => MOBILE,
        _ => device,
    }
}

/// A GREASE brand: Chromium adds one made-up brand to every list (`Not A(Brand`,
/// `Not)A;Brand`, `" Not A;Brand"`, ...) so that servers cannot depend on the list's
/// exact text. They all start with `Not` and end with `Brand`.
fn is_grease(raw: &str) -> bool {
    let name = raw.trim();
    name.len() >= "NotBrand".len()
        && name.as_bytes()[..3].eq_ignore_ascii_case(b"not")
        && name.as_bytes()[name.len() - 5..].eq_ignore_ascii_case(b"brand")
}

/// Calls `each(name, version)` for every member of a `Sec-CH-UA` list: an RFC 8941
/// list whose members are strings with parameters (`"Chromium";v="131"`). `name` is
/// the string's raw text (escapes kept: compare with [`unescaped_eq`]), `version` the
/// `v` parameter (empty when there is none). `None`, after some calls, when the field
/// is not such a list; the RFC says to ignore the whole field then, and callers do.
fn brand_list<'h>(field: &'h str, mut each: impl FnMut(&'h str, &'h str)) -> Option<()> {
    let b = field.as_bytes();
    let skip = |mut i: usize, tabs: bool| {
        while i < b.len() && (b[i] == b' ' || (tabs && b[i] == b'\t')) {
            i += 1;
        }
        i
    };
    let mut i = skip(0, true);
    if i == b.len() {
        return Some(());
    }
    loop {
        let (name, next) = sf_string(field, i)?;
        i = next;
        let mut version = "";
        while b.get(i) == Some(&b';') {
            i = skip(i + 1, false);
            let key_start = i;
            if !matches!(b.get(i), Some(b'a'..=b'z' | b'*')) {
                return None;
            }
            while matches!(
                b.get(i),
                Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
            ) {
                i += 1;
            }
            let key = &field[key_start..i];
            let value = if b.get(i) == Some(&b'=') {
                if b.get(i + 1) == Some(&b'"') {
                    let (value, next) = sf_string(field, i + 1)?;
                    i = next;
                    value
                } else {
                    // A token, number or boolean: up to the next delimiter.
                    let start = i + 1;
                    i = start;
                    while i < b.len() && !matches!(b[i], b';' | b',' | b' ' | b'\t' | b'"') {
                        i += 1;
                    }
                    if i == start {
                        return None;
                    }
                    &field[start..i]
                }
            } else {
                ""
            };
            if key == "v" {
                version = value;
            }
        }
        each(name, version);
        i = skip(i, true);
        if i == b.len() {
            return Some(());
        }
        if b[i] != b',' {
            return None;
        }
        i = skip(i + 1, true);
        if i == b.len() {
            // A trailing comma.
            return None;
        }
    }
}

/// The structured-header string starting at `at` (a `"`): its raw text between the
/// quotes and the index after the closing quote. Only `\"` and `\\` are escapes;
/// control and non-ASCII bytes make it invalid.
fn sf_string(field: &str, at: usize) -> Option<(&str, usize)> {
    let b = field.as_bytes();
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match *b.get(i)? {
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' => i += 2,
                _ => return None,
            },
            b'"' => return Some((&field[at + 1..i], i + 1)),
            0x20..=0x7e => i += 1,
            _ => return None,
        }
    }
}

/// Whether the raw text of a structured-header string (escapes kept) reads `want`.
fn unescaped_eq(raw: &str, want: &str) -> bool {
    if !raw.contains('\\') {
        return raw == want;
    }
    let mut want = want.bytes();
    let mut raw = raw.bytes();
    while let Some(c) = raw.next() {
        let c = if c == b'\\' {
            match raw.next() {
                Some(c) => c,
                None => return false,
            }
        } else {
            c
        };
        if want.next() != Some(c) {
            return false;
        }
    }
    want.next().is_none()
}

/// Where a device rule looks (see `data/device_rules.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevicePlace {
    /// Anywhere in the User-Agent, case-sensitive.
    Ua,
    /// The start of the Android device model, case-insensitive.
    Model,
    /// A whole word of the Android device model, case-insensitive.
    Word,
}

#[derive(Debug)]
struct DeviceRule {
    class: &'static str,
    place: DevicePlace,
    text: &'static str,
}

/// The rules of `data/device_rules.txt`, in order.
fn device_rules(text: &'static str) -> Result<Vec<DeviceRule>, UaError> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| UaError::DeviceRule {
            line: n + 1,
            reason,
        };
        let mut parts = line.splitn(3, ' ');
        let class = match parts.next() {
            Some("desktop") => DESKTOP,
            Some("mobile") => MOBILE,
            Some("tablet") => TABLET,
            Some("other") => OTHER,
            _ => return Err(err("unknown class")),
        };
        let place = match parts.next() {
            Some("ua") => DevicePlace::Ua,
            Some("model") => DevicePlace::Model,
            Some("word") => DevicePlace::Word,
            _ => return Err(err("unknown place (ua, model, word)")),
        };
        let text = parts.next().unwrap_or("");
        if text.is_empty() {
            return Err(err("no text"));
        }
        if place == DevicePlace::Word && !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("a word is letters and digits only"));
        }
        rules.push(DeviceRule { class, place, text });
    }
    Ok(rules)
}

/// The class of the first device rule that matches the User-Agent.
fn device_rule(rules: &[DeviceRule], ua: &str) -> Option<&'static str> {
    let model = android_model(ua);
    rules
        .iter()
        .find(|rule| match rule.place {
            DevicePlace::Ua => ua.contains(rule.text),
            DevicePlace::Model => {
                model.len() >= rule.text.len()
                    && model.as_bytes()[..rule.text.len()]
                        .eq_ignore_ascii_case(rule.text.as_bytes())
            }
            DevicePlace::Word => model
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| word.eq_ignore_ascii_case(rule.text)),
        })
        .map(|rule| rule.class)
}

/// The device model of an Android User-Agent, "" for others: `SM-T500` in
/// `(Linux; Android 10; SM-T500 Build/QP1A.190711.020)`, also after `U;` and a
/// locale (`Android 4.1.2; de-de; GT-I8190 Build/JZO54K`), and without `Build/`
/// (`Android 10; K)`, where it says nothing).
fn android_model(ua: &str) -> &str {
    let Some(at) = ua.find("Android") else {
        return "";
    };
    let rest = &ua[at..];
    let inside = &rest[..rest.find(')').unwrap_or(rest.len())];
    inside
        .split(';')
        .skip(1)
        .map(str::trim)
        .find(|part| !part.is_empty() && *part != "U" && !is_locale(part))
        .map_or("", |part| {
            part.split(" Build").next().unwrap_or(part).trim()
        })
}

/// `de-de`, `en_US`, `zh-cn`: a locale in an old Android UA.
fn is_locale(part: &str) -> bool {
    let b = part.as_bytes();
    b.len() == 5
        && b[..2].iter().all(u8::is_ascii_alphabetic)
        && matches!(b[2], b'-' | b'_')
        && b[3..].iter().all(u8::is_ascii_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> UaParser {
        UaParser::new(&UserAgentConfig::default()).unwrap()
    }

    /// (UA, browser, browser_version, os, os_version, device, is_bot)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        bool,
    );

    const CASES: &[Case] = &[
        // Desktop Chrome / Firefox / Safari / Edge / Opera.
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "131.0",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "131.0",
            "macOS",
            "10.15.7",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
            "Chrome",
            "130.0",
            "Linux",
            "",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox",
            "133.0",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox",
            "133.0",
            "macOS",
            "10.15",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
            "Firefox",
            "132.0",
            "Linux",
            "",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
            "Safari",
            "18.1",
            "macOS",
            "10.15.7",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
            "Safari",
            "18.1",
            "macOS",
            "14.7.1",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Microsoft Edge",
            "131.0",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70",
            "Microsoft Edge",
            "131.0",
            "macOS",
            "10.15.7",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045",
            "Microsoft Edge",
            "18.19045",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
            "Opera",
            "115.0",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 YaBrowser/24.12.0.0 Safari/537.36",
            "Yandex Browser",
            "24.12",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Vivaldi/6.5.3206.55",
            "Vivaldi",
            "6.5",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
            "Chrome",
            "109.0",
            "Windows",
            "7",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 6.3; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
            "Chrome",
            "109.0",
            "Windows",
            "8.1",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
            "Internet Explorer",
            "11.0",
            "Windows",
            "10",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "131.0",
            "ChromeOS",
            "14541.0.0",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (X11; OpenBSD amd64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox",
            "128.0",
            "OpenBSD",
            "",
            DESKTOP,
            false,
        ),
        (
            "Mozilla/5.0 (X11; FreeBSD amd64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox",
            "133.0",
            "FreeBSD",
            "",
            DESKTOP,
            false,
        ),
        // Android phones and tablets.
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome",
            "131.0",
            "Android",
            "10",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
            "Chrome",
            "131.0",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "131.0",
            "Android",
            "13",
            TABLET,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; Pixel Tablet) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "131.0",
            "Android",
            "13",
            TABLET,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36",
            "Samsung Internet",
            "27.0",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
            "Firefox",
            "133.0",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0",
            "Firefox",
            "133.0",
            "Android",
            "14",
            TABLET,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0",
            "Microsoft Edge",
            "131.0",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36 OPR/86.0.0.0",
            "Opera",
            "86.0",
            "Android",
            "10",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/131.3.1 like Chrome/131.0.6778.39 Safari/537.36",
            "Amazon Silk",
            "131.3",
            "Android",
            "9",
            TABLET,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; U; Android 13; zh-cn; 2201122C Build/TKQ1.220807.001) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.127 Mobile Safari/537.36 XiaoMi/MiuiBrowser/17.8.30",
            "MIUI Browser",
            "17.8",
            "Android",
            "13",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 YaBrowser/24.10.5.95.00 SA/3",
            "Yandex Browser",
            "24.10",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; Cubot KingKong 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome",
            "131.0",
            "Android",
            "13",
            MOBILE,
            false,
        ),
        // iOS and iPadOS.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Mobile/15E148 Safari/604.1",
            "Safari",
            "18.1",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
            "Safari",
            "17.6",
            "iPadOS",
            "17.6",
            TABLET,
            false,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome",
            "131.0",
            "iPadOS",
            "18.1",
            TABLET,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome",
            "131.0",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
            "Firefox",
            "133.0",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 EdgiOS/131.2903.68 Mobile/15E148 Safari/605.1.15",
            "Microsoft Edge",
            "131.2903",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) OPiOS/16.0.14.122053 Mobile/15E148 Safari/9537.53",
            "Opera",
            "16.0",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/343.0.695551749 Mobile/15E148 Safari/604.1",
            "Google App",
            "343.0",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
            "DuckDuckGo",
            "7",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        // In-app browsers and webviews.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/485.0.0.36.105;FBBV/652347873;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/654140395]",
            "Facebook",
            "485.0",
            "iOS",
            "17.5",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 356.0.0.27.84 (iPhone15,3; iOS 18_0; en_US; en; scale=3.00; 1290x2796; 658513318)",
            "Instagram",
            "356.0",
            "iOS",
            "18.0",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-A546B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/489.0.0.66.81;]",
            "Facebook",
            "489.0",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 7 Build/AP2A; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36",
            "WebView",
            "131.0",
            "Android",
            "14",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
            "WebView",
            "",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 LinkedInApp/9.30.1437",
            "LinkedIn",
            "9.30",
            "iOS",
            "18.1",
            MOBILE,
            false,
        ),
        // Televisions and consoles.
        (
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
            "Samsung Internet",
            "4.0",
            "Linux",
            "",
            OTHER,
            false,
        ),
        (
            "Mozilla/5.0 (Linux; Android 9; AFTKA) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
            "Chrome",
            "126.0",
            "Android",
            "9",
            OTHER,
            false,
        ),
        (
            "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15",
            "Safari",
            "13.0",
            "PlayStation",
            "",
            OTHER,
            false,
        ),
        // Bots: woothee crawlers, listed patterns, libraries, empty.
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot",
            "",
            "",
            "",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "misc crawler",
            "",
            "",
            "",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "131.0",
            "Windows",
            "10",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
            "Chrome",
            "131.0",
            "Android",
            "11",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
            "Safari",
            "",
            "Linux",
            "",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0 Datadog/Synthetics",
            "Microsoft Edge",
            "131.0",
            "Windows",
            "10",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.0.0 Safari/537.36",
            "Chrome",
            "70.0",
            "",
            "",
            OTHER,
            true,
        ),
        ("curl/8.5.0", "HTTP Library", "", "", "", OTHER, true),
        ("python-requests/2.32.3", "", "", "", "", OTHER, true),
        ("Go-http-client/2.0", "", "", "", "", OTHER, true),
        ("okhttp/4.12.0", "", "", "", "", OTHER, true),
        ("axios/1.7.7", "", "", "", "", OTHER, true),
        (
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "facebook",
            "",
            "",
            "",
            OTHER,
            true,
        ),
        (
            "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            "misc crawler",
            "",
            "",
            "",
            OTHER,
            true,
        ),
        ("", "", "", "", "", OTHER, true),
        ("-", "", "", "", "", OTHER, true),
        // No browser, engine or device token at all: a tool (issue 14; in the
        // benches/accuracy corpus no human UA has none).
        ("zzz", "", "", "", "", OTHER, true),
    ];

    #[test]
    fn table_of_real_user_agents() {
        let p = parser();
        assert!(CASES.len() >= 40);
        let mut failures = Vec::new();
        for &(ua, browser, bv, os, osv, device, bot) in CASES {
            let got = p.parse(ua);
            let actual = (
                &*got.browser,
                &*got.browser_version,
                &*got.os,
                &*got.os_version,
                got.device,
                got.is_bot,
            );
            if actual != (browser, bv, os, osv, device, bot) {
                failures.push(format!(
                    "{ua}\n   want {:?}\n   got  {actual:?}",
                    (browser, bv, os, osv, device, bot)
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn cache_returns_the_same_result_and_is_bounded() {
        let p = UaParser::new(&UserAgentConfig {
            cache_entries: 50,
            ..Default::default()
        })
        .unwrap();
        let ua = CASES[0].0;
        let a = p.parse(ua);
        let b = p.parse(ua);
        assert!(Arc::ptr_eq(&a, &b), "second parse must come from the cache");
        // 50 is at most 62, so one shard holding exactly the configured 50.
        assert_eq!(p.cache_capacity(), 50);
        for i in 0..1_000 {
            p.parse(&format!("Mozilla/5.0 (X11; Linux x86_64) Firefox/{i}.0"));
            assert!(
                p.cached_entries() <= 50,
                "cache grew to {} after {i}",
                p.cached_entries()
            );
        }
        assert!(p.cached_entries() > 0);
        // Evicted or not, the answer stays right.
        assert_eq!(&*p.parse(ua).browser, "Chrome");
    }

    #[test]
    fn cache_disabled_still_parses() {
        let p = UaParser::new(&UserAgentConfig {
            cache_entries: 0,
            ..Default::default()
        })
        .unwrap();
        let a = p.parse(CASES[0].0);
        assert_eq!(&*a.browser, "Chrome");
        assert_eq!(p.cached_entries(), 0);
    }

    #[test]
    fn huge_user_agents_are_parsed_but_not_cached() {
        let p = parser();
        let ua = format!("{} {}", CASES[0].0, "x".repeat(10_000));
        let info = p.parse(&ua);
        assert_eq!(&*info.browser, "Chrome");
        assert_eq!(p.cached_entries(), 0);
        let bot = format!("{} curl/8.0", "y".repeat(20_000));
        assert!(p.parse(&bot).is_bot);
    }

    #[test]
    fn extra_bot_patterns_are_case_insensitive_and_empty_ones_ignored() {
        let cfg = UserAgentConfig {
            extra_bot_patterns: vec!["MyCompanyProbe".into(), "".into(), "   ".into()],
            ..Default::default()
        };
        let p = UaParser::new(&cfg).unwrap();
        let probe = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 mycompanyprobe/1";
        assert!(p.parse(probe).is_bot);
        // The empty patterns must not have turned every UA into a bot.
        assert!(!p.parse(CASES[0].0).is_bot);
        assert!(!parser().parse(probe).is_bot);
    }

    #[test]
    fn allowed_patterns_win_over_every_bot_rule_and_empty_ones_are_ignored() {
        let cfg = UserAgentConfig {
            allowed_patterns: vec!["mycompanyprobe/".into(), "".into(), "  ".into()],
            ..Default::default()
        };
        let p = UaParser::new(&cfg).unwrap();
        // Caught by a listed pattern, by woothee's crawler category, and by shape
        // (no browser token at all, a URL): each counted once allowed.
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 HeadlessChrome MyCompanyProbe/2",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) MyCompanyProbe/2",
            "MyCompanyProbe/2.0 (+https://status.example.com)",
        ] {
            assert!(
                parser().parse(ua).is_bot,
                "{ua} is a bot without the allow-list"
            );
            let got = p.parse(ua);
            assert!(!got.is_bot, "{ua}");
            assert_eq!(&*got.bot_family, "", "{ua}");
        }
        // The empty patterns did not let other bots through.
        assert!(p.parse("curl/8.0").is_bot);
        assert!(
            p.parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
                .is_bot
        );
        assert!(!p.parse(CASES[0].0).is_bot);
    }

    #[test]
    fn a_bot_is_labelled_with_the_rule_that_caught_it_never_its_own_text() {
        let cfg = UserAgentConfig {
            extra_bot_patterns: vec!["MyCompanyProbe".into()],
            ..Default::default()
        };
        let p = UaParser::new(&cfg).unwrap();
        let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(&*p.parse(google).bot_family, "Googlebot");
        // A listed pattern: its label, without the `/` that anchors it.
        assert_eq!(&*p.parse("curl/8.5.0").bot_family, "curl");
        let probe = format!("{} mycompanyprobe/1", CASES[0].0);
        assert_eq!(&*p.parse(&probe).bot_family, "MyCompanyProbe");
        // Caught by shape only: no label, and nothing of the UA.
        let shape = p.parse("zqxwv-agent 4.2");
        assert!(shape.is_bot);
        assert_eq!(&*shape.bot_family, "");
        assert_eq!(&*p.parse(CASES[0].0).bot_family, "", "a browser has none");
        assert_eq!(&*p.parse("").bot_family, "");
        let long = "x".repeat(100);
        assert_eq!(family_label(&long).len(), MAX_FAMILY_BYTES);
    }

    #[test]
    fn every_listed_pattern_is_detected() {
        let p = parser();
        for pattern in BOT_PATTERNS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let ua = format!(
                "Mozilla/5.0 (compatible; {}) Safari",
                pattern.to_uppercase()
            );
            assert!(p.parse(&ua).is_bot, "{pattern} not detected");
        }
    }

    #[test]
    fn real_browsers_do_not_match_the_bot_list() {
        let p = parser();
        for &(ua, .., bot) in CASES {
            if !bot {
                assert!(!p.bots.is_match(ua), "bot list matches a browser UA: {ua}");
            }
        }
    }

    #[test]
    fn the_bot_matcher_stays_within_its_memory_budget() {
        // Issue 14: the rules may take at most 10 MiB; the DFAs are far below.
        let p = parser();
        let dfas = p.bots.memory_usage() + p.browser_tokens.memory_usage();
        let used = p.rules_memory();
        assert!(used < 10 << 20, "the rules take {used} bytes");
        assert!(used > dfas && dfas > 0);
    }

    #[test]
    fn a_url_or_an_address_marks_a_tool() {
        let p = parser();
        for ua in [
            "Mozilla/5.0 (compatible; Examplefetch/2.1; +https://fetch.example.net/about)",
            "SiteWatch/0.9 (+http://watch.example.org)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36; see Https://probe.example.com",
            "linkwalker/3 (contact: ops@walker.example.de)",
            "Mozilla/5.0 (compatible; Tiny/0.1; crawler.team@example.io)",
        ] {
            assert!(p.parse(ua).is_bot, "{ua}");
        }
        for ua in [
            // A version after '@' is not an address (a search app's UA suffix).
            "Mozilla/5.0 (Linux; Android 7.0; SM-A310F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/62.0.3202.101 Mobile Safari/537.36 (Searchapp android@62.0.3202.101)",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
        ] {
            assert!(!p.parse(ua).is_bot, "{ua}");
        }
        assert!(!is_email_at(b"@example.com", 0));
        assert!(!is_email_at(b"a@localhost", 1));
        assert!(is_email_at(b"a@b.example.com.", 1));
    }

    #[test]
    fn the_browser_rule_table_fixes_what_woothee_misnames() {
        let p = parser();
        // (UA, browser, version)
        for (ua, browser, version) in [
            (
                "Mozilla/5.0 (Linux; U; Android 4.1.2; de-de; GT-I8190 Build/JZO54K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
                "Android Browser",
                "4.0",
            ),
            (
                "Mozilla/5.0 (Linux; Android 12; SM-T220) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.5993.111 YaSearchBrowser/23.85/apad BroPP/1.0 YaSearchApp/23.85/apad SA/3 Mobile Safari/537.36",
                "Yandex Browser",
                "23.85",
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; V2120 Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.43 Mobile Safari/537.36 YandexSearch/8.10 YandexSearchBrowser/8.10",
                "Yandex Browser",
                "8.10",
            ),
            (
                "Mozilla/5.0 (Linux; Android 9; Example Box Build/PPR1.180610.011) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/109.0.5414.117 Safari/537.36",
                "WebView",
                "109.0",
            ),
            (
                "UCWEB/2.0 (MIDP-2.0; U; Adr 4.4.2; en-US; Example_A1) U2/1.0.0 UCBrowser/10.1.0.527 U2/1.0.0 Mobile",
                "UC Browser",
                "10.1",
            ),
            (
                "UCWEB/2.0 (Linux; U; Opera Mini/7.1.32052/30.3697; en-US; GT-S5300) U2/1.0.0 UCBrowser/9.8.0.435 Mobile",
                "UC Browser",
                "9.8",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; SM-A256B Build/UP1A.231005.007) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/127.0.6533.64 Mobile Safari/537.36 OPX/2.5",
                "Opera",
                "2.5",
            ),
            (
                "Safari5533.19.4 CFNetwork/454.11.5 Darwin/10.6.0 (i386) (MacBookPro7%2C1)",
                "Safari",
                "",
            ),
            (
                "Mozilla/4.0 (compatible; MSIE 6.0; Windows 98) Opera 7.02 [de]",
                "Opera",
                "7.02",
            ),
            (
                "Mozilla/5.0 (Mobile; Windows Phone 8.1; Android 4.0; ARM; Trident/7.0; Touch; rv:11.0; IEMobile/11.0; NOKIA; Lumia 635) like iPhone OS 7_0_3 Mac OS X AppleWebKit/537 (KHTML, like Gecko) Mobile Safari/537",
                "Internet Explorer",
                "11.0",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Ubuntu Chromium/120.0.6099.109 Chrome/120.0.6099.109 Safari/537.36",
                "Chromium",
                "120.0",
            ),
            (
                "Mozilla/5.0 (X11; U; Linux x86_64; en-US; rv:1.9.1b3) Gecko/20090305 Shiretoko/3.5b3",
                "Firefox",
                "3.5",
            ),
        ] {
            let got = p.parse(ua);
            assert_eq!(
                (&*got.browser, &*got.browser_version, got.is_bot),
                (browser, version, false),
                "{ua}"
            );
        }
    }

    #[test]
    fn a_user_agent_without_any_browser_token_is_a_tool() {
        let p = parser();
        for ua in [
            "Examplewatch",
            "SiteProbe 2.1",
            "acme-fetcher/0.4",
            "Mozilla/5.0 examplescan/1.2",
            "Mozilla/5.0 (Example Health Check)",
        ] {
            assert!(p.parse(ua).is_bot, "{ua}");
        }
        // Browsers and devices that do not start with Mozilla/ keep a token.
        for ua in [
            "Opera/9.80 (X11; Linux x86_64) Presto/2.12.388 Version/12.16",
            "Lynx/2.8.9rel.1 libwww-FM/2.14 SSL-MM/1.4.1",
            "Dalvik/2.1.0 (Linux; U; Android 12; Pixel 6 Build/SQ3A.220705.003)",
            "NOKIA6230/2.0 (04.44) Profile/MIDP-2.0 Configuration/CLDC-1.1",
            "ZTE-F230/1.0 UP.Browser/6.2.3.9 (GUI) MMP/2.0",
            "Mozilla/5.0 (PalmOS; U; WebPro/3.5)",
        ] {
            assert!(!p.parse(ua).is_bot, "{ua}");
        }
    }

    #[test]
    fn compatible_followed_by_a_tool_name_is_a_tool() {
        let p = parser();
        for ua in [
            "Mozilla/5.0 (compatible; Examplefinder/1.0)",
            "Mozilla/5.0 (compatible)",
            "Mozilla/2.0 (compatible; Seeker Jr/Deep)",
            "Mozilla/5.0 (Linux; Android 9) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; ExampleSpiderling)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; ExampleRender) Chrome/120.0.0.0 Safari/537.36",
        ] {
            assert!(p.parse(ua).is_bot, "{ua}");
        }
        for ua in [
            "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0)",
            "Mozilla/5.0 (compatible; Konqueror/4.5; Linux) KHTML/4.5.5 (like Gecko)",
            "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; IEMobile/10.0; ARM; Touch; NOKIA; Lumia 920)",
        ] {
            assert!(!p.parse(ua).is_bot, "{ua}");
        }
        assert!(compatible_tool("Mozilla/5.0 (COMPATIBLE; x)"));
        assert!(!compatible_tool("Mozilla/5.0 (Windows NT 10.0)"));
    }

    #[test]
    fn a_domain_name_marks_a_tool_but_models_and_versions_do_not() {
        let p = parser();
        for ua in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36; Probe/2.0; +probe.example.ai",
            "scanner.example.com/check Mozilla/5.0 (Windows NT 10.0) Chrome/120.0 Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Looker (www.looker.example.net)",
        ] {
            assert!(p.parse(ua).is_bot, "{ua}");
        }
        for ua in [
            "Mozilla/5.0 (Linux; Android 7.0; Z.Me Plus Build/NRD90M) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.116 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; U; Android 4.2.2; zh-cn; X1 Build/JDQ39) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30 XYZ/2.4.1.ai",
            "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0; SLCC1; .NET CLR 2.0.50727; .NET4.0C; .NET;)",
        ] {
            assert!(!p.parse(ua).is_bot, "{ua}");
        }
    }

    #[test]
    fn the_device_rules_parse_and_bad_lines_are_refused() {
        let rules = device_rules(DEVICE_RULES).unwrap();
        assert!(rules.len() > 100);
        for (text, line) in [
            ("phone ua Example", 1),
            ("# note\nother where Example", 2),
            ("tablet model", 1),
            ("other word a-b", 1),
        ] {
            match device_rules(text) {
                Err(UaError::DeviceRule { line: got, .. }) => assert_eq!(got, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let rules =
            device_rules("# c\n\nother word tv\ntablet model SM-T\nmobile ua MIDP").unwrap();
        assert_eq!(
            rules
                .iter()
                .map(|r| (r.class, r.place, r.text))
                .collect::<Vec<_>>(),
            [
                (OTHER, DevicePlace::Word, "tv"),
                (TABLET, DevicePlace::Model, "SM-T"),
                (MOBILE, DevicePlace::Ua, "MIDP"),
            ]
        );
    }

    #[test]
    fn the_android_model_is_the_part_after_the_version() {
        for (ua, model) in [
            (
                "Mozilla/5.0 (Linux; Android 10; SM-T500 Build/QP1A.190711.020) AppleWebKit/537.36",
                "SM-T500",
            ),
            (
                "Mozilla/5.0 (Linux; U; Android 4.1.2; de-de; GT-I8190 Build/JZO54K) AppleWebKit/534.30",
                "GT-I8190",
            ),
            ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36", "K"),
            (
                "Mozilla/5.0 (Linux; arm_64; Android 12; Acme Stick 4K Build/X; wv) AppleWebKit/537.36",
                "Acme Stick 4K",
            ),
            (
                "Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0",
                "Mobile",
            ),
            ("Mozilla/5.0 (Linux; Android 9)", ""),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64)", ""),
        ] {
            assert_eq!(android_model(ua), model, "{ua}");
        }
        assert!(is_locale("en_US") && is_locale("zh-cn"));
        assert!(!is_locale("SM-T5") && !is_locale("U"));
    }

    /// One UA per confusion the device rules fix (benches/accuracy), written in the
    /// corpus's shapes; before the rules, each got the class in its comment.
    #[test]
    fn device_rules_fix_what_the_ua_shape_gets_wrong() {
        let p = parser();
        for (ua, want) in [
            // A TV box sending a tablet's UA (was tablet).
            (
                "Mozilla/5.0 (Linux; Android 9; Acme TV Box Build/PPR1.180610.011) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/108.0.5359.128 Safari/537.36",
                OTHER,
            ),
            // A set-top box by its product line, with a phone's `Mobile` (was mobile).
            (
                "Mozilla/5.0 (Linux; Android 10; X96 Max Plus Build/QP1A.191105.004) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/96.0.4664.92 Mobile Safari/537.36",
                OTHER,
            ),
            // A TV named by its panel (was tablet).
            (
                "Mozilla/5.0 (Linux; Android 11; Acme 55 UHD Build/RP1A.201005.006; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/118.0.5993.80 Safari/537.36",
                OTHER,
            ),
            // Fire TV (was tablet).
            (
                "Mozilla/5.0 (Linux; Android 9; AFTKA Build/PS7633.3445N; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 Mobile Safari/537.36",
                OTHER,
            ),
            // A camera running Android (was mobile).
            (
                "Mozilla/5.0 (Linux; U; Android 4.1.2; en-us; EK-GC110 Build/JZO54K) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
                OTHER,
            ),
            // A car head unit (was tablet).
            (
                "Mozilla/5.0 (Linux; Android 10; Acme CarPad Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 Safari/537.36",
                OTHER,
            ),
            // Tablets that say `Mobile` (were mobile).
            (
                "Mozilla/5.0 (Linux; Android 11; SM-T225 Build/RP1A.200720.012) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/110.0.5481.153 Mobile Safari/537.36",
                TABLET,
            ),
            (
                "Mozilla/5.0 (Linux; Android 12; Lenovo TB-X606F Build/SP1A.210812.016) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/115.0.5790.166 Mobile Safari/537.36",
                TABLET,
            ),
            (
                "Mozilla/5.0 (Linux; Android 10; Acme Pad 10 Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/104.0.5112.97 Mobile Safari/537.36",
                TABLET,
            ),
            // Phones that leave out `Mobile` (were tablet).
            (
                "Mozilla/5.0 (Linux; Android 13; SM-G991B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Safari/537.36",
                MOBILE,
            ),
            (
                "Mozilla/5.0 (Linux; Android 12; RMX3085 Build/SP1A.210812.016) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0.5615.48 Safari/537.36",
                MOBILE,
            ),
            // Feature phones woothee cannot place (were other).
            ("AcmeTel-F100/1.0 UP.Browser/6.2.3.9 (GUI) MMP/2.0", MOBILE),
            (
                "AcmePhone S10/Q03C MAUI-browser/MIDP2.0/CLDC1.1/Screen-240X320",
                MOBILE,
            ),
            // What the UA shape already got right stays right.
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
                MOBILE,
            ),
            (
                "Mozilla/5.0 (Linux; U; Android 4.0.4; de-de; GT-P5110 Build/IMM76D) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Safari/534.30",
                TABLET,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                DESKTOP,
            ),
            // `tv` must be a whole word of the model, not part of one (`TVision`).
            (
                "Mozilla/5.0 (Linux; Android 11; Acme TVision 5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/110.0.0.0 Mobile Safari/537.36",
                MOBILE,
            ),
        ] {
            let got = p.parse(ua);
            assert_eq!((got.device, got.is_bot), (want, false), "{ua}");
        }
    }

    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

    fn brands(field: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        brand_list(field, |name, version| {
            out.push((name.to_owned(), version.to_owned()))
        })?;
        Some(out)
    }

    #[test]
    fn the_brand_list_is_parsed_as_a_structured_header() {
        let pairs = |v: &[(&str, &str)]| {
            Some(
                v.iter()
                    .map(|&(a, b)| (a.to_owned(), b.to_owned()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            brands(r#""Chromium";v="131", "Not_A Brand";v="24", "Brave";v="131""#),
            pairs(&[("Chromium", "131"), ("Not_A Brand", "24"), ("Brave", "131")])
        );
        // No spaces, other parameters, a bare-token value, a brand without `v`, tabs.
        assert_eq!(
            brands("\"A\";x=1;v=\"9\",\t\"B\";q;v=7,\"C\""),
            pairs(&[("A", "9"), ("B", "7"), ("C", "")])
        );
        // Escapes stay raw in the name and compare unescaped.
        let got = brands(r#""Say \"hi\"";v="1""#).unwrap();
        assert_eq!(got[0].0, r#"Say \"hi\""#);
        assert!(unescaped_eq(&got[0].0, r#"Say "hi""#));
        assert!(!unescaped_eq(&got[0].0, "Say hi"));
        assert_eq!(brands(""), pairs(&[]));
        assert_eq!(brands("   "), pairs(&[]));
        for bad in [
            "Chromium;v=131",
            r#""Chromium";v="131","#,
            r#""Chromium";v="131" "Brave""#,
            r#""Chromium"; v="131""#.replace("; ", ";\t").as_str(),
            r#""Chromium";V="131""#,
            r#""Chromium";v="#,
            r#""Chro\mium""#,
            "\"Chromium",
            "\"Chr\u{e9}mium\"",
        ] {
            assert_eq!(brands(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grease_brands_are_recognised() {
        for grease in [
            " Not A;Brand",
            "Not A(Brand",
            "Not)A;Brand",
            "Not_A Brand",
            "Not/A)Brand",
            "Not.A/Brand",
            "Not:A-Brand",
            "Not=A?Brand",
            "Not?A_Brand",
        ] {
            assert!(is_grease(grease), "{grease}");
        }
        for brand in [
            "Chromium",
            "Google Chrome",
            "Brave",
            "Not",
            "Brand",
            "Notebook Brand X",
        ] {
            assert!(!is_grease(brand), "{brand}");
        }
    }

    fn hinted(p: &UaParser, ua: &str, brands: &str, mobile: &str, platform: &str) -> Arc<UaInfo> {
        p.parse_with_hints(
            ua,
            &ClientHints {
                brands,
                mobile,
                platform,
            },
        )
    }

    #[test]
    fn sec_ch_ua_tells_chromium_browsers_apart() {
        let p = parser();
        // (UA, Sec-CH-UA, browser, version)
        for (ua, field, browser, version) in [
            (
                CHROME_WIN,
                r#""Brave";v="131", "Chromium";v="131", "Not_A Brand";v="24""#,
                "Brave",
                "131",
            ),
            (
                CHROME_WIN,
                r#""Microsoft Edge";v="131", "Chromium";v="131", "Not_A Brand";v="24""#,
                "Microsoft Edge",
                "131",
            ),
            (
                CHROME_ANDROID,
                r#""Opera";v="86", "OperaMobile";v="73", "Chromium";v="131", "Not A(Brand";v="99""#,
                "Opera",
                "86",
            ),
            (
                CHROME_ANDROID,
                r#""Android WebView";v="131", "Chromium";v="131", "Not?A_Brand";v="24""#,
                "WebView",
                "131",
            ),
            (
                CHROME_WIN,
                r#""Chromium";v="131", "Not_A Brand";v="24""#,
                "Chrome",
                "131.0",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chromium/131.0.0.0 Safari/537.36",
                r#""Chromium";v="131", "Not_A Brand";v="24""#,
                "Chromium",
                "131.0",
            ),
            // Chrome's own list leaves the UA's finer version.
            (
                CHROME_WIN,
                r#""Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24""#,
                "Chrome",
                "131.0",
            ),
            // A brand hush has no family for: the UA's answer stands.
            (
                CHROME_WIN,
                r#""Acme Browser";v="5", "Chromium";v="131", "Not_A Brand";v="24""#,
                "Chrome",
                "131.0",
            ),
            // Not a structured-header list: ignored whole.
            (
                CHROME_WIN,
                r#""Brave";v="131", Chromium"#,
                "Chrome",
                "131.0",
            ),
            // A UA that names its browser keeps it.
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
                r#""Chromium";v="130", "Not_A Brand";v="24""#,
                "Opera",
                "115.0",
            ),
        ] {
            let got = hinted(&p, ua, field, "", "");
            assert_eq!(
                (&*got.browser, &*got.browser_version),
                (browser, version),
                "{field}"
            );
            assert!(!got.is_bot);
        }
        // A bot stays a bot whatever its hints say.
        let bot = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36";
        assert!(hinted(&p, bot, r#""Google Chrome";v="131""#, "?0", "\"Windows\"").is_bot);
    }

    #[test]
    fn sec_ch_ua_mobile_and_platform_correct_device_and_os() {
        let p = parser();
        let tablet_shape = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(p.parse(tablet_shape).device, TABLET);
        assert_eq!(hinted(&p, tablet_shape, "", "?1", "").device, MOBILE);
        assert_eq!(hinted(&p, tablet_shape, "", "?0", "").device, TABLET);
        assert_eq!(hinted(&p, tablet_shape, "", "yes", "").device, TABLET);
        // A TV keeps its class.
        let tv = "Mozilla/5.0 (Linux; Android 9; Acme TV Box Build/PPR1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/108.0.0.0 Safari/537.36";
        assert_eq!(hinted(&p, tv, "", "?1", "").device, OTHER);
        // `Request desktop site` on a phone: the platform says Android.
        let desktop_shape = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let got = hinted(&p, desktop_shape, "", "?0", "\"Android\"");
        assert_eq!((&*got.os, &*got.os_version), ("Android", ""));
        // The same platform keeps the UA's version; an unknown or unquoted one is ignored.
        let got = hinted(&p, CHROME_WIN, "", "?0", "\"Windows\"");
        assert_eq!(
            (&*got.os, &*got.os_version, got.device),
            ("Windows", "10", DESKTOP)
        );
        assert_eq!(
            &*hinted(&p, CHROME_WIN, "", "", "\"Unknown\"").os,
            "Windows"
        );
        assert_eq!(&*hinted(&p, CHROME_WIN, "", "", "Android").os, "Windows");
    }

    #[test]
    fn the_cache_is_keyed_on_the_user_agent_and_its_hints() {
        let p = parser();
        let brave = r#""Brave";v="131", "Chromium";v="131", "Not_A Brand";v="24""#;
        let a = hinted(&p, CHROME_WIN, brave, "?0", "\"Windows\"");
        let b = hinted(&p, CHROME_WIN, brave, "?0", "\"Windows\"");
        assert!(
            Arc::ptr_eq(&a, &b),
            "same UA and hints must come from the cache"
        );
        let plain = p.parse(CHROME_WIN);
        assert_eq!((&*a.browser, &*plain.browser), ("Brave", "Chrome"));
        // Another mobile flag is another entry, so is no hint at all.
        let mobile = hinted(&p, CHROME_WIN, brave, "?1", "\"Windows\"");
        assert!(!Arc::ptr_eq(&a, &mobile));
        assert_eq!(p.cached_entries(), 3);
        // The parts cannot run into each other: the same bytes split otherwise differ.
        let shifted = hinted(&p, CHROME_WIN, "", "?0", &format!("{brave}\"Windows\""));
        assert_eq!(&*shifted.browser, "Chrome");
        assert_eq!(p.cached_entries(), 4);
        // A UA plus hints over the size limit is parsed, not cached.
        let long = "x".repeat(MAX_CACHED_UA_BYTES);
        assert_eq!(&*hinted(&p, CHROME_WIN, &long, "", "").browser, "Chrome");
        assert_eq!(p.cached_entries(), 4);
    }

    #[test]
    fn version_helpers() {
        assert_eq!(major_minor("131.0.6778.81"), "131.0");
        assert_eq!(major_minor("27"), "27");
        assert_eq!(major_minor("5.x"), "5");
        assert_eq!(major_minor("curl"), "");
        assert_eq!(major_minor(""), "");
        assert_eq!(major_minor("1."), "1");
        assert_eq!(dotted_version("10_15_7"), "10.15.7");
        assert_eq!(dotted_version("14_7_1_9"), "14.7.1");
        assert_eq!(dotted_version("x"), "");
    }
}
