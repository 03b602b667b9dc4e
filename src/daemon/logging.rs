//! Logging set-up: journald under systemd, text or JSON on stderr otherwise, and a rate limit
//! on repeated warnings.
//!
//! # Where logs go
//!
//! | `--log-format` | stderr is the journal (`JOURNAL_STREAM`) | output |
//! |---|---|---|
//! | `text` (default) | yes | journald's native protocol: every tracing field a journal field |
//! | `text` | no | human-readable lines on stderr |
//! | `json` | either | one JSON object per event on stderr |
//!
//! systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr goes to the journal; a
//! child whose stderr was redirected elsewhere inherits the variable, so it only counts when it
//! names stderr's own device and inode (what systemd.exec(5) asks programs to check).
//!
//! # Journal fields
//!
//! tracing-journald upper-cases field names and, by default, prefixes them with `F_`; we turn
//! the prefix off so that a technician filters on the names used in the code:
//! `journalctl -u tapgate LANE=in-1`, `OUTCOME=declined`, `FARE_REF=TG…`, `RESPONSE_CODE=…`,
//! and the per-stage timings `READ_US`, `DECODE_US`, `JOURNAL_US`, `AGGREGATOR_US`, `RELAY_US`,
//! `TOTAL_US`. The event's text is `MESSAGE`, its level `PRIORITY` (error 3, warn 4, info 5),
//! its target `TARGET` (`tapgate::tap` for the one event per tap, `tapgate::fare` for payment
//! state changes), and `SYSLOG_IDENTIFIER=tapgate`. No field collides with journald's own:
//! theirs start with `_` or are the ones listed above.
//!
//! # Rate limit
//!
//! A warning or error that repeats (same statement in the code, same `lane`, `reader`, `input`,
//! `pattern`, `path`, `journal` and `key` fields) is shown once per [`WARN_WINDOW`]; the
//! repeats inside the window are counted, and the first one after it is preceded by an event
//! `"N similar warnings suppressed"` (target `tapgate::log`, fields `SUPPRESSED`, `STATEMENT`).
//! Events about a payment (they carry `fare_ref`) and the per-tap events are never limited:
//! each one is about different money. A limit still counting when the process exits is not
//! reported.

