//! The receiving side: `hookhost receive`, `hookhost verify`,
//! `hookhost replay`, and the Python and Node receiver snippets in
//! `examples/receivers/`, all against real deliveries of the real binary.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hookhost_tests::{Running, hookhost_bin, output_within, workspace_root};

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;
const SEED: &str = "receiver-seed";
const SECRET: &str = "whsec_ZXhhbXBsZS1zaWduaW5nLWtleS0xMjM0NTY=";

/// A child process whose stdout is read line by line.
struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Lines {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` lines (in all) contain `part`; returns them.
    fn wait_for(&mut self, part: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let matching: Vec<String> = self
                .seen
                .iter()
                .filter(|l| l.contains(part))
                .cloned()
                .collect();
            if matching.len() >= n {
                return matching;
            }
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "{n} lines with {part:?} expected; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn samples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(workspace_root().join("examples/bikeep/events"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    files.sort();
    files
}

/// A server delivering every type at once to each of `urls`.
fn serve(root: &Path, urls: &[String]) -> (Running, std::net::SocketAddr) {
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    let mut text =
        "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n[plugins]\ndir = \"plugins\"\n"
            .to_string();
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "[[subscriptions]]\nid = \"r{i}\"\nurl = \"{url}\"\ntypes = [\"*\"]\nseed = \"{SEED}\"\n\
             secrets = [\"{SECRET}\"]\nintervals = {{ \"*\" = \"direct\" }}\n"
        ));
    }
    let file = root.join("hookhost.toml");
    std::fs::write(&file, text).unwrap();
    let mut server = Running::start(&["serve", "--config", file.to_str().unwrap()]);
    let api = server.api_addr(WAIT);
    (server, api)
}

fn replay(api: std::net::SocketAddr, files: &[PathBuf]) {
    let out = output_within(
        Command::new(hookhost_bin())
            .arg("replay")
            .arg("--url")
            .arg(format!("http://{api}/v1/events"))
            .args(files),
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" -> 202 ")).count(),
        files.len(),
        "{stdout}"
    );
}

fn verify(file: &Path, seed: &str) -> (bool, String) {
    let out = output_within(
        Command::new(hookhost_bin())
            .arg("verify")
            .arg(file)
            .args(["--seed", seed, "--secret", SECRET]),
        WAIT,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn hookhost_receive_prints_verified_deliveries_and_verify_checks_saved_ones() {
    let root = tempfile::tempdir().unwrap();
    let saved = root.path().join("saved");
    let port = free_port();
    let mut receiver = Lines::spawn(
        Command::new(hookhost_bin())
            .args(["receive", "--port", &port.to_string(), "--seed", SEED])
            .args(["--secret", SECRET, "--save"])
            .arg(&saved),
    );
    receiver.wait_for("listening on", 1);
    let (server, api) = serve(root.path(), &[format!("http://127.0.0.1:{port}/in")]);
    let files = samples();
    replay(api, &files);
    let verified = receiver.wait_for("seed hash OK, standard webhooks OK", files.len());
    assert_eq!(verified.len(), files.len());
    assert!(!receiver.seen.iter().any(|l| l.contains("FAILED")));
    assert!(server.terminate(WAIT).success());

    let first = saved.join("000001.json");
    let (ok, stdout) = verify(&first, SEED);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("seed hash: OK") && stdout.contains("standard webhooks: OK"),
        "{stdout}"
    );
    let (ok, stdout) = verify(&first, "not-the-seed");
    assert!(!ok && stdout.contains("seed hash: FAILED"), "{stdout}");
    // One changed byte in the body fails both checks.
    let mut delivery: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
    let body = delivery["body"]
        .as_str()
        .unwrap()
        .replacen("LAUNCHED", "LAUNCHEX", 1);
    assert_ne!(
        body,
        delivery["body"].as_str().unwrap(),
        "sample has location_status"
    );
    delivery["body"] = body.into();
    let tampered = root.path().join("tampered.json");
    std::fs::write(&tampered, delivery.to_string()).unwrap();
    let (ok, stdout) = verify(&tampered, SEED);
    assert!(
        !ok && stdout.contains("seed hash: FAILED") && stdout.contains("standard webhooks: FAILED"),
        "{stdout}"
    );
}

#[test]
fn python_and_node_receiver_snippets_verify_real_deliveries() {
    let root = tempfile::tempdir().unwrap();
    let receivers = workspace_root().join("examples/receivers");
    let (py_port, node_port) = (free_port(), free_port());
    let mut python = Lines::spawn(
        Command::new("python3")
            .arg(receivers.join("receiver.py"))
            .args([&py_port.to_string(), SEED, SECRET]),
    );
    let mut node = Lines::spawn(
        Command::new("node")
            .arg(receivers.join("receiver.js"))
            .args([&node_port.to_string(), SEED, SECRET]),
    );
    python.wait_for("listening on", 1);
    node.wait_for("listening on", 1);
    let (server, api) = serve(
        root.path(),
        &[
            format!("http://127.0.0.1:{py_port}/hooks"),
            format!("http://127.0.0.1:{node_port}/hooks"),
        ],
    );
    let files = samples();
    replay(api, &files);
    for receiver in [&mut python, &mut node] {
        let ok = receiver.wait_for("hash=OK signature=OK", files.len());
        assert_eq!(ok.len(), files.len());
        assert!(
            !receiver.seen.iter().any(|l| l.contains("FAIL")),
            "{:?}",
            receiver.seen
        );
    }
    assert!(server.terminate(WAIT).success());
}
