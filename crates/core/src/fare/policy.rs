//! Lane policy: what a tap means and what each payment result makes the gate do. Pure: takes
//! facts (the open journey, the result, the station's policy) and returns decisions.

use std::collections::HashMap;

use super::settings::{AntiPassback, PolicyConfig, UnknownAtExit, UnreachableAtExit};
use super::tariff::{FareRule, Tariff};
use super::{Direction, Rupiah};

/// What the passenger experiences, for logs, metrics, feedback and `tapgate tap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TapOutcome {
    /// Paid; gate opened.
    Approved,
    /// Exit with an unknown payment outcome, let out by policy; settled later.
    Released,
    /// The issuer declined (insufficient funds, blocked...): no money moved, gate shut.
    Declined,
    /// Our side was refused (auth, bad request, unreachable): no money moved, gate shut; alert.
    Refused,
    /// Exit while the aggregator could not be used (no money moved), let out unpaid by policy
    /// (`unreachable_at_exit = "open"`); journaled as an unpaid exit with its reason.
    UnpaidExit,
    /// No answer in time: the gate stays shut, tap again. A late success is refunded.
    TryAgain,
    /// The wallet's QRIS TAP screen was not open.
    WalletNotReady,
    /// The phone could not be read (pulled away, reader error).
    ReadFailed,
    /// The payload is not a valid QRIS TAP payload.
    InvalidPayload,
    /// Same passenger at the same lane within the debounce window: the same tap, ignored.
    Duplicate,
    /// Tap-in while a journey is open, refused by anti-passback.
    Passback,
    /// The journal cannot be written: no money may move without a record.
    JournalUnavailable,
    /// Free-exit (emergency) mode: no validation, gates held open.
    FreeExit,
    /// Tap-in refused: a fast-opened payment of this passenger ended unpaid and is on the
    /// unpaid list until staff clear it. Exits are never refused for it.
    Unpaid,
}

impl TapOutcome {
    /// Spelling for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TapOutcome::Approved => "approved",
            TapOutcome::Released => "released",
            TapOutcome::Declined => "declined",
            TapOutcome::Refused => "refused",
            TapOutcome::UnpaidExit => "unpaid_exit",
            TapOutcome::TryAgain => "try_again",
            TapOutcome::WalletNotReady => "wallet_not_ready",
            TapOutcome::ReadFailed => "read_failed",
            TapOutcome::InvalidPayload => "invalid_payload",
            TapOutcome::Duplicate => "duplicate",
            TapOutcome::Passback => "passback",
            TapOutcome::JournalUnavailable => "journal_unavailable",
            TapOutcome::FreeExit => "free_exit",
            TapOutcome::Unpaid => "unpaid",
        }
    }
}

/// What a technician reads when [`Plan::Refuse`] refused a tap with `outcome` before any
/// money moved.
pub fn refusal_message(outcome: TapOutcome) -> String {
    match outcome {
        TapOutcome::Passback => {
            "a journey is already open for this passenger (anti-passback)".into()
        }
        other => format!(
            "refused by the station's policy before any payment ({})",
            other.as_str()
        ),
    }
}

/// An open journey as the policy needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenJourney {
    /// Id in this station's journal; `None` for a journey opened at another station of the
    /// line.
    pub id: Option<i64>,
    /// Where it began.
    pub entry_station: String,
    /// The tap-in payment.
    pub tap_in_ref: String,
}

/// What to do with a decoded tap before any money moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Pay `amount`. On tap-out, `journey` is the tap-in being closed; `close_first` is a
    /// journey to close at the maximum fare before a tap-in (anti-passback `close_at_max_fare`).
    Pay {
        /// Hold (tap-in) or fare (tap-out).
        amount: Rupiah,
        /// How a tap-out fare was found (`None` on tap-in).
        rule: Option<FareRule>,
        /// The journey a tap-out closes.
        journey: Option<OpenJourney>,
        /// A stale journey to close before this tap-in.
        close_first: Option<OpenJourney>,
    },
    /// Refuse without paying.
    Refuse(TapOutcome),
}

/// Decides a tap given the passenger's open journey (if any).
pub fn plan(
    direction: Direction,
    station: &str,
    open: Option<OpenJourney>,
    tariff: &Tariff,
    policy: &PolicyConfig,
) -> Plan {
    match direction {
        Direction::In => match (open, policy.anti_passback) {
            (Some(_), AntiPassback::Refuse) => Plan::Refuse(TapOutcome::Passback),
            (open, _) => Plan::Pay {
                amount: tariff.hold_at_entry(station),
                rule: None,
                journey: None,
                close_first: open,
            },
        },
        Direction::Out => {
            let (amount, rule) =
                tariff.fare(open.as_ref().map(|j| j.entry_station.as_str()), station);
            Plan::Pay {
                amount,
                rule: Some(rule),
                journey: open,
                close_first: None,
            }
        }
    }
}

