//! The delivery core end to end: the real `hookhost` binary, a real receiver
//! on 127.0.0.1, the real sled files read back after the host has stopped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookhost_core::model::JobStatus;
use hookhost_tests::http::{Answer, Receiver, metrics, post, post_events, request};
use hookhost_tests::{Running, bikeep_sample, output_within, run_verifier, save_deliveries};
use serde_json::{Value, json};

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;
const SEED: &str = "s3cr3t-seed";
const WHSEC_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_NEW: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";

fn write_config(root: &Path, body: &str) -> String {
    write_config_limit(root, body, 1 << 20)
}

fn write_config_limit(root: &Path, body: &str, max_body_bytes: usize) -> String {
    write_config_with(root, "", body, max_body_bytes)
}

/// The test config with more `[delivery]` keys (`delivery`, lines ending in
/// a newline).
fn write_config_with(root: &Path, delivery: &str, body: &str, max_body_bytes: usize) -> String {
    hookhost_tests::write_config(
        root,
        delivery,
        &format!("max_body_bytes = {max_body_bytes}\nshutdown_grace_ms = 3000\n"),
        body,
    )
}

fn subscription(id: &str, url: &str, extra: &str) -> String {
    format!(
        "[[subscriptions]]\nid = \"{id}\"\nurl = \"{url}\"\ntypes = [\"*\"]\nseed = \"{SEED}\"\n# Windows have their own tests (aggregation.rs).\nintervals = {{ \"*\" = \"direct\" }}\n{extra}\n"
    )
}

/// Posts `n` `report` events in one array; they must be accepted.
fn post_reports(api: std::net::SocketAddr, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "report", "data": {"n": i}}))
        .collect();
    post_events(api, events);
}

fn stop(server: Running) {
    let status = server.terminate(WAIT);
    assert!(status.success(), "hookhost exit status {status}");
}

#[test]
fn attempt_counts_follow_the_retry_policy() {
    let receiver = Receiver::start();
    receiver.script("ok", Answer::Status(200));
    receiver.script("gone", Answer::Status(404));
    receiver.script("flaky", Answer::Sequence(vec![503, 503], 200));
    receiver.script("down", Answer::Status(503));
    receiver.script("slow", Answer::Slow(Duration::from_millis(600), 200));
    // A port with nothing listening: bind, note it, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut subs = String::new();
    for path in ["ok", "gone", "flaky", "down"] {
        subs.push_str(&subscription(path, &receiver.url(path), ""));
    }
    subs.push_str(&subscription(
        "slow",
        &receiver.url("slow"),
        "[subscriptions.retry]\ntimeout_ms = 200\n",
    ));
    subs.push_str(&subscription(
        "refused",
        &format!("http://{closed}/hooks"),
        "",
    ));
    let config = write_config(root.path(), &subs);

    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (status, answer) = post(
        api,
        "/v1/events",
        bikeep_sample("alarm-case-open").to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    let event_id = answer["ids"][0].as_str().unwrap().to_string();

    receiver.wait_count("ok", 1, WAIT);
    receiver.wait_count("gone", 1, WAIT);
    receiver.wait_count("flaky", 3, WAIT);
    receiver.wait_count("down", 4, WAIT);
    receiver.wait_count("slow", 4, WAIT);
    // Give any wrong extra attempt time to show up (the backoff is 100 ms).
    std::thread::sleep(Duration::from_millis(700));
    stop(server);
    assert_eq!(
        ["ok", "gone", "flaky", "down", "slow"].map(|p| receiver.count(p)),
        [1, 1, 3, 4, 4],
        "requests received per endpoint"
    );
    // Every request of one delivery carries the same webhook-id.
    let flaky: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "flaky")
        .collect();
    assert!(
        flaky
            .iter()
            .all(|r| r.headers["webhook-id"] == flaky[0].headers["webhook-id"])
    );

    let store = hookhost_tests::open_store(&config);
    let job = |sub: &str| {
        store
            .job(&hookhost_tests::delivery_id(&event_id, sub))
            .unwrap()
            .unwrap()
    };
    let expect = [
        ("ok", JobStatus::Delivered, 1),
        ("gone", JobStatus::Dead, 1),
        ("flaky", JobStatus::Delivered, 3),
        ("down", JobStatus::Dead, 4),
        ("slow", JobStatus::Dead, 4),
        ("refused", JobStatus::Dead, 4),
    ];
    for (sub, status, attempts) in expect {
        let j = job(sub);
        assert_eq!(
            (j.status, j.attempts.len()),
            (status, attempts),
            "{sub}: {j:?}"
        );
    }
    assert_eq!(job("gone").attempts[0].status, Some(404));
    assert!(
        job("slow")
            .attempts
            .iter()
            .all(|a| a.error.as_deref().unwrap().contains("timed out"))
    );
    assert!(
        job("refused")
            .attempts
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some())
    );
    let mut dead: Vec<String> = store
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|j| j.subscription_id)
        .collect();
    dead.sort();
    assert_eq!(dead, ["down", "gone", "refused", "slow"]);
    assert!(store.pending_jobs().unwrap().is_empty());

    // A dead letter re-sent once the endpoint is back is delivered, with the same id.
    receiver.script("down", Answer::Status(200));
    let config = hookhost_core::config::Config::load(Path::new(&config)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = std::sync::Arc::new(config);
        let subscriptions =
            hookhost_core::subscriptions::Subscriptions::from_config(config.clone());
        let deliverer = hookhost_core::deliver::Deliverer::new(
            store.clone(),
            &config,
            subscriptions,
            std::sync::Arc::new(hookhost_core::clock::SystemClock),
        );
        let down_id = hookhost_tests::delivery_id(&event_id, "down");
        // No plugins in this test: a re-run is never asked for.
        let no_plugins: hookhost_core::deliver::Rechain<'_> =
            &|_, _| Err("no plugin chain here".into());
        deliverer.resend(&down_id, no_plugins).unwrap();
        assert!(
            deliverer
                .resend("msg_no_such_delivery", no_plugins)
                .is_err(),
            "unknown ids are refused"
        );
        let start = std::time::Instant::now();
        let j = loop {
            let j = store.job(&down_id).unwrap().unwrap();
            if j.status != JobStatus::Pending || start.elapsed() > WAIT {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!((j.status, j.attempts.len()), (JobStatus::Delivered, 5));
        assert!(deliverer.shutdown(WAIT).await);
    });
    let last = receiver
        .received()
        .into_iter()
        .rev()
        .find(|r| r.path == "down")
        .unwrap();
    assert_eq!(
        last.headers["webhook-id"],
        hookhost_tests::delivery_id(&event_id, "down")
    );
}

