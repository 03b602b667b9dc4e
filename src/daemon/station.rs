//! The station context shared by every lane: config, tariff, journal, aggregator, clock and
//! the passenger key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::aggregator::Aggregator;
use crate::clock::Clock;
use crate::config::Config;
use crate::fare::tariff::Tariff;
use crate::journal::{Journal, JournalError};
use crate::ports::{JourneyStore, OpJournal, Payments};

/// Why the daemon cannot start. Always fatal: fix the config or the files it names.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A secret file is missing or unreadable.
    #[error("cannot read {what} from {path}: {cause}")]
    Secret {
        /// Which secret.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A key could not be used.
    #[error("{what} in {path}: {cause}")]
    Key {
        /// Which key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: crate::snap::sign::KeyError,
    },
    /// The journal could not be opened.
    #[error("{cause}")]
    Journal {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: JournalError,
    },
    /// A gate relay could not be set up (GPIO line missing, busy or not permitted).
    #[error("relay: {0}")]
    Relay(String),
    /// The SNAP client could not be built.
    #[error("aggregator client: {0}")]
    Client(String),
    /// The line's store cannot be used (settings, credentials, a passenger key that is not
    /// the line's).
    #[error("line: {0}")]
    Line(String),
}

/// Hashes PANs into passenger keys with a per-installation secret, so the journal can link a
/// tap-out to its tap-in without ever holding a PAN.
#[derive(Clone)]
pub struct PassengerKey([u8; 32]);

impl std::fmt::Debug for PassengerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassengerKey(<secret>)")
    }
}

impl PassengerKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PassengerKey(bytes)
    }

    /// Loads the key file, creating it (random, mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<PassengerKey, std::io::Error> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&bytes[..32]);
                Ok(PassengerKey(k))
            }
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "passenger key file is shorter than 32 bytes",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k: [u8; 32] = rand::random();
                match write_private_file(path, &k) {
                    Ok(()) => Ok(PassengerKey(k)),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Loads a key that must already exist: a line's key is provisioned at every gate
    /// (the same file everywhere), never made up by one of them.
    pub fn load(path: &Path) -> Result<PassengerKey, std::io::Error> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load_or_create(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the line's passenger key is missing: copy the line's key file here (every \
                 gate of a line needs the same one); a new one is never generated for a line",
            )),
            Err(e) => Err(e),
        }
    }

    /// The key's fingerprint, which the line compares without holding the key.
    pub fn fingerprint(&self) -> crate::line::KeyFingerprint {
        crate::line::KeyFingerprint::of_key(&self.0)
    }

    /// The passenger key of a PAN: hex HMAC-SHA256 under the installation key.
    pub fn of(&self, pan: &crate::cpm::Pan) -> String {
        pan.keyed_hash(&self.0)
    }
}

/// Creates a file readable only by its owner, durably and atomically: a crash leaves either no
/// file or the whole file, never a short one.
fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    // link(2) never replaces: when two processes race, the first key wins and both use it.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    std::fs::File::open(&dir)?.sync_all()
}

/// The journal, shared by lanes and the reconciler. rusqlite connections are not `Sync`, and
/// every write fsyncs: calls run one at a time, off the async workers' other tasks.
#[derive(Clone)]
pub struct JournalHandle(Arc<Mutex<Journal>>);

impl JournalHandle {
    /// Wraps an open journal.
    pub fn new(j: Journal) -> Self {
        JournalHandle(Arc::new(Mutex::new(j)))
    }

    /// Runs `f` with the journal, blocking only the calling task.
    ///
    /// On the multi-threaded runtime (the daemon's) `f` runs on the calling thread under
    /// `block_in_place`: the worker's other tasks move to another thread, so no lane waits for
    /// this call, and the call itself waits for no thread hand-off (`spawn_blocking` cost a
    /// wake of a pool thread and a wake back on every call: see `benches/tap_latency.rs`).
    /// Elsewhere (a current-thread runtime, where `block_in_place` is not allowed) it runs on
    /// the blocking pool. A panic in `f` is returned as [`JournalError::Worker`], never
    /// unwound into the lane.
    pub async fn run<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Journal) -> Result<T, JournalError> + Send + 'static,
    {
        let inner = self.0.clone();
        let call = move || {
            let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            return match tokio::task::block_in_place(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
            }) {
                Ok(r) => r,
                Err(p) => Err(JournalError::Worker(panic_text(&*p))),
            };
        }
        match tokio::task::spawn_blocking(call).await {
            Ok(r) => r,
            Err(e) => Err(JournalError::Worker(e.to_string())),
        }
    }
}

