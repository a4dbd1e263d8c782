//! Watching the background tasks `serve` cannot do without, while the server runs.
//!
//! - **The writer.** If its task dies (a panic), nothing drains the buffer: with a
//!   spool, acknowledged hits would pile up on disk until it is full; with the memory
//!   queue they would be lost. It is not restarted in place (its batch in flight and,
//!   without a spool, its queue died with it, and the state a panic leaves is unknown):
//!   [`Health`] marks it stopped, so hits get 503 (`writer_stopped`) instead of a 202
//!   nobody honours, and `/ready` and `/health` answer 503, so a load balancer moves the
//!   traffic and an orchestrator's liveness probe restarts the process (a spool is
//!   then replayed). Noticed within [`WRITER_CHECK_EVERY`]; with a spool, what was
//!   acknowledged meanwhile is on disk.
//! - **The salt rotation.** If its task dies it is restarted, after [`RESTART_DELAY`]
//!   doubling up to [`MAX_RESTART_DELAY`] while it keeps dying. Meanwhile
//!   `Salts::for_day` refuses to hash a hit with a salt of an earlier day, so a dead
//!   rotation costs 503s after midnight, never ids linkable across days.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::{Task, TaskMetrics};

/// How often the writer task is looked at.
pub const WRITER_CHECK_EVERY: Duration = Duration::from_millis(200);
/// Delay before the first restart of a dead rotation task.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Longest delay between restarts of a rotation task that keeps dying.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A rotation task that ran this long before dying is restarted after
/// [`RESTART_DELAY`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(10 * 60);

/// What the request path needs to know about the background tasks. One relaxed atomic
/// load per hit.
#[derive(Debug, Default)]
pub struct Health {
    writer_stopped: AtomicBool,
}

impl Health {
    /// Whether accepted hits are still being stored.
    pub fn writer_running(&self) -> bool {
        !self.writer_stopped.load(Ordering::Relaxed)
    }

    fn writer_died(&self) {
        self.writer_stopped.store(true, Ordering::Relaxed);
    }
}

/// Watches the writer and keeps a salt rotation task running; see the module doc.
pub struct Supervisor<F: FnMut() -> JoinHandle<()>> {
    health: Arc<Health>,
    metrics: TaskMetrics,
    spawn_rotation: F,
    rotation: Option<JoinHandle<()>>,
    rotation_started: Instant,
    restart_at: Option<Instant>,
    /// Delay before the next restart; doubles while the task keeps dying.
    restart_delay: Duration,
    first_restart_delay: Duration,
}

impl<F: FnMut() -> JoinHandle<()>> Supervisor<F> {
    /// Starts the first rotation task with `spawn_rotation`, which starts another when
    /// one dies.
    pub fn new(health: Arc<Health>, metrics: TaskMetrics, mut spawn_rotation: F) -> Self {
        let rotation = spawn_rotation();
        metrics.running(Task::salt_rotation);
        metrics.running(Task::writer);
        Self {
            health,
            metrics,
            spawn_rotation,
            rotation: Some(rotation),
            rotation_started: Instant::now(),
            restart_at: None,
            restart_delay: RESTART_DELAY,
            first_restart_delay: RESTART_DELAY,
        }
    }

    /// Restarts after `first` (doubling up to [`MAX_RESTART_DELAY`]) instead of
    /// [`RESTART_DELAY`], so tests need not wait seconds.
    #[cfg(test)]
    fn with_restart_delay(mut self, first: Duration) -> Self {
        self.restart_delay = first;
        self.first_restart_delay = first;
        self
    }

    /// Runs `work` (the server) to its end while watching: `writer_finished` says
    /// whether the writer task has ended.
    pub async fn watch_while<T>(
        &mut self,
        writer_finished: impl Fn() -> bool,
        work: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let mut check = tokio::time::interval(WRITER_CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let restart_at = self.restart_at;
            tokio::select! {
                out = &mut work => return out,
                ended = async { self.rotation.as_mut()?.await.err() }, if self.rotation.is_some() => {
                    self.rotation = None;
                    self.rotation_died(ended);
                }
                () = async {
                    if let Some(at) = restart_at {
                        tokio::time::sleep_until(at).await;
                    }
                }, if restart_at.is_some() => self.restart_rotation(),
                _ = check.tick() => {
                    if self.health.writer_running() && writer_finished() {
                        self.health.writer_died();
                        self.metrics.died(
                            Task::writer,
                            &"the writer task ended",
                            "refusing hits with 503, /ready and /health fail until the \
                             process is restarted",
                        );
                    }
                }
            }
        }
    }

