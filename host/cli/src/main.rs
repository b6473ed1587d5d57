//! The `hookhost` binary: thin glue over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(unix)]
mod allocator;
mod commands;
mod logging;

use hookhost_plugin_runtime::LOG_TARGET;
use tracing_subscriber::EnvFilter;

use crate::logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "hookhost",
    version,
    about = "Self-hosted webhook delivery with WebAssembly plugins"
)]
struct Cli {
    /// Log lines (on stderr) as human-readable text or as JSON objects.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the HTTP API, the pipeline and delivery, with the
    /// plugins folder loaded and watched.
    Serve {
        /// TOML configuration file (every key has a default; see README).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Plugins folder, overriding `plugins.dir` from the config.
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Make or upgrade the PostgreSQL schema the config's `[store]` names
    /// (`serve` does it too, at start), then exit.
    Migrate {
        /// TOML configuration file with `[store] backend = "postgres"`.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy the sled data folder the config names into a new folder that
    /// holds only its live records (the server must be stopped); prints
    /// both sizes and how to swap the folders.
    Compact {
        /// TOML configuration file (its `server.data_dir` is copied).
        #[arg(long, short)]
        config: PathBuf,
        /// The new folder (absent or empty).
        #[arg(long)]
        into: PathBuf,
    },
    /// Check and run plugins without a server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run a webhook receiver that prints each delivery with its
    /// verification result (for trying hookhost out).
    Receive {
        /// Port on 127.0.0.1 to listen on.
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// The bike-parking seed to check `hash` with.
        #[arg(long)]
        seed: Option<String>,
        /// A Standard Webhooks secret (`whsec_...`) to check signatures with;
        /// repeat for several.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// HTTP status to answer (e.g. 503 to watch retries).
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Save each delivery as DIR/NNNNNN.json (for `hookhost verify`).
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// POST event files to a hookhost server's ingest endpoint, one request
    /// per file (a file holds one event or an array).
    Replay {
        /// The ingest endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8080/v1/events")]
        url: String,
        /// Ingest token (`HOOKHOST_INGEST_TOKEN` by default).
        #[arg(long, env = "HOOKHOST_INGEST_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Wait up to 60 s for the server to come up.
        #[arg(long)]
        wait: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Load test: starts `hookhost serve` as a separate process with one
    /// subscription to a receiver in this process, posts events from N
    /// clients and prints deliveries/s, ingest/s, latency percentiles, RSS
    /// and CPU per run (a Markdown table). Exits 1 if an acknowledged event
    /// was not delivered.
    Bench(commands::bench::BenchOptions),
    /// Check a saved delivery against a seed and/or `whsec_` secrets. Exits 0
    /// if every check passes, 1 otherwise.
    Verify {
        /// A delivery saved by `hookhost receive --save` (`{"body", "headers"}`),
        /// or a raw body (seed check only).
        file: PathBuf,
        #[arg(long)]
        seed: Option<String>,
        #[arg(long = "secret")]
        secrets: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Say whether FILE implements the hookhost plugin contract and which roles it exports.
    Check {
        /// A WebAssembly component (`NAME.wasm`).
        file: PathBuf,
    },
    /// Run FILE once on an event and print every role's decision as JSON.
    Run {
        /// A WebAssembly component (`NAME.wasm`).
        file: PathBuf,
        /// The event: `{"type": ..., "data": {...}}`, optional `id` and `timestamp`.
        #[arg(long)]
        event: PathBuf,
        /// The plugin's configuration (JSON); none if omitted.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run FILE over many events (a folder, a JSONL file, a catalog's samples) and print a
    /// table of decisions; exit 1 if an expectation fails or a call errs.
    Test(commands::plugin_test::TestOptions),
    /// Create a plugin project (Rust, JavaScript or Python) with a passing test.
    New(commands::plugin_new::NewOptions),
    /// Build a project made by `plugin new` into NAME.wasm and run its test events.
    Build(commands::plugin_new::BuildOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-off plugin commands show the plugin's own log lines, not the host's.
    let default_filter = match cli.command {
        Command::Serve { .. } | Command::Migrate { .. } | Command::Compact { .. } => {
            "info".to_string()
        }
        Command::Plugin(_) => format!("warn,{LOG_TARGET}=trace"),
        Command::Receive { .. }
        | Command::Verify { .. }
        | Command::Replay { .. }
        | Command::Bench(_) => "warn".to_string(),
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    logging::init(cli.log_format, filter);
    let result = match cli.command {
        Command::Serve { config, plugins } => commands::serve::serve(config.as_deref(), plugins),
        Command::Migrate { config } => commands::migrate::migrate(&config),
        Command::Compact { config, into } => commands::compact::compact(&config, &into),
        Command::Plugin(PluginCommand::Check { file }) => commands::plugin::plugin_check(&file),
        Command::Plugin(PluginCommand::Run {
            file,
            event,
            config,
        }) => commands::plugin::plugin_run(&file, &event, config.as_deref()),
        Command::Plugin(PluginCommand::Test(options)) => {
            commands::plugin_test::plugin_test(&options)
        }
        Command::Plugin(PluginCommand::New(options)) => commands::plugin_new::plugin_new(&options),
        Command::Plugin(PluginCommand::Build(options)) => {
            commands::plugin_new::plugin_build(&options)
        }
        Command::Receive {
            port,
            seed,
            secrets,
            status,
            save,
        } => commands::receive::receive(port, seed, secrets, status, save),
        Command::Verify {
            file,
            seed,
            secrets,
        } => commands::verify::verify(&file, seed.as_deref(), &secrets),
        Command::Replay {
            url,
            token,
            wait,
            files,
        } => commands::replay::replay(&url, token.as_deref(), wait, &files),
        Command::Bench(options) => commands::bench::bench(options),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
