//! A virtual phone for bench tests and the real-stack tests: it plays an Android wallet's
//! QRIS TAP card emulation towards vsmartcard's `vpcd` reader driver inside pcscd.
//!
//! The vpcd wire (the phone is the TCP client; pcscd's driver listens, `127.0.0.1:35963` for
//! the reader Debian 12 names "Virtual PCD 00 00", `35964` for "Virtual PCD 00 01"): every
//! message is a 2-byte big-endian length and that many bytes. A 1-byte message is a control:
//! `00` power off, `01` power on, `02` reset (none answered), `04` "send your ATR". Anything
//! longer is a command APDU, answered with one response APDU.
//!
//! Facts about Debian 12's vpcd (3.3) that shape this module:
//! * the driver accepts the connection only when pcscd polls the slot (about every 400 ms),
//!   and asks for the ATR on every poll: a connected phone is a phone in the field, a closed
//!   socket is a phone taken away;
//! * the driver's replies are small writes answered by small writes, so the phone sets
//!   `TCP_QUICKACK` before every read; without it delayed ACKs add ~40 ms per APDU.
//!
//! [`Responder`] is the pure phone (APDU in, reply out); [`VirtualPhone`] runs it over TCP.

use crate::cpm::qris::QRIS_AID;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// vpcd's default port (first virtual reader).
pub const VPCD_PORT: u16 = 35963;

/// The ATR a PC/SC contactless reader reports for an ISO 14443-4 type A card without
/// historical bytes; phones in HCE look like this behind a real reader.
pub const CONTACTLESS_ATR: [u8; 5] = [0x3B, 0x80, 0x80, 0x01, 0x01];

/// A point of the exchange where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The SELECT of the QRIS application.
    Select,
    /// READ RECORD n (1-based).
    ReadRecord(u8),
}

/// A way for the phone to misbehave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wallet screen not open: SELECT answered `00 00` (not a real status word).
    WalletNotReady,
    /// No QRIS application: SELECT answered `6A 82`.
    NoApplication,
    /// Answer `sw` (and no data) at `at`.
    Status {
        /// Where.
        at: Step,
        /// The status word to send.
        sw: u16,
    },
    /// Answer correctly at `at`, but only after `by`.
    Delay {
        /// Where.
        at: Step,
        /// How late.
        by: Duration,
    },
    /// Leave the field when the command for `at` arrives, without answering.
    VanishAt(Step),
}

/// What the phone does during one tap.
#[derive(Clone, Debug)]
pub struct PhoneScript {
    /// The records, in order; their concatenation is the payload.
    pub records: Vec<String>,
    /// How long the phone stays in the field, counted from the reader's first message.
    pub hold: Duration,
    /// An injected fault, if any.
    pub fault: Option<Fault>,
    /// The ATR reported to the reader.
    pub atr: Vec<u8>,
}

impl PhoneScript {
    /// A phone answering the whole payload in READ RECORD 1.
    pub fn single_record(payload: &str) -> Self {
        Self::chunked(payload, &[])
    }

    /// A phone splitting the payload after each of the given character counts (for example
    /// `&[84]` for the common 84 + rest layout). Cuts beyond the payload are ignored.
    pub fn chunked(payload: &str, cuts: &[usize]) -> Self {
        let mut records = Vec::new();
        let mut rest = payload;
        for &cut in cuts {
            if cut == 0 || cut >= rest.len() || !rest.is_char_boundary(cut) {
                break;
            }
            let (head, tail) = rest.split_at(cut);
            records.push(head.to_owned());
            rest = tail;
        }
        records.push(rest.to_owned());
        PhoneScript {
            records,
            hold: Duration::from_millis(600),
            fault: None,
            atr: CONTACTLESS_ATR.to_vec(),
        }
    }

    /// Sets how long the phone stays on the reader.
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Sets a fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }
}

/// The phone's reaction to one message from the reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send nothing (power and reset controls).
    Silent,
    /// Send these bytes now.
    Answer(Vec<u8>),
    /// Send these bytes after a delay.
    Late {
        /// The delay.
        after: Duration,
        /// The bytes.
        answer: Vec<u8>,
    },
    /// Leave the field: close the connection.
    Vanish,
}

/// The pure phone: a QRIS TAP card emulation driven by a [`PhoneScript`].
#[derive(Clone, Debug)]
pub struct Responder {
    script: PhoneScript,
    selected: bool,
}

fn sw_bytes(sw: u16) -> Vec<u8> {
    sw.to_be_bytes().to_vec()
}

