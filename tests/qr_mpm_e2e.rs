//! QRIS MPM at the gate, end to end on real parts: `tapgate run` (a real process) with its
//! passenger display and `[qr]`, the simulator over loopback HTTP playing the aggregator (the
//! gate's generate, query, refund and its signed notification) and the wallet's Linkage API,
//! `tapgate sim pay-qr` (a real process) as the passenger's phone, the SQLite journal, and
//! SIGKILL.
//!
//! Each case ends with the books compared: every QR sale in the journal against the
//! simulator's QR ledger and the paying customer's balance.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tapgate::fare::OpState;
use tapgate::journal::{Channel, OpRow};
use tapgate::sim::mpm::{MpmEntry, NotifyState};
use tapgate::sim::SimHandle;

const LANE: &str = "out-1";
/// The demo line's unknown-entry fare at BLM: the highest fare on the line.
const FARE: u64 = 14_000;

struct Gate {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    display: String,
    child: Option<Child>,
}

impl Gate {
    /// The demo station with a display on a free port and `[qr]` on `out-1`; `notify` sends
    /// the display's notification URL as `callback_url`.
    fn new(sim: &SimHandle, validity_s: u64, poll_ms: u64, notify: bool) -> Gate {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let callback = if notify {
            format!("callback_url = \"http://127.0.0.1:{port}/v1.0/qr/qr-mpm-notify\"\n")
        } else {
            String::new()
        };
        let extra = format!(
            "[display]\nlisten = \"127.0.0.1:{port}\"\n\n[qr]\nlanes = [\"{LANE}\"]\n\
             validity_seconds = {validity_s}\npoll_ms = {poll_ms}\nlate_payment_seconds = 60\n\
             {callback}\n{}",
            common::FAST_RECONCILER
        );
        let cfg = common::station_config(dir.path(), &sim.base_url(), "", &extra);
        Gate {
            dir,
            cfg,
            display: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Starts `tapgate run` and waits until its QR desk takes requests.
    async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tapgate"))
            .args(["run", "--config"])
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("daemon.log")).expect("log"))
            .spawn()
            .expect("tapgate run");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if let Ok(r) = client().get(format!("{}/", self.display)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the display never answered; log:\n{}", self.log());
    }

