//! The simulator's HTTP shell: its own accept loop (so a connection can really be dropped in
//! the middle of a request), axum handlers that hand bytes to the engine, and the `/sim/*`
//! control API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::engine::{Action, Reply, SimRequest};
use super::faults::{Fault, FaultMix, Service};
use super::Shared;

/// Lets a handler close its own connection: the connection task drops the hyper connection,
/// and with it the socket, when notified.
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

/// Accepts connections until `stop` turns true (or its sender goes away), then closes them all.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(shared.clone());
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.lock().connection_accepted();
                    conns.spawn(serve_connection(stream, app.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_connection(stream: TcpStream, app: Router) {
    let kill = Arc::new(Notify::new());
    let ctl = ConnKill(kill.clone());
    let tower = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ctl.clone());
        tower.call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection future closes the socket without writing anything.
        _ = kill.notified() => {}
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/sim/ledger", get(ledger))
        .route("/sim/ledger/passengers", get(passengers))
        .route("/sim/stats", get(stats))
        .route("/sim/decline", post(decline))
        .route("/sim/faults", post(push_faults).delete(clear_faults))
        .route("/sim/random", post(random))
        .route("/sim/ledger/mpm", get(mpm_ledger))
        .route("/sim/linkage/customers", get(customers).post(link_customer))
        .route("/sim/mpm/notifications", post(mpm_notifications))
        .route("/sim/mpm/late", post(mpm_late))
        .fallback(snap)
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

async fn ledger(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.lock().ledger())
}

async fn passengers(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let entries = shared.lock().ledger();
    Json(super::summarize_passengers(&entries))
}

async fn stats(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.lock().stats())
}

#[derive(Deserialize)]
struct DeclineBody {
    pan: String,
    #[serde(default)]
    code: String,
}

async fn decline(State(shared): State<Arc<Shared>>, Json(b): Json<DeclineBody>) -> StatusCode {
    shared.lock().decline_pan(&b.pan, &b.code);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultsBody {
    fault: Fault,
    #[serde(default = "payment")]
    service: Service,
    #[serde(default = "one")]
    count: u32,
}

fn payment() -> Service {
    Service::Payment
}

fn one() -> u32 {
    1
}

async fn push_faults(State(shared): State<Arc<Shared>>, Json(b): Json<FaultsBody>) -> StatusCode {
    let mut engine = shared.lock();
    for _ in 0..b.count.min(10_000) {
        engine.faults.push(b.service, b.fault);
    }
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().faults.clear();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct RandomBody {
    seed: u64,
    mix: FaultMix,
}

async fn random(State(shared): State<Arc<Shared>>, Json(b): Json<RandomBody>) -> StatusCode {
    shared.lock().faults.set_random(b.seed, b.mix);
    StatusCode::NO_CONTENT
}

async fn mpm_ledger(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.lock().mpm_ledger())
}

async fn customers(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.lock().customers())
}

#[derive(Deserialize)]
struct LinkBody {
    balance: u64,
}

async fn link_customer(
    State(shared): State<Arc<Shared>>,
    Json(b): Json<LinkBody>,
) -> impl IntoResponse {
    Json(shared.lock().link_customer(b.balance))
}

#[derive(Deserialize)]
struct DropBody {
    drop: bool,
}

async fn mpm_notifications(
    State(shared): State<Arc<Shared>>,
    Json(b): Json<DropBody>,
) -> StatusCode {
    shared.lock().set_drop_notifications(b.drop);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct LateBody {
    accept: bool,
}

async fn mpm_late(State(shared): State<Arc<Shared>>, Json(b): Json<LateBody>) -> StatusCode {
    shared.lock().set_accept_late_payments(b.accept);
    StatusCode::NO_CONTENT
}

/// An MPM or Linkage call: answered at once (no faults on these endpoints); a payment's
/// notification goes out on its own task.
fn mpm_call(
    shared: &Arc<Shared>,
    ep: super::engine::MpmEndpoint,
    method: &Method,
    req: &SimRequest<'_>,
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let (reply, notification) = shared.lock().handle_mpm(ep, req);
    let code = reply.body["responseCode"].as_str().unwrap_or_default();
    tracing::info!(
        service = ep.name(),
        status = reply.status,
        code,
        "simulator answered"
    );
    if let Some(n) = notification {
        tokio::spawn(super::mpm::deliver(shared.clone(), n));
    }
    json_reply(&reply)
}

/// Every path that is not `/sim/*`: the SNAP endpoints.
async fn snap(
    State(shared): State<Arc<Shared>>,
    kill: Option<Extension<ConnKill>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let mpm = shared.lock().mpm_endpoint_of(&path, &headers, &body);
    if let Some(ep) = mpm {
        let req = SimRequest {
            path: &path,
            headers: &headers,
            body: &body,
        };
        return mpm_call(&shared, ep, &method, &req);
    }
    let Some(service) = shared.lock().service_of(&path) else {
        return json_reply(&Reply {
            status: 404,
            body: serde_json::json!({ "responseCode": "4040000", "responseMessage": "Not Found" }),
        });
    };
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let fault = shared.lock().next_fault(service);
    // The work runs in its own task: a delayed request is processed even when the client
    // hangs up meanwhile, as a slow aggregator would.
    let work = tokio::spawn(async move {
        if let Some(Fault::Delay { ms }) = fault {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let req = SimRequest {
            path: &path,
            headers: &headers,
            body: &body,
        };
        let mut engine = shared.lock();
        engine.handle(service, &req, fault)
    });
    let action = match work.await {
        Ok(a) => a,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let name = service.as_str();
    match &action {
        Action::Answer(r) => {
            let code = r.body["responseCode"].as_str().unwrap_or_default();
            tracing::info!(
                service = name,
                status = r.status,
                code,
                "simulator answered"
            );
        }
        Action::Garbage(_) => tracing::info!(service = name, "simulator sent a cut body (fault)"),
        Action::Drop => tracing::info!(service = name, "simulator dropped the connection (fault)"),
    }
    match action {
        Action::Answer(reply) => json_reply(&reply),
        Action::Garbage(reply) => {
            let text = reply.body.to_string();
            let cut = text
                .as_bytes()
                .get(..text.len() / 2)
                .unwrap_or_default()
                .to_vec();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(cut),
            )
                .into_response()
        }
        Action::Drop => match kill {
            Some(Extension(ConnKill(k))) => {
                k.notify_one();
                std::future::pending::<Infallible>().await;
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
    }
}

fn json_reply(reply: &Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body.to_string(),
    )
        .into_response()
}
