//! The lane tier's rig: a station core over the in-memory fakes (no sockets, no files), its
//! lanes with relays that can be told to fail, and a clock that follows tokio's paused time.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tapgate::aggregator::PayOutcome;
use tapgate::clock::Clock;
use tapgate::config::Config;
use tapgate::cpm::build::{payload, PayloadSpec};
use tapgate::daemon::lane::{Lane, TapReport};
use tapgate::daemon::reconcile::Reconciler;
use tapgate::daemon::station::{PassengerKey, Ports, StationCore};
use tapgate::fare::{Direction, OpState, Rupiah};
use tapgate::journal::{NewOp, OpKind, OpRow, Transition};
use tapgate::ports::fake::{Answer, FakeLine, FakePayments, MemJournal};
use tapgate::ports::OpJournal as _;
use tapgate::relay::{RecordingRelay, Relay, RelayError};

/// A passenger.
pub const PAN_A: &str = "9360000201100456781";
/// Another passenger.
pub const PAN_B: &str = "9360091430100531720";

/// The station's hold at entry: the highest fare from BLM (its matrix row).
pub const HOLD: u64 = 6000;
/// LBB → BLM.
pub const FARE_FROM_LBB: u64 = 5000;
/// BLM → BLM.
pub const FARE_SAME_STATION: u64 = 3000;
/// The line's highest fare: what an exit with no known entry pays.
pub const MAX_FARE: u64 = 9000;
/// `[policy] decision_deadline_ms`.
pub const DEADLINE_MS: u64 = 800;
/// `[aggregator] request_timeout_ms`.
pub const REQUEST_TIMEOUT_MS: u64 = 5000;
/// `[policy] debounce_ms`.
pub const DEBOUNCE_MS: u64 = 3000;

/// 2026-12-02T03:00:00Z, where every test's wall clock starts.
pub const START_MS: i64 = 1_796_180_400_000;

