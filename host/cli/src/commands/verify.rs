//! `hookhost verify`: checks a saved delivery's signatures and hash.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

pub fn verify(file: &Path, seed: Option<&str>, secrets: &[String]) -> Result<ExitCode> {
    if seed.is_none() && secrets.is_empty() {
        bail!("give --seed and/or --secret: nothing to check with");
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    let delivery = match serde_json::from_str::<hookhost_core::verify::Delivery>(&text) {
        Ok(saved) => saved,
        Err(_) => hookhost_core::verify::Delivery {
            body: text,
            headers: Default::default(),
        },
    };
    let checks = hookhost_core::verify::check(&delivery, seed, secrets);
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
