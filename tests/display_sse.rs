//! The passenger display's HTTP side without a browser: the page is one self-contained
//! document, each lane's events start with its current screen (unless the page already has
//! it), follow every change, and end when the server stops; and `tapgate run` with a
//! `[display]` section serves it and still stops cleanly with a page connected.

mod common;
#[path = "lane_flow/rig.rs"]
mod rig;

use std::time::{Duration, Instant};

use rig::{Displayed, PAN_A};
use serde_json::Value;
use tokio::sync::watch;

/// The rig on a display, on any free port; a second attach of a hub is refused.
async fn serve() -> Displayed {
    let s = Displayed::start(0, Duration::from_secs(60)).await;
    assert!(
        !s.rig.core.attach_display(s.hub.clone()),
        "only the first attach counts"
    );
    s
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// What reading the next event gave.
#[derive(Debug)]
enum Next {
    Event(Event),
    Ended,
    Quiet,
}

#[derive(Debug)]
struct Event {
    id: Option<u64>,
    retry: Option<u64>,
    name: Option<String>,
    data: Value,
}

/// A lane's event stream, read event by event (keep-alive comments skipped).
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(url: &str, last_event_id: Option<u64>) -> Events {
        let mut req = client().get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("events answer");
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        Events {
            resp,
            buf: String::new(),
        }
    }

    async fn next(&mut self, within: Duration) -> Next {
        let until = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(ev) = parse(&block) {
                    return Next::Event(ev);
                }
            }
            match tokio::time::timeout_at(until, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) => return Next::Ended,
                Err(_) => return Next::Quiet,
            }
        }
    }

    async fn event(&mut self) -> Event {
        match self.next(Duration::from_secs(5)).await {
            Next::Event(e) => e,
            other => panic!("an event expected, got {other:?}"),
        }
    }
}

