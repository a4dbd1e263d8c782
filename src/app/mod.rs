//! `hush serve`: builds every component in dependency order, serves, and shuts down
//! in reverse order so no accepted hit is lost.
//!
//! Start: migrations, salts (shared through ClickHouse so instances agree), salt
//! rotation, session sweeper, spool (recovering what the last run left) and writer, then
//! the listener. When ClickHouse does not answer at start and there is a spool (or
//! `server.start_without_store`), hush listens all the same, on a local salt, with the
//! writer held until [`store`]'s task has applied the migrations (see there).
//! Stop (SIGTERM/SIGINT): stop accepting, finish in-flight requests,
//! flush the writer, stop background tasks, all within `server.shutdown_timeout_ms`.
//! With a spool, rows the flush could not store by then stay spooled for the next start.
//!
//! `app` is assembly, not a stage: it may use every stage. So is [`ingest`], the
//! Events API handler, which runs a hit through `collect`, `enrich` and `pipeline` in
//! turn and answers with what they decided; no stage calls a later one itself.

pub mod auth;
pub mod dashboard;
mod geo_metrics;
pub mod ingest;
pub mod stats;
pub mod store;
pub mod supervise;
pub mod tracker;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::app::ingest::Ingest;
use crate::app::store::Store;
use crate::app::supervise::{Health, Supervisor};
use crate::collect::sites::SiteRegistry;
use crate::config::Config;
use crate::db;
use crate::enrich::Enricher;
use crate::enrich::geo::GeoDb;
use crate::enrich::salt::Salts;
use crate::enrich::session::SessionTracker;
use crate::enrich::ua::UaParser;
use crate::http::server;
use crate::metrics::{HttpMetrics, MetricsPage, TaskMetrics};
use crate::pipeline::dropped::DropCounter;
use crate::pipeline::spool::Spool;
use crate::pipeline::writer::{StartGate, Writer};
use crate::store::migrate;

/// How often expired visits are removed from the session tracker.
const SESSION_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Share of the shutdown budget the connection drain may use; the rest is kept for
/// flushing the writer, which is what actually protects accepted hits.
const DRAIN_SHARE: f64 = 0.75;

/// SIGTERM and SIGINT handlers, installed as the first thing `serve` does: a signal
/// that arrives during start-up (after the port file is written, say, but before the
/// server loop runs) then starts a graceful shutdown instead of killing the process.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Resolves on SIGTERM or SIGINT and records when.
    async fn recv(mut self, at: Arc<OnceLock<Instant>>) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = self.term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        let _ = at.set(Instant::now());
    }
}

