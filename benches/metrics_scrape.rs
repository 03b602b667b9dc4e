//! Tap latency while `/metrics` is scraped as fast as a client can, at 100k journal rows.
//! Prints numbers; asserts nothing (run: `cargo bench --bench metrics_scrape`).
//!
//! The pipeline is tap_latency's: scripted phone (APDU exchange) → decode → journal (a real
//! SQLite file, fsync) → SNAP client → simulator over loopback HTTP → recording relay →
//! journal, approved tap-outs on one lane, one after the other. The journal is seeded with
//! `ROWS` (100,000) final operations first.
//!
//! Three conditions, taken in turns (`ROUNDS` rounds of `TAPS` taps each) so that a change in
//! the machine's load falls on all of them alike:
//! - `unscraped`: nothing else runs;
//! - `scraped`: another thread (its own runtime and HTTP client) GETs the daemon's `/metrics`
//!   endpoint in a loop, as fast as it answers;
//! - `old path`: another thread counts by state the way `/metrics` did before, through the
//!   writer's handle (its lock, a full count), and renders, in a loop: the cause,
//!   kept for comparison.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapgate::config::Config;
use tapgate::cpm::build::{payload, PayloadSpec};
use tapgate::daemon::lane::Lane;
use tapgate::daemon::run::{serve_metrics, JournalGauges};
use tapgate::daemon::Station;
use tapgate::journal::Journal;
use tapgate::nfc::scripted::ScriptedPhone;
use tapgate::relay::RecordingRelay;
use tapgate::sim::{SimConfig, Simulator};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

/// `rows` final operations (2 events each, as the journal writes them), in one transaction.
fn seed(path: &std::path::Path, rows: usize) {
    drop(Journal::open(path).expect("create the journal"));
    let mut c = rusqlite::Connection::open(path).expect("open");
    let tx = c.transaction().expect("tx");
    let t0: i64 = 1_790_000_000_000;
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO fare_ops (partner_reference_no, kind, lane, direction, station_id, amount, \
         pan_key, pan_masked, nns, state, reference_no, response_code, gate_opened, \
         created_at_ms, updated_at_ms) \
         SELECT printf('SEED-%07d', i), 'settle', 'out-1', 'out', 'BLM', 14000, \
         printf('%064x', i), '93600914*******1234', '93600914', \
         CASE WHEN i % 50 = 0 THEN 'DECLINED' ELSE 'SUCCEEDED' END, \
         printf('AGG-%07d', i), CASE WHEN i % 50 = 0 THEN '4036005' ELSE '2005400' END, \
         CASE WHEN i % 50 = 0 THEN 0 ELSE 1 END, ?2 + i * 1000, ?2 + i * 1000 + 400 FROM n",
        rusqlite::params![rows as i64, t0],
    )
    .expect("operations");
    tx.execute_batch(
        "INSERT INTO events (partner_reference_no, at_ms, from_state, to_state, detail) \
         SELECT partner_reference_no, created_at_ms, NULL, 'PENDING', 'begin (seeded)' \
         FROM fare_ops ORDER BY rowid; \
         INSERT INTO events (partner_reference_no, at_ms, from_state, to_state, detail) \
         SELECT partner_reference_no, updated_at_ms, 'PENDING', state, 'answer (seeded)' \
         FROM fare_ops ORDER BY rowid;",
    )
    .expect("events");
    tx.commit().expect("commit");
    c.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .expect("checkpoint");
}

#[derive(Clone, Copy, PartialEq)]
enum Condition {
    Unscraped,
    Scraped,
    OldPath,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Unscraped => "unscraped",
            Condition::Scraped => "scraped",
            Condition::OldPath => "old path",
        }
    }
}

/// A scraper on a thread of its own, until dropped: scrape latencies (µs) and their count.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<u64>>>,
    errors: Arc<AtomicU64>,
}

impl Scraper {
    fn start(condition: Condition, url: String, station: Arc<Station>) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let (s, e) = (stop.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("scraper runtime");
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let mut took = Vec::new();
                while !s.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = match condition {
                        Condition::Scraped => match client.get(&url).send().await {
                            Ok(r) => r.text().await.is_ok_and(|b| b.contains("PENDING")),
                            Err(_) => false,
                        },
                        _ => {
                            let counts = station.journal.run(|j| j.counts_by_state()).await;
                            for (state, n) in counts.iter().flatten() {
                                station.metrics.set(
                                    "tapgate_journal_operations",
                                    &[("state", state.as_str())],
                                    *n as f64,
                                );
                            }
                            counts.is_ok() && !station.metrics.render().is_empty()
                        }
                    };
                    if !ok {
                        e.fetch_add(1, Ordering::Relaxed);
                    }
                    took.push(t.elapsed().as_micros() as u64);
                }
                took
            })
        });
        Scraper {
            stop,
            thread: Some(thread),
            errors,
        }
    }

    fn finish(mut self) -> (Vec<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let took = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        (took, self.errors.load(Ordering::Relaxed))
    }
}

