//! Retention on a server in this process whose clock the test moves: each
//! kind of record goes after its own period, oldest first, and pending
//! deliveries stay whatever their age.

use std::sync::Arc;
use std::time::Duration;

use hookhost_core::clock::{Clock, ManualClock, now_ms};
use hookhost_tests::http::{Answer, Receiver, get, post};
use hookhost_tests::{InProcess, PATIENCE, wait_until};
use serde_json::{Value, json};

const ADMIN: &str = "Authorization: Bearer r3tention";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn total(addr: std::net::SocketAddr, query: &str) -> u64 {
    let (status, body) = get(addr, &format!("/v1/deliveries?{query}"), &[ADMIN]);
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap_or(0)
}

fn found(addr: std::net::SocketAddr, path: &str) -> bool {
    let (status, body) = get(addr, path, &[ADMIN]);
    assert!(status == 200 || status == 404, "{path}: {status} {body}");
    status == 200
}

#[test]
fn each_kind_goes_after_its_own_period_and_pending_deliveries_stay() {
    let receiver = Receiver::start();
    receiver.script("gone", Answer::Status(400));
    receiver.script("down", Answer::Status(503));
    let root = tempfile::tempdir().unwrap();
    let sub = |id: &str, extra: &str| {
        format!(
            "[[subscriptions]]\nid = \"{id}\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n{extra}",
            receiver.url(id)
        )
    };
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"r3tention\"\n",
        &format!(
            "[retention]\ndelivered = \"1d\"\nevents = \"2d\"\ndead_letters = \"3d\"\n\
             every = \"50ms\"\ncount_every = \"50ms\"\n{}{}{}",
            sub("ok", ""),
            sub("gone", ""),
            // Retried in an hour of real time: pending for the whole test.
            sub(
                "down",
                "[subscriptions.retry]\nmax_retries = 5\nbackoff = \"fixed\"\nbackoff_ms = 3600000\n"
            ),
        ),
    );
    let clock = Arc::new(ManualClock::new(now_ms()));
    let server = InProcess::start_with_clock(&config, clock.clone() as Arc<dyn Clock>);
    let api = server.addr;
    let ids: Vec<String> = (0..3).map(|i| format!("evt_r{i}")).collect();
    for id in &ids {
        let (status, body) = post(
            api,
            "/v1/events",
            json!({"id": id, "type": "report", "data": {"n": 1}})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(status, 202, "{body}");
    }
    for path in ["ok", "gone", "down"] {
        receiver.wait_count(path, 3, PATIENCE);
    }
    wait_until(PATIENCE, || {
        total(api, "status=delivered") == 3
            && total(api, "status=dead") == 3
            && total(api, "status=pending") == 3
    })
    .expect("every delivery's state is stored");
    let delivered: Value = get(api, "/v1/deliveries?status=delivered", &[ADMIN]).1;
    let delivered_id = delivered["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A day and a half on: delivered ones are past their period; events
    // (2 days) and dead letters (3 days) are not, and the clock stays here
    // until they are checked, so no pass can remove them meanwhile.
    clock.advance(DAY + DAY / 2);
    wait_until(PATIENCE, || total(api, "status=delivered") == 0)
        .expect("delivered deliveries removed");
    assert!(!found(api, &format!("/v1/deliveries/{delivered_id}")));
    assert_eq!(total(api, "status=dead"), 3);
    assert_eq!(total(api, "status=pending"), 3);
    for id in &ids {
        assert!(found(api, &format!("/v1/events/{id}")), "{id} kept");
    }

    clock.advance(DAY);
    wait_until(PATIENCE, || {
        ids.iter()
            .all(|id| !found(api, &format!("/v1/events/{id}")))
    })
    .expect("events removed");
    let (_, dead) = get(api, "/v1/dead-letters", &[ADMIN]);
    assert_eq!(
        dead["dead_letters"].as_array().map(Vec::len),
        Some(3),
        "{dead}"
    );

    clock.advance(DAY);
    wait_until(PATIENCE, || {
        get(api, "/v1/dead-letters", &[ADMIN]).1["dead_letters"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .expect("dead letters removed");
    // Pending deliveries are never removed, however old.
    assert_eq!(total(api, "status=pending"), 3);
    assert_eq!(receiver.count("ok"), 3);
    server.stop();
}