/// Wall and monotonic time both read from tokio's clock, from a fixed start: with paused time
/// the whole station moves only when a timer (a deadline, a fake's delay, a test's sleep) does.
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock at [`START_MS`] now.
    pub fn new() -> TokioClock {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> jiff::Zoned {
        let ms = START_MS + i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(0);
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A relay that records its opens, or fails when told to.
#[derive(Clone, Default)]
pub struct TestRelay {
    /// What it was told.
    pub rec: RecordingRelay,
    broken: Arc<Mutex<Option<String>>>,
    opened_at: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl TestRelay {
    /// From now on, every open fails with `why`.
    pub fn break_with(&self, why: &str) {
        *self.broken.lock().unwrap() = Some(why.to_string());
    }

    /// How many times the gate opened.
    pub fn opens(&self) -> usize {
        self.rec.opens()
    }

    /// When the gate opened, on tokio's clock, each time.
    pub fn opened_at(&self) -> Vec<tokio::time::Instant> {
        self.opened_at.lock().unwrap().clone()
    }
}

impl Relay for TestRelay {
    fn open(&self) -> Result<(), RelayError> {
        match self.broken.lock().unwrap().clone() {
            Some(why) => Err(RelayError::Io(why)),
            None => {
                self.opened_at
                    .lock()
                    .unwrap()
                    .push(tokio::time::Instant::now());
                self.rec.open()
            }
        }
    }

    fn set_free_exit(&self, on: bool) -> Result<(), RelayError> {
        self.rec.set_free_exit(on)
    }

    fn describe(&self) -> String {
        "test".into()
    }
}

/// The station's config: BLM on a three-station line, lanes `in-1`, `in-2` and `out-1`.
/// `policy` lines are added to `[policy]` (a key given there replaces the default);
/// `reconciler` lines to `[reconciler]` likewise.
pub fn config(policy: &str, reconciler: &str) -> Config {
    let section = |defaults: &[(&str, String)], extra: &str| {
        let mut lines: Vec<String> = defaults
            .iter()
            .filter(|(k, _)| !extra.lines().any(|l| l.trim_start().starts_with(k)))
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        lines.extend(extra.lines().map(str::to_string));
        lines.join("\n")
    };
    let policy = section(
        &[
            ("decision_deadline_ms", DEADLINE_MS.to_string()),
            ("debounce_ms", DEBOUNCE_MS.to_string()),
        ],
        policy,
    );
    let reconciler = section(
        &[
            ("backoff_base_ms", "20".into()),
            ("backoff_cap_ms", "200".into()),
            ("not_found_after_seconds", "0".into()),
            ("interval_ms", "50".into()),
        ],
        reconciler,
    );
    let text = format!(
        r#"
[station]
id = "BLM"
name = "Blok M"
latitude = -6.2443
longitude = 106.7982
# The lanes drive the tests' relays, not the config's.
bench = true

[[lane]]
name = "in-1"
direction = "in"
relay = {{ kind = "recording" }}

[[lane]]
name = "in-2"
direction = "in"
relay = {{ kind = "recording" }}

[[lane]]
name = "out-1"
direction = "out"
relay = {{ kind = "recording" }}

[tariff]
kind = "matrix"
stations = ["LBB", "BLM", "DKA"]
fares = [
  [3000, 5000, 9000],
  [5000, 3000, 6000],
  [9000, 6000, 3000],
]

[policy]
{policy}

[journal]
path = "/nonexistent/journal.db"

[aggregator]
base_url = "http://127.0.0.1:9"
client_id = "tapgate-test"
client_secret_file = "client-secret"
private_key_file = "private-key.pem"
partner_id = "TAPGATE-TEST"
merchant_id = "MRT-TEST"
channel_id = "95221"
request_timeout_ms = {REQUEST_TIMEOUT_MS}

[reconciler]
{reconciler}
"#
    );
    match Config::parse(&text, Path::new("/nonexistent/tapgate.toml")) {
        Ok(c) => c,
        Err(e) => panic!("test config: {e}\n{text}"),
    }
}

/// One station over the fakes.
pub struct Rig {
    /// The station core the lanes share.
    pub core: Arc<StationCore>,
    /// The journal (operations and journeys).
    pub journal: MemJournal,
    /// The aggregator.
    pub pay: FakePayments,
    /// The passenger key.
    pub key: PassengerKey,
    lanes: Vec<(Lane, TestRelay)>,
    tokens: Mutex<u8>,
    /// The line, for [`Rig::on_line`].
    pub line: Option<FakeLine>,
    /// The aggregator's QRIS MPM side.
    pub qr: tapgate::ports::fake::FakeQr,
}

impl Rig {
    /// A station with the default policy.
    pub fn new() -> Rig {
        Rig::with("", "")
    }

    /// A station with `policy` and `reconciler` lines (see [`config`]).
    pub fn with(policy: &str, reconciler: &str) -> Rig {
        Rig::build(policy, reconciler, None)
    }

    /// A station on a line, whose lookups [`FakeLine`] answers.
    pub fn on_line(policy: &str) -> Rig {
        Rig::build(policy, "", Some(FakeLine::new()))
    }

    fn build(policy: &str, reconciler: &str, line: Option<FakeLine>) -> Rig {
        let config = Arc::new(config(policy, reconciler));
        let journal = MemJournal::new();
        let pay = FakePayments::new();
        let qr = tapgate::ports::fake::FakeQr::new();
        let key = PassengerKey::from_bytes([7; 32]);
        let core = StationCore::new(
            config.clone(),
            Arc::new(TokioClock::new()),
            key.clone(),
            Ports {
                payments: Arc::new(pay.clone()),
                journeys: Arc::new(journal.clone()),
                ops: Arc::new(journal.clone()),
                line: line
                    .clone()
                    .map(|l| Arc::new(l) as Arc<dyn tapgate::ports::LinePort>),
                qr: Some(Arc::new(qr.clone())),
            },
        );
        let lanes = config
            .lanes
            .iter()
            .map(|l| {
                let relay = TestRelay::default();
                let lane = Lane::on_core(l.clone(), core.clone(), Arc::new(relay.clone()));
                (lane, relay)
            })
            .collect();
        Rig {
            line,
            core,
            journal,
            pay,
            key,
            lanes,
            tokens: Mutex::new(0),
            qr,
        }
    }

    /// The lane called `name`.
    pub fn lane(&self, name: &str) -> &Lane {
        &self.lanes.iter().find(|(l, _)| l.name() == name).unwrap().0
    }

    /// Every lane's relay, by lane name (for a QR desk).
    pub fn relays(&self) -> std::collections::HashMap<String, Arc<dyn tapgate::relay::Relay>> {
        self.lanes
            .iter()
            .map(|(l, r)| {
                let relay: Arc<dyn tapgate::relay::Relay> = Arc::new(r.clone());
                (l.name().to_string(), relay)
            })
            .collect()
    }

    /// The relay of the lane called `name`.
    pub fn relay(&self, name: &str) -> &TestRelay {
        &self.lanes.iter().find(|(l, _)| l.name() == name).unwrap().1
    }

    /// Gate opens over every lane.
    pub fn opens(&self) -> usize {
        self.lanes.iter().map(|(_, r)| r.opens()).sum()
    }

    /// A fresh payload for `pan` (a new issuer token each time, as a phone gives).
    pub fn payload(&self, pan: &str) -> String {
        let mut n = self.tokens.lock().unwrap();
        *n = n.wrapping_add(1);
        payload(&PayloadSpec::new(pan).with_token(&[*n; 16]))
    }

    /// `pan` taps at `lane`.
    pub async fn tap(&self, lane: &str, pan: &str) -> TapReport {
        let p = self.payload(pan);
        self.lane(lane).handle_payload(&p, 1500).await
    }

    /// The passenger key of `pan`.
    pub fn pan_key(&self, pan: &str) -> String {
        let p = tapgate::cpm::decode(&payload(&PayloadSpec::new(pan))).unwrap();
        self.key.of(p.pan())
    }

    /// The operation a tap journaled.
    pub fn op_of(&self, r: &TapReport) -> OpRow {
        let pref = r
            .partner_reference_no
            .as_deref()
            .expect("the tap journaled a payment");
        self.journal.op(pref).expect("the operation is journaled")
    }

    /// Now on the station's clock, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.core.now_ms()
    }

    /// The station's reconciler.
    pub fn reconciler(&self) -> Reconciler {
        Reconciler::on_core(self.core.clone())
    }

    /// A counter of the station's metrics.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        self.core.metrics.counter(name, labels)
    }

    /// Queues the next payment's answer: `outcome` after `ms` milliseconds.
    pub fn answer_after(&self, ms: u64, outcome: PayOutcome) {
        self.pay
            .then_pay(Answer::After(Duration::from_millis(ms), outcome));
    }

    /// Journals an operation of `pan` made elsewhere (another lane, another station, an
    /// earlier process), moved from PENDING along `path`; returns its `partnerReferenceNo`.
    pub async fn seed_op(&self, s: Seed<'_>) -> String {
        let now = self.now_ms();
        let pref = format!("TGSEED{}{}", s.station, now.wrapping_add(i64::from(s.n)));
        let op = NewOp {
            partner_reference_no: pref.clone(),
            kind: match s.direction {
                Direction::In => OpKind::Hold,
                Direction::Out => OpKind::Settle,
            },
            lane: "elsewhere".into(),
            direction: s.direction,
            station_id: s.station.into(),
            amount: Rupiah(s.amount),
            pan_key: self.pan_key(s.pan),
            pan_masked: "93600002*******6781".into(),
            nns: "93600002".into(),
            journey_id: None,
            next_attempt_at_ms: s.next_attempt_at_ms.unwrap_or(now),
            created_at_ms: s.created_at_ms.unwrap_or(now),
        };
        self.journal.insert(&op, OpState::Pending, None);
        if !s.path.is_empty() {
            self.journal
                .record(pref.clone(), s.path)
                .await
                .expect("the seeded path is legal");
        }
        pref
    }

    /// Journals a tap-in of `pan` at `station` that held `amount` and opened its gate, and
    /// its open journey; returns the tap-in's `partnerReferenceNo` and the journey's id.
    pub async fn seed_journey(
        &self,
        pan: &str,
        station: &str,
        amount: u64,
        n: u32,
    ) -> (String, i64) {
        let reference = format!("REF-SEED-{n}");
        let pref = self
            .seed_op(Seed {
                path: vec![succeeded(&reference, Some(true), self.now_ms())],
                ..Seed::new(pan, Direction::In, station, amount, n)
            })
            .await;
        let id = self
            .journal
            .insert_journey(&self.pan_key(pan), station, &pref, self.now_ms())
            .expect("journey opens");
        (pref, id)
    }
}

/// An operation to seed (see [`Rig::seed_op`]).
pub struct Seed<'a> {
    /// The passenger.
    pub pan: &'a str,
    /// Hold or settle.
    pub direction: Direction,
    /// Where.
    pub station: &'a str,
    /// Amount.
    pub amount: u64,
    /// Makes the reference unique within a test.
    pub n: u32,
    /// Transitions from PENDING.
    pub path: Vec<Transition>,
    /// `next_attempt_at_ms` as begun (default now).
    pub next_attempt_at_ms: Option<i64>,
    /// `created_at_ms` (default now).
    pub created_at_ms: Option<i64>,
}

