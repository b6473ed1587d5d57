//! The storage seams' contract, checked the same way on both backends: the
//! embedded sled store and PostgreSQL (a real server this test process
//! starts, one schema per scenario). What one backend does the other must
//! do, down to paging cursors and whole window groups.

use std::path::Path;
use std::sync::Arc;

use hookhost_core::model::{
    Attempt, EndpointHealth, Job, JobStatus, OutageState, Processed, Remembered, StoredEvent,
    Subscription, WindowMember,
};
use hookhost_core::store::postgres::PgStore;
use hookhost_core::store::sled::{SledSettings, SledStore};
use hookhost_core::store::{
    Backlog, Expired, Expiring, JobPage, JobQuery, OwnCompleted, QueuePosition, Store,
};

/// Runs `scenario` on a fresh sled store (its log plain, then compressed:
/// `server.compress_store`) and on a fresh PostgreSQL schema.
fn on_both_backends(scenario: fn(&dyn Store)) {
    let dir = tempfile::tempdir().unwrap();
    for compress in [false, true] {
        let settings = SledSettings {
            compress,
            ..SledSettings::default()
        };
        let sled =
            SledStore::open_with(&dir.path().join(format!("db-{compress}")), settings).unwrap();
        scenario(&sled);
    }
    let pg = postgres_store(dir.path());
    scenario(pg.as_ref());
}

fn postgres_store(root: &Path) -> Arc<dyn Store> {
    let server = hookhost_tests::postgres::shared();
    Arc::new(PgStore::open(&server.settings(hookhost_tests::postgres::schema_for(root))).unwrap())
}

fn event(id: &str, received_at_ms: u64) -> StoredEvent {
    StoredEvent {
        id: id.into(),
        event_type: "report".into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
        data: "{}".into(),
        received_at_ms,
        errors: Vec::new(),
        plugin_decisions: Default::default(),
    }
}

fn job(id: &str, status: JobStatus, attempt_at_ms: u64) -> Job {
    Job {
        id: id.into(),
        event_id: format!("ev-{id}"),
        subscription_id: "s".into(),
        event_type: "report".into(),
        data: "{}".into(),
        status,
        attempts: vec![Attempt {
            at_ms: attempt_at_ms,
            status: Some(200),
            latency_ms: 1.0,
            error: None,
            sent_sha256: None,
        }],
        attempts_in_round: 1,
        next_attempt_at_ms: 0,
        created_at_ms: 1,
        error: None,
        merged_events: Vec::new(),
        order: None,
    }
}

fn made(jobs: Vec<Job>) -> Vec<Processed> {
    jobs.into_iter()
        .map(|j| Processed {
            jobs: vec![j.clone()],
            ..Processed::new(event(&j.event_id, j.created_at_ms))
        })
        .collect()
}

fn ids(jobs: &[Job]) -> Vec<String> {
    let mut ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    ids
}

#[test]
fn events_and_jobs_move_between_pending_dead_and_done_alike() {
    on_both_backends(|store| {
        store
            .complete_pipeline(&made(vec![
                job("a", JobStatus::Pending, 1),
                job("b", JobStatus::Pending, 1),
                job("c", JobStatus::Pending, 1),
                Job {
                    subscription_id: "off".into(),
                    ..job("p", JobStatus::Paused, 1)
                },
            ]))
            .unwrap();
        // Jobs are made pending; attempts make them dead.
        store.update_jobs(&[job("c", JobStatus::Dead, 1)]).unwrap();
        assert!(store.has_event("ev-a").unwrap());
        assert!(!store.has_event("ev-zz").unwrap());
        assert_eq!(store.event("ev-b").unwrap().unwrap().id, "ev-b");
        assert_eq!(store.pending_count().unwrap(), 2);
        assert_eq!(ids(&store.dead_letters().unwrap()), ["c"]);
        assert_eq!(ids(&store.paused_jobs("off").unwrap()), ["p"]);
        assert!(store.paused_jobs("s").unwrap().is_empty());

        // In one batch the later state of a job wins.
        store
            .update_jobs(&[
                job("a", JobStatus::Dead, 2),
                job("a", JobStatus::Delivered, 3),
                job("c", JobStatus::Pending, 4),
            ])
            .unwrap();
        let a = store.job("a").unwrap().unwrap();
        assert_eq!((a.status, a.attempts[0].at_ms), (JobStatus::Delivered, 3));
        assert_eq!(ids(&store.pending_jobs().unwrap()), ["b", "c"]);
        assert!(store.dead_letters().unwrap().is_empty());

        // Skipped ids do not count against `max`; past it, where to go on.
        let front = QueuePosition::default();
        let (some, next) = store
            .pending_jobs_from(&front, 1, &|id| id == "b", &|_| true)
            .unwrap();
        assert_eq!((ids(&some), next), (vec!["c".to_string()], None));
        let (some, next) = store
            .pending_jobs_from(&front, 1, &|_| false, &|_| true)
            .unwrap();
        assert_eq!(ids(&some), ["b"]);
        let next = next.expect("stopped at its max");
        let (rest, end) = store
            .pending_jobs_from(&next, 10, &|id| id == "b", &|_| true)
            .unwrap();
        assert_eq!((ids(&rest), end), (vec!["c".to_string()], None));
        let (none, _) = store
            .pending_jobs_from(&front, 10, &|_| false, &|j| j.id == "zz")
            .unwrap();
        assert!(none.is_empty());
        // No bound at all (how the ordered lanes read them at start).
        let (all, end) = store
            .pending_jobs_from(&front, usize::MAX, &|_| false, &|_| true)
            .unwrap();
        assert_eq!(
            (ids(&all), end),
            (vec!["b".to_string(), "c".to_string()], None)
        );
        assert_eq!(store.jobs().unwrap().len(), 4);
        store.flush().unwrap();
        store.health().unwrap();
    });
}

fn listed(store: &dyn Store, q: &JobQuery<'_>) -> (Vec<String>, JobPage) {
    let page = store.list_jobs(q).unwrap();
    (page.jobs.iter().map(|j| j.id.clone()).collect(), page)
}

fn query<'a>(limit: usize) -> JobQuery<'a> {
    JobQuery {
        subscription: None,
        since_ms: None,
        until_ms: None,
        after: None,
        limit,
        wanted: None,
        max_examined: usize::MAX,
    }
}

