//! Classification accuracy against public labelled corpora (run by
//! `benches/accuracy/run`, which fetches and converts them; CI runs none of it).
//!
//! Runs hush's real `UaParser` and `referrer::classify` over every labelled case and
//! prints, per field, the accuracy and the most frequent confusions, as Markdown for
//! BENCHMARKS.md.
//!
//! How the labels map (Matomo device-detector → hush):
//! - **bot**: every `bots.yml` entry is a bot; a human is a fixture whose client type is
//!   `browser`, or `mobile app` with a web view's UA (`Mozilla/...`: in-app browsers).
//!   Other clients (libraries, feed readers, podcast and media players, apps' own HTTP
//!   clients such as `Dalvik/2.1.0`) never run a page's tracker: they are reported on
//!   their own line, as the share hush drops.
//! - **browser family**: Matomo's client name through [`BROWSERS`] (e.g. `Chrome
//!   Mobile` → `Chrome`, `Samsung Browser` → `Samsung Internet`); clients with no
//!   entry there are outside hush's families and only counted, and so are `Dalvik/`
//!   UAs, the Android runtime's HTTP client, which Matomo labels `Android Browser`.
//! - **browser major**: the leading number of each version, where the family matched
//!   and Matomo gives a version.
//! - **OS family**: hush's OS name through [`OS_FAMILIES`] against Matomo's
//!   `os_family` (so Fire OS and Android TV count as Android, Ubuntu as GNU/Linux).
//! - **OS major**: the leading number of each version, where the family matched and
//!   Matomo gives a version.
//! - **device**: `desktop` → desktop; `smartphone`, `phablet`, `feature phone` →
//!   mobile; `tablet` → tablet; every other type Matomo names (tv, console, wearable,
//!   car browser, peripheral, camera, smart display, ...) → other. Fixtures without a
//!   device type (Matomo could not tell) are outside the families and not scored.
//! - **client hints**: each fixture's `Sec-CH-UA`, `Sec-CH-UA-Mobile` and
//!   `Sec-CH-UA-Platform` (convert.py writes them as headers also where the fixture
//!   gives `navigator.userAgentData`) go to the parser with the UA, as the collector
//!   passes them; the fixtures that have any are also scored without them.
//! - **sources**: each host of the referer database as `https://host/`; the source
//!   must be the database's name (or an alias in [`SOURCE_ALIASES`], or the host's own
//!   name in [`SOURCE_HOSTS`]), the channel the
//!   medium's (`search`, `social`, `email`; `unknown` is left out of the channel
//!   score).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

use hush::config::UserAgentConfig;
use hush::enrich::page_url::Utm;
use hush::enrich::referrer;
use hush::enrich::ua::{ClientHints, DESKTOP, MOBILE, OTHER, TABLET, UaInfo, UaParser};
use serde::Deserialize;

/// Matomo client name → the label hush gives that browser or app.
const BROWSERS: &[(&str, &str)] = &[
    ("Chrome", "Chrome"),
    ("Chrome Mobile", "Chrome"),
    ("Chrome Mobile iOS", "Chrome"),
    ("Chromium", "Chromium"),
    ("Chrome Webview", "WebView"),
    ("Firefox", "Firefox"),
    ("Firefox Mobile", "Firefox"),
    ("Firefox iOS", "Firefox"),
    ("Safari", "Safari"),
    ("Mobile Safari", "Safari"),
    ("Microsoft Edge", "Microsoft Edge"),
    ("Opera", "Opera"),
    ("Opera Mobile", "Opera"),
    ("Opera GX", "Opera"),
    ("Opera Mini", "Opera Mini"),
    ("Opera Mini iOS", "Opera Mini"),
    ("Samsung Browser", "Samsung Internet"),
    ("Internet Explorer", "Internet Explorer"),
    ("IE Mobile", "Internet Explorer"),
    ("Yandex Browser", "Yandex Browser"),
    ("Yandex Browser Lite", "Yandex Browser"),
    ("UC Browser", "UC Browser"),
    ("UC Browser Turbo", "UC Browser"),
    ("Android Browser", "Android Browser"),
    ("Vivaldi", "Vivaldi"),
    ("Brave", "Brave"),
    ("DuckDuckGo Privacy Browser", "DuckDuckGo"),
    ("Whale Browser", "Whale"),
    ("Mi Browser", "MIUI Browser"),
    ("Huawei Browser", "Huawei Browser"),
    ("Huawei Browser Mobile", "Huawei Browser"),
    ("QQ Browser", "QQ Browser"),
    ("Mobile Silk", "Amazon Silk"),
    ("HeyTapBrowser", "HeyTap Browser"),
    ("vivo Browser", "vivo Browser"),
    ("Google Search App", "Google App"),
    ("Facebook", "Facebook"),
    ("Facebook Lite", "Facebook"),
    ("Instagram", "Instagram"),
    ("WeChat", "WeChat"),
    ("Line", "LINE"),
    ("Snapchat", "Snapchat"),
    ("Pinterest", "Pinterest"),
    ("TikTok", "TikTok"),
    ("Twitter", "X"),
];

