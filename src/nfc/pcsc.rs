//! The real card source: a lane's reader through pcscd, on its own OS thread.
//!
//! One thread per reader service owns one PC/SC context at a time and blocks in
//! `SCardGetStatusChange`; [`ReaderHandle`] stops it with `SCardCancel`. Events go to the lane
//! as [`CardEvent`]s over a tokio channel.
//!
//! The decisions are pure and tested without pcscd: which reader a [`ReaderPattern`] picks,
//! the tap state machine ([`TapMachine`]: a phone left on the reader is one tap), what a PC/SC
//! error means ([`classify`]), the reconnect schedule ([`Backoff`]) and when the health of the
//! link changed ([`HealthTracker`], so each change is logged once, never once per retry).
//!
//! Hardware truths this module relies on:
//! * a PC/SC context does not survive a pcscd restart: after `NoService`, `ServiceStopped`,
//!   `CommError` or `InvalidHandle` it is dropped and a new one established, with backoff;
//! * pcscd reports readers appearing and disappearing through the `\\?PnP?\Notification`
//!   pseudo-reader; the wait also times out every [`ReaderOptions::relist_every`] and the
//!   reader list is read again, for drivers and setups where PnP events do not arrive;
//! * a single `SCardTransmit` cannot be interrupted: its bound is the reader's own ISO-DEP
//!   frame waiting time. The per-APDU and per-tap deadlines here are checked around each
//!   command, and an answer that arrives late is discarded as a timeout.

use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use tokio::sync::mpsc;

use super::feedback::{self, FeedbackError, FeedbackModel, ReaderCommand, Signal};
use super::{ApduChannel, CardEvent, ChannelError, TapReadError};

use super::qris_tap::read_qr_content;

/// Which reader a lane uses, matched against pcscd's reader names, ignoring ASCII case.
///
/// Without `*` the pattern matches any name containing it ("ACR1252" matches
/// "ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00"); with `*` the whole name must
/// match, `*` standing for any run of characters ("ACS ACR1252*PICC*").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderPattern {
    pattern: String,
}

impl ReaderPattern {
    /// A pattern as written in the config.
    pub fn new(pattern: &str) -> Self {
        ReaderPattern {
            pattern: pattern.to_owned(),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `name` is matched.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let pattern = self.pattern.to_ascii_lowercase();
        if !pattern.contains('*') {
            return name.contains(&pattern);
        }
        glob_match(&pattern, &name)
    }

    /// The reader to use among `names`: the first match in sorted order, so the choice does
    /// not depend on the order pcscd lists readers in.
    pub fn choose<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        let mut hits: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| self.matches(n))
            .collect();
        hits.sort_unstable();
        hits.first().copied()
    }
}

/// `*`-only glob over whole strings, iterative (no recursion, linear backtracking).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Timings of a reader service. The defaults suit a gate: a phone's HCE session gives up
/// after about 500 ms of silence, and taps must work again within 2 s of pcscd coming back.
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    /// Budget for the whole APDU exchange of one tap, from connect to last answer.
    pub tap_deadline: Duration,
    /// Budget for one command's answer.
    pub apdu_deadline: Duration,
    /// First wait before re-establishing a lost PC/SC context.
    pub backoff_initial: Duration,
    /// Longest wait between attempts to reach pcscd.
    pub backoff_max: Duration,
    /// How often the reader list is read again when no PnP event came (fallback).
    pub relist_every: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            tap_deadline: Duration::from_millis(1500),
            apdu_deadline: Duration::from_millis(700),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            relist_every: Duration::from_secs(5),
        }
    }
}

/// Doubling delays from `initial` up to `max`; [`Backoff::reset`] after a healthy wait.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A schedule starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Back to the first delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What to do after a PC/SC call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// pcscd went away or the context is dead: drop the context, wait, establish a new one.
    Reestablish,
    /// The reader went away: read the reader list again.
    Relist,
    /// The phone left the field (or never answered): the tap ends, wait for the next.
    CardGone,
    /// The wait timed out: nothing happened, carry on.
    Idle,
    /// [`ReaderHandle`] asked the thread to stop.
    Stop,
}