async fn write_port_file(path: &std::path::Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    // Write then rename, so a reader never sees a half-written file.
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, format!("{addr}\n"))
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Files `serve` writes its bound addresses to once listening (for supervisors and
/// tests that bind port 0).
#[derive(Debug, Clone, Default)]
pub struct PortFiles {
    /// The ingestion listener's `ip:port`.
    pub ingest: Option<PathBuf>,
    /// The admin listener's `ip:port` (not written when there is none); written before
    /// `ingest`, so it exists once that one does.
    pub admin: Option<PathBuf>,
    /// The dashboard listener's `ip:port` (with `dashboard.listen`); written before
    /// `ingest`.
    pub dashboard: Option<PathBuf>,
}

/// Applies the schema migrations and loads the day's salts: what `serve` needs of
/// ClickHouse before it may hash and insert.
async fn reach_store(config: &Config, client: &clickhouse::Client) -> anyhow::Result<Arc<Salts>> {
    let applied = migrate::run(&config.clickhouse)
        .await
        .context("cannot apply schema migrations")?;
    for name in &applied {
        tracing::info!(migration = %name, "schema migrated");
    }
    Salts::init(client)
        .await
        .context("cannot load the daily salts")
}

/// Runs the collector until SIGTERM/SIGINT.
pub async fn serve(config: Config, port_files: PortFiles) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install()?;
    let config = Arc::new(config);
    if config.sites.is_empty() {
        tracing::warn!("no [[sites]] configured: every hit will be refused with 403");
    }

    let client = db::client(&config.clickhouse);
    let salts = match reach_store(&config, &client).await {
        Ok(salts) => Some(salts),
        Err(error) if config.spool.dir.is_some() || config.server.start_without_store => {
            let held = if config.spool.dir.is_some() {
                "hits are accepted into the spool"
            } else {
                "hits are queued in memory (lost if the process ends first; /ready fails)"
            };
            tracing::warn!(
                error = format!("{error:#}"),
                "ClickHouse is not available at start; {held}, hashed with a local visitor \
                 salt, and stored once ClickHouse answers and the schema is applied"
            );
            None
        }
        Err(error) => return Err(error),
    };
    let reached = salts.is_some();
    let salts = match salts {
        Some(salts) => salts,
        None => Salts::local(crate::enrich::salt::today()).context("cannot make a visitor salt")?,
    };
    // The writer inserts nothing before the schema is current.
    let (gate_tx, gate_rx) = watch::channel(reached);

    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_stop = stop_rx.clone();
    // Fired at the signal, not after the flush: a purge in progress needs the budget to
    // reach a safe point and release its lease.
    let (purge_stop_tx, purge_stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let sessions = Arc::new(SessionTracker::new(&config.session));
    let sweeper = {
        let sessions = Arc::clone(&sessions);
        let stop = stopped();
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut every = tokio::time::interval(SESSION_SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    _ = every.tick() => sessions.sweep(crate::clock::now_secs()),
                }
            }
        })
    };

    let geo = Arc::new(GeoDb::open(&config.geo).context("cannot open the geo database")?);
    if config.geo.database.is_some() {
        geo.spawn_watch();
    }

    let mut registry = Registry::default();
    let metrics = HttpMetrics::new(&mut registry);
    let store = Store::new(&mut registry, reached);
    geo_metrics::register(&mut registry, &geo);
    let sites = Arc::new(SiteRegistry::from_config(&config));
    // Bots and opted-out hits, counted per site and day; flushed until the listener
    // has closed (its own stop, after the drain), then once more.
    let not_counted = Arc::new(DropCounter::new(&sites, &mut registry));
    let (not_counted_stop, not_counted_stopped) = tokio::sync::oneshot::channel::<()>();
    let not_counted_task = crate::pipeline::dropped::spawn_flusher(
        Arc::clone(&not_counted),
        client.clone(),
        Duration::from_millis(config.writer.dropped_flush_interval_ms),
        db::request_timeout(&config.clickhouse),
        async move {
            let _ = not_counted_stopped.await;
        },
    );
    // The admin listener starts now and serves the page once everything registered.
    let metrics_page = MetricsPage::default();
    // Erasures wait for the writer's rows once it runs (see below).
    let writer_slot = crate::admin::WriterSlot::default();
    // Finished visits of past days into `sessions`, once the schema is current.
    let sessions_builder = crate::store::sessions::spawn_scheduler(
        crate::store::sessions::SessionBuilder::new(
            client.clone(),
            crate::store::Timeouts::from_config(&config),
            config.session.timeout_secs,
        ),
        config.sites.iter().map(|s| s.domain.clone()).collect(),
        Duration::from_secs(config.stats.sessions_build_interval_secs),
        gate_rx.clone(),
        admin_stop.clone(),
    );
    let (purge_scheduler, admin_api) = crate::admin::start_in_serve(
        &config,
        &client,
        &mut registry,
        metrics_page.clone(),
        writer_slot.clone(),
        admin_stop,
        purge_stop_rx,
    )
    .await?;
    let admin_api = match admin_api {
        Some((admin_addr, task)) => {
            if let Some(path) = &port_files.admin {
                write_port_file(path, admin_addr).await?;
            }
            Some(task)
        }
        None => None,
    };
    // One writer loop either way; the spool only changes where accepted rows wait.
    let spool = match config.spool.dir.clone() {
        Some(dir) => {
            // Opening recovers what a previous run left (blocking file I/O).
            let spool_config = config.spool.clone();
            let (spool, returned) = tokio::task::spawn_blocking(move || {
                let spool = Spool::open(&spool_config, &mut registry);
                (spool, registry)
            })
            .await
            .context("spool start-up task failed")?;
            registry = returned;
            let spool =
                spool.with_context(|| format!("cannot open the spool in {}", dir.display()))?;
            let status = spool.status();
            if status.pending_records > 0 {
                tracing::info!(
                    rows = status.pending_records,
                    replay_batches = status.replay_batches,
                    "spooled rows from the previous run are inserted first"
                );
            }
            Some((spool, dir))
        }
        None => None,
    };
    let (sink, writer) = Writer::spawn_gated(
        client.clone(),
        &config.writer,
        db::request_timeout(&config.clickhouse),
        "events",
        spool
            .as_ref()
            .map(|(spool, dir)| (spool.clone(), dir.as_path())),
        StartGate::when(gate_rx),
        &mut registry,
    );
    drop(spool);
    let store_task = crate::app::store::spawn(
        Arc::clone(&store),
        Arc::clone(&config),
        client.clone(),
        Arc::clone(&salts),
        gate_tx,
        stopped(),
    );
    writer_slot.publish(writer.progress());
    // The rotation starts here, under supervision (restarted if it dies); the writer is
    // watched while the server runs.
    let health = Arc::new(Health::default());
    let mut supervisor = Supervisor::new(Arc::clone(&health), TaskMetrics::new(&mut registry), {
        let (salts, client) = (Arc::clone(&salts), client.clone());
        move || salts.spawn_rotation(client.clone(), stopped())
    });
    let enricher = Enricher {
        ua: UaParser::new(&config.user_agent).context("cannot build the User-Agent parser")?,
        geo: Arc::clone(&geo),
        salts,
        sessions,
        privacy: config.privacy.clone(),
    };

    // The read side: on the ingestion listener, or on its own (`dashboard.listen`).
    let auth = Arc::new(
        crate::app::auth::Auth::new(&config).context("cannot set up the dashboard sign-in")?,
    );
    let stats = Arc::new(
        crate::app::stats::Stats::new(&config, client.clone())
            .context("cannot set up the stats API")?
            .with_auth(Arc::clone(&auth))
            .with_geo(Arc::clone(&geo)),
    );
    let dashboard =
        Arc::new(crate::app::dashboard::Dashboard::new(&config).with_auth(Arc::clone(&auth)));
    let read_listener = match config.dashboard.listen {
        None => None,
        Some(addr) => {
            let listener = server::bind(addr).await?;
            let bound = listener
                .local_addr()
                .context("cannot read the dashboard's bound address")?;
            tracing::info!("dashboard and stats API listening on {bound}");
            if let Some(path) = &port_files.dashboard {
                write_port_file(path, bound).await?;
            }
            let read_side = Arc::new(crate::app::dashboard::ReadSide {
                dashboard: Arc::clone(&dashboard),
                stats: Arc::clone(&stats),
                auth: Arc::clone(&auth),
                metrics: metrics.clone(),
            });
            Some((listener, read_side))
        }
    };
    let own_read_side = read_listener.is_none();

    let listener = server::bind(config.server.listen).await?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    tracing::info!("listening on {addr}");
    let registry = Arc::new(registry);
    metrics_page.publish(Arc::clone(&registry));
    if let Some(path) = &port_files.ingest {
        write_port_file(path, addr).await?;
    }

    let ingest = Arc::new(Ingest {
        config: Arc::clone(&config),
        sites,
        enricher: Arc::new(enricher),
        sink,
        metrics,
        registry,
        health,
        store,
        stats: own_read_side.then_some(stats),
        dashboard: own_read_side.then_some(dashboard),
        auth: own_read_side.then(|| Arc::clone(&auth)),
        not_counted,
    });

    let budget = config.server.shutdown_timeout();
    let mut server_config = config.server.clone();
    server_config.shutdown_timeout_ms = budget.mul_f64(DRAIN_SHARE).as_millis() as u64;
    let signaled = Arc::new(OnceLock::new());
    let signal = {
        let signaled = Arc::clone(&signaled);
        let purge_stop = purge_stop_tx.clone();
        async move {
            signals.recv(signaled).await;
            let _ = purge_stop.send(true);
        }
    };
    let read_task = read_listener.map(|(listener, read_side)| {
        let mut stop = purge_stop_tx.subscribe();
        let server_config = server_config.clone();
        tokio::spawn(async move {
            server::run(listener, &server_config, read_side, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
        })
    });
    let drained = supervisor
        .watch_while(
            || writer.is_finished(),
            server::run(listener, &server_config, Arc::clone(&ingest), signal),
        )
        .await;
    let rotation = supervisor.into_rotation();
    // Also when the server ended without a signal.
    let _ = purge_stop_tx.send(true);
    if let Some(task) = read_task {
        // Told to stop at the signal too; it drains within the same share.
        let _ = tokio::time::timeout(server_config.shutdown_timeout(), task).await;
    }
    let since_signal = signaled.get().map_or(Duration::ZERO, Instant::elapsed);
    // The handler (and its sink) must go before the writer can see its queue end.
    drop(ingest);
    // No hit is counted any more: the last flush of the not-counted hits, beside the
    // writer's.
    let _ = not_counted_stop.send(());

    let flush_budget = budget.saturating_sub(since_signal);
    let flushed = writer.shutdown(flush_budget).await;
    let left = budget.saturating_sub(signaled.get().map_or(Duration::ZERO, Instant::elapsed));
    if tokio::time::timeout(left.max(Duration::from_secs(1)), not_counted_task)
        .await
        .is_err()
    {
        tracing::warn!("the counts of not-counted hits were not stored in the shutdown budget");
    }
    let _ = stop_tx.send(true);
    if let Some(rotation) = rotation {
        let _ = tokio::time::timeout(Duration::from_secs(1), rotation).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sweeper).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), store_task).await;
    if let Some(builder) = sessions_builder {
        // An unrecorded build is never read: abandoning one loses nothing.
        let _ = tokio::time::timeout(Duration::from_secs(1), builder).await;
    }
    if let Some(mut task) = purge_scheduler {
        // Whatever is left of the budget; a purge step that outlasts it is abandoned and
        // its lease expires by itself.
        let left = budget.saturating_sub(signaled.get().map_or(Duration::ZERO, Instant::elapsed));
        if tokio::time::timeout(left, &mut task).await.is_err() {
            tracing::warn!(
                "purge still in a step at the end of the shutdown budget; its lease stays until it expires"
            );
            task.abort();
        }
    }
    if let Some(mut task) = admin_api {
        // Its connections drain for `admin::DRAIN`, then it waits for its purges and
        // deletions, told to stop at the signal, to reach their safe point.
        let left = budget
            .saturating_sub(signaled.get().map_or(Duration::ZERO, Instant::elapsed))
            .max(crate::admin::DRAIN + Duration::from_secs(1));
        if tokio::time::timeout(left, &mut task).await.is_err() {
            tracing::warn!("an admin job is still in a step at the end of the shutdown budget");
            task.abort();
        }
    }
    match flushed {
        Ok(report) => {
            tracing::info!(
                rows = report.rows_inserted,
                rows_left_in_spool = report.rows_left_in_spool,
                connections_drained = drained.complete,
                "shutdown complete"
            );
            Ok(())
        }
        Err(err) => Err(anyhow::Error::new(err).context("accepted hits were not all stored")),
    }
}
