//! Cluster mode: several `hookhost serve` processes on one PostgreSQL
//! schema (the tests' own server). Every node takes events in; one leads
//! (pipeline, windows, outage timers, delivery, management API); when it
//! dies another takes over, and nothing acknowledged is lost, no window is
//! closed twice and no outage confirmed twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookhost_tests::http::{Answer, Receiver, get, metrics, post_events, try_post};
use hookhost_tests::{PATIENCE, Running, seed_event, wait_until};
use serde_json::{Value, json};

const ADMIN: &str = "Authorization: Bearer cluster-admin";

/// One config file for every node (as a cluster's nodes share theirs): a
/// sink for everything, alarms in 2 s windows per location, outages
/// confirmed after 1 s offline, the store on the tests' PostgreSQL.
fn cluster_config(root: &std::path::Path, sink: &str) -> String {
    node_config(root, root, sink)
}

/// [`cluster_config`] for a node with its own folder `root` (plugins, data)
/// on the schema of `store_root`.
fn node_config(root: &std::path::Path, store_root: &std::path::Path, sink: &str) -> String {
    hookhost_tests::write_config(
        root,
        "",
        "admin_token = \"cluster-admin\"\nshutdown_grace_ms = 1000\n",
        &format!(
            "[aggregation.types.connection]\ninterval = \"direct\"\n\
             [aggregation.types.connection_confirmed]\ninterval = \"direct\"\n\
             [aggregation.types.alarm]\ninterval = \"2s\"\n\
             [aggregation.outage]\nafter = \"1s\"\n\
             [cluster]\ntakeover_ms = 300\n\
             [[subscriptions]]\nid = \"sink\"\nurl = \"{sink}\"\ntypes = [\"*\"]\n\
             seed = \"cluster-seed\"\nmax_in_flight = 32\n{}",
            hookhost_tests::postgres::store_section(store_root)
        ),
    )
}

