//! Helpers for the line tier (tests/line_journeys.rs): three stations writing their own
//! configs and journals against one simulator and one PostgreSQL, random passengers, the real
//! `tapgate tap` and `tapgate reconcile` processes, and the checks over the aggregator's
//! per-passenger ledger, the line tables and the station journals.
//!
//! The expected fares come from the `[tariff]` the stations were given, read back with the
//! `toml` crate: nothing here asks tapgate what a fare should be.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapgate::sim::SimHandle;

use crate::common::{self, SplitMix};
use crate::pg::PgCluster;

/// The three stations of the line under test, all in the demo's matrix. Chosen so that every
/// pair has its own fare and none is the unknown-entry (maximum) fare: an exit charged by the
/// wrong rule cannot pass for the right one.
pub const LINE: [&str; 3] = ["FTM", "BLM", "IST"];

/// Lane names written by `common::station_config` (config/demo.toml).
pub const IN_LANE: &str = "in-1";
/// See [`IN_LANE`].
pub const OUT_LANE: &str = "out-1";

/// Longest any one tapgate process may run before the test calls it hung.
const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// How a station finds passengers' journeys.
#[derive(Clone, Debug)]
pub enum Store {
    /// Today's behaviour: the station's own journal only (no `[journeys]` section).
    Local,
    /// The line's PostgreSQL.
    Postgres {
        /// `PgCluster::url(db)`.
        url: String,
        /// `PgCluster::password_file()`.
        password_file: PathBuf,
    },
}

impl Store {
    /// The line's database `db` on cluster `c`.
    pub fn postgres(c: &PgCluster, db: &str) -> Store {
        Store::Postgres {
            url: c.url(db),
            password_file: c.password_file(),
        }
    }

    /// The `[journeys]` section for this store (empty for the local default).
    pub fn section(&self) -> String {
        match self {
            Store::Local => String::new(),
            Store::Postgres { url, password_file } => format!(
                "[journeys]\nstore = \"postgres\"\nurl = {url:?}\npassword_file = {:?}\n\
                 lookup_timeout_ms = {}\n",
                password_file.display().to_string(),
                lookup_timeout_ms()
            ),
        }
    }
}

