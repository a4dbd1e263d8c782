//! Stage 2, the hit: a request body becomes a validated event for a known site, from
//! an address already stripped of its host bits.
//!
//! Owns the Plausible Events API body grammar ([`hit`]), the pixel's query string
//! that becomes the same event ([`pixel`]), which client address to believe and its
//! truncation ([`client_ip`], the only code that sees a full address), and the
//! configured sites with their aliases and CORS origins ([`sites`]).
//!
//! Receives: the body bytes (or a pixel's query string), headers and TCP peer of
//! one request. Hands on: an [`hit::IncomingEvent`] (or a batch of them), the
//! [`sites::Site`] it names, and a [`client_ip::TruncatedIp`]. Pure and
//! synchronous: no I/O, no shared state, no panics on any input (fuzzed).

pub mod client_ip;
pub mod hit;
pub mod pixel;
pub mod sites;
