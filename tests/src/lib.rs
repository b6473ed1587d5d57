//! Helpers for hookhost's end-to-end tests: where the real compiled plugins
//! and the real `hookhost` binary are, sample events from the seeds, and a
//! running server read line by line.
//!
//! `./dev test` builds the plugins (wasm32-wasip2) and the binary before
//! running these tests.

pub mod http;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen "soon" before it
/// fails. Generous on purpose: CI shares 2 cores with other jobs, and a wait
/// that ends early costs nothing. Latency belongs in the benchmarks.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Writes `root/hookhost.toml` as every test starts from: loopback endpoints
/// allowed, an ephemeral port, data in `root/db`, plugins in `root/plugins`
/// (made here); then the extra `[delivery]` and `[server]` keys (lines
/// ending in a newline) and `body` (subscriptions, aggregation, ...); with
/// `HOOKHOST_TEST_STORE=postgres`, a `[store]` on the test PostgreSQL (unless
/// `body` has its own).
/// Returns the file's path.
pub fn write_config(root: &Path, delivery: &str, server: &str, body: &str) -> String {
    std::fs::create_dir_all(root.join("plugins")).expect("plugins folder");
    let file = root.join("hookhost.toml");
    let text = format!(
        "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n{delivery}\
         [server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n{server}\
         [plugins]\ndir = \"plugins\"\n{body}"
    );
    let text = if postgres::selected() && !body.contains("[store]") {
        format!("{text}\n{}", postgres::store_section(root))
    } else {
        text
    };
    std::fs::write(&file, text).expect("write config");
    file.to_str().expect("utf-8 path").to_string()
}

/// The store a config file names (sled files or a PostgreSQL schema), for
/// a test to look at once the server using it has stopped.
pub fn open_store(config: &str) -> std::sync::Arc<dyn hookhost_core::store::Store> {
    let config = hookhost_core::config::Config::load(Path::new(config)).expect("config");
    hookhost_core::node::open_store(&config).expect("open the store")
}

/// The delivery id (`webhook-id`) to `subscription` of an event whose id
/// hookhost made: such an id carries its own time, so the job id needs no
/// arrival time.
pub fn delivery_id(event_id: &str, subscription: &str) -> String {
    assert!(
        event_id.starts_with("evt_"),
        "{event_id:?} is not an id hookhost made"
    );
    hookhost_core::pipeline::job_id(event_id, 0, subscription)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The compiled component of plugin crate `crate_name` (e.g. `alarm-filter`).
pub fn built_plugin(crate_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `./dev test`, which builds the plugins first",
        path.display()
    );
    path
}

/// A JavaScript or Python plugin built by `./dev test` (`target/plugins/NAME.wasm`).
pub fn built_language_plugin(name: &str) -> PathBuf {
    let path = target_dir().join("plugins").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `./dev test`, which builds the JavaScript and Python plugins first",
        path.display()
    );
    path
}

/// A toolchain `./dev` installed into `target/toolchain/NAME` (npm or pip packages).
pub fn toolchain_dir(name: &str) -> PathBuf {
    let path = target_dir().join("toolchain").join(name);
    assert!(
        path.is_dir(),
        "{} is missing: run `./dev test`, which installs the pinned toolchains first",
        path.display()
    );
    path
}

/// The `hookhost` binary built in the same profile as this test (or tool).
pub fn hookhost_bin() -> PathBuf {
    // A test executable lives in target/<profile>/deps/, a tool (the soak)
    // in target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("target/<profile>").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("hookhost");
    assert!(
        bin.is_file(),
        "{} is missing: run `./dev test`",
        bin.display()
    );
    bin
}

