//! `hookhost receive`: a webhook receiver for trying hookhost out. It answers
//! every POST, prints one line per delivery with its verification results,
//! and can save each delivery for `hookhost verify`.

use crate::ExitCode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use hookhost_core::verify::{self, Delivery};

pub struct ReceiveOptions {
    pub listen: SocketAddr,
    pub seed: Option<String>,
    pub secrets: Vec<String>,
    /// Status to answer with (200 by default; 503 shows retries).
    pub status: StatusCode,
    /// Folder to save each delivery in as `NNNNNN.json`.
    pub save: Option<PathBuf>,
}

struct Receiver {
    options: ReceiveOptions,
    count: AtomicU64,
}

/// Serves until `shutdown` resolves.
pub async fn run(
    options: ReceiveOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(dir) = &options.save {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.listen))?;
    let local = listener.local_addr()?;
    let mut checking = Vec::new();
    if options.seed.is_some() {
        checking.push("seed hash");
    }
    if !options.secrets.is_empty() {
        checking.push("Standard Webhooks signatures");
    }
    let checks = if checking.is_empty() {
        "no checks: give --seed and/or --secret".to_string()
    } else {
        format!("checking: {}", checking.join(", "))
    };
    println!("hookhost receive: listening on http://{local}/ ({checks})");
    let state = Arc::new(Receiver {
        options,
        count: AtomicU64::new(0),
    });
    let app = Router::new().fallback(check_delivery).with_state(state);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn check_delivery(
    State(receiver): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = receiver.count.fetch_add(1, Ordering::Relaxed) + 1;
    let delivery = Delivery {
        body: String::from_utf8_lossy(&body).into_owned(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect::<BTreeMap<_, _>>(),
    };
    let options = &receiver.options;
    let checks = verify::check(&delivery, options.seed.as_deref(), &options.secrets);
    let event_type = serde_json::from_str::<Value>(&delivery.body)
        .ok()
        .and_then(|v| {
            v.get("type")
                .or_else(|| v.pointer("/data/type"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into());
    let id = delivery
        .headers
        .get("webhook-id")
        .map_or("-", String::as_str);
    let verdict: Vec<String> = checks
        .iter()
        .map(|c| format!("{} {}", c.name, if c.ok { "OK" } else { "FAILED" }))
        .collect();
    println!(
        "#{n} {} {} type={event_type} id={id} {} bytes{}{}",
        uri.path(),
        options.status.as_u16(),
        delivery.body.len(),
        if verdict.is_empty() { "" } else { " | " },
        verdict.join(", ")
    );
    for c in checks.iter().filter(|c| !c.ok) {
        println!("    {}: {}", c.name, c.detail);
    }
    if let Some(dir) = &options.save {
        let file = dir.join(format!("{n:06}.json"));
        let text = serde_json::to_string_pretty(&delivery).unwrap_or_default();
        if let Err(e) = std::fs::write(&file, text) {
            eprintln!("cannot save {}: {e}", file.display());
        }
    }
    options.status
}

/// `hookhost receive`: checks the flags, then runs the receiver until Ctrl-C.
pub fn receive(
    port: u16,
    seed: Option<String>,
    secrets: Vec<String>,
    status: u16,
    save: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let status = axum::http::StatusCode::from_u16(status)
        .map_err(|_| anyhow::anyhow!("--status {status} is not an HTTP status"))?;
    for s in &secrets {
        hookhost_core::sign::whsec_key(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let options = ReceiveOptions {
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
        run(options, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
