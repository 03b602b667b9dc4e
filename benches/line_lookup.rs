//! The line store's speed with a full table. Prints numbers; asserts nothing (run: `cargo
//! bench --bench line_lookup`; `JOURNEYS=200000` for a smaller table). Starts its own
//! throwaway PostgreSQL (tests/support/pg.rs) with PostgreSQL's durable defaults (fsync and
//! synchronous_commit on), on loopback.
//!
//! 1. Fills `JOURNEYS` (default 1 000 000) journeys — one in five open — and an `OPENED` event
//!    for each, with one `INSERT ... SELECT generate_series` per table, then `ANALYZE`.
//! 2. `find_open` (the exit lookup), one at a time: p50/p90/p99/max over 20 000 lookups, 80 %
//!    hits on open journeys, 20 % passengers with none; then 4 lookups at a time.
//! 3. `lookup` (the exit's one round trip: find + claim + debounce + the local journey's
//!    line view), one at a time over 20 000 exits, each claiming a different open journey
//!    (80 %) or finding none (20 %); then 4 at a time; then the entry's `lookup` (no claim).
//! 4. `close_if_open` (the exit's conditional close), one at a time, 5 000 open journeys.
//! 5. Replication: `apply_event` one at a time and 8 at a time, and `apply_events` in
//!    batches of 100 (one transaction each), one replicator and 4 at once: events/s.

#[path = "../tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tapgate::fare::Rupiah;
use tapgate::line::{KeyFingerprint, LineEvent, LineEventKind, LineStore, LookupQuery};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

fn report(name: &str, v: &mut [f64]) {
    println!(
        "{name}: n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        v.len(),
        pct(v, 0.50),
        pct(v, 0.90),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

/// The pan key the fill gives journey `i` (the same expression as the SQL).
fn pan_key(i: u64) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(format!("p{i}").as_bytes()))
}

