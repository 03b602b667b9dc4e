//! One decision, shown the same way everywhere: what a finished tap tells the passenger, on
//! the reader (LED and buzzer) and on the screen. Pure: a [`TapReport`] in, a
//! [`Presentation`] out; the reader's signal is [`signal_for`] of the same outcome, so the
//! screen's colour and the reader's LED cannot disagree.
//!
//! What may reach the screen is decided here: the outcome, the direction and the amount of
//! this tap. Never a PAN (not even masked), never a reference, never the technician's message.

use crate::fare::policy::TapOutcome;
use crate::fare::Direction;
use crate::flow::TapReport;
use crate::nfc::feedback::Signal;

/// The case digits of a SNAP `responseCode` that mean "insufficient funds" (`403xx14`).
const INSUFFICIENT_FUNDS_CASE: &str = "14";

/// What the reader shows for an outcome: the gate opens, the wallet was not ready, or
/// anything else that keeps the gate shut. The reader's feedback and the screen's colour are
/// both this.
pub fn signal_for(outcome: TapOutcome) -> Signal {
    match outcome {
        TapOutcome::Approved
        | TapOutcome::Released
        | TapOutcome::UnpaidExit
        | TapOutcome::FreeExit => Signal::Approved,
        TapOutcome::WalletNotReady => Signal::WalletNotReady,
        TapOutcome::Declined
        | TapOutcome::Refused
        | TapOutcome::TryAgain
        | TapOutcome::ReadFailed
        | TapOutcome::InvalidPayload
        | TapOutcome::Duplicate
        | TapOutcome::Passback
        | TapOutcome::JournalUnavailable
        | TapOutcome::Unpaid => Signal::Declined,
    }
}

/// Which screen a tap leads to: the page picks its layout by this (its colour follows the
/// [`Signal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenKind {
    /// Waiting for a tap.
    Idle,
    /// The gate opens.
    Approved,
    /// The gate stays shut; the text says what the passenger can do.
    Declined,
    /// The wallet's QRIS TAP screen was not open.
    WalletNotReady,
    /// Tap again (no answer in time, or the phone could not be read).
    TryAgain,
    /// Emergency: every gate held open, no fares.
    FreeExit,
    /// A QR code to pay by scanning.
    Qr,
}

/// What the passenger is told about one tap, in Bahasa Indonesia first and English second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presentation {
    /// The reader's LED and buzzer, and the screen's colour.
    pub signal: Signal,
    /// The screen's layout.
    pub kind: ScreenKind,
    /// Headline, Indonesian.
    pub title_id: &'static str,
    /// Headline, English.
    pub title_en: &'static str,
    /// What to do next (or what the amount is), Indonesian.
    pub detail_id: &'static str,
    /// The same, English.
    pub detail_en: &'static str,
    /// This tap's amount in whole rupiah, shown only when the payment was confirmed.
    pub amount: Option<u64>,
}

impl Presentation {
    /// The presentation of a finished tap.
    pub fn of(r: &TapReport) -> Presentation {
        let (kind, [title_id, title_en, detail_id, detail_en]) = words(r);
        Presentation {
            signal: signal_for(r.outcome),
            kind,
            title_id,
            title_en,
            detail_id,
            detail_en,
            // Only a confirmed payment has an amount the passenger paid; a released exit or
            // a fast open is still settling, and a refusal moved no money.
            amount: match r.outcome {
                TapOutcome::Approved => r.amount,
                _ => None,
            },
        }
    }
}

