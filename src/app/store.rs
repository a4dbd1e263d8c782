//! The store (ClickHouse) as `serve` sees it: reached at start, or connected to in
//! the background while hits are accepted, then watched.
//!
//! # Start-up states
//!
//! - **Up at start.** The schema migrations are applied and the day's salt agreed
//!   before hush listens, as always.
//! - **Down at start, spool configured.** hush listens at once and accepts hits into
//!   the spool (hashed with a local salt, see [`crate::enrich::salt`]); the writer is
//!   held at its [`StartGate`](crate::pipeline::writer::StartGate).
//!   [`spawn`]'s task applies the migrations when ClickHouse answers, retrying with
//!   the writer's backoff (`writer.retry_base_ms` .. `retry_max_ms`) and logging the
//!   wait at most once per [`WAIT_LOG_EVERY`]; only then does it open the gate, so
//!   nothing is inserted before the schema is current. Then it agrees on the salt.
//! - **Down at start, no spool.** `serve` refuses to start (memory-only hits would be
//!   lost with the process) unless `server.start_without_store = true`: then as
//!   above, with the hits in the bounded memory queue.
//!
//! Once up, the task checks ClickHouse every [`CHECK_EVERY`] (the schema is current,
//! [`migrate::check_current`]) and logs each change of state once. The state is
//! `hush_store_up` and the `store` field of `/ready`'s body; `/ready` itself never
//! waits on ClickHouse (see [`readiness`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use clickhouse::Client;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::enrich::salt::Salts;
use crate::logging::RateLimit;
use crate::pipeline::writer::backoff;
use crate::store::migrate;

/// How often ClickHouse is checked once it was reached: as often as load balancers
/// probe `/ready`, which costs ClickHouse two small queries per second per collector.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bound on one check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one "still waiting for ClickHouse" line per this interval.
pub const WAIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// What `serve` knows of ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Not reached since the start: the schema is not known to be current, so the
    /// writer waits; hits are accepted into the spool (or the memory queue).
    Connecting,
    /// The last check found ClickHouse answering, with the schema current.
    Up,
    /// Reached before, the last check failed; the writer retries its inserts.
    Down,
}

impl StoreState {
    /// The `store` field of `/ready`'s body.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Connecting => "connecting",
            StoreState::Up => "up",
            StoreState::Down => "down",
        }
    }

    fn from_u8(v: u8) -> StoreState {
        match v {
            1 => StoreState::Up,
            2 => StoreState::Down,
            _ => StoreState::Connecting,
        }
    }
}

/// The state shared with the request path: one relaxed atomic load per `/ready`.
#[derive(Debug)]
pub struct Store {
    state: AtomicU8,
    /// `hush_store_up`.
    up: Gauge,
}

impl Store {
    /// `Up` when the start reached ClickHouse, else `Connecting`; registers
    /// `hush_store_up`.
    pub fn new(registry: &mut Registry, reached: bool) -> Arc<Store> {
        let store = Store {
            state: AtomicU8::new(0),
            up: Gauge::default(),
        };
        registry.register(
            "hush_store_up",
            "Whether ClickHouse answers with the schema current (1), or is not reached yet \
             or down (0); hits are accepted into the spool either way",
            store.up.clone(),
        );
        store.set(if reached {
            StoreState::Up
        } else {
            StoreState::Connecting
        });
        Arc::new(store)
    }

    pub fn state(&self) -> StoreState {
        StoreState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; returns the one before.
    fn set(&self, state: StoreState) -> StoreState {
        self.up.set(i64::from(state == StoreState::Up));
        StoreState::from_u8(self.state.swap(state as u8, Ordering::Relaxed))
    }
}

/// What `/ready` answers: `Ok` when hits sent here are kept, durably when there is a
/// spool; else why not.
///
/// - the writer died, or the salt is of an earlier day: not ready (hits are refused);
/// - a spool: ready while its disk takes writes, whatever ClickHouse's state (hits
///   wait in the spool, which is what it is for); not ready while it refuses writes,
///   so a load balancer sends the hits to an instance that can keep them;
/// - no spool: ready only while ClickHouse is up (queued hits die with the process).
///
/// A spool at `spool.max_bytes` stays ready: that is back-pressure every instance
/// shares during a long outage, answered per hit with 503 + Retry-After.
pub fn readiness(
    writer_running: bool,
    salt_current: bool,
    spool_writable: Option<bool>,
    store: StoreState,
) -> Result<(), &'static str> {
    if !writer_running {
        return Err("writer stopped");
    }
    if !salt_current {
        return Err("visitor salt out of date");
    }
    match spool_writable {
        Some(true) => Ok(()),
        Some(false) => Err("spool cannot write to its disk"),
        None if store == StoreState::Up => Ok(()),
        None => Err("clickhouse not ready"),
    }
}

