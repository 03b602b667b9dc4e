//! Storage faults with real storage: the journal on a small tmpfs that a filler file makes
//! really full, and on a read-only bind mount. No tap may be charged without a durable journal
//! row, and taps work again by themselves once storage does.
//!
//! Needs root with CAP_SYS_ADMIN (mount); fails without it unless `TAPGATE_SKIP_MOUNT=1`. Every mount is undone by a
//! guard, even when an assertion fails.
//!
//! How "full" is made real: a tmpfs has no page cache of its own to absorb writes, and the
//! filler takes every free block, so any write that needs one more block fails with ENOSPC. A
//! journal write always needs new blocks: in WAL mode a commit appends whole 4 KiB page frames
//! (a new operation touches the `fare_ops` page, its indexes and the `events` page) to the
//! `-wal` file, which only grows until a checkpoint, and no checkpoint runs while another
//! connection keeps the journal open. Overwriting old frames in place (what would let a commit
//! through on a full disk) needs a finished checkpoint first; none happens here.

mod common;

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tapgate::config::Config;
use tapgate::daemon::lane::Lane;
use tapgate::daemon::station_from_config;
use tapgate::fare::policy::TapOutcome;
use tapgate::fare::OpState;
use tapgate::journal::{Journal, OpRow};
use tapgate::relay::RecordingRelay;

const SARI: &str = "9360000201100456781";
const RINA: &str = "9360001417451180859";
const DEWI: &str = "9360091530271057414";
const BUDI: &str = "9360000211219862952";

