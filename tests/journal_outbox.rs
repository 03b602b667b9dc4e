//! The line's outbox in a real SQLite journal: journey events are written in the transaction
//! of the journey change they describe, read back in order, and gone once sent; a journey
//! closed elsewhere closes here and releases the hold it did not finalize; an exit charged
//! the unknown-entry fare converges with a partial refund.

mod journal_common;

use journal_common::{new_op, settle_op, succeed};
use tapgate::fare::{OpState, Rupiah};
use tapgate::journal::{ElsewhereClose, Journal, JourneyEventKind, JourneyState};

const T0: i64 = 1_796_180_400_000;

fn line_journal(dir: &std::path::Path) -> Journal {
    let mut j = Journal::open(&dir.join("journal.db")).unwrap();
    j.set_line_station(Some("BLM".into()));
    j
}

#[test]
fn without_a_line_nothing_goes_to_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("journal.db")).unwrap();
    j.begin(&new_op("IN1", T0)).unwrap();
    succeed(&mut j, "IN1", T0);
    let id = j.open_journey("k1", "BLM", "IN1", T0).unwrap();
    j.close_journey(
        id,
        JourneyState::StaleClosed,
        None,
        Some(Rupiah(14_000)),
        T0 + 1,
    )
    .unwrap();
    assert_eq!(j.outbox_stats().unwrap().pending, 0);
}

#[test]
fn opening_and_closing_a_journey_write_their_events_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = line_journal(dir.path());
    j.begin(&new_op("IN1", T0)).unwrap();
    let id = j.open_journey("k1", "BLM", "IN1", T0).unwrap();
    // The tap-in's result comes a moment after its journey: read when the event is sent.
    let before = j.outbox_batch(10).unwrap();
    assert_eq!(before[0].tap_in_state, Some(OpState::Pending));
    assert_eq!(
        before[0].event.kind,
        JourneyEventKind::Opened {
            pan_key: "k1".into(),
            tap_in_reference_no: None
        }
    );
    succeed(&mut j, "IN1", T0);
    j.begin(&settle_op("OUT1", T0 + 60_000)).unwrap();
    j.close_journey(
        id,
        JourneyState::Closed,
        Some("OUT1"),
        Some(Rupiah(3000)),
        T0 + 60_000,
    )
    .unwrap();
    let rows = j.outbox_batch(10).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].seq < rows[1].seq);
    assert_eq!(rows[0].event_id, "IN1/OPENED/BLM");
    assert_eq!(
        rows[0].event.kind,
        JourneyEventKind::Opened {
            pan_key: "k1".into(),
            tap_in_reference_no: Some("AGG-IN1".into()),
        }
    );
    assert_eq!(rows[1].event_id, "IN1/CLOSED/OUT1");
    assert_eq!(
        rows[1].event.kind,
        JourneyEventKind::Closed {
            tap_out_ref: "OUT1".into(),
            fare: Rupiah(3000),
            references_hold: true,
        }
    );
    let stats = j.outbox_stats().unwrap();
    assert_eq!((stats.pending, stats.oldest_at_ms), (2, Some(T0)));
    // Sent up to the first: only the second is left; sent all: nothing.
    j.outbox_sent(rows[0].seq).unwrap();
    assert_eq!(j.outbox_batch(10).unwrap(), vec![rows[1].clone()]);
    j.outbox_sent(rows[1].seq).unwrap();
    assert!(j.outbox_batch(10).unwrap().is_empty());
}

#[test]
fn a_journey_of_another_station_closes_on_the_line_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = line_journal(dir.path());
    j.begin(&settle_op("OUT1", T0)).unwrap();
    j.close_on_line("TGASN-IN", "OUT1", Some(Rupiah(5000)), T0)
        .unwrap();
    // The same close written twice (a retried settle) is one event.
    j.close_on_line("TGASN-IN", "OUT1", Some(Rupiah(5000)), T0)
        .unwrap();
    let rows = j.outbox_batch(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.tap_in_ref, "TGASN-IN");
    assert_eq!(rows[0].event.station, "BLM");
    assert!(j.find_open_journey("k1").unwrap().is_none());
}

#[test]
fn a_journey_closed_elsewhere_without_its_hold_closes_here_and_sends_the_hold_to_refund() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = line_journal(dir.path());
    j.begin(&new_op("IN1", T0)).unwrap();
    succeed(&mut j, "IN1", T0);
    let id = j.open_journey("k1", "BLM", "IN1", T0).unwrap();
    j.outbox_sent(i64::MAX).unwrap();
    let close = ElsewhereClose {
        id,
        state: JourneyState::Closed,
        fare: Some(Rupiah(5000)),
        release_hold: true,
    };
    j.close_elsewhere(&close, T0 + 1000).unwrap();
    let jy = j.get_journey(id).unwrap().unwrap();
    assert_eq!(
        (jy.state, jy.fare),
        (JourneyState::Closed, Some(Rupiah(5000)))
    );
    let hold = j.get("IN1").unwrap().unwrap();
    assert_eq!(hold.state, OpState::RefundPending);
    assert_eq!(hold.refund_amount, Some(Rupiah(14_000)));
    assert!(
        j.outbox_batch(10).unwrap().is_empty(),
        "the line has it already"
    );
    // Finalized by the exit elsewhere: the hold stands.
    j.begin(&new_op("IN2", T0 + 2000)).unwrap();
    succeed(&mut j, "IN2", T0 + 2000);
    let id2 = j.open_journey("k2", "BLM", "IN2", T0 + 2000).unwrap();
    j.close_elsewhere(
        &ElsewhereClose {
            release_hold: false,
            id: id2,
            ..close
        },
        T0 + 3000,
    )
    .unwrap();
    assert_eq!(j.get("IN2").unwrap().unwrap().state, OpState::Succeeded);
}

#[test]
fn an_unknown_entry_exit_converges_with_a_partial_refund_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = line_journal(dir.path());
    j.begin(&settle_op("OUT1", T0)).unwrap();
    succeed(&mut j, "OUT1", T0);
    // Not marked: not listed.
    assert!(j.unconverged_exits(0, 10).unwrap().is_empty());
    rusqlite::Connection::open(dir.path().join("journal.db"))
        .unwrap()
        .execute(
            "UPDATE fare_ops SET entry_unknown = 1 WHERE partner_reference_no = 'OUT1'",
            [],
        )
        .unwrap();
    let due = j.unconverged_exits(0, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert!(
        j.unconverged_exits(T0 + 1, 10).unwrap().is_empty(),
        "past its horizon"
    );
    j.converge_exit("OUT1", "TGASN-IN", Some(Rupiah(6000)), T0 + 5000)
        .unwrap();
    let op = j.get("OUT1").unwrap().unwrap();
    assert_eq!(op.state, OpState::RefundPending);
    assert_eq!(op.refund_amount, Some(Rupiah(6000)));
    assert!(j.unconverged_exits(0, 10).unwrap().is_empty());
}
