//! [`PcscSource`]: the reader service behind the [`CardSource`] port. The lane pulls the
//! service's events from a tokio channel and shows feedback through pcscd; the daemon keeps the
//! [`ReaderHandle`] as the source's [`SourceControl`].

use tokio::sync::mpsc;

use super::feedback_send::show_feedback;
use super::machine::{ReaderOptions, ReaderPattern};
use super::service::{spawn_reader, ReaderHandle};
use crate::nfc::feedback::{FeedbackModel, Signal};
use crate::nfc::source::{CardSource, NextEvent, SourceControl};
use crate::nfc::CardEvent;

/// Events the reader thread may read ahead of the lane. A lane handles one tap at a time; a
/// full channel makes the thread wait (see [`ReaderHandle`]).
const QUEUE: usize = 16;

/// A lane's reader through pcscd, as a [`CardSource`].
#[derive(Debug)]
pub struct PcscSource {
    rx: mpsc::Receiver<CardEvent>,
    feedback: FeedbackModel,
    lane: String,
}

impl PcscSource {
    /// Starts the reader service for the reader matching `pattern` and returns the lane's
    /// source and the daemon's control. `feedback` is the reader's LED/buzzer command set
    /// ([`FeedbackModel::Off`] shows nothing); `lane` names the lane in the source's logs.
    /// Fails only if the OS refuses a thread.
    pub fn start(
        lane: &str,
        pattern: ReaderPattern,
        opts: ReaderOptions,
        feedback: FeedbackModel,
    ) -> std::io::Result<(PcscSource, ReaderHandle)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = spawn_reader(pattern, tx, opts)?;
        let source = PcscSource {
            rx,
            feedback,
            lane: lane.to_owned(),
        };
        Ok((source, handle))
    }
}

impl CardSource for PcscSource {
    fn next_event(&mut self) -> NextEvent<'_> {
        Box::pin(self.rx.recv())
    }

    /// Sends the signal from a blocking task (PC/SC calls block); must be called within a tokio
    /// runtime, as the lane is.
    fn show(&self, reader: &str, signal: Signal) {
        if self.feedback == FeedbackModel::Off {
            return;
        }
        let (reader, model, lane) = (reader.to_owned(), self.feedback, self.lane.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = show_feedback(&reader, model, signal) {
                tracing::debug!(lane = %lane, error = %e, "reader feedback not shown");
            }
        });
    }
}

impl SourceControl for ReaderHandle {
    fn is_running(&self) -> bool {
        ReaderHandle::is_running(self)
    }

    fn stop(self: Box<Self>) {
        ReaderHandle::stop(*self);
    }
}
