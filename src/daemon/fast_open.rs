//! Fast open at a station: the exposure ledger shared by its lanes, the aggregator's health
//! as fast open sees it, and the one log event per fast-opened payment once its result is
//! known.

use crate::aggregator::PayOutcome;
use crate::daemon::station::StationCore;
use crate::fare::fast_open::{Exposure, FastOpenRefusal, Health};
use crate::fare::{OpState, Rupiah};
use crate::journal::OpRow;

impl StationCore {
    fn exposure(&self) -> std::sync::MutexGuard<'_, Exposure> {
        self.fast_open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exposure gauge, from the ledger just changed.
    fn show_exposure(&self, e: &Exposure) {
        self.metrics
            .set("tapgate_fast_open_exposure_rupiah", &[], e.total().0 as f64);
    }

    /// Takes `amount` of exposure for `partner_ref` when the cap and the aggregator's health
    /// allow it.
    pub fn fast_open_admit(
        &self,
        partner_ref: &str,
        amount: Rupiah,
    ) -> Result<(), FastOpenRefusal> {
        let now = self.now_ms();
        let mut e = self.exposure();
        if let Some(h) = e.health(now) {
            self.log_health(h);
        }
        let r = e.admit(partner_ref, amount, now);
        self.show_exposure(&e);
        r
    }

    /// The unconfirmed exposure now, its peak since start, and whether fast open is off for
    /// the aggregator's silence.
    pub fn fast_open_state(&self) -> (Rupiah, Rupiah, bool) {
        let e = self.exposure();
        (e.total(), e.peak(), e.is_degraded())
    }

    /// Counts exposure left by an earlier run (fast-opened operations still unconfirmed).
    pub fn fast_open_restore(&self, rows: &[(String, Rupiah)]) {
        let mut e = self.exposure();
        for (r, a) in rows {
            e.restore(r, *a);
        }
        self.show_exposure(&e);
    }

    /// Gives back the exposure of a fast open whose gate did not open after all.
    pub fn fast_open_withdraw(&self, partner_ref: &str) {
        let mut e = self.exposure();
        e.release(partner_ref);
        self.show_exposure(&e);
    }

    /// A payment is being sent now.
    pub fn payment_sent(&self) {
        if self.config.policy.fast_open.enabled {
            let now = self.now_ms();
            self.exposure().sent(now);
        }
    }

    /// A payment's outcome came back: an answer from the aggregator (even a decline or a
    /// `5xx`) says it is reachable; a connection that failed or timed out says nothing.
    pub fn payment_answered(&self, o: &PayOutcome) {
        let answered = match o {
            PayOutcome::Success { .. } | PayOutcome::Declined { .. } => true,
            PayOutcome::Refused { response_code, .. }
            | PayOutcome::Unknown { response_code, .. } => response_code.is_some(),
        };
        if answered && self.config.policy.fast_open.enabled {
            if let Some(h) = self.exposure().answered() {
                self.log_health(h);
            }
        }
    }

    fn log_health(&self, h: Health) {
        match h {
            Health::Degraded { silent_ms } => {
                self.metrics.set("tapgate_fast_open_degraded", &[], 1.0);
                tracing::warn!(target: "tapgate::fast_open", silent_ms,
                    "fast open off: the aggregator has not answered for {silent_ms} ms; taps wait for \
                     the answer until it does")
            }
            Health::Recovered => {
                self.metrics.set("tapgate_fast_open_degraded", &[], 0.0);
                tracing::info!(target: "tapgate::fast_open",
                    "fast open back on: the aggregator answered")
            }
        }
    }

    /// The journal has just written `row`: when it is a fast-opened operation whose result is
    /// now final, its exposure ends and its one result event is logged (and counted when it
    /// ended unpaid).
    pub fn fast_open_resolved(&self, row: &OpRow) {
        if !row.fast_opened || !row.state.is_final() {
            return;
        }
        let held = {
            let mut e = self.exposure();
            let held = e.release(&row.partner_reference_no);
            self.show_exposure(&e);
            held
        };
        if held.is_none() {
            // Already resolved by this process (a late reply and the reconciler both saw it).
            return;
        }
        let unpaid = row.state == OpState::Declined;
        if unpaid {
            self.metrics
                .inc("tapgate_fast_opens_unpaid_total", &[("lane", &row.lane)]);
            self.metrics.add(
                "tapgate_fast_opens_unpaid_rupiah_total",
                &[("lane", &row.lane)],
                row.amount.0,
            );
            tracing::warn!(target: "tapgate::fast_open", lane = %row.lane,
                fare_ref = %row.partner_reference_no, result = row.state.as_str(),
                amount = row.amount.0, nns = %row.nns, pan = %row.pan_masked,
                reason = row.reason.as_deref().unwrap_or("-"),
                "fast-opened payment ended unpaid: the passenger is on the unpaid list");
        } else {
            tracing::info!(target: "tapgate::fast_open", lane = %row.lane,
                fare_ref = %row.partner_reference_no, result = row.state.as_str(),
                amount = row.amount.0, "fast-opened payment confirmed");
        }
    }
}
