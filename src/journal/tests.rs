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

#[test]
fn a_qr_sale_is_journaled_as_mpm_and_a_tap_as_cpm_and_only_a_stopped_process_s_sale_is_on_screen_for_recovery(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("journal.db")).unwrap();
    j.begin(&op(1)).unwrap();
    let qr = NewOp {
        partner_reference_no: "TQ-LBB-01-000002".into(),
        pan_masked: MPM_PAYER.into(),
        nns: MPM_PAYER.into(),
        ..op(2)
    };
    j.begin_qr(&qr).unwrap();
    assert_eq!(
        j.get(&op(1).partner_reference_no).unwrap().unwrap().channel,
        Channel::Cpm
    );
    let sale = j.get(&qr.partner_reference_no).unwrap().unwrap();
    assert_eq!((sale.channel, sale.state), (Channel::Mpm, OpState::Pending));
    assert!(matches!(
        j.begin_qr(&qr),
        Err(JournalError::DuplicateReference(_))
    ));
    // On screen: PENDING or UNKNOWN with the gate's outcome unknown; this process owns it.
    let on_screen = j.qr_sales_on_screen().unwrap();
    assert_eq!(on_screen.len(), 1);
    assert_eq!(on_screen[0].0, qr.partner_reference_no);
    assert!(on_screen[0].1.as_deref().is_some_and(owner_is_alive));
    j.transition(
        &qr.partner_reference_no,
        &Transition {
            gate_opened: Some(false),
            ..Transition::new(OpState::Unknown, 1_700_000_010_000)
        },
    )
    .unwrap();
    assert!(j.qr_sales_on_screen().unwrap().is_empty(), "withdrawn");
    let mut csv = Vec::new();
    write_csv(&j.export(0).unwrap(), &mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert!(text.lines().next().unwrap().ends_with(",channel"));
    assert_eq!(text.matches(",mpm\r\n").count(), 1);
    assert_eq!(text.matches(",cpm\r\n").count(), 1);
}
