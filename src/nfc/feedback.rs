//! Passenger feedback on the reader itself: LED and buzzer commands for the ACS reader families
//! that take them. Pure byte builders; sending them is the reader service's job.
//!
//! Two command styles exist, and they travel differently:
//!
//! * **ACR122U-style pseudo-APDU** `FF 00 40 ...`: sent with `SCardTransmit` on a card
//!   connection (the reader intercepts it instead of passing it to the phone). Answers
//!   `90 xx` (xx = the LED state after the command) or `63 00` on failure.
//! * **CCID escape** `E0 00 00 ...` (ACR1252U and its relatives): sent with `SCardControl` and
//!   the control code `SCARD_CTL_CODE(3500)` ([`CCID_ESCAPE_CODE`]), which works even with no
//!   phone in the field (connect with `ShareMode::Direct`). Answers `E1 00 00 00 01 xx`.
//!   Hardware truth: libccid refuses escape commands unless `ifdDriverOptions` has bit `0x0001`
//!   set in its `Info.plist`; see hardware-notes.md, "Readers".
//!
//! Feedback is off by default ([`FeedbackModel::Off`]): a reader whose model is not configured
//! must never receive vendor commands.

/// The CCID escape control code number; pass it through `pcsc::ctl_code` to get the
/// platform's value (`0x42000DAC` with pcsc-lite).
pub const CCID_ESCAPE_CODE: u32 = 3500;

/// Which command set the lane's reader understands. Chosen per reader in config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedbackModel {
    /// No vendor commands are ever sent (the default).
    #[default]
    Off,
    /// ACR122U and readers with its compatible `FF 00 40` LED/buzzer pseudo-APDU.
    Acr122u,
    /// ACR1252U-class readers: CCID escape `E0 00 00 28` (buzzer) and `E0 00 00 29` (LED).
    Acr1252u,
}

/// What the passenger should be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The gate opens: green, one short beep.
    Approved,
    /// Refused (declined, bad payload): red, one long beep.
    Declined,
    /// The wallet's QRIS TAP screen was not open: red blinking, two short beeps.
    WalletNotReady,
}

/// One command for the reader and the way it must be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReaderCommand {
    /// Send with `SCardTransmit` on a card connection.
    Transmit(Vec<u8>),
    /// Send with `SCardControl(SCARD_CTL_CODE(3500))`.
    Escape(Vec<u8>),
}

/// Buzzer coupling of the ACR122U LED blinking cycle (byte 3 of the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuzzerLink {
    /// Silent.
    Off = 0x00,
    /// Beep during T1 (the initial blinking state).
    DuringT1 = 0x01,
    /// Beep during T2 (the toggled state).
    DuringT2 = 0x02,
    /// Beep during T1 and T2.
    DuringBoth = 0x03,
}

/// The ACR122U LED state control byte (P2 of `FF 00 40`), field by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acr122uLeds {
    /// Red LED state after the blinking (bit 0).
    pub final_red: bool,
    /// Green LED state after the blinking (bit 1).
    pub final_green: bool,
    /// Apply `final_red` (bit 2); otherwise red keeps its state.
    pub update_red: bool,
    /// Apply `final_green` (bit 3).
    pub update_green: bool,
    /// Red LED state during T1 (bit 4).
    pub initial_red: bool,
    /// Green LED state during T1 (bit 5).
    pub initial_green: bool,
    /// Red blinks (bit 6).
    pub blink_red: bool,
    /// Green blinks (bit 7).
    pub blink_green: bool,
}

impl Acr122uLeds {
    /// The P2 byte.
    pub fn byte(self) -> u8 {
        [
            self.final_red,
            self.final_green,
            self.update_red,
            self.update_green,
            self.initial_red,
            self.initial_green,
            self.blink_red,
            self.blink_green,
        ]
        .iter()
        .enumerate()
        .fold(0u8, |acc, (bit, on)| acc | (u8::from(*on) << bit))
    }
}

/// `FF 00 40 P2 04 T1 T2 N B`: the ACR122U bi-colour LED and buzzer pseudo-APDU. `t1`/`t2` are
/// in units of 100 ms; the buzzer only sounds when `repetitions` > 0.
pub fn acr122u_led_buzzer(
    leds: Acr122uLeds,
    t1_100ms: u8,
    t2_100ms: u8,
    repetitions: u8,
    buzzer: BuzzerLink,
) -> [u8; 9] {
    [
        0xFF,
        0x00,
        0x40,
        leds.byte(),
        0x04,
        t1_100ms,
        t2_100ms,
        repetitions,
        buzzer as u8,
    ]
}

