//! Response builders every HTTP service shares: plain text and JSON, with
//! `Retry-After` on every 503 so a client always learns when to come back.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// The body of every response hush builds in memory.
pub type Body = Full<Bytes>;

/// A plain-text response.
pub fn simple(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A JSON response; a 503 gets `Retry-After: 1`.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    json_retry(status, body, 1)
}

/// A JSON response; a 503 gets `Retry-After` of `retry_after_secs` (at least 1).
pub fn json_retry(
    status: StatusCode,
    body: &serde_json::Value,
    retry_after_secs: u64,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        );
    }
    resp
}
