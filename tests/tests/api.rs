//! The HTTP API's access rules and ingest's idempotency, on the real binary.

use std::path::Path;
use std::time::Duration;

use hookhost_tests::http::{Answer, Receiver, metrics, request, request_with_headers};
use hookhost_tests::{Running, built_plugin, wait_until};
use serde_json::{Value, json};

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;
const ADMIN: &str = "Authorization: Bearer adm1n-t0ken";
const INGEST: &str = "Authorization: Bearer 1ngest-t0ken";

fn write_config(root: &Path, url: &str) -> String {
    hookhost_tests::write_config(
        root,
        "",
        "admin_token = \"adm1n-t0ken\"\ningest_token = \"1ngest-t0ken\"\n",
        &format!(
            "[[subscriptions]]\nid = \"sink\"\nurl = \"{url}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n"
        ),
    )
}

fn error_text(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[test]
fn ingest_and_admin_need_their_own_tokens() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &receiver.url("sink"));
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let event = br#"{"type": "report", "data": {}}"#;

    let (status, body) = request(api, "POST", "/v1/events", &[], event);
    assert_eq!(status, 401, "{body}");
    assert!(error_text(&body).contains("ingest token"), "{body}");
    let (status, body) = request(api, "POST", "/v1/events", &[ADMIN], event);
    assert_eq!(status, 403, "{body}");
    assert!(
        error_text(&body).contains("this is the admin token"),
        "{body}"
    );
    let (status, body) = request(
        api,
        "POST",
        "/v1/events",
        &["Authorization: Bearer guess"],
        event,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_text(&body), "wrong token");
    let (status, body) = request(api, "POST", "/v1/events", &[INGEST], event);
    assert_eq!(status, 202, "{body}");

    let (status, body) = request(api, "GET", "/v1/plugins", &[INGEST], b"");
    assert_eq!(status, 403, "{body}");
    assert!(
        error_text(&body).contains("this is the ingest token"),
        "{body}"
    );
    let (status, body) = request(api, "GET", "/v1/plugins", &[], b"");
    assert_eq!(status, 401, "{body}");
    let (status, _) = request(api, "GET", "/v1/plugins", &[ADMIN], b"");
    assert_eq!(status, 200);
    // Only the one authorized event was delivered.
    receiver.wait_count("sink", 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.count("sink"), 1);
    // Refusals are logged without the tokens that were tried or expected.
    server.collect_for(Duration::from_millis(200));
    assert!(!server.log.is_empty());
    for secret in ["adm1n-t0ken", "1ngest-t0ken", "guess"] {
        assert!(
            !server.log.iter().any(|l| l.contains(secret)),
            "{secret} in the log"
        );
    }
    assert!(server.terminate(WAIT).success());
}

