//! Tariffs: flat, or a station-to-station matrix. Pure.

use super::settings::TariffConfig;
use super::Rupiah;

/// A checked tariff (built from a [`TariffConfig`] that passed [`TariffConfig::check`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tariff {
    /// One fare for every trip.
    Flat(Rupiah),
    /// `fares[i][j]` from `stations[i]` to `stations[j]`.
    Matrix {
        /// Station codes in matrix order.
        stations: Vec<String>,
        /// Whole-rupiah fares.
        fares: Vec<Vec<u64>>,
    },
}

/// How a tap-out fare was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FareRule {
    /// The flat fare.
    Flat,
    /// Entry station known: the matrix fare.
    Matrix,
    /// Entry not known to this gate: the highest fare on the line (the KRL rule).
    UnknownEntry,
}

impl FareRule {
    /// Spelling for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FareRule::Flat => "flat",
            FareRule::Matrix => "matrix",
            FareRule::UnknownEntry => "unknown_entry",
        }
    }
}

impl Tariff {
    /// Builds the tariff from its settings, checked by [`TariffConfig::check`].
    pub fn from_config(cfg: &TariffConfig) -> Tariff {
        match cfg {
            TariffConfig::Flat { fare } => Tariff::Flat(Rupiah(*fare)),
            TariffConfig::Matrix { stations, fares } => Tariff::Matrix {
                stations: stations.clone(),
                fares: fares.clone(),
            },
        }
    }

    fn index(stations: &[String], code: &str) -> Option<usize> {
        stations.iter().position(|s| s == code)
    }

    /// The highest fare anywhere on the line.
    pub fn max_fare(&self) -> Rupiah {
        match self {
            Tariff::Flat(f) => *f,
            Tariff::Matrix { fares, .. } => {
                Rupiah(fares.iter().flatten().copied().max().unwrap_or(0))
            }
        }
    }

    /// What a tap-in at `station` holds: the highest fare reachable from it. A station the
    /// matrix does not list holds the line's maximum.
    pub fn hold_at_entry(&self, station: &str) -> Rupiah {
        match self {
            Tariff::Flat(f) => *f,
            Tariff::Matrix { stations, fares } => Self::index(stations, station)
                .and_then(|i| fares.get(i))
                .and_then(|row| row.iter().copied().max())
                .map(Rupiah)
                .unwrap_or_else(|| self.max_fare()),
        }
    }

    /// The fare of a trip ending at `exit`, entered at `entry` when known.
    pub fn fare(&self, entry: Option<&str>, exit: &str) -> (Rupiah, FareRule) {
        match self {
            Tariff::Flat(f) => (*f, FareRule::Flat),
            Tariff::Matrix { stations, fares } => {
                let found = entry.and_then(|e| {
                    let i = Self::index(stations, e)?;
                    let j = Self::index(stations, exit)?;
                    fares.get(i)?.get(j).copied()
                });
                match found {
                    Some(f) => (Rupiah(f), FareRule::Matrix),
                    None => (self.max_fare(), FareRule::UnknownEntry),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Tariff {
        // Four stations, Rp3,000 neighbours, +Rp1,000 per further station.
        let st = ["LBB", "FTM", "CPR", "HJN"];
        let fares = (0..4)
            .map(|i: i64| {
                (0..4)
                    .map(|j: i64| {
                        let d = (i - j).unsigned_abs();
                        if d <= 1 {
                            3000
                        } else {
                            3000 + 1000 * (d - 1)
                        }
                    })
                    .collect()
            })
            .collect();
        Tariff::Matrix {
            stations: st.iter().map(|s| s.to_string()).collect(),
            fares,
        }
    }

    #[test]
    fn hold_is_the_highest_fare_from_the_entry() {
        let t = line();
        assert_eq!(t.hold_at_entry("LBB"), Rupiah(5000));
        assert_eq!(t.hold_at_entry("FTM"), Rupiah(4000));
        assert_eq!(t.hold_at_entry("XXX"), Rupiah(5000));
        assert_eq!(
            Tariff::Flat(Rupiah(3500)).hold_at_entry("any"),
            Rupiah(3500)
        );
    }

    #[test]
    fn exit_fare_uses_the_matrix_or_the_unknown_entry_rule() {
        let t = line();
        assert_eq!(t.fare(Some("LBB"), "HJN"), (Rupiah(5000), FareRule::Matrix));
        assert_eq!(t.fare(Some("CPR"), "CPR"), (Rupiah(3000), FareRule::Matrix));
        assert_eq!(t.fare(None, "FTM"), (Rupiah(5000), FareRule::UnknownEntry));
        assert_eq!(
            t.fare(Some("ZZZ"), "FTM"),
            (Rupiah(5000), FareRule::UnknownEntry)
        );
        assert_eq!(
            Tariff::Flat(Rupiah(3500)).fare(None, "x"),
            (Rupiah(3500), FareRule::Flat)
        );
    }

    #[test]
    fn hold_always_covers_the_fare() {
        let t = line();
        for entry in ["LBB", "FTM", "CPR", "HJN"] {
            for exit in ["LBB", "FTM", "CPR", "HJN"] {
                assert!(t.fare(Some(entry), exit).0 <= t.hold_at_entry(entry));
            }
        }
    }
}
