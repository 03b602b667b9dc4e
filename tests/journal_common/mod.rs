//! Shared by the journal tests: operations, a filled journal, and real damage to one of its
//! b-tree pages.

#![allow(dead_code)]

use std::path::Path;

use rusqlite::Connection;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{Journal, NewOp, OpKind, OpRow, Transition};

/// A hold journaled at `created_at_ms`.
pub fn new_op(reference: &str, created_at_ms: i64) -> NewOp {
    NewOp {
        partner_reference_no: reference.to_owned(),
        kind: OpKind::Hold,
        lane: "in-1".into(),
        direction: Direction::In,
        station_id: "LBB".into(),
        amount: Rupiah(14_000),
        pan_key: format!(
            "{:064x}",
            reference.len() as u64 * 7919 + created_at_ms as u64
        ),
        pan_masked: "93600914*******1234".into(),
        nns: "93600914".into(),
        journey_id: None,
        next_attempt_at_ms: created_at_ms + 5_000,
        created_at_ms,
    }
}

/// Moves `reference` (PENDING) to SUCCEEDED with the gate opened, at `at_ms`.
pub fn succeed(j: &mut Journal, reference: &str, at_ms: i64) -> OpRow {
    j.transitions(
        reference,
        &[
            Transition {
                reference_no: Some(format!("AGG-{reference}")),
                response_code: Some("2005400".into()),
                ..Transition::new(OpState::Succeeded, at_ms)
            },
            Transition {
                gate_opened: Some(true),
                ..Transition::new(OpState::Succeeded, at_ms)
            },
        ],
    )
    .unwrap()
}

/// A journal at `path` with `n` succeeded operations, everything checkpointed into the main
/// file; returns the rows as written.
pub fn filled(path: &Path, n: usize) -> Vec<OpRow> {
    let t0 = 1_790_000_000_000;
    let mut j = Journal::open(path).unwrap();
    let mut rows = Vec::new();
    for i in 0..n {
        let r = format!("TG-LBB-{i:06}");
        j.begin(&new_op(&r, t0 + i as i64 * 1000)).unwrap();
        rows.push(succeed(&mut j, &r, t0 + i as i64 * 1000 + 300));
    }
    drop(j);
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    rows
}

/// What [`damage_ops_page`] did.
#[derive(Debug)]
pub struct Damage {
    /// The damaged page (1-based).
    pub page: i64,
    /// How many rows it held.
    pub cells: i64,
}