    /// A passenger touches "pay by QR": `202` once the desk is attached.
    async fn ask_for_qr(&self) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let r = client()
                .post(format!("{}/lane/{LANE}/qr", self.display))
                .send()
                .await
                .expect("post");
            if r.status().as_u16() == 202 {
                return;
            }
            assert!(
                r.status().as_u16() == 503 && Instant::now() < until,
                "QR request refused: {} {}; log:\n{}",
                r.status(),
                r.text().await.unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cancel(&self) {
        let r = client()
            .post(format!("{}/lane/{LANE}/qr/cancel", self.display))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202, "cancel");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn sales(&self) -> Vec<OpRow> {
        common::journal_rows(self.dir.path())
            .into_iter()
            .filter(|r| r.channel == Channel::Mpm)
            .collect()
    }

    /// Waits until the one QR sale satisfies `done`.
    async fn sale_until(&self, within: Duration, done: impl Fn(&OpRow) -> bool) -> OpRow {
        let until = Instant::now() + within;
        loop {
            let sales = self.sales();
            if let [one] = &sales[..] {
                if done(one) {
                    return one.clone();
                }
            }
            assert!(
                Instant::now() < until,
                "sale never got there: {sales:#?}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The one QR the simulator generated, once there is one.
async fn the_qr(sim: &SimHandle) -> MpmEntry {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let [one] = &sim.mpm_ledger().qrs[..] {
            return one.clone();
        }
        assert!(Instant::now() < until, "no QR generated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tapgate sim pay-qr`: the passenger's wallet pays the QR over Linkage. Returns whether it
/// was paid.
fn pay(sim: &SimHandle, qr_content: &str) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["sim", "pay-qr", "--url", &sim.base_url(), qr_content])
        .output()
        .expect("tapgate sim pay-qr");
    eprintln!(
        "pay-qr: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

/// The demo customer's balance (the wallet `tapgate sim pay-qr` pays with by default).
fn balance(sim: &SimHandle) -> u64 {
    sim.customer(tapgate::sim::linkage::DEMO_CUSTOMER_ID)
        .expect("the demo customer")
        .balance
}

/// The journal's QR sales and the simulator's QR ledger tell the same story (see
/// `compare_qr_sales`): each sale's amount is its QR's; a sale the gate opened for is paid
/// and not refunded; a refunded sale was refunded exactly once, in full.
fn assert_books_agree(gate: &Gate, sim: &SimHandle) {
    let sales = gate.sales();
    assert!(!sales.is_empty());
    let mismatches = tapgate::cmd::audit::compare_qr_sales(&sim.mpm_ledger(), &sales);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    for op in &sales {
        assert_eq!(op.state == OpState::Succeeded, op.gate_opened == Some(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_paid_over_linkage_opens_the_exit_on_the_notification_and_the_books_agree() {
    let sim = common::start_sim().await;
    // Polling every 10 s: an open within a second or two can only be the notification's.
    let mut gate = Gate::new(&sim, 120, 10_000, true);
    gate.start().await;
    let before = balance(&sim);
    gate.ask_for_qr().await;
    let qr = the_qr(&sim).await;
    assert_eq!(qr.amount, FARE);
    let shown = gate
        .sale_until(Duration::from_secs(5), |r| r.reference_no.is_some())
        .await;
    assert_eq!(shown.state, OpState::Unknown, "on screen, not yet paid");
    assert_eq!(shown.gate_opened, None);

    let paid_at = Instant::now();
    assert!(pay(&sim, &qr.qr_content), "the wallet paid");
    let row = gate
        .sale_until(Duration::from_secs(5), |r| r.state == OpState::Succeeded)
        .await;
    let took = paid_at.elapsed();
    eprintln!("payment to gate open: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(5));
    assert_eq!(row.gate_opened, Some(true));
    let qr = sim.mpm_entry(&row.partner_reference_no).expect("qr");
    assert_eq!(
        qr.notification,
        NotifyState::Delivered {
            http_status: 200,
            response_code: Some("2005200".into())
        }
    );
    assert_eq!(balance(&sim), before - FARE, "charged once");
    assert!(gate.log().contains("QR sale paid"), "log:\n{}", gate.log());
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_notification_lost_polling_alone_opens_the_exit() {
    let sim = common::start_sim().await;
    sim.drop_notifications(true);
    let mut gate = Gate::new(&sim, 120, 250, true);
    gate.start().await;
    let before = balance(&sim);
    gate.ask_for_qr().await;
    let qr = the_qr(&sim).await;
    gate.sale_until(Duration::from_secs(5), |r| r.reference_no.is_some())
        .await;
    assert!(pay(&sim, &qr.qr_content));
    let row = gate
        .sale_until(Duration::from_secs(5), |r| r.state == OpState::Succeeded)
        .await;
    assert_eq!(row.gate_opened, Some(true));
    assert_eq!(
        sim.mpm_entry(&row.partner_reference_no)
            .expect("qr")
            .notification,
        NotifyState::Dropped
    );
    assert_eq!(balance(&sim), before - FARE);
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_the_qr_expired_is_refunded_once_and_the_gate_stays_shut() {
    let sim = common::start_sim().await;
    sim.accept_late_payments(true);
    let mut gate = Gate::new(&sim, 30, 500, true);
    gate.start().await;
    let before = balance(&sim);
    gate.ask_for_qr().await;
    let qr = the_qr(&sim).await;
    // The gate gives up when the QR expires: it will not open for it.
    let withdrawn = gate
        .sale_until(Duration::from_secs(40), |r| r.gate_opened == Some(false))
        .await;
    assert_eq!(
        withdrawn.state,
        OpState::Unknown,
        "not final: a late payment may come"
    );
    assert!(
        pay(&sim, &qr.qr_content),
        "the simulator takes the late payment"
    );
    let row = gate
        .sale_until(Duration::from_secs(10), |r| r.state == OpState::Refunded)
        .await;
    assert_eq!(row.gate_opened, Some(false));
    // More reconciler passes and a notification later: still one refund.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let qr = sim.mpm_entry(&row.partner_reference_no).expect("qr");
    assert!(qr.payment.as_ref().is_some_and(|p| p.late));
    assert_eq!(qr.refunds.len(), 1);
    assert_eq!(balance(&sim), before, "the passenger has the fare back");
    assert_eq!(sim.stats().mpm.refunds_made, 1);
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_paid_after_the_passenger_cancelled_is_refunded_once() {
    let sim = common::start_sim().await;
    let mut gate = Gate::new(&sim, 120, 250, false);
    gate.start().await;
    let before = balance(&sim);
    gate.ask_for_qr().await;
    let qr = the_qr(&sim).await;
    gate.sale_until(Duration::from_secs(5), |r| r.reference_no.is_some())
        .await;
    gate.cancel().await;
    gate.sale_until(Duration::from_secs(5), |r| r.gate_opened == Some(false))
        .await;
    // The QR is still valid at the aggregator: the wallet can pay it; the gate must not open.
    assert!(pay(&sim, &qr.qr_content));
    let row = gate
        .sale_until(Duration::from_secs(10), |r| r.state == OpState::Refunded)
        .await;
    assert_eq!(row.gate_opened, Some(false));
    assert_eq!(balance(&sim), before);
    assert_books_agree(&gate, &sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_between_generate_and_payment_is_reconciled_without_a_double_charge() {
    let sim = common::start_sim().await;
    let mut gate = Gate::new(&sim, 120, 250, true);
    gate.start().await;
    let before = balance(&sim);
    gate.ask_for_qr().await;
    let qr = the_qr(&sim).await;
    gate.sale_until(Duration::from_secs(5), |r| r.reference_no.is_some())
        .await;
    gate.kill();
    // The passenger pays the QR still on a dead screen (notification undeliverable).
    assert!(pay(&sim, &qr.qr_content));
    assert_eq!(balance(&sim), before - FARE);
    // The next process takes the sale over at once: the gate never opened for it.
    common::reconcile(&gate.cfg);
    let row = gate
        .sale_until(Duration::from_secs(1), |r| r.state == OpState::Refunded)
        .await;
    assert_eq!(row.gate_opened, Some(false));
    assert_eq!(balance(&sim), before, "refunded in full");
    // A second reconcile, and a daemon started again, refund nothing more.
    common::reconcile(&gate.cfg);
    gate.start().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sim.stats().mpm.refunds_made, 1);
    assert_eq!(sim.stats().mpm.payments_made, 1);
    assert_books_agree(&gate, &sim);
}
