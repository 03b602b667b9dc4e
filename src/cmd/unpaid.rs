//! `tapgate unpaid list|clear`: the passengers whose fast-opened payment ended unpaid
//! (`[policy.fast_open]`). Their next entry is refused until staff clear them; the list is what
//! the operator settles with the aggregator. Clearing never collects anything: it records who
//! decided the passenger may enter again.
//!
//! On a line (`[journeys] store = "postgres"`, given with `--config`) the list is the line's:
//! every station's entries, and a clear made at any gate holds line-wide (the entry's own
//! station follows it within its replication interval).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use jiff::Timestamp;

use super::journal::{age, esc, Target};
use crate::journal::{ClearOutcome, Journal, UnpaidEntry};

/// Where the journal is, and what to do with its unpaid list.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Give the journal with --config (the station config) or --journal (the \
                  SQLite file). `list` only reads; `clear` writes, as the daemon's user."
)]
pub struct UnpaidArgs {
    /// The station config: its `[journal] path` is used.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The journal file itself, instead of --config.
    #[arg(long, global = true, value_name = "PATH")]
    pub journal: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: UnpaidCommand,
}

/// The `tapgate unpaid` sub-commands.
#[derive(clap::Subcommand, Debug)]
pub enum UnpaidCommand {
    /// Passengers who owe, one line each: masked PAN, key, issuer, amount owed, entries, since.
    List {
        /// Every entry, one JSON object per line (with `pan_key` and the cleared ones).
        #[arg(long)]
        json: bool,
        /// Include entries already cleared.
        #[arg(long)]
        all: bool,
    },
    /// Let a passenger enter again: clears every entry they owe.
    Clear {
        /// The passenger: their key as the list shows it (at least its first 8 characters), or
        /// their masked PAN (`93600009*******1234`).
        who: String,
        /// Who clears it, recorded with the entries (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

/// Runs `tapgate unpaid`.
pub async fn run(args: UnpaidArgs) -> anyhow::Result<ExitCode> {
    let target = Target::from_args(args.config.as_deref(), args.journal.as_deref())?;
    let line = match &args.config {
        Some(c) => {
            let cfg = crate::config::Config::load(c)?;
            match cfg.journeys.line_settings(&cfg.station.id) {
                Some(s) => Some(crate::line::LineStore::connect(&s)?),
                None => None,
            }
        }
        None => None,
    };
    match args.command {
        UnpaidCommand::List { json, all } => {
            let entries = match &line {
                Some(store) => store
                    .unpaid_list(all)
                    .await
                    .context("reading the line's unpaid list")?,
                None => target.open_read_only()?.unpaid_list(all)?,
            };
            list(&entries, json, Timestamp::now())
        }
        UnpaidCommand::Clear { who, by } => {
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "operator".into());
            clear(&target, line.as_ref(), &who, &by).await
        }
    }
}

/// One passenger's uncleared entries, summed.
struct Owing<'a> {
    entries: Vec<&'a UnpaidEntry>,
}

fn list(entries: &[UnpaidEntry], json: bool, now: Timestamp) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        for e in entries {
            serde_json::to_writer(&mut out, e)?;
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut by_key: Vec<Owing<'_>> = Vec::new();
    for e in entries {
        match by_key
            .iter_mut()
            .find(|o| o.entries[0].pan_key == e.pan_key)
        {
            Some(o) => o.entries.push(e),
            None => by_key.push(Owing { entries: vec![e] }),
        }
    }
    if by_key.is_empty() {
        writeln!(out, "nobody is on the unpaid list")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<19}  {:<12}  {:<8}  {:>9}  {:>7}  {:>7}  {:<7}  LAST",
        "PAN", "KEY", "NNS", "OWED", "ENTRIES", "SINCE", "STATUS"
    )?;
    for o in &by_key {
        let first = o.entries[0];
        let last = o.entries[o.entries.len() - 1];
        let owed: u64 = o
            .entries
            .iter()
            .filter(|e| e.cleared_at_ms.is_none())
            .map(|e| e.amount)
            .sum();
        let status = if o.entries.iter().all(|e| e.cleared_at_ms.is_some()) {
            "cleared"
        } else {
            "owes"
        };
        writeln!(
            out,
            "{:<19}  {:<12}  {:<8}  {:>9}  {:>7}  {:>7}  {:<7}  {} at {} ({})",
            esc(&first.pan_masked),
            esc(first.pan_key.get(..12).unwrap_or(&first.pan_key)),
            esc(&first.nns),
            owed,
            o.entries.len(),
            age(now, first.at_ms),
            status,
            esc(&last.partner_reference_no),
            esc(&last.station),
            last.direction.as_str(),
        )?;
    }
    let total: u64 = entries
        .iter()
        .filter(|e| e.cleared_at_ms.is_none())
        .map(|e| e.amount)
        .sum();
    writeln!(
        out,
        "{} passenger(s), Rp{total} owed: settle with the aggregator, then `tapgate unpaid clear`",
        by_key.len()
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

async fn clear(
    target: &Target,
    line: Option<&crate::line::LineStore>,
    who: &str,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let now_ms = Timestamp::now().as_millisecond();
    // Read-only first: a wrong path must not create an empty journal.
    drop(target.open_read_only()?);
    let mut j = Journal::open(&target.path).with_context(|| {
        format!(
            "`clear` writes, so it opens {} read-write: run it as the daemon's user",
            target.path.display()
        )
    })?;
    let here = j.unpaid_clear(who, by, now_ms)?;
    let outcome = match line {
        // The line holds every station's entries; this journal only its own.
        Some(store) => match store
            .unpaid_clear(who, by, now_ms)
            .await
            .context("clearing on the line")?
        {
            ClearOutcome::NoMatch => here,
            on_line => on_line,
        },
        None => here,
    };
    match outcome {
        ClearOutcome::Cleared(entries) => {
            let owed: u64 = entries.iter().map(|e| e.amount).sum();
            let pan = entries.first().map_or("-", |e| e.pan_masked.as_str());
            println!(
                "{}: {} entr{} (Rp{owed}) cleared by {by}; their next entry is allowed",
                esc(pan),
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
            tracing::info!(target: "tapgate::fast_open", pan = %pan, entries = entries.len(),
                owed, by, "unpaid-list entries cleared");
            Ok(ExitCode::SUCCESS)
        }
        ClearOutcome::NoMatch => {
            eprintln!(
                "tapgate: nobody owing matches {who:?}: give the key (8 characters or more) or \
                 the masked PAN as `tapgate unpaid list` shows them"
            );
            Ok(ExitCode::from(1))
        }
        ClearOutcome::Ambiguous(keys) => {
            eprintln!(
                "tapgate: {who:?} matches {} passengers; give the key instead:",
                keys.len()
            );
            for k in keys {
                eprintln!("  {}", esc(&k));
            }
            Ok(ExitCode::from(1))
        }
    }
}
