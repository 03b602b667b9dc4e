//! The line store against a real PostgreSQL (a throwaway cluster per test, see
//! tests/support/pg.rs): migrations, idempotent and out-of-order events, racing exits, the
//! exit lookup, the key fingerprint, retention, and what a stopped or hung database does.
//!
//! Needs Debian's `postgresql` (scripts/install-deps.sh test); `TAPGATE_SKIP_PG=1` skips,
//! saying so.

#[path = "support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::PgCluster;
use tapgate::fare::Rupiah;
use tapgate::journal::{ClearOutcome, JourneyState, UnpaidEntry};
use tapgate::line::schema::{MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE};
use tapgate::line::{
    Applied, CloseOutcome, ErrorClass, KeyFingerprint, LineError, LineEvent, LineEventKind,
    LineSettings, LineStore, LookupAnswer, LookupQuery,
};

macro_rules! cluster {
    () => {
        match PgCluster::start(false) {
            Some(c) => c,
            None => return,
        }
    };
}

fn key(n: u8) -> KeyFingerprint {
    KeyFingerprint::of_key(&[n; 32])
}

/// Settings with budgets generous enough for a debug build on a loaded machine; the tests
/// about time set their own.
fn settings(c: &PgCluster, station: &str) -> LineSettings {
    let mut s = c.settings("postgres", station);
    s.lookup_timeout_ms = 10_000;
    s.background_timeout_ms = 20_000;
    s.connect_timeout_ms = 10_000;
    s
}

async fn store(c: &PgCluster, station: &str) -> LineStore {
    LineStore::open(&settings(c, station), &key(1))
        .await
        .unwrap_or_else(|e| panic!("open as {station}: {e}"))
}

fn opened(id: &str, journey: &str, station: &str, pan: &str, at: i64) -> LineEvent {
    LineEvent {
        event_id: id.into(),
        tap_in_ref: journey.into(),
        station: station.into(),
        at_ms: at,
        kind: LineEventKind::Opened {
            pan_key: pan.into(),
            tap_in_reference_no: Some(format!("REF-{journey}")),
        },
    }
}

fn closed(id: &str, journey: &str, station: &str, tap_out: &str, fare: u64, at: i64) -> LineEvent {
    LineEvent {
        event_id: id.into(),
        tap_in_ref: journey.into(),
        station: station.into(),
        at_ms: at,
        kind: LineEventKind::Closed {
            tap_out_ref: tap_out.into(),
            fare: Rupiah(fare),
            references_hold: true,
        },
    }
}

