//! Static files served from memory: a body per content coding (identity, and gzip
//! and brotli when the caller has them precompressed), a strong ETag per
//! representation, conditional GET and `Accept-Encoding` negotiation.
//!
//! - **Negotiation** follows RFC 9110 §12.5.3: the coding with the highest `q`
//!   among those the asset has wins, ties going to brotli, then gzip, then
//!   identity; `q=0` refuses a coding, `*` stands for codings not named. Identity
//!   is the answer when nothing else is acceptable (even if refused: a 406 for a
//!   script would only break the page).
//! - **ETags** are strong and differ per coding (`"<hash>"`, `"<hash>-br"`,
//!   `"<hash>-gz"`): the representations are different bytes. The hash is a
//!   SHA-256 of the identity bytes, so the tag changes exactly when the content
//!   does (a release that changes the file), not when the binary is rebuilt.
//! - **`If-None-Match`** (weak comparison, as RFC 9110 §13.1.2 says for it, `*`
//!   included) against the chosen representation's tag answers 304 with the same
//!   caching and CORS headers as the 200 and no body.
//! - Every answer carries `Vary: Accept-Encoding`.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};

use super::response::Body;

/// A content coding an asset may be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
    Identity,
}

impl Coding {
    /// The `Content-Encoding` token, `None` for identity.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Brotli => Some("br"),
            Coding::Gzip => Some("gzip"),
            Coding::Identity => None,
        }
    }

    fn etag_suffix(self) -> &'static str {
        match self {
            Coding::Brotli => "-br",
            Coding::Gzip => "-gz",
            Coding::Identity => "",
        }
    }

    /// Preference on equal `q`: smaller first.
    fn rank(self) -> u8 {
        match self {
            Coding::Brotli => 0,
            Coding::Gzip => 1,
            Coding::Identity => 2,
        }
    }
}

/// One file, in memory, with its precompressed variants.
#[derive(Debug, Clone)]
pub struct StaticAsset {
    content_type: HeaderValue,
    cache_control: HeaderValue,
    /// (coding, bytes, ETag), identity first.
    variants: Vec<(Coding, Bytes, HeaderValue)>,
    /// Sent with every answer (200 and 304), e.g. CORS headers.
    headers: Vec<(HeaderName, HeaderValue)>,
    hash: String,
}

impl StaticAsset {
    /// An asset of `identity` bytes. `content_type` and `cache_control` are header
    /// values (static strings, so known valid).
    pub fn new(
        identity: &'static [u8],
        content_type: &'static str,
        cache_control: &'static str,
    ) -> Self {
        let digest = Sha256::digest(identity);
        // 128 bits of the hash: plenty to tell releases apart, shorter headers.
        let hash: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut asset = Self {
            content_type: HeaderValue::from_static(content_type),
            cache_control: HeaderValue::from_static(cache_control),
            variants: Vec::with_capacity(3),
            headers: Vec::new(),
            hash,
        };
        asset.push(Coding::Identity, identity);
        asset
    }

    /// Adds the body for `coding` (already compressed by the caller).
    pub fn with_variant(mut self, coding: Coding, bytes: &'static [u8]) -> Self {
        self.variants.retain(|(c, _, _)| *c != coding);
        self.push(coding, bytes);
        self
    }

    /// Adds a header sent with every answer.
    pub fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    fn push(&mut self, coding: Coding, bytes: &'static [u8]) {
        let tag = format!("\"{}{}\"", self.hash, coding.etag_suffix());
        // Hex digits, a suffix and quotes: always a valid header value.
        let tag = HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        self.variants.push((coding, Bytes::from_static(bytes), tag));
    }

    /// The strong ETag of the representation in `coding`, if the asset has it.
    pub fn etag(&self, coding: Coding) -> Option<&HeaderValue> {
        self.variants
            .iter()
            .find(|(c, _, _)| *c == coding)
            .map(|(_, _, tag)| tag)
    }

    /// The answer to a GET or HEAD with these request headers (hyper leaves the
    /// body out of a HEAD answer itself).
    pub fn respond(&self, headers: &HeaderMap) -> Response<Body> {
        let available: Vec<Coding> = self.variants.iter().map(|(c, _, _)| *c).collect();
        let coding = negotiate(headers.get(header::ACCEPT_ENCODING), &available);
        let Some((_, bytes, tag)) = self
            .variants
            .iter()
            .find(|(c, _, _)| *c == coding)
            .or_else(|| self.variants.first())
        else {
            return Response::new(Full::new(Bytes::new()));
        };
        let not_modified = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .any(|v| none_match_hits(v, tag));
        let mut resp = if not_modified {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            Response::new(Full::new(bytes.clone()))
        };
        let h = resp.headers_mut();
        if !not_modified {
            h.insert(header::CONTENT_TYPE, self.content_type.clone());
            if let Some(token) = coding.token() {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
            }
        }
        h.insert(header::ETAG, tag.clone());
        h.insert(header::CACHE_CONTROL, self.cache_control.clone());
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        for (name, value) in &self.headers {
            h.insert(name.clone(), value.clone());
        }
        resp
    }
}

/// Whether one `If-None-Match` header value lists `tag` (weak comparison) or `*`.
fn none_match_hits(value: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let tag = tag.as_bytes();
    let opaque = |t: &[u8]| -> Vec<u8> { t.strip_prefix(b"W/").unwrap_or(t).to_vec() };
    let tag = opaque(tag);
    value
        .split(',')
        .map(str::trim)
        .any(|listed| listed == "*" || (!listed.is_empty() && opaque(listed.as_bytes()) == tag))
}