/// What a panic said, for the error it becomes.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a journal call panicked".into());
    format!("journal call panicked: {what}")
}

/// The ports a station works through (see [`crate::ports`]).
#[derive(Clone)]
pub struct Ports {
    /// The aggregator.
    pub payments: Arc<dyn Payments>,
    /// Journeys.
    pub journeys: Arc<dyn JourneyStore>,
    /// Fare operations.
    pub ops: Arc<dyn OpJournal>,
    /// The line's shared journeys, when the station belongs to one (`[journeys] store =
    /// "postgres"`).
    pub line: Option<Arc<dyn crate::ports::LinePort>>,
    /// The aggregator's QRIS MPM endpoints (the QR a gate shows, `[qr]`); `None` over fakes
    /// that sell no QR.
    pub qr: Option<Arc<dyn crate::ports::QrPayments>>,
}

/// What the lanes of one station share, real parts or fakes alike: config, tariff, clock,
/// passenger key, the ports, and the station's in-memory state.
pub struct StationCore {
    /// The config.
    pub config: Arc<Config>,
    /// The tariff.
    pub tariff: Arc<Tariff>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// PAN → passenger key.
    pub passenger_key: PassengerKey,
    /// The aggregator, journeys and operations.
    pub ports: Ports,
    /// Metrics.
    pub metrics: Arc<crate::daemon::metrics::Metrics>,
    /// Free-exit (emergency) mode: gates held open, taps not validated.
    pub free_exit: std::sync::atomic::AtomicBool,
    /// Passage matching and free-exit logic over the gate inputs.
    pub monitor: Mutex<crate::relay::inputs::GateMonitor>,
    /// Late payment replies still being awaited (after a missed deadline).
    pub(crate) inflight: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Passenger keys with a tap in progress at some lane of this process.
    passengers: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Fast open's exposure ledger and the aggregator's health, shared by the lanes.
    pub(crate) fast_open: Mutex<crate::fare::fast_open::Exposure>,
    /// The passenger display the lanes publish their taps to, when one is attached.
    display: std::sync::OnceLock<Arc<crate::display::DisplayHub>>,
    /// The QR desk (`[qr]`), when one is attached.
    qr: std::sync::OnceLock<Arc<crate::qr::QrDesk>>,
}

/// A station with its real parts: the SQLite journal and the SNAP aggregator behind the
/// ports of its [`StationCore`] (which it dereferences to).
pub struct Station {
    core: Arc<StationCore>,
    /// The journal.
    pub journal: JournalHandle,
    /// The aggregator.
    pub aggregator: Arc<Aggregator>,
    /// The line, when the station belongs to one.
    pub line: Option<Arc<crate::daemon::line::LineLink>>,
}

impl std::ops::Deref for Station {
    type Target = StationCore;
    fn deref(&self) -> &StationCore {
        &self.core
    }
}

/// A passenger's tap in progress at one lane of this process: while it lives, another lane's
/// tap of the same passenger is refused at once, without waiting for the journal (which
/// would refuse it too: see [`crate::journal::Journal::begin_tap`]).
#[derive(Debug)]
pub struct PassengerGuard {
    key: String,
    set: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Drop for PassengerGuard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Station {
    /// Assembles a station from its parts.
    pub fn new(
        config: Arc<Config>,
        journal: Journal,
        aggregator: Aggregator,
        clock: Arc<dyn Clock>,
        passenger_key: PassengerKey,
        line: Option<Arc<crate::daemon::line::LineLink>>,
    ) -> Arc<Station> {
        let unconfirmed = journal.unconfirmed_fast_opens().unwrap_or_else(|e| {
            tracing::error!(target: "tapgate::fast_open", error = %e,
                "could not read the unconfirmed fast opens: exposure starts at zero");
            Vec::new()
        });
        let journal = JournalHandle::new(journal);
        let aggregator = Arc::new(aggregator);
        let ports = Ports {
            payments: aggregator.clone(),
            journeys: Arc::new(journal.clone()),
            ops: Arc::new(journal.clone()),
            line: line.clone().map(|l| l as Arc<dyn crate::ports::LinePort>),
            qr: Some(aggregator.clone()),
        };
        let core = StationCore::new(config, clock, passenger_key, ports);
        core.fast_open_restore(&unconfirmed);
        Arc::new(Station {
            core,
            journal,
            aggregator,
            line,
        })
    }

    /// The station's core, for lanes.
    pub fn core(&self) -> Arc<StationCore> {
        self.core.clone()
    }
}

impl StationCore {
    /// A station core over any ports (the real ones, or [`crate::ports::fake`]).
    pub fn new(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        passenger_key: PassengerKey,
        ports: Ports,
    ) -> Arc<StationCore> {
        let passage_window = std::time::Duration::from_millis(config.policy.passage_window_ms);
        Arc::new(StationCore {
            tariff: Arc::new(Tariff::from_config(&config.tariff)),
            clock,
            passenger_key,
            ports,
            metrics: Arc::new(crate::daemon::metrics::Metrics::new()),
            free_exit: std::sync::atomic::AtomicBool::new(false),
            monitor: Mutex::new(crate::relay::inputs::GateMonitor::new(passage_window)),
            inflight: tokio::sync::Mutex::new(Vec::new()),
            passengers: Arc::new(Mutex::new(std::collections::HashSet::new())),
            fast_open: Mutex::new(crate::fare::fast_open::Exposure::new(
                &config.policy.fast_open,
            )),
            display: std::sync::OnceLock::new(),
            qr: std::sync::OnceLock::new(),
            config,
        })
    }