impl Responder {
    /// A phone that has not been selected yet.
    pub fn new(script: PhoneScript) -> Self {
        Responder {
            script,
            selected: false,
        }
    }

    /// Reacts to one vpcd message (control byte or command APDU).
    pub fn on_message(&mut self, msg: &[u8]) -> Reply {
        match msg {
            [0x04] => Reply::Answer(self.script.atr.clone()),
            // Power off, power on, reset: the emulated application starts over.
            [0x00] | [0x01] | [0x02] => {
                self.selected = false;
                Reply::Silent
            }
            [_] => Reply::Silent,
            apdu => self.on_apdu(apdu),
        }
    }

    fn step_of(apdu: &[u8]) -> Option<Step> {
        match apdu {
            [0x00, 0xA4, 0x04, 0x00, ..] => Some(Step::Select),
            [0x00, 0xB2, n, ..] => Some(Step::ReadRecord(*n)),
            _ => None,
        }
    }

    fn normal_answer(&mut self, step: Option<Step>, apdu: &[u8]) -> Vec<u8> {
        match step {
            Some(Step::Select) => {
                let lc = apdu.get(4).copied().unwrap_or(0) as usize;
                match apdu.get(5..5 + lc) {
                    Some(aid) if aid == QRIS_AID => {
                        self.selected = true;
                        sw_bytes(0x9000)
                    }
                    _ => sw_bytes(0x6A82),
                }
            }
            Some(Step::ReadRecord(_)) if !self.selected => sw_bytes(0x6985),
            Some(Step::ReadRecord(n)) => {
                let index = usize::from(n);
                match self.script.records.get(index.wrapping_sub(1)) {
                    Some(chunk) if n > 0 => {
                        let mut out = chunk.as_bytes().to_vec();
                        let more = index < self.script.records.len();
                        out.extend_from_slice(if more { &[0x61, 0xFF] } else { &[0x90, 0x00] });
                        out
                    }
                    _ => sw_bytes(0x6A83),
                }
            }
            None => sw_bytes(0x6D00),
        }
    }

    fn on_apdu(&mut self, apdu: &[u8]) -> Reply {
        let step = Self::step_of(apdu);
        match (&self.script.fault, step) {
            (Some(Fault::WalletNotReady), Some(Step::Select)) => Reply::Answer(vec![0x00, 0x00]),
            (Some(Fault::NoApplication), Some(Step::Select)) => Reply::Answer(sw_bytes(0x6A82)),
            (Some(Fault::Status { at, sw }), Some(s)) if *at == s => Reply::Answer(sw_bytes(*sw)),
            (Some(Fault::VanishAt(at)), Some(s)) if *at == s => Reply::Vanish,
            (Some(Fault::Delay { at, by }), Some(s)) if *at == s => {
                let after = *by;
                Reply::Late {
                    after,
                    answer: self.normal_answer(step, apdu),
                }
            }
            _ => Reply::Answer(self.normal_answer(step, apdu)),
        }
    }
}

/// How a tap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapEnd {
    /// The phone stayed for its whole hold time, then left.
    Held,
    /// The phone left mid-exchange on purpose ([`Fault::VanishAt`]).
    Vanished,
    /// The reader side closed the connection (pcscd stopped or was killed).
    ReaderClosed,
}

/// What the phone saw during a tap.
#[derive(Clone, Debug)]
pub struct PhoneReport {
    /// Every command APDU received, in order.
    pub apdus: Vec<Vec<u8>>,
    /// Every control byte received, in order.
    pub controls: Vec<u8>,
    /// How the tap ended.
    pub end: TapEnd,
}

impl PhoneReport {
    /// How many times the reader selected the QRIS application: one per tap the reader made.
    pub fn selects(&self) -> usize {
        self.apdus
            .iter()
            .filter(|a| a.starts_with(&[0x00, 0xA4, 0x04, 0x00]))
            .count()
    }
}

/// Why a virtual tap failed.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// Nothing accepted the connection in time (pcscd or vpcd not running).
    #[error("could not reach vpcd at {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// The last connect error.
        source: io::Error,
    },
    /// Connected, but the reader never polled the phone.
    #[error("vpcd accepted no message from the phone within {0:?}")]
    NeverPolled(Duration),
    /// The connection failed mid-tap.
    #[error("vpcd connection failed: {0}")]
    Io(#[from] io::Error),
}

/// A virtual phone aimed at one vpcd slot.
#[derive(Clone, Debug)]
pub struct VirtualPhone {
    addr: SocketAddr,
    patience: Duration,
}