#[test]
fn a_retry_waiting_seconds_is_read_back_from_the_store_with_every_attempt() {
    // A wait of a second or more lets the job's record go from memory; it
    // is read again when due, and what the attempts recorded must all be
    // there (and nothing attempted twice).
    let receiver = Receiver::start();
    receiver.script("flaky", Answer::Sequence(vec![503, 503], 200));
    let root = tempfile::tempdir().unwrap();
    let subs = subscription(
        "flaky",
        &receiver.url("flaky"),
        "[subscriptions.retry]\nbackoff_ms = 2000\n",
    );
    let config = write_config(root.path(), &subs);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (status, answer) = post(
        api,
        "/v1/events",
        bikeep_sample("alarm-case-open").to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    let event_id = answer["ids"][0].as_str().unwrap().to_string();
    // Between its attempts it waits as an id, and /metrics says so.
    let waiting_later = || metrics(api).get("hookhost_delivery_waiting_later").copied();
    receiver.wait_count("flaky", 1, WAIT);
    hookhost_tests::wait_until(WAIT, || waiting_later() == Some(1.0))
        .expect("the retry waits in the waiting room");
    receiver.wait_count("flaky", 3, WAIT);
    hookhost_tests::wait_until(WAIT, || waiting_later() == Some(0.0))
        .expect("nothing waits once delivered");
    stop(server);

    let store = hookhost_tests::open_store(&config);
    let id = hookhost_tests::delivery_id(&event_id, "flaky");
    let job = store.job(&id).unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Delivered, "{job:?}");
    assert_eq!(
        job.attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(503), Some(503), Some(200)]
    );
    assert_eq!(receiver.count("flaky"), 3);
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.headers["webhook-id"] == id)
    );
}

#[test]
fn deliveries_pass_the_seeds_verifiers_and_standard_webhooks() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let secrets = format!("secrets = [\"{WHSEC_OLD}\", \"{WHSEC_NEW}\"]");
    let mut subs = subscription("v2", &receiver.url("v2"), &secrets);
    subs.push_str(&subscription(
        "v1",
        &receiver.url("v1"),
        "envelope = \"bikeep-v1\"",
    ));
    let config = write_config(root.path(), &subs);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);

    let mut events: Vec<Value> = [
        "connection",
        "connection_confirmed",
        "alarm-case-open",
        "parking_reminder",
        "status",
        "maintenance_log",
        "report",
    ]
    .iter()
    .map(|s| bikeep_sample(s))
    .collect();
    // Numbers serializers disagree on, and escapes.
    events.push(json!({"type": "status", "data": {
        "whole_float": 1.0, "big": 1e21, "neg": -2.50, "tiny": 0.001, "int": 12345,
        "quote": "say \"hi\"\\ back\tslash", "nested": {"list": [1.5, 2.0, {"z": null, "a": true}]}
    }}));
    let (status, answer) = post(
        api,
        "/v1/events",
        Value::Array(events.clone()).to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("v2", events.len(), WAIT);
    receiver.wait_count("v1", events.len(), WAIT);
    stop(server);

    let dir = tempfile::tempdir().unwrap();
    for path in ["v2", "v1"] {
        let file = dir.path().join(format!("{path}.jsonl"));
        save_deliveries(&receiver, path, &file);
        run_verifier("python3", "bikeep_verify.py", SEED, &file);
        run_verifier("node", "bikeep_verify.js", SEED, &file);
    }
    let v2 = dir.path().join("v2.jsonl");
    run_verifier("python3", "standard_webhooks_verify.py", WHSEC_OLD, &v2);
    run_verifier("python3", "standard_webhooks_verify.py", WHSEC_NEW, &v2);

    // The envelopes' shapes (deliveries arrive in any order).
    let v2 = receiver.bodies("v2");
    assert!(
        v2.iter()
            .all(|b| b["version"] == 2 && b["type"].is_string() && b["hash"].is_string())
    );
    assert!(
        v2.iter()
            .any(|b| b["type"] == "connection" && b["data"]["type"] == "connection_changed")
    );
    let v1 = receiver.bodies("v1");
    assert!(
        v1.iter()
            .all(|b| b["version"] == 1 && b.get("type").is_none())
    );
    assert!(v1.iter().any(|b| b["data"]["type"] == "connection_changed"));
    assert!(v1.iter().any(|b| b["data"]["type"] == "alarm"));
}

