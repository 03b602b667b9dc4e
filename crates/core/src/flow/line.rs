//! What the line (the journeys of every station, in one shared store) tells a tap, and how
//! the tap's plan merges it with what the station's own journal knows.
//!
//! The station's journal stays the source of truth for money; the line adds what happened at
//! other stations: an entry made elsewhere, a journey of this station closed elsewhere, an
//! exit of the same passenger claimed or made elsewhere moments ago.

use crate::fare::Rupiah;
use crate::journal::{ElsewhereClose, FoundJourney, JourneyState};

/// What the line answered for one passenger, or why it could not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineView {
    /// The line answered in time.
    Answered(LineAnswer),
    /// The line could not answer within its budget: the tap goes on with what the station
    /// knows (and an exit that knows no entry is marked for the reconciler to converge).
    Unavailable(String),
}

/// The line's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineAnswer {
    /// The passenger's open journey on the line; at an exit, claimed for this tap-out.
    pub open: Option<LineEntry>,
    /// Another exit's live claim on that journey (its tap-out reference): the same passenger
    /// is tapping out at another gate right now.
    pub claimed_by: Option<String>,
    /// A journey of this passenger closed by a tap-out within the debounce window (its
    /// tap-out reference): this exit tap is the same tap.
    pub recent_close: Option<String>,
    /// How the line sees the journey this station's journal holds open for the passenger.
    pub local: Option<LineState>,
    /// What the passenger owes on the line's unpaid list (fast-opened payments that ended
    /// unpaid at any station): their entry is refused.
    pub unpaid: Option<crate::journal::Owed>,
}

/// A journey opened at some station of the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineEntry {
    /// Its tap-in `partnerReferenceNo`.
    pub tap_in_ref: String,
    /// Where.
    pub entry_station: String,
    /// The hold's `referenceNo`, when known.
    pub tap_in_reference_no: Option<String>,
    /// When, Unix milliseconds.
    pub opened_at_ms: i64,
}

/// One journey's state on the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineState {
    /// Its tap-in `partnerReferenceNo`.
    pub tap_in_ref: String,
    /// Its state.
    pub state: JourneyState,
    /// The fare recorded by its close.
    pub fare: Option<Rupiah>,
    /// For `CLOSED`: whether the tap-out named the hold (`Some(false)`: the entry station
    /// releases it).
    pub references_hold: Option<bool>,
}

impl LineState {
    /// How this station closes its own copy of a journey the line has closed, or `None` when
    /// the line has it open.
    pub fn elsewhere_close(&self, id: i64) -> Option<ElsewhereClose> {
        (self.state != JourneyState::Open).then(|| ElsewhereClose {
            id,
            state: self.state,
            fare: self.fare,
            release_hold: self.state == JourneyState::Closed && self.references_hold == Some(false),
        })
    }
}

/// The journey a tap works with, once the station's and the line's views are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// No open journey.
    None,
    /// Open in this station's journal (and not closed on the line).
    Local(Box<FoundJourney>),
    /// Open on the line, opened at another journal.
    Remote(LineEntry),
}

/// Why the line makes this tap the same tap as another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineDuplicate {
    /// Another gate has claimed the exit of this journey.
    ClaimedElsewhere(String),
    /// A tap-out closed a journey of this passenger within the debounce window.
    JustClosed(String),
}

/// The merge of the station's open journey and the line's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The journey to plan with.
    pub known: Known,
    /// The station's journey, closed on the line: close it here too.
    pub closed_elsewhere: Option<ElsewhereClose>,
    /// The line could not answer (or is not used): an exit that finds no journey has an
    /// entry only the line could tell.
    pub line_unavailable: bool,
}

