//! The reader service: the OS thread that owns a PC/SC context, blocks in
//! `SCardGetStatusChange`, feeds what it sees to the [`TapMachine`], runs the exchange with a
//! phone and sends [`CardEvent`]s to the lane. Every decision it takes is in [`super::machine`].

use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use tokio::sync::mpsc;

use super::channel::PcscChannel;
use super::machine::{
    classify, Act, Backoff, Health, HealthTracker, ReaderOptions, ReaderPattern, Recovery, Seen,
    TapMachine,
};
use crate::nfc::qris_tap::read_qr_content;
use crate::nfc::{CardEvent, ChannelError, TapReadError};

/// The readers pcscd knows now, for `tapgate readers` and `doctor`. An empty list when pcscd
/// runs without readers; `Err` (typically `NoService`) when pcscd cannot be reached.
pub fn list_readers() -> Result<Vec<String>, pcsc::Error> {
    let ctx = Context::establish(Scope::User)?;
    Service::list_readers(&ctx)
}

/// Shared between the service thread and its handle: the context to cancel, and the stop flag.
struct Control {
    stop: Mutex<bool>,
    wake: Condvar,
    context: Mutex<Option<Context>>,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.lock().map(|s| *s).unwrap_or(true)
    }

    /// Sleeps for `d` unless stop is requested first; returns whether to stop.
    fn sleep(&self, d: Duration) -> bool {
        let Ok(guard) = self.stop.lock() else {
            return true;
        };
        match self.wake.wait_timeout_while(guard, d, |stop| !*stop) {
            Ok((guard, _)) => *guard,
            Err(_) => true,
        }
    }

    fn publish(&self, ctx: Option<Context>) {
        if let Ok(mut slot) = self.context.lock() {
            *slot = ctx;
        }
    }
}