/// Jobs j0..j9 created at 10, 20, ... 100; even ones to `a`, odd ones to
/// `b`; every third dead, the rest delivered.
fn ten_jobs(store: &dyn Store) {
    let jobs: Vec<Job> = (0..10)
        .map(|i| Job {
            subscription_id: if i % 2 == 0 { "a" } else { "b" }.into(),
            created_at_ms: 10 * (i + 1),
            ..job(
                &format!("j{i}"),
                if i % 3 == 0 {
                    JobStatus::Dead
                } else {
                    JobStatus::Delivered
                },
                500,
            )
        })
        .collect();
    store.complete_pipeline(&made(jobs)).unwrap();
}

#[test]
fn listings_page_newest_first_by_subscription_time_and_filter_alike() {
    on_both_backends(|store| {
        ten_jobs(store);
        let (all, page) = listed(store, &query(3));
        assert_eq!(all, ["j9", "j8", "j7"]);
        assert_eq!((page.total, page.total_exact), (10, true));
        let (rest, page) = listed(
            store,
            &JobQuery {
                after: page.next.as_deref(),
                ..query(100)
            },
        );
        assert_eq!(rest, ["j6", "j5", "j4", "j3", "j2", "j1", "j0"]);
        assert_eq!(page.next, None);
        let (of_a, _) = listed(
            store,
            &JobQuery {
                subscription: Some("a"),
                since_ms: Some(30),
                until_ms: Some(90),
                ..query(100)
            },
        );
        assert_eq!(of_a, ["j6", "j4", "j2"], "created 30 ..< 90, even");
        let (none, page) = listed(
            store,
            &JobQuery {
                since_ms: Some(90),
                until_ms: Some(30),
                ..query(100)
            },
        );
        assert!(none.is_empty() && page.next.is_none(), "since after until");
        let dead = |j: &Job| j.status == JobStatus::Dead;
        let (dead_ones, page) = listed(
            store,
            &JobQuery {
                wanted: Some(&dead),
                ..query(1)
            },
        );
        assert_eq!(dead_ones, ["j9"]);
        assert_eq!(page.total, 4, "j9 j6 j3 j0");

        // A full page counts the rest within the budget, and says so.
        let (first, page) = listed(
            store,
            &JobQuery {
                max_examined: 5,
                ..query(2)
            },
        );
        assert_eq!(first, ["j9", "j8"]);
        assert_eq!((page.total, page.total_exact), (5, false));
        assert!(page.next.is_some());

        // A filtered scan cut short by its budget resumes where it stopped.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let (ids, page) = listed(
                store,
                &JobQuery {
                    after: after.as_deref(),
                    wanted: Some(&dead),
                    max_examined: 2,
                    ..query(10)
                },
            );
            seen.extend(ids);
            match page.next {
                Some(next) => {
                    assert!(!page.total_exact);
                    after = Some(next);
                }
                None => break,
            }
        }
        assert_eq!(seen, ["j9", "j6", "j3", "j0"]);
    });
}

fn member(end: u64, location: &str, event_id: &str) -> WindowMember {
    WindowMember {
        window_end_ms: end,
        subscription_id: "s".into(),
        window_type: "alarm".into(),
        group: location.into(),
        event_id: event_id.into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
        received_at_ms: 1,
        event_type: "alarm".into(),
        data: r#"{"location_id": "x", "n": [1, 2]}"#.into(),
    }
}

#[test]
fn windows_close_in_whole_groups_and_outage_timers_fall_due_alike() {
    on_both_backends(|store| {
        let members = [
            member(100, "L1", "e1"),
            member(100, "L1", "e2"),
            member(100, "L1", "e3"),
            member(100, "L2", "e4"),
            member(200, "L1", "e5"),
            member(300, "L1", "e6"),
        ];
        let batch: Vec<Processed> = members
            .iter()
            .map(|m| Processed {
                window_members: vec![m.clone()],
                ..Processed::new(event(&m.event_id, 1))
            })
            .collect();
        store.complete_pipeline(&batch).unwrap();
        assert_eq!(store.window_member_count().unwrap(), 6);
        assert_eq!(store.closed_through().unwrap(), 0);

        // Two asked for: groups up to and with the one the second falls in,
        // whole.
        let due = store.due_window_members(250, 2).unwrap();
        let due_ids: Vec<&str> = due.iter().map(|m| m.event_id.as_str()).collect();
        let l1_first = members[0].group_hash() < members[3].group_hash();
        if l1_first {
            assert_eq!(due_ids, ["e1", "e2", "e3"]);
        } else {
            assert_eq!(due_ids, ["e4", "e1", "e2", "e3"]);
        }
        assert_eq!(
            due[0],
            *members.iter().find(|m| m.event_id == due_ids[0]).unwrap()
        );
        let all_due = store.due_window_members(250, 100).unwrap();
        assert_eq!(all_due.len(), 5, "not the window ending at 300");

        let merged = Job {
            merged_events: vec![
                "e1".into(),
                "e2".into(),
                "e3".into(),
                "e4".into(),
                "e5".into(),
            ],
            ..job("merged", JobStatus::Pending, 1)
        };
        store.close_windows(&all_due, &[merged], 250).unwrap();
        assert_eq!(store.window_member_count().unwrap(), 1);
        assert_eq!(store.closed_through().unwrap(), 250);
        assert_eq!(store.job("merged").unwrap().unwrap().merged_events.len(), 5);
        assert!(store.due_window_members(250, 100).unwrap().is_empty());

        // Read, merge and close in one step (on PostgreSQL one transaction).
        let merged_ids = |members: &[WindowMember]| -> Vec<Job> {
            vec![Job {
                merged_events: members.iter().map(|m| m.event_id.clone()).collect(),
                ..job("merged-300", JobStatus::Pending, 1)
            }]
        };
        let closed = store.close_due_windows(299, 100, &merged_ids).unwrap();
        assert_eq!((closed.members, closed.jobs.len()), (0, 0), "none due");
        let closed = store.close_due_windows(350, 100, &merged_ids).unwrap();
        assert_eq!(closed.members, 1);
        assert_eq!(closed.jobs[0].merged_events, ["e6"]);
        assert_eq!(store.window_member_count().unwrap(), 0);
        assert_eq!(store.closed_through().unwrap(), 350);
        assert_eq!(
            store.job("merged-300").unwrap().unwrap().merged_events,
            ["e6"]
        );

        // Outage timers: due once their deadline passed, gone once confirmed.
        let offline = |location: &str, deadline: u64, confirmed: bool| OutageState {
            location: location.into(),
            offline: true,
            last_timestamp: "2026-01-01T00:00:00Z".into(),
            since_ms: 1,
            deadline_ms: Some(deadline),
            confirmed,
            data: "{}".into(),
        };
        let outages = |states: Vec<(OutageState, Option<u64>)>| -> Vec<Processed> {
            states
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let event = event(&format!("o{i}-{}", s.0.location), 1);
                    Processed {
                        outage: Some(s),
                        ..Processed::new(event)
                    }
                })
                .collect()
        };
        store
            .complete_pipeline(&outages(vec![
                (offline("A", 500, false), None),
                (offline("B", 900, false), None),
            ]))
            .unwrap();
        let due: Vec<String> = store
            .due_outages(600)
            .unwrap()
            .into_iter()
            .map(|s| s.location)
            .collect();
        assert_eq!(due, ["A"]);
        store
            .complete_pipeline(&outages(vec![(offline("A", 500, true), Some(500))]))
            .unwrap();
        assert!(store.due_outages(600).unwrap().is_empty());
        assert!(store.outage("A").unwrap().unwrap().confirmed);
        assert_eq!(store.due_outages(1000).unwrap().len(), 1);
    });
}

