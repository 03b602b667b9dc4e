//! The journal against real SQLite files in temporary folders.

use std::path::Path;

use rusqlite::Connection;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{
    allowed, schema, ErrorClass, Journal, JournalError, JourneyState, NewOp, OpFilter, OpKind,
    Rejection, StorageFault, Transition, CSV_COLUMNS,
};

const T0: i64 = 1_763_780_000_000; // 2025-11-22, a morning peak at Lebak Bulus

const ALL: [OpState; 7] = OpState::ALL;

fn op(reference: &str, created_at_ms: i64) -> NewOp {
    NewOp {
        partner_reference_no: reference.to_owned(),
        kind: OpKind::Hold,
        lane: "LBB-IN-1".into(),
        direction: Direction::In,
        station_id: "LBB".into(),
        amount: Rupiah(14000),
        pan_key: "5f1c0e9a".repeat(8),
        pan_masked: "93600914*******1234".into(),
        nns: "93600914".into(),
        journey_id: None,
        next_attempt_at_ms: created_at_ms + 2_000,
        created_at_ms,
    }
}

fn tr(to: OpState, at_ms: i64) -> Transition {
    Transition::new(to, at_ms)
}

fn succeed(j: &mut Journal, r: &str, at: i64) {
    j.transition(
        r,
        &Transition {
            reference_no: Some(format!("FP{r}")),
            response_code: Some("2006000".into()),
            bump_attempts: true,
            ..tr(OpState::Succeeded, at)
        },
    )
    .unwrap();
}

/// Drives a fresh operation `r` into `state` along legal moves.
fn reach(j: &mut Journal, r: &str, state: OpState) {
    j.begin(&op(r, T0)).unwrap();
    let at = T0 + 100;
    match state {
        OpState::Pending => {}
        OpState::Unknown => {
            j.transition(r, &tr(OpState::Unknown, at)).unwrap();
        }
        OpState::Succeeded => succeed(j, r, at),
        OpState::Declined => {
            j.transition(
                r,
                &Transition {
                    response_code: Some("4036005".into()),
                    reason: Some("insufficient balance".into()),
                    ..tr(OpState::Declined, at)
                },
            )
            .unwrap();
        }
        OpState::RefundPending | OpState::Refunded => {
            succeed(j, r, at);
            j.transition(r, &refund_pending(at + 1)).unwrap();
            if state == OpState::Refunded {
                j.transition(
                    r,
                    &Transition {
                        refund_no: Some("RF1".into()),
                        ..tr(OpState::Refunded, at + 2)
                    },
                )
                .unwrap();
            }
        }
        OpState::Attention => {
            j.transition(r, &tr(OpState::Unknown, at)).unwrap();
            j.transition(
                r,
                &Transition {
                    reason: Some("still unknown after 20 queries".into()),
                    ..tr(OpState::Attention, at + 1)
                },
            )
            .unwrap();
        }
    }
    assert_eq!(j.get(r).unwrap().unwrap().state, state);
}

fn refund_pending(at: i64) -> Transition {
    Transition {
        gate_opened: Some(false),
        refund_amount: Some(Rupiah(14000)),
        ..tr(OpState::RefundPending, at)
    }
}

