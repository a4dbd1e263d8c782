//! Plausible Events API bodies: parsing and validation, before anything else runs.
//!
//! Accepts what the Plausible script and the documented Events API send: long and
//! short keys (`name`/`n`, `url`/`u`, `domain`/`d`, `referrer`/`r`, `props`/`p`
//! (also `meta`/`m`), `revenue`/`$`, `interactive`/`i`, `hash`/`h`, plus the
//! engagement keys `e` and `sd`). Unknown keys are ignored so newer scripts keep
//! working; everything else that is off is refused with a short reason meant for
//! the 400 response body.
//!
//! Nesting depth is bounded while parsing: containers are only accepted where the
//! format allows them (the event object, `props`, `revenue`, values of unknown keys)
//! and those visitors refuse anything deeper than `max_json_depth`; everywhere else
//! a container is a type error, skipped within serde_json's own recursion limit
//! (128), so no input can exhaust the stack. Valid bodies are read once. Only a body
//! that fails is scanned byte by byte ([`scan`]), so that depth and `NaN`/`Infinity`
//! get their own error, reported first as if checked before parsing. Strings are
//! borrowed from the body where JSON escapes allow and only owned once valid. These
//! functions are pure and must not panic on any input.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

use crate::config::LimitsConfig;

/// At most this many comma-separated names in `domain` (Plausible roll-ups send a
/// few; the body limit would otherwise be the only bound).
pub const MAX_DOMAINS: usize = 16;
/// Longest accepted domain name (DNS limit).
pub const MAX_DOMAIN_BYTES: usize = 253;

/// One event as the client described it, validated against `LimitsConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    pub name: String,
    pub url: String,
    /// Trimmed, lower-cased, non-empty; at least one.
    pub domains: Vec<String>,
    /// `None` when absent, `null` or empty.
    pub referrer: Option<String>,
    /// Custom properties in body order; numbers and booleans stringified.
    pub props: Vec<(String, String)>,
    pub revenue: Option<Revenue>,
    /// Counts towards bounce rate; `true` unless the client says otherwise.
    pub interactive: bool,
    /// The page uses hash-based routing: keep the `#fragment` in the path.
    pub hash_mode: bool,
    /// Engagement time in milliseconds (`e`).
    pub engagement_ms: Option<u32>,
    /// Maximum scroll depth in percent (`sd`), 0..=100.
    pub scroll_depth: Option<u8>,
}

/// A revenue amount attached to a goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revenue {
    /// Millionths of the currency unit; negative amounts (refunds) are allowed.
    pub amount_micros: i64,
    /// ISO 4217 code, upper-case ASCII letters.
    pub currency: [u8; 3],
}

impl Revenue {
    pub fn currency_str(&self) -> &str {
        // Always ASCII letters (checked when parsed), so this never falls back.
        std::str::from_utf8(&self.currency).unwrap_or("")
    }
}

/// Why a body was refused. `Display` is the reason sent back in the 400 body; it
/// never includes anything but the client's own input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HitError {
    #[error("body is not valid UTF-8")]
    InvalidUtf8,
    #[error("body is not valid JSON: {detail}")]
    NotJson {
        detail: String,
        line: usize,
        column: usize,
    },
    #[error("JSON is nested more than {max} levels deep")]
    TooDeep { max: usize },
    #[error("NaN and Infinity are not valid JSON numbers")]
    NonFiniteNumber,
    #[error("duplicate key `{0}`")]
    DuplicateKey(&'static str),
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`{field}` is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("`domain` lists more than {max} names")]
    TooManyDomains { max: usize },
    #[error("more than {max} props")]
    TooManyProps { max: usize },
    #[error("a prop key is empty")]
    EmptyPropKey,
    #[error("a prop key is longer than {max} bytes")]
    PropKeyTooLong { max: usize },
    #[error("prop `{key}` is given twice")]
    DuplicateProp { key: String },
    #[error("prop `{key}` must be a string, number or boolean")]
    InvalidPropValue { key: String },
    #[error("prop `{key}` is longer than {max} bytes")]
    PropValueTooLong { key: String, max: usize },
    #[error("`{field}` string is not valid JSON: {detail}")]
    EmbeddedNotJson { field: &'static str, detail: String },
    #[error("invalid revenue: {0}")]
    InvalidRevenue(&'static str),
    #[error("`sd` (scroll depth) must be between 0 and 100")]
    ScrollDepthOutOfRange,
    #[error("`e` (engagement time) must not be negative")]
    NegativeEngagement,
    #[error("`e` (engagement time) must be at most {} ms", u32::MAX)]
    EngagementOutOfRange,
}

/// Why a batch was refused. Validation is all-or-nothing: one bad event refuses the
/// batch, and every bad event is listed by index so the client can fix them at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body as a whole is unusable (encoding, JSON syntax, depth, not an array).
    #[error("{0}")]
    Body(HitError),
    #[error("batch is empty")]
    Empty,
    #[error("batch has more than {max} events")]
    TooManyEvents { max: usize },
    #[error("{}", describe_items(.0))]
    Items(Vec<(usize, HitError)>),
}

/// Items listed in full in a [`BatchError::Items`] message; the rest are counted.
const LISTED_ITEM_ERRORS: usize = 10;

fn describe_items(items: &[(usize, HitError)]) -> String {
    let mut out = String::new();
    for (i, (index, err)) in items.iter().take(LISTED_ITEM_ERRORS).enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let _ = write!(out, "{sep}event {index}: {err}");
    }
    if items.len() > LISTED_ITEM_ERRORS {
        let _ = write!(
            out,
            "; and {} more invalid events",
            items.len() - LISTED_ITEM_ERRORS
        );
    }
    out
}

/// Parses one event (`POST /api/event`).
pub fn parse_event(body: &[u8], limits: &LimitsConfig) -> Result<IncomingEvent, HitError> {
    let text = std::str::from_utf8(body).map_err(|_| HitError::InvalidUtf8)?;
    parse_event_str(text, limits).map_err(|err| match scan(body, limits.max_json_depth) {
        Err(structural) => structural,
        Ok(()) => err,
    })
}

/// Parses a JSON array of up to `max_batch_events` events (`POST /api/events`).
///
/// The array adds one level, so events in a batch may nest as deep as single ones.
pub fn parse_batch(body: &[u8], limits: &LimitsConfig) -> Result<Vec<IncomingEvent>, BatchError> {
    let text = std::str::from_utf8(body).map_err(|_| BatchError::Body(HitError::InvalidUtf8))?;
    parse_batch_str(text, limits).map_err(|err| {
        match scan(body, limits.max_json_depth.saturating_add(1)) {
            Err(structural) => BatchError::Body(structural),
            Ok(()) => err,
        }
    })
}

/// [`parse_batch`] without the structural scan of a refused body. Each item is parsed
/// on its own with the event depth limit, which is the batch limit minus the array.
fn parse_batch_str(text: &str, limits: &LimitsConfig) -> Result<Vec<IncomingEvent>, BatchError> {
    if !text.trim_start().starts_with('[') {
        return Err(BatchError::Body(HitError::WrongType {
            field: "body",
            expected: "a JSON array of events",
        }));
    }
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = de
        .deserialize_seq(RawItems {
            max: limits.max_batch_events,
            too_many: &too_many,
        })
        .and_then(|items| de.end().map(|()| items));
    let raw = match raw {
        Ok(raw) => raw,
        Err(_) if too_many.get() => {
            return Err(BatchError::TooManyEvents {
                max: limits.max_batch_events,
            });
        }
        Err(e) => return Err(BatchError::Body(not_json(&e))),
    };
    if raw.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut events = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    for (index, item) in raw.into_iter().enumerate() {
        match parse_event_str(item.get(), limits) {
            Ok(event) if errors.is_empty() => events.push(event),
            Ok(_) => {}
            Err(err) => errors.push((index, err)),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(BatchError::Items(errors))
    }
}

/// Collects the array's items unparsed (borrowed from the body), failing early once
/// there are more than `max`.
struct RawItems<'f> {
    max: usize,
    too_many: &'f Cell<bool>,
}