/// Maps a PC/SC error to what the service does next. Unknown failures re-establish the
/// context (with backoff): it is the one recovery that cannot make things worse.
pub fn classify(e: pcsc::Error) -> Recovery {
    use pcsc::Error as E;
    match e {
        E::Cancelled => Recovery::Stop,
        E::Timeout => Recovery::Idle,
        E::UnknownReader | E::ReaderUnavailable => Recovery::Relist,
        E::RemovedCard
        | E::ResetCard
        | E::NoSmartcard
        | E::UnpoweredCard
        | E::UnresponsiveCard
        | E::UnsupportedCard
        | E::InvalidAtr
        | E::ProtoMismatch
        | E::SharingViolation => Recovery::CardGone,
        _ => Recovery::Reestablish,
    }
}

/// The reader's tap states. A phone must leave the field before the next tap counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapState {
    /// No matching reader (or no pcscd).
    WaitingForReader,
    /// Reader up, field empty.
    WaitingForCard,
    /// A phone is being read.
    Processing,
    /// The phone was read (or failed); waiting for it to leave.
    WaitingForRemoval,
}

/// What the reader service saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The lane's reader is available.
    ReaderUp,
    /// The lane's reader (or pcscd) is gone.
    ReaderDown,
    /// The field state: `present`, and pcscd's count of insertions and removals so far.
    Field {
        /// A card (phone) is in the field.
        present: bool,
        /// pcsc-lite's event counter (upper 16 bits of the event state), 0 where unsupported.
        events: u32,
    },
    /// The exchange with the phone ended, whatever its outcome.
    ExchangeDone,
}

/// What the service must do after a [`Seen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Nothing.
    Wait,
    /// Connect to the phone and read its payload, then report [`Seen::ExchangeDone`].
    ReadPhone,
}

/// The reader state machine, pure: observations in, actions out.
#[derive(Clone, Debug)]
pub struct TapMachine {
    state: TapState,
    read_at_events: Option<u32>,
}

impl Default for TapMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl TapMachine {
    /// Starts waiting for a reader.
    pub fn new() -> Self {
        TapMachine {
            state: TapState::WaitingForReader,
            read_at_events: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> TapState {
        self.state
    }

    /// Feeds one observation.
    pub fn on(&mut self, seen: Seen) -> Act {
        use TapState as S;
        match (self.state, seen) {
            (_, Seen::ReaderDown) => {
                self.state = S::WaitingForReader;
                self.read_at_events = None;
                Act::Wait
            }
            (S::WaitingForReader, Seen::ReaderUp) => {
                self.state = S::WaitingForCard;
                Act::Wait
            }
            (S::WaitingForReader, _) | (_, Seen::ReaderUp) => Act::Wait,
            (
                S::WaitingForCard,
                Seen::Field {
                    present: true,
                    events,
                },
            ) => {
                self.state = S::Processing;
                self.read_at_events = Some(events);
                Act::ReadPhone
            }
            (S::Processing, Seen::ExchangeDone) => {
                self.state = S::WaitingForRemoval;
                Act::Wait
            }
            (S::WaitingForRemoval, Seen::Field { present: false, .. }) => {
                self.state = S::WaitingForCard;
                self.read_at_events = None;
                Act::Wait
            }
            // Taken away and put back between two polls: pcscd counted the removal and the
            // insertion, so this is a new tap even though the field never looked empty.
            (
                S::WaitingForRemoval,
                Seen::Field {
                    present: true,
                    events,
                },
            ) if self
                .read_at_events
                .is_some_and(|at| events.wrapping_sub(at) >= 2) =>
            {
                self.state = S::Processing;
                self.read_at_events = Some(events);
                Act::ReadPhone
            }
            _ => Act::Wait,
        }
    }
}

/// The link's health as a technician sees it; logged once per change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not known yet (service starting).
    Starting,
    /// pcscd cannot be reached.
    ServiceDown,
    /// pcscd is up but no reader matches the lane's pattern.
    NoReader,
    /// The lane's reader is up.
    Reader(String),
}

/// Remembers the last [`Health`] so only changes are reported.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    current: Health,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthTracker {
    /// Starts in [`Health::Starting`].
    pub fn new() -> Self {
        HealthTracker {
            current: Health::Starting,
        }
    }

    /// The last health set.
    pub fn current(&self) -> &Health {
        &self.current
    }

    /// Sets the health; returns the previous one when it changed, `None` when it did not.
    pub fn set(&mut self, next: Health) -> Option<Health> {
        if self.current == next {
            None
        } else {
            Some(std::mem::replace(&mut self.current, next))
        }
    }
}

