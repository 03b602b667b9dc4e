//! Fast open's records: which operations opened the gate before the aggregator answered,
//! and the unpaid list of those that ended unpaid.
//!
//! An entry is written in the same transaction as the transition that made its operation
//! `DECLINED`, so a fast-opened payment can never end unpaid without its entry. Entries are
//! cleared by staff (`tapgate unpaid clear`), never deleted: the list is what the operator
//! settles with the aggregator.

use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;

use super::error::DbContext;
use super::{exec, one};
use super::{Journal, JournalError, OpRow};
use crate::fare::{Direction, Rupiah};
use tapgate_core::journal::Owed;

/// One entry of the unpaid list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnpaidEntry {
    /// The fast-opened operation that ended unpaid.
    #[serde(rename = "partnerReferenceNo")]
    pub partner_reference_no: String,
    /// The passenger's key (keyed hash of the PAN).
    pub pan_key: String,
    /// The masked PAN.
    pub pan_masked: String,
    /// The issuer's NNS.
    pub nns: String,
    /// Where.
    pub station: String,
    /// Tap-in or tap-out.
    pub direction: Direction,
    /// What is owed, whole rupiah.
    pub amount: u64,
    /// When it ended unpaid, Unix milliseconds.
    pub at_ms: i64,
    /// Why (the operation's last reason).
    pub reason: String,
    /// When staff cleared it, if they have.
    pub cleared_at_ms: Option<i64>,
    /// Who cleared it.
    pub cleared_by: Option<String>,
}

/// What `tapgate unpaid clear` matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClearOutcome {
    /// These entries are now cleared.
    Cleared(Vec<UnpaidEntry>),
    /// Nothing owed matches.
    NoMatch,
    /// A masked PAN (or a key prefix) that matches more than one passenger: name the key.
    Ambiguous(Vec<String>),
}

/// Marks `partner_ref` as fast-opened, inside the caller's transaction.
pub(super) fn mark_fast_opened(tx: &Connection, partner_ref: &str) -> Result<(), JournalError> {
    let n = exec(
        tx,
        "UPDATE fare_ops SET fast_opened = 1 WHERE partner_reference_no = ?1",
        [partner_ref],
    )
    .ctx("marking a fast-opened operation")?;
    if n == 0 {
        return Err(JournalError::UnknownReference(partner_ref.to_owned()));
    }
    Ok(())
}

/// Puts the passenger of `op` (just made `DECLINED`) on the unpaid list, inside the caller's
/// transaction.
pub(super) fn insert_in(tx: &Connection, op: &OpRow, at_ms: i64) -> Result<(), JournalError> {
    let amount = i64::try_from(op.amount.0).map_err(|_| JournalError::InvalidOp {
        field: "amount",
        why: "too large",
    })?;
    exec(
        tx,
        "INSERT INTO unpaid (partner_reference_no, pan_key, pan_masked, nns, station, \
         direction, amount, at_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (partner_reference_no) DO NOTHING",
        params![
            op.partner_reference_no,
            op.pan_key,
            op.pan_masked,
            op.nns,
            op.station_id,
            op.direction.as_str(),
            amount,
            at_ms,
            op.reason.as_deref().unwrap_or("ended unpaid"),
        ],
    )
    .ctx("writing an unpaid-list entry")?;
    Ok(())
}