/// Fields that satisfy every money rule for a move into `to` from `from`.
fn satisfying(r: &str, from: OpState, to: OpState, at: i64) -> Transition {
    match to {
        OpState::Succeeded if from == OpState::Succeeded => Transition {
            gate_opened: Some(false),
            ..tr(to, at)
        },
        OpState::Succeeded => Transition {
            reference_no: Some(format!("FP{r}")),
            ..tr(to, at)
        },
        OpState::RefundPending => Transition {
            reference_no: Some(format!("FP{r}")),
            ..refund_pending(at)
        },
        OpState::Attention => Transition {
            reason: Some("a person must look".into()),
            ..tr(to, at)
        },
        _ => tr(to, at),
    }
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

#[test]
fn begin_is_on_disk_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut j = Journal::open(&path).unwrap();
    let new = op("TG-LBB-01-000001", T0);
    j.begin(&new).unwrap();
    drop(j);

    let j = Journal::open(&path).unwrap();
    let row = j.get("TG-LBB-01-000001").unwrap().unwrap();
    assert_eq!(row.state, OpState::Pending);
    assert_eq!(row.kind, OpKind::Hold);
    assert_eq!(row.amount, Rupiah(14000));
    assert_eq!(row.pan_masked, "93600914*******1234");
    assert_eq!(row.attempts, 0);
    assert_eq!(row.next_attempt_at_ms, Some(T0 + 2_000));
    assert_eq!((row.created_at_ms, row.updated_at_ms), (T0, T0));
    assert_eq!(row.gate_opened, None);
    let events = j.events("TG-LBB-01-000001").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].from_state, None);
    assert_eq!(events[0].to_state, OpState::Pending);
    assert!(
        events[0].detail.contains("amount=14000"),
        "{}",
        events[0].detail
    );
}

#[test]
fn a_reference_is_journaled_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.begin(&op("R1", T0)).unwrap();
    succeed(&mut j, "R1", T0 + 1);
    let again = j.begin(&op("R1", T0 + 5)).unwrap_err();
    assert!(
        matches!(&again, JournalError::DuplicateReference(r) if r == "R1"),
        "{again:?}"
    );
    assert_eq!(again.class(), ErrorClass::Logic);
    assert_eq!(j.get("R1").unwrap().unwrap().state, OpState::Succeeded);
}

#[test]
fn a_full_pan_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    let mut bad = op("R1", T0);
    bad.pan_masked = "9360091412345678".into();
    let e = j.begin(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            JournalError::InvalidOp {
                field: "pan_masked",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_storage_fault());
    assert_eq!(j.get("R1").unwrap(), None);
}

#[test]
fn every_transition_through_sqlite_follows_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    let mut ok = 0;
    for from in ALL {
        for to in ALL {
            let r = format!("TG-{from}-{to}");
            reach(&mut j, &r, from);
            let before = j.get(&r).unwrap().unwrap();
            let events_before = j.events(&r).unwrap().len();
            let result = j.transition(&r, &satisfying(&r, from, to, T0 + 1_000));
            if allowed(from, to) {
                let row = result.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert_eq!(row.state, to);
                assert_eq!(j.get(&r).unwrap().unwrap(), row, "{from} -> {to}");
                let events = j.events(&r).unwrap();
                assert_eq!(events.len(), events_before + 1);
                let last = events.last().unwrap();
                assert_eq!((last.from_state, last.to_state), (Some(from), to));
                assert_eq!(last.at_ms, T0 + 1_000);
                ok += 1;
            } else {
                let e = result.unwrap_err();
                assert!(
                    matches!(&e, JournalError::IllegalTransition { from: f, to: t, .. }
                        if *f == from && *t == to),
                    "{from} -> {to}: {e:?}"
                );
                assert!(!e.is_storage_fault());
                assert_eq!(j.get(&r).unwrap().unwrap(), before, "{from} -> {to}");
                assert_eq!(j.events(&r).unwrap().len(), events_before);
            }
        }
    }
    assert_eq!(ok, 15);
}

#[test]
fn money_rules_are_enforced_and_nothing_is_written_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    reach(&mut j, "R1", OpState::Succeeded);
    j.transition(
        "R1",
        &Transition {
            gate_opened: Some(true),
            ..tr(OpState::Succeeded, T0 + 300)
        },
    )
    .unwrap();
    let e = j.transition("R1", &refund_pending(T0 + 400)).unwrap_err();
    assert!(
        matches!(
            e,
            JournalError::Rejected {
                why: Rejection::GateOutcomeChanged,
                ..
            }
        ),
        "{e:?}"
    );
    let e = j
        .transition(
            "R1",
            &Transition {
                refund_amount: Some(Rupiah(14000)),
                ..tr(OpState::RefundPending, T0 + 400)
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            JournalError::Rejected {
                why: Rejection::RefundAfterGateOpened,
                ..
            }
        ),
        "{e:?}"
    );
    let row = j.get("R1").unwrap().unwrap();
    assert_eq!(row.state, OpState::Succeeded);
    assert_eq!(row.gate_opened, Some(true));
    assert_eq!(row.refund_amount, None);

    let e = j.transition("nope", &tr(OpState::Unknown, T0)).unwrap_err();
    assert!(matches!(e, JournalError::UnknownReference(_)), "{e:?}");
}