/// The exit lookup's budget: 200 ms, a loaded 2-core machine's answer to the default 50
/// (`TAPGATE_LINE_LOOKUP_MS` changes it).
fn lookup_timeout_ms() -> u64 {
    std::env::var("TAPGATE_LINE_LOOKUP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// One station: its own directory (config, secrets, journal), same aggregator, same line.
pub struct Station {
    /// `[station] id`.
    pub id: &'static str,
    /// The station's directory (journal at `journal.db`).
    pub dir: PathBuf,
    /// Its `station.toml`.
    pub config: PathBuf,
}

/// A line of stations sharing one simulator, one passenger key and one store.
pub struct Line {
    /// Holds every station's directory and the shared key.
    _root: tempfile::TempDir,
    /// The stations, in [`LINE`] order.
    pub stations: Vec<Station>,
    /// The fare matrix the stations were given.
    pub tariff: Tariff,
}

/// Writes a 32-byte passenger key the way `PassengerKey::load_or_create` would have (raw
/// bytes, mode 0600), so that every station hashes PANs alike.
pub fn write_passenger_key(path: &Path, seed: u64) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut rng = SplitMix(seed);
    let key: Vec<u8> = (0..4).flat_map(|_| rng.next().to_le_bytes()).collect();
    assert_eq!(key.len(), 32);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the passenger key file");
    f.write_all(&key).expect("write the passenger key");
    f.sync_all().expect("sync the passenger key");
}

/// `common::station_config` (the demo station, pointed at the simulator, journal in `dir`),
/// renamed to station `id`, with the shared passenger key and `store`'s `[journeys]` section.
pub fn station_config(
    dir: &Path,
    id: &str,
    base_url: &str,
    key_file: &Path,
    store: &Store,
) -> PathBuf {
    let extra = format!("{}\n{}", common::FAST_RECONCILER, store.section());
    let path = common::station_config(dir, base_url, "", &extra);
    let text = std::fs::read_to_string(&path).expect("read the written config");
    let renamed = text
        .replacen(
            "id = \"BLM\"\nname = \"Blok M\"\n",
            &format!("id = \"{id}\"\nname = \"Station {id}\"\n"),
            1,
        )
        .replacen(
            "[journal]\n",
            &format!(
                "[journal]\npassenger_key_file = {:?}\n",
                key_file.display().to_string()
            ),
            1,
        );
    // The demo config changed under us: fail here rather than run three BLMs.
    assert!(
        renamed.contains(&format!("id = \"{id}\"\n")) && renamed.contains("passenger_key_file = "),
        "config/demo.toml no longer has the [station] and [journal] lines this test edits:\n{text}"
    );
    std::fs::write(&path, renamed).expect("write the station config");
    path
}

impl Line {
    /// The three stations of [`LINE`] against `sim`, sharing one new passenger key and `store`.
    pub fn new(sim: &SimHandle, store: &Store, seed: u64) -> Line {
        let root = tempfile::Builder::new()
            .prefix("tapgate-line-")
            .tempdir()
            .expect("temp dir");
        let key_file = root.path().join("line-passenger.key");
        write_passenger_key(&key_file, seed);
        let stations: Vec<Station> = LINE
            .iter()
            .map(|id| {
                let dir = root.path().join(id);
                std::fs::create_dir(&dir).expect("station dir");
                let config = station_config(&dir, id, &sim.base_url(), &key_file, store);
                Station { id, dir, config }
            })
            .collect();
        let tariff = Tariff::from_config(&stations[0].config);
        for s in &stations[1..] {
            assert_eq!(
                Tariff::from_config(&s.config),
                tariff,
                "every station has the line's matrix"
            );
        }
        Line {
            _root: root,
            stations,
            tariff,
        }
    }

    /// The matrix fare from station `entry` to station `exit` (indices in [`LINE`]).
    pub fn fare(&self, entry: usize, exit: usize) -> u64 {
        self.tariff.fare(LINE[entry], LINE[exit])
    }

    /// `tapgate reconcile` at every station, `rounds` times over. One round in station order
    /// is not always enough once exits ran without knowing their entry: the exit station
    /// converges once the entry's station has pushed it, and the entry station releases its
    /// hold once the exit's close has been pushed.
    pub fn reconcile(&self, rounds: usize) -> Duration {
        let t = Instant::now();
        for _ in 0..rounds {
            for s in &self.stations {
                common::reconcile(&s.config);
            }
        }
        t.elapsed()
    }
}

/// The `[tariff]` matrix, read from a station's config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tariff {
    stations: Vec<String>,
    fares: Vec<Vec<u64>>,
}

impl Tariff {
    /// Reads `[tariff] stations` and `fares` from `config`.
    pub fn from_config(config: &Path) -> Tariff {
        let text = std::fs::read_to_string(config).expect("read config");
        let doc: toml::Value = toml::from_str(&text).expect("config is TOML");
        let t = &doc["tariff"];
        assert_eq!(t["kind"].as_str(), Some("matrix"), "a matrix tariff");
        let stations: Vec<String> = t["stations"]
            .as_array()
            .expect("tariff.stations")
            .iter()
            .map(|s| s.as_str().expect("station id").to_string())
            .collect();
        let fares: Vec<Vec<u64>> = t["fares"]
            .as_array()
            .expect("tariff.fares")
            .iter()
            .map(|row| {
                row.as_array()
                    .expect("a row of fares")
                    .iter()
                    .map(|f| u64::try_from(f.as_integer().expect("a fare")).expect("fare >= 0"))
                    .collect()
            })
            .collect();
        assert!(fares.iter().all(|r| r.len() == stations.len()));
        Tariff { stations, fares }
    }

    /// The fare from `entry` to `exit`.
    pub fn fare(&self, entry: &str, exit: &str) -> u64 {
        let i = |s: &str| {
            self.stations
                .iter()
                .position(|x| x == s)
                .unwrap_or_else(|| panic!("{s} is not in the matrix"))
        };
        self.fares[i(entry)][i(exit)]
    }

