//! The line store: journeys shared by every station of a line, in PostgreSQL.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;

use super::error::LineError;
use super::fingerprint::KeyFingerprint;
use super::model::{
    Applied, CloseOutcome, LineEvent, LineEventKind, LineJourney, Migrated, OpenJourney,
};
use super::schema::{MIGRATIONS, MIGRATION_LOCK, SCHEMA_VERSION, VERSION_TABLE};
use super::settings::{connection, LineSettings};
use crate::fare::Rupiah;
use crate::journal::JourneyState;

/// How long a migration may take, waiting for another station's included.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);

/// The columns of a [`LineJourney`], in [`journey_from_row`]'s order.
macro_rules! journey_columns {
    () => {
        "tap_in_ref, pan_key, entry_station, tap_in_reference_no, opened_at_ms, state, \
         closed_station, tap_out_ref, fare, closed_at_ms"
    };
}

/// The line's journeys in PostgreSQL, through a small pool of connections. Cheap to clone
/// (the clones share the pool).
///
/// Every call is bounded: the tap path's ([`LineStore::find_open`],
/// [`LineStore::close_if_open`]) by `lookup_timeout_ms`, the others by
/// `background_timeout_ms`. A call that fails for want of the database also starts, in the
/// background, one attempt to reconnect, so that the next tap finds a connection ready even
/// when connecting takes longer than a lookup's budget.
#[derive(Clone)]
pub struct LineStore {
    pool: Pool,
    settings: Arc<LineSettings>,
    warming: Arc<AtomicBool>,
}

impl std::fmt::Debug for LineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineStore")
            .field("station", &self.settings.station)
            .field("status", &self.pool.status())
            .finish()
    }
}

impl LineStore {
    /// Connects, brings the schema up to date ([`LineStore::migrate`]) and joins the line:
    /// the first gate registers its passenger-key fingerprint, every later one must match it
    /// ([`LineError::KeyMismatch`] otherwise).
    pub async fn open(
        settings: &LineSettings,
        key: &KeyFingerprint,
    ) -> Result<LineStore, LineError> {
        let store = LineStore::connect(settings)?;
        store.migrate().await?;
        store.join(key).await?;
        Ok(store)
    }