    /// Attaches the passenger display: from now on every finished tap is shown on it. Only
    /// the first attach counts; returns whether this one did.
    pub fn attach_display(&self, hub: Arc<crate::display::DisplayHub>) -> bool {
        self.display.set(hub).is_ok()
    }

    /// Opens `lane`'s gate through `relay`, and on success tells the gate monitor (which
    /// matches the passage that follows). The lanes' taps and the QR sales both open this way.
    pub fn open_gate(
        &self,
        lane: &str,
        relay: &dyn crate::relay::Relay,
    ) -> Result<(), crate::relay::RelayError> {
        relay.open()?;
        crate::failpoint::hit("after_relay");
        self.monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gate_opened(lane, crate::relay::inputs::monotonic_now());
        Ok(())
    }

    /// Attaches the QR desk: from now on a tap that opens a lane's gate withdraws the QR that
    /// lane shows. Only the first attach counts; returns whether this one did.
    pub fn attach_qr(&self, desk: Arc<crate::qr::QrDesk>) -> bool {
        self.qr.set(desk).is_ok()
    }

    /// The attached QR desk, if any.
    pub fn qr_desk(&self) -> Option<&Arc<crate::qr::QrDesk>> {
        self.qr.get()
    }

    /// The attached passenger display, if any.
    pub fn display(&self) -> Option<&Arc<crate::display::DisplayHub>> {
        self.display.get()
    }

    /// Claims the passenger `pan_key` for one tap at one lane; `None` while another lane of
    /// this process has a tap of the same passenger in progress.
    pub fn claim_passenger(&self, pan_key: &str) -> Option<PassengerGuard> {
        let mut set = self.passengers.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(pan_key.to_string()).then(|| PassengerGuard {
            key: pan_key.to_string(),
            set: self.passengers.clone(),
        })
    }

    /// Milliseconds since the Unix epoch, from the station clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp().as_millisecond()
    }

    /// Waits until every late payment reply has been journaled (shutdown, `tapgate tap`).
    pub async fn drain(&self) {
        let handles: Vec<_> = std::mem::take(&mut *self.inflight.lock().await);
        for h in handles {
            let _ = h.await;
        }
    }
}

/// Reads a secret file, trimming one trailing newline (editors add it; secrets never end in one).
pub fn read_secret(what: &'static str, path: &Path) -> Result<String, StartupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|cause| StartupError::Secret {
            what,
            path: path.to_path_buf(),
            cause,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passenger_key_is_stable_and_keyed() {
        let pan = |d: &str| {
            crate::cpm::decode(&crate::cpm::build::payload(
                &crate::cpm::build::PayloadSpec::new(d),
            ))
            .expect("built payload decodes")
            .pan()
            .clone()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        let a = PassengerKey::load_or_create(&path).expect("create");
        let b = PassengerKey::load_or_create(&path).expect("reload");
        let p1 = pan("9360000211219862952");
        let p2 = pan("9360000211219862953");
        assert_eq!(a.of(&p1), b.of(&p1));
        assert_ne!(a.of(&p1), a.of(&p2));
        assert_ne!(a.of(&p1), PassengerKey::from_bytes([7; 32]).of(&p1));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
