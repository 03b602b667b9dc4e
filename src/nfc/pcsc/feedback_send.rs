//! Passenger feedback (LED, buzzer) sent to a reader through pcscd: the bytes come from
//! [`crate::nfc::feedback`], this module only opens the reader and sends them.

use std::ffi::CString;

use pcsc::{Context, Disposition, Protocols, Scope, ShareMode};

use crate::nfc::feedback::{self, FeedbackError, FeedbackModel, ReaderCommand, Signal};

/// Why passenger feedback could not be shown. Cosmetic: log it and carry on; feedback never
/// changes a fare decision.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackSendError {
    /// pcscd cannot be reached.
    #[error("pcscd unreachable for feedback: {0}")]
    Service(pcsc::Error),
    /// The reader could not be opened (for a pseudo-APDU: the phone already left).
    #[error("cannot open {reader} for feedback: {error}")]
    Connect {
        /// The reader.
        reader: String,
        /// The PC/SC error.
        error: pcsc::Error,
    },
    /// The reader or driver rejected the command (escape not enabled in libccid, wrong model
    /// configured).
    #[error("{reader} rejected the feedback command: {error}")]
    Rejected {
        /// The reader.
        reader: String,
        /// The PC/SC error.
        error: pcsc::Error,
    },
    /// The reader answered, but not with success.
    #[error(transparent)]
    Refused(#[from] FeedbackError),
}

/// Shows `signal` on `reader` using `model`'s command set; does nothing for
/// [`FeedbackModel::Off`]. Blocking (call it from `spawn_blocking`), on its own PC/SC context.
///
/// Escape commands go through a direct connection, so they work with the phone gone; ACR122U
/// pseudo-APDUs need a card connection, so they only work while the phone is still in the
/// field (usually true: the verdict comes a few hundred milliseconds after the read).
pub fn show_feedback(
    reader: &str,
    model: FeedbackModel,
    signal: Signal,
) -> Result<(), FeedbackSendError> {
    let commands = feedback::commands(model, signal);
    if commands.is_empty() {
        return Ok(());
    }
    let ctx = Context::establish(Scope::User).map_err(FeedbackSendError::Service)?;
    let cname = CString::new(reader).map_err(|_| FeedbackSendError::Connect {
        reader: reader.to_owned(),
        error: pcsc::Error::UnknownReader,
    })?;
    let needs_card = commands
        .iter()
        .any(|c| matches!(c, ReaderCommand::Transmit(_)));
    let (share, protocols) = if needs_card {
        (ShareMode::Shared, Protocols::ANY)
    } else {
        (ShareMode::Direct, Protocols::UNDEFINED)
    };
    let card =
        ctx.connect(&cname, share, protocols)
            .map_err(|error| FeedbackSendError::Connect {
                reader: reader.to_owned(),
                error,
            })?;
    let mut buf = [0u8; 300];
    let rejected = |error| FeedbackSendError::Rejected {
        reader: reader.to_owned(),
        error,
    };
    let mut outcome = Ok(());
    for command in &commands {
        let answer = match command {
            ReaderCommand::Transmit(apdu) => card.transmit(apdu, &mut buf),
            ReaderCommand::Escape(bytes) => card.control(
                pcsc::ctl_code(feedback::CCID_ESCAPE_CODE.into()),
                bytes,
                &mut buf,
            ),
        };
        outcome = answer
            .map_err(rejected)
            .and_then(|a| feedback::check_answer(command, a).map_err(Into::into));
        if outcome.is_err() {
            break;
        }
    }
    if let Err((card, _)) = card.disconnect(Disposition::LeaveCard) {
        drop(card);
    }
    outcome
}
