//! [`GateMonitor`]: what the gate inputs mean, without I/O. Emergency inputs put the station in
//! free-exit mode; each passage is matched to a paid open on its lane (or reported as unpaid);
//! a paid open nobody walked through is reported after the passage window. The daemon feeds it
//! [`InputEvent`]s and the gate opens, and carries out its [`Notice`]s (`daemon/gate.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use super::inputs::{InputEvent, InputEventKind, InputRole};

/// What [`GateMonitor`] concluded; the daemon acts on it (relays, logs, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Enter free-exit mode: hold every lane's gate open, stop validating taps, log loudly.
    EnterFreeExit {
        /// The emergency input that triggered it.
        input: String,
    },
    /// Every emergency input cleared: close the gates and resume validation.
    LeaveFreeExit,
    /// A passage matched to a paid open (or any passage in free-exit mode): count it.
    Passage {
        /// The lane.
        lane: String,
        /// True when the gate was open for free exit, not for a paid tap.
        free_exit: bool,
    },
    /// A passage with no paid open waiting: tailgating, or someone forced the gate. Log it.
    UnpaidPassage {
        /// The lane.
        lane: String,
        /// When the sensor fired.
        at: Duration,
    },
    /// A gate opened for a paid tap and nobody passed within the window: log it, so the
    /// fare can be looked at (the passenger may have walked away, or the sensor is broken).
    NobodyPassed {
        /// The lane.
        lane: String,
        /// When the gate was opened.
        opened_at: Duration,
    },
    /// A door or fault input changed; `active` is its new state.
    Status {
        /// Door or fault.
        role: InputRole,
        /// The input's label.
        input: String,
        /// The lane, when the input belongs to one.
        lane: Option<String>,
        /// The new state.
        active: bool,
    },
    /// An input is no longer observed (its reader stopped). Alert: while the emergency input
    /// is unobserved, tapgate cannot follow the fire alarm (the wiring still does).
    InputLost {
        /// The input's label.
        input: String,
    },
}

/// Gate-input logic without I/O: free-exit mode from the emergency inputs, passages matched to
/// paid opens per lane, and "opened but nobody passed" after `passage_window`.
///
/// Times are `CLOCK_MONOTONIC` durations ([`crate::relay::inputs::monotonic_now`], [`InputEvent::at`]).
#[derive(Clone, Debug)]
pub struct GateMonitor {
    passage_window: Duration,
    emergencies: BTreeSet<String>,
    waiting: BTreeMap<String, VecDeque<Duration>>,
    passages: BTreeMap<String, u64>,
}

impl GateMonitor {
    /// A monitor that expects a passage within `passage_window` of each paid open.
    pub fn new(passage_window: Duration) -> Self {
        GateMonitor {
            passage_window,
            emergencies: BTreeSet::new(),
            waiting: BTreeMap::new(),
            passages: BTreeMap::new(),
        }
    }

    /// True while any emergency input is active.
    pub fn free_exit(&self) -> bool {
        !self.emergencies.is_empty()
    }

    /// Passages counted on `lane` so far.
    pub fn passages(&self, lane: &str) -> u64 {
        self.passages.get(lane).copied().unwrap_or(0)
    }

    /// Paid opens on `lane` still waiting for their passenger.
    pub fn waiting(&self, lane: &str) -> usize {
        self.waiting.get(lane).map_or(0, VecDeque::len)
    }

    /// The lane opened its gate for a paid tap at `at`.
    pub fn gate_opened(&mut self, lane: &str, at: Duration) {
        if self.free_exit() {
            return;
        }
        self.waiting
            .entry(lane.to_string())
            .or_default()
            .push_back(at);
    }

