//! A real PostgreSQL for the tests, started by the tests themselves: `initdb`
//! into a temp folder, `postgres` listening on a Unix socket in that folder
//! only (no TCP port to collide on), one per test process, stopped when the
//! process ends. Each test gets a schema of its own in it.
//!
//! As root (CI, containers) the server runs as the `postgres` OS user, which
//! `initdb` insists on; the binaries come from PATH or
//! `/usr/lib/postgresql/<version>/bin` (`./dev test` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The environment variable that runs the end-to-end tests on PostgreSQL.
pub const BACKEND_VAR: &str = "HOOKHOST_TEST_STORE";

/// Whether this test run puts hookhost's store on PostgreSQL
/// (`HOOKHOST_TEST_STORE=postgres`).
pub fn selected() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|v| v == "postgres")
}

pub struct TestPostgres {
    socket_dir: PathBuf,
    port: u16,
    /// Also on TCP at 127.0.0.1:`port` (only the socket otherwise).
    tcp: bool,
    /// More `-c name=value` settings.
    settings: Vec<String>,
}

const PORT: u16 = 5432;

impl TestPostgres {
    /// The connection string for `tokio-postgres` (key=value form).
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// The `[store]` section for a test folder on this server.
    pub fn store_section(&self, root: &Path) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\npool_size = 4\n",
            self.url(),
            schema_for(root)
        )
    }

    /// Settings for a store of two connections in `schema` on this server
    /// (tests that open the store themselves).
    pub fn settings(&self, schema: String) -> hookhost_core::store::postgres::PgSettings {
        hookhost_core::store::postgres::PgSettings {
            url: self.url(),
            schema,
            pool_size: 2,
            tls_ca_file: None,
        }
    }

    /// Runs one SQL command with `psql` (for tests that look at tables).
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(binary("psql"))
            .args(["-h", &self.socket_dir.to_string_lossy(), "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The schema a test folder's store lives in: the same for the same folder
/// (a restarted server finds its data), distinct across folders.
pub fn schema_for(root: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(root.to_string_lossy().as_bytes());
    format!("t_{}", hex::encode(&digest[..8]))
}

/// The `[store]` section for a test folder, on the shared server.
pub fn store_section(root: &Path) -> String {
    shared().store_section(root)
}

/// This process's PostgreSQL, started on first use.
pub fn shared() -> &'static TestPostgres {
    static SHARED: OnceLock<TestPostgres> = OnceLock::new();
    SHARED.get_or_init(start)
}

fn binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.flatten()
                .map(|v| v.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    on_path
        .into_iter()
        .chain(debian.into_iter().rev())
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install postgresql (./dev test does)"))
}

/// The `postgres` OS user's ids when running as root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root needs a `postgres` OS user (the postgresql package makes it)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((
        fields[2].parse().expect("uid"),
        fields[3].parse().expect("gid"),
    ))
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Folders of earlier test processes whose server is gone.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(rest) = name.strip_prefix("hookhost-test-pg-")
            && let Ok(pid) = rest.split('-').next().unwrap_or_default().parse::<i32>()
            // SAFETY: signal 0 only asks whether the process exists.
            && unsafe { libc::kill(pid, 0) } != 0
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start() -> TestPostgres {
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let server = TestPostgres::init(tmp.join(format!("hookhost-test-pg-{}", std::process::id())));
    server.launch();
    server
}

impl TestPostgres {
    /// A server of the test's own, for tests that stop and start it; stopped
    /// and removed when dropped.
    pub fn private() -> PrivatePostgres {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hookhost-test-pg-{}-{n}", std::process::id()));
        let server = TestPostgres::init(dir);
        server.launch();
        PrivatePostgres(server)
    }

    /// A private server listening on TCP too, at 127.0.0.1 on a free port
    /// (the TLS tests): `files` (name, contents) are put in its data
    /// folder, the server user's, readable by it alone; `settings` are
    /// `name=value` for `postgres -c`.
    pub fn private_on_tcp(files: &[(&str, &[u8])], settings: &[&str]) -> PrivatePostgres {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hookhost-test-pg-{}-tcp{n}", std::process::id()));
        let mut server = TestPostgres::init(dir);
        for (name, contents) in files {
            let path = server.data().join(name);
            std::fs::write(&path, contents).expect("a file for postgres");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = server_user() {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        server.port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        server.tcp = true;
        server.settings = settings.iter().map(|s| s.to_string()).collect();
        server.launch();
        PrivatePostgres(server)
    }

    /// Its TCP port ([`TestPostgres::private_on_tcp`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.socket_dir.join("data")
    }

    fn init(dir: PathBuf) -> TestPostgres {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("postgres folder");
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown postgres folder");
        }
        let server = TestPostgres {
            socket_dir: dir,
            port: PORT,
            tcp: false,
            settings: Vec::new(),
        };
        let init = as_server_user(&mut Command::new(binary("initdb")))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(server.data())
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        server
    }

    /// Starts the server and waits until it takes connections.
    pub fn launch(&self) {
        // The server is the child of a thread that lives as long as it does:
        // the parent-death signal fires when the thread that spawned the
        // child ends, and it must fire only when the whole test process does.
        let (started, spawned) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let (dir, data) = (self.socket_dir.clone(), self.data());
        let port = self.port.to_string();
        let listen = format!(
            "listen_addresses={}",
            if self.tcp { "127.0.0.1" } else { "" }
        );
        let settings: Vec<String> = self
            .settings
            .iter()
            .flat_map(|s| ["-c".to_string(), s.clone()])
            .collect();
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                use std::os::unix::process::CommandExt;
                let mut cmd = Command::new(binary("postgres"));
                as_server_user(&mut cmd)
                    .arg("-D")
                    .arg(&data)
                    .arg("-k")
                    .arg(&dir)
                    .args(["-p", &port])
                    .args(["-c", &listen, "-c", "max_connections=300"])
                    .args(["-c", "shared_buffers=128MB"])
                    .args(&settings)
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(dir.join("server.log"))
                            .map(Stdio::from)
                            .unwrap_or_else(|_| Stdio::null()),
                    );
                // SAFETY: prctl is async-signal-safe; runs in the child after
                // it took the server user's ids (which would clear the setting).
                unsafe {
                    cmd.pre_exec(|| {
                        // SIGQUIT: the postmaster's immediate shutdown.
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                        Ok(())
                    });
                }
                match cmd.spawn() {
                    Ok(mut child) => {
                        let _ = started.send(Ok(()));
                        let _ = child.wait();
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
            })
            .expect("spawn the postgres thread");
        spawned
            .recv()
            .expect("postgres thread")
            .expect("start postgres");
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        let pid_file = self.data().join("postmaster.pid");
        let ready = crate::wait_until(crate::PATIENCE, || {
            socket.exists()
                && std::fs::read_to_string(&pid_file)
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == "ready"))
        });
        assert!(
            ready.is_some(),
            "postgres did not start: {}",
            std::fs::read_to_string(self.socket_dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits.
    pub fn stop(&self) {
        let out = as_server_user(&mut Command::new(binary("pg_ctl")))
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(self.data())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// [`TestPostgres::private`]: stopped and removed when dropped.
pub struct PrivatePostgres(TestPostgres);

impl std::ops::Deref for PrivatePostgres {
    type Target = TestPostgres;
    fn deref(&self) -> &TestPostgres {
        &self.0
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_server_user(&mut Command::new(binary("pg_ctl")))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.0.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.0.socket_dir);
    }
}
