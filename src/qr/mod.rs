//! QRIS MPM at the gate: a QR on the passenger display for phones that cannot tap (every
//! iPhone, Android phones without NFC).
//!
//! A lane named in `[qr] lanes` offers, on its idle screen, to pay by QR the fare the gate
//! knows without a tap ([`fare_without_tap`]): at an exit the flat fare, or on a fare matrix
//! the unknown-entry fare; at an entry of a flat tariff the flat fare. A passenger who touches
//! the offer starts a sale ([`QrDesk::request`]):
//!
//! 1. the sale is journaled (`fare_ops`, channel `mpm`, PENDING) before any byte is sent;
//! 2. `qr-mpm-generate` makes a dynamic QR for the fare, valid `validity_seconds`; the
//!    journal records its `referenceNo`, and the screen shows the QR with a countdown;
//! 3. the gate asks `qr-mpm-query` every `poll_ms`, and at once when the aggregator's signed
//!    notification arrives ([`QrDesk::notify`]), whichever comes first;
//! 4. paid: the relay opens, and the journal records SUCCEEDED with the gate opened, in one
//!    write. Not paid when the QR expires, when the passenger cancels, or when a tap opens
//!    the lane's gate for someone else: the journal records that the gate will not open for
//!    this QR, and the reconciler queries it to its end: unpaid (DECLINED), or paid late and
//!    refunded once (the refund's reference is derived from the QR's).
//!
//! The notification is a hint: the query's answer is what opens the gate, so a gate whose
//! notifications never arrive (the usual case: the aggregator reaches a back office, not the
//! gate) works on polling alone.
//!
//! | part | owns |
//! |---|---|
//! | [`QrDesk`] | which lanes offer a QR, the sale running on each, the notification's wake-ups |
//! | [`sale`] | one sale, from the journal to the gate or its withdrawal; its pure decisions |
//! | [`notify`] | pure: the notification's signature check and the SNAP answer |

pub mod notify;
pub mod sale;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::QrConfig;
use crate::daemon::station::StationCore;
use crate::display::DisplayHub;
use crate::fare::{Direction, OpState, Rupiah};
use crate::journal::{Channel, Transition};
use crate::relay::Relay;
pub use notify::{NotifyAnswer, NotifyKeys};
pub use sale::Withdrawn;

/// Why a sale was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QrRefusal {
    /// The lane is not in `[qr] lanes`.
    #[error("lane {0:?} offers no QR")]
    NotOffered(String),
    /// A QR is already on the lane's screen.
    #[error("lane {0:?} already shows a QR")]
    Busy(String),
    /// The station is in free-exit mode: the gates are open, nothing is charged.
    #[error("free-exit mode: nothing to pay")]
    FreeExit,
    /// The daemon is stopping.
    #[error("the gate is shutting down")]
    Stopping,
}

struct Running {
    withdraw: watch::Sender<Option<Withdrawn>>,
    task: Option<JoinHandle<()>>,
}

/// The lanes' QR sales. Shared by the display server (requests, cancels, notifications) and
/// the lanes (a tap that opens a gate withdraws that lane's QR).
pub struct QrDesk {
    station: Arc<StationCore>,
    hub: Arc<DisplayHub>,
    cfg: QrConfig,
    keys: NotifyKeys,
    relays: HashMap<String, Arc<dyn Relay>>,
    offers: HashMap<String, (Rupiah, Direction)>,
    running: Mutex<HashMap<String, Running>>,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    stopping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for QrDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrDesk")
            .field("offers", &self.offers)
            .finish_non_exhaustive()
    }
}

/// The fare a gate can ask without a tap at a lane of `station` going `direction`: at an exit
/// the flat fare, or the unknown-entry fare of a matrix; at an entry the flat fare, and
/// nothing on a matrix (the trip's end is not known). Pure.
pub fn fare_without_tap(
    tariff: &crate::fare::tariff::Tariff,
    station: &str,
    direction: Direction,
) -> Option<Rupiah> {
    use crate::fare::tariff::Tariff;
    match (direction, tariff) {
        (Direction::Out, _) => Some(tariff.fare(None, station).0),
        (Direction::In, Tariff::Flat(f)) => Some(*f),
        (Direction::In, Tariff::Matrix { .. }) => None,
    }
}