use crate::escape::escape_controls;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::{Callsite, Identifier};
use tracing::field::{Field, FieldSet, Value, Visit};
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Log output format, chosen with `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines on stderr; journald's structured protocol when stderr is the
    /// journal (under systemd).
    Text,
    /// One JSON object per event on stderr, always.
    Json,
}

/// Where [`init`] sent the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSink {
    /// journald's native socket, with structured fields.
    Journald,
    /// Text lines on stderr.
    Text,
    /// JSON objects on stderr.
    Json,
}

/// How long a repeated warning stays quiet after it was shown.
pub const WARN_WINDOW: Duration = Duration::from_secs(60);

/// Sets up tracing at `default_level` (`RUST_LOG` overrides it) and returns where the logs go.
/// A second call changes nothing. Never fails: with no journald the logs go to stderr.
pub fn init(format: LogFormat, default_level: &str) -> LogSink {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    // Colours only for a person at a terminal, never into files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
    };
    let (sink, result) = match format {
        LogFormat::Json => (
            LogSink::Json,
            registry
                .with(RateLimited::new(text().json(), WARN_WINDOW))
                .try_init(),
        ),
        LogFormat::Text => match journald_if_stderr_is_journal() {
            Some(layer) => (
                LogSink::Journald,
                registry
                    .with(RateLimited::new(layer, WARN_WINDOW))
                    .try_init(),
            ),
            None => (
                LogSink::Text,
                registry
                    .with(RateLimited::new(
                        text_layer(std::io::stderr, ansi),
                        WARN_WINDOW,
                    ))
                    .try_init(),
            ),
        },
    };
    if result.is_ok() {
        tracing::debug!(sink = ?sink, "logging set up");
    }
    sink
}

/// The human-readable text log layer writing to `writer` (stderr in [`init`]): the default
/// layout, with every field value passed through [`escape_controls`](crate::escape::escape_controls) ([`EscapedFields`]).
pub fn text_layer<S, W>(
    writer: W,
    ansi: bool,
) -> tracing_subscriber::fmt::Layer<S, EscapedFields, tracing_subscriber::fmt::format::Format, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .fmt_fields(EscapedFields)
}

/// The journald layer, when `JOURNAL_STREAM` names stderr and journald's socket answers.
fn journald_if_stderr_is_journal() -> Option<tracing_journald::Layer> {
    let stream = std::env::var("JOURNAL_STREAM").ok()?;
    if !stream_names_stderr(&stream, stderr_dev_ino()?) {
        return None;
    }
    let layer = tracing_journald::layer().ok()?;
    Some(
        layer
            .with_field_prefix(None)
            .with_syslog_identifier("tapgate".to_string()),
    )
}

/// stderr's device and inode numbers, as systemd writes them into `JOURNAL_STREAM`.
fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether a `JOURNAL_STREAM` value (`DEV:INODE`, decimal) names `(dev, ino)`.
pub fn stream_names_stderr(value: &str, (dev, ino): (u64, u64)) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// Field formatting for the text log on stderr: tracing-subscriber's default layout (the
/// message bare, then `name=value`), with [`escape_controls`](crate::escape::escape_controls) applied to every value, so that
/// one event is always one line however its fields were filled. (The JSON format escapes by
/// itself; journald keeps each field apart.)
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapedFields;

impl<'a> tracing_subscriber::field::MakeVisitor<tracing_subscriber::fmt::format::Writer<'a>>
    for EscapedFields
{
    type Visitor = EscapedVisitor<'a>;

    fn make_visitor(&self, writer: tracing_subscriber::fmt::format::Writer<'a>) -> Self::Visitor {
        EscapedVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`EscapedFields`].
pub struct EscapedVisitor<'a> {
    writer: tracing_subscriber::fmt::format::Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl EscapedVisitor<'_> {
    fn write(&mut self, field: &Field, text: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let text = escape_controls(text);
        self.result = match field.name() {
            "message" => write!(self.writer, "{sep}{text}"),
            name => write!(
                self.writer,
                "{sep}{}={text}",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        };
    }
}

impl Visit for EscapedVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.write(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

impl tracing_subscriber::field::VisitOutput<fmt::Result> for EscapedVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl tracing_subscriber::field::VisitFmt for EscapedVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// What the limiter decides for one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Show it; `suppressed_before` repeats were held back since the last one shown.
    Show {
        /// How many repeats were not shown.
        suppressed_before: u64,
    },
    /// A repeat inside the window: count it, show nothing.
    Suppress,
}

/// The rate limit's bookkeeping, pure: the caller passes the time.
#[derive(Debug)]
pub struct Limiter<K> {
    window: Duration,
    seen: HashMap<K, (Instant, u64)>,
}

/// Keys tracked at most; past that the oldest windows are forgotten (a forgotten key's next
/// warning is simply shown).
const MAX_KEYS: usize = 1024;

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// A limiter showing each key at most once per `window`.
    pub fn new(window: Duration) -> Self {
        Limiter {
            window,
            seen: HashMap::new(),
        }
    }

    /// Decides for one event with `key` at `now`.
    pub fn check(&mut self, key: &K, now: Instant) -> Verdict {
        match self.seen.get_mut(key) {
            Some((shown_at, suppressed))
                if now.saturating_duration_since(*shown_at) < self.window =>
            {
                *suppressed += 1;
                Verdict::Suppress
            }
            Some((shown_at, suppressed)) => {
                let before = std::mem::take(suppressed);
                *shown_at = now;
                Verdict::Show {
                    suppressed_before: before,
                }
            }
            None => {
                if self.seen.len() >= MAX_KEYS {
                    let window = self.window;
                    self.seen
                        .retain(|_, (at, _)| now.saturating_duration_since(*at) < window);
                    if self.seen.len() >= MAX_KEYS {
                        self.seen.clear();
                    }
                }
                self.seen.insert(key.clone(), (now, 0));
                Verdict::Show {
                    suppressed_before: 0,
                }
            }
        }
    }
}

/// What makes two warnings "the same": the statement and the fields naming the thing that is
/// wrong.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WarnKey {
    callsite: Identifier,
    subject: String,
}

/// Fields that name what a warning is about; other fields (error text, timings) vary between
/// repeats of the same trouble.
const SUBJECT_FIELDS: [&str; 7] = [
    "lane", "reader", "pattern", "path", "journal", "key", "input",
];

#[derive(Default)]
struct KeyVisitor {
    subject: String,
    about_money: bool,
}

impl Visit for KeyVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "fare_ref" {
            self.about_money = true;
        } else if SUBJECT_FIELDS.contains(&field.name()) {
            use fmt::Write as _;
            let _ = write!(self.subject, "{}={:?};", field.name(), value);
        }
    }
}

/// A layer that passes events to `inner`, holding back repeated warnings and errors (see the
/// module docs), and tells `inner` how many it held back.
pub struct RateLimited<L> {
    inner: L,
    limiter: Mutex<Limiter<WarnKey>>,
    now: Box<dyn Fn() -> Instant + Send + Sync>,
}

impl<L> RateLimited<L> {
    /// Wraps `inner`, showing each repeated warning once per `window`.
    pub fn new(inner: L, window: Duration) -> Self {
        Self::with_clock(inner, window, Instant::now)
    }

    /// As [`RateLimited::new`], reading the time from `now` (tests advance it by hand).
    pub fn with_clock(
        inner: L,
        window: Duration,
        now: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        RateLimited {
            inner,
            limiter: Mutex::new(Limiter::new(window)),
            now: Box::new(now),
        }
    }
}

struct SummaryCallsite;
static SUMMARY_CALLSITE: SummaryCallsite = SummaryCallsite;
static SUMMARY_META: Metadata<'static> = Metadata::new(
    "suppressed warnings",
    "tapgate::log",
    Level::WARN,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(
        &["message", "suppressed", "statement"],
        Identifier(&SUMMARY_CALLSITE),
    ),
    Kind::EVENT,
);

impl Callsite for SummaryCallsite {
    fn set_interest(&self, _: Interest) {}
    fn metadata(&self) -> &Metadata<'_> {
        &SUMMARY_META
    }
}

impl<S, L> Layer<S> for RateLimited<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }
    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, ctx);
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.inner.max_level_hint()
    }
    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_record(span, values, ctx);
    }
    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.inner.on_follows_from(span, follows, ctx);
    }
    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == "tapgate::tap" {
            return self.inner.on_event(event, ctx);
        }
        let mut v = KeyVisitor::default();
        event.record(&mut v);
        if v.about_money {
            return self.inner.on_event(event, ctx);
        }
        let key = WarnKey {
            callsite: meta.callsite(),
            subject: v.subject,
        };
        let verdict = match self.limiter.lock() {
            Ok(mut l) => l.check(&key, (self.now)()),
            // A panic elsewhere while holding the lock: show everything rather than nothing.
            Err(_) => Verdict::Show {
                suppressed_before: 0,
            },
        };
        match verdict {
            Verdict::Suppress => {}
            Verdict::Show { suppressed_before } => {
                if suppressed_before > 0 {
                    let fields = SUMMARY_META.fields();
                    let (Some(m), Some(n), Some(s)) = (
                        fields.field("message"),
                        fields.field("suppressed"),
                        fields.field("statement"),
                    ) else {
                        return self.inner.on_event(event, ctx);
                    };
                    let message = format_args!(
                        "{suppressed_before} similar warnings suppressed in the last {} s",
                        WARN_WINDOW.as_secs()
                    );
                    let statement = meta.name();
                    let values = [
                        (&m, Some(&message as &dyn Value)),
                        (&n, Some(&suppressed_before as &dyn Value)),
                        (&s, Some(&statement as &dyn Value)),
                    ];
                    let set = fields.value_set(&values);
                    self.inner
                        .on_event(&Event::new(&SUMMARY_META, &set), ctx.clone());
                }
                self.inner.on_event(event, ctx);
            }
        }
    }
    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }
    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &tracing::span::Id, new: &tracing::span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: forwarded unchanged; the inner layer upholds downcast_raw's contract.
            unsafe { self.inner.downcast_raw(id) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(stream_names_stderr("8:1234", (8, 1234)));
        assert!(stream_names_stderr("8:1234\n", (8, 1234)));
        assert!(!stream_names_stderr("8:1235", (8, 1234)));
        assert!(!stream_names_stderr("9:1234", (8, 1234)));
        assert!(!stream_names_stderr("", (8, 1234)));
        assert!(!stream_names_stderr("8-1234", (8, 1234)));
    }

    #[test]
    fn limiter_shows_once_per_window_and_counts() {
        let mut l = Limiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(
            l.check(&"a", t0),
            Verdict::Show {
                suppressed_before: 0
            }
        );
        assert_eq!(l.check(&"a", t0 + s(1)), Verdict::Suppress);
        assert_eq!(l.check(&"a", t0 + s(59)), Verdict::Suppress);
        // Another key is not held back by the first.
        assert_eq!(
            l.check(&"b", t0 + s(2)),
            Verdict::Show {
                suppressed_before: 0
            }
        );
        assert_eq!(
            l.check(&"a", t0 + s(60)),
            Verdict::Show {
                suppressed_before: 2
            }
        );
        assert_eq!(l.check(&"a", t0 + s(61)), Verdict::Suppress);
        assert_eq!(
            l.check(&"a", t0 + s(200)),
            Verdict::Show {
                suppressed_before: 1
            }
        );
        assert_eq!(
            l.check(&"a", t0 + s(300)),
            Verdict::Show {
                suppressed_before: 0
            }
        );
    }

    #[test]
    fn limiter_stays_bounded() {
        let mut l = Limiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 3) {
            let _ = l.check(&i, t0);
        }
        assert!(l.seen.len() <= MAX_KEYS);
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<StdMutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Outside text (an aggregator's referenceNo and message) in a message, a Display field and
    /// a Debug field: the text log keeps one event on one line and passes no escape code.
    #[test]
    fn text_log_escapes_control_characters_from_outside() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(text_layer(move || w.clone(), false).without_time());
        let evil = "A1\r\nINFO tapgate: forged line\x1b[2J\x07\u{9b}31m\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(reference_no = %evil, reason = ?evil, "paid: referenceNo {evil}");
            let io = std::io::Error::other(evil);
            tracing::warn!(error = &io as &(dyn std::error::Error + 'static), "failed");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            !out.trim_end_matches('\n')
                .chars()
                .any(|c| c.is_control() && c != '\n')
                && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert!(!out.contains("\nINFO tapgate: forged"), "{out:?}");
        assert!(
            out.contains("referenceNo A1\\r\\nINFO tapgate: forged line\\x1b[2J"),
            "{out}"
        );
        assert!(out.contains("reference_no=A1\\r\\n"), "{out}");
        assert!(out.contains("\\u{9b}31m\\u{202e}"), "{out}");
        assert_eq!(escape_controls("plain ok"), "plain ok");
    }

    /// The layer over a real fmt layer: repeats held back per lane, money never held back,
    /// and the count reported before the next one shown.
    #[test]
    fn layer_limits_repeats_and_reports_the_count() {
        let buf = Buf::default();
        let w = buf.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(move || w.clone());
        // A zero window would show everything; a long one holds every repeat back.
        let subscriber =
            tracing_subscriber::registry().with(RateLimited::new(fmt, Duration::from_secs(3600)));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                for lane in ["in-1", "out-1"] {
                    tracing::warn!(lane, "reader missing");
                }
                tracing::error!(fare_ref = "TG1", "journal write failed");
                tracing::info!("info is never limited");
            }
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let count = |s: &str| out.lines().filter(|l| l.contains(s)).count();
        assert_eq!(count("lane=\"in-1\""), 1, "{out}");
        assert_eq!(count("lane=\"out-1\""), 1, "{out}");
        assert_eq!(count("journal write failed"), 5, "{out}");
        assert_eq!(count("info is never limited"), 5, "{out}");

        // Time moved by hand: the count comes before the next warning shown.
        let buf = Buf::default();
        let w = buf.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(move || w.clone());
        let t0 = Instant::now();
        let offset = Arc::new(StdMutex::new(Duration::ZERO));
        let o = offset.clone();
        let layer = RateLimited::with_clock(fmt, Duration::from_secs(60), move || {
            t0 + *o.lock().unwrap()
        });
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let emit = || tracing::warn!(lane = "in-1", "token refresh failed");
            emit();
            emit();
            emit();
            *offset.lock().unwrap() = Duration::from_secs(61);
            emit();
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].contains("token refresh failed"), "{out}");
        assert!(
            lines[1].contains("2 similar warnings suppressed") && lines[1].contains("suppressed=2"),
            "{out}"
        );
        assert!(lines[2].contains("token refresh failed"), "{out}");
    }
}