/// `E0 00 00 28 01 D`: sound the buzzer of an ACR1252U-class reader for `d` × 10 ms
/// (`0` switches it off).
pub fn acr1252u_buzzer(duration_10ms: u8) -> [u8; 6] {
    [0xE0, 0x00, 0x00, 0x28, 0x01, duration_10ms]
}

/// `E0 00 00 29 01 S`: set the LEDs of an ACR1252U (bit 0 red, bit 1 green).
pub fn acr1252u_leds(red: bool, green: bool) -> [u8; 6] {
    [
        0xE0,
        0x00,
        0x00,
        0x29,
        0x01,
        u8::from(red) | (u8::from(green) << 1),
    ]
}

/// `E0 00 00 21 01 B`: the ACR1252U's own status-indicator behaviour (bit 1 polling LED,
/// bit 2 activation LED, bit 3 beep on card insertion/removal, bit 7 LED blinks during card
/// access; the factory value is `8F`).
///
/// Hardware truth: on several ACS models this setting is written to non-volatile memory. Send
/// it once at commissioning (for example `0x87` to silence the reader's own tap beep so that
/// only tapgate's verdict beeps), never per tap.
pub fn acr1252u_indicator_behaviour(flags: u8) -> [u8; 6] {
    [0xE0, 0x00, 0x00, 0x21, 0x01, flags]
}

/// The commands that show `signal` on a reader of `model`, in sending order. Empty for
/// [`FeedbackModel::Off`].
pub fn commands(model: FeedbackModel, signal: Signal) -> Vec<ReaderCommand> {
    match model {
        FeedbackModel::Off => Vec::new(),
        FeedbackModel::Acr122u => {
            let (leds, t1, t2, reps, link) = match signal {
                // Green for 0.5 s with a 0.1 s beep, then back to off.
                Signal::Approved => (
                    Acr122uLeds {
                        update_red: true,
                        update_green: true,
                        initial_green: true,
                        blink_green: true,
                        ..Default::default()
                    },
                    1,
                    4,
                    1,
                    BuzzerLink::DuringT1,
                ),
                // Red for 0.5 s with a 0.5 s beep.
                Signal::Declined => (
                    Acr122uLeds {
                        update_red: true,
                        update_green: true,
                        initial_red: true,
                        blink_red: true,
                        ..Default::default()
                    },
                    5,
                    1,
                    1,
                    BuzzerLink::DuringT1,
                ),
                // Red blinking twice with two short beeps.
                Signal::WalletNotReady => (
                    Acr122uLeds {
                        update_red: true,
                        update_green: true,
                        initial_red: true,
                        blink_red: true,
                        ..Default::default()
                    },
                    1,
                    1,
                    2,
                    BuzzerLink::DuringT1,
                ),
            };
            vec![ReaderCommand::Transmit(
                acr122u_led_buzzer(leds, t1, t2, reps, link).to_vec(),
            )]
        }
        FeedbackModel::Acr1252u => {
            let (red, green, beep_10ms) = match signal {
                Signal::Approved => (false, true, 10),
                Signal::Declined => (true, false, 50),
                Signal::WalletNotReady => (true, false, 20),
            };
            vec![
                ReaderCommand::Escape(acr1252u_leds(red, green).to_vec()),
                ReaderCommand::Escape(acr1252u_buzzer(beep_10ms).to_vec()),
            ]
        }
    }
}

/// Why a reader refused a feedback command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// The pseudo-APDU was answered with something other than `90 xx`.
    #[error("reader refused the LED/buzzer command (status {0:02X?})")]
    Refused(Vec<u8>),
    /// The escape answer did not start `E1 00 00 00`.
    #[error("reader gave an unexpected escape answer ({0:02X?})")]
    BadEscapeAnswer(Vec<u8>),
}

