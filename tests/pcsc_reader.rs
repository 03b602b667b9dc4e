//! Real-stack reader tests: a real pcscd with vsmartcard's vpcd driver, the virtual phone on
//! the vpcd socket, and the reader service under test, all on this machine.
//!
//! pcscd is one per machine, so every test takes [`SERIAL`] and starts and stops its own
//! pcscd. When the pcscd binary is missing the tests say so and pass without running (CI
//! installs it: `apt-get install pcscd vsmartcard-vpcd`).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use support::pcscd::{self, Pcscd, VPCD_READER};
use tapgate::nfc::feedback::{FeedbackError, FeedbackModel, Signal};
use tapgate::nfc::pcsc::{
    list_readers, show_feedback, spawn_reader, FeedbackSendError, ReaderHandle, ReaderOptions,
    ReaderPattern,
};
use tapgate::nfc::vphone::{Fault, PhoneReport, PhoneScript, Step, TapEnd, VirtualPhone};
use tapgate::nfc::{CardEvent, ChannelError, TapReadError};
use tokio::sync::mpsc;

static SERIAL: Mutex<()> = Mutex::new(());

/// Everything the service logs at INFO and above, for counting state-change lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let cap = Captured::default();
        let writer = cap.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(if std::env::var_os("TAPGATE_TEST_TRACE").is_some() {
                tracing::Level::TRACE
            } else {
                tracing::Level::INFO
            })
            .with_writer(move || writer.clone())
            .try_init();
        cap
    })
}

fn fixture_payload(name: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cpm-payloads.json"
    ))
    .unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["payload"].as_str())
        .unwrap()
        .to_owned()
}

fn q1() -> String {
    fixture_payload("Q1_two_records_BRI")
}

/// A pcscd, a reader service on the vpcd reader, and the lane's end of the event channel.
struct Rig {
    _serial: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    pcscd: Option<Pcscd>,
    service: Option<ReaderHandle>,
    rx: mpsc::Receiver<CardEvent>,
    rt: tokio::runtime::Runtime,
    last_phone_left: Option<Instant>,
}

impl Rig {
    /// None (and a message) when pcscd is not installed.
    fn start(pattern: &str, opts: ReaderOptions) -> Option<Rig> {
        Self::start_with(pattern, opts, true)
    }

    /// Like [`Rig::start`]; with `pcscd_first` false the service starts before pcscd does.
    fn start_with(pattern: &str, opts: ReaderOptions, pcscd_first: bool) -> Option<Rig> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !pcscd::tier_available() {
            return None;
        }
        logs().clear();
        let dir = tempfile::tempdir().unwrap();
        let pcscd = pcscd_first.then(|| Pcscd::start(&dir.path().join("pcscd.log")));
        let (tx, rx) = mpsc::channel(16);
        let service = spawn_reader(ReaderPattern::new(pattern), tx, opts).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Some(Rig {
            _serial: serial,
            dir,
            pcscd,
            service: Some(service),
            rx,
            rt,
            last_phone_left: None,
        })
    }

    fn next_event(&mut self, within: Duration) -> Option<CardEvent> {
        let rx = &mut self.rx;
        self.rt
            .block_on(async { tokio::time::timeout(within, rx.recv()).await.ok().flatten() })
    }

    fn expect_event(&mut self, within: Duration, what: &str) -> CardEvent {
        match self.next_event(within) {
            Some(e) => e,
            None => panic!(
                "no event ({what}) within {within:?}; service log:\n{}\npcscd log:\n{}",
                logs().text(),
                std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
            ),
        }
    }

    fn expect_reader_up(&mut self) {
        match self.expect_event(Duration::from_secs(5), "ReaderUp") {
            CardEvent::ReaderUp { reader } => assert_eq!(reader, VPCD_READER),
            other => panic!("expected ReaderUp, got {other:?}"),
        }
    }

    /// Taps a phone and returns the one tap event plus what the phone saw.
    ///
    /// Taps are spaced like passengers (at least 1.2 s from one phone leaving to the next
    /// arriving): vpcd drops a phone that left silently when pcscd powers the idle slot down
    /// (about 0.8 s after the read), and a phone already waiting then takes over the slot
    /// without pcscd ever reporting the removal. See hardware-notes.md, "Readers".
    fn tap(&mut self, script: PhoneScript) -> (CardEvent, PhoneReport) {
        if let Some(left) = self.last_phone_left {
            let ready = left + Duration::from_millis(1200);
            std::thread::sleep(ready.saturating_duration_since(Instant::now()));
        }
        let phone = VirtualPhone::local().spawn(script).unwrap();
        let event = self.next_event(Duration::from_secs(5));
        let report = phone.join().unwrap();
        self.last_phone_left = Some(Instant::now());
        match (event, report) {
            (Some(event), Ok(report)) => (event, report),
            (event, report) => panic!(
                "tap: event {event:?}, phone {report:?}; service log:\n{}\npcscd log:\n{}",
                logs().text(),
                std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
            ),
        }
    }

    fn pcscd(&mut self) -> &mut Pcscd {
        self.pcscd.as_mut().unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
        if let Some(mut p) = self.pcscd.take() {
            p.stop();
        }
    }
}