fn main() {
    let started = Instant::now();
    let journeys: u64 = std::env::var("JOURNEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let Some(c) = pg::PgCluster::start(true) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut settings = c.settings("postgres", "BENCH");
    settings.lookup_timeout_ms = 5_000;
    settings.background_timeout_ms = 60_000;
    settings.pool_size = 8;
    let store = rt
        .block_on(LineStore::open(
            &settings,
            &KeyFingerprint::of_key(&[1; 32]),
        ))
        .expect("open the line store");
    println!(
        "measured on: {} ({} CPUs), client and server on one machine over loopback TCP, \
         release build",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned()))
            .unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "cluster: {}, fsync={}, synchronous_commit={}",
        c.psql("postgres", "SHOW server_version"),
        c.psql("postgres", "SHOW fsync"),
        c.psql("postgres", "SHOW synchronous_commit")
    );

    // 1. Fill.
    let t = Instant::now();
    c.psql(
        "postgres",
        &format!(
            "INSERT INTO tapgate_journeys (tap_in_ref, pan_key, entry_station, \
               tap_in_reference_no, opened_at_ms, state, closed_station, tap_out_ref, fare, \
               closed_at_ms, updated_at_ms) \
             SELECT 'FILL-IN-' || i, encode(sha256(('p' || i)::bytea), 'hex'), \
               (ARRAY['BLM','ASN','TGK'])[1 + i % 3], 'REF-' || i, 1700000000000 + i * 1000, \
               CASE WHEN i % 5 = 0 THEN 'OPEN' ELSE 'CLOSED' END, \
               CASE WHEN i % 5 = 0 THEN NULL ELSE 'ASN' END, \
               CASE WHEN i % 5 = 0 THEN NULL ELSE 'FILL-OUT-' || i END, \
               CASE WHEN i % 5 = 0 THEN NULL ELSE 3000 END, \
               CASE WHEN i % 5 = 0 THEN NULL ELSE 1700000000000 + i * 1000 + 900000 END, \
               1700000000000 + i * 1000 \
             FROM generate_series(1, {journeys}) AS i"
        ),
    );
    let fill_journeys = t.elapsed();
    let t = Instant::now();
    c.psql(
        "postgres",
        &format!(
            "INSERT INTO tapgate_journey_events (event_id, tap_in_ref, kind, station, at_ms, \
               pan_key, reference, applied_at_ms) \
             SELECT 'FILL-E-' || i, 'FILL-IN-' || i, 'OPENED', 'BLM', 1700000000000 + i * 1000, \
               encode(sha256(('p' || i)::bytea), 'hex'), 'REF-' || i, 1700000000000 + i * 1000 \
             FROM generate_series(1, {journeys}) AS i"
        ),
    );
    let fill_events = t.elapsed();
    let t = Instant::now();
    c.psql(
        "postgres",
        "ANALYZE tapgate_journeys; ANALYZE tapgate_journey_events",
    );
    let analyze = t.elapsed();
    println!(
        "fill: {journeys} journeys in {:.1} s, {journeys} events in {:.1} s, analyze {:.1} s; \
         table {} + indexes {}, events {}",
        fill_journeys.as_secs_f64(),
        fill_events.as_secs_f64(),
        analyze.as_secs_f64(),
        c.psql(
            "postgres",
            "SELECT pg_size_pretty(pg_table_size('tapgate_journeys'))"
        ),
        c.psql(
            "postgres",
            "SELECT pg_size_pretty(pg_indexes_size('tapgate_journeys'))"
        ),
        c.psql(
            "postgres",
            "SELECT pg_size_pretty(pg_total_relation_size('tapgate_journey_events'))"
        ),
    );

    let store = Arc::new(store);
    rt.block_on(async {
        // 2. find_open, one at a time. Open journeys are those with i % 5 == 0.
        let n = 20_000u64;
        let mut lat = Vec::with_capacity(n as usize);
        let mut hits = 0;
        for k in 0..n {
            let key = if k % 5 == 4 {
                pan_key(journeys + 1 + k)
            } else {
                // Spread over the table: a multiplicative step, rounded to an open journey.
                let i = ((k * 7_919) % (journeys / 5)).max(1) * 5;
                pan_key(i)
            };
            let t = Instant::now();
            let r = store.find_open(&key).await.expect("find_open");
            lat.push(ms(t.elapsed()));
            hits += usize::from(r.is_some());
        }
        report(&format!("find_open, 1 at a time ({hits} hits)"), &mut lat);

        // 4 at a time.
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for k in 0..5_000u64 {
                    let i = (((k * 4 + w) * 104_729) % (journeys / 5)).max(1) * 5;
                    let key = pan_key(i);
                    let t = Instant::now();
                    store.find_open(&key).await.expect("find_open");
                    lat.push(ms(t.elapsed()));
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let wall = t.elapsed();
        report(
            &format!(
                "find_open, 4 at a time ({:.0} lookups/s)",
                lat.len() as f64 / wall.as_secs_f64()
            ),
            &mut lat,
        );

        // 3. The exit lookup with a claim, one at a time. Open journeys are i % 5 == 0; each
        // exit claims a different one (7 919 is prime to journeys / 5 for the default size).
        let now = 1_800_000_000_000i64;
        let exit_q = move |k: u64, w: u64, hit: bool| -> LookupQuery {
            let i = (((k * 4 + w) * 7_919) % (journeys / 5)).max(1) * 5;
            LookupQuery {
                pan_key: if hit {
                    pan_key(i)
                } else {
                    pan_key(journeys + 1 + k * 4 + w)
                },
                claim: Some(format!("BENCH-CLAIM-{w}-{k}")),
                // A closed journey, as a station whose journal believes it open would ask.
                local_tap_in_ref: Some(format!("FILL-IN-{}", i + 1)),
                now_ms: now,
                claim_ms: 10_000,
                debounce_since_ms: now - 10_000,
            }
        };
        let n = 20_000u64;
        let mut lat = Vec::with_capacity(n as usize);
        let (mut won, mut local) = (0, 0);
        for k in 0..n {
            let q = exit_q(k, 0, k % 5 != 4);
            let t = Instant::now();
            let a = store.lookup(&q).await.expect("lookup");
            lat.push(ms(t.elapsed()));
            won += usize::from(a.open.is_some() && a.claimed_by.is_none());
            local += usize::from(a.local.is_some());
        }
        report(
            &format!("exit lookup (claim), 1 at a time ({won} claims won, {local} local views)"),
            &mut lat,
        );
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 1..5u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for k in 0..5_000u64 {
                    let q = exit_q(k, w, true);
                    let t = Instant::now();
                    store.lookup(&q).await.expect("lookup");
                    lat.push(ms(t.elapsed()));
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let wall = t.elapsed();
        report(
            &format!(
                "exit lookup (claim), 4 at a time ({:.0} lookups/s)",
                lat.len() as f64 / wall.as_secs_f64()
            ),
            &mut lat,
        );
        let mut lat = Vec::new();
        for k in 0..10_000u64 {
            let mut q = exit_q(k, 7, k % 5 != 4);
            q.claim = None;
            q.local_tap_in_ref = None;
            let t = Instant::now();
            store.lookup(&q).await.expect("lookup");
            lat.push(ms(t.elapsed()));
        }
        report("entry lookup (no claim), 1 at a time", &mut lat);

        // 4. close_if_open on 5 000 open journeys.
        let mut lat = Vec::new();
        for k in 0..5_000u64 {
            let i = (k + 1) * 5 * (journeys / 5 / 5_000).max(1);
            let ev = LineEvent {
                event_id: format!("BENCH-X-{k}"),
                tap_in_ref: format!("FILL-IN-{i}"),
                station: "ASN".into(),
                at_ms: 1_800_000_000_000,
                kind: LineEventKind::Closed {
                    tap_out_ref: format!("BENCH-OUT-{k}"),
                    fare: Rupiah(3_000),
                    references_hold: true,
                },
            };
            let t = Instant::now();
            store.close_if_open(&ev).await.expect("close_if_open");
            lat.push(ms(t.elapsed()));
        }
        report("close_if_open, 1 at a time", &mut lat);

        // 5. Replication: new journeys, an open and a close each.
        let events = |from: u64, n: u64| -> Vec<LineEvent> {
            (from..from + n)
                .flat_map(|k| {
                    let j = format!("BENCH-IN-{k}");
                    [
                        LineEvent {
                            event_id: format!("BENCH-O-{k}"),
                            tap_in_ref: j.clone(),
                            station: "BLM".into(),
                            at_ms: 1_800_000_000_000,
                            kind: LineEventKind::Opened {
                                pan_key: pan_key(10_000_000 + k),
                                tap_in_reference_no: Some(format!("R{k}")),
                            },
                        },
                        LineEvent {
                            event_id: format!("BENCH-C-{k}"),
                            tap_in_ref: j,
                            station: "ASN".into(),
                            at_ms: 1_800_000_100_000,
                            kind: LineEventKind::Closed {
                                tap_out_ref: format!("O{k}"),
                                fare: Rupiah(3_000),
                                references_hold: true,
                            },
                        },
                    ]
                })
                .collect()
        };
        let seq = events(0, 2_500);
        let t = Instant::now();
        for e in &seq {
            store.apply_event(e).await.expect("apply_event");
        }
        let wall = t.elapsed();
        println!(
            "apply_event, 1 at a time: {} events in {:.2} s = {:.0} events/s",
            seq.len(),
            wall.as_secs_f64(),
            seq.len() as f64 / wall.as_secs_f64()
        );
        let par = Arc::new(events(100_000, 10_000));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..8usize {
            let store = store.clone();
            let par = par.clone();
            tasks.push(tokio::spawn(async move {
                // Each worker takes whole journeys, so a journey's events stay in order.
                for pair in par.chunks(2).skip(w).step_by(8) {
                    for e in pair {
                        store.apply_event(e).await.expect("apply_event");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let wall = t.elapsed();
        println!(
            "apply_event, 8 at a time: {} events in {:.2} s = {:.0} events/s",
            par.len(),
            wall.as_secs_f64(),
            par.len() as f64 / wall.as_secs_f64()
        );

        // apply_events, batches of 100 (a journey's open and close in the same batch).
        let batched = events(200_000, 10_000);
        let mut lat = Vec::new();
        let t = Instant::now();
        for b in batched.chunks(100) {
            let tb = Instant::now();
            store.apply_events(b).await.expect("apply_events");
            lat.push(ms(tb.elapsed()));
        }
        let wall = t.elapsed();
        println!(
            "apply_events, batches of 100, 1 replicator: {} events in {:.2} s = {:.0} events/s",
            batched.len(),
            wall.as_secs_f64(),
            batched.len() as f64 / wall.as_secs_f64()
        );
        report("apply_events, one batch of 100", &mut lat);
        let par = Arc::new(events(300_000, 20_000));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..4usize {
            let store = store.clone();
            let par = par.clone();
            tasks.push(tokio::spawn(async move {
                // Each replicator (station) its own journeys, as with stations' outboxes.
                let mine: Vec<LineEvent> = par
                    .chunks(2)
                    .skip(w)
                    .step_by(4)
                    .flatten()
                    .cloned()
                    .collect();
                for b in mine.chunks(100) {
                    store.apply_events(b).await.expect("apply_events");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let wall = t.elapsed();
        println!(
            "apply_events, batches of 100, 4 replicators at once: {} events in {:.2} s = {:.0} \
             events/s",
            par.len(),
            wall.as_secs_f64(),
            par.len() as f64 / wall.as_secs_f64()
        );
    });
    println!("total: {:.1} s", started.elapsed().as_secs_f64());
}