/// A payment's result as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayResult {
    /// Confirmed paid.
    Success,
    /// The issuer declined.
    Declined,
    /// Refused on our side before any money moved.
    Refused,
    /// Money may have moved.
    Unknown,
}

/// What the gate does right after the payment call (or its deadline). What the journal
/// records is not part of it: that is [`crate::flow::settle::plan_transitions`]'s one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Pulse the relay.
    pub open_gate: bool,
    /// What the passenger sees.
    pub outcome: TapOutcome,
}

/// The verdict at decision time. `None` result means the deadline passed with no answer.
pub fn verdict(direction: Direction, result: Option<PayResult>, policy: &PolicyConfig) -> Verdict {
    let shut = |outcome| Verdict {
        open_gate: false,
        outcome,
    };
    match result {
        Some(PayResult::Success) => Verdict {
            open_gate: true,
            outcome: TapOutcome::Approved,
        },
        Some(PayResult::Declined) => shut(TapOutcome::Declined),
        // No money moved and the aggregator cannot be used: nobody is locked in.
        Some(PayResult::Refused)
            if direction == Direction::Out
                && policy.unreachable_at_exit == UnreachableAtExit::Open =>
        {
            Verdict {
                open_gate: true,
                outcome: TapOutcome::UnpaidExit,
            }
        }
        Some(PayResult::Refused) => shut(TapOutcome::Refused),
        Some(PayResult::Unknown) | None => match (direction, policy.unknown_at_exit) {
            (Direction::Out, UnknownAtExit::Open) => Verdict {
                open_gate: true,
                outcome: TapOutcome::Released,
            },
            _ => shut(TapOutcome::TryAgain),
        },
    }
}

/// Remembers recent passengers per lane: the same passenger within the window is the same tap.
#[derive(Debug, Default)]
pub struct Debouncer {
    window_ms: i64,
    last: HashMap<String, i64>,
}

impl Debouncer {
    /// A debouncer with a window in milliseconds.
    pub fn new(window_ms: u64) -> Self {
        Debouncer {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            last: HashMap::new(),
        }
    }

    /// Whether `key` was let through within the window before `now_ms`. A repeat extends the
    /// window, so a phone left at the gate never pays twice. Taps that did not open the gate
    /// are not remembered: a passenger told to try again (or declined) may tap again at once.
    pub fn is_repeat(&mut self, key: &str, now_ms: i64) -> bool {
        let window = self.window_ms;
        match self.last.get_mut(key) {
            Some(at) if now_ms.saturating_sub(*at) < window => {
                *at = now_ms;
                true
            }
            _ => false,
        }
    }