/// Merges what the station's journal found with what the line said. `exit` is true at a
/// tap-out lane, where a claim or a recent close elsewhere makes the tap a duplicate.
pub fn merge(
    local: Option<FoundJourney>,
    line: Option<&LineView>,
    exit: bool,
) -> Result<Merged, LineDuplicate> {
    let answer = match line {
        None => {
            return Ok(Merged {
                known: local.map_or(Known::None, |f| Known::Local(Box::new(f))),
                closed_elsewhere: None,
                line_unavailable: false,
            })
        }
        Some(LineView::Unavailable(_)) => {
            return Ok(Merged {
                known: local.map_or(Known::None, |f| Known::Local(Box::new(f))),
                closed_elsewhere: None,
                line_unavailable: true,
            })
        }
        Some(LineView::Answered(a)) => a,
    };
    if exit {
        if let Some(by) = &answer.claimed_by {
            return Err(LineDuplicate::ClaimedElsewhere(by.clone()));
        }
        if let Some(by) = &answer.recent_close {
            return Err(LineDuplicate::JustClosed(by.clone()));
        }
    }
    let closed_elsewhere = match (&local, &answer.local) {
        (Some(f), Some(l)) if l.tap_in_ref == f.journey.tap_in_ref => {
            l.elsewhere_close(f.journey.id)
        }
        _ => None,
    };
    let local = local.filter(|_| closed_elsewhere.is_none());
    let known = match (local, &answer.open) {
        (Some(f), _) => Known::Local(Box::new(f)),
        (None, Some(e)) => Known::Remote(e.clone()),
        (None, None) => Known::None,
    };
    Ok(Merged {
        known,
        closed_elsewhere,
        line_unavailable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JourneyRow;

    fn found(id: i64, tap_in: &str) -> FoundJourney {
        FoundJourney {
            journey: JourneyRow {
                id,
                pan_key: "k".into(),
                entry_station: "BLM".into(),
                tap_in_ref: tap_in.into(),
                tap_out_ref: None,
                state: JourneyState::Open,
                fare: None,
                opened_at_ms: 1,
                closed_at_ms: None,
            },
            tap_in: None,
        }
    }

    fn entry(tap_in: &str) -> LineEntry {
        LineEntry {
            tap_in_ref: tap_in.into(),
            entry_station: "ASN".into(),
            tap_in_reference_no: Some("R".into()),
            opened_at_ms: 2,
        }
    }

    #[test]
    fn without_a_line_the_station_journal_decides() {
        let m = merge(Some(found(1, "A")), None, true).unwrap();
        assert!(matches!(m.known, Known::Local(_)));
        assert!(!m.line_unavailable);
        let m = merge(None, Some(&LineView::Unavailable("down".into())), true).unwrap();
        assert_eq!(m.known, Known::None);
        assert!(m.line_unavailable);
    }

    #[test]
    fn an_entry_made_elsewhere_is_found_on_the_line() {
        let a = LineAnswer {
            open: Some(entry("B")),
            ..LineAnswer::default()
        };
        let m = merge(None, Some(&LineView::Answered(a)), true).unwrap();
        assert_eq!(m.known, Known::Remote(entry("B")));
    }

    #[test]
    fn a_local_journey_closed_elsewhere_is_closed_here_and_not_used() {
        let a = LineAnswer {
            open: None,
            local: Some(LineState {
                tap_in_ref: "A".into(),
                state: JourneyState::Closed,
                fare: Some(Rupiah(3000)),
                references_hold: Some(false),
            }),
            ..LineAnswer::default()
        };
        let m = merge(Some(found(7, "A")), Some(&LineView::Answered(a)), false).unwrap();
        assert_eq!(m.known, Known::None);
        assert_eq!(
            m.closed_elsewhere,
            Some(ElsewhereClose {
                id: 7,
                state: JourneyState::Closed,
                fare: Some(Rupiah(3000)),
                release_hold: true,
            })
        );
    }

    #[test]
    fn a_local_journey_open_on_the_line_is_used_with_its_tap_in() {
        let a = LineAnswer {
            open: Some(entry("A")),
            local: Some(LineState {
                tap_in_ref: "A".into(),
                state: JourneyState::Open,
                fare: None,
                references_hold: None,
            }),
            ..LineAnswer::default()
        };
        let m = merge(Some(found(7, "A")), Some(&LineView::Answered(a)), true).unwrap();
        assert!(matches!(m.known, Known::Local(ref f) if f.journey.id == 7));
        assert_eq!(m.closed_elsewhere, None);
    }

    #[test]
    fn an_exit_claimed_or_just_made_elsewhere_is_the_same_tap_but_not_an_entry() {
        let claimed = LineAnswer {
            open: Some(entry("B")),
            claimed_by: Some("OUT1".into()),
            ..LineAnswer::default()
        };
        assert_eq!(
            merge(None, Some(&LineView::Answered(claimed.clone())), true),
            Err(LineDuplicate::ClaimedElsewhere("OUT1".into()))
        );
        let closed = LineAnswer {
            recent_close: Some("OUT2".into()),
            ..LineAnswer::default()
        };
        assert_eq!(
            merge(None, Some(&LineView::Answered(closed)), true),
            Err(LineDuplicate::JustClosed("OUT2".into()))
        );
        assert!(merge(None, Some(&LineView::Answered(claimed)), false).is_ok());
    }
}