/// Overwrites one leaf page of the `fare_ops` table, all but its 8-byte header, with
/// pseudo-random bytes from a fixed seed: the leftmost leaf (the oldest rows), so that new rows,
/// which go to the rightmost leaf, can still be inserted into a damaged file. Deterministic:
/// the same journal is damaged the same way on every run.
pub fn damage_ops_page(path: &Path) -> Damage {
    let c = Connection::open(path).unwrap();
    let (page, cells): (i64, i64) = c
        .query_row(
            "SELECT pageno, ncell FROM dbstat WHERE name = 'fare_ops' AND pagetype = 'leaf' \
             ORDER BY path LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let page_size: i64 = c
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    drop(c);
    let mut bytes = std::fs::read(path).unwrap();
    let start = ((page - 1) * page_size) as usize;
    let end = start + page_size as usize;
    assert!(end <= bytes.len(), "page {page} past the end of the file");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in &mut bytes[start + 8..end] {
        // xorshift64*: fixed seed, so the damage is the same on every run.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *b = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
    }
    std::fs::write(path, &bytes).unwrap();
    Damage { page, cells }
}

/// SQLite's own verdict on the file, without tapgate.
pub fn raw_quick_check(path: &Path) -> Vec<String> {
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = c.prepare("PRAGMA quick_check").unwrap();
    let v = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>();
    match v {
        Ok(v) => v,
        Err(e) => vec![e.to_string()],
    }
}

/// Begins `reference` at `created_at_ms` and drives it into `state` along legal moves, the
/// last change at `changed_at_ms`.
pub fn reach(j: &mut Journal, op: &NewOp, state: OpState, changed_at_ms: i64) -> OpRow {
    let r = op.partner_reference_no.as_str();
    j.begin(op).unwrap();
    let at = changed_at_ms;
    let ok = |t: Transition| Transition {
        reference_no: Some(format!("AGG-{r}")),
        ..t
    };
    let refund_pending = Transition {
        gate_opened: Some(false),
        refund_amount: Some(op.amount),
        ..ok(Transition::new(OpState::RefundPending, at))
    };
    let moves: Vec<Transition> = match state {
        OpState::Pending => vec![],
        OpState::Unknown => vec![Transition::new(OpState::Unknown, at)],
        OpState::Succeeded => return succeed(j, r, at),
        OpState::Declined => vec![Transition {
            response_code: Some("4036005".into()),
            reason: Some("insufficient balance".into()),
            ..Transition::new(OpState::Declined, at)
        }],
        OpState::RefundPending => vec![ok(Transition::new(OpState::Succeeded, at)), refund_pending],
        OpState::Refunded => vec![
            ok(Transition::new(OpState::Succeeded, at)),
            refund_pending,
            Transition {
                refund_no: Some(format!("RF-{r}")),
                ..Transition::new(OpState::Refunded, at)
            },
        ],
        OpState::Attention => vec![
            Transition::new(OpState::Unknown, at),
            Transition {
                reason: Some("still unknown after 20 queries".into()),
                ..Transition::new(OpState::Attention, at)
            },
        ],
    };
    if moves.is_empty() {
        return j.get(r).unwrap().unwrap();
    }
    let row = j.transitions(r, &moves).unwrap();
    assert_eq!(row.state, state);
    row
}

/// A tap-out (settle) operation.
pub fn settle_op(reference: &str, created_at_ms: i64) -> NewOp {
    NewOp {
        kind: OpKind::Settle,
        lane: "out-1".into(),
        direction: Direction::Out,
        amount: Rupiah(9_000),
        ..new_op(reference, created_at_ms)
    }
}

/// Adds `n` SUCCEEDED operations (`{prefix}{i}`), each with its two events, begun and changed
/// at `at_ms`, in ONE transaction: real rows of the real schema, a million in seconds.
pub fn bulk_succeeded(path: &Path, prefix: &str, n: usize, at_ms: i64) {
    let mut c = Connection::open(path).unwrap();
    c.pragma_update(None, "foreign_keys", "ON").unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut op = tx
            .prepare(
                "INSERT INTO fare_ops (partner_reference_no, kind, lane, direction, station_id, \
                 amount, pan_key, pan_masked, nns, state, reference_no, response_code, \
                 gate_opened, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms) \
                 VALUES (?1, 'hold', 'in-1', 'in', 'LBB', 14000, ?2, '93600914*******1234', \
                 '93600914', 'SUCCEEDED', ?3, '2005400', 1, 1, ?4, ?4, ?4)",
            )
            .unwrap();
        let mut ev = tx
            .prepare(
                "INSERT INTO events (partner_reference_no, at_ms, from_state, to_state, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        for i in 0..n {
            let r = format!("{prefix}{i:08}");
            let key = format!("{:064x}", i as u64 * 2_654_435_761);
            op.execute(rusqlite::params![r, key, format!("AGG-{r}"), at_ms])
                .unwrap();
            ev.execute(rusqlite::params![
                r,
                at_ms,
                None::<String>,
                "PENDING",
                "begin kind=hold lane=in-1 station=LBB amount=14000 nns=93600914 \
                 pan=93600914*******1234"
            ])
            .unwrap();
            ev.execute(rusqlite::params![
                r,
                at_ms,
                "PENDING",
                "SUCCEEDED",
                format!("referenceNo=AGG-{r} responseCode=2005400 gate_opened=true")
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Every operation's reference in the journal file, sorted.
pub fn all_refs(path: &Path) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut stmt = c
        .prepare("SELECT partner_reference_no FROM fare_ops ORDER BY 1")
        .unwrap();
    let v = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    v
}
