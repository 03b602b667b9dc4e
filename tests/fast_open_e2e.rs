//! Fast open with real parts: the SQLite journal, the simulator over loopback HTTP (its
//! answer delayed past `wait_ms`), the reconciler, and `tapgate unpaid` as a process. A
//! fast-opened payment the issuer declines ends on the unpaid list; the passenger's next entry
//! is refused with no payment; their exit is not; staff clear them and they enter again; the
//! journal and the simulator's ledger agree throughout.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tapgate::config::Config;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::reconcile::Reconciler;
use tapgate::daemon::{station_from_config, Station};
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::{OpState, Rupiah};
use tapgate::relay::RecordingRelay;
use tapgate::sim::{Fault, Service, SimHandle};

const RINA: &str = "9360001417451180859";
const SARI: &str = "9360000201100456781";
/// The demo tariff's hold at the demo station.
const FAST_OPEN: &str = "[policy.fast_open]\nenabled = true\nwait_ms = 100\nexposure_cap = 50000\n";

struct Rig {
    dir: tempfile::TempDir,
    sim: SimHandle,
    station: Arc<Station>,
    entry: Lane,
    exit: Lane,
}

async fn rig() -> Rig {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = common::station_config(
        dir.path(),
        &sim.base_url(),
        "debounce_ms = 0",
        &format!("[reconciler]\nbackoff_base_ms = 20\nbackoff_cap_ms = 200\nnot_found_after_seconds = 0\ninterval_ms = 50\n{FAST_OPEN}"),
    );
    let (station, entry, exit) = open_station(&path);
    Rig {
        dir,
        sim,
        station,
        entry,
        exit,
    }
}

fn open_station(path: &Path) -> (Arc<Station>, Lane, Lane) {
    let cfg = Config::load(path).unwrap();
    let station = station_from_config(cfg.clone(), path).unwrap();
    let lane = |i: usize| {
        Lane::new(
            cfg.lanes[i].clone(),
            station.clone(),
            Arc::new(RecordingRelay::new()),
        )
    };
    let (entry, exit) = (lane(0), lane(1));
    (station, entry, exit)
}

impl Rig {
    fn journal_path(&self) -> std::path::PathBuf {
        self.dir.path().join("journal.db")
    }

    fn unpaid(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
            .arg("unpaid")
            .args(args)
            .arg("--journal")
            .arg(self.journal_path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn settle(&self) {
        common::settle(&self.station).await;
    }

    async fn assert_books_agree(&self) {
        common::assert_books_agree(&self.station, &self.sim).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_opened_decline_is_listed_refused_at_entry_let_out_and_cleared_by_staff() {
    let rig = rig().await;
    rig.sim.decline_pan(RINA, "4036014");
    rig.sim
        .push_fault_on(Service::Payment, Fault::Delay { ms: 600 });
    let first = rig
        .entry
        .handle_payload(&common::tap_payload(RINA), 0)
        .await;
    assert!(first.fast_open && first.opened, "{first:?}");
    assert_eq!(first.outcome, TapOutcome::Approved);
    rig.settle().await;
    let pref = first.partner_reference_no.clone().unwrap();
    let row = {
        let r = pref.clone();
        rig.station
            .journal
            .run(move |j| j.get(&r))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(row.state, OpState::Declined);
    assert!(row.fast_opened);
    assert_eq!(rig.station.fast_open_state().0, Rupiah(0));

    let (code, list, _) = rig.unpaid(&["list"]);
    assert_eq!(code, 0);
    assert!(list.contains(&row.pan_masked), "{list}");
    assert!(list.contains(&format!("Rp{} owed", row.amount.0)), "{list}");
    assert!(!list.contains(RINA), "no full PAN: {list}");

    // The next entry is refused before any payment.
    let paid_before = rig.sim.ledger().len();
    let again = rig
        .entry
        .handle_payload(&common::tap_payload(RINA), 0)
        .await;
    assert_eq!(again.outcome, TapOutcome::Unpaid, "{}", again.message);
    assert!(!again.opened);
    assert_eq!(rig.sim.ledger().len(), paid_before);

    // The exit is attempted as usual.
    rig.sim.decline_pan(RINA, "");
    let out = rig.exit.handle_payload(&common::tap_payload(RINA), 0).await;
    assert_eq!(out.outcome, TapOutcome::Approved, "{}", out.message);
    assert!(out.opened);

    // Staff clear the passenger by masked PAN; the next entry is allowed.
    let (code, said, err) = rig.unpaid(&["clear", &row.pan_masked, "--by", "supervisor-ani"]);
    assert_eq!(code, 0, "{said}{err}");
    assert!(said.contains("supervisor-ani"), "{said}");
    let (_, list, _) = rig.unpaid(&["list"]);
    assert!(list.contains("nobody"), "{list}");
    let (_, all, _) = rig.unpaid(&["list", "--json", "--all"]);
    assert!(all.contains("\"cleared_by\":\"supervisor-ani\""), "{all}");
    let back = rig
        .entry
        .handle_payload(&common::tap_payload(RINA), 0)
        .await;
    assert_eq!(back.outcome, TapOutcome::Approved, "{}", back.message);
    rig.settle().await;
    rig.assert_books_agree().await;
    let (code, _, err) = rig.unpaid(&["clear", &row.pan_masked]);
    assert_eq!(code, 1, "nothing left to clear");
    assert!(err.contains("nobody owing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_open_killed_before_its_answer_is_exposure_after_restart_until_the_reconciler_confirms_it(
) {
    let rig = rig().await;
    rig.sim
        .push_fault_on(Service::Payment, Fault::Delay { ms: 1_500 });
    let path = rig.dir.path().join("station.toml");
    // A `tapgate tap` process: it prints its decision, then waits for the late reply; it is
    // killed (SIGKILL) before the answer comes, so nobody journals it.
    let mut child = common::tap_command(&path, "in-1", &common::tap_payload(SARI))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(report["fast_open"], true, "{line}");
    assert_eq!(report["opened"], true, "{line}");
    let amount = Rupiah(report["amount"].as_u64().unwrap());

    // A new process finds the exposure in the journal.
    let (again, _, _) = open_station(&path);
    assert_eq!(again.fast_open_state().0, amount, "exposure restored");
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    Reconciler::new(again.clone())
        .run_until_settled(Duration::from_secs(20))
        .await
        .unwrap();
    let rows = again.journal.run(|j| j.export(0)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].fast_opened);
    assert_eq!(rows[0].state, OpState::Succeeded, "{:?}", rows[0]);
    assert_eq!(
        again.fast_open_state().0,
        Rupiah(0),
        "confirmed: no exposure"
    );
    let mismatches = tapgate::cmd::audit::compare_with_journal(&rig.sim.ledger(), &rows);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    drop(rig.station);
}
