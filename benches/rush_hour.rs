//! A rush hour at one station: what passengers experience when the aggregator answers like a
//! real one under load. Prints numbers; asserts nothing (run: `cargo bench --bench rush_hour`).
//!
//! The parts are real: one station, its journal a real SQLite file, the SNAP client over
//! loopback HTTP to the in-process simulator, recording relays, the reconciler running
//! alongside as in the daemon. The simulator's issuers answer with the rush-hour model
//! (latency p50 400 ms / p95 1.2 s / p99 2.5 s, 1 % never answered in time, 2 % declined).
//!
//! Each lane gets passengers at `RUSH_RATE` a minute on average, in bursts: every lane
//! alternates calm spells (exponential, mean 35 s) and bursts (mean 15 s, a train unloading)
//! arriving three times as fast, Poisson within each. One passenger at a time taps (a scripted
//! phone: a real APDU exchange, instant); after the decision the lane is busy for
//! `RUSH_PASSAGE_MS` (the next passenger steps up while this one walks through, or steps
//! aside). A passenger told "try again" taps again after `RUSH_RETRY_MS`, at most twice more;
//! a declined one leaves.
//!
//! Real HTTP cannot run on a faked clock, so the rush runs in real time: `RUSH_SECS`
//! (default 90) of arrivals; a lane still serving its queue 15 s later stops there (those
//! passengers are reported as still queued). Then the late replies are drained and the
//! reconciler settles what is left (refunds of late successes). About 2 minutes in all.
//!
//! Environment: `RUSH_SECS`, `RUSH_RATE` (passengers a minute per lane, 40), `RUSH_LANES`
//! (directions, `in,in,out,out`), `RUSH_DEADLINE_MS` (the decision deadline, 1500, today's
//! default), `RUSH_PASSAGE_MS` (600), `RUSH_RETRY_MS` (1000), `RUSH_SEED` (1),
//! `RUSH_MODES` (`strict,fast_open`), `RUSH_WAIT_MS` (fast open's `wait_ms`, 100),
//! `RUSH_CAP` (fast open's `exposure_cap`, rupiah, 100000).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tapgate::config::Config;
use tapgate::cpm::build::{payload, PayloadSpec};
use tapgate::daemon::lane::Lane;
use tapgate::daemon::reconcile::Reconciler;
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::OpState;
use tapgate::nfc::scripted::ScriptedPhone;
use tapgate::nfc::CardEvent;
use tapgate::relay::RecordingRelay;
use tapgate::sim::{IssuerModel, SimConfig, Simulator};

/// How the gate decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The default policy: the gate waits for the aggregator up to the decision deadline.
    Strict,
    /// `[policy.fast_open]`: the gate waits `RUSH_WAIT_MS`, then opens within the cap.
    FastOpen,
}

impl Mode {
    fn parse(name: &str) -> Option<Mode> {
        match name.trim() {
            "strict" => Some(Mode::Strict),
            "fast_open" | "fast-open" => Some(Mode::FastOpen),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::FastOpen => "fast_open",
        }
    }

    /// The tables this mode adds at the end of the station's config.
    fn extra_toml(self, rush: &Rush) -> String {
        match self {
            Mode::Strict => String::new(),
            Mode::FastOpen => format!(
                "\n[policy.fast_open]\nenabled = true\nwait_ms = {}\nexposure_cap = {}\n",
                rush.wait_ms, rush.cap
            ),
        }
    }
}