#[test]
fn subscriptions_health_and_idempotency_answers_are_kept_alike() {
    on_both_backends(|store| {
        let sub: Subscription = serde_json::from_value(serde_json::json!({
            "id": "api-1", "url": "http://127.0.0.1:9/", "types": ["*"]
        }))
        .unwrap();
        store.put_subscription(&sub).unwrap();
        store
            .put_subscription(&Subscription {
                url: "http://127.0.0.1:10/".into(),
                ..sub.clone()
            })
            .unwrap();
        let stored = store.stored_subscriptions().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].url, "http://127.0.0.1:10/");
        store.delete_subscription("api-1").unwrap();
        assert!(store.stored_subscriptions().unwrap().is_empty());

        let health = EndpointHealth {
            failures: 3,
            failing_since_ms: Some(7),
            ..EndpointHealth::default()
        };
        store.put_endpoint_health("api-1", &health).unwrap();
        assert_eq!(
            store.endpoint_health().unwrap(),
            [("api-1".to_string(), health)]
        );

        for (key, at) in [("k-old", 10), ("k-new", 30)] {
            store
                .remember(&Remembered {
                    key: key.into(),
                    status: 202,
                    body: "{\"ids\":[]}".into(),
                    at_ms: at,
                })
                .unwrap();
        }
        assert_eq!(store.remembered("k-old").unwrap().unwrap().at_ms, 10);
        assert_eq!(store.forget_answers(20).unwrap(), 1);
        assert!(store.remembered("k-old").unwrap().is_none());
        assert!(store.remembered("k-new").unwrap().is_some());
    });
}

#[test]
fn retention_removes_oldest_first_in_batches_and_stats_count_alike() {
    on_both_backends(|store| {
        store
            .complete_pipeline(&made(vec![
                job("old-ok", JobStatus::Delivered, 100),
                job("old-ok2", JobStatus::Delivered, 200),
                job("new-ok", JobStatus::Delivered, 900),
                job("old-dead", JobStatus::Pending, 100),
                job("waiting", JobStatus::Pending, 100),
            ]))
            .unwrap();
        store
            .update_jobs(&[job("old-dead", JobStatus::Dead, 100)])
            .unwrap();
        // Bytes on disk: sled may not have written its file before a flush.
        store.flush().unwrap();
        let stats = store.stats().unwrap();
        assert_eq!(
            (
                stats.events,
                stats.deliveries,
                stats.pending,
                stats.dead_letters
            ),
            (5, 5, 1, 1)
        );
        assert!(stats.bytes > 0, "{stats:?}");

        let first = store.expire(Expiring::Delivered, 500, 1).unwrap();
        assert_eq!(
            first,
            Expired {
                removed: 1,
                more: true
            }
        );
        assert!(store.job("old-ok").unwrap().is_none(), "oldest first");
        let second = store.expire(Expiring::Delivered, 500, 10).unwrap();
        assert_eq!(
            second,
            Expired {
                removed: 1,
                more: false
            }
        );
        assert_eq!(
            ids(&store.jobs().unwrap()),
            ["new-ok", "old-dead", "waiting"]
        );
        // A dead letter re-sent before its period ends stays.
        store
            .update_jobs(&[job("old-dead", JobStatus::Pending, 100)])
            .unwrap();
        assert_eq!(
            store
                .expire(Expiring::DeadLetters, 500, 10)
                .unwrap()
                .removed,
            0
        );
        // Events by arrival (created_at_ms 1 here).
        assert_eq!(store.expire(Expiring::Events, 2, 100).unwrap().removed, 5);
        assert!(!store.has_event("ev-waiting").unwrap());
        // Listings lose what retention removed.
        let page = store.list_jobs(&query(10)).unwrap();
        assert_eq!(ids(&page.jobs), ["new-ok", "old-dead", "waiting"]);
    });
}

/// The real binary on `[store] backend = "postgres"`: an event it took is
/// delivered, its delivery is a row in the test's schema (not a sled file),
/// and a restarted server finds it there.
#[test]
fn a_server_on_postgres_keeps_its_deliveries_in_the_database() {
    use hookhost_tests::http::{Receiver, post};
    use hookhost_tests::{PATIENCE, Running};
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let body = format!(
        "[[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n{}",
        receiver.url("sink"),
        hookhost_tests::postgres::store_section(root.path())
    );
    let config =
        hookhost_tests::write_config(root.path(), "", "admin_token = \"adm1n-t0ken\"\n", &body);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let (status, answer) = post(
        api,
        "/v1/events",
        br#"{"type": "report", "data": {"n": 1}}"#,
    );
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("sink", 1, PATIENCE);
    let event_id = answer["ids"][0].as_str().unwrap().to_string();
    let job_id = hookhost_tests::delivery_id(&event_id, "sink");

    let pg = hookhost_tests::postgres::shared();
    let schema = hookhost_tests::postgres::schema_for(root.path());
    let delivered = || {
        pg.psql(&format!(
            "SELECT status FROM {schema}.jobs WHERE id = '{job_id}'"
        ))
    };
    assert!(
        hookhost_tests::wait_until(PATIENCE, || delivered() == "delivered").is_some(),
        "job row: {:?}",
        delivered()
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT max(version) FROM {schema}.schema_migrations"
        )),
        "6"
    );
    // The event went through the pipeline: no longer marked as waiting.
    assert_eq!(
        pg.psql(&format!(
            "SELECT in_pipeline FROM {schema}.events WHERE id = '{event_id}'"
        )),
        "f"
    );
    // Neither sled files nor a journal: the database holds it all.
    let in_data: Vec<String> = std::fs::read_dir(root.path().join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(in_data.is_empty(), "{in_data:?}");
    assert_eq!(server.terminate(PATIENCE).code(), Some(0));

    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let (status, job) = hookhost_tests::http::get(
        api,
        &format!("/v1/deliveries/{job_id}"),
        &["Authorization: Bearer adm1n-t0ken"],
    );
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("delivered")),
        "{job}"
    );
}

