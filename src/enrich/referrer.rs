//! Referrer → referring host and path, a human source name and an acquisition channel.
//!
//! Sources come from a table of well-known hosts built once; a host matches by exact
//! name, then by walking up its parent domains (`uk.search.yahoo.com` → `search.yahoo.com`),
//! then Google's country domains by shape. UTM parameters, when present, name the
//! source and can set the channel (`utm_medium=cpc` is paid whatever the referrer).

use std::collections::HashMap;
use std::sync::LazyLock;

use url::Url;

use crate::enrich::page_url::{Utm, split_simple};

/// How a visit arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Direct,
    Search,
    Social,
    Email,
    Paid,
    Referral,
}

impl Channel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "direct",
            Channel::Search => "search",
            Channel::Social => "social",
            Channel::Email => "email",
            Channel::Paid => "paid",
            Channel::Referral => "referral",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerInfo {
    /// Referring host without `www.`; empty for direct and same-site navigation.
    pub host: String,
    /// Referring path (no query, no fragment); empty when `host` is.
    pub path: String,
    /// `Google`, `GitHub`, a UTM source, or the referring host; empty for direct.
    pub source: String,
    /// One of `direct`, `search`, `social`, `email`, `paid`, `referral`.
    pub channel: &'static str,
}

/// Referrer paths longer than this are cut (on a character boundary).
const MAX_PATH_BYTES: usize = 1_000;

use Channel::{Email, Paid, Referral, Search, Social};

