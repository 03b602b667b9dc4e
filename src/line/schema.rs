//! The line database's schema, as numbered migrations applied in order, each once.
//!
//! Tables (all prefixed `tapgate_`, so the line may share a database with other software):
//!
//! - `tapgate_schema`: one row per applied migration.
//! - `tapgate_line`: one row, the line's passenger-key fingerprint and who registered it.
//! - `tapgate_journeys`: one row per journey, keyed by its tap-in `partnerReferenceNo`.
//! - `tapgate_journey_events`: every event applied, keyed by its event id (what makes applying
//!   idempotent), kept until its journey is pruned.
//! - `tapgate_lookup(...)`: the exit/entry lookup in one round trip (migration 2).
//! - `tapgate_unpaid`: the line's unpaid list, one row per fast-opened payment that ended
//!   unpaid at some station, until staff clear it (migration 3).
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
    // 2: exit claims, whether a tap-out referenced the hold, and the one-round-trip lookup.
    "
-- Whether the tap-out that closed the journey referenced its tap-in hold (NULL: not a
-- tap-out, or closed before this column existed).
ALTER TABLE tapgate_journeys ADD COLUMN references_hold boolean;
ALTER TABLE tapgate_journey_events ADD COLUMN references_hold boolean;
-- An exit's claim on an open journey: the tap-out's partnerReferenceNo, until when. Lives on
-- the journey row, so closing clears it and pruning drops it with the journey.
ALTER TABLE tapgate_journeys ADD COLUMN claim_ref text;
ALTER TABLE tapgate_journeys ADD COLUMN claim_expires_ms bigint;
-- The line-wide debounce of exits: a passenger's recent tap-out closes.
CREATE INDEX tapgate_journeys_pan_closed ON tapgate_journeys (pan_key, closed_at_ms DESC)
    WHERE state = 'CLOSED';
-- The converge of an unknown-entry exit: a passenger's journeys by tap-in time, any state.
CREATE INDEX tapgate_journeys_pan_opened ON tapgate_journeys (pan_key, opened_at_ms DESC);

-- The exit and entry lookup in one round trip: the passenger's newest open journey (claimed
-- for p_claim when given and free: unclaimed, claimed by p_claim, or its claim expired), the
-- live claim of another exit on it, the tap-out ref of a close since p_debounce_since, and
-- the line's view of the journey the station's journal believes open (p_local).
CREATE FUNCTION tapgate_lookup(
    p_pan text, p_claim text, p_local text, p_now bigint, p_claim_ms bigint,
    p_debounce_since bigint,
    OUT o_open_ref text, OUT o_open_pan text, OUT o_open_entry text,
    OUT o_open_reference_no text, OUT o_open_at bigint,
    OUT o_claimed_by text, OUT o_recent_close text,
    OUT o_local_ref text, OUT o_local_pan text, OUT o_local_entry text,
    OUT o_local_reference_no text, OUT o_local_opened_at bigint, OUT o_local_state text,
    OUT o_local_closed_station text, OUT o_local_tap_out_ref text, OUT o_local_fare bigint,
    OUT o_local_closed_at bigint, OUT o_local_references_hold boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    j tapgate_journeys%ROWTYPE;
    l tapgate_journeys%ROWTYPE;
BEGIN
    IF p_claim IS NULL THEN
        SELECT * INTO j FROM tapgate_journeys
        WHERE pan_key = p_pan AND state = 'OPEN'
        ORDER BY opened_at_ms DESC LIMIT 1;
    ELSE
        -- The row lock makes two exits claiming at once take turns: the second one sees the
        -- first one's claim.
        SELECT * INTO j FROM tapgate_journeys
        WHERE pan_key = p_pan AND state = 'OPEN'
        ORDER BY opened_at_ms DESC LIMIT 1
        FOR UPDATE;
        IF j.tap_in_ref IS NOT NULL THEN
            IF j.claim_ref IS NULL OR j.claim_ref = p_claim OR j.claim_expires_ms <= p_now THEN
                -- A claim lost in a database crash only lets a racing exit in too; not worth
                -- a WAL flush on the tap path.
                PERFORM set_config('synchronous_commit', 'off', true);
                UPDATE tapgate_journeys
                SET claim_ref = p_claim, claim_expires_ms = p_now + p_claim_ms
                WHERE tap_in_ref = j.tap_in_ref;
            ELSE
                o_claimed_by := j.claim_ref;
            END IF;
        END IF;
    END IF;
    o_open_ref := j.tap_in_ref;
    o_open_pan := j.pan_key;
    o_open_entry := j.entry_station;
    o_open_reference_no := j.tap_in_reference_no;
    o_open_at := j.opened_at_ms;

    SELECT c.tap_out_ref INTO o_recent_close FROM tapgate_journeys c
    WHERE c.pan_key = p_pan AND c.state = 'CLOSED' AND c.closed_at_ms >= p_debounce_since
    ORDER BY c.closed_at_ms DESC LIMIT 1;

    IF p_local IS NOT NULL THEN
        SELECT * INTO l FROM tapgate_journeys WHERE tap_in_ref = p_local;
        o_local_ref := l.tap_in_ref;
        o_local_pan := l.pan_key;
        o_local_entry := l.entry_station;
        o_local_reference_no := l.tap_in_reference_no;
        o_local_opened_at := l.opened_at_ms;
        o_local_state := l.state;
        o_local_closed_station := l.closed_station;
        o_local_tap_out_ref := l.tap_out_ref;
        o_local_fare := l.fare;
        o_local_closed_at := l.closed_at_ms;
        o_local_references_hold := l.references_hold;
    END IF;
END
$fn$;
",
    // 3: the line-wide unpaid list ([policy.fast_open]).
    "
-- Each station sends its own entries (and their clearing); a clear made at any gate is
-- written here and followed by the entry's station. Entries are never deleted.
CREATE TABLE tapgate_unpaid (
    partner_reference_no text PRIMARY KEY,
    pan_key text NOT NULL,
    pan_masked text NOT NULL,
    nns text NOT NULL,
    station text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    amount bigint NOT NULL CHECK (amount > 0),
    at_ms bigint NOT NULL,
    reason text NOT NULL,
    cleared_at_ms bigint,
    cleared_by text,
    updated_at_ms bigint NOT NULL
);
CREATE INDEX tapgate_unpaid_owed ON tapgate_unpaid (pan_key) WHERE cleared_at_ms IS NULL;
CREATE INDEX tapgate_unpaid_cleared ON tapgate_unpaid (station, cleared_at_ms)
    WHERE cleared_at_ms IS NOT NULL;
-- Every entry lookup reads this table: a gate role that may update journeys gets the rights
-- it needs here in the same migration, or its lookups would fail after the upgrade.
DO $grant$
DECLARE r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
             WHERE table_name = 'tapgate_journeys' AND privilege_type = 'UPDATE'
               AND grantee NOT IN (current_user, 'PUBLIC')
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON tapgate_unpaid TO %I', r.grantee);
    END LOOP;
END
$grant$;
",
];