impl QrDesk {
    /// A desk for `cfg`'s lanes of `station`, showing its QRs on `hub` and opening `relays`
    /// (lane name → relay); each offered lane's idle screen shows the offer from now on.
    pub fn new(
        station: Arc<StationCore>,
        hub: Arc<DisplayHub>,
        cfg: QrConfig,
        keys: NotifyKeys,
        relays: HashMap<String, Arc<dyn Relay>>,
    ) -> Arc<QrDesk> {
        let offers: HashMap<String, (Rupiah, Direction)> = cfg
            .lanes
            .iter()
            .filter_map(|l| {
                let direction = station.config.lane(l)?.direction;
                let fare =
                    fare_without_tap(&station.tariff, &station.config.station.id, direction)?;
                Some((l.clone(), (fare, direction)))
            })
            .collect();
        for (lane, (fare, _)) in &offers {
            hub.set_qr_offer(lane, Some(*fare));
        }
        Arc::new(QrDesk {
            station,
            hub,
            cfg,
            keys,
            relays,
            offers,
            running: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The lanes that offer a QR: the fare each asks, and its direction.
    pub fn offers(&self) -> &HashMap<String, (Rupiah, Direction)> {
        &self.offers
    }

    /// The notification path on the display's address.
    pub fn notify_path(&self) -> &str {
        &self.cfg.notify_path
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A passenger asked to pay by QR at `lane`: starts its sale, which runs until the QR is
    /// paid, expires or is withdrawn. Returns the fare.
    pub fn request(self: &Arc<Self>, lane: &str) -> Result<Rupiah, QrRefusal> {
        use std::sync::atomic::Ordering;
        let (fare, direction) = *self
            .offers
            .get(lane)
            .ok_or_else(|| QrRefusal::NotOffered(lane.to_string()))?;
        if self.stopping.load(Ordering::SeqCst) {
            return Err(QrRefusal::Stopping);
        }
        if self.station.free_exit.load(Ordering::SeqCst) {
            return Err(QrRefusal::FreeExit);
        }
        let mut running = self.running();
        if running.contains_key(lane) {
            return Err(QrRefusal::Busy(lane.to_string()));
        }
        let (tx, rx) = watch::channel(None);
        let desk = self.clone();
        let name = lane.to_string();
        let task = tokio::spawn(async move {
            sale::run(&desk, &name, direction, fare, rx).await;
            desk.running().remove(&name);
        });
        running.insert(
            lane.to_string(),
            Running {
                withdraw: tx,
                task: Some(task),
            },
        );
        Ok(fare)
    }

    /// Withdraws the QR `lane` shows, if any (the gate will not open for it; a payment that
    /// still arrives is refunded). Returns whether one was shown.
    pub fn withdraw(&self, lane: &str, why: Withdrawn) -> bool {
        match self.running().get(lane) {
            Some(r) => {
                r.withdraw.send_replace(Some(why));
                true
            }
            None => false,
        }
    }

    /// Withdraws every QR and waits for each sale to record it; refuses new ones.
    pub async fn shut_down(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let tasks: Vec<JoinHandle<()>> = {
            let mut running = self.running();
            running
                .values_mut()
                .filter_map(|r| {
                    r.withdraw.send_replace(Some(Withdrawn::ShuttingDown));
                    r.task.take()
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Wakes the sale of `partner_ref`; returns whether one is waiting. The wake-up is kept
    /// when the sale is busy (one permit), so none is lost.
    fn wake(&self, partner_ref: &str) -> bool {
        match self.waiters().get(partner_ref) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// A sale's wake-up, registered before its generate is sent.
    fn register(&self, partner_ref: &str) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.waiters().insert(partner_ref.to_string(), n.clone());
        n
    }

    fn unregister(&self, partner_ref: &str) {
        self.waiters().remove(partner_ref);
    }

    /// Takes the aggregator's payment notification received at `path`: checks it
    /// ([`notify::verify`]), then has the QR queried at once, by its sale when it is on screen,
    /// else by the reconciler. Returns the SNAP answer.
    pub async fn notify(
        &self,
        path: &str,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> NotifyAnswer {
        let st = &self.station;
        let now = st.clock.now().timestamp();
        let n = match notify::verify(&self.keys, path, header, body, now) {
            Ok(n) => n,
            Err(e) => {
                st.metrics
                    .inc("tapgate_qr_notifications_total", &[("result", "rejected")]);
                tracing::warn!(target: "tapgate::qr", reason = %e,
                    "payment notification refused");
                return NotifyAnswer::rejected(&e);
            }
        };
        let pref = n.partner_reference_no.as_str();
        let row = match st.ports.ops.get(pref.to_string()).await {
            Ok(Some(row)) if row.channel == Channel::Mpm => row,
            Ok(_) => {
                st.metrics
                    .inc("tapgate_qr_notifications_total", &[("result", "unknown")]);
                tracing::warn!(target: "tapgate::qr", fare_ref = %pref,
                    "payment notification for a QR this gate did not sell");
                return NotifyAnswer::not_found();
            }
            Err(e) => {
                tracing::error!(target: "tapgate::qr", fare_ref = %pref, error = %e,
                    "payment notification: journal unreadable; the aggregator may resend");
                return NotifyAnswer::internal();
            }
        };
        st.metrics
            .inc("tapgate_qr_notifications_total", &[("result", "accepted")]);
        if self.wake(pref) {
            tracing::info!(target: "tapgate::qr", fare_ref = %pref,
                status = n.status.as_deref().unwrap_or("-"),
                "payment notification: the sale on screen asks now");
            return NotifyAnswer::ok();
        }
        if matches!(row.state, OpState::Pending | OpState::Unknown) {
            let t = Transition {
                next_attempt_at_ms: Some(st.now_ms()),
                reason: Some("payment notification received: query now".into()),
                ..Transition::new(OpState::Unknown, st.now_ms())
            };
            if let Err(e) = st.ports.ops.record(pref.to_string(), vec![t]).await {
                tracing::error!(target: "tapgate::qr", fare_ref = %pref, error = %e,
                    "payment notification: could not mark the QR due");
                return NotifyAnswer::internal();
            }
        }
        tracing::info!(target: "tapgate::qr", fare_ref = %pref, state = row.state.as_str(),
            "payment notification for a QR no longer on screen: the reconciler asks now");
        NotifyAnswer::ok()
    }
}