impl<'de> Visitor<'de> for RawItems<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if items.len() == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom("too many events"));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// Parses one event object (a whole body, or one item of a batch), nesting at most
/// `max_json_depth` levels.
fn parse_event_str(text: &str, limits: &LimitsConfig) -> Result<IncomingEvent, HitError> {
    if !text.trim_start().starts_with('{') {
        return Err(HitError::WrongType {
            field: "event",
            expected: "a JSON object",
        });
    }
    let ctx = Ctx {
        limits,
        error: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_map(EventVisitor {
            ctx: &ctx,
            depth: 1,
        })
        .and_then(|event| de.end().map(|()| event));
    result.map_err(|e| ctx.error.take().unwrap_or_else(|| not_json(&e)))
}

fn not_json(e: &serde_json::Error) -> HitError {
    HitError::NotJson {
        detail: e.to_string(),
        line: e.line(),
        column: e.column(),
    }
}

/// Checks nesting depth and rejects `NaN`/`Infinity` in one pass over the bytes,
/// tracking strings so brackets and letters inside them do not count.
///
/// Runs only on bodies the parser refused: it turns "too deep" and "not JSON because
/// of `NaN`" into their own errors, taking precedence over whatever the parser
/// stumbled on, so the reason does not depend on where in the body the problem is.
/// The parser enforces the depth limit itself on the bodies it accepts.
fn scan(bytes: &[u8], max_depth: usize) -> Result<(), HitError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(HitError::TooDeep { max: max_depth });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'N' | b'I' => {
                let rest = bytes.get(i..).unwrap_or_default();
                if rest.starts_with(b"NaN") || rest.starts_with(b"Infinity") {
                    return Err(HitError::NonFiniteNumber);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Shared parse state. Semantic errors are stored here and serde is stopped with a
/// placeholder error, so the caller gets the typed [`HitError`] rather than a serde
/// message. The first error wins.
struct Ctx<'l> {
    limits: &'l LimitsConfig,
    error: Cell<Option<HitError>>,
}

impl Ctx<'_> {
    /// Refuses a container at nesting level `depth` (the top-level value is 1) when
    /// that is deeper than `max_json_depth`.
    fn enter<E: de::Error>(&self, depth: usize) -> Result<(), E> {
        let max = self.limits.max_json_depth;
        if depth > max {
            return Err(self.fail(HitError::TooDeep { max }));
        }
        Ok(())
    }

    fn fail<E: de::Error>(&self, err: HitError) -> E {
        let first = self.error.take().unwrap_or(err);
        self.error.set(Some(first));
        E::custom("invalid event")
    }

    fn check<T, E: de::Error>(&self, result: Result<T, HitError>) -> Result<T, E> {
        result.map_err(|e| self.fail(e))
    }
}

/// The event fields, each with all its accepted key spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Url,
    Domain,
    Referrer,
    Props,
    Revenue,
    Interactive,
    Hash,
    Engagement,
    ScrollDepth,
    Unknown,
}

impl Field {
    fn from_key(key: &str) -> Self {
        match key {
            "name" | "n" => Self::Name,
            "url" | "u" => Self::Url,
            "domain" | "d" => Self::Domain,
            "referrer" | "r" => Self::Referrer,
            "props" | "p" | "meta" | "m" => Self::Props,
            "revenue" | "$" => Self::Revenue,
            "interactive" | "i" => Self::Interactive,
            "hash" | "h" => Self::Hash,
            "e" => Self::Engagement,
            "sd" => Self::ScrollDepth,
            _ => Self::Unknown,
        }
    }

    /// Name for duplicate-key errors, listing the aliases that collide.
    fn label(self) -> &'static str {
        match self {
            Self::Name => "name/n",
            Self::Url => "url/u",
            Self::Domain => "domain/d",
            Self::Referrer => "referrer/r",
            Self::Props => "props/p/meta/m",
            Self::Revenue => "revenue/$",
            Self::Interactive => "interactive/i",
            Self::Hash => "hash/h",
            Self::Engagement => "e",
            Self::ScrollDepth => "sd",
            Self::Unknown => "?",
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::from_key(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A JSON string, borrowed from the body when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// Any JSON value, with containers skipped: field checks then decide on the type
/// and produce typed errors instead of serde's messages.
enum Scalar<'de> {
    Str(Cow<'de, str>),
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Null,
    Container,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Container)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Container)
    }
}

/// True when `s` has more than `max` characters, counting only as far as needed.
fn exceeds_chars(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}

fn text_field<'de>(
    value: Scalar<'de>,
    field: &'static str,
    max_chars: usize,
) -> Result<Cow<'de, str>, HitError> {
    let Scalar::Str(s) = value else {
        return Err(HitError::WrongType {
            field,
            expected: "a string",
        });
    };
    if s.is_empty() {
        return Err(HitError::Empty(field));
    }
    if exceeds_chars(&s, max_chars) {
        return Err(HitError::TooLong {
            field,
            max: max_chars,
        });
    }
    Ok(s)
}

fn parse_domains(value: Scalar<'_>) -> Result<Vec<String>, HitError> {
    let Scalar::Str(s) = value else {
        return Err(HitError::WrongType {
            field: "domain",
            expected: "a string",
        });
    };
    let mut domains = Vec::new();
    for name in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if domains.len() == MAX_DOMAINS {
            return Err(HitError::TooManyDomains { max: MAX_DOMAINS });
        }
        // The bound is on the stored (lowercased) name: lowercasing can grow a
        // non-ASCII name (`Ⱥ`, 2 bytes, becomes `ⱥ`, 3 bytes).
        let name = if name.is_ascii() {
            name.to_ascii_lowercase()
        } else {
            name.to_lowercase()
        };
        if name.len() > MAX_DOMAIN_BYTES {
            return Err(HitError::TooLong {
                field: "domain",
                max: MAX_DOMAIN_BYTES,
            });
        }
        domains.push(name);
    }
    if domains.is_empty() {
        return Err(HitError::Empty("domain"));
    }
    Ok(domains)
}

fn parse_referrer(value: Scalar<'_>, max_chars: usize) -> Result<Option<String>, HitError> {
    match value {
        Scalar::Null => Ok(None),
        Scalar::Str(s) if s.is_empty() => Ok(None),
        other => Ok(Some(text_field(other, "referrer", max_chars)?.into_owned())),
    }
}

/// `true`/`false`, also `1`/`0` (the script sends `h: 1`); `null` means the default.
fn flag(value: Scalar<'_>, field: &'static str, default: bool) -> Result<bool, HitError> {
    match value {
        Scalar::Bool(b) => Ok(b),
        Scalar::U64(0) => Ok(false),
        Scalar::U64(1) => Ok(true),
        Scalar::Null => Ok(default),
        _ => Err(HitError::WrongType {
            field,
            expected: "a boolean",
        }),
    }
}

/// A whole number as u64: integers, or floats with no fraction (`5.0`).
enum Integral {
    Value(u64),
    Negative,
    TooLarge,
    Fractional,
}

fn whole(value: &Scalar<'_>) -> Integral {
    match *value {
        Scalar::U64(n) => Integral::Value(n),
        Scalar::I64(n) if n < 0 => Integral::Negative,
        Scalar::I64(n) => Integral::Value(n.unsigned_abs()),
        Scalar::F64(f) if f.is_finite() && f.fract() == 0.0 => {
            if f < 0.0 {
                Integral::Negative
            } else if f > u64::MAX as f64 {
                Integral::TooLarge
            } else {
                // In range and whole, so the cast is exact up to f64 precision.
                Integral::Value(f as u64)
            }
        }
        _ => Integral::Fractional,
    }
}

fn parse_engagement(value: Scalar<'_>) -> Result<Option<u32>, HitError> {
    if matches!(value, Scalar::Null) {
        return Ok(None);
    }
    match whole(&value) {
        Integral::Value(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| HitError::EngagementOutOfRange),
        Integral::Negative => Err(HitError::NegativeEngagement),
        Integral::TooLarge => Err(HitError::EngagementOutOfRange),
        Integral::Fractional => Err(HitError::WrongType {
            field: "e",
            expected: "a whole number of milliseconds",
        }),
    }
}

fn parse_scroll_depth(value: Scalar<'_>) -> Result<Option<u8>, HitError> {
    if matches!(value, Scalar::Null) {
        return Ok(None);
    }
    match whole(&value) {
        Integral::Value(n) if n <= 100 => Ok(u8::try_from(n).ok()),
        Integral::Value(_) | Integral::Negative | Integral::TooLarge => {
            Err(HitError::ScrollDepthOutOfRange)
        }
        Integral::Fractional => Err(HitError::WrongType {
            field: "sd",
            expected: "a whole number of percent",
        }),
    }
}

struct EventVisitor<'c, 'l> {
    ctx: &'c Ctx<'l>,
    /// Nesting level of the event object itself.
    depth: usize,
}

