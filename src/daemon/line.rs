//! The station's link to its line: the tap-path lookup (the [`LinePort`]), the replicator
//! that sends the journal's outbox to the line, and the line's reconcilers (journeys of this
//! station closed elsewhere, exits charged the unknown-entry fare, retention).
//!
//! The journal stays the source of truth for money: nothing here moves money by itself. A
//! correction the line teaches (an overcharge, a hold no exit finalized) becomes a refund
//! owed in the journal, sent by the reconciler like any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::station::{JournalHandle, StationCore};
use crate::fare::{OpState, Rupiah};
use crate::flow::{LineAnswer, LineEntry, LineState, LineView};
use crate::journal::{JourneyEventKind, OutboxRow};
use crate::line::{KeyFingerprint, LineError, LineEvent, LineEventKind, LineJourney, LineStore};
use crate::ports::{LinePort, LineQuery, PortFuture};

/// Events sent to the line per round trip.
const BATCH: usize = 100;

/// How long an `OPENED` event waits for its tap-in's result (and the hold's `referenceNo`)
/// before it is sent without it.
const OPENED_WAITS_MS: i64 = 3_000;

/// The line's timings, from `[journeys]` and `[policy]`.
#[derive(Clone, Debug)]
pub struct LineTasks {
    /// How often the outbox is sent while idle.
    pub replicate_every: Duration,
    /// How long an unknown-entry exit keeps being matched, ms.
    pub converge_ms: i64,
    /// The longest trip, ms (`[policy] max_trip_minutes`).
    pub max_trip_ms: i64,
    /// Closed journeys older than this are pruned from the line (`None`: kept).
    pub retain_ms: Option<i64>,
}

/// A station's link to its line.
pub struct LineLink {
    store: LineStore,
    station: String,
    key: KeyFingerprint,
    joined: AtomicBool,
    /// Timings.
    pub tasks: LineTasks,
}

impl LineLink {
    /// A link over `store` for `station`, whose passenger key has fingerprint `key`. Nothing
    /// is asked of the database yet: see [`LineLink::join`].
    pub fn new(store: LineStore, station: String, key: KeyFingerprint, tasks: LineTasks) -> Self {
        LineLink {
            store,
            station,
            key,
            joined: AtomicBool::new(false),
            tasks,
        }
    }

    /// The store.
    pub fn store(&self) -> &LineStore {
        &self.store
    }

    /// Brings the line's schema up to date and checks this gate's passenger key against the
    /// line's. Until it has succeeded once, lookups say the line is unavailable. A key that
    /// differs is [`LineError::KeyMismatch`], fatal: retrying cannot help.
    pub async fn join(&self) -> Result<(), LineError> {
        if self.joined.load(Ordering::Acquire) {
            return Ok(());
        }
        self.store.migrate().await?;
        self.store.join(&self.key).await?;
        self.joined.store(true, Ordering::Release);
        tracing::info!(target: "tapgate::line", station = %self.station,
            key = %self.key.short(), "joined the line");
        Ok(())
    }

