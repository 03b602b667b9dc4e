//! The journal's size and speed as it grows, and what retention costs. Prints numbers; asserts
//! nothing (run: `cargo bench --bench journal_retention`; `BIG=200000` for a smaller big
//! journal, `BENCH_DIR=/dev/shm` to take the disk's fsync out of the numbers).
//!
//! 1. 1 000 operations (500 journeys: hold, tap-out settle, closing) written through the
//!    journal's API, as the lanes write them, timing each tap's journal writes (3 commits, each
//!    fsynced): the cost at 1 k rows.
//! 2. Those rows copied, in ONE transaction, up to 100 k and then `BIG` (1 M) operations with
//!    their events and journeys, dated long ago: the bytes per operation in the file, and the
//!    open-time integrity check (`quick_check`) at 100 k and 1 M.
//! 3. The same taps at 1 M rows.
//! 4. Retention of 100 k operations in batches of `PRUNE_BATCH` (default 100, the config's
//!    default): time per batch (how long a tap may wait for the journal) and the file size
//!    before and after refilling.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::Connection;
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::retention::{self, DAY_MS};
use tapgate::journal::{Journal, JourneyState, NewOp, OpKind, Transition};

const TEMPLATE_OPS: usize = 1000;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

fn op(reference: &str, kind: OpKind, pan_key: &str, at: i64) -> NewOp {
    let (lane, direction, amount) = match kind {
        OpKind::Hold => ("LBB-IN-1", Direction::In, 14_000),
        OpKind::Settle => ("LBB-OUT-1", Direction::Out, 9_000),
    };
    NewOp {
        partner_reference_no: reference.to_owned(),
        kind,
        lane: lane.into(),
        direction,
        station_id: "LBB".into(),
        amount: Rupiah(amount),
        pan_key: pan_key.to_owned(),
        pan_masked: "93600914*******1234".into(),
        nns: "93600914".into(),
        journey_id: None,
        next_attempt_at_ms: at + 3_000,
        created_at_ms: at,
    }
}

fn paid(j: &mut Journal, r: &str, at: i64) {
    j.transitions(
        r,
        &[
            Transition {
                reference_no: Some(format!("20261122{r}")),
                response_code: Some("2005400".into()),
                bump_attempts: true,
                ..Transition::new(OpState::Succeeded, at + 400)
            },
            Transition {
                gate_opened: Some(true),
                ..Transition::new(OpState::Succeeded, at + 450)
            },
        ],
    )
    .expect("transition");
}