/// On PostgreSQL a new job is attempted before it is stored and then
/// written once, in its first attempt's state, by the transaction that
/// finishes its event's pipeline (one row version instead of an insert
/// and an update). An attempt that hangs does not hide its job: the job is
/// stored pending meanwhile, and its outcome updates it later.
#[test]
fn on_postgres_a_delivered_job_is_written_once_and_a_hanging_one_shows_pending() {
    use hookhost_tests::http::{Answer, Receiver, post};
    use hookhost_tests::{PATIENCE, Running};
    use std::time::Duration;
    let receiver = Receiver::start();
    // Far longer than the wait for first attempts (250 ms), so the job
    // is stored pending well before its answer.
    receiver.script("slow", Answer::Slow(Duration::from_secs(10), 204));
    let root = tempfile::tempdir().unwrap();
    let body = format!(
        "[[subscriptions]]\nid = \"fast\"\nurl = \"{}\"\ntypes = [\"report\"]\nenvelope = \"plain\"\n\
         [[subscriptions]]\nid = \"slow\"\nurl = \"{}\"\ntypes = [\"late\"]\nenvelope = \"plain\"\n\
         retry = {{ timeout_ms = 60000 }}\n{}",
        receiver.url("fast"),
        receiver.url("slow"),
        hookhost_tests::postgres::store_section(root.path())
    );
    let config = hookhost_tests::write_config(root.path(), "", "", &body);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let pg = hookhost_tests::postgres::shared();
    let schema = hookhost_tests::postgres::schema_for(root.path());

    // The same transaction wrote the job's only version and cleared its
    // event's pipeline mark when their `xmin`s agree; a job stored first
    // and updated after its attempt (as before) never agrees. Until the
    // node's lease is first renewed (within about a second of its start)
    // its new jobs are stored free to claim, the old way: so events are
    // posted one by one until one is written once.
    let mut posted = 0;
    let written_once = |event_id: &str, job_id: &str| {
        pg.psql(&format!(
            "SELECT j.xmin = e.xmin AND NOT e.in_pipeline FROM {schema}.jobs j, {schema}.events e \
             WHERE j.id = '{job_id}' AND e.id = '{event_id}' AND j.status = 'delivered'"
        ))
    };
    let once = hookhost_tests::wait_until(PATIENCE, || {
        posted += 1;
        let (status, answer) = post(
            api,
            "/v1/events",
            format!(r#"{{"type": "report", "data": {{"n": {posted}}}}}"#).as_bytes(),
        );
        assert_eq!(status, 202, "{answer}");
        let event_id = answer["ids"][0].as_str().unwrap().to_string();
        let job_id = hookhost_tests::delivery_id(&event_id, "fast");
        let mut seen = String::new();
        let stored = hookhost_tests::wait_until(PATIENCE, || {
            seen = written_once(&event_id, &job_id);
            !seen.is_empty()
        });
        assert!(stored.is_some(), "delivery {job_id} never stored delivered");
        seen == "t"
    });
    assert!(
        once.is_some(),
        "after {posted} events, no delivered job was written in its event's pipeline transaction"
    );
    assert_eq!(receiver.count("fast"), posted);

    let (status, answer) = post(api, "/v1/events", br#"{"type": "late", "data": {}}"#);
    assert_eq!(status, 202, "{answer}");
    let event_id = answer["ids"][0].as_str().unwrap().to_string();
    let job_id = hookhost_tests::delivery_id(&event_id, "slow");
    let status_of = || {
        pg.psql(&format!(
            "SELECT status FROM {schema}.jobs WHERE id = '{job_id}'"
        ))
    };
    let mut seen = Vec::new();
    let done = hookhost_tests::wait_until(PATIENCE, || {
        let now = status_of();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        now == "delivered"
    });
    assert!(done.is_some(), "statuses seen: {seen:?}");
    assert!(
        seen.iter().any(|s| s == "pending"),
        "the job of a hanging attempt was not stored pending meanwhile: {seen:?}"
    );
    assert_eq!(receiver.count("slow"), 1);
    assert_eq!(server.terminate(PATIENCE).code(), Some(0));
}

/// `hookhost migrate` makes the schema once, says so, does nothing the
/// second time, and refuses a schema newer than it knows.
#[test]
fn migrate_makes_the_schema_once_and_refuses_a_newer_one() {
    use hookhost_tests::{PATIENCE, hookhost_bin, output_within};
    let root = tempfile::tempdir().unwrap();
    let body = hookhost_tests::postgres::store_section(root.path());
    let config = hookhost_tests::write_config(root.path(), "", "", &body);
    let schema = hookhost_tests::postgres::schema_for(root.path());
    let migrate = || {
        output_within(
            std::process::Command::new(hookhost_bin()).args(["migrate", "--config", &config]),
            PATIENCE,
        )
    };
    let first = migrate();
    let said = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        said.trim(),
        format!("schema {schema} migrated to version 6 (applied [1, 2, 3, 4, 5, 6])")
    );
    let again = migrate();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        format!("schema {schema} is at version 6: nothing to do")
    );

    hookhost_tests::postgres::shared().psql(&format!(
        "INSERT INTO {schema}.schema_migrations (version, name) VALUES (99, 'from the future')"
    ));
    let refused = migrate();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("is at version 99, newer than this hookhost knows (6)"),
        "{err}"
    );
}