#[test]
fn an_idempotency_key_is_accepted_once_and_answered_alike_even_after_a_crash() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &receiver.url("sink"));
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    // No event ids: without the key, a retry would create new events.
    let batch = json!([
        {"type": "payment_received", "data": {"amount": 1000}},
        {"type": "payment_received", "data": {"amount": 2000}}
    ])
    .to_string();
    let key = "Idempotency-Key: order-42-payments";
    let (status, first_headers, first) =
        request_with_headers(api, "POST", "/v1/events", &[INGEST, key], batch.as_bytes());
    assert_eq!(status, 202, "{first}");
    assert!(!first_headers.contains_key("idempotent-replayed"));
    let (status, headers, again) =
        request_with_headers(api, "POST", "/v1/events", &[INGEST, key], batch.as_bytes());
    assert_eq!(status, 202, "{again}");
    assert_eq!(again, first, "the original answer, with the original ids");
    assert_eq!(
        headers.get("idempotent-replayed").map(String::as_str),
        Some("true")
    );
    receiver.wait_count("sink", 2, WAIT);

    // The key is durable with the events: a kill -9 and restart change nothing.
    server.kill9();
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (status, again) = request(api, "POST", "/v1/events", &[INGEST, key], batch.as_bytes());
    assert_eq!(status, 202, "{again}");
    assert_eq!(again, first);
    // Another key is another request.
    let (status, other) = request(
        api,
        "POST",
        "/v1/events",
        &[INGEST, "Idempotency-Key: order-43"],
        batch.as_bytes(),
    );
    assert_eq!(status, 202, "{other}");
    assert_ne!(other["ids"], first["ids"]);
    let (status, body) = request(
        api,
        "POST",
        "/v1/events",
        &[INGEST, "Idempotency-Key: "],
        batch.as_bytes(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("Idempotency-Key"), "{body}");

    receiver.wait_count("sink", 4, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    // Two requests' events, each delivered (at least once: the kill may
    // repeat a delivery, under the same webhook-id).
    let deliveries: std::collections::BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(deliveries.len(), 4, "{deliveries:?}");
    assert!(server.terminate(WAIT).success());
}

/// `name{labels} value` lines of a Prometheus text page.
#[test]
fn readyz_names_missing_plugins_and_metrics_count_what_happened() {
    let receiver = Receiver::start();
    receiver.script("gone", Answer::Status(404));
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n\
             [plugins]\ndir = \"plugins\"\n[retention]\ncount_every = \"100ms\"\n\
             [[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             [[subscriptions.plugins]]\nplugin = \"alarm-filter\"\n\
             [[subscriptions]]\nid = \"gone\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n",
            receiver.url("sink"),
            receiver.url("gone")
        ),
    )
    .unwrap();
    let mut server = Running::start(&["serve", "--config", config.to_str().unwrap()]);
    let api = server.api_addr(WAIT);

    let (status, body) = request(api, "GET", "/readyz", &[], b"");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains("\"alarm-filter\""),
        "{body}"
    );
    std::fs::copy(
        built_plugin("alarm-filter"),
        plugins.join("alarm-filter.wasm"),
    )
    .unwrap();
    let ready = wait_until(WAIT, || request(api, "GET", "/readyz", &[], b"").0 == 200);
    assert!(ready.is_some(), "not ready after the plugin was installed");

    let (status, _) = request(api, "POST", "/v1/events", &[], b"{not json");
    assert_eq!(status, 400);
    let (status, body) = request(
        api,
        "POST",
        "/v1/events",
        &[],
        br#"[{"type": "report", "data": {}}, {"type": "report", "data": {}}]"#,
    );
    assert_eq!(status, 202, "{body}");
    receiver.wait_count("sink", 2, WAIT);
    receiver.wait_count("gone", 2, WAIT);

    let m = metrics(api);
    // The deliverer records outcomes just after the receiver answers, and
    // a delivery leaves the queue once its state is stored.
    let settled = wait_until(WAIT, || {
        let m = metrics(api);
        m["hookhost_deliveries_total{outcome=\"delivered\"}"] == 2.0
            && m["hookhost_deliveries_total{outcome=\"dead\"}"] == 2.0
            && m["hookhost_delivery_queue_depth"] == 0.0
    });
    assert!(settled.is_some(), "{m:#?}");
    let m = metrics(api);
    assert_eq!(m["hookhost_events_ingested_total"], 2.0);
    assert_eq!(m["hookhost_ingest_refused_total"], 1.0);
    assert_eq!(m["hookhost_attempts_total{outcome=\"ok\"}"], 2.0);
    assert_eq!(m["hookhost_attempts_total{outcome=\"refused\"}"], 2.0);
    assert_eq!(m["hookhost_attempts_total{outcome=\"failed\"}"], 0.0);
    assert_eq!(m["hookhost_attempt_duration_seconds_count"], 4.0);
    assert_eq!(
        m["hookhost_attempt_duration_seconds_bucket{le=\"+Inf\"}"],
        4.0
    );
    assert!(m["hookhost_attempt_duration_seconds_sum"] > 0.0);
    assert_eq!(
        m["hookhost_plugin_calls_total{plugin=\"alarm-filter\"}"],
        2.0
    );
    assert_eq!(
        m["hookhost_plugin_errors_total{plugin=\"alarm-filter\"}"],
        0.0
    );
    assert_eq!(m["hookhost_plugin_reloads_total{result=\"loaded\"}"], 1.0);
    assert_eq!(m["hookhost_delivery_queue_depth"], 0.0);
    // The standard process gauges describe the server's process, not ours.
    let server_rss = (server.peak_rss_kib() * 1024) as f64;
    let rss = m["process_resident_memory_bytes"];
    assert!(rss > 1e6 && rss <= server_rss, "{rss} of peak {server_rss}");
    assert!(m["process_open_fds"] >= 3.0, "{m:#?}");
    assert!(m["process_cpu_seconds_total"] > 0.0, "{m:#?}");
    // What is stored, counted every 100 ms here: 4 events (the 2 ingested
    // and the 2 `hookhost.delivery.exhausted` the dead letters emitted,
    // which no subscription takes), 4 deliveries (2 dead letters), none
    // pending.
    let stored = |m: &std::collections::BTreeMap<String, f64>| {
        ["events", "deliveries", "pending", "dead_letters"].map(|k| {
            m.get(&format!("hookhost_stored_records{{kind=\"{k}\"}}"))
                .copied()
        })
    };
    let counted = wait_until(WAIT, || {
        let m = metrics(api);
        stored(&m) == [Some(4.0), Some(4.0), Some(0.0), Some(2.0)]
            && m.get("hookhost_store_bytes").is_some_and(|b| *b > 0.0)
    });
    assert!(counted.is_some(), "{:?}", stored(&metrics(api)));
    assert!(server.terminate(WAIT).success());

    // sled keeps the totals with its writes and saves them at a clean stop,
    // and then shows them at once (here with the next count an hour away);
    // after a kill they are counted again, one `count_every` after start.
    // Either way the same figures.
    let expected = [Some(4.0), Some(4.0), Some(0.0), Some(2.0)];
    let every_100ms = std::fs::read_to_string(&config).unwrap();
    let hourly = every_100ms.replace("count_every = \"100ms\"", "count_every = \"1h\"");
    assert_ne!(hourly, every_100ms);
    for (how, last) in [("taken back", false), ("not closed cleanly", true)] {
        std::fs::write(&config, if last { &every_100ms } else { &hourly }).unwrap();
        let mut server = Running::start(&["serve", "--config", config.to_str().unwrap()]);
        server.wait_for(&[how], WAIT);
        let api = server.api_addr(WAIT);
        let counted = wait_until(WAIT, || stored(&metrics(api)) == expected);
        assert!(counted.is_some(), "{how}: {:?}", stored(&metrics(api)));
        if last {
            assert!(server.terminate(WAIT).success());
        } else {
            server.kill9();
        }
    }
}

#[test]
fn endpoints_on_internal_networks_are_refused_unless_allowed() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("plugins")).unwrap();
    let config = root.path().join("hookhost.toml");
    let start = |allow: &str, url: &str| {
        std::fs::write(
            &config,
            format!(
                "{allow}[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n[plugins]\ndir = \"plugins\"\n\
                 [[subscriptions]]\nid = \"internal\"\nurl = \"{url}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n"
            ),
        )
        .unwrap();
        hookhost_tests::output_within(
            std::process::Command::new(hookhost_tests::hookhost_bin()).args([
                "serve",
                "--config",
                config.to_str().unwrap(),
            ]),
            Duration::from_secs(5),
        )
    };
    for (url, why) in [
        ("http://127.0.0.1:9000/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://10.0.0.7/x", "private"),
        ("http://[::1]:9000/x", "loopback"),
        ("http://[::127.0.0.1]/x", "loopback"),
        ("http://localhost:9000/x", "loopback"),
    ] {
        let out = start("", url);
        assert_eq!(out.status.code(), Some(1), "{url} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("hookhost.toml")
                && stderr.contains("subscriptions[0] (id \"internal\").url")
                && stderr.contains(why)
                && stderr.contains("delivery.allowed_networks"),
            "{url}: {stderr}"
        );
    }
    // Listed, the same address is fine (the server starts; stop it).
    std::fs::write(
        &config,
        "[delivery]\nallowed_networks = [\"10.0.0.0/8\"]\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n\
         [plugins]\ndir = \"plugins\"\n[[subscriptions]]\nid = \"internal\"\nurl = \"http://10.0.0.7/x\"\n\
         types = [\"*\"]\nenvelope = \"plain\"\n",
    )
    .unwrap();
    let mut server = Running::start(&["serve", "--config", config.to_str().unwrap()]);
    server.api_addr(WAIT);
    assert!(server.terminate(WAIT).success());
}