/// One passenger's journey as the lanes journal it; returns each tap's journal time.
fn journey(j: &mut Journal, n: usize, at: i64) -> [Duration; 2] {
    let key = format!("{:064x}", (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let tin = format!("TG-LBB-IN1-{n:09}");
    let tout = format!("TG-LBB-OUT1-{n:09}");
    let t = Instant::now();
    j.begin(&op(&tin, OpKind::Hold, &key, at)).expect("begin");
    paid(j, &tin, at);
    let id = j.open_journey(&key, "LBB", &tin, at + 460).expect("open");
    let hold = t.elapsed();
    let at_out = at + 1_800_000;
    let t = Instant::now();
    j.begin(&op(&tout, OpKind::Settle, &key, at_out))
        .expect("begin");
    paid(j, &tout, at_out);
    j.close_journey(
        id,
        JourneyState::Closed,
        Some(&tout),
        Some(Rupiah(9_000)),
        at_out + 460,
    )
    .expect("close");
    [hold, t.elapsed()]
}

fn table(c: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut s = c.prepare(sql).expect("prepare");
    let n = s.column_count();
    let rows = s
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .expect("query")
        .collect::<Result<Vec<Vec<Value>>, _>>()
        .expect("rows");
    rows
}

/// Copies the template's operations, events and journeys `copies` times (new references and
/// ids, dated `shift_ms` further back per copy) in one transaction.
fn replicate(path: &Path, first_copy: usize, copies: usize, shift_ms: i64) {
    let mut c = Connection::open(path).expect("open");
    c.pragma_update(None, "foreign_keys", "ON").expect("fk");
    let ops = table(
        &c,
        &format!(
            "SELECT * FROM fare_ops WHERE partner_reference_no LIKE 'TG-%' ORDER BY rowid LIMIT {TEMPLATE_OPS}"
        ),
    );
    let refs: Vec<String> = ops
        .iter()
        .map(|r| match &r[0] {
            Value::Text(s) => s.clone(),
            _ => String::new(),
        })
        .collect();
    let list = refs
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let events = table(
        &c,
        &format!(
            "SELECT partner_reference_no, at_ms, from_state, to_state, detail FROM events \
             WHERE partner_reference_no IN ({list}) ORDER BY id"
        ),
    );
    let journeys = table(
        &c,
        &format!("SELECT * FROM journeys WHERE tap_in_ref IN ({list}) ORDER BY id"),
    );
    let max_id: i64 = c
        .query_row("SELECT coalesce(max(id), 0) FROM journeys", [], |r| {
            r.get(0)
        })
        .expect("max");
    let tx = c.transaction().expect("tx");
    tx.pragma_update(None, "defer_foreign_keys", "ON")
        .expect("defer");
    {
        let cols = ops[0].len();
        let marks = (1..=cols)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut ins_op = tx
            .prepare(&format!("INSERT INTO fare_ops VALUES ({marks})"))
            .expect("op");
        let mut ins_ev = tx
            .prepare(
                "INSERT INTO events (partner_reference_no, at_ms, from_state, to_state, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .expect("ev");
        let jcols = journeys.first().map_or(0, Vec::len);
        let jmarks = (1..=jcols)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut ins_j = tx
            .prepare(&format!("INSERT INTO journeys VALUES ({jmarks})"))
            .expect("journey");
        let rename = |v: &Value, copy: usize| match v {
            Value::Text(s) => Value::Text(format!("C{copy:07}-{s}")),
            other => other.clone(),
        };
        let shift = |v: &Value, copy: usize| match v {
            Value::Integer(t) => Value::Integer(t - shift_ms * copy as i64),
            other => other.clone(),
        };
        for copy in first_copy..first_copy + copies {
            let id_off = max_id + (copy - first_copy) as i64 * TEMPLATE_OPS as i64;
            let new_id = |v: &Value| match v {
                Value::Integer(i) => Value::Integer(i + id_off),
                other => other.clone(),
            };
            for j in &journeys {
                // id, pan_key, entry_station, tap_in_ref, tap_out_ref, state, fare, opened, closed
                let row = vec![
                    new_id(&j[0]),
                    j[1].clone(),
                    j[2].clone(),
                    rename(&j[3], copy),
                    rename(&j[4], copy),
                    j[5].clone(),
                    j[6].clone(),
                    shift(&j[7], copy),
                    shift(&j[8], copy),
                ];
                ins_j
                    .execute(rusqlite::params_from_iter(row))
                    .expect("journey");
            }
            for o in &ops {
                let mut row = o.clone();
                row[0] = rename(&o[0], copy);
                // created_at_ms, updated_at_ms, next_attempt_at_ms, journey_id
                row[18] = shift(&o[18], copy);
                row[19] = shift(&o[19], copy);
                row[15] = shift(&o[15], copy);
                row[20] = new_id(&o[20]);
                ins_op.execute(rusqlite::params_from_iter(row)).expect("op");
            }
            for e in &events {
                let row = vec![
                    rename(&e[0], copy),
                    shift(&e[1], copy),
                    e[2].clone(),
                    e[3].clone(),
                    e[4].clone(),
                ];
                ins_ev.execute(rusqlite::params_from_iter(row)).expect("ev");
            }
        }
    }
    tx.commit().expect("commit");
    c.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .expect("checkpoint");
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn ops_count(path: &Path) -> i64 {
    Connection::open(path)
        .expect("open")
        .query_row("SELECT count(*) FROM fare_ops", [], |r| r.get(0))
        .expect("count")
}

fn checkpoint(path: &Path) {
    Connection::open(path)
        .expect("open")
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .expect("checkpoint");
}

/// Times `taps` journeys (two taps each) written through the API at the journal's current
/// size; prints p50/p99 per tap.
fn tap_cost(path: &Path, label: &str, first: usize, journeys: usize, now: i64) {
    let mut j = Journal::open(path).expect("open");
    let mut hold = Vec::new();
    let mut settle = Vec::new();
    for n in first..first + journeys {
        let [h, s] = journey(&mut j, n, now + n as i64);
        hold.push(ms(h));
        settle.push(ms(s));
    }
    println!(
        "tap journal writes at {label:>9} rows: tap-in p50 {:6.2} ms p99 {:6.2} ms | tap-out p50 {:6.2} ms p99 {:6.2} ms  (3 commits each, {} taps)",
        pct(&mut hold, 0.5),
        pct(&mut hold, 0.99),
        pct(&mut settle, 0.5),
        pct(&mut settle, 0.99),
        journeys * 2
    );
}

fn integrity_cost(path: &Path, label: &str) {
    let t = Instant::now();
    let j = Journal::open_read_only(path).expect("open");
    let open = t.elapsed();
    let t = Instant::now();
    let found = j.quick_check().expect("check");
    let check = t.elapsed();
    println!(
        "integrity at {label:>9} ops ({:>5} MiB): open_read_only (with the bounded quick_check) {:8.1} ms, quick_check alone {:8.1} ms, findings {}",
        file_size(path) >> 20,
        ms(open),
        ms(check),
        found.len()
    );
}

fn main() {
    let big: usize = std::env::var("BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let path = dir.path().join("journal.db");
    println!(
        "journal_retention: journal in {} (BIG={big})",
        dir.path().display()
    );
    let now = jiff::Timestamp::now().as_millisecond();

    // 1. The template, through the API: 500 journeys = 1000 operations, dated 100 days ago.
    let long_ago = now - 100 * DAY_MS;
    {
        let mut j = Journal::open(&path).expect("open");
        let mut hold = Vec::new();
        let mut settle = Vec::new();
        for n in 0..TEMPLATE_OPS / 2 {
            let [h, s] = journey(&mut j, n, long_ago + n as i64 * 1000);
            hold.push(ms(h));
            settle.push(ms(s));
        }
        println!(
            "tap journal writes at     0-1 k rows: tap-in p50 {:6.2} ms p99 {:6.2} ms | tap-out p50 {:6.2} ms p99 {:6.2} ms  (3 commits each, {} taps)",
            pct(&mut hold, 0.5),
            pct(&mut hold, 0.99),
            pct(&mut settle, 0.5),
            pct(&mut settle, 0.99),
            TEMPLATE_OPS
        );
    }
    checkpoint(&path);
    let size_1k = file_size(&path);

    // 2. Up to 100 k, then BIG, in one transaction each step.
    let t = Instant::now();
    replicate(&path, 1, 99, DAY_MS / 1000);
    println!(
        "generated 100 k operations in {:.1} s (one transaction)",
        t.elapsed().as_secs_f64()
    );
    let size_100k = file_size(&path);
    integrity_cost(&path, "100 k");
    let copies = big / TEMPLATE_OPS;
    if copies > 100 {
        let t = Instant::now();
        replicate(&path, 100, copies - 100, DAY_MS / 1000);
        println!(
            "generated {} operations in {:.1} s (one transaction)",
            ops_count(&path),
            t.elapsed().as_secs_f64()
        );
    }
    let n_big = ops_count(&path);
    let size_big = file_size(&path);
    println!(
        "file size: {} KiB at 1 k ops, {} MiB at 100 k, {} MiB at {n_big}",
        size_1k >> 10,
        size_100k >> 20,
        size_big >> 20
    );
    println!(
        "bytes per operation (with its events and half a journey): {:.0} (100 k -> {n_big}: {:.0})",
        size_100k as f64 / 100_000.0,
        (size_big - size_100k) as f64 / (n_big - 100_000).max(1) as f64
    );
    integrity_cost(&path, &format!("{}", n_big));

    // 3. Taps at BIG rows.
    tap_cost(&path, &format!("{n_big}"), 10_000_000, 250, now);
    checkpoint(&path);

    // 4. Retention: the oldest 100 k operations (the copies are dated further back each).
    let mut j = Journal::open(&path).expect("open");
    let cutoff = now - 30 * DAY_MS;
    let export = dir.path().join("pruned");
    let ex = retention::ExportDir::lock(&export, &path).expect("lock");
    let mut pick = Vec::new();
    let mut write = Vec::new();
    let mut commit = Vec::new();
    let batch_size: usize = std::env::var("PRUNE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut pruned = 0usize;
    let t_all = Instant::now();
    while pruned < 100_000 {
        let t = Instant::now();
        let Some(b) = j.prune_candidates(cutoff, batch_size).expect("pick") else {
            break;
        };
        pick.push(ms(t.elapsed()));
        let t = Instant::now();
        ex.write(&b).expect("export");
        write.push(ms(t.elapsed()));
        let t = Instant::now();
        j.prune_commit(&b, &ex.file_name(b.number), now)
            .expect("commit");
        commit.push(ms(t.elapsed()));
        pruned += b.ops.len();
    }
    let total = t_all.elapsed();
    drop(ex);
    drop(j);
    checkpoint(&path);
    println!(
        "retention: {pruned} operations in {} batches of {batch_size} in {:.1} s ({:.0} ops/s); journal held per batch: pick p50 {:.1} ms max {:.1} ms, delete p50 {:.1} ms max {:.1} ms; CSV export (unlocked) p50 {:.1} ms",
        pick.len(),
        total.as_secs_f64(),
        pruned as f64 / total.as_secs_f64(),
        pct(&mut pick.clone(), 0.5),
        pct(&mut pick, 1.0),
        pct(&mut commit.clone(), 0.5),
        pct(&mut commit, 1.0),
        pct(&mut write, 0.5),
    );
    let after_prune = file_size(&path);
    // Refill what was pruned: the freed pages take the new rows.
    replicate(&path, 5_000_000, pruned / TEMPLATE_OPS, 0);
    println!(
        "file size: {} MiB before retention, {} MiB after pruning {pruned}, {} MiB after adding {pruned} again (freelist reuse: flat)",
        size_big >> 20,
        after_prune >> 20,
        file_size(&path) >> 20
    );
}