/// PostgreSQL stopped under load and started again: while it is gone ingest
/// answers 503 (a 202 only ever follows a commit), and every event ever
/// answered 202 is delivered once it is back, without a restart of hookhost.
#[test]
fn a_lost_database_gives_503_and_nothing_acknowledged_is_lost() {
    use hookhost_tests::http::{Receiver, post};
    use hookhost_tests::{PATIENCE, Running, wait_until};
    let pg = hookhost_tests::postgres::TestPostgres::private();
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let body = format!(
        "[[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n{}",
        receiver.url("sink"),
        pg.store_section(root.path())
    );
    let config = hookhost_tests::write_config(root.path(), "", "checkpoint_ms = 100\n", &body);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let mut acknowledged = std::collections::BTreeSet::new();
    let mut refused = 0;
    let mut n = 0;
    let mut send = |acknowledged: &mut std::collections::BTreeSet<u64>| {
        n += 1;
        let event = format!(r#"{{"type": "report", "data": {{"n": {n}}}}}"#);
        let (status, answer) = post(api, "/v1/events", event.as_bytes());
        match status {
            202 => {
                acknowledged.insert(n);
            }
            503 => {}
            other => panic!("ingest answered {other}: {answer}"),
        }
        status
    };
    for _ in 0..20 {
        assert_eq!(send(&mut acknowledged), 202);
    }
    pg.stop();
    let gone = wait_until(PATIENCE, || {
        if send(&mut acknowledged) == 503 {
            refused += 1;
        }
        refused >= 3
    });
    assert!(
        gone.is_some(),
        "ingest never answered 503 with the database gone"
    );
    server.wait_for(&["the database cannot take events"], PATIENCE);
    pg.launch();
    let back = wait_until(PATIENCE, || send(&mut acknowledged) == 202);
    assert!(
        back.is_some(),
        "ingest did not recover once the database was back"
    );
    for _ in 0..20 {
        assert_eq!(send(&mut acknowledged), 202);
    }
    let delivered = || -> std::collections::BTreeSet<u64> {
        receiver
            .bodies("sink")
            .iter()
            .filter_map(|b| b["n"].as_u64())
            .collect()
    };
    let all_there = wait_until(PATIENCE, || acknowledged.is_subset(&delivered()));
    assert!(
        all_there.is_some(),
        "acknowledged but not delivered: {:?}",
        acknowledged.difference(&delivered()).collect::<Vec<_>>()
    );
    server.wait_for(&["the database takes events again"], PATIENCE);
    assert_eq!(server.terminate(PATIENCE).code(), Some(0));
}

/// A second node on the same schema stands by (windows and timers run on
/// the first); `migrate` runs beside both.
#[test]
fn a_second_node_on_the_same_schema_stands_by() {
    use hookhost_tests::{PATIENCE, Running};
    let root = tempfile::tempdir().unwrap();
    let body = hookhost_tests::postgres::store_section(root.path());
    let config = hookhost_tests::write_config(root.path(), "", "", &body);
    let mut first = Running::start(&["serve", "--config", &config]);
    first.wait_for(&["this node leads"], PATIENCE);
    let mut second = Running::start(&["serve", "--config", &config]);
    second.wait_for(&["another node leads", "stands by"], PATIENCE);
    let migrate = hookhost_tests::output_within(
        std::process::Command::new(hookhost_tests::hookhost_bin())
            .args(["migrate", "--config", &config]),
        PATIENCE,
    );
    assert!(migrate.status.success(), "{migrate:?}");
    assert_eq!(second.terminate(PATIENCE).code(), Some(0));
    assert_eq!(first.terminate(PATIENCE).code(), Some(0));
}

/// A standby's pipeline write is refused after its transaction began (the
/// leader's batch goes out `BEGIN` to `COMMIT` at once): that transaction is
/// closed, so the next statement on the same connection commits on its own
/// and the leader sees it. Left open, the standby's next admission (one
/// statement) would never commit.
#[test]
fn a_refused_write_leaves_its_connection_fit_for_the_next() {
    use hookhost_core::store::{ClusterStore, EventInbox, EventStore};
    let root = tempfile::tempdir().unwrap();
    let pg = hookhost_tests::postgres::shared();
    let schema = hookhost_tests::postgres::schema_for(root.path());
    let leader = PgStore::open(&pg.settings(schema.clone())).unwrap();
    leader.join_cluster();
    assert!(leader.try_lead("leader").unwrap());
    // One connection: every call below uses the one the refusal used.
    let mut settings = pg.settings(schema);
    settings.pool_size = 1;
    let standby = PgStore::open(&settings).unwrap();
    standby.join("standby", 60_000).unwrap();
    assert!(!standby.try_lead("standby").unwrap());

    let refused = standby
        .complete_pipeline(&[Processed::new(event("x", 1))])
        .unwrap_err();
    assert!(refused.0.contains("does not lead"), "{refused}");
    let admitted = standby.admit(&[event("after", 2)], &[]).unwrap();
    assert_eq!((admitted.new, admitted.to_pipeline), (vec![true], true));
    assert!(leader.has_event("after").unwrap());
    assert!(!leader.has_event("x").unwrap());
}

/// Taking the lead fences the previous leader: once its session is gone
/// and another store took the lead, its pipeline and window writes fail,
/// it learns it no longer leads, and the new leader takes up (once) the
/// events the old one had taken but not finished.
#[test]
fn taking_the_lead_fences_the_previous_leader_and_takes_up_its_unfinished_events() {
    use hookhost_core::store::{ClusterStore, EventInbox, EventStore};
    let root = tempfile::tempdir().unwrap();
    let pg = hookhost_tests::postgres::shared();
    let open = || {
        let store =
            PgStore::open(&pg.settings(hookhost_tests::postgres::schema_for(root.path()))).unwrap();
        store.join_cluster();
        Arc::new(store)
    };
    let (one, two) = (open(), open());
    assert!(one.try_lead("one").unwrap());
    assert!(!two.try_lead("two").unwrap(), "two leaders at once");
    // A standby admits events but leaves them to the leader, and may not
    // write the pipeline's outcome.
    let admitted = two.admit(&[event("from-two", 1)], &[]).unwrap();
    assert_eq!((admitted.new, admitted.to_pipeline), (vec![true], false));
    assert!(
        two.complete_pipeline(&[Processed::new(event("x", 1))])
            .is_err()
    );
    // The leader takes its own events into its pipeline as it admits them,
    // and the standby's with a sweep, once.
    let admitted = one.admit(&[event("from-one", 2)], &[]).unwrap();
    assert_eq!((admitted.new, admitted.to_pipeline), (vec![true], true));
    let taken: Vec<String> = one
        .take_unfinished(10)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken, ["from-two"]);
    assert!(one.take_unfinished(10).unwrap().is_empty());
    one.complete_pipeline(&[Processed::new(event("from-two", 1))])
        .unwrap();

    // The leader's session ends (a crash, a lost network): two takes over.
    let pid = one.lead_session().expect("one leads");
    pg.psql(&format!("SELECT pg_terminate_backend({pid})"));
    let took =
        hookhost_tests::wait_until(hookhost_tests::PATIENCE, || two.try_lead("two").unwrap());
    assert!(took.is_some(), "the lead was never free again");
    let fenced = one
        .complete_pipeline(&[Processed::new(event("from-one", 2))])
        .unwrap_err();
    assert!(fenced.0.contains("another node leads"), "{fenced}");
    assert!(!one.still_leading("one").unwrap());
    // What one took but never finished is two's now, once.
    let taken: Vec<String> = two
        .take_unfinished(10)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken, ["from-one"]);
    assert!(two.take_unfinished(10).unwrap().is_empty());
    two.complete_pipeline(&[Processed::new(event("from-one", 2))])
        .unwrap();
    assert_eq!(two.backlog().unwrap().events, 0);
    let names: Vec<(String, bool)> = {
        two.heartbeat(&hookhost_core::store::NodeRecord {
            id: "two".into(),
            address: "http://two".into(),
            started_at_ms: 1,
            seen_at_ms: hookhost_core::clock::now_ms(),
            leading: true,
            deliveries_held: 0,
        })
        .unwrap();
        two.nodes()
            .unwrap()
            .into_iter()
            .map(|n| (n.id, n.leading))
            .collect()
    };
    assert_eq!(names, [("two".to_string(), true)]);
}

