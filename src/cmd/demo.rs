//! `tapgate demo`: a handful of journeys at a Blok M gate pair, and one exit at Bendungan
//! Hilir, against the built-in acquirer simulator, through the real pipeline (APDU exchange
//! with a scripted phone, decoder, policy, SQLite journal, SNAP client over loopback HTTP,
//! recording relay, reconciler). The two stations share one embedded journal, which stands in
//! for a line's database: an exit at one finds the entry made at the other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::cpm::build::PayloadSpec;
use crate::daemon::lane::{Lane, TapReport};
use crate::daemon::reconcile::Reconciler;
use crate::daemon::station::StationCore;
use crate::daemon::{aggregator_with_secrets, open_storage, Station};
use crate::fare::policy::TapOutcome;
use crate::fare::{OpState, Rupiah};
use crate::nfc::scripted::ScriptedPhone;
use crate::nfc::CardEvent;
use crate::relay::RecordingRelay;
use crate::sim::{Fault, SimConfig, SimHandle, Simulator};
use crate::snap::sign::RsaSigner;

const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// A passenger of the demo: a name for the screen and a wallet PAN.
struct Passenger {
    name: &'static str,
    pan: &'static str,
}

const SARI: Passenger = Passenger {
    name: "Sari",
    pan: "9360000201100456781",
};
const BUDI: Passenger = Passenger {
    name: "Budi",
    pan: "9360091430100531720",
};
const DEWI: Passenger = Passenger {
    name: "Dewi",
    pan: "9360091530271057414",
};
const RINA: Passenger = Passenger {
    name: "Rina",
    pan: "9360001417451180859",
};
const JOKO: Passenger = Passenger {
    name: "Joko",
    pan: "9360091800123456789",
};
const AYU: Passenger = Passenger {
    name: "Ayu",
    pan: "9360000812345678901",
};

/// How the passenger's phone behaves at the reader.
enum Phone {
    /// Wallet open on its QRIS TAP screen; payload sent in two records.
    Ready,
    /// Wallet not on its QRIS TAP screen: answers `00 00`.
    NotReady,
    /// A foreign (non-QRIS) EMV CPM payload.
    Foreign,
}