#[test]
fn deliveries_are_listed_resent_and_recovered() {
    let receiver = Receiver::start();
    receiver.script("down", Answer::Status(503));
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("plugins")).unwrap();
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n\
             [server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\nadmin_token = \"adm1n-t0ken\"\n\
             [plugins]\ndir = \"plugins\"\n\
             [[subscriptions]]\nid = \"ok\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             [[subscriptions]]\nid = \"down\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             [subscriptions.retry]\nmax_retries = 0\n",
            receiver.url("ok"),
            receiver.url("down")
        ),
    )
    .unwrap();
    let mut server = Running::start(&["serve", "--config", config.to_str().unwrap()]);
    let api = server.api_addr(WAIT);
    let before = hookhost_core::clock::rfc3339_seconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 2000,
    );
    let (status, body) = request(
        api,
        "POST",
        "/v1/events",
        &[],
        br#"[{"type": "report", "data": {"n": 1}}, {"type": "report", "data": {"n": 2}},
            {"type": "invoice.paid", "data": {"amount": 10}}]"#,
    );
    assert_eq!(status, 202, "{body}");
    receiver.wait_count("ok", 3, WAIT);
    receiver.wait_count("down", 3, WAIT);
    let admin = |method: &str, path: &str, body: &[u8]| request(api, method, path, &[ADMIN], body);
    let dead_count = || {
        admin("GET", "/v1/dead-letters", b"").1["dead_letters"]
            .as_array()
            .unwrap()
            .len()
    };
    assert!(wait_until(WAIT, || dead_count() == 3).is_some());

    let (status, body) = request(api, "GET", "/v1/deliveries", &[], b"");
    assert_eq!(status, 401, "{body}");
    let (status, dead) = admin("GET", "/v1/deliveries?status=dead", b"");
    assert_eq!(status, 200, "{dead}");
    assert_eq!(dead["total"], 3);
    for d in dead["deliveries"].as_array().unwrap() {
        assert_eq!(d["subscription_id"], "down");
        assert_eq!(d["attempts"][0]["status"], 503);
        assert!(d["error"].as_str().unwrap().contains("503"), "{d}");
    }
    let (_, paid) = admin(
        "GET",
        "/v1/deliveries?subscription=ok&type=invoice.paid",
        b"",
    );
    assert_eq!(paid["total"], 1, "{paid}");
    let paid = &paid["deliveries"][0];
    assert_eq!(paid["status"], "delivered");
    assert_eq!(paid["data"]["amount"], 10, "data is shown as JSON");
    let (_, none) = admin("GET", &format!("/v1/deliveries?until={before}"), b"");
    assert_eq!(none["total"], 0, "{none}");
    let (status, body) = admin("GET", "/v1/deliveries?status=lost", b"");
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("status"), "{body}");
    let (status, body) = admin("GET", "/v1/deliveries?since=yesterday", b"");
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("since"), "{body}");

    // Re-send one delivered delivery: the same webhook-id arrives again.
    let id = paid["id"].as_str().unwrap();
    let (status, body) = admin("POST", &format!("/v1/deliveries/{id}/resend"), b"");
    assert_eq!(status, 202, "{body}");
    receiver.wait_count("ok", 4, WAIT);
    let again = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "ok" && r.headers["webhook-id"] == id)
        .count();
    assert_eq!(again, 2);
    let (status, body) = admin("POST", "/v1/deliveries/msg_nope/resend", b"");
    assert_eq!(status, 404, "{body}");

    // The endpoint is back: recover everything that died since `before`.
    receiver.script("down", Answer::Status(200));
    let (status, body) = admin("POST", "/v1/subscriptions/nope/recover", b"{}");
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin("POST", "/v1/subscriptions/down/recover", b"{\"since\": 5}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin(
        "POST",
        "/v1/subscriptions/down/recover",
        json!({ "since": before }).to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["resent"], 3, "{body}");
    receiver.wait_count("down", 6, WAIT);
    assert!(wait_until(WAIT, || dead_count() == 0).is_some());
    // The receiver may have an answer before its state is stored (the
    // state writer runs after the attempt): wait for the states.
    let delivered = || {
        admin(
            "GET",
            "/v1/deliveries?subscription=down&status=delivered",
            b"",
        )
        .1
    };
    assert!(
        wait_until(WAIT, || delivered()["total"] == 3).is_some(),
        "{}",
        delivered()
    );
    assert!(server.terminate(WAIT).success());
}

