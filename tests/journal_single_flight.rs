//! `Journal::begin_tap` across two connections to one file (as two processes have): a tap in
//! flight blocks the passenger's next one, a passage moments ago is the same tap, and once both
//! are past the journey is what the second tap decides on.

use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{
    Journal, JourneyRow, NewOp, OpKind, TapBlock, TapClaim, TapDecision, TapStart, Transition,
};

const KEY: &str = "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff";

fn op(reference: &str, direction: Direction, now: i64, journey_id: Option<i64>) -> Box<NewOp> {
    Box::new(NewOp {
        partner_reference_no: reference.into(),
        kind: match direction {
            Direction::In => OpKind::Hold,
            Direction::Out => OpKind::Settle,
        },
        lane: "in-1".into(),
        direction,
        station_id: "BLM".into(),
        amount: Rupiah(9000),
        pan_key: KEY.into(),
        pan_masked: "93600914*******0000".into(),
        nns: "93600914".into(),
        journey_id,
        next_attempt_at_ms: now + 3000,
        created_at_ms: now,
    })
}

fn claim(direction: Direction, now: i64, debounce: i64) -> TapClaim {
    TapClaim {
        pan_key: KEY.into(),
        direction,
        now_ms: now,
        passed_since_ms: now - debounce,
        check_unpaid: direction == Direction::In,
    }
}

type Start = TapStart<Option<JourneyRow>, ()>;

fn begin(j: &mut Journal, c: &TapClaim, reference: &str) -> Start {
    let (dir, now) = (c.direction, c.now_ms);
    let r = reference.to_string();
    j.begin_tap(c, move |open| TapDecision::Begin {
        op: op(&r, dir, now, open.as_ref().map(|o| o.journey.id)),
        close_first: None,
        line: Default::default(),
        then: open.map(|o| o.journey),
    })
    .unwrap()
}

#[test]
fn two_connections_take_turns_and_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut a = Journal::open(&path).unwrap();
    let mut b = Journal::open(&path).unwrap();
    let t0 = 1_800_000_000_000;

    assert_eq!(
        begin(&mut a, &claim(Direction::In, t0, 3000), "A1"),
        TapStart::Begun(None)
    );
    // The same passenger through the other connection while A1 is in flight.
    assert_eq!(
        begin(&mut b, &claim(Direction::In, t0 + 5, 3000), "B1"),
        TapStart::Blocked(TapBlock::InFlight {
            partner_reference_no: "A1".into()
        })
    );
    assert_eq!(b.get("B1").unwrap(), None, "nothing written");

    // A1 paid, gate opened, journey open.
    a.transition(
        "A1",
        &Transition {
            reference_no: Some("R1".into()),
            gate_opened: Some(true),
            ..Transition::new(OpState::Succeeded, t0 + 50)
        },
    )
    .unwrap();
    let jid = a.open_journey(KEY, "BLM", "A1", t0 + 40).unwrap();
    // Moments later at another entry: the same tap.
    assert_eq!(
        begin(&mut b, &claim(Direction::In, t0 + 100, 3000), "B2"),
        TapStart::Blocked(TapBlock::JustPassed {
            partner_reference_no: "A1".into()
        })
    );
    // At the exit, the journey A1 opened is handed to the decision.
    match begin(&mut b, &claim(Direction::Out, t0 + 200, 3000), "B3") {
        TapStart::Begun(Some(open)) => assert_eq!(open.id, jid),
        other => panic!("{other:?}"),
    }
    // A refusal writes nothing.
    let refused: TapStart<(), &str> = a
        .begin_tap(&claim(Direction::In, t0 + 10_000, 0), |_| {
            TapDecision::Refuse("passback")
        })
        .unwrap();
    assert_eq!(refused, TapStart::Refused("passback"));
    assert_eq!(a.export(0).unwrap().len(), 2);
}

#[test]
fn holds_without_a_journey_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(&dir.path().join("journal.db")).unwrap();
    let t0 = 1_800_000_000_000;
    for (r, journey) in [("H1", true), ("H2", false)] {
        j.begin(&op(r, Direction::In, t0, None)).unwrap();
        j.transition(
            r,
            &Transition {
                reference_no: Some(format!("REF{r}")),
                gate_opened: Some(true),
                ..Transition::new(OpState::Succeeded, t0 + 1)
            },
        )
        .unwrap();
        if journey {
            j.open_journey(KEY, "BLM", r, t0 + 1).unwrap();
        }
    }
    let found: Vec<_> = j
        .holds_without_journey(10)
        .unwrap()
        .into_iter()
        .map(|r| r.partner_reference_no)
        .collect();
    assert_eq!(found, vec!["H2".to_string()]);
}
