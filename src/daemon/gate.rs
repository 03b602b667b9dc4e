//! The gate inputs in the daemon: emergency → free-exit mode for the station, passages matched
//! to paid opens, and the notices a technician needs in the log. The logic is
//! [`crate::relay::monitor::GateMonitor`]; this module carries its notices out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::daemon::Station;
use crate::relay::inputs::{monotonic_now, InputEvent, InputEventKind};
use crate::relay::monitor::Notice;
use crate::relay::Relay;

/// Runs until `stop`: feeds input events to the station's monitor and acts on its notices.
pub async fn run(
    station: Arc<Station>,
    relays: HashMap<String, Arc<dyn Relay>>,
    mut rx: mpsc::Receiver<InputEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = {
            let m = station.monitor.lock().unwrap_or_else(|e| e.into_inner());
            m.next_deadline()
                .map(|d| d.saturating_sub(monotonic_now()))
                .unwrap_or(Duration::from_secs(3600))
        };
        let notices = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    if ev.kind == InputEventKind::Passage {
                        if let Some(relay) = ev.lane.as_ref().and_then(|l| relays.get(l)) {
                            if let Err(e) = relay.passage() {
                                tracing::error!(lane = ?ev.lane, error = %e, "relay did not take the passage");
                            }
                        }
                    }
                    station.monitor.lock().unwrap_or_else(|e| e.into_inner()).on_event(&ev)
                }
                None => return,
            },
            _ = tokio::time::sleep(wait) => {
                station.monitor.lock().unwrap_or_else(|e| e.into_inner()).tick(monotonic_now())
            }
            _ = stop.changed() => return,
        };
        for n in notices {
            act(&station, &relays, n);
        }
    }
}

fn act(station: &Station, relays: &HashMap<String, Arc<dyn Relay>>, n: Notice) {
    let m = &station.metrics;
    match n {
        Notice::EnterFreeExit { input } => {
            station.free_exit.store(true, Ordering::SeqCst);
            m.set("tapgate_free_exit", &[], 1.0);
            tracing::error!(target: "tapgate::gate", input = %input,
                "EMERGENCY: free-exit mode: every gate held open, no fares taken");
            for (lane, r) in relays {
                if let Err(e) = r.set_free_exit(true) {
                    tracing::error!(target: "tapgate::gate", lane = %lane, error = %e,
                        "could not hold the gate open for free exit (the wiring must)");
                }
            }
        }
        Notice::LeaveFreeExit => {
            for (lane, r) in relays {
                if let Err(e) = r.set_free_exit(false) {
                    tracing::error!(target: "tapgate::gate", lane = %lane, error = %e,
                        "could not return the gate to normal after free exit");
                }
            }
            station.free_exit.store(false, Ordering::SeqCst);
            m.set("tapgate_free_exit", &[], 0.0);
            tracing::warn!(target: "tapgate::gate", "emergency cleared: free-exit mode left, validating again");
        }
        Notice::Passage { lane, free_exit } => {
            let kind = if free_exit { "free_exit" } else { "paid" };
            m.inc("tapgate_passages_total", &[("lane", &lane), ("kind", kind)]);
        }
        Notice::UnpaidPassage { lane, .. } => {
            m.inc(
                "tapgate_passages_total",
                &[("lane", &lane), ("kind", "unpaid")],
            );
            tracing::warn!(target: "tapgate::gate", lane = %lane, "passage with no paid open (tailgating or forced gate)");
        }
        Notice::NobodyPassed { lane, .. } => {
            m.inc("tapgate_nobody_passed_total", &[("lane", &lane)]);
            tracing::warn!(target: "tapgate::gate", lane = %lane, "gate opened for a paid tap but nobody passed");
        }
        Notice::Status {
            role,
            input,
            lane,
            active,
        } => {
            tracing::warn!(target: "tapgate::gate", ?role, input = %input, lane = ?lane, active, "gate input changed");
        }
        Notice::InputLost { input } => {
            m.inc("tapgate_inputs_lost_total", &[("input", &input)]);
            tracing::error!(target: "tapgate::gate", input = %input,
                "gate input no longer observed: tapgate cannot follow it (the wiring still does)");
        }
    }
}