    /// When [`GateMonitor::tick`] next has something to report.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.waiting
            .values()
            .filter_map(|q| q.front())
            .min()
            .map(|t| *t + self.passage_window)
    }

    /// Reports paid opens whose window ended by `now` with nobody passing.
    pub fn tick(&mut self, now: Duration) -> Vec<Notice> {
        let mut out = Vec::new();
        for (lane, q) in &mut self.waiting {
            while let Some(&opened_at) = q.front() {
                if opened_at + self.passage_window > now {
                    break;
                }
                q.pop_front();
                out.push(Notice::NobodyPassed {
                    lane: lane.clone(),
                    opened_at,
                });
            }
        }
        out
    }

    /// Takes one input event.
    pub fn on_event(&mut self, ev: &InputEvent) -> Vec<Notice> {
        let mut out = self.tick(ev.at);
        match ev.kind {
            InputEventKind::EmergencyOn => {
                let was = self.free_exit();
                self.emergencies.insert(ev.input.clone());
                if !was {
                    // Paid opens in flight can no longer be told apart from free exits.
                    self.waiting.clear();
                    out.push(Notice::EnterFreeExit {
                        input: ev.input.clone(),
                    });
                }
            }
            InputEventKind::EmergencyOff => {
                if self.emergencies.remove(&ev.input) && !self.free_exit() {
                    out.push(Notice::LeaveFreeExit);
                }
            }
            InputEventKind::Passage => {
                let lane = ev.lane.clone().unwrap_or_default();
                if self.free_exit() {
                    *self.passages.entry(lane.clone()).or_default() += 1;
                    out.push(Notice::Passage {
                        lane,
                        free_exit: true,
                    });
                } else if self
                    .waiting
                    .get_mut(&lane)
                    .and_then(VecDeque::pop_front)
                    .is_some()
                {
                    *self.passages.entry(lane.clone()).or_default() += 1;
                    out.push(Notice::Passage {
                        lane,
                        free_exit: false,
                    });
                } else {
                    out.push(Notice::UnpaidPassage { lane, at: ev.at });
                }
            }
            InputEventKind::DoorOpened | InputEventKind::FaultOn => out.push(Notice::Status {
                role: ev.role,
                input: ev.input.clone(),
                lane: ev.lane.clone(),
                active: true,
            }),
            InputEventKind::DoorClosed | InputEventKind::FaultOff => out.push(Notice::Status {
                role: ev.role,
                input: ev.input.clone(),
                lane: ev.lane.clone(),
                active: false,
            }),
            InputEventKind::WatchStopped => out.push(Notice::InputLost {
                input: ev.input.clone(),
            }),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ev(
        role: InputRole,
        input: &str,
        lane: Option<&str>,
        kind: InputEventKind,
        at: u64,
    ) -> InputEvent {
        InputEvent {
            role,
            lane: lane.map(str::to_string),
            input: input.into(),
            kind,
            at: s(at),
            initial: false,
        }
    }

    fn passage(lane: &str, at: u64) -> InputEvent {
        ev(
            InputRole::Passage,
            &format!("PASS_{lane}"),
            Some(lane),
            InputEventKind::Passage,
            at,
        )
    }

    fn alarm(input: &str, on: bool, at: u64) -> InputEvent {
        let kind = if on {
            InputEventKind::EmergencyOn
        } else {
            InputEventKind::EmergencyOff
        };
        ev(InputRole::Emergency, input, None, kind, at)
    }
    #[test]
    fn emergency_enters_free_exit_once_and_leaves_when_every_input_clears() {
        let mut m = GateMonitor::new(s(5000));
        assert_eq!(
            m.on_event(&alarm("FIRE_A", true, 10)),
            vec![Notice::EnterFreeExit {
                input: "FIRE_A".into()
            }]
        );
        assert!(m.free_exit());
        assert_eq!(m.on_event(&alarm("FIRE_B", true, 20)), vec![]);
        assert_eq!(m.on_event(&alarm("FIRE_A", true, 25)), vec![], "repeat");
        assert_eq!(m.on_event(&alarm("FIRE_A", false, 30)), vec![]);
        assert!(m.free_exit(), "FIRE_B still active");
        assert_eq!(
            m.on_event(&alarm("FIRE_B", false, 40)),
            vec![Notice::LeaveFreeExit]
        );
        assert!(!m.free_exit());
        assert_eq!(
            m.on_event(&alarm("FIRE_B", false, 50)),
            vec![],
            "repeat off"
        );
    }

    #[test]
    fn a_paid_open_is_matched_by_one_passage() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        assert_eq!(m.next_deadline(), Some(s(6000)));
        assert_eq!(
            m.on_event(&passage("G1", 2000)),
            vec![Notice::Passage {
                lane: "G1".into(),
                free_exit: false
            }]
        );
        assert_eq!(m.passages("G1"), 1);
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.tick(s(100_000)), vec![]);
    }

    #[test]
    fn a_second_person_behind_a_paid_one_is_unpaid() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        m.on_event(&passage("G1", 2000));
        assert_eq!(
            m.on_event(&passage("G1", 2400)),
            vec![Notice::UnpaidPassage {
                lane: "G1".into(),
                at: s(2400)
            }]
        );
        assert_eq!(m.passages("G1"), 1);
    }

    #[test]
    fn an_open_nobody_used_is_reported_after_the_window() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        m.gate_opened("G2", s(1500));
        assert_eq!(m.tick(s(5999)), vec![]);
        assert_eq!(
            m.tick(s(6000)),
            vec![Notice::NobodyPassed {
                lane: "G1".into(),
                opened_at: s(1000)
            }]
        );
        // A passage after the window does not pay for the lapsed open.
        let out = m.on_event(&passage("G1", 6100));
        assert_eq!(
            out,
            vec![Notice::UnpaidPassage {
                lane: "G1".into(),
                at: s(6100)
            }]
        );
        assert_eq!(m.waiting("G2"), 1);
    }

    #[test]
    fn an_event_after_the_deadline_reports_the_lapse_first() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        let out = m.on_event(&passage("G1", 7000));
        assert_eq!(
            out,
            vec![
                Notice::NobodyPassed {
                    lane: "G1".into(),
                    opened_at: s(1000)
                },
                Notice::UnpaidPassage {
                    lane: "G1".into(),
                    at: s(7000)
                }
            ]
        );
    }

    #[test]
    fn free_exit_counts_passages_and_forgets_paid_opens() {
        let mut m = GateMonitor::new(s(5000));
        m.gate_opened("G1", s(1000));
        m.on_event(&alarm("FIRE", true, 1100));
        assert_eq!(m.waiting("G1"), 0);
        m.gate_opened("G1", s(1200));
        assert_eq!(m.waiting("G1"), 0, "no paid opens in free exit");
        assert_eq!(
            m.on_event(&passage("G1", 1300)),
            vec![Notice::Passage {
                lane: "G1".into(),
                free_exit: true
            }]
        );
        assert_eq!(m.tick(s(100_000)), vec![], "nothing reported as unused");
    }

    #[test]
    fn a_lost_input_and_status_changes_are_reported() {
        let mut m = GateMonitor::new(s(5000));
        let out = m.on_event(&ev(
            InputRole::Door,
            "CABINET",
            None,
            InputEventKind::DoorOpened,
            5,
        ));
        assert_eq!(
            out,
            vec![Notice::Status {
                role: InputRole::Door,
                input: "CABINET".into(),
                lane: None,
                active: true
            }]
        );
        let out = m.on_event(&ev(
            InputRole::Emergency,
            "FIRE",
            None,
            InputEventKind::WatchStopped,
            6,
        ));
        assert_eq!(
            out,
            vec![Notice::InputLost {
                input: "FIRE".into()
            }]
        );
    }
}
