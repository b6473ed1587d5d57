//! `hookhost plugin new` writes a ready plugin project in Rust, JavaScript or
//! Python; `hookhost plugin build` builds one into `NAME.wasm` and runs its
//! test events. The JavaScript and Python SDKs and the WIT are carried in
//! the binary, so a project needs nothing from this repository but (for
//! Rust) the SDK crate.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::plugin_test::{TestOptions, plugin_test};

const WIT: &str = include_str!("../../../../wit/plugin.wit");
const SDK_JS: &str = include_str!("../../../../plugins/sdk-js/hookhost.js");
const SDK_PYTHON: &str = include_str!("../../../../plugins/sdk-python/hookhost.py");
/// The toolchains `./dev test` builds the examples with (the pins live in
/// plugins/sdk-js/package.json and plugins/sdk-python/requirements.txt).
const COMPONENTIZE_QJS: &str = "0.4.5";
const COMPONENTIZE_PY: &str = "0.25.1";
/// The SDK crate in the checkout this binary was built from.
const SDK_RUST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/sdk");
/// What every project records about itself for `plugin build`.
const MANIFEST: &str = "hookhost-plugin.toml";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Filter,
    Transform,
    Router,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(clap::Args, Debug)]
pub struct NewOptions {
    /// The plugin's name: lowercase letters, digits and `-`; the file it
    /// builds is `NAME.wasm`, and subscriptions refer to it by NAME.
    pub name: String,
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create the project (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust only: the `hookhost-plugin` SDK crate (a path), when not the
    /// checkout this binary was built from.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    role: Role,
    language: Lang,
}

impl Role {
    fn world(self) -> &'static str {
        match self {
            Role::Filter => "filter-plugin",
            Role::Transform => "transform-plugin",
            Role::Router => "router-plugin",
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn plugin_new(options: &NewOptions) -> Result<ExitCode> {
    let name = &options.name;
    if !valid_name(name) {
        bail!(
            "plugin name {name:?}: use lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let dir = options.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{}: exists and is not empty", dir.display());
    }
    let manifest = Manifest {
        name: name.clone(),
        role: options.role,
        language: options.lang,
    };
    let mut files: Vec<(String, String)> = vec![
        (MANIFEST.into(), toml::to_string(&manifest)?),
        ("README.md".into(), readme(&manifest)),
        (".gitignore".into(), gitignore(options.lang).into()),
    ];
    files.extend(test_events(options.role));
    match options.lang {
        Lang::Rust => {
            let sdk = match &options.sdk {
                Some(path) => path.clone(),
                None => PathBuf::from(SDK_RUST),
            };
            let sdk = sdk.canonicalize().with_context(|| {
                format!(
                    "the Rust SDK crate is not at {}: pass --sdk PATH/TO/hookhost/plugins/sdk",
                    sdk.display()
                )
            })?;
            files.push(("Cargo.toml".into(), cargo_toml(name, &sdk)));
            files.push(("src/lib.rs".into(), rust_source(options.role)));
        }
        Lang::Js => {
            files.push(("package.json".into(), package_json(&manifest)));
            files.push((format!("{name}.js"), js_source(options.role)));
            files.push(("hookhost.js".into(), SDK_JS.into()));
            files.push(("wit/plugin.wit".into(), WIT.into()));
        }
        Lang::Python => {
            files.push(("app.py".into(), python_source(options.role)));
            files.push(("hookhost.py".into(), SDK_PYTHON.into()));
            files.push(("wit/plugin.wit".into(), WIT.into()));
            files.push((
                "requirements.txt".into(),
                format!("componentize-py=={COMPONENTIZE_PY}\n"),
            ));
        }
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    eprintln!(
        "created {} ({:?} {:?}): build and test it with `hookhost plugin build {}`",
        dir.display(),
        options.lang,
        options.role,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct BuildOptions {
    /// The project folder (made by `plugin new`; default: the current one).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// After building, copy NAME.wasm into this plugins folder (atomically:
    /// a running server's watcher never sees half a file).
    #[arg(long)]
    pub install: Option<PathBuf>,
}

/// Builds the project into `DIR/NAME.wasm`, runs `tests/events`, installs.
pub fn plugin_build(options: &BuildOptions) -> Result<ExitCode> {
    // Absolute: tools are run by path from inside the project.
    let dir = &options
        .dir
        .canonicalize()
        .with_context(|| format!("{}: no such project folder", options.dir.display()))?;
    let manifest_path = dir.join(MANIFEST);
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(&manifest_path).with_context(|| {
            format!(
                "{}: cannot read (made by `plugin new`)",
                manifest_path.display()
            )
        })?)
        .with_context(|| format!("{}: invalid", manifest_path.display()))?;
    let output = dir.join(format!("{}.wasm", manifest.name));
    let world = manifest.role.world();
    match manifest.language {
        Lang::Rust => {
            run(
                Command::new("rustup").args(["target", "add", "wasm32-wasip2"]),
                dir,
            )?;
            run(
                Command::new("cargo").args(["build", "--release", "--target", "wasm32-wasip2"]),
                dir,
            )?;
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("target"));
            let built = target
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", manifest.name.replace('-', "_")));
            std::fs::copy(&built, &output).with_context(|| {
                format!("{}: cannot copy to {}", built.display(), output.display())
            })?;
        }
        Lang::Js => {
            let tool = dir.join("node_modules/.bin/componentize-qjs");
            if !tool.exists() {
                run(
                    Command::new("npm").args(["install", "--no-audit", "--no-fund"]),
                    dir,
                )?;
            }
            run(
                Command::new(&tool).args([
                    "--wit",
                    "wit",
                    "--world",
                    world,
                    "--js",
                    &format!("{}.js", manifest.name),
                    "--stub-wasi",
                    "--sync",
                    "-o",
                    &format!("{}.wasm", manifest.name),
                ]),
                dir,
            )?;
        }
        Lang::Python => {
            let tool = dir.join(".venv/bin/componentize-py");
            if !tool.exists() {
                run(Command::new("python3").args(["-m", "venv", ".venv"]), dir)?;
                run(
                    Command::new(dir.join(".venv/bin/pip")).args([
                        "install",
                        "-q",
                        "--disable-pip-version-check",
                        "-r",
                        "requirements.txt",
                    ]),
                    dir,
                )?;
            }
            run(
                Command::new(&tool)
                    .args([
                        "-q",
                        "-d",
                        "wit",
                        "-w",
                        world,
                        "componentize",
                        "app",
                        "--stub-wasi",
                    ])
                    .args(["-o", &format!("{}.wasm", manifest.name)])
                    .env("PYTHONDONTWRITEBYTECODE", "1"),
                dir,
            )?;
        }
    }
    eprintln!("built {}", output.display());
    let events = dir.join("tests/events");
    if events.is_dir() {
        let tested = plugin_test(&TestOptions {
            file: output.clone(),
            events: vec![events],
            catalog: Vec::new(),
            config: None,
            repeat: 1,
            no_cache: false,
        })?;
        if tested != ExitCode::SUCCESS {
            return Ok(tested);
        }
    }
    if let Some(plugins) = &options.install {
        let file_name = format!("{}.wasm", manifest.name);
        let partial = plugins.join(format!(".{file_name}.tmp"));
        std::fs::copy(&output, &partial)
            .with_context(|| format!("{}: cannot write", partial.display()))?;
        std::fs::rename(&partial, plugins.join(&file_name))
            .with_context(|| format!("{}: cannot install", plugins.display()))?;
        eprintln!("installed {}", plugins.join(file_name).display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run(command: &mut Command, dir: &Path) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "/target\n/*.wasm\n",
        Lang::Js => "/node_modules\n/*.wasm\n",
        Lang::Python => "/.venv\n/*.wasm\n__pycache__/\n",
    }
}

/// Two events with what the template's logic decides about them: `plugin
/// build` runs them, so the project starts with a passing test.
fn test_events(role: Role) -> Vec<(String, String)> {
    let event = |severity: &str, expect: serde_json::Value| {
        let event = serde_json::json!({
            "type": "alarm",
            "data": {"severity": severity, "region": "eu", "location_id": "L-1"},
            "expect": expect,
        });
        serde_json::to_string_pretty(&event).unwrap_or_default() + "\n"
    };
    match role {
        Role::Filter => vec![
            (
                "tests/events/kept.json".into(),
                event("critical", serde_json::json!({"filter": {"keep": true}})),
            ),
            (
                "tests/events/dropped.json".into(),
                event("debug", serde_json::json!({"filter": {"keep": false}})),
            ),
        ],
        Role::Transform => vec![(
            "tests/events/labelled.json".into(),
            event(
                "critical",
                serde_json::json!({"transform": {"data": {"severity": "critical", "region": "eu", "location_id": "L-1", "label": "CRITICAL alarm at L-1"}}}),
            ),
        )],
        Role::Router => vec![(
            "tests/events/routed.json".into(),
            event(
                "critical",
                serde_json::json!({"router": {"subscriptions": [], "tags": ["region-eu"]}}),
            ),
        )],
    }
}

fn readme(manifest: &Manifest) -> String {
    let name = &manifest.name;
    let (build_needs, edit) = match manifest.language {
        Lang::Rust => (
            "Rust with `rustup` (the build adds the `wasm32-wasip2` target)",
            "src/lib.rs".to_string(),
        ),
        Lang::Js => (
            "Node.js and npm (the build installs componentize-qjs from package.json)",
            format!("{name}.js"),
        ),
        Lang::Python => (
            "Python 3 with venv (the build makes .venv with componentize-py from requirements.txt)",
            "app.py".to_string(),
        ),
    };
    let unit = if manifest.language == Lang::Rust {
        "\n`cargo test` runs the unit tests in `src/lib.rs` on your machine, no wasm involved.\n"
    } else {
        ""
    };
    format!(
        r#"# {name}

A hookhost {role:?} plugin in {lang:?}. The logic is in `{edit}`; what it
decides about the events in `tests/events/` is checked on every build
(each event's `"expect"` is the answer it must give).

## Build and test

Needs {build_needs}.

```sh
hookhost plugin build .            # writes {name}.wasm, then runs tests/events
hookhost plugin run {name}.wasm --event tests/events/<file>.json
hookhost plugin test {name}.wasm --catalog path/to/catalog.json   # every sample of a catalog
```
{unit}
## Use it

Copy `{name}.wasm` into the server's plugins folder (`plugins.dir`), or let
the build do it: `hookhost plugin build . --install /path/to/plugins`. The
server loads it within a second, no restart. Then name it in a
subscription:

```toml
[[subscriptions.plugins]]
plugin = "{name}"
config = {{ }}   # this plugin's config for that subscription
```

Plugins get no files, network or clock; memory and CPU per call are
limited (see hookhost's `wit/README.md`).
"#,
        role = manifest.role,
        lang = manifest.language,
    )
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
hookhost-plugin = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A small component compiles and loads faster.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# Its own project, even when created inside another workspace.
[workspace]
"#,
        sdk = sdk.display().to_string()
    )
}

fn rust_source(role: Role) -> String {
    match role {
        Role::Filter => r##"//! Drops alarms whose `data.severity` is one of `drop_severities`
//! (default: ["debug"]); other event types pass.

use hookhost_plugin::{Event, Result};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    drop_severities: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { drop_severities: vec!["debug".into()] }
    }
}

#[derive(Deserialize)]
struct Alarm<'a> {
    severity: Option<&'a str>,
}

fn keep(event: &Event, config: &Config) -> Result<bool> {
    let alarm: Alarm = event.data()?;
    Ok(!alarm.severity.is_some_and(|s| config.drop_severities.iter().any(|d| d == s)))
}

hookhost_plugin::filter!(keep, only: ["alarm"]);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_debug_alarms_only() {
        let alarm = |severity: &str| Event::new("alarm", json!({"severity": severity}));
        assert!(keep(&alarm("critical"), &Config::default()).unwrap());
        assert!(!keep(&alarm("debug"), &Config::default()).unwrap());
    }
}
"##
        .into(),
        Role::Transform => r##"//! Adds `data.label`: "<SEVERITY> <type> at <location_id>".

use hookhost_plugin::{Event, NoConfig, Result, Rewrite};
use serde_json::Value;

fn transform(event: &Event, _: &NoConfig) -> Result<Rewrite> {
    let mut data = event.data_object()?;
    let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
    let label = format!("{} {} at {}", text("severity").to_uppercase(), event.event_type, text("location_id"));
    data.insert("label".into(), Value::String(label));
    Rewrite::unchanged().with_data(&data)
}

hookhost_plugin::transform!(transform);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_the_event() {
        let event = Event::new("alarm", json!({"severity": "critical", "location_id": "L-1"}));
        let data = transform(&event, &NoConfig {}).unwrap().data.unwrap();
        assert!(data.contains(r#""label":"CRITICAL alarm at L-1""#), "{data}");
    }
}
"##
        .into(),
        Role::Router => r##"//! Routes every event with a `data.region` to the subscriptions tagged
//! `region-<region>`.

use hookhost_plugin::{Destinations, Event, NoConfig, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Located {
    region: Option<String>,
}

fn route(event: &Event, _: &NoConfig) -> Result<Destinations> {
    let located: Located = event.data()?;
    Ok(match located.region {
        Some(region) => Destinations::tags([format!("region-{region}")]),
        None => Destinations::none(),
    })
}

hookhost_plugin::router!(route);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_by_region() {
        let event = Event::new("alarm", json!({"region": "eu"}));
        assert_eq!(route(&event, &NoConfig {}).unwrap().tags, ["region-eu"]);
    }
}
"##
        .into(),
    }
}

fn package_json(manifest: &Manifest) -> String {
    let name = &manifest.name;
    let world = manifest.role.world();
    let value = serde_json::json!({
        "name": name,
        "private": true,
        "type": "module",
        "scripts": {
            "build": format!("componentize-qjs --wit wit --world {world} --js {name}.js --stub-wasi --sync -o {name}.wasm"),
        },
        "devDependencies": {"componentize-qjs": COMPONENTIZE_QJS},
    });
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

fn js_source(role: Role) -> String {
    match role {
        Role::Filter => r#"// Drops alarms whose `data.severity` is one of `drop_severities`
// (default: ["debug"]); other event types pass.
import * as hookhost from "./hookhost.js";

function keep(event, config) {
  const drop = config.drop_severities ?? ["debug"];
  if (!Array.isArray(drop)) throw new TypeError("config: drop_severities must be a list");
  return !drop.includes(event.data.severity);
}

export const filter = hookhost.filter(keep, { only: ["alarm"] });
"#
        .into(),
        Role::Transform => r#"// Adds `data.label`: "<SEVERITY> <type> at <location_id>".
import * as hookhost from "./hookhost.js";

function label(event, config) {
  const data = event.data;
  const severity = String(data.severity ?? "?").toUpperCase();
  return { data: { ...data, label: `${severity} ${event.type} at ${data.location_id ?? "?"}` } };
}

export const transform = hookhost.transform(label);
"#
        .into(),
        Role::Router => r#"// Routes every event with a `data.region` to the subscriptions tagged
// `region-<region>`.
import * as hookhost from "./hookhost.js";

function route(event, config) {
  const region = event.data.region;
  return region === undefined ? {} : { tags: [`region-${region}`] };
}

export const router = hookhost.router(route);
"#
        .into(),
    }
}

fn python_source(role: Role) -> String {
    match role {
        Role::Filter => r#""""Drops alarms whose `data.severity` is one of `drop_severities`
(default: ["debug"]); other event types pass."""

import hookhost


def keep(event, config):
    drop = config.get("drop_severities", ["debug"])
    if not isinstance(drop, list):
        raise TypeError("config: drop_severities must be a list")
    return event.data.get("severity") not in drop


Filter = hookhost.filter(keep, only=["alarm"])
"#
        .into(),
        Role::Transform => r#""""Adds `data.label`: "<SEVERITY> <type> at <location_id>"."""

import hookhost


def label(event, config):
    data = dict(event.data)
    severity = str(data.get("severity", "?")).upper()
    data["label"] = f"{severity} {event.type} at {data.get('location_id', '?')}"
    return {"data": data}


Transform = hookhost.transform(label)
"#
        .into(),
        Role::Router => r#""""Routes every event with a `data.region` to the subscriptions tagged
`region-<region>`."""

import hookhost


def route(event, config):
    region = event.data.get("region")
    return {} if region is None else {"tags": [f"region-{region}"]}


Router = hookhost.router(route)
"#
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_a_plugins_folder_and_cargo_accept() {
        assert!(valid_name("keep-critical2"));
        for bad in ["", "Keep", "2keep", "keep_it", "keep.it", "../x"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_template_event_carries_an_expectation() {
        for role in [Role::Filter, Role::Transform, Role::Router] {
            for (path, text) in test_events(role) {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(value["expect"].is_object(), "{path}");
            }
        }
    }
}
