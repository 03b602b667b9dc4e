//! Tap latency by stage, against the parts that cannot be avoided, plus decoder throughput and
//! peak memory. Prints numbers; asserts nothing (run: `cargo bench --bench tap_latency`).
//!
//! The pipeline: scripted phone (APDU exchange) → decode → journal (SQLite, fsync) →
//! SNAP client → simulator over loopback HTTP → recording relay → journal. The floor it is
//! compared with: one APDU exchange + one aggregator round trip + two fsyncs (the journal
//! commits before and after the payment: the before-send one is write-before-send, the one
//! after records the journey and the result together). It also prints the share of a tap spent
//! in the writes after the decision, and what handing one journal call to another thread costs
//! (`JournalHandle::run` as the lanes call it, against `spawn_blocking` and a dedicated thread
//! fed by a channel).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tapgate::config::Config;
use tapgate::cpm::build::{payload, PayloadSpec};
use tapgate::daemon::lane::Lane;
use tapgate::nfc::scripted::ScriptedPhone;
use tapgate::relay::RecordingRelay;
use tapgate::sim::{SimConfig, Simulator};

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("TAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // On a worker, as a lane's task runs in the daemon (not on the thread that blocks on the
    // runtime).
    rt.block_on(async move { tokio::spawn(run(n)).await.expect("bench task") });
}

