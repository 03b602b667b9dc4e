//! One line, three stations: each with its own config, journal and lanes, one aggregator (the
//! simulator over loopback), one PostgreSQL (a throwaway cluster, tests/support/pg.rs), one
//! passenger key. Passengers tap in and out with the real `tapgate tap` between random
//! stations; `tapgate reconcile` runs at each station; then the aggregator's per-passenger
//! ledger must show every passenger paying exactly the matrix fare of their trip, with no hold
//! left open, also when PostgreSQL was stopped for part of the run, when stations were
//! SIGKILLed while replicating, and when two stations race to close one journey.
//!
//! Needs Debian's `postgresql` (scripts/install-deps.sh test); `TAPGATE_SKIP_PG=1` skips,
//! saying so. `TAPGATE_LINE_JOURNEYS` changes the number of journeys of the big run (500),
//! `TAPGATE_LINE_SEED` the seed, `TAPGATE_LINE_THREADS` how many passengers tap at once (4),
//! `TAPGATE_LINE_LOOKUP_MS` the stations' `[journeys] lookup_timeout_ms` (200).

mod common;
#[path = "line_journeys/helpers.rs"]
mod helpers;
#[path = "support/pg.rs"]
mod pg;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use helpers::{
    check_events_once, check_line_closed, check_money, check_no_event_lost, check_refunds_once,
    finish, line_journeys, parallel, random_journeys, spawn_tap, tally, tap, Dir, Journey, Kill,
    Line, Pans, Store, LINE,
};
use pg::PgCluster;

/// Reconcile rounds over the three stations after a run. One is not enough after exits that
/// did not know their entry (measured: a dozen of 90 passengers still out of pocket): the exit
/// station converges once the entry is on the line and pushes its close, and only then can the
/// entry station, if it reconciled earlier in the round, release its hold. Two sufficed on
/// every run; the third is margin for a close pushed only at the start of the next run.
const RECONCILE_ROUNDS: usize = 3;

/// The line's database in each test's cluster.
const DB: &str = "line";

macro_rules! cluster {
    () => {
        match PgCluster::start(false) {
            Some(c) => {
                c.create_db(DB);
                c
            }
            None => return,
        }
    };
}

/// The line tests take turns: each already runs several tapgate processes at once, and two
/// of them together on a 2-core machine would push taps past their decision deadline.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("TAPGATE_LINE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x11_5EED)
}

fn threads() -> usize {
    env_usize("TAPGATE_LINE_THREADS", 4)
}

/// Tap-in at the entry station, then (when it was approved) tap-out at the exit.
fn ride(line: &Line, j: &mut Journey, kill_in: Kill, kill_out: Kill) {
    tap_in(line, j, kill_in);
    tap_out(line, j, kill_out);
}

fn tap_in(line: &Line, j: &mut Journey, kill: Kill) {
    j.tap_in = Some(tap(&line.stations[j.entry], Dir::In, &j.pan, kill));
}

fn tap_out(line: &Line, j: &mut Journey, kill: Kill) {
    if j.tap_in.as_ref().is_some_and(|t| t.approved()) {
        j.tap_out = Some(tap(&line.stations[j.exit], Dir::Out, &j.pan, kill));
    }
}

