//! The no-JavaScript pixel (`GET /api/event.gif`, `/pixel.gif`): its query string
//! becomes the same [`IncomingEvent`] an Events API body would, through the same
//! parser, so a pixel hit gets exactly the validation and limits of `/api/event`.
//!
//! Parameters (percent-encoded, as in any URL):
//!
//! | name | meaning | default |
//! | --- | --- | --- |
//! | `d` | domain (comma list for roll-ups) | required |
//! | `u` | page URL | the request's `Referer` |
//! | `r` | the page's referrer | none |
//! | `n` | event name | `pageview` |
//! | `p` | props, a JSON object | none |
//!
//! Other parameters are ignored (a cache-busting `?t=...` is common); one given
//! twice is refused, as a duplicate key in a body is.

use crate::collect::hit::{self, HitError, IncomingEvent};
use crate::config::LimitsConfig;

/// Why a pixel's query string was refused. `Display` is safe to log: it names only
/// parameters, or repeats the body parser's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelError {
    /// A known parameter appears more than once.
    #[error("parameter `{0}` is given twice")]
    Duplicate(&'static str),
    /// Neither `u` nor a `Referer` header says which page this is.
    #[error("no page URL: give `u` or send a Referer")]
    NoUrl,
    /// The hit the parameters describe is invalid (same reasons as a body).
    #[error("{0}")]
    Hit(#[from] HitError),
}

/// Parses the query string (without `?`, `None` when there is none) of a pixel
/// request, `referer` standing in for a missing `u`.
pub fn parse_query(
    query: Option<&str>,
    referer: Option<&str>,
    limits: &LimitsConfig,
) -> Result<IncomingEvent, PixelError> {
    const KEYS: [&str; 5] = ["d", "u", "r", "n", "p"];
    let mut values: [Option<String>; 5] = Default::default();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let Some(i) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        if values[i].is_some() {
            return Err(PixelError::Duplicate(KEYS[i]));
        }
        values[i] = Some(value.into_owned());
    }
    let [domain, url, referrer, name, props] = values;
    let url = url
        .or_else(|| referer.map(str::to_owned))
        .filter(|u| !u.is_empty())
        .ok_or(PixelError::NoUrl)?;
    // The body the Events API would have received: one parser, one set of rules
    // (a missing `d` is its "missing required field"). `p` stays a string: the
    // parser decodes props given as a JSON string, with the same depth limits.
    let mut body = serde_json::Map::new();
    body.insert("n".into(), name.unwrap_or_else(|| "pageview".into()).into());
    body.insert("u".into(), url.into());
    if let Some(domain) = domain {
        body.insert("d".into(), domain.into());
    }
    if let Some(referrer) = referrer {
        body.insert("r".into(), referrer.into());
    }
    if let Some(props) = props {
        body.insert("p".into(), props.into());
    }
    let body = serde_json::Value::Object(body).to_string();
    Ok(hit::parse_event(body.as_bytes(), limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig::default()
    }

    fn parse(query: &str, referer: Option<&str>) -> Result<IncomingEvent, PixelError> {
        parse_query(Some(query), referer, &limits())
    }

    #[test]
    fn parameters_become_the_event_a_body_would() {
        let ev = parse(
            "d=Example.com&u=https%3A%2F%2Fexample.com%2Fnews%3Fid%3D4&r=https%3A%2F%2Fmail.example%2F&n=Open&p=%7B%22list%22%3A%22weekly%22%2C%22n%22%3A3%7D&t=123",
            Some("https://elsewhere.example/"),
        )
        .unwrap();
        assert_eq!(ev.name, "Open");
        assert_eq!(ev.url, "https://example.com/news?id=4");
        assert_eq!(ev.domains, ["example.com"]);
        assert_eq!(ev.referrer.as_deref(), Some("https://mail.example/"));
        assert_eq!(
            ev.props,
            [
                ("list".to_owned(), "weekly".to_owned()),
                ("n".to_owned(), "3".to_owned())
            ]
        );
        assert!(ev.interactive);
        assert!(!ev.hash_mode);
    }

    #[test]
    fn the_referer_is_the_page_when_u_is_missing() {
        let ev = parse("d=example.com", Some("https://example.com/pricing")).unwrap();
        assert_eq!(ev.name, "pageview");
        assert_eq!(ev.url, "https://example.com/pricing");
        assert_eq!(ev.referrer, None);
        assert!(ev.props.is_empty());
        // `+` is a space in a query string.
        let ev = parse("d=example.com&n=Email+open", Some("https://example.com/")).unwrap();
        assert_eq!(ev.name, "Email open");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(parse("d=example.com", None), Err(PixelError::NoUrl));
        assert_eq!(parse("d=example.com&u=", None), Err(PixelError::NoUrl));
        assert_eq!(parse_query(None, None, &limits()), Err(PixelError::NoUrl));
        assert_eq!(
            parse("u=https://example.com/", None),
            Err(PixelError::Hit(HitError::MissingField("domain")))
        );
        assert_eq!(
            parse("d=a.com&d=b.com&u=https://a.com/", None),
            Err(PixelError::Duplicate("d"))
        );
        assert!(matches!(
            parse("d=example.com&u=https://example.com/&p=%7Bnope", None),
            Err(PixelError::Hit(HitError::EmbeddedNotJson {
                field: "props",
                ..
            }))
        ));
        assert!(matches!(
            parse("d=example.com&u=https://example.com/&p=%5B1%5D", None),
            Err(PixelError::Hit(HitError::WrongType { field: "props", .. }))
        ));
        let long = "x".repeat(limits().max_event_name_chars + 1);
        assert!(matches!(
            parse(
                &format!("d=example.com&u=https://example.com/&n={long}"),
                None
            ),
            Err(PixelError::Hit(HitError::TooLong { field: "name", .. }))
        ));
    }
}
