//! Ingest keeps pace with delivery (`server.ingest_backlog`): at saturation
//! events wait at the door rather than in a queue behind it, and a slow
//! endpoint's queue never holds the door shut. The real binary, a real
//! receiver on 127.0.0.1, both backends.

use std::time::Duration;

use hookhost_tests::Running;
use hookhost_tests::http::{Answer, Receiver, metrics, post_events};
use serde_json::json;

const WAIT: Duration = hookhost_tests::PATIENCE;

fn config(root: &std::path::Path, server: &str, url: &str, max_in_flight: usize) -> String {
    config_with(
        root,
        server,
        url,
        &format!("max_in_flight = {max_in_flight}\n"),
    )
}

fn config_with(root: &std::path::Path, server: &str, url: &str, subscription: &str) -> String {
    hookhost_tests::write_config(
        root,
        "",
        &format!("shutdown_grace_ms = 200\n{server}"),
        &format!(
            "[[subscriptions]]\nid = \"s\"\nurl = \"{url}\"\ntypes = [\"*\"]\n\
             seed = \"s33d\"\nintervals = {{ \"*\" = \"direct\" }}\n{subscription}"
        ),
    )
}

fn post_one(api: std::net::SocketAddr, n: usize) {
    post_events(api, vec![json!({"type": "report", "data": {"n": n}})]);
}

fn sample(api: std::net::SocketAddr, name: &str) -> f64 {
    metrics(api).get(name).copied().unwrap_or(0.0)
}

#[test]
fn at_saturation_the_queue_behind_ingest_stays_at_its_bound() {
    // One slot, 3 ms an answer: ~300 deliveries/s, far below what 16
    // clients can post, so without the bound the queue would grow with
    // every request. The wait is long enough never to run out here.
    const BOUND: usize = 16;
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 25;
    let receiver = Receiver::start();
    receiver.script("s", Answer::Slow(Duration::from_millis(3), 200));
    let root = tempfile::tempdir().unwrap();
    let config = config(
        root.path(),
        &format!("ingest_backlog = {BOUND}\ningest_wait_ms = 20000\n"),
        &receiver.url("s"),
        1,
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    // Its first attempts tell the server the endpoint keeps pace.
    for n in 0..5 {
        post_one(api, n);
    }
    receiver.wait_count("s", 5, WAIT);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..PER_CLIENT {
                    post_one(api, 1000 * (c + 1) + i);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    let total = 5 + CLIENTS * PER_CLIENT;
    let undelivered = total - receiver.count("s");
    // The bound, a request let in per client while at it, the one in flight.
    assert!(
        undelivered <= BOUND + CLIENTS + 1,
        "{undelivered} of {total} events still undelivered when the last POST was answered"
    );
    assert!(
        sample(api, "hookhost_ingest_backlog_waits_total{ended=\"let_in\"}") > 0.0,
        "requests waited at the door"
    );
    receiver.wait_count("s", total, WAIT);
    assert_eq!(receiver.count("s"), total, "every event delivered once");
    server.kill9();
}

#[test]
fn a_stalled_endpoint_does_not_hold_ingest() {
    let receiver = Receiver::start();
    receiver.script("s", Answer::Status(200));
    let root = tempfile::tempdir().unwrap();
    let config = config(
        root.path(),
        "ingest_backlog = 8\ningest_wait_ms = 200\n",
        &receiver.url("s"),
        2,
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    // Quick at first: its queue counts.
    for n in 0..20 {
        post_one(api, n);
    }
    receiver.wait_count("s", 20, WAIT);
    // Then it stops answering: its two slots hang, the rest queue.
    receiver.script("s", Answer::Slow(Duration::from_secs(3600), 200));
    for n in 20..80 {
        post_one(api, n);
    }
    let after = metrics(api);
    let waited_out = after
        .get("hookhost_ingest_backlog_waits_total{ended=\"waited_out\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(
        waited_out >= 1.0,
        "a request waited its longest wait once the endpoint stalled"
    );
    // Once judged stalled its queue no longer counts: the one request
    // that waited it out is all it cost (requests here come one by one).
    assert_eq!(waited_out, 1.0, "{after:?}");
    hookhost_tests::wait_until(WAIT, || {
        let m = metrics(api);
        m.get("hookhost_pipeline_events_total").copied() == Some(80.0)
            && m.get("hookhost_ingest_backlog").copied() == Some(0.0)
    })
    .expect("the stalled endpoint's queue is not in the backlog");
    assert!(
        sample(api, "hookhost_delivery_queue_depth") >= 50.0,
        "its deliveries still wait for it"
    );
    server.kill9();
}

#[test]
fn deliveries_paced_by_a_rate_limit_do_not_count() {
    // The endpoint answers at once, but the subscription may send 2 a
    // second: its queue is its own pace, not the CPU's.
    let receiver = Receiver::start();
    receiver.script("s", Answer::Status(200));
    let root = tempfile::tempdir().unwrap();
    let config = config_with(
        root.path(),
        "ingest_backlog = 16\ningest_wait_ms = 20000\n",
        &receiver.url("s"),
        "rate_limit = { per_second = 2, burst = 1 }\n",
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    post_one(api, 0);
    receiver.wait_count("s", 1, WAIT);
    for n in 1..40 {
        post_one(api, n);
    }
    // Once the pipeline is through, the paced deliveries (2 a second)
    // still queue, and none of them is in the backlog. (Requests may have
    // waited briefly behind the pipeline on a busy machine: that is the
    // pipeline's part, not the queue's.)
    hookhost_tests::wait_until(WAIT, || {
        metrics(api).get("hookhost_pipeline_events_total").copied() == Some(40.0)
    })
    .expect("the pipeline runs every event");
    let m = metrics(api);
    assert!(
        m["hookhost_delivery_queue_depth"] >= 20.0,
        "the rate limit keeps a queue: {m:?}"
    );
    assert_eq!(
        m.get("hookhost_ingest_backlog"),
        Some(&0.0),
        "the paced queue is not in the backlog: {m:?}"
    );
    assert_eq!(
        m.get("hookhost_ingest_backlog_waits_total{ended=\"waited_out\"}"),
        Some(&0.0),
        "no request waited its longest wait: {m:?}"
    );
    assert!(
        receiver.count("s") < 40,
        "the rate limit still paces the deliveries"
    );
    server.kill9();
}