/// A running reader service. [`ReaderHandle::stop`] (or dropping the handle) cancels its wait
/// and joins the thread; a tap being read finishes first (bounded by the tap deadline).
///
/// Events are sent with `blocking_send`: the lane must keep receiving, or drop its receiver,
/// until `stop` returns, or the thread can wait forever on a full channel.
pub struct ReaderHandle {
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl ReaderHandle {
    /// Whether the service's thread is still running (the watchdog asks).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the service and waits for its thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(mut stop) = self.control.stop.lock() {
            *stop = true;
        }
        self.control.wake.notify_all();
        if let Ok(slot) = self.control.context.lock() {
            if let Some(ctx) = slot.as_ref() {
                // Wakes a blocked SCardGetStatusChange; failure means there was nothing to wake.
                let _ = ctx.cancel();
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ReaderHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a reader service for the reader matching `pattern`, sending its events to `tx`.
///
/// Events: [`CardEvent::ReaderUp`] / [`CardEvent::ReaderDown`] on each change of the lane's
/// reader (a `ReaderDown` also when none is found at start), and one [`CardEvent::Payload`]
/// or [`CardEvent::ReadFailed`] per tap. The service ends when the handle is stopped or
/// dropped, or when the receiver is dropped. Fails only if the OS refuses a thread.
pub fn spawn_reader(
    pattern: ReaderPattern,
    tx: mpsc::Sender<CardEvent>,
    opts: ReaderOptions,
) -> std::io::Result<ReaderHandle> {
    let control = Arc::new(Control {
        stop: Mutex::new(false),
        wake: Condvar::new(),
        context: Mutex::new(None),
    });
    let for_thread = Arc::clone(&control);
    let thread = std::thread::Builder::new()
        .name(format!("pcsc:{}", pattern.as_str()))
        .spawn(move || {
            let mut service = Service {
                pattern,
                tx,
                opts: opts.clone(),
                control: for_thread,
                health: HealthTracker::new(),
                machine: TapMachine::new(),
                backoff: Backoff::new(opts.backoff_initial, opts.backoff_max),
            };
            service.run();
        })?;
    Ok(ReaderHandle {
        control,
        thread: Some(thread),
    })
}

/// Why a context's loop ended.
enum ContextEnd {
    Stop,
    Lost(pcsc::Error),
}

struct Service {
    pattern: ReaderPattern,
    tx: mpsc::Sender<CardEvent>,
    opts: ReaderOptions,
    control: Arc<Control>,
    health: HealthTracker,
    machine: TapMachine,
    backoff: Backoff,
}

impl Service {
    fn run(&mut self) {
        loop {
            if self.control.stopping() {
                break;
            }
            let end = match Context::establish(Scope::User) {
                Ok(ctx) => {
                    self.control.publish(Some(ctx.clone()));
                    // A stop that came before the context was published could not cancel it.
                    let end = if self.control.stopping() {
                        ContextEnd::Stop
                    } else {
                        self.with_context(&ctx)
                    };
                    self.control.publish(None);
                    end
                }
                Err(e) => ContextEnd::Lost(e),
            };
            match end {
                ContextEnd::Stop => break,
                ContextEnd::Lost(e) => {
                    let why = format!("pcscd unreachable: {e}");
                    if self.set_health(Health::ServiceDown, &why).is_err() {
                        break;
                    }
                    let delay = self.backoff.next_delay();
                    tracing::debug!(error = %e, ?delay, "pcsc context lost; re-establishing");
                    if self.control.sleep(delay) {
                        break;
                    }
                }
            }
        }
        tracing::debug!(pattern = self.pattern.as_str(), "reader service stopped");
    }

    /// Records a health change: one log line and, where the lane cares, one event.
    /// Err when the lane is gone (receiver dropped).
    fn set_health(&mut self, next: Health, why: &str) -> Result<(), ()> {
        let Some(previous) = self.health.set(next.clone()) else {
            return Ok(());
        };
        let pattern = self.pattern.as_str();
        match &next {
            Health::ServiceDown => {
                tracing::warn!(
                    pattern,
                    error = why,
                    "pcscd unreachable; retrying with backoff"
                )
            }
            Health::NoReader => tracing::warn!(pattern, "no reader matches the lane's pattern"),
            Health::Reader(name) => tracing::info!(reader = %name, "reader up"),
            Health::Starting => {}
        }
        if let Health::Reader(name) = &next {
            self.machine.on(Seen::ReaderUp);
            return self.emit(CardEvent::ReaderUp {
                reader: name.clone(),
            });
        }
        self.machine.on(Seen::ReaderDown);
        let reader = match previous {
            Health::Reader(name) => name,
            // Down at start: the lane learns its reader is missing.
            Health::Starting => pattern.to_owned(),
            // Already reported down; the reason changed, the lane's view did not.
            _ => return Ok(()),
        };
        self.emit(CardEvent::ReaderDown {
            reader,
            why: why.to_owned(),
        })
    }

    fn emit(&self, event: CardEvent) -> Result<(), ()> {
        self.tx.blocking_send(event).map_err(|_| ())
    }

    fn list_readers(ctx: &Context) -> Result<Vec<String>, pcsc::Error> {
        match ctx.list_readers_owned() {
            Ok(names) => Ok(names
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()),
            Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Runs on one context until it dies or the service stops.
    fn with_context(&mut self, ctx: &Context) -> ContextEnd {
        loop {
            let names = match Self::list_readers(ctx) {
                Ok(names) => names,
                Err(e) => match classify(e) {
                    Recovery::Stop => return ContextEnd::Stop,
                    _ => return ContextEnd::Lost(e),
                },
            };
            let chosen = self.pattern.choose(&names).map(str::to_owned);
            let step = match chosen {
                None => {
                    if self
                        .set_health(Health::NoReader, "no reader matches")
                        .is_err()
                    {
                        return ContextEnd::Stop;
                    }
                    self.wait_for_readers(ctx)
                }
                Some(name) => {
                    if self.set_health(Health::Reader(name.clone()), "").is_err() {
                        return ContextEnd::Stop;
                    }
                    self.watch(ctx, &name)
                }
            };
            match step {
                Ok(()) => {}
                Err(end) => return end,
            }
        }
    }

    /// No reader: sleep in the PnP wait until readers change or the relist period passes.
    fn wait_for_readers(&mut self, ctx: &Context) -> Result<(), ContextEnd> {
        let mut pnp = [ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        // The first call only reports the current count; the second one waits for a change.
        for _ in 0..2 {
            match ctx.get_status_change(self.opts.relist_every, &mut pnp) {
                Ok(()) => {
                    self.backoff.reset();
                    if pnp[0].event_state().contains(State::CHANGED)
                        && pnp[0].current_state() != State::UNAWARE
                    {
                        return Ok(());
                    }
                    pnp[0].sync_current_state();
                }
                Err(e) => match classify(e) {
                    Recovery::Stop => return Err(ContextEnd::Stop),
                    Recovery::Idle => {
                        self.backoff.reset();
                        return Ok(());
                    }
                    _ => return Err(ContextEnd::Lost(e)),
                },
            }
        }
        Ok(())
    }

    /// Watches the lane's reader; returns Ok to re-list readers, Err when the context ends.
    fn watch(&mut self, ctx: &Context, name: &str) -> Result<(), ContextEnd> {
        let Ok(cname) = CString::new(name) else {
            // pcscd never lists a name with a NUL; treat it as gone rather than panic.
            return Ok(());
        };
        let mut states = [
            ReaderState::new(cname.clone(), State::UNAWARE),
            ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE),
        ];
        loop {
            match ctx.get_status_change(self.opts.relist_every, &mut states) {
                Ok(()) => self.backoff.reset(),
                Err(e) => match classify(e) {
                    Recovery::Stop => return Err(ContextEnd::Stop),
                    // Periodic re-list, in case a PnP event was missed.
                    Recovery::Idle => {
                        self.backoff.reset();
                        return Ok(());
                    }
                    Recovery::Relist => return self.reader_lost(name, &e.to_string()),
                    _ => return Err(ContextEnd::Lost(e)),
                },
            }
            let reader = states[0].event_state();
            if reader.intersects(State::UNKNOWN | State::UNAVAILABLE | State::IGNORE) {
                return self.reader_lost(name, "reader removed");
            }
            let pnp_changed = states[1].event_state().contains(State::CHANGED)
                && states[1].current_state() != State::UNAWARE;
            for s in states.iter_mut() {
                s.sync_current_state();
            }
            let present = reader.contains(State::PRESENT) && !reader.contains(State::MUTE);
            let seen = Seen::Field {
                present,
                events: states[0].event_count(),
            };
            tracing::trace!(reader = name, state = ?reader, ?seen, tap = ?self.machine.state(), "reader state");
            if self.machine.on(seen) == Act::ReadPhone {
                let outcome = self.read_phone(ctx, &cname, name);
                self.machine.on(Seen::ExchangeDone);
                outcome?;
            }
            if pnp_changed {
                // Another reader came or went; a better match may exist, and ours may be gone.
                return Ok(());
            }
        }
    }

    fn reader_lost(&mut self, name: &str, why: &str) -> Result<(), ContextEnd> {
        tracing::debug!(reader = name, why, "reader lost; listing readers again");
        match self.set_health(Health::NoReader, why) {
            Ok(()) => Ok(()),
            Err(()) => Err(ContextEnd::Stop),
        }
    }

    /// One tap: connect, run the exchange within the deadlines, report, disconnect.
    fn read_phone(
        &mut self,
        ctx: &Context,
        cname: &std::ffi::CStr,
        name: &str,
    ) -> Result<(), ContextEnd> {
        let started = Instant::now();
        let tap_deadline = started + self.opts.tap_deadline;
        let result: Result<String, TapReadError>;
        let mut context_failure = None;
        match ctx.connect(cname, ShareMode::Shared, Protocols::ANY) {
            Ok(card) => {
                let mut channel = PcscChannel::new(&card, tap_deadline, self.opts.apdu_deadline);
                result = read_qr_content(&mut channel);
                if let Some(e) = channel.failure() {
                    if classify(e) == Recovery::Reestablish {
                        context_failure = Some(e);
                    }
                }
                // Leave the phone's session alone: a reset would make it start over.
                if let Err((card, _)) = card.disconnect(Disposition::LeaveCard) {
                    drop(card);
                }
            }
            Err(e) => {
                result = Err(match classify(e) {
                    Recovery::CardGone => TapReadError::CardLost {
                        step: "CONNECT".into(),
                    },
                    Recovery::Stop => return Err(ContextEnd::Stop),
                    Recovery::Reestablish => {
                        context_failure = Some(e);
                        TapReadError::Channel(ChannelError::Reader(format!("SCardConnect: {e}")))
                    }
                    _ => TapReadError::Channel(ChannelError::Reader(format!("SCardConnect: {e}"))),
                });
            }
        }
        let read_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let event = match result {
            Ok(qr_content) => {
                tracing::debug!(
                    reader = name,
                    read_us,
                    chars = qr_content.len(),
                    "phone read"
                );
                CardEvent::Payload {
                    reader: name.to_owned(),
                    qr_content,
                    read_us,
                }
            }
            Err(error) => {
                tracing::info!(reader = name, read_us, %error, "tap not read");
                CardEvent::ReadFailed {
                    reader: name.to_owned(),
                    error,
                    read_us,
                }
            }
        };
        if self.emit(event).is_err() {
            return Err(ContextEnd::Stop);
        }
        match context_failure {
            Some(e) => Err(ContextEnd::Lost(e)),
            None => Ok(()),
        }
    }
}
