//! The passenger display: what a tap decided, on the gate's screen. tapgate draws no pixels
//! itself: it serves one page per lane (`/lane/<name>`) and per two-lane gate
//! (`/gate/<name>`) on a local address (`[display] listen`), for a kiosk browser on the gate's
//! screen, and pushes each lane's screen to it live as server-sent events
//! (`/lane/<name>/events`).
//!
//! | part | owns |
//! |---|---|
//! | [`present`] | pure: a tap's outcome → the reader's signal and the screen's words (one decision, shown the same way on the LEDs, the buzzer and the screen) |
//! | [`DisplayHub`] | each lane's current screen, its ids, going back to idle, the QR screen, free-exit mode |
//! | [`DisplayServer`] | the pages and the event streams |
//!
//! The screen never shows a PAN (not even masked) or a reference, and goes back to idle, with
//! nothing of the last passenger on it, `idle_after_ms` after a tap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

mod hub;
pub mod present;
mod qr;
mod server;

pub use hub::{first_event, DisplayError, DisplayHub, Screen, Tone};
pub use present::{rupiah_id, signal_for, Presentation, ScreenKind};
pub use server::{DisplayServer, QrRoutes};

/// How long a tap's screen stays when `[display] idle_after_ms` is not set.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_millis(4000);

/// How often the display looks at the station's free-exit flag.
const FREE_EXIT_POLL: Duration = Duration::from_millis(250);

/// Starts the display of the daemon when `[display]` is configured: a hub for every lane,
/// attached to `station` (so that its lanes publish their taps), the server on `listen`, and
/// the free-exit follower. Both stop when `stop` turns true.
pub async fn start(
    cfg: &crate::config::Config,
    station: &Arc<crate::daemon::station::StationCore>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<DisplayServer>> {
    use anyhow::Context as _;
    let Some(d) = &cfg.display else {
        return Ok(None);
    };
    let listen: SocketAddr = d
        .listen
        .parse()
        .with_context(|| format!("display.listen {:?} is not address:port", d.listen))?;
    let hub = DisplayHub::from_config(cfg, station.clock.clone());
    let gates: HashMap<String, Vec<String>> = d
        .gates
        .iter()
        .map(|g| (g.name.clone(), g.lanes.clone()))
        .collect();
    let qr = cfg.qr.as_ref().map(|q| QrRoutes {
        notify_path: q.notify_path.clone(),
        station: station.clone(),
    });
    let server = DisplayServer::start_with(listen, hub.clone(), gates, stop.clone(), qr)
        .await
        .with_context(|| format!("binding the passenger display {listen}"))?;
    station.attach_display(hub.clone());
    tokio::spawn(follow_free_exit(hub, station.clone(), stop.clone()));
    tracing::info!(addr = %server.addr(), "passenger display listening");
    Ok(Some(server))
}

/// Keeps the screens in step with the station's free-exit mode, which the gate inputs set.
/// Polled: the gate monitor knows nothing of screens, and a quarter second is well inside the
/// time a person takes to reach a gate.
pub async fn follow_free_exit(
    hub: Arc<DisplayHub>,
    station: Arc<crate::daemon::station::StationCore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FREE_EXIT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => hub.set_free_exit(station.free_exit.load(Ordering::SeqCst)),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