    /// The largest fare (the unknown-entry charge).
    pub fn max(&self) -> u64 {
        self.fares.iter().flatten().copied().max().unwrap_or(0)
    }
}

/// Issuers (NNS) the tests use; all in tapgate's issuer table.
const NNS: [&str; 6] = [
    "93600002", "93600008", "93600009", "93600014", "93600912", "93600914",
];

/// Random, distinct, Luhn-valid 19-digit QRIS PANs whose masked forms (first 8 + last 4, what
/// the aggregator's ledger shows) are distinct too, so that the ledger tells passengers apart.
pub struct Pans {
    rng: SplitMix,
    masked: HashSet<String>,
}

impl Pans {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Pans {
        Pans {
            rng: SplitMix(seed),
            masked: HashSet::new(),
        }
    }

    /// The next PAN.
    pub fn next_pan(&mut self) -> String {
        loop {
            let mut pan = NNS[self.rng.below(NNS.len())].to_string();
            for _ in 0..10 {
                pan.push(char::from(b'0' + self.rng.below(10) as u8));
            }
            pan.push(luhn_digit(&pan));
            assert_eq!(pan.len(), 19);
            if self.masked.insert(mask(&pan)) {
                return pan;
            }
        }
    }
}

/// The Luhn check digit for `digits`.
fn luhn_digit(digits: &str) -> char {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// First 8 and last 4 digits, the rest `*` (as tapgate and the simulator mask).
pub fn mask(pan: &str) -> String {
    let n = pan.len();
    pan.chars()
        .enumerate()
        .map(|(i, c)| if i < 8 || i >= n - 4 { c } else { '*' })
        .collect()
}

/// Direction of a tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Tap-in at [`IN_LANE`].
    In,
    /// Tap-out at [`OUT_LANE`].
    Out,
}

impl Dir {
    fn lane(self) -> &'static str {
        match self {
            Dir::In => IN_LANE,
            Dir::Out => OUT_LANE,
        }
    }
}

/// What one `tapgate tap` process printed.
#[derive(Clone, Debug)]
pub struct Tap {
    /// Exit code (`-1` when killed).
    pub code: i32,
    /// The JSON report (Null when it printed none).
    pub report: Value,
    /// Its stderr (logs).
    pub stderr: String,
    /// Whether the test SIGKILLed it while it still ran.
    pub killed: bool,
}

impl Tap {
    /// `outcome` of the report ("approved", "duplicate", ...), or "" without a report.
    pub fn outcome(&self) -> &str {
        self.report["outcome"].as_str().unwrap_or("")
    }

    /// Whether the tap was paid and the gate opened.
    pub fn approved(&self) -> bool {
        self.outcome() == "approved" && self.report["opened"] == true
    }

    /// The payment's `partnerReferenceNo`.
    pub fn reference(&self) -> Option<String> {
        self.report["partnerReferenceNo"]
            .as_str()
            .map(str::to_owned)
    }

    /// The amount held or charged.
    pub fn amount(&self) -> Option<u64> {
        self.report["amount"].as_u64()
    }

    /// How the exit fare was found.
    pub fn fare_rule(&self) -> &str {
        self.report["fare_rule"].as_str().unwrap_or("")
    }
}

impl std::fmt::Display for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} killed {} report {}\nstderr:\n{}",
            self.code, self.killed, self.report, self.stderr
        )
    }
}

/// A `tapgate tap` process at `station`, started, with stdout and stderr piped.
pub fn spawn_tap(station: &Station, dir: Dir, pan: &str) -> Child {
    common::tap_command(&station.config, dir.lane(), &common::tap_payload(pan))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tapgate tap")
}

/// When to SIGKILL a tap process.
#[derive(Clone, Copy, Debug)]
pub enum Kill {
    /// Never: it runs to its end.
    Never,
    /// This long after it printed its report (the tap decided, the gate opened), while it
    /// pushes its outbox to the line.
    AfterReport(Duration),
}