impl<'de> Visitor<'de> for EventVisitor<'_, '_> {
    type Value = IncomingEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IncomingEvent, A::Error> {
        let ctx = self.ctx;
        ctx.enter(self.depth)?;
        let inner = self.depth + 1;
        let limits = ctx.limits;
        let mut seen = 0u16;
        let mut name = None;
        let mut url = None;
        let mut domains = None;
        let mut event = IncomingEvent {
            name: String::new(),
            url: String::new(),
            domains: Vec::new(),
            referrer: None,
            props: Vec::new(),
            revenue: None,
            interactive: true,
            hash_mode: false,
            engagement_ms: None,
            scroll_depth: None,
        };
        while let Some(field) = map.next_key::<Field>()? {
            if field == Field::Unknown {
                map.next_value_seed(Skip { ctx, depth: inner })?;
                continue;
            }
            let bit = 1u16 << (field as u16);
            if seen & bit != 0 {
                return Err(ctx.fail(HitError::DuplicateKey(field.label())));
            }
            seen |= bit;
            match field {
                Field::Name => {
                    let v = map.next_value()?;
                    name = Some(ctx.check(text_field(v, "name", limits.max_event_name_chars))?);
                }
                Field::Url => {
                    let v = map.next_value()?;
                    url = Some(ctx.check(text_field(v, "url", limits.max_url_chars))?);
                }
                Field::Domain => domains = Some(ctx.check(parse_domains(map.next_value()?))?),
                Field::Referrer => {
                    let v = map.next_value()?;
                    event.referrer = ctx.check(parse_referrer(v, limits.max_referrer_chars))?;
                }
                Field::Props => {
                    event.props = map.next_value_seed(PropsSeed {
                        ctx,
                        allow_encoded: true,
                        depth: inner,
                    })?;
                }
                Field::Revenue => {
                    event.revenue = map.next_value_seed(RevenueSeed {
                        ctx,
                        allow_encoded: true,
                        depth: inner,
                    })?;
                }
                Field::Interactive => {
                    event.interactive = ctx.check(flag(map.next_value()?, "interactive", true))?;
                }
                Field::Hash => {
                    event.hash_mode = ctx.check(flag(map.next_value()?, "hash", false))?
                }
                Field::Engagement => {
                    event.engagement_ms = ctx.check(parse_engagement(map.next_value()?))?;
                }
                Field::ScrollDepth => {
                    event.scroll_depth = ctx.check(parse_scroll_depth(map.next_value()?))?;
                }
                Field::Unknown => {}
            }
        }
        let (Some(name), Some(url), Some(domains)) = (name, url, domains) else {
            let missing = if seen & (1 << Field::Name as u16) == 0 {
                "name"
            } else if seen & (1 << Field::Url as u16) == 0 {
                "url"
            } else {
                "domain"
            };
            return Err(ctx.fail(HitError::MissingField(missing)));
        };
        event.name = name.into_owned();
        event.url = url.into_owned();
        event.domains = domains;
        Ok(event)
    }
}

/// `props`: an object of scalar values, `null`, or (as the script sends it) a JSON
/// string holding such an object.
struct PropsSeed<'c, 'l> {
    ctx: &'c Ctx<'l>,
    /// A string is decoded once; a string inside that string is refused.
    allow_encoded: bool,
    /// Nesting level of the props object (1 in an embedded document).
    depth: usize,
}

impl PropsSeed<'_, '_> {
    fn wrong_type<E: de::Error>(&self) -> E {
        self.ctx.fail(HitError::WrongType {
            field: "props",
            expected: "an object (or a JSON string holding one)",
        })
    }
}

impl<'de> DeserializeSeed<'de> for PropsSeed<'_, '_> {
    type Value = Vec<(String, String)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PropsSeed<'_, '_> {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        ctx.enter(self.depth)?;
        let limits = ctx.limits;
        let mut props: Vec<(String, String)> = Vec::new();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if key.is_empty() {
                return Err(ctx.fail(HitError::EmptyPropKey));
            }
            if key.len() > limits.max_prop_key_bytes {
                return Err(ctx.fail(HitError::PropKeyTooLong {
                    max: limits.max_prop_key_bytes,
                }));
            }
            if props.iter().any(|(k, _)| *k == *key) {
                return Err(ctx.fail(HitError::DuplicateProp {
                    key: key.into_owned(),
                }));
            }
            if props.len() == limits.max_props {
                return Err(ctx.fail(HitError::TooManyProps {
                    max: limits.max_props,
                }));
            }
            let value: Cow<'de, str> = match map.next_value::<Scalar<'de>>()? {
                Scalar::Str(s) => s,
                Scalar::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
                Scalar::U64(n) => Cow::Owned(n.to_string()),
                Scalar::I64(n) => Cow::Owned(n.to_string()),
                Scalar::F64(f) => Cow::Owned(f.to_string()),
                Scalar::Null | Scalar::Container => {
                    return Err(ctx.fail(HitError::InvalidPropValue {
                        key: key.into_owned(),
                    }));
                }
            };
            if value.len() > limits.max_prop_value_bytes {
                return Err(ctx.fail(HitError::PropValueTooLong {
                    key: key.into_owned(),
                    max: limits.max_prop_value_bytes,
                }));
            }
            props.push((key.into_owned(), value.into_owned()));
        }
        Ok(props)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if !self.allow_encoded {
            return Err(self.wrong_type());
        }
        let ctx = self.ctx;
        decode_embedded(ctx, "props", v, |de| {
            de.deserialize_any(PropsSeed {
                ctx,
                allow_encoded: false,
                depth: 1,
            })
        })
        .map(Option::unwrap_or_default)
        .map_err(|e| ctx.fail(e))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong_type())
    }
}

/// Parses a JSON document embedded in a string value (`"p": "{\"a\":1}"`): empty or
/// `null` is `None`; it gets the same depth and NaN checks as a body (the depth
/// limit while parsing, the scan when it is refused).
fn decode_embedded<T>(
    ctx: &Ctx<'_>,
    field: &'static str,
    text: &str,
    parse: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
    ) -> Result<T, serde_json::Error>,
) -> Result<Option<T>, HitError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = parse(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let err = ctx
                .error
                .take()
                .unwrap_or_else(|| HitError::EmbeddedNotJson {
                    field,
                    detail: e.to_string(),
                });
            Err(scan(text.as_bytes(), ctx.limits.max_json_depth)
                .err()
                .unwrap_or(err))
        }
    }
}

/// `revenue`: `{"currency": "EUR", "amount": 12.34 | "12.34"}`, `null`, or a JSON
/// string holding such an object.
struct RevenueSeed<'c, 'l> {
    ctx: &'c Ctx<'l>,
    allow_encoded: bool,
    /// Nesting level of the revenue object (1 in an embedded document).
    depth: usize,
}

impl RevenueSeed<'_, '_> {
    fn wrong_type<E: de::Error>(&self) -> E {
        self.ctx.fail(HitError::InvalidRevenue(
            "expected an object with `currency` and `amount`",
        ))
    }
}

impl<'de> DeserializeSeed<'de> for RevenueSeed<'_, '_> {
    type Value = Option<Revenue>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RevenueSeed<'_, '_> {
    type Value = Option<Revenue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a revenue object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        ctx.enter(self.depth)?;
        let mut currency = None;
        let mut amount = None;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match &*key {
                "currency" => {
                    if currency.is_some() {
                        return Err(ctx.fail(HitError::DuplicateKey("revenue.currency")));
                    }
                    currency = Some(parse_currency(map.next_value()?).map_err(|e| ctx.fail(e))?);
                }
                "amount" => {
                    if amount.is_some() {
                        return Err(ctx.fail(HitError::DuplicateKey("revenue.amount")));
                    }
                    amount = Some(parse_amount(map.next_value()?).map_err(|e| ctx.fail(e))?);
                }
                _ => {
                    map.next_value_seed(Skip {
                        ctx,
                        depth: self.depth + 1,
                    })?;
                }
            }
        }
        match (currency, amount) {
            (Some(currency), Some(amount_micros)) => Ok(Some(Revenue {
                amount_micros,
                currency,
            })),
            _ => Err(ctx.fail(HitError::InvalidRevenue(
                "both `currency` and `amount` are required",
            ))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if !self.allow_encoded {
            return Err(self.wrong_type());
        }
        let ctx = self.ctx;
        decode_embedded(ctx, "revenue", v, |de| {
            de.deserialize_any(RevenueSeed {
                ctx,
                allow_encoded: false,
                depth: 1,
            })
        })
        .map(Option::flatten)
        .map_err(|e| ctx.fail(e))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.wrong_type())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong_type())
    }
}

