//! Connection discipline: the tap finds an open connection and a valid token, both kept so
//! by [`keep_warm`] in the background.
//!
//! The pooled connection closes after `pool_idle_timeout_ms` unused (and the aggregator's load
//! balancer closes it after its own keep-alive timeout), so at a quiet gate the first tap
//! after a gap would pay for a new TCP+TLS handshake. TCP keep-alive probes do not help: they
//! keep a NAT mapping alive but reset neither idle timer, which count HTTP requests. So after
//! `keep_warm_ms` without any call, [`keep_warm`] makes one light call: a signed status query
//! of a reference that cannot exist ([`keep_warm_reference`]). It moves no money, the
//! aggregator answers `404xx01` from one lookup, and it goes through the same host, route,
//! token and signature as a payment, so a refused key or token shows here before a tap.
//! A failed call is retried in the background, sooner than the interval, so the connection is
//! reopened off the tap path when the aggregator comes back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{query_outcome, Aggregator, QueryOutcome};

/// The longest the keeper sleeps without looking at the token and the connection.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// The first retry after a failed token fetch or keep-warm call; doubles up to [`MAX_SLEEP`].
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The `originalPartnerReferenceNo` of the keep-warm query: `TGKEEPWARM` and the device id's
/// letters and digits. A payment reference (`TG` + station + digits) never has this form, and
/// were one ever to match, a query still moves no money and its answer is not acted on.
pub fn keep_warm_reference(device_id: &str) -> String {
    let mut r = String::from("TGKEEPWARM");
    r.extend(
        device_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(super::profile::MAX_REFERENCE_CHARS - r.len()),
    );
    r
}

/// What one keep-warm call learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WarmCall {
    /// The aggregator answered the query: the connection is open and the credentials work.
    Answered,
    /// The aggregator answered, but refused the call (signature, token, merchant): the
    /// connection is open; a person must look at the configuration.
    Refused(String),
    /// No usable answer (connect failed, timeout, `5xx`): try again soon.
    Failed(String),
}

impl Aggregator {
    /// One light call on the pooled connection: a status query of
    /// [`keep_warm_reference`]. Logged at debug level only (it runs every `keep_warm_ms` at a
    /// quiet gate).
    pub async fn keep_warm_call(&self) -> WarmCall {
        let reference = keep_warm_reference(&self.merchant.device_id);
        let body = match super::profile::query_body(&self.merchant, &reference) {
            Ok(b) => b,
            Err(e) => return WarmCall::Refused(format!("not sent: {e}")),
        };
        let raw = self.client.post(&self.query_path, &body).await;
        let outcome = query_outcome(raw, &reference);
        tracing::debug!(code = outcome.code().unwrap_or(""), reason = %outcome.reason(), "keep-warm query");
        match outcome {
            QueryOutcome::NotFound { .. } | QueryOutcome::Status { .. } => WarmCall::Answered,
            QueryOutcome::Refused { .. } => WarmCall::Refused(outcome.reason()),
            QueryOutcome::Unavailable { reason } => WarmCall::Failed(reason),
        }
    }
}

/// Logs a health change once, not every tick.
fn report(what: &str, was: &mut Option<bool>, ok: bool, problem: &str) {
    if ok && *was == Some(false) {
        tracing::info!("{what} recovered");
    } else if !ok && *was != Some(false) {
        tracing::warn!(problem, "{what} failing (retrying in the background)");
    }
    *was = Some(ok);
}

fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(MAX_SLEEP)
}

/// Keeps the aggregator's token fresh and its connection open until `stop` turns true (or
/// its sender goes away), so that a tap never waits for either:
///
/// - the token is renewed as soon as it is due for refresh (well before it expires), and
///   retried with backoff while the aggregator refuses or is unreachable;
/// - when `keep_warm_ms` is set and no call has used the connection for that long, one
///   [`Aggregator::keep_warm_call`] keeps it open (or reopens it); a failed one is retried
///   after 1, 2, 4 ... s (at most the interval).
///
/// Run one per [`Aggregator`] (the daemon: one per station).
pub async fn keep_warm(agg: Arc<Aggregator>, mut stop: watch::Receiver<bool>) {
    let client = agg.client.clone();
    let warm_after = client.keep_warm_after();
    let (mut token_ok, mut line_ok) = (None, None);
    let (mut token_failures, mut call_failures) = (0u32, 0u32);
    let mut call_retry_at: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut wait = MAX_SLEEP;
        if client.token_refresh_in().is_zero() {
            match client.ensure_token().await {
                Ok(()) => {
                    token_failures = 0;
                    report("aggregator access token", &mut token_ok, true, "");
                }
                Err(e) => {
                    token_failures += 1;
                    wait = wait.min(backoff(token_failures));
                    let problem = format!("{e} (check clock, keys, network)");
                    report("aggregator access token", &mut token_ok, false, &problem);
                }
            }
        }
        let refresh_in = client.token_refresh_in();
        if !refresh_in.is_zero() {
            wait = wait.min(refresh_in);
        }
        if let Some(after) = warm_after {
            let retry_due = call_retry_at.is_some_and(|t| Instant::now() >= t);
            match client.idle_for() {
                Some(idle) if idle >= after || retry_due => {
                    let call = agg.keep_warm_call().await;
                    let (ok, problem) = match &call {
                        WarmCall::Answered => (true, String::new()),
                        WarmCall::Refused(why) => (false, format!("connection open, {why}")),
                        WarmCall::Failed(why) => (false, why.clone()),
                    };
                    report("aggregator keep-warm call", &mut line_ok, ok, &problem);
                    if let WarmCall::Failed(_) = call {
                        call_failures += 1;
                        let retry = backoff(call_failures).min(after);
                        call_retry_at = Some(Instant::now() + retry);
                        wait = wait.min(retry);
                    } else {
                        call_failures = 0;
                        call_retry_at = None;
                        wait = wait.min(after);
                    }
                }
                Some(idle) => {
                    let until_retry =
                        call_retry_at.map(|t| t.saturating_duration_since(Instant::now()));
                    wait = wait.min(after - idle).min(until_retry.unwrap_or(after));
                }
                // A call is using the connection: it is warm; look again later.
                None => wait = wait.min(after),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_warm_reference_is_bounded_and_plain() {
        assert_eq!(keep_warm_reference("BLM-G01"), "TGKEEPWARMBLMG01");
        let long = keep_warm_reference(&"x".repeat(200));
        assert_eq!(
            long.chars().count(),
            super::super::profile::MAX_REFERENCE_CHARS
        );
        assert_eq!(keep_warm_reference("\u{e9}/\n"), "TGKEEPWARM");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