/// Well-known referring hosts (registrable domain or a more specific host).
const SOURCES: &[(&str, &str, Channel)] = &[
    // Search engines.
    ("google.com", "Google", Search),
    ("bing.com", "Bing", Search),
    ("duckduckgo.com", "DuckDuckGo", Search),
    ("yahoo.com", "Yahoo", Search),
    ("search.yahoo.com", "Yahoo", Search),
    ("yahoo.co.jp", "Yahoo", Search),
    ("yandex.ru", "Yandex", Search),
    ("yandex.com", "Yandex", Search),
    ("yandex.by", "Yandex", Search),
    ("yandex.kz", "Yandex", Search),
    ("yandex.ua", "Yandex", Search),
    ("yandex.com.tr", "Yandex", Search),
    ("ya.ru", "Yandex", Search),
    ("baidu.com", "Baidu", Search),
    ("ecosia.org", "Ecosia", Search),
    ("search.brave.com", "Brave Search", Search),
    ("qwant.com", "Qwant", Search),
    ("startpage.com", "Startpage", Search),
    ("kagi.com", "Kagi", Search),
    ("naver.com", "Naver", Search),
    ("seznam.cz", "Seznam", Search),
    ("sogou.com", "Sogou", Search),
    ("so.com", "360 Search", Search),
    ("ask.com", "Ask", Search),
    ("search.aol.com", "AOL", Search),
    ("mojeek.com", "Mojeek", Search),
    ("yep.com", "Yep", Search),
    ("search.lilo.org", "Lilo", Search),
    ("metager.de", "MetaGer", Search),
    ("you.com", "You.com", Search),
    ("presearch.com", "Presearch", Search),
    ("go.mail.ru", "Mail.ru", Search),
    ("nigma.ru", "Nigma", Search),
    ("meta.ua", "Meta", Search),
    ("msn.com", "Bing", Search),
    ("1.cz", "1.cz", Search),
    ("zoohoo.cz", "Zoohoo", Search),
    ("ilse.nl", "Ilse", Search),
    ("exalead.com", "Exalead", Search),
    ("exalead.fr", "Exalead", Search),
    ("soso.com", "soso.com", Search),
    ("sougou.com", "Sogou", Search),
    ("neti.ee", "Neti", Search),
    ("startsiden.no", "Startsiden", Search),
    ("webcache.googleusercontent.com", "Google", Search),
    // Older and regional search engines, directories and phone books.
    ("alexa.com", "Alexa", Search),
    ("dmoz.org", "DMOZ", Search),
    ("cuil.com", "Cuil", Search),
    ("acoon.de", "Acoon", Search),
    ("aport.ru", "Aport", Search),
    ("euroseek.com", "Euroseek", Search),
    ("icerocket.com", "IceRocket", Search),
    ("twingly.com", "Twingly", Search),
    ("gulesider.no", "Gule Sider", Search),
    ("1881.no", "1881", Search),
    ("dasoertliche.de", "Das Örtliche", Search),
    ("dastelefonbuch.de", "Das Telefonbuch", Search),
    ("goyellow.de", "GoYellow", Search),
    ("zhongsou.com", "Zhongsou", Search),
    ("paperball.de", "Paperball", Search),
    ("arianna.libero.it", "Arianna", Search),
    ("arianna.com", "Arianna", Search),
    ("holmes.ge", "Holmes", Search),
    ("jyxo.1188.cz", "Jyxo", Search),
    ("askkids.com", "Ask", Search),
    ("ask.reference.com", "Ask", Search),
    ("blogpulse.com", "Blogpulse", Search),
    ("highbeam.com", "HighBeam", Search),
    ("pricerunner.co.uk", "PriceRunner", Search),
    ("lemoteur.fr", "Voila", Search),
    ("metager2.de", "MetaGer", Search),
    ("meta.rrzn.uni-hannover.de", "MetaGer", Search),
    ("hooseek.com", "Hooseek", Search),
    ("lo.st", "Lo.st", Search),
    ("eo.st", "eo", Search),
    ("x-recherche.com", "X-Recherche", Search),
    ("trovarapido.com", "TrovaRapido", Search),
    ("yougoo.fr", "YouGoo", Search),
    ("junglekey.com", "Jungle Key", Search),
    ("junglekey.fr", "Jungle Key", Search),
    ("jungle-spider.de", "Jungle Spider", Search),
    ("plazoo.com", "Plazoo", Search),
    ("witch.de", "Witch", Search),
    ("vindex.nl", "Vindex", Search),
    ("rpmfind.net", "RPMFind", Search),
    ("tixuma.de", "Tixuma", Search),
    ("geona.net", "Geona", Search),
    ("gomeo.com", "Gomeo", Search),
    ("eurip.com", "Eurip", Search),
    ("everyclick.com", "Everyclick", Search),
    ("firstsfind.com", "Firstfind", Search),
    ("sharelook.fr", "Sharelook", Search),
    ("maailm.com", "Maailm", Search),
    ("latne.lv", "Latne", Search),
    ("apontador.com.br", "Apontador", Search),
    ("all.by", "all.by", Search),
    ("austronaut.at", "Austronaut", Search),
    ("astronaut.at", "Austronaut", Search),
    ("toile.com", "La Toile du Québec", Search),
    ("yatedo.com", "Yatedo", Search),
    ("yatedo.fr", "Yatedo", Search),
    ("gais.cs.ccu.edu.tw", "GAIS", Search),
    ("google.interia.pl", "Interia", Search),
    ("startgoogle.startpagina.nl", "Startpagina", Search),
    ("ariadna.elmundo.es", "El Mundo", Search),
    ("abcsok.no", "ABCsøk", Search),
    ("abcsolk.no", "ABCsøk", Search),
    ("hit-parade.com", "Hit-Parade", Search),
    ("toolbarhome.com", "Toolbarhome", Search),
    ("mister-wong.com", "Mister Wong", Search),
    ("mister-wong.de", "Mister Wong", Search),
    // Social networks and communities.
    ("facebook.com", "Facebook", Social),
    ("fb.me", "Facebook", Social),
    ("fb.com", "Facebook", Social),
    ("messenger.com", "Facebook", Social),
    ("instagram.com", "Instagram", Social),
    ("twitter.com", "X", Social),
    ("x.com", "X", Social),
    ("t.co", "X", Social),
    ("reddit.com", "Reddit", Social),
    ("redd.it", "Reddit", Social),
    ("linkedin.com", "LinkedIn", Social),
    ("lnkd.in", "LinkedIn", Social),
    ("github.com", "GitHub", Referral),
    ("gitlab.com", "GitLab", Referral),
    ("news.ycombinator.com", "Hacker News", Social),
    ("lobste.rs", "Lobsters", Social),
    ("youtube.com", "YouTube", Social),
    ("youtu.be", "YouTube", Social),
    ("pinterest.com", "Pinterest", Social),
    ("pin.it", "Pinterest", Social),
    ("tiktok.com", "TikTok", Social),
    ("bsky.app", "Bluesky", Social),
    ("threads.net", "Threads", Social),
    ("threads.com", "Threads", Social),
    ("t.me", "Telegram", Social),
    ("telegram.org", "Telegram", Social),
    ("web.telegram.org", "Telegram", Social),
    ("whatsapp.com", "WhatsApp", Social),
    ("wa.me", "WhatsApp", Social),
    ("web.whatsapp.com", "WhatsApp", Social),
    ("discord.com", "Discord", Social),
    ("discordapp.com", "Discord", Social),
    ("slack.com", "Slack", Social),
    ("teams.microsoft.com", "Microsoft Teams", Social),
    ("vk.com", "VK", Social),
    ("ok.ru", "Odnoklassniki", Social),
    ("weibo.com", "Weibo", Social),
    ("quora.com", "Quora", Social),
    ("tumblr.com", "Tumblr", Social),
    ("snapchat.com", "Snapchat", Social),
    ("producthunt.com", "Product Hunt", Social),
    ("stackoverflow.com", "Stack Overflow", Social),
    ("stackexchange.com", "Stack Exchange", Social),
    ("dev.to", "DEV", Social),
    ("medium.com", "Medium", Social),
    ("xing.com", "XING", Social),
    ("line.me", "LINE", Social),
    ("twitch.tv", "Twitch", Social),
    ("flipboard.com", "Flipboard", Social),
    // Mastodon and other fediverse instances.
    ("mastodon.social", "Mastodon", Social),
    ("mastodon.online", "Mastodon", Social),
    ("mastodon.world", "Mastodon", Social),
    ("mas.to", "Mastodon", Social),
    ("mstdn.social", "Mastodon", Social),
    ("mstdn.jp", "Mastodon", Social),
    ("fosstodon.org", "Mastodon", Social),
    ("hachyderm.io", "Mastodon", Social),
    ("infosec.exchange", "Mastodon", Social),
    ("techhub.social", "Mastodon", Social),
    ("chaos.social", "Mastodon", Social),
    ("universeodon.com", "Mastodon", Social),
    ("mastodon.art", "Mastodon", Social),
    ("sigmoid.social", "Mastodon", Social),
    ("ioc.exchange", "Mastodon", Social),
    ("mastodon.gamedev.place", "Mastodon", Social),
    ("social.vivaldi.net", "Mastodon", Social),
    ("toot.community", "Mastodon", Social),
    ("indieweb.social", "Mastodon", Social),
    ("front-end.social", "Mastodon", Social),
    ("ruby.social", "Mastodon", Social),
    ("phpc.social", "Mastodon", Social),
    ("masto.ai", "Mastodon", Social),
    ("lemmy.world", "Lemmy", Social),
    // Older and regional social networks.
    ("vkontakte.ru", "VK", Social),
    ("odnoklassniki.ru", "Odnoklassniki", Social),
    ("my.mail.ru", "Mail.ru", Social),
    ("qzone.qq.com", "Qzone", Social),
    ("t.cn", "Weibo", Social),
    ("renren.com", "Renren", Social),
    ("douban.com", "Douban", Social),
    ("mixi.jp", "Mixi", Social),
    ("nk.pl", "Nasza-klasa.pl", Social),
    ("livejournal.com", "LiveJournal", Social),
    ("livejournal.ru", "LiveJournal", Social),
    ("myspace.com", "Myspace", Social),
    ("flickr.com", "Flickr", Social),
    ("foursquare.com", "Foursquare", Social),
    ("badoo.com", "Badoo", Social),
    ("tuenti.com", "Tuenti", Social),
    ("taringa.net", "Taringa!", Social),
    ("skyrock.com", "Skyrock", Social),
    ("viadeo.com", "Viadeo", Social),
    ("hi5.com", "hi5", Social),
    ("hyves.nl", "Hyves", Social),
    ("orkut.com", "Orkut", Social),
    ("bebo.com", "Bebo", Social),
    ("netlog.com", "Netlog", Social),
    ("studivz.net", "StudiVZ", Social),
    ("stumbleupon.com", "StumbleUpon", Social),
    ("digg.com", "Digg", Social),
    ("friendfeed.com", "FriendFeed", Social),
    ("plus.google.com", "Google+", Social),
    ("url.google.com", "Google+", Social),
    ("identi.ca", "Identi.ca", Social),
    ("xanga.com", "Xanga", Social),
    ("friendster.com", "Friendster", Social),
    ("classmates.com", "Classmates", Social),
    ("plaxo.com", "Plaxo", Social),
    ("wayn.com", "WAYN", Social),
    ("habbo.com", "Habbo", Social),
    ("tagged.com", "Tagged", Social),
    ("flixster.com", "Flixster", Social),
    ("paper.li", "Paper.li", Social),
    ("weeworld.com", "WeeWorld", Social),
    ("last.fm", "Last.fm", Social),
    ("lastfm.ru", "Last.fm", Social),
    ("myheritage.com", "MyHeritage", Social),
    ("cyworld.com", "Cyworld", Social),
    ("gaiaonline.com", "Gaia Online", Social),
    ("blackplanet.com", "BlackPlanet", Social),
    ("myyearbook.com", "myYearbook", Social),
    ("fotolog.com", "Fotolog", Social),
    ("friendsreunited.com", "Friends Reunited", Social),
    ("sonico.com", "Sonico", Social),
    ("geni.com", "Geni", Social),
    ("multiply.com", "Multiply", Social),
    ("moikrug.ru", "MoiKrug", Social),
    ("vkrugudruzei.ru", "vKruguDruzei", Social),
    ("mylife.ru", "MyLife", Social),
    // Webmail.
    ("mail.google.com", "Gmail", Email),
    // Google's news search, on every country domain too (`lookup_host`).
    ("news.google.com", "Google News", Search),
    ("outlook.live.com", "Outlook", Email),
    ("outlook.office.com", "Outlook", Email),
    ("outlook.office365.com", "Outlook", Email),
    ("mail.yahoo.com", "Yahoo Mail", Email),
    ("mail.yahoo.co.jp", "Yahoo Mail", Email),
    ("mail.proton.me", "Proton Mail", Email),
    ("mail.aol.com", "AOL Mail", Email),
    ("mail.yandex.ru", "Yandex Mail", Email),
    ("e.mail.ru", "Mail.ru", Email),
    ("app.fastmail.com", "Fastmail", Email),
    ("mail.zoho.com", "Zoho Mail", Email),
    ("mail.tutanota.com", "Tuta", Email),
    ("app.tuta.com", "Tuta", Email),
    // Ad networks (clicks on ads arrive through these).
    ("googleadservices.com", "Google Ads", Paid),
    ("googlesyndication.com", "Google Ads", Paid),
    ("doubleclick.net", "Google Ads", Paid),
    ("bingads.microsoft.com", "Microsoft Ads", Paid),
    // AI assistants and other notable referrers.
    ("chatgpt.com", "ChatGPT", Referral),
    ("chat.openai.com", "ChatGPT", Referral),
    ("perplexity.ai", "Perplexity", Referral),
    ("gemini.google.com", "Gemini", Referral),
    ("copilot.microsoft.com", "Copilot", Referral),
    ("claude.ai", "Claude", Referral),
    ("chat.deepseek.com", "DeepSeek", Referral),
    ("wikipedia.org", "Wikipedia", Referral),
    ("substack.com", "Substack", Referral),
];