/// hush OS name → Matomo `os_family`.
const OS_FAMILIES: &[(&str, &str)] = &[
    ("Android", "Android"),
    ("iOS", "iOS"),
    ("iPadOS", "iOS"),
    ("macOS", "Mac"),
    ("Windows", "Windows"),
    ("Windows Phone", "Windows Mobile"),
    ("Windows CE", "Windows Mobile"),
    ("Linux", "GNU/Linux"),
    ("ChromeOS", "Chrome OS"),
    ("FreeBSD", "Unix"),
    ("OpenBSD", "Unix"),
    ("NetBSD", "Unix"),
    ("BlackBerry", "BlackBerry"),
    ("Firefox OS", "Firefox OS"),
    ("PlayStation", "Gaming Console"),
    ("Xbox", "Gaming Console"),
];

/// Referer-database names → the name hush gives, where hush deliberately differs.
/// Plausible folds Google's and Yandex's verticals into the engine's name, and so does
/// hush: a visit from Google Images is organic search from Google.
const SOURCE_ALIASES: &[(&str, &str)] = &[
    ("Google Images", "Google"),
    ("Google Product Search", "Google"),
    ("Google Blogsearch", "Google"),
    ("Yandex Images", "Yandex"),
    ("Yahoo!", "Yahoo"),
    ("Yahoo! Images", "Yahoo"),
    ("Yahoo! Mail", "Yahoo Mail"),
    ("Bing Images", "Bing"),
    ("Google Video", "Google"),
    // Spellings and owners: hush uses the engine's own spelling and brand.
    ("IXquick", "Ixquick"),
    ("Altavista", "AltaVista"),
    ("MetaCrawler.de", "MetaCrawler"),
    ("Metager", "MetaGer"),
    ("Vkontakte", "VK"),
    ("Twitter", "X"),
    ("StackOverflow", "Stack Overflow"),
    ("Sonico.com", "Sonico"),
    ("MoiKrug.ru", "MoiKrug"),
    ("vKruguDruzei.ru", "vKruguDruzei"),
    ("dmoz", "DMOZ"),
    ("Icerockeet", "IceRocket"),
    ("APOLL07", "Apollo7"),
    ("blekko", "Blekko"),
    ("DuckDuckGoL", "DuckDuckGo"),
    ("Hotbot", "HotBot"),
    ("Looksmart", "LookSmart"),
    ("maailm", "Maailm"),
    ("DasOertliche", "Das Örtliche"),
    ("DasTelefonbuch", "Das Telefonbuch"),
    ("Goyellow.de", "GoYellow"),
    ("Opplysningen 1881", "1881"),
    ("Hooseek.com", "Hooseek"),
    ("X-recherche", "X-Recherche"),
    ("Metager2", "MetaGer"),
    ("Delfi latvia", "Delfi"),
    ("La Toile Du Quebec Via Google", "La Toile du Québec"),
];

/// Hosts the referer database files under another engine's or an owner's name, which
/// hush names after the site the visitor came from: InfoSpace's engines each by its
/// brand, a portal's search by the portal, and the database's mislabels.
const SOURCE_HOSTS: &[(&str, &str)] = &[
    ("dogpile.com", "Dogpile"),
    ("www.dogpile.com", "Dogpile"),
    ("metacrawler.com", "MetaCrawler"),
    ("webcrawler.com", "WebCrawler"),
    ("isearch.babylon.com", "Babylon"),
    ("search.sweetim.com", "SweetIM"),
    ("search.mywebsearch.com", "MyWebSearch"),
    ("searchatlas.centrum.cz", "Centrum"),
    ("wayn.com", "WAYN"),
    ("www.plazoo.com", "Plazoo"),
    // The database names its other 190 Google News hosts `Google News`.
    ("news.google.co.uk", "Google News"),
];

