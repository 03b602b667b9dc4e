//! The display's HTTP server: one page per lane and per gate, and each lane's screens as
//! server-sent events. Everything a page needs is in its one HTML document.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::hub::{first_event, DisplayHub, Screen};
use crate::daemon::station::StationCore;

const PAGE: &str = include_str!("page/page.html");
const STYLE: &str = include_str!("page/page.css");
const SCRIPT: &str = include_str!("page/page.js");

/// How soon a page's browser reconnects after losing the stream.
const RETRY: Duration = Duration::from_millis(1000);
/// A comment on an idle stream this often: a dead connection is noticed by both ends.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Nothing is fetched from anywhere but this server, and scripts are only the page's own.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

#[derive(Clone)]
struct App {
    hub: Arc<DisplayHub>,
    gates: Arc<HashMap<String, Vec<String>>>,
    stop: watch::Receiver<bool>,
    station: Option<Arc<StationCore>>,
}

/// The QR routes of a display whose lanes sell QRs (`[qr]`): a passenger's request and
/// cancel, and the aggregator's payment notification at `notify_path`. They reach the
/// station's QR desk once it is attached ([`StationCore::attach_qr`]); before, they answer
/// 503.
#[derive(Clone)]
pub struct QrRoutes {
    /// Where the aggregator's `qr-mpm-notify` is received.
    pub notify_path: String,
    /// The station whose desk sells.
    pub station: Arc<StationCore>,
}

