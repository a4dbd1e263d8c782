//! `GET /api/event.gif` (alias `/pixel.gif`): a hit from an `<img>`, for pages
//! without JavaScript (`<noscript>`) and e-mail opens.
//!
//! The answer is always the 43-byte transparent GIF with `Cache-Control: no-store`
//! (a pixel must never show as a broken image, and every load must reach hush):
//! the outcome is in `hush_pixel_hits_total{outcome}` instead of the status. The hit
//! itself takes the path of `/api/event`: `collect::pixel` turns the query string
//! into the same event (the same validation), then the same enrichment (bots, DNT
//! and GPC dropped, the address truncated) and the same submit, so a valid hit is
//! spooled (or queued) before the GIF is sent, and one the writer cannot take
//! (buffer full) is counted as refused. `HEAD` answers the GIF's headers and
//! counts nothing.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use smallvec::SmallVec;

use super::{Ingest, Reject, Tally};
use crate::collect::pixel;
use crate::enrich::row::EventRow;
use crate::enrich::session::Journal;
use crate::http::server::Body;
use crate::metrics::{DropReason, PixelOutcome};

/// A 1×1 transparent GIF89a: the smallest image every client shows as nothing.
pub const GIF: &[u8; 43] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";

impl Ingest {
    pub(super) async fn pixel(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if req.method() != Method::HEAD {
            let outcome = match self.pixel_hit(&req, peer).await {
                Ok(None) => PixelOutcome::stored,
                Ok(Some(_)) => PixelOutcome::dropped,
                Err(reject) => {
                    self.metrics.rejected(reject.reason, 1);
                    PixelOutcome::refused
                }
            };
            self.metrics.pixel(outcome);
        }
        gif()
    }

    async fn pixel_hit(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Option<DropReason>, Reject> {
        let headers = req.headers();
        let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
        let ev = pixel::parse_query(req.uri().query(), referer, &self.config.limits)
            .map_err(|e| Reject::malformed(e.to_string()))?;
        let ctx = self.context(headers, peer);
        let mut rows: SmallVec<[EventRow; 1]> = SmallVec::new();
        let mut journal = Journal::default();
        let mut tally = Tally::new();
        let dropped = self
            .enrich_hit(ev, &ctx, &mut rows, &mut journal, &mut tally)
            .inspect_err(|_| self.undo(&journal))?;
        // As for /api/event: a refused pixel hit leaves no visit behind.
        self.submit(&rows, 1)
            .await
            .inspect_err(|_| self.undo(&journal))?;
        self.count_not_counted(&tally, &ctx);
        // As for /api/event: a drop counts only when no site stored the hit.
        match dropped {
            Some(reason) if rows.is_empty() => {
                self.metrics.dropped(reason);
                Ok(Some(reason))
            }
            _ => Ok(None),
        }
    }
}

/// The GIF answer: never cached, loadable from any page (also cross-origin
/// isolated ones).
fn gif() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(GIF)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gif_is_a_transparent_1x1_gif89a() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
        // Logical screen 1×1, little-endian.
        assert_eq!(&GIF[6..10], &[1, 0, 1, 0]);
        // Graphic control extension with the transparency flag, index 0.
        assert_eq!(&GIF[19..27], &[0x21, 0xf9, 4, 1, 0, 0, 0, 0]);
        assert_eq!(GIF[42], 0x3b, "trailer");
        let r = gif();
        assert_eq!(r.headers()["content-type"], "image/gif");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
}
