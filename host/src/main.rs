//! The `hookhost` binary: thin glue over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hookhost::config::{Config, PluginsConfig};
use hookhost_plugin_runtime::{LOG_TARGET, Plugin, Registry, Runtime, Watcher, plugin_name};
use sha2::{Digest, Sha256};
use tracing_subscriber::EnvFilter;

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

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-off plugin commands show the plugin's own log lines, not the host's.
    let default_filter = match cli.command {
        Command::Serve { .. } => "info".to_string(),
        Command::Plugin(_) => format!("warn,{LOG_TARGET}=trace"),
        Command::Receive { .. } | Command::Verify { .. } | Command::Replay { .. } => {
            "warn".to_string()
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let result = match cli.command {
        Command::Serve { config, plugins } => serve(config.as_deref(), plugins),
        Command::Plugin(PluginCommand::Check { file }) => plugin_check(&file),
        Command::Plugin(PluginCommand::Run {
            file,
            event,
            config,
        }) => plugin_run(&file, &event, config.as_deref()),
        Command::Receive {
            port,
            seed,
            secrets,
            status,
            save,
        } => receive(port, seed, secrets, status, save),
        Command::Verify {
            file,
            seed,
            secrets,
        } => verify(&file, seed.as_deref(), &secrets),
        Command::Replay {
            url,
            token,
            wait,
            files,
        } => replay(&url, token.as_deref(), wait, &files),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_file: Option<&Path>, plugins_dir: Option<PathBuf>) -> Result<ExitCode> {
    // Signals first: a SIGTERM during start-up must still mean a clean stop.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        let _enter = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let mut config = match config_file {
        Some(file) => Config::load(file)?,
        None => Config::default(),
    };
    if let Some(dir) = plugins_dir {
        config.plugins.dir = dir;
    }
    let dir = std::fs::canonicalize(&config.plugins.dir)
        .with_context(|| format!("plugins folder {}", config.plugins.dir.display()))?;
    if !dir.is_dir() {
        bail!("plugins folder {} is not a folder", dir.display());
    }
    config.plugins.dir = dir.clone();
    let runtime = Runtime::new(&config.plugins)?;
    let registry = Registry::new(runtime);
    let results = registry
        .load_dir(&dir)
        .with_context(|| format!("reading plugins folder {}", dir.display()))?;
    let loaded = results.iter().filter(|r| r.is_ok()).count();
    tracing::info!(dir = %dir.display(), loaded, refused = results.len() - loaded, "plugins ready");
    let _watcher = if config.plugins.watch {
        Some(Watcher::start(
            registry.clone(),
            &dir,
            Duration::from_millis(config.plugins.reload_debounce_ms),
        )?)
    } else {
        None
    };
    tracing::info!(dir = %dir.display(), watching = config.plugins.watch, "plugins watched; Ctrl-C or SIGTERM stops hookhost");

    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
    };
    rt.block_on(hookhost::server::run(config, registry, shutdown))?;
    Ok(ExitCode::SUCCESS)
}

fn receive(
    port: u16,
    seed: Option<String>,
    secrets: Vec<String>,
    status: u16,
    save: Option<PathBuf>,
) -> Result<ExitCode> {
    let status = axum::http::StatusCode::from_u16(status)
        .map_err(|_| anyhow::anyhow!("--status {status} is not an HTTP status"))?;
    for s in &secrets {
        hookhost::sign::whsec_key(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let options = hookhost::receive::ReceiveOptions {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        seed,
        secrets,
        status,
        save,
    };
    rt.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        hookhost::receive::run(options, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn replay(url: &str, token: Option<&str>, wait: bool, files: &[PathBuf]) -> Result<ExitCode> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let uri: http::Uri = url.parse().with_context(|| format!("--url {url}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut refused = 0;
    rt.block_on(async {
        for (i, file) in files.iter().enumerate() {
            let body =
                std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let response = loop {
                let mut request = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json");
                if let Some(token) = token {
                    request =
                        request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
                }
                let request = request.body(Full::new(bytes::Bytes::from(body.clone())))?;
                match client.request(request).await {
                    Ok(response) => break response,
                    // Only the first request waits for the server to start.
                    Err(_) if wait && i == 0 && std::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => bail!("{url}: {e}"),
                }
            };
            let status = response.status();
            let answer = response.into_body().collect().await?.to_bytes();
            println!(
                "{} -> {} {}",
                file.display(),
                status.as_u16(),
                String::from_utf8_lossy(&answer)
            );
            if !status.is_success() {
                refused += 1;
            }
        }
        anyhow::Ok(())
    })?;
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verify(file: &Path, seed: Option<&str>, secrets: &[String]) -> Result<ExitCode> {
    if seed.is_none() && secrets.is_empty() {
        bail!("give --seed and/or --secret: nothing to check with");
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let delivery = match serde_json::from_str::<hookhost::verify::Delivery>(&text) {
        Ok(saved) => saved,
        Err(_) => hookhost::verify::Delivery {
            body: text,
            headers: Default::default(),
        },
    };
    let checks = hookhost::verify::check(&delivery, seed, secrets);
    for c in &checks {
        println!(
            "{}: {} {}",
            c.name,
            if c.ok { "OK" } else { "FAILED" },
            c.detail
        );
    }
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Loads one file outside any server, for the CLI's plugin commands.
fn load_single(file: &Path) -> Result<Plugin> {
    let Some(name) = plugin_name(file) else {
        bail!("{}: a plugin file must be named NAME.wasm", file.display());
    };
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let sha256 = Sha256::digest(&bytes).into();
    // No cache for one-off runs: nothing to share with a later start.
    let runtime = Runtime::new(&PluginsConfig::default())?;
    Ok(runtime.load(name, file, &bytes, sha256)?)
}

fn plugin_check(file: &Path) -> Result<ExitCode> {
    let plugin = load_single(file)?;
    let report = serde_json::json!({
        "file": file,
        "plugin": plugin.name(),
        "implements": "hookhost:plugin@0.1.0",
        "roles": plugin.roles(),
        "sha256": hex::encode(plugin.sha256()),
        "compile_ms": plugin.load_info().compile_time.as_secs_f64() * 1e3,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn plugin_run(file: &Path, event_file: &Path, config_file: Option<&Path>) -> Result<ExitCode> {
    let event_text = std::fs::read_to_string(event_file)
        .with_context(|| format!("{}: cannot read", event_file.display()))?;
    let event_json: serde_json::Value = serde_json::from_str(&event_text)
        .with_context(|| format!("{}: not valid JSON", event_file.display()))?;
    let event = hookhost::event::from_json(&event_json)
        .with_context(|| format!("{}: not an event", event_file.display()))?;
    let config = match config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            serde_json::from_str::<serde::de::IgnoredAny>(&text)
                .with_context(|| format!("{}: not valid JSON", path.display()))?;
            text
        }
        None => String::new(),
    };
    let decision = load_single(file)?.decide(&event, &config);
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(if decision.has_error() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
