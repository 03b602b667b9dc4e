//! The QRIS TAP APDU exchange: the published two-record transcript byte for byte (replayed in
//! both directions: our reader against the recorded phone, our scripted phone against the
//! recorded reader), and the ways phones misbehave at a gate.

use tapgate::cpm::build::{payload, PayloadSpec};
use tapgate::nfc::qris_tap::{
    read_qr_content, read_record_command, INS_GET_RESPONSE, MAX_RECORDS, READ_RECORD_1, SELECT_QRIS,
};
use tapgate::nfc::scripted::{Fault, ScriptedPhone};
use tapgate::nfc::{ApduChannel, ChannelError, TapReadError};

const Q1: &str = "hQVDUFYwMWFmTwegAAAGAiAgUAdRUklTQ1BNWgqTYAACESGYYpUvXyARUkVORFkgTVVIQVJESUFOVE9fLQRpZGVuX1AYcm11aGFyZGlhbnRvQGhvdG1haWwuY29tnyUCYpVjC590CDRiODg5MGY1";

/// The exchanges of tests/fixtures/apdu-q1.md as (command, response) byte pairs.
fn q1_transcript() -> Vec<(Vec<u8>, Vec<u8>)> {
    let md = std::fs::read_to_string("tests/fixtures/apdu-q1.md").unwrap();
    let hex_bytes = |s: &str| hex::decode(s.split_whitespace().collect::<String>()).unwrap();
    let mut out = Vec::new();
    let mut command = None;
    for line in md.lines() {
        if let Some(c) = line.strip_prefix(">> ") {
            command = Some(hex_bytes(c));
        } else if let Some(r) = line.strip_prefix("<< ") {
            let mut resp = Vec::new();
            let sw = match r.strip_prefix("ASCII(\"") {
                Some(rest) => {
                    let (ascii, sw) = rest.split_once("\")").unwrap();
                    resp.extend_from_slice(ascii.as_bytes());
                    sw
                }
                None => r,
            };
            resp.extend(hex_bytes(sw));
            out.push((command.take().unwrap(), resp));
        }
    }
    out
}

/// A phone that is the recorded transcript: each command must be exactly the next recorded one.
struct Replay {
    script: Vec<(Vec<u8>, Vec<u8>)>,
    at: usize,
}

impl ApduChannel for Replay {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let (want, resp) = self
            .script
            .get(self.at)
            .ok_or_else(|| ChannelError::Reader("command after the transcript ended".into()))?;
        assert_eq!(
            hex::encode_upper(command),
            hex::encode_upper(want),
            "command {}",
            self.at
        );
        self.at += 1;
        Ok(resp.clone())
    }
}

fn no_get_response(phone: &ScriptedPhone) {
    assert!(phone
        .commands()
        .iter()
        .all(|c| c.get(1) != Some(&INS_GET_RESPONSE)));
}

#[test]
fn q1_transcript_reader_side_byte_for_byte() {
    let script = q1_transcript();
    assert_eq!(script.len(), 3);
    let mut replay = Replay { script, at: 0 };
    let text = read_qr_content(&mut replay).unwrap();
    assert_eq!(
        replay.at, 3,
        "all three recorded commands sent, nothing more"
    );
    assert_eq!(text, Q1);
    assert_eq!(text.len(), 148);
    assert_eq!(tapgate::cpm::decode(&text).unwrap().nns(), "93600002");
}

#[test]
fn q1_transcript_phone_side_byte_for_byte() {
    let mut phone = ScriptedPhone::new(Q1, &[84, 64]);
    assert_eq!(read_qr_content(&mut phone).unwrap(), Q1);
    let got: Vec<(Vec<u8>, Vec<u8>)> = phone
        .transcript()
        .iter()
        .map(|(c, r)| (c.clone(), r.clone().unwrap()))
        .collect();
    assert_eq!(got, q1_transcript());
}

#[test]
fn single_record_phone() {
    let mut phone = ScriptedPhone::new(Q1, &[]);
    assert_eq!(read_qr_content(&mut phone).unwrap(), Q1);
    assert_eq!(phone.commands(), vec![&SELECT_QRIS[..], &READ_RECORD_1[..]]);
    assert_eq!(
        phone.transcript()[1].1.as_deref().unwrap()[148..],
        [0x90, 0x00]
    );
}

#[test]
fn three_chunks() {
    let mut phone = ScriptedPhone::new(Q1, &[60, 60, 28]);
    assert_eq!(read_qr_content(&mut phone).unwrap(), Q1);
    assert_eq!(phone.commands().len(), 4);
    assert_eq!(phone.commands()[3], read_record_command(3));
    no_get_response(&phone);
}

