//! The line's outbox: journey events written in the same transaction as the journey change
//! they describe, and read back in order by the replicator that sends them to the line.
//!
//! Also what the line's reconcilers need from this journal: exits charged the unknown-entry
//! fare still to converge, open journeys to compare with the line, and the close of a journey
//! the line says ended at another station.

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::error::DbContext;
use super::{
    close_journey_in, fare_sql, parse_journey, parse_op, Journal, JournalError, JourneyRow, OpRow,
    JOURNEY_COLUMNS, OP_COLUMNS,
};
use super::{exec, one};
use crate::fare::{OpState, Rupiah};
use tapgate_core::journal::{ElsewhereClose, JourneyEvent, JourneyEventKind, Transition};

/// One outbox row, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its place in the outbox: rows are sent in this order.
    pub seq: i64,
    /// The line's event id.
    pub event_id: String,
    /// The event (an `OPENED` one with the hold's `referenceNo` as the tap-in operation
    /// holds it now).
    pub event: JourneyEvent,
    /// For `OPENED`: the tap-in's state now (its result may be a moment behind the journey).
    pub tap_in_state: Option<OpState>,
    /// When the row was written, Unix milliseconds.
    pub created_at_ms: i64,
}

/// How far behind the line this journal is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events not yet sent.
    pub pending: u64,
    /// When the oldest of them was written, Unix milliseconds.
    pub oldest_at_ms: Option<i64>,
}

/// [`Journal::close_on_line`] inside the caller's transaction.
pub(super) fn close_on_line_in(
    tx: &Connection,
    line_station: Option<&str>,
    tap_in_ref: &str,
    tap_out_ref: &str,
    fare: Option<Rupiah>,
    at_ms: i64,
) -> Result<(), JournalError> {
    let Some(station) = line_station else {
        return Err(JournalError::InvalidOp {
            field: "journeys.store",
            why: "a journey of another station can only be closed with a line store",
        });
    };
    outbox_insert(
        tx,
        &JourneyEvent {
            tap_in_ref: tap_in_ref.to_owned(),
            station: station.to_owned(),
            at_ms,
            kind: JourneyEventKind::Closed {
                tap_out_ref: tap_out_ref.to_owned(),
                fare: fare.unwrap_or(Rupiah(0)),
                // The tap-out named the hold; an unpaid exit leaves the hold standing.
                references_hold: true,
            },
        },
    )
}

/// Appends `ev` to the outbox inside the caller's transaction; a second write of the same
/// event (same id) is a no-op.
pub(super) fn outbox_insert(tx: &Connection, ev: &JourneyEvent) -> Result<(), JournalError> {
    let (pan_key, tap_out_ref, fare, references_hold) = match &ev.kind {
        JourneyEventKind::Opened { pan_key, .. } => (Some(pan_key.as_str()), None, None, None),
        JourneyEventKind::Closed {
            tap_out_ref,
            fare,
            references_hold,
        } => (
            None,
            Some(tap_out_ref.as_str()),
            Some(*fare),
            Some(*references_hold),
        ),
        JourneyEventKind::StaleClosed { fare } => (None, None, *fare, None),
        JourneyEventKind::Void | JourneyEventKind::Released => (None, None, None, None),
    };
    let fare = fare_sql(fare)?;
    exec(
        tx,
        "INSERT INTO line_outbox (event_id, tap_in_ref, kind, station, at_ms, pan_key, \
         tap_out_ref, fare, references_hold, created_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?5) ON CONFLICT (event_id) DO NOTHING",
        params![
            ev.event_id(),
            ev.tap_in_ref,
            ev.kind.as_str(),
            ev.station,
            ev.at_ms,
            pan_key,
            tap_out_ref,
            fare,
            references_hold,
        ],
    )
    .ctx("writing a line event")?;
    Ok(())
}

