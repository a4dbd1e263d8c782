//! Stage 4, the batch: a row becomes part of a stored batch, exactly once.
//!
//! Owns the RowBinary encoding of [`crate::enrich::row::EventRow`] ([`rowbinary`],
//! done once per row on the request path), the disk write-ahead log ([`spool`]: CRC'd
//! records in segments, group commit, replay, quarantine) or the bounded memory queue,
//! and the writer task ([`writer`]) that inserts batches with a stable deduplication
//! token, retries with backoff and sets refused batches aside as dead letters.
//!
//! Receives: `EventRow`s from enrichment through [`writer::EventSink::submit`], which
//! answers accepted (durable per `spool.fsync`) or refused (503). Hands on: RowBinary
//! inserts into ClickHouse's `events` table through [`crate::db`].

pub mod dropped;
pub mod rowbinary;
pub mod spool;
pub mod writer;