/// Checks a reader's answer to `command`. Feedback failures are cosmetic: log them and carry
/// on; they never change a fare decision.
pub fn check_answer(command: &ReaderCommand, answer: &[u8]) -> Result<(), FeedbackError> {
    match command {
        ReaderCommand::Transmit(_) => match answer {
            [0x90, _] => Ok(()),
            other => Err(FeedbackError::Refused(other.to_vec())),
        },
        ReaderCommand::Escape(_) => match answer {
            [0xE1, 0x00, 0x00, 0x00, ..] => Ok(()),
            other => Err(FeedbackError::BadEscapeAnswer(other.to_vec())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn led_state_bits_follow_the_acr122u_layout() {
        let all_masks = Acr122uLeds {
            update_red: true,
            update_green: true,
            ..Default::default()
        };
        assert_eq!(all_masks.byte(), 0x0C);
        let green_blink = Acr122uLeds {
            initial_green: true,
            blink_green: true,
            ..Default::default()
        };
        assert_eq!(green_blink.byte(), 0xA0);
        let final_red_only = Acr122uLeds {
            final_red: true,
            update_red: true,
            ..Default::default()
        };
        assert_eq!(final_red_only.byte(), 0x05);
        let red_blink = Acr122uLeds {
            initial_red: true,
            blink_red: true,
            ..Default::default()
        };
        assert_eq!(red_blink.byte(), 0x50);
    }

    #[test]
    fn acr122u_frame_is_class_ff_ins_00_p1_40_with_four_data_bytes() {
        let leds = Acr122uLeds {
            update_red: true,
            update_green: true,
            initial_green: true,
            blink_green: true,
            ..Default::default()
        };
        // Buzzer only (P2 = 0), 0.2 s on, 0.1 s off, twice, beep in T1: the vendor's
        // "buzzer without LED" shape.
        assert_eq!(
            acr122u_led_buzzer(Acr122uLeds::default(), 2, 1, 2, BuzzerLink::DuringT1),
            [0xFF, 0x00, 0x40, 0x00, 0x04, 0x02, 0x01, 0x02, 0x01]
        );
        assert_eq!(
            acr122u_led_buzzer(leds, 1, 4, 1, BuzzerLink::DuringBoth),
            [0xFF, 0x00, 0x40, 0xAC, 0x04, 0x01, 0x04, 0x01, 0x03]
        );
    }

    #[test]
    fn acr1252u_escape_frames() {
        assert_eq!(acr1252u_buzzer(0x50), [0xE0, 0x00, 0x00, 0x28, 0x01, 0x50]);
        assert_eq!(acr1252u_buzzer(0), [0xE0, 0x00, 0x00, 0x28, 0x01, 0x00]);
        assert_eq!(
            acr1252u_leds(true, false),
            [0xE0, 0x00, 0x00, 0x29, 0x01, 0x01]
        );
        assert_eq!(
            acr1252u_leds(false, true),
            [0xE0, 0x00, 0x00, 0x29, 0x01, 0x02]
        );
        assert_eq!(
            acr1252u_leds(false, false),
            [0xE0, 0x00, 0x00, 0x29, 0x01, 0x00]
        );
        // Factory default 8F minus the insertion/removal beep (bit 3) is 87.
        assert_eq!(
            acr1252u_indicator_behaviour(0x87),
            [0xE0, 0x00, 0x00, 0x21, 0x01, 0x87]
        );
    }

    #[test]
    fn off_sends_nothing_and_is_the_default() {
        assert_eq!(FeedbackModel::default(), FeedbackModel::Off);
        for s in [Signal::Approved, Signal::Declined, Signal::WalletNotReady] {
            assert!(commands(FeedbackModel::Off, s).is_empty());
        }
    }

    #[test]
    fn signals_map_to_the_right_colours() {
        assert_eq!(
            commands(FeedbackModel::Acr1252u, Signal::Approved),
            vec![
                ReaderCommand::Escape(vec![0xE0, 0x00, 0x00, 0x29, 0x01, 0x02]),
                ReaderCommand::Escape(vec![0xE0, 0x00, 0x00, 0x28, 0x01, 10]),
            ]
        );
        let declined = commands(FeedbackModel::Acr1252u, Signal::Declined);
        assert_eq!(
            declined[0],
            ReaderCommand::Escape(vec![0xE0, 0x00, 0x00, 0x29, 0x01, 0x01])
        );
        match &commands(FeedbackModel::Acr122u, Signal::Approved)[..] {
            [ReaderCommand::Transmit(apdu)] => {
                assert_eq!(&apdu[..5], &[0xFF, 0x00, 0x40, 0xAC, 0x04]);
                assert!(apdu[7] > 0, "the buzzer needs at least one repetition");
            }
            other => panic!("unexpected {other:?}"),
        }
        match &commands(FeedbackModel::Acr122u, Signal::WalletNotReady)[..] {
            // Red blinking (bits 4 and 6) with both masks; green never lit.
            [ReaderCommand::Transmit(apdu)] => assert_eq!(apdu[3], 0x5C),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn answers_are_checked_per_style() {
        let apdu = ReaderCommand::Transmit(vec![]);
        let esc = ReaderCommand::Escape(vec![]);
        assert_eq!(check_answer(&apdu, &[0x90, 0x02]), Ok(()));
        assert!(check_answer(&apdu, &[0x63, 0x00]).is_err());
        assert!(check_answer(&apdu, &[]).is_err());
        assert_eq!(
            check_answer(&esc, &[0xE1, 0x00, 0x00, 0x00, 0x01, 0x02]),
            Ok(())
        );
        assert!(check_answer(&esc, &[0x90, 0x00]).is_err());
    }
}
