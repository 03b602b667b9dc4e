//! A phone that answers the QRIS TAP exchange from a script: for unit tests, `tapgate demo`
//! and `tapgate tap`, and (through [`PhoneResponder`] / [`phone_responder`]) for the vpcd
//! virtual phone that plays the same role behind a real pcscd.
//!
//! [`PhoneResponder`] is how a well-behaved wallet with its QRIS TAP screen open answers.
//! [`ScriptedPhone`] wraps it as an [`ApduChannel`], records the transcript, and can misbehave
//! the ways phones at gates do ([`Fault`]).

use super::qris_tap::{INS_READ_RECORD, INS_SELECT, QRIS_AID, SW_NOT_FOUND, SW_WALLET_NOT_READY};
use super::{ApduChannel, ChannelError};

/// `61 FF`: what wallets answer when another record follows.
const SW_MORE: [u8; 2] = [0x61, 0xFF];
const SW_OK: [u8; 2] = [0x90, 0x00];
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
const SW_CLA_NOT_SUPPORTED: [u8; 2] = [0x6E, 0x00];
const SW_INS_NOT_SUPPORTED: [u8; 2] = [0x6D, 0x00];
const SW_CONDITIONS_NOT_SATISFIED: [u8; 2] = [0x69, 0x85];
const SW_RECORD_NOT_FOUND: [u8; 2] = [0x6A, 0x83];

/// The answering side of a QRIS wallet with its QRIS TAP screen open: a pure function from
/// command APDU to response APDU, holding only whether the application is selected.
///
/// - `SELECT` of the QRIS AID → `90 00` (no FCI); any other SELECT → `6A 82`;
/// - `READ RECORD n` (after SELECT) → record `n`'s chunk of the payload text, then `61 FF` if
///   another record follows or `90 00` for the last; past the last → `6A 83`; before SELECT →
///   `69 85`;
/// - anything else, GET RESPONSE included → `6D 00` (real wallets do not implement it).
#[derive(Clone, Debug)]
pub struct PhoneResponder {
    records: Vec<Vec<u8>>,
    selected: bool,
}

impl PhoneResponder {
    /// A wallet holding `payload`, answering in records of `chunk_sizes` characters: sizes are
    /// used in order and the last one repeats until the payload is used up; an empty list (or a
    /// size of 0) sends the rest in one record.
    pub fn new(payload: &str, chunk_sizes: &[usize]) -> PhoneResponder {
        PhoneResponder {
            records: split_records(payload.as_bytes(), chunk_sizes),
            selected: false,
        }
    }

    /// How many records the payload takes.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The response APDU (data then SW1 SW2) to one command APDU.
    pub fn respond(&mut self, command: &[u8]) -> Vec<u8> {
        let [cla, ins, p1, p2, rest @ ..] = command else {
            return SW_WRONG_LENGTH.to_vec();
        };
        if *cla != 0x00 {
            return SW_CLA_NOT_SUPPORTED.to_vec();
        }
        match *ins {
            INS_SELECT => {
                let by_name = *p1 == 0x04 && *p2 == 0x00;
                let aid = match rest {
                    [lc, data @ ..] => data.get(..usize::from(*lc)),
                    [] => None,
                };
                self.selected = by_name && aid == Some(&QRIS_AID[..]);
                if self.selected {
                    SW_OK.to_vec()
                } else {
                    SW_NOT_FOUND.to_be_bytes().to_vec()
                }
            }
            INS_READ_RECORD if !self.selected => SW_CONDITIONS_NOT_SATISFIED.to_vec(),
            INS_READ_RECORD => {
                let n = usize::from(*p1);
                let Some(record) = n.checked_sub(1).and_then(|i| self.records.get(i)) else {
                    return SW_RECORD_NOT_FOUND.to_vec();
                };
                let mut out = record.clone();
                out.extend_from_slice(if n < self.records.len() {
                    &SW_MORE
                } else {
                    &SW_OK
                });
                out
            }
            _ => SW_INS_NOT_SUPPORTED.to_vec(),
        }
    }
}

/// [`PhoneResponder`] as a plain answer function, for the vpcd virtual phone: feed it each
/// command APDU, send back what it returns.
pub fn phone_responder(payload: &str, chunk_sizes: &[usize]) -> impl FnMut(&[u8]) -> Vec<u8> {
    let mut phone = PhoneResponder::new(payload, chunk_sizes);
    move |command| phone.respond(command)
}

fn split_records(payload: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let mut rest = payload;
    let mut i = 0;
    loop {
        let size = match sizes.get(i).or(sizes.last()) {
            Some(&s) if s > 0 => s,
            _ => rest.len(),
        };
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        records.push(chunk.to_vec());
        rest = tail;
        i += 1;
        if rest.is_empty() {
            return records;
        }
    }
}

