//! Tests that need the journal's own connection (the size cap that simulates a full disk).

use super::*;

fn op(n: u32) -> NewOp {
    NewOp {
        partner_reference_no: format!("TG-LBB-01-{n:06}"),
        kind: OpKind::Hold,
        lane: "LBB-IN-1".into(),
        direction: Direction::In,
        station_id: "LBB".into(),
        amount: Rupiah(14000),
        pan_key: format!("{n:064x}"),
        pan_masked: "93600914*******1234".into(),
        nns: "93600914".into(),
        journey_id: None,
        next_attempt_at_ms: 1_700_000_002_000,
        created_at_ms: 1_700_000_000_000 + i64::from(n),
    }
}

#[test]
fn full_disk_is_a_storage_fault_and_earlier_rows_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut j = Journal::open(&path).unwrap();
    j.begin(&op(0)).unwrap();

    // SQLite answers SQLITE_FULL once the file would pass max_page_count: the same code
    // path as a full disk, without needing a tiny filesystem.
    let pages: i64 = j
        .conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .unwrap();
    j.conn.pragma_update(None, "max_page_count", pages).unwrap();

    let mut err = None;
    for n in 1..5000 {
        if let Err(e) = j.begin(&op(n)) {
            err = Some((n, e));
            break;
        }
    }
    let (failed_at, err) = err.expect("the capped journal never filled up");
    assert!(err.is_storage_fault(), "{err:?}");
    assert_eq!(err.storage_fault(), Some(StorageFault::Full), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Storage);

    // The failed begin left nothing half-written.
    assert_eq!(j.get(&op(failed_at).partner_reference_no).unwrap(), None);
    drop(j);

    let j = Journal::open(&path).unwrap();
    for n in 0..failed_at {
        let row = j.get(&op(n).partner_reference_no).unwrap().unwrap();
        assert_eq!(row.state, OpState::Pending);
        assert_eq!(j.events(&row.partner_reference_no).unwrap().len(), 1);
    }
    assert_eq!(j.get(&op(failed_at).partner_reference_no).unwrap(), None);
    let integrity: String = j
        .conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn pragmas_are_set_for_durability() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let mode: String = j
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let sync: i64 = j
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let fk: i64 = j
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(fk, 1);
}

#[test]
fn the_reconcilers_states_are_exactly_the_non_final_ones() {
    let sql = non_final_sql();
    for s in OpState::ALL {
        let listed = sql.contains(&format!("'{}'", s.as_str()));
        assert_eq!(listed, !s.is_final(), "{s} in {sql}");
    }
}