/// Runs one tap to its end (or to `kill`), returns what it printed. Panics when it runs longer
/// than [`PROCESS_DEADLINE`] (a hung tap is a failure, not a slow pass).
pub fn tap(station: &Station, dir: Dir, pan: &str, kill: Kill) -> Tap {
    finish(spawn_tap(station, dir, pan), kill)
}

/// Waits for `child` as [`tap`] does.
pub fn finish(mut child: Child, kill: Kill) -> Tap {
    let started = Instant::now();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // The first line is the report; it comes before the process pushes its outbox and exits.
    let (line_tx, line_rx) = mpsc::channel();
    let out_reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut first = String::new();
        let _ = r.read_line(&mut first);
        let _ = line_tx.send(first.clone());
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        first + &rest
    });
    let mut killed = false;
    if let Kill::AfterReport(delay) = kill {
        if line_rx.recv_timeout(PROCESS_DEADLINE).is_ok() {
            std::thread::sleep(delay);
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                killed = true;
            }
        }
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for tapgate") {
            break s;
        }
        if started.elapsed() > PROCESS_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tapgate tap still running after {PROCESS_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    let first = stdout.lines().next().unwrap_or("").trim().to_string();
    let report = if first.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&first).unwrap_or_else(|e| {
            panic!("tapgate tap printed no JSON report ({e}): {stdout}\n{stderr}")
        })
    };
    Tap {
        code: status.code().unwrap_or(-1),
        report,
        stderr,
        killed,
    }
}

/// Starts `tapgate reconcile` at `station` and SIGKILLs it after `delay` if it still runs;
/// returns whether it was killed.
pub fn reconcile_killed_after(station: &Station, delay: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["reconcile", "--max-seconds", "10", "--config"])
        .arg(&station.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tapgate reconcile");
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// One passenger's trip: where they tapped in and out, and what each tap printed.
#[derive(Clone, Debug)]
pub struct Journey {
    /// The passenger's PAN (never printed: only [`Journey::masked`]).
    pub pan: String,
    /// Entry station (index in [`LINE`]).
    pub entry: usize,
    /// Exit station.
    pub exit: usize,
    /// The tap-in.
    pub tap_in: Option<Tap>,
    /// The tap-out.
    pub tap_out: Option<Tap>,
}

impl Journey {
    /// The masked PAN (the ledger's passenger).
    pub fn masked(&self) -> String {
        mask(&self.pan)
    }

    /// The tap-in's `partnerReferenceNo` (the journey's key on the line).
    pub fn in_ref(&self) -> Option<String> {
        self.tap_in.as_ref().and_then(Tap::reference)
    }
}

/// `n` journeys between random stations of [`LINE`] (same-station trips included), each by a
/// new passenger.
pub fn random_journeys(n: usize, seed: u64) -> Vec<Journey> {
    let mut rng = SplitMix(seed);
    let mut pans = Pans::new(seed ^ 0x5EED);
    (0..n)
        .map(|_| Journey {
            pan: pans.next_pan(),
            entry: rng.below(LINE.len()),
            exit: rng.below(LINE.len()),
            tap_in: None,
            tap_out: None,
        })
        .collect()
}

/// Runs `work` over `items` on `threads` threads, each item on one thread, in any order; a
/// panic in one fails the whole run.
pub fn parallel<T: Send>(items: &mut [T], threads: usize, work: impl Fn(&mut T) + Sync) {
    let queue = std::sync::Mutex::new(items.iter_mut());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                match next {
                    Some(item) => work(item),
                    None => break,
                }
            });
        }
    });
}

/// What the aggregator says one passenger paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paid {
    /// First 8 + last 4 PAN digits.
    pub masked_pan: String,
    /// Charges minus refunds (holds not counted), rupiah.
    pub net_charged: u64,
    /// Rupiah in holds still open.
    pub held: u64,
    /// Holds still open.
    pub holds_open: u64,
}

/// The simulator's per-passenger summary, by masked PAN. The one place that names the
/// simulator's API: a rename there is a one-line fix here.
pub fn paid_by_passenger(sim: &SimHandle) -> HashMap<String, Paid> {
    sim.passengers()
        .passengers
        .into_iter()
        .map(|p| {
            let paid = Paid {
                masked_pan: p.masked_pan.to_string(),
                net_charged: num(p.net_charged),
                held: num(p.held),
                holds_open: num(p.holds_open),
            };
            (paid.masked_pan.clone(), paid)
        })
        .collect()
}