/// The running display server.
#[derive(Debug)]
pub struct DisplayServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DisplayServer {
    /// Binds `listen` and serves `hub`'s lanes, and `gates` (gate name → its lanes), until
    /// `stop` turns true (or its sender is dropped): then the event streams end and the
    /// server closes.
    pub async fn start(
        listen: SocketAddr,
        hub: Arc<DisplayHub>,
        gates: HashMap<String, Vec<String>>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<DisplayServer> {
        DisplayServer::start_with(listen, hub, gates, stop, None).await
    }

    /// [`DisplayServer::start`], with the QR routes when `qr` is given.
    pub async fn start_with(
        listen: SocketAddr,
        hub: Arc<DisplayHub>,
        gates: HashMap<String, Vec<String>>,
        stop: watch::Receiver<bool>,
        qr: Option<QrRoutes>,
    ) -> std::io::Result<DisplayServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let notify_path = qr.as_ref().map(|q| q.notify_path.clone());
        let app = router(
            App {
                hub,
                gates: Arc::new(gates),
                stop: stop.clone(),
                station: qr.map(|q| q.station),
            },
            notify_path.as_deref(),
        );
        let mut stop = stop;
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "display server stopped");
            }
        });
        Ok(DisplayServer { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the server has closed (after its stop signal).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn router(app: App, notify_path: Option<&str>) -> Router {
    let mut r = Router::new()
        .route("/", get(index))
        .route("/lane/{name}", get(lane_page))
        .route("/gate/{name}", get(gate_page))
        .route("/lane/{name}/events", get(events))
        .route("/lane/{name}/qr", post(qr_request))
        .route("/lane/{name}/qr/cancel", post(qr_cancel));
    if let Some(path) = notify_path {
        r = r.route(
            path,
            post(qr_notify).layer(DefaultBodyLimit::max(crate::qr::notify::MAX_BODY)),
        );
    }
    r.with_state(app)
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{text}\n"),
    )
        .into_response()
}

fn desk(app: &App) -> Option<&Arc<crate::qr::QrDesk>> {
    app.station.as_ref().and_then(|s| s.qr_desk())
}

fn no_desk() -> Response {
    plain(StatusCode::SERVICE_UNAVAILABLE, "no QR sales here".into())
}

/// A passenger's "pay by QR": starts the lane's sale (`202`), or says why not.
async fn qr_request(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Some(desk) = desk(&app) else {
        return no_desk();
    };
    match desk.request(&name) {
        Ok(fare) => plain(
            StatusCode::ACCEPTED,
            format!("QR for {} on its way", super::rupiah_id(fare.0)),
        ),
        Err(e @ crate::qr::QrRefusal::NotOffered(_)) => plain(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => plain(StatusCode::CONFLICT, e.to_string()),
    }
}

/// A passenger's "cancel" on the QR screen.
async fn qr_cancel(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Some(desk) = desk(&app) else {
        return no_desk();
    };
    if desk.withdraw(&name, crate::qr::Withdrawn::Cancelled) {
        plain(StatusCode::ACCEPTED, "QR withdrawn".into())
    } else {
        plain(StatusCode::NOT_FOUND, "no QR on this lane".into())
    }
}

/// The aggregator's payment notification, answered as SNAP specifies.
async fn qr_notify(
    State(app): State<App>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(desk) = desk(&app) else {
        return no_desk();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let answer = desk.notify(uri.path(), header, &body).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(answer.body)).into_response()
}

/// The page showing `lanes` side by side.
fn page(title: &str, lanes: &[String]) -> Response {
    // Lane and gate names are letters, digits, - and _ (config check); `<` is escaped all
    // the same, so that no name can close the script element.
    let lanes = serde_json::to_string(lanes)
        .unwrap_or_else(|_| "[]".into())
        .replace('<', "\\u003c");
    let title = title.replace(['<', '>', '&', '"'], "");
    let body = PAGE
        .replace("/*STYLE*/", STYLE)
        .replace("/*SCRIPT*/", SCRIPT)
        .replace("__LANES__", &lanes)
        .replace("__TITLE__", &title);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        format!("{what}\n"),
    )
        .into_response()
}

async fn index(State(app): State<App>) -> Response {
    let mut lanes: Vec<_> = app.hub.lane_names().map(|l| format!("/lane/{l}")).collect();
    lanes.sort();
    let mut gates: Vec<_> = app.gates.keys().map(|g| format!("/gate/{g}")).collect();
    gates.sort();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(
            "tapgate passenger display\n{}\n",
            lanes
                .into_iter()
                .chain(gates)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
        .into_response()
}

async fn lane_page(State(app): State<App>, Path(name): Path<String>) -> Response {
    if !app.hub.has_lane(&name) {
        return not_found("no such lane");
    }
    page(&name, std::slice::from_ref(&name))
}

async fn gate_page(State(app): State<App>, Path(name): Path<String>) -> Response {
    match app.gates.get(&name) {
        Some(lanes) => page(&name, lanes),
        None => not_found("no such gate"),
    }
}

async fn events(State(app): State<App>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(mut rx) = app.hub.subscribe(&name) else {
        return not_found("no such lane");
    };
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let snapshot = rx.borrow_and_update().clone();
    let first = first_event(&snapshot, last);
    let stream = screens(rx, first, app.stop.clone());
    (
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    )
        .into_response()
}

/// One screen as an event: `event: screen`, the screen's id, the screen as JSON.
fn event(s: &Screen) -> Event {
    Event::default()
        .event("screen")
        .id(s.id.to_string())
        .json_data(s)
        .unwrap_or_else(|_| Event::default().comment("a screen could not be encoded"))
}

/// The lane's screens: `first` (when the page does not have it yet), then every change, until
/// the server stops. The first event also tells the browser how soon to reconnect.
fn screens(
    rx: watch::Receiver<Screen>,
    first: Option<Screen>,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (rx, stop, first, true),
        |(mut rx, mut stop, first, opening)| async move {
            let screen = match first {
                Some(s) => s,
                None => {
                    if *stop.borrow() {
                        return None;
                    }
                    tokio::select! {
                        changed = rx.changed() => {
                            changed.ok()?;
                            rx.borrow_and_update().clone()
                        }
                        _ = stop.wait_for(|s| *s) => return None,
                    }
                }
            };
            let mut ev = event(&screen);
            if opening {
                ev = ev.retry(RETRY);
            }
            Some((Ok(ev), (rx, stop, None, false)))
        },
    )
}
