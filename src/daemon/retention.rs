//! The daemon's retention task: when `[journal] retain_days` is set, every hour (and shortly
//! after start) final operations older than that are exported and pruned, batch by batch (see
//! [`crate::journal::retention`]).
//!
//! Off the tap path: the journal is taken for picking a batch and for deleting it, and given
//! back in between (the CSV is written without it) and after every batch, so a tap waits for
//! at most one batch's pick or delete.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::daemon::Station;
use crate::journal::retention::{ExportDir, PruneError, DAY_MS};
use crate::journal::JournalError;

/// How long after start the first run waits: start-up (recovering PENDING rows, the first
/// token) goes first.
pub const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);
/// Time between runs.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Pause between two batches of one run: lanes and the reconciler get the journal most of the
/// time (a batch of 100 held it 35 ms typically, 0.12 s at worst, on a 1 GB journal).
pub const BETWEEN_BATCHES: Duration = Duration::from_millis(200);

/// Runs retention every [`EVERY`] until `stop`; returns at once when retention is off.
pub async fn run(station: Arc<Station>, mut stop: watch::Receiver<bool>) {
    if station.config.journal.retain_days.is_none() {
        tracing::info!("journal retention off ([journal] retain_days not set)");
        return;
    }
    let mut wait = FIRST_RUN_AFTER;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = EVERY;
        match run_once(&station, &stop).await {
            Ok(n) if n > 0 => tracing::info!(operations = n, "journal retention pruned"),
            Ok(_) => {}
            Err(PruneError::Busy { lock }) => tracing::info!(
                lock = %lock.display(),
                "journal retention skipped: another prune is running"
            ),
            Err(e) => tracing::warn!(error = %e, "journal retention stopped; next try in an hour"),
        }
    }
}

/// One retention run: every batch due now, unless `stop` turns true in between. Returns how
/// many operations were pruned.
pub async fn run_once(
    station: &Arc<Station>,
    stop: &watch::Receiver<bool>,
) -> Result<u64, PruneError> {
    let cfg = &station.config.journal;
    let Some(days) = cfg.retain_days else {
        return Ok(0);
    };
    let dir = cfg.export_dir_path();
    let journal_path = cfg.path.clone();
    let batch_size = usize::try_from(cfg.prune_batch.max(1)).unwrap_or(100);
    let export = blocking(move || ExportDir::lock(&dir, &journal_path)).await?;
    let export = Arc::new(export);
    let last = station.journal.run(|j| j.last_prune_batch()).await?;
    let ex = export.clone();
    for f in blocking(move || ex.remove_unrecorded(last)).await? {
        tracing::warn!(
            file = %f.display(),
            "removed the export of an interrupted retention batch; its rows are exported again"
        );
    }
    let mut pruned = 0u64;
    while !*stop.borrow() {
        let cutoff_ms = station.now_ms().saturating_sub(i64::from(days) * DAY_MS);
        let Some(batch) = station
            .journal
            .run(move |j| j.prune_candidates(cutoff_ms, batch_size))
            .await?
        else {
            break;
        };
        let batch = Arc::new(batch);
        let (ex, b) = (export.clone(), batch.clone());
        let file = blocking(move || ex.write(&b)).await?;
        let name = export.file_name(batch.number);
        let now_ms = station.now_ms();
        let b = batch.clone();
        station
            .journal
            .run(move |j| j.prune_commit(&b, &name, now_ms))
            .await?;
        pruned += batch.ops.len() as u64;
        tracing::info!(
            file = %file.display(),
            operations = batch.ops.len(),
            journeys = batch.journeys.len(),
            "journal retention batch exported and pruned"
        );
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    Ok(pruned)
}

/// Runs filesystem work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PruneError> + Send + 'static,
) -> Result<T, PruneError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PruneError::Journal(JournalError::Worker(e.to_string())))?
}