/// A sample event from `examples/bikeep/events/` (copied from the seed).
pub fn bikeep_sample(name: &str) -> serde_json::Value {
    let path = workspace_root()
        .join("examples/bikeep/events")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An event like the seed's sample `name` (without its hash), at
/// `location`, with `fields` set in its data.
pub fn seed_event(name: &str, location: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut e = bikeep_sample(name);
    e.as_object_mut().expect("an object").remove("hash");
    let data = e["data"].as_object_mut().expect("data is an object");
    data.insert("location_id".into(), serde_json::json!(location));
    for (k, v) in fields.as_object().expect("fields are an object") {
        data.insert(k.clone(), v.clone());
    }
    e
}

/// Polls `check` until it holds or `limit` passes; returns how long it took
/// (`None`: it never held).
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Runs `cmd` to completion, killing it after `limit`: a hung child fails
/// the test instead of hanging the suite.
pub fn output_within(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A running `hookhost` process whose stderr (the log) is read line by line.
pub struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = std::process::Command::new(hookhost_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookhost");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a log line containing every one of `parts`.
    pub fn wait_for(&mut self, parts: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {parts:?} within {limit:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Lines logged during the next `quiet`.
    pub fn collect_for(&mut self, quiet: Duration) -> Vec<String> {
        let deadline = Instant::now() + quiet;
        let mut got = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(line.clone());
            got.push(line);
        }
        got
    }

    /// The address in the "HTTP API listening" log line.
    pub fn api_addr(&mut self, limit: Duration) -> std::net::SocketAddr {
        let line = self.wait_for(&["HTTP API listening"], limit);
        let addr = line
            .split("listen=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's peak resident set size (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        hookhost_core::process_stats::Process::Pid(self.child.id())
            .peak_rss_kib()
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "hookhost did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes what `receiver` got on `path` as the verifiers read it: one
/// `{"body", "headers"}` JSON object per line.
pub fn save_deliveries(receiver: &http::Receiver, path: &str, file: &Path) {
    let lines: Vec<String> = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| serde_json::json!({"body": r.body, "headers": r.headers}).to_string())
        .collect();
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

/// Runs one of `tests/verifiers/` (`PROGRAM SCRIPT SECRET FILE`) and
/// panics unless it checked at least one delivery and every one passed.
pub fn run_verifier(program: &str, script: &str, secret: &str, deliveries: &Path) {
    let script = workspace_root().join("tests/verifiers").join(script);
    let out = output_within(
        std::process::Command::new(program)
            .arg(&script)
            .arg(secret)
            .arg(deliveries),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} {}: {stdout}{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().count() > 0 && stdout.lines().all(|l| l.ends_with("OK")),
        "{stdout}"
    );
}

/// A server in this process (`hookhost_server::run` on its own runtime and
/// thread), for tests about what the server does rather than about the
/// process: no binary, no log parsing, the same code path as `serve`.
pub struct InProcess {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Starts a server on the config file `config` with the plugins of its
    /// plugins folder loaded (not watched).
    pub fn start(config: &str) -> InProcess {
        InProcess::start_with_clock(
            config,
            std::sync::Arc::new(hookhost_core::clock::SystemClock),
        )
    }

    /// [`InProcess::start`] with windows, outage timers and retention on
    /// `clock` (a `ManualClock` the test moves).
    pub fn start_with_clock(
        config: &str,
        clock: std::sync::Arc<dyn hookhost_core::clock::Clock>,
    ) -> InProcess {
        use hookhost_core::config::Config;
        use hookhost_core::node::Node;
        use hookhost_plugin_runtime::{Registry, Runtime};
        let config = Config::load(Path::new(config)).expect("config");
        let registry = Registry::new(Runtime::new(&config.plugins).expect("plugin runtime"));
        for loaded in registry
            .load_dir(&config.plugins.dir)
            .expect("plugins folder")
        {
            loaded.expect("plugin loads");
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let node = Node::open_with_clock(std::sync::Arc::new(config), registry, clock)?;
                let listener = tokio::net::TcpListener::bind(&node.config.server.listen).await?;
                let _ = ready.send(listener.local_addr()?);
                hookhost_server::run(listener, node.start()?, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let addr = match addr.recv_timeout(PATIENCE) {
            Ok(addr) => addr,
            Err(_) => panic!("in-process server did not start: {:?}", thread.join()),
        };
        InProcess {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Shuts the server down as SIGTERM would and waits for it: afterwards
    /// its data folder is free to open.
    pub fn stop(mut self) {
        self.shut_down().expect("clean shutdown");
    }

    fn shut_down(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
