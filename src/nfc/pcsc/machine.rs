//! The reader service's decisions, pure and tested without pcscd: which reader a
//! [`ReaderPattern`] picks, the tap state machine ([`TapMachine`]), what a PC/SC error means
//! ([`classify`]), the reconnect schedule ([`Backoff`]), when the link's health changed
//! ([`HealthTracker`]) and whether an answer came in time ([`answered_in_time`]).

use std::time::{Duration, Instant};

use crate::nfc::ChannelError;

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
    /// [`ReaderHandle`](super::ReaderHandle) asked the thread to stop.
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

/// Whether an answer that came at `now` to a command sent at `sent` is still usable.
pub(super) fn answered_in_time(
    sent: Instant,
    now: Instant,
    tap_deadline: Instant,
    apdu_deadline: Duration,
) -> bool {
    now <= tap_deadline && now.saturating_duration_since(sent) <= apdu_deadline
}

/// What a failed `SCardTransmit` means to the exchange.
pub(super) fn channel_error(e: pcsc::Error) -> ChannelError {
    match classify(e) {
        Recovery::CardGone => ChannelError::CardRemoved,
        Recovery::Idle => ChannelError::Timeout,
        _ => ChannelError::Reader(format!("SCardTransmit: {e}")),
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
}