/// The value of a key hush does not know (top level or inside `revenue`): accepted
/// whatever it is, so it is the one place where arbitrary nesting would otherwise
/// pass; containers are counted down to the depth limit.
struct Skip<'c, 'l> {
    ctx: &'c Ctx<'l>,
    /// Nesting level this value has if it is a container.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Skip<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.ctx.enter(self.depth)?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Skip {
                ctx: self.ctx,
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.ctx.enter(self.depth)?;
        while seq
            .next_element_seed(Skip {
                ctx: self.ctx,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }
}

fn parse_currency(value: Scalar<'_>) -> Result<[u8; 3], HitError> {
    const BAD: HitError = HitError::InvalidRevenue("`currency` must be a 3-letter ISO 4217 code");
    let Scalar::Str(s) = value else {
        return Err(BAD);
    };
    match *s.as_bytes() {
        [a, b, c] if [a, b, c].iter().all(u8::is_ascii_alphabetic) => Ok([
            a.to_ascii_uppercase(),
            b.to_ascii_uppercase(),
            c.to_ascii_uppercase(),
        ]),
        _ => Err(BAD),
    }
}

const MICROS: i64 = 1_000_000;
const OUT_OF_RANGE: HitError = HitError::InvalidRevenue("`amount` is out of range");

fn parse_amount(value: Scalar<'_>) -> Result<i64, HitError> {
    match value {
        Scalar::Str(s) => parse_decimal_micros(&s),
        Scalar::U64(n) => i64::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(MICROS))
            .ok_or(OUT_OF_RANGE),
        Scalar::I64(n) => n.checked_mul(MICROS).ok_or(OUT_OF_RANGE),
        Scalar::F64(f) => {
            let micros = (f * MICROS as f64).round();
            // 9.2e18 is i64's range; stay clearly inside it so the cast is exact.
            if micros.is_finite() && micros.abs() < 9.0e18 {
                Ok(micros as i64)
            } else {
                Err(OUT_OF_RANGE)
            }
        }
        _ => Err(HitError::InvalidRevenue(
            "`amount` must be a number or a decimal string",
        )),
    }
}

