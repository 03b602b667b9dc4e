//! [`GateDrive`]: the relay's decisions without I/O. Given opens, passages, free-exit changes
//! and the time, it says whether the line is active (gate open) and when to look again: pulse
//! length, the gap between two pulses, queued opens, hold until passage, free exit.

use std::time::{Duration, Instant};

use super::spec::RelayMode;

/// Opens queued behind the current one before further opens are dropped (and logged). Far
/// beyond what a real lane sees: it only bounds memory if something upstream runs away.
pub const MAX_QUEUED_OPENS: u32 = 8;

/// The relay timings [`GateDrive`] works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveTiming {
    /// Pulse or hold.
    pub mode: RelayMode,
    /// Active time of one pulse.
    pub pulse: Duration,
    /// Minimum inactive time between two opens.
    pub gap: Duration,
    /// Longest hold in [`RelayMode::HoldUntilPassage`].
    pub hold_timeout: Duration,
}

/// What happened to the relay, as far as [`GateDrive`] is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveInput {
    /// A paid passenger: open once.
    Open,
    /// The lane's passage sensor saw someone pass.
    Passage,
    /// Free-exit mode on (hold open, forget queued opens) or off (close).
    FreeExit(bool),
}

/// What the line should be now, and when to call [`GateDrive::tick`] next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Drive the line active (gate open).
    pub active: bool,
    /// Call `tick` at this time (or on the next input, whichever is first).
    pub wake_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Open { until: Instant },
    Gap { until: Instant },
    FreeExit,
}

/// The relay's decisions, without I/O: given opens, passages, free-exit changes and the time,
/// says whether the line is active and when to look again.
#[derive(Clone, Debug)]
pub struct GateDrive {
    timing: DriveTiming,
    phase: Phase,
    queued: u32,
    dropped: u64,
}

impl GateDrive {
    /// A closed gate with these timings.
    pub fn new(timing: DriveTiming) -> Self {
        GateDrive {
            timing,
            phase: Phase::Idle,
            queued: 0,
            dropped: 0,
        }
    }

    /// Changes the timings; an open in progress keeps its deadline.
    pub fn set_timing(&mut self, timing: DriveTiming) {
        self.timing = timing;
    }

    /// Opens waiting behind the current one.
    pub fn queued(&self) -> u32 {
        self.queued
    }

    /// Opens dropped because [`MAX_QUEUED_OPENS`] were already waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Applies one input at `now` (after any deadline that already passed).
    pub fn input(&mut self, input: DriveInput, now: Instant) -> Step {
        self.advance(now);
        match input {
            DriveInput::Open => match self.phase {
                Phase::FreeExit => {}
                Phase::Idle => self.start_open(now),
                Phase::Open { .. } | Phase::Gap { .. } => {
                    if self.queued < MAX_QUEUED_OPENS {
                        self.queued += 1;
                    } else {
                        self.dropped += 1;
                    }
                }
            },
            DriveInput::Passage => {
                if let (RelayMode::HoldUntilPassage, Phase::Open { .. }) =
                    (self.timing.mode, self.phase)
                {
                    if self.queued > 0 {
                        // The next paid passenger walks through the gate that is already open.
                        self.queued -= 1;
                        self.start_open(now);
                    } else {
                        self.end_open(now);
                    }
                }
            }
            DriveInput::FreeExit(true) => {
                self.phase = Phase::FreeExit;
                self.queued = 0;
            }
            DriveInput::FreeExit(false) => {
                if self.phase == Phase::FreeExit {
                    self.phase = Phase::Gap {
                        until: now + self.timing.gap,
                    };
                }
            }
        }
        self.step()
    }

    /// Moves past any deadline at or before `now`.
    pub fn tick(&mut self, now: Instant) -> Step {
        self.advance(now);
        self.step()
    }

    fn advance(&mut self, now: Instant) {
        loop {
            match self.phase {
                Phase::Open { until } if now >= until => {
                    if self.timing.mode == RelayMode::HoldUntilPassage {
                        // Nobody came: the passengers queued behind lost their chance too.
                        self.queued = 0;
                    }
                    self.end_open(now);
                }
                Phase::Gap { until } if now >= until => {
                    if self.queued > 0 {
                        self.queued -= 1;
                        self.start_open(now);
                    } else {
                        self.phase = Phase::Idle;
                    }
                }
                _ => return,
            }
        }
    }

    fn start_open(&mut self, now: Instant) {
        let len = match self.timing.mode {
            RelayMode::Pulse => self.timing.pulse,
            RelayMode::HoldUntilPassage => self.timing.hold_timeout,
        };
        self.phase = Phase::Open { until: now + len };
    }

    fn end_open(&mut self, now: Instant) {
        self.phase = Phase::Gap {
            until: now + self.timing.gap,
        };
    }

