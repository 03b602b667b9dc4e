//! `tapgate journal ...`: read the payment journal while the daemon runs, for the operations
//! team (reconciliation with the aggregator's settlement reports) and field technicians.
//!
//! Every sub-command but `retry` and `prune` opens the file with [`Journal::open_read_only`]: in WAL mode a
//! reader never blocks the daemon's writes and sees every transaction committed before it
//! reads. `retry` writes one transition through the journal's state machine, so it opens the
//! file read-write; WAL lets it do so next to the running daemon (it waits at most
//! [`crate::journal::BUSY_TIMEOUT`] for the daemon's lock).
//!
//! Output never holds PAN material beyond the masked PAN the journal keeps. The passenger key
//! (`pan_key`, a keyed hash, not a PAN) appears only in the machine formats (`--json`,
//! `export`), where settlement matching may need it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::config::{Config, ReconcilerConfig};
use crate::fare::OpState;
use crate::journal::{EventRow, Journal, JournalError, OpFilter, OpRow, Transition};

/// Where the journal is, and what to do with it.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Give the journal with --config (the station config, as the daemon uses) or \
                  --journal (the SQLite file itself). Every sub-command but `retry` only reads."
)]
pub struct JournalArgs {
    /// The station config: its `[journal] path` is read (and its time zone used for dates).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The journal file itself, instead of --config (times in the system time zone).
    #[arg(long, global = true, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: JournalCommand,
}