#[test]
fn subscriptions_are_managed_over_the_api_and_survive_restarts() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        built_plugin("alarm-filter"),
        plugins.join("alarm-filter.wasm"),
    )
    .unwrap();
    let catalog = hookhost_tests::workspace_root().join("examples/bikeep/catalog.json");
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n\
             [server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\nadmin_token = \"adm1n-t0ken\"\n\
             [plugins]\ndir = \"plugins\"\n[catalog]\nfiles = [\"{}\"]\n\
             [[subscriptions]]\nid = \"from-file\"\nurl = \"{}\"\ntypes = [\"report\"]\ntier = \"partner\"\n\
             seed = \"file-seed\"\n",
            catalog.display(),
            receiver.url("file")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut server = Running::start(&["serve", "--config", &config]);
    let mut api = server.api_addr(WAIT);
    let admin =
        |api, method: &str, path: &str, body: &[u8]| request(api, method, path, &[ADMIN], body);

    let (status, _) = request(api, "GET", "/v1/subscriptions", &[], b"");
    assert_eq!(status, 401);
    let (status, list) = admin(api, "GET", "/v1/subscriptions", b"");
    assert_eq!(status, 200, "{list}");
    let file = &list["subscriptions"][0];
    assert_eq!(file["id"], "from-file");
    assert_eq!(file["source"], "config");
    assert_eq!(file["seed_set"], true);
    assert!(
        file.get("seed").is_none(),
        "the seed is never shown: {file}"
    );

    let created = json!({
        "id": "api-sub",
        "url": receiver.url("api"),
        "types": ["alarm", "connection"],
        "seed": "api-seed",
        "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "intervals": {"*": "direct"},
        "plugins": [{"plugin": "alarm-filter", "config": {"reasons": ["wire_cut"]}}]
    });
    let (status, body) = admin(
        api,
        "POST",
        "/v1/subscriptions",
        created.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["source"], "api");
    assert_eq!(body["secrets_count"], 1);
    assert!(
        body.get("secrets").is_none() && body.get("seed").is_none(),
        "{body}"
    );
    assert_eq!(body["plugins"][0]["config"]["reasons"][0], "wire_cut");

    // Refusals, each naming the problem.
    let (status, body) = admin(
        api,
        "POST",
        "/v1/subscriptions",
        created.to_string().as_bytes(),
    );
    assert_eq!(status, 409, "{body}");
    let mut clash = created.clone();
    clash["id"] = json!("from-file");
    let (status, _) = admin(
        api,
        "POST",
        "/v1/subscriptions",
        clash.to_string().as_bytes(),
    );
    assert_eq!(status, 409);
    let mut partner = created.clone();
    partner["id"] = json!("wants-status");
    partner["types"] = json!(["status"]);
    let (status, body) = admin(
        api,
        "POST",
        "/v1/subscriptions",
        partner.to_string().as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        error_text(&body).contains("\"status\" is a partner type"),
        "{body}"
    );
    let mut internal = created.clone();
    internal["id"] = json!("internal");
    internal["url"] = json!("http://169.254.169.254/latest");
    let (status, body) = admin(
        api,
        "POST",
        "/v1/subscriptions",
        internal.to_string().as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(error_text(&body).contains("allowed_networks"), "{body}");
    let (status, body) = admin(
        api,
        "POST",
        "/v1/subscriptions",
        br#"{"id": "x", "colour": 1}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("colour"), "{body}");
    let (status, _) = admin(
        api,
        "PUT",
        "/v1/subscriptions/from-file",
        created.to_string().as_bytes(),
    );
    assert_eq!(status, 409, "config-file subscriptions are read-only");
    let (status, _) = admin(api, "DELETE", "/v1/subscriptions/from-file", b"");
    assert_eq!(status, 409);

    // It receives what its plugin chain lets through.
    let post = |api, sample: &str| {
        let event = hookhost_tests::bikeep_sample(sample).to_string();
        let (status, body) = request(api, "POST", "/v1/events", &[], event.as_bytes());
        assert_eq!(status, 202, "{body}");
    };
    post(api, "alarm-case-open");
    post(api, "alarm-wire-cut");
    receiver.wait_count("api", 1, WAIT);
    // Disabled, it receives nothing new; enabled again, it does.
    let (status, body) = admin(api, "POST", "/v1/subscriptions/api-sub/disable", b"");
    assert_eq!(
        (status, body["enabled"].clone()),
        (200, json!(false)),
        "{body}"
    );
    post(api, "alarm-wire-cut");
    let (status, _) = admin(api, "POST", "/v1/subscriptions/api-sub/enable", b"");
    assert_eq!(status, 200);
    post(api, "connection");
    receiver.wait_count("api", 2, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let types: Vec<String> = receiver
        .bodies("api")
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["alarm", "connection"], "nothing while disabled");

    // Replaced, then still there after a restart.
    let mut replaced = created.clone();
    replaced["types"] = json!(["connection"]);
    let (status, body) = admin(
        api,
        "PUT",
        "/v1/subscriptions/api-sub",
        replaced.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(server.terminate(WAIT).success());
    let mut server = Running::start(&["serve", "--config", &config]);
    api = server.api_addr(WAIT);
    let (status, body) = admin(api, "GET", "/v1/subscriptions/api-sub", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["types"], json!(["connection"]));
    post(api, "alarm-wire-cut");
    post(api, "connection");
    receiver.wait_count("api", 3, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.count("api"), 3, "the alarm no longer matches");

    let (status, _) = admin(api, "DELETE", "/v1/subscriptions/api-sub", b"");
    assert_eq!(status, 204);
    let (status, _) = admin(api, "GET", "/v1/subscriptions/api-sub", b"");
    assert_eq!(status, 404);
    assert!(server.terminate(WAIT).success());
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (_, list) = admin(api, "GET", "/v1/subscriptions", b"");
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1, "{list}");
    assert!(server.terminate(WAIT).success());
}

#[test]
fn openapi_lists_every_route_and_each_listed_route_is_served() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &receiver.url("sink"));
    let server = hookhost_tests::InProcess::start(&config);
    let api = server.addr;
    let (status, doc) = request(api, "GET", "/openapi.json", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    // Everything the README documents is there.
    let listed: std::collections::BTreeSet<String> = operations
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    for expected in [
        "POST /v1/events",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
        "GET /v1/plugins",
        "POST /v1/plugins/{name}/promote",
        "POST /v1/plugins/{name}/try",
        "PUT /v1/plugins/{name}",
        "DELETE /v1/plugins/{name}",
        "GET /v1/event-types",
        "GET /v1/deliveries",
        "GET /v1/events/{id}",
        "GET /v1/deliveries/{id}",
        "POST /v1/deliveries/{id}/resend",
        "GET /v1/dead-letters",
        "GET /v1/subscriptions",
        "POST /v1/subscriptions",
        "GET /v1/subscriptions/{id}",
        "PUT /v1/subscriptions/{id}",
        "PATCH /v1/subscriptions/{id}",
        "DELETE /v1/subscriptions/{id}",
        "POST /v1/subscriptions/{id}/enable",
        "POST /v1/subscriptions/{id}/disable",
        "POST /v1/subscriptions/{id}/recover",
        "POST /v1/subscriptions/{id}/test",
        "GET /v1/stats/history",
        "GET /v1/cluster",
        "POST /v1/subscriptions/{id}/rotate-secret",
        "POST /v1/portal/rotate-secret",
    ] {
        assert!(
            listed.contains(expected),
            "{expected} missing from {listed:#?}"
        );
    }
    assert_eq!(listed.len(), 44, "{listed:#?}");
    // Each listed operation is served (no 404/405), and the secured ones
    // refuse a request without a token as documented.
    for (method, path, op) in &operations {
        let concrete = path
            .replace("{id}", "some-id")
            .replace("{name}", "some-name");
        let (status, body) = request(api, method, &concrete, &[], b"");
        assert!(
            status != 404 && status != 405,
            "{method} {path}: {status} {body}"
        );
        // `[]`: open; `[{"x": []}, {}]`: optional; `[{"x": []}]`: required.
        let requirements = op["security"].as_array().unwrap();
        let secured = !requirements.is_empty()
            && requirements
                .iter()
                .all(|s| s.as_object().is_some_and(|o| !o.is_empty()));
        if secured {
            assert_eq!(status, 401, "{method} {path} without a token");
            assert!(op["responses"]["401"].is_object());
        }
    }
    // And something not listed is not served: the check above can fail.
    let (status, _) = request(api, "GET", "/v1/not-a-route", &[], b"");
    assert_eq!(status, 404);
    server.stop();
}

/// `PATCH /v1/subscriptions/{id}` changes the fields it names and keeps the
/// rest — the signing secret, which the API never shows, included: after a
/// new URL, deliveries go there, still signed. Errors name the field; the
/// id cannot change; config-file subscriptions stay read-only.
#[test]
fn a_subscription_is_changed_by_a_merge_patch_and_keeps_its_secret() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &receiver.url("sink"));
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let made = json!({
        "id": "patched", "url": receiver.url("before"), "types": ["*"], "envelope": "plain",
        "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    });
    let (status, _) = request(
        api,
        "POST",
        "/v1/subscriptions",
        &[ADMIN],
        made.to_string().as_bytes(),
    );
    assert_eq!(status, 201);
    let patch = |body: &Value| {
        request(
            api,
            "PATCH",
            "/v1/subscriptions/patched",
            &[ADMIN],
            body.to_string().as_bytes(),
        )
    };

    let (status, answer) = patch(&json!({"url": "ftp://nowhere/x"}));
    assert_eq!(status, 422, "{answer}");
    assert!(error_text(&answer).contains("url"), "{answer}");
    let (status, answer) = patch(&json!({"id": "renamed"}));
    assert_eq!(status, 422, "{answer}");
    assert!(error_text(&answer).contains("id cannot change"), "{answer}");
    let (status, answer) = request(
        api,
        "PATCH",
        "/v1/subscriptions/patched",
        &[ADMIN],
        b"{oops",
    );
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = request(
        api,
        "PATCH",
        "/v1/subscriptions/sink",
        &[ADMIN],
        br#"{"tags": ["x"]}"#,
    );
    assert_eq!(
        status, 409,
        "config-file subscriptions are read-only: {answer}"
    );
    let (status, answer) = request(api, "PATCH", "/v1/subscriptions/patched", &[], b"{}");
    assert_eq!(status, 401, "{answer}");

    let (status, answer) = patch(&json!({"url": receiver.url("after"), "tags": ["moved"]}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["url"], receiver.url("after"));
    assert_eq!(answer["tags"], json!(["moved"]));
    assert_eq!(answer["secrets_count"], 1, "the secret was kept: {answer}");
    assert_eq!(answer["envelope"], "plain");

    let (status, _) = request(
        api,
        "POST",
        "/v1/events",
        &[INGEST],
        br#"{"type": "payment_received", "data": {"amount": 5}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("after", 1, WAIT);
    assert_eq!(receiver.count("before"), 0);
    let got = receiver
        .received()
        .into_iter()
        .find(|r| r.path == "after")
        .unwrap();
    assert!(
        got.headers
            .get("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,")),
        "still signed with the kept secret: {:?}",
        got.headers
    );
    assert_eq!(server.terminate(WAIT).code(), Some(0));
}

/// `POST /v1/subscriptions/{id}/test`: a catalog sample (or given data) to
/// one subscription only, through its plugins, delivered at once; the
/// ingest rules hold (types it receives, tiers), and a filter that drops
/// the event is reported, not hidden.
#[test]
fn a_test_event_reaches_one_subscription_through_its_plugins() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let catalog = hookhost_tests::workspace_root().join("examples/bikeep/catalog.json");
    let subscription = |id: &str, types: &str, extra: &str| {
        format!(
            "[[subscriptions]]\nid = \"{id}\"\nurl = \"{}\"\ntypes = {types}\n\
             envelope = \"plain\"\n{extra}\n",
            receiver.url(id)
        )
    };
    let alarm_and_report = r#"["alarm", "report"]"#;
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n-t0ken\"\ningest_token = \"1ngest-t0ken\"\n",
        &format!(
            "[catalog]\nfiles = [{:?}]\n{}{}{}",
            catalog.to_str().unwrap(),
            subscription(
                "target",
                alarm_and_report,
                "tier = \"partner\"\nintervals = { alarm = \"1h\" }"
            ),
            subscription("bystander", alarm_and_report, "tier = \"partner\""),
            subscription(
                "filtered",
                r#"["*"]"#,
                "[[subscriptions.plugins]]\nplugin = \"alarm-filter\"\nconfig = { reasons = [\"wire_cut\"] }"
            ),
        ),
    );
    std::fs::copy(
        built_plugin("alarm-filter"),
        root.path().join("plugins/alarm-filter.wasm"),
    )
    .unwrap();
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let test = |sub: &str, body: &Value| {
        request(
            api,
            "POST",
            &format!("/v1/subscriptions/{sub}/test"),
            &[ADMIN],
            body.to_string().as_bytes(),
        )
    };

    // The catalog's alarm sample, at once although alarms wait an hour
    // in windows for this subscription; nobody else gets it.
    let (status, sent) = test("target", &json!({"type": "alarm"}));
    assert_eq!(status, 202, "{sent}");
    assert!(
        sent["event_id"].as_str().unwrap().starts_with("test_"),
        "{sent}"
    );
    receiver.wait_count("target", 1, WAIT);
    let body = &receiver.bodies("target")[0];
    assert_eq!(body["type"], "alarm");
    assert!(
        body["location_id"].is_string(),
        "the catalog sample: {body}"
    );
    let delivery = sent["delivery"].as_str().unwrap();
    let delivered = || {
        let (_, d) = request(
            api,
            "GET",
            &format!("/v1/deliveries/{delivery}"),
            &[ADMIN],
            b"",
        );
        d["status"] == "delivered"
    };
    assert!(wait_until(WAIT, delivered).is_some());

    // Data given instead of the sample.
    let (status, sent) = test("target", &json!({"type": "report", "data": {"n": 7}}));
    assert_eq!(status, 202, "{sent}");
    receiver.wait_count("target", 2, WAIT);
    assert_eq!(receiver.bodies("target")[1]["n"], 7);

    // The subscription's filter runs: a dropped event is said to be dropped.
    let low_voltage = json!({"type": "alarm", "data": {"alarm_reason": "low_voltage"}});
    let (status, answer) = test("filtered", &low_voltage);
    assert_eq!(
        (status, answer["sent"].as_bool()),
        (200, Some(false)),
        "{answer}"
    );
    let wire_cut = json!({"type": "alarm", "data": {"alarm_reason": "wire_cut"}});
    let (status, answer) = test("filtered", &wire_cut);
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("filtered", 1, WAIT);

    // The rules of ingest hold, each refusal named.
    for (sub, body, expected, says) in [
        ("nobody", json!({"type": "alarm"}), 404, "no subscription"),
        ("target", json!({"type": "status"}), 422, "does not receive"),
        // `filtered` is public (all types by a wildcard); `report` is a partner type.
        ("filtered", json!({"type": "report"}), 422, "partner type"),
        (
            "target",
            json!({"type": "alarm", "data": [1]}),
            422,
            "JSON object",
        ),
        ("target", json!({"kind": "alarm"}), 400, "unknown field"),
    ] {
        let (status, answer) = test(sub, &body);
        assert_eq!(status, expected, "{sub} {body}: {answer}");
        assert!(error_text(&answer).contains(says), "{sub} {body}: {answer}");
    }
    let (status, _) = request(api, "POST", "/v1/subscriptions/target/test", &[], b"{}");
    assert_eq!(status, 401);

    // Only what was sent on purpose arrived, each where it was sent.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(receiver.count("bystander"), 0);
    assert_eq!(receiver.count("target"), 2);
    assert_eq!(receiver.count("filtered"), 1);
    assert_eq!(server.terminate(WAIT).code(), Some(0));
}