    fn rotation_died(&mut self, error: Option<tokio::task::JoinError>) {
        if self.rotation_started.elapsed() >= HEALTHY_RUN {
            self.restart_delay = self.first_restart_delay;
        }
        let delay = self.restart_delay;
        let error: &dyn std::fmt::Display = match &error {
            Some(error) => error,
            None => &"it returned",
        };
        self.metrics.died(
            Task::salt_rotation,
            error,
            &format!("restarting it in {delay:?}; hits past the salt's day are refused meanwhile"),
        );
        self.restart_at = Some(Instant::now() + delay);
        self.restart_delay = (delay * 2).min(MAX_RESTART_DELAY);
    }

    fn restart_rotation(&mut self) {
        self.restart_at = None;
        self.rotation = Some((self.spawn_rotation)());
        self.rotation_started = Instant::now();
        self.metrics.restarted(Task::salt_rotation);
    }

    /// The rotation task running now, if any, for the shutdown to wait on.
    pub fn into_rotation(self) -> Option<JoinHandle<()>> {
        self.rotation
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use prometheus_client::registry::Registry;

    use super::*;

    fn metric(registry: &Registry, series: &str) -> f64 {
        let text = crate::metrics::render(registry);
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    }

    /// A work future that ends when `done` says so, polling it every few milliseconds.
    async fn until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_dead_rotation_is_restarted_with_a_growing_delay() {
        let mut registry = Registry::default();
        let metrics = TaskMetrics::new(&mut registry);
        let spawned = Arc::new(AtomicUsize::new(0));
        // The first two tasks panic at once (the injected fault), the third runs.
        let spawn = {
            let spawned = Arc::clone(&spawned);
            move || {
                let n = spawned.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if n < 2 {
                        panic!("injected rotation fault {n}");
                    }
                    std::future::pending::<()>().await;
                })
            }
        };
        let first = Duration::from_millis(10);
        let mut supervisor =
            Supervisor::new(Arc::new(Health::default()), metrics, spawn).with_restart_delay(first);
        supervisor
            .watch_while(|| false, until(|| spawned.load(Ordering::SeqCst) == 3))
            .await;
        // Two deaths: the delay doubled twice.
        assert_eq!(supervisor.restart_delay, first * 4);
        assert_eq!(
            metric(
                &registry,
                "hush_task_restarts_total{task=\"salt_rotation\"}"
            ),
            2.0
        );
        assert_eq!(
            metric(&registry, "hush_task_up{task=\"salt_rotation\"}"),
            1.0
        );
        let rotation = supervisor.into_rotation().expect("a running rotation");
        assert!(!rotation.is_finished());
        rotation.abort();
    }

    #[tokio::test]
    async fn a_dead_writer_is_reported_and_the_health_says_so() {
        let mut registry = Registry::default();
        let metrics = TaskMetrics::new(&mut registry);
        let health = Arc::new(Health::default());
        let config = crate::config::Config::default();
        let (_sink, writer) = crate::pipeline::writer::Writer::spawn(
            crate::db::client(&config.clickhouse),
            &config.writer,
            Duration::from_secs(1),
            "events",
            &mut registry,
        );
        let mut supervisor = Supervisor::new(Arc::clone(&health), metrics, || {
            tokio::spawn(std::future::pending::<()>())
        });
        // Running: nothing reported for a few checks.
        supervisor
            .watch_while(
                || writer.is_finished(),
                tokio::time::sleep(WRITER_CHECK_EVERY * 3),
            )
            .await;
        assert!(health.writer_running());
        assert_eq!(metric(&registry, "hush_task_up{task=\"writer\"}"), 1.0);

        writer.kill_for_tests();
        let seen = Arc::clone(&health);
        supervisor
            .watch_while(|| writer.is_finished(), until(|| !seen.writer_running()))
            .await;
        assert_eq!(metric(&registry, "hush_task_up{task=\"writer\"}"), 0.0);
        if let Some(rotation) = supervisor.into_rotation() {
            rotation.abort();
        }
    }
}