    /// Whether [`LineLink::join`] has succeeded.
    pub fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Sends the outbox to the line, oldest first, until it is empty (or only an `OPENED`
    /// event still waiting for its tap-in's result is left). Returns how many were sent.
    pub async fn replicate(&self, journal: &JournalHandle, now_ms: i64) -> Result<usize, String> {
        self.join().await.map_err(|e| e.to_string())?;
        let sent = self.send_outbox(journal, now_ms).await?;
        self.sync_unpaid(journal, now_ms).await?;
        Ok(sent)
    }

    /// The unpaid list both ways: this journal's new and cleared entries to the line, and the
    /// clearing of its entries made at other gates back here.
    pub async fn sync_unpaid(&self, journal: &JournalHandle, now_ms: i64) -> Result<(), String> {
        // One read of the journal per round: what the line has not been told, and what is
        // still owed here.
        let (unsynced, owed) = journal
            .run(|j| Ok((j.unpaid_unsynced(BATCH)?, j.unpaid_list(false)?)))
            .await
            .map_err(|e| e.to_string())?;
        let owed: Vec<String> = owed.into_iter().map(|e| e.partner_reference_no).collect();
        if !unsynced.is_empty() {
            self.store
                .push_unpaid(&unsynced, now_ms)
                .await
                .map_err(|e| e.to_string())?;
            journal
                .run(move |j| j.unpaid_synced(&unsynced))
                .await
                .map_err(|e| e.to_string())?;
        }
        let cleared = self
            .store
            .unpaid_cleared(&owed)
            .await
            .map_err(|e| e.to_string())?;
        if cleared.is_empty() {
            return Ok(());
        }
        for e in &cleared {
            tracing::info!(target: "tapgate::fast_open", fare_ref = %e.partner_reference_no,
                pan = %e.pan_masked, by = e.cleared_by.as_deref().unwrap_or("-"),
                "unpaid-list entry cleared on the line: cleared here");
        }
        journal
            .run(move |j| j.unpaid_cleared_on_line(&cleared))
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn send_outbox(&self, journal: &JournalHandle, now_ms: i64) -> Result<usize, String> {
        let mut sent = 0;
        loop {
            let rows = journal
                .run(|j| j.outbox_batch(BATCH))
                .await
                .map_err(|e| e.to_string())?;
            let full = rows.len() == BATCH;
            let ready: Vec<&OutboxRow> = rows
                .iter()
                .take_while(|r| !waits_for_result(r, now_ms))
                .collect();
            let Some(last) = ready.last().map(|r| r.seq) else {
                return Ok(sent);
            };
            let held_back = ready.len() < rows.len();
            let events: Vec<LineEvent> = ready.iter().map(|r| line_event(r)).collect();
            self.store
                .apply_events(&events)
                .await
                .map_err(|e| e.to_string())?;
            journal
                .run(move |j| j.outbox_sent(last))
                .await
                .map_err(|e| e.to_string())?;
            sent += events.len();
            if !full || held_back {
                return Ok(sent);
            }
        }
    }

    /// Closes this station's open journeys that the line says ended elsewhere (and releases
    /// each hold no exit finalized). Returns how many.
    pub async fn follow(&self, journal: &JournalHandle, now_ms: i64) -> Result<usize, String> {
        self.join().await.map_err(|e| e.to_string())?;
        let mut after = 0;
        let mut closed = 0;
        loop {
            let rows = journal
                .run(move |j| j.open_journeys(after, 200))
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = rows.last().map(|r| r.id) else {
                return Ok(closed);
            };
            after = last;
            let refs: Vec<String> = rows.iter().map(|r| r.tap_in_ref.clone()).collect();
            let on_line = self
                .store
                .journeys(&refs)
                .await
                .map_err(|e| e.to_string())?;
            for lj in on_line {
                let Some(row) = rows.iter().find(|r| r.tap_in_ref == lj.tap_in_ref) else {
                    continue;
                };
                let Some(c) = line_state(&lj).elsewhere_close(row.id) else {
                    continue;
                };
                let release = c.release_hold;
                journal
                    .run(move |j| j.close_elsewhere(&c, now_ms))
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(target: "tapgate::line", journey = row.id,
                    tap_in = %row.tap_in_ref, state = %lj.state,
                    exit_station = lj.closed_station.as_deref().unwrap_or("-"),
                    hold_released = release, "journey closed at another station: closed here");
                closed += 1;
            }
        }
    }

    /// Matches exits charged the unknown-entry fare with entries that reached the line since:
    /// each found entry is closed on the line by that exit at the matrix fare, and the
    /// difference is refunded (the entry station releases its hold when it sees the close).
    /// Returns how many exits converged.
    pub async fn converge(
        &self,
        core: &StationCore,
        journal: &JournalHandle,
    ) -> Result<usize, String> {
        self.join().await.map_err(|e| e.to_string())?;
        let now = core.now_ms();
        let since = now.saturating_sub(self.tasks.converge_ms);
        let rows = journal
            .run(move |j| j.unconverged_exits(since, 64))
            .await
            .map_err(|e| e.to_string())?;
        let mut done = 0;
        for op in rows {
            let Some(entry) = self
                .store
                .entry_for_unknown_exit(&op.pan_key, op.created_at_ms, self.tasks.max_trip_ms)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let Some(entry_station) = entry.entry_station.clone() else {
                continue;
            };
            let (fare, _) = core.tariff.fare(Some(&entry_station), &op.station_id);
            let close = LineEvent {
                event_id: format!("{}/CLOSED/{}", entry.tap_in_ref, op.partner_reference_no),
                tap_in_ref: entry.tap_in_ref.clone(),
                station: self.station.clone(),
                at_ms: op.created_at_ms,
                kind: LineEventKind::Closed {
                    tap_out_ref: op.partner_reference_no.clone(),
                    fare,
                    references_hold: false,
                },
            };
            self.store
                .apply_event(&close)
                .await
                .map_err(|e| e.to_string())?;
            let now_line = self
                .store
                .journeys(std::slice::from_ref(&entry.tap_in_ref))
                .await
                .map_err(|e| e.to_string())?;
            let ours = now_line
                .first()
                .is_some_and(|j| j.tap_out_ref.as_deref() == Some(&op.partner_reference_no));
            let (with, refund) = if ours {
                (entry.tap_in_ref.clone(), overcharge(op.amount, fare))
            } else {
                ("the entry was closed by another exit".to_owned(), None)
            };
            let pref = op.partner_reference_no.clone();
            let w = with.clone();
            journal
                .run(move |j| j.converge_exit(&pref, &w, refund, now))
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(target: "tapgate::line", fare_ref = %op.partner_reference_no,
                entry = %with, entry_station = %entry_station, matrix_fare = fare.0,
                charged = op.amount.0, refund = refund.map_or(0, |r| r.0),
                "unknown-entry exit matched on the line");
            done += 1;
        }
        Ok(done)
    }

    /// One round of the line's background work: send the outbox, follow journeys closed
    /// elsewhere, converge unknown-entry exits. Each part logs its own failure and the others
    /// still run.
    pub async fn round(&self, core: &StationCore, journal: &JournalHandle) {
        let now = core.now_ms();
        if let Err(e) = self.replicate(journal, now).await {
            tracing::warn!(target: "tapgate::line", error = %e,
                "line events not sent; retried with backoff");
        }
        if let Err(e) = self.follow(journal, now).await {
            tracing::warn!(target: "tapgate::line", error = %e, "could not follow the line");
        }
        if let Err(e) = self.converge(core, journal).await {
            tracing::warn!(target: "tapgate::line", error = %e,
                "could not converge unknown-entry exits");
        }
        if let Ok(s) = journal.run(|j| j.outbox_stats()).await {
            let lag = s
                .oldest_at_ms
                .map_or(0.0, |t| (now.saturating_sub(t)).max(0) as f64 / 1000.0);
            core.metrics
                .set("tapgate_line_outbox_pending", &[], s.pending as f64);
            core.metrics
                .set("tapgate_line_outbox_lag_seconds", &[], lag);
        }
    }

    /// The daemon's replicator: the outbox every `replicate_every` (backing off to 30 s while
    /// the line is away) and retention hourly, until `stop`. The reconciler runs the rest of
    /// the line's work ([`LineLink::round`]) with its passes.
    pub async fn run(
        self: Arc<Self>,
        core: Arc<StationCore>,
        journal: JournalHandle,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut failures: u32 = 0;
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            let now = core.now_ms();
            match self.replicate(&journal, now).await {
                Ok(_) => failures = 0,
                Err(e) => {
                    if matches!(failures, 0 | 10 | 100) {
                        tracing::warn!(target: "tapgate::line", error = %e, failures,
                            "line events not sent; retried with backoff");
                    }
                    failures = failures.saturating_add(1);
                }
            }
            if let Some(retain) = self.tasks.retain_ms {
                let due = last_prune.map_or(true, |t| t.elapsed() >= Duration::from_secs(3600));
                if due && self.is_joined() {
                    last_prune = Some(tokio::time::Instant::now());
                    match self.store.prune(now.saturating_sub(retain), 1000).await {
                        Ok(n) => tracing::info!(target: "tapgate::line", pruned = n,
                            "closed journeys pruned from the line"),
                        Err(e) => tracing::warn!(target: "tapgate::line", error = %e,
                            "line retention failed; retried in an hour"),
                    }
                }
            }
            let wait = backoff(self.tasks.replicate_every, failures);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// The wait before the next round: the interval, doubled per failure up to 30 s.
fn backoff(every: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(8);
    (every * factor).min(Duration::from_secs(30)).max(every)
}

/// What an exit charged over the matrix fare, if anything.
pub fn overcharge(charged: Rupiah, fare: Rupiah) -> Option<Rupiah> {
    (charged.0 > fare.0).then(|| Rupiah(charged.0 - fare.0))
}

fn waits_for_result(r: &OutboxRow, now_ms: i64) -> bool {
    matches!(r.event.kind, JourneyEventKind::Opened { .. })
        && matches!(r.tap_in_state, Some(OpState::Pending | OpState::Unknown))
        && now_ms.saturating_sub(r.created_at_ms) < OPENED_WAITS_MS
}

fn line_event(r: &OutboxRow) -> LineEvent {
    LineEvent {
        event_id: r.event_id.clone(),
        tap_in_ref: r.event.tap_in_ref.clone(),
        station: r.event.station.clone(),
        at_ms: r.event.at_ms,
        kind: r.event.kind.clone(),
    }
}

fn line_state(j: &LineJourney) -> LineState {
    LineState {
        tap_in_ref: j.tap_in_ref.clone(),
        state: j.state,
        fare: j.fare,
        references_hold: j.references_hold,
    }
}

fn view(a: crate::line::LookupAnswer) -> LineView {
    LineView::Answered(LineAnswer {
        open: a.open.map(|o| LineEntry {
            tap_in_ref: o.tap_in_ref,
            entry_station: o.entry_station,
            tap_in_reference_no: o.tap_in_reference_no,
            opened_at_ms: o.opened_at_ms,
        }),
        claimed_by: a.claimed_by,
        recent_close: a.recent_close,
        local: a.local.as_ref().map(line_state),
        unpaid: a.owed,
    })
}

impl LinePort for LineLink {
    fn lookup(&self, q: LineQuery) -> PortFuture<'_, LineView> {
        Box::pin(async move {
            if !self.is_joined() {
                return LineView::Unavailable("not joined to the line yet".into());
            }
            match self.store.lookup(&q).await {
                Ok(a) => view(a),
                Err(e) => LineView::Unavailable(e.to_string()),
            }
        })
    }

    fn release_claim(&self, tap_in_ref: String, claim: String) -> PortFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.store.release_claim(&tap_in_ref, &claim).await {
                tracing::debug!(target: "tapgate::line", error = %e, tap_in = %tap_in_ref,
                    "claim not released; it expires by itself");
            }
        })
    }

    fn states(&self, refs: Vec<String>) -> PortFuture<'_, Result<Vec<LineState>, String>> {
        Box::pin(async move {
            if !self.is_joined() {
                return Err("not joined to the line yet".into());
            }
            self.store
                .journeys(&refs)
                .await
                .map(|js| js.iter().map(line_state).collect())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overcharge_is_what_was_charged_over_the_fare() {
        assert_eq!(
            overcharge(Rupiah(14_000), Rupiah(3_000)),
            Some(Rupiah(11_000))
        );
        assert_eq!(overcharge(Rupiah(3_000), Rupiah(3_000)), None);
        assert_eq!(overcharge(Rupiah(2_000), Rupiah(3_000)), None);
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let every = Duration::from_millis(200);
        assert_eq!(backoff(every, 0), every);
        assert_eq!(backoff(every, 3), Duration::from_millis(1600));
        assert_eq!(backoff(every, 20), Duration::from_secs(30));
    }
}
