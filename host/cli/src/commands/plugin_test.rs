//! `hookhost plugin test`: a plugin over many events — a folder of event
//! files, a JSONL file of recorded events, or a catalog's samples — as a
//! table of decisions, with expectations checked for CI, and optionally
//! repeated in one warm plugin (a soak: failures and per-call latency).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hookhost_core::catalog::Catalogs;
use hookhost_plugin_runtime::{Decision, Event, Plugin};
use serde_json::Value;

use super::plugin::{load_single, read_config};

/// What `plugin test` was asked to do (the CLI's arguments).
#[derive(clap::Args, Debug)]
pub struct TestOptions {
    /// A WebAssembly component (`NAME.wasm`).
    pub file: PathBuf,
    /// Events: a folder of `*.json` files, one `.json` file, or a `.jsonl`
    /// file (one event per line). An event may carry `"expect": {...}`: the
    /// decision's roles it must match, as `plugin run` prints them
    /// (`{"filter": {"keep": false}}`).
    #[arg(long = "events")]
    pub events: Vec<PathBuf>,
    /// A catalog whose sample payloads are the events (one per type).
    #[arg(long)]
    pub catalog: Vec<PathBuf>,
    /// The plugin's configuration (JSON); none if omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run every event this many times in total in one warm plugin and
    /// report failures and per-call latency (a memory and stability soak).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Compile without the compiled-plugin cache.
    #[arg(long)]
    pub no_cache: bool,
}

struct Case {
    name: String,
    event: Event,
    expect: Option<serde_json::Map<String, Value>>,
}

pub fn plugin_test(options: &TestOptions) -> Result<ExitCode> {
    let cases = gather(options)?;
    if cases.is_empty() {
        bail!("no events to test: give --events and/or --catalog");
    }
    let config = read_config(options.config.as_deref())?;
    let plugin = load_single(&options.file, !options.no_cache)?;
    let load = plugin.load_info();
    eprintln!(
        "{}: roles {}, {} in {:.1} ms",
        plugin.name(),
        plugin.roles().join(" + "),
        if load.from_cache {
            "loaded from the cache"
        } else {
            "compiled"
        },
        load.compile_time.as_secs_f64() * 1e3
    );

    let mut failed = 0usize;
    let mut first = Vec::with_capacity(cases.len());
    println!("| event | decision | check |");
    println!("|---|---|---|");
    for case in &cases {
        let decision = plugin.decide(&case.event, &config);
        let check = check(&decision, case.expect.as_ref());
        if check.starts_with("FAIL") || check.starts_with("ERROR") {
            failed += 1;
        }
        println!("| {} | {} | {} |", case.name, summary(&decision), check);
        first.push(decision);
    }
    if options.repeat > 1 {
        failed += soak(&plugin, &cases, &first, &config, options.repeat);
    }
    Ok(if failed == 0 {
        eprintln!("{} events: all as expected", cases.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} failed");
        ExitCode::from(1)
    })
}