impl VirtualPhone {
    /// A phone for the vpcd listening at `addr`, waiting up to 5 s for it to answer.
    pub fn new(addr: SocketAddr) -> Self {
        VirtualPhone {
            addr,
            patience: Duration::from_secs(5),
        }
    }

    /// A phone for the first slot on this machine (`127.0.0.1:35963`).
    pub fn local() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], VPCD_PORT)))
    }

    /// How long to keep retrying the connection and waiting for the first poll (for example
    /// while pcscd restarts).
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Runs one tap on a new thread; join it for the report.
    pub fn spawn(
        self,
        script: PhoneScript,
    ) -> io::Result<std::thread::JoinHandle<Result<PhoneReport, PhoneError>>> {
        std::thread::Builder::new()
            .name("vphone".into())
            .spawn(move || self.tap(script))
    }

    /// Puts the phone on the reader, plays `script`, and takes it away. Blocks for the tap.
    pub fn tap(&self, script: PhoneScript) -> Result<PhoneReport, PhoneError> {
        let started = Instant::now();
        let give_up = started + self.patience;
        let mut stream = self.connect(give_up)?;
        stream.set_nodelay(true)?;
        let hold = script.hold;
        let mut phone = Responder::new(script);
        let mut report = PhoneReport {
            apdus: Vec::new(),
            controls: Vec::new(),
            end: TapEnd::Held,
        };
        let mut in_field_since: Option<Instant> = None;
        loop {
            let until = match in_field_since {
                Some(t) => t + hold,
                None => give_up,
            };
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                if in_field_since.is_none() {
                    return Err(PhoneError::NeverPolled(self.patience));
                }
                let _ = stream.shutdown(Shutdown::Both);
                report.end = TapEnd::Held;
                return Ok(report);
            }
            let msg = match read_frame(&mut stream, wait) {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    report.end = TapEnd::ReaderClosed;
                    return Ok(report);
                }
                Err(e) if is_timeout(&e) => continue,
                Err(e) if is_reset(&e) => {
                    report.end = TapEnd::ReaderClosed;
                    return Ok(report);
                }
                Err(e) => return Err(e.into()),
            };
            in_field_since.get_or_insert_with(Instant::now);
            match msg.as_slice() {
                [c] => report.controls.push(*c),
                apdu => report.apdus.push(apdu.to_vec()),
            }
            let outcome = match phone.on_message(&msg) {
                Reply::Silent => Ok(()),
                Reply::Answer(bytes) => write_frame(&mut stream, &bytes),
                Reply::Late { after, answer } => {
                    std::thread::sleep(after);
                    write_frame(&mut stream, &answer)
                }
                Reply::Vanish => {
                    let _ = stream.shutdown(Shutdown::Both);
                    report.end = TapEnd::Vanished;
                    return Ok(report);
                }
            };
            match outcome {
                Ok(()) => {}
                Err(e) if is_reset(&e) => {
                    report.end = TapEnd::ReaderClosed;
                    return Ok(report);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn connect(&self, give_up: Instant) -> Result<TcpStream, PhoneError> {
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(&self.addr, left.max(Duration::from_millis(10))) {
                Ok(s) => return Ok(s),
                Err(source) if Instant::now() + Duration::from_millis(50) >= give_up => {
                    return Err(PhoneError::Connect {
                        addr: self.addr,
                        source,
                    })
                }
                // pcscd is (re)starting: its listener is not there yet.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Linux re-enables delayed ACKs after each ACK it sends, so quick-ack mode must be asked for
/// again before every read.
fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own with a c_int option value of the right size.
        let _ = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Reads one length-prefixed message. `Ok(None)` when the reader closed the connection before
/// a new message began.
fn read_frame(stream: &mut TcpStream, wait: Duration) -> io::Result<Option<Vec<u8>>> {
    stream.set_read_timeout(Some(wait))?;
    quickack(stream);
    let mut len = [0u8; 2];
    match stream.read(&mut len[..1])? {
        0 => return Ok(None),
        _ => {
            // The rest of a message follows at once; do not let the hold time cut it short.
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            quickack(stream);
            stream.read_exact(&mut len[1..])?;
        }
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    quickack(stream);
    stream.read_exact(&mut msg)?;
    Ok(Some(msg))
}

fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 65535 bytes"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELECT: [u8; 13] = [
        0x00, 0xA4, 0x04, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x06, 0x02, 0x20, 0x20, 0x00,
    ];

    fn read_record(n: u8) -> Vec<u8> {
        vec![
            0x00, 0xB2, n, 0x00, 0x07, 0xA0, 0x00, 0x00, 0x06, 0x02, 0x20, 0x20, 0x00,
        ]
    }

    fn answer(r: Reply) -> Vec<u8> {
        match r {
            Reply::Answer(b) => b,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn chunking_splits_at_the_given_counts() {
        let s = PhoneScript::chunked("abcdefghij", &[4, 3]);
        assert_eq!(s.records, vec!["abcd", "efg", "hij"]);
        assert_eq!(PhoneScript::single_record("abc").records, vec!["abc"]);
        // A cut at or past the end leaves a single record.
        assert_eq!(PhoneScript::chunked("abc", &[3]).records, vec!["abc"]);
    }

    #[test]
    fn two_record_phone_answers_61ff_then_9000() {
        let mut p = Responder::new(PhoneScript::chunked("hQVDUFYxx", &[5]));
        assert_eq!(answer(p.on_message(&[0x04])), CONTACTLESS_ATR.to_vec());
        assert_eq!(p.on_message(&[0x01]), Reply::Silent);
        assert_eq!(answer(p.on_message(&SELECT)), vec![0x90, 0x00]);
        assert_eq!(
            answer(p.on_message(&read_record(1))),
            b"hQVDU\x61\xFF".to_vec()
        );
        assert_eq!(
            answer(p.on_message(&read_record(2))),
            b"FYxx\x90\x00".to_vec()
        );
        assert_eq!(answer(p.on_message(&read_record(3))), vec![0x6A, 0x83]);
    }

    #[test]
    fn read_before_select_and_reset_are_refused() {
        let mut p = Responder::new(PhoneScript::single_record("hQVDUFY"));
        assert_eq!(answer(p.on_message(&read_record(1))), vec![0x69, 0x85]);
        answer(p.on_message(&SELECT));
        assert_eq!(p.on_message(&[0x02]), Reply::Silent);
        assert_eq!(answer(p.on_message(&read_record(1))), vec![0x69, 0x85]);
        let mut other_aid = SELECT;
        other_aid[11] = 0x21;
        assert_eq!(answer(p.on_message(&other_aid)), vec![0x6A, 0x82]);
    }

    #[test]
    fn faults_hit_only_their_step() {
        let base = PhoneScript::chunked("hQVDUFYxx", &[5]);
        let mut p = Responder::new(base.clone().fault(Fault::WalletNotReady));
        assert_eq!(answer(p.on_message(&SELECT)), vec![0x00, 0x00]);

        let mut p = Responder::new(base.clone().fault(Fault::VanishAt(Step::ReadRecord(2))));
        answer(p.on_message(&SELECT));
        answer(p.on_message(&read_record(1)));
        assert_eq!(p.on_message(&read_record(2)), Reply::Vanish);

        let by = Duration::from_millis(700);
        let mut p = Responder::new(base.clone().fault(Fault::Delay {
            at: Step::ReadRecord(1),
            by,
        }));
        answer(p.on_message(&SELECT));
        assert_eq!(
            p.on_message(&read_record(1)),
            Reply::Late {
                after: by,
                answer: b"hQVDU\x61\xFF".to_vec()
            }
        );

        let mut p = Responder::new(base.fault(Fault::Status {
            at: Step::ReadRecord(2),
            sw: 0x6F00,
        }));
        answer(p.on_message(&SELECT));
        answer(p.on_message(&read_record(1)));
        assert_eq!(answer(p.on_message(&read_record(2))), vec![0x6F, 0x00]);
    }

    #[test]
    fn frames_round_trip_over_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            write_frame(&mut s, &[0x04]).unwrap();
            let atr = read_frame(&mut s, Duration::from_secs(5)).unwrap().unwrap();
            write_frame(&mut s, &SELECT).unwrap();
            let sw = read_frame(&mut s, Duration::from_secs(5)).unwrap().unwrap();
            (atr, sw)
        });
        let report = VirtualPhone::new(addr)
            .patience(Duration::from_secs(5))
            .tap(PhoneScript::single_record("hQVDUFY").hold(Duration::from_millis(200)))
            .unwrap();
        let (atr, sw) = t.join().unwrap();
        assert_eq!(atr, CONTACTLESS_ATR.to_vec());
        assert_eq!(sw, vec![0x90, 0x00]);
        assert_eq!(report.controls, vec![0x04]);
        assert_eq!(report.selects(), 1);
    }
}