/// What the passenger owes, if anything.
pub(super) fn owed_in(conn: &Connection, pan_key: &str) -> Result<Option<Owed>, JournalError> {
    let (sum, count): (Option<i64>, i64) = one(
        conn,
        "SELECT sum(amount), count(*) FROM unpaid WHERE pan_key = ?1 \
             AND cleared_at_ms IS NULL",
        [pan_key],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ctx("reading the unpaid list")?;
    Ok(match (sum, count) {
        (Some(sum), n) if n > 0 => Some(Owed {
            amount: Rupiah(u64::try_from(sum).unwrap_or(0)),
            count: u32::try_from(n).unwrap_or(u32::MAX),
        }),
        _ => None,
    })
}

const UNPAID_COLUMNS: &str = "partner_reference_no, pan_key, pan_masked, nns, station, \
     direction, amount, at_ms, reason, cleared_at_ms, cleared_by";

fn parse_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<UnpaidEntry> {
    let direction: String = r.get(5)?;
    let amount: i64 = r.get(6)?;
    Ok(UnpaidEntry {
        partner_reference_no: r.get(0)?,
        pan_key: r.get(1)?,
        pan_masked: r.get(2)?,
        nns: r.get(3)?,
        station: r.get(4)?,
        direction: if direction == "out" {
            Direction::Out
        } else {
            Direction::In
        },
        amount: u64::try_from(amount).unwrap_or(0),
        at_ms: r.get(7)?,
        reason: r.get(8)?,
        cleared_at_ms: r.get(9)?,
        cleared_by: r.get(10)?,
    })
}

impl Journal {
    /// The unpaid list, oldest first; with `cleared`, the cleared entries too.
    pub fn unpaid_list(&self, cleared: bool) -> Result<Vec<UnpaidEntry>, JournalError> {
        let filter = if cleared {
            ""
        } else {
            "WHERE cleared_at_ms IS NULL"
        };
        let sql = format!("SELECT {UNPAID_COLUMNS} FROM unpaid {filter} ORDER BY at_ms");
        let mut stmt = self.conn.prepare(&sql).ctx("reading the unpaid list")?;
        let rows = stmt
            .query_map([], parse_entry)
            .ctx("reading the unpaid list")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("reading the unpaid list")?;
        Ok(rows)
    }

    /// What the passenger owes, if anything.
    pub fn owed(&self, pan_key: &str) -> Result<Option<Owed>, JournalError> {
        owed_in(&self.conn, pan_key)
    }

    /// Clears what one passenger owes, named by their key (or a prefix of it of at least 8
    /// characters) or by their masked PAN (`93600915…1234`, as the list shows it), recording
    /// `by` and `now_ms`. A name that matches more than one passenger clears nothing.
    pub fn unpaid_clear(
        &mut self,
        who: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<ClearOutcome, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting to clear unpaid entries")?;
        let keys: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT DISTINCT pan_key FROM unpaid WHERE cleared_at_ms IS NULL \
                     AND (pan_masked = ?1 OR pan_key = ?1 \
                          OR (length(?1) >= 8 AND substr(pan_key, 1, length(?1)) = ?1))",
                )
                .ctx("finding unpaid entries")?;
            let keys = stmt
                .query_map([who], |r| r.get(0))
                .ctx("finding unpaid entries")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("finding unpaid entries")?;
            keys
        };
        let key = match keys.as_slice() {
            [] => return Ok(ClearOutcome::NoMatch),
            [one] => one.clone(),
            _ => return Ok(ClearOutcome::Ambiguous(keys)),
        };
        let cleared = {
            let mut stmt = tx
                .prepare(&format!(
                    "UPDATE unpaid SET cleared_at_ms = ?2, cleared_by = ?3, line_synced = 0 \
                     WHERE pan_key = ?1 AND cleared_at_ms IS NULL RETURNING {UNPAID_COLUMNS}"
                ))
                .ctx("clearing unpaid entries")?;
            let rows = stmt
                .query_map(params![key, now_ms, by], parse_entry)
                .ctx("clearing unpaid entries")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("clearing unpaid entries")?;
            rows
        };
        tx.commit().ctx("committing cleared unpaid entries")?;
        Ok(ClearOutcome::Cleared(cleared))
    }

    /// The fast-opened operations whose result is not known yet (`PENDING`, `UNKNOWN`): the
    /// station's exposure, as a restarted daemon takes it back.
    pub fn unconfirmed_fast_opens(&self) -> Result<Vec<(String, Rupiah)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT partner_reference_no, amount FROM fare_ops WHERE fast_opened = 1 \
                 AND state IN ('PENDING', 'UNKNOWN')",
            )
            .ctx("reading unconfirmed fast opens")?;
        let rows = stmt
            .query_map([], |r| {
                let amount: i64 = r.get(1)?;
                Ok((r.get(0)?, Rupiah(u64::try_from(amount).unwrap_or(0))))
            })
            .ctx("reading unconfirmed fast opens")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("reading unconfirmed fast opens")?;
        Ok(rows)
    }

    /// Entries the line has not been told of yet (new, or cleared here), oldest first.
    pub fn unpaid_unsynced(&self, limit: usize) -> Result<Vec<UnpaidEntry>, JournalError> {
        let sql = format!(
            "SELECT {UNPAID_COLUMNS} FROM unpaid WHERE line_synced = 0 ORDER BY at_ms LIMIT ?1"
        );
        let mut stmt = self.conn.prepare(&sql).ctx("reading the unpaid list")?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], parse_entry)
            .ctx("reading the unpaid list")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("reading the unpaid list")?;
        Ok(rows)
    }

    /// The line has `sent` as they were read: marked synced, unless one was cleared since.
    pub fn unpaid_synced(&mut self, sent: &[UnpaidEntry]) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("marking unpaid entries sent")?;
        for e in sent {
            exec(
                &tx,
                "UPDATE unpaid SET line_synced = 1 WHERE partner_reference_no = ?1 \
                 AND cleared_at_ms IS ?2",
                params![e.partner_reference_no, e.cleared_at_ms],
            )
            .ctx("marking unpaid entries sent")?;
        }
        tx.commit().ctx("committing unpaid entries sent")
    }

    /// Entries of this journal the line says were cleared (at any gate): cleared here too.
    /// Returns how many changed.
    pub fn unpaid_cleared_on_line(
        &mut self,
        cleared: &[UnpaidEntry],
    ) -> Result<usize, JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("clearing unpaid entries from the line")?;
        let mut n = 0;
        for e in cleared {
            n += exec(
                &tx,
                "UPDATE unpaid SET cleared_at_ms = ?2, cleared_by = ?3, line_synced = 1 \
                     WHERE partner_reference_no = ?1 AND cleared_at_ms IS NULL",
                params![e.partner_reference_no, e.cleared_at_ms, e.cleared_by],
            )
            .ctx("clearing unpaid entries from the line")?;
        }
        tx.commit()
            .ctx("committing unpaid entries cleared on the line")?;
        Ok(n)
    }
}