async fn run(n: usize) {
    let sim = Simulator::start(SimConfig::demo(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sim");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("s"), tapgate::sim::DEMO_CLIENT_SECRET).unwrap();
    std::fs::write(dir.path().join("k.pem"), tapgate::sim::DEMO_PRIVATE_KEY_PEM).unwrap();
    let text = include_str!("../config/demo.toml")
        .replace("http://127.0.0.1:8600", &sim.base_url())
        .replace(
            "\"demo-journal.db\"",
            &format!("{:?}", dir.path().join("j.db")),
        )
        .replace("\"demo-client-secret\"", "\"s\"")
        .replace("\"demo-private-key.pem\"", "\"k.pem\"")
        .replace("debounce_ms = 3000", "debounce_ms = 0");
    let path = dir.path().join("station.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).expect("config");
    let station = tapgate::daemon::station_from_config(cfg.clone(), &path).expect("station");
    let entry = Lane::new(
        cfg.lanes[0].clone(),
        station.clone(),
        Arc::new(RecordingRelay::new()),
    );
    let exit = Lane::new(
        cfg.lanes[1].clone(),
        station.clone(),
        Arc::new(RecordingRelay::new()),
    );
    station.aggregator.ensure_token().await.expect("token");

    // Floors: an APDU exchange, an aggregator round trip (query), an fsync'd write.
    let mut apdu = Vec::new();
    let mut rtt = Vec::new();
    let mut fsync = Vec::new();
    for i in 0..n.min(200) {
        let p = payload(&PayloadSpec::new("9360000201100456781").with_token(&[i as u8; 16]));
        let t = Instant::now();
        let mut phone = ScriptedPhone::new(&p, &[84, 64]);
        let _ = tapgate::nfc::qris_tap::read_qr_content(&mut phone);
        apdu.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        let _ = station.aggregator.query("TGBENCHNOSUCHREF").await;
        rtt.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        let mut f = std::fs::File::create(dir.path().join("fsync-probe")).unwrap();
        f.write_all(&[0u8; 512]).unwrap();
        f.sync_all().unwrap();
        fsync.push(t.elapsed().as_micros() as u64);
    }
    let floor =
        pct(&mut apdu.clone(), 0.5) + pct(&mut rtt.clone(), 0.5) + 2 * pct(&mut fsync.clone(), 0.5);

    let mut stages: Vec<(&str, Vec<u64>)> = [
        "read",
        "decode",
        "journal",
        "aggregator",
        "relay",
        "settle",
        "gate open",
        "total",
    ]
    .iter()
    .map(|s| (*s, Vec::new()))
    .collect();
    let mut entry_settle = Vec::with_capacity(n);
    let mut entry_total = Vec::with_capacity(n);
    let wall = Instant::now();
    for i in 0..n {
        let pan = format!("93600002{:011}", i);
        // Each passenger enters first, so the tap-out closes a journey (the journey change and
        // the result are both written after the decision).
        let p = payload(&PayloadSpec::new(&pan).with_token(&rand::random::<[u8; 16]>()));
        let r = entry.handle_payload(&p, 0).await;
        assert!(r.opened, "{r:?}");
        entry_settle.push(r.timings.settle_us);
        entry_total.push(r.timings.total_us);
        let p = payload(&PayloadSpec::new(&pan).with_token(&rand::random::<[u8; 16]>()));
        let mut phone = ScriptedPhone::new(&p, &[84, 64]);
        let r = exit
            .handle_event(tapgate::nfc::source::tap_event("bench", &mut phone))
            .await
            .expect("report");
        assert!(r.opened, "{r:?}");
        let tm = r.timings;
        for (name, v) in stages.iter_mut() {
            v.push(match *name {
                "read" => tm.read_us,
                "decode" => tm.decode_us,
                "journal" => tm.journal_us,
                "aggregator" => tm.aggregator_us,
                "relay" => tm.relay_us,
                "settle" => tm.settle_us,
                "gate open" => tm.read_us + tm.decision_us + tm.relay_us,
                _ => tm.total_us + tm.read_us,
            });
        }
    }
    let secs = wall.elapsed().as_secs_f64();
    println!("tap latency over {n} approved tap-outs, each closing a journey (microseconds)");
    println!("{:<11} {:>8} {:>8} {:>8}", "stage", "p50", "p95", "p99");
    for (name, v) in stages.iter_mut() {
        println!(
            "{:<11} {:>8} {:>8} {:>8}",
            name,
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 0.99)
        );
    }
    println!(
        "floor p50: APDU {} + aggregator round trip {} + 2 x fsync {} = {} us",
        pct(&mut apdu, 0.5),
        pct(&mut rtt, 0.5),
        pct(&mut fsync, 0.5),
        floor
    );
    let total_p50 = stages
        .iter_mut()
        .find(|(n, _)| *n == "total")
        .map(|(_, v)| pct(v, 0.5))
        .unwrap_or(0);
    println!(
        "tap p50 {total_p50} us = {:.2} x the floor; {:.0} tap-in/tap-out pairs/s sequential",
        total_p50 as f64 / floor.max(1) as f64,
        n as f64 / secs
    );

    let one_fsync_floor =
        pct(&mut apdu.clone(), 0.5) + pct(&mut rtt.clone(), 0.5) + pct(&mut fsync.clone(), 0.5);
    let (open_p50, open_p99) = stages
        .iter_mut()
        .find(|(n, _)| *n == "gate open")
        .map(|(_, v)| (pct(v, 0.5), pct(v, 0.99)))
        .unwrap_or((0, 0));
    println!(
        "read + aggregator round trip + one fsync = {one_fsync_floor} us: gate open p50 {:.2} x, \
         p99 {:.2} x; full tap p50 {:.2} x",
        open_p50 as f64 / one_fsync_floor.max(1) as f64,
        open_p99 as f64 / one_fsync_floor.max(1) as f64,
        total_p50 as f64 / one_fsync_floor.max(1) as f64,
    );
    let settle_p50 = stages
        .iter_mut()
        .find(|(n, _)| *n == "settle")
        .map(|(_, v)| pct(v, 0.5))
        .unwrap_or(0);
    println!(
        "after the decision: settle p50 {settle_p50} us = {:.0} % of the tap-out p50",
        100.0 * settle_p50 as f64 / total_p50.max(1) as f64
    );
    let (in_settle, in_total) = (pct(&mut entry_settle, 0.5), pct(&mut entry_total, 0.5));
    println!(
        "tap-ins (opening a journey): total p50 {in_total} p95 {} us, settle p50 {in_settle} p95 \
         {} us = {:.0} % of the tap-in p50",
        pct(&mut entry_total, 0.95),
        pct(&mut entry_settle, 0.95),
        100.0 * in_settle as f64 / in_total.max(1) as f64
    );

    // The hand-off of one journal call, without its work (a no-op on the journal).
    let calls = 2000;
    let mut handle_run = Vec::with_capacity(calls);
    let mut pool = Vec::with_capacity(calls);
    let mut thread = Vec::with_capacity(calls);
    let (tx, rx) =
        std::sync::mpsc::channel::<(Box<dyn FnOnce() + Send>, tokio::sync::oneshot::Sender<()>)>();
    let worker = std::thread::spawn(move || {
        for (f, done) in rx {
            f();
            let _ = done.send(());
        }
    });
    for _ in 0..calls {
        let t = Instant::now();
        station.journal.run(|_| Ok(())).await.expect("journal");
        handle_run.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        tokio::task::spawn_blocking(|| ()).await.expect("pool");
        pool.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        let (done, wait) = tokio::sync::oneshot::channel();
        tx.send((Box::new(|| ()), done)).expect("thread");
        wait.await.expect("thread");
        thread.push(t.elapsed().as_micros() as u64);
    }
    drop(tx);
    let _ = worker.join();
    println!("journal call hand-off over {calls} no-op calls (microseconds)");
    println!("{:<28} {:>6} {:>6} {:>6}", "", "p50", "p95", "p99");
    for (name, v) in [
        ("JournalHandle::run (lanes)", &mut handle_run),
        ("spawn_blocking", &mut pool),
        ("dedicated thread + channel", &mut thread),
    ] {
        println!(
            "{:<28} {:>6} {:>6} {:>6}",
            name,
            pct(v, 0.5),
            pct(v, 0.95),
            pct(v, 0.99)
        );
    }

    // Decoder throughput.
    let p = payload(&PayloadSpec::new("9360091430100531720").with_name("SITI RAHAYU"));
    let iters = 200_000;
    let t = Instant::now();
    let mut ok = 0usize;
    for _ in 0..iters {
        ok += tapgate::cpm::decode(std::hint::black_box(&p)).is_ok() as usize;
    }
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!(
        "decode: {ns:.0} ns per payload ({} chars), {ok} ok",
        p.len()
    );
    println!("peak RSS: {} KiB", peak_rss_kib());
    sim.shutdown().await;
}