#[test]
fn attempts_are_bumped_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.begin(&op("R1", T0)).unwrap();
    let row = j
        .transition(
            "R1",
            &Transition {
                bump_attempts: true,
                next_attempt_at_ms: Some(T0 + 5_000),
                ..tr(OpState::Unknown, T0 + 500)
            },
        )
        .unwrap();
    assert_eq!(row.attempts, 1);
    let row = j.transition("R1", &tr(OpState::Unknown, T0 + 600)).unwrap();
    assert_eq!(row.attempts, 1);
    assert_eq!(row.next_attempt_at_ms, Some(T0 + 5_000));
    let row = j
        .transition(
            "R1",
            &Transition {
                bump_attempts: true,
                ..tr(OpState::Unknown, T0 + 5_000)
            },
        )
        .unwrap();
    assert_eq!(row.attempts, 2);
    assert_eq!(j.get("R1").unwrap().unwrap().attempts, 2);
}

#[test]
fn due_returns_non_final_ops_whose_time_has_come_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    // Begun out of order so insertion order cannot pass for age order.
    let mut begin = |r: &str, created: i64, next: i64| {
        let mut o = op(r, created);
        o.next_attempt_at_ms = next;
        j.begin(&o).unwrap();
    };
    begin("C-pending", T0 + 30, T0 + 100);
    begin("A-unknown", T0 + 10, T0 + 100);
    begin("B-refund", T0 + 20, T0 + 100);
    begin("D-later", T0 + 5, T0 + 10_000);
    begin("E-done", T0 + 1, T0 + 100);
    begin("F-attention", T0 + 2, T0 + 100);
    begin("G-declined", T0 + 3, T0 + 100);
    j.transition("A-unknown", &tr(OpState::Unknown, T0 + 50))
        .unwrap();
    succeed(&mut j, "B-refund", T0 + 50);
    j.transition("B-refund", &refund_pending(T0 + 60)).unwrap();
    succeed(&mut j, "E-done", T0 + 50);
    j.transition(
        "F-attention",
        &Transition {
            reason: Some("x".into()),
            ..tr(OpState::Attention, T0 + 50)
        },
    )
    .unwrap();
    j.transition("G-declined", &tr(OpState::Declined, T0 + 50))
        .unwrap();

    let refs = |rows: Vec<tapgate::journal::OpRow>| {
        rows.into_iter()
            .map(|r| r.partner_reference_no)
            .collect::<Vec<_>>()
    };
    assert!(j.due(T0 + 99, 10).unwrap().is_empty());
    assert_eq!(
        refs(j.due(T0 + 100, 10).unwrap()),
        ["A-unknown", "B-refund", "C-pending"]
    );
    assert_eq!(
        refs(j.due(T0 + 10_000, 10).unwrap()),
        ["D-later", "A-unknown", "B-refund", "C-pending"]
    );
    assert_eq!(
        refs(j.due(T0 + 10_000, 2).unwrap()),
        ["D-later", "A-unknown"]
    );
    assert!(j.due(T0 + 10_000, 0).unwrap().is_empty());

    // Moving the next attempt forward takes an operation out of due() until then.
    j.transition(
        "A-unknown",
        &Transition {
            next_attempt_at_ms: Some(T0 + 20_000),
            bump_attempts: true,
            ..tr(OpState::Unknown, T0 + 10_000)
        },
    )
    .unwrap();
    assert_eq!(
        refs(j.due(T0 + 10_000, 10).unwrap()),
        ["D-later", "B-refund", "C-pending"]
    );
}