/// Closes this journal's copy of a journey that the line says ended elsewhere, inside the
/// caller's transaction (no event: the line already has it), and sends the tap-in's hold to
/// refund when that close did not finalize it.
pub(super) fn close_elsewhere_in(
    tx: &rusqlite::Transaction<'_>,
    c: &ElsewhereClose,
    at_ms: i64,
) -> Result<(), JournalError> {
    close_journey_in(tx, c.id, c.state, None, c.fare, at_ms, None)?;
    if !c.release_hold {
        return Ok(());
    }
    let tap_in: Option<String> = one(
        tx,
        "SELECT tap_in_ref FROM journeys WHERE id = ?1",
        [c.id],
        |r| r.get(0),
    )
    .optional()
    .ctx("reading a journey")?;
    let Some(tap_in) = tap_in else {
        return Ok(());
    };
    let Some(cur) = super::load_op(tx, &tap_in)? else {
        return Ok(());
    };
    if !matches!(cur.state, OpState::Succeeded | OpState::Attention) {
        return Ok(());
    }
    let t = Transition {
        refund_amount: Some(cur.amount),
        reason: Some(
            "journey closed at another station by a tap-out that did not finalize this hold \
             (that exit did not know the entry in time): hold released"
                .into(),
        ),
        next_attempt_at_ms: Some(at_ms),
        line_correction: true,
        ..Transition::new(OpState::RefundPending, at_ms)
    };
    Journal::transition_in(tx, &tap_in, &cur, &t)?;
    Ok(())
}

impl Journal {
    /// Writes the outbox from now on, for the line's station `station` (`None`: no line, no
    /// outbox). Journey events are then written with each journey change.
    pub fn set_line_station(&mut self, station: Option<String>) {
        self.line_station = station;
    }

    /// The station whose events this journal writes to the outbox, if any.
    pub fn line_station(&self) -> Option<&str> {
        self.line_station.as_deref()
    }

    /// Records the close of a journey opened at another station: only the outbox, since
    /// this journal never held it.
    pub fn close_on_line(
        &mut self,
        tap_in_ref: &str,
        tap_out_ref: &str,
        fare: Option<Rupiah>,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        let station = self.line_station.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting close_on_line")?;
        close_on_line_in(
            &tx,
            station.as_deref(),
            tap_in_ref,
            tap_out_ref,
            fare,
            at_ms,
        )?;
        tx.commit().ctx("committing close_on_line")
    }

