//! The display hub: each lane's current screen, and the way it changes. Lanes publish finished
//! taps into it (never waiting: a screen must not slow a tap); the server's pages read it.
//!
//! Each lane's screen is one value in a `watch` channel: a page that connects gets the current
//! screen first (the snapshot), then every change. Each screen carries an id from one counter
//! that starts at the hub's creation time in microseconds, so ids only grow, across lanes and
//! across restarts of the daemon: a reconnecting page never takes a new process's screen for
//! one it has already shown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::present::{free_exit_words, rupiah_id, Presentation, ScreenKind};
use crate::clock::Clock;
use crate::fare::{Direction, Rupiah};
use crate::flow::TapReport;
use crate::nfc::feedback::Signal;

/// The screen's colour: the reader's [`Signal`] for a tap, or a resting tone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    /// Waiting for a tap.
    Idle,
    /// The gate opens ([`Signal::Approved`]).
    Go,
    /// The gate stays shut ([`Signal::Declined`]).
    Stop,
    /// The wallet was not ready ([`Signal::WalletNotReady`]).
    Wait,
    /// A QR code is shown (black on white, for the camera).
    Qr,
}

impl From<Signal> for Tone {
    fn from(s: Signal) -> Tone {
        match s {
            Signal::Approved => Tone::Go,
            Signal::Declined => Tone::Stop,
            Signal::WalletNotReady => Tone::Wait,
        }
    }
}

/// One lane's screen, as the page receives it (JSON in each server-sent event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Screen {
    /// Grows with every change, across lanes and restarts (the event's id).
    pub id: u64,
    /// The lane.
    pub lane: String,
    /// The lane's direction.
    pub direction: Direction,
    /// The layout.
    pub kind: ScreenKind,
    /// The colour.
    pub tone: Tone,
    /// Headline, Indonesian.
    pub title_id: String,
    /// Headline, English.
    pub title_en: String,
    /// What to do next, Indonesian.
    pub detail_id: String,
    /// The same, English.
    pub detail_en: String,
    /// The amount, written `Rp6.000`.
    pub amount: Option<String>,
    /// The QR code to scan, an SVG document (the `qr` screen only).
    pub qr_svg: Option<String>,
    /// When the QR stops being payable, Unix milliseconds (the `qr` screen only).
    pub expires_at_ms: Option<i64>,
    /// On a resting screen of a lane that sells QRs: the fare a QR asks, written `Rp14.000`
    /// (the page then offers "pay by QR").
    pub qr_offer: Option<String>,
}

impl Screen {
    fn blank(id: u64, lane: &str, direction: Direction, kind: ScreenKind, tone: Tone) -> Screen {
        Screen {
            id,
            lane: lane.to_string(),
            direction,
            kind,
            tone,
            title_id: String::new(),
            title_en: String::new(),
            detail_id: String::new(),
            detail_en: String::new(),
            amount: None,
            qr_svg: None,
            expires_at_ms: None,
            qr_offer: None,
        }
    }

    fn with_words(mut self, [title_id, title_en, detail_id, detail_en]: [&str; 4]) -> Screen {
        self.title_id = title_id.into();
        self.title_en = title_en.into();
        self.detail_id = detail_id.into();
        self.detail_en = detail_en.into();
        self
    }

    /// The idle screen: an invitation to tap, nothing of any passenger.
    fn idle(id: u64, lane: &str, direction: Direction) -> Screen {
        Screen::blank(id, lane, direction, ScreenKind::Idle, Tone::Idle).with_words([
            "Tempelkan ponsel QRIS TAP di sini",
            "Tap QRIS TAP here",
            "",
            "",
        ])
    }

    /// The station's free-exit screen.
    fn free_exit(id: u64, lane: &str, direction: Direction) -> Screen {
        let (kind, words) = free_exit_words();
        Screen::blank(id, lane, direction, kind, Tone::Go).with_words(words)
    }