#[test]
fn list_filters_by_state_lane_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    for (i, lane) in ["LBB-IN-1", "LBB-IN-2", "LBB-IN-1", "LBB-OUT-1"]
        .iter()
        .enumerate()
    {
        let mut o = op(&format!("R{i}"), T0 + i64::try_from(i).unwrap() * 1000);
        o.lane = (*lane).to_owned();
        j.begin(&o).unwrap();
    }
    succeed(&mut j, "R2", T0 + 5_000);
    let refs = |f: OpFilter| {
        j.list(&f)
            .unwrap()
            .into_iter()
            .map(|r| r.partner_reference_no)
            .collect::<Vec<_>>()
    };
    assert_eq!(refs(OpFilter::default()), ["R0", "R1", "R2", "R3"]);
    let lane1 = OpFilter {
        lane: Some("LBB-IN-1".into()),
        ..OpFilter::default()
    };
    assert_eq!(refs(lane1.clone()), ["R0", "R2"]);
    assert_eq!(
        refs(OpFilter {
            state: Some(OpState::Pending),
            ..lane1
        }),
        ["R0"]
    );
    assert_eq!(
        refs(OpFilter {
            since_ms: Some(T0 + 1_000),
            limit: Some(2),
            ..OpFilter::default()
        }),
        ["R1", "R2"]
    );
    let counts = j.counts_by_state().unwrap();
    assert_eq!(counts.len(), 7);
    assert!(counts.contains(&(OpState::Pending, 3)));
    assert!(counts.contains(&(OpState::Succeeded, 1)));
    assert!(counts.contains(&(OpState::Refunded, 0)));
}

#[test]
fn journeys_open_find_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    let pan = "5f1c0e9a".repeat(8);
    reach(&mut j, "IN-1", OpState::Succeeded);
    assert_eq!(j.find_open_journey(&pan).unwrap(), None);

    let e = j.open_journey(&pan, "LBB", "missing", T0).unwrap_err();
    assert!(matches!(e, JournalError::UnknownReference(_)), "{e:?}");

    let id = j.open_journey(&pan, "LBB", "IN-1", T0 + 200).unwrap();
    let open = j.find_open_journey(&pan).unwrap().unwrap();
    assert_eq!(open.id, id);
    assert_eq!(open.state, JourneyState::Open);
    assert_eq!(open.entry_station, "LBB");
    assert_eq!(open.tap_in_ref, "IN-1");
    assert_eq!((open.tap_out_ref.clone(), open.fare), (None, None));
    assert_eq!(j.get("IN-1").unwrap().unwrap().journey_id, Some(id));
    assert_eq!(j.find_open_journey(&"0".repeat(64)).unwrap(), None);

    // Anti-passback: a second open journey for the same passenger is refused.
    reach(&mut j, "IN-2", OpState::Succeeded);
    let e = j.open_journey(&pan, "FTM", "IN-2", T0 + 300).unwrap_err();
    assert!(
        matches!(e, JournalError::JourneyAlreadyOpen { id: i } if i == id),
        "{e:?}"
    );

    // Tap-out at Blok M: Rp8,000.
    let mut out = op("OUT-1", T0 + 1_800_000);
    out.kind = OpKind::Settle;
    out.direction = Direction::Out;
    out.station_id = "BLM".into();
    out.lane = "BLM-OUT-1".into();
    out.amount = Rupiah(8000);
    out.journey_id = Some(id);
    j.begin(&out).unwrap();
    succeed(&mut j, "OUT-1", T0 + 1_800_300);
    assert_eq!(j.get("OUT-1").unwrap().unwrap().journey_id, Some(id));
    let e = j
        .close_journey(id, JourneyState::Open, None, None, T0)
        .unwrap_err();
    assert!(matches!(e, JournalError::CloseIntoOpen(_)), "{e:?}");
    j.close_journey(
        id,
        JourneyState::Closed,
        Some("OUT-1"),
        Some(Rupiah(8000)),
        T0 + 1_800_400,
    )
    .unwrap();
    assert_eq!(j.find_open_journey(&pan).unwrap(), None);
    let closed = j.get_journey(id).unwrap().unwrap();
    assert_eq!(closed.state, JourneyState::Closed);
    assert_eq!(closed.tap_out_ref.as_deref(), Some("OUT-1"));
    assert_eq!(closed.fare, Some(Rupiah(8000)));
    assert_eq!(closed.closed_at_ms, Some(T0 + 1_800_400));
    let story = j.events("IN-1").unwrap();
    assert!(story.iter().any(|e| e.detail.contains("CLOSED fare=8000")));

    let e = j
        .close_journey(id, JourneyState::Void, None, None, T0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            JournalError::JourneyNotOpen {
                state: JourneyState::Closed,
                ..
            }
        ),
        "{e:?}"
    );
    let e = j
        .close_journey(9999, JourneyState::Void, None, None, T0)
        .unwrap_err();
    assert!(matches!(e, JournalError::UnknownJourney(9999)), "{e:?}");

    // Now the passenger may start a new journey.
    let id2 = j.open_journey(&pan, "FTM", "IN-2", T0 + 3_600_000).unwrap();
    assert_ne!(id2, id);
}