/// The `tapgate journal` sub-commands.
#[derive(clap::Subcommand, Debug)]
pub enum JournalCommand {
    /// Operations, oldest first, as a table or JSON lines.
    ///
    /// The table shows reference, lane, direction, state, amount, age and reason; --json prints
    /// one whole operation per line. Damaged rows are skipped and counted on stderr (exit 0).
    List {
        /// Only this state (PENDING, UNKNOWN, SUCCEEDED, DECLINED, REFUND_PENDING, REFUNDED,
        /// ATTENTION; any case).
        #[arg(long, value_name = "STATE", value_parser = parse_state)]
        state: Option<OpState>,
        /// Only this lane.
        #[arg(long, value_name = "LANE")]
        lane: Option<String>,
        /// Only operations begun since: an RFC 3339 time, a station-time date or date-time
        /// (`2026-11-22`, `2026-11-22T06:00`), or a duration back from now (`2h`, `30m`, `1d`).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many (the oldest).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One operation, its journey, and its whole event history.
    Show {
        /// The operation's partnerReferenceNo.
        #[arg(value_name = "REF")]
        reference: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Operations waiting for a person (ATTENTION), with their reasons; exit 1 if any.
    ///
    /// Exit 0 when there are none, 1 when there are some (or damaged rows were skipped), so a
    /// monitoring script can run it as a check.
    Attention {
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Hands an ATTENTION operation back to the reconciler (WRITES to the journal).
    ///
    /// The operation becomes UNKNOWN (the reconciler queries the aggregator again), or
    /// REFUND_PENDING when a refund is owed, due at once. This is the one sub-command that
    /// opens the journal read-write: safe next to the running daemon (WAL), but run it as the
    /// daemon's user.
    Retry {
        /// The operation's partnerReferenceNo.
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Operations begun since a time, as CSV or JSON, for settlement reconciliation.
    ///
    /// CSV is RFC 4180 with a header line; JSON is one array. Exit 1 when damaged rows had to
    /// be left out: the export is then incomplete (they are counted on stderr).
    Export {
        /// Start: an RFC 3339 time, a station-time date or date-time (`2026-11-22`), or a
        /// duration back from now (`24h`, `7d`). Default: everything.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// csv or json.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Read what can still be read from a journal refused as damaged (table order, no
        /// --since; exit 1: a salvaged export is never known to be complete).
        #[arg(long, conflicts_with = "since")]
        salvage: bool,
    },
    /// Retention (WRITES to the journal): exports final operations older than the retention
    /// to CSV files, then deletes them.
    ///
    /// Only SUCCEEDED, DECLINED and REFUNDED operations whose last change is older than the
    /// retention go, with their closed journeys and events; never one the reconciler or a
    /// person still has work for, nor a journey that is still open. Each batch's CSV file
    /// (the `export` columns) is written and fsynced before its rows are deleted; a run
    /// stopped in between is completed by the next one, exporting nothing twice. Safe next to
    /// the running daemon (which runs the same retention hourly when `[journal] retain_days`
    /// is set); run it as the daemon's user.
    Prune {
        /// Keep this many days (default: `[journal] retain_days` of --config).
        #[arg(long, value_name = "DAYS")]
        retain_days: Option<u32>,
        /// Where the CSV files go (default: `[journal] export_dir`, else pruned/ beside the
        /// journal).
        #[arg(long, value_name = "DIR")]
        export_dir: Option<PathBuf>,
        /// Operations per batch (default: `[journal] prune_batch`, else 100).
        #[arg(long, value_name = "N")]
        batch: Option<u32>,
    },
}

/// Formats of `tapgate journal export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header line ([`crate::journal::CSV_COLUMNS`]).
    Csv,
    /// One JSON array of operations.
    Json,
}

/// Where the journal is and how to show times.
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    pub(crate) tz: TimeZone,
    reconciler: Option<ReconcilerConfig>,
    journal_cfg: Option<crate::config::JournalConfig>,
}

impl Target {
    pub(crate) fn from_args(
        config: Option<&Path>,
        journal: Option<&Path>,
    ) -> anyhow::Result<Target> {
        match (config, journal) {
            (Some(_), Some(_)) => bail!("give either --config or --journal, not both"),
            (None, None) => {
                bail!("which journal? give --config FILE (the station config) or --journal PATH")
            }
            (Some(c), None) => {
                let cfg = Config::load(c)?;
                Ok(Target {
                    path: cfg.journal.path.clone(),
                    tz: cfg.time_zone(),
                    reconciler: Some(cfg.reconciler.clone()),
                    journal_cfg: Some(cfg.journal.clone()),
                })
            }
            (None, Some(j)) => Ok(Target {
                path: j.to_path_buf(),
                tz: TimeZone::system(),
                reconciler: None,
                journal_cfg: None,
            }),
        }
    }

    pub(crate) fn open_read_only(&self) -> anyhow::Result<Journal> {
        if !self.path.exists() {
            bail!(
                "no journal at {}: check the path (the daemon creates it on first start)",
                self.path.display()
            );
        }
        Journal::open_read_only(&self.path).map_err(anyhow::Error::from)
    }
}

/// Runs `tapgate journal`.
pub fn run(args: JournalArgs) -> anyhow::Result<ExitCode> {
    match run_inner(args) {
        // `tapgate journal list | head`: the reader has all it wanted.
        Err(e)
            if e.chain().any(|c| {
                let kind = c
                    .downcast_ref::<std::io::Error>()
                    .map(|io| io.kind())
                    .or_else(|| {
                        c.downcast_ref::<serde_json::Error>()
                            .and_then(serde_json::Error::io_error_kind)
                    });
                kind == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(ExitCode::SUCCESS)
        }
        other => other,
    }
}

fn run_inner(args: JournalArgs) -> anyhow::Result<ExitCode> {
    let target = Target::from_args(args.config.as_deref(), args.journal.as_deref())?;
    let now = Timestamp::now();
    match args.command {
        JournalCommand::List {
            state,
            lane,
            since,
            limit,
            json,
        } => {
            let since_ms = since
                .map(|s| parse_since(&s, now, &target.tz))
                .transpose()?
                .map(|t| t.as_millisecond());
            let filter = OpFilter {
                state,
                lane,
                since_ms,
                limit,
            };
            list(&target, &filter, json, now)
        }
        JournalCommand::Show { reference, json } => {
            let j = target.open_read_only()?;
            show(&j, &reference, json, &target.tz)
        }
        JournalCommand::Attention { json } => attention(&target, json, now),
        JournalCommand::Retry { reference } => retry(&target, &reference, now),
        JournalCommand::Prune {
            retain_days,
            export_dir,
            batch,
        } => prune(&target, retain_days, export_dir, batch, now),
        JournalCommand::Export {
            since,
            format,
            salvage,
        } => {
            let since_ms = match since {
                Some(s) => parse_since(&s, now, &target.tz)?.as_millisecond(),
                None => i64::MIN,
            };
            export(&target, since_ms, format, salvage)
        }
    }
}

/// `tapgate journal list`.
fn list(
    target: &Target,
    filter: &OpFilter,
    json: bool,
    now: Timestamp,
) -> anyhow::Result<ExitCode> {
    let j = target.open_read_only()?;
    let rows = j.list(filter)?;
    print_rows(&rows, json, now)?;
    report_quarantined(&j);
    Ok(ExitCode::SUCCESS)
}

/// `tapgate journal attention`: exit 1 when any operation (or a damaged row) needs a person.
fn attention(target: &Target, json: bool, now: Timestamp) -> anyhow::Result<ExitCode> {
    let j = target.open_read_only()?;
    let rows = j.list(&OpFilter {
        state: Some(OpState::Attention),
        ..OpFilter::default()
    })?;
    if rows.is_empty() && !json {
        println!("no operation needs attention");
    } else {
        print_rows(&rows, json, now)?;
    }
    let damaged = report_quarantined(&j);
    Ok(if rows.is_empty() && damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `tapgate journal export`: every operation since `since_ms`, or with `salvage` whatever a
/// damaged journal still holds (then always exit 1: never known to be complete).
fn export(
    target: &Target,
    since_ms: i64,
    format: ExportFormat,
    salvage: bool,
) -> anyhow::Result<ExitCode> {
    let (j, rows, lost) = if salvage {
        if !target.path.exists() {
            bail!("no journal at {}", target.path.display());
        }
        let j = Journal::open_for_salvage(&target.path)?;
        let (rows, unreadable, first_error) = j.salvage();
        (j, rows, Some((unreadable, first_error)))
    } else {
        let j = target.open_read_only()?;
        let rows = j.export(since_ms)?;
        (j, rows, None)
    };
    let mut out = std::io::stdout().lock();
    match format {
        ExportFormat::Csv => crate::journal::write_csv(&rows, &mut out)?,
        ExportFormat::Json => {
            serde_json::to_writer(&mut out, &rows)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    let damaged = report_quarantined(&j);
    if let Some((unreadable, first_error)) = lost {
        eprintln!(
            "tapgate: salvaged {} operation(s) from {}; {unreadable} found but \
             unreadable{}; operations on damaged pages may be missing altogether: \
             reconcile with the aggregator's settlement report",
            rows.len(),
            j.path().display(),
            first_error
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `tapgate journal prune`: retention to the end, from the config or the flags.
fn prune(
    target: &Target,
    retain_days: Option<u32>,
    export_dir: Option<PathBuf>,
    batch: Option<u32>,
    now: Timestamp,
) -> anyhow::Result<ExitCode> {
    let cfg = target.journal_cfg.as_ref();
    let Some(days) = retain_days.or_else(|| cfg.and_then(|c| c.retain_days)) else {
        bail!(
            "how many days to keep? give --retain-days DAYS (or set [journal] retain_days in \
             the config given with --config)"
        );
    };
    let dir = export_dir
        .or_else(|| cfg.map(crate::config::JournalConfig::export_dir_path))
        .unwrap_or_else(|| {
            target
                .path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("pruned")
        });
    let batch = batch.or_else(|| cfg.map(|c| c.prune_batch)).unwrap_or(100);
    // Read-only first: a wrong path must not create an empty journal.
    drop(target.open_read_only()?);
    let mut j = Journal::open(&target.path).with_context(|| {
        format!(
            "`prune` writes, so it opens {} read-write: run it as the daemon's user",
            target.path.display()
        )
    })?;
    let now_ms = now.as_millisecond();
    let cutoff_ms = now_ms.saturating_sub(i64::from(days) * crate::journal::retention::DAY_MS);
    let report = crate::journal::retention::prune_all(
        &mut j,
        &dir,
        cutoff_ms,
        usize::try_from(batch).unwrap_or(100),
        now_ms,
    )?;
    for f in &report.removed {
        println!(
            "removed {} (an interrupted earlier run; its rows are exported again)",
            f.display()
        );
    }
    for f in &report.files {
        println!("exported {}", f.display());
    }
    println!(
        "pruned {} operation(s) and {} journey(s) older than {days} day(s) in {} batch(es); \
         exports in {}",
        report.operations,
        report.journeys,
        report.batches,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Parses a state name in any case, with `-` or `_`.
fn parse_state(s: &str) -> Result<OpState, String> {
    let norm = s.trim().to_ascii_uppercase().replace('-', "_");
    OpState::parse(&norm).ok_or_else(|| {
        format!(
            "unknown state {s:?}: one of PENDING, UNKNOWN, SUCCEEDED, DECLINED, REFUND_PENDING, \
             REFUNDED, ATTENTION"
        )
    })
}

/// Parses a `--since` value: an RFC 3339 time, a civil date or date-time without offset (in
/// `tz`; a date means its midnight), or a duration back from `now` in jiff's friendly (`2h`, `1d 6h`) or ISO 8601 (`PT2H`) form.
pub fn parse_since(s: &str, now: Timestamp, tz: &TimeZone) -> anyhow::Result<Timestamp> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    // A civil date-time (a bare date is its midnight) is station time. Parsed as a DateTime,
    // not a Date: jiff's Date parser would silently drop a time of day.
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return Ok(dt.to_zoned(tz.clone())?.timestamp());
    }
    if let Ok(span) = s.parse::<jiff::Span>() {
        // "2h" and "2h ago" both mean two hours back.
        let back = now.to_zoned(tz.clone()).checked_sub(span.abs())?;
        return Ok(back.timestamp());
    }
    bail!(
        "--since {s:?}: give an RFC 3339 time (2026-11-22T05:00:00+07:00), a station-time date \
         or date-time (2026-11-22, 2026-11-22T06:00) or a duration back from now (30m, 2h, 1d)"
    )
}

/// How long ago `ms` was, short: `45s`, `12m`, `3h05m`, `4d02h`.
pub(crate) fn age(now: Timestamp, ms: i64) -> String {
    let secs = now.as_millisecond().saturating_sub(ms) / 1000;
    if secs < 0 {
        return "future".into();
    }
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn when(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S%.3f %:z")
                .to_string()
        })
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// Cuts `s` to `max` characters on one line, marking the cut; control characters escaped.
fn clip(s: &str, max: usize) -> String {
    let one_line = esc(s);
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Text from the journal as printed for a person: strings that came from outside (the
/// aggregator's referenceNo, responseCode, messages) have their control characters escaped,
/// so a row can neither forge lines nor drive the terminal.
pub(crate) fn esc(s: &str) -> String {
    crate::escape::escape_controls(s).into_owned()
}

fn print_rows(rows: &[OpRow], json: bool, now: Timestamp) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        }
        return Ok(out.flush()?);
    }
    let ref_w = rows
        .iter()
        .map(|r| esc(&r.partner_reference_no).chars().count())
        .max()
        .unwrap_or(0)
        .max(3);
    let lane_w = rows
        .iter()
        .map(|r| esc(&r.lane).chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(
        out,
        "{:<ref_w$}  {:<lane_w$}  {:<3}  {:<14}  {:<4}  {:>9}  {:>7}  REASON",
        "REF", "LANE", "DIR", "STATE", "GATE", "AMOUNT", "AGE"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<ref_w$}  {:<lane_w$}  {:<3}  {:<14}  {:<4}  {:>9}  {:>7}  {}",
            esc(&r.partner_reference_no),
            clip(&r.lane, lane_w),
            r.direction.as_str(),
            r.state.as_str(),
            gate_column(r),
            r.amount.0,
            age(now, r.created_at_ms),
            clip(r.reason.as_deref().unwrap_or("-"), 80),
        )?;
    }
    writeln!(out, "{} operation(s)", rows.len())?;
    Ok(out.flush()?)
}

/// The list's GATE column: `fast` when the gate opened before the aggregator answered
/// (`[policy.fast_open]`), else whether it opened.
fn gate_column(r: &OpRow) -> &'static str {
    match (r.fast_opened, r.gate_opened) {
        (true, _) => "fast",
        (false, Some(true)) => "yes",
        (false, Some(false)) => "no",
        (false, None) => "-",
    }
}

/// Tells stderr how many damaged rows were skipped; returns the count.
fn report_quarantined(j: &Journal) -> u64 {
    let n = j.quarantined();
    if n > 0 {
        eprintln!(
            "tapgate: {n} damaged row(s) in {} skipped (quarantined; the warnings above name \
             them): the listing is incomplete. Check the file with `sqlite3 {} 'PRAGMA \
             integrity_check'` and keep a copy before any repair.",
            j.path().display(),
            j.path().display()
        );
    }
    n
}

fn show(j: &Journal, reference: &str, json: bool, tz: &TimeZone) -> anyhow::Result<ExitCode> {
    let (row, damage) = match j.get(reference) {
        Ok(Some(row)) => (Some(row), None),
        Ok(None) => {
            eprintln!(
                "tapgate: no operation {reference:?} in {}: check the reference (`tapgate \
                 journal list` shows them)",
                j.path().display()
            );
            return Ok(ExitCode::from(1));
        }
        // A damaged row is still worth its history: show what can be read.
        Err(e @ JournalError::CorruptRow { .. }) => (None, Some(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let events = j.events(reference)?;
    let journey = match row.as_ref().and_then(|r| r.journey_id) {
        Some(id) => j.get_journey(id).unwrap_or_else(|e| {
            eprintln!("tapgate: journey {id}: {e}");
            None
        }),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "operation": row,
            "damaged": damage,
            "journey": journey,
            "events": events,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        if let Some(r) = &row {
            write_op(&mut out, r, tz)?;
        }
        if let Some(jy) = &journey {
            let line = format!(
                "{} {} (in {} at {}, tap-in {}, tap-out {}, fare {})",
                jy.id,
                jy.state,
                jy.entry_station,
                when(jy.opened_at_ms, tz),
                jy.tap_in_ref,
                jy.tap_out_ref.as_deref().unwrap_or("-"),
                jy.fare.map_or_else(|| "-".into(), |f| f.0.to_string()),
            );
            writeln!(out, "journey           {}", esc(&line))?;
        }
        writeln!(out, "events")?;
        write_events(&mut out, &events, tz)?;
    }
    out.flush()?;
    drop(out);
    report_quarantined(j);
    if let Some(d) = damage {
        eprintln!("tapgate: {d}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_op(out: &mut dyn std::io::Write, r: &OpRow, tz: &TimeZone) -> std::io::Result<()> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let lines: [(&str, String); 17] = [
        ("reference", r.partner_reference_no.clone()),
        ("state", r.state.as_str().into()),
        ("kind", r.kind.as_str().into()),
        ("lane", format!("{} ({})", r.lane, r.direction.as_str())),
        ("station", r.station_id.clone()),
        ("amount", r.amount.0.to_string()),
        (
            "paid by",
            match r.channel {
                crate::journal::Channel::Cpm => {
                    format!("tap: {} (issuer {})", r.pan_masked, r.nns)
                }
                crate::journal::Channel::Mpm => "scanning the gate's QR (payer not known)".into(),
            },
        ),
        ("referenceNo", opt(&r.reference_no)),
        ("responseCode", opt(&r.response_code)),
        (
            "gate opened",
            match (r.fast_opened, r.gate_opened) {
                (true, _) => "yes, fast open: before the aggregator answered".into(),
                (false, Some(true)) => "yes".into(),
                (false, Some(false)) => "no".into(),
                (false, None) => "unknown".into(),
            },
        ),
        ("reason", opt(&r.reason)),
        ("attempts", r.attempts.to_string()),
        (
            "next attempt",
            r.next_attempt_at_ms
                .map_or_else(|| "-".into(), |ms| when(ms, tz)),
        ),
        (
            "refund",
            match (&r.refund_amount, &r.refund_no) {
                (None, None) => "-".into(),
                (a, n) => format!(
                    "{} (refundNo {})",
                    a.map_or_else(|| "-".into(), |a| a.0.to_string()),
                    opt(n)
                ),
            },
        ),
        ("created", when(r.created_at_ms, tz)),
        ("updated", when(r.updated_at_ms, tz)),
        (
            "journey id",
            r.journey_id.map_or_else(|| "-".into(), |j| j.to_string()),
        ),
    ];
    for (k, v) in lines {
        writeln!(out, "{k:<17} {}", esc(&v))?;
    }
    Ok(())
}

fn write_events(
    out: &mut dyn std::io::Write,
    events: &[EventRow],
    tz: &TimeZone,
) -> std::io::Result<()> {
    if events.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for e in events {
        let from = e.from_state.map_or("-", OpState::as_str);
        writeln!(
            out,
            "  {}  {:>14} -> {:<14}  {}",
            when(e.at_ms, tz),
            from,
            e.to_state.as_str(),
            esc(&e.detail)
        )?;
    }
    Ok(())
}

/// The state an ATTENTION row goes back to: REFUND_PENDING when it owes a refund (the
/// journal's money rules hold: a refund amount, the aggregator's reference, a gate that did
/// not open), otherwise UNKNOWN so that the reconciler asks the aggregator again.
pub fn retry_target(row: &OpRow) -> OpState {
    let owes_refund = row.refund_amount.is_some()
        && row.reference_no.as_deref().is_some_and(|r| !r.is_empty())
        && row.gate_opened != Some(true);
    if owes_refund {
        OpState::RefundPending
    } else {
        OpState::Unknown
    }
}

fn retry(target: &Target, reference: &str, now: Timestamp) -> anyhow::Result<ExitCode> {
    // Read-only first: a wrong path must not create an empty journal, and a file from
    // another tapgate version must not be migrated by a maintenance command.
    drop(target.open_read_only()?);
    let mut j = Journal::open(&target.path).with_context(|| {
        format!(
            "`retry` writes, so it opens {} read-write: run it as the daemon's user",
            target.path.display()
        )
    })?;
    let Some(row) = j.get(reference)? else {
        eprintln!(
            "tapgate: no operation {reference:?} in {}",
            target.path.display()
        );
        return Ok(ExitCode::from(1));
    };
    if row.state != OpState::Attention {
        eprintln!(
            "tapgate: {reference} is {}, not ATTENTION: only ATTENTION operations are handed \
             back (the reconciler already owns the others)",
            row.state
        );
        return Ok(ExitCode::from(1));
    }
    let to = retry_target(&row);
    let now_ms = now.as_millisecond();
    let was = row.reason.as_deref().unwrap_or("-");
    let t = Transition {
        reason: Some(format!(
            "retry requested by an operator; was ATTENTION: {was}"
        )),
        next_attempt_at_ms: Some(now_ms),
        ..Transition::new(to, now_ms)
    };
    let after = j.transition(reference, &t)?;
    println!(
        "{reference}: ATTENTION -> {}; the reconciler picks it up on its next pass",
        after.state
    );
    let (rc, which) = match &target.reconciler {
        Some(rc) => (rc.clone(), "this station's"),
        None => (ReconcilerConfig::default(), "the default"),
    };
    let age_min = now_ms.saturating_sub(row.created_at_ms) / 60_000;
    let too_old = u64::try_from(age_min).unwrap_or(0) > rc.attention_after_minutes;
    if row.attempts >= rc.max_attempts || too_old {
        eprintln!(
            "tapgate: warning: {reference} has {} attempt(s) and is {age_min} minute(s) old; \
             with {which} reconciler limits (max_attempts {}, attention_after_minutes {}) the \
             reconciler may put it straight back into ATTENTION",
            row.attempts, rc.max_attempts, rc.attention_after_minutes
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_dates_and_durations() {
        let now: Timestamp = "2026-11-22T05:00:00Z".parse().unwrap();
        let jkt = TimeZone::get("Asia/Jakarta").unwrap();
        let p = |s| parse_since(s, now, &jkt).unwrap().to_string();
        assert_eq!(p("2026-11-21T10:00:00+07:00"), "2026-11-21T03:00:00Z");
        assert_eq!(
            p("2026-11-22"),
            "2026-11-21T17:00:00Z",
            "midnight in Jakarta"
        );
        assert_eq!(p("2h"), "2026-11-22T03:00:00Z");
        assert_eq!(p("30m"), "2026-11-22T04:30:00Z");
        assert_eq!(p("2h ago"), "2026-11-22T03:00:00Z");
        assert_eq!(p("1d"), "2026-11-21T05:00:00Z");
        assert_eq!(p("PT90M"), "2026-11-22T03:30:00Z");
        let e = parse_since("yesterday-ish", now, &jkt).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn state_names_in_any_case() {
        assert_eq!(parse_state("attention"), Ok(OpState::Attention));
        assert_eq!(parse_state("refund-pending"), Ok(OpState::RefundPending));
        assert!(parse_state("PAID").unwrap_err().contains("REFUND_PENDING"));
    }

    #[test]
    fn ages_are_short() {
        let now = Timestamp::from_millisecond(10_000_000_000).unwrap();
        let ms = now.as_millisecond();
        assert_eq!(age(now, ms - 45_000), "45s");
        assert_eq!(age(now, ms - 12 * 60_000), "12m");
        assert_eq!(age(now, ms - (3 * 3600 + 5 * 60) * 1000), "3h05m");
        assert_eq!(age(now, ms - (4 * 86_400 + 2 * 3600) * 1000), "4d02h");
        assert_eq!(age(now, ms + 5000), "future");
    }

    #[test]
    fn clip_keeps_one_line() {
        assert_eq!(clip("a\nb", 10), "a\\nb");
        assert_eq!(clip("R1\r\x1b[2J", 20), "R1\\r\\x1b[2J");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
