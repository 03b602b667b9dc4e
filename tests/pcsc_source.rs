//! The PC/SC adapter of the card-source port on the real stack: a real pcscd with vsmartcard's
//! vpcd, the virtual phone, and `PcscSource` used the way the daemon uses it, through the
//! `CardSource` and `SourceControl` traits only.

#[allow(dead_code)] // the shared pcscd helper has more than this test uses
mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::pcscd::{self, Pcscd, VPCD_READER};
use tapgate::nfc::feedback::{FeedbackModel, Signal};
use tapgate::nfc::pcsc::{PcscSource, ReaderOptions, ReaderPattern};
use tapgate::nfc::source::{CardSource, SourceControl};
use tapgate::nfc::vphone::{PhoneScript, VirtualPhone};
use tapgate::nfc::CardEvent;

/// pcscd is one per machine: one test at a time starts its own.
static SERIAL: Mutex<()> = Mutex::new(());

/// The next event within `within`, `None` when the source ended or nothing came.
fn next(
    rt: &tokio::runtime::Runtime,
    source: &mut dyn CardSource,
    within: Duration,
) -> Option<CardEvent> {
    rt.block_on(async {
        tokio::time::timeout(within, source.next_event())
            .await
            .ok()
            .flatten()
    })
}

#[test]
fn a_pcsc_source_delivers_a_tap_shows_its_verdict_and_ends_when_stopped() {
    if !pcscd::tier_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Pcscd::start(&dir.path().join("pcscd.log"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (source, handle) = PcscSource::start(
        "G1",
        ReaderPattern::new(VPCD_READER),
        ReaderOptions::default(),
        FeedbackModel::Acr122u,
    )
    .unwrap();
    let mut source: Box<dyn CardSource> = Box::new(source);
    let control: Box<dyn SourceControl> = Box::new(handle);

    match next(&rt, source.as_mut(), Duration::from_secs(5)) {
        Some(CardEvent::ReaderUp { reader }) => assert_eq!(reader, VPCD_READER),
        other => panic!("expected the reader up, got {other:?}"),
    }
    let payload = "hQVDUFYwMWEaTwegAAAAVVVVVw8SNFZ4kBI0WNGRIgESNF8=";
    // Held in the field, so the ACR122U pseudo-APDU (sent on the card connection) reaches it.
    let phone = VirtualPhone::local()
        .spawn(PhoneScript::chunked(payload, &[20]).hold(Duration::from_millis(1500)))
        .unwrap();
    match next(&rt, source.as_mut(), Duration::from_secs(5)) {
        Some(CardEvent::Payload {
            reader, qr_content, ..
        }) => {
            assert_eq!(reader, VPCD_READER);
            assert_eq!(qr_content, payload);
        }
        other => panic!("expected the tap's payload, got {other:?}"),
    }
    {
        let _rt = rt.enter();
        source.show(VPCD_READER, Signal::Approved);
    }
    let report = phone.join().unwrap().unwrap();
    let last = report.apdus.last().unwrap();
    assert_eq!(
        &last[..3],
        &[0xFF, 0x00, 0x40],
        "the verdict went to the reader as the model's LED/buzzer command"
    );
    assert_eq!(report.selects(), 1, "feedback is not a second tap");

    assert!(control.is_running());
    let asked = Instant::now();
    control.stop();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "stop cancels the blocked wait: {:?}",
        asked.elapsed()
    );
    let after = Instant::now();
    assert!(
        next(&rt, source.as_mut(), Duration::from_secs(3)).is_none(),
        "a stopped source ends"
    );
    assert!(
        after.elapsed() < Duration::from_secs(1),
        "it ends at once, not by the timeout: {:?}",
        after.elapsed()
    );
    daemon.stop();
}

/// `tapgate readers --watch`, the technician's view of the same source: each tap's decoded,
/// masked report, never the payload; Ctrl-C stops the reader and exits 0.
#[test]
fn readers_watch_prints_each_tap_masked_and_stops_on_ctrl_c() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    if !pcscd::tier_available() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Pcscd::start(&dir.path().join("pcscd.log"));
    let mut watch = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["readers", "--watch", VPCD_READER])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str| -> String {
        let until = Instant::now() + Duration::from_secs(10);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(what) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("`readers --watch` printed no line with {what:?}");
    };
    wait_for("watching");
    wait_for("present");
    let payload = tapgate::cpm::build::payload(&tapgate::cpm::build::PayloadSpec::new(
        "9360000201100456781",
    ));
    let phone = VirtualPhone::local()
        .spawn(PhoneScript::chunked(&payload, &[40]))
        .unwrap();
    let line = wait_for("read in");
    phone.join().unwrap().unwrap();
    assert!(line.contains("93600002*******6781"), "{line}");
    assert!(
        !line.contains(&payload),
        "the payload itself was printed: {line}"
    );
    assert!(
        !line.contains("9360000201100456781"),
        "a whole PAN was printed: {line}"
    );

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(watch.id() as libc::pid_t, libc::SIGINT) };
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = watch.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "`readers --watch` did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    daemon.stop();
}