/// The rush's knobs, from the environment.
#[derive(Clone, Debug)]
struct Rush {
    secs: u64,
    rate_per_min: f64,
    lanes: Vec<&'static str>,
    deadline_ms: u64,
    passage_ms: u64,
    retry_ms: u64,
    seed: u64,
    modes: Vec<Mode>,
    wait_ms: u64,
    cap: u64,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Rush {
    fn from_env() -> Rush {
        let lanes = std::env::var("RUSH_LANES").unwrap_or_else(|_| "in,in,out,out".into());
        let modes = std::env::var("RUSH_MODES").unwrap_or_else(|_| "strict,fast_open".into());
        Rush {
            secs: env("RUSH_SECS", 90),
            rate_per_min: env("RUSH_RATE", 40.0),
            lanes: lanes
                .split(',')
                .map(|d| if d.trim() == "out" { "out" } else { "in" })
                .collect(),
            deadline_ms: env("RUSH_DEADLINE_MS", 1500),
            passage_ms: env("RUSH_PASSAGE_MS", 600),
            retry_ms: env("RUSH_RETRY_MS", 1000),
            seed: env("RUSH_SEED", 1),
            modes: modes.split(',').filter_map(Mode::parse).collect(),
            wait_ms: env("RUSH_WAIT_MS", 100),
            cap: env("RUSH_CAP", 100_000),
        }
    }
}

/// Arrival times (from the start of the rush) of one lane's passengers: a two-state
/// Markov-modulated Poisson process, bursts three times the calm rate, mean `rate_per_min`.
fn arrivals(rate_per_min: f64, secs: u64, rng: &mut StdRng) -> Vec<Duration> {
    const CALM_MEAN_S: f64 = 35.0;
    const BURST_MEAN_S: f64 = 15.0;
    const BURST_FACTOR: f64 = 3.0;
    // Mean rate = calm * (35 + 3 * 15) / 50.
    let calm_per_s = rate_per_min / 60.0 * (CALM_MEAN_S + BURST_MEAN_S)
        / (CALM_MEAN_S + BURST_FACTOR * BURST_MEAN_S);
    let exp = |rng: &mut StdRng, mean: f64| -mean * (1.0 - rng.random::<f64>()).ln();
    let end = secs as f64;
    let mut out = Vec::new();
    let mut t = 0.0;
    // Start anywhere in the cycle: calm or burst in proportion to their lengths.
    let mut burst = rng.random::<f64>() < BURST_MEAN_S / (CALM_MEAN_S + BURST_MEAN_S);
    while t < end {
        let spell_end = t + exp(rng, if burst { BURST_MEAN_S } else { CALM_MEAN_S });
        let rate = calm_per_s * if burst { BURST_FACTOR } else { 1.0 };
        loop {
            let next = t + exp(rng, 1.0 / rate);
            if next >= spell_end.min(end) {
                t = spell_end;
                break;
            }
            t = next;
            out.push(Duration::from_secs_f64(t));
        }
        burst = !burst;
    }
    out
}

/// What one lane saw.
#[derive(Default)]
struct LaneStats {
    name: String,
    direction: &'static str,
    arrived: usize,
    through: usize,
    /// Arrived, but the lane stopped before their turn.
    queued: usize,
    /// From the rush's start to the lane's last decision.
    busy: Duration,
    gave_up: usize,
    taps: usize,
    outcomes: Vec<(TapOutcome, u64)>,
    decision_us: Vec<u64>,
    queue_ms: Vec<u64>,
    /// References of exits let out with the payment still unknown, with their amounts.
    released: Vec<(String, u64)>,
}

fn pct(v: &[u64], p: f64) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

/// Issuer prefixes (NNS) the passengers' wallets come from.
const NNS: [&str; 4] = ["93600002", "93600914", "93600915", "93600008"];

/// One lane's rush: its passengers in arrival order, one at a time.
async fn run_lane(
    lane: Arc<Lane>,
    index: usize,
    schedule: Vec<Duration>,
    start: tokio::time::Instant,
    rush: Rush,
) -> LaneStats {
    let mut s = LaneStats {
        name: lane.name().to_string(),
        direction: rush.lanes[index],
        arrived: schedule.len(),
        ..LaneStats::default()
    };
    let mut free_at = start;
    let stop_at = start + Duration::from_secs(rush.secs + 15);
    for (n, at) in schedule.into_iter().enumerate() {
        let arrival = start + at;
        if arrival.max(free_at) > stop_at {
            s.queued += 1;
            continue;
        }
        tokio::time::sleep_until(arrival.max(free_at)).await;
        s.queue_ms
            .push(arrival.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
        // Unique per passenger across lanes and runs of one process.
        let pan = format!("{}{:03}{:08}", NNS[n % NNS.len()], index, n);
        let mut through = false;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(rush.retry_ms)).await;
            }
            let Some(r) = tap(&lane, &pan).await else {
                break;
            };
            s.taps += 1;
            let t = r.timings;
            // The decision: the gate opened or the passenger told, before the relay and the
            // commit after it.
            s.decision_us.push(t.decision_us);
            s.outcomes.push((r.outcome, r.amount.unwrap_or(0)));
            if r.outcome == TapOutcome::Released {
                if let Some(p) = &r.partner_reference_no {
                    s.released.push((p.clone(), r.amount.unwrap_or(0)));
                }
            }
            if r.opened {
                through = true;
                break;
            }
            if r.outcome != TapOutcome::TryAgain {
                break;
            }
        }
        if through {
            s.through += 1;
        } else {
            s.gave_up += 1;
        }
        s.busy = start.elapsed();
        free_at = tokio::time::Instant::now() + Duration::from_millis(rush.passage_ms);
    }
    s
}

