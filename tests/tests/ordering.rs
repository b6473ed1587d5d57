//! Ordered delivery (`ordering = { key = ... }`): one key's deliveries go
//! one at a time in ingest order, through 503s and a `kill -9`; a dead one
//! holds its key when asked to, until it is re-sent.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hookhost_tests::http::{Answer, Received, Receiver, post, post_events, request};
use hookhost_tests::{PATIENCE, Running, wait_until};
use serde_json::{Value, json};

const KEYS: usize = 20;
const PER_KEY: usize = 50;
const ADMIN: &str = "Authorization: Bearer 0rdered";

fn config(root: &std::path::Path, receiver: &Receiver, ordering: &str) -> String {
    hookhost_tests::write_config(
        root,
        "",
        "admin_token = \"0rdered\"\n",
        &format!(
            "[[subscriptions]]\nid = \"ordered\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             max_in_flight = 64\nordering = {ordering}\n\
             [subscriptions.retry]\nmax_retries = 1000\nbackoff = \"fixed\"\nbackoff_ms = 5\n",
            receiver.url("ordered")
        ),
    )
}

/// (key, n) of a received delivery (the `plain` envelope: data's fields
/// beside `type`).
fn slot(r: &Received) -> (String, u64) {
    let body: Value = serde_json::from_str(&r.body).expect("JSON body");
    (
        body["key"].as_str().expect("a key").to_string(),
        body["n"].as_u64().expect("an n"),
    )
}

/// Every attempt of (key, n) came after (key, n - 1) was answered 2xx —
/// retries and repeats after the crash included; returns how many distinct
/// (key, n) were answered 2xx.
fn check_order(received: &[Received]) -> usize {
    let mut delivered: HashMap<String, Vec<bool>> = HashMap::new();
    for r in received {
        let (key, n) = slot(r);
        let done = delivered
            .entry(key.clone())
            .or_insert_with(|| vec![false; PER_KEY]);
        let n = n as usize;
        assert!(
            done[..n].iter().all(|d| *d),
            "key {key}: n = {n} was attempted before every earlier one was delivered ({:?})",
            done.iter().position(|d| !d)
        );
        if (200..300).contains(&r.status) {
            done[n] = true;
        }
    }
    delivered.values().flatten().filter(|d| **d).count()
}