/// A way the scripted phone misbehaves. Commands are counted from 0 (SELECT is command 0,
/// READ RECORD 1 is command 1, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The QRIS TAP screen is not open: SELECT answered `00 00`.
    WalletNotReady,
    /// SELECT answered `6A 82` (wallet app closed or not installed).
    AppNotFound,
    /// Command `command` answered with just this status word.
    Status {
        /// Which command (0 = SELECT).
        command: usize,
        /// The status word sent.
        sw: u16,
    },
    /// The phone leaves the field after answering `commands` commands: every later transmit
    /// fails with [`ChannelError::CardRemoved`].
    VanishAfter {
        /// Commands answered before leaving.
        commands: usize,
    },
    /// Command `command` answered with a single byte.
    ShortAnswer {
        /// Which command (0 = SELECT).
        command: usize,
    },
}

/// A scripted phone in the field: a [`PhoneResponder`] plus an optional [`Fault`], recording
/// every command and answer.
#[derive(Clone, Debug)]
pub struct ScriptedPhone {
    responder: PhoneResponder,
    fault: Option<Fault>,
    transcript: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl ScriptedPhone {
    /// A well-behaved phone holding `payload`, in records of `chunk_sizes` characters (see
    /// [`PhoneResponder::new`]).
    pub fn new(payload: &str, chunk_sizes: &[usize]) -> ScriptedPhone {
        ScriptedPhone {
            responder: PhoneResponder::new(payload, chunk_sizes),
            fault: None,
            transcript: Vec::new(),
        }
    }

    /// The same phone, misbehaving.
    pub fn with_fault(mut self, fault: Fault) -> ScriptedPhone {
        self.fault = Some(fault);
        self
    }

    /// The commands received so far, in order.
    pub fn commands(&self) -> Vec<&[u8]> {
        self.transcript.iter().map(|(c, _)| c.as_slice()).collect()
    }

    /// Every command with its answer (`None` once the phone has left the field).
    pub fn transcript(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.transcript
    }
}

impl ApduChannel for ScriptedPhone {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let index = self.transcript.len();
        let answer = match &self.fault {
            Some(Fault::VanishAfter { commands }) if index >= *commands => None,
            Some(Fault::WalletNotReady) if index == 0 => {
                Some(SW_WALLET_NOT_READY.to_be_bytes().to_vec())
            }
            Some(Fault::AppNotFound) if index == 0 => Some(SW_NOT_FOUND.to_be_bytes().to_vec()),
            Some(Fault::Status { command, sw }) if index == *command => {
                Some(sw.to_be_bytes().to_vec())
            }
            Some(Fault::ShortAnswer { command }) if index == *command => Some(vec![0x90]),
            _ => Some(self.responder.respond(command)),
        };
        self.transcript.push((command.to_vec(), answer.clone()));
        answer.ok_or(ChannelError::CardRemoved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfc::qris_tap::{read_record_command, READ_RECORD_1, SELECT_QRIS};

    #[test]
    fn records_split_as_asked() {
        let p = "a".repeat(148);
        assert_eq!(PhoneResponder::new(&p, &[84]).record_count(), 2);
        assert_eq!(PhoneResponder::new(&p, &[84, 64]).record_count(), 2);
        assert_eq!(PhoneResponder::new(&p, &[]).record_count(), 1);
        assert_eq!(PhoneResponder::new(&p, &[0]).record_count(), 1);
        assert_eq!(PhoneResponder::new(&p, &[50]).record_count(), 3);
        assert_eq!(PhoneResponder::new("", &[50]).record_count(), 1);
    }

    #[test]
    fn responder_behaves_like_a_wallet() {
        let mut r = phone_responder("ABCDEF", &[4]);
        assert_eq!(r(&READ_RECORD_1), vec![0x69, 0x85], "read before select");
        let mut other = SELECT_QRIS;
        other[11] = 0x21;
        assert_eq!(r(&other), vec![0x6A, 0x82]);
        assert_eq!(r(&SELECT_QRIS), vec![0x90, 0x00]);
        assert_eq!(r(&READ_RECORD_1), b"ABCD\x61\xFF".to_vec());
        assert_eq!(r(&read_record_command(2)), b"EF\x90\x00".to_vec());
        assert_eq!(r(&read_record_command(3)), vec![0x6A, 0x83]);
        assert_eq!(r(&read_record_command(0)), vec![0x6A, 0x83]);
        assert_eq!(r(&[0x00, 0xC0, 0x00, 0x00, 0xFF]), vec![0x6D, 0x00]);
        assert_eq!(r(&[0x80, 0xB2, 0x01, 0x00]), vec![0x6E, 0x00]);
        assert_eq!(r(&[0x00, 0xA4]), vec![0x67, 0x00]);
        // A SELECT whose Lc runs past the data selects nothing.
        assert_eq!(r(&[0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0]), vec![0x6A, 0x82]);
    }
}