fn payload_of(event: &CardEvent) -> &str {
    match event {
        CardEvent::Payload {
            reader, qr_content, ..
        } => {
            assert_eq!(reader, VPCD_READER);
            qr_content
        }
        other => panic!("expected a payload, got {other:?}"),
    }
}

fn failure_of(event: &CardEvent) -> &TapReadError {
    match event {
        CardEvent::ReadFailed { error, .. } => error,
        other => panic!("expected a failed read, got {other:?}"),
    }
}

#[test]
fn two_record_phone_is_read_end_to_end() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let payload = q1();
    let (event, report) = rig.tap(PhoneScript::chunked(&payload, &[84]));
    assert_eq!(payload_of(&event), payload);
    assert_eq!(report.selects(), 1);
    let records: Vec<u8> = report
        .apdus
        .iter()
        .filter(|a| a[1] == 0xB2)
        .map(|a| a[2])
        .collect();
    assert_eq!(records, vec![1, 2], "READ RECORD 1 then 2, nothing else");
    assert!(
        !report.apdus.iter().any(|a| a[1] == 0xC0),
        "never GET RESPONSE"
    );
}

#[test]
fn single_record_phone_is_read_end_to_end() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let payload = fixture_payload("M2_bca_binary_token");
    let (event, report) = rig.tap(PhoneScript::single_record(&payload));
    assert_eq!(payload_of(&event), payload);
    assert_eq!(report.apdus.len(), 2, "SELECT and READ RECORD 1 only");
    // Three records of a longer split phone work too.
    let (event, _) = rig.tap(PhoneScript::chunked(&payload, &[40, 40]));
    assert_eq!(payload_of(&event), payload);
}

#[test]
fn wallet_not_ready_is_reported_and_the_next_tap_works() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let payload = q1();
    let (event, report) =
        rig.tap(PhoneScript::chunked(&payload, &[84]).fault(Fault::WalletNotReady));
    assert_eq!(
        failure_of(&event),
        &TapReadError::WalletNotReady { sw: 0x0000 }
    );
    assert_eq!(report.apdus.len(), 1, "nothing after the refused SELECT");

    let (event, _) = rig.tap(PhoneScript::chunked(&payload, &[84]).fault(Fault::Status {
        at: Step::ReadRecord(2),
        sw: 0x6F00,
    }));
    assert_eq!(
        failure_of(&event),
        &TapReadError::UnexpectedStatus {
            step: "READ RECORD 2".into(),
            sw: 0x6F00
        }
    );

    let (event, _) = rig.tap(PhoneScript::chunked(&payload, &[84]));
    assert_eq!(payload_of(&event), payload);
}

#[test]
fn phone_removed_mid_exchange_is_a_clean_abort() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let payload = q1();
    let (event, report) =
        rig.tap(PhoneScript::chunked(&payload, &[84]).fault(Fault::VanishAt(Step::ReadRecord(2))));
    assert_eq!(report.end, TapEnd::Vanished);
    // vpcd answers the in-flight command with zero bytes when the phone's socket closes.
    assert_eq!(
        failure_of(&event),
        &TapReadError::CardLost {
            step: "READ RECORD 2".into()
        }
    );
    // No half payload, no second event, and the reader keeps working.
    assert!(rig.next_event(Duration::from_millis(800)).is_none());
    let (event, _) = rig.tap(PhoneScript::chunked(&payload, &[84]));
    assert_eq!(payload_of(&event), payload);
}