/// What the simulated aggregator does for this tap.
enum Acquirer {
    Normal,
    DeclinePan(&'static str),
    /// The reply comes after the gate's decision deadline; the payment is applied.
    LateReply(u64),
}

struct Step {
    who: &'static Passenger,
    lane: &'static str,
    phone: Phone,
    acquirer: Acquirer,
    note: &'static str,
}

fn script() -> Vec<Step> {
    use Acquirer::*;
    use Phone::*;
    let s = |who, lane, phone, acquirer, note| Step {
        who,
        lane,
        phone,
        acquirer,
        note,
    };
    vec![
        s(&SARI, "in-1", Ready, Normal, "taps in"),
        s(
            &BUDI,
            "in-1",
            NotReady,
            Normal,
            "taps with the wallet closed",
        ),
        s(&BUDI, "in-1", Ready, Normal, "opens QRIS TAP, taps again"),
        s(&SARI, "in-1", Ready, Normal, "phone lingers on the reader"),
        s(
            &DEWI,
            "in-1",
            Ready,
            DeclinePan("4036014"),
            "taps in, balance too low",
        ),
        s(
            &RINA,
            "in-1",
            Ready,
            LateReply(1500),
            "taps in, aggregator slow",
        ),
        s(&RINA, "in-1", Ready, Normal, "taps again"),
        s(&AYU, "in-1", Foreign, Normal, "taps a non-QRIS card app"),
        s(
            &SARI,
            "out-1",
            Ready,
            Normal,
            "taps out at the same station",
        ),
        s(&JOKO, "out-1", Ready, Normal, "taps out, no tap-in known"),
        s(
            &BUDI,
            "bnh-out-1",
            Ready,
            Normal,
            "rides to Bendungan Hilir, taps out there",
        ),
    ]
}

/// Runs the demo; `journal` keeps the journal file instead of a temporary one.
pub async fn run(journal: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tmp = tempdir()?;
    let journal_path = journal.unwrap_or_else(|| tmp.join("journal.db"));

    let sim_cfg = SimConfig::demo();
    let sim = Simulator::start(sim_cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("starting the built-in aggregator simulator")?;
    let (cfg, station) = demo_station(&sim, &tmp, journal_path)?;
    let other = second_station(&cfg, &station);
    let relays: Vec<RecordingRelay> = cfg
        .lanes
        .iter()
        .chain(&other.config.lanes)
        .map(|_| RecordingRelay::new())
        .collect();
    let lanes: Vec<Lane> = cfg
        .lanes
        .iter()
        .map(|l| (l, station.core()))
        .chain(other.config.lanes.iter().map(|l| (l, other.clone())))
        .zip(&relays)
        .map(|((l, core), r)| Lane::on_core(l.clone(), core, Arc::new(r.clone())))
        .collect();

    println!(
        "tapgate demo: {} ({}), lanes {}, simulator at {}",
        cfg.station.name,
        cfg.station.id,
        cfg.lanes
            .iter()
            .map(|l| format!("{} ({})", l.name, l.direction.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
        sim.base_url()
    );
    println!(
        "        and {} ({}), lane {}, sharing the journal as stations of one line",
        other.config.station.name,
        other.config.station.id,
        other
            .config
            .lanes
            .iter()
            .map(|l| format!("{} ({})", l.name, l.direction.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        " #  lane       passenger  issuer PAN             outcome           amount    gate  ms"
    );
    let reports = run_script(&sim, &lanes).await?;
    let out_relay = cfg
        .lanes
        .iter()
        .position(|l| l.name == QR_LANE)
        .and_then(|i| relays.get(i))
        .context("the demo config has no out-1 lane")?;
    let sale = qr_passenger(&sim, &cfg, &station, out_relay, reports.len() + 1).await?;

    // Late replies land in the journal; then the reconciler settles what is owed.
    station.drain().await;
    let rec = Reconciler::new(station.clone());
    let left = rec.run_until_settled(Duration::from_secs(20)).await?;

    let rows = station.journal.run(|j| j.export(0)).await?;
    let opened: usize = relays.iter().map(RecordingRelay::opens).sum();
    println!();
    print_taps(&reports, &[sale], opened);
    let ok = print_audit(&sim, &rows, left);
    print_passengers(&sim);
    println!(
        "late holds refunded: {}; demo took {} ms",
        rows.iter().filter(|r| r.state == OpState::Refunded).count(),
        started.elapsed().as_millis()
    );
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The demo station: the built-in config pointed at the simulator, its journal and key in
/// `tmp` (the journal at `journal_path`).
fn demo_station(
    sim: &SimHandle,
    tmp: &Path,
    journal_path: PathBuf,
) -> anyhow::Result<(Config, Arc<Station>)> {
    let mut cfg = Config::parse(DEMO_CONFIG, Path::new("config/demo.toml"))?;
    cfg.aggregator.base_url = sim.base_url();
    cfg.journal.path = journal_path;
    cfg.journal.passenger_key_file = Some(tmp.join("passenger.key"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new(cfg.time_zone()));
    let signer = RsaSigner::from_pem(crate::sim::DEMO_PRIVATE_KEY_PEM)?;
    let aggregator = aggregator_with_secrets(
        &cfg,
        crate::sim::DEMO_CLIENT_SECRET.to_string(),
        signer,
        clock.clone(),
    )?;
    let (journal, key) = open_storage(&cfg)?;
    let station = Station::new(Arc::new(cfg.clone()), journal, aggregator, clock, key, None);
    Ok((cfg, station))
}

/// The line's second station: Bendungan Hilir, one exit lane, the same tariff, aggregator and
/// journal as Blok M (its ports are Blok M's).
fn second_station(cfg: &Config, blm: &Station) -> Arc<StationCore> {
    let mut c = cfg.clone();
    c.station.id = "BNH".into();
    c.station.name = "Bendungan Hilir".into();
    c.station.latitude = -6.2153;
    c.station.longitude = 106.8184;
    c.lanes = cfg
        .lanes
        .iter()
        .filter(|l| l.direction == crate::fare::Direction::Out)
        .take(1)
        .map(|l| crate::config::LaneConfig {
            name: "bnh-out-1".into(),
            ..l.clone()
        })
        .collect();
    StationCore::new(
        Arc::new(c),
        blm.clock.clone(),
        blm.passenger_key.clone(),
        blm.ports.clone(),
    )
}

/// What each passenger paid in the end, from the simulator's ledger (holds finalized by a
/// tap-out or released are not charges).
fn print_passengers(sim: &SimHandle) {
    let all = sim.passengers();
    for who in [&SARI, &BUDI, &DEWI, &RINA, &JOKO] {
        if let Some(p) = sim.passenger(who.pan) {
            println!(
                "  paid  {:<5} {}  net {:>9}  still held {:>8}",
                who.name,
                p.masked_pan,
                Rupiah(p.net_charged).to_string(),
                Rupiah(p.held).to_string()
            );
        }
    }
    let start = crate::sim::mpm::MpmConfig::default().demo_customer_balance;
    if let Some(c) = sim.customer(crate::sim::linkage::DEMO_CUSTOMER_ID) {
        println!(
            "  paid  Nadia {}  net {:>9}  (by QR, from her wallet over Linkage)",
            c.masked_pan,
            Rupiah(start.saturating_sub(c.balance)).to_string()
        );
    }
    println!(
        "aggregator: {} passengers paid {} in all; {} hold(s) still open (journeys not ended yet)",
        all.totals.passengers,
        Rupiah(all.totals.net_charged),
        all.totals.holds_open
    );
}

/// Plays the demo's passengers, one line printed per tap.
async fn run_script(sim: &SimHandle, lanes: &[Lane]) -> anyhow::Result<Vec<TapReport>> {
    let mut reports: Vec<TapReport> = Vec::new();
    for (i, step) in script().iter().enumerate() {
        match step.acquirer {
            Acquirer::Normal => {}
            Acquirer::DeclinePan(code) => sim.decline_pan(step.who.pan, code),
            Acquirer::LateReply(ms) => sim.push_fault(Fault::Delay { ms }),
        }
        let lane = lanes
            .iter()
            .find(|l| l.name() == step.lane)
            .context("demo script names a lane the demo config lacks")?;
        let event = tap_phone(step);
        let t = Instant::now();
        let Some(report) = lane.handle_event(event).await else {
            continue;
        };
        let ms = t.elapsed().as_millis();
        println!(
            "{:>2}  {:<10} {:<10} {:<22} {:<17} {:<9} {:<5} {:>3}   {}",
            i + 1,
            report.lane,
            step.who.name,
            report.pan_masked.as_deref().unwrap_or("-"),
            report.outcome.as_str(),
            report
                .amount
                .map(|a| Rupiah(a).to_string())
                .unwrap_or_else(|| "-".into()),
            if report.opened { "OPEN" } else { "shut" },
            ms,
            step.note
        );
        reports.push(report);
        // Keep the passengers apart, as at a real gate: the debounce window is per passenger.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(reports)
}

fn print_taps(reports: &[TapReport], sales: &[TapReport], opened: usize) {
    let count = |o: TapOutcome| reports.iter().filter(|r| r.outcome == o).count();
    println!(
        "taps {}: approved {}, declined {}, try again {}, wallet not ready {}, invalid {}, duplicate {}; QR sales {}: paid {}; gate opened {} times",
        reports.len(),
        count(TapOutcome::Approved),
        count(TapOutcome::Declined),
        count(TapOutcome::TryAgain),
        count(TapOutcome::WalletNotReady),
        count(TapOutcome::InvalidPayload),
        count(TapOutcome::Duplicate),
        sales.len(),
        sales.iter().filter(|r| r.opened).count(),
        opened
    );
}

/// Prints the journal and its comparison with the simulator's ledger; whether all is well
/// (no mismatch, nothing left open, no protocol violation).
fn print_audit(sim: &SimHandle, rows: &[crate::journal::OpRow], left: usize) -> bool {
    for row in rows {
        println!(
            "  journal {}  {:<4} {:<14} {:>9}  {}",
            row.partner_reference_no,
            row.direction.as_str(),
            row.state.as_str(),
            row.amount.to_string(),
            row.reason.as_deref().unwrap_or("")
        );
    }
    let mut mismatches = super::audit::compare_with_journal(&sim.ledger(), rows);
    mismatches.extend(super::audit::compare_qr_sales(&sim.mpm_ledger(), rows));
    let violations = sim.stats().protocol_violations();
    println!(
        "journal vs simulator ledger: {} operations, {} mismatches; {} not final; {} SNAP protocol violations seen by the simulator",
        rows.len(),
        mismatches.len(),
        left,
        violations
    );
    for m in &mismatches {
        println!("  MISMATCH {m}");
    }
    mismatches.is_empty() && left == 0 && violations == 0
}

/// What the demo's QR passenger does.
const NADIA_NOTE: &str = "no NFC: touches \"Pay by QR\", scans it, pays over Linkage";

/// The exit lane whose screen sells a QR in the demo.
const QR_LANE: &str = "out-1";

/// Nadia's iPhone cannot tap (no QRIS TAP on iOS): at the Blok M exit she touches "Bayar
/// dengan QR / Pay by QR" on the lane's screen, her wallet app scans the QR and pays over the
/// aggregator's Linkage API, and the gate opens when the aggregator reports it paid. The
/// screen here is the display's hub without its web server; the wallet reads the QR's text
/// from the simulator's record of it, which is what the screen draws.
async fn qr_passenger(
    sim: &SimHandle,
    cfg: &Config,
    station: &Arc<Station>,
    relay: &RecordingRelay,
    n: usize,
) -> anyhow::Result<TapReport> {
    use crate::display::{DisplayHub, ScreenKind};
    let hub = DisplayHub::new(
        cfg.lanes.iter().map(|l| (l.name.clone(), l.direction)),
        crate::display::DEFAULT_IDLE_AFTER,
        station.clock.clone(),
    );
    let qr_cfg: crate::config::QrConfig =
        toml::from_str(&format!("lanes = [\"{QR_LANE}\"]\npoll_ms = 250\n"))
            .context("the demo's [qr]")?;
    let relays = std::collections::HashMap::from([(
        QR_LANE.to_string(),
        Arc::new(relay.clone()) as Arc<dyn crate::relay::Relay>,
    )]);
    let desk = crate::qr::QrDesk::new(
        station.core(),
        hub.clone(),
        qr_cfg,
        station.aggregator.notify_keys(&cfg.aggregator.partner_id),
        relays,
    );
    station.attach_qr(desk.clone());
    let t = Instant::now();
    let fare = desk.request(QR_LANE)?;
    let shown = wait_for(|| {
        hub.snapshot(QR_LANE)
            .is_some_and(|s| s.kind == ScreenKind::Qr)
    })
    .await;
    anyhow::ensure!(shown, "the QR never reached the screen");
    let qr = sim
        .mpm_ledger()
        .qrs
        .pop()
        .context("the simulator generated no QR")?;
    let wallet = crate::sim::wallet::Wallet::new(
        &sim.base_url(),
        crate::sim::wallet::WalletCredentials::demo(),
    )?;
    wallet.pay(&qr.qr_content).await?;
    let done = wait_for(|| {
        hub.snapshot(QR_LANE)
            .is_some_and(|s| s.kind != ScreenKind::Qr)
    })
    .await;
    anyhow::ensure!(done, "the gate never decided on the paid QR");
    let row = station
        .journal
        .run({
            let pref = qr.partner_reference_no.clone();
            move |j| j.get(&pref)
        })
        .await?
        .context("the QR sale is not in the journal")?;
    let opened = row.gate_opened == Some(true);
    let mut r = TapReport::refused(
        QR_LANE,
        crate::fare::Direction::Out,
        if opened {
            TapOutcome::Approved
        } else {
            TapOutcome::Refused
        },
        "QR sale",
    );
    r.opened = opened;
    r.amount = Some(fare.0);
    r.partner_reference_no = Some(row.partner_reference_no);
    let (outcome, gate) = if opened {
        ("approved", "OPEN")
    } else {
        ("refused", "shut")
    };
    println!(
        "{n:>2}  {QR_LANE:<10} {:<10} {:<22} {outcome:<17} {:<9} {gate:<5} {:>3}   {}",
        "Nadia",
        "iPhone: pays by QR",
        fare.to_string(),
        t.elapsed().as_millis(),
        NADIA_NOTE
    );
    Ok(r)
}

/// Waits up to 5 s for `done`, looking every 20 ms.
async fn wait_for(done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Runs the APDU exchange with the step's scripted phone, as a reader thread would.
fn tap_phone(step: &Step) -> CardEvent {
    let payload = match step.phone {
        Phone::Foreign => FOREIGN_PAYLOAD.to_string(),
        // Each tap yields a fresh issuer token, as a real wallet does.
        _ => crate::cpm::build::payload(
            &PayloadSpec::new(step.who.pan).with_token(&rand::random::<[u8; 16]>()),
        ),
    };
    let mut phone = match step.phone {
        Phone::NotReady => ScriptedPhone::new(&payload, &[84, 64])
            .with_fault(crate::nfc::scripted::Fault::WalletNotReady),
        _ => ScriptedPhone::new(&payload, &[84, 64]),
    };
    crate::nfc::source::tap_event("scripted", &mut phone)
}

/// EMVCo's own CPM example: valid EMV, but not a QRIS application.
const FOREIGN_PAYLOAD: &str = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=";

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tapgate-demo-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