/// One event block; `None` for a comment-only block (keep-alive).
fn parse(block: &str) -> Option<Event> {
    let mut ev = Event {
        id: None,
        retry: None,
        name: None,
        data: Value::Null,
    };
    let mut any = false;
    for line in block.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => ev.id = value.parse().ok(),
            "retry" => ev.retry = value.parse().ok(),
            "event" => ev.name = Some(value.to_string()),
            "data" => ev.data = serde_json::from_str(value).expect("data is JSON"),
            _ => continue,
        }
        any = true;
    }
    any.then_some(ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_one_document_that_fetches_nothing_from_elsewhere() {
    let s = serve().await;
    let base = format!("http://{}", s.server.addr());
    for (path, lanes) in [
        ("/lane/in-1", "[\"in-1\"]"),
        ("/gate/G1", "[\"in-1\",\"out-1\"]"),
    ] {
        let resp = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("page");
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-store");
        let csp = h["content-security-policy"].to_str().unwrap_or("");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let body = resp.text().await.expect("body");
        assert!(body.contains(lanes), "{path}: the page knows its lanes");
        for outside in [
            "http://", "https://", "//fonts", "@import", "url(", " src=", "href=",
        ] {
            assert!(
                !body.contains(outside),
                "{path}: the page fetches {outside:?}"
            );
        }
        assert!(body.contains("new EventSource"), "the script is inline");
        assert!(
            body.contains(".screen[data-tone=\"go\"]"),
            "the style is inline"
        );
    }
    for path in ["/lane/nowhere", "/gate/G9", "/lane/nowhere/events"] {
        let resp = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 404, "{path}");
    }
    let index = client().get(&base).send().await.expect("index");
    let text = index.text().await.expect("text");
    assert!(
        text.contains("/lane/in-1") && text.contains("/gate/G1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_with_the_current_screen_then_follows_each_change() {
    let s = serve().await;
    let url = format!("http://{}/lane/in-1/events", s.server.addr());
    let mut events = Events::open(&url, None).await;
    let first = events.event().await;
    assert_eq!(first.name.as_deref(), Some("screen"));
    assert_eq!(
        first.retry,
        Some(1000),
        "the browser is told to come back within a second"
    );
    assert_eq!(first.data["kind"], "idle");
    assert_eq!(first.data["title_en"], "Tap QRIS TAP here");
    assert_eq!(first.id, first.data["id"].as_u64());

    let r = s.rig.tap("in-1", PAN_A).await;
    assert!(r.opened, "{}", r.message);
    let tap = events.event().await;
    assert_eq!(tap.data["kind"], "approved");
    assert_eq!(tap.data["amount"], "Rp6.000");
    assert_eq!(tap.data["tone"], "go");
    assert!(tap.id > first.id);
    assert_eq!(tap.retry, None);
    let text = tap.data.to_string();
    for secret in ["93600002", "6781", "REF-", "TG"] {
        assert!(
            !text.contains(secret),
            "the screen carries {secret}: {text}"
        );
    }

    // Another lane's change is not this lane's event.
    let r = s.rig.tap("out-1", PAN_A).await;
    assert!(r.opened, "{}", r.message);
    assert!(matches!(
        events.next(Duration::from_millis(300)).await,
        Next::Quiet
    ));

    // A page reconnecting with the id it shows gets nothing new; one with an older id, or
    // none, gets the current screen at once.
    let current = s.hub.snapshot("in-1").expect("lane").id;
    let mut same = Events::open(&url, Some(current)).await;
    assert!(matches!(
        same.next(Duration::from_millis(300)).await,
        Next::Quiet
    ));
    let mut older = Events::open(&url, Some(current - 1)).await;
    let again = older.event().await;
    assert_eq!(again.id, Some(current));
    assert_eq!(again.data["amount"], "Rp6.000");
    let e = s
        .hub
        .show_qr(
            "in-1",
            "00020101021226",
            tapgate::fare::Rupiah(9000),
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60),
        )
        .expect("qr");
    let qr = same.event().await;
    assert_eq!(qr.id, Some(e));
    assert_eq!(qr.data["kind"], "qr");
    assert!(qr.data["qr_svg"]
        .as_str()
        .is_some_and(|s| s.starts_with("<svg")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_every_open_stream_and_closes_the_server() {
    let s = serve().await;
    let addr = s.server.addr();
    let url = format!("http://{addr}/lane/in-1/events");
    let mut a = Events::open(&url, None).await;
    let mut b = Events::open(&format!("http://{addr}/lane/out-1/events"), None).await;
    a.event().await;
    b.event().await;
    let started = Instant::now();
    s.stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), s.server.stopped())
        .await
        .expect("the server closes with streams open");
    assert!(matches!(a.next(Duration::from_secs(2)).await, Next::Ended));
    assert!(matches!(b.next(Duration::from_secs(2)).await, Next::Ended));
    eprintln!("closed in {:?} with two streams open", started.elapsed());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens any more"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `tapgate run` with `[display]`: the page is served before the first tap, and SIGTERM still
/// stops the daemon promptly while a page holds its event stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_display_and_stops_cleanly_with_a_page_connected() {
    let sim = common::start_sim().await;
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let cfg = common::station_config(
        dir.path(),
        &sim.base_url(),
        "",
        &format!(
            "[display]\nlisten = \"127.0.0.1:{port}\"\nidle_after_ms = 2000\n\n\
             [[display.gate]]\nname = \"G1\"\nlanes = [\"in-1\", \"out-1\"]\n"
        ),
    );
    let log = dir.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tapgate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("tapgate run");
    let base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(20);
    let page = loop {
        if let Ok(r) = client().get(format!("{base}/gate/G1")).send().await {
            break r;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the daemon exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < until, "the display never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(page.status(), 200);
    let mut events = Events::open(&format!("{base}/lane/out-1/events"), None).await;
    let first = events.event().await;
    assert_eq!(first.data["kind"], "idle");
    assert_eq!(first.data["direction"], "out");

    let stopping = Instant::now();
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if stopping.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!(
                "the daemon did not stop with a page connected: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(matches!(
        events.next(Duration::from_secs(2)).await,
        Next::Ended
    ));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("passenger display listening"), "{text}");
    eprintln!(
        "daemon stopped in {:?} with a page connected",
        stopping.elapsed()
    );
}

/// The emergency input sets the station's free-exit flag; every lane's screen follows it
/// within a moment, and goes back to idle when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screens_follow_the_stations_free_exit_mode() {
    use std::sync::atomic::Ordering;
    let s = serve().await;
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(tapgate::display::follow_free_exit(
        s.hub.clone(),
        s.rig.core.clone(),
        stop_rx,
    ));
    let mut events = Events::open(
        &format!("http://{}/lane/out-1/events", s.server.addr()),
        None,
    )
    .await;
    assert_eq!(events.event().await.data["kind"], "idle");
    s.rig.core.free_exit.store(true, Ordering::SeqCst);
    let e = events.event().await;
    assert_eq!(e.data["kind"], "free_exit");
    assert_eq!(e.data["title_en"], "Emergency: please exit");
    assert_eq!(e.data["tone"], "go");
    s.rig.core.free_exit.store(false, Ordering::SeqCst);
    assert_eq!(events.event().await.data["kind"], "idle");
}