/// A mount made for one test, undone on drop (lazily, so a file still open cannot keep it).
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` at `at`; `None` when this process may not mount (not root, or no
    /// CAP_SYS_ADMIN).
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tapgate-test",
            ])
            .arg(at)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Root without CAP_SYS_ADMIN (an unprivileged container) cannot mount either.
        if !out.status.success() && err.contains("ermission denied") {
            return None;
        }
        assert!(
            out.status.success(),
            "mount tmpfs at {}: {err}",
            at.display()
        );
        Some(Mount(at.to_path_buf()))
    }

    /// A second view of `src` at `at`, read-only (remounting a bind changes only this view).
    fn read_only_bind(src: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        run(
            "mount",
            &["--bind".as_ref(), src.as_os_str(), at.as_os_str()],
        );
        let m = Mount(at.to_path_buf());
        m.remount("remount,bind,ro");
        m
    }

    fn remount(&self, opts: &str) {
        run("mount", &["-o".as_ref(), opts.as_ref(), self.0.as_os_str()]);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `cmd args...`, failing the test with its stderr if it fails.
fn run(cmd: &str, args: &[&OsStr]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Called when a tmpfs cannot be mounted: the tier fails, unless `TAPGATE_SKIP_MOUNT=1` asks to
/// skip it on purpose (printed).
fn skipped() {
    assert!(
        std::env::var("TAPGATE_SKIP_MOUNT").as_deref() == Ok("1"),
        "cannot mount a tmpfs: the storage-fault tier needs root with CAP_SYS_ADMIN \
         (or set TAPGATE_SKIP_MOUNT=1 to skip this tier on purpose)"
    );
    eprintln!("TAPGATE_SKIP_MOUNT=1: storage-fault tier skipped on purpose");
}

/// Takes every free block of the filesystem holding `dir` with one file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [0xA5u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    f.sync_all().ok();
    let free = statvfs_free(dir);
    assert_eq!(free, 0, "the filesystem still has {free} free bytes");
    path
}

fn statvfs_free(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail * s.f_frsize
}

/// The test's station config with its journal at `journal`.
fn config_with_journal(dir: &Path, base_url: &str, journal: &Path) -> PathBuf {
    let cfg = common::station_config(dir, base_url, "", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("{:?}", dir.join("journal.db")),
        &format!("{journal:?}"),
    );
    let text = text.replace(
        "[journal]\n",
        &format!(
            "[journal]\npassenger_key_file = {:?}\n",
            dir.join("passenger.key")
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

struct TapRun {
    code: i32,
    report: Option<Value>,
    stderr: String,
}

/// `tapgate tap` as a real process (off the runtime's threads: the simulator runs on them).
async fn tap(config: &Path, lane: &str, pan: &str) -> TapRun {
    let config = config.to_path_buf();
    let (lane, payload) = (lane.to_owned(), common::tap_payload(pan));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tapgate"))
            .args(["tap", "--config"])
            .arg(&config)
            .args(["--lane", &lane, &payload])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    TapRun {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(stdout.trim()).ok(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn rows(journal: &Path) -> Vec<OpRow> {
    Journal::open_read_only(journal).unwrap().export(0).unwrap()
}

/// The rows, read through a read-write handle that, as the last one to close, checkpoints
/// and removes the `-wal` and `-shm` files as a stopped daemon would (a read-only handle
/// leaves them behind).
fn rows_closing(journal: &Path) -> Vec<OpRow> {
    Journal::open(journal).unwrap().export(0).unwrap()
}

fn shm(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push("-shm");
    PathBuf::from(p)
}

fn assert_approved(t: &TapRun) -> String {
    let v = t
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no report: {}", t.stderr));
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert_eq!(v["outcome"], "approved", "{v}");
    assert_eq!(v["opened"], true, "{v}");
    v["partnerReferenceNo"].as_str().unwrap().to_owned()
}

/// The daemon's situation through `tapgate tap`: the journal is already open elsewhere (here a
/// reader, as the daemon or `tapgate journal` holds it), so the tap opens it fine and the
/// first write fails. The lane refuses the tap before any byte goes to the aggregator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_taps_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mount) = Mount::tmpfs(&mnt, "1m") else {
        return skipped();
    };
    let sim = common::start_sim().await;
    let journal = mnt.join("journal.db");
    let cfg = config_with_journal(dir.path(), &sim.base_url(), &journal);

    let sari_in = assert_approved(&tap(&cfg, "in-1", SARI).await);
    assert_approved(&tap(&cfg, "in-1", RINA).await);
    assert_approved(&tap(&cfg, "out-1", SARI).await);
    let holder = Journal::open_read_only(&journal).unwrap();
    let before = rows(&journal);
    assert_eq!(before.len(), 3);

    let filler = fill(&mnt);
    let ledger_before = sim.ledger();
    let t = tap(&cfg, "in-1", DEWI).await;
    let v = t
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no report: {}", t.stderr));
    assert_eq!(v["outcome"], "journal_unavailable", "{v}");
    assert_eq!(v["opened"], false);
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("journal unavailable") && msg.contains("disk full"),
        "says what is wrong: {msg}"
    );
    assert!(
        v.get("partnerReferenceNo").is_none(),
        "no payment was made: {v}"
    );
    assert_eq!(
        sim.ledger(),
        ledger_before,
        "no money moves without a record"
    );
    assert_eq!(sim.stats().protocol_violations(), 0);
    // A second tap meanwhile: refused the same way, still nothing sent.
    let t = tap(&cfg, "out-1", RINA).await;
    assert_eq!(t.report.as_ref().unwrap()["outcome"], "journal_unavailable");
    assert_eq!(sim.ledger(), ledger_before);

    // Every earlier row intact, the file sound.
    assert_eq!(rows(&journal), before);
    assert!(holder.quick_check().unwrap().is_empty());

    std::fs::remove_file(&filler).unwrap();
    let dewi = assert_approved(&tap(&cfg, "in-1", DEWI).await);
    let after = rows(&journal);
    assert_eq!(after.len(), 4);
    assert_eq!(&after[..3], &before[..]);
    assert_eq!(after[3].partner_reference_no, dewi);
    assert_eq!(after[3].state, OpState::Succeeded);
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &after).is_empty());
    assert!(after.iter().any(|r| r.partner_reference_no == sari_in));
    drop(holder);
}

/// Nothing else holds the journal open: a fresh process cannot even map the journal's shared
/// memory on a full disk, so `tapgate tap` stops before the lane, with the journal named in
/// the error. Still no money moves, and the next tap after freeing space works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_at_open_stops_before_any_payment() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mount) = Mount::tmpfs(&mnt, "1m") else {
        return skipped();
    };
    let sim = common::start_sim().await;
    let journal = mnt.join("journal.db");
    let cfg = config_with_journal(dir.path(), &sim.base_url(), &journal);
    assert_approved(&tap(&cfg, "in-1", SARI).await);
    let before = rows_closing(&journal);
    assert!(
        !shm(&journal).exists(),
        "precondition: no shared memory file left"
    );

    let filler = fill(&mnt);
    let t = tap(&cfg, "in-1", RINA).await;
    assert_eq!(t.code, 1, "{}", t.stderr);
    // The decision is still printed: refused, gate shut, the journal named with its fault.
    let report = t.report.as_ref().expect("a decision");
    assert_eq!(report["outcome"], "journal_unavailable");
    assert_eq!(report["opened"], false);
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(journal.to_str().unwrap()) && message.contains("I/O error"),
        "{}",
        message
    );
    assert_eq!(sim.ledger().len(), 1, "nothing sent");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(rows(&journal), before);
    assert_approved(&tap(&cfg, "in-1", RINA).await);
    assert_eq!(sim.ledger().len(), 2);
}

/// The daemon itself: one station, one journal handle for its whole life. While the disk is
/// full every tap is refused with the gate shut; once space returns the very next tap is
/// journaled and paid, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_lane_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mount) = Mount::tmpfs(&mnt, "1m") else {
        return skipped();
    };
    let sim = common::start_sim().await;
    let journal = mnt.join("journal.db");
    let cfg_path = config_with_journal(dir.path(), &sim.base_url(), &journal);
    let cfg = Config::load(&cfg_path).unwrap();
    let station = station_from_config(cfg.clone(), &cfg_path).unwrap();
    let relay = RecordingRelay::new();
    let lane = Lane::new(
        cfg.lanes[0].clone(),
        station.clone(),
        Arc::new(relay.clone()),
    );

    let ok = lane.handle_payload(&common::tap_payload(SARI), 0).await;
    assert_eq!(ok.outcome, TapOutcome::Approved, "{}", ok.message);
    let before = rows(&journal);

    let filler = fill(&mnt);
    for pan in [RINA, DEWI, BUDI] {
        let r = lane.handle_payload(&common::tap_payload(pan), 0).await;
        assert_eq!(r.outcome, TapOutcome::JournalUnavailable, "{}", r.message);
        assert!(!r.opened);
        assert!(r.partner_reference_no.is_none());
    }
    assert_eq!(relay.opens(), 1, "the gate stayed shut");
    assert_eq!(sim.ledger().len(), 1, "no money moved");
    assert_eq!(rows(&journal), before);

    std::fs::remove_file(&filler).unwrap();
    let r = lane.handle_payload(&common::tap_payload(RINA), 0).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    assert_eq!(relay.opens(), 2);
    station.drain().await;
    let after = rows(&journal);
    assert_eq!(after.len(), 2);
    assert!(tapgate::cmd::audit::compare_with_journal(&sim.ledger(), &after).is_empty());
}

/// A read-only journal (here a read-only bind mount of its folder: root ignores file modes):
/// taps refused through the read-only view, nothing paid; the writable view works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_journal_refuses_taps() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mount) = Mount::tmpfs(&mnt, "4m") else {
        return skipped();
    };
    let sim = common::start_sim().await;
    let rw_dir = dir.path().join("rw");
    std::fs::create_dir_all(&rw_dir).unwrap();
    let rw_cfg = config_with_journal(&rw_dir, &sim.base_url(), &mnt.join("journal.db"));
    let journal = mnt.join("journal.db");
    assert_approved(&tap(&rw_cfg, "in-1", SARI).await);
    let before = rows_closing(&journal);

    let ro = dir.path().join("ro");
    let ro_mount = Mount::read_only_bind(&mnt, &ro);
    let ro_dir = dir.path().join("cfg-ro");
    std::fs::create_dir_all(&ro_dir).unwrap();
    let ro_cfg = config_with_journal(&ro_dir, &sim.base_url(), &ro.join("journal.db"));
    // Same passenger key, so both views see the same passengers.
    std::fs::copy(rw_dir.join("passenger.key"), ro_dir.join("passenger.key")).unwrap();

    // Alone, a fresh process cannot create the journal's shared-memory file on a read-only
    // filesystem: it stops at open, naming the journal.
    assert!(
        !shm(&journal).exists(),
        "precondition: no shared memory file left"
    );
    let t = tap(&ro_cfg, "in-1", RINA).await;
    assert_eq!(t.code, 1, "{}", t.stderr);
    let report = t.report.as_ref().expect("a decision");
    assert_eq!(report["outcome"], "journal_unavailable");
    assert_eq!(report["opened"], false);
    assert!(
        report["message"]
            .as_str()
            .unwrap_or_default()
            .contains(ro.join("journal.db").to_str().unwrap()),
        "{report}"
    );
    assert_eq!(sim.ledger().len(), 1, "nothing sent");

    // With the journal open elsewhere (its -shm exists), the read-only view opens and the
    // first write is refused by the lane.
    let holder = Journal::open_read_only(&journal).unwrap();
    let t = tap(&ro_cfg, "in-1", RINA).await;
    let v = t
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("no report: {}", t.stderr));
    assert_eq!(v["outcome"], "journal_unavailable", "{v}");
    assert_eq!(v["opened"], false);
    assert!(v["message"].as_str().unwrap().contains("read-only"), "{v}");
    assert_eq!(sim.ledger().len(), 1, "nothing sent");
    drop(holder);
    assert_eq!(rows(&journal), before);

    // Writable again: the same config taps.
    drop(ro_mount);
    std::fs::remove_dir(&ro).unwrap();
    let _rw_again = Mount::read_only_bind(&mnt, &ro);
    _rw_again.remount("remount,bind,rw");
    assert_approved(&tap(&ro_cfg, "in-1", RINA).await);
    assert_eq!(sim.ledger().len(), 2);
}

/// A daemon started while its journal's filesystem is read-only must not come up with a
/// journal that stays read-only after the filesystem is writable again: either it refuses to
/// start (saying why), or its lane takes taps again once storage does.
///
/// SQLite falls back to read-only silently (a read-write open of a file on a read-only
/// filesystem whose `-shm` exists succeeds read-only); `Journal::open` refuses that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_started_on_a_read_only_journal_recovers_or_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mount) = Mount::tmpfs(&mnt, "4m") else {
        return skipped();
    };
    let sim = common::start_sim().await;
    let journal = mnt.join("journal.db");
    let rw_cfg = config_with_journal(dir.path(), &sim.base_url(), &journal);
    assert_approved(&tap(&rw_cfg, "in-1", SARI).await);
    // Keeps the -shm file, as a crash or a running `tapgate journal` would.
    let holder = Journal::open_read_only(&journal).unwrap();
    let ro = dir.path().join("ro");
    let ro_mount = Mount::read_only_bind(&mnt, &ro);
    let cfg_dir = dir.path().join("cfg-ro");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let ro_cfg = config_with_journal(&cfg_dir, &sim.base_url(), &ro.join("journal.db"));
    let cfg = Config::load(&ro_cfg).unwrap();
    let station = match station_from_config(cfg.clone(), &ro_cfg) {
        Err(e) => {
            assert!(e.to_string().contains("read-only"), "{e}");
            return;
        }
        Ok(s) => s,
    };
    let lane = Lane::new(
        cfg.lanes[0].clone(),
        station.clone(),
        Arc::new(RecordingRelay::new()),
    );
    let r = lane.handle_payload(&common::tap_payload(RINA), 0).await;
    assert_eq!(r.outcome, TapOutcome::JournalUnavailable, "{}", r.message);
    assert_eq!(sim.ledger().len(), 1);

    ro_mount.remount("remount,bind,rw");
    let r = lane.handle_payload(&common::tap_payload(DEWI), 0).await;
    assert_eq!(r.outcome, TapOutcome::Approved, "{}", r.message);
    drop(holder);
}