/// Search engines by the label they are named by ([`brand_label`]), whatever the
/// country domain or subdomain: `yahoo` covers `de.search.yahoo.com` and
/// `search.yahoo.co.jp`. Checked after [`SOURCES`], so `mail.yahoo.com` stays webmail.
const SEARCH_BRANDS: &[(&str, &str, Channel)] = &[
    ("yahoo", "Yahoo", Search),
    ("bing", "Bing", Search),
    ("bingj", "Bing", Search),
    ("yandex", "Yandex", Search),
    ("baidu", "Baidu", Search),
    ("aol", "AOL", Search),
    ("ask", "Ask", Search),
    ("lycos", "Lycos", Search),
    ("excite", "Excite", Search),
    ("altavista", "AltaVista", Search),
    ("alltheweb", "AllTheWeb", Search),
    ("dogpile", "Dogpile", Search),
    ("metacrawler", "MetaCrawler", Search),
    ("webcrawler", "WebCrawler", Search),
    ("infospace", "InfoSpace", Search),
    ("ixquick", "Ixquick", Search),
    ("startpage", "Startpage", Search),
    ("ecosia", "Ecosia", Search),
    ("qwant", "Qwant", Search),
    ("duckduckgo", "DuckDuckGo", Search),
    ("seznam", "Seznam", Search),
    ("naver", "Naver", Search),
    ("daum", "Daum", Search),
    ("sogou", "Sogou", Search),
    ("rambler", "Rambler", Search),
    ("sapo", "Sapo", Search),
    ("virgilio", "Virgilio", Search),
    ("tiscali", "Tiscali", Search),
    ("abacho", "Abacho", Search),
    ("yasni", "Yasni", Search),
    ("zapmeta", "Zapmeta", Search),
    ("qualigo", "Qualigo", Search),
    ("walhello", "Walhello", Search),
    ("forestle", "Forestle", Search),
    ("mozbot", "Mozbot", Search),
    ("mojeek", "Mojeek", Search),
    ("gigablast", "Gigablast", Search),
    ("hotbot", "HotBot", Search),
    ("looksmart", "LookSmart", Search),
    ("mamma", "Mamma", Search),
    ("teoma", "Teoma", Search),
    ("blekko", "Blekko", Search),
    ("mywebsearch", "MyWebSearch", Search),
    ("mysearch", "MySearch", Search),
    ("searchalot", "Searchalot", Search),
    ("babylon", "Babylon", Search),
    ("conduit", "Conduit", Search),
    ("metager", "MetaGer", Search),
    ("fireball", "Fireball", Search),
    ("eniro", "Eniro", Search),
    ("onet", "Onet", Search),
    ("szukacz", "Szukacz", Search),
    ("centrum", "Centrum", Search),
    ("najdi", "Najdi", Search),
    ("kvasir", "Kvasir", Search),
    ("sesam", "Sesam", Search),
    ("biglobe", "Biglobe", Search),
    ("nifty", "Nifty", Search),
    ("wow", "WOW", Search),
    ("apollo7", "Apollo7", Search),
    ("picsearch", "Picsearch", Search),
    ("blogdigger", "Blogdigger", Search),
    ("technorati", "Technorati", Search),
    ("sweetim", "SweetIM", Search),
    ("delta-search", "Delta Search", Search),
    ("iminent", "Iminent", Search),
];

