//! The display's HTTP server: one page per lane and per gate, and each lane's screens as
//! server-sent events. Everything a page needs is in its one HTML document.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::hub::{first_event, DisplayHub, Screen};

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
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = router(App {
            hub,
            gates: Arc::new(gates),
            stop: stop.clone(),
        });
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

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/lane/{name}", get(lane_page))
        .route("/gate/{name}", get(gate_page))
        .route("/lane/{name}/events", get(events))
        .with_state(app)
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