fn main() {
    let rows = env("ROWS", 100_000);
    let taps = env("TAPS", 60);
    let rounds = env("ROUNDS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sim = Simulator::start(SimConfig::demo(), SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("sim");
        let dir = tempfile::tempdir().expect("tmp");
        let journal = dir.path().join("j.db");
        let t = Instant::now();
        seed(&journal, rows);
        println!(
            "seeded {rows} operations in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        std::fs::write(dir.path().join("s"), tapgate::sim::DEMO_CLIENT_SECRET).unwrap();
        std::fs::write(dir.path().join("k.pem"), tapgate::sim::DEMO_PRIVATE_KEY_PEM).unwrap();
        let text = include_str!("../config/demo.toml")
            .replace("http://127.0.0.1:8600", &sim.base_url())
            .replace("\"demo-journal.db\"", &format!("{journal:?}"))
            .replace("\"demo-client-secret\"", "\"s\"")
            .replace("\"demo-private-key.pem\"", "\"k.pem\"")
            .replace("debounce_ms = 3000", "debounce_ms = 0");
        let path = dir.path().join("station.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&path).expect("config");
        let station = tapgate::daemon::station_from_config(cfg.clone(), &path).expect("station");
        let exit = Lane::new(
            cfg.lanes[1].clone(),
            station.clone(),
            Arc::new(RecordingRelay::new()),
        );
        station.aggregator.ensure_token().await.expect("token");

        // The daemon's metrics endpoint, as `tapgate run` serves it.
        let gauges = Arc::new(
            JournalGauges::open(&cfg.journal.path, station.metrics.clone()).expect("gauges"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve_metrics(listener, gauges.clone(), stop_rx));

        // One count by state each way, for scale.
        let mut full = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            station
                .journal
                .run(|j| j.counts_by_state())
                .await
                .expect("count");
            full.push(t.elapsed().as_micros() as u64);
        }
        let mut kept = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            gauges.refresh().await.expect("refresh");
            kept.push(t.elapsed().as_micros() as u64);
        }
        println!(
            "count by state at {rows} rows: full count through the writer p50 {} us; \
             the reader's kept counts p50 {} us (first read counts in full: {} us)",
            pct(&mut full, 0.5),
            pct(&mut kept[1..].to_vec(), 0.5),
            kept.first().copied().unwrap_or(0)
        );

        let conditions = [Condition::Unscraped, Condition::Scraped, Condition::OldPath];
        let mut totals: Vec<Vec<u64>> = vec![Vec::new(); conditions.len()];
        let mut scrapes: Vec<(Vec<u64>, u64, f64)> = vec![(Vec::new(), 0, 0.0); conditions.len()];
        let mut next = 0u64;
        for _ in 0..rounds {
            for (c, condition) in conditions.iter().enumerate() {
                let scraper = (*condition != Condition::Unscraped)
                    .then(|| Scraper::start(*condition, url.clone(), station.clone()));
                // Let the scraper get going before the first tap.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let wall = Instant::now();
                for _ in 0..taps {
                    next += 1;
                    let pan = format!("93600002{next:011}");
                    let p =
                        payload(&PayloadSpec::new(&pan).with_token(&rand::random::<[u8; 16]>()));
                    let mut phone = ScriptedPhone::new(&p, &[84, 64]);
                    let r = exit
                        .handle_event(tapgate::nfc::source::tap_event("bench", &mut phone))
                        .await
                        .expect("report");
                    assert!(r.opened, "{r:?}");
                    totals[c].push(r.timings.total_us + r.timings.read_us);
                }
                let secs = wall.elapsed().as_secs_f64();
                if let Some(s) = scraper {
                    let (took, errors) = s.finish();
                    scrapes[c].0.extend(took);
                    scrapes[c].1 += errors;
                    scrapes[c].2 += secs;
                }
            }
        }

        println!(
            "tap latency, approved tap-outs on one lane, {rounds} rounds x {taps} taps per \
             condition, {rows} journal rows (microseconds)"
        );
        println!(
            "{:<10} {:>8} {:>8} {:>8} {:>11} {:>12} {:>12} {:>7}",
            "condition", "p50", "p95", "p99", "p50 ratio", "scrapes/s", "scrape p50", "errors"
        );
        let base = pct(&mut totals[0].clone(), 0.5).max(1) as f64;
        for (c, condition) in conditions.iter().enumerate() {
            let v = &mut totals[c];
            let (took, errors, secs) = &mut scrapes[c];
            let rate = if *secs > 0.0 {
                format!("{:.0}", took.len() as f64 / *secs)
            } else {
                "-".into()
            };
            let scrape = if took.is_empty() {
                "-".into()
            } else {
                format!("{} us", pct(took, 0.5))
            };
            let p50 = pct(v, 0.5);
            println!(
                "{:<10} {:>8} {:>8} {:>8} {:>11.2} {:>12} {:>12} {:>7}",
                condition.name(),
                p50,
                pct(v, 0.95),
                pct(v, 0.99),
                p50 as f64 / base,
                rate,
                scrape,
                errors
            );
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        sim.shutdown().await;
    });
}