#[test]
fn bad_input_gets_a_clear_4xx_and_nothing_half_written() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config_limit(
        root.path(),
        &subscription("all", &receiver.url("all"), ""),
        4096,
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);

    let (status, body) = post(api, "/v1/events", b"{\"type\": \"alarm\", ");
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );
    let (status, body) = post(api, "/v1/events", br#"{"data": {"x": 1}}"#);
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`type` is missing"),
        "{body}"
    );
    let (status, body) = post(
        api,
        "/v1/events",
        br#"[{"type": "alarm", "data": {}}, {"type": "alarm", "data": 5}]"#,
    );
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("events[1]: field `data`"),
        "{body}"
    );
    let big = format!(
        r#"{{"type": "report", "data": {{"pad": "{}"}}}}"#,
        "x".repeat(5000)
    );
    let (status, body) = post(api, "/v1/events", big.as_bytes());
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap().contains("4096 bytes"),
        "{body}"
    );
    let (status, body) = post(api, "/v1/events", b"[]");
    assert_eq!(status, 400, "{body}");
    // A Content-Length far over the limit with a body that never comes is
    // refused from the header, not waited for.
    {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(api).unwrap();
        conn.set_read_timeout(Some(hookhost_tests::PATIENCE))
            .unwrap();
        conn.write_all(
            b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 99999999999\r\n\r\n{}",
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
        assert!(answer.contains("Content-Length 99999999999"), "{answer}");
    }

    let (status, body) = post(
        api,
        "/v1/events",
        br#"{"id": "evt_good", "type": "report", "data": {"ok": true}}"#,
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ids"], json!(["evt_good"]));
    // Sent again: answered with the same id, stored and delivered once.
    let (status, _) = post(
        api,
        "/v1/events",
        br#"{"id": "evt_good", "type": "report", "data": {"ok": true}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("all", 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    stop(server);
    assert_eq!(
        receiver.count("all"),
        1,
        "only the accepted event was delivered"
    );
    let store = hookhost_tests::open_store(&config);
    let jobs = store.jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].event_id, "evt_good");
}

/// Any RFC 3339 time is accepted (offsets, fractions, before 1970) and goes
/// out as the producer wrote it: the seed's hash covers that text.
#[test]
fn any_rfc3339_timestamp_is_accepted_and_delivered_as_written() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(root.path(), &subscription("all", &receiver.url("all"), ""));
    let server = hookhost_tests::InProcess::start(&config);
    let written = [
        "2025-01-01T00:00:00+05:00",
        "1969-07-20T20:17:40Z",
        "2025-12-15T10:30:00.123456-03:30",
    ];
    for (i, at) in written.iter().enumerate() {
        let event = json!({"id": format!("evt_t{i}"), "type": "report", "data": {"timestamp": at}});
        let (status, body) = post(server.addr, "/v1/events", event.to_string().as_bytes());
        assert_eq!(status, 202, "{at}: {body}");
    }
    let (status, body) = post(
        server.addr,
        "/v1/events",
        br#"{"type": "report", "timestamp": "2025-01-01T00:00:00+25:00", "data": {}}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timestamp"),
        "{body}"
    );
    receiver.wait_count("all", written.len(), WAIT);
    let mut got: Vec<String> = receiver
        .bodies("all")
        .iter()
        .map(|b| b["data"]["timestamp"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut expected = written.map(String::from).to_vec();
    expected.sort();
    assert_eq!(got, expected);
    server.stop();
}

#[test]
fn unknown_envelope_stops_the_server_with_the_key_named() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &subscription("a", "http://127.0.0.1:9/x", "envelope = \"bikeep-v3\""),
    );
    let out = output_within(
        Command::new(hookhost_tests::hookhost_bin()).args(["serve", "--config", &config]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hookhost.toml: line") && stderr.contains("bikeep-v3"),
        "{stderr}"
    );
}

#[test]
fn in_flight_attempts_per_endpoint_are_capped() {
    let receiver = Receiver::start();
    receiver.script("slow", Answer::Slow(Duration::from_millis(100), 200));
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &subscription("slow", &receiver.url("slow"), "max_in_flight = 3"),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    post_reports(api, 20);
    receiver.wait_count("slow", 20, WAIT);
    stop(server);
    assert_eq!(
        receiver.max_in_flight(),
        3,
        "20 deliveries to a slow endpoint run 3 at a time"
    );
}