    /// The store without touching the database: connections are opened on first use. For
    /// `tapgate journeys migrate` and tools; a gate uses [`LineStore::open`].
    pub fn connect(settings: &LineSettings) -> Result<LineStore, LineError> {
        let conn = connection(settings)?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*conn.tls).clone());
        let manager = Manager::from_config(
            conn.pg,
            tls,
            ManagerConfig {
                // Fast: a connection whose socket closed (database restarted) is replaced;
                // a live one is handed out without a round trip, which the tap path cannot
                // afford.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout()))
            .build()
            .map_err(|e| LineError::Config(format!("connection pool: {e}")))?;
        Ok(LineStore {
            pool,
            settings: Arc::new(settings.clone()),
            warming: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Applies the migrations this database lacks, in one transaction, under an advisory lock
    /// so that stations starting together do not race (the later ones find nothing to do).
    /// When the schema is already current nothing is locked and no DDL runs, so a gate's role
    /// needs no DDL rights once an operator migrated with an owner role.
    pub async fn migrate(&self) -> Result<Migrated, LineError> {
        const WHAT: &str = "migrate";
        let settings = self.settings.clone();
        let fut = async {
            let mut client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let found = current_version(&client).await?;
            if found == SCHEMA_VERSION {
                return Ok(Migrated {
                    from: found,
                    to: found,
                });
            }
            check_not_newer(found)?;
            let tx = client.transaction().await.map_err(pg)?;
            let not_migrated = |e: tokio_postgres::Error| match LineError::from_pg(WHAT, &e) {
                LineError::Auth(detail) => LineError::NotMigrated {
                    found,
                    needed: SCHEMA_VERSION,
                    detail,
                },
                other => other,
            };
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg)?;
            tx.batch_execute(VERSION_TABLE)
                .await
                .map_err(not_migrated)?;
            let found: i32 = tx
                .query_one("SELECT COALESCE(max(version), 0) FROM tapgate_schema", &[])
                .await
                .map_err(pg)?
                .get(0);
            check_not_newer(found)?;
            let now = now_ms();
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
                let version = i as i32 + 1;
                tx.batch_execute(sql).await.map_err(not_migrated)?;
                tx.execute(
                    "INSERT INTO tapgate_schema (version, applied_at_ms, applied_by) \
                     VALUES ($1, $2, $3)",
                    &[&version, &now, &settings.station],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(Migrated {
                from: found,
                to: SCHEMA_VERSION,
            })
        };
        self.bounded(WHAT, MIGRATE_TIMEOUT, fut).await
    }

    /// Registers this gate's passenger-key fingerprint as the line's when the line has none,
    /// else checks that it is the line's.
    pub async fn join(&self, key: &KeyFingerprint) -> Result<(), LineError> {
        const WHAT: &str = "join the line";
        let fut = async {
            let client = self.client(WHAT).await?;
            // The CTE's insert is invisible to the outer SELECT: the row is either the one
            // just inserted or the one already there.
            let row = client
                .query_one(
                    "WITH ins AS ( \
                       INSERT INTO tapgate_line (singleton, key_fingerprint, registered_by, \
                                                 registered_at_ms) \
                       VALUES (true, $1, $2, $3) ON CONFLICT (singleton) DO NOTHING \
                       RETURNING key_fingerprint, registered_by) \
                     SELECT key_fingerprint, registered_by FROM ins \
                     UNION ALL SELECT key_fingerprint, registered_by FROM tapgate_line \
                     LIMIT 1",
                    &[&key.as_hex(), &self.settings.station, &now_ms()],
                )
                .await
                .map_err(|e| LineError::from_pg(WHAT, &e))?;
            let line = KeyFingerprint::from_hex(row.get::<_, &str>(0));
            if &line != key {
                return Err(LineError::KeyMismatch {
                    line: line.short(),
                    ours: key.short(),
                    registered_by: row.get(1),
                });
            }
            Ok(())
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// Records an event and moves its journey forward, idempotently: an event id seen before
    /// changes nothing. Events of one journey may come in any order from any station: a
    /// journey only moves forward (OPEN, then a policy close, then CLOSED, never back), and
    /// an `Opened` that comes after a close fills in the entry without reopening.
    pub async fn apply_event(&self, ev: &LineEvent) -> Result<Applied, LineError> {
        const WHAT: &str = "apply_event";
        check_event(ev)?;
        let fut = async {
            let client = self.client(WHAT).await?;
            let now = now_ms();
            let row = match &ev.kind {
                LineEventKind::Opened {
                    pan_key,
                    tap_in_reference_no,
                } => {
                    query_one(
                        &client,
                        WHAT,
                        APPLY_OPENED,
                        &[
                            &ev.event_id,
                            &ev.tap_in_ref,
                            &ev.station,
                            &ev.at_ms,
                            pan_key,
                            tap_in_reference_no,
                            &now,
                        ],
                    )
                    .await?
                }
                kind => {
                    let (reference, fare) = close_fields(kind)?;
                    query_one(
                        &client,
                        WHAT,
                        APPLY_CLOSE,
                        &[
                            &ev.event_id,
                            &ev.tap_in_ref,
                            &kind.as_str(),
                            &ev.station,
                            &ev.at_ms,
                            &reference,
                            &fare,
                            &now,
                        ],
                    )
                    .await?
                }
            };
            let (recorded, changed): (i64, i64) = (row.get(0), row.get(1));
            Ok(match (recorded, changed) {
                (0, _) => Applied::Duplicate,
                (_, 0) => Applied::NoChange,
                _ => Applied::Changed,
            })
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The passenger's open journey anywhere on the line (the latest, should there be more
    /// than one), within `lookup_timeout_ms`: past it, [`LineError::Timeout`] and the caller
    /// degrades.
    pub async fn find_open(&self, pan_key: &str) -> Result<Option<OpenJourney>, LineError> {
        const WHAT: &str = "find_open";
        let fut = async {
            let client = self.client(WHAT).await?;
            let row = query_opt(&client, WHAT, FIND_OPEN, &[&pan_key]).await?;
            row.map(|r| open_from_row(&r)).transpose()
        };
        self.bounded(WHAT, self.settings.lookup_timeout(), fut)
            .await
    }

    /// Closes the journey if, and only if, it is still open: one conditional `UPDATE ...
    /// WHERE state = 'OPEN'`, so of two exits racing for one journey exactly one closes it.
    /// The close is recorded as the event `ev` in the same statement (the replicator's later
    /// copy of it is then a duplicate). Calling again with the same event id after a lost
    /// answer reports `Closed` again. Bounded by `lookup_timeout_ms`.
    pub async fn close_if_open(&self, ev: &LineEvent) -> Result<CloseOutcome, LineError> {
        const WHAT: &str = "close_if_open";
        check_event(ev)?;
        let (reference, fare) = close_fields(&ev.kind)?;
        let fut = async {
            let client = self.client(WHAT).await?;
            let won = query_opt(
                &client,
                WHAT,
                CLOSE_IF_OPEN,
                &[
                    &ev.event_id,
                    &ev.tap_in_ref,
                    &ev.kind.as_str(),
                    &ev.station,
                    &ev.at_ms,
                    &reference,
                    &fare,
                    &now_ms(),
                ],
            )
            .await?;
            if let Some(row) = won {
                return Ok(CloseOutcome::Closed(journey_from_row(&row)?));
            }
            let Some(row) = query_opt(
                &client,
                WHAT,
                JOURNEY_AND_EVENT,
                &[&ev.tap_in_ref, &ev.event_id],
            )
            .await?
            else {
                return Ok(CloseOutcome::NotFound);
            };
            let journey = journey_from_row(&row)?;
            let ours: bool = row.get(JOURNEY_COLUMN_COUNT);
            Ok(if ours {
                CloseOutcome::Closed(journey)
            } else {
                CloseOutcome::AlreadyClosed(journey)
            })
        };
        self.bounded(WHAT, self.settings.lookup_timeout(), fut)
            .await
    }

    /// The journey, as the line knows it.
    pub async fn journey(&self, tap_in_ref: &str) -> Result<Option<LineJourney>, LineError> {
        const WHAT: &str = "journey";
        let fut = async {
            let client = self.client(WHAT).await?;
            let row = query_opt(&client, WHAT, JOURNEY, &[&tap_in_ref]).await?;
            row.map(|r| journey_from_row(&r)).transpose()
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The journey if it was closed anywhere on the line (by a tap-out or a policy close):
    /// the stale sweep asks before closing a journey at the maximum fare.
    pub async fn is_closed_anywhere(
        &self,
        tap_in_ref: &str,
    ) -> Result<Option<LineJourney>, LineError> {
        Ok(self
            .journey(tap_in_ref)
            .await?
            .filter(|j| j.state != JourneyState::Open))
    }

    /// Deletes up to `batch` journeys closed before `closed_before_ms`, with their events;
    /// returns how many. Open journeys are never pruned. Call until it returns less than
    /// `batch`; stations pruning at once skip each other's rows.
    pub async fn prune(&self, closed_before_ms: i64, batch: u32) -> Result<u64, LineError> {
        const WHAT: &str = "prune";
        let fut = async {
            let client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let stmt = client.prepare_cached(PRUNE).await.map_err(pg)?;
            client
                .execute(&stmt, &[&closed_before_ms, &i64::from(batch)])
                .await
                .map_err(pg)
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The schema version of the database (0: none yet).
    pub async fn schema_version(&self) -> Result<i32, LineError> {
        const WHAT: &str = "schema_version";
        let fut = async {
            let client = self.client(WHAT).await?;
            current_version(&client).await
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// A connection from the pool.
    async fn client(&self, what: &'static str) -> Result<deadpool_postgres::Object, LineError> {
        self.pool
            .get()
            .await
            .map_err(|e| LineError::from_pool(what, e))
    }

    /// Runs `fut` within `budget`; when it fails for want of the database, starts a
    /// reconnection in the background.
    async fn bounded<T>(
        &self,
        what: &'static str,
        budget: Duration,
        fut: impl Future<Output = Result<T, LineError>>,
    ) -> Result<T, LineError> {
        let r = match tokio::time::timeout(budget, fut).await {
            Ok(r) => r,
            Err(_) => Err(LineError::Timeout {
                what,
                after_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        if matches!(&r, Err(e) if e.is_retryable()) {
            self.warm();
        }
        r
    }

    /// One background attempt to have a live connection in the pool (at most one at a time).
    fn warm(&self) {
        if self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.pool.clone();
        let flag = self.warming.clone();
        let budget = self.settings.connect_timeout();
        tokio::spawn(async move {
            // Getting a connection replaces a closed one or opens a new one; dropping it
            // returns it to the pool for the next tap.
            let _ = tokio::time::timeout(budget, pool.get()).await;
            flag.store(false, Ordering::Release);
        });
    }
}

fn check_not_newer(found: i32) -> Result<(), LineError> {
    if found > SCHEMA_VERSION {
        return Err(LineError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The schema version, 0 when the version table does not exist yet.
async fn current_version(client: &tokio_postgres::Client) -> Result<i32, LineError> {
    let pg = |e: tokio_postgres::Error| LineError::from_pg("schema_version", &e);
    let exists: bool = client
        .query_one("SELECT to_regclass('tapgate_schema') IS NOT NULL", &[])
        .await
        .map_err(pg)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT COALESCE(max(version), 0) FROM tapgate_schema", &[])
        .await
        .map_err(pg)?
        .get(0))
}

fn check_event(ev: &LineEvent) -> Result<(), LineError> {
    for (name, v) in [
        ("event_id", &ev.event_id),
        ("tap_in_ref", &ev.tap_in_ref),
        ("station", &ev.station),
    ] {
        if v.is_empty() {
            return Err(LineError::Invalid(format!("{name} is empty")));
        }
    }
    if let LineEventKind::Opened { pan_key, .. } = &ev.kind {
        if pan_key.is_empty() {
            return Err(LineError::Invalid("pan_key is empty".into()));
        }
    }
    Ok(())
}

/// The tap-out reference and fare of a closing event.
fn close_fields(kind: &LineEventKind) -> Result<(Option<&str>, Option<i64>), LineError> {
    let fare = |f: Rupiah| {
        i64::try_from(f.0).map_err(|_| LineError::Invalid(format!("fare {f} is too large")))
    };
    Ok(match kind {
        LineEventKind::Opened { .. } => {
            return Err(LineError::Invalid(
                "an opened event does not close a journey".into(),
            ))
        }
        LineEventKind::Closed {
            tap_out_ref,
            fare: f,
        } => (Some(tap_out_ref.as_str()), Some(fare(*f)?)),
        LineEventKind::StaleClosed { fare: f } => (None, f.map(fare).transpose()?),
        LineEventKind::Void | LineEventKind::Released => (None, None),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn decode<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
) -> Result<T, LineError> {
    row.try_get(i).map_err(|e| LineError::Database {
        what: "decode",
        detail: e.to_string(),
    })
}

fn state_of(s: &str) -> Result<JourneyState, LineError> {
    JourneyState::parse(s).ok_or_else(|| LineError::Database {
        what: "decode",
        detail: format!("unknown journey state {s:?}"),
    })
}

fn open_from_row(r: &Row) -> Result<OpenJourney, LineError> {
    Ok(OpenJourney {
        tap_in_ref: decode(r, 0)?,
        pan_key: decode(r, 1)?,
        entry_station: decode(r, 2)?,
        tap_in_reference_no: decode(r, 3)?,
        opened_at_ms: decode(r, 4)?,
    })
}

const JOURNEY_COLUMN_COUNT: usize = 10;

fn journey_from_row(r: &Row) -> Result<LineJourney, LineError> {
    let fare: Option<i64> = decode(r, 8)?;
    Ok(LineJourney {
        tap_in_ref: decode(r, 0)?,
        pan_key: decode(r, 1)?,
        entry_station: decode(r, 2)?,
        tap_in_reference_no: decode(r, 3)?,
        opened_at_ms: decode(r, 4)?,
        state: state_of(decode(r, 5)?)?,
        closed_station: decode(r, 6)?,
        tap_out_ref: decode(r, 7)?,
        fare: fare.map(|f| Rupiah(f.max(0) as u64)),
        closed_at_ms: decode(r, 9)?,
    })
}

/// `$1` event id, `$2` tap-in ref, `$3` station, `$4` at, `$5` pan key, `$6` tap-in
/// referenceNo, `$7` now. Records the event unless seen; fills in the journey's entry, or
/// creates it open. Returns (events recorded, journeys changed).
const APPLY_OPENED: &str = "
WITH ev AS (
    INSERT INTO tapgate_journey_events
        (event_id, tap_in_ref, kind, station, at_ms, pan_key, reference, applied_at_ms)
    VALUES ($1, $2, 'OPENED', $3, $4, $5, $6, $7)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
), j AS (
    INSERT INTO tapgate_journeys AS j
        (tap_in_ref, pan_key, entry_station, tap_in_reference_no, opened_at_ms, state,
         updated_at_ms)
    SELECT $2, $5, $3, $6, $4, 'OPEN', $7 WHERE EXISTS (SELECT 1 FROM ev)
    ON CONFLICT (tap_in_ref) DO UPDATE SET
        pan_key = COALESCE(j.pan_key, EXCLUDED.pan_key),
        entry_station = COALESCE(j.entry_station, EXCLUDED.entry_station),
        tap_in_reference_no = COALESCE(j.tap_in_reference_no, EXCLUDED.tap_in_reference_no),
        opened_at_ms = COALESCE(j.opened_at_ms, EXCLUDED.opened_at_ms),
        updated_at_ms = EXCLUDED.updated_at_ms
    WHERE j.pan_key IS NULL OR j.entry_station IS NULL OR j.opened_at_ms IS NULL
       OR (j.tap_in_reference_no IS NULL AND EXCLUDED.tap_in_reference_no IS NOT NULL)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM j)";

/// `$1` event id, `$2` tap-in ref, `$3` kind (= the state it closes to), `$4` station,
/// `$5` at, `$6` tap-out ref, `$7` fare, `$8` now. Records the event unless seen; moves the
/// journey to the closing state if that is forward, or creates it closed. Returns (events
/// recorded, journeys changed).
const APPLY_CLOSE: &str = "
WITH ev AS (
    INSERT INTO tapgate_journey_events
        (event_id, tap_in_ref, kind, station, at_ms, reference, fare, applied_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
), j AS (
    INSERT INTO tapgate_journeys AS j
        (tap_in_ref, state, closed_station, tap_out_ref, fare, closed_at_ms, updated_at_ms)
    SELECT $2, $3, $4, $6, $7, $5, $8 WHERE EXISTS (SELECT 1 FROM ev)
    ON CONFLICT (tap_in_ref) DO UPDATE SET
        state = EXCLUDED.state,
        closed_station = EXCLUDED.closed_station,
        tap_out_ref = EXCLUDED.tap_out_ref,
        fare = EXCLUDED.fare,
        closed_at_ms = EXCLUDED.closed_at_ms,
        updated_at_ms = EXCLUDED.updated_at_ms
    WHERE tapgate_journey_rank(j.state) < tapgate_journey_rank(EXCLUDED.state)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM j)";

/// Same parameters as [`APPLY_CLOSE`]. The conditional close: returns the journey when this
/// statement closed it, no row otherwise.
const CLOSE_IF_OPEN: &str = "
WITH c AS (
    UPDATE tapgate_journeys SET
        state = $3, closed_station = $4, tap_out_ref = $6, fare = $7, closed_at_ms = $5,
        updated_at_ms = $8
    WHERE tap_in_ref = $2 AND state = 'OPEN'
    RETURNING *
), ev AS (
    INSERT INTO tapgate_journey_events
        (event_id, tap_in_ref, kind, station, at_ms, reference, fare, applied_at_ms)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM c
    ON CONFLICT (event_id) DO NOTHING
)
SELECT tap_in_ref, pan_key, entry_station, tap_in_reference_no, opened_at_ms, state,
       closed_station, tap_out_ref, fare, closed_at_ms
FROM c";

const FIND_OPEN: &str = "
SELECT tap_in_ref, pan_key, entry_station, tap_in_reference_no, opened_at_ms
FROM tapgate_journeys
WHERE pan_key = $1 AND state = 'OPEN'
ORDER BY opened_at_ms DESC
LIMIT 1";

/// `$1` tap-in ref.
const JOURNEY: &str = concat!(
    "SELECT ",
    journey_columns!(),
    " FROM tapgate_journeys WHERE tap_in_ref = $1"
);

/// `$1` tap-in ref, `$2` event id: the journey and whether that event was recorded.
const JOURNEY_AND_EVENT: &str = concat!(
    "SELECT ",
    journey_columns!(),
    ", EXISTS (SELECT 1 FROM tapgate_journey_events WHERE event_id = $2) \
     FROM tapgate_journeys WHERE tap_in_ref = $1"
);

/// `$1` closed before, `$2` batch.
const PRUNE: &str = "
WITH doomed AS (
    SELECT tap_in_ref FROM tapgate_journeys
    WHERE state <> 'OPEN' AND closed_at_ms < $1
    ORDER BY closed_at_ms
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), ev AS (
    DELETE FROM tapgate_journey_events e USING doomed d WHERE e.tap_in_ref = d.tap_in_ref
)
DELETE FROM tapgate_journeys j USING doomed d WHERE j.tap_in_ref = d.tap_in_ref";

/// The parameters of one statement.
type Params<'a> = [&'a (dyn tokio_postgres::types::ToSql + Sync)];

/// Runs one cached statement that returns at most one row.
async fn query_opt(
    client: &deadpool_postgres::Object,
    what: &'static str,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, LineError> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| LineError::from_pg(what, &e))?;
    client
        .query_opt(&stmt, params)
        .await
        .map_err(|e| LineError::from_pg(what, &e))
}

/// Runs one cached statement that returns exactly one row.
async fn query_one(
    client: &deadpool_postgres::Object,
    what: &'static str,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, LineError> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(|e| LineError::from_pg(what, &e))?;
    client
        .query_one(&stmt, params)
        .await
        .map_err(|e| LineError::from_pg(what, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: LineEventKind) -> LineEvent {
        LineEvent {
            event_id: "E1".into(),
            tap_in_ref: "J1".into(),
            station: "BLM".into(),
            at_ms: 1,
            kind,
        }
    }

    #[test]
    fn events_the_store_cannot_hold_are_refused_before_any_io() {
        let opened = LineEventKind::Opened {
            pan_key: "p".into(),
            tap_in_reference_no: None,
        };
        assert!(check_event(&ev(opened.clone())).is_ok());
        let mut e = ev(opened.clone());
        e.event_id.clear();
        assert!(matches!(check_event(&e), Err(LineError::Invalid(m)) if m.contains("event_id")));
        let e = ev(LineEventKind::Opened {
            pan_key: String::new(),
            tap_in_reference_no: None,
        });
        assert!(matches!(check_event(&e), Err(LineError::Invalid(m)) if m.contains("pan_key")));
        // An open does not close; a fare past bigint is refused, not wrapped.
        assert!(matches!(close_fields(&opened), Err(LineError::Invalid(_))));
        let huge = LineEventKind::Closed {
            tap_out_ref: "O".into(),
            fare: Rupiah(u64::MAX),
        };
        assert!(matches!(close_fields(&huge), Err(LineError::Invalid(_))));
        assert_eq!(
            close_fields(&LineEventKind::StaleClosed {
                fare: Some(Rupiah(14_000))
            })
            .unwrap(),
            (None, Some(14_000))
        );
        assert_eq!(close_fields(&LineEventKind::Void).unwrap(), (None, None));
    }
}