#[test]
fn slow_phone_runs_into_the_deadline() {
    let opts = ReaderOptions {
        apdu_deadline: Duration::from_millis(400),
        ..ReaderOptions::default()
    };
    let Some(mut rig) = Rig::start(VPCD_READER, opts) else {
        return;
    };
    rig.expect_reader_up();
    let payload = q1();
    let (event, _) = rig.tap(
        PhoneScript::chunked(&payload, &[84])
            .hold(Duration::from_millis(1500))
            .fault(Fault::Delay {
                at: Step::ReadRecord(1),
                by: Duration::from_millis(800),
            }),
    );
    assert_eq!(
        failure_of(&event),
        &TapReadError::Channel(ChannelError::Timeout)
    );
}

#[test]
fn phone_held_on_the_reader_is_one_tap() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let payload = q1();
    let cpu_before = cpu_time();
    let (event, report) =
        rig.tap(PhoneScript::chunked(&payload, &[84]).hold(Duration::from_secs(3)));
    let cpu_used = cpu_time() - cpu_before;
    assert_eq!(payload_of(&event), payload);
    assert_eq!(report.end, TapEnd::Held);
    // Waiting for removal is a blocking wait too, not a poll of the phone.
    assert!(
        cpu_used < Duration::from_millis(200),
        "{cpu_used:?} of CPU while a phone sat on the reader for 3 s"
    );
    assert_eq!(report.selects(), 1, "the phone was read once in 3 s");
    assert!(
        rig.next_event(Duration::from_millis(800)).is_none(),
        "no second tap while (or after) the phone was held"
    );
    // Taken away and tapped again: a new tap.
    let (event, report) = rig.tap(PhoneScript::chunked(&payload, &[84]));
    assert_eq!(payload_of(&event), payload);
    assert_eq!(report.selects(), 1);
}

#[test]
fn pcscd_killed_and_restarted_while_the_service_runs() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let payload = q1();
    let (event, _) = rig.tap(PhoneScript::chunked(&payload, &[84]));
    assert_eq!(payload_of(&event), payload);

    logs().clear();
    rig.pcscd().kill();
    match rig.expect_event(Duration::from_secs(5), "ReaderDown") {
        CardEvent::ReaderDown { reader, .. } => assert_eq!(reader, VPCD_READER),
        other => panic!("expected ReaderDown, got {other:?}"),
    }
    // Several reconnect attempts happen while pcscd is down (backoff tops out at 1 s).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        rig.next_event(Duration::ZERO).is_none(),
        "nothing more while down"
    );
    assert_eq!(
        logs().count("pcscd unreachable"),
        1,
        "one line for the outage, not one per retry:\n{}",
        logs().text()
    );

    let log = rig.dir.path().join("pcscd.log");
    rig.pcscd = Some(Pcscd::start(&log));
    let back = Instant::now();
    let phone = VirtualPhone::local()
        .spawn(PhoneScript::chunked(&payload, &[84]))
        .unwrap();
    match rig.expect_event(Duration::from_secs(2), "ReaderUp after restart") {
        CardEvent::ReaderUp { reader } => assert_eq!(reader, VPCD_READER),
        other => panic!("expected ReaderUp, got {other:?}"),
    }
    let left = Duration::from_secs(2).saturating_sub(back.elapsed());
    let event = rig.expect_event(left, "a tap within 2 s of pcscd being back");
    assert_eq!(payload_of(&event), payload);
    eprintln!("tap read {:?} after pcscd was back", back.elapsed());
    assert!(back.elapsed() <= Duration::from_secs(2));
    phone.join().unwrap().unwrap();

    let text = logs().text();
    assert_eq!(logs().count("reader up"), 1, "{text}");
    assert_eq!(logs().count("pcscd unreachable"), 1, "{text}");
    let lines = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("INFO"));
    assert_eq!(lines.count(), 2, "down once, up once:\n{text}");
}

/// CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn lane_without_its_reader_is_reported_once_and_idles() {
    let opts = ReaderOptions {
        relist_every: Duration::from_millis(500),
        ..ReaderOptions::default()
    };
    let Some(mut rig) = Rig::start("ACR1252*PICC*", opts) else {
        return;
    };
    match rig.expect_event(Duration::from_secs(5), "ReaderDown at start") {
        CardEvent::ReaderDown { reader, .. } => assert_eq!(reader, "ACR1252*PICC*"),
        other => panic!("expected ReaderDown, got {other:?}"),
    }
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(150),
        "idle service used {used:?} of CPU in 2 s"
    );
    assert!(rig.next_event(Duration::ZERO).is_none());
    assert_eq!(logs().count("no reader matches"), 1, "{}", logs().text());
}

#[test]
fn stop_cancels_a_blocked_wait_promptly() {
    let opts = ReaderOptions {
        relist_every: Duration::from_secs(60),
        ..ReaderOptions::default()
    };
    let Some(mut rig) = Rig::start(VPCD_READER, opts) else {
        return;
    };
    rig.expect_reader_up();
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(100),
        "idle reader used {used:?} of CPU in 1 s"
    );
    let service = rig.service.take().unwrap();
    let asked = Instant::now();
    service.stop();
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "stop took {:?}: SCardCancel did not wake the wait",
        asked.elapsed()
    );
    // The lane's channel closes when the service is gone.
    assert!(rig.next_event(Duration::from_secs(1)).is_none());
}

#[test]
fn readers_are_listed_for_technicians() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    let names = list_readers().unwrap();
    assert!(names.iter().any(|n| n == VPCD_READER), "{names:?}");
    rig.pcscd().stop();
    assert_eq!(list_readers(), Err(pcsc::Error::NoService));
}

#[test]
fn service_started_before_pcscd_picks_the_reader_up_when_pcscd_starts() {
    let Some(mut rig) = Rig::start_with(VPCD_READER, ReaderOptions::default(), false) else {
        return;
    };
    match rig.expect_event(Duration::from_secs(5), "ReaderDown at start") {
        CardEvent::ReaderDown { reader, why } => {
            assert_eq!(reader, VPCD_READER);
            assert!(why.starts_with("pcscd unreachable"), "{why}");
        }
        other => panic!("expected ReaderDown, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(1500));
    let log = rig.dir.path().join("pcscd.log");
    rig.pcscd = Some(Pcscd::start(&log));
    rig.expect_reader_up();
    let payload = q1();
    let (event, _) = rig.tap(PhoneScript::chunked(&payload, &[84]));
    assert_eq!(payload_of(&event), payload);
    assert_eq!(logs().count("pcscd unreachable"), 1, "{}", logs().text());
}

#[test]
fn feedback_commands_reach_the_reader_by_the_right_path() {
    let Some(mut rig) = Rig::start(VPCD_READER, ReaderOptions::default()) else {
        return;
    };
    rig.expect_reader_up();
    // Off: nothing is opened or sent, even with no reader at all.
    show_feedback("no such reader", FeedbackModel::Off, Signal::Approved).unwrap();
    // Escape commands go through SCardControl on a direct connection; vpcd has no escape
    // support, exactly like libccid with escape commands not enabled.
    match show_feedback(VPCD_READER, FeedbackModel::Acr1252u, Signal::Declined) {
        Err(FeedbackSendError::Rejected { reader, .. }) => assert_eq!(reader, VPCD_READER),
        other => panic!("expected the escape command to be rejected, got {other:?}"),
    }
    // A pseudo-APDU travels on the card connection while the phone is in the field; a phone is
    // not a reader, so it refuses it, and the refusal is reported.
    let payload = q1();
    let phone = VirtualPhone::local()
        .spawn(PhoneScript::chunked(&payload, &[84]).hold(Duration::from_millis(1500)))
        .unwrap();
    let event = rig.expect_event(Duration::from_secs(5), "tap");
    assert_eq!(payload_of(&event), payload);
    match show_feedback(VPCD_READER, FeedbackModel::Acr122u, Signal::Approved) {
        Err(FeedbackSendError::Refused(FeedbackError::Refused(sw))) => {
            assert_eq!(sw, vec![0x6D, 0x00])
        }
        other => panic!("expected the phone to refuse the pseudo-APDU, got {other:?}"),
    }
    let report = phone.join().unwrap().unwrap();
    let last = report.apdus.last().unwrap();
    assert_eq!(&last[..3], &[0xFF, 0x00, 0x40]);
    assert_eq!(report.selects(), 1, "feedback is not a second tap");
    assert!(rig.next_event(Duration::from_millis(500)).is_none());
}