#[test]
fn one_thousand_events_over_twenty_keys_keep_per_key_order_through_503s_and_a_kill_9() {
    let receiver = Receiver::start();
    receiver.script(
        "ordered",
        Answer::Flaky {
            percent: 20,
            status: 503,
        },
    );
    let root = tempfile::tempdir().unwrap();
    let config = config(root.path(), &receiver, "{ key = \"/key\" }");
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    // Ingest order: n rises per key; keys interleave.
    for batch in 0..(KEYS * PER_KEY / 50) {
        let events: Vec<Value> = (0..50)
            .map(|i| {
                let i = batch * 50 + i;
                json!({"type": "report", "data": {"key": format!("k{:02}", i % KEYS), "n": i / KEYS}})
            })
            .collect();
        post_events(api, events);
    }
    // Well into delivery, not at its end: kill -9.
    wait_until(PATIENCE, || {
        receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .count()
            >= 300
    })
    .expect("300 deliveries before the crash");
    server.kill9();
    let before = receiver.received();
    let delivered_before = check_order(&before);
    assert!(
        delivered_before < KEYS * PER_KEY,
        "everything was delivered before the crash ({delivered_before}); nothing was tested"
    );

    let mut server = Running::start(&["serve", "--config", &config]);
    server.api_addr(PATIENCE);
    let start = Instant::now();
    while check_order(&receiver.received()) < KEYS * PER_KEY {
        assert!(
            start.elapsed() < PATIENCE * 3,
            "{} of {} delivered after restart",
            check_order(&receiver.received()),
            KEYS * PER_KEY
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = receiver.received();
    let failed = all.iter().filter(|r| r.status == 503).count();
    assert!(
        failed > 100,
        "only {failed} 503s: the retries were not tested"
    );
    // Keys flowed in parallel: deliveries of different keys interleave
    // (order within a key says nothing about other keys).
    let first_keys: std::collections::BTreeSet<String> =
        all.iter().take(KEYS * 2).map(|r| slot(r).0).collect();
    assert!(first_keys.len() > 1, "one key at a time: {first_keys:?}");
    assert!(server.terminate(PATIENCE).success());
}

#[test]
fn a_dead_delivery_holds_its_key_until_it_is_re_sent_and_other_keys_flow() {
    let receiver = Receiver::start();
    // The first request is refused (400: dead at once), every other one OK.
    receiver.script("ordered", Answer::Sequence(vec![400], 200));
    let root = tempfile::tempdir().unwrap();
    let config = config(
        root.path(),
        &receiver,
        "{ key = \"/key\", on_dead = \"hold\" }",
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let send = |api, key: &str, n: u64| {
        let event =
            json!({"id": format!("{key}-{n}"), "type": "report", "data": {"key": key, "n": n}});
        let (status, body) = post(api, "/v1/events", event.to_string().as_bytes());
        assert_eq!(status, 202, "{body}");
    };
    send(api, "a", 0);
    receiver.wait_count("ordered", 1, PATIENCE);
    let dead = |server_api| {
        let (_, body) = request(server_api, "GET", "/v1/dead-letters", &[ADMIN], b"");
        body["dead_letters"].as_array().cloned().unwrap_or_default()
    };
    wait_until(PATIENCE, || dead(api).len() == 1).expect("a-0 is dead");
    for n in 1..4 {
        send(api, "a", n);
    }
    send(api, "b", 0);
    receiver.wait_count("ordered", 2, PATIENCE);
    // b went; a's later ones wait (b's delivery came after them in ingest
    // order, so the receiver having it means a's had their chance).
    let got: Vec<(String, u64)> = receiver.received().iter().map(slot).collect();
    assert_eq!(got, [("a".to_string(), 0), ("b".to_string(), 0)]);
    // b-0's delivered state is stored just after the receiver has it.
    let pending = |api| {
        let (status, body) = request(api, "GET", "/v1/deliveries?status=pending", &[ADMIN], b"");
        assert_eq!(status, 200);
        body
    };
    wait_until(PATIENCE, || pending(api)["total"] == 3)
        .unwrap_or_else(|| panic!("a-1..a-3 wait, and only they: {}", pending(api)));

    // Held across a restart too.
    assert!(server.terminate(PATIENCE).success());
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    send(api, "b", 1);
    receiver.wait_count("ordered", 3, PATIENCE);
    assert_eq!(slot(&receiver.received()[2]), ("b".to_string(), 1));

    let id = dead(api)[0]["id"].as_str().unwrap().to_string();
    let (status, body) = request(
        api,
        "POST",
        &format!("/v1/deliveries/{id}/resend"),
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 202, "{body}");
    receiver.wait_count("ordered", 7, PATIENCE);
    let a: Vec<u64> = receiver
        .received()
        .iter()
        .map(slot)
        .filter(|(key, _)| key == "a")
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        a,
        [0, 0, 1, 2, 3],
        "a-0 refused, re-sent, then the rest in order"
    );
    let by_status: BTreeMap<u16, usize> =
        receiver
            .received()
            .iter()
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.status).or_default() += 1;
                m
            });
    assert_eq!(by_status, BTreeMap::from([(200, 6), (400, 1)]));
    assert!(server.terminate(PATIENCE).success());
}

/// Deliveries made while a subscription ordered them still go out once it
/// no longer orders (restarted with `ordering` removed): on PostgreSQL the
/// leader turns them into unordered ones (no node claims an ordered one),
/// on sled the refill loads them.
#[test]
fn deliveries_of_a_subscription_that_stopped_ordering_still_go_out() {
    let receiver = Receiver::start();
    receiver.script("ordered", Answer::Status(503));
    let root = tempfile::tempdir().unwrap();
    let config = config(root.path(), &receiver, "{ key = \"/key\" }");
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let events: Vec<Value> = (0..10)
        .map(|n| json!({"type": "report", "data": {"key": "k", "n": n}}))
        .collect();
    post_events(api, events);
    // The key's head is being retried; the other nine wait behind it.
    receiver.wait_count("ordered", 3, PATIENCE);
    assert!(receiver.received().iter().all(|r| slot(r).1 == 0));
    assert!(server.terminate(PATIENCE).success());

    let text = std::fs::read_to_string(&config).unwrap();
    let unordered = text.replace("ordering = { key = \"/key\" }\n", "");
    assert_ne!(text, unordered, "the config names the ordering");
    std::fs::write(&config, unordered).unwrap();
    receiver.script("ordered", Answer::Status(200));
    let mut server = Running::start(&["serve", "--config", &config]);
    server.api_addr(PATIENCE);
    let all = wait_until(PATIENCE, || {
        let delivered: std::collections::BTreeSet<u64> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| slot(r).1)
            .collect();
        delivered.len() == 10
    });
    assert!(
        all.is_some(),
        "deliveries left from the ordering never went out"
    );
    assert!(server.terminate(PATIENCE).success());
}
