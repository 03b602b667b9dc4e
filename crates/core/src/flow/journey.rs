//! How a journey is closed when no tap-out closes it: one rule for the reconciler's stale
//! sweep and for anti-passback `close_at_max_fare`, so both record the same fare.

use crate::fare::settings::StaleJourney;
use crate::fare::{OpState, Rupiah};
use crate::journal::{JourneyState, OpRow};

/// How to close a journey whose passenger never tapped out, given its tap-in operation
/// (`None`: missing or damaged) and the station's `stale_journey` policy. `None` means not
/// yet: the tap-in's own outcome is still being resolved.
///
/// - The hold stands (`SUCCEEDED`): `max_fare` closes as `STALE_CLOSED` with the hold as its
///   fare (the passenger paid the maximum); `release` closes as `RELEASED` with no fare (the
///   hold is left to expire at the issuer: tapgate does not refund it).
/// - The hold is gone or never was (refunded, refund owed, declined), or the tap-in row is
///   unreadable: `VOID`, no fare.
pub fn stale_close(
    tap_in: Option<&OpRow>,
    policy: StaleJourney,
) -> Option<(JourneyState, Option<Rupiah>)> {
    let Some(op) = tap_in else {
        return Some((JourneyState::Void, None));
    };
    match op.state {
        OpState::Succeeded => Some(match policy {
            StaleJourney::MaxFare => (JourneyState::StaleClosed, Some(op.amount)),
            StaleJourney::Release => (JourneyState::Released, None),
        }),
        OpState::Refunded | OpState::RefundPending | OpState::Declined => {
            Some((JourneyState::Void, None))
        }
        _ => None,
    }
}

/// How anti-passback `close_at_max_fare` closes the open journey of a passenger tapping in
/// again: at the maximum fare, whatever the `stale_journey` policy, with the same fare the
/// stale sweep would record. A tap-in still unresolved closes as `STALE_CLOSED` with no fare
/// yet (the new tap-in cannot wait for it); its hold is resolved by the reconciler as usual.
pub fn close_at_max_fare(tap_in: Option<&OpRow>) -> (JourneyState, Option<Rupiah>) {
    stale_close(tap_in, StaleJourney::MaxFare).unwrap_or((JourneyState::StaleClosed, None))
}