/// One tap of `pan` at `lane`: a fresh wallet token, a real APDU exchange, the lane's pipeline.
async fn tap(lane: &Lane, pan: &str) -> Option<tapgate::daemon::lane::TapReport> {
    let p = payload(&PayloadSpec::new(pan).with_token(&rand::random::<[u8; 16]>()));
    let t = Instant::now();
    let mut phone = ScriptedPhone::new(&p, &[84, 64]);
    let qr = tapgate::nfc::qris_tap::read_qr_content(&mut phone).ok()?;
    let read_us = t.elapsed().as_micros() as u64;
    lane.handle_event(CardEvent::Payload {
        reader: "rush".into(),
        qr_content: qr,
        read_us,
    })
    .await
}

/// The station config: the demo's tariff and partner, `rush.lanes`, the mode's policy, a
/// reconciler that retries within seconds (so that the run settles before it ends).
fn station_toml(rush: &Rush, mode: Mode, base_url: &str, dir: &std::path::Path) -> String {
    let demo = include_str!("../config/demo.toml");
    let mut lanes = String::new();
    let mut count = [0, 0];
    for d in &rush.lanes {
        let i = usize::from(*d == "out");
        count[i] += 1;
        lanes.push_str(&format!(
            "[[lane]]\nname = \"{d}-{}\"\ndirection = \"{d}\"\nrelay = {{ kind = \"recording\" }}\n\n",
            count[i]
        ));
    }
    let demo_lanes = "[[lane]]\nname = \"in-1\"\ndirection = \"in\"\nrelay = { kind = \"recording\" }\n\n[[lane]]\nname = \"out-1\"\ndirection = \"out\"\nrelay = { kind = \"recording\" }\n";
    assert!(demo.contains(demo_lanes), "config/demo.toml's lanes moved");
    demo.replace(demo_lanes, &lanes)
        .replace(
            "decision_deadline_ms = 800\n",
            &format!("decision_deadline_ms = {}\n", rush.deadline_ms),
        )
        .replace("http://127.0.0.1:8600", base_url)
        .replace("\"demo-journal.db\"", &format!("{:?}", dir.join("j.db")))
        .replace("\"demo-client-secret\"", "\"s\"")
        .replace("\"demo-private-key.pem\"", "\"k.pem\"")
        + "\n[reconciler]\ninterval_ms = 250\nbackoff_base_ms = 500\nbackoff_cap_ms = 2000\n"
        + &mode.extra_toml(rush)
}