#[test]
fn any_61xx_means_another_record() {
    struct Odd(u8);
    impl ApduChannel for Odd {
        fn transmit(&mut self, c: &[u8]) -> Result<Vec<u8>, ChannelError> {
            self.0 += 1;
            Ok(match (c[1], c[2]) {
                (0xA4, _) => vec![0x90, 0x00],
                (0xB2, 1) => b"hQVDUFYw\x61\x10".to_vec(),
                (0xB2, 2) => b"MQ==\x90\x00".to_vec(),
                _ => vec![0x6D, 0x00],
            })
        }
    }
    let mut odd = Odd(0);
    assert_eq!(read_qr_content(&mut odd).unwrap(), "hQVDUFYwMQ==");
    assert_eq!(odd.0, 3);
}

#[test]
fn wallet_not_ready_both_ways() {
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::WalletNotReady);
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::WalletNotReady { sw: 0x0000 })
    );
    assert_eq!(phone.commands().len(), 1);

    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::AppNotFound);
    let e = read_qr_content(&mut phone).unwrap_err();
    assert_eq!(e, TapReadError::WalletNotReady { sw: 0x6A82 });
    assert!(e.to_string().contains("open the wallet's QRIS TAP screen"));

    // The screen closed between SELECT and READ RECORD.
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::Status {
        command: 1,
        sw: 0x0000,
    });
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::WalletNotReady { sw: 0x0000 })
    );
}

#[test]
fn card_lost() {
    // Pulled away after SELECT and record 1.
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::VanishAfter { commands: 2 });
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::CardLost {
            step: "READ RECORD 2".into()
        })
    );
    assert!(phone.transcript()[2].1.is_none());

    // Gone before answering anything.
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::VanishAfter { commands: 0 });
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::CardLost {
            step: "SELECT".into()
        })
    );

    // An answer shorter than a status word.
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::ShortAnswer { command: 0 });
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::CardLost {
            step: "SELECT".into()
        })
    );
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::ShortAnswer { command: 1 });
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::CardLost {
            step: "READ RECORD 1".into()
        })
    );
}

#[test]
fn five_records_hit_the_cap() {
    let mut phone = ScriptedPhone::new(Q1, &[30]);
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::TooManyRecords { cap: MAX_RECORDS })
    );
    // SELECT and four READ RECORDs, never a fifth, never GET RESPONSE.
    assert_eq!(phone.commands().len(), 1 + usize::from(MAX_RECORDS));
    no_get_response(&phone);
    // Four records is still fine.
    let mut phone = ScriptedPhone::new(Q1, &[37]);
    assert_eq!(read_qr_content(&mut phone).unwrap(), Q1);
    assert_eq!(phone.commands().len(), 5);
}

#[test]
fn wrong_status_on_record_2() {
    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::Status {
        command: 2,
        sw: 0x6F00,
    });
    let e = read_qr_content(&mut phone).unwrap_err();
    assert_eq!(
        e,
        TapReadError::UnexpectedStatus {
            step: "READ RECORD 2".into(),
            sw: 0x6F00
        }
    );
    assert_eq!(e.to_string(), "unexpected status 6F00 to READ RECORD 2");

    let mut phone = ScriptedPhone::new(Q1, &[84]).with_fault(Fault::Status {
        command: 0,
        sw: 0x6999,
    });
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::UnexpectedStatus {
            step: "SELECT".into(),
            sw: 0x6999
        })
    );
}

#[test]
fn too_long_and_not_text() {
    let long = "A".repeat(600);
    let mut phone = ScriptedPhone::new(&long, &[200]);
    assert_eq!(
        read_qr_content(&mut phone),
        Err(TapReadError::TooLong { len: 600 })
    );
    // Exactly 512 is allowed.
    let edge = "A".repeat(512);
    let mut phone = ScriptedPhone::new(&edge, &[256]);
    assert_eq!(read_qr_content(&mut phone).unwrap(), edge);

    let mut phone = ScriptedPhone::new("hQVDUFYwMQ\u{e9}", &[]);
    assert_eq!(read_qr_content(&mut phone), Err(TapReadError::NotText));
}

#[test]
fn built_passengers_read_and_decode() {
    for (i, pan) in ["9360091430100531720", "9360001417451180859"]
        .iter()
        .enumerate()
    {
        let text = payload(&PayloadSpec::new(pan).with_token(format!("tap-{i}").as_bytes()));
        for chunks in [&[][..], &[84][..], &[50, 50][..]] {
            let mut phone = ScriptedPhone::new(&text, chunks);
            let read = read_qr_content(&mut phone).unwrap();
            assert_eq!(read, text);
            assert_eq!(tapgate::cpm::decode(&read).unwrap().pan().digits(), *pan);
        }
    }
}