#[derive(Deserialize)]
struct UaCase {
    ua: String,
    bot: bool,
    bot_category: String,
    client_type: String,
    browser: String,
    browser_version: String,
    os_version: String,
    os_family: String,
    device: String,
    /// Lower-case header names.
    headers: HashMap<String, String>,
}

impl UaCase {
    fn hints(&self) -> ClientHints<'_> {
        let h = |name: &str| self.headers.get(name).map_or("", String::as_str);
        ClientHints {
            brands: h("sec-ch-ua"),
            mobile: h("sec-ch-ua-mobile"),
            platform: h("sec-ch-ua-platform"),
        }
    }

    fn is_human(&self) -> bool {
        self.client_type == "browser"
            || (self.client_type == "mobile app" && self.ua.starts_with("Mozilla/"))
    }
}

#[derive(Deserialize)]
struct RefCase {
    medium: String,
    name: String,
    host: String,
}

/// Right/total plus the most frequent wrong answers.
#[derive(Default)]
struct Score {
    right: u64,
    total: u64,
    confusions: HashMap<(String, String), u64>,
    examples: HashMap<(String, String), String>,
}

impl Score {
    fn add(&mut self, expected: &str, got: &str, example: &str) {
        self.total += 1;
        if expected == got {
            self.right += 1;
        } else {
            let key = (expected.to_owned(), got.to_owned());
            *self.confusions.entry(key.clone()).or_default() += 1;
            self.examples
                .entry(key)
                .or_insert_with(|| example.to_owned());
        }
    }

    fn pct(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.right as f64 / self.total as f64
        }
    }

    fn top(&self, n: usize) -> Vec<(&(String, String), &u64)> {
        let mut v: Vec<_> = self.confusions.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

fn major(v: &str) -> &str {
    let end = v
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    &v[..end]
}

/// hush's class for Matomo's device type; `None` when Matomo gives none.
fn device_class(matomo: &str) -> Option<&'static str> {
    match matomo {
        "" => None,
        "desktop" => Some(DESKTOP),
        "smartphone" | "phablet" | "feature phone" => Some(MOBILE),
        "tablet" => Some(TABLET),
        _ => Some(OTHER),
    }
}

/// Browser family, device class and OS family of the hinted fixtures, scored with
/// and without their hints.
#[derive(Default)]
struct HintScores {
    browser: Score,
    device: Score,
    os: Score,
}

impl HintScores {
    fn add(
        &mut self,
        c: &UaCase,
        got: &UaInfo,
        browsers: &HashMap<&str, &str>,
        os_families: &HashMap<&str, &str>,
    ) {
        if let Some(want) = browsers.get(c.browser.as_str()) {
            self.browser.add(want, &got.browser, &c.ua);
        }
        if let Some(want) = device_class(&c.device) {
            self.device.add(want, got.device, &c.ua);
        }
        if !matches!(c.os_family.as_str(), "" | "Unknown") {
            let got_family = os_families.get(&*got.os).copied().unwrap_or(&got.os);
            self.os.add(&c.os_family, got_family, &c.ua);
        }
    }
}

fn args() -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if let Some(key) = a.strip_prefix("--")
            && key != "bench"
            && let Some(value) = it.next()
        {
            out.insert(key.to_owned(), value);
        }
    }
    out
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &str) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}: {l}")))
        .collect()
}