impl<'a> Seed<'a> {
    /// A PENDING operation, due now.
    pub fn new(pan: &'a str, direction: Direction, station: &'a str, amount: u64, n: u32) -> Self {
        Seed {
            pan,
            direction,
            station,
            amount,
            n,
            path: Vec::new(),
            next_attempt_at_ms: None,
            created_at_ms: None,
        }
    }
}

/// → SUCCEEDED with `reference`, the gate outcome `gate`.
pub fn succeeded(reference: &str, gate: Option<bool>, at_ms: i64) -> Transition {
    Transition {
        reference_no: Some(reference.into()),
        response_code: Some("2006000".into()),
        gate_opened: gate,
        ..Transition::new(OpState::Succeeded, at_ms)
    }
}

/// → UNKNOWN with the gate outcome `gate`, due at `at_ms`.
pub fn unknown(gate: Option<bool>, at_ms: i64) -> Transition {
    Transition {
        gate_opened: gate,
        reason: Some("no answer in time".into()),
        next_attempt_at_ms: Some(at_ms),
        ..Transition::new(OpState::Unknown, at_ms)
    }
}

/// → REFUND_PENDING of `amount`, due at `at_ms`.
pub fn refund_owed(amount: u64, at_ms: i64) -> Transition {
    Transition {
        refund_amount: Some(Rupiah(amount)),
        reason: Some("gate did not open: refund owed".into()),
        next_attempt_at_ms: Some(at_ms),
        ..Transition::new(OpState::RefundPending, at_ms)
    }
}

