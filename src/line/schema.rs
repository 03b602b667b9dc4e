//! The line database's schema, as numbered migrations applied in order, each once.
//!
//! Tables (all prefixed `tapgate_`, so the line may share a database with other software):
//!
//! - `tapgate_schema`: one row per applied migration.
//! - `tapgate_line`: one row, the line's passenger-key fingerprint and who registered it.
//! - `tapgate_journeys`: one row per journey, keyed by its tap-in `partnerReferenceNo`.
//! - `tapgate_journey_events`: every event applied, keyed by its event id (what makes applying
//!   idempotent), kept until its journey is pruned.
//!
//! Times are Unix milliseconds (`bigint`), as in the station journal; fares are whole rupiah.

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock migrations hold, so that stations starting at once migrate one at a
/// time (the others then find nothing left to do). Any fixed number: "tapgate1" in ASCII.
pub const MIGRATION_LOCK: i64 = 0x7461_7067_6174_6531;

/// Creates the version table; run under the lock before reading it.
pub const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS tapgate_schema (
    version integer PRIMARY KEY,
    applied_at_ms bigint NOT NULL,
    applied_by text NOT NULL
)";

/// Migration `n` is `MIGRATIONS[n - 1]`. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: the line, its journeys and their events.
    "
CREATE TABLE tapgate_line (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key_fingerprint text NOT NULL,
    registered_by text NOT NULL,
    registered_at_ms bigint NOT NULL
);

-- How far along a journey is: it only ever moves to a higher rank. A tap-out (CLOSED)
-- outranks the policy closes, which are made without knowing of a tap-out that may still be
-- on its way from another station; among equals the first one applied stays.
CREATE FUNCTION tapgate_journey_rank(state text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE state WHEN 'OPEN' THEN 0 WHEN 'CLOSED' THEN 2 ELSE 1 END $$;

CREATE TABLE tapgate_journeys (
    tap_in_ref text PRIMARY KEY,
    -- NULL until the journey's opened event arrives (a close may come first).
    pan_key text,
    entry_station text,
    tap_in_reference_no text,
    opened_at_ms bigint,
    state text NOT NULL
        CHECK (state IN ('OPEN', 'CLOSED', 'STALE_CLOSED', 'VOID', 'RELEASED')),
    -- The exit station for CLOSED; the station whose policy closed it otherwise.
    closed_station text,
    tap_out_ref text,
    fare bigint CHECK (fare >= 0),
    closed_at_ms bigint,
    updated_at_ms bigint NOT NULL
);
-- The exit lookup: a passenger's open journey.
CREATE INDEX tapgate_journeys_open ON tapgate_journeys (pan_key, opened_at_ms DESC)
    WHERE state = 'OPEN';
-- Retention.
CREATE INDEX tapgate_journeys_closed ON tapgate_journeys (closed_at_ms)
    WHERE state <> 'OPEN';

CREATE TABLE tapgate_journey_events (
    event_id text PRIMARY KEY,
    tap_in_ref text NOT NULL,
    kind text NOT NULL
        CHECK (kind IN ('OPENED', 'CLOSED', 'STALE_CLOSED', 'VOID', 'RELEASED')),
    station text NOT NULL,
    at_ms bigint NOT NULL,
    pan_key text,
    reference text,
    fare bigint,
    applied_at_ms bigint NOT NULL
);
CREATE INDEX tapgate_journey_events_journey ON tapgate_journey_events (tap_in_ref);
",
];
