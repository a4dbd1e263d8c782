//! The purge lease: one run at a time across collectors sharing a ClickHouse.

use std::time::Duration;

use clickhouse::Client;
use serde::Deserialize;

use crate::db::timed;

use super::{
    Progress, PurgeError, PurgeOptions, PurgeReport, Purger, StopSignal, check_stop, new_run_id,
};

/// A lease on the purge: mutual exclusion between collectors sharing one ClickHouse.
///
/// ClickHouse has no compare-and-set, so the lease is a claim row plus a read-back:
/// each claimant inserts `(owner, claimed_at = now64() on the server, expires_at)`, waits
/// `settle`, then reads the live claims; the earliest `(claimed_at, owner)` holds the
/// lease, the others withdraw their claim. Guarantees, on a single ClickHouse server (or
/// replicas written with `insert_quorum` and read with `select_sequential_consistency`):
/// * two claimants whose inserts both complete before either reads back agree on one
///   holder (the ordering comes from one clock, the server's);
/// * a claimant that arrives while a live lease exists never wins (its `claimed_at` is later);
/// * a crashed holder blocks others at most until `expires_at`.
///
/// It is not a fence: an insert delayed longer than `settle`, or a run outliving its
/// expiry, can let two runs overlap. That is acceptable because every purge step is
/// idempotent: the lease saves work, correctness does not depend on it.
pub struct Lease {
    client: Client,
    owner: String,
    timeout: Duration,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct LeaseHolder {
    owner: String,
}

impl Lease {
    pub const NAME: &'static str = "purge";

    /// Claims the lease for `owner` for `ttl`; every request to ClickHouse (the claim,
    /// the read-back, the withdrawal) is bounded by `timeout`. A claim whose insert
    /// failed or timed out may still have landed: it is withdrawn (best effort) before
    /// the error is returned, so it does not hold off other instances for `ttl`.
    pub async fn acquire(
        client: &Client,
        owner: &str,
        ttl: Duration,
        settle: Duration,
        timeout: Duration,
    ) -> Result<Lease, PurgeError> {
        let lease = Lease {
            client: client.clone(),
            owner: owner.to_owned(),
            timeout,
        };
        let claim = timed(
            timeout,
            client
                .query(
                    "INSERT INTO purge_lease (name, owner, claimed_at, expires_at) \
                     SELECT ?, ?, now64(6, 'UTC'), now64(6, 'UTC') + toIntervalSecond(?)",
                )
                .bind(Self::NAME)
                .bind(owner)
                .bind(ttl.as_secs())
                .execute(),
        )
        .await;
        if let Err(e) = claim {
            let _ = lease.release().await;
            return Err(e.into());
        }
        tokio::time::sleep(settle).await;
        let holder = timed(
            timeout,
            client
                .query(
                    "SELECT ?fields FROM purge_lease WHERE name = ? AND expires_at > now64(6, 'UTC') \
                     ORDER BY claimed_at, owner LIMIT 1",
                )
                .bind(Self::NAME)
                .fetch_optional::<LeaseHolder>(),
        )
        .await;
        match holder {
            Ok(Some(h)) if h.owner == owner => Ok(lease),
            Ok(other) => {
                lease.release().await?;
                Err(PurgeError::Busy {
                    owner: other.map(|h| h.owner).unwrap_or_default(),
                })
            }
            Err(e) => {
                let _ = lease.release().await;
                Err(e.into())
            }
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Withdraws this owner's claims.
    pub async fn release(self) -> Result<(), PurgeError> {
        timed(
            self.timeout,
            self.client
                .query("DELETE FROM purge_lease WHERE name = ? AND owner = ?")
                .bind(Self::NAME)
                .bind(&self.owner)
                .with_setting("lightweight_deletes_sync", "2")
                .execute(),
        )
        .await?;
        Ok(())
    }
}

/// A unique id for this process's lease claims.
pub fn lease_owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hush".into());
    format!("{host}:{}:{}", std::process::id(), new_run_id())
}

/// Runs a purge under the lease; `Busy` when another instance holds it.
pub async fn run_with_lease(
    purger: &Purger,
    opts: &PurgeOptions,
    progress: &dyn Progress,
) -> Result<PurgeReport, PurgeError> {
    lease_and_run(purger, opts, progress, None).await
}

/// [`run_with_lease`] that stops at the next safe point once `stop` turns true, and
/// releases the lease before returning either way: a lease left behind by a stopped
/// process would hold off every other instance's purge until it expires.
pub async fn run_with_lease_until(
    purger: &Purger,
    opts: &PurgeOptions,
    progress: &dyn Progress,
    stop: &StopSignal,
) -> Result<PurgeReport, PurgeError> {
    lease_and_run(purger, opts, progress, Some(stop)).await
}

async fn lease_and_run(
    purger: &Purger,
    opts: &PurgeOptions,
    progress: &dyn Progress,
    stop: Option<&StopSignal>,
) -> Result<PurgeReport, PurgeError> {
    check_stop(stop)?;
    let owner = lease_owner_id();
    let lease = match Lease::acquire(
        purger.client(),
        &owner,
        LEASE_TTL,
        LEASE_SETTLE,
        purger.timeouts().query,
    )
    .await
    {
        Ok(lease) => lease,
        Err(e) => {
            if matches!(e, PurgeError::Busy { .. }) && !opts.dry_run {
                purger.metrics().record_run("busy");
            }
            return Err(e);
        }
    };
    // Stopped during the settle wait: nothing done yet, nothing to log.
    let result = match check_stop(stop) {
        Ok(()) => purger.run_stoppable(opts, progress, stop).await,
        Err(e) => Err(e),
    };
    if let Err(e) = lease.release().await {
        // The claim expires by itself; a failed release only delays the next run.
        tracing::warn!(error = %e, "could not release the purge lease");
    }
    result
}

/// How long a purge lease is valid; a run is expected to finish well within it.
pub const LEASE_TTL: Duration = Duration::from_secs(6 * 3600);
/// Wait between claiming and reading back (see [`Lease`]).
pub const LEASE_SETTLE: Duration = Duration::from_secs(2);