/// Android apps that send `android-app://<package>/` as referrer.
const ANDROID_APPS: &[(&str, &str, Channel)] = &[
    ("com.google.android.googlequicksearchbox", "Google", Search),
    ("com.google.android.gm", "Gmail", Email),
    ("com.google.android.apps.searchlite", "Google", Search),
    ("com.linkedin.android", "LinkedIn", Social),
    ("com.twitter.android", "X", Social),
    ("com.reddit.frontpage", "Reddit", Social),
    ("com.facebook.katana", "Facebook", Social),
    ("com.instagram.android", "Instagram", Social),
    ("org.telegram.messenger", "Telegram", Social),
    ("com.slack", "Slack", Social),
    ("com.microsoft.office.outlook", "Outlook", Email),
];

/// Lower-case `utm_source` values that name a known source.
const UTM_SOURCES: &[(&str, &str, Channel)] = &[
    ("google", "Google", Search),
    ("bing", "Bing", Search),
    ("duckduckgo", "DuckDuckGo", Search),
    ("ddg", "DuckDuckGo", Search),
    ("yahoo", "Yahoo", Search),
    ("yandex", "Yandex", Search),
    ("baidu", "Baidu", Search),
    ("ecosia", "Ecosia", Search),
    ("brave", "Brave Search", Search),
    ("qwant", "Qwant", Search),
    ("startpage", "Startpage", Search),
    ("kagi", "Kagi", Search),
    ("facebook", "Facebook", Social),
    ("fb", "Facebook", Social),
    ("instagram", "Instagram", Social),
    ("ig", "Instagram", Social),
    ("twitter", "X", Social),
    ("x", "X", Social),
    ("reddit", "Reddit", Social),
    ("linkedin", "LinkedIn", Social),
    ("github", "GitHub", Referral),
    ("hackernews", "Hacker News", Social),
    ("hacker_news", "Hacker News", Social),
    ("hn", "Hacker News", Social),
    ("youtube", "YouTube", Social),
    ("pinterest", "Pinterest", Social),
    ("tiktok", "TikTok", Social),
    ("mastodon", "Mastodon", Social),
    ("bluesky", "Bluesky", Social),
    ("bsky", "Bluesky", Social),
    ("threads", "Threads", Social),
    ("telegram", "Telegram", Social),
    ("whatsapp", "WhatsApp", Social),
    ("discord", "Discord", Social),
    ("slack", "Slack", Social),
    ("producthunt", "Product Hunt", Social),
    ("newsletter", "Newsletter", Email),
    ("email", "Email", Email),
    ("gmail", "Gmail", Email),
    ("outlook", "Outlook", Email),
    ("chatgpt", "ChatGPT", Referral),
    ("chatgpt.com", "ChatGPT", Referral),
    ("perplexity", "Perplexity", Referral),
];

type Table = HashMap<&'static str, (&'static str, Channel)>;

fn table(entries: &[(&'static str, &'static str, Channel)]) -> Table {
    entries
        .iter()
        .map(|&(key, name, channel)| (key, (name, channel)))
        .collect()
}

static HOSTS: LazyLock<Table> = LazyLock::new(|| table(SOURCES));
static BRANDS: LazyLock<Table> = LazyLock::new(|| table(SEARCH_BRANDS));
static APPS: LazyLock<Table> = LazyLock::new(|| table(ANDROID_APPS));
static UTM: LazyLock<Table> = LazyLock::new(|| table(UTM_SOURCES));

