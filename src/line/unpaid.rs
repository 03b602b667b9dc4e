//! The line's unpaid list: each station sends the entries its journal wrote (and their
//! clearing); an entry may be cleared at any gate of the line, and its station follows.
//! Entry taps anywhere on the line see what a passenger owes in the lookup's round trip.

use tokio_postgres::Row;

use super::error::LineError;
use super::store::{decode, LineStore};
use crate::fare::Direction;
use crate::journal::{ClearOutcome, UnpaidEntry};

const UPSERT: &str = "
INSERT INTO tapgate_unpaid (partner_reference_no, pan_key, pan_masked, nns, station, direction,
    amount, at_ms, reason, cleared_at_ms, cleared_by, updated_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (partner_reference_no) DO UPDATE SET
    cleared_at_ms = coalesce(tapgate_unpaid.cleared_at_ms, EXCLUDED.cleared_at_ms),
    cleared_by = coalesce(tapgate_unpaid.cleared_by, EXCLUDED.cleared_by),
    updated_at_ms = EXCLUDED.updated_at_ms";

const COLUMNS: &str = "partner_reference_no, pan_key, pan_masked, nns, station, direction, \
     amount, at_ms, reason, cleared_at_ms, cleared_by";

fn entry_from_row(r: &Row) -> Result<UnpaidEntry, LineError> {
    let direction: String = decode(r, 5)?;
    let amount: i64 = decode(r, 6)?;
    Ok(UnpaidEntry {
        partner_reference_no: decode(r, 0)?,
        pan_key: decode(r, 1)?,
        pan_masked: decode(r, 2)?,
        nns: decode(r, 3)?,
        station: decode(r, 4)?,
        direction: if direction == "out" {
            Direction::Out
        } else {
            Direction::In
        },
        amount: u64::try_from(amount).unwrap_or(0),
        at_ms: decode(r, 7)?,
        reason: decode(r, 8)?,
        cleared_at_ms: decode(r, 9)?,
        cleared_by: decode(r, 10)?,
    })
}

impl LineStore {
    /// Sends a station's entries (new ones, and their clearing) in one transaction; an entry
    /// already cleared on the line stays cleared. Bounded by `background_timeout_ms`.
    pub async fn push_unpaid(&self, entries: &[UnpaidEntry], now_ms: i64) -> Result<(), LineError> {
        const WHAT: &str = "push_unpaid";
        if entries.is_empty() {
            return Ok(());
        }
        let fut = async {
            let mut client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let tx = client.transaction().await.map_err(pg)?;
            let stmt = tx.prepare_cached(UPSERT).await.map_err(pg)?;
            for e in entries {
                let amount = i64::try_from(e.amount)
                    .map_err(|_| LineError::Invalid("amount past bigint".into()))?;
                tx.execute(
                    &stmt,
                    &[
                        &e.partner_reference_no,
                        &e.pan_key,
                        &e.pan_masked,
                        &e.nns,
                        &e.station,
                        &e.direction.as_str(),
                        &amount,
                        &e.at_ms,
                        &e.reason,
                        &e.cleared_at_ms,
                        &e.cleared_by,
                        &now_ms,
                    ],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// Of `refs`, the entries the line has cleared (by a gate of any station).
    pub async fn unpaid_cleared(&self, refs: &[String]) -> Result<Vec<UnpaidEntry>, LineError> {
        const WHAT: &str = "unpaid_cleared";
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM tapgate_unpaid WHERE partner_reference_no = ANY($1) \
             AND cleared_at_ms IS NOT NULL"
        );
        let fut = async {
            let client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let stmt = client.prepare_cached(&sql).await.map_err(pg)?;
            let rows = client.query(&stmt, &[&refs]).await.map_err(pg)?;
            rows.iter().map(entry_from_row).collect()
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The line's unpaid list, oldest first; with `cleared`, the cleared entries too.
    pub async fn unpaid_list(&self, cleared: bool) -> Result<Vec<UnpaidEntry>, LineError> {
        const WHAT: &str = "unpaid_list";
        let filter = if cleared {
            ""
        } else {
            "WHERE cleared_at_ms IS NULL"
        };
        let sql = format!("SELECT {COLUMNS} FROM tapgate_unpaid {filter} ORDER BY at_ms");
        let fut = async {
            let client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let rows = client.query(&sql, &[]).await.map_err(pg)?;
            rows.iter().map(entry_from_row).collect()
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// Clears what one passenger owes line-wide, named as for
    /// [`crate::journal::Journal::unpaid_clear`] (key, key prefix of 8 or more, masked PAN).
    pub async fn unpaid_clear(
        &self,
        who: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<ClearOutcome, LineError> {
        const WHAT: &str = "unpaid_clear";
        let fut = async {
            let mut client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let tx = client.transaction().await.map_err(pg)?;
            let keys: Vec<String> = tx
                .query(
                    "SELECT DISTINCT pan_key FROM tapgate_unpaid WHERE cleared_at_ms IS NULL \
                     AND (pan_masked = $1 OR pan_key = $1 \
                          OR (length($1) >= 8 AND left(pan_key, length($1)) = $1))",
                    &[&who],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| decode(r, 0))
                .collect::<Result<_, _>>()?;
            let key = match keys.as_slice() {
                [] => return Ok(ClearOutcome::NoMatch),
                [one] => one.clone(),
                _ => return Ok(ClearOutcome::Ambiguous(keys)),
            };
            let rows = tx
                .query(
                    &format!(
                        "UPDATE tapgate_unpaid SET cleared_at_ms = $2, cleared_by = $3, \
                         updated_at_ms = $2 WHERE pan_key = $1 AND cleared_at_ms IS NULL \
                         RETURNING {COLUMNS}"
                    ),
                    &[&key, &now_ms, &by],
                )
                .await
                .map_err(pg)?;
            let cleared = rows.iter().map(entry_from_row).collect::<Result<_, _>>()?;
            tx.commit().await.map_err(pg)?;
            Ok(ClearOutcome::Cleared(cleared))
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }
}