    fn step(&self) -> Step {
        match self.phase {
            Phase::Idle => Step {
                active: false,
                wake_at: None,
            },
            Phase::Open { until } => Step {
                active: true,
                wake_at: Some(until),
            },
            Phase::Gap { until } => Step {
                active: false,
                wake_at: Some(until),
            },
            Phase::FreeExit => Step {
                active: true,
                wake_at: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing(mode: RelayMode) -> DriveTiming {
        DriveTiming {
            mode,
            pulse: ms(300),
            gap: ms(200),
            hold_timeout: ms(8000),
        }
    }

    #[test]
    fn a_pulse_is_active_for_its_length_then_closes() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        let s = d.input(DriveInput::Open, t0);
        assert_eq!(
            s,
            Step {
                active: true,
                wake_at: Some(t0 + ms(300))
            }
        );
        assert!(d.tick(t0 + ms(299)).active);
        let s = d.tick(t0 + ms(300));
        assert!(!s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(500)));
        assert_eq!(
            d.tick(t0 + ms(500)),
            Step {
                active: false,
                wake_at: None
            }
        );
    }

    #[test]
    fn a_second_open_during_a_pulse_becomes_a_second_pulse_after_the_gap() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        let s = d.input(DriveInput::Open, t0 + ms(100));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(300)), "the pulse is not stretched");
        assert_eq!(d.queued(), 1);
        assert!(!d.tick(t0 + ms(300)).active);
        assert!(!d.tick(t0 + ms(499)).active);
        let s = d.tick(t0 + ms(500));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(800)));
        assert!(!d.tick(t0 + ms(800)).active);
        assert_eq!(d.tick(t0 + ms(1000)).wake_at, None);
    }

    #[test]
    fn a_late_tick_still_gives_the_queued_pulse() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0 + ms(10));
        // The worker woke up very late: the first pulse ends now, the gap starts now.
        let s = d.tick(t0 + ms(2000));
        assert!(!s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(2200)));
        assert!(d.tick(t0 + ms(2200)).active);
    }

    #[test]
    fn queued_opens_are_capped() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        for _ in 0..(MAX_QUEUED_OPENS + 3) {
            d.input(DriveInput::Open, t0);
        }
        assert_eq!(d.queued(), MAX_QUEUED_OPENS);
        assert_eq!(d.dropped(), 2);
    }

    #[test]
    fn passage_does_not_cut_a_pulse_short() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        assert!(d.input(DriveInput::Passage, t0 + ms(50)).active);
    }

    #[test]
    fn hold_mode_closes_on_passage() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::HoldUntilPassage));
        let s = d.input(DriveInput::Open, t0);
        assert_eq!(s.wake_at, Some(t0 + ms(8000)));
        assert!(d.tick(t0 + ms(5000)).active);
        let s = d.input(DriveInput::Passage, t0 + ms(5000));
        assert!(!s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(5200)));
    }

    #[test]
    fn hold_mode_closes_on_timeout_and_forgets_queued_opens() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::HoldUntilPassage));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0 + ms(10));
        let s = d.tick(t0 + ms(8000));
        assert!(!s.active);
        assert_eq!(d.queued(), 0);
        assert_eq!(d.tick(t0 + ms(8200)).wake_at, None);
    }

    #[test]
    fn hold_mode_keeps_open_for_the_next_paid_passenger() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::HoldUntilPassage));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0 + ms(10));
        let s = d.input(DriveInput::Passage, t0 + ms(1000));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(9000)), "a fresh timeout");
        assert!(!d.input(DriveInput::Passage, t0 + ms(2000)).active);
    }

    #[test]
    fn free_exit_holds_open_and_drops_queued_opens() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        d.input(DriveInput::Open, t0);
        let s = d.input(DriveInput::FreeExit(true), t0 + ms(10));
        assert_eq!(
            s,
            Step {
                active: true,
                wake_at: None
            }
        );
        assert!(d.input(DriveInput::Open, t0 + ms(20)).active);
        assert!(d.tick(t0 + ms(60_000)).active, "free exit has no timeout");
        let s = d.input(DriveInput::FreeExit(false), t0 + ms(60_000));
        assert!(!s.active);
        assert_eq!(
            d.tick(t0 + ms(60_200)).wake_at,
            None,
            "no queued pulse left"
        );
    }

    #[test]
    fn free_exit_off_when_not_on_changes_nothing() {
        let t0 = Instant::now();
        let mut d = GateDrive::new(timing(RelayMode::Pulse));
        d.input(DriveInput::Open, t0);
        let s = d.input(DriveInput::FreeExit(false), t0 + ms(10));
        assert!(s.active);
        assert_eq!(s.wake_at, Some(t0 + ms(300)));
    }
}