async fn run_mode(rush: &Rush, mode: Mode) {
    let mut sim_cfg = SimConfig::demo();
    sim_cfg.issuer = Some(IssuerModel::rush_hour(rush.seed));
    let sim = Simulator::start(sim_cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sim");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("s"), tapgate::sim::DEMO_CLIENT_SECRET).unwrap();
    std::fs::write(dir.path().join("k.pem"), tapgate::sim::DEMO_PRIVATE_KEY_PEM).unwrap();
    let path = dir.path().join("station.toml");
    std::fs::write(&path, station_toml(rush, mode, &sim.base_url(), dir.path())).unwrap();
    let cfg = Config::load(&path).expect("config");
    let station = tapgate::daemon::station_from_config(cfg.clone(), &path).expect("station");
    station.aggregator.ensure_token().await.expect("token");
    let lanes: Vec<Arc<Lane>> = cfg
        .lanes
        .iter()
        .map(|l| {
            Arc::new(Lane::new(
                l.clone(),
                station.clone(),
                Arc::new(RecordingRelay::new()),
            ))
        })
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reconciler = tokio::spawn(Reconciler::new(station.clone()).run(stopped));

    let mut rng = StdRng::seed_from_u64(rush.seed);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let wall = Instant::now();
    let tasks: Vec<_> = lanes
        .iter()
        .enumerate()
        .map(|(i, lane)| {
            let schedule = arrivals(rush.rate_per_min, rush.secs, &mut rng);
            tokio::spawn(run_lane(lane.clone(), i, schedule, start, rush.clone()))
        })
        .collect();
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await.expect("lane task"));
    }
    let rush_secs = wall.elapsed().as_secs_f64();

    // Late replies journaled, then what is uncertain or owed settled.
    station.drain().await;
    let _ = stop.send(true);
    let _ = reconciler.await;
    let left = Reconciler::new(station.clone())
        .run_until_settled(Duration::from_secs(30))
        .await
        .expect("reconcile");
    let rows = station.journal.run(|j| j.export(0)).await.expect("export");
    let mismatches = tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows);
    report(rush, mode, &stats, rush_secs, &rows, left, mismatches.len());
    if mode == Mode::FastOpen {
        let (_, peak, _) = station.fast_open_state();
        let fast: Vec<_> = rows.iter().filter(|r| r.fast_opened).collect();
        let unpaid: Vec<_> = fast
            .iter()
            .filter(|r| r.state == OpState::Declined)
            .collect();
        let listed = station
            .journal
            .run(|j| j.unpaid_list(false))
            .await
            .expect("unpaid list");
        println!(
            "fast open: {} fast-opened ({} still not final), exposure peak Rp{} (cap Rp{}); ended unpaid {} (Rp{}), on the unpaid list {}",
            fast.len(),
            fast.iter().filter(|r| !r.state.is_final()).count(),
            peak.0,
            rush.cap,
            unpaid.len(),
            unpaid.iter().map(|r| r.amount.0).sum::<u64>(),
            listed.len()
        );
    }
    let s = sim.stats();
    println!(
        "simulator: {} payments, {} declined, {} queries, {} refunds, {} protocol violations",
        s.payment_requests,
        s.declines,
        s.query_requests,
        s.refunds_made,
        s.protocol_violations()
    );
    println!(
        "drained and settled in {:.1} s after the last lane",
        wall.elapsed().as_secs_f64() - rush_secs
    );
    sim.shutdown().await;
}