    /// Remembers that `key` was let through at `now_ms`.
    pub fn passed(&mut self, key: &str, now_ms: i64) {
        if self.last.len() > 256 {
            let window = self.window_ms;
            self.last
                .retain(|_, at| now_ms.saturating_sub(*at) < window);
        }
        self.last.insert(key.to_string(), now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::settings::StaleJourney;

    fn policy(unknown_at_exit: UnknownAtExit, anti_passback: AntiPassback) -> PolicyConfig {
        PolicyConfig {
            decision_deadline_ms: 1000,
            debounce_ms: 3000,
            anti_passback,
            unknown_at_exit,
            // The default (open) is tested on its own below.
            unreachable_at_exit: UnreachableAtExit::KeepClosed,
            max_trip_minutes: 240,
            stale_journey: StaleJourney::MaxFare,
            passage_window_ms: 8000,
            fast_open: Default::default(),
        }
    }

    /// Only an anti-passback refusal says "anti-passback": any other refusal names itself.
    #[test]
    fn a_refusal_says_what_refused_it() {
        assert!(refusal_message(TapOutcome::Passback).contains("anti-passback"));
        for other in [
            TapOutcome::Duplicate,
            TapOutcome::Refused,
            TapOutcome::JournalUnavailable,
        ] {
            let m = refusal_message(other);
            assert!(!m.contains("anti-passback"), "{m}");
            assert!(m.contains(other.as_str()), "{m}");
        }
    }

    fn journey(entry: &str) -> OpenJourney {
        OpenJourney {
            id: Some(7),
            entry_station: entry.into(),
            tap_in_ref: "TGREF".into(),
        }
    }

    #[test]
    fn gate_opens_only_on_success_or_released_exit() {
        for dir in [Direction::In, Direction::Out] {
            for uae in [UnknownAtExit::Open, UnknownAtExit::KeepClosed] {
                let p = policy(uae, AntiPassback::Refuse);
                for r in [
                    None,
                    Some(PayResult::Success),
                    Some(PayResult::Declined),
                    Some(PayResult::Refused),
                    Some(PayResult::Unknown),
                ] {
                    let v = verdict(dir, r, &p);
                    let released = dir == Direction::Out
                        && uae == UnknownAtExit::Open
                        && matches!(r, None | Some(PayResult::Unknown));
                    assert_eq!(
                        v.open_gate,
                        r == Some(PayResult::Success) || released,
                        "{dir:?} {uae:?} {r:?}"
                    );
                    if r == Some(PayResult::Declined) {
                        assert_eq!(v.outcome, TapOutcome::Declined);
                    }
                }
            }
        }
    }

    #[test]
    fn unreachable_aggregator_opens_exits_unpaid_and_keeps_entries_shut() {
        for uae in [UnknownAtExit::Open, UnknownAtExit::KeepClosed] {
            let mut p = policy(uae, AntiPassback::Refuse);
            p.unreachable_at_exit = UnreachableAtExit::default();
            let out = verdict(Direction::Out, Some(PayResult::Refused), &p);
            assert_eq!(
                out,
                Verdict {
                    open_gate: true,
                    outcome: TapOutcome::UnpaidExit
                }
            );
            let entry = verdict(Direction::In, Some(PayResult::Refused), &p);
            assert!(!entry.open_gate);
            assert_eq!(entry.outcome, TapOutcome::Refused);
            // A decline is the passenger's: the exit stays shut.
            assert!(!verdict(Direction::Out, Some(PayResult::Declined), &p).open_gate);
            p.unreachable_at_exit = UnreachableAtExit::KeepClosed;
            let shut = verdict(Direction::Out, Some(PayResult::Refused), &p);
            assert!(!shut.open_gate);
            assert_eq!(shut.outcome, TapOutcome::Refused);
        }
    }

    #[test]
    fn tap_in_unknown_is_try_again() {
        let v = verdict(
            Direction::In,
            None,
            &policy(UnknownAtExit::Open, AntiPassback::Refuse),
        );
        assert_eq!(v.outcome, TapOutcome::TryAgain);
        assert!(!v.open_gate);
    }

    #[test]
    fn anti_passback_refuses_or_closes_first() {
        let t = Tariff::Flat(Rupiah(3500));
        let refuse = policy(UnknownAtExit::Open, AntiPassback::Refuse);
        assert_eq!(
            plan(Direction::In, "BLM", Some(journey("BLM")), &t, &refuse),
            Plan::Refuse(TapOutcome::Passback)
        );
        let close = policy(UnknownAtExit::Open, AntiPassback::CloseAtMaxFare);
        match plan(Direction::In, "BLM", Some(journey("BLM")), &t, &close) {
            Plan::Pay {
                close_first,
                amount,
                ..
            } => {
                assert_eq!(close_first, Some(journey("BLM")));
                assert_eq!(amount, Rupiah(3500));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exit_without_entry_pays_the_maximum() {
        let t = Tariff::Matrix {
            stations: vec!["A".into(), "B".into()],
            fares: vec![vec![3000, 5000], vec![5000, 3000]],
        };
        let p = policy(UnknownAtExit::Open, AntiPassback::Refuse);
        match plan(Direction::Out, "A", None, &t, &p) {
            Plan::Pay { amount, rule, .. } => {
                assert_eq!(amount, Rupiah(5000));
                assert_eq!(rule, Some(FareRule::UnknownEntry));
            }
            other => panic!("{other:?}"),
        }
        match plan(Direction::Out, "A", Some(journey("A")), &t, &p) {
            Plan::Pay {
                amount, journey, ..
            } => {
                assert_eq!(amount, Rupiah(3000));
                assert!(journey.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debounce_window() {
        let mut d = Debouncer::new(3000);
        assert!(!d.is_repeat("p1", 0));
        d.passed("p1", 0);
        assert!(d.is_repeat("p1", 2999));
        assert!(!d.is_repeat("p2", 3000));
        // Held on the reader: each read extends the window.
        assert!(d.is_repeat("p1", 5000));
        assert!(!d.is_repeat("p1", 8001));
        // A tap that did not open the gate is not remembered.
        assert!(!d.is_repeat("p3", 9000));
        assert!(!d.is_repeat("p3", 9001));
    }
}