#[test]
fn stale_journeys_are_open_ones_older_than_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    let mut ids = Vec::new();
    for (i, opened) in [T0 + 2_000, T0, T0 + 1_000, T0 + 9_000].iter().enumerate() {
        let r = format!("IN-{i}");
        reach(&mut j, &r, OpState::Succeeded);
        ids.push(
            j.open_journey(&format!("{i:064x}"), "LBB", &r, *opened)
                .unwrap(),
        );
    }
    j.close_journey(ids[2], JourneyState::Closed, None, None, T0 + 5_000)
        .unwrap();
    let stale: Vec<i64> = j
        .stale_journeys(T0 + 5_000)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(stale, [ids[1], ids[0]]);
    j.close_journey(
        ids[1],
        JourneyState::StaleClosed,
        None,
        Some(Rupiah(14000)),
        T0 + 6_000,
    )
    .unwrap();
    let stale: Vec<i64> = j
        .stale_journeys(T0 + 9_001)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(stale, [ids[0], ids[3]]);
}

#[test]
fn export_as_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.begin(&op("OLD", T0 - 86_400_000)).unwrap();
    reach(&mut j, "R1", OpState::Succeeded);
    reach(&mut j, "R2", OpState::Declined);
    j.transition(
        "R1",
        &Transition {
            gate_opened: Some(true),
            ..tr(OpState::Succeeded, T0 + 400)
        },
    )
    .unwrap();
    let rows = j.export(T0).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].partner_reference_no, "R1");

    let json = serde_json::to_value(&rows).unwrap();
    assert_eq!(json[0]["state"], "SUCCEEDED");
    assert_eq!(json[0]["amount"], 14000);
    assert_eq!(json[0]["gate_opened"], true);
    assert_eq!(json[0]["kind"], "hold");
    assert_eq!(json[0]["direction"], "in");
    assert_eq!(json[0]["reference_no"], "FPR1");
    assert_eq!(json[1]["state"], "DECLINED");
    assert_eq!(json[1]["refund_amount"], serde_json::Value::Null);

    let mut out = Vec::new();
    tapgate::journal::write_csv(&rows, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], CSV_COLUMNS.join(","));
    assert_eq!(lines[3], "");
    let r1: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(r1.len(), CSV_COLUMNS.len());
    let field = |row: &[&str], name: &str| {
        let i = CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
        row[i].to_owned()
    };
    assert_eq!(field(&r1, "partner_reference_no"), "R1");
    assert_eq!(field(&r1, "amount"), "14000");
    assert_eq!(field(&r1, "gate_opened"), "1");
    assert_eq!(field(&r1, "created_at"), "2025-11-22T02:53:20Z");
    assert_eq!(field(&r1, "refund_amount"), "");
    assert!(lines[2].contains("DECLINED"));
}