/// Connects (when the start did not) and then watches the store until `stop`; see
/// the module doc. `gate` opens the writer.
pub fn spawn(
    store: Arc<Store>,
    config: Arc<Config>,
    client: Client,
    salts: Arc<Salts>,
    gate: watch::Sender<bool>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(stop);
        if store.state() == StoreState::Connecting {
            tokio::select! {
                () = &mut stop => return,
                () = connect(&config, &client, &salts) => {}
            }
            let _ = gate.send(true);
            store.set(StoreState::Up);
        }
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let checked =
                match tokio::time::timeout(CHECK_TIMEOUT, migrate::check_current(&client)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
            match checked {
                Ok(()) => {
                    if store.set(StoreState::Up) == StoreState::Down {
                        tracing::info!("ClickHouse answers again");
                    }
                }
                Err(error) => {
                    if store.set(StoreState::Down) == StoreState::Up {
                        tracing::warn!(
                            %error,
                            "ClickHouse check failed; hits are still accepted and the writer retries"
                        );
                    }
                }
            }
        }
    })
}

/// Applies the migrations once ClickHouse answers, then agrees on the salt.
async fn connect(config: &Config, client: &Client, salts: &Salts) {
    let base = Duration::from_millis(config.writer.retry_base_ms.max(1));
    let max = Duration::from_millis(
        config
            .writer
            .retry_max_ms
            .max(config.writer.retry_base_ms)
            .max(1),
    );
    let log = RateLimit::new(WAIT_LOG_EVERY);
    let mut attempts: u32 = 0;
    loop {
        match migrate::run(&config.clickhouse).await {
            Ok(applied) => {
                for name in &applied {
                    tracing::info!(migration = %name, "schema migrated");
                }
                tracing::info!(
                    attempts = attempts + 1,
                    "ClickHouse answers and the schema is current; storing the hits accepted meanwhile"
                );
                break;
            }
            Err(error) => {
                attempts = attempts.saturating_add(1);
                let delay = backoff(base, max, attempts);
                if let Some(held_back) = log.check() {
                    tracing::warn!(
                        %error,
                        attempts,
                        earlier_attempts_not_logged = held_back,
                        retry_in_ms = delay.as_millis() as u64,
                        "waiting for ClickHouse to apply the schema; hits are accepted meanwhile"
                    );
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
    match salts.connect(client).await {
        Ok(true) => {}
        Ok(false) => tracing::info!("the local visitor salt is now the day's agreed salt"),
        // The rotation task reconciles within `salt::TICK`.
        Err(error) => tracing::warn!(%error, "cannot agree on the visitor salt yet; retrying"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_that_takes_writes_is_ready_whatever_clickhouse_does() {
        for store in [StoreState::Connecting, StoreState::Up, StoreState::Down] {
            assert_eq!(
                readiness(true, true, Some(true), store),
                Ok(()),
                "{store:?}"
            );
            assert_eq!(
                readiness(true, true, Some(false), store),
                Err("spool cannot write to its disk"),
                "{store:?}"
            );
        }
    }

    #[test]
    fn without_a_spool_only_a_reachable_clickhouse_is_ready() {
        assert_eq!(readiness(true, true, None, StoreState::Up), Ok(()));
        for store in [StoreState::Connecting, StoreState::Down] {
            assert_eq!(
                readiness(true, true, None, store),
                Err("clickhouse not ready"),
                "{store:?}"
            );
        }
    }

    #[test]
    fn a_dead_writer_or_a_stale_salt_is_never_ready() {
        for spool in [Some(true), Some(false), None] {
            for store in [StoreState::Connecting, StoreState::Up, StoreState::Down] {
                assert_eq!(readiness(false, true, spool, store), Err("writer stopped"));
                assert_eq!(
                    readiness(true, false, spool, store),
                    Err("visitor salt out of date")
                );
            }
        }
    }

    #[test]
    fn the_state_and_the_gauge_agree() {
        let mut registry = Registry::default();
        let store = Store::new(&mut registry, false);
        let gauge = |registry: &Registry| {
            crate::metrics::render(registry)
                .lines()
                .find_map(|l| l.strip_prefix("hush_store_up ")?.parse::<i64>().ok())
                .expect("hush_store_up")
        };
        assert_eq!(
            (store.state(), gauge(&registry)),
            (StoreState::Connecting, 0)
        );
        assert_eq!(store.set(StoreState::Up), StoreState::Connecting);
        assert_eq!((store.state(), gauge(&registry)), (StoreState::Up, 1));
        assert_eq!(store.set(StoreState::Down), StoreState::Up);
        assert_eq!((store.state(), gauge(&registry)), (StoreState::Down, 0));
        let up = Store::new(&mut Registry::default(), true);
        assert_eq!(up.state(), StoreState::Up);
    }
}