/// Rotating a signing secret (from a portal link or the admin API): the new
/// `whsec_` secret is answered once and signs from then on; the old one
/// signs beside it for 24 hours (on the server's clock, moved here), then
/// no more. The API never shows either secret.
#[test]
fn a_rotated_secret_signs_beside_the_old_one_for_a_day() {
    use hookhost_core::clock::{Clock, ManualClock, now_ms};
    use hookhost_core::verify::{Delivery, standard};
    const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &receiver.url("sink"));
    let clock = std::sync::Arc::new(ManualClock::new(now_ms()));
    let server = hookhost_tests::InProcess::start_with_clock(&config, clock.clone());
    let api = server.addr;
    let made = json!({
        "id": "rot", "url": receiver.url("rot"), "types": ["payment_received"],
        "envelope": "plain", "secrets": [OLD]
    });
    let (status, _) = request(
        api,
        "POST",
        "/v1/subscriptions",
        &[ADMIN],
        made.to_string().as_bytes(),
    );
    assert_eq!(status, 201);
    let (_, link) = request(api, "POST", "/v1/subscriptions/rot/portal", &[ADMIN], b"");
    let portal = format!("Authorization: Bearer {}", link["token"].as_str().unwrap());

    let rotated_at = clock.now_ms();
    let (status, rotated) = request(api, "POST", "/v1/portal/rotate-secret", &[&portal], b"");
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != OLD);
    assert_eq!(
        rotated["retiring_secrets"],
        json!([{"until_ms": rotated_at + 24 * 3600 * 1000}])
    );
    let (_, shown) = request(api, "GET", "/v1/subscriptions/rot", &[ADMIN], b"");
    assert_eq!(shown["secrets_count"], 1, "{shown}");
    let text = shown.to_string();
    assert!(
        !text.contains(&new) && !text.contains(OLD),
        "a secret shown: {text}"
    );

    let deliver = |n: usize| {
        let (status, _) = request(
            api,
            "POST",
            "/v1/events",
            &[INGEST],
            br#"{"type": "payment_received", "data": {"amount": 1}}"#,
        );
        assert_eq!(status, 202);
        receiver.wait_count("rot", n, WAIT);
        let got = receiver
            .received()
            .into_iter()
            .filter(|r| r.path == "rot")
            .nth(n - 1)
            .unwrap();
        Delivery {
            body: got.body,
            headers: got.headers,
        }
    };
    let during = deliver(1);
    assert!(standard(&during, &new).ok, "the new secret signs");
    assert!(
        standard(&during, OLD).ok,
        "the old one still signs, for the switch-over"
    );
    // The delivery's detail shows that request: exact, both signatures masked.
    let id = &during.headers["webhook-id"];
    let shown = || {
        let (_, d) = request(api, "GET", &format!("/v1/deliveries/{id}"), &[ADMIN], b"");
        d
    };
    assert!(wait_until(WAIT, || shown()["status"] == "delivered").is_some());
    let detail = shown();
    let req = &detail["request"];
    assert_eq!(req["exact"], true, "{detail}");
    assert_eq!(req["body"].as_str(), Some(during.body.as_str()));
    let headers: std::collections::BTreeMap<String, String> =
        serde_json::from_value::<Vec<(String, String)>>(req["headers"].clone())
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(headers["webhook-signature"], "v1,(masked) v1,(masked)");
    assert_eq!(
        headers["webhook-timestamp"],
        during.headers["webhook-timestamp"]
    );
    assert!(!detail.to_string().contains(&new) && !detail.to_string().contains(OLD));

    clock.advance(std::time::Duration::from_secs(24 * 3600 + 60));
    let after = deliver(2);
    assert!(standard(&after, &new).ok);
    assert!(
        !standard(&after, OLD).ok,
        "a day later the old secret signs no more"
    );

    // The admin route rotates too; config-file subscriptions cannot.
    let (status, again) = request(
        api,
        "POST",
        "/v1/subscriptions/rot/rotate-secret",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["secret"], json!(new));
    let (status, _) = request(
        api,
        "POST",
        "/v1/subscriptions/sink/rotate-secret",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 409);
    server.stop();
}

