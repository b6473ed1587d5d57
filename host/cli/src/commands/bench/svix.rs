//! `hookhost bench --svix-server PATH`: svix-server as the server under test.
//!
//! svix-server (github.com/svix/svix-webhooks) is the open-source webhook
//! sender the issues measure hookhost against. Per run it gets a
//! `config.toml` in the run's folder (svix reads it from its working
//! folder): the `--postgres` database, its in-memory queue and cache (no
//! Redis), loopback allowed as an endpoint; then one application with one
//! endpoint to the bench's receiver, signed with the same `whsec_` secret as
//! hookhost's subscription. The clients post svix's message body, whose
//! `payload` svix delivers as the request body, so the receiver times both
//! servers' deliveries the same way.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{BENCH_SECRET, Envelope, IngestRoute, Server, free_port, post_json, toml_string};

/// Starts svix-server for run `run` and makes its application and endpoint.
pub(super) async fn start(
    binary: &Path,
    run_dir: &Path,
    db_url: &str,
    receiver: SocketAddr,
    run: usize,
) -> anyhow::Result<Server> {
    let api = free_port()?;
    std::fs::write(
        run_dir.join("config.toml"),
        format!(
            "listen_address = \"{api}\"\njwt_secret = \"hookhost-bench-not-a-secret\"\n\
             db_dsn = {}\nqueue_type = \"memory\"\ncache_type = \"memory\"\n\
             whitelist_subnets = [\"127.0.0.0/8\"]\n",
            toml_string(db_url)
        ),
    )?;
    let authorization = format!("Bearer {}", token(binary, run_dir)?);
    let app = format!("bench-{}-{run}", std::process::id());
    let mut command = Command::new(binary);
    command.arg("--run-migrations").current_dir(run_dir);
    let route = IngestRoute {
        uri: format!("http://{api}/api/v1/app/{app}/msg/"),
        authorization: Some(authorization.clone()),
        envelope: Envelope::Svix,
    };
    let server = Server::spawn(command, api, run_dir, route)?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let make = async |uri: String, body: serde_json::Value| {
        let (status, text) = post_json(&client, &uri, Some(&authorization), body.to_string())
            .await
            .with_context(|| format!("POST {uri}"))?;
        anyhow::ensure!(
            status.is_success(),
            "svix-server answered {status} to POST {uri}: {}",
            String::from_utf8_lossy(&text)
        );
        Ok(())
    };
    make(
        format!("http://{api}/api/v1/app/"),
        serde_json::json!({ "name": app, "uid": app }),
    )
    .await?;
    make(
        format!("http://{api}/api/v1/app/{app}/endpoint/"),
        serde_json::json!({ "url": format!("http://{receiver}/bench"), "secret": BENCH_SECRET }),
    )
    .await?;
    Ok(server)
}

/// An API token from `svix-server jwt generate` (signed with the config's
/// `jwt_secret`).
fn token(binary: &Path, run_dir: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .args(["jwt", "generate"])
        .current_dir(run_dir)
        .output()
        .with_context(|| format!("running {} jwt generate", binary.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("Token (Bearer): "))
        .map(|t| t.trim().to_string())
        .with_context(|| {
            format!(
                "no token from {} jwt generate: {stdout}{}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
