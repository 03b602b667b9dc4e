//! [`PcscChannel`]: the QRIS TAP exchange's [`ApduChannel`] over a PC/SC card connection,
//! holding the tap's deadlines around each `SCardTransmit`.

use std::time::{Duration, Instant};

use super::machine::{answered_in_time, channel_error};
use crate::nfc::{ApduChannel, ChannelError};

/// [`ApduChannel`] over a PC/SC card connection, with the tap's deadlines.
pub struct PcscChannel<'a> {
    card: &'a pcsc::Card,
    tap_deadline: Instant,
    apdu_deadline: Duration,
    buf: Vec<u8>,
    failure: Option<pcsc::Error>,
}

impl<'a> PcscChannel<'a> {
    /// A channel on `card` that refuses to send after `tap_deadline` and treats an answer
    /// slower than `apdu_deadline` as a timeout.
    pub fn new(card: &'a pcsc::Card, tap_deadline: Instant, apdu_deadline: Duration) -> Self {
        PcscChannel {
            card,
            tap_deadline,
            apdu_deadline,
            buf: vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED],
            failure: None,
        }
    }

    /// The last PC/SC error a transmit hit, so the caller can tell a phone that left from a
    /// pcscd that died.
    pub fn failure(&self) -> Option<pcsc::Error> {
        self.failure
    }
}

impl ApduChannel for PcscChannel<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let sent = Instant::now();
        if sent >= self.tap_deadline {
            return Err(ChannelError::Timeout);
        }
        match self.card.transmit(command, &mut self.buf) {
            Ok(answer) => {
                if answered_in_time(sent, Instant::now(), self.tap_deadline, self.apdu_deadline) {
                    Ok(answer.to_vec())
                } else {
                    Err(ChannelError::Timeout)
                }
            }
            Err(e) => {
                self.failure = Some(e);
                Err(channel_error(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfc::qris_tap::read_qr_content;
    use crate::nfc::TapReadError;

    /// A scripted channel for the interim exchange.
    struct Script(Vec<Result<Vec<u8>, ChannelError>>);

    impl ApduChannel for Script {
        fn transmit(&mut self, _: &[u8]) -> Result<Vec<u8>, ChannelError> {
            if self.0.is_empty() {
                return Err(ChannelError::CardRemoved);
            }
            self.0.remove(0)
        }
    }

    #[test]
    fn interim_exchange_reads_and_refuses() {
        let mut ok = Script(vec![
            Ok(vec![0x90, 0x00]),
            Ok(b"hQVD\x61\xFF".to_vec()),
            Ok(b"UFY\x90\x00".to_vec()),
        ]);
        assert_eq!(read_qr_content(&mut ok).as_deref(), Ok("hQVDUFY"));
        let mut not_ready = Script(vec![Ok(vec![0x00, 0x00])]);
        assert_eq!(
            read_qr_content(&mut not_ready),
            Err(TapReadError::WalletNotReady { sw: 0 })
        );
        let mut lost = Script(vec![Ok(vec![0x90, 0x00]), Ok(vec![])]);
        assert!(matches!(
            read_qr_content(&mut lost),
            Err(TapReadError::CardLost { .. })
        ));
    }
}