fn report(
    rush: &Rush,
    mode: Mode,
    stats: &[LaneStats],
    rush_secs: f64,
    rows: &[tapgate::journal::OpRow],
    left: usize,
    mismatches: usize,
) {
    println!();
    println!(
        "mode {}: {} lanes, {} s of arrivals at {} a minute per lane (bursts 3x), deadline {} ms, passage {} ms; lanes done after {:.0} s",
        mode.name(),
        stats.len(),
        rush.secs,
        rush.rate_per_min,
        rush.deadline_ms,
        rush.passage_ms,
        rush_secs
    );
    println!(
        "{:<6} {:>4} {:>7} {:>7} {:>6} {:>6} {:>5} {:>9} {:>9} {:>9} {:>8} {:>6} {:>6}",
        "lane",
        "dir",
        "arrived",
        "through",
        "queued",
        "/min",
        "taps",
        "dec p50",
        "dec p95",
        "dec p99",
        "try agn",
        "q p50",
        "q p95"
    );
    let count = |s: &LaneStats, o: TapOutcome| s.outcomes.iter().filter(|(x, _)| *x == o).count();
    for s in stats {
        println!(
            "{:<6} {:>4} {:>7} {:>7} {:>6} {:>6.1} {:>5} {:>7}ms {:>7}ms {:>7}ms {:>8} {:>4}ms {:>4}ms",
            s.name,
            s.direction,
            s.arrived,
            s.through,
            s.queued,
            s.through as f64 / (s.busy.as_secs_f64().max(1.0) / 60.0),
            s.taps,
            pct(&s.decision_us, 0.5) / 1000,
            pct(&s.decision_us, 0.95) / 1000,
            pct(&s.decision_us, 0.99) / 1000,
            count(s, TapOutcome::TryAgain),
            pct(&s.queue_ms, 0.5),
            pct(&s.queue_ms, 0.95)
        );
    }
    let total = |o: TapOutcome| stats.iter().map(|s| count(s, o)).sum::<usize>();
    let all_decisions: Vec<u64> = stats.iter().flat_map(|s| s.decision_us.clone()).collect();
    println!(
        "all lanes: decision p50 {} ms, p95 {} ms, p99 {} ms over {} taps; {} of {} passengers through, {} gave up, {} still queued",
        pct(&all_decisions, 0.5) / 1000,
        pct(&all_decisions, 0.95) / 1000,
        pct(&all_decisions, 0.99) / 1000,
        all_decisions.len(),
        stats.iter().map(|s| s.through).sum::<usize>(),
        stats.iter().map(|s| s.arrived).sum::<usize>(),
        stats.iter().map(|s| s.gave_up).sum::<usize>(),
        stats.iter().map(|s| s.queued).sum::<usize>()
    );
    let other = all_decisions.len()
        - [
            TapOutcome::Approved,
            TapOutcome::Declined,
            TapOutcome::TryAgain,
            TapOutcome::Released,
        ]
        .into_iter()
        .map(total)
        .sum::<usize>();
    println!(
        "taps: approved {}, declined {}, try again {}, exits released unconfirmed {}, other {}",
        total(TapOutcome::Approved),
        total(TapOutcome::Declined),
        total(TapOutcome::TryAgain),
        total(TapOutcome::Released),
        other
    );
    let state = |st: OpState| rows.iter().filter(move |r| r.state == st);
    let refunded: Vec<_> = state(OpState::Refunded).collect();
    println!(
        "late successes refunded: {} (Rp{}); refunds still owed {}; not final {}; journal vs ledger mismatches {}",
        refunded.len(),
        refunded.iter().map(|r| r.amount.0).sum::<u64>(),
        state(OpState::RefundPending).count(),
        left,
        mismatches
    );
    let released: Vec<_> = stats.iter().flat_map(|s| s.released.iter()).collect();
    let unpaid: u64 = released
        .iter()
        .filter(|(p, _)| {
            rows.iter()
                .any(|r| &r.partner_reference_no == p && r.state != OpState::Succeeded)
        })
        .map(|(_, a)| *a)
        .sum();
    println!(
        "exits let out before the payment was known: {}, unpaid in the end Rp{}",
        released.len(),
        unpaid
    );
}

fn main() {
    let rush = Rush::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "rush hour: simulator issuers p50 400 ms / p95 1.2 s / p99 2.5 s, 1 % never answered in time, 2 % declined (seed {})",
        rush.seed
    );
    for mode in rush.modes.clone() {
        rt.block_on(run_mode(&rush, mode));
    }
}