/// [`cluster_config`] for the shared-delivery tests: a receiver answering
/// in 300 ms, leases of 1.5 s, `max_jobs` deliveries in memory per node and
/// `max_in_flight` attempts at once per node.
fn slow_sink_config(
    root: &std::path::Path,
    receiver: &Receiver,
    max_jobs: usize,
    max_in_flight: usize,
) -> String {
    receiver.script("sink", Answer::Slow(Duration::from_millis(300), 200));
    let config = cluster_config(root, &receiver.url("sink"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[cluster]\n", "[cluster]\nlease_ms = 1500\n")
            .replace(
                "[delivery]\n",
                &format!("[delivery]\nmax_jobs_in_memory = {max_jobs}\n"),
            )
            .replace(
                "max_in_flight = 32",
                &format!("max_in_flight = {max_in_flight}"),
            ),
    )
    .unwrap();
    config
}

/// Starts a node on `config` and waits until it says whether it leads
/// (`first`: it must) and listens.
fn start_node(config: &str, first: bool) -> (Running, SocketAddr) {
    let mut node = Running::start(&["serve", "--config", config]);
    // Said before the API listens.
    node.wait_for(
        &[if first {
            "this node leads"
        } else {
            "another node leads"
        }],
        PATIENCE,
    );
    let api = node.api_addr(PATIENCE);
    (node, api)
}

/// Whether the node at `api` says it leads (`None`: it does not answer).
fn leads(api: SocketAddr) -> Option<bool> {
    let (status, ready) = hookhost_tests::http::try_get(api, "/readyz")?;
    (status == 200).then(|| ready["leading"].as_bool().unwrap_or(false))
}

/// A standby takes events in and runs their pipeline itself, except those
/// whose outcome is the leader's (an aggregated alarm here), which the
/// leader, woken by its `NOTIFY`, runs; it refuses the management API
/// naming the leader, and takes the lead when the leader is killed.
#[test]
fn a_standby_takes_events_in_names_the_leader_and_leads_once_the_leader_dies() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = cluster_config(root.path(), &receiver.url("sink"));
    // No periodic sweep in this test: the standby's handed-over events
    // reach the leader's pipeline only by its NOTIFY.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[cluster]\n", "[cluster]\nsweep_ms = 3600000\n"),
    )
    .unwrap();
    let mut first = Running::start(&["serve", "--config", &config]);
    // Said before the API listens.
    first.wait_for(&["this node leads"], PATIENCE);
    let first_api = first.api_addr(PATIENCE);
    let mut second = Running::start(&["serve", "--config", &config]);
    second.wait_for(&["another node leads"], PATIENCE);
    let second_api = second.api_addr(PATIENCE);
    assert_eq!(leads(first_api), Some(true));
    assert_eq!(leads(second_api), Some(false));

    // The standby's management API sends callers to the leader.
    let named = wait_until(PATIENCE, || {
        let (status, answer) = get(second_api, "/v1/subscriptions", &[ADMIN]);
        assert_eq!(status, 503, "{answer}");
        answer["error"]
            .as_str()
            .unwrap()
            .contains(&first_api.to_string())
    });
    assert!(named.is_some(), "the standby never named the leader");
    let (status, cluster) = get(second_api, "/v1/cluster", &[ADMIN]);
    assert_eq!(status, 200, "{cluster}");
    let nodes = cluster["nodes"].as_array().unwrap();
    let alive: Vec<&Value> = nodes.iter().filter(|n| n["alive"] == true).collect();
    assert_eq!(alive.len(), 2, "{cluster:#}");
    assert_eq!(
        alive.iter().filter(|n| n["leading"] == true).count(),
        1,
        "{cluster:#}"
    );

    // Events the standby acknowledged are delivered through its own
    // pipeline: reports at once, alarms placed by it in windows (one 2 s
    // window per location) that the leader closes.
    let events: Vec<Value> = (0..50)
        .map(|n| json!({"type": "report", "data": {"n": n}}))
        .chain((0..4).map(
            |n| json!({"type": "alarm", "data": {"location_id": format!("L{}", n % 2), "n": n}}),
        ))
        .collect();
    post_events(second_api, events);
    receiver.wait_count("sink", 52, PATIENCE);
    let types = receiver
        .bodies("sink")
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        types.iter().filter(|t| *t == "alarm").count(),
        2,
        "{types:?}"
    );
    let counter = |api: SocketAddr, name: &str| -> u64 {
        let samples = metrics(api);
        let total = format!("{name}_total");
        *samples
            .get(&total)
            .unwrap_or_else(|| panic!("no {total} in {samples:?}")) as u64
    };
    assert_eq!(counter(second_api, "hookhost_pipeline_events"), 54);
    assert_eq!(counter(second_api, "hookhost_pipeline_handed_over"), 0);
    assert_eq!(counter(first_api, "hookhost_pipeline_events"), 0);
    assert_eq!(counter(first_api, "hookhost_windows_closed"), 2);
    // Delivered means through the pipeline: none left behind it.
    let (_, cluster) = get(second_api, "/v1/cluster", &[ADMIN]);
    assert_eq!(cluster["unfinished_events"], 0, "{cluster:#}");
    assert!(cluster.get("pipeline_lag_ms").is_none(), "{cluster:#}");

    // The leader dies: the standby leads, delivers and serves the API.
    first.kill9();
    second.wait_for(&["this node leads"], PATIENCE);
    let (status, answer) = try_post(
        second_api,
        "/v1/events",
        json!({"type": "report", "data": {"n": 50}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("sink", 51, PATIENCE);
    let (status, answer) = get(second_api, "/v1/subscriptions", &[ADMIN]);
    assert_eq!(status, 200, "{answer}");
    assert!(second.terminate(PATIENCE).success());
}

/// Delivery is shared: each node claims deliveries as it has room (at most
/// `delivery.max_jobs_in_memory` each here, so the leader alone cannot take
/// them all); a standby `kill -9`ed while it holds deliveries loses them to
/// the other nodes once its lease runs out, and every event arrives.
#[test]
fn nodes_share_deliveries_and_take_over_those_of_a_node_that_died() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = slow_sink_config(root.path(), &receiver, 4, 32);
    let mut nodes: Vec<(Running, SocketAddr)> =
        (0..3).map(|i| start_node(&config, i == 0)).collect();
    let names: Vec<String> = nodes
        .iter()
        .map(|(_, api)| {
            get(*api, "/v1/cluster", &[ADMIN]).1["this_node"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    // The leader knows all three deliver (it keeps a third of its new
    // deliveries for itself, and leaves the rest to claims).
    nodes[0]
        .0
        .wait_for(&["nodes delivering", "nodes=3"], PATIENCE);
    let events: Vec<Value> = (0..60)
        .map(|n| json!({"type": "report", "data": {"n": n}}))
        .collect();
    let answer = post_events(nodes[0].1, events);
    let expected: BTreeSet<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| hookhost_tests::delivery_id(id.as_str().unwrap(), "sink"))
        .collect();

    // A standby holding deliveries (the cluster view counts each node's).
    let holding_standby = || {
        let (_, view) = get(nodes[0].1, "/v1/cluster", &[ADMIN]);
        view["nodes"].as_array().unwrap().iter().find_map(|n| {
            (n["leading"] == false && n["deliveries_held"].as_u64() > Some(0)).then(|| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["deliveries_held"].clone(),
                )
            })
        })
    };
    let found = std::cell::RefCell::new(None);
    let seen = wait_until(PATIENCE, || {
        *found.borrow_mut() = holding_standby();
        found.borrow().is_some()
    });
    assert!(
        seen.is_some(),
        "no standby ever held a delivery: delivery is not shared; {:#}; {} delivered",
        get(nodes[0].1, "/v1/cluster", &[ADMIN]).1,
        receiver.count("sink")
    );
    let (holder, held) = found.into_inner().expect("seen above");
    let at = names.iter().position(|n| *n == holder).unwrap();
    let (node, _) = nodes.remove(at);
    node.kill9();
    let killed = Instant::now();
    let arrived = wait_until(PATIENCE, || expected.is_subset(&receiver.webhook_ids()));
    assert!(
        arrived.is_some(),
        "deliveries of the killed node were never taken over"
    );
    let delivered_by = |api: SocketAddr| {
        metrics(api)
            .get("hookhost_deliveries_total{outcome=\"delivered\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let survivors: Vec<f64> = nodes.iter().map(|(_, api)| delivered_by(*api)).collect();
    println!(
        "shared delivery: node {holder} held {held} deliveries when killed; all {} delivered \
         {:?} after the kill; delivered by the two survivors: {survivors:?}; {} requests \
         for {} deliveries",
        expected.len(),
        killed.elapsed(),
        receiver.count("sink"),
        expected.len()
    );
    for (node, _) in nodes {
        assert!(node.terminate(PATIENCE).success());
    }
}

/// A standby holding deliveries is paused (`SIGSTOP`) until its lease has
/// run out and the leader has delivered what it held, then resumed: it
/// must not send the deliveries it held and had not started (the leader
/// owns them now). After it resumes only the attempts it had in flight
/// when paused (at most `max_in_flight`, 2) may arrive.
///
/// Before the resume the leader may repeat deliveries the standby had sent
/// but not yet recorded (its in-flight attempts, and states still on their
/// way to the database; on a starved machine also any its lease lapsed on
/// before the pause): at least once allows those, so they are counted and
/// printed, and bounded only by one copy per node.
#[test]
fn a_node_resumed_after_its_lease_ran_out_leaves_what_it_held_to_the_others() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = slow_sink_config(root.path(), &receiver, 20, 2);
    let (mut leader, leader_api) = start_node(&config, true);
    let (mut standby, standby_api) = start_node(&config, false);
    leader.wait_for(&["nodes delivering", "nodes=2"], PATIENCE);
    let events: Vec<Value> = (0..60)
        .map(|n| json!({"type": "report", "data": {"n": n}}))
        .collect();
    let answer = post_events(leader_api, events);
    let expected: BTreeSet<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| hookhost_tests::delivery_id(id.as_str().unwrap(), "sink"))
        .collect();
    // A number the leader's cluster view gives for the standby.
    let of_standby = |field: &str| {
        let (_, view) = get(leader_api, "/v1/cluster", &[ADMIN]);
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|n| (n["leading"] == false).then(|| n[field].as_u64()).flatten())
    };
    let held = std::cell::Cell::new(0);
    let holding = wait_until(PATIENCE, || {
        held.set(of_standby("deliveries_held").unwrap_or(0));
        held.get() >= 10
    });
    assert!(
        holding.is_some(),
        "the standby never held 10 deliveries (it held {})",
        held.get()
    );
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &standby.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    };
    signal("-STOP");
    let arrived = wait_until(PATIENCE, || expected.is_subset(&receiver.webhook_ids()));
    assert!(
        arrived.is_some(),
        "the leader never delivered what the paused standby held"
    );
    // The leader can take what the standby held only once its lease ran
    // out, but on a busy machine the standby may have sent all it held
    // before the pause: wait for the lapse itself (no heartbeat for twice
    // the 1.5 s lease), or the resumed node has nothing to notice.
    let lapsed = wait_until(PATIENCE, || {
        of_standby("seen_ago_ms").is_some_and(|ms| ms > 3_000)
    });
    assert!(lapsed.is_some(), "the paused standby kept its heartbeat");
    // Until no node holds a pending delivery (the leader has recorded all
    // it took over): whatever arrives after the resume is the standby's.
    let settled = wait_until(PATIENCE, || {
        let (_, view) = get(leader_api, "/v1/cluster", &[ADMIN]);
        view["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .all(|n| n["deliveries_held"].as_u64() == Some(0))
        })
    });
    assert!(
        settled.is_some(),
        "the leader never finished the deliveries it took over"
    );
    let before_resume = receiver.count("sink");
    signal("-CONT");
    standby.wait_for(&["lease had run out"], PATIENCE);
    // Until it has no delivery in memory: what it held is either left to
    // the leader or (were it not) sent.
    let emptied = wait_until(PATIENCE, || {
        let (_, page) = get(standby_api, "/metrics", &[]);
        page.as_str()
            .unwrap_or_default()
            .lines()
            .any(|l| l == "hookhost_delivery_queue_depth 0")
    });
    assert!(emptied.is_some(), "the resumed standby kept its deliveries");
    assert!(standby.terminate(PATIENCE).success());
    assert!(leader.terminate(PATIENCE).success());
    let requests = receiver.count("sink");
    let after_resume = requests - before_resume;
    let mut copies = std::collections::BTreeMap::<String, usize>::new();
    for r in receiver.received() {
        *copies.entry(r.headers["webhook-id"].clone()).or_default() += 1;
    }
    println!(
        "lease lapse: the standby held {} deliveries when paused; {before_resume} requests \
         before it resumed ({} repeats), {after_resume} after, for {} deliveries",
        held.get(),
        before_resume - expected.len(),
        expected.len()
    );
    assert!(
        after_resume <= 2,
        "{after_resume} requests arrived after the standby resumed, more than the 2 it may \
         have had in flight: it sent deliveries it no longer held"
    );
    let thrice: Vec<_> = copies.iter().filter(|(_, n)| **n > 2).collect();
    assert!(
        thrice.is_empty(),
        "deliveries sent more than once by a node: {thrice:?}"
    );
}