/// [`ApduChannel`] over a PC/SC card connection, with the tap's deadlines.
pub struct PcscChannel<'a> {
    card: &'a pcsc::Card,
    tap_deadline: Instant,
    apdu_deadline: Duration,
    buf: Vec<u8>,
    failure: Option<pcsc::Error>,
}

impl<'a> PcscChannel<'a> {
    /// A channel on `card` that refuses to send after `tap_deadline` and treats an answer
    /// slower than `apdu_deadline` as a timeout.
    pub fn new(card: &'a pcsc::Card, tap_deadline: Instant, apdu_deadline: Duration) -> Self {
        PcscChannel {
            card,
            tap_deadline,
            apdu_deadline,
            buf: vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED],
            failure: None,
        }
    }

    /// The last PC/SC error a transmit hit, so the caller can tell a phone that left from a
    /// pcscd that died.
    pub fn failure(&self) -> Option<pcsc::Error> {
        self.failure
    }
}

impl ApduChannel for PcscChannel<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let sent = Instant::now();
        if sent >= self.tap_deadline {
            return Err(ChannelError::Timeout);
        }
        match self.card.transmit(command, &mut self.buf) {
            Ok(answer) => {
                if answered_in_time(sent, Instant::now(), self.tap_deadline, self.apdu_deadline) {
                    Ok(answer.to_vec())
                } else {
                    Err(ChannelError::Timeout)
                }
            }
            Err(e) => {
                self.failure = Some(e);
                Err(channel_error(e))
            }
        }
    }
}

/// Whether an answer that came at `now` to a command sent at `sent` is still usable.
fn answered_in_time(
    sent: Instant,
    now: Instant,
    tap_deadline: Instant,
    apdu_deadline: Duration,
) -> bool {
    now <= tap_deadline && now.saturating_duration_since(sent) <= apdu_deadline
}

/// What a failed `SCardTransmit` means to the exchange.
fn channel_error(e: pcsc::Error) -> ChannelError {
    match classify(e) {
        Recovery::CardGone => ChannelError::CardRemoved,
        Recovery::Idle => ChannelError::Timeout,
        _ => ChannelError::Reader(format!("SCardTransmit: {e}")),
    }
}

/// The readers pcscd knows now, for `tapgate readers` and `doctor`. An empty list when pcscd
/// runs without readers; `Err` (typically `NoService`) when pcscd cannot be reached.
pub fn list_readers() -> Result<Vec<String>, pcsc::Error> {
    let ctx = Context::establish(Scope::User)?;
    Service::list_readers(&ctx)
}

/// Why passenger feedback could not be shown. Cosmetic: log it and carry on; feedback never
/// changes a fare decision.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackSendError {
    /// pcscd cannot be reached.
    #[error("pcscd unreachable for feedback: {0}")]
    Service(pcsc::Error),
    /// The reader could not be opened (for a pseudo-APDU: the phone already left).
    #[error("cannot open {reader} for feedback: {error}")]
    Connect {
        /// The reader.
        reader: String,
        /// The PC/SC error.
        error: pcsc::Error,
    },
    /// The reader or driver rejected the command (escape not enabled in libccid, wrong model
    /// configured).
    #[error("{reader} rejected the feedback command: {error}")]
    Rejected {
        /// The reader.
        reader: String,
        /// The PC/SC error.
        error: pcsc::Error,
    },
    /// The reader answered, but not with success.
    #[error(transparent)]
    Refused(#[from] FeedbackError),
}

