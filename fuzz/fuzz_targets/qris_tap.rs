//! The APDU exchange against a phone whose answers come from the fuzzer: the input is split on
//! `|` into one answer per command. No panic, never more than SELECT + 4 READ RECORDs, and any
//! text returned is printable ASCII of at most 512 characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapgate::nfc::qris_tap::{read_qr_content, MAX_PAYLOAD_CHARS, MAX_RECORDS};
use tapgate::nfc::{ApduChannel, ChannelError};

struct FuzzPhone<'a> {
    answers: std::slice::Split<'a, u8, fn(&u8) -> bool>,
    sent: usize,
}

impl ApduChannel for FuzzPhone<'_> {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        self.sent += 1;
        self.answers
            .next()
            .map(<[u8]>::to_vec)
            .ok_or(ChannelError::CardRemoved)
    }
}

fuzz_target!(|data: &[u8]| {
    let is_sep: fn(&u8) -> bool = |b| *b == b'|';
    let mut phone = FuzzPhone {
        answers: data.split(is_sep),
        sent: 0,
    };
    if let Ok(text) = read_qr_content(&mut phone) {
        assert!(text.len() <= MAX_PAYLOAD_CHARS);
        assert!(text.bytes().all(|b| (0x20..0x7F).contains(&b)));
    }
    assert!(phone.sent <= 1 + usize::from(MAX_RECORDS));
});
