//! Stage 3, the row: a validated hit plus its request context becomes one
//! [`row::EventRow`], or a deliberate drop.
//!
//! Owns User-Agent parsing and bot detection ([`ua`]), the page URL and its UTM tags
//! ([`page_url`]), referrer source and channel ([`referrer`]), the geo lookup on the
//! truncated address ([`geo`]), the daily salts shared through ClickHouse ([`salt`])
//! and the visitor id hashed from them ([`visitor`]), visits ([`session`]), and the
//! stored row itself ([`row`]). [`Enricher`] runs them in order for one hit.
//!
//! Receives: an `IncomingEvent`, its `Site` and a `TruncatedIp` from `collect`.
//! Hands on: an `EventRow` to the pipeline, or a [`DropReason`] (bot, opted out, an
//! engagement ping without a visit), and a [`Journal`] of what the hit changed in the
//! visit tracker, to undo when the pipeline refuses the row.
//!
//! Order matters for cost and privacy: bots and opted-out hits leave before any
//! hashing or session state is touched, and the only address seen here is the
//! `TruncatedIp`. Shared strings (browser, OS, site) are `Arc` clones, so a cached
//! User-Agent costs no allocation.

pub mod geo;
pub mod page_url;
pub mod referrer;
pub mod row;
pub mod salt;
pub mod session;
pub mod ua;
pub mod visitor;

use std::sync::Arc;

use self::geo::GeoDb;
use self::page_url::UrlError;
use self::row::{EventRow, SCROLL_DEPTH_UNKNOWN};
use self::salt::Salts;
use self::session::{Journal, SessionTracker};
use self::ua::{ClientHints, UaParser};
use self::visitor::visitor_id;
use crate::collect::client_ip::TruncatedIp;
use crate::collect::hit::IncomingEvent;
use crate::collect::sites::Site;
use crate::config::{OptOutPolicy, PrivacyConfig};

pub use crate::metrics::DropReason;

/// The event name of engagement pings (time on page, scroll depth).
pub const ENGAGEMENT: &str = "engagement";

/// Most same-site hosts passed to the referrer classifier (site names + page host).
const MAX_SAME_SITE_HOSTS: usize = 16;

/// What the request adds to the hit body. The address is already truncated.
#[derive(Debug, Clone, Copy)]
pub struct HitContext<'a> {
    pub ip: TruncatedIp,
    pub user_agent: &'a str,
    /// The request's `Sec-CH-UA*` headers, which correct what the User-Agent says.
    pub hints: ClientHints<'a>,
    /// `DNT: 1`
    pub dnt: bool,
    /// `Sec-GPC: 1`
    pub gpc: bool,
    /// Receive time, seconds since the Unix epoch (UTC).
    pub now_secs: u32,
}

/// The result of enriching one hit for one site.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved straight into the writer's Vec; boxing would allocate per hit
pub enum Outcome {
    Store(EventRow),
    Dropped(DropReason),
}

