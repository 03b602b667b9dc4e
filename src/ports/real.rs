//! The real adapters: the SNAP aggregator and the SQLite journal behind the ports.

use super::{JourneyStore, OpJournal, Payments, PortFuture, QrPayments};
use crate::aggregator::mpm::{GenerateOutcome, QrRequest};
use crate::aggregator::{Aggregator, PayOutcome, QueryOutcome, RefundOutcome};
use crate::daemon::station::JournalHandle;
use crate::fare::policy::TapOutcome;
use crate::fare::Rupiah;
use crate::flow::{BeginTap, JourneyChange, Planned, Settlement, TapPayment};
use crate::journal::{
    JournalError, JourneyClose, JourneyRow, NewOp, OpRow, Settled, TapStart, Transition,
};

impl Payments for Aggregator {
    fn pay<'a>(&'a self, p: &'a TapPayment) -> PortFuture<'a, PayOutcome> {
        Box::pin(Aggregator::pay(self, p))
    }

    fn query<'a>(&'a self, partner_reference_no: &'a str) -> PortFuture<'a, QueryOutcome> {
        Box::pin(Aggregator::query(self, partner_reference_no))
    }

    fn refund<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: &'a str,
        amount: Rupiah,
        reason: &'a str,
    ) -> PortFuture<'a, RefundOutcome> {
        Box::pin(Aggregator::refund(
            self,
            partner_reference_no,
            reference_no,
            amount,
            reason,
        ))
    }
}

impl QrPayments for Aggregator {
    fn generate<'a>(&'a self, q: &'a QrRequest) -> PortFuture<'a, GenerateOutcome> {
        Box::pin(Aggregator::generate_qr(self, q))
    }

    fn query<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: Option<&'a str>,
    ) -> PortFuture<'a, QueryOutcome> {
        Box::pin(Aggregator::query_qr(
            self,
            partner_reference_no,
            reference_no,
        ))
    }

    fn refund<'a>(
        &'a self,
        partner_reference_no: &'a str,
        reference_no: &'a str,
        amount: Rupiah,
        reason: &'a str,
    ) -> PortFuture<'a, RefundOutcome> {
        Box::pin(Aggregator::refund_qr(
            self,
            partner_reference_no,
            reference_no,
            amount,
            reason,
        ))
    }
}

impl JourneyStore for JournalHandle {
    fn begin_tap(
        &self,
        begin: BeginTap,
    ) -> PortFuture<'_, Result<TapStart<Planned, TapOutcome>, JournalError>> {
        Box::pin(self.run(move |j| {
            let BeginTap { claim, plan } = begin;
            j.begin_tap(&claim, |open| plan.decide(open))
        }))
    }

    fn change(&self, change: JourneyChange) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(self.run(move |j| {
            match change {
                JourneyChange::Open {
                    pan_key,
                    station_id,
                    tap_in_ref,
                    at_ms,
                } => j
                    .open_journey(&pan_key, &station_id, &tap_in_ref, at_ms)
                    .map(|_| ()),
                JourneyChange::Close {
                    close,
                    tap_out_ref,
                    at_ms,
                } => j.close_journey(close.id, close.state, Some(&tap_out_ref), close.fare, at_ms),
                JourneyChange::CloseOnLine {
                    tap_in_ref,
                    tap_out_ref,
                    fare,
                    at_ms,
                } => j.close_on_line(&tap_in_ref, &tap_out_ref, fare, at_ms),
            }
        }))
    }

    fn find_open(
        &self,
        pan_key: String,
    ) -> PortFuture<'_, Result<Option<JourneyRow>, JournalError>> {
        Box::pin(self.run(move |j| j.find_open_journey(&pan_key)))
    }

    fn stale(
        &self,
        older_than_ms: i64,
    ) -> PortFuture<'_, Result<super::StaleJourneys, JournalError>> {
        Box::pin(self.run(move |j| {
            let mut out = Vec::new();
            for jy in j.stale_journeys(older_than_ms)? {
                let tap_in = j.get(&jy.tap_in_ref)?;
                out.push((jy, tap_in));
            }
            Ok(out)
        }))
    }

    fn close(&self, close: JourneyClose, at_ms: i64) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(self.run(move |j| j.close_journey(close.id, close.state, None, close.fare, at_ms)))
    }

    fn close_elsewhere(
        &self,
        close: crate::journal::ElsewhereClose,
        at_ms: i64,
    ) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(self.run(move |j| j.close_elsewhere(&close, at_ms)))
    }
}

impl OpJournal for JournalHandle {
    fn record(
        &self,
        partner_reference_no: String,
        transitions: Vec<Transition>,
    ) -> PortFuture<'_, Result<Option<OpRow>, JournalError>> {
        Box::pin(self.run(move |j| {
            if transitions.is_empty() {
                return Ok(None);
            }
            j.transitions(&partner_reference_no, &transitions).map(Some)
        }))
    }

    fn begin_qr(&self, op: NewOp) -> PortFuture<'_, Result<(), JournalError>> {
        Box::pin(self.run(move |j| j.begin_qr(&op)))
    }

    fn settle(&self, s: Settlement) -> PortFuture<'_, Settled> {
        Box::pin(async move {
            let r = self
                .run(move |j| {
                    Ok(j.settle_tap(
                        s.journey.as_ref(),
                        &s.partner_reference_no,
                        &s.transitions,
                        s.fast_opened,
                    ))
                })
                .await;
            r.unwrap_or_else(|e| Settled {
                journey: Err(JournalError::Worker(e.to_string())),
                record: Err(e),
            })
        })
    }

    fn get(
        &self,
        partner_reference_no: String,
    ) -> PortFuture<'_, Result<Option<OpRow>, JournalError>> {
        Box::pin(self.run(move |j| j.get(&partner_reference_no)))
    }

    fn due(&self, now_ms: i64, limit: usize) -> PortFuture<'_, Result<Vec<OpRow>, JournalError>> {
        Box::pin(self.run(move |j| j.due(now_ms, limit)))
    }

    fn non_final(&self) -> PortFuture<'_, Result<usize, JournalError>> {
        Box::pin(self.run(|j| {
            Ok(j.counts_by_state()?
                .into_iter()
                .filter(|(s, _)| !s.is_final())
                .map(|(_, n)| usize::try_from(n).unwrap_or(usize::MAX))
                .sum())
        }))
    }

    fn holds_without_journey(
        &self,
        limit: usize,
    ) -> PortFuture<'_, Result<Vec<OpRow>, JournalError>> {
        Box::pin(self.run(move |j| j.holds_without_journey(limit)))
    }
}
