//! `tapgate run` end to end on real parts: virtual phone → vpcd → pcscd → the daemon process
//! → simulator over loopback HTTP → SQLite journal → recording relay; systemd's notify
//! protocol on a socket of our own; pcscd killed and restarted under the running daemon;
//! SIGTERM for an orderly stop.

mod common;
mod support;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::pcscd::{self, Pcscd, VPCD_READER};
use tapgate::fare::OpState;
use tapgate::journal::{Journal, OpRow};
use tapgate::nfc::vphone::{PhoneScript, VirtualPhone};

const SARI: &str = "9360000201100456781";

/// There is one pcscd per machine: the tests of this file take turns.
static PCSCD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Daemon {
    child: Child,
    notify: UnixDatagram,
    seen: Vec<String>,
}

impl Daemon {
    fn notes_until(&mut self, want: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in msg.lines() {
                    self.seen.push(line.to_string());
                }
                if msg.lines().any(|l| l == want) {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows(path: &std::path::Path) -> Vec<OpRow> {
    Journal::open_read_only(path)
        .and_then(|j| j.export(0))
        .unwrap_or_default()
}

fn wait_for_rows(path: &std::path::Path, n: usize, within: Duration) -> Vec<OpRow> {
    let until = Instant::now() + within;
    loop {
        let r = rows(path);
        let settled = r.iter().filter(|r| r.state != OpState::Pending).count();
        if settled >= n || Instant::now() > until {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reads_phones_through_pcscd_pays_and_survives_a_pcscd_restart() {
    let _turn = PCSCD.lock().await;
    if !pcscd::tier_available() {
        return;
    }
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut pcscd = Pcscd::start(&dir.path().join("pcscd.log"));
    let metrics_port = free_port();
    let cfg = common::station_config(
        dir.path(),
        &sim.base_url(),
        "",
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replacen(
            "name = \"in-1\"\ndirection = \"in\"\n",
            &format!(
                "name = \"in-1\"\ndirection = \"in\"\ncard_source = {{ kind = \"pcsc\", reader = \"{VPCD_READER}\" }}\n"
            ),
            1,
        );
    std::fs::write(&cfg, text).unwrap();
    let journal = dir.path().join("journal.db");

    let sock_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's own PID: `exec` keeps the shell's.
    let child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_tapgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child,
        notify,
        seen: Vec::new(),
    };
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(
        d.notes_until("READY=1", Duration::from_secs(10)),
        "no READY; log:\n{}",
        log()
    );

    // Idle with no taps: no busy polling. CPU ticks (1/100 s) over 2 s of idling.
    let pid = d.child.id();
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or_default().to_string();
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = ticks();
    std::thread::sleep(Duration::from_secs(2));
    let idle = ticks() - before;
    eprintln!("daemon CPU while idle: {idle} ticks in 2 s");
    assert!(
        idle <= 10,
        "daemon used {idle}/200 ticks while idle: busy polling?"
    );

    // A good tap: paid, gate opened.
    let phone = VirtualPhone::local();
    phone
        .tap(PhoneScript::chunked(&common::tap_payload(SARI), &[84, 64]))
        .expect("phone tap");
    let r = wait_for_rows(&journal, 1, Duration::from_secs(5));
    assert_eq!(r.len(), 1, "log:\n{}", log());
    assert_eq!(r[0].state, OpState::Succeeded);
    assert_eq!(r[0].gate_opened, Some(true));
    assert_eq!(sim.ledger().len(), 1);

    // A bad payload: refused, nothing journaled, nothing paid.
    std::thread::sleep(Duration::from_millis(1300));
    phone
        .tap(PhoneScript::single_record("hQVDUFYwMQ=="))
        .expect("phone tap");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rows(&journal).len(), 1);
    assert_eq!(sim.ledger().len(), 1);

    // pcscd dies and comes back: the daemon keeps running and taps work again.
    pcscd.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "daemon died with pcscd"
    );
    let mut pcscd = Pcscd::start(&dir.path().join("pcscd2.log"));
    let back = Instant::now();
    let mut tapped = false;
    while back.elapsed() < Duration::from_secs(10) && !tapped {
        tapped = VirtualPhone::local()
            .tap(PhoneScript::chunked(
                &common::tap_payload("9360091430100531720"),
                &[84, 64],
            ))
            .is_ok()
            && wait_for_rows(&journal, 2, Duration::from_secs(3)).len() == 2;
        if !tapped {
            std::thread::sleep(Duration::from_millis(1300));
        }
    }
    assert!(tapped, "no tap after pcscd restart; log:\n{}", log());
    eprintln!(
        "first tap after pcscd restart journaled {:?} after pcscd was back",
        back.elapsed()
    );

    // Metrics count both approved taps and the refused one.
    let body = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("tapgate_taps_total{lane=\"in-1\",direction=\"in\",outcome=\"approved\"} 2"),
        "{body}"
    );
    assert!(body.contains("outcome=\"invalid_payload\"} 1"), "{body}");
    assert!(
        body.contains("tapgate_journal_operations{state=\"SUCCEEDED\"} 2"),
        "{body}"
    );

    // Orderly stop: STOPPING after READY and watchdog pings, exit 0.
    assert!(
        d.notes_until("WATCHDOG=1", Duration::from_secs(3)),
        "no watchdog ping"
    );
    let pid = i32::try_from(d.child.id()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        d.notes_until("STOPPING=1", Duration::from_secs(5)),
        "no STOPPING"
    );
    let status = d.child.wait().unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", log());
    let first = |w: &str| d.seen.iter().position(|l| l == w).unwrap();
    assert!(first("READY=1") < first("WATCHDOG=1"));
    assert!(first("WATCHDOG=1") < first("STOPPING=1"));
    let text = log();
    assert!(!text.contains(SARI), "full PAN in the daemon's log");
    assert_eq!(
        text.matches("reader missing").count(),
        1,
        "one log line per reader state change; log:\n{text}"
    );
    pcscd.stop();
    assert_eq!(sim.stats().protocol_violations(), 0);
}

fn metric(body: &str, prefix: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One running daemon, two entry lanes whose readers both see the phone (one phone held across
/// two adjacent readers: here both lanes watch the one virtual reader), round after round:
/// both lanes read each tap at the same moment, yet one hold reaches the aggregator and one
/// gate opens; the other lane says it is the same tap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_two_lanes_one_phone_one_hold() {
    let _turn = PCSCD.lock().await;
    if !pcscd::tier_available() {
        return;
    }
    const ROUNDS: usize = 6;
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut pcscd = Pcscd::start(&dir.path().join("pcscd.log"));
    let metrics_port = free_port();
    let cfg = common::station_config(
        dir.path(),
        &sim.base_url(),
        "",
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let reader = format!("card_source = {{ kind = \"pcsc\", reader = \"{VPCD_READER}\" }}\n");
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "name = \"in-1\"\ndirection = \"in\"\n",
        &format!(
            "name = \"in-1\"\ndirection = \"in\"\n{reader}relay = {{ kind = \"recording\" }}\n\n[[lane]]\nname = \"in-2\"\ndirection = \"in\"\n{reader}"
        ),
        1,
    );
    std::fs::write(&cfg, &text).unwrap();
    let journal = dir.path().join("journal.db");
    let child = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let sock = UnixDatagram::unbound().unwrap();
    let mut d = Daemon {
        child,
        notify: sock,
        seen: Vec::new(),
    };
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let metrics = || async {
        reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let up = metrics().await.unwrap_or_default();
        if metric(&up, "tapgate_reader_up{lane=\"in-1\"}") == 1
            && metric(&up, "tapgate_reader_up{lane=\"in-2\"}") == 1
        {
            break;
        }
        assert!(Instant::now() < until, "readers not up; log:\n{}", log());
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "daemon exited:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let phone = VirtualPhone::local();
    let taps = |body: &str, outcome: &str| {
        metric(
            body,
            &format!("tapgate_taps_total{{lane=\"in-1\",direction=\"in\",outcome=\"{outcome}\"}}"),
        ) + metric(
            body,
            &format!("tapgate_taps_total{{lane=\"in-2\",direction=\"in\",outcome=\"{outcome}\"}}"),
        )
    };
    for i in 0..ROUNDS {
        if i > 0 {
            // As between the taps of the test above: the readers must see the phone leave.
            std::thread::sleep(Duration::from_millis(1300));
        }
        let pan = format!("93600914{:011}", 40_000_000 + i);
        let before = sim.ledger().len();
        let decided = |b: &str| {
            metric(b, "tapgate_taps_total{lane=\"in-1\"")
                + metric(b, "tapgate_taps_total{lane=\"in-2\"")
        };
        let decided_before = decided(&metrics().await.unwrap_or_default());
        phone
            .tap(PhoneScript::chunked(&common::tap_payload(&pan), &[84, 64]))
            .expect("phone tap");
        // Both lanes decide: one pays, the other finds it in flight or just done.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let b = metrics().await.unwrap_or_default();
            if decided(&b) >= decided_before + 2 {
                break;
            }
            assert!(
                Instant::now() < until,
                "round {i}: both lanes did not decide; metrics:\n{b}\nlog:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            sim.ledger().len(),
            before + 1,
            "round {i}: one hold for one phone; log:\n{}",
            log()
        );
    }
    let body = metrics().await.unwrap_or_default();
    let approved = taps(&body, "approved");
    let duplicates = taps(&body, "duplicate");
    let rows = wait_for_rows(&journal, ROUNDS, Duration::from_secs(5));
    println!(
        "one daemon, two lanes on one reader: {ROUNDS} rounds, {} tap decisions ({approved} \
         approved, {duplicates} same-tap), {} payment requests, {} holds at the ledger, {} \
         journal rows",
        approved + duplicates,
        sim.stats().payment_requests,
        sim.ledger().len(),
        rows.len()
    );
    assert_eq!(
        sim.stats().payment_requests,
        ROUNDS as u64,
        "one payment request per phone tap"
    );
    assert_eq!(approved, ROUNDS as u64, "{body}");
    assert_eq!(duplicates, ROUNDS as u64, "{body}");
    assert_eq!(sim.ledger().len(), ROUNDS);
    assert_eq!(rows.len(), ROUNDS);
    assert!(rows
        .iter()
        .all(|r| r.state == OpState::Succeeded && r.gate_opened == Some(true)));
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &rows).is_empty());
    let pid = i32::try_from(d.child.id()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let _ = d.child.wait();
    d.seen.clear();
    pcscd.stop();
}