/// Shows `signal` on `reader` using `model`'s command set; does nothing for
/// [`FeedbackModel::Off`]. Blocking (call it from `spawn_blocking`), on its own PC/SC context.
///
/// Escape commands go through a direct connection, so they work with the phone gone; ACR122U
/// pseudo-APDUs need a card connection, so they only work while the phone is still in the
/// field (usually true: the verdict comes a few hundred milliseconds after the read).
pub fn show_feedback(
    reader: &str,
    model: FeedbackModel,
    signal: Signal,
) -> Result<(), FeedbackSendError> {
    let commands = feedback::commands(model, signal);
    if commands.is_empty() {
        return Ok(());
    }
    let ctx = Context::establish(Scope::User).map_err(FeedbackSendError::Service)?;
    let cname = CString::new(reader).map_err(|_| FeedbackSendError::Connect {
        reader: reader.to_owned(),
        error: pcsc::Error::UnknownReader,
    })?;
    let needs_card = commands
        .iter()
        .any(|c| matches!(c, ReaderCommand::Transmit(_)));
    let (share, protocols) = if needs_card {
        (ShareMode::Shared, Protocols::ANY)
    } else {
        (ShareMode::Direct, Protocols::UNDEFINED)
    };
    let card =
        ctx.connect(&cname, share, protocols)
            .map_err(|error| FeedbackSendError::Connect {
                reader: reader.to_owned(),
                error,
            })?;
    let mut buf = [0u8; 300];
    let rejected = |error| FeedbackSendError::Rejected {
        reader: reader.to_owned(),
        error,
    };
    let mut outcome = Ok(());
    for command in &commands {
        let answer = match command {
            ReaderCommand::Transmit(apdu) => card.transmit(apdu, &mut buf),
            ReaderCommand::Escape(bytes) => card.control(
                pcsc::ctl_code(feedback::CCID_ESCAPE_CODE.into()),
                bytes,
                &mut buf,
            ),
        };
        outcome = answer
            .map_err(rejected)
            .and_then(|a| feedback::check_answer(command, a).map_err(Into::into));
        if outcome.is_err() {
            break;
        }
    }
    if let Err((card, _)) = card.disconnect(Disposition::LeaveCard) {
        drop(card);
    }
    outcome
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_patterns_ignore_case() {
        let p = ReaderPattern::new("acr1252");
        assert!(p.matches("ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00"));
        assert!(!p.matches("ACS ACR122U PICC Interface 00 00"));
        assert!(ReaderPattern::new("Virtual PCD 00 00").matches("Virtual PCD 00 00"));
        assert!(!ReaderPattern::new("Virtual PCD 00 00").matches("Virtual PCD 00 01"));
    }

    #[test]
    fn glob_patterns_match_the_whole_name() {
        let p = ReaderPattern::new("ACS ACR1252*PICC*");
        assert!(p.matches("ACS ACR1252 1S CL Reader [ACR1252 Dual Reader PICC] 00 00"));
        assert!(!p.matches("ACS ACR1252 1S CL Reader [ACR1252 Dual Reader SAM] 00 01"));
        assert!(ReaderPattern::new("*").matches(""));
        assert!(ReaderPattern::new("Virtual*01").matches("Virtual PCD 00 01"));
        assert!(!ReaderPattern::new("Virtual*01").matches("Virtual PCD 00 00"));
        assert!(ReaderPattern::new("a*b*c").matches("aXXbYYbc"));
        assert!(!ReaderPattern::new("a*b*c").matches("aXXbYYbcd"));
        assert!(ReaderPattern::new("**x").matches("yx"));
    }

    #[test]
    fn choice_is_independent_of_listing_order() {
        let p = ReaderPattern::new("Virtual PCD");
        let a = vec![
            "Virtual PCD 00 01".to_owned(),
            "Virtual PCD 00 00".to_owned(),
        ];
        assert_eq!(p.choose(&a), Some("Virtual PCD 00 00"));
        assert_eq!(ReaderPattern::new("nothing").choose(&a), None);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let seq: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn pcsc_errors_map_to_recoveries() {
        use pcsc::Error as E;
        for e in [
            E::NoService,
            E::ServiceStopped,
            E::CommError,
            E::InvalidHandle,
            E::NoReadersAvailable,
        ] {
            assert_eq!(classify(e), Recovery::Reestablish, "{e:?}");
        }
        for e in [
            E::RemovedCard,
            E::ResetCard,
            E::NoSmartcard,
            E::UnresponsiveCard,
        ] {
            assert_eq!(classify(e), Recovery::CardGone, "{e:?}");
        }
        assert_eq!(classify(E::UnknownReader), Recovery::Relist);
        assert_eq!(classify(E::ReaderUnavailable), Recovery::Relist);
        assert_eq!(classify(E::Timeout), Recovery::Idle);
        assert_eq!(classify(E::Cancelled), Recovery::Stop);
    }

    #[test]
    fn late_answers_are_timeouts() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let tap_end = t0 + ms(1500);
        assert!(answered_in_time(t0, t0 + ms(100), tap_end, ms(700)));
        assert!(answered_in_time(t0, t0 + ms(700), tap_end, ms(700)));
        assert!(!answered_in_time(t0, t0 + ms(701), tap_end, ms(700)));
        let late_start = t0 + ms(1400);
        assert!(!answered_in_time(
            late_start,
            late_start + ms(200),
            tap_end,
            ms(700)
        ));
    }

    #[test]
    fn transmit_failures_map_to_channel_errors() {
        assert_eq!(
            channel_error(pcsc::Error::RemovedCard),
            ChannelError::CardRemoved
        );
        assert_eq!(
            channel_error(pcsc::Error::ResetCard),
            ChannelError::CardRemoved
        );
        assert_eq!(channel_error(pcsc::Error::Timeout), ChannelError::Timeout);
        assert!(matches!(
            channel_error(pcsc::Error::NoService),
            ChannelError::Reader(text) if text.starts_with("SCardTransmit")
        ));
    }

    fn field(present: bool, events: u32) -> Seen {
        Seen::Field { present, events }
    }

    #[test]
    fn a_phone_left_on_the_reader_is_one_tap() {
        let mut m = TapMachine::new();
        assert_eq!(m.on(field(true, 1)), Act::Wait, "no reader yet");
        m.on(Seen::ReaderUp);
        assert_eq!(m.state(), TapState::WaitingForCard);
        assert_eq!(m.on(field(true, 1)), Act::ReadPhone);
        assert_eq!(m.state(), TapState::Processing);
        assert_eq!(m.on(Seen::ExchangeDone), Act::Wait);
        // pcscd reports state changes (in use, not in use) while the phone stays.
        for _ in 0..5 {
            assert_eq!(m.on(field(true, 1)), Act::Wait);
        }
        assert_eq!(m.state(), TapState::WaitingForRemoval);
        assert_eq!(m.on(field(false, 2)), Act::Wait);
        assert_eq!(m.on(field(true, 3)), Act::ReadPhone, "next tap counts");
    }

    #[test]
    fn a_phone_swapped_between_polls_is_a_new_tap() {
        let mut m = TapMachine::new();
        m.on(Seen::ReaderUp);
        m.on(field(true, 4));
        m.on(Seen::ExchangeDone);
        assert_eq!(m.on(field(true, 5)), Act::Wait);
        assert_eq!(m.on(field(true, 6)), Act::ReadPhone);
    }

    #[test]
    fn reader_loss_resets_the_tap() {
        let mut m = TapMachine::new();
        m.on(Seen::ReaderUp);
        m.on(field(true, 1));
        m.on(Seen::ReaderDown);
        assert_eq!(m.state(), TapState::WaitingForReader);
        assert_eq!(m.on(Seen::ExchangeDone), Act::Wait);
        m.on(Seen::ReaderUp);
        assert_eq!(m.on(field(true, 1)), Act::ReadPhone);
    }

    #[test]
    fn health_changes_are_reported_once() {
        let mut h = HealthTracker::new();
        assert_eq!(h.set(Health::ServiceDown), Some(Health::Starting));
        assert_eq!(h.set(Health::ServiceDown), None);
        assert_eq!(h.set(Health::ServiceDown), None);
        assert_eq!(h.set(Health::Reader("r".into())), Some(Health::ServiceDown));
        assert_eq!(h.current(), &Health::Reader("r".into()));
    }

    /// A scripted channel for the interim exchange.
    struct Script(Vec<Result<Vec<u8>, ChannelError>>);

    impl ApduChannel for Script {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, ChannelError> {
            if self.0.is_empty() {
                return Err(ChannelError::CardRemoved);
            }
            self.0.remove(0)
        }
    }

    #[test]
    fn interim_exchange_reads_and_refuses() {
        let mut ok = Script(vec![
            Ok(vec![0x90, 0x00]),
            Ok(b"hQVD\x61\xFF".to_vec()),
            Ok(b"UFY\x90\x00".to_vec()),
        ]);
        assert_eq!(read_qr_content(&mut ok).as_deref(), Ok("hQVDUFY"));
        let mut not_ready = Script(vec![Ok(vec![0x00, 0x00])]);
        assert_eq!(
            read_qr_content(&mut not_ready),
            Err(TapReadError::WalletNotReady { sw: 0 })
        );
        let mut lost = Script(vec![Ok(vec![0x90, 0x00]), Ok(vec![])]);
        assert!(matches!(
            read_qr_content(&mut lost),
            Err(TapReadError::CardLost { .. })
        ));
    }
}