fn num<T: TryInto<u64>>(x: T) -> u64 {
    x.try_into()
        .unwrap_or_else(|_| panic!("the ledger reports a negative amount or count"))
}

/// Checks every journey's net charge against the matrix fare and that no hold is left open
/// anywhere; `only` limits the per-passenger check to some journeys (all when `None`).
/// Returns the number of passengers checked.
pub fn check_money(
    line: &Line,
    sim: &SimHandle,
    journeys: &[Journey],
    only: Option<&HashSet<String>>,
) -> usize {
    let paid = paid_by_passenger(sim);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for j in journeys {
        let Some(in_ref) = j.in_ref() else { continue };
        if only.is_some_and(|o| !o.contains(&in_ref)) {
            continue;
        }
        checked += 1;
        let want = line.fare(j.entry, j.exit);
        match paid.get(&j.masked()) {
            Some(p) if p.net_charged == want && p.held == 0 && p.holds_open == 0 => {}
            got => wrong.push(format!(
                "{} {}→{} ({in_ref}): want net {want}, got {got:?}",
                j.masked(),
                LINE[j.entry],
                LINE[j.exit]
            )),
        }
    }
    let open: Vec<&Paid> = paid.values().filter(|p| p.holds_open > 0).collect();
    assert!(
        wrong.is_empty() && open.is_empty(),
        "{} of {checked} passengers did not pay the matrix fare:\n{}\nholds left open: {open:#?}",
        wrong.len(),
        first_lines(&wrong)
    );
    checked
}

/// No refund made twice: no `partnerRefundNo` twice, no payment refunded twice (the simulator
/// answers a repeated `partnerRefundNo` with the first refund, so a refund made twice shows as
/// a second number on the same payment: a hold released twice, an overcharge refunded twice),
/// and no payment refunded beyond its amount. Returns the number of refunds.
pub fn check_refunds_once(sim: &SimHandle) -> usize {
    let mut seen = HashSet::new();
    let mut refunds = 0;
    for e in sim.ledger() {
        assert!(
            e.refunds.len() <= 1,
            "{} ({}) refunded more than once: {:#?}",
            e.partner_reference_no,
            e.masked_pan,
            e.refunds
        );
        let total: u64 = e.refunds.iter().map(|r| r.amount).sum();
        assert!(
            total <= e.amount,
            "{} refunded {total} of {}",
            e.partner_reference_no,
            e.amount
        );
        for r in &e.refunds {
            refunds += 1;
            assert!(
                seen.insert(r.partner_refund_no.clone()),
                "partnerRefundNo {} refunded twice",
                r.partner_refund_no
            );
        }
    }
    refunds
}

/// On the line: no journey has two OPENED or two CLOSED events (an event applied twice under
/// two ids), and no event id twice.
pub fn check_events_once(c: &PgCluster, db: &str) {
    let twice = c.psql(
        db,
        "SELECT tap_in_ref || ' ' || kind || ' x' || count(*) FROM tapgate_journey_events \
         WHERE kind IN ('OPENED', 'CLOSED') GROUP BY tap_in_ref, kind HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "events applied twice:\n{twice}");
    let ids = c.psql(
        db,
        "SELECT count(*) - count(DISTINCT event_id) FROM tapgate_journey_events",
    );
    assert_eq!(ids, "0", "an event id stored twice");
}

/// The line's view of a journey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineJourney {
    /// `OPEN`, `CLOSED`, ...
    pub state: String,
    /// Whether its OPENED event arrived.
    pub has_entry: bool,
    /// Entry station.
    pub entry_station: String,
    /// Exit (or closing) station.
    pub closed_station: String,
    /// The tap-out that closed it ("" when none did).
    pub tap_out_ref: String,
    /// Fare recorded by the close.
    pub fare: Option<u64>,
    /// CLOSED events recorded.
    pub closes: u64,
}