/// Runs the events `repeat - 1` more times; a call whose decision differs
/// from the first run (an error, a memory limit, a changed answer) fails.
fn soak(plugin: &Plugin, cases: &[Case], first: &[Decision], config: &str, repeat: u32) -> usize {
    let mut nanos = Vec::with_capacity(cases.len() * repeat as usize);
    let mut failures: Vec<(String, usize)> = Vec::new();
    for _ in 1..repeat {
        for (case, expected) in cases.iter().zip(first) {
            let started = Instant::now();
            let decision = plugin.decide(&case.event, config);
            nanos.push(started.elapsed().as_nanos() as u64);
            if &decision != expected {
                let text = serde_json::to_string(&decision).unwrap_or_default();
                match failures.iter_mut().find(|(t, _)| *t == text) {
                    Some((_, n)) => *n += 1,
                    None => failures.push((text, 1)),
                }
            }
        }
    }
    nanos.sort_unstable();
    let quantile = |q: f64| nanos[((nanos.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    let mean = nanos.iter().sum::<u64>() as f64 / nanos.len() as f64 / 1e3;
    let failed: usize = failures.iter().map(|(_, n)| n).sum();
    eprintln!(
        "repeat: {} more calls, {failed} differed from the first run; per event (all roles) \
         mean {mean:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        nanos.len(),
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
    );
    for (text, n) in &failures {
        eprintln!("  {n}× {text}");
    }
    failed
}

/// `ok` when no expectation and no error; `pass`/`FAIL` against an expectation.
fn check(decision: &Decision, expect: Option<&serde_json::Map<String, Value>>) -> String {
    let Some(expect) = expect else {
        return if decision.has_error() {
            "ERROR".into()
        } else {
            "ok".into()
        };
    };
    let got = serde_json::to_value(decision).unwrap_or(Value::Null);
    for (role, wanted) in expect {
        let actual = got.get(role).unwrap_or(&Value::Null);
        if actual != wanted {
            return format!("FAIL: {role} expected {wanted}, got {actual}");
        }
    }
    "pass".into()
}

/// One cell per role: `keep`/`drop`, `unchanged`/`type → X`, tags and ids.
fn summary(decision: &Decision) -> String {
    let mut parts = Vec::new();
    if let Some(filter) = &decision.filter {
        parts.push(match filter {
            Ok(keep) if keep.keep => "filter: keep".to_string(),
            Ok(_) => "filter: drop".to_string(),
            Err(e) => format!("filter error: {e}"),
        });
    }
    if let Some(transform) = &decision.transform {
        parts.push(match transform {
            Ok(r) if r.event_type.is_none() && r.data.is_none() => "transform: unchanged".into(),
            Ok(r) => {
                let mut text = "transform:".to_string();
                if let Some(t) = &r.event_type {
                    text.push_str(&format!(" type → {t}"));
                }
                if let Some(d) = &r.data {
                    text.push_str(&format!(" data → {d}"));
                }
                text
            }
            Err(e) => format!("transform error: {e}"),
        });
    }
    if let Some(router) = &decision.router {
        parts.push(match router {
            Ok(r) if r.tags.is_empty() && r.subscriptions.is_empty() => "route: nowhere".into(),
            Ok(r) => format!(
                "route: tags {:?} subscriptions {:?}",
                r.tags, r.subscriptions
            ),
            Err(e) => format!("route error: {e}"),
        });
    }
    // Table cells are one line; a `|` in a plugin's text would split them.
    parts.join("; ").replace('|', "\\|").replace('\n', " ")
}

fn gather(options: &TestOptions) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for path in &options.events {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot read", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            for file in files {
                cases.push(event_file(&file)?);
            }
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            let file = std::fs::File::open(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line.with_context(|| format!("{}: cannot read", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let name = format!("{}:{}", path.display(), n + 1);
                let value: Value =
                    serde_json::from_str(&line).with_context(|| format!("{name}: not JSON"))?;
                cases.push(case(name, value)?);
            }
        } else {
            cases.push(event_file(path)?);
        }
    }
    if !options.catalog.is_empty() {
        let catalogs = Catalogs::load(&options.catalog)?;
        for catalog in &catalogs.catalogs {
            for event_type in &catalog.event_types {
                let Some(sample) = &event_type.sample else {
                    continue;
                };
                let value = serde_json::json!({"type": event_type.name, "data": sample});
                cases.push(case(
                    format!("{}: {}", catalog.name, event_type.name),
                    value,
                )?);
            }
        }
    }
    Ok(cases)
}

fn event_file(path: &Path) -> Result<Case> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    case(name, value)
}

fn case(name: String, mut value: Value) -> Result<Case> {
    let expect = match value.as_object_mut().and_then(|o| o.remove("expect")) {
        None => None,
        Some(Value::Object(expect)) => Some(expect),
        Some(_) => bail!("{name}: `expect` must be an object of roles"),
    };
    let event = hookhost_core::event_json::from_json(&value)
        .with_context(|| format!("{name}: not an event"))?;
    Ok(Case {
        name,
        event,
        expect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_is_taken_off_the_event_and_must_be_an_object() {
        let value =
            serde_json::json!({"type": "alarm", "data": {}, "expect": {"filter": {"keep": true}}});
        let case = case("a".into(), value).unwrap();
        assert_eq!(case.event.event_type, "alarm");
        assert_eq!(case.expect.unwrap()["filter"]["keep"], true);
        let bad = serde_json::json!({"type": "alarm", "expect": true});
        assert!(case_err(bad).contains("`expect` must be an object"));
    }

    fn case_err(value: Value) -> String {
        match case("b".into(), value) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }
}