/// The screen kind and the four texts of a tap's outcome.
fn words(r: &TapReport) -> (ScreenKind, [&'static str; 4]) {
    match signal_for(r.outcome) {
        Signal::Approved => opening_words(r),
        Signal::Declined | Signal::WalletNotReady => refusal_words(r),
    }
}

/// The words of a tap that opens the gate.
fn opening_words(r: &TapReport) -> (ScreenKind, [&'static str; 4]) {
    use ScreenKind as K;
    let enter_or_exit = match r.direction {
        Direction::In => ["Silakan masuk", "Please enter"],
        Direction::Out => ["Silakan keluar", "Please exit"],
    };
    let [go_id, go_en] = enter_or_exit;
    match r.outcome {
        TapOutcome::Approved => {
            let [d_id, d_en] = match r.direction {
                Direction::In => [
                    "Ditahan sekarang, disesuaikan saat keluar",
                    "Held now, adjusted when you exit",
                ],
                Direction::Out => ["Tarif perjalanan", "Trip fare"],
            };
            (K::Approved, [go_id, go_en, d_id, d_en])
        }
        TapOutcome::Released => (
            K::Approved,
            [
                go_id,
                go_en,
                "Pembayaran Anda sedang diproses",
                "Your payment is being processed",
            ],
        ),
        TapOutcome::FreeExit => free_exit_words(),
        // UnpaidExit, and any outcome that opens the gate without more to say.
        _ => (K::Approved, [go_id, go_en, "", ""]),
    }
}

/// The words of a tap that leaves the gate shut: what happened and what the passenger can do.
fn refusal_words(r: &TapReport) -> (ScreenKind, [&'static str; 4]) {
    use ScreenKind as K;
    match r.outcome {
        TapOutcome::Declined if insufficient_funds(r.response_code.as_deref()) => (
            K::Declined,
            [
                "Saldo tidak cukup",
                "Insufficient balance",
                "Isi ulang saldo dompet Anda, lalu tempelkan lagi.",
                "Top up your wallet, then tap again.",
            ],
        ),
        TapOutcome::Declined => (
            K::Declined,
            [
                "Pembayaran ditolak",
                "Payment declined",
                "Dompet Anda menolak pembayaran. Hubungi penyedia dompet Anda atau bayar dengan cara lain.",
                "Your wallet declined the payment. Contact your wallet provider or pay another way.",
            ],
        ),
        TapOutcome::WalletNotReady => (
            K::WalletNotReady,
            [
                "Buka QRIS TAP di dompet Anda",
                "Open QRIS TAP in your wallet",
                "Buka layar QRIS TAP di aplikasi dompet, lalu tempelkan ponsel lagi.",
                "Open the QRIS TAP screen in your wallet app, then tap again.",
            ],
        ),
        TapOutcome::TryAgain => (
            K::TryAgain,
            [
                "Silakan tempelkan lagi",
                "Please tap again",
                "Pembayaran belum terkonfirmasi. Anda tidak akan ditagih dua kali.",
                "The payment was not confirmed in time. You will not be charged twice.",
            ],
        ),
        TapOutcome::ReadFailed => (
            K::TryAgain,
            [
                "Tahan ponsel tetap diam",
                "Hold your phone still",
                "Ponsel tidak terbaca. Tempelkan lagi dan tahan sampai layar berubah.",
                "Your phone could not be read. Tap again and hold it until the screen changes.",
            ],
        ),
        TapOutcome::InvalidPayload => (
            K::Declined,
            [
                "Kode tidak dikenali",
                "Code not recognised",
                "Gunakan QRIS TAP dari aplikasi dompet Anda.",
                "Use QRIS TAP from your wallet app.",
            ],
        ),
        TapOutcome::Duplicate => (
            K::Declined,
            [
                "Sudah tercatat",
                "Already recorded",
                "Tap ini sudah tercatat. Anda tidak ditagih lagi.",
                "This tap was already recorded. You were not charged again.",
            ],
        ),
        TapOutcome::Passback => (
            K::Declined,
            [
                "Perjalanan Anda masih terbuka",
                "Your journey is still open",
                "Silakan hubungi petugas.",
                "Please see staff.",
            ],
        ),
        TapOutcome::Unpaid => (
            K::Declined,
            [
                "Ada tarif belum dibayar",
                "Unpaid fare on record",
                "Silakan hubungi petugas.",
                "Please see staff.",
            ],
        ),
        // JournalUnavailable, Refused: nothing the passenger can do here.
        _ => (
            K::Declined,
            [
                "Gerbang ini tidak dapat menerima pembayaran",
                "This gate cannot take payments now",
                "Silakan gunakan gerbang lain.",
                "Please use another gate.",
            ],
        ),
    }
}

/// The emergency screen's texts, for a free-exit tap and for the station's free-exit mode.
pub(crate) fn free_exit_words() -> (ScreenKind, [&'static str; 4]) {
    (
        ScreenKind::FreeExit,
        [
            "Keadaan darurat: silakan keluar",
            "Emergency: please exit",
            "Semua gerbang terbuka. Tidak ada tarif.",
            "All gates are open. No fare is charged.",
        ],
    )
}

/// `403xx14`: the issuer said the balance is short.
fn insufficient_funds(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        c.len() == 7 && c.starts_with("403") && c.get(5..) == Some(INSUFFICIENT_FUNDS_CASE)
    })
}

/// Whole rupiah as Indonesians write it: `Rp6.000`, `Rp1.250.000`.
pub fn rupiah_id(amount: u64) -> String {
    let digits = amount.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 2);
    out.push_str("Rp");
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('.');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TapOutcome; 14] = [
        TapOutcome::Approved,
        TapOutcome::Released,
        TapOutcome::Declined,
        TapOutcome::Refused,
        TapOutcome::UnpaidExit,
        TapOutcome::TryAgain,
        TapOutcome::WalletNotReady,
        TapOutcome::ReadFailed,
        TapOutcome::InvalidPayload,
        TapOutcome::Duplicate,
        TapOutcome::Passback,
        TapOutcome::JournalUnavailable,
        TapOutcome::FreeExit,
        TapOutcome::Unpaid,
    ];

    fn report(direction: Direction, outcome: TapOutcome) -> TapReport {
        let mut r = TapReport::refused("in-1", direction, outcome, "technician's words");
        r.amount = Some(6000);
        r.pan_masked = Some("93600002*******6781".into());
        r.partner_reference_no = Some("TGBLM01261202".into());
        r.nns = Some("93600002".into());
        r
    }

    #[test]
    fn rupiah_is_written_the_indonesian_way() {
        assert_eq!(rupiah_id(0), "Rp0");
        assert_eq!(rupiah_id(500), "Rp500");
        assert_eq!(rupiah_id(6000), "Rp6.000");
        assert_eq!(rupiah_id(14_000), "Rp14.000");
        assert_eq!(rupiah_id(1_250_000), "Rp1.250.000");
    }

    /// Item 4 of issue 13: the screen's colour is the reader's signal, outcome by outcome.
    #[test]
    fn every_outcome_has_one_signal_and_a_screen_in_both_languages() {
        let expected = |o| match o {
            TapOutcome::Approved
            | TapOutcome::Released
            | TapOutcome::UnpaidExit
            | TapOutcome::FreeExit => Signal::Approved,
            TapOutcome::WalletNotReady => Signal::WalletNotReady,
            _ => Signal::Declined,
        };
        for dir in [Direction::In, Direction::Out] {
            for o in ALL {
                let p = Presentation::of(&report(dir, o));
                assert_eq!(p.signal, expected(o), "{o:?}");
                assert_eq!(p.signal, signal_for(o), "{o:?}");
                assert!(!p.title_id.is_empty() && !p.title_en.is_empty(), "{o:?}");
                assert_ne!(p.title_id, p.title_en, "{o:?}: two languages");
                let opens = p.signal == Signal::Approved;
                let shown_open = matches!(p.kind, ScreenKind::Approved | ScreenKind::FreeExit);
                assert_eq!(
                    opens, shown_open,
                    "{o:?}: the screen says what the gate does"
                );
                if !opens {
                    assert!(!p.detail_id.is_empty(), "{o:?}: a refusal says what to do");
                    assert!(!p.detail_en.is_empty(), "{o:?}");
                }
            }
        }
    }

    #[test]
    fn approved_says_enter_or_exit_with_the_fare_and_only_a_confirmed_one() {
        let p = Presentation::of(&report(Direction::In, TapOutcome::Approved));
        assert_eq!((p.title_id, p.title_en), ("Silakan masuk", "Please enter"));
        assert_eq!(p.amount, Some(6000));
        assert_eq!(p.kind, ScreenKind::Approved);
        let p = Presentation::of(&report(Direction::Out, TapOutcome::Approved));
        assert_eq!((p.title_id, p.title_en), ("Silakan keluar", "Please exit"));
        assert_eq!(p.amount, Some(6000));
        for o in ALL.into_iter().filter(|o| *o != TapOutcome::Approved) {
            assert_eq!(
                Presentation::of(&report(Direction::Out, o)).amount,
                None,
                "{o:?}"
            );
        }
        let released = Presentation::of(&report(Direction::Out, TapOutcome::Released));
        assert_eq!(released.title_id, "Silakan keluar");
    }

    #[test]
    fn each_refusal_says_what_the_passenger_can_do() {
        let said = |o, code: Option<&str>| {
            let mut r = report(Direction::In, o);
            r.response_code = code.map(str::to_string);
            let p = Presentation::of(&r);
            format!(
                "{} {} | {} {}",
                p.title_id, p.detail_id, p.title_en, p.detail_en
            )
        };
        let cases: &[(TapOutcome, Option<&str>, &str)] = &[
            (TapOutcome::Declined, Some("4036014"), "Top up"),
            (TapOutcome::Declined, Some("4035014"), "Top up"),
            (
                TapOutcome::Declined,
                Some("4036005"),
                "Contact your wallet provider",
            ),
            (TapOutcome::Declined, None, "Contact your wallet provider"),
            (TapOutcome::WalletNotReady, None, "Open the QRIS TAP screen"),
            (TapOutcome::TryAgain, None, "tap again"),
            (TapOutcome::ReadFailed, None, "Hold your phone still"),
            (TapOutcome::Unpaid, None, "Unpaid fare on record"),
            (TapOutcome::Unpaid, None, "see staff"),
            (TapOutcome::Unpaid, None, "Ada tarif belum dibayar"),
            (TapOutcome::Unpaid, None, "Silakan hubungi petugas"),
            (TapOutcome::Passback, None, "see staff"),
            (TapOutcome::JournalUnavailable, None, "use another gate"),
            (TapOutcome::Refused, None, "use another gate"),
            (TapOutcome::InvalidPayload, None, "QRIS TAP"),
            (TapOutcome::Duplicate, None, "not charged again"),
            (TapOutcome::FreeExit, None, "Emergency"),
        ];
        for (o, code, words) in cases {
            let s = said(*o, *code);
            assert!(s.contains(words), "{o:?} {code:?}: {s}");
        }
    }

    #[test]
    fn nothing_of_the_passenger_but_the_amount_reaches_the_screen() {
        for o in ALL {
            let p = Presentation::of(&report(Direction::Out, o));
            let all = format!("{p:?}");
            for secret in ["93600002", "6781", "TGBLM", "technician"] {
                assert!(!all.contains(secret), "{o:?} shows {secret}: {all}");
            }
        }
    }
}