/// A hit that passed body validation but cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    /// The page URL is unusable (answered 400).
    #[error("{0}")]
    Url(#[from] UrlError),
    /// No salt of the hit's day to hash with (answered 503: the collector's fault, and
    /// it passes once the rotation catches up).
    #[error("{0}")]
    StaleSalt(#[from] salt::StaleSalt),
}

/// Everything enrichment needs; shared by all requests behind an `Arc`.
pub struct Enricher {
    pub ua: UaParser,
    pub geo: Arc<GeoDb>,
    pub salts: Arc<Salts>,
    pub sessions: Arc<SessionTracker>,
    pub privacy: PrivacyConfig,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("ua", &self.ua)
            .field("privacy", &self.privacy)
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// Whether the opt-out signals make this hit anonymous, or drop it.
    fn opt_out(&self, ctx: &HitContext<'_>) -> Result<bool, DropReason> {
        let mut anonymous = false;
        for (signal, policy, reason) in [
            (ctx.gpc, self.privacy.gpc, DropReason::gpc),
            (ctx.dnt, self.privacy.dnt, DropReason::dnt),
        ] {
            if signal {
                match policy {
                    OptOutPolicy::Drop => return Err(reason),
                    OptOutPolicy::Anonymous => anonymous = true,
                    OptOutPolicy::Ignore => {}
                }
            }
        }
        Ok(anonymous)
    }

    /// The opt-out signal that makes a stored hit anonymous (`dnt` or `gpc`, the one
    /// [`Enricher::opt_out`] looks at first), or `None` when it is stored with a
    /// visitor or dropped.
    pub fn anonymised_by(&self, ctx: &HitContext<'_>) -> Option<DropReason> {
        if self.opt_out(ctx) != Ok(true) {
            return None;
        }
        [
            (ctx.gpc, self.privacy.gpc, DropReason::gpc),
            (ctx.dnt, self.privacy.dnt, DropReason::dnt),
        ]
        .into_iter()
        .find(|(signal, policy, _)| *signal && *policy == OptOutPolicy::Anonymous)
        .map(|(_, _, reason)| reason)
    }

    /// Enriches a hit that is still needed afterwards (one hit counted for several
    /// sites): its name and props are copied into the row. What it changes in the
    /// visit tracker stays; see [`Enricher::enrich_journaled`].
    pub fn enrich(
        &self,
        ev: &IncomingEvent,
        site: &Arc<Site>,
        ctx: &HitContext<'_>,
    ) -> Result<Outcome, EnrichError> {
        self.enrich_journaled(ev, site, ctx, &mut Journal::default())
    }

    /// [`Enricher::enrich`], recording in `journal` what the hit changed in the visit
    /// tracker, for [`SessionTracker::undo`] if its row is refused.
    pub fn enrich_journaled(
        &self,
        ev: &IncomingEvent,
        site: &Arc<Site>,
        ctx: &HitContext<'_>,
        journal: &mut Journal,
    ) -> Result<Outcome, EnrichError> {
        let mut outcome = self.enrich_fields(ev, site, ctx, journal)?;
        if let Outcome::Store(row) = &mut outcome {
            row.name.clone_from(&ev.name);
            row.props.clone_from(&ev.props);
        }
        Ok(outcome)
    }

    /// [`Enricher::enrich`] for the last (usually only) use of a hit: its name and
    /// props move into the row, no copy.
    pub fn enrich_owned(
        &self,
        ev: IncomingEvent,
        site: &Arc<Site>,
        ctx: &HitContext<'_>,
    ) -> Result<Outcome, EnrichError> {
        self.enrich_owned_journaled(ev, site, ctx, &mut Journal::default())
    }

    /// [`Enricher::enrich_owned`] with a [`Journal`], as [`Enricher::enrich_journaled`].
    pub fn enrich_owned_journaled(
        &self,
        ev: IncomingEvent,
        site: &Arc<Site>,
        ctx: &HitContext<'_>,
        journal: &mut Journal,
    ) -> Result<Outcome, EnrichError> {
        let mut outcome = self.enrich_fields(&ev, site, ctx, journal)?;
        if let Outcome::Store(row) = &mut outcome {
            row.name = ev.name;
            row.props = ev.props;
        }
        Ok(outcome)
    }

    /// Everything but the hit's own strings (`name`, `props`: left empty, which
    /// allocates nothing), so the callers can move or copy them.
    fn enrich_fields(
        &self,
        ev: &IncomingEvent,
        site: &Arc<Site>,
        ctx: &HitContext<'_>,
        journal: &mut Journal,
    ) -> Result<Outcome, EnrichError> {
        let ua = self.ua.parse_with_hints(ctx.user_agent, &ctx.hints);
        if ua.is_bot {
            return Ok(Outcome::Dropped(DropReason::bot));
        }
        let anonymous = match self.opt_out(ctx) {
            Ok(anonymous) => anonymous,
            Err(reason) => return Ok(Outcome::Dropped(reason)),
        };
        let page = page_url::parse(&ev.url, ev.hash_mode)?;

        // Navigation within the site (any of its names, or the page's own host) is not
        // a traffic source.
        let mut hosts: [&str; MAX_SAME_SITE_HOSTS] = [""; MAX_SAME_SITE_HOSTS];
        let mut n = 0;
        for host in std::iter::once(page.hostname.as_str())
            .chain(site.same_site_hosts.iter().map(String::as_str))
            .take(MAX_SAME_SITE_HOSTS)
        {
            hosts[n] = host;
            n += 1;
        }
        let refr = referrer::classify(ev.referrer.as_deref(), &hosts[..n], &page.utm);

        // Only the truncated network is looked up: city precision needs no more.
        let geo = self.geo.lookup(ctx.ip.addr());
        let is_engagement = ev.name == ENGAGEMENT;
        let (visitor, session, entry_page) = if anonymous {
            (0, 0, Arc::from(page.pathname.as_str()))
        } else {
            // Never a salt of an earlier day than the hit's: that would link days.
            let salts = self.salts.for_day(ctx.now_secs / 86_400)?;
            let current = visitor_id(&salts.current, &site.domain, &ctx.ip, ctx.user_agent);
            // Yesterday's id only matters when there is no visit under today's: hashed
            // on demand, it costs one SHA-256 per new visit instead of per hit.
            let previous = || {
                salts
                    .previous
                    .as_ref()
                    .map(|p| visitor_id(p, &site.domain, &ctx.ip, ctx.user_agent))
            };
            let info = self.sessions.touch(
                &site.domain,
                current,
                previous,
                ctx.now_secs,
                &page.pathname,
                is_engagement,
            );
            if is_engagement && info.new_visit {
                // Its visit expired, was forgotten or never was: storing it would
                // count a one-off visit that nobody made (Plausible drops these too).
                return Ok(Outcome::Dropped(DropReason::no_visit));
            }
            journal.record(info.touched);
            (info.visitor_id, info.session_id, info.entry_page)
        };

        let (engagement_ms, scroll_depth) = if is_engagement {
            (
                ev.engagement_ms.unwrap_or(0),
                ev.scroll_depth.unwrap_or(SCROLL_DEPTH_UNKNOWN),
            )
        } else {
            (0, SCROLL_DEPTH_UNKNOWN)
        };
        let utm = page.utm;
        Ok(Outcome::Store(EventRow {
            site: Arc::clone(&site.domain),
            timestamp: ctx.now_secs,
            name: String::new(),
            visitor_id: visitor,
            session_id: session,
            entry_page,
            hostname: page.hostname,
            pathname: page.pathname,
            referrer_host: refr.host,
            referrer_path: refr.path,
            source: refr.source,
            channel: refr.channel,
            utm_source: utm.source,
            utm_medium: utm.medium,
            utm_campaign: utm.campaign,
            utm_term: utm.term,
            utm_content: utm.content,
            browser: Arc::clone(&ua.browser),
            browser_version: Arc::clone(&ua.browser_version),
            os: Arc::clone(&ua.os),
            os_version: Arc::clone(&ua.os_version),
            device: ua.device,
            country: geo.country,
            region: geo.region,
            city_geoname_id: geo.city_geoname_id,
            city: geo.city,
            props: Vec::new(),
            revenue_micros: ev.revenue.as_ref().map(|r| r.amount_micros),
            revenue_currency: ev
                .revenue
                .as_ref()
                .map(|r| r.currency_str().to_owned())
                .unwrap_or_default(),
            interactive: u8::from(ev.interactive),
            engagement_ms,
            scroll_depth,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::client_ip;
    use crate::collect::sites::SiteRegistry;
    use crate::config::{Config, GeoConfig, UserAgentConfig};
    use crate::enrich::salt::{DailySalts, SALT_LEN};

    const DAY: u32 = 20_000;
    const MIDNIGHT: u32 = DAY * 86_400;
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn config() -> Config {
        Config::from_toml_str("[[sites]]\ndomain = \"a.com\"\n").unwrap()
    }

    /// An enricher on `day` whose salts are derived from the day number (so the
    /// next day's enricher knows this day's salt as `previous`).
    fn enricher(day: u32, sessions: &Arc<SessionTracker>) -> Enricher {
        let salt = |d: u32| [u8::try_from(d % 251).unwrap(); SALT_LEN];
        Enricher {
            ua: UaParser::new(&UserAgentConfig::default()).unwrap(),
            geo: Arc::new(GeoDb::open(&GeoConfig::default()).unwrap()),
            salts: Salts::fixed(DailySalts {
                day,
                current: salt(day),
                previous: Some(salt(day - 1)),
            }),
            sessions: Arc::clone(sessions),
            privacy: config().privacy,
        }
    }

    fn event(body: &str) -> IncomingEvent {
        crate::collect::hit::parse_event(body.as_bytes(), &config().limits).unwrap()
    }

    fn ctx(addr: &str, now_secs: u32) -> HitContext<'static> {
        let config = config();
        HitContext {
            ip: client_ip::truncate(
                addr.parse().unwrap(),
                config.privacy.ipv4_prefix,
                config.privacy.ipv6_prefix,
            ),
            user_agent: CHROME,
            hints: ClientHints::NONE,
            dnt: false,
            gpc: false,
            now_secs,
        }
    }

    fn stored(outcome: Result<Outcome, EnrichError>) -> EventRow {
        match outcome {
            Ok(Outcome::Store(row)) => row,
            other => panic!("not stored: {other:?}"),
        }
    }

    #[test]
    fn a_visit_spanning_midnight_keeps_its_visitor_and_session() {
        let sessions = Arc::new(SessionTracker::new(&config().session));
        let (before, after) = (enricher(DAY - 1, &sessions), enricher(DAY, &sessions));
        let registry = SiteRegistry::from_config(&config());
        let site = registry.resolve("a.com").unwrap();
        let page = |path: &str| {
            event(&format!(
                r#"{{"n":"pageview","u":"https://a.com{path}","d":"a.com"}}"#
            ))
        };

        let late =
            stored(before.enrich_owned(page("/late"), site, &ctx("203.0.113.9", MIDNIGHT - 60)));
        let next =
            stored(after.enrich_owned(page("/next"), site, &ctx("203.0.113.9", MIDNIGHT + 60)));
        assert_eq!(next.visitor_id, late.visitor_id);
        assert_eq!(next.session_id, late.session_id);
        assert_eq!(&*next.entry_page, "/late");
        // And later that day it still continues (the previous-id visit was extended).
        let again =
            stored(after.enrich_owned(page("/again"), site, &ctx("203.0.113.9", MIDNIGHT + 1800)));
        assert_eq!(again.session_id, late.session_id);

        // A visitor first seen after midnight gets today's id and a new visit; its
        // next hit continues that visit.
        let fresh =
            stored(after.enrich_owned(page("/x"), site, &ctx("198.51.100.4", MIDNIGHT + 60)));
        assert_ne!(fresh.visitor_id, late.visitor_id);
        assert_ne!(fresh.session_id, late.session_id);
        assert_eq!(&*fresh.entry_page, "/x");
        let fresh2 =
            stored(after.enrich_owned(page("/y"), site, &ctx("198.51.100.4", MIDNIGHT + 90)));
        assert_eq!(fresh2.visitor_id, fresh.visitor_id);
        assert_eq!(fresh2.session_id, fresh.session_id);

        // After the timeout the old visit is over: a new one under today's id.
        let much_later = MIDNIGHT + 1800 + 1800;
        let new_visit =
            stored(after.enrich_owned(page("/z"), site, &ctx("203.0.113.9", much_later)));
        assert_ne!(new_visit.session_id, late.session_id);
        assert_ne!(new_visit.visitor_id, late.visitor_id);
        assert_eq!(&*new_visit.entry_page, "/z");
    }

    fn dropped(outcome: Result<Outcome, EnrichError>) -> DropReason {
        match outcome {
            Ok(Outcome::Dropped(reason)) => reason,
            other => panic!("not dropped: {other:?}"),
        }
    }

    #[test]
    fn engagement_without_a_visit_is_dropped() {
        let sessions = Arc::new(SessionTracker::new(&config().session));
        let e = enricher(DAY, &sessions);
        let registry = SiteRegistry::from_config(&config());
        let site = registry.resolve("a.com").unwrap();
        let hit = |name: &str| {
            event(&format!(
                r#"{{"n":"{name}","u":"https://a.com/read","d":"a.com","e":5000,"sd":40}}"#
            ))
        };
        let at = |secs: u32| ctx("203.0.113.9", MIDNIGHT + secs);
        // Never a page view: no visit to report on.
        let orphan = e.enrich_owned(hit(ENGAGEMENT), site, &at(10));
        assert_eq!(dropped(orphan), DropReason::no_visit);
        assert!(sessions.is_empty());
        // With its page view: stored in the same visit.
        let view = stored(e.enrich_owned(hit("pageview"), site, &at(20)));
        let engaged = stored(e.enrich_owned(hit(ENGAGEMENT), site, &at(30)));
        assert_eq!(engaged.session_id, view.session_id);
        assert_eq!((engaged.engagement_ms, engaged.scroll_depth), (5000, 40));
        // After the visit expired (30 minutes after the last hit): dropped again.
        let late = e.enrich_owned(hit(ENGAGEMENT), site, &at(30 + 1800));
        assert_eq!(dropped(late), DropReason::no_visit);
        // An anonymous (DNT) ping has no visit by design and is kept.
        let mut anonymous = at(30 + 1800);
        anonymous.dnt = true;
        let row = stored(e.enrich_owned(hit(ENGAGEMENT), site, &anonymous));
        assert_eq!(row.session_id, 0);
    }

    #[test]
    fn a_journaled_hit_can_be_taken_back() {
        let sessions = Arc::new(SessionTracker::new(&config().session));
        let e = enricher(DAY, &sessions);
        let registry = SiteRegistry::from_config(&config());
        let site = registry.resolve("a.com").unwrap();
        let page = |path: &str| {
            event(&format!(
                r#"{{"n":"pageview","u":"https://a.com{path}","d":"a.com"}}"#
            ))
        };
        let mut journal = Journal::default();
        let refused = stored(e.enrich_owned_journaled(
            page("/refused"),
            site,
            &ctx("203.0.113.9", MIDNIGHT + 5),
            &mut journal,
        ));
        sessions.undo(&journal);
        let next = stored(e.enrich_owned(page("/next"), site, &ctx("203.0.113.9", MIDNIGHT + 6)));
        assert_ne!(next.session_id, refused.session_id);
        assert_eq!(&*next.entry_page, "/next");
    }

    #[test]
    fn a_hit_after_the_salts_day_is_not_hashed() {
        let sessions = Arc::new(SessionTracker::new(&config().session));
        let stale = enricher(DAY - 1, &sessions);
        let registry = SiteRegistry::from_config(&config());
        let site = registry.resolve("a.com").unwrap();
        let ev = event(r#"{"n":"pageview","u":"https://a.com/","d":"a.com"}"#);
        assert!(matches!(
            stale.enrich(&ev, site, &ctx("203.0.113.9", MIDNIGHT + 60)),
            Err(EnrichError::StaleSalt(salt::StaleSalt {
                salt_day,
                day: DAY
            })) if salt_day == DAY - 1
        ));
        // The same salt still serves the last minute of its own day ...
        stored(stale.enrich(&ev, site, &ctx("203.0.113.9", MIDNIGHT - 60)));
        // ... and an anonymous hit needs no salt at all.
        let mut opted_out = ctx("203.0.113.9", MIDNIGHT + 60);
        opted_out.dnt = true;
        let row = stored(stale.enrich(&ev, site, &opted_out));
        assert_eq!(row.visitor_id, 0);
    }

    #[test]
    fn client_hints_name_the_browser_but_not_the_visitor() {
        let sessions = Arc::new(SessionTracker::new(&config().session));
        let e = enricher(DAY, &sessions);
        let registry = SiteRegistry::from_config(&config());
        let site = registry.resolve("a.com").unwrap();
        let ev = event(r#"{"n":"pageview","u":"https://a.com/","d":"a.com"}"#);
        let plain = ctx("203.0.113.9", MIDNIGHT + 5);
        let hinted = HitContext {
            hints: ClientHints {
                brands: r#""Brave";v="131", "Chromium";v="131", "Not_A Brand";v="24""#,
                mobile: "?0",
                platform: "\"Windows\"",
            },
            ..plain
        };
        let (a, b) = (
            stored(e.enrich(&ev, site, &plain)),
            stored(e.enrich(&ev, site, &hinted)),
        );
        assert_eq!((&*a.browser, &*b.browser), ("Chrome", "Brave"));
        assert_eq!(
            (&*b.browser_version, &*b.os, b.device),
            ("131", "Windows", "desktop")
        );
        // The visitor id hashes the User-Agent only: the same visitor either way.
        assert_eq!(a.visitor_id, b.visitor_id);
    }

    #[test]
    fn owned_and_borrowed_hits_give_the_same_row() {
        let sessions = Arc::new(SessionTracker::new(&config().session));
        let e = enricher(DAY, &sessions);
        let registry = SiteRegistry::from_config(&config());
        let site = registry.resolve("a.com").unwrap();
        let ev = event(
            r#"{"n":"Signup","u":"https://a.com/join","d":"a.com","p":{"plan":"team","seats":5},"$":{"currency":"EUR","amount":"9.5"}}"#,
        );
        let borrowed = stored(e.enrich(&ev, site, &ctx("203.0.113.9", MIDNIGHT + 5)));
        let owned = stored(e.enrich_owned(ev.clone(), site, &ctx("203.0.113.9", MIDNIGHT + 5)));
        assert_eq!(owned, borrowed);
        assert_eq!(owned.name, "Signup");
        assert_eq!(
            owned.props,
            [
                ("plan".to_owned(), "team".to_owned()),
                ("seats".to_owned(), "5".to_owned())
            ]
        );
        assert_eq!(owned.revenue_micros, Some(9_500_000));
        assert_eq!(owned.revenue_currency, "EUR");
    }
}