/// Classifies a hit's referrer. `same_site_hosts` are the page host name, the site
/// domain and its aliases: a referrer on any of them (or a subdomain) is internal
/// navigation and counts as no referrer.
pub fn classify(referrer: Option<&str>, same_site_hosts: &[&str], utm: &Utm) -> ReferrerInfo {
    let mut host = String::new();
    let mut path = String::new();
    let mut known: Option<(&'static str, Channel)> = None;
    let mut external = |h: &str, p: &str| {
        let bare = strip_www(h.strip_suffix('.').unwrap_or(h));
        if !bare.is_empty() && !is_same_site(bare, same_site_hosts) {
            host = bare.to_owned();
            path = cap(p, MAX_PATH_BYTES).to_owned();
            known = lookup_host(bare);
        }
    };
    let referrer = referrer.map(str::trim).filter(|r| !r.is_empty());
    if let Some(simple) = referrer.and_then(split_simple) {
        external(simple.host, simple.path);
    } else if let Some(url) = referrer.and_then(parse_lenient) {
        if url.scheme() == "android-app" {
            if let Some(package) = url.host_str().filter(|h| !h.is_empty()) {
                host = package.to_owned();
                known = APPS.get(package).copied();
            }
        } else if let Some(h) = url.host_str() {
            external(h, url.path());
        }
    }

    let utm_source = utm.source.trim();
    let utm_known = (!utm_source.is_empty())
        .then(|| lookup_utm_source(utm_source))
        .flatten();

    let source = match (utm_known, utm_source.is_empty(), known) {
        (Some((name, _)), _, _) => name.to_owned(),
        (None, false, _) => utm_source.to_owned(),
        (None, true, Some((name, _))) if !name.is_empty() => name.to_owned(),
        (None, true, _) => host.clone(),
    };

    let channel = if let Some(channel) = channel_of_medium(&utm.medium) {
        channel
    } else if let Some((_, channel)) = utm_known {
        channel
    } else if !utm_source.is_empty() {
        // A labelled campaign from somewhere we do not know; the referrer may still tell.
        known.map_or(Referral, |(_, channel)| channel)
    } else if let Some((_, channel)) = known {
        channel
    } else if !host.is_empty() {
        Referral
    } else if !utm.is_empty() {
        // Campaign parameters without a source (e.g. only utm_campaign).
        Referral
    } else {
        Channel::Direct
    };

    ReferrerInfo {
        host,
        path,
        source,
        channel: channel.as_str(),
    }
}

/// Parses a referrer; garbage yields `None` (treated as no referrer). A bare
/// `example.com/path` without a scheme is accepted as http.
fn parse_lenient(referrer: &str) -> Option<Url> {
    match Url::parse(referrer) {
        Ok(url) if matches!(url.scheme(), "http" | "https" | "android-app") => Some(url),
        Ok(_) => None,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let first = referrer.split(['/', '?', '#']).next().unwrap_or("");
            let looks_like_host = first.contains('.')
                && first
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
            if looks_like_host {
                Url::parse(&format!("http://{referrer}")).ok()
            } else {
                None
            }
        }
        Err(_) => None,
    }
}

