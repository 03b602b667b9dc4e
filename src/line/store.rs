//! The line store: journeys shared by every station of a line, in PostgreSQL.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;

use super::error::LineError;
use super::fingerprint::KeyFingerprint;
use super::model::{
    Applied, CloseOutcome, LineEvent, LineEventKind, LineJourney, LookupAnswer, LookupQuery,
    Migrated, OpenJourney,
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
         closed_station, tap_out_ref, fare, closed_at_ms, references_hold"
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
    pub(super) settings: Arc<LineSettings>,
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
        let row = EventRow::new(ev, now_ms())?;
        let fut = async {
            let client = self.client(WHAT).await?;
            let r = query_one(&client, WHAT, row.sql(), &row.params()).await?;
            Ok(applied_from_row(&r))
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// Applies a batch of events in ONE transaction, with the same outcome as
    /// [`LineStore::apply_event`] on each in order (a later event of the batch sees what the
    /// earlier ones did; an event id twice in the batch is a `Duplicate` the second time).
    /// The statements are pipelined: the batch costs about one round trip and one commit.
    /// All or nothing: on an error nothing of the batch is recorded. Bounded by
    /// `background_timeout_ms`.
    pub async fn apply_events(&self, evs: &[LineEvent]) -> Result<Vec<Applied>, LineError> {
        const WHAT: &str = "apply_events";
        let now = now_ms();
        let rows = evs
            .iter()
            .map(|e| EventRow::new(e, now))
            .collect::<Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let fut = async {
            let mut client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let tx = client.transaction().await.map_err(pg)?;
            // Prepared before the pipeline, so that every statement goes out in order on its
            // first poll (a prepare would delay one behind the next).
            let opened = tx.prepare_cached(APPLY_OPENED).await.map_err(pg)?;
            let close = tx.prepare_cached(APPLY_CLOSE).await.map_err(pg)?;
            let params: Vec<_> = rows.iter().map(EventRow::params).collect();
            let futs: Vec<PgFuture<'_, Row>> = rows
                .iter()
                .zip(&params)
                .map(|(r, p)| {
                    let stmt = if r.opened { &opened } else { &close };
                    Box::pin(tx.query_one(stmt, p)) as PgFuture<'_, Row>
                })
                .collect();
            let results = join_in_order(futs).await.map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(results.iter().map(applied_from_row).collect())
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The exit's (or entry's) question to the line, in ONE round trip (the
    /// `tapgate_lookup` function): the passenger's newest open journey, claimed for
    /// `q.claim` when asked and free; who else holds a live claim on it; a tap-out close of
    /// this passenger since `q.debounce_since_ms`; and the line's view of the journey the
    /// local journal believes open. Within `lookup_timeout_ms`, waiting for a pooled
    /// connection included: past it, [`LineError::Timeout`] and the caller degrades.
    pub async fn lookup(&self, q: &LookupQuery) -> Result<LookupAnswer, LineError> {
        const WHAT: &str = "lookup";
        if q.pan_key.is_empty() {
            return Err(LineError::Invalid("pan_key is empty".into()));
        }
        if matches!(&q.claim, Some(c) if c.is_empty()) {
            return Err(LineError::Invalid("claim is empty".into()));
        }
        let fut = async {
            let client = self.client(WHAT).await?;
            let row = query_one(
                &client,
                WHAT,
                LOOKUP,
                &[
                    &q.pan_key,
                    &q.claim,
                    &q.local_tap_in_ref,
                    &q.now_ms,
                    &q.claim_ms,
                    &q.debounce_since_ms,
                ],
            )
            .await?;
            let open_ref: Option<String> = decode(&row, 0)?;
            let open = match open_ref {
                Some(tap_in_ref) => Some(OpenJourney {
                    tap_in_ref,
                    pan_key: decode::<Option<String>>(&row, 1)?
                        .unwrap_or_else(|| q.pan_key.clone()),
                    entry_station: decode::<Option<String>>(&row, 2)?.unwrap_or_default(),
                    tap_in_reference_no: decode(&row, 3)?,
                    opened_at_ms: decode::<Option<i64>>(&row, 4)?.unwrap_or(0),
                }),
                None => None,
            };
            let local_ref: Option<String> = decode(&row, LOOKUP_LOCAL)?;
            let local = match local_ref {
                Some(_) => Some(journey_at(&row, LOOKUP_LOCAL)?),
                None => None,
            };
            let owed: Option<i64> = decode(&row, LOOKUP_OWED)?;
            let entries: i64 = decode(&row, LOOKUP_OWED + 1)?;
            Ok(LookupAnswer {
                open,
                claimed_by: decode(&row, 5)?,
                recent_close: decode(&row, 6)?,
                local,
                owed: owed
                    .filter(|_| entries > 0)
                    .map(|o| tapgate_core::journal::Owed {
                        amount: Rupiah(u64::try_from(o).unwrap_or(0)),
                        count: u32::try_from(entries).unwrap_or(u32::MAX),
                    }),
            })
        };
        self.bounded(WHAT, self.settings.lookup_timeout(), fut)
            .await
    }

    /// Gives up an exit's claim (the tap-out failed or was declined), so that another exit
    /// need not wait for it to expire. Clears it only if it is still `claim`'s. Bounded by
    /// `background_timeout_ms`.
    pub async fn release_claim(&self, tap_in_ref: &str, claim: &str) -> Result<(), LineError> {
        const WHAT: &str = "release_claim";
        let fut = async {
            let client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let stmt = client.prepare_cached(RELEASE_CLAIM).await.map_err(pg)?;
            client
                .execute(&stmt, &[&tap_in_ref, &claim])
                .await
                .map_err(pg)?;
            Ok(())
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The journeys the line knows among `refs` (tap-in refs), in one query; those it does
    /// not know are left out. Bounded by `background_timeout_ms`.
    pub async fn journeys(&self, refs: &[String]) -> Result<Vec<LineJourney>, LineError> {
        const WHAT: &str = "journeys";
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let fut = async {
            let client = self.client(WHAT).await?;
            let pg = |e: tokio_postgres::Error| LineError::from_pg(WHAT, &e);
            let stmt = client.prepare_cached(JOURNEYS).await.map_err(pg)?;
            let rows = client.query(&stmt, &[&refs]).await.map_err(pg)?;
            rows.iter().map(journey_from_row).collect()
        };
        self.bounded(WHAT, self.settings.background_timeout(), fut)
            .await
    }

    /// The converge of an exit that did not know its entry: the newest journey of `pan_key`
    /// opened in `[exit_at_ms - max_trip_ms, exit_at_ms]` that no tap-out closed (state
    /// `OPEN`, `STALE_CLOSED` or `RELEASED`; a `VOID` tap-in was never paid). The caller
    /// then closes it with a `Closed { references_hold: false, .. }` event, which outranks a
    /// policy close. Bounded by `background_timeout_ms`.
    pub async fn entry_for_unknown_exit(
        &self,
        pan_key: &str,
        exit_at_ms: i64,
        max_trip_ms: i64,
    ) -> Result<Option<LineJourney>, LineError> {
        const WHAT: &str = "entry_for_unknown_exit";
        let since = exit_at_ms.saturating_sub(max_trip_ms.max(0));
        let fut = async {
            let client = self.client(WHAT).await?;
            let row = query_opt(
                &client,
                WHAT,
                ENTRY_FOR_UNKNOWN_EXIT,
                &[&pan_key, &since, &exit_at_ms],
            )
            .await?;
            row.map(|r| journey_from_row(&r)).transpose()
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
        let row = EventRow::new(ev, now_ms())?;
        if row.opened {
            return Err(LineError::Invalid(
                "an opened event does not close a journey".into(),
            ));
        }
        let fut = async {
            let client = self.client(WHAT).await?;
            let won = query_opt(&client, WHAT, CLOSE_IF_OPEN, &row.params()).await?;
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
    pub(super) async fn client(
        &self,
        what: &'static str,
    ) -> Result<deadpool_postgres::Object, LineError> {
        self.pool
            .get()
            .await
            .map_err(|e| LineError::from_pool(what, e))
    }

    /// Runs `fut` within `budget`; when it fails for want of the database, starts a
    /// reconnection in the background.
    pub(super) async fn bounded<T>(
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

/// One event as the parameters of its statement ([`APPLY_OPENED`] or [`APPLY_CLOSE`], whose
/// parameters [`CLOSE_IF_OPEN`] shares).
struct EventRow<'a> {
    ev: &'a LineEvent,
    opened: bool,
    pan_key: Option<&'a str>,
    tap_in_reference_no: Option<&'a str>,
    reference: Option<&'a str>,
    fare: Option<i64>,
    references_hold: Option<bool>,
    kind: &'static str,
    now: i64,
}

impl<'a> EventRow<'a> {
    fn new(ev: &'a LineEvent, now: i64) -> Result<EventRow<'a>, LineError> {
        check_event(ev)?;
        let mut row = EventRow {
            ev,
            opened: false,
            pan_key: None,
            tap_in_reference_no: None,
            reference: None,
            fare: None,
            references_hold: None,
            kind: ev.kind.as_str(),
            now,
        };
        if let LineEventKind::Opened {
            pan_key,
            tap_in_reference_no,
        } = &ev.kind
        {
            row.opened = true;
            row.pan_key = Some(pan_key);
            row.tap_in_reference_no = tap_in_reference_no.as_deref();
        } else {
            (row.reference, row.fare, row.references_hold) = close_fields(&ev.kind)?;
        }
        Ok(row)
    }

    fn sql(&self) -> &'static str {
        if self.opened {
            APPLY_OPENED
        } else {
            APPLY_CLOSE
        }
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let ev = self.ev;
        if self.opened {
            vec![
                &ev.event_id,
                &ev.tap_in_ref,
                &ev.station,
                &ev.at_ms,
                &self.pan_key,
                &self.tap_in_reference_no,
                &self.now,
            ]
        } else {
            vec![
                &ev.event_id,
                &ev.tap_in_ref,
                &self.kind,
                &ev.station,
                &ev.at_ms,
                &self.reference,
                &self.fare,
                &self.now,
                &self.references_hold,
            ]
        }
    }
}

fn applied_from_row(row: &Row) -> Applied {
    let (recorded, changed): (i64, i64) = (row.get(0), row.get(1));
    match (recorded, changed) {
        (0, _) => Applied::Duplicate,
        (_, 0) => Applied::NoChange,
        _ => Applied::Changed,
    }
}

/// A boxed query future of the pipeline in [`LineStore::apply_events`].
type PgFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// Polls every future, in order, until all are done: each query is sent on its first poll,
/// so they leave in order and the server answers them in order (a pipeline). The first
/// error, in order, ends it.
async fn join_in_order<T>(mut futs: Vec<PgFuture<'_, T>>) -> Result<Vec<T>, tokio_postgres::Error> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                Poll::Ready(Ok(v)) => *slot = Some(v),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(out.into_iter().flatten().collect())
}

/// The tap-out reference, fare and whether the tap-out referenced the hold, of a closing
/// event.
type CloseFields<'a> = (Option<&'a str>, Option<i64>, Option<bool>);

/// The [`CloseFields`] of a closing event.
fn close_fields(kind: &LineEventKind) -> Result<CloseFields<'_>, LineError> {
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
            references_hold,
        } => (
            Some(tap_out_ref.as_str()),
            Some(fare(*f)?),
            Some(*references_hold),
        ),
        LineEventKind::StaleClosed { fare: f } => (None, f.map(fare).transpose()?, None),
        LineEventKind::Void | LineEventKind::Released => (None, None, None),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(super) fn decode<'a, T: tokio_postgres::types::FromSql<'a>>(
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

const JOURNEY_COLUMN_COUNT: usize = 11;

fn journey_from_row(r: &Row) -> Result<LineJourney, LineError> {
    journey_at(r, 0)
}

/// The journey whose [`journey_columns`] start at column `at`.
fn journey_at(r: &Row, at: usize) -> Result<LineJourney, LineError> {
    let fare: Option<i64> = decode(r, at + 8)?;
    Ok(LineJourney {
        tap_in_ref: decode(r, at)?,
        pan_key: decode(r, at + 1)?,
        entry_station: decode(r, at + 2)?,
        tap_in_reference_no: decode(r, at + 3)?,
        opened_at_ms: decode(r, at + 4)?,
        state: state_of(decode(r, at + 5)?)?,
        closed_station: decode(r, at + 6)?,
        tap_out_ref: decode(r, at + 7)?,
        fare: fare.map(|f| Rupiah(f.max(0) as u64)),
        closed_at_ms: decode(r, at + 9)?,
        references_hold: decode(r, at + 10)?,
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
/// `$5` at, `$6` tap-out ref, `$7` fare, `$8` now, `$9` references hold. Records the event
/// unless seen; moves the journey to the closing state if that is forward (clearing any
/// exit's claim), or creates it closed. Returns (events recorded, journeys changed).
const APPLY_CLOSE: &str = "
WITH ev AS (
    INSERT INTO tapgate_journey_events
        (event_id, tap_in_ref, kind, station, at_ms, reference, fare, applied_at_ms,
         references_hold)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
), j AS (
    INSERT INTO tapgate_journeys AS j
        (tap_in_ref, state, closed_station, tap_out_ref, fare, closed_at_ms, updated_at_ms,
         references_hold)
    SELECT $2, $3, $4, $6, $7, $5, $8, $9 WHERE EXISTS (SELECT 1 FROM ev)
    ON CONFLICT (tap_in_ref) DO UPDATE SET
        state = EXCLUDED.state,
        closed_station = EXCLUDED.closed_station,
        tap_out_ref = EXCLUDED.tap_out_ref,
        fare = EXCLUDED.fare,
        closed_at_ms = EXCLUDED.closed_at_ms,
        updated_at_ms = EXCLUDED.updated_at_ms,
        references_hold = EXCLUDED.references_hold,
        claim_ref = NULL,
        claim_expires_ms = NULL
    WHERE tapgate_journey_rank(j.state) < tapgate_journey_rank(EXCLUDED.state)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM j)";

/// Same parameters as [`APPLY_CLOSE`]. The conditional close: returns the journey when this
/// statement closed it, no row otherwise.
const CLOSE_IF_OPEN: &str = concat!(
    "
WITH c AS (
    UPDATE tapgate_journeys SET
        state = $3, closed_station = $4, tap_out_ref = $6, fare = $7, closed_at_ms = $5,
        updated_at_ms = $8, references_hold = $9, claim_ref = NULL, claim_expires_ms = NULL
    WHERE tap_in_ref = $2 AND state = 'OPEN'
    RETURNING *
), ev AS (
    INSERT INTO tapgate_journey_events
        (event_id, tap_in_ref, kind, station, at_ms, reference, fare, applied_at_ms,
         references_hold)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM c
    ON CONFLICT (event_id) DO NOTHING
)
SELECT ",
    journey_columns!(),
    " FROM c"
);

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

/// `$1` tap-in refs.
const JOURNEYS: &str = concat!(
    "SELECT ",
    journey_columns!(),
    " FROM tapgate_journeys WHERE tap_in_ref = ANY($1)"
);

/// `$1` pan key, `$2` opened at or after, `$3` opened at or before.
const ENTRY_FOR_UNKNOWN_EXIT: &str = concat!(
    "SELECT ",
    journey_columns!(),
    " FROM tapgate_journeys \
     WHERE pan_key = $1 AND opened_at_ms BETWEEN $2 AND $3 \
       AND state IN ('OPEN', 'STALE_CLOSED', 'RELEASED') AND tap_out_ref IS NULL \
     ORDER BY opened_at_ms DESC LIMIT 1"
);

/// See `tapgate_lookup` in the schema (migration 2): `$1` pan key, `$2` claim, `$3` local
/// tap-in ref, `$4` now, `$5` claim lifetime, `$6` debounce since. One row; the local
/// journey's [`journey_columns`] start at [`LOOKUP_LOCAL`]; what the passenger owes on the
/// unpaid list (migration 3) follows at [`LOOKUP_OWED`], in the same round trip.
const LOOKUP: &str = "SELECT f.*, u.owed, u.entries FROM tapgate_lookup($1, $2, $3, $4, $5, $6) f \
     CROSS JOIN LATERAL (SELECT sum(amount)::bigint AS owed, count(*) AS entries \
     FROM tapgate_unpaid WHERE pan_key = $1 AND cleared_at_ms IS NULL) u";
const LOOKUP_LOCAL: usize = 7;
const LOOKUP_OWED: usize = 18;

/// `$1` tap-in ref, `$2` claim.
const RELEASE_CLAIM: &str = "
UPDATE tapgate_journeys SET claim_ref = NULL, claim_expires_ms = NULL
WHERE tap_in_ref = $1 AND claim_ref = $2";

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
            references_hold: true,
        };
        assert!(matches!(close_fields(&huge), Err(LineError::Invalid(_))));
        assert_eq!(
            close_fields(&LineEventKind::StaleClosed {
                fare: Some(Rupiah(14_000))
            })
            .unwrap(),
            (None, Some(14_000), None)
        );
        assert_eq!(
            close_fields(&LineEventKind::Void).unwrap(),
            (None, None, None)
        );
    }
}
