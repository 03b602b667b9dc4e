//! The card-source port: how a lane receives [`CardEvent`]s (reader up or down, a payload, a
//! read that failed) and shows the passenger a verdict, without knowing what reads the phones.
//!
//! Adapters: [`crate::nfc::pcsc::PcscSource`] (a reader through pcscd, on its own thread) and
//! [`ScriptedSource`] (a fixed sequence of events, for tests, with [`tap_event`] to make the
//! events from a [`ScriptedPhone`]).
//!
//! The port is two object-safe traits because a running source has two owners: the lane's task
//! pulls events from the [`CardSource`] and shows feedback on it, while the daemon keeps the
//! [`SourceControl`] to ask whether the source still runs (the watchdog) and to stop it first
//! at shutdown, while the lane drains what was already read.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::feedback::Signal;
use super::qris_tap::read_qr_content;
use super::scripted::ScriptedPhone;
use super::CardEvent;

/// The future [`CardSource::next_event`] returns: boxed, so the trait stays object-safe and a
/// daemon can hold lanes with different sources side by side. One allocation per event; taps
/// come seconds apart.
pub type NextEvent<'a> = Pin<Box<dyn Future<Output = Option<CardEvent>> + Send + 'a>>;

/// Where a lane's card events come from.
pub trait CardSource: Send {
    /// The next event, waiting for it. `None` once the source has ended: it was stopped (or
    /// failed for good) and every event it had already read was delivered.
    fn next_event(&mut self) -> NextEvent<'_>;

    /// Shows the passenger a tap's verdict on `reader` (LED, buzzer). Cosmetic: never blocks
    /// the lane and never fails it; a source logs its own failures. Sources without a way to
    /// show anything do nothing.
    fn show(&self, reader: &str, signal: Signal) {
        let _ = (reader, signal);
    }
}

/// The daemon's hold on a running source whose events a lane consumes.
pub trait SourceControl: Send + Sync {
    /// Whether the source still reads taps (the watchdog withholds its ping when not).
    fn is_running(&self) -> bool;

    /// Stops reading taps. Blocking (call it from `spawn_blocking`): returns once a tap being
    /// read has been handed to the lane, so the lane's [`CardSource::next_event`] then drains
    /// what is left and returns `None`.
    fn stop(self: Box<Self>);
}

/// What a [`ScriptedSource`] was asked to show, readable after the source moved into a lane.
#[derive(Clone, Debug, Default)]
pub struct ShownSignals(Arc<Mutex<Vec<(String, Signal)>>>);

impl ShownSignals {
    /// Every `(reader, signal)` shown so far, oldest first.
    pub fn get(&self) -> Vec<(String, Signal)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Signal)>> {
        // Poisoned only if a test thread panicked mid-push; the list is intact.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A card source that plays back a fixed sequence of events, then ends (`None`): for lane and
/// daemon tests. It records what it is asked to show ([`ScriptedSource::shown`]); its
/// [`ScriptedControl`] stops it, after which the events not yet delivered are never read,
/// as with a reader stopped before the phone came.
#[derive(Debug)]
pub struct ScriptedSource {
    events: VecDeque<CardEvent>,
    shown: ShownSignals,
    stopped: Arc<AtomicBool>,
}

impl ScriptedSource {
    /// A source that delivers `events` in order.
    pub fn new(events: impl IntoIterator<Item = CardEvent>) -> Self {
        ScriptedSource {
            events: events.into_iter().collect(),
            shown: ShownSignals::default(),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A handle on the signals shown, to read after the source was handed to a lane.
    pub fn shown(&self) -> ShownSignals {
        self.shown.clone()
    }

    /// The daemon's side of this source.
    pub fn control(&self) -> ScriptedControl {
        ScriptedControl {
            stopped: Arc::clone(&self.stopped),
        }
    }
}

impl CardSource for ScriptedSource {
    fn next_event(&mut self) -> NextEvent<'_> {
        let next = if self.stopped.load(Ordering::SeqCst) {
            None
        } else {
            self.events.pop_front()
        };
        Box::pin(std::future::ready(next))
    }

    fn show(&self, reader: &str, signal: Signal) {
        self.shown.lock().push((reader.to_owned(), signal));
    }
}

/// [`SourceControl`] of a [`ScriptedSource`]: running until stopped.
#[derive(Clone, Debug)]
pub struct ScriptedControl {
    stopped: Arc<AtomicBool>,
}

impl SourceControl for ScriptedControl {
    fn is_running(&self) -> bool {
        !self.stopped.load(Ordering::SeqCst)
    }

    fn stop(self: Box<Self>) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// One tap of `phone` on the reader named `reader`: the QRIS TAP exchange run against the
/// scripted phone, reported the way a reader service reports it.
pub fn tap_event(reader: &str, phone: &mut ScriptedPhone) -> CardEvent {
    let started = Instant::now();
    let result = read_qr_content(phone);
    let read_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let reader = reader.to_owned();
    match result {
        Ok(qr_content) => CardEvent::Payload {
            reader,
            qr_content,
            read_us,
        },
        Err(error) => CardEvent::ReadFailed {
            reader,
            error,
            read_us,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfc::scripted::Fault;
    use crate::nfc::TapReadError;

    fn up(reader: &str) -> CardEvent {
        CardEvent::ReaderUp {
            reader: reader.into(),
        }
    }

    #[tokio::test]
    async fn a_scripted_source_delivers_its_events_in_order_then_ends() {
        let mut phone = ScriptedPhone::new("hQVDUFYw", &[4]);
        let mut not_ready = ScriptedPhone::new("hQVDUFYw", &[]).with_fault(Fault::WalletNotReady);
        let mut source: Box<dyn CardSource> = Box::new(ScriptedSource::new([
            up("R"),
            tap_event("R", &mut phone),
            tap_event("R", &mut not_ready),
        ]));
        assert!(
            matches!(source.next_event().await, Some(CardEvent::ReaderUp { reader }) if reader == "R")
        );
        match source.next_event().await {
            Some(CardEvent::Payload {
                reader, qr_content, ..
            }) => {
                assert_eq!(reader, "R");
                assert_eq!(qr_content, "hQVDUFYw", "read over two records");
            }
            other => panic!("expected the payload, got {other:?}"),
        }
        assert!(matches!(
            source.next_event().await,
            Some(CardEvent::ReadFailed {
                error: TapReadError::WalletNotReady { .. },
                ..
            })
        ));
        assert!(source.next_event().await.is_none(), "the script ended");
        assert!(source.next_event().await.is_none(), "and stays ended");
    }

    #[tokio::test]
    async fn stopping_a_scripted_source_ends_it_and_shows_are_recorded() {
        let source = ScriptedSource::new([up("R"), up("R")]);
        let shown = source.shown();
        let control: Box<dyn SourceControl> = Box::new(source.control());
        let mut source: Box<dyn CardSource> = Box::new(source);
        assert!(source.next_event().await.is_some());
        source.show("R", Signal::Approved);
        source.show("R", Signal::WalletNotReady);
        assert!(control.is_running());
        control.stop();
        assert!(source.next_event().await.is_none(), "no event after stop");
        assert_eq!(
            shown.get(),
            vec![
                ("R".to_owned(), Signal::Approved),
                ("R".to_owned(), Signal::WalletNotReady)
            ]
        );
    }
}