/// The coding to answer in, among `available`, for this `Accept-Encoding`.
pub fn negotiate(accept: Option<&HeaderValue>, available: &[Coding]) -> Coding {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        // No header: any coding is acceptable (RFC 9110), but a client that says
        // nothing may not decode anything; identity is the safe answer.
        return Coding::Identity;
    };
    let named_q = |name: &str| -> Option<u16> {
        let mut found = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if !token.eq_ignore_ascii_case(name) {
                continue;
            }
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| parse_q(v.trim()))
                })
                .next()
                .unwrap_or(Some(1000));
            found = q.or(Some(0));
        }
        found
    };
    let star = named_q("*");
    let mut best: Option<(u16, Coding)> = None;
    for &coding in available {
        let q = match coding {
            Coding::Brotli => named_q("br").or(star),
            Coding::Gzip => named_q("gzip").or_else(|| named_q("x-gzip")).or(star),
            // Identity is acceptable unless refused by name or by `*;q=0`.
            Coding::Identity => named_q("identity").or(star).or(Some(1)),
        }
        .unwrap_or(0);
        if q == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((bq, bc)) => q > bq || (q == bq && coding.rank() < bc.rank()),
        };
        if better {
            best = Some((q, coding));
        }
    }
    best.map_or(Coding::Identity, |(_, c)| c)
}

/// A `q` value as thousandths (`0.5` → 500); `None` when malformed.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut scale = 100;
    for b in frac.bytes() {
        thousandths += u16::from(b - b'0') * scale;
        scale /= 10;
    }
    (thousandths <= 1000).then_some(thousandths)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Coding] = &[Coding::Identity, Coding::Gzip, Coding::Brotli];

    fn pick(accept: &str, available: &[Coding]) -> Coding {
        negotiate(Some(&HeaderValue::from_str(accept).unwrap()), available)
    }

    #[test]
    fn negotiation_prefers_brotli_then_gzip_and_honours_q() {
        assert_eq!(negotiate(None, ALL), Coding::Identity);
        assert_eq!(pick("gzip, deflate, br, zstd", ALL), Coding::Brotli);
        assert_eq!(pick("gzip, deflate", ALL), Coding::Gzip);
        assert_eq!(pick("br;q=0.5, gzip;q=0.8", ALL), Coding::Gzip);
        assert_eq!(pick("br;q=0, gzip", ALL), Coding::Gzip);
        assert_eq!(pick("BR", ALL), Coding::Brotli);
        assert_eq!(pick("x-gzip", ALL), Coding::Gzip);
        assert_eq!(pick("*", ALL), Coding::Brotli);
        assert_eq!(pick("*;q=0.1, gzip;q=0.2", ALL), Coding::Gzip);
        assert_eq!(pick("identity", ALL), Coding::Identity);
        assert_eq!(pick("zstd, deflate", ALL), Coding::Identity);
        assert_eq!(
            pick("br", &[Coding::Identity, Coding::Gzip]),
            Coding::Identity
        );
        // Everything refused: identity anyway rather than a 406.
        assert_eq!(pick("*;q=0", ALL), Coding::Identity);
        // A malformed q refuses that coding only.
        assert_eq!(pick("br;q=2, gzip", ALL), Coding::Gzip);
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
    }

    fn asset() -> StaticAsset {
        StaticAsset::new(b"body", "text/plain", "public, max-age=60")
            .with_variant(Coding::Gzip, b"gz-bytes")
            .with_variant(Coding::Brotli, b"br-bytes")
            .with_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
    }

    fn get(asset: &StaticAsset, headers: &[(&str, &str)]) -> Response<Body> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        asset.respond(&map)
    }

    fn body(resp: Response<Body>) -> Vec<u8> {
        use http_body_util::BodyExt;
        futures_util::FutureExt::now_or_never(resp.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn each_coding_has_its_own_strong_etag() {
        let a = asset();
        // SHA-256("body"), first 16 bytes.
        let hash = "230d8358dc8e8890b4c58deeb62912ee";
        assert_eq!(a.etag(Coding::Identity).unwrap(), &format!("\"{hash}\""));
        assert_eq!(a.etag(Coding::Gzip).unwrap(), &format!("\"{hash}-gz\""));
        assert_eq!(a.etag(Coding::Brotli).unwrap(), &format!("\"{hash}-br\""));

        let r = get(&a, &[("accept-encoding", "gzip")]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert_eq!(r.headers()["etag"], format!("\"{hash}-gz\"").as_str());
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        assert_eq!(r.headers()["cache-control"], "public, max-age=60");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(body(r), b"gz-bytes");

        let r = get(&a, &[]);
        assert!(r.headers().get("content-encoding").is_none());
        assert_eq!(body(r), b"body");
    }

    #[test]
    fn if_none_match_answers_304_for_the_chosen_representation() {
        let a = asset();
        let gz = a.etag(Coding::Gzip).unwrap().to_str().unwrap().to_owned();
        let id = a
            .etag(Coding::Identity)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let r = get(&a, &[("accept-encoding", "gzip"), ("if-none-match", &gz)]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()["etag"], gz.as_str());
        assert_eq!(r.headers()["cache-control"], "public, max-age=60");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert!(r.headers().get("content-encoding").is_none());
        assert!(body(r).is_empty());
        // Weak form and lists match too; another representation's tag does not.
        let weak = format!("\"x\", W/{gz}");
        let r = get(&a, &[("accept-encoding", "gzip"), ("if-none-match", &weak)]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = get(&a, &[("accept-encoding", "br"), ("if-none-match", &gz)]);
        assert_eq!(r.status(), StatusCode::OK);
        let r = get(&a, &[("if-none-match", &id)]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = get(&a, &[("if-none-match", "*")]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        let r = get(&a, &[("if-none-match", "\"other\"")]);
        assert_eq!(r.status(), StatusCode::OK);
    }
}