    /// The screen of a finished tap.
    fn of_tap(id: u64, lane: &str, direction: Direction, r: &TapReport) -> Screen {
        let p = Presentation::of(r);
        let mut s = Screen::blank(id, lane, direction, p.kind, p.signal.into()).with_words([
            p.title_id,
            p.title_en,
            p.detail_id,
            p.detail_en,
        ]);
        s.amount = p.amount.map(rupiah_id);
        s
    }
}

/// What the hub refuses.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// No lane of that name has a screen.
    #[error("no lane called {0:?} on this display")]
    UnknownLane(String),
    /// The text cannot be drawn as a QR code (too long for the largest version).
    #[error("cannot draw the QR code: {0}")]
    Qr(String),
}

struct Slot {
    direction: Direction,
    tx: watch::Sender<Screen>,
}

/// Every lane's screen. Shared by the lanes (through [`crate::daemon::station::StationCore`])
/// and the display server.
pub struct DisplayHub {
    lanes: HashMap<String, Slot>,
    next_id: AtomicU64,
    idle_after: Duration,
    free_exit: AtomicBool,
    clock: Arc<dyn Clock>,
    offers: std::sync::RwLock<HashMap<String, Rupiah>>,
}

impl std::fmt::Debug for DisplayHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisplayHub")
            .field("lanes", &self.lanes.keys().collect::<Vec<_>>())
            .field("idle_after", &self.idle_after)
            .finish_non_exhaustive()
    }
}

impl DisplayHub {
    /// A hub for `lanes` (name, direction), each idle; a tap's screen goes back to idle after
    /// `idle_after`.
    pub fn new(
        lanes: impl IntoIterator<Item = (String, Direction)>,
        idle_after: Duration,
        clock: Arc<dyn Clock>,
    ) -> Arc<DisplayHub> {
        let start = u64::try_from(clock.now().timestamp().as_microsecond()).unwrap_or(0);
        let next_id = AtomicU64::new(start.max(1));
        let lanes = lanes
            .into_iter()
            .map(|(name, direction)| {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                let (tx, _) = watch::channel(Screen::idle(id, &name, direction));
                (name, Slot { direction, tx })
            })
            .collect();
        Arc::new(DisplayHub {
            lanes,
            next_id,
            idle_after,
            free_exit: AtomicBool::new(false),
            clock,
            offers: std::sync::RwLock::new(HashMap::new()),
        })
    }

    /// A hub for the lanes of `cfg`, with its `[display] idle_after_ms`.
    pub fn from_config(cfg: &crate::config::Config, clock: Arc<dyn Clock>) -> Arc<DisplayHub> {
        let idle_after = cfg.display.as_ref().map_or(super::DEFAULT_IDLE_AFTER, |d| {
            Duration::from_millis(d.idle_after_ms)
        });
        DisplayHub::new(
            cfg.lanes.iter().map(|l| (l.name.clone(), l.direction)),
            idle_after,
            clock,
        )
    }

    /// The lanes with a screen.
    pub fn lane_names(&self) -> impl Iterator<Item = &str> {
        self.lanes.keys().map(String::as_str)
    }

    /// Whether the hub has a screen for `lane`.
    pub fn has_lane(&self, lane: &str) -> bool {
        self.lanes.contains_key(lane)
    }

    /// The lane's current screen.
    pub fn snapshot(&self, lane: &str) -> Option<Screen> {
        self.lanes.get(lane).map(|s| s.tx.borrow().clone())
    }

