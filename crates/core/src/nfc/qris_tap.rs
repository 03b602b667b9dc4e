//! The QRIS TAP APDU exchange (docs/protocol.md §1) as pure protocol code over an [`ApduChannel`]:
//! SELECT the QRIS CPM application, then READ RECORD 1, 2, ... while the phone answers `61 xx`.
//!
//! Phone truths this code depends on:
//! - the wallet answers `61 FF` to mean "read the next record", not "issue GET RESPONSE": the
//!   phone does not implement `00 C0`, so this code never sends it;
//! - a wallet whose QRIS TAP screen is not open answers `00 00` (not a valid status word);
//!   other failures look like `6A 82`; both mean "open the QRIS TAP screen and tap again";
//! - the phone gives up after about 500 ms (Android's default ISO-DEP timeout), so the exchange
//!   does nothing but transmit and append; decoding and network work come after it.

use super::{ApduChannel, ChannelError, TapReadError};

/// The QRIS CPM application identifier, as sent in SELECT and READ RECORD: the one the
/// payload's application template carries ([`crate::cpm::qris::QRIS_AID`]).
pub use crate::cpm::qris::QRIS_AID;

/// `00 A4 04 00 07 <AID> 00`: SELECT the QRIS CPM application by name.
pub const SELECT_QRIS: [u8; 13] = [
    0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x06, 0x02, 0x20, 0x20, 0x00,
];

/// `00 B2 01 00 07 <AID> 00`: READ RECORD 1. QRIS wallets expect the AID as command data.
pub const READ_RECORD_1: [u8; 13] = read_record_command(1);

/// `00 B2 02 00 07 <AID> 00`: READ RECORD 2.
pub const READ_RECORD_2: [u8; 13] = read_record_command(2);

/// Instruction byte of SELECT.
pub const INS_SELECT: u8 = 0xA4;
/// Instruction byte of READ RECORD.
pub const INS_READ_RECORD: u8 = 0xB2;
/// Instruction byte of GET RESPONSE, which QRIS wallets do not implement (never sent).
pub const INS_GET_RESPONSE: u8 = 0xC0;

/// `90 00`: done.
pub const SW_OK: u16 = 0x9000;
/// `00 00`: the wallet's QRIS TAP screen is not open.
pub const SW_WALLET_NOT_READY: u16 = 0x0000;
/// `6A 82`: application or record not found; treated like [`SW_WALLET_NOT_READY`].
pub const SW_NOT_FOUND: u16 = 0x6A82;
/// SW1 of `61 xx`: read the next record.
pub const SW1_MORE: u8 = 0x61;

/// The most records read from one phone (wallets use 1 or 2).
pub const MAX_RECORDS: u8 = 4;
/// The most payload characters accepted (SNAP `qrContent` ≤ 512).
pub const MAX_PAYLOAD_CHARS: usize = 512;

/// The READ RECORD command for record `n` (1-based): `00 B2 nn 00 07 <AID> 00`.
pub const fn read_record_command(n: u8) -> [u8; 13] {
    [
        0x00, 0xB2, n, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x06, 0x02, 0x20, 0x20, 0x00,
    ]
}

/// Reads the QRIS TAP payload text from the phone in the field, exactly as sent (the chunks
/// concatenated, not re-encoded). The caller decodes it with [`crate::cpm::decode`] afterwards
/// and must never log it.
pub fn read_qr_content(ch: &mut dyn ApduChannel) -> Result<String, TapReadError> {
    let (sw, _) = exchange(ch, &SELECT_QRIS, || "SELECT".to_string())?;
    match sw {
        SW_OK => {}
        SW_WALLET_NOT_READY | SW_NOT_FOUND => return Err(TapReadError::WalletNotReady { sw }),
        _ => {
            return Err(TapReadError::UnexpectedStatus {
                step: "SELECT".into(),
                sw,
            })
        }
    }

    let mut text = String::new();
    for n in 1..=MAX_RECORDS {
        let step = || format!("READ RECORD {n}");
        let (sw, data) = exchange(ch, &read_record_command(n), step)?;
        let more = sw >> 8 == u16::from(SW1_MORE);
        if sw != SW_OK && !more {
            return Err(match sw {
                SW_WALLET_NOT_READY | SW_NOT_FOUND => TapReadError::WalletNotReady { sw },
                _ => TapReadError::UnexpectedStatus { step: step(), sw },
            });
        }
        if !data.iter().all(|b| (0x20..0x7F).contains(b)) {
            return Err(TapReadError::NotText);
        }
        let len = text.len() + data.len();
        if len > MAX_PAYLOAD_CHARS {
            return Err(TapReadError::TooLong { len });
        }
        // Printable ASCII was checked above, so each byte is one char.
        text.extend(data.iter().map(|&b| char::from(b)));
        if !more {
            return Ok(text);
        }
    }
    Err(TapReadError::TooManyRecords { cap: MAX_RECORDS })
}

/// One command: returns the status word and the data before it.
fn exchange(
    ch: &mut dyn ApduChannel,
    command: &[u8],
    step: impl Fn() -> String,
) -> Result<(u16, Vec<u8>), TapReadError> {
    let mut resp = ch.transmit(command).map_err(|e| match e {
        ChannelError::CardRemoved => TapReadError::CardLost { step: step() },
        other => TapReadError::Channel(other),
    })?;
    let [.., sw1, sw2] = resp[..] else {
        return Err(TapReadError::CardLost { step: step() });
    };
    resp.truncate(resp.len() - 2);
    Ok((u16::from_be_bytes([sw1, sw2]), resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfc::scripted::ScriptedPhone;

    const Q1: &str = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";

    #[test]
    fn command_bytes_match_protocol_md() {
        assert_eq!(hex::encode_upper(SELECT_QRIS), "00A4040007A000000602202000");
        assert_eq!(
            hex::encode_upper(READ_RECORD_1),
            "00B2010007A000000602202000"
        );
        assert_eq!(
            hex::encode_upper(READ_RECORD_2),
            "00B2020007A000000602202000"
        );
        assert_eq!(&SELECT_QRIS[5..12], &QRIS_AID);
        assert_eq!(&READ_RECORD_1[5..12], &QRIS_AID);
        assert_eq!(&READ_RECORD_2[5..12], &QRIS_AID);
    }

    #[test]
    fn q1_in_two_records() {
        let mut phone = ScriptedPhone::new(Q1, &[84]);
        assert_eq!(read_qr_content(&mut phone).unwrap(), Q1);
        assert_eq!(phone.commands().len(), 3);
    }

    #[test]
    fn non_ascii_record_is_not_text() {
        struct Binary;
        impl ApduChannel for Binary {
            fn transmit(&mut self, c: &[u8]) -> Result<Vec<u8>, ChannelError> {
                Ok(if c[1] == INS_SELECT {
                    vec![0x90, 0x00]
                } else {
                    vec![0x85, 0x05, 0x90, 0x00]
                })
            }
        }
        assert_eq!(read_qr_content(&mut Binary), Err(TapReadError::NotText));
    }

    #[test]
    fn reader_failures_pass_through() {
        struct Slow;
        impl ApduChannel for Slow {
            fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, ChannelError> {
                Err(ChannelError::Timeout)
            }
        }
        assert_eq!(
            read_qr_content(&mut Slow),
            Err(TapReadError::Channel(ChannelError::Timeout))
        );
    }
}