fn main() {
    let args = args();
    let (Some(ua_path), Some(ref_path)) = (args.get("ua"), args.get("referers")) else {
        eprintln!(
            "usage: benches/accuracy/run (it passes --ua FILE --referers FILE --corpus TEXT)"
        );
        std::process::exit(2);
    };
    let corpus = args.get("corpus").cloned().unwrap_or_default();
    let cases: Vec<UaCase> = read_lines(ua_path);
    let refs: Vec<RefCase> = read_lines(ref_path);

    // No cache: every case is a fresh parse, as for a UA seen for the first time.
    let parser = UaParser::new(&UserAgentConfig {
        cache_entries: 0,
        ..UserAgentConfig::default()
    })
    .expect("UA parser");
    let browsers: HashMap<&str, &str> = BROWSERS.iter().copied().collect();
    let os_families: HashMap<&str, &str> = OS_FAMILIES.iter().copied().collect();

    // `--dump FILE`: every UA case with the labels and hush's answer, as JSON lines,
    // for looking at the misses in bulk (the file stays in the git-ignored cache).
    let mut dump = args.get("dump").map(|path| {
        std::io::BufWriter::new(
            std::fs::File::create(path).unwrap_or_else(|e| panic!("create {path}: {e}")),
        )
    });
    let mut bot_recall = Score::default();
    let mut human_fp = Score::default();
    let mut tools = Score::default();
    let mut browser = Score::default();
    let mut browser_major = Score::default();
    let mut os = Score::default();
    let mut os_major = Score::default();
    let mut device = Score::default();
    let mut outside = 0u64;
    let mut device_unknown = 0u64;
    let mut hinted = (HintScores::default(), HintScores::default());
    // Only the parses are timed, not the scoring or `--dump`'s writes.
    let mut ua_elapsed = std::time::Duration::ZERO;
    for c in &cases {
        let started = Instant::now();
        let hints = c.hints();
        let got = parser.parse_with_hints(&c.ua, &hints);
        ua_elapsed += started.elapsed();
        if let Some(dump) = dump.as_mut() {
            let line = serde_json::json!({
                "ua": c.ua, "want_bot": c.bot, "client_type": c.client_type,
                "want_browser": c.browser, "want_browser_version": c.browser_version,
                "want_os_family": c.os_family, "want_os_version": c.os_version,
                "want_device": c.device,
                "bot": got.is_bot, "browser": &*got.browser,
                "browser_version": &*got.browser_version, "os": &*got.os,
                "os_version": &*got.os_version, "device": got.device,
            });
            let _ = writeln!(dump, "{line}");
        }
        if c.bot {
            let expected = format!("bot ({})", c.bot_category);
            let verdict = if got.is_bot {
                expected.as_str()
            } else {
                "human"
            };
            bot_recall.add(&expected, verdict, &c.ua);
            continue;
        }
        if !c.is_human() {
            if !c.client_type.is_empty() {
                let verdict = if got.is_bot { "dropped" } else { "kept" };
                tools.add("dropped", verdict, &c.ua);
            }
            continue;
        }
        human_fp.add("human", if got.is_bot { "bot" } else { "human" }, &c.ua);
        if got.is_bot {
            continue;
        }
        if hints != ClientHints::NONE {
            hinted.1.add(c, &got, &browsers, &os_families);
            hinted
                .0
                .add(c, &parser.parse(&c.ua), &browsers, &os_families);
        }
        match device_class(&c.device) {
            Some(want) => device.add(want, got.device, &c.ua),
            None => device_unknown += 1,
        }
        // Matomo names the Android runtime's HTTP client (`Dalvik/2.1.0 (Linux; U;
        // Android 10; ...)`) "Android Browser"; it is no browser, so hush leaves the
        // browser empty and these count as outside the families.
        let family = if c.ua.starts_with("Dalvik/") {
            None
        } else {
            browsers.get(c.browser.as_str())
        };
        match family {
            Some(want) => {
                browser.add(want, &got.browser, &c.ua);
                if **want == *got.browser && !major(&c.browser_version).is_empty() {
                    browser_major.add(
                        major(&c.browser_version),
                        major(&got.browser_version),
                        &c.ua,
                    );
                }
            }
            None => outside += 1,
        }
        if !matches!(c.os_family.as_str(), "" | "Unknown") {
            let got_family = os_families.get(&*got.os).copied().unwrap_or(&got.os);
            os.add(&c.os_family, got_family, &c.ua);
            if c.os_family == got_family && !major(&c.os_version).is_empty() {
                os_major.add(major(&c.os_version), major(&got.os_version), &c.ua);
            }
        }
    }

    // A host hush names is one whose source is not just the host itself.
    let mut named = Score::default();
    let mut source = Score::default();
    let mut channel = Score::default();
    let aliases: HashMap<&str, &str> = SOURCE_ALIASES.iter().copied().collect();
    let hosts: HashMap<&str, &str> = SOURCE_HOSTS.iter().copied().collect();
    for r in &refs {
        let url = format!("https://{}/", r.host);
        let info = referrer::classify(Some(&url), &[], &Utm::default());
        let bare_host = r.host.split('/').next().unwrap_or(&r.host);
        let is_named = !info.source.is_empty()
            && info.source != bare_host
            && info.source != bare_host.trim_start_matches("www.");
        named.add(
            "named",
            if is_named { "named" } else { "host only" },
            &r.host,
        );
        if is_named {
            let want = hosts
                .get(r.host.as_str())
                .or_else(|| aliases.get(r.name.as_str()))
                .copied()
                .unwrap_or(&r.name);
            source.add(want, &info.source, &r.host);
        }
        if r.medium != "unknown" {
            channel.add(&r.medium, info.channel, &r.host);
        }
        if let Some(dump) = dump.as_mut() {
            let line = serde_json::json!({
                "host": r.host, "want_name": r.name, "want_medium": r.medium,
                "source": info.source, "channel": info.channel,
            });
            let _ = writeln!(dump, "{line}");
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Corpora: {corpus}; {} UAs, {} referer hosts.",
        cases.len(),
        refs.len()
    );
    let _ = writeln!(
        out,
        "Uncached parse: {:.1} us per UA on average over the corpus ({} parses); the \
         rules take {:.2} MiB.\n",
        ua_elapsed.as_secs_f64() * 1e6 / cases.len().max(1) as f64,
        cases.len(),
        parser.rules_memory() as f64 / f64::from(1 << 20)
    );
    let _ = writeln!(out, "| field | right / cases | accuracy |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    let rows: [(&str, &Score); 11] = [
        ("bots recognised (recall)", &bot_recall),
        ("humans kept (1 - false positives)", &human_fp),
        ("non-browser clients dropped", &tools),
        ("browser family", &browser),
        ("browser major", &browser_major),
        ("OS family", &os),
        ("OS major", &os_major),
        ("device class", &device),
        ("referer hosts hush names", &named),
        ("source name, where named", &source),
        ("channel", &channel),
    ];
    for (name, s) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} / {} | {:.2} % |",
            s.right,
            s.total,
            s.pct()
        );
    }
    let _ = writeln!(
        out,
        "\nBrowsers outside hush's families (not scored): {outside}; human UAs without a \
         device type (not scored): {device_unknown}.\n"
    );
    let _ = writeln!(
        out,
        "Fixtures with client hints (human, not taken for bots): UA only against UA + hints.\n"
    );
    let _ = writeln!(out, "| field | UA only | UA + hints |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    for (name, without, with) in [
        ("browser family", &hinted.0.browser, &hinted.1.browser),
        ("device class", &hinted.0.device, &hinted.1.device),
        ("OS family", &hinted.0.os, &hinted.1.os),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} / {} ({:.2} %) | {} / {} ({:.2} %) |",
            without.right,
            without.total,
            without.pct(),
            with.right,
            with.total,
            with.pct()
        );
    }
    let _ = writeln!(out);
    let hint_rows = [
        ("browser family with hints", &hinted.1.browser),
        ("device class with hints", &hinted.1.device),
    ];
    for (name, s) in rows.into_iter().chain(hint_rows) {
        if s.confusions.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "Top confusions, {name} (expected → got: count, example):"
        );
        for ((want, got), n) in s.top(8) {
            let example = &s.examples[&(want.clone(), got.clone())];
            let example: String = example.chars().take(110).collect();
            let _ = writeln!(out, "- `{want}` → `{got}`: {n} (`{example}`)");
        }
        let _ = writeln!(out);
    }
    if args.contains_key("false-positives") {
        let _ = writeln!(out, "Humans taken for bots:");
        for c in &cases {
            if !c.bot && c.is_human() && parser.parse_with_hints(&c.ua, &c.hints()).is_bot {
                let _ = writeln!(out, "- `{}`", c.ua);
            }
        }
    }
    print!("{out}");
}