/// What the load thread had acknowledged.
#[derive(Default)]
struct Acknowledged {
    reports: Vec<String>,
    /// Device id of each acknowledged alarm (one device per alarm).
    alarm_devices: BTreeSet<String>,
    /// Locations whose only connection event, `offline`, was acknowledged.
    outages: BTreeSet<String>,
}

/// Three nodes, load posted round-robin to all three, a node `kill -9`ed
/// five times and started again — the leader three times (a standby takes
/// over), a standby delivering beside it twice (the others take over its
/// deliveries when its lease runs out): every
/// acknowledged event is delivered; no alarm is in two windows' deliveries
/// (a window closed twice would repeat its members under another id); each
/// outage is confirmed by one delivery id. Repeats of one delivery id are
/// at-least-once re-sends; they are counted and printed.
#[test]
fn three_nodes_lose_nothing_and_close_each_window_once_while_nodes_are_killed_five_times() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = cluster_config(root.path(), &receiver.url("sink"));
    let config = config.as_str();
    let mut nodes: Vec<(Running, SocketAddr)> = (0..3)
        .map(|_| {
            let mut node = Running::start(&["serve", "--config", config]);
            let api = node.api_addr(PATIENCE);
            (node, api)
        })
        .collect();
    let addresses = Arc::new(Mutex::new(
        nodes.iter().map(|(_, api)| *api).collect::<Vec<_>>(),
    ));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (addresses, acknowledged, stop) =
            (addresses.clone(), acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut refused = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let api = {
                    let addresses = addresses.lock().unwrap();
                    addresses[(n as usize) % addresses.len()]
                };
                let mut events: Vec<Value> = (0..20)
                    .map(|i| json!({"type": "report", "data": {"n": n * 100 + i}}))
                    .collect();
                let devices: Vec<String> = (0..5).map(|i| format!("dev-{n}-{i}")).collect();
                for (i, device) in devices.iter().enumerate() {
                    events.push(seed_event(
                        "alarm-wire-cut",
                        &format!("loc-{i}"),
                        json!({"devices": [{"device_id": device, "device_nr": device}]}),
                    ));
                }
                let outage = format!("down-{n}");
                events.push(seed_event(
                    "connection",
                    &outage,
                    json!({
                        "connection": "offline",
                        "timestamp": hookhost_core::clock::rfc3339_seconds(
                            hookhost_core::clock::now_ms()
                        ),
                    }),
                ));
                n += 1;
                match try_post(
                    api,
                    "/v1/events",
                    Value::Array(events).to_string().as_bytes(),
                ) {
                    Some((202, answer)) => {
                        let ids = answer["ids"].as_array().unwrap();
                        let mut ack = acknowledged.lock().unwrap();
                        ack.reports
                            .extend(ids[..20].iter().map(|id| id.as_str().unwrap().to_string()));
                        ack.alarm_devices.extend(devices);
                        ack.outages.insert(outage);
                    }
                    // A node being killed or not yet listening; 503 while
                    // the database is busy taking over.
                    _ => refused += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            refused
        })
    };

    let mut takeovers = Vec::new();
    for round in 0..5 {
        // Let load run, then kill whichever node leads now, or a standby.
        let kill_leader = round % 2 == 0;
        std::thread::sleep(Duration::from_millis(1500));
        let leader = wait_until(PATIENCE, || {
            nodes.iter().any(|(_, api)| leads(*api) == Some(true))
        });
        assert!(leader.is_some(), "no node leads");
        let at = nodes
            .iter()
            .position(|(_, api)| leads(*api) == Some(kill_leader))
            .unwrap();
        let (node, _) = nodes.remove(at);
        node.kill9();
        let killed = Instant::now();
        {
            let live: Vec<SocketAddr> = nodes.iter().map(|(_, api)| *api).collect();
            *addresses.lock().unwrap() = live;
        }
        // One of the two others takes the lead.
        let taken = wait_until(PATIENCE, || {
            nodes.iter().any(|(_, api)| leads(*api) == Some(true))
        });
        assert!(taken.is_some(), "nobody took the lead after a kill");
        if kill_leader {
            takeovers.push(killed.elapsed().as_millis());
        }
        // The killed node comes back, standing by.
        let mut node = Running::start(&["serve", "--config", config]);
        let api = node.api_addr(PATIENCE);
        nodes.push((node, api));
        addresses.lock().unwrap().push(api);
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    let refused = loader.join().unwrap();
    let ack = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(
        ack.reports.len() >= 1000,
        "too little load was acknowledged to test anything: {}",
        ack.reports.len()
    );

    let expected_reports: BTreeSet<String> = ack
        .reports
        .iter()
        .map(|id| hookhost_tests::delivery_id(id, "sink"))
        .collect();
    // Every acknowledged report, alarm and outage arrives.
    let start = Instant::now();
    let (by_id, devices, confirmations) = loop {
        let received = receiver.received();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut devices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut confirmations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in &received {
            let id = r.headers["webhook-id"].clone();
            *by_id.entry(id.clone()).or_default() += 1;
            let body: Value = serde_json::from_str(&r.body).unwrap();
            match body["type"].as_str() {
                Some("alarm") => {
                    for d in body["data"]["devices"].as_array().unwrap() {
                        devices
                            .entry(d["device_id"].as_str().unwrap().to_string())
                            .or_default()
                            .insert(id.clone());
                    }
                }
                Some("connection_confirmed") => {
                    confirmations
                        .entry(body["data"]["location_id"].as_str().unwrap().to_string())
                        .or_default()
                        .insert(id.clone());
                }
                _ => {}
            }
        }
        let missing_reports = expected_reports
            .iter()
            .filter(|id| !by_id.contains_key(*id))
            .count();
        let missing_alarms = ack
            .alarm_devices
            .iter()
            .filter(|d| !devices.contains_key(*d))
            .count();
        let missing_outages = ack
            .outages
            .iter()
            .filter(|l| !confirmations.contains_key(*l))
            .count();
        if missing_reports + missing_alarms + missing_outages == 0 {
            break (by_id, devices, confirmations);
        }
        if start.elapsed() > Duration::from_secs(120) {
            let mut types: BTreeMap<String, usize> = BTreeMap::new();
            for r in &received {
                let body: Value = serde_json::from_str(&r.body).unwrap();
                *types.entry(body["type"].to_string()).or_default() += 1;
            }
            panic!(
                "acknowledged but never delivered: {missing_reports} reports, \
                 {missing_alarms} alarms, {missing_outages} outage confirmations; \
                 received by type: {types:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let in_two_windows: Vec<(&String, &BTreeSet<String>)> =
        devices.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        in_two_windows.is_empty(),
        "alarms delivered in two different windows: {in_two_windows:?}"
    );
    let confirmed_twice: Vec<(&String, &BTreeSet<String>)> = confirmations
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(
        confirmed_twice.is_empty(),
        "outages confirmed by two deliveries: {confirmed_twice:?}"
    );
    let requests: usize = by_id.values().sum();
    let windows: BTreeSet<&String> = devices.values().flatten().collect();
    println!(
        "cluster kill test: 5 kills, {} of the leader (ms from kill -9 to a new leader: {takeovers:?}); acknowledged {} reports, {} alarms in {} \
         windows, {} outages ({refused} posts refused or cut by a kill); {} distinct deliveries, \
         {requests} requests, {} re-sent duplicates",
        takeovers.len(),
        ack.reports.len(),
        ack.alarm_devices.len(),
        windows.len(),
        ack.outages.len(),
        by_id.len(),
        requests - by_id.len()
    );
    for (node, _) in nodes {
        assert!(node.terminate(PATIENCE).success());
    }
}

/// A plugin uploaded to the leader is installed by every node into its own
/// plugins folder and serves there; deleting it removes it everywhere.
#[test]
fn a_plugin_uploaded_to_the_leader_is_installed_on_every_node() {
    let receiver = Receiver::start();
    let roots: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let store_root = roots[0].path();
    let mut nodes: Vec<(Running, SocketAddr)> = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let config = node_config(root.path(), store_root, &receiver.url("sink"));
        nodes.push(start_node(&config, i == 0));
    }
    let serving = |api: SocketAddr| {
        let (_, metrics) = get(api, "/metrics", &[]);
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("plugin=\"alarm-filter\"")
    };
    assert!(nodes.iter().all(|(_, api)| !serving(*api)));

    let filter = std::fs::read(hookhost_tests::built_plugin("alarm-filter")).unwrap();
    let uploaded = Instant::now();
    let (status, answer) = hookhost_tests::http::request(
        nodes[0].1,
        "PUT",
        "/v1/plugins/alarm-filter",
        &[ADMIN],
        &filter,
    );
    assert_eq!(status, 200, "{answer}");
    let everywhere = wait_until(PATIENCE, || nodes.iter().all(|(_, api)| serving(*api)));
    assert!(
        everywhere.is_some(),
        "the plugin never served on every node"
    );
    println!(
        "plugin upload: serving on all 3 nodes {:?} after the upload answered",
        uploaded.elapsed()
    );
    for (root, (node, _)) in roots.iter().zip(nodes.iter_mut()).skip(1) {
        assert_eq!(
            std::fs::read(root.path().join("plugins/alarm-filter.wasm")).unwrap(),
            filter
        );
        node.wait_for(
            &["plugin installed from the cluster", "alarm-filter"],
            PATIENCE,
        );
    }

    let (status, answer) = hookhost_tests::http::request(
        nodes[0].1,
        "DELETE",
        "/v1/plugins/alarm-filter",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 204, "{answer}");
    let gone = wait_until(PATIENCE, || {
        roots
            .iter()
            .all(|r| !r.path().join("plugins/alarm-filter.wasm").exists())
    });
    assert!(gone.is_some(), "a deleted plugin stayed on some node");
    for (node, _) in nodes {
        assert!(node.terminate(PATIENCE).success());
    }
}

/// A node whose config file's subscriptions differ from the running nodes'
/// refuses to start, naming the subscription and the field (not its value).
#[test]
fn a_node_whose_subscriptions_disagree_refuses_to_start() {
    let receiver = Receiver::start();
    let (first_root, second_root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = node_config(first_root.path(), first_root.path(), &receiver.url("sink"));
    let mut first = Running::start(&["serve", "--config", &config]);
    first.wait_for(&["this node leads"], PATIENCE);
    first.api_addr(PATIENCE);
    let other = node_config(
        second_root.path(),
        first_root.path(),
        &receiver.url("elsewhere"),
    );
    let refused = hookhost_tests::output_within(
        std::process::Command::new(hookhost_tests::hookhost_bin())
            .args(["serve", "--config", &other]),
        PATIENCE,
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("does not agree with the running nodes")
            && said.contains("subscription \"sink\" differs in url"),
        "{said}"
    );
    // The same file as the running node's is welcome.
    let same = node_config(second_root.path(), first_root.path(), &receiver.url("sink"));
    let mut second = Running::start(&["serve", "--config", &same]);
    second.wait_for(&["another node leads"], PATIENCE);
    assert!(second.terminate(PATIENCE).success());
    assert!(first.terminate(PATIENCE).success());
}

/// The database stopped for 10 s under load (round-robin over three nodes)
/// and started again: ingest answers 503 meanwhile (a 202 only follows a
/// commit), every acknowledged event is delivered, and delivery resumes by
/// itself, with one node leading.
#[test]
fn three_nodes_ride_out_the_database_stopped_for_ten_seconds() {
    let pg = hookhost_tests::postgres::TestPostgres::private();
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "checkpoint_ms = 100\n",
        &format!(
            "[cluster]\ntakeover_ms = 300\n\
             [[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n{}",
            receiver.url("sink"),
            pg.store_section(root.path())
        ),
    );
    let mut nodes: Vec<(Running, SocketAddr)> = Vec::new();
    for i in 0..3 {
        nodes.push(start_node(&config, i == 0));
    }
    let apis: Vec<SocketAddr> = nodes.iter().map(|(_, api)| *api).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // (acknowledged event ids, 503 answers)
    let seen = Arc::new(Mutex::new((Vec::<String>::new(), 0usize)));
    let loader = {
        let (stop, seen, apis) = (stop.clone(), seen.clone(), apis.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let event = json!({"type": "report", "data": {"n": n}}).to_string();
                match try_post(apis[n % apis.len()], "/v1/events", event.as_bytes()) {
                    Some((202, answer)) => seen
                        .lock()
                        .unwrap()
                        .0
                        .push(answer["ids"][0].as_str().unwrap().to_string()),
                    Some((503, _)) => seen.lock().unwrap().1 += 1,
                    other => panic!("ingest answered {other:?}"),
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let acknowledged = || seen.lock().unwrap().0.len();
    assert!(wait_until(PATIENCE, || acknowledged() >= 200).is_some());
    pg.stop();
    let refusing = wait_until(PATIENCE, || seen.lock().unwrap().1 >= 10);
    assert!(
        refusing.is_some(),
        "ingest never answered 503 with the database gone"
    );
    let before = acknowledged();
    std::thread::sleep(Duration::from_secs(10));
    // Nothing is acknowledged while nothing can commit (the loader sends
    // one request at a time, and 503s were seen before `before`).
    let during = acknowledged() - before;
    pg.launch();
    let back = acknowledged();
    assert!(
        wait_until(PATIENCE, || acknowledged() >= back + 200).is_some(),
        "ingest did not come back after the database did"
    );
    stop.store(true, Ordering::SeqCst);
    loader.join().unwrap();
    let (ids, refused) = seen.lock().unwrap().clone();
    let expected: BTreeSet<String> = ids
        .iter()
        .map(|id| hookhost_tests::delivery_id(id, "sink"))
        .collect();
    let all = wait_until(Duration::from_secs(120), || {
        expected.is_subset(&receiver.webhook_ids())
    });
    assert!(
        all.is_some(),
        "acknowledged events were not delivered after the database came back"
    );
    assert_eq!(during, 0, "events acknowledged with the database stopped");
    // One node leads; say whether the one that led before kept the lead.
    let leading: Vec<usize> = wait_until(PATIENCE, || {
        apis.iter().filter(|api| leads(**api) == Some(true)).count() == 1
    })
    .map(|_| {
        (0..apis.len())
            .filter(|i| leads(apis[*i]) == Some(true))
            .collect()
    })
    .expect("no single leader after the database came back");
    let running = apis.iter().filter(|api| leads(**api).is_some()).count();
    println!(
        "database stopped 10 s under load on 3 nodes: {} acknowledged, {refused} answered 503, \
         {during} acknowledged while it was down; all delivered; node {} leads, {running} of 3 \
         nodes running",
        ids.len(),
        leading[0]
    );
    for (node, api) in nodes {
        if leads(api).is_some() {
            assert!(node.terminate(PATIENCE).success());
        }
    }
}