/// Lets paused time run `ms` milliseconds.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A success with `reference` as the `referenceNo`.
pub fn success(reference: &str) -> PayOutcome {
    PayOutcome::Success {
        reference_no: Some(reference.into()),
        response_code: "2006000".into(),
        amount_mismatch: None,
    }
}

/// The issuer's decline for insufficient funds.
pub fn declined() -> PayOutcome {
    PayOutcome::Declined {
        response_code: "4036014".into(),
        message: "Insufficient Funds".into(),
    }
}

/// The tap's `partnerReferenceNo` (it journaled a payment).
pub fn pref(r: &TapReport) -> String {
    r.partner_reference_no
        .clone()
        .expect("a payment was journaled")
}

/// The rig's lanes on a passenger display: a hub attached to the station, its server on
/// 127.0.0.1:`port` (0: any) with gate G1 (`in-1`, `out-1`). A restarted server's port may take
/// a moment to be free again: the bind is retried for up to 10 s.
pub struct Displayed {
    /// The station and its lanes.
    pub rig: Rig,
    /// The screens.
    pub hub: Arc<tapgate::display::DisplayHub>,
    /// The pages.
    pub server: tapgate::display::DisplayServer,
    /// Stops the server.
    pub stop: tokio::sync::watch::Sender<bool>,
}

impl Displayed {
    /// Starts it; screens go back to idle after `idle_after`.
    pub async fn start(port: u16, idle_after: Duration) -> Displayed {
        let rig = Rig::new();
        let hub = tapgate::display::DisplayHub::new(
            rig.core
                .config
                .lanes
                .iter()
                .map(|l| (l.name.clone(), l.direction)),
            idle_after,
            // The daemon's clock: a restarted daemon's ids start above the last one's.
            Arc::new(tapgate::clock::SystemClock::new(jiff::tz::TimeZone::UTC)),
        );
        assert!(rig.core.attach_display(hub.clone()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let gates = std::collections::HashMap::from([(
            "G1".to_string(),
            vec!["in-1".into(), "out-1".into()],
        )]);
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let started = std::time::Instant::now();
        let server = loop {
            match tapgate::display::DisplayServer::start(
                addr,
                hub.clone(),
                gates.clone(),
                stop_rx.clone(),
            )
            .await
            {
                Ok(s) => break s,
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    eprintln!("binding {addr}: {e}; again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("binding {addr}: {e}"),
            }
        };
        Displayed {
            rig,
            hub,
            server,
            stop,
        }
    }

    /// Stops the server and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.server.stopped().await;
    }
}