/// Exact decimal string to micros: `-?digits[.digits]`, rounded half away from zero
/// at the sixth decimal, so "12.34" is exactly 12_340_000 (no float detour).
fn parse_decimal_micros(s: &str) -> Result<i64, HitError> {
    const BAD: HitError = HitError::InvalidRevenue("`amount` must be a decimal number");
    let s = s.trim();
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(BAD);
    }
    let mut micros: i64 = 0;
    for b in int.bytes() {
        micros = micros
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .ok_or(OUT_OF_RANGE)?;
    }
    micros = micros.checked_mul(MICROS).ok_or(OUT_OF_RANGE)?;
    let mut scale = MICROS / 10;
    let mut round_up = false;
    for (i, b) in frac.bytes().enumerate() {
        let digit = i64::from(b - b'0');
        if i < 6 {
            micros = micros.checked_add(digit * scale).ok_or(OUT_OF_RANGE)?;
            scale /= 10;
        } else {
            round_up = digit >= 5;
            break;
        }
    }
    if round_up {
        micros = micros.checked_add(1).ok_or(OUT_OF_RANGE)?;
    }
    Ok(if negative { -micros } else { micros })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig::default()
    }

    fn parse(body: &str) -> Result<IncomingEvent, HitError> {
        parse_event(body.as_bytes(), &limits())
    }

    fn ok(body: &str) -> IncomingEvent {
        match parse(body) {
            Ok(ev) => ev,
            Err(e) => panic!("{body} refused: {e}"),
        }
    }

    fn err(body: &str) -> HitError {
        match parse(body) {
            Ok(ev) => panic!("{body} accepted: {ev:?}"),
            Err(e) => e,
        }
    }

    const BASE: &str = r#""n":"pageview","u":"https://a.com/x","d":"a.com""#;

    /// A minimal valid event with extra members appended.
    fn with(extra: &str) -> String {
        if extra.is_empty() {
            format!("{{{BASE}}}")
        } else {
            format!("{{{BASE},{extra}}}")
        }
    }

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn long_keys() {
        let ev = ok(r#"{
            "name": "Signup", "url": "https://a.com/join?x=1", "domain": "a.com",
            "referrer": "https://news.example/", "props": {"plan": "pro", "seats": 3},
            "revenue": {"currency": "eur", "amount": "12.34"},
            "interactive": false, "hash": true
        }"#);
        assert_eq!(
            ev,
            IncomingEvent {
                name: "Signup".into(),
                url: "https://a.com/join?x=1".into(),
                domains: vec!["a.com".into()],
                referrer: Some("https://news.example/".into()),
                props: props(&[("plan", "pro"), ("seats", "3")]),
                revenue: Some(Revenue {
                    amount_micros: 12_340_000,
                    currency: *b"EUR"
                }),
                interactive: false,
                hash_mode: true,
                engagement_ms: None,
                scroll_depth: None,
            }
        );
        assert_eq!(ev.revenue.unwrap().currency_str(), "EUR");
    }

    #[test]
    fn what_the_script_sends() {
        // Props and revenue as JSON strings, `r: null`, `h: 1`, unknown `v`.
        let ev = ok(
            r#"{"n":"pageview","u":"https://a.com/#/app","d":"a.com","r":null,"p":"{\"a\":\"b\",\"n\":1.5}","$":"{\"currency\":\"USD\",\"amount\":3}","h":1,"v":"2.1.0"}"#,
        );
        assert_eq!(ev.referrer, None);
        assert_eq!(ev.props, props(&[("a", "b"), ("n", "1.5")]));
        assert_eq!(
            ev.revenue,
            Some(Revenue {
                amount_micros: 3_000_000,
                currency: *b"USD"
            })
        );
        assert!(ev.hash_mode);
        assert!(ev.interactive);
        let engagement = ok(&with(r#""e":15230,"sd":87,"i":false"#));
        assert_eq!(engagement.engagement_ms, Some(15_230));
        assert_eq!(engagement.scroll_depth, Some(87));
        assert!(!engagement.interactive);
    }

    #[test]
    fn defaults() {
        let ev = ok(&with(""));
        assert_eq!(ev.name, "pageview");
        assert_eq!(ev.url, "https://a.com/x");
        assert_eq!(ev.domains, ["a.com"]);
        assert_eq!(ev.referrer, None);
        assert!(ev.props.is_empty());
        assert_eq!(ev.revenue, None);
        assert!(ev.interactive);
        assert!(!ev.hash_mode);
        assert_eq!(ev.engagement_ms, None);
        assert_eq!(ev.scroll_depth, None);
        // Explicit nulls mean the same.
        let nulls = ok(&with(
            r#""r":null,"p":null,"$":null,"i":null,"h":null,"e":null,"sd":null"#,
        ));
        assert_eq!(nulls, ev);
        // So do empty referrer and empty embedded props.
        assert_eq!(ok(&with(r#""r":"","p":"""#)), ev);
    }

    #[test]
    fn domains_are_split_trimmed_and_lowercased() {
        let ev = ok(r#"{"n":"x","u":"https://a.com","d":" A.com, b.COM ,,ÄÖ.de "}"#);
        assert_eq!(ev.domains, ["a.com", "b.com", "äö.de"]);
        assert_eq!(
            err(r#"{"n":"x","u":"https://a.com","d":" , "}"#),
            HitError::Empty("domain")
        );
        let many = (0..=MAX_DOMAINS)
            .map(|i| format!("s{i}.com"))
            .collect::<Vec<_>>();
        let body = format!(
            r#"{{"n":"x","u":"https://a.com","d":"{}"}}"#,
            many.join(",")
        );
        assert_eq!(err(&body), HitError::TooManyDomains { max: MAX_DOMAINS });
        let body = format!(
            r#"{{"n":"x","u":"https://a.com","d":"{}.com"}}"#,
            "a".repeat(MAX_DOMAIN_BYTES)
        );
        assert!(matches!(
            err(&body),
            HitError::TooLong {
                field: "domain",
                ..
            }
        ));
        // 126 × `Ⱥ` (U+023A, 2 bytes) is 252 bytes as sent and 378 bytes lowercased
        // (`ⱥ`, U+2C65, 3 bytes): the stored name would be over the bound.
        let body = format!(
            r#"{{"n":"x","u":"https://a.com","d":"{}"}}"#,
            "Ⱥ".repeat(126)
        );
        assert_eq!(
            err(&body),
            HitError::TooLong {
                field: "domain",
                max: MAX_DOMAIN_BYTES
            }
        );
        // 84 × `Ⱥ` is 168 bytes as sent and 252 lowercased: accepted, lowercased.
        let body = format!(
            r#"{{"n":"x","u":"https://a.com","d":"{}"}}"#,
            "Ⱥ".repeat(84)
        );
        let ev = ok(&body);
        assert_eq!(ev.domains, vec!["ⱥ".repeat(84)]);
        assert_eq!(ev.domains[0].len(), 252);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let ev = ok(
            r#"{"n":"sign\u0075p \"now\"","u":"https:\/\/a.com\/x","d":"a.com","p":{"k\n":"v\t"}}"#,
        );
        assert_eq!(ev.name, "signup \"now\"");
        assert_eq!(ev.url, "https://a.com/x");
        assert_eq!(ev.props, props(&[("k\n", "v\t")]));
    }

    #[test]
    fn prop_values_are_stringified() {
        let ev = ok(&with(
            r#""p":{"s":"text","u":42,"i":-7,"f":2.5,"w":3.0,"t":true,"no":false,"empty":""}"#,
        ));
        assert_eq!(
            ev.props,
            props(&[
                ("s", "text"),
                ("u", "42"),
                ("i", "-7"),
                ("f", "2.5"),
                ("w", "3"),
                ("t", "true"),
                ("no", "false"),
                ("empty", ""),
            ])
        );
        // `meta`/`m` are aliases of props.
        assert_eq!(ok(&with(r#""meta":{"a":"1"}"#)).props, props(&[("a", "1")]));
        assert_eq!(
            ok(&with(r#""m":"{\"a\":\"1\"}""#)).props,
            props(&[("a", "1")])
        );
    }

    #[test]
    fn unknown_keys_are_ignored_even_nested() {
        let ev = ok(&with(
            r#""future":{"x":[1,{"y":null}]},"v":3,"future2":"a","future2":"b""#,
        ));
        assert_eq!(ev, ok(&with("")));
        // Whitespace around the body is fine.
        assert_eq!(ok(&format!(" \n\t{}\r\n", with(""))), ev);
    }

    #[test]
    fn revenue_amounts() {
        let cases: &[(&str, i64)] = &[
            (r#""12.34""#, 12_340_000),
            ("12.34", 12_340_000),
            (r#""0.1""#, 100_000),
            (r#""-5""#, -5_000_000),
            (r#""+5.""#, 5_000_000),
            (r#"".5""#, 500_000),
            (r#""1.0000005""#, 1_000_001),
            (r#""1.0000004999""#, 1_000_000),
            (r#"" 7 ""#, 7_000_000),
            ("1322", 1_322_000_000),
            ("-2", -2_000_000),
            ("0.000001", 1),
            ("1e3", 1_000_000_000),
        ];
        for (amount, micros) in cases {
            let ev = ok(&with(&format!(
                r#""revenue":{{"currency":"USD","amount":{amount}}}"#
            )));
            assert_eq!(
                ev.revenue.map(|r| r.amount_micros),
                Some(*micros),
                "{amount}"
            );
        }
    }

    #[test]
    fn bad_revenue() {
        for revenue in [
            r#"{"currency":"USD"}"#,
            r#"{"amount":"1"}"#,
            r#"{"currency":"EURO","amount":"1"}"#,
            r#"{"currency":"U1D","amount":"1"}"#,
            r#"{"currency":5,"amount":"1"}"#,
            r#"{"currency":"USD","amount":"abc"}"#,
            r#"{"currency":"USD","amount":"1.2.3"}"#,
            r#"{"currency":"USD","amount":"1e3"}"#,
            r#"{"currency":"USD","amount":""}"#,
            r#"{"currency":"USD","amount":"-"}"#,
            r#"{"currency":"USD","amount":"."}"#,
            r#"{"currency":"USD","amount":true}"#,
            r#"{"currency":"USD","amount":null}"#,
            r#"{"currency":"USD","amount":"99999999999999999999"}"#,
            r#"{"currency":"USD","amount":"9223372036854.775808"}"#,
            r#"{"currency":"USD","amount":1e300}"#,
            r#"{"currency":"USD","amount":18446744073709551615}"#,
            r#"{"currency":"USD","amount":-9223372036854775808}"#,
            r#"{"currency":"USD","amount":"1","currency":"EUR"}"#,
            r#"{"currency":"USD","amount":"1","amount":"2"}"#,
            "12",
            "true",
            "[1]",
            r#""[1]""#,
            r#""{\"currency\":\"USD\"}""#,
            r#""\"{}\"""#,
            r#""{\"currency\":""#,
        ] {
            let e = err(&with(&format!(r#""$":{revenue}"#)));
            assert!(
                matches!(
                    e,
                    HitError::InvalidRevenue(_)
                        | HitError::DuplicateKey(_)
                        | HitError::EmbeddedNotJson {
                            field: "revenue",
                            ..
                        }
                ),
                "{revenue}: {e:?}"
            );
        }
    }

    #[test]
    fn engagement_and_scroll_depth() {
        assert_eq!(ok(&with(r#""e":0,"sd":0"#)).scroll_depth, Some(0));
        assert_eq!(ok(&with(r#""sd":100"#)).scroll_depth, Some(100));
        assert_eq!(ok(&with(r#""sd":50.0"#)).scroll_depth, Some(50));
        assert_eq!(ok(&with(r#""e":4294967295"#)).engagement_ms, Some(u32::MAX));
        assert_eq!(ok(&with(r#""e":1500.0"#)).engagement_ms, Some(1500));
        assert_eq!(err(&with(r#""sd":101"#)), HitError::ScrollDepthOutOfRange);
        assert_eq!(err(&with(r#""sd":-1"#)), HitError::ScrollDepthOutOfRange);
        assert_eq!(err(&with(r#""sd":1e30"#)), HitError::ScrollDepthOutOfRange);
        assert!(matches!(
            err(&with(r#""sd":50.5"#)),
            HitError::WrongType { field: "sd", .. }
        ));
        assert!(matches!(
            err(&with(r#""sd":"50""#)),
            HitError::WrongType { field: "sd", .. }
        ));
        assert_eq!(err(&with(r#""e":-1"#)), HitError::NegativeEngagement);
        assert_eq!(err(&with(r#""e":-1.0"#)), HitError::NegativeEngagement);
        assert_eq!(
            err(&with(r#""e":4294967296"#)),
            HitError::EngagementOutOfRange
        );
        assert_eq!(err(&with(r#""e":1e300"#)), HitError::EngagementOutOfRange);
        assert!(matches!(
            err(&with(r#""e":1.5"#)),
            HitError::WrongType { field: "e", .. }
        ));
        assert!(matches!(
            err(&with(r#""e":[]"#)),
            HitError::WrongType { field: "e", .. }
        ));
    }

    #[test]
    fn flags() {
        assert!(ok(&with(r#""h":true"#)).hash_mode);
        assert!(!ok(&with(r#""h":0"#)).hash_mode);
        assert!(!ok(&with(r#""interactive":0"#)).interactive);
        assert!(ok(&with(r#""i":1"#)).interactive);
        for bad in [
            r#""i":"yes""#,
            r#""i":2"#,
            r#""h":-1"#,
            r#""h":{}"#,
            r#""hash":1.0"#,
        ] {
            assert!(
                matches!(err(&with(bad)), HitError::WrongType { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn encoding_and_syntax_errors() {
        assert_eq!(
            parse_event(b"{\"n\":\"\xff\"}", &limits()),
            Err(HitError::InvalidUtf8)
        );
        match err("{\"n\":\"x\",\n \"u\" \"y\"}") {
            HitError::NotJson {
                line,
                column,
                detail,
            } => {
                assert_eq!((line, column), (2, 6));
                assert!(detail.contains("line 2"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            err(&format!("{} x", with(""))),
            HitError::NotJson { .. }
        ));
        assert!(matches!(
            err(&format!("{}{}", with(""), with(""))),
            HitError::NotJson { .. }
        ));
        assert!(matches!(err(r#"{"n":"x""#), HitError::NotJson { .. }));
        assert!(matches!(err(r#"{"n":"x",}"#), HitError::NotJson { .. }));
        assert!(matches!(err(r#"{'n':'x'}"#), HitError::NotJson { .. }));
        assert!(matches!(err(r#"{"n":"\x"}"#), HitError::NotJson { .. }));
        assert!(matches!(
            err(&with(r#""e":1e400"#)),
            HitError::NotJson { .. }
        ));
        for not_object in ["", "   ", "[]", "\"event\"", "null", "42", "true"] {
            assert_eq!(
                err(not_object),
                HitError::WrongType {
                    field: "event",
                    expected: "a JSON object"
                },
                "{not_object:?}"
            );
        }
    }

    #[test]
    fn nan_and_infinity_are_named() {
        for bad in [r#""e":NaN"#, r#""sd":Infinity"#, r#""p":{"a":-Infinity}"#] {
            assert_eq!(err(&with(bad)), HitError::NonFiniteNumber, "{bad}");
        }
        assert_eq!(
            err(&with(r#""p":"{\"a\":NaN}""#)),
            HitError::NonFiniteNumber
        );
        // Inside strings they are just text.
        let ev = ok(&with(r#""p":{"NaN":"Infinity"}"#));
        assert_eq!(ev.props, props(&[("NaN", "Infinity")]));
        assert!(err(&with("\"x\":Nope")).to_string().contains("JSON"));
    }

    /// The errors as if the whole body were scanned before parsing (how `hit` worked
    /// before the depth limit moved into the parser): the oracle for the tests below.
    fn scan_first(body: &[u8], l: &LimitsConfig) -> Result<IncomingEvent, HitError> {
        let text = std::str::from_utf8(body).map_err(|_| HitError::InvalidUtf8)?;
        scan(body, l.max_json_depth)?;
        parse_event_str(text, l)
    }

    fn scan_first_batch(body: &[u8], l: &LimitsConfig) -> Result<Vec<IncomingEvent>, BatchError> {
        let text =
            std::str::from_utf8(body).map_err(|_| BatchError::Body(HitError::InvalidUtf8))?;
        scan(body, l.max_json_depth + 1).map_err(BatchError::Body)?;
        parse_batch_str(text, l)
    }

    #[test]
    fn depth_is_limited_wherever_nesting_is_accepted() {
        let l = LimitsConfig {
            max_json_depth: 3,
            ..LimitsConfig::default()
        };
        let too_deep = Err(HitError::TooDeep { max: 3 });
        // (at the limit, one level more) for every place a container may appear.
        let cases = [
            // Unknown keys, top level: the value is level 2.
            (r#""x":[[1]]"#, r#""x":[[[1]]]"#),
            (r#""x":{"a":{"b":1}}"#, r#""x":{"a":{"b":{}}}"#),
            // Unknown keys inside revenue (level 2): their values are level 3.
            (
                r#""$":{"currency":"EUR","amount":1,"x":[1]}"#,
                r#""$":{"currency":"EUR","amount":1,"x":[[1]]}"#,
            ),
            // Embedded documents start again at level 1.
            (
                r#""$":"{\"currency\":\"EUR\",\"amount\":1,\"x\":[[1]]}""#,
                r#""$":"{\"currency\":\"EUR\",\"amount\":1,\"x\":[[[1]]]}""#,
            ),
        ];
        for (at_limit, over) in cases {
            let ok_body = with(at_limit);
            assert!(parse_event(ok_body.as_bytes(), &l).is_ok(), "{ok_body}");
            let bad_body = with(over);
            assert_eq!(parse_event(bad_body.as_bytes(), &l), too_deep, "{bad_body}");
        }
        // `props` and `revenue` themselves count: with a limit of 1 only the event
        // object fits.
        let flat = LimitsConfig {
            max_json_depth: 1,
            ..LimitsConfig::default()
        };
        assert!(parse_event(with(r#""p":null"#).as_bytes(), &flat).is_ok());
        for over in [r#""p":{}"#, r#""$":{"currency":"EUR","amount":1}"#] {
            assert_eq!(
                parse_event(with(over).as_bytes(), &flat),
                Err(HitError::TooDeep { max: 1 }),
                "{over}"
            );
        }
        let none = LimitsConfig {
            max_json_depth: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            parse_event(with("").as_bytes(), &none),
            Err(HitError::TooDeep { max: 0 })
        );
    }

    #[test]
    fn depth_errors_take_precedence_like_a_pre_scan() {
        // The parser would stop at the empty name (or the non-object body) first; the
        // depth of the rest of the body is still what is reported.
        let deep = "[".repeat(20);
        let body = format!(r#"{{"n":"","u":"https://a.com","d":"a.com","x":{deep}1}}"#);
        assert_eq!(err(&body), HitError::TooDeep { max: 8 });
        let body = r#"{"n":"","u":"https://a.com","d":"a.com","e":NaN}"#;
        assert_eq!(err(body), HitError::NonFiniteNumber);
        // Batches: a deep or NaN item refuses the whole body, not just the item.
        let l = limits();
        let body = format!(r#"[{}, {{"x":{deep}}}]"#, with(""));
        assert_eq!(
            parse_batch(body.as_bytes(), &l),
            Err(BatchError::Body(HitError::TooDeep { max: 9 }))
        );
    }

    #[test]
    fn nesting_far_beyond_any_limit_is_refused_without_overflow() {
        let n = 100_000;
        let arrays = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        for deep in [&arrays, &objects] {
            // Everywhere a value can be: top level, known and unknown keys, props
            // values, revenue members, embedded documents, batch items.
            let embedded = serde_json::Value::from(deep.as_str()).to_string();
            let bodies = [
                deep.clone(),
                with(&format!(r#""x":{deep}"#)),
                with(&format!(r#""n2":1,"u":{deep}"#)),
                with(&format!(r#""p":{{"k":{deep}}}"#)),
                with(&format!(r#""p":{deep}"#)),
                with(&format!(r#""$":{{"currency":"EUR","amount":{deep}}}"#)),
                with(&format!(
                    r#""$":{{"currency":"EUR","amount":1,"x":{deep}}}"#
                )),
                with(&format!(r#""p":{embedded}"#)),
                with(&format!(r#""e":{deep}"#)),
            ];
            for body in &bodies {
                assert_eq!(err(body), HitError::TooDeep { max: 8 }, "{}", &body[..60]);
            }
            let batch = format!("[{},{deep}]", with(""));
            assert_eq!(
                parse_batch(batch.as_bytes(), &limits()),
                Err(BatchError::Body(HitError::TooDeep { max: 9 }))
            );
        }
    }

    #[test]
    fn depth_is_limited_before_parsing() {
        let limits = LimitsConfig {
            max_json_depth: 3,
            ..LimitsConfig::default()
        };
        let at_limit = with(r#""x":{"y":[1]}"#);
        assert!(parse_event(at_limit.as_bytes(), &limits).is_ok());
        let over = with(r#""x":{"y":[[1]]}"#);
        assert_eq!(
            parse_event(over.as_bytes(), &limits),
            Err(HitError::TooDeep { max: 3 })
        );
        // Brackets inside strings (and after escaped quotes) do not count.
        let quoted = with(r#""x":"[[[[{{{{\"[[[[""#);
        assert!(parse_event(quoted.as_bytes(), &limits).is_ok());
        // Far deeper than serde's own recursion limit: refused, no stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(err(&deep), HitError::TooDeep { max: 8 });
        // The embedded props document gets the same check.
        let nested = format!(r#""p":"{}""#, "[".repeat(20));
        assert_eq!(err(&with(&nested)), HitError::TooDeep { max: 8 });
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let cases = [
            (
                r#"{"n":"a","name":"b","u":"https://a.com","d":"a.com"}"#,
                "name/n",
            ),
            (
                r#"{"n":"a","n":"a","u":"https://a.com","d":"a.com"}"#,
                "name/n",
            ),
            (
                r#"{"n":"a","u":"https://a.com","url":"x","d":"a.com"}"#,
                "url/u",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","domain":"b.com"}"#,
                "domain/d",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","r":null,"referrer":"x"}"#,
                "referrer/r",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","p":{},"props":{}}"#,
                "props/p/meta/m",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","m":{},"p":{}}"#,
                "props/p/meta/m",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","$":null,"revenue":null}"#,
                "revenue/$",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","i":true,"interactive":true}"#,
                "interactive/i",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","h":1,"hash":1}"#,
                "hash/h",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","e":1,"e":2}"#,
                "e",
            ),
            (
                r#"{"n":"a","u":"https://a.com","d":"a.com","sd":1,"sd":2}"#,
                "sd",
            ),
            (
                r#"{"\u006e":"a","n":"a","u":"https://a.com","d":"a.com"}"#,
                "name/n",
            ),
        ];
        for (body, label) in cases {
            assert_eq!(err(body), HitError::DuplicateKey(label), "{body}");
        }
        assert_eq!(
            err(&with(r#""p":{"a":"1","b":"2","a":"3"}"#)),
            HitError::DuplicateProp { key: "a".into() }
        );
        assert_eq!(
            err(&with(r#""p":"{\"a\":1,\"a\":1}""#)),
            HitError::DuplicateProp { key: "a".into() }
        );
        assert!(
            err(r#"{"n":"a","name":"b"}"#)
                .to_string()
                .contains("duplicate key `name/n`")
        );
    }

    #[test]
    fn wrong_types() {
        let cases = [
            (r#"{"n":5,"u":"https://a.com","d":"a.com"}"#, "name"),
            (r#"{"n":null,"u":"https://a.com","d":"a.com"}"#, "name"),
            (r#"{"n":"x","u":["https://a.com"],"d":"a.com"}"#, "url"),
            (r#"{"n":"x","u":"https://a.com","d":["a.com"]}"#, "domain"),
            (
                r#"{"n":"x","u":"https://a.com","d":"a.com","r":1}"#,
                "referrer",
            ),
            (
                r#"{"n":"x","u":"https://a.com","d":"a.com","p":[1]}"#,
                "props",
            ),
            (
                r#"{"n":"x","u":"https://a.com","d":"a.com","p":1}"#,
                "props",
            ),
            (
                r#"{"n":"x","u":"https://a.com","d":"a.com","p":true}"#,
                "props",
            ),
            (
                r#"{"n":"x","u":"https://a.com","d":"a.com","p":"[1]"}"#,
                "props",
            ),
            (
                r#"{"n":"x","u":"https://a.com","d":"a.com","p":"\"{}\""}"#,
                "props",
            ),
        ];
        for (body, field) in cases {
            match err(body) {
                HitError::WrongType { field: f, .. } => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(
            err(r#"{"n":5,"u":"x","d":"a"}"#).to_string(),
            "`name` must be a string"
        );
        assert!(matches!(
            err(&with(r#""p":"{\"a\""}"#)),
            HitError::EmbeddedNotJson { field: "props", .. }
        ));
        assert!(matches!(
            err(&with(r#""p":"{} x""#)),
            HitError::EmbeddedNotJson { field: "props", .. }
        ));
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            err(r#"{"u":"https://a.com","d":"a.com"}"#),
            HitError::MissingField("name")
        );
        assert_eq!(
            err(r#"{"n":"x","d":"a.com"}"#),
            HitError::MissingField("url")
        );
        assert_eq!(
            err(r#"{"n":"x","u":"https://a.com"}"#),
            HitError::MissingField("domain")
        );
        assert_eq!(err("{}"), HitError::MissingField("name"));
        assert_eq!(
            err(r#"{"n":"","u":"https://a.com","d":"a.com"}"#),
            HitError::Empty("name")
        );
        assert_eq!(
            err(r#"{"n":"x","u":"","d":"a.com"}"#),
            HitError::Empty("url")
        );
        assert_eq!(
            err(r#"{"n":"x","u":"https://a.com","d":""}"#),
            HitError::Empty("domain")
        );
    }

    #[test]
    fn length_limits_count_characters() {
        let l = limits();
        let name = "é".repeat(l.max_event_name_chars);
        let ev = ok(&format!(
            r#"{{"n":"{name}","u":"https://a.com","d":"a.com"}}"#
        ));
        assert_eq!(ev.name.chars().count(), l.max_event_name_chars);
        let name = "é".repeat(l.max_event_name_chars + 1);
        assert_eq!(
            err(&format!(
                r#"{{"n":"{name}","u":"https://a.com","d":"a.com"}}"#
            )),
            HitError::TooLong {
                field: "name",
                max: l.max_event_name_chars
            }
        );
        let url = format!("https://a.com/{}", "p".repeat(l.max_url_chars - 14));
        assert_eq!(
            ok(&format!(r#"{{"n":"x","u":"{url}","d":"a.com"}}"#)).url,
            url
        );
        assert_eq!(
            err(&format!(r#"{{"n":"x","u":"{url}p","d":"a.com"}}"#)),
            HitError::TooLong {
                field: "url",
                max: l.max_url_chars
            }
        );
        let referrer = "r".repeat(l.max_referrer_chars + 1);
        assert_eq!(
            err(&with(&format!(r#""r":"{referrer}""#))),
            HitError::TooLong {
                field: "referrer",
                max: l.max_referrer_chars
            }
        );
    }

    #[test]
    fn prop_limits() {
        let l = limits();
        let many: Vec<String> = (0..l.max_props).map(|i| format!(r#""k{i}":"v""#)).collect();
        let ev = ok(&with(&format!(r#""p":{{{}}}"#, many.join(","))));
        assert_eq!(ev.props.len(), l.max_props);
        let too_many: Vec<String> = (0..=l.max_props)
            .map(|i| format!(r#""k{i}":"v""#))
            .collect();
        assert_eq!(
            err(&with(&format!(r#""p":{{{}}}"#, too_many.join(",")))),
            HitError::TooManyProps { max: l.max_props }
        );
        let key = "k".repeat(l.max_prop_key_bytes);
        assert_eq!(ok(&with(&format!(r#""p":{{"{key}":"v"}}"#))).props.len(), 1);
        assert_eq!(
            err(&with(&format!(r#""p":{{"{key}k":"v"}}"#))),
            HitError::PropKeyTooLong {
                max: l.max_prop_key_bytes
            }
        );
        // Bytes, not characters, for props (they are stored as bytes).
        let value = "é".repeat(l.max_prop_value_bytes / 2);
        assert_eq!(
            ok(&with(&format!(r#""p":{{"k":"{value}"}}"#))).props[0].1,
            value
        );
        assert_eq!(
            err(&with(&format!(r#""p":{{"k":"{value}x"}}"#))),
            HitError::PropValueTooLong {
                key: "k".into(),
                max: l.max_prop_value_bytes
            }
        );
        let tight = LimitsConfig {
            max_prop_value_bytes: 3,
            ..LimitsConfig::default()
        };
        let body = with(r#""p":{"n":12345}"#);
        assert_eq!(
            parse_event(body.as_bytes(), &tight),
            Err(HitError::PropValueTooLong {
                key: "n".into(),
                max: 3
            })
        );
        assert_eq!(err(&with(r#""p":{"":"v"}"#)), HitError::EmptyPropKey);
        for bad in [
            r#"{"k":null}"#,
            r#"{"k":{"a":1}}"#,
            r#"{"k":[1]}"#,
            r#"{"k":[]}"#,
        ] {
            assert_eq!(
                err(&with(&format!(r#""p":{bad}"#))),
                HitError::InvalidPropValue { key: "k".into() },
                "{bad}"
            );
        }
    }

    #[test]
    fn batches() {
        let l = limits();
        let body = format!("[{}, {}]", with(""), with(r#""e":5"#));
        let events = parse_batch(body.as_bytes(), &l).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], ok(&with("")));
        assert_eq!(events[1].engagement_ms, Some(5));

        assert_eq!(parse_batch(b"[]", &l), Err(BatchError::Empty));
        assert_eq!(parse_batch(b" [ ] ", &l), Err(BatchError::Empty));
        assert_eq!(
            parse_batch(with("").as_bytes(), &l),
            Err(BatchError::Body(HitError::WrongType {
                field: "body",
                expected: "a JSON array of events"
            }))
        );
        assert_eq!(
            parse_batch(b"[\xff]", &l),
            Err(BatchError::Body(HitError::InvalidUtf8))
        );
        assert!(matches!(
            parse_batch(b"[{}", &l),
            Err(BatchError::Body(HitError::NotJson { .. }))
        ));
        assert!(matches!(
            parse_batch(format!("[{}] x", with("")).as_bytes(), &l),
            Err(BatchError::Body(HitError::NotJson { .. }))
        ));
        assert_eq!(
            parse_batch(format!("[{}]", with(r#""e":NaN"#)).as_bytes(), &l),
            Err(BatchError::Body(HitError::NonFiniteNumber))
        );
    }

    #[test]
    fn batch_size_is_limited() {
        let l = LimitsConfig {
            max_batch_events: 3,
            ..LimitsConfig::default()
        };
        let items = |n: usize| format!("[{}]", vec![with(""); n].join(","));
        assert_eq!(parse_batch(items(3).as_bytes(), &l).map(|v| v.len()), Ok(3));
        assert_eq!(
            parse_batch(items(4).as_bytes(), &l),
            Err(BatchError::TooManyEvents { max: 3 })
        );
        // Counting stops early, even when later items are junk.
        let body = format!("[{},1,2,3,{{", items(3).trim_matches(['[', ']']));
        assert_eq!(
            parse_batch(body.as_bytes(), &l),
            Err(BatchError::TooManyEvents { max: 3 })
        );
    }

    #[test]
    fn batch_errors_list_every_bad_item() {
        let body = format!(
            "[{}, {}, 7, {}, {}]",
            with(""),
            r#"{"n":"x","d":"a.com"}"#,
            with(r#""sd":500"#),
            with(r#""n":"dup""#),
        );
        let Err(BatchError::Items(items)) = parse_batch(body.as_bytes(), &limits()) else {
            panic!("batch accepted");
        };
        assert_eq!(
            items,
            vec![
                (1, HitError::MissingField("url")),
                (
                    2,
                    HitError::WrongType {
                        field: "event",
                        expected: "a JSON object"
                    }
                ),
                (3, HitError::ScrollDepthOutOfRange),
                (4, HitError::DuplicateKey("name/n")),
            ]
        );
        let message = BatchError::Items(items).to_string();
        assert!(
            message.starts_with("event 1: missing required field `url`; event 2:"),
            "{message}"
        );
        let many: Vec<(usize, HitError)> = (0..25).map(|i| (i, HitError::EmptyPropKey)).collect();
        let message = BatchError::Items(many).to_string();
        assert!(
            message.ends_with("; and 15 more invalid events"),
            "{message}"
        );
    }

    #[test]
    fn batch_allows_one_more_level_for_the_array() {
        let l = LimitsConfig {
            max_json_depth: 2,
            ..LimitsConfig::default()
        };
        let event = with(r#""p":{"a":"1"}"#);
        assert!(parse_event(event.as_bytes(), &l).is_ok());
        assert!(parse_batch(format!("[{event}]").as_bytes(), &l).is_ok());
        let deeper = with(r#""x":{"y":[1]}"#);
        assert_eq!(
            parse_batch(format!("[{deeper}]").as_bytes(), &l),
            Err(BatchError::Body(HitError::TooDeep { max: 3 }))
        );
    }

    /// Serializes an accepted event back to a body with the long keys; parsing that
    /// body must give the same event (nothing is lost or invented by the parser).
    fn to_body(ev: &IncomingEvent) -> String {
        // Built by hand: serde_json's map would sort keys and reorder props.
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let mut out = format!(
            "{{\"name\":{},\"url\":{},\"domain\":{}",
            q(&ev.name),
            q(&ev.url),
            q(&ev.domains.join(","))
        );
        if let Some(r) = &ev.referrer {
            let _ = write!(out, ",\"referrer\":{}", q(r));
        }
        let props: Vec<String> = ev
            .props
            .iter()
            .map(|(k, v)| format!("{}:{}", q(k), q(v)))
            .collect();
        let _ = write!(out, ",\"props\":{{{}}}", props.join(","));
        if let Some(r) = ev.revenue {
            let sign = if r.amount_micros < 0 { "-" } else { "" };
            let abs = r.amount_micros.unsigned_abs();
            let _ = write!(
                out,
                ",\"revenue\":{{\"currency\":{},\"amount\":\"{sign}{}.{:06}\"}}",
                q(r.currency_str()),
                abs / 1_000_000,
                abs % 1_000_000
            );
        }
        let _ = write!(
            out,
            ",\"interactive\":{},\"hash\":{}",
            ev.interactive, ev.hash_mode
        );
        if let Some(e) = ev.engagement_ms {
            let _ = write!(out, ",\"e\":{e}");
        }
        if let Some(sd) = ev.scroll_depth {
            let _ = write!(out, ",\"sd\":{sd}");
        }
        out.push('}');
        out
    }

    fn check_invariants(ev: &IncomingEvent, l: &LimitsConfig) {
        assert!(!ev.name.is_empty() && ev.name.chars().count() <= l.max_event_name_chars);
        assert!(!ev.url.is_empty() && ev.url.chars().count() <= l.max_url_chars);
        assert!(!ev.domains.is_empty() && ev.domains.len() <= MAX_DOMAINS);
        for d in &ev.domains {
            assert!(!d.is_empty() && d.trim() == d && d.len() <= MAX_DOMAIN_BYTES);
            assert!(!d.contains(','));
        }
        if let Some(r) = &ev.referrer {
            assert!(!r.is_empty() && r.chars().count() <= l.max_referrer_chars);
        }
        assert!(ev.props.len() <= l.max_props);
        for (i, (k, v)) in ev.props.iter().enumerate() {
            assert!(!k.is_empty() && k.len() <= l.max_prop_key_bytes);
            assert!(v.len() <= l.max_prop_value_bytes);
            assert!(ev.props[..i].iter().all(|(other, _)| other != k));
        }
        if let Some(r) = ev.revenue {
            assert!(r.currency.iter().all(u8::is_ascii_uppercase));
        }
        assert!(ev.scroll_depth.is_none_or(|sd| sd <= 100));
    }

    /// Mutates valid bodies at random (seeded, so failures reproduce) and checks that
    /// parsing never panics, accepted events honour every limit, and accepted events
    /// survive a round trip.
    #[test]
    fn random_mutations_never_panic_and_keep_invariants() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let l = LimitsConfig {
            max_props: 4,
            max_prop_key_bytes: 8,
            max_prop_value_bytes: 12,
            max_event_name_chars: 10,
            max_url_chars: 40,
            max_referrer_chars: 30,
            max_json_depth: 4,
            max_batch_events: 3,
            ..LimitsConfig::default()
        };
        let seeds = [
            with(""),
            with(r#""r":"https://ref.example/x","p":{"a":"b","n":1,"t":true},"$":{"currency":"usd","amount":"1.5"}"#),
            with(r#""p":"{\"a\":\"b\",\"c\":2.5}","h":1,"i":false,"e":100,"sd":50"#),
            r#"{"name":"Signup","url":"https://a.com/é?x=1","domain":"A.com,b.com","revenue":{"amount":-3,"currency":"EUR"}}"#.to_string(),
            format!("[{},{}]", with(""), with(r#""e":1"#)),
        ];
        let tokens: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b"\\",
            b",",
            b":",
            b"null",
            b"NaN",
            b"-",
            b"1e999",
            b"0",
            b"9999999999999999999999",
            b"\\u00e9",
            b"\\ud800",
            b"\xff",
            b"\xc3",
            b"\"n\":\"x\"",
            b"\"p\":{}",
            b"\"d\":\"z\"",
            b" ",
            b"\"sd\":100",
            b"\"e\":-1",
            b".5",
        ];
        let mut rng = StdRng::seed_from_u64(0x6875_7368);
        let mut accepted = 0;
        for round in 0..20_000 {
            let seed = seeds[round % seeds.len()].as_bytes();
            let mut body = seed.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=body.len());
                match rng.random_range(0..5) {
                    0 if at < body.len() => body[at] = rng.random(),
                    1 => {
                        let t = tokens[rng.random_range(0..tokens.len())];
                        body.splice(at..at, t.iter().copied());
                    }
                    2 if at < body.len() => {
                        let end = rng.random_range(at..=body.len().min(at + 8));
                        body.drain(at..end);
                    }
                    3 => body.truncate(at),
                    _ => {
                        let start = rng.random_range(0..=at);
                        let piece = body[start..at].to_vec();
                        body.splice(at..at, piece);
                    }
                }
            }
            if let Ok(ev) = parse_event(&body, &l) {
                accepted += 1;
                check_invariants(&ev, &l);
                let again = to_body(&ev);
                assert_eq!(
                    parse_event(again.as_bytes(), &l).as_ref(),
                    Ok(&ev),
                    "{again}"
                );
            }
            if let Ok(events) = parse_batch(&body, &l) {
                assert!(!events.is_empty() && events.len() <= l.max_batch_events);
                for ev in &events {
                    check_invariants(ev, &l);
                }
            }
            // Deterministic: the same body gives the same answer.
            assert_eq!(parse_event(&body, &l), parse_event(&body, &l));
            // Depth and NaN checked while parsing give exactly the answers of a scan
            // before parsing.
            assert_eq!(parse_event(&body, &l), scan_first(&body, &l), "{body:?}");
            assert_eq!(
                parse_batch(&body, &l),
                scan_first_batch(&body, &l),
                "{body:?}"
            );
        }
        // The mutations must leave some bodies valid, or this test checks little.
        assert!(
            accepted > 500,
            "only {accepted} mutated bodies were accepted"
        );
    }
}