#[test]
fn csv_quotes_reasons_with_commas_and_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.begin(&op("R1", T0)).unwrap();
    j.transition(
        "R1",
        &Transition {
            reason: Some("Do not honour, \"blocked\"".into()),
            ..tr(OpState::Declined, T0 + 1)
        },
    )
    .unwrap();
    let mut out = Vec::new();
    tapgate::journal::write_csv(&j.export(0).unwrap(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(",\"Do not honour, \"\"blocked\"\"\","),
        "{text}"
    );
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    Journal::open(&path).unwrap().begin(&op("R1", T0)).unwrap();
    raw(&path)
        .pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
        .unwrap();

    let e = Journal::open(&path).unwrap_err();
    assert!(
        matches!(e, JournalError::NewerSchema { found, supported, .. }
            if found == schema::SCHEMA_VERSION + 1 && supported == schema::SCHEMA_VERSION),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Schema);
    assert!(!e.is_storage_fault());
    assert!(e.to_string().contains("downgrade"), "{e}");
    let e = Journal::open_read_only(&path).unwrap_err();
    assert!(matches!(e, JournalError::NewerSchema { .. }), "{e:?}");

    let v: i64 = raw(&path)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::SCHEMA_VERSION + 1);
}

#[test]
fn a_foreign_sqlite_file_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    raw(&path)
        .execute_batch("CREATE TABLE songs (title TEXT)")
        .unwrap();
    let e = Journal::open(&path).unwrap_err();
    assert!(matches!(e, JournalError::NotAJournal { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Schema);
    let mode: String = raw(&path)
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the foreign file was switched to WAL");
}

#[test]
fn a_migrated_journal_has_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    drop(Journal::open(&path).unwrap());
    // Opening again must not re-run migrations (they would fail on existing tables).
    drop(Journal::open(&path).unwrap());
    let c = raw(&path);
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let app: i64 = c
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::SCHEMA_VERSION);
    assert_eq!(app, schema::APPLICATION_ID);
}

#[test]
fn open_needs_an_existing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let e = Journal::open(&dir.path().join("missing/j.db")).unwrap_err();
    assert!(e.is_storage_fault(), "{e:?}");
    assert_eq!(e.storage_fault(), Some(StorageFault::CannotOpen));
    let e = Journal::open_read_only(&dir.path().join("absent.db")).unwrap_err();
    assert!(e.is_storage_fault(), "{e:?}");
}

#[test]
fn a_reader_sees_the_writers_commits_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut writer = Journal::open(&path).unwrap();
    writer.begin(&op("R1", T0)).unwrap();

    let mut reader = Journal::open_read_only(&path).unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.get("R1").unwrap().unwrap().state, OpState::Pending);

    succeed(&mut writer, "R1", T0 + 300);
    writer.begin(&op("R2", T0 + 1_000)).unwrap();
    assert_eq!(reader.get("R1").unwrap().unwrap().state, OpState::Succeeded);
    assert_eq!(reader.list(&OpFilter::default()).unwrap().len(), 2);
    assert_eq!(reader.events("R1").unwrap().len(), 2);

    // A reader never writes, and a reader being open never stops the writer.
    let e = reader.begin(&op("R3", T0)).unwrap_err();
    assert_eq!(e.storage_fault(), Some(StorageFault::ReadOnly), "{e:?}");
    writer.begin(&op("R3", T0 + 2_000)).unwrap();
    assert_eq!(reader.list(&OpFilter::default()).unwrap().len(), 3);
}

#[test]
fn read_only_refuses_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    std::fs::File::create(&path).unwrap();
    let e = Journal::open_read_only(&path).unwrap_err();
    assert!(matches!(e, JournalError::NotAJournal { .. }), "{e:?}");
}