fn strip_www(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

/// `host` equals one of `sites` or is a subdomain of one (ignoring `www.` on both sides).
fn is_same_site(host: &str, sites: &[&str]) -> bool {
    sites.iter().any(|site| {
        let site = strip_www(site.strip_suffix('.').unwrap_or(site));
        !site.is_empty() && is_same_or_subdomain(host, site)
    })
}

fn is_same_or_subdomain(host: &str, domain: &str) -> bool {
    if host.len() == domain.len() {
        return host.eq_ignore_ascii_case(domain);
    }
    host.len() > domain.len()
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// Exact host, then each parent domain, then Google's country domains.
fn lookup_host(host: &str) -> Option<(&'static str, Channel)> {
    let mut candidate = host;
    loop {
        if let Some(&hit) = HOSTS.get(candidate) {
            return Some(hit);
        }
        match candidate.split_once('.') {
            Some((_, parent)) if parent.contains('.') => candidate = parent,
            _ => break,
        }
    }
    if is_google_country_domain(host) {
        // Google News is Google's own source on every country domain, as on `.com`.
        let name = if host.starts_with("news.google.") {
            "Google News"
        } else {
            "Google"
        };
        return Some((name, Search));
    }
    if is_webmail(host) {
        return Some(("", Email));
    }
    if let Some(&hit) = BRANDS.get(brand_label(host)) {
        return Some(hit);
    }
    by_shape(host)
}

/// The label a site is named by: the one before the public suffix, where a country
/// domain's second level (`co.uk`, `com.br`, `ne.jp`) counts as part of the suffix.
/// `uk.search.yahoo.co.jp` → `yahoo`; a single label gives itself.
fn brand_label(host: &str) -> &str {
    let mut labels = host.rsplit('.');
    let Some(tld) = labels.next() else {
        return host;
    };
    let Some(second) = labels.next() else {
        return tld;
    };
    let generic_second_level = matches!(
        second,
        "co" | "com" | "net" | "org" | "ac" | "gov" | "edu" | "ne" | "or" | "go" | "gob"
    );
    if tld.len() == 2 && generic_second_level {
        labels.next().unwrap_or(second)
    } else {
        second
    }
}

/// A webmail front end by its first label (`mail.example.net`, `webmail.isp.example`),
/// checked before the brands so `mail.yahoo.net` is e-mail, not Yahoo's search. The
/// source stays the host.
fn is_webmail(host: &str) -> bool {
    let first = host.split('.').next().unwrap_or("");
    host.contains('.') && matches!(first, "mail" | "webmail" | "email" | "correo" | "posta")
}

/// What a host's labels say when no table names it: a label (other than the last)
/// that starts or ends with a word for search (`search.example.net`,
/// `mysearch.example`, `fixsuche.example.de`, `rechercher.example.fr`) is a search
/// engine. The source stays the host.
fn by_shape(host: &str) -> Option<(&'static str, Channel)> {
    let searchy = host.split('.').rev().skip(1).any(|label| {
        SEARCH_WORDS
            .iter()
            .any(|w| label.starts_with(w) || label.ends_with(w))
            && !label.ends_with("research")
    });
    searchy.then_some(("", Search))
}

/// "Search" (and "find") in the languages of the engines that use it in a host label,
/// matched at a label's start or end.
const SEARCH_WORDS: &[&str] = &[
    "search",
    "such",
    "sok",
    "serach",
    "suche",
    "suchmaschine",
    "buscador",
    "busca",
    "recherch",
    "ricerca",
    "pesquisa",
    "zoek",
    "vinden",
    "szukaj",
    "poisk",
    "hledani",
    "arama",
    "haku",
    "cautare",
    "pretraga",
    "kereses",
    "otsing",
    "trouvez",
    "crawler",
];

/// `google.de`, `www.google.co.uk`, `google.com.br`, ... (not `google.example.com`).
fn is_google_country_domain(host: &str) -> bool {
    let mut labels = host.rsplit('.');
    let (Some(last), Some(second)) = (labels.next(), labels.next()) else {
        return false;
    };
    let country_code = |l: &str| l.len() == 2 && l.bytes().all(|b| b.is_ascii_lowercase());
    if second == "google" {
        return country_code(last) || last == "com" || last == "cat";
    }
    // `google.co.uk`, `google.com.br`, and a country domain under another country's
    // code (`google.it.ao`).
    (matches!(second, "co" | "com") || country_code(second))
        && country_code(last)
        && labels.next() == Some("google")
}

fn lookup_utm_source(source: &str) -> Option<(&'static str, Channel)> {
    let lower;
    let key = if source.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = source.to_ascii_lowercase();
        lower.as_str()
    } else {
        source
    };
    if let Some(&hit) = UTM.get(key) {
        return Some(hit);
    }
    // `utm_source=news.ycombinator.com` and the like.
    if key.contains('.') {
        // Only a host that names a source: a shape alone says nothing about the UTM value.
        return lookup_host(strip_www(key)).filter(|(name, _)| !name.is_empty());
    }
    None
}

fn channel_of_medium(medium: &str) -> Option<Channel> {
    let medium = medium.trim();
    if medium.is_empty() {
        return None;
    }
    let eq = |s: &str| medium.eq_ignore_ascii_case(s);
    if [
        "cpc",
        "ppc",
        "cpm",
        "cpv",
        "cpa",
        "paid",
        "paidsearch",
        "paid_search",
        "paid-search",
        "paidsocial",
        "paid_social",
        "paid-social",
        "display",
        "banner",
        "ad",
        "ads",
        "retargeting",
        "sponsored",
    ]
    .into_iter()
    .any(eq)
    {
        Some(Paid)
    } else if ["email", "e-mail", "e_mail", "mail", "newsletter"]
        .into_iter()
        .any(eq)
    {
        Some(Email)
    } else if [
        "social",
        "social-network",
        "social_network",
        "social-media",
        "social_media",
        "sm",
    ]
    .into_iter()
    .any(eq)
    {
        Some(Social)
    } else if eq("organic") {
        Some(Search)
    } else if eq("referral") {
        Some(Referral)
    } else {
        None
    }
}

/// The longest prefix of `s` within `max` bytes that ends on a character boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &[&str] = &["example.com", "www.example.com", "example.org"];

    fn none() -> Utm {
        Utm::default()
    }

    fn utm(source: &str, medium: &str) -> Utm {
        Utm {
            source: source.into(),
            medium: medium.into(),
            ..Utm::default()
        }
    }

    fn c(referrer: &str) -> ReferrerInfo {
        classify(Some(referrer), SITE, &none())
    }

    fn parts(r: &ReferrerInfo) -> (&str, &str, &str, &str) {
        (&r.host, &r.path, &r.source, r.channel)
    }

    #[test]
    fn direct_when_nothing_is_known() {
        let want = ("", "", "", "direct");
        assert_eq!(parts(&classify(None, SITE, &none())), want);
        assert_eq!(parts(&c("")), want);
        assert_eq!(parts(&c("   ")), want);
    }

    #[test]
    fn garbage_is_treated_as_no_referrer() {
        for garbage in [
            "not a url",
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "http://",
            "://",
            "\u{0}\u{1}",
            "(null)",
        ] {
            assert_eq!(parts(&c(garbage)), ("", "", "", "direct"), "{garbage:?}");
        }
    }

    #[test]
    fn search_engines() {
        let cases = [
            ("https://www.google.com/", "google.com", "Google"),
            (
                "https://www.google.co.uk/search?q=x",
                "google.co.uk",
                "Google",
            ),
            ("https://google.de/", "google.de", "Google"),
            ("https://www.google.com.br/", "google.com.br", "Google"),
            ("https://www.bing.com/search?q=x", "bing.com", "Bing"),
            ("https://cn.bing.com/", "cn.bing.com", "Bing"),
            ("https://duckduckgo.com/", "duckduckgo.com", "DuckDuckGo"),
            (
                "https://uk.search.yahoo.com/",
                "uk.search.yahoo.com",
                "Yahoo",
            ),
            ("https://yandex.ru/search/?text=x", "yandex.ru", "Yandex"),
            ("https://www.baidu.com/link?url=x", "baidu.com", "Baidu"),
            ("https://www.ecosia.org/", "ecosia.org", "Ecosia"),
            (
                "https://search.brave.com/search?q=x",
                "search.brave.com",
                "Brave Search",
            ),
            ("https://www.qwant.com/", "qwant.com", "Qwant"),
            ("https://www.startpage.com/", "startpage.com", "Startpage"),
            ("https://kagi.com/search?q=x", "kagi.com", "Kagi"),
        ];
        for (referrer, host, source) in cases {
            let r = c(referrer);
            assert_eq!(
                (&*r.host, &*r.source, r.channel),
                (host, source, "search"),
                "{referrer}"
            );
        }
        assert_eq!(c("https://www.google.co.uk/search?q=x").path, "/search");
    }

    #[test]
    fn search_engines_by_brand_on_any_country_domain() {
        for (referrer, source) in [
            ("https://search.yahoo.co.jp/search?p=x", "Yahoo"),
            ("https://es.search.yahoo.com/", "Yahoo"),
            ("https://yandex.kg/search/", "Yandex"),
            ("https://www.ixquick.de/do/search", "Ixquick"),
            ("https://search.lycos.co.uk/", "Lycos"),
            ("https://www.abacho.at/", "Abacho"),
        ] {
            let r = c(referrer);
            assert_eq!((&*r.source, r.channel), (source, "search"), "{referrer}");
        }
        // The table still wins over the brand: Yahoo's webmail is e-mail.
        assert_eq!(c("https://mail.yahoo.com/d/folders/1").channel, "email");
        // A brand is the label before the suffix, not any label.
        let r = c("https://yahoo.example.net/post");
        assert_eq!((&*r.source, r.channel), ("yahoo.example.net", "referral"));
        assert_eq!(brand_label("uk.search.yahoo.co.jp"), "yahoo");
        assert_eq!(brand_label("www.ixquick.com"), "ixquick");
        assert_eq!(brand_label("co.uk"), "co");
        assert_eq!(brand_label("localhost"), "localhost");
    }

    /// Misses of the referer database (benches/accuracy) the tables and shapes now
    /// place, in its shapes: a Google country domain under another country's code, a
    /// German and a Norwegian word for search, an old engine, an old social network.
    #[test]
    fn older_engines_and_networks_of_the_referer_database() {
        for (referrer, source, channel) in [
            ("https://images.google.it.ao/imgres?q=x", "Google", "search"),
            (
                "https://www.suchmaus.example.de/",
                "suchmaus.example.de",
                "search",
            ),
            ("https://verden.abcsok.no/", "ABCsøk", "search"),
            ("https://www.cuil.com/search?q=x", "Cuil", "search"),
            ("https://www.gaiaonline.com/forum", "Gaia Online", "social"),
        ] {
            let r = c(referrer);
            assert_eq!((&*r.source, r.channel), (source, channel), "{referrer}");
        }
        // The country-code shape needs Google's name right before the codes.
        let r = c("https://google.example.it.ao/");
        assert_eq!(r.channel, "referral");
        assert!(!is_google_country_domain("it.ao"));
        // Research is not search, and the word must start or end a label.
        assert_eq!(c("https://research.example.net/").channel, "referral");
        assert_eq!(c("https://nosuchx.example.net/").channel, "referral");
    }

    #[test]
    fn search_and_webmail_hosts_by_their_shape() {
        for referrer in [
            "https://search.example-isp.net/results?q=x",
            "https://www.findersearch.example/",
            "https://suche.example.de/?q=x",
            "https://buscador.example.es/",
        ] {
            let r = c(referrer);
            assert_eq!(r.channel, "search", "{referrer}");
            // Unnamed: the source stays the host.
            assert_eq!(r.source, r.host, "{referrer}");
        }
        let r = c("https://webmail.example-isp.net/?_task=mail");
        assert_eq!(
            (&*r.source, r.channel),
            ("webmail.example-isp.net", "email")
        );
        // Research is not search; a mail path on another host is not webmail.
        assert_eq!(c("https://research.example.edu/paper").channel, "referral");
        assert_eq!(c("https://example.net/mail/").channel, "referral");
        // A UTM source that only has a search-like shape is kept as given.
        let r = classify(
            Some("https://news.example.net/"),
            SITE,
            &utm("search.example.net", ""),
        );
        assert_eq!(r.source, "search.example.net");
    }

    #[test]
    fn google_properties_that_are_not_search() {
        assert_eq!(
            parts(&c("https://mail.google.com/mail/u/0/")),
            ("mail.google.com", "/mail/u/0/", "Gmail", "email")
        );
        // News is its own source, a search on every Google domain.
        for url in [
            "https://news.google.com/",
            "https://news.google.de/",
            "https://news.google.co.uk/stories",
            "https://news.google.com.br/",
        ] {
            assert_eq!(
                (c(url).source.as_str(), c(url).channel),
                ("Google News", "search"),
                "{url}"
            );
        }
        assert_eq!(c("https://www.google.de/").source, "Google");
        assert_eq!(c("https://gemini.google.com/app").source, "Gemini");
        assert_eq!(
            c("https://www.googleadservices.com/pagead/aclk").channel,
            "paid"
        );
        // Looks like Google only by name.
        let r = c("https://google.example.net/");
        assert_eq!((&*r.source, r.channel), ("google.example.net", "referral"));
        let r = c("https://mygoogle.com/");
        assert_eq!((&*r.source, r.channel), ("mygoogle.com", "referral"));
    }

    #[test]
    fn social_networks() {
        let cases = [
            ("https://l.facebook.com/l.php?u=x", "Facebook"),
            ("https://m.facebook.com/", "Facebook"),
            ("https://www.facebook.com/", "Facebook"),
            ("https://fb.me/abc", "Facebook"),
            ("https://l.instagram.com/", "Instagram"),
            ("https://t.co/abc123", "X"),
            ("https://x.com/someone/status/1", "X"),
            ("https://twitter.com/", "X"),
            ("https://old.reddit.com/r/rust/", "Reddit"),
            ("https://www.linkedin.com/feed/", "LinkedIn"),
            ("https://lnkd.in/xyz", "LinkedIn"),
            ("https://news.ycombinator.com/item?id=1", "Hacker News"),
            ("https://m.youtube.com/watch?v=1", "YouTube"),
            ("https://youtu.be/1", "YouTube"),
            ("https://www.pinterest.com/", "Pinterest"),
            ("https://vm.tiktok.com/x", "TikTok"),
            ("https://mastodon.social/@someone", "Mastodon"),
            ("https://fosstodon.org/@someone", "Mastodon"),
            ("https://bsky.app/profile/x", "Bluesky"),
            ("https://www.threads.net/@x", "Threads"),
            ("https://t.me/channel", "Telegram"),
            ("https://web.whatsapp.com/", "WhatsApp"),
        ];
        for (referrer, source) in cases {
            let r = c(referrer);
            assert_eq!((&*r.source, r.channel), (source, "social"), "{referrer}");
        }
        assert_eq!(c("https://m.facebook.com/").host, "m.facebook.com");
    }

    #[test]
    fn email_and_ai_and_github() {
        assert_eq!(c("https://outlook.live.com/mail/0/").source, "Outlook");
        assert_eq!(c("https://outlook.live.com/mail/0/").channel, "email");
        assert_eq!(c("https://mail.yahoo.com/d/folders/1").source, "Yahoo Mail");
        assert_eq!(c("https://mail.yahoo.com/").channel, "email");
        assert_eq!(
            parts(&c("https://chatgpt.com/")),
            ("chatgpt.com", "/", "ChatGPT", "referral")
        );
        assert_eq!(c("https://www.perplexity.ai/search/x").source, "Perplexity");
        assert_eq!(
            parts(&c("https://github.com/owner/repo")),
            ("github.com", "/owner/repo", "GitHub", "referral")
        );
        assert_eq!(c("https://en.wikipedia.org/wiki/X").source, "Wikipedia");
    }

    #[test]
    fn unknown_hosts_keep_the_host_as_source() {
        let r = c("https://www.Some-Blog.example.net:8080/posts/1?utm=x#y");
        assert_eq!(
            parts(&r),
            (
                "some-blog.example.net",
                "/posts/1",
                "some-blog.example.net",
                "referral"
            )
        );
    }

    #[test]
    fn same_site_referrers_are_internal() {
        for internal in [
            "https://example.com/pricing",
            "https://www.example.com/",
            "https://blog.example.com/post",
            "http://EXAMPLE.ORG/x",
            "https://example.com./x",
        ] {
            assert_eq!(parts(&c(internal)), ("", "", "", "direct"), "{internal}");
        }
        // Look-alikes are external.
        assert_eq!(c("https://notexample.com/").host, "notexample.com");
        assert_eq!(
            c("https://example.com.evil.net/").host,
            "example.com.evil.net"
        );
        // Internal navigation of a campaign landing keeps the campaign channel.
        let r = classify(Some("https://example.com/"), SITE, &utm("newsletter", ""));
        assert_eq!(parts(&r), ("", "", "Newsletter", "email"));
    }

    #[test]
    fn utm_source_overrides_and_is_normalised() {
        let r = classify(Some("https://t.co/x"), SITE, &utm("fb", ""));
        assert_eq!(parts(&r), ("t.co", "/x", "Facebook", "social"));
        let r = classify(None, SITE, &utm("GOOGLE", ""));
        assert_eq!((&*r.source, r.channel), ("Google", "search"));
        let r = classify(None, SITE, &utm("news.ycombinator.com", ""));
        assert_eq!((&*r.source, r.channel), ("Hacker News", "social"));
        let r = classify(None, SITE, &utm("  Spring Partner  ", ""));
        assert_eq!((&*r.source, r.channel), ("Spring Partner", "referral"));
        let r = classify(Some("https://www.bing.com/"), SITE, &utm("partner-x", ""));
        assert_eq!((&*r.source, r.channel), ("partner-x", "search"));
        let only_campaign = Utm {
            campaign: "launch".into(),
            ..Utm::default()
        };
        let r = classify(None, SITE, &only_campaign);
        assert_eq!((&*r.source, r.channel), ("", "referral"));
    }

    #[test]
    fn utm_medium_sets_the_channel() {
        for medium in ["cpc", "PPC", "paid", "paidsearch", "display", "paid_social"] {
            let r = classify(
                Some("https://www.google.com/"),
                SITE,
                &utm("google", medium),
            );
            assert_eq!((&*r.source, r.channel), ("Google", "paid"), "{medium}");
        }
        let r = classify(None, SITE, &utm("weekly-digest", "email"));
        assert_eq!((&*r.source, r.channel), ("weekly-digest", "email"));
        let r = classify(None, SITE, &utm("acme", "newsletter"));
        assert_eq!(r.channel, "email");
        let r = classify(Some("https://github.com/x"), SITE, &utm("", "social"));
        assert_eq!((&*r.source, r.channel), ("GitHub", "social"));
        let r = classify(None, SITE, &utm("", "unknown-medium"));
        assert_eq!((&*r.source, r.channel), ("", "referral"));
    }

    #[test]
    fn android_app_referrers() {
        let r = c("android-app://com.google.android.googlequicksearchbox/");
        assert_eq!(
            parts(&r),
            (
                "com.google.android.googlequicksearchbox",
                "",
                "Google",
                "search"
            )
        );
        let r = c("android-app://com.google.android.gm/");
        assert_eq!((&*r.source, r.channel), ("Gmail", "email"));
        let r = c("android-app://org.example.reader/");
        assert_eq!(
            parts(&r),
            ("org.example.reader", "", "org.example.reader", "referral")
        );
    }

    #[test]
    fn lenient_parsing_of_scheme_less_referrers() {
        let r = c("www.google.com/search");
        assert_eq!((&*r.host, &*r.source), ("google.com", "Google"));
        let r = c("blog.example.net");
        assert_eq!((&*r.host, &*r.path), ("blog.example.net", "/"));
        assert_eq!(c("no-dots-here/path").channel, "direct");
    }

    #[test]
    fn long_paths_are_capped_on_char_boundaries() {
        let path = "é".repeat(MAX_PATH_BYTES);
        let r = c(&format!("https://blog.example.net/{path}"));
        assert!(r.path.len() <= MAX_PATH_BYTES);
        assert!(r.path.starts_with("/%C3%A9"));
        assert_eq!(cap("aé", 2), "a");
        assert_eq!(cap("abc", 10), "abc");
    }

    #[test]
    fn subdomain_matching() {
        assert!(is_same_or_subdomain("a.b.com", "b.com"));
        assert!(is_same_or_subdomain("b.com", "B.com"));
        assert!(!is_same_or_subdomain("ab.com", "b.com"));
        assert!(!is_same_or_subdomain("b.com", "a.b.com"));
        assert!(!is_same_site("x.com", &["", "."]));
    }

    #[test]
    fn google_country_domain_shapes() {
        for yes in [
            "google.de",
            "google.co.uk",
            "google.com.au",
            "www.google.fr",
            "google.com",
        ] {
            assert!(is_google_country_domain(yes), "{yes}");
        }
        for no in [
            "google",
            "google.example",
            "notgoogle.de",
            "google.co.example.com",
            "de",
        ] {
            assert!(!is_google_country_domain(no), "{no}");
        }
    }
}
