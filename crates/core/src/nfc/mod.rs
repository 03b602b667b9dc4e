//! The phone side of a tap, as pure protocol code: the QRIS TAP APDU exchange over an
//! [`ApduChannel`] ([`qris_tap`]), the events a card source reports ([`CardEvent`]), and a
//! scripted phone for tests and the demo ([`scripted`]). Real readers live in the daemon.

pub mod qris_tap;
pub mod scripted;

/// One ISO 7816-4 APDU transport to the card (phone) in the field. Blocking by design: PC/SC
/// blocks, so a real reader runs on its own OS thread.
pub trait ApduChannel {
    /// Sends one command APDU and returns the whole response, data followed by SW1 SW2.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, ChannelError>;
}

/// Why a transmit failed at the transport level.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The phone left the field (or was reset) mid-exchange.
    #[error("phone left the field")]
    CardRemoved,
    /// The per-APDU or per-tap deadline passed.
    #[error("reader did not answer in time")]
    Timeout,
    /// The reader or pcscd failed; the text names the call and its cause.
    #[error("reader failure: {0}")]
    Reader(String),
}

/// Why a tap did not yield a payload. Each variant maps to passenger feedback.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TapReadError {
    /// `00 00` or `6A 82` to SELECT (or READ RECORD): the wallet's QRIS TAP screen is not open.
    #[error("wallet not ready (status {sw:04X}): open the wallet's QRIS TAP screen and tap again")]
    WalletNotReady {
        /// The status word the phone answered.
        sw: u16,
    },
    /// The phone went away or answered with fewer than two bytes.
    #[error("phone lost mid-exchange at {step}")]
    CardLost {
        /// Which command was in flight (`SELECT`, `READ RECORD 2`).
        step: String,
    },
    /// Any other status word.
    #[error("unexpected status {sw:04X} to {step}")]
    UnexpectedStatus {
        /// Which command was answered.
        step: String,
        /// The status word.
        sw: u16,
    },
    /// The phone kept answering `61 xx` past the record cap.
    #[error("phone sent more than {cap} records")]
    TooManyRecords {
        /// The cap.
        cap: u8,
    },
    /// The payload exceeded 512 characters.
    #[error("payload too long ({len} characters, at most 512)")]
    TooLong {
        /// Characters received so far.
        len: usize,
    },
    /// Record data was not printable ASCII (the payload is base64 text).
    #[error("record data is not ASCII text")]
    NotText,
    /// The transport failed for another reason.
    #[error(transparent)]
    Channel(ChannelError),
}

/// What a card source reports to its lane. `Debug` shows the payload's length, never its
/// text (the text is `qrContent`: it holds the PAN and the cardholder name).
#[derive(Clone)]
pub enum CardEvent {
    /// A phone was read: the QRIS TAP payload text exactly as received.
    Payload {
        /// The reader's name.
        reader: String,
        /// The base64 payload text (`qrContent`). Never log it.
        qr_content: String,
        /// Time spent on the APDU exchange, microseconds.
        read_us: u64,
    },
    /// A phone was in the field but could not be read.
    ReadFailed {
        /// The reader's name.
        reader: String,
        /// Why.
        error: TapReadError,
        /// Time spent before giving up, microseconds.
        read_us: u64,
    },
    /// The lane's reader appeared (or came back).
    ReaderUp {
        /// The reader's name.
        reader: String,
    },
    /// The lane's reader went away, or pcscd did.
    ReaderDown {
        /// The reader's name (or pattern when none matched).
        reader: String,
        /// Why, for the technician.
        why: String,
    },
}

impl std::fmt::Debug for CardEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardEvent::Payload {
                reader,
                qr_content,
                read_us,
            } => f
                .debug_struct("Payload")
                .field("reader", reader)
                .field(
                    "qr_content",
                    &format_args!("<{} characters>", qr_content.len()),
                )
                .field("read_us", read_us)
                .finish(),
            CardEvent::ReadFailed {
                reader,
                error,
                read_us,
            } => f
                .debug_struct("ReadFailed")
                .field("reader", reader)
                .field("error", error)
                .field("read_us", read_us)
                .finish(),
            CardEvent::ReaderUp { reader } => {
                f.debug_struct("ReaderUp").field("reader", reader).finish()
            }
            CardEvent::ReaderDown { reader, why } => f
                .debug_struct("ReaderDown")
                .field("reader", reader)
                .field("why", why)
                .finish(),
        }
    }
}

impl CardEvent {
    /// The line `tapgate readers --watch` prints for this event: a payload as its decoded,
    /// masked report ([`crate::cpm::DecodeReport`] as JSON), never its text. Outside strings
    /// (reader names, pcscd's words) have their control characters escaped.
    pub fn watch_line(&self) -> String {
        let esc = crate::escape::escape_controls;
        match self {
            CardEvent::Payload {
                reader,
                qr_content,
                read_us,
            } => {
                let r = crate::cpm::decode_report(qr_content);
                let json = serde_json::to_string(&r)
                    .unwrap_or_else(|e| format!("{{\"error\":\"report not printable: {e}\"}}"));
                format!("{}: read in {} ms: {json}", esc(reader), read_us / 1000)
            }
            CardEvent::ReadFailed { reader, error, .. } => {
                format!("{}: {}", esc(reader), esc(&error.to_string()))
            }
            CardEvent::ReaderUp { reader } => format!("{}: present", esc(reader)),
            CardEvent::ReaderDown { reader, why } => {
                format!("{}: gone ({})", esc(reader), esc(why))
            }
        }
    }
}