/// Runs `tests/ui/openapi.mjs` (Ajv, from the test toolchain) on the
/// document and answers; its success and what it printed.
fn check_against_openapi(document: &Value, answers: &[Value]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("answers.json");
    std::fs::write(
        &file,
        json!({"document": document, "answers": answers}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("node")
        .arg(hookhost_tests::workspace_root().join("tests/ui/openapi.mjs"))
        .arg(&file)
        .env("PLAYWRIGHT_DIR", hookhost_tests::toolchain_dir("ui"))
        .output()
        .expect("node runs (./dev test installs Node.js and Ajv)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The answers of the typed routes, and refusals, as a client sees them,
/// match the JSON Schemas `/openapi.json` gives for them (generated from
/// the Rust types the handlers serialize), checked by Ajv — and a broken
/// answer is caught, so the check can fail.
#[test]
fn real_answers_match_the_schemas_of_the_openapi_document() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let catalog = hookhost_tests::workspace_root().join("examples/bikeep/catalog.json");
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n-t0ken\"\ningest_token = \"1ngest-t0ken\"\n",
        &format!(
            "[catalog]\nfiles = [{:?}]\n[[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\n\
             types = [\"*\"]\nenvelope = \"plain\"\n",
            catalog.to_str().unwrap(),
            receiver.url("sink")
        ),
    );
    let filter = std::fs::read(built_plugin("alarm-filter")).unwrap();
    std::fs::write(root.path().join("plugins/alarm-filter.wasm"), &filter).unwrap();
    let server = hookhost_tests::InProcess::start(&config);
    let api = server.addr;
    let mut answers: Vec<Value> = Vec::new();
    let mut call = |method: &str, path: &str, template: &str, headers: &[&str], body: &[u8]| {
        let (status, answer) = request(api, method, path, headers, body);
        answers.push(json!({"method": method, "path": template, "status": status, "body": answer}));
        (status, answer)
    };

    let events = "/v1/events";
    let (status, ingested) = call(
        "POST",
        events,
        events,
        &[INGEST],
        br#"{"type": "billing.paid", "data": {"n": 1}}"#,
    );
    assert_eq!(status, 202);
    let event_id = ingested["ids"][0].as_str().unwrap().to_string();
    assert_eq!(call("POST", events, events, &[INGEST], b"{nope").0, 400);
    assert_eq!(
        call("POST", events, events, &[INGEST], br#"{"data": {}}"#).0,
        422
    );
    assert_eq!(call("GET", "/readyz", "/readyz", &[], b"").0, 200);
    receiver.wait_count("sink", 1, WAIT);

    let (status, page) = call("GET", "/v1/deliveries", "/v1/deliveries", &[], b"");
    assert_eq!(status, 401);
    assert!(page["error"].is_string());
    // The state is stored after the receiver has its request: wait for it.
    assert!(
        wait_until(WAIT, || {
            request(api, "GET", "/v1/deliveries", &[ADMIN], b"").1["deliveries"][0]["status"]
                == "delivered"
        })
        .is_some()
    );
    let (_, page) = call("GET", "/v1/deliveries", "/v1/deliveries", &[ADMIN], b"");
    let id = page["deliveries"][0]["id"].as_str().unwrap().to_string();
    let one = "/v1/deliveries/{id}";
    let (_, detail) = call("GET", &format!("/v1/deliveries/{id}"), one, &[ADMIN], b"");
    assert!(detail["request"]["headers"].is_array(), "{detail}");
    assert_eq!(
        call("GET", "/v1/deliveries/msg_nope", one, &[ADMIN], b"").0,
        404
    );
    let resend = "/v1/deliveries/{id}/resend";
    assert_eq!(
        call(
            "POST",
            &format!("/v1/deliveries/{id}/resend"),
            resend,
            &[ADMIN],
            b""
        )
        .0,
        202
    );
    call("GET", "/v1/dead-letters", "/v1/dead-letters", &[ADMIN], b"");

    let subs = "/v1/subscriptions";
    let made = json!({
        "id": "typed", "url": receiver.url("typed"), "types": ["alarm", "billing.*"],
        "envelope": "plain", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "headers": {"X-Key": "secret-value"}, "rate_limit": {"per_second": 5},
        "ordering": {"key": "/n"}, "intervals": {"report": "direct", "*": "5m"},
        "retry": {"retry_statuses": ["5xx", 429]},
        "plugins": [{"plugin": "nowhere", "config": {"a": 1}}]
    });
    let (status, view) = call("POST", subs, subs, &[ADMIN], made.to_string().as_bytes());
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["headers"]["X-Key"], "(set)");
    assert_eq!(
        call("POST", subs, subs, &[ADMIN], br#"{"id": "x", "url": 5}"#).0,
        400
    );
    call("GET", subs, subs, &[ADMIN], b"");
    let sub = "/v1/subscriptions/{id}";
    let typed = "/v1/subscriptions/typed";
    call("GET", typed, sub, &[ADMIN], b"");
    assert_eq!(
        call("PATCH", typed, sub, &[ADMIN], br#"{"tags": ["a"]}"#).0,
        200
    );
    let replaced =
        json!({"id": "typed", "url": receiver.url("typed"), "types": ["*"], "envelope": "plain"});
    assert_eq!(
        call("PUT", typed, sub, &[ADMIN], replaced.to_string().as_bytes()).0,
        200
    );
    let disable = "/v1/subscriptions/{id}/disable";
    assert_eq!(
        call(
            "POST",
            "/v1/subscriptions/typed/disable",
            disable,
            &[ADMIN],
            b""
        )
        .0,
        200
    );
    let enable = "/v1/subscriptions/{id}/enable";
    assert_eq!(
        call(
            "POST",
            "/v1/subscriptions/typed/enable",
            enable,
            &[ADMIN],
            b""
        )
        .0,
        200
    );
    assert_eq!(
        call("GET", "/v1/subscriptions/none", sub, &[ADMIN], b"").0,
        404
    );

    let rotate = "/v1/subscriptions/{id}/rotate-secret";
    let (status, rotated) = call(
        "POST",
        "/v1/subscriptions/typed/rotate-secret",
        rotate,
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 200, "{rotated}");
    let test = "/v1/subscriptions/{id}/test";
    let sample = br#"{"type": "billing.paid", "data": {"n": 2}}"#;
    assert_eq!(
        call(
            "POST",
            "/v1/subscriptions/sink/test",
            test,
            &[ADMIN],
            sample
        )
        .0,
        202
    );
    let recover = "/v1/subscriptions/{id}/recover";
    let since = br#"{"since": "2020-01-01T00:00:00Z"}"#;
    assert_eq!(
        call(
            "POST",
            "/v1/subscriptions/sink/recover",
            recover,
            &[ADMIN],
            since
        )
        .0,
        202
    );
    let event = "/v1/events/{id}";
    assert_eq!(
        call(
            "GET",
            &format!("/v1/events/{event_id}"),
            event,
            &[ADMIN],
            b""
        )
        .0,
        200
    );
    call("GET", "/v1/event-types", "/v1/event-types", &[ADMIN], b"");
    call(
        "GET",
        "/v1/stats/history",
        "/v1/stats/history",
        &[ADMIN],
        b"",
    );
    call("GET", "/v1/plugins", "/v1/plugins", &[ADMIN], b"");
    call("GET", "/v1/cluster", "/v1/cluster", &[ADMIN], b"");
    let trial = json!({"event": {"type": "alarm", "data": {"alarm": "intrusion"}}, "config": null});
    let tried = "/v1/plugins/{name}/try";
    let (status, decision) = call(
        "POST",
        "/v1/plugins/alarm-filter/try",
        tried,
        &[ADMIN],
        trial.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{decision}");
    let promote = "/v1/plugins/{name}/promote";
    assert_eq!(
        call(
            "POST",
            "/v1/plugins/alarm-filter/promote",
            promote,
            &[ADMIN],
            b""
        )
        .0,
        404
    );
    let upload = "/v1/plugins/{name}";
    let (status, installed) = call("PUT", "/v1/plugins/alarm-filter", upload, &[ADMIN], &filter);
    assert_eq!(status, 200, "{installed}");

    // The portal's answers are the same types.
    let (status, link) = call(
        "POST",
        "/v1/subscriptions/sink/portal",
        "/v1/subscriptions/{id}/portal",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 201, "{link}");
    let portal = format!("Authorization: Bearer {}", link["token"].as_str().unwrap());
    let portal = [portal.as_str()];
    let list = "/v1/portal/deliveries";
    call("GET", list, list, &portal, b"");
    let one = "/v1/portal/deliveries/{id}";
    call(
        "GET",
        &format!("/v1/portal/deliveries/{id}"),
        one,
        &portal,
        b"",
    );
    assert_eq!(
        call("GET", "/v1/portal/deliveries/msg_nope", one, &portal, b"").0,
        404
    );
    call("GET", "/v1/portal", "/v1/portal", &portal, b"");
    let types = "/v1/portal/event-types";
    call("GET", types, types, &portal, b"");
    // A config-file subscription's secret cannot rotate: an error answer.
    let rotate = "/v1/portal/rotate-secret";
    assert_eq!(call("POST", rotate, rotate, &portal, b"").0, 409);

    let (_, document) = request(api, "GET", "/openapi.json", &[], b"");
    let (ok, said) = check_against_openapi(&document, &answers);
    assert!(ok, "{said}");
    println!("{said}");
    assert!(
        said.contains(&format!("checked {} answers", answers.len())),
        "{said}"
    );

    // A page without `total_exact`, a delivery with an unknown status: caught.
    let mut broken = answers.clone();
    for answer in &mut broken {
        if answer["path"] == "/v1/deliveries" && answer["status"] == 200 {
            answer["body"]
                .as_object_mut()
                .unwrap()
                .remove("total_exact");
            answer["body"]["deliveries"][0]["status"] = json!("lost");
        }
    }
    let (ok, said) = check_against_openapi(&document, &broken);
    assert!(!ok, "a broken answer passed: {said}");
    assert!(
        said.contains("total_exact") && said.contains("status"),
        "{said}"
    );
    server.stop();
}

#[test]
fn a_replaced_subscription_takes_its_waiting_retries_along() {
    // Each delivery fails once at the old URL; its retry (1.5 s later:
    // the waiting room, or 0.3 s: its own task) goes to the URL the
    // subscription has by then.
    let receiver = Receiver::start();
    receiver.script("old", Answer::Status(503));
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &receiver.url("sink"));
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let admin = |method: &str, path: &str, body: &Value| {
        request(api, method, path, &[ADMIN], body.to_string().as_bytes())
    };
    let subscription = |id: &str, path: &str, backoff_ms: u64| {
        json!({
            "id": id,
            "url": receiver.url(path),
            "types": ["report"],
            "seed": "s33d",
            "intervals": {"*": "direct"},
            "retry": {"backoff": "fixed", "backoff_ms": backoff_ms, "max_retries": 3}
        })
    };
    for (id, backoff_ms) in [("later", 1_500), ("soon", 300)] {
        let (status, body) = admin(
            "POST",
            "/v1/subscriptions",
            &subscription(id, "old", backoff_ms),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = request(
        api,
        "POST",
        "/v1/events",
        &[INGEST],
        br#"{"type": "report", "data": {"n": 1}}"#,
    );
    assert_eq!(status, 202, "{body}");
    receiver.wait_count("old", 2, WAIT);
    for (id, backoff_ms) in [("later", 1_500), ("soon", 300)] {
        let (status, body) = admin(
            "PUT",
            &format!("/v1/subscriptions/{id}"),
            &subscription(id, "new", backoff_ms),
        );
        assert_eq!(status, 200, "{body}");
    }
    receiver.wait_count("new", 2, WAIT);
    let to: std::collections::BTreeSet<String> = receiver
        .received()
        .iter()
        .filter(|r| r.path == "new")
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(to.len(), 2, "each retry went to the new URL once");
    assert!(server.terminate(WAIT).success());
}