/// A standby runs the pipeline of the events it admits: the leader's sweep
/// leaves them alone while the standby's lease lasts; the standby stores
/// the outcomes it keeps and hands the rest over in one transaction; once
/// its lease ran out the leader takes its events, and the standby's late
/// outcome of one the leader took is not stored.
#[test]
fn a_standby_runs_its_own_events_until_its_lease_runs_out() {
    use hookhost_core::store::{ClusterStore, DeliveryQueue, EventInbox, EventStore, NodeRecord};
    let root = tempfile::tempdir().unwrap();
    let pg = hookhost_tests::postgres::shared();
    let schema = hookhost_tests::postgres::schema_for(root.path());
    let open = |node: &str| {
        let store = PgStore::open(&pg.settings(schema.clone())).unwrap();
        store.join(node, 60_000).unwrap();
        Arc::new(store)
    };
    let (one, two) = (open("one"), open("two"));
    assert!(one.try_lead("one").unwrap());
    assert!(!two.try_lead("two").unwrap());
    let beat = |store: &PgStore, id: &str| {
        store
            .heartbeat(&NodeRecord {
                id: id.into(),
                address: format!("http://{id}"),
                started_at_ms: 1,
                seen_at_ms: hookhost_core::clock::now_ms(),
                leading: id == "one",
                deliveries_held: 0,
            })
            .unwrap()
    };
    beat(&one, "one");
    beat(&two, "two");
    let ids = |events: Vec<StoredEvent>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();

    let admitted = two
        .admit(&[event("kept", 1), event("handed", 2)], &[])
        .unwrap();
    assert_eq!(
        (admitted.new, admitted.to_pipeline),
        (vec![true, true], true)
    );
    assert!(
        ids(one.take_unfinished(10).unwrap()).is_empty(),
        "a live standby's events taken"
    );
    let mut kept = Processed::new(event("kept", 1));
    kept.jobs.push(Job {
        event_id: "kept".into(),
        ..job("kept-job", JobStatus::Pending, 1)
    });
    let done = two.complete_own(&[kept], &["handed"]).unwrap();
    assert_eq!(done.stored, ["kept".to_string()].into());
    assert_eq!(done.handed, 1);
    assert!(two.job("kept-job").unwrap().is_some());
    assert_eq!(ids(one.take_unfinished(10).unwrap()), ["handed"]);
    one.complete_pipeline(&[Processed::new(event("handed", 2))])
        .unwrap();
    assert_eq!(one.backlog().unwrap().events, 0);

    // A node's worker may still run as a standby's just after the node
    // took the lead: what it admitted since is marked with its epoch, and
    // is its own to store or hand over (then its sweep takes it).
    one.admit(&[event("led", 5), event("led-handed", 6)], &[])
        .unwrap();
    let done = one
        .complete_own(&[Processed::new(event("led", 5))], &["led-handed"])
        .unwrap();
    assert_eq!(done.stored, ["led".to_string()].into());
    assert_eq!(done.handed, 1);
    assert_eq!(ids(one.take_unfinished(10).unwrap()), ["led-handed"]);
    one.complete_pipeline(&[Processed::new(event("led-handed", 6))])
        .unwrap();
    assert_eq!(one.backlog().unwrap().events, 0);

    // The standby's lease runs out (a long pause): the leader takes its
    // event, and the standby's outcome of it comes too late.
    two.admit(&[event("late", 3), event("late-handed", 3)], &[])
        .unwrap();
    pg.psql(&format!(
        "UPDATE {schema}.nodes SET lease_until_ms = 0 WHERE id = 'two'"
    ));
    assert_eq!(
        ids(one.take_unfinished(10).unwrap()),
        ["late", "late-handed"]
    );
    let mut late = Processed::new(event("late", 3));
    late.jobs.push(Job {
        event_id: "late".into(),
        ..job("late-job", JobStatus::Pending, 1)
    });
    let done = two.complete_own(&[late], &["late-handed"]).unwrap();
    assert_eq!(
        done,
        OwnCompleted::default(),
        "nothing stored, nothing handed"
    );
    assert!(two.job("late-job").unwrap().is_none());
    assert_eq!(
        one.backlog().unwrap(),
        Backlog {
            events: 2,
            oldest_received_ms: Some(3)
        },
        "the leader's to finish"
    );

    // A restarted standby hands what its earlier process admitted to the
    // leader.
    beat(&two, "two");
    two.admit(&[event("orphan", 4)], &[]).unwrap();
    let again = open("two");
    drop(two);
    assert_eq!(ids(one.take_unfinished(10).unwrap()), ["orphan"]);
    assert!(
        again
            .complete_own(&[Processed::new(event("orphan", 4))], &[])
            .unwrap()
            .stored
            .is_empty()
    );
}

