//! `hookhost replay`: posts sample events to a running server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub fn replay(url: &str, token: Option<&str>, wait: bool, files: &[PathBuf]) -> Result<ExitCode> {
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