#[test]
fn in_flight_attempts_per_host_are_capped_over_all_subscriptions() {
    let receiver = Receiver::start();
    receiver.script("a", Answer::Slow(Duration::from_millis(100), 200));
    receiver.script("b", Answer::Slow(Duration::from_millis(100), 200));
    let root = tempfile::tempdir().unwrap();
    let subscriptions = subscription("a", &receiver.url("a"), "max_in_flight = 8")
        + &subscription("b", &receiver.url("b"), "max_in_flight = 8");
    let config = write_config_with(
        root.path(),
        "max_in_flight_per_host = 3\n",
        &subscriptions,
        1 << 20,
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    post_reports(api, 15);
    receiver.wait_count("a", 15, WAIT);
    receiver.wait_count("b", 15, WAIT);
    stop(server);
    assert_eq!(
        receiver.max_in_flight(),
        3,
        "30 deliveries for two subscriptions on one slow host run 3 at a time"
    );
}

#[test]
fn deliveries_beyond_the_memory_bound_wait_in_the_store_and_all_go_out() {
    let receiver = Receiver::start();
    receiver.script("slow", Answer::Slow(Duration::from_millis(5), 200));
    let root = tempfile::tempdir().unwrap();
    let config = write_config_with(
        root.path(),
        "max_jobs_in_memory = 10\n",
        &subscription("slow", &receiver.url("slow"), "max_in_flight = 4"),
        1 << 20,
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    post_reports(api, 300);
    let mut most_in_memory = 0.0f64;
    let start = std::time::Instant::now();
    while receiver.count("slow") < 300 {
        assert!(
            start.elapsed() < WAIT,
            "only {} of 300 delivered",
            receiver.count("slow")
        );
        let depth = metrics(api)["hookhost_delivery_queue_depth"];
        most_in_memory = most_in_memory.max(depth);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(server);
    let ids: std::collections::HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 300, "every event delivered");
    assert!(most_in_memory > 0.0, "the gauge never moved");
    assert!(
        most_in_memory <= 10.0,
        "{most_in_memory} deliveries were held in memory; the bound is 10"
    );
}

#[test]
fn scheduled_retries_survive_a_restart() {
    let receiver = Receiver::start();
    receiver.script("later", Answer::Sequence(vec![503], 200));
    let root = tempfile::tempdir().unwrap();
    let retry = "[subscriptions.retry]\nbackoff = \"exponential\"\nbackoff_ms = 8000\n";
    let config = write_config(
        root.path(),
        &subscription("later", &receiver.url("later"), retry),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (status, answer) = post(api, "/v1/events", br#"{"type": "report", "data": {}}"#);
    assert_eq!(status, 202);
    let job_id = hookhost_tests::delivery_id(answer["ids"][0].as_str().unwrap(), "later");
    receiver.wait_count("later", 1, WAIT);
    // Stop before the retry is due (8 s ± 25 %, long enough for a stop on a
    // busy machine): it must wait in the store.
    std::thread::sleep(Duration::from_millis(200));
    stop(server);
    let due = {
        let store = hookhost_tests::open_store(&config);
        let job = store.job(&job_id).unwrap().unwrap();
        assert_eq!((job.status, job.attempts.len()), (JobStatus::Pending, 1));
        assert!(store.pending_jobs().unwrap().iter().any(|j| j.id == job_id));
        job.next_attempt_at_ms
    };
    let mut server = Running::start(&["serve", "--config", &config]);
    server.wait_for(&["resuming unfinished work", "jobs=1"], WAIT);
    receiver.wait_count("later", 2, WAIT);
    let retry = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "later")
        .nth(1)
        .unwrap();
    assert!(
        retry.at_ms >= due,
        "the retry came {} ms before its scheduled time",
        due - retry.at_ms
    );
    std::thread::sleep(Duration::from_millis(200));
    stop(server);
    let store = hookhost_tests::open_store(&config);
    let job = store.job(&job_id).unwrap().unwrap();
    assert_eq!((job.status, job.attempts.len()), (JobStatus::Delivered, 2));
}

/// An endpoint that answers 200 and then streams a body without end: the
/// attempt reads a bounded part of it and counts as delivered, instead of
/// collecting it until the attempt times out (and memory runs out).
#[test]
fn an_endless_answer_body_is_not_read_to_its_end() {
    use std::io::{Read, Write};
    let endless = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", endless.local_addr().unwrap());
    let streamed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = streamed.clone();
    std::thread::spawn(move || {
        for conn in endless.incoming() {
            let Ok(mut conn) = conn else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                // Read the request head, then answer 200 and never end the body.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
                );
                let chunk = vec![b'x'; 64 * 1024];
                let framed =
                    [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                while conn.write_all(&framed).is_ok() {
                    counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        &subscription(
            "endless",
            &url,
            "[subscriptions.retry]\ntimeout_ms = 30000\n",
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (status, _) = post(api, "/v1/events", br#"{"type": "report", "data": {}}"#);
    assert_eq!(status, 202);
    let delivered = || {
        let (_, body) = request(
            api,
            "GET",
            "/v1/deliveries?subscription=endless",
            &["Authorization: Bearer adm1n"],
            b"",
        );
        body["deliveries"][0].clone()
    };
    // Without the bound the attempt would read until its 30 s timeout
    // (gigabytes over loopback) and then be retried; with it, the 200
    // counts at once.
    assert!(
        hookhost_tests::wait_until(WAIT, || delivered()["status"] == "delivered").is_some(),
        "{:#}",
        delivered()
    );
    let job = delivered();
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    assert_eq!(job["attempts"][0]["status"], 200, "{job:#}");
    // Memory measured: the server's peak resident set stays far below what
    // buffering the stream would take (it grew by gigabytes before).
    let peak_kib = server.peak_rss_kib();
    assert!(peak_kib < 300 * 1024, "peak RSS {peak_kib} KiB");
    stop(server);
    // The endpoint did stream: more than the bound went out (the socket
    // buffers take some), so the bound, not the endpoint, ended the read.
    assert!(streamed.load(std::sync::atomic::Ordering::Relaxed) > 64 * 1024);
}

/// A subscription's plugin is missing at start, so its deliveries become
/// `plugin_error`; once the plugin is in place they can be re-run: re-sent
/// one by one or recovered together, sent as the plugin now decides.
#[test]
fn plugin_error_deliveries_are_re_run_once_the_plugin_is_fixed() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        &subscription(
            "guarded",
            &receiver.url("guarded"),
            "[[subscriptions.plugins]]\nplugin = \"alarm-filter\"\n\
             config = { categories = [\"security\"] }\n",
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let admin = |method: &str, path: &str, body: &[u8]| {
        request(api, method, path, &["Authorization: Bearer adm1n"], body)
    };
    for (id, category) in [("a1", "security"), ("a2", "security"), ("a3", "technical")] {
        let event = json!({"id": id, "type": "alarm", "data": {"alarm_category": category}});
        let (status, body) = post(api, "/v1/events", event.to_string().as_bytes());
        assert_eq!(status, 202, "{body}");
    }
    let failed = || {
        admin("GET", "/v1/deliveries?status=plugin_error", b"").1["deliveries"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(
        hookhost_tests::wait_until(WAIT, || failed() == 3).is_some(),
        "{} plugin_error deliveries",
        failed()
    );
    // Producer ids: the delivery id begins with the event's arrival.
    let delivery_of = |event_id: &str| {
        let (status, event) = admin("GET", &format!("/v1/events/{event_id}"), b"");
        assert_eq!(status, 200, "{event}");
        let at = event["received_at_ms"].as_u64().expect("received_at_ms");
        hookhost_core::pipeline::job_id(event_id, at, "guarded")
    };
    let first = delivery_of("a1");
    // Still missing: the re-run fails again and says why.
    let (status, body) = admin("POST", &format!("/v1/deliveries/{first}/resend"), b"");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("still fail"),
        "{body}"
    );
    std::fs::copy(
        hookhost_tests::built_plugin("alarm-filter"),
        root.path().join("plugins/alarm-filter.wasm"),
    )
    .unwrap();
    server.wait_for(&["plugin loaded", "alarm-filter"], WAIT);
    let (status, body) = admin("POST", &format!("/v1/deliveries/{first}/resend"), b"");
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    receiver.wait_count("guarded", 1, WAIT);
    let (status, body) = admin(
        "POST",
        "/v1/subscriptions/guarded/recover",
        br#"{"since": "1970-01-01T00:00:00Z"}"#,
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ids"], json!([delivery_of("a2")]));
    assert_eq!(body["filtered"], json!([delivery_of("a3")]));
    assert_eq!(body["still_failing"], json!([]));
    receiver.wait_count("guarded", 2, WAIT);
    let mut sent: Vec<String> = receiver
        .bodies("guarded")
        .iter()
        .map(|b| b["data"]["alarm_category"].as_str().unwrap().to_string())
        .collect();
    sent.sort();
    assert_eq!(sent, ["security", "security"]);
    assert_eq!(failed(), 0);
    stop(server);
}

/// A receiver's rate limit: 429 with `Retry-After: 2` makes the delivery
/// wait that long, and every other delivery of the subscription with it.
#[test]
fn a_429_with_retry_after_pauses_the_subscription_that_long() {
    let receiver = Receiver::start();
    receiver.script("limited", Answer::RetryAfter(vec![(429, "2".into())], 200));
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &subscription(
            "limited",
            &receiver.url("limited"),
            "envelope = \"plain\"\nmax_in_flight = 1\n",
        ),
    );
    let server = hookhost_tests::InProcess::start(&config);
    let (status, _) = post(
        server.addr,
        "/v1/events",
        br#"{"id": "first", "type": "report", "data": {"n": "first"}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("limited", 1, WAIT);
    // Sent while the subscription is paused: it waits too.
    let (status, _) = post(
        server.addr,
        "/v1/events",
        br#"{"id": "second", "type": "report", "data": {"n": "second"}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("limited", 3, WAIT);
    let got: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "limited")
        .collect();
    let limited_at = got[0].at_ms;
    for later in &got[1..] {
        // The endpoint asked for 2 s; the clock reads whole milliseconds.
        assert!(
            later.at_ms + 5 >= limited_at + 2000,
            "an attempt {} ms after the 429",
            later.at_ms - limited_at
        );
    }
    // Which event each attempt carried (producer ids are not in the
    // plain envelope; the data says).
    let sent: Vec<String> = got
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["n"].to_string())
        .collect();
    assert_eq!(sent[0], "\"first\"", "{sent:?}");
    assert!(sent[1..].contains(&"\"second\"".to_string()), "{sent:?}");
    // A retry keeps its delivery's id.
    let first_id = &got[0].headers["webhook-id"];
    assert_eq!(
        got.iter()
            .filter(|r| &r.headers["webhook-id"] == first_id)
            .count(),
        sent.iter().filter(|n| *n == "\"first\"").count()
    );
    server.stop();
}

/// An endpoint that answers 410 Gone is disabled at once; later deliveries
/// wait as `paused` and go out when the subscription is enabled again. One
/// that only fails, long and often enough, is disabled too.
#[test]
fn gone_and_failing_endpoints_are_disabled_and_re_enabling_sends_what_waited() {
    let receiver = Receiver::start();
    receiver.script("gone", Answer::Status(410));
    receiver.script("failing", Answer::Status(500));
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        &format!(
            "[[subscriptions]]\nid = \"gone\"\nurl = \"{}\"\ntypes = [\"gone.*\"]\n\
             envelope = \"plain\"\nintervals = {{ \"*\" = \"direct\" }}\n\
             [[subscriptions]]\nid = \"failing\"\nurl = \"{}\"\ntypes = [\"failing.*\"]\n\
             envelope = \"plain\"\nintervals = {{ \"*\" = \"direct\" }}\n\
             [subscriptions.retry]\nmax_retries = 0\n\
             [subscriptions.health]\ndisable_after_ms = 500\nmin_failures = 3\n",
            receiver.url("gone"),
            receiver.url("failing"),
        ),
    );
    let server = hookhost_tests::InProcess::start(&config);
    let api = server.addr;
    let admin = |method: &str, path: &str| {
        request(api, method, path, &["Authorization: Bearer adm1n"], b"")
    };
    let endpoint =
        |id: &str| admin("GET", &format!("/v1/subscriptions/{id}")).1["endpoint"].clone();

    let (status, _) = post(
        api,
        "/v1/events",
        br#"{"id": "g1", "type": "gone.a", "data": {}}"#,
    );
    assert_eq!(status, 202);
    let disabled = hookhost_tests::wait_until(WAIT, || !endpoint("gone")["disabled"].is_null());
    assert!(disabled.is_some(), "{}", endpoint("gone"));
    assert!(
        endpoint("gone")["disabled"]["reason"]
            .as_str()
            .unwrap()
            .contains("410 Gone")
    );
    // Later events wait, paused; nothing more reaches the endpoint.
    for id in ["g2", "g3"] {
        let event = json!({"id": id, "type": "gone.a", "data": {}});
        let (status, _) = post(api, "/v1/events", event.to_string().as_bytes());
        assert_eq!(status, 202);
    }
    let paused = || {
        admin("GET", "/v1/deliveries?subscription=gone&status=paused").1["deliveries"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(
        hookhost_tests::wait_until(WAIT, || paused() == 2).is_some(),
        "{} paused",
        paused()
    );
    assert_eq!(receiver.count("gone"), 1);
    let samples = metrics(api);
    assert_eq!(
        samples.get("hookhost_endpoints_disabled"),
        Some(&1.0),
        "{samples:?}"
    );
    // The receiver is back; enabling sends what waited.
    receiver.script("gone", Answer::Status(200));
    let (status, body) = admin("POST", "/v1/subscriptions/gone/enable");
    assert_eq!(status, 200, "{body}");
    assert!(body["endpoint"]["disabled"].is_null(), "{body}");
    receiver.wait_count("gone", 3, WAIT);
    assert_eq!(paused(), 0);

    // Only failures, at least 3 over at least 500 ms: disabled.
    let mut n = 0;
    let failed_out = hookhost_tests::wait_until(WAIT, || {
        n += 1;
        let event = json!({"id": format!("f{n}"), "type": "failing.a", "data": {}});
        post(api, "/v1/events", event.to_string().as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        !endpoint("failing")["disabled"].is_null()
    });
    assert!(failed_out.is_some(), "{}", endpoint("failing"));
    let reason = endpoint("failing")["disabled"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("failed attempts since"), "{reason}");
    server.stop();
}

/// The default failure streak, on a clock the test moves: 12 failures in
/// a moment do not disable an endpoint; failures still, 5 days later, do
/// (Svix's rule: 5 days of only failures, here with at least 10 of them).
#[test]
fn a_failure_streak_of_five_days_disables_the_endpoint_on_the_moved_clock() {
    use hookhost_core::clock::{Clock, ManualClock, now_ms};
    let receiver = Receiver::start();
    receiver.script("down", Answer::Status(500));
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        &format!(
            "[[subscriptions]]\nid = \"down\"\nurl = \"{}\"\ntypes = [\"*\"]\n\
             envelope = \"plain\"\n[subscriptions.retry]\nmax_retries = 0\n",
            receiver.url("down"),
        ),
    );
    let clock = std::sync::Arc::new(ManualClock::new(now_ms()));
    let server = hookhost_tests::InProcess::start_with_clock(
        &config,
        clock.clone() as std::sync::Arc<dyn Clock>,
    );
    let api = server.addr;
    let endpoint = || {
        request(
            api,
            "GET",
            "/v1/subscriptions/down",
            &["Authorization: Bearer adm1n"],
            b"",
        )
        .1["endpoint"]
            .clone()
    };
    let send = |id: String| {
        let event = json!({"id": id, "type": "report", "data": {}});
        let (status, body) = post(api, "/v1/events", event.to_string().as_bytes());
        assert_eq!(status, 202, "{body}");
    };
    for n in 0..12 {
        send(format!("d{n}"));
    }
    receiver.wait_count("down", 12, WAIT);
    let counted = hookhost_tests::wait_until(WAIT, || endpoint()["failures"] == 12);
    assert!(counted.is_some(), "{}", endpoint());
    assert!(endpoint()["disabled"].is_null(), "{}", endpoint());

    clock.advance(Duration::from_secs(5 * 24 * 3600));
    send("d12".into());
    receiver.wait_count("down", 13, WAIT);
    let disabled = hookhost_tests::wait_until(WAIT, || !endpoint()["disabled"].is_null());
    assert!(disabled.is_some(), "{}", endpoint());
    let reason = endpoint()["disabled"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("13 failed attempts since"), "{reason}");
    // Disabled: the next delivery waits, paused, and is not attempted.
    send("d13".into());
    let paused = hookhost_tests::wait_until(WAIT, || {
        request(
            api,
            "GET",
            "/v1/deliveries?status=paused",
            &["Authorization: Bearer adm1n"],
            b"",
        )
        .1["total"]
            == 1
    });
    assert!(paused.is_some());
    assert_eq!(receiver.count("down"), 13);
    server.stop();
}

/// Client text cannot forge log lines: an event id with a newline and a
/// terminal escape reaches the text log (the "plugin failed" warning names
/// the event) escaped, on one line.
#[test]
fn client_text_in_the_log_is_escaped() {
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "",
        &subscription(
            "guarded",
            "http://127.0.0.1:9/x",
            "[[subscriptions.plugins]]\nplugin = \"not-installed\"\n",
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let forged =
        "evt_1\n2026-12-02T00:00:00.000000Z  INFO hookhost: all deliveries verified\u{1b}[2K";
    let event = json!({"id": forged, "type": "report", "data": {}});
    let (status, body) = post(api, "/v1/events", event.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    let line = server.wait_for(&["plugin failed"], WAIT);
    assert!(
        line.contains(
            r"evt_1\n2026-12-02T00:00:00.000000Z  INFO hookhost: all deliveries verified\u{1b}[2K"
        ),
        "{line}"
    );
    let later = server.collect_for(Duration::from_millis(300));
    assert!(
        server
            .log
            .iter()
            .chain(&later)
            .all(|l| !l.starts_with("2026-12-02T00:00:00.000000Z") && !l.contains('\u{1b}')),
        "{:#?}",
        server.log
    );
    stop(server);
}

/// A subscription's own headers (an API key the receiver wants) go with
/// every attempt; the API shows their names, never their values; a header
/// hookhost sets itself cannot be replaced.
#[test]
fn custom_headers_are_sent_and_never_shown() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        &subscription(
            "keyed",
            &receiver.url("keyed"),
            "headers = { \"X-Api-Key\" = \"k3y-for-the-receiver\" }\n",
        ),
    );
    let server = hookhost_tests::InProcess::start(&config);
    let (status, _) = post(
        server.addr,
        "/v1/events",
        br#"{"type": "report", "data": {}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("keyed", 1, WAIT);
    let got = &receiver.received()[0];
    assert_eq!(got.headers["x-api-key"], "k3y-for-the-receiver");
    let (_, shown) = request(
        server.addr,
        "GET",
        "/v1/subscriptions/keyed",
        &["Authorization: Bearer adm1n"],
        b"",
    );
    assert_eq!(shown["headers"], json!({"X-Api-Key": "(set)"}), "{shown}");
    assert!(!shown.to_string().contains("k3y"), "{shown}");
    let (status, body) = request(
        server.addr,
        "POST",
        "/v1/subscriptions",
        &["Authorization: Bearer adm1n"],
        json!({"id": "sneaky", "url": receiver.url("x"), "types": ["*"], "seed": "s",
               "headers": {"webhook-signature": "v1,forged"}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("headers.webhook-signature"),
        "{body}"
    );
    server.stop();
}

/// A rate limit of 10 per second, measured at the receiver: 31 deliveries
/// (burst 1) take at least 3 s, whatever the in-flight limit allows.
#[test]
fn a_rate_limit_paces_attempts_at_the_receiver() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &subscription(
            "paced",
            &receiver.url("paced"),
            "max_in_flight = 16\nrate_limit = { per_second = 10, burst = 1 }\n",
        ),
    );
    let server = hookhost_tests::InProcess::start(&config);
    let events: Vec<Value> = (0..31)
        .map(|i| json!({"type": "report", "data": {"n": i}}))
        .collect();
    post_events(server.addr, events);
    receiver.wait_count("paced", 31, WAIT);
    let mut at: Vec<u64> = receiver.received().iter().map(|r| r.at_ms).collect();
    at.sort_unstable();
    let spread_ms = at[30] - at[0];
    // Never faster than the limit (10 % slack for clock reading); slower
    // is possible on a loaded machine and not asserted.
    assert!(
        spread_ms >= 2700,
        "31 deliveries in {spread_ms} ms: faster than 10/s"
    );
    eprintln!(
        "rate limit 10/s: 30 intervals in {spread_ms} ms ({:.2}/s)",
        30_000.0 / spread_ms as f64
    );
    server.stop();
}

/// hookhost's own events reach the operator's endpoint, signed like any
/// delivery: a delivery exhausted, the endpoint disabled (410), enabled
/// again. A customer's `*` never receives them, and clients cannot post them.
#[test]
fn operational_events_reach_the_operator_signed_and_never_a_customers_wildcard() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = Receiver::start();
    receiver.script("customer", Answer::Status(410));
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        &format!(
            "[[subscriptions]]\nid = \"ops\"\nurl = \"{}\"\ntypes = [\"hookhost.*\"]\ntier = \"partner\"\n\
             envelope = \"plain\"\nsecrets = [\"{SECRET}\"]\n\
             [[subscriptions]]\nid = \"customer\"\nurl = \"{}\"\ntypes = [\"*\"]\ntier = \"partner\"\n\
             envelope = \"plain\"\nintervals = {{ \"*\" = \"direct\" }}\n",
            receiver.url("ops"),
            receiver.url("customer"),
        ),
    );
    let server = hookhost_tests::InProcess::start(&config);
    let api = server.addr;
    let (status, body) = post(
        api,
        "/v1/events",
        br#"{"type": "hookhost.delivery.exhausted", "data": {}}"#,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("reserved"),
        "{body}"
    );
    let (status, _) = post(
        api,
        "/v1/events",
        br#"{"id": "e1", "type": "report", "data": {}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("ops", 2, WAIT);
    let (status, _) = request(
        api,
        "POST",
        "/v1/subscriptions/customer/enable",
        &["Authorization: Bearer adm1n"],
        b"",
    );
    assert_eq!(status, 200);
    receiver.wait_count("ops", 3, WAIT);
    let ops: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "ops")
        .collect();
    let mut types: Vec<String> = Vec::new();
    for r in &ops {
        let check = hookhost_core::verify::standard(
            &hookhost_core::verify::Delivery {
                body: r.body.clone(),
                headers: r.headers.clone(),
            },
            SECRET,
        );
        assert!(check.ok, "{check:?}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        types.push(body["type"].as_str().unwrap().to_string());
        assert_eq!(body["subscription_id"], "customer", "{body}");
    }
    types.sort();
    assert_eq!(
        types,
        [
            "hookhost.delivery.exhausted",
            "hookhost.subscription.disabled",
            "hookhost.subscription.recovered"
        ]
    );
    let exhausted: Value = serde_json::from_str(
        &ops.iter()
            .find(|r| r.body.contains("exhausted"))
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(exhausted["event_id"], "e1");
    assert_eq!(exhausted["last_status"], 410);
    // The customer's `*` got its own event only.
    assert!(
        receiver.bodies("customer").iter().all(|b| !b["type"]
            .as_str()
            .unwrap_or_default()
            .starts_with("hookhost.")),
        "{:?}",
        receiver.bodies("customer")
    );
    server.stop();
}

/// `hookhost.delivery.failing` comes once, after `failing_after_attempts`
/// failed attempts of a delivery still being retried; `exhausted` follows
/// when its retries run out.
#[test]
fn a_failing_delivery_is_announced_once_before_it_is_exhausted() {
    let receiver = Receiver::start();
    receiver.script("down", Answer::Status(503));
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "failing_after_attempts = 2\n",
        "",
        &format!(
            "[[subscriptions]]\nid = \"ops\"\nurl = \"{}\"\ntypes = [\"hookhost.*\"]\ntier = \"partner\"\n\
             envelope = \"plain\"\n\
             [[subscriptions]]\nid = \"down\"\nurl = \"{}\"\ntypes = [\"report\"]\n\
             envelope = \"plain\"\nintervals = {{ \"*\" = \"direct\" }}\n\
             [subscriptions.retry]\nmax_retries = 3\nbackoff_ms = 10\n",
            receiver.url("ops"),
            receiver.url("down"),
        ),
    );
    let server = hookhost_tests::InProcess::start(&config);
    let (status, _) = post(
        server.addr,
        "/v1/events",
        br#"{"id": "r1", "type": "report", "data": {}}"#,
    );
    assert_eq!(status, 202);
    receiver.wait_count("down", 4, WAIT);
    receiver.wait_count("ops", 2, WAIT);
    std::thread::sleep(Duration::from_millis(300)); // nothing more may come
    let ops = receiver.bodies("ops");
    let types: Vec<&str> = ops.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 2, "{ops:?}");
    assert!(types.contains(&"hookhost.delivery.failing"), "{types:?}");
    assert!(types.contains(&"hookhost.delivery.exhausted"), "{types:?}");
    let failing = ops
        .iter()
        .find(|b| b["type"] == "hookhost.delivery.failing")
        .unwrap();
    assert_eq!(failing["attempts"], 2, "{failing}");
    assert_eq!(failing["last_status"], 503, "{failing}");
    server.stop();
}

/// A plugin file refused by the hot reloader becomes a
/// `hookhost.plugin.refused` event at the operator's endpoint.
#[test]
fn a_refused_plugin_file_is_announced_to_the_operator() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "",
        &format!(
            "[[subscriptions]]\nid = \"ops\"\nurl = \"{}\"\ntypes = [\"hookhost.plugin.*\"]\n\
             tier = \"partner\"\nenvelope = \"plain\"\n",
            receiver.url("ops"),
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    server.api_addr(WAIT);
    std::fs::write(root.path().join("plugins/broken.wasm"), b"not a component").unwrap();
    receiver.wait_count("ops", 1, WAIT);
    let event = &receiver.bodies("ops")[0];
    assert_eq!(event["type"], "hookhost.plugin.refused", "{event}");
    assert_eq!(event["plugin"], "broken", "{event}");
    assert_eq!(event["previous_version_serving"], false, "{event}");
    assert!(
        !event["error"].as_str().unwrap_or_default().is_empty(),
        "{event}"
    );
    stop(server);
}