/// A standby places its own events' window members: stored when their
/// window is still open, handed to the leader when it closed before the
/// standby's transaction (the standby learns where windows are closed
/// through from it).
#[test]
fn a_standby_stores_window_members_only_into_windows_still_open() {
    use hookhost_core::store::{ClusterStore, DeliveryQueue, EventInbox, NodeRecord, WindowStore};
    let root = tempfile::tempdir().unwrap();
    let pg = hookhost_tests::postgres::shared();
    let schema = hookhost_tests::postgres::schema_for(root.path());
    let open = |node: &str| {
        let store = PgStore::open(&pg.settings(schema.clone())).unwrap();
        store.join(node, 60_000).unwrap();
        Arc::new(store)
    };
    let (one, two) = (open("one"), open("two"));
    assert!(one.try_lead("one").unwrap());
    for (store, id) in [(&one, "one"), (&two, "two")] {
        store
            .heartbeat(&NodeRecord {
                id: id.into(),
                address: format!("http://{id}"),
                started_at_ms: 1,
                seen_at_ms: hookhost_core::clock::now_ms(),
                leading: id == "one",
                deliveries_held: 0,
            })
            .unwrap();
    }
    let placed = |end: u64, id: &str| Processed {
        window_members: vec![member(end, "L1", id)],
        ..Processed::new(event(id, 1))
    };
    // The leader closes windows through 150 (none due yet).
    let none = |_: &[WindowMember]| -> Vec<Job> { Vec::new() };
    assert_eq!(one.close_due_windows(150, 100, &none).unwrap().members, 0);
    assert_eq!(
        one.closed_through().unwrap(),
        0,
        "nothing closed, not moved"
    );
    one.close_windows(&[], &[], 150).unwrap();

    two.admit(
        &[event("open", 1), event("closed", 1), event("plain", 1)],
        &[],
    )
    .unwrap();
    let done = two
        .complete_own(
            &[
                placed(200, "open"),
                placed(100, "closed"),
                Processed::new(event("plain", 1)),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(
        done.stored,
        ["open".to_string(), "plain".to_string()].into()
    );
    assert_eq!(done.late_for_window, 1);
    assert_eq!(done.handed, 1, "the late one is the leader's");
    assert_eq!(done.closed_through_ms, Some(150));
    assert_eq!(one.window_member_count().unwrap(), 1);
    let taken: Vec<String> = one
        .take_unfinished(10)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken, ["closed"]);

    // Without members the marker is not read.
    two.admit(&[event("plain2", 1)], &[]).unwrap();
    let done = two
        .complete_own(&[Processed::new(event("plain2", 1))], &[])
        .unwrap();
    assert_eq!(done.closed_through_ms, None);

    // The member stored by the standby closes with its window.
    let merged = |members: &[WindowMember]| -> Vec<Job> {
        vec![Job {
            merged_events: members.iter().map(|m| m.event_id.clone()).collect(),
            ..job("window-200", JobStatus::Pending, 1)
        }]
    };
    let closed = one.close_due_windows(250, 100, &merged).unwrap();
    assert_eq!(closed.members, 1);
    assert_eq!(
        one.job("window-200").unwrap().unwrap().merged_events,
        ["open"]
    );
}

/// Durable ingest on PostgreSQL: an event id is admitted once, whichever
/// of two stores on the schema (two nodes) admits it, also when both try at
/// the same moment; admitted events stay unfinished until their pipeline
/// outcome is stored, and retention never removes an unfinished one.
#[test]
fn an_event_id_is_admitted_once_across_nodes_and_stays_unfinished_until_stored() {
    let root = tempfile::tempdir().unwrap();
    let (one, two) = (postgres_store(root.path()), postgres_store(root.path()));
    let (inbox_one, inbox_two) = (one.clone().inbox().unwrap(), two.clone().inbox().unwrap());
    let answer = Remembered {
        key: "k1".into(),
        status: 202,
        body: r#"{"ids":["a","b"]}"#.into(),
        at_ms: 5,
    };
    let admitted = inbox_one
        .admit(&[event("a", 1), event("b", 2), event("a", 1)], &[answer])
        .unwrap()
        .new;
    assert_eq!(admitted, [true, true, false]);
    assert_eq!(
        two.remembered("k1").unwrap().unwrap().body,
        r#"{"ids":["a","b"]}"#
    );
    // The other node sees the ids as taken.
    assert_eq!(
        inbox_two
            .admit(&[event("b", 3), event("c", 3)], &[])
            .unwrap()
            .new,
        [false, true]
    );
    // How many are unfinished, and when the oldest of them arrived.
    let unfinished = || {
        let backlog = inbox_one.backlog().unwrap();
        (backlog.events, backlog.oldest_received_ms)
    };
    assert_eq!(unfinished(), (3, Some(1)));

    // The pipeline's outcome for `a` finishes it; it stays taken.
    two.complete_pipeline(&[Processed::new(event("a", 1))])
        .unwrap();
    assert_eq!(unfinished(), (2, Some(2)));
    assert_eq!(inbox_one.admit(&[event("a", 9)], &[]).unwrap().new, [false]);
    // Retention removes old finished events only.
    let expired = one.expire(Expiring::Events, 100, 10).unwrap();
    assert_eq!(expired.removed, 1);
    assert_eq!(unfinished(), (2, Some(2)));

    // Both nodes admit the same 500 ids at once: each id is new exactly once.
    let ids: Vec<StoredEvent> = (0..500).map(|i| event(&format!("x{i:03}"), 10)).collect();
    let (left, right) = std::thread::scope(|s| {
        let left = s.spawn(|| inbox_one.admit(&ids, &[]).unwrap().new);
        let mut reversed = ids.clone();
        reversed.reverse();
        let right = s.spawn(move || {
            let mut admitted = inbox_two.admit(&reversed, &[]).unwrap().new;
            admitted.reverse();
            admitted
        });
        (left.join().unwrap(), right.join().unwrap())
    });
    let twice = left.iter().zip(&right).filter(|(l, r)| **l && **r).count();
    let never = left
        .iter()
        .zip(&right)
        .filter(|(l, r)| !**l && !**r)
        .count();
    assert_eq!((twice, never), (0, 0), "left {left:?}\nright {right:?}");
}

/// Shared delivery: two nodes claim the free jobs between them, never the
/// same one and never an ordered one (the leader holds those); a node
/// records states only of jobs it still holds; a node whose lease ran out
/// loses its jobs to the other; a clean stop hands them over at once; a new
/// leader adopts the ordered ones.
#[test]
fn nodes_claim_jobs_once_and_lose_them_when_their_lease_ends() {
    use hookhost_core::model::OrderSlot;
    use hookhost_core::store::{ClusterStore, DeliveryQueue, EventStore, NodeRecord};
    let root = tempfile::tempdir().unwrap();
    let pg = hookhost_tests::postgres::shared();
    let schema = hookhost_tests::postgres::schema_for(root.path());
    let open = |name: &str, lease_ms: u64| {
        let store = Arc::new(PgStore::open(&pg.settings(schema.clone())).unwrap());
        store.join(name, lease_ms).unwrap();
        store
            .heartbeat(&NodeRecord {
                id: name.into(),
                address: format!("http://{name}"),
                started_at_ms: 1,
                seen_at_ms: hookhost_core::clock::now_ms(),
                leading: false,
                deliveries_held: 0,
            })
            .unwrap();
        store
    };
    // `a` has a lease of minutes; `b` one that has run out by its next use.
    let (a, b) = (open("a", 600_000), open("b", 1));
    assert!(a.try_lead("a").unwrap());
    let pending = |id: &str| job(id, JobStatus::Pending, 1);
    let mut ordered = pending("ordered");
    ordered.order = Some(OrderSlot {
        key: "k".into(),
        seq: 1,
    });
    let mut jobs: Vec<Job> = (0..5).map(|i| pending(&format!("j{i}"))).collect();
    jobs.push(ordered);
    let known = ["s".to_string()];
    let (la, lb) = (a.clone().leases().unwrap(), b.clone().leases().unwrap());
    // The leader, without room, keeps none of its new jobs for itself.
    la.keep_new(false);
    a.complete_pipeline(&made(jobs)).unwrap();
    assert!(!la.kept("j0"));
    // Jobs of subscriptions a node does not know are left to others.
    assert!(lb.claim(10, &["other".to_string()]).unwrap().is_empty());
    let first = la.claim(3, &known).unwrap();
    let second = lb.claim(10, &known).unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(
        second.len(),
        2,
        "the two free jobs left; never the ordered one"
    );
    let mut both = ids(&first);
    both.extend(ids(&second));
    both.sort();
    assert_eq!(both, ["j0", "j1", "j2", "j3", "j4"]);
    assert!(la.claim(10, &known).unwrap().is_empty());

    // States of a job another node holds are not recorded.
    let mut theirs = second[0].clone();
    theirs.status = JobStatus::Dead;
    assert_eq!(la.record(std::slice::from_ref(&theirs)).unwrap(), 1);
    assert_eq!(
        a.job(&theirs.id).unwrap().unwrap().status,
        JobStatus::Pending
    );
    // Its holder's are; a settled job is nobody's.
    let mut done = first[0].clone();
    done.status = JobStatus::Delivered;
    assert_eq!(la.record(&[done.clone()]).unwrap(), 0);
    assert_eq!(
        a.job(&done.id).unwrap().unwrap().status,
        JobStatus::Delivered
    );

    // `b` goes silent past its lease: `a` frees its two jobs and takes them;
    // `b`'s late states of them are refused.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(la.free_expired().unwrap(), 2);
    assert_eq!(ids(&la.claim(10, &known).unwrap()), ids(&second));
    let mut late = second[1].clone();
    late.status = JobStatus::Delivered;
    assert_eq!(lb.record(&[late]).unwrap(), 1);

    // What the store says `a` holds (unordered): its two left and the two
    // taken from `b`.
    let mut held = la.held().unwrap();
    held.sort();
    let mut want: Vec<String> = first
        .iter()
        .filter(|j| j.id != done.id)
        .map(|j| j.id.clone())
        .collect();
    want.extend(ids(&second));
    want.sort();
    assert_eq!(held, want);
    // A clean stop hands over at once what `a` held: its four pending
    // jobs and, as the leader, the ordered one.
    assert_eq!(la.release_mine().unwrap(), 5);
    assert_eq!(lb.claim(10, &known).unwrap().len(), 4);
    // The ordered job is the leader's; a new leader adopts it.
    assert_eq!(lb.adopt_ordered().unwrap(), 1);
    let holders = pg.psql(&format!(
        "SELECT lease_node FROM {schema}.jobs WHERE id = 'ordered'"
    ));
    assert_eq!(holders, "b");

    // With room, and alone alive (`b`'s lease ran out), the leader keeps
    // every new job for itself: none is left to claim.
    la.keep_new(true);
    a.heartbeat(&NodeRecord {
        id: "a".into(),
        address: "http://a".into(),
        started_at_ms: 1,
        seen_at_ms: hookhost_core::clock::now_ms(),
        leading: true,
        deliveries_held: 0,
    })
    .unwrap();
    a.complete_pipeline(&made(vec![pending("k0"), pending("k1")]))
        .unwrap();
    assert!(la.kept("k0") && la.kept("k1"));
    assert!(!la.kept("k0"), "asked once");
    assert!(lb.claim(10, &known).unwrap().is_empty());
}

/// A transaction the store ends without committing (here a window close
/// that finds nothing due and returns early) must still end on the server
/// at once: each pooled connection is driven only while a call waits on it,
/// and a `ROLLBACK` left queued until the connection's next use kept the
/// close's `FOR UPDATE` lock, stalling every other node's close.
#[test]
fn a_transaction_ended_without_commit_leaves_no_session_in_it() {
    use hookhost_core::store::WindowStore;
    use hookhost_tests::{PATIENCE, wait_until};
    // A server of its own: other tests' sessions are between statements of
    // their transactions at any moment.
    let pg = hookhost_tests::postgres::TestPostgres::private();
    let root = tempfile::tempdir().unwrap();
    let store =
        PgStore::open(&pg.settings(hookhost_tests::postgres::schema_for(root.path()))).unwrap();
    let none = |_: &[WindowMember]| -> Vec<Job> { Vec::new() };
    assert_eq!(store.close_due_windows(150, 100, &none).unwrap().members, 0);
    let in_transaction = || {
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookhost' \
             AND state LIKE 'idle in transaction%'",
        )
    };
    assert!(
        wait_until(PATIENCE, || in_transaction() == "0").is_some(),
        "a hookhost session stayed in its transaction: {} such sessions",
        in_transaction()
    );
}

/// Calls made one after another use one pooled connection, not each the
/// next one in turn: a steady load then keeps the same few server
/// processes busy (their caches warm) while the rest of the pool stays
/// unopened. Taken in turn, the eight connections of a pool all served the
/// hot path, at about a tenth more PostgreSQL CPU per event (BENCHMARKS).
#[test]
fn calls_one_after_another_reuse_one_pooled_connection() {
    use hookhost_core::store::DeliveryQueue;
    // A server of its own: other tests' sessions would be counted.
    let pg = hookhost_tests::postgres::TestPostgres::private();
    let root = tempfile::tempdir().unwrap();
    let mut settings = pg.settings(hookhost_tests::postgres::schema_for(root.path()));
    settings.pool_size = 8;
    let store = PgStore::open(&settings).unwrap();
    let sessions = || {
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookhost' \
             AND backend_type = 'client backend'",
        )
        .parse::<usize>()
        .unwrap()
    };
    let before = sessions();
    for _ in 0..20 {
        assert_eq!(store.pending_count().unwrap(), 0);
    }
    let after = sessions();
    assert!(
        after <= before + 1,
        "20 calls one after another opened {} sessions (before them: {before})",
        after - before
    );
}