/// Every tap of every journey was approved (the aggregator is healthy in these tests: a
/// refusal is a failure of the line, not bad luck).
fn assert_all_approved(journeys: &[Journey]) {
    let bad: Vec<String> = journeys
        .iter()
        .filter(|j| {
            !j.tap_in.as_ref().is_some_and(|t| t.approved())
                || !j.tap_out.as_ref().is_some_and(|t| t.approved())
        })
        .map(|j| {
            format!(
                "{} {}→{}: in {} / out {}",
                j.masked(),
                LINE[j.entry],
                LINE[j.exit],
                j.tap_in.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                j.tap_out
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} journeys had a tap not approved:\n{}",
        bad.len(),
        journeys.len(),
        helpers::first_lines(&bad)
    );
}

/// What each approved exit charged, as it charged it: either it found the entry (the matrix
/// fare, the tap-out referencing the tap-in hold so that the aggregator finalizes it) or it
/// degraded to the unknown-entry rule (the maximum, a plain charge, converged later).
/// Returns (exits that referenced the hold, degraded exits).
fn check_exits(line: &Line, sim: &tapgate::sim::SimHandle, journeys: &[Journey]) -> (usize, usize) {
    let (mut found, mut degraded) = (0, 0);
    let mut wrong = Vec::new();
    for j in journeys {
        let (Some(tin), Some(tout)) = (&j.tap_in, &j.tap_out) else {
            continue;
        };
        if !tout.approved() {
            continue;
        }
        let in_ref = tin.reference().expect("approved tap-in has a reference");
        let out_ref = tout.reference().expect("approved tap-out has a reference");
        let Some(entry) = sim.entry(&out_ref) else {
            wrong.push(format!("{out_ref}: not in the aggregator's ledger"));
            continue;
        };
        assert_eq!(
            tout.amount(),
            Some(entry.amount),
            "the report's amount is the ledger's"
        );
        let referenced = entry.tap.tap_in_partner_reference_no.as_deref() == Some(&in_ref);
        let want = line.fare(j.entry, j.exit);
        if referenced && entry.amount == want {
            found += 1;
        } else if entry.tap.tap_in_partner_reference_no.is_none()
            && tout.fare_rule() == "unknown_entry"
            && entry.amount == line.tariff.max()
        {
            degraded += 1;
        } else {
            wrong.push(format!(
                "{} {}→{}: tap-out {out_ref} charged {} (rule {:?}) referencing {:?}; want {want} \
                 referencing {in_ref}",
                j.masked(),
                LINE[j.entry],
                LINE[j.exit],
                entry.amount,
                tout.fare_rule(),
                entry.tap.tap_in_partner_reference_no
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "exits charged wrongly:\n{}",
        helpers::first_lines(&wrong)
    );
    (found, degraded)
}

/// The harness itself, without PostgreSQL: three stations on the local store (today's
/// default), each passenger riding from and to one station, where the station's own journal
/// knows the entry. Each tap is made where the test says (the aggregator sees the station's
/// id), and each exit finalizes its hold at the matrix fare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_three_local_stations_tap_at_home() {
    let sim = common::start_sim().await;
    let seed = seed() ^ 1;
    let line = Line::new(&sim, &Store::Local, seed);
    let mut journeys = random_journeys(12, seed);
    for (i, j) in journeys.iter_mut().enumerate() {
        j.entry = i % LINE.len();
        j.exit = j.entry;
    }
    parallel(&mut journeys, threads(), |j| {
        ride(&line, j, Kill::Never, Kill::Never)
    });
    assert_all_approved(&journeys);
    let (found, degraded) = check_exits(&line, &sim, &journeys);
    assert_eq!((found, degraded), (journeys.len(), 0));
    for j in &journeys {
        for t in [&j.tap_in, &j.tap_out].into_iter().flatten() {
            let e = sim
                .entry(&t.reference().expect("reference"))
                .expect("in the ledger");
            assert_eq!(e.tap.station_id.as_deref(), Some(LINE[j.entry]), "{e:?}");
            assert_eq!(e.masked_pan, j.masked());
        }
    }
    assert_eq!(check_refunds_once(&sim), 0, "nothing to refund");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_random_journeys_across_three_stations_pay_the_matrix_fare() {
    let sim = common::start_sim().await;
    let _one_at_a_time = one_at_a_time();
    let c = cluster!();
    let seed = seed();
    let line = Line::new(&sim, &Store::postgres(&c, DB), seed);
    let n = env_usize("TAPGATE_LINE_JOURNEYS", 500);
    let mut journeys = random_journeys(n, seed);

    let started = Instant::now();
    parallel(&mut journeys, threads(), |j| {
        ride(&line, j, Kill::Never, Kill::Never)
    });
    let tapping = started.elapsed();
    print_tapped(&journeys, tapping);
    assert_all_approved(&journeys);
    let (found, degraded) = check_exits(&line, &sim, &journeys);

    let reconciling = line.reconcile(RECONCILE_ROUNDS);
    let checked = check_money(&line, &sim, &journeys, None);
    let refunds = check_refunds_once(&sim);
    check_events_once(&c, DB);
    let local = check_no_event_lost(&line, &c, DB);
    check_line_closed(&line, &c, DB, &journeys);
    let same = journeys.iter().filter(|j| j.entry == j.exit).count();
    println!(
        "line: {n} journeys ({same} same-station) over {} stations by {} passengers at once: \
         {} taps in {:.1} s ({:.1} taps/s), reconcile x{RECONCILE_ROUNDS} {:.1} s; exits that \
         found their entry {found}, degraded {degraded}; {checked} passengers paid the matrix \
         fare; {refunds} refunds; {local} station journeys all on the line; {}",
        LINE.len(),
        threads(),
        2 * n,
        tapping.as_secs_f64(),
        (2 * n) as f64 / tapping.as_secs_f64(),
        reconciling.as_secs_f64(),
        tally(&journeys)
    );
    assert_eq!(checked, n);
}

/// When each passenger taps, relative to PostgreSQL: 0 before it is stopped, 1 while it is
/// down, 2 after it is started again.
#[derive(Clone, Copy)]
struct Phases {
    tap_in: usize,
    tap_out: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_run_then_started_converges() {
    let sim = common::start_sim().await;
    let _one_at_a_time = one_at_a_time();
    let mut c = cluster!();
    let seed = seed() ^ 2;
    let line = Line::new(&sim, &Store::postgres(&c, DB), seed);
    let n = env_usize("TAPGATE_LINE_JOURNEYS", 500).clamp(12, 90);
    let mut journeys = random_journeys(n, seed);
    // Every pair of phases (in ≤ out): trips wholly before, during and after the outage, and
    // trips that enter before it and leave during or after it, or enter during it and leave
    // after.
    let pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
    let phases: Vec<Phases> = (0..n)
        .map(|i| {
            let (tap_in, tap_out) = pairs[i % pairs.len()];
            Phases { tap_in, tap_out }
        })
        .collect();

    let started = Instant::now();
    for phase in 0..3 {
        match phase {
            1 => c.stop(),
            2 => c.start_again(),
            _ => {}
        }
        let mut ins: Vec<&mut Journey> = journeys
            .iter_mut()
            .zip(&phases)
            .filter(|(_, p)| p.tap_in == phase)
            .map(|(j, _)| j)
            .collect();
        parallel(&mut ins, threads(), |j| tap_in(&line, j, Kill::Never));
        let mut outs: Vec<&mut Journey> = journeys
            .iter_mut()
            .zip(&phases)
            .filter(|(_, p)| p.tap_out == phase)
            .map(|(j, _)| j)
            .collect();
        parallel(&mut outs, threads(), |j| tap_out(&line, j, Kill::Never));
    }
    let tapping = started.elapsed();
    print_tapped(&journeys, tapping);
    assert_all_approved(&journeys);
    let (found, degraded) = check_exits(&line, &sim, &journeys);

    let reconciling = line.reconcile(RECONCILE_ROUNDS);
    // Which entries reached the line: after the database came back and every station
    // reconciled, all of them must have (the outbox keeps them until they do).
    let on_line = line_journeys(&c, DB);
    let reached: HashSet<String> = on_line
        .iter()
        .filter(|(_, j)| j.has_entry)
        .map(|(r, _)| r.clone())
        .collect();
    let missing: Vec<String> = journeys
        .iter()
        .filter_map(|j| j.in_ref())
        .filter(|r| !reached.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "entries never reached the line after the outage and reconcile: {missing:?}"
    );
    let checked = check_money(&line, &sim, &journeys, Some(&reached));
    let refunds = check_refunds_once(&sim);
    check_events_once(&c, DB);
    let local = check_no_event_lost(&line, &c, DB);
    check_line_closed(&line, &c, DB, &journeys);
    println!(
        "line with PostgreSQL stopped for the middle third: {n} journeys, {} taps in {:.1} s, \
         reconcile x{RECONCILE_ROUNDS} {:.1} s; exits that found their entry {found}, degraded \
         {degraded}; {checked} passengers paid the matrix fare; {refunds} refunds (none twice); \
         {local} station journeys on the line; {}",
        2 * n,
        tapping.as_secs_f64(),
        reconciling.as_secs_f64(),
        tally(&journeys)
    );
    assert!(
        degraded > 0,
        "no exit ran without the line: the outage tested nothing"
    );
    assert_eq!(checked, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_sigkilled_during_replication_loses_no_event() {
    let sim = common::start_sim().await;
    let _one_at_a_time = one_at_a_time();
    let c = cluster!();
    let seed = seed() ^ 3;
    let line = Line::new(&sim, &Store::postgres(&c, DB), seed);
    let n = env_usize("TAPGATE_LINE_JOURNEYS", 500).clamp(12, 90);
    let mut journeys = random_journeys(n, seed);
    // Each tap is SIGKILLed (if still running) at a random moment after it printed its
    // decision, which is when it pushes the station's outbox to the line: at once, or up to
    // 300 ms later. Killing before the decision is tests/crash_harness.rs's subject.
    let kill_for = |j: &Journey, dir: u64| {
        let mut rng = common::SplitMix(seed ^ dir ^ j.pan.bytes().map(u64::from).sum::<u64>());
        match rng.below(4) {
            0 => Kill::Never,
            1 => Kill::AfterReport(Duration::ZERO),
            _ => Kill::AfterReport(Duration::from_millis(rng.below(300) as u64)),
        }
    };
    let reconcile_kills = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);

    let started = Instant::now();
    parallel(&mut journeys, threads(), |j| {
        let (kin, kout) = (kill_for(j, 1), kill_for(j, 2));
        ride(&line, j, kin, kout);
        // Now and then a reconcile, killed too, while it pushes what the killed taps left.
        let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if k % 10 == 9 {
            let mut rng = common::SplitMix(seed ^ k as u64);
            let st = &line.stations[rng.below(LINE.len())];
            let delay = Duration::from_millis(20 + rng.below(280) as u64);
            if helpers::reconcile_killed_after(st, delay) {
                reconcile_kills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let tapping = started.elapsed();
    print_tapped(&journeys, tapping);
    assert_all_approved(&journeys);
    let tap_kills = journeys
        .iter()
        .flat_map(|j| [&j.tap_in, &j.tap_out])
        .flatten()
        .filter(|t| t.killed)
        .count();
    let (found, degraded) = check_exits(&line, &sim, &journeys);

    let reconciling = line.reconcile(RECONCILE_ROUNDS);
    let local = check_no_event_lost(&line, &c, DB);
    check_events_once(&c, DB);
    check_line_closed(&line, &c, DB, &journeys);
    let checked = check_money(&line, &sim, &journeys, None);
    let refunds = check_refunds_once(&sim);
    let reconcile_kills = reconcile_kills.into_inner();
    println!(
        "line with SIGKILLs during replication: {n} journeys, {} taps ({tap_kills} killed after \
         their decision), {reconcile_kills} reconciles killed, in {:.1} s; reconcile \
         x{RECONCILE_ROUNDS} {:.1} s; exits that found their entry {found}, degraded {degraded}; \
         {local} station journeys on the line; {checked} passengers paid the matrix fare; \
         {refunds} refunds (none twice); {}",
        2 * n,
        tapping.as_secs_f64(),
        reconciling.as_secs_f64(),
        tally(&journeys)
    );
    // A tap prints its decision before it pushes the outbox; if it pushed first, these kills
    // would land after the push and test nothing.
    assert!(
        tap_kills >= n / 4,
        "only {tap_kills} of {} taps were still running when killed after their report: the \
         kills did not hit replication",
        2 * n
    );
    assert_eq!(checked, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_exits_close_one_journey_once() {
    let sim = common::start_sim().await;
    let _one_at_a_time = one_at_a_time();
    let c = cluster!();
    let seed = seed() ^ 4;
    let line = Line::new(&sim, &Store::postgres(&c, DB), seed);
    let rounds = 20;
    let mut pans = Pans::new(seed);
    let mut journeys = Vec::new();
    let mut overlapped = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let a = round % LINE.len();
        let (b, cc) = ((a + 1) % LINE.len(), (a + 2) % LINE.len());
        let pan = pans.next_pan();
        let tin = tap(&line.stations[a], Dir::In, &pan, Kill::Never);
        assert!(tin.approved(), "tap-in: {tin}");
        let in_ref = tin.reference().expect("reference");

        // Both exits start together; each is one whole process (config, journal, line,
        // aggregator), so their lookups and closes overlap.
        let t0 = Instant::now();
        let pb = spawn_tap(&line.stations[b], Dir::Out, &pan);
        let pc = spawn_tap(&line.stations[cc], Dir::Out, &pan);
        let second_started = t0.elapsed();
        let (hb, hc) = std::thread::scope(|s| {
            let hb = s.spawn(|| {
                let t = finish(pb, Kill::Never);
                (t, t0.elapsed())
            });
            let hc = s.spawn(|| {
                let t = finish(pc, Kill::Never);
                (t, t0.elapsed())
            });
            (hb.join().expect("exit at B"), hc.join().expect("exit at C"))
        });
        // Both processes were alive at once: the first ended after the second started.
        if hb.1 > second_started {
            overlapped += 1;
        }
        let (winner, loser, exit) = match (hb.0.approved(), hc.0.approved()) {
            (true, false) => (hb.0, hc.0, b),
            (false, true) => (hc.0, hb.0, cc),
            _ => panic!(
                "round {round}: want exactly one exit approved, got\nB {}: {}\nC {}: {}",
                LINE[b], hb.0, LINE[cc], hc.0
            ),
        };
        assert_eq!(
            loser.outcome(),
            "duplicate",
            "round {round}: the losing exit: {loser}"
        );
        assert!(loser.reference().is_none(), "the loser paid: {loser}");
        assert!(!loser.report["opened"].as_bool().unwrap_or(true));

        // The aggregator: one hold, one tap-out for this passenger.
        let masked = helpers::mask(&pan);
        let mine: Vec<_> = sim
            .ledger()
            .into_iter()
            .filter(|e| e.masked_pan == masked)
            .collect();
        let outs: Vec<_> = mine
            .iter()
            .filter(|e| e.tap.tap_type.as_deref() == Some("OUT"))
            .collect();
        assert_eq!(mine.len(), 2, "round {round}: {mine:#?}");
        assert_eq!(outs.len(), 1, "round {round}: {mine:#?}");
        assert_eq!(
            Some(outs[0].partner_reference_no.clone()),
            winner.reference()
        );
        assert_eq!(
            outs[0].tap.tap_in_partner_reference_no.as_deref(),
            Some(in_ref.as_str()),
            "the winning exit references the hold"
        );
        assert_eq!(outs[0].amount, line.fare(a, exit));

        journeys.push(Journey {
            pan,
            entry: a,
            exit,
            tap_in: Some(tin),
            tap_out: Some(winner),
        });
    }
    let racing = started.elapsed();
    // Each winner pushed its close before exiting, unless its push ran out of time on a
    // loaded machine; a reconcile pushes whatever is left, then the line is read.
    line.reconcile(1);
    let on_line = line_journeys(&c, DB);
    for j in &journeys {
        let in_ref = j.in_ref().expect("approved");
        let winner = j.tap_out.as_ref().and_then(helpers::Tap::reference);
        let got = on_line.get(&in_ref).map(|l| {
            (
                l.state.as_str(),
                l.closes,
                l.closed_station.as_str(),
                Some(l.tap_out_ref.clone()),
            )
        });
        assert_eq!(
            got,
            Some(("CLOSED", 1, LINE[j.exit], winner)),
            "journey {in_ref}: one close on the line, by the exit that won"
        );
    }
    let checked = check_money(&line, &sim, &journeys, None);
    check_events_once(&c, DB);
    check_refunds_once(&sim);
    println!(
        "racing exits: {rounds} rounds in {:.1} s, {overlapped} with both exit processes \
         running at once; each journey closed once, one charge; {checked} passengers paid \
         the matrix fare",
        racing.as_secs_f64()
    );
    assert_eq!(checked, rounds);
}

/// Prints what was tapped as soon as tapping ends, so a failing run still shows it.
fn print_tapped(journeys: &[Journey], tapping: Duration) {
    println!(
        "tapped: {} journeys, {} taps in {:.1} s: {}",
        journeys.len(),
        journeys
            .iter()
            .map(|j| usize::from(j.tap_in.is_some()) + usize::from(j.tap_out.is_some()))
            .sum::<usize>(),
        tapping.as_secs_f64(),
        tally(journeys)
    );
}