fn policy(id: &str, journey: &str, station: &str, kind: LineEventKind, at: i64) -> LineEvent {
    LineEvent {
        event_id: id.into(),
        tap_in_ref: journey.into(),
        station: station.into(),
        at_ms: at,
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_stations_starting_at_once_do_not_race() {
    let c = cluster!();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = LineStore::connect(&settings(&c, &format!("S{i}"))).unwrap();
        tasks.push(tokio::spawn(async move { s.migrate().await }));
    }
    let mut from_zero = 0;
    for t in tasks {
        let m = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("concurrent migrate: {e}"));
        assert_eq!(m.to, SCHEMA_VERSION);
        if m.from == 0 {
            from_zero += 1;
        } else {
            assert_eq!(m.from, SCHEMA_VERSION);
        }
    }
    assert_eq!(
        from_zero, 1,
        "exactly one station migrates, the others find it done"
    );
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM tapgate_schema"),
        SCHEMA_VERSION.to_string()
    );

    // Again: nothing to do, nothing added.
    let s = LineStore::connect(&settings(&c, "S9")).unwrap();
    let m = s.migrate().await.unwrap();
    assert_eq!((m.from, m.to), (SCHEMA_VERSION, SCHEMA_VERSION));
    assert_eq!(s.schema_version().await.unwrap(), SCHEMA_VERSION);
    store(&c, "S9").await;
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM tapgate_schema"),
        SCHEMA_VERSION.to_string()
    );

    // A database migrated by a newer tapgate is refused, not touched.
    c.psql(
        "postgres",
        &format!(
            "INSERT INTO tapgate_schema VALUES ({}, 0, 'future')",
            SCHEMA_VERSION + 1
        ),
    );
    let e = LineStore::open(&settings(&c, "S9"), &key(1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LineError::NewerSchema { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Fatal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_applied_twice_counts_once() {
    let c = cluster!();
    let s = store(&c, "BLM").await;
    let open = opened("BLM-1", "J1", "BLM", "pan-a", 1_000);
    assert_eq!(s.apply_event(&open).await.unwrap(), Applied::Changed);
    assert_eq!(s.apply_event(&open).await.unwrap(), Applied::Duplicate);
    let close = closed("ASN-1", "J1", "ASN", "OUT-1", 3_000, 2_000);
    assert_eq!(s.apply_event(&close).await.unwrap(), Applied::Changed);
    assert_eq!(s.apply_event(&close).await.unwrap(), Applied::Duplicate);
    let j = s.journey("J1").await.unwrap().unwrap();
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(j.fare, Some(Rupiah(3_000)));
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM tapgate_journey_events"),
        "2"
    );

    // The same 50 events from two replicators at once: each recorded once.
    let s2 = store(&c, "ASN").await;
    let events: Arc<Vec<LineEvent>> = Arc::new(
        (0..50)
            .map(|i| {
                opened(
                    &format!("E{i}"),
                    &format!("K{i}"),
                    "BLM",
                    &format!("p{i}"),
                    i,
                )
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for st in [s.clone(), s2] {
        let events = events.clone();
        tasks.push(tokio::spawn(async move {
            let mut changed = 0;
            for e in events.iter() {
                if st.apply_event(e).await.unwrap() == Applied::Changed {
                    changed += 1;
                }
            }
            changed
        }));
    }
    let mut changed = 0;
    for t in tasks {
        changed += t.await.unwrap();
    }
    assert_eq!(changed, 50, "each event changes its journey exactly once");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journey_events WHERE event_id LIKE 'E%'"
        ),
        "50"
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journeys WHERE tap_in_ref LIKE 'K%' AND state = 'OPEN'"
        ),
        "50"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_out_of_order_only_move_a_journey_forward() {
    let c = cluster!();
    let s = store(&c, "BLM").await;

    // The close arrives first (from the exit station); the open fills in the entry later
    // without reopening.
    let close = closed("ASN-7", "J1", "ASN", "OUT-7", 3_000, 5_000);
    assert_eq!(s.apply_event(&close).await.unwrap(), Applied::Changed);
    let j = s.journey("J1").await.unwrap().unwrap();
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(j.pan_key, None);
    assert_eq!(j.entry_station, None);
    let open = opened("BLM-3", "J1", "BLM", "pan-a", 1_000);
    assert_eq!(s.apply_event(&open).await.unwrap(), Applied::Changed);
    let j = s.journey("J1").await.unwrap().unwrap();
    assert_eq!(
        j.state,
        JourneyState::Closed,
        "an open never reopens a closed journey"
    );
    assert_eq!(j.pan_key.as_deref(), Some("pan-a"));
    assert_eq!(j.entry_station.as_deref(), Some("BLM"));
    assert_eq!(j.tap_in_reference_no.as_deref(), Some("REF-J1"));
    assert_eq!(j.opened_at_ms, Some(1_000));
    assert_eq!(j.tap_out_ref.as_deref(), Some("OUT-7"));
    assert_eq!(j.closed_station.as_deref(), Some("ASN"));
    assert_eq!(j.fare, Some(Rupiah(3_000)));
    assert_eq!(s.find_open("pan-a").await.unwrap(), None);
    // The same open under another event id: recorded, changes nothing.
    let again = opened("BLM-4", "J1", "BLM", "pan-b", 9_000);
    assert_eq!(s.apply_event(&again).await.unwrap(), Applied::NoChange);
    assert_eq!(
        s.journey("J1").await.unwrap().unwrap().pan_key.as_deref(),
        Some("pan-a")
    );

    // A policy close made before a tap-out's close arrived: the tap-out outranks it; nothing
    // moves a closed journey back or sideways after that.
    s.apply_event(&opened("BLM-5", "J2", "BLM", "pan-c", 1_000))
        .await
        .unwrap();
    let stale = policy(
        "BLM-6",
        "J2",
        "BLM",
        LineEventKind::StaleClosed {
            fare: Some(Rupiah(14_000)),
        },
        9_000,
    );
    assert_eq!(s.apply_event(&stale).await.unwrap(), Applied::Changed);
    assert_eq!(
        s.journey("J2").await.unwrap().unwrap().state,
        JourneyState::StaleClosed
    );
    let out = closed("ASN-8", "J2", "ASN", "OUT-8", 3_000, 2_000);
    assert_eq!(s.apply_event(&out).await.unwrap(), Applied::Changed);
    for (id, kind) in [
        ("BLM-7", LineEventKind::Void),
        ("BLM-8", LineEventKind::Released),
        (
            "BLM-9",
            LineEventKind::StaleClosed {
                fare: Some(Rupiah(14_000)),
            },
        ),
    ] {
        let e = policy(id, "J2", "BLM", kind, 10_000);
        assert_eq!(s.apply_event(&e).await.unwrap(), Applied::NoChange, "{id}");
    }
    let second_exit = closed("TGK-1", "J2", "TGK", "OUT-9", 5_000, 3_000);
    assert_eq!(
        s.apply_event(&second_exit).await.unwrap(),
        Applied::NoChange
    );
    let j = s.journey("J2").await.unwrap().unwrap();
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(
        j.tap_out_ref.as_deref(),
        Some("OUT-8"),
        "the first tap-out stays"
    );
    assert_eq!(j.fare, Some(Rupiah(3_000)));
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journey_events WHERE tap_in_ref = 'J2'"
        ),
        "7",
        "every event is kept for the reconcilers, applied or not"
    );

    // is_closed_anywhere: what the stale sweep asks.
    s.apply_event(&opened("BLM-10", "J3", "BLM", "pan-d", 1_000))
        .await
        .unwrap();
    assert_eq!(s.is_closed_anywhere("J3").await.unwrap(), None);
    assert_eq!(s.is_closed_anywhere("nope").await.unwrap(), None);
    let j = s.is_closed_anywhere("J2").await.unwrap().unwrap();
    assert_eq!(j.closed_station.as_deref(), Some("ASN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_finds_the_entry_and_the_tap_in_references_anywhere_on_the_line() {
    let c = cluster!();
    let blm = store(&c, "BLM").await;
    let asn = store(&c, "ASN").await;
    blm.apply_event(&opened("BLM-1", "BLM-IN-1", "BLM", "pan-a", 1_000))
        .await
        .unwrap();
    let found = asn.find_open("pan-a").await.unwrap().expect("open journey");
    assert_eq!(found.tap_in_ref, "BLM-IN-1");
    assert_eq!(found.entry_station, "BLM");
    assert_eq!(found.tap_in_reference_no.as_deref(), Some("REF-BLM-IN-1"));
    assert_eq!(found.opened_at_ms, 1_000);
    assert_eq!(found.pan_key, "pan-a");
    assert_eq!(asn.find_open("pan-b").await.unwrap(), None);

    // Two open journeys for one passenger (an entry the line learnt late): the latest.
    asn.apply_event(&opened("ASN-1", "ASN-IN-1", "ASN", "pan-a", 2_000))
        .await
        .unwrap();
    assert_eq!(
        blm.find_open("pan-a").await.unwrap().unwrap().tap_in_ref,
        "ASN-IN-1"
    );
    let out = closed("BLM-2", "ASN-IN-1", "BLM", "BLM-OUT-1", 3_000, 3_000);
    assert!(matches!(
        blm.close_if_open(&out).await.unwrap(),
        CloseOutcome::Closed(_)
    ));
    assert_eq!(
        asn.find_open("pan-a").await.unwrap().unwrap().tap_in_ref,
        "BLM-IN-1"
    );
    let out = closed("ASN-2", "BLM-IN-1", "ASN", "ASN-OUT-1", 3_000, 4_000);
    match asn.close_if_open(&out).await.unwrap() {
        CloseOutcome::Closed(j) => {
            assert_eq!(j.entry_station.as_deref(), Some("BLM"));
            assert_eq!(j.tap_in_reference_no.as_deref(), Some("REF-BLM-IN-1"));
            assert_eq!(j.state, JourneyState::Closed);
            assert_eq!(j.fare, Some(Rupiah(3_000)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(asn.find_open("pan-a").await.unwrap(), None);
    // The replicator's later copy of the close is a duplicate.
    assert_eq!(asn.apply_event(&out).await.unwrap(), Applied::Duplicate);
    let unknown = closed("ASN-3", "nope", "ASN", "ASN-OUT-2", 3_000, 4_000);
    assert_eq!(
        asn.close_if_open(&unknown).await.unwrap(),
        CloseOutcome::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_exits_close_a_journey_exactly_once() {
    const ROUNDS: usize = 150;
    let c = cluster!();
    let stores: Vec<LineStore> = vec![
        store(&c, "ASN").await,
        store(&c, "BLM").await,
        store(&c, "TGK").await,
    ];
    for round in 0..ROUNDS {
        let journey = format!("IN-{round}");
        stores[0]
            .apply_event(&opened(
                &format!("O-{round}"),
                &journey,
                "BLM",
                &format!("pan-{round}"),
                1_000,
            ))
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
        let mut tasks = Vec::new();
        for (exit, st) in stores.iter().enumerate() {
            let st = st.clone();
            let barrier = barrier.clone();
            let ev = closed(
                &format!("X-{round}-{exit}"),
                &journey,
                &format!("S{exit}"),
                &format!("OUT-{round}-{exit}"),
                3_000 + exit as u64,
                2_000,
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (exit, st.close_if_open(&ev).await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (exit, CloseOutcome::Closed(_)) => winners.push(exit),
                (_, CloseOutcome::AlreadyClosed(j)) => assert_eq!(j.state, JourneyState::Closed),
                (_, CloseOutcome::NotFound) => panic!("round {round}: journey not found"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let w = winners[0];
        let j = stores[0].journey(&journey).await.unwrap().unwrap();
        assert_eq!(
            j.tap_out_ref,
            Some(format!("OUT-{round}-{w}")),
            "round {round}"
        );
        assert_eq!(j.fare, Some(Rupiah(3_000 + w as u64)));
        // The winner asking again (its answer was lost) hears it closed the journey.
        let again = closed(
            &format!("X-{round}-{w}"),
            &journey,
            &format!("S{w}"),
            &format!("OUT-{round}-{w}"),
            3_000 + w as u64,
            2_000,
        );
        assert!(matches!(
            stores[w].close_if_open(&again).await.unwrap(),
            CloseOutcome::Closed(_)
        ));
    }
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journey_events WHERE kind = 'CLOSED'"
        ),
        ROUNDS.to_string(),
        "one close recorded per journey"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_with_another_passenger_key_is_refused() {
    let c = cluster!();
    LineStore::open(&settings(&c, "BLM"), &key(1))
        .await
        .unwrap();
    LineStore::open(&settings(&c, "ASN"), &key(1))
        .await
        .unwrap();
    let e = LineStore::open(&settings(&c, "TGK"), &key(2))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, LineError::KeyMismatch { .. }), "{msg}");
    assert_eq!(e.class(), ErrorClass::Fatal);
    assert!(msg.contains(&key(1).short()), "{msg}");
    assert!(msg.contains(&key(2).short()), "{msg}");
    assert!(
        msg.contains("BLM"),
        "names who registered the line's key: {msg}"
    );
    assert!(!msg.contains(key(2).as_hex()), "short forms only: {msg}");
    assert!(
        !msg.contains(&hex::encode([2u8; 32])),
        "never the key: {msg}"
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT key_fingerprint || ' ' || registered_by FROM tapgate_line"
        ),
        format!("{} BLM", key(1).as_hex())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_closed_journeys_older_than_the_cutoff_in_batches() {
    let c = cluster!();
    let s = store(&c, "BLM").await;
    for i in 0..25 {
        let j = format!("OLD-{i}");
        s.apply_event(&opened(&format!("o{i}"), &j, "BLM", "p", 100))
            .await
            .unwrap();
        s.apply_event(&closed(
            &format!("c{i}"),
            &j,
            "ASN",
            "out",
            3_000,
            1_000 + i,
        ))
        .await
        .unwrap();
    }
    for i in 0..5 {
        let j = format!("NEW-{i}");
        s.apply_event(&closed(&format!("n{i}"), &j, "ASN", "out", 3_000, 10_000))
            .await
            .unwrap();
    }
    for i in 0..3 {
        s.apply_event(&opened(
            &format!("a{i}"),
            &format!("OPEN-{i}"),
            "BLM",
            "p",
            1,
        ))
        .await
        .unwrap();
    }
    let mut batches = Vec::new();
    loop {
        let n = s.prune(5_000, 10).await.unwrap();
        batches.push(n);
        if n < 10 {
            break;
        }
    }
    assert_eq!(batches, vec![10, 10, 5]);
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT string_agg(tap_in_ref, ',' ORDER BY tap_in_ref) FROM tapgate_journeys"
        ),
        "NEW-0,NEW-1,NEW-2,NEW-3,NEW-4,OPEN-0,OPEN-1,OPEN-2"
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journey_events WHERE tap_in_ref LIKE 'OLD-%'"
        ),
        "0",
        "a pruned journey's events go with it"
    );
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM tapgate_journey_events"),
        "8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_degrades_within_the_budget_and_works_again_after_restart() {
    let mut c = cluster!();
    let mut st = settings(&c, "ASN");
    st.lookup_timeout_ms = 300;
    let s = LineStore::open(&st, &key(1)).await.unwrap();
    s.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1_000))
        .await
        .unwrap();
    assert!(s.find_open("pan-a").await.unwrap().is_some());

    c.stop();
    let t = Instant::now();
    let e = s.find_open("pan-a").await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.class(), ErrorClass::Degrade, "{e}");
    assert!(took < Duration::from_millis(300 + 200), "{took:?}: {e}");
    let out = closed("ASN-1", "J1", "ASN", "OUT-1", 3_000, 2_000);
    let t = Instant::now();
    let e = s.close_if_open(&out).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Degrade, "{e}");
    assert!(t.elapsed() < Duration::from_millis(300 + 200), "{e}");
    let e = s.apply_event(&out).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Degrade, "{e}");

    c.start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    let found = loop {
        match s.find_open("pan-a").await {
            Ok(f) => break f,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not back after restart: {e}"),
        }
    };
    assert_eq!(found.map(|f| f.tap_in_ref).as_deref(), Some("J1"));
    assert!(matches!(
        s.close_if_open(&out).await.unwrap(),
        CloseOutcome::Closed(_)
    ));
    assert_eq!(s.apply_event(&out).await.unwrap(), Applied::Duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_times_out_within_the_lookup_budget() {
    let mut c = cluster!();
    let mut st = settings(&c, "ASN");
    st.lookup_timeout_ms = 200;
    let s = LineStore::open(&st, &key(1)).await.unwrap();
    s.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1_000))
        .await
        .unwrap();
    assert!(s.find_open("pan-a").await.unwrap().is_some());

    c.freeze();
    for _ in 0..3 {
        let t = Instant::now();
        let e = s.find_open("pan-a").await.unwrap_err();
        timed_out_within_budget(&e, "find_open", t.elapsed());
    }
    c.thaw();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s.find_open("pan-a").await {
            Ok(f) => {
                assert_eq!(f.map(|f| f.tap_in_ref).as_deref(), Some("J1"));
                break;
            }
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not back after thaw: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_database_is_fatal() {
    let c = cluster!();
    let wrong = c.dir().join("wrong-pw");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let mut st = settings(&c, "BLM");
    st.password_file = Some(wrong);
    let e = LineStore::open(&st, &key(1)).await.unwrap_err();
    assert!(matches!(e, LineError::Auth(_)), "{e}");
    assert_eq!(e.class(), ErrorClass::Fatal);
    assert!(!e.to_string().contains("not-the-password"), "{e}");

    let mut st = c.settings("no_such_db", "BLM");
    st.connect_timeout_ms = 10_000;
    st.background_timeout_ms = 20_000;
    let e = LineStore::open(&st, &key(1)).await.unwrap_err();
    assert!(matches!(e, LineError::Config(_)), "{e}");
    assert_eq!(e.class(), ErrorClass::Fatal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_role_without_ddl_rights_needs_the_operator_to_migrate() {
    let c = cluster!();
    c.create_db("line");
    c.psql(
        "postgres",
        "CREATE ROLE gate LOGIN PASSWORD 'line-test-password'",
    );
    c.psql("line", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    let mut gate = c.settings("line", "BLM");
    gate.url = format!("postgresql://gate@127.0.0.1:{}/line", c.port);
    gate.background_timeout_ms = 20_000;
    gate.connect_timeout_ms = 10_000;
    let e = LineStore::open(&gate, &key(1)).await.unwrap_err();
    assert!(
        matches!(e, LineError::NotMigrated { found: 0, needed, .. } if needed == SCHEMA_VERSION),
        "{e}"
    );
    assert!(e.to_string().contains("tapgate journeys migrate"), "{e}");

    // The operator migrates with the owner, grants the gate its rows; the gate then joins.
    let mut owner = c.settings("line", "ops");
    owner.background_timeout_ms = 20_000;
    owner.connect_timeout_ms = 10_000;
    let m = LineStore::connect(&owner).unwrap().migrate().await.unwrap();
    assert_eq!((m.from, m.to), (0, SCHEMA_VERSION));
    c.psql(
        "line",
        "GRANT SELECT ON tapgate_schema TO gate; \
         GRANT SELECT, INSERT ON tapgate_line TO gate; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON tapgate_journeys, tapgate_journey_events TO gate; \
         GRANT SELECT, INSERT, UPDATE ON tapgate_unpaid TO gate",
    );
    let s = LineStore::open(&gate, &key(1)).await.unwrap();
    s.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1))
        .await
        .unwrap();
    assert!(s.find_open("pan-a").await.unwrap().is_some());
    // The lookup function runs with the gate's own rights (its claim is an UPDATE).
    let a = s.lookup(&exit_q("pan-a", "OUT-1", 10)).await.unwrap();
    assert_eq!(a.open.map(|o| o.tap_in_ref).as_deref(), Some("J1"));
    assert_eq!(a.claimed_by, None);
}

/// Runs openssl in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (scripts/install-deps.sh test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` in `dir` (`name.pem`, `name.key`).
fn make_ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=tapgate test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_line_database_verifies_its_certificate() {
    let c = cluster!();
    let dir = c.dir().join("tls");
    std::fs::create_dir(&dir).unwrap();
    make_ca(&dir, "line-ca");
    make_ca(&dir, "other-ca");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "line-ca.pem",
            "-CAkey",
            "line-ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    // The server reads its key as the cluster's user, and only from a private file.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let owner = std::fs::metadata(c.dir()).unwrap();
    for f in ["server.key", "server.pem"] {
        let p = dir.join(f);
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid())).unwrap();
    // TLS on, and TCP clients admitted only over TLS: a connection that works was encrypted.
    let hba = c.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    let rules: String = rules
        .lines()
        .map(|l| match l.strip_prefix("host ") {
            Some(rest) => format!("hostssl {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&hba, rules).unwrap();
    c.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            dir.join("server.pem").display()
        ),
    );
    c.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            dir.join("server.key").display()
        ),
    );
    c.psql("postgres", "ALTER SYSTEM SET ssl = on");
    c.psql("postgres", "SELECT pg_reload_conf()");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut st = settings(&c, "BLM");
    st.url = format!("{}?sslmode=require", c.url("postgres"));
    st.ca_file = Some(dir.join("line-ca.pem"));
    let s = LineStore::open(&st, &key(1))
        .await
        .unwrap_or_else(|e| panic!("TLS with the line's CA: {e}"));
    s.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1))
        .await
        .unwrap();
    assert!(s.find_open("pan-a").await.unwrap().is_some());

    // Plain TCP (loopback's default) is now refused by the server: the working connection
    // above was TLS.
    let e = LineStore::open(&settings(&c, "BLM"), &key(1))
        .await
        .unwrap_err();
    assert!(matches!(e, LineError::Auth(_)), "{e}");

    // A certificate from another CA, or checked against the public web roots, is refused.
    for ca in [Some(dir.join("other-ca.pem")), None] {
        st.ca_file = ca.clone();
        let e = LineStore::open(&st, &key(1)).await.unwrap_err();
        assert!(matches!(e, LineError::Config(_)), "{ca:?}: {e}");
        assert!(e.to_string().contains("TLS"), "{ca:?}: {e}");
        assert_eq!(e.class(), ErrorClass::Fatal);
    }
}

/// An exit's lookup: claims for `tap_out`, at `now`, claims living 10 s, debounce 5 s.
fn exit_q(pan: &str, tap_out: &str, now: i64) -> LookupQuery {
    LookupQuery {
        pan_key: pan.into(),
        claim: Some(tap_out.into()),
        local_tap_in_ref: None,
        now_ms: now,
        claim_ms: 10_000,
        debounce_since_ms: now - 5_000,
    }
}

fn open_ref(a: &LookupAnswer) -> Option<&str> {
    a.open.as_ref().map(|o| o.tap_in_ref.as_str())
}

fn closed_hold(
    id: &str,
    journey: &str,
    station: &str,
    tap_out: &str,
    fare: u64,
    at: i64,
    references_hold: bool,
) -> LineEvent {
    LineEvent {
        event_id: id.into(),
        tap_in_ref: journey.into(),
        station: station.into(),
        at_ms: at,
        kind: LineEventKind::Closed {
            tap_out_ref: tap_out.into(),
            fare: Rupiah(fare),
            references_hold,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_claims_the_open_journey_and_another_exit_is_refused_until_the_claim_expires() {
    let c = cluster!();
    let blm = store(&c, "BLM").await;
    let asn = store(&c, "ASN").await;
    blm.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1_000))
        .await
        .unwrap();

    // An entry's lookup (no claim) sees the open journey and claims nothing.
    let mut entry = exit_q("pan-a", "unused", 100_000);
    entry.claim = None;
    let a = blm.lookup(&entry).await.unwrap();
    assert_eq!(open_ref(&a), Some("J1"));
    assert_eq!(a.claimed_by, None);
    assert_eq!(
        c.psql("postgres", "SELECT count(claim_ref) FROM tapgate_journeys"),
        "0"
    );

    // The first exit claims it.
    let a = asn
        .lookup(&exit_q("pan-a", "ASN-OUT-1", 100_000))
        .await
        .unwrap();
    let open = a.open.clone().expect("open journey");
    assert_eq!(open.tap_in_ref, "J1");
    assert_eq!(open.entry_station, "BLM");
    assert_eq!(open.pan_key, "pan-a");
    assert_eq!(open.tap_in_reference_no.as_deref(), Some("REF-J1"));
    assert_eq!(open.opened_at_ms, 1_000);
    assert_eq!(a.claimed_by, None, "won");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT claim_ref || ' ' || claim_expires_ms FROM tapgate_journeys"
        ),
        "ASN-OUT-1 110000"
    );

    // A second exit (another lane, another station) within the claim's life is refused.
    let b = blm
        .lookup(&exit_q("pan-a", "BLM-OUT-9", 105_000))
        .await
        .unwrap();
    assert_eq!(open_ref(&b), Some("J1"));
    assert_eq!(b.claimed_by.as_deref(), Some("ASN-OUT-1"));
    // The same tap-out retrying (its answer was lost) re-claims, and extends the claim.
    let a = asn
        .lookup(&exit_q("pan-a", "ASN-OUT-1", 106_000))
        .await
        .unwrap();
    assert_eq!(open_ref(&a), Some("J1"));
    assert_eq!(a.claimed_by, None, "a retry of the claimant is not refused");
    assert_eq!(
        c.psql("postgres", "SELECT claim_expires_ms FROM tapgate_journeys"),
        "116000"
    );
    // Expired: another exit takes it over.
    let b = blm
        .lookup(&exit_q("pan-a", "BLM-OUT-9", 116_000))
        .await
        .unwrap();
    assert_eq!(open_ref(&b), Some("J1"));
    assert_eq!(b.claimed_by, None, "an expired claim is taken over");
    let a = asn
        .lookup(&exit_q("pan-a", "ASN-OUT-1", 116_001))
        .await
        .unwrap();
    assert_eq!(a.claimed_by.as_deref(), Some("BLM-OUT-9"));

    // release_claim only clears the claim of its own tap-out.
    asn.release_claim("J1", "ASN-OUT-1").await.unwrap();
    assert_eq!(
        c.psql("postgres", "SELECT claim_ref FROM tapgate_journeys"),
        "BLM-OUT-9"
    );
    blm.release_claim("J1", "BLM-OUT-9").await.unwrap();
    assert_eq!(
        c.psql("postgres", "SELECT count(claim_ref) FROM tapgate_journeys"),
        "0"
    );
    let a = asn
        .lookup(&exit_q("pan-a", "ASN-OUT-2", 117_000))
        .await
        .unwrap();
    assert_eq!(a.claimed_by, None, "released: free for the next exit");

    // Closing clears the claim: by the conditional close ...
    let out = closed_hold("ASN-C-2", "J1", "ASN", "ASN-OUT-2", 3_000, 117_500, true);
    assert!(matches!(
        asn.close_if_open(&out).await.unwrap(),
        CloseOutcome::Closed(j) if j.references_hold == Some(true)
    ));
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journeys WHERE claim_ref IS NOT NULL \
             OR claim_expires_ms IS NOT NULL"
        ),
        "0"
    );
    let a = blm
        .lookup(&exit_q("pan-a", "BLM-OUT-10", 200_000))
        .await
        .unwrap();
    assert_eq!(a.open, None, "closed: nothing left to claim");
    assert_eq!(a.claimed_by, None);
    // ... and by a replicated close.
    blm.apply_event(&opened("BLM-2", "J2", "BLM", "pan-a", 150_000))
        .await
        .unwrap();
    let a = asn
        .lookup(&exit_q("pan-a", "ASN-OUT-3", 200_000))
        .await
        .unwrap();
    assert_eq!(open_ref(&a), Some("J2"));
    let rep = closed_hold("ASN-C-3", "J2", "ASN", "ASN-OUT-3", 3_000, 200_100, true);
    assert_eq!(blm.apply_event(&rep).await.unwrap(), Applied::Changed);
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journeys WHERE claim_ref IS NOT NULL \
             OR claim_expires_ms IS NOT NULL"
        ),
        "0"
    );
    let j = blm.journey("J2").await.unwrap().unwrap();
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(j.references_hold, Some(true));
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT references_hold FROM tapgate_journey_events WHERE event_id = 'ASN-C-3'"
        ),
        "t"
    );

    // Bad input is refused before any I/O.
    let mut bad = exit_q("", "X", 1);
    assert!(matches!(asn.lookup(&bad).await, Err(LineError::Invalid(_))));
    bad = exit_q("pan-a", "", 1);
    assert!(matches!(asn.lookup(&bad).await, Err(LineError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_reports_a_recent_close_and_the_lines_view_of_the_local_journey() {
    let c = cluster!();
    let blm = store(&c, "BLM").await;
    let asn = store(&c, "ASN").await;
    // pan-a tapped in at BLM, and out at ASN at 50 000 (the tap-out referenced the hold).
    blm.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1_000))
        .await
        .unwrap();
    asn.apply_event(&closed_hold(
        "ASN-1", "J1", "ASN", "OUT-1", 3_000, 50_000, true,
    ))
    .await
    .unwrap();
    // pan-b's journey was closed by the stale sweep: not a tap-out, no debounce.
    blm.apply_event(&opened("BLM-2", "J2", "BLM", "pan-b", 1_000))
        .await
        .unwrap();
    blm.apply_event(&policy(
        "BLM-3",
        "J2",
        "BLM",
        LineEventKind::StaleClosed {
            fare: Some(Rupiah(14_000)),
        },
        50_000,
    ))
    .await
    .unwrap();

    // A second exit tap at another station 2 s later: the same tap (debounce line-wide).
    let mut q = exit_q("pan-a", "TGK-OUT-1", 52_000);
    q.local_tap_in_ref = Some("J1".into());
    let a = blm.lookup(&q).await.unwrap();
    assert_eq!(a.open, None);
    assert_eq!(a.recent_close.as_deref(), Some("OUT-1"));
    // BLM's journal still believes J1 open: the line says it was closed at ASN.
    let local = a.local.expect("the line knows J1");
    assert_eq!(local.tap_in_ref, "J1");
    assert_eq!(local.state, JourneyState::Closed);
    assert_eq!(local.closed_station.as_deref(), Some("ASN"));
    assert_eq!(local.tap_out_ref.as_deref(), Some("OUT-1"));
    assert_eq!(local.fare, Some(Rupiah(3_000)));
    assert_eq!(local.references_hold, Some(true));
    assert_eq!(local.entry_station.as_deref(), Some("BLM"));

    // Exactly at the window's start it counts; a millisecond later it does not.
    let mut q = exit_q("pan-a", "TGK-OUT-2", 0);
    q.debounce_since_ms = 50_000;
    assert_eq!(
        blm.lookup(&q).await.unwrap().recent_close.as_deref(),
        Some("OUT-1")
    );
    q.debounce_since_ms = 50_001;
    assert_eq!(blm.lookup(&q).await.unwrap().recent_close, None);
    // Another passenger's close, and a policy close, are no debounce.
    let mut q = exit_q("pan-b", "TGK-OUT-3", 52_000);
    q.local_tap_in_ref = Some("J2".into());
    let a = blm.lookup(&q).await.unwrap();
    assert_eq!(a.recent_close, None);
    let l = a.local.expect("J2");
    assert_eq!(l.state, JourneyState::StaleClosed);
    assert_eq!(l.references_hold, None);
    // A local journey the line does not know (its open not replicated yet).
    let mut q = exit_q("pan-c", "TGK-OUT-4", 52_000);
    q.local_tap_in_ref = Some("NOT-YET".into());
    let a = blm.lookup(&q).await.unwrap();
    assert_eq!(
        a,
        LookupAnswer {
            open: None,
            claimed_by: None,
            recent_close: None,
            local: None,
            owed: None,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_entry_exit_converges_on_its_entry_within_the_trip_window() {
    let c = cluster!();
    let s = store(&c, "ASN").await;
    let hour = 3_600_000;
    let exit_at = 10 * hour;
    // pan-a: one entry per state, at various times before the exit.
    for (i, at) in [
        (1, exit_at - 3 * hour),
        (2, exit_at - hour),
        (3, exit_at + 1),
    ] {
        s.apply_event(&opened(
            &format!("O{i}"),
            &format!("A{i}"),
            "BLM",
            "pan-a",
            at,
        ))
        .await
        .unwrap();
    }
    // Another passenger's entry, newer and in the window: never matched.
    s.apply_event(&opened("OB", "B1", "BLM", "pan-b", exit_at - 10))
        .await
        .unwrap();
    let max_trip = 2 * hour;
    // A3 opened after the exit, A1 before the window: A2 is the one.
    let j = s
        .entry_for_unknown_exit("pan-a", exit_at, max_trip)
        .await
        .unwrap()
        .expect("entry in the window");
    assert_eq!(j.tap_in_ref, "A2");
    // The window's edges are in it.
    let j = s
        .entry_for_unknown_exit("pan-a", exit_at, 3 * hour)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.tap_in_ref, "A2", "the newest in the window");
    assert_eq!(
        s.entry_for_unknown_exit("pan-a", exit_at + 1, 0)
            .await
            .unwrap()
            .map(|j| j.tap_in_ref)
            .as_deref(),
        Some("A3")
    );
    assert_eq!(
        s.entry_for_unknown_exit("pan-z", exit_at, max_trip)
            .await
            .unwrap(),
        None
    );

    // States: STALE_CLOSED and RELEASED still match (no tap-out closed them); VOID and CLOSED
    // do not.
    let stale = |id: &str, j: &str| {
        policy(
            id,
            j,
            "BLM",
            LineEventKind::StaleClosed {
                fare: Some(Rupiah(14_000)),
            },
            exit_at + hour,
        )
    };
    s.apply_event(&stale("S2", "A2")).await.unwrap();
    let j = s
        .entry_for_unknown_exit("pan-a", exit_at, max_trip)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (j.tap_in_ref.as_str(), j.state),
        ("A2", JourneyState::StaleClosed)
    );
    s.apply_event(&opened("O4", "A4", "BLM", "pan-a", exit_at - hour / 2))
        .await
        .unwrap();
    s.apply_event(&policy(
        "R4",
        "A4",
        "BLM",
        LineEventKind::Released,
        exit_at + hour,
    ))
    .await
    .unwrap();
    let j = s
        .entry_for_unknown_exit("pan-a", exit_at, max_trip)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (j.tap_in_ref.as_str(), j.state),
        ("A4", JourneyState::Released)
    );
    s.apply_event(&opened("O5", "A5", "BLM", "pan-a", exit_at - hour / 4))
        .await
        .unwrap();
    s.apply_event(&policy("V5", "A5", "BLM", LineEventKind::Void, exit_at))
        .await
        .unwrap();
    s.apply_event(&opened("O6", "A6", "BLM", "pan-a", exit_at - hour / 8))
        .await
        .unwrap();
    s.apply_event(&closed_hold(
        "C6",
        "A6",
        "TGK",
        "TGK-OUT",
        3_000,
        exit_at - 5,
        true,
    ))
    .await
    .unwrap();
    let j = s
        .entry_for_unknown_exit("pan-a", exit_at, max_trip)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        j.tap_in_ref, "A4",
        "a void or tapped-out journey is never matched"
    );

    // The converge closes it: a Closed without the hold outranks RELEASED / STALE_CLOSED.
    let conv = closed_hold(
        "ASN-CONV-4",
        "A4",
        "ASN",
        "ASN-OUT-U",
        3_000,
        exit_at,
        false,
    );
    assert_eq!(s.apply_event(&conv).await.unwrap(), Applied::Changed);
    let conv2 = closed_hold(
        "ASN-CONV-2",
        "A2",
        "ASN",
        "ASN-OUT-U",
        3_000,
        exit_at,
        false,
    );
    assert_eq!(s.apply_event(&conv2).await.unwrap(), Applied::Changed);
    let j = s.journey("A2").await.unwrap().unwrap();
    assert_eq!(j.state, JourneyState::Closed);
    assert_eq!(j.references_hold, Some(false));
    assert_eq!(j.tap_out_ref.as_deref(), Some("ASN-OUT-U"));
    assert_eq!(j.fare, Some(Rupiah(3_000)));
    // A second close with another tap-out: NoChange, the first close stays.
    let other = closed_hold("TGK-X", "A2", "TGK", "TGK-OUT-X", 5_000, exit_at + 5, true);
    assert_eq!(s.apply_event(&other).await.unwrap(), Applied::NoChange);
    let j = s.journey("A2").await.unwrap().unwrap();
    assert_eq!(j.tap_out_ref.as_deref(), Some("ASN-OUT-U"));
    assert_eq!(j.references_hold, Some(false));
    assert_eq!(j.fare, Some(Rupiah(3_000)));
    // Nothing left to match for this exit.
    assert_eq!(
        s.entry_for_unknown_exit("pan-a", exit_at, max_trip)
            .await
            .unwrap(),
        None
    );

    // Retention drops the closed journeys with all their events (claims live on the rows).
    let pruned = s.prune(i64::MAX, 1_000).await.unwrap();
    assert_eq!(pruned, 4, "A2, A4, A5 and A6 were closed");
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT string_agg(tap_in_ref, ',' ORDER BY tap_in_ref) FROM tapgate_journeys"
        ),
        "A1,A3,B1"
    );
    assert_eq!(
        c.psql(
            "postgres",
            "SELECT count(*) FROM tapgate_journey_events e WHERE NOT EXISTS \
             (SELECT 1 FROM tapgate_journeys j WHERE j.tap_in_ref = e.tap_in_ref)"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_events_is_one_transaction_with_one_by_one_semantics_and_replays_as_duplicates()
{
    let c = cluster!();
    let s = store(&c, "BLM").await;
    let batch = vec![
        // Close before open, within the batch: the open then fills in the entry.
        closed_hold("C1", "J1", "ASN", "OUT-1", 3_000, 5_000, true),
        opened("O1", "J1", "BLM", "pan-a", 1_000),
        opened("O2", "J2", "BLM", "pan-b", 2_000),
        // The same event twice in one batch: the second is a duplicate.
        opened("O2", "J2", "BLM", "pan-b", 2_000),
        // A second close of J1 by another tap-out: recorded, no change.
        closed_hold("C1b", "J1", "TGK", "OUT-9", 9_000, 6_000, true),
        opened("O3", "J3", "BLM", "pan-c", 3_000),
        policy(
            "S3",
            "J3",
            "BLM",
            LineEventKind::StaleClosed { fare: None },
            9_000,
        ),
        closed_hold("C3", "J3", "ASN", "OUT-3", 3_000, 8_000, false),
    ];
    let got = s.apply_events(&batch).await.unwrap();
    use Applied::*;
    assert_eq!(
        got,
        vec![Changed, Changed, Changed, Duplicate, NoChange, Changed, Changed, Changed]
    );
    // The same outcome one by one on a second line database.
    c.create_db("other");
    let mut st = settings(&c, "BLM");
    st.url = c.url("other");
    let one = LineStore::open(&st, &key(1)).await.unwrap();
    let mut by_one = Vec::new();
    for e in &batch {
        by_one.push(one.apply_event(e).await.unwrap());
    }
    assert_eq!(got, by_one);
    let dump = "SELECT string_agg(concat_ws('|', tap_in_ref, pan_key, entry_station, \
                opened_at_ms, state, closed_station, tap_out_ref, fare, closed_at_ms, \
                references_hold), ';' ORDER BY tap_in_ref) FROM tapgate_journeys";
    assert_eq!(c.psql("postgres", dump), c.psql("other", dump));
    let j1 = s.journey("J1").await.unwrap().unwrap();
    assert_eq!(j1.state, JourneyState::Closed);
    assert_eq!(j1.tap_out_ref.as_deref(), Some("OUT-1"));
    assert_eq!(j1.pan_key.as_deref(), Some("pan-a"));
    assert_eq!(j1.references_hold, Some(true));

    // Replayed (the replicator lost the commit's answer): all duplicates, nothing changes.
    let before = c.psql("postgres", dump);
    let again = s.apply_events(&batch).await.unwrap();
    assert_eq!(again, vec![Duplicate; batch.len()]);
    assert_eq!(c.psql("postgres", dump), before);
    assert_eq!(
        c.psql("postgres", "SELECT count(*) FROM tapgate_journey_events"),
        "7"
    );
    assert_eq!(s.apply_events(&[]).await.unwrap(), vec![]);

    // All or nothing: an event the database refuses (a trigger standing in for any error)
    // rolls the whole batch back.
    c.psql(
        "postgres",
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.event_id = 'BOOM' THEN RAISE EXCEPTION 'boom'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER boom BEFORE INSERT ON tapgate_journey_events \
         FOR EACH ROW EXECUTE FUNCTION boom()",
    );
    let bad = vec![
        opened("O7", "J7", "BLM", "pan-g", 1_000),
        opened("BOOM", "J8", "BLM", "pan-h", 1_000),
        opened("O9", "J9", "BLM", "pan-i", 1_000),
    ];
    assert!(s.apply_events(&bad).await.is_err());
    assert_eq!(
        c.psql("postgres", dump),
        before,
        "nothing of the batch stayed"
    );
    // An event refused before any I/O refuses the batch.
    let mut empty = opened("O10", "J10", "BLM", "pan-j", 1);
    empty.tap_in_ref.clear();
    assert!(matches!(
        s.apply_events(&[opened("O11", "J11", "BLM", "pan-k", 1), empty])
            .await,
        Err(LineError::Invalid(_))
    ));
    assert_eq!(c.psql("postgres", dump), before);

    // journeys(): the known ones among the refs, in one query.
    let mut got = s
        .journeys(&["J3".into(), "J1".into(), "nope".into()])
        .await
        .unwrap();
    got.sort_by(|a, b| a.tap_in_ref.cmp(&b.tap_in_ref));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], j1);
    assert_eq!(got[1].tap_in_ref, "J3");
    assert_eq!(got[1].state, JourneyState::Closed);
    assert_eq!(got[1].references_hold, Some(false));
    assert_eq!(s.journeys(&[]).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_exits_claiming_one_journey_from_two_connections_exactly_one_wins() {
    let c = cluster!();
    let a = store(&c, "ASN").await;
    let b = store(&c, "TGK").await;
    let mut wins = [0u32; 2];
    for round in 0..50 {
        let pan = format!("pan-{round}");
        let journey = format!("J{round}");
        a.apply_event(&opened(&format!("O{round}"), &journey, "BLM", &pan, 1_000))
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (st, claim) in [(a.clone(), "ASN-OUT"), (b.clone(), "TGK-OUT")] {
            let (barrier, pan) = (barrier.clone(), pan.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                st.lookup(&exit_q(&pan, claim, 100_000)).await.unwrap()
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        for a in &answers {
            assert_eq!(open_ref(a), Some(journey.as_str()), "round {round}");
        }
        let won: Vec<usize> = (0..2)
            .filter(|&i| answers[i].claimed_by.is_none())
            .collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one wins: {answers:?}");
        let (w, l) = (won[0], 1 - won[0]);
        let winner = ["ASN-OUT", "TGK-OUT"][w];
        assert_eq!(
            answers[l].claimed_by.as_deref(),
            Some(winner),
            "round {round}: the loser is told who holds it"
        );
        assert_eq!(
            c.psql(
                "postgres",
                &format!("SELECT claim_ref FROM tapgate_journeys WHERE tap_in_ref = '{journey}'")
            ),
            winner
        );
        wins[w] += 1;
    }
    println!("claims won: ASN {} TGK {}", wins[0], wins[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_times_out_the_exit_lookup_within_its_budget_pool_wait_included() {
    let mut c = cluster!();
    let mut st = settings(&c, "ASN");
    st.lookup_timeout_ms = 200;
    st.pool_size = 1;
    let s = LineStore::open(&st, &key(1)).await.unwrap();
    s.apply_event(&opened("BLM-1", "J1", "BLM", "pan-a", 1_000))
        .await
        .unwrap();
    assert!(s.lookup(&exit_q("pan-a", "OUT-0", 5_000)).await.is_ok());

    c.freeze();
    for i in 0..3 {
        let t = Instant::now();
        let e = s
            .lookup(&exit_q("pan-a", &format!("OUT-{i}"), 5_000))
            .await
            .unwrap_err();
        timed_out_within_budget(&e, "lookup", t.elapsed());
    }
    // The pool's only connection is busy in a background call on the hung server: the
    // lookup's wait for it counts against the same budget.
    let bg = s.clone();
    let busy = tokio::spawn(async move { bg.journeys(&["J1".into()]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let e = s
        .lookup(&exit_q("pan-a", "OUT-9", 5_000))
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(e, LineError::Timeout { what: "lookup", .. }),
        "{e}"
    );
    assert!(took < Duration::from_millis(200 + 300), "{took:?}");

    c.thaw();
    let _ = busy.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s.lookup(&exit_q("pan-a", "OUT-0", 6_000)).await {
            Ok(a) => {
                assert_eq!(open_ref(&a), Some("J1"));
                break;
            }
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not back after thaw: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_database_at_schema_1_is_migrated_to_2_keeping_its_journeys() {
    let c = cluster!();
    c.psql(
        "postgres",
        &format!(
            "BEGIN; {VERSION_TABLE}; {} \
             INSERT INTO tapgate_schema VALUES (1, 0, 'old'); \
             INSERT INTO tapgate_journeys (tap_in_ref, pan_key, entry_station, opened_at_ms, \
               state, updated_at_ms) VALUES ('OLD-1', 'pan-a', 'BLM', 1000, 'OPEN', 1000); \
             INSERT INTO tapgate_journeys (tap_in_ref, pan_key, entry_station, opened_at_ms, \
               state, closed_station, tap_out_ref, fare, closed_at_ms, updated_at_ms) \
               VALUES ('OLD-2', 'pan-b', 'BLM', 1000, 'CLOSED', 'ASN', 'OUT', 3000, 2000, 2000); \
             COMMIT",
            MIGRATIONS[0]
        ),
    );
    let s = LineStore::connect(&settings(&c, "ASN")).unwrap();
    let m = s.migrate().await.unwrap();
    assert_eq!((m.from, m.to), (1, SCHEMA_VERSION));
    let old = s.journey("OLD-2").await.unwrap().unwrap();
    assert_eq!(old.state, JourneyState::Closed);
    assert_eq!(
        old.references_hold, None,
        "closed before the column existed"
    );
    let a = s.lookup(&exit_q("pan-a", "OUT-1", 5_000)).await.unwrap();
    assert_eq!(open_ref(&a), Some("OLD-1"));
    assert_eq!(a.claimed_by, None);
}

/// `e` is the 200 ms budget's timeout of `what`, a degrade, and came within the budget plus
/// 300 ms of slack.
fn timed_out_within_budget(e: &LineError, what: &str, took: Duration) {
    assert!(
        matches!(e, LineError::Timeout { what: w, after_ms: 200 } if *w == what),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Degrade);
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(200 + 300),
        "{took:?}"
    );
}

fn unpaid_entry(reference: &str, pan: &str, station: &str, amount: u64) -> UnpaidEntry {
    UnpaidEntry {
        partner_reference_no: reference.into(),
        pan_key: pan.into(),
        pan_masked: format!("93600009*******{}", &reference[reference.len() - 4..]),
        nns: "93600009".into(),
        station: station.into(),
        direction: tapgate::fare::Direction::In,
        amount,
        at_ms: 10_000,
        reason: "late reply: declined by issuer: Insufficient Funds".into(),
        cleared_at_ms: None,
        cleared_by: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unpaid_list_is_line_wide_and_a_clear_at_any_gate_holds_everywhere() {
    let c = cluster!();
    let blm = store(&c, "BLM").await;
    let ist = store(&c, "IST").await;
    // BLM's fast-opened hold of pan-a ended unpaid; BLM sends it twice (a retry).
    let e = unpaid_entry("TGBLM-0001", "pan-a", "BLM", 14_000);
    blm.push_unpaid(std::slice::from_ref(&e), 11_000)
        .await
        .unwrap();
    blm.push_unpaid(std::slice::from_ref(&e), 11_500)
        .await
        .unwrap();
    // An entry lookup at IST sees what pan-a owes, in the same round trip; pan-b owes nothing.
    let mut q = exit_q("pan-a", "x", 20_000);
    q.claim = None;
    let a = ist.lookup(&q).await.unwrap();
    let owed = a.owed.expect("owed on the line");
    assert_eq!((owed.amount, owed.count), (Rupiah(14_000), 1));
    q.pan_key = "pan-b".into();
    assert_eq!(ist.lookup(&q).await.unwrap().owed, None);
    assert_eq!(ist.unpaid_list(false).await.unwrap().len(), 1);

    // Staff at IST clear pan-a by masked PAN; BLM learns of it for its own entry.
    assert_eq!(
        ist.unpaid_clear("93600009*******0001", "ani", 30_000)
            .await
            .unwrap(),
        ClearOutcome::Cleared(vec![UnpaidEntry {
            cleared_at_ms: Some(30_000),
            cleared_by: Some("ani".into()),
            ..e.clone()
        }])
    );
    let cleared = blm
        .unpaid_cleared(&["TGBLM-0001".into(), "TGBLM-0002".into()])
        .await
        .unwrap();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].cleared_by.as_deref(), Some("ani"));
    q.pan_key = "pan-a".into();
    assert_eq!(
        ist.lookup(&q).await.unwrap().owed,
        None,
        "cleared line-wide"
    );
    // A late resend of the uncleared entry does not undo the clear.
    blm.push_unpaid(std::slice::from_ref(&e), 40_000)
        .await
        .unwrap();
    assert_eq!(ist.lookup(&q).await.unwrap().owed, None);
    assert!(ist.unpaid_list(false).await.unwrap().is_empty());
    assert_eq!(ist.unpaid_list(true).await.unwrap().len(), 1);
    assert_eq!(
        ist.unpaid_clear("pan-a", "ani", 50_000).await.unwrap(),
        ClearOutcome::NoMatch
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_role_granted_at_schema_2_keeps_its_lookups_after_the_unpaid_list_arrives() {
    let c = cluster!();
    c.create_db("line");
    c.psql(
        "postgres",
        "CREATE ROLE gate LOGIN PASSWORD 'line-test-password'",
    );
    c.psql("line", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    // The line at schema 2, its gate role granted what schema 2 needs.
    c.psql(
        "line",
        &format!(
            "BEGIN; {VERSION_TABLE}; {} {} \
             INSERT INTO tapgate_schema VALUES (1, 0, 'old'), (2, 0, 'old'); COMMIT",
            MIGRATIONS[0], MIGRATIONS[1]
        ),
    );
    c.psql(
        "line",
        "GRANT SELECT ON tapgate_schema TO gate; \
         GRANT SELECT, INSERT ON tapgate_line TO gate; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON tapgate_journeys, tapgate_journey_events TO gate",
    );
    let mut owner = c.settings("line", "ops");
    owner.background_timeout_ms = 20_000;
    owner.connect_timeout_ms = 10_000;
    let m = LineStore::connect(&owner).unwrap().migrate().await.unwrap();
    assert_eq!((m.from, m.to), (2, SCHEMA_VERSION));
    let mut gate = c.settings("line", "BLM");
    gate.url = format!("postgresql://gate@127.0.0.1:{}/line", c.port);
    gate.background_timeout_ms = 20_000;
    gate.connect_timeout_ms = 10_000;
    gate.lookup_timeout_ms = 10_000;
    let s = LineStore::open(&gate, &key(1)).await.unwrap();
    let a = s.lookup(&exit_q("pan-a", "OUT-1", 10)).await.unwrap();
    assert_eq!(a.owed, None);
    s.push_unpaid(&[unpaid_entry("TGBLM-0009", "pan-a", "BLM", 6_000)], 20)
        .await
        .unwrap();
    let a = s.lookup(&exit_q("pan-a", "OUT-2", 30)).await.unwrap();
    assert_eq!(a.owed.map(|o| o.amount), Some(Rupiah(6_000)));
}