    /// The lane's screens from now on: the current one, then each change.
    pub fn subscribe(&self, lane: &str) -> Option<watch::Receiver<Screen>> {
        self.lanes.get(lane).map(|s| s.tx.subscribe())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Shows a finished tap on its lane's screen, for `idle_after`. Never waits. A lane the
    /// hub does not know is ignored (a `tapgate tap` of another config, say).
    pub fn publish(self: &Arc<Self>, r: &TapReport) {
        let Some(slot) = self.lanes.get(&r.lane) else {
            tracing::debug!(lane = %r.lane, "no screen for this lane");
            return;
        };
        let screen = Screen::of_tap(self.next_id(), &r.lane, slot.direction, r);
        self.show_for(&r.lane, screen, self.idle_after);
    }

    /// Shows a QR code to pay `amount` by scanning `qr_content` (a QRIS MPM payload), until
    /// `expires_at`; then the lane goes back to idle. Returns the screen's id.
    pub fn show_qr(
        self: &Arc<Self>,
        lane: &str,
        qr_content: &str,
        amount: Rupiah,
        expires_at: jiff::Timestamp,
    ) -> Result<u64, DisplayError> {
        let slot = self
            .lanes
            .get(lane)
            .ok_or_else(|| DisplayError::UnknownLane(lane.to_string()))?;
        let svg = super::qr::svg(qr_content).map_err(DisplayError::Qr)?;
        let id = self.next_id();
        let mut s = Screen::blank(id, lane, slot.direction, ScreenKind::Qr, Tone::Qr).with_words([
            "Pindai untuk membayar",
            "Scan to pay",
            "Bayar dengan aplikasi dompet QRIS mana pun",
            "Pay with any QRIS wallet app",
        ]);
        s.amount = Some(rupiah_id(amount.0));
        s.qr_svg = Some(svg);
        s.expires_at_ms = Some(expires_at.as_millisecond());
        let left = expires_at
            .duration_since(self.clock.now().timestamp())
            .try_into()
            .unwrap_or(Duration::ZERO);
        self.show_for(lane, s, left);
        Ok(id)
    }

    /// Takes the QR off `lane` (paid, cancelled), if it still shows screen `id`.
    pub fn clear(&self, lane: &str, id: u64) {
        self.rest_if(lane, id);
    }

    /// Free-exit mode on or off: while on, every lane shows the emergency screen between taps.
    pub fn set_free_exit(&self, on: bool) {
        if self.free_exit.swap(on, Ordering::SeqCst) == on {
            return;
        }
        for (name, slot) in &self.lanes {
            slot.tx.send_replace(self.resting(name, slot.direction));
        }
    }

    /// The screen between taps: idle (with the QR offer, on a lane that sells QRs), or the
    /// emergency screen in free-exit mode.
    fn resting(&self, lane: &str, direction: Direction) -> Screen {
        if self.free_exit.load(Ordering::SeqCst) {
            Screen::free_exit(self.next_id(), lane, direction)
        } else {
            let mut s = Screen::idle(self.next_id(), lane, direction);
            s.qr_offer = self
                .offers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(lane)
                .map(|f| rupiah_id(f.0));
            s
        }
    }

    /// Offers (or stops offering) a QR for `fare` on `lane`'s idle screen; an idle lane shows
    /// the change at once.
    pub fn set_qr_offer(&self, lane: &str, fare: Option<Rupiah>) {
        let Some(slot) = self.lanes.get(lane) else {
            return;
        };
        {
            let mut offers = self.offers.write().unwrap_or_else(|e| e.into_inner());
            match fare {
                Some(f) => offers.insert(lane.to_string(), f),
                None => offers.remove(lane),
            };
        }
        slot.tx.send_if_modified(|current| {
            if current.kind != ScreenKind::Idle {
                return false;
            }
            *current = self.resting(lane, slot.direction);
            true
        });
    }

    fn show_for(self: &Arc<Self>, lane: &str, screen: Screen, stay: Duration) {
        let Some(slot) = self.lanes.get(lane) else {
            return;
        };
        let id = screen.id;
        slot.tx.send_replace(screen);
        // No runtime (a synchronous caller): the screen stays until the next change.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = Arc::downgrade(self);
        let lane = lane.to_string();
        rt.spawn(async move {
            tokio::time::sleep(stay).await;
            if let Some(hub) = hub.upgrade() {
                hub.rest_if(&lane, id);
            }
        });
    }

    /// Back to the resting screen, unless something newer than screen `id` is shown.
    fn rest_if(&self, lane: &str, id: u64) {
        let Some(slot) = self.lanes.get(lane) else {
            return;
        };
        slot.tx.send_if_modified(|current| {
            if current.id != id {
                return false;
            }
            *current = self.resting(lane, slot.direction);
            true
        });
    }
}

/// The first event a page that connects is sent: the current screen, unless the page's
/// `Last-Event-ID` says it already shows it.
pub fn first_event(snapshot: &Screen, last_event_id: Option<&str>) -> Option<Screen> {
    let seen = last_event_id.and_then(|s| s.trim().parse::<u64>().ok());
    (seen != Some(snapshot.id)).then(|| snapshot.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::policy::TapOutcome;

    struct FixedClock(i64);
    impl Clock for FixedClock {
        fn now(&self) -> jiff::Zoned {
            jiff::Timestamp::from_millisecond(self.0)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_zoned(jiff::tz::TimeZone::UTC)
        }
        fn monotonic(&self) -> Duration {
            Duration::ZERO
        }
    }

    const T0: i64 = 1_796_180_400_000;

    fn hub_at(ms: i64) -> Arc<DisplayHub> {
        DisplayHub::new(
            [
                ("in-1".to_string(), Direction::In),
                ("out-1".into(), Direction::Out),
            ],
            Duration::from_millis(4000),
            Arc::new(FixedClock(ms)),
        )
    }

    fn approved(lane: &str, amount: u64) -> TapReport {
        let mut r = TapReport::refused(lane, Direction::In, TapOutcome::Approved, "ok");
        r.opened = true;
        r.amount = Some(amount);
        r.pan_masked = Some("93600002*******6781".into());
        r
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_shows_for_idle_after_then_the_lane_rests_with_no_trace_of_it() {
        let hub = hub_at(T0);
        let idle = hub.snapshot("in-1").expect("lane");
        assert_eq!(idle.kind, ScreenKind::Idle);
        assert_eq!(idle.title_en, "Tap QRIS TAP here");
        let mut rx = hub.subscribe("in-1").expect("lane");
        rx.borrow_and_update();

        hub.publish(&approved("in-1", 6000));
        rx.changed().await.expect("a change");
        let shown = rx.borrow_and_update().clone();
        assert_eq!(shown.kind, ScreenKind::Approved);
        assert_eq!(shown.amount.as_deref(), Some("Rp6.000"));
        assert_eq!(shown.tone, Tone::Go);
        assert!(shown.id > idle.id);
        assert_eq!(
            hub.snapshot("out-1").map(|s| s.kind),
            Some(ScreenKind::Idle)
        );

        tokio::time::sleep(Duration::from_millis(3999)).await;
        assert_eq!(hub.snapshot("in-1").map(|s| s.id), Some(shown.id));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let rest = hub.snapshot("in-1").expect("lane");
        assert_eq!(rest.kind, ScreenKind::Idle);
        assert!(rest.id > shown.id);
        let json = serde_json::to_string(&rest).expect("json");
        assert!(!json.contains("6.000") && !json.contains("6781"), "{json}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_tap_is_not_cut_short_by_the_older_ones_timer() {
        let hub = hub_at(T0);
        hub.publish(&approved("in-1", 6000));
        tokio::time::sleep(Duration::from_millis(3000)).await;
        hub.publish(&approved("in-1", 7000));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            hub.snapshot("in-1").and_then(|s| s.amount).as_deref(),
            Some("Rp7.000"),
            "the first tap's timer left the second's screen alone"
        );
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(hub.snapshot("in-1").map(|s| s.kind), Some(ScreenKind::Idle));
    }

    #[test]
    fn the_snapshot_is_sent_first_unless_the_page_already_has_it() {
        let hub = hub_at(T0);
        let now = hub.snapshot("in-1").expect("lane");
        assert_eq!(first_event(&now, None), Some(now.clone()));
        assert_eq!(first_event(&now, Some("garbage")), Some(now.clone()));
        assert_eq!(
            first_event(&now, Some(&(now.id - 1).to_string())),
            Some(now.clone())
        );
        assert_eq!(first_event(&now, Some(&now.id.to_string())), None);
    }

    /// A page that reconnects to a restarted daemon holds an id of the old process: the new
    /// one's ids are all larger, so the page takes the new snapshot.
    #[test]
    fn ids_grow_across_lanes_and_across_a_restart() {
        let old = hub_at(T0);
        old.publish(&approved("in-1", 6000));
        old.publish(&approved("out-1", 6000));
        let a = old.snapshot("in-1").expect("lane").id;
        let b = old.snapshot("out-1").expect("lane").id;
        assert!(b > a);
        let new = hub_at(T0 + 1);
        let fresh = new.snapshot("in-1").expect("lane");
        assert!(fresh.id > b, "{} > {b}", fresh.id);
        assert_eq!(
            first_event(&fresh, Some(&b.to_string())),
            Some(fresh.clone())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_qr_stays_until_it_expires_and_can_be_taken_off() {
        let hub = hub_at(T0);
        let expires = jiff::Timestamp::from_millisecond(T0 + 60_000).expect("ts");
        let id = hub
            .show_qr("out-1", "00020101021226", Rupiah(9000), expires)
            .expect("qr");
        let s = hub.snapshot("out-1").expect("lane");
        assert_eq!((s.id, s.kind, s.tone), (id, ScreenKind::Qr, Tone::Qr));
        assert_eq!(s.amount.as_deref(), Some("Rp9.000"));
        assert_eq!(s.expires_at_ms, Some(T0 + 60_000));
        let svg = s.qr_svg.expect("svg");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        tokio::time::sleep(Duration::from_millis(59_000)).await;
        assert_eq!(hub.snapshot("out-1").map(|s| s.kind), Some(ScreenKind::Qr));
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        assert_eq!(
            hub.snapshot("out-1").map(|s| s.kind),
            Some(ScreenKind::Idle)
        );

        let id = hub
            .show_qr("out-1", "00020101021226", Rupiah(9000), expires)
            .expect("qr");
        hub.clear("out-1", id - 1);
        assert_eq!(hub.snapshot("out-1").map(|s| s.kind), Some(ScreenKind::Qr));
        hub.clear("out-1", id);
        assert_eq!(
            hub.snapshot("out-1").map(|s| s.kind),
            Some(ScreenKind::Idle)
        );

        assert!(matches!(
            hub.show_qr("nowhere", "x", Rupiah(1), expires),
            Err(DisplayError::UnknownLane(_))
        ));
        let huge = "9".repeat(8000);
        assert!(matches!(
            hub.show_qr("out-1", &huge, Rupiah(1), expires),
            Err(DisplayError::Qr(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn free_exit_rests_every_lane_on_the_emergency_screen_until_it_ends() {
        let hub = hub_at(T0);
        hub.set_free_exit(true);
        for lane in ["in-1", "out-1"] {
            let s = hub.snapshot(lane).expect("lane");
            assert_eq!((s.kind, s.tone), (ScreenKind::FreeExit, Tone::Go), "{lane}");
        }
        let mut r = approved("in-1", 0);
        r.outcome = TapOutcome::FreeExit;
        r.amount = None;
        hub.publish(&r);
        tokio::time::sleep(Duration::from_millis(4001)).await;
        assert_eq!(
            hub.snapshot("in-1").map(|s| s.kind),
            Some(ScreenKind::FreeExit)
        );
        hub.set_free_exit(false);
        assert_eq!(hub.snapshot("in-1").map(|s| s.kind), Some(ScreenKind::Idle));
        assert_eq!(
            hub.snapshot("out-1").map(|s| s.kind),
            Some(ScreenKind::Idle)
        );
    }

    #[test]
    fn a_lane_it_does_not_know_is_ignored() {
        let hub = hub_at(T0);
        hub.publish(&approved("elsewhere", 6000));
        assert!(hub.snapshot("elsewhere").is_none());
        assert!(!hub.has_lane("elsewhere"));
    }
}