    /// Closes a journey of this journal that the line says ended elsewhere (see
    /// [`ElsewhereClose`]).
    pub fn close_elsewhere(&mut self, c: &ElsewhereClose, at_ms: i64) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting close_elsewhere")?;
        close_elsewhere_in(&tx, c, at_ms)?;
        tx.commit().ctx("committing close_elsewhere")
    }

    /// The oldest unsent events, in order, at most `limit`.
    pub fn outbox_batch(&self, limit: usize) -> Result<Vec<OutboxRow>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT o.seq, o.event_id, o.tap_in_ref, o.kind, o.station, o.at_ms, o.pan_key, \
                 o.tap_out_ref, o.fare, o.references_hold, o.created_at_ms, f.reference_no, \
                 f.state FROM line_outbox o LEFT JOIN fare_ops f \
                 ON o.kind = 'OPENED' AND f.partner_reference_no = o.tap_in_ref \
                 ORDER BY o.seq LIMIT ?1",
            )
            .ctx("reading the outbox")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map([limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                    r.get::<_, Option<bool>>(9)?,
                    r.get::<_, i64>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                ))
            })
            .ctx("reading the outbox")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("reading the outbox")?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, id, tap_in, kind, station, at, pan, out_ref, fare, refs, created, rno, st) in rows
        {
            let fare = fare.and_then(|f| u64::try_from(f).ok()).map(Rupiah);
            let corrupt = |detail: &str| JournalError::CorruptRow {
                table: "line_outbox",
                key: seq.to_string(),
                detail: detail.to_owned(),
            };
            let kind = match kind.as_str() {
                "OPENED" => JourneyEventKind::Opened {
                    pan_key: pan.ok_or_else(|| corrupt("OPENED without pan_key"))?,
                    tap_in_reference_no: rno,
                },
                "CLOSED" => JourneyEventKind::Closed {
                    tap_out_ref: out_ref.ok_or_else(|| corrupt("CLOSED without tap_out_ref"))?,
                    fare: fare.unwrap_or(Rupiah(0)),
                    references_hold: refs.unwrap_or(true),
                },
                "STALE_CLOSED" => JourneyEventKind::StaleClosed { fare },
                "VOID" => JourneyEventKind::Void,
                "RELEASED" => JourneyEventKind::Released,
                other => return Err(corrupt(&format!("unknown kind {other:?}"))),
            };
            out.push(OutboxRow {
                seq,
                event_id: id,
                event: JourneyEvent {
                    tap_in_ref: tap_in,
                    station,
                    at_ms: at,
                    kind,
                },
                tap_in_state: st.as_deref().and_then(OpState::parse),
                created_at_ms: created,
            });
        }
        Ok(out)
    }

    /// Removes sent events (the line holds them now), up to and including `seq`.
    pub fn outbox_sent(&mut self, up_to_seq: i64) -> Result<usize, JournalError> {
        exec(
            &self.conn,
            "DELETE FROM line_outbox WHERE seq <= ?1",
            [up_to_seq],
        )
        .ctx("clearing sent line events")
    }

    /// How many events wait, and since when.
    pub fn outbox_stats(&self) -> Result<OutboxStats, JournalError> {
        let (n, oldest): (i64, Option<i64>) = one(
            &self.conn,
            "SELECT count(*), min(created_at_ms) FROM line_outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx("reading the outbox")?;
        Ok(OutboxStats {
            pending: u64::try_from(n).unwrap_or(0),
            oldest_at_ms: oldest,
        })
    }

    /// Exits charged the unknown-entry fare while a line is in use, paid, not converged yet,
    /// made at or after `since_ms`; oldest first, at most `limit`.
    pub fn unconverged_exits(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<OpRow>, JournalError> {
        let sql = format!(
            "SELECT {OP_COLUMNS} FROM fare_ops WHERE entry_unknown = 1 \
             AND converged_at_ms IS NULL AND state = 'SUCCEEDED' AND created_at_ms >= ?1 \
             ORDER BY created_at_ms LIMIT ?2"
        );
        let args = vec![
            Value::Integer(since_ms),
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.collect(&sql, args, "fare_ops", parse_op)
    }

    /// Records that an unknown-entry exit was matched on the line (`with`: the entry's tap-in,
    /// or why none) and, when it was overcharged, sends the difference to refund, atomically.
    pub fn converge_exit(
        &mut self,
        partner_ref: &str,
        with: &str,
        refund: Option<Rupiah>,
        at_ms: i64,
    ) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting converge_exit")?;
        if let Some(amount) = refund {
            let Some(cur) = super::load_op(&tx, partner_ref)? else {
                return Err(JournalError::UnknownReference(partner_ref.to_owned()));
            };
            let t = Transition {
                refund_amount: Some(amount),
                reason: Some(format!(
                    "entry found on the line after the exit ({with}): the unknown-entry fare \
                     was {} over the matrix fare, refunded",
                    amount
                )),
                next_attempt_at_ms: Some(at_ms),
                line_correction: true,
                ..Transition::new(OpState::RefundPending, at_ms)
            };
            Journal::transition_in(&tx, partner_ref, &cur, &t)?;
        }
        exec(
            &tx,
            "UPDATE fare_ops SET converged_at_ms = ?2, converged_with = ?3 \
             WHERE partner_reference_no = ?1",
            params![partner_ref, at_ms, with],
        )
        .ctx("recording a converged exit")?;
        tx.commit().ctx("committing converge_exit")
    }

    /// Open journeys with an id above `after_id`, in id order, at most `limit`: the follower
    /// compares them with the line.
    pub fn open_journeys(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<JourneyRow>, JournalError> {
        let sql = format!(
            "SELECT {JOURNEY_COLUMNS} FROM journeys WHERE state = 'OPEN' AND id > ?1 \
             ORDER BY id LIMIT ?2"
        );
        let args = vec![
            Value::Integer(after_id),
            Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        self.collect(&sql, args, "journeys", parse_journey)
    }
}