#[test]
fn damaged_rows_are_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = Journal::open(&path).unwrap();
    for r in ["R1", "R2", "R3"] {
        let mut o = op(r, T0);
        o.next_attempt_at_ms = T0;
        j.begin(&o).unwrap();
    }
    // Damage R2 behind the journal's back, as bit rot or a hand edit would.
    let c = raw(&path);
    c.pragma_update(None, "ignore_check_constraints", "ON")
        .unwrap();
    c.execute(
        "UPDATE fare_ops SET state = 'SUCCEDED' WHERE partner_reference_no = 'R2'",
        [],
    )
    .unwrap();
    c.execute(
        "UPDATE fare_ops SET gate_opened = 7 WHERE partner_reference_no = 'R3'",
        [],
    )
    .unwrap();
    drop(c);

    let j = Journal::open(&path).unwrap();
    assert_eq!(j.quarantined(), 0);
    let listed: Vec<String> = j
        .list(&OpFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.partner_reference_no)
        .collect();
    assert_eq!(listed, ["R1"]);
    assert_eq!(j.quarantined(), 2);
    assert_eq!(j.due(T0, 10).unwrap().len(), 1);
    assert_eq!(j.quarantined(), 3, "R3 still has a due state, R2 does not");
    let e = j.get("R2").unwrap_err();
    assert!(
        matches!(&e, JournalError::CorruptRow { key, .. } if key == "R2"),
        "{e:?}"
    );
    assert!(!e.is_storage_fault());
    let counts = j.counts_by_state().unwrap();
    assert!(counts.contains(&(OpState::Pending, 2)));
    assert_eq!(j.quarantined(), 4);
    drop(j);

    let mut j = Journal::open(&path).unwrap();
    let e = j
        .transition("R2", &tr(OpState::Unknown, T0 + 1))
        .unwrap_err();
    assert!(matches!(e, JournalError::CorruptRow { .. }), "{e:?}");
    // The healthy row is still writable.
    j.transition("R1", &tr(OpState::Unknown, T0 + 1)).unwrap();
}

#[test]
fn events_are_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = Journal::open(&path).unwrap();
    j.begin(&op("R1", T0)).unwrap();
    let c = raw(&path);
    assert!(c.execute("UPDATE events SET detail = 'x'", []).is_err());
    assert!(c.execute("DELETE FROM events", []).is_err());
    assert_eq!(j.events("R1").unwrap().len(), 1);
}

#[test]
fn the_story_of_a_late_success_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    j.begin(&op("R1", T0)).unwrap();
    // Deadline missed: gate stays shut, outcome unknown.
    j.transition(
        "R1",
        &Transition {
            gate_opened: Some(false),
            bump_attempts: true,
            next_attempt_at_ms: Some(T0 + 2_000),
            ..tr(OpState::Unknown, T0 + 500)
        },
    )
    .unwrap();
    // The query finds it paid.
    succeed(&mut j, "R1", T0 + 2_100);
    j.transition(
        "R1",
        &Transition {
            refund_amount: Some(Rupiah(14000)),
            next_attempt_at_ms: Some(T0 + 2_100),
            ..tr(OpState::RefundPending, T0 + 2_100)
        },
    )
    .unwrap();
    let row = j
        .transition(
            "R1",
            &Transition {
                refund_no: Some("RF-77".into()),
                response_code: Some("2008000".into()),
                bump_attempts: true,
                ..tr(OpState::Refunded, T0 + 2_600)
            },
        )
        .unwrap();
    assert_eq!(row.attempts, 3);
    assert_eq!(row.reference_no.as_deref(), Some("FPR1"));
    let story: Vec<(Option<OpState>, OpState)> = j
        .events("R1")
        .unwrap()
        .into_iter()
        .map(|e| (e.from_state, e.to_state))
        .collect();
    assert_eq!(
        story,
        [
            (None, OpState::Pending),
            (Some(OpState::Pending), OpState::Unknown),
            (Some(OpState::Unknown), OpState::Succeeded),
            (Some(OpState::Succeeded), OpState::RefundPending),
            (Some(OpState::RefundPending), OpState::Refunded),
        ]
    );
    assert!(j.due(i64::MAX, 10).unwrap().is_empty());
}

