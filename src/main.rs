//! `tapgate`: command-line entry. Parses arguments and calls the library.

// Functions stay short enough to read at once; tests may tell a longer story.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tapgate::cmd;

/// QRIS TAP fare-gate daemon and its tools.
#[derive(Parser, Debug)]
#[command(name = "tapgate", version, about)]
struct Cli {
    /// Log format on stderr: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: cmd::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scripted set of journeys against the built-in aggregator simulator (no hardware,
    /// no credentials, no money).
    #[cfg(feature = "sim")]
    Demo {
        /// Keep the demo's journal in this file instead of a temporary one.
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Decode and validate a QRIS TAP payload (`-` reads stdin). Exit 0 valid, 1 rejected.
    Decode {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// The base64 payload text, or `-`.
        payload: String,
    },
    /// Validate a station config without starting anything. Exit 0 valid, 1 invalid.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Drive one tap through the full pipeline (journal, aggregator, relay) without a reader,
    /// and print the decision as JSON.
    Tap {
        /// The station config.
        #[arg(long)]
        config: PathBuf,
        /// The lane to tap at.
        #[arg(long)]
        lane: String,
        /// The base64 payload text, or `-`.
        payload: String,
    },
    /// Drive every uncertain payment and owed refund to a final state, then exit.
    Reconcile {
        /// The station config.
        #[arg(long)]
        config: PathBuf,
        /// Give up after this many seconds (what is left stays for the daemon).
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
    },
    /// Read the payment journal (list, show, attention, export) while the daemon runs, or hand
    /// an ATTENTION operation back to the reconciler (retry).
    Journal(cmd::journal::JournalArgs),
    /// The line database of line-wide journeys ([journeys] store = "postgres"): apply its
    /// schema migrations by hand (migrate), or check this gate against it (status).
    Journeys(cmd::journeys::JourneysArgs),
    /// The unpaid list ([policy.fast_open]): passengers whose fast-opened payment ended
    /// unpaid, refused at their next entry until cleared (list, clear KEY|MASKED-PAN).
    Unpaid(cmd::unpaid::UnpaidArgs),
    /// Run the daemon: lanes, reconciler, metrics; under systemd with Type=notify.
    Run {
        /// The station config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check this gate: config, pcscd and readers, GPIO, journal and disk, the line database
    /// (with [journeys] store = "postgres"), clock, aggregator.
    /// Prints PASS/WARN/FAIL lines; exit 1 on any FAIL. Moves no money.
    Doctor {
        /// The station config.
        #[arg(long)]
        config: PathBuf,
    },
    /// List PC/SC readers, or watch taps on them (decoded, masked view) for technicians.
    Readers {
        /// Keep watching for taps on readers matching this pattern (`*` for all).
        #[arg(long)]
        watch: Option<String>,
    },
    /// Technician: pulse a lane's GPIO relay once (the daemon must not be holding the line).
    RelayPulse {
        /// The station config.
        #[arg(long)]
        config: PathBuf,
        /// The lane whose relay to pulse.
        #[arg(long)]
        lane: String,
        /// Pulse length in ms (default: the lane's pulse_ms).
        #[arg(long)]
        ms: Option<u64>,
    },
    /// Technician: print every edge on the configured gate inputs until Ctrl-C.
    GpioWatch {
        /// The station config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the acquirer simulator on loopback (for integration and certification rehearsals),
    /// or with `pay-qr`, pay a gate's QRIS through it as a passenger's wallet.
    #[cfg(feature = "sim")]
    #[command(args_conflicts_with_subcommands = true)]
    Sim {
        /// Instead of serving: act as a wallet against a running simulator.
        #[command(subcommand)]
        action: Option<cmd::sim_wallet::SimAction>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8600")]
        listen: String,
        /// The partner's public key (PEM: PUBLIC KEY, RSA PUBLIC KEY, or the private key).
        /// Default: the built-in demo key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Client id to accept. Default: the demo's.
        #[arg(long)]
        client_id: Option<String>,
        /// File holding the client secret to accept. Default: the demo's.
        #[arg(long)]
        client_secret_file: Option<PathBuf>,
        /// How the simulated issuers answer payments.
        #[command(flatten)]
        issuer: cmd::sim_settings::IssuerArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own table; its logs would only repeat it.
    let level = match cli.command {
        #[cfg(feature = "sim")]
        Command::Demo { .. } => "warn",
        Command::Doctor { .. } => "warn",
        // Its own lines say everything; the pool's reconnection logs would only repeat them.
        Command::Journeys(_) => "warn",
        _ => "info",
    };
    tapgate::daemon::logging::init(cli.log_format, level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tapgate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            #[cfg(feature = "sim")]
            Command::Demo { journal } => cmd::demo::run(journal).await,
            Command::Run { config } => tapgate::daemon::run::run(&config)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Journal(args) => cmd::journal::run(args),
            Command::Journeys(args) => cmd::journeys::run(args).await,
            Command::Unpaid(args) => cmd::unpaid::run(args).await,
            Command::Doctor { config } => cmd::doctor::run(&config).await,
            Command::Readers { watch } => cmd::readers(watch).await,
            Command::RelayPulse { config, lane, ms } => cmd::relay_pulse(&config, &lane, ms).await,
            Command::GpioWatch { config } => cmd::gpio_watch(&config).await,
            Command::Decode { json, payload } => cmd::decode(&payload, json),
            Command::CheckConfig { file } => cmd::check_config(&file),
            Command::Tap {
                config,
                lane,
                payload,
            } => cmd::tap(&config, &lane, &payload).await,
            Command::Reconcile {
                config,
                max_seconds,
            } => cmd::reconcile(&config, max_seconds).await,
            #[cfg(feature = "sim")]
            Command::Sim {
                action: Some(action),
                ..
            } => cmd::sim_wallet::run(action).await,
            #[cfg(feature = "sim")]
            Command::Sim {
                action: None,
                listen,
                public_key,
                client_id,
                client_secret_file,
                issuer,
            } => {
                let issuer = issuer.model().map_err(anyhow::Error::msg)?;
                cmd::sim(&listen, public_key, client_id, client_secret_file, issuer).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tapgate: {e:#}");
            ExitCode::from(1)
        }
    }
}