/// Every journey on the line, by tap-in reference.
pub fn line_journeys(c: &PgCluster, db: &str) -> HashMap<String, LineJourney> {
    let rows = c.psql(
        db,
        "SELECT j.tap_in_ref, j.state, (j.pan_key IS NOT NULL)::int, coalesce(j.entry_station, ''), \
         coalesce(j.closed_station, ''), coalesce(j.tap_out_ref, ''), coalesce(j.fare::text, ''), \
         (SELECT count(*) FROM tapgate_journey_events e \
          WHERE e.tap_in_ref = j.tap_in_ref AND e.kind = 'CLOSED') \
         FROM tapgate_journeys j",
    );
    rows.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 8, "psql row {l:?}");
            (
                f[0].to_string(),
                LineJourney {
                    state: f[1].to_string(),
                    has_entry: f[2] == "1",
                    entry_station: f[3].to_string(),
                    closed_station: f[4].to_string(),
                    tap_out_ref: f[5].to_string(),
                    fare: f[6].parse().ok(),
                    closes: f[7].parse().expect("count"),
                },
            )
        })
        .collect()
}

/// A station journal's journeys: (tap_in_ref, entry_station, state).
pub fn local_journeys(station: &Station) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        station.dir.join("journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the station journal");
    let mut st = db
        .prepare("SELECT tap_in_ref, entry_station, state FROM journeys ORDER BY id")
        .expect("journeys table");
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("read journeys")
        .collect::<Result<Vec<_>, _>>()
        .expect("journey rows");
    rows
}

/// No journey of any station's journal is missing from the line: its entry arrived, and a
/// journey the station has closed is closed on the line too. Returns how many were checked.
pub fn check_no_event_lost(line: &Line, c: &PgCluster, db: &str) -> usize {
    let on_line = line_journeys(c, db);
    let mut lost = Vec::new();
    let mut n = 0;
    for s in &line.stations {
        for (tap_in_ref, entry, state) in local_journeys(s) {
            n += 1;
            match on_line.get(&tap_in_ref) {
                Some(j) if j.has_entry && (state == "OPEN" || j.state != "OPEN") => {}
                got => lost.push(format!(
                    "{}: journey {tap_in_ref} (entry {entry}, {state} locally) on the line: {got:?}",
                    s.id
                )),
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} journey(s) of the station journals missing on the line:\n{}",
        lost.len(),
        first_lines(&lost)
    );
    n
}

/// The first 20 of `items`, one a line, and how many more there were: a run where everything
/// failed stays readable.
pub fn first_lines(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if items.len() > 20 {
        s.push_str(&format!("\n... and {} more", items.len() - 20));
    }
    s
}

/// Every journey is on the line, closed once by its exit station at the matrix fare.
pub fn check_line_closed(line: &Line, c: &PgCluster, db: &str, journeys: &[Journey]) {
    let on_line = line_journeys(c, db);
    let mut wrong = Vec::new();
    for j in journeys {
        let Some(r) = j.in_ref() else { continue };
        let want = (
            "CLOSED",
            LINE[j.entry],
            LINE[j.exit],
            Some(line.fare(j.entry, j.exit)),
            1,
        );
        match on_line.get(&r) {
            Some(l)
                if (
                    l.state.as_str(),
                    l.entry_station.as_str(),
                    l.closed_station.as_str(),
                    l.fare,
                    l.closes,
                ) == want => {}
            got => wrong.push(format!("{r}: want {want:?}, the line has {got:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} journeys wrong on the line:\n{}",
        wrong.len(),
        first_lines(&wrong)
    );
}

/// Counts of each tap's outcome and fare rule, for the printed summary.
pub fn tally(journeys: &[Journey]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for j in journeys {
        for (dir, t) in [("in", &j.tap_in), ("out", &j.tap_out)] {
            if let Some(t) = t {
                let mut k = format!("{dir}:{}", t.outcome());
                if dir == "out" && !t.fare_rule().is_empty() {
                    k.push_str(&format!("/{}", t.fare_rule()));
                }
                *counts.entry(k).or_default() += 1;
            }
        }
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