#[test]
fn a_reader_opens_after_the_writer_has_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut w = Journal::open(&path).unwrap();
    w.begin(&op("R1", T0)).unwrap();
    drop(w);
    let r = Journal::open_read_only(&path).unwrap();
    assert_eq!(r.get("R1").unwrap().unwrap().state, OpState::Pending);
}

#[test]
fn a_garbage_file_is_a_storage_fault_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let junk = b"this is not an sqlite database, it is a shopping list".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let e = Journal::open(&path).unwrap_err();
    assert_eq!(e.storage_fault(), Some(StorageFault::Corrupt), "{e:?}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn quick_check_finds_a_damaged_page_and_passes_a_sound_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = Journal::open(&path).unwrap();
    for n in 0..300 {
        j.begin(&op(&format!("R{n:04}"), T0 + n)).unwrap();
    }
    assert_eq!(j.quick_check().unwrap(), Vec::<String>::new());
    drop(j);
    // Move everything into the main file, then scribble over the middle of one page.
    raw(&path)
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8 * 4096, "{}", bytes.len());
    for b in &mut bytes[5 * 4096 + 100..5 * 4096 + 400] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    match Journal::open_read_only(&path) {
        Ok(j) => match j.quick_check() {
            Ok(found) => assert!(!found.is_empty(), "damage went unnoticed"),
            Err(e) => assert!(e.is_storage_fault(), "{e:?}"),
        },
        Err(e) => assert!(e.is_storage_fault(), "{e:?}"),
    }
}

#[test]
fn several_connections_opening_a_fresh_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut j = Journal::open(&path).unwrap();
                j.begin(&op(&format!("R{i}"), T0 + i)).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.list(&OpFilter::default()).unwrap().len(), 4);
}

#[test]
fn a_journal_can_move_to_a_blocking_thread() {
    fn is_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut j = Journal::open(&path).unwrap();
    is_send(&j);
    let j2 = std::thread::spawn(move || {
        j.begin(&op("R1", T0)).unwrap();
        j
    })
    .join()
    .unwrap();
    assert!(j2.get("R1").unwrap().is_some());
}

/// Several transitions commit together or not at all: a refused second step leaves the first
/// unwritten (a paid operation never looks final while it owes a refund).
#[test]
fn transitions_commit_all_or_nothing() {
    use tapgate::fare::{OpState, Rupiah};
    use tapgate::journal::{Journal, NewOp, OpKind, Transition};
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("j.db")).unwrap();
    let op = NewOp {
        partner_reference_no: "TGATOMIC1".into(),
        kind: OpKind::Hold,
        lane: "in-1".into(),
        direction: tapgate::fare::Direction::In,
        station_id: "BLM".into(),
        amount: Rupiah(9000),
        pan_key: "ab".repeat(32),
        pan_masked: "93600002*******6781".into(),
        nns: "93600002".into(),
        journey_id: None,
        next_attempt_at_ms: 0,
        created_at_ms: 1,
    };
    j.begin(&op).unwrap();
    let paid = Transition {
        reference_no: Some("R1".into()),
        gate_opened: Some(false),
        ..Transition::new(OpState::Succeeded, 2)
    };
    // A refund of more than was paid is refused: nothing of the pair may stick.
    let bad_refund = Transition {
        refund_amount: Some(Rupiah(99_000)),
        ..Transition::new(OpState::RefundPending, 3)
    };
    assert!(j
        .transitions("TGATOMIC1", &[paid.clone(), bad_refund])
        .is_err());
    assert_eq!(j.get("TGATOMIC1").unwrap().unwrap().state, OpState::Pending);
    let good_refund = Transition {
        refund_amount: Some(Rupiah(9000)),
        ..Transition::new(OpState::RefundPending, 3)
    };
    let row = j.transitions("TGATOMIC1", &[paid, good_refund]).unwrap();
    assert_eq!(row.state, OpState::RefundPending);
    assert_eq!(j.events("TGATOMIC1").unwrap().len(), 3);
}
