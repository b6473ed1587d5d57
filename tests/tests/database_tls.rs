//! TLS to PostgreSQL (nodes on other machines than the database): a server
//! of the test's own on TCP with a certificate from a test authority
//! (made with `openssl`). hookhost connects over TLS when given the
//! authority, and refuses a server it cannot verify: an unknown authority,
//! a host name the certificate is not for.

use std::path::Path;
use std::process::Command;

use hookhost_tests::http::{Receiver, post_events};
use hookhost_tests::postgres::TestPostgres;
use hookhost_tests::{PATIENCE, Running, write_config};
use serde_json::json;

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An authority `<name>.pem` (key `<name>.key`) in `dir`.
fn authority(dir: &Path, name: &str) {
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// `server.pem` and `server.key` in `dir`: for `localhost` only, signed by
/// the authority `ca`.
fn server_certificate(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = DNS:localhost\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// A config delivering everything to `sink`, its store at `url`, checked
/// against the authority file `ca` if given.
fn config_on(root: &Path, sink: &str, url: &str, ca: Option<&Path>) -> String {
    let ca = ca.map_or(String::new(), |ca| {
        format!("tls_ca_file = {:?}\n", ca.to_str().unwrap())
    });
    write_config(
        root,
        "",
        "",
        &format!(
            "[[subscriptions]]\nid = \"sink\"\nurl = \"{sink}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             [store]\nbackend = \"postgres\"\nschema = \"tls_test\"\npool_size = 2\n\
             url = \"{url}\"\n{ca}"
        ),
    )
}

/// Starts `hookhost serve` on `config` expecting it to refuse; what it said.
fn refused(config: &str) -> String {
    let out = hookhost_tests::output_within(
        Command::new(hookhost_tests::hookhost_bin()).args(["serve", "--config", config]),
        PATIENCE,
    );
    assert!(!out.status.success(), "started on an unverified server");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_database_is_reached_over_tls_and_only_when_its_certificate_verifies() {
    let certs = tempfile::tempdir().unwrap();
    authority(certs.path(), "test-ca");
    authority(certs.path(), "other-ca");
    server_certificate(certs.path(), "test-ca");
    let read = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
    let (cert, key) = (read("server.pem"), read("server.key"));
    let pg = TestPostgres::private_on_tcp(
        &[("server.pem", &cert), ("server.key", &key)],
        &[
            "ssl=on",
            "ssl_cert_file=server.pem",
            "ssl_key_file=server.key",
        ],
    );
    let receiver = Receiver::start();
    let sink = receiver.url("sink");
    let url =
        |host: &str, tail: &str| format!("postgres://postgres@{host}:{}/postgres{tail}", pg.port());
    let (ours, others) = (
        certs.path().join("test-ca.pem"),
        certs.path().join("other-ca.pem"),
    );

    // sslmode=require alone: Mozilla's roots, which do not know the test
    // authority.
    let root = tempfile::tempdir().unwrap();
    let config = config_on(
        root.path(),
        &sink,
        &url("localhost", "?sslmode=require"),
        None,
    );
    let said = refused(&config);
    assert!(said.contains("UnknownIssuer"), "{said}");

    // Another authority's certificates.
    let root = tempfile::tempdir().unwrap();
    let config = config_on(root.path(), &sink, &url("localhost", ""), Some(&others));
    let said = refused(&config);
    assert!(said.contains("UnknownIssuer"), "{said}");

    // The right authority, but a host the certificate is not for.
    let root = tempfile::tempdir().unwrap();
    let config = config_on(root.path(), &sink, &url("127.0.0.1", ""), Some(&ours));
    let said = refused(&config);
    assert!(said.contains("certificate not valid for name"), "{said}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'tls_test'"),
        "0"
    );

    // The right authority and name: it serves, over TLS only.
    let root = tempfile::tempdir().unwrap();
    let config = config_on(root.path(), &sink, &url("localhost", ""), Some(&ours));
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    post_events(
        api,
        vec![
            json!({"id": "tls-1", "type": "report", "timestamp": "2025-01-01T00:00:00Z", "data": {"n": 1}}),
        ],
    );
    receiver.wait_count("sink", 1, PATIENCE);
    let connections = pg.psql(
        "SELECT count(*) || ' ' || bool_and(s.ssl) FROM pg_stat_ssl s \
         JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'hookhost'",
    );
    let (count, all_tls) = connections.split_once(' ').unwrap();
    assert!(count.parse::<u32>().unwrap() > 0, "{connections}");
    assert_eq!(
        all_tls, "true",
        "a hookhost connection without TLS: {connections}"
    );
    assert!(server.terminate(PATIENCE).success());
}
