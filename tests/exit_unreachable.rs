//! Exits never trap anyone: every way the aggregator can be unusable — connection refused,
//! TLS failure, token endpoint 5xx / 401 / timeout, 401 or 429 on the payment, payment 5xx —
//! lets the passenger out at an exit (default policy), while the same failure at an entry keeps
//! the gate shut. Real parts: the simulator over loopback HTTP with injected faults, a closed
//! port, a real SQLite journal, then the reconciler.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tapgate::config::Config;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::reconcile::Reconciler;
use tapgate::daemon::station_from_config;
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::OpState;
use tapgate::relay::RecordingRelay;
use tapgate::sim::{Fault, Service, SimHandle};

const SARI: &str = "9360000201100456781";

/// How the aggregator is made unusable for one case.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Nothing listens on the port.
    ConnectionRefused,
    /// `https://` to the simulator's plain-HTTP port: the TLS handshake fails.
    TlsFailure,
    /// Faults queued on one simulator service.
    Faults(Service, Fault, usize),
}

struct Case {
    name: &'static str,
    way: Way,
    /// The exit's outcome: an unpaid exit (no money moved), or a released one (a payment whose
    /// outcome is unknown, settled later by query).
    exit: TapOutcome,
    /// The `reason` label of `tapgate_exits_unpaid_total`.
    reason: &'static str,
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Rig {
    _dir: tempfile::TempDir,
    station: Arc<tapgate::daemon::Station>,
    entry: Lane,
    exit: Lane,
    entry_relay: RecordingRelay,
    exit_relay: RecordingRelay,
}

fn rig(sim: &SimHandle, way: Way, policy: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let base = match way {
        Way::ConnectionRefused => format!("http://127.0.0.1:{}", closed_port()),
        Way::TlsFailure => sim.base_url().replacen("http://", "https://", 1),
        Way::Faults(..) => sim.base_url(),
    };
    // The token fetch gives up after 400 ms (a token endpoint that hangs), well within the
    // gate's decision deadline.
    let policy = format!("decision_deadline_ms = 1500\n{policy}");
    let path = common::station_config(dir.path(), &base, &policy, common::FAST_RECONCILER);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[aggregator]\n",
        "[aggregator]\nrequest_timeout_ms = 400\nconnect_timeout_ms = 200\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let station = station_from_config(cfg.clone(), &path).unwrap();
    let entry_relay = RecordingRelay::new();
    let exit_relay = RecordingRelay::new();
    Rig {
        entry: Lane::new(
            cfg.lanes[0].clone(),
            station.clone(),
            Arc::new(entry_relay.clone()),
        ),
        exit: Lane::new(
            cfg.lanes[1].clone(),
            station.clone(),
            Arc::new(exit_relay.clone()),
        ),
        station,
        entry_relay,
        exit_relay,
        _dir: dir,
    }
}

fn arm(sim: &SimHandle, way: Way) {
    if let Way::Faults(service, fault, n) = way {
        for _ in 0..n {
            sim.push_fault_on(service, fault);
        }
    }
}

fn cases() -> Vec<Case> {
    let unpaid = |name, way, reason| Case {
        name,
        way,
        exit: TapOutcome::UnpaidExit,
        reason,
    };
    vec![
        unpaid("connection refused", Way::ConnectionRefused, "unreachable"),
        unpaid("TLS failure", Way::TlsFailure, "unreachable"),
        unpaid(
            "token endpoint 500",
            Way::Faults(Service::Token, Fault::ServerError { applied: false }, 1),
            "token_unavailable",
        ),
        unpaid(
            "token endpoint 401",
            Way::Faults(Service::Token, Fault::Unauthorized, 1),
            "auth",
        ),
        unpaid(
            "token endpoint timeout",
            Way::Faults(Service::Token, Fault::Delay { ms: 1000 }, 1),
            "token_unavailable",
        ),
        // 401 on the payment is retried once with a fresh token: both refused.
        unpaid(
            "payment 401",
            Way::Faults(Service::Payment, Fault::Unauthorized, 2),
            "auth",
        ),
        unpaid(
            "payment 429",
            Way::Faults(Service::Payment, Fault::Throttled, 1),
            "throttled",
        ),
        Case {
            name: "payment 500",
            way: Way::Faults(Service::Payment, Fault::ServerError { applied: false }, 1),
            exit: TapOutcome::Released,
            reason: "",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_the_aggregator_is_unusable_opens_exits_and_keeps_entries_shut() {
    let mut table = Vec::new();
    for case in cases() {
        let name = case.name;
        let sim = common::start_sim().await;

        // The entry: the same failure keeps the gate shut, nothing paid.
        let rig1 = rig(&sim, case.way, "");
        arm(&sim, case.way);
        let r = rig1
            .entry
            .handle_payload(&common::tap_payload(SARI), 0)
            .await;
        assert!(!r.opened, "{name}: entry opened: {r:?}");
        assert_eq!(rig1.entry_relay.opens(), 0, "{name}");
        assert!(
            matches!(r.outcome, TapOutcome::Refused | TapOutcome::TryAgain),
            "{name}: {r:?}"
        );
        sim.clear_faults();
        drop(rig1);

        // The exit: let out.
        let rig = rig(&sim, case.way, "");
        arm(&sim, case.way);
        let r = rig.exit.handle_payload(&common::tap_payload(SARI), 0).await;
        assert!(r.opened, "{name}: exit kept shut: {r:?}");
        assert_eq!(r.outcome, case.exit, "{name}: {r:?}");
        assert_eq!(rig.exit_relay.opens(), 1, "{name}");
        sim.clear_faults();
        let pref = r.partner_reference_no.clone().expect("journaled");
        let p = pref.clone();
        let row = rig
            .station
            .journal
            .run(move |j| j.get(&p))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.gate_opened, Some(true), "{name}");
        let body = rig.station.metrics.render();
        if case.exit == TapOutcome::UnpaidExit {
            assert_eq!(row.state, OpState::Declined, "{name}: {row:?}");
            let reason = row.reason.clone().unwrap_or_default();
            assert!(reason.starts_with("unpaid exit"), "{name}: {reason}");
            assert!(reason.contains(case.reason), "{name}: {reason}");
            let line = format!(
                "tapgate_exits_unpaid_total{{lane=\"out-1\",reason=\"{}\"}} 1",
                case.reason
            );
            assert!(body.contains(&line), "{name}: {body}");
        } else {
            assert_eq!(row.state, OpState::Unknown, "{name}: {row:?}");
            assert!(!body.contains("tapgate_exits_unpaid_total"), "{name}");
        }
        // No money moved in any case; the reconciler leaves nothing open.
        let left = Reconciler::new(rig.station.clone())
            .run_until_settled(Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(left, 0, "{name}");
        assert!(sim.ledger().is_empty(), "{name}: {:?}", sim.ledger());
        let rows = rig.station.journal.run(|j| j.export(0)).await.unwrap();
        assert!(
            tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty(),
            "{name}"
        );
        assert_eq!(sim.stats().protocol_violations(), 0, "{name}");
        table.push(format!("{name}: entry shut, exit {}", case.exit.as_str()));
    }
    println!("{}", table.join("\n"));
}

/// A passenger who tapped in and leaves while the aggregator is down: let out, the journey
/// closes (so the next entry is not refused by anti-passback) with no fare charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_exit_closes_the_journey_without_a_fare() {
    let sim = common::start_sim().await;
    let way = Way::Faults(Service::Payment, Fault::Throttled, 1);
    let rig = rig(&sim, way, "debounce_ms = 0");
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved);
    arm(&sim, way);
    let r = rig.exit.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(r.outcome, TapOutcome::UnpaidExit, "{r:?}");
    let open = rig
        .station
        .journal
        .run(|j| j.stale_journeys(i64::MAX))
        .await
        .unwrap();
    assert!(open.is_empty(), "the journey is closed: {open:?}");
    let r = rig
        .entry
        .handle_payload(&common::tap_payload(SARI), 0)
        .await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{r:?}");
    assert_eq!(sim.ledger().len(), 2, "two holds, no settlement");
    // `tapgate journal list` shows it for what it is.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["journal", "--journal"])
        .arg(rig._dir.path().join("journal.db"))
        .arg("list")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("unpaid exit"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("DECLINED") && line.contains("out-1"),
        "{line}"
    );
}

/// `unreachable_at_exit = "keep_closed"`: the exit stays shut, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_closed_keeps_the_exit_shut() {
    let sim = common::start_sim().await;
    let rig = rig(
        &sim,
        Way::ConnectionRefused,
        "unreachable_at_exit = \"keep_closed\"",
    );
    let r = rig.exit.handle_payload(&common::tap_payload(SARI), 0).await;
    assert!(!r.opened);
    assert_eq!(r.outcome, TapOutcome::Refused);
    assert_eq!(rig.exit_relay.opens(), 0);
}
