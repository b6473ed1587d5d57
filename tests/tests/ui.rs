//! The operator dashboard in a real browser: Debian's Chromium driven by
//! playwright-core (`tests/ui/dashboard.mjs`) against a server in-process
//! and a real receiver. The script clicks; this test checks what the clicks
//! did on the server and at the receiver.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use hookhost_tests::http::{Answer, Receiver, get, post, request};
use hookhost_tests::{
    InProcess, PATIENCE, bikeep_sample, built_plugin, toolchain_dir, workspace_root, write_config,
};

const TOKEN: &str = "dashboard-admin-token";

/// A config with the admin token and the bikeep catalog, in `root`.
fn config_with_catalog(root: &Path) -> String {
    let catalog = workspace_root().join("examples/bikeep/catalog.json");
    write_config(
        root,
        "",
        &format!("admin_token = \"{TOKEN}\"\n"),
        &format!("[catalog]\nfiles = [{:?}]\n", catalog.to_str().unwrap()),
    )
}

/// Creates a subscription over the API (config-file ones are read-only).
fn create_subscription(api: SocketAddr, subscription: serde_json::Value) {
    let admin = format!("Authorization: Bearer {TOKEN}");
    let (status, answer) = request(
        api,
        "POST",
        "/v1/subscriptions",
        &[&admin],
        subscription.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{answer}");
}

/// Runs `tests/ui/<script>` in Node against the server at `api`, with the
/// browser toolchain and `env`; fails with its log unless it succeeds.
fn run_browser_script(script: &str, api: SocketAddr, shots: &Path, env: &[(&str, &OsStr)]) {
    let out = Command::new("node")
        .arg(workspace_root().join("tests/ui").join(script))
        .env("HOOKHOST_URL", format!("http://{api}"))
        .env("PLAYWRIGHT_DIR", toolchain_dir("ui"))
        .env("SCREENSHOTS", shots)
        .envs(env.iter().copied())
        .output()
        .expect("node runs (./dev test installs Node.js)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stderr}");
}

/// Where screenshots go: `HOOKHOST_UI_SCREENSHOTS`, else a temporary folder.
fn screenshots(root: &Path) -> PathBuf {
    std::env::var_os("HOOKHOST_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("screenshots"))
}

#[test]
fn dashboard_signs_in_re_sends_and_recovers_deliveries_and_disables_a_subscription() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = config_with_catalog(root.path());
    std::fs::copy(
        built_plugin("alarm-filter"),
        root.path().join("plugins/alarm-filter.wasm"),
    )
    .unwrap();
    let server = InProcess::start(&config);
    let api = server.addr;
    let admin = format!("Authorization: Bearer {TOKEN}");
    create_subscription(
        api,
        serde_json::json!({
            "id": "customer",
            "url": receiver.url("customer"),
            "types": ["alarm"],
            "seed": "s",
            "intervals": {"*": "direct"},
            "plugins": [{"plugin": "alarm-filter", "config": {"reasons": ["wire_cut"]}}],
        }),
    );
    // A second endpoint refuses its first delivery (400: dead at once), then
    // takes what the page's recover sends.
    receiver.script("refusing", Answer::Sequence(vec![400], 200));
    create_subscription(
        api,
        serde_json::json!({
            "id": "refusing", "url": receiver.url("refusing"), "types": ["alarm"], "seed": "s",
            "intervals": {"*": "direct"},
        }),
    );

    let (status, answer) = post(
        api,
        "/v1/events",
        bikeep_sample("alarm-wire-cut").to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("customer", 1, PATIENCE);
    let (_, listed) = get(api, "/v1/deliveries?subscription=customer", &[&admin]);
    let delivery = listed["deliveries"][0]["id"].as_str().unwrap().to_string();
    // Pages: one delivery each, the cursor leads to the other, then none.
    let (_, first) = get(api, "/v1/deliveries?limit=1", &[&admin]);
    assert_eq!(
        (first["total"].as_u64(), first["total_exact"].as_bool()),
        (Some(2), Some(true))
    );
    let next = first["next"].as_str().expect("a next page").to_string();
    let (_, second) = get(
        api,
        &format!("/v1/deliveries?limit=1&after={next}"),
        &[&admin],
    );
    assert_eq!(
        second["deliveries"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    assert_ne!(second["deliveries"][0]["id"], first["deliveries"][0]["id"]);
    assert!(second["next"].is_null(), "{second}");
    assert_eq!(get(api, "/v1/deliveries?after=nonsense", &[&admin]).0, 400);
    let dead = || {
        let (_, dead) = get(
            api,
            "/v1/deliveries?subscription=refusing&status=dead",
            &[&admin],
        );
        dead["total"].as_u64().unwrap_or(0)
    };
    hookhost_tests::wait_until(PATIENCE, || dead() == 1).expect("the refused delivery is dead");

    let shots = screenshots(root.path());
    let router = built_plugin("alarm-router");
    run_browser_script(
        "dashboard.mjs",
        api,
        &shots,
        &[
            ("HOOKHOST_TOKEN", TOKEN.as_ref()),
            ("DELIVERY_ID", delivery.as_ref()),
            ("SUBSCRIPTION_ID", "customer".as_ref()),
            ("ROUTER_WASM", router.as_os_str()),
        ],
    );

    // The re-send went out: the receiver got the delivery twice, under the
    // same webhook-id, and the delivery has two attempts.
    receiver.wait_count("customer", 2, PATIENCE);
    let (_, one) = get(api, &format!("/v1/deliveries/{delivery}"), &[&admin]);
    assert_eq!(one["attempts"].as_array().unwrap().len(), 2, "{one}");
    // The request the page shows is what the receiver got, byte for byte.
    let got = receiver
        .received()
        .into_iter()
        .rfind(|r| r.path == "customer")
        .unwrap();
    assert_eq!(one["request"]["exact"], true, "{one}");
    assert_eq!(one["request"]["body"].as_str(), Some(got.body.as_str()));
    let shown: std::collections::BTreeMap<String, String> =
        serde_json::from_value::<Vec<(String, String)>>(one["request"]["headers"].clone())
            .unwrap()
            .into_iter()
            .collect();
    for name in [
        "webhook-id",
        "webhook-timestamp",
        "content-type",
        "user-agent",
    ] {
        assert_eq!(shown.get(name), got.headers.get(name), "{name}");
    }
    // The page's recover re-sent the dead delivery, which the endpoint took;
    // then the page's test event went there too, and only there.
    receiver.wait_count("refusing", 3, PATIENCE);
    let (_, tests) = get(api, "/v1/deliveries?subscription=refusing", &[&admin]);
    let test_deliveries: Vec<&serde_json::Value> = tests["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["event_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("test_"))
        })
        .collect();
    assert_eq!(test_deliveries.len(), 1, "{tests}");
    assert_eq!(test_deliveries[0]["status"], "delivered", "{tests}");
    assert_eq!(test_deliveries[0]["type"], "alarm");
    let (_, all) = get(api, "/v1/deliveries", &[&admin]);
    assert_eq!(
        all["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["event_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("test_")))
            .count(),
        1,
        "the test event went to one subscription only: {all}"
    );
    // The router uploaded from the page is in the plugins folder and serves.
    assert!(root.path().join("plugins/alarm-router.wasm").is_file());
    let (_, plugins) = get(api, "/v1/plugins", &[&admin]);
    assert!(
        plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "alarm-router" && p["serving"].is_object()),
        "{plugins}"
    );
    assert!(!root.path().join("plugins/broken.wasm").exists());
    // The one made in the page exists, as the form gave it.
    let (status, made) = get(api, "/v1/subscriptions/made-in-the-page", &[&admin]);
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["envelope"], "plain", "{made}");
    // The subscription was disabled from the page.
    let (_, sub) = get(api, "/v1/subscriptions/customer", &[&admin]);
    assert_eq!(sub["enabled"], false, "{sub}");
    // The overview's numbers: events came in since the server started.
    let (status, history) = get(api, "/v1/stats/history", &[&admin]);
    assert_eq!(status, 200, "{history}");
    let points = history["points"].as_array().unwrap();
    assert!(
        points
            .iter()
            .any(|p| p["events_in_per_s"].as_f64().unwrap_or(0.0) > 0.0),
        "{history}"
    );
    for page in [
        "overview",
        "login",
        "deliveries",
        "delivery",
        "subscriptions",
        "subscription-form",
        "plugins",
        "event-types",
        "deliveries-narrow-dark",
    ] {
        let file = shots.join(format!("{page}.png"));
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", file.display());
    }

    // The page itself is served with a policy that runs only its own script.
    let (status, headers, _) =
        hookhost_tests::http::request_with_headers(api, "GET", "/ui", &[], b"");
    assert_eq!(status, 200);
    let policy = headers
        .get("content-security-policy")
        .cloned()
        .unwrap_or_default();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    server.stop();
}

#[test]
fn a_portal_link_sees_and_re_sends_its_own_deliveries_and_nothing_of_another() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = config_with_catalog(root.path());
    let server = InProcess::start(&config);
    let api = server.addr;
    let admin = format!("Authorization: Bearer {TOKEN}");
    for id in ["customer", "other"] {
        create_subscription(
            api,
            serde_json::json!({
                "id": id, "url": receiver.url(id), "types": ["alarm"], "seed": "s",
                "intervals": {"*": "direct"},
            }),
        );
    }
    let (status, answer) = post(
        api,
        "/v1/events",
        bikeep_sample("alarm-wire-cut").to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("customer", 1, PATIENCE);
    receiver.wait_count("other", 1, PATIENCE);
    let delivery_of = |sub: &str| {
        let (_, listed) = get(
            api,
            &format!("/v1/deliveries?subscription={sub}"),
            &[&admin],
        );
        listed["deliveries"][0]["id"].as_str().unwrap().to_string()
    };
    let (own, others) = (delivery_of("customer"), delivery_of("other"));

    // Making links: admin only, an existing subscription, a sane lifetime.
    let link = |sub: &str, body: &str, auth: &[&str]| {
        request(
            api,
            "POST",
            &format!("/v1/subscriptions/{sub}/portal"),
            auth,
            body.as_bytes(),
        )
    };
    assert_eq!(link("customer", "", &[]).0, 401);
    assert_eq!(link("nobody", "", &[&admin]).0, 404);
    assert_eq!(link("customer", r#"{"expires_in_s": 0}"#, &[&admin]).0, 422);
    let (status, made) = link("customer", r#"{"expires_in_s": 3600}"#, &[&admin]);
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    let path = made["path"].as_str().unwrap().to_string();
    assert_eq!(path, format!("/portal#{token}"));
    let portal = format!("Authorization: Bearer {token}");

    // What the link reaches: its subscription, and nothing of the other.
    let (status, overview) = get(api, "/v1/portal", &[&portal]);
    assert_eq!(status, 200, "{overview}");
    assert_eq!(overview["subscription"]["id"], "customer");
    assert!(overview["subscription"].get("seed").is_none());
    for query in ["", "?subscription=other"] {
        let (status, listed) = get(api, &format!("/v1/portal/deliveries{query}"), &[&portal]);
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["total"], 1, "{listed}");
        assert_eq!(listed["deliveries"][0]["id"], own.as_str());
    }
    assert_eq!(
        get(api, &format!("/v1/portal/deliveries/{own}"), &[&portal]).0,
        200
    );
    let (status, body) = get(api, &format!("/v1/portal/deliveries/{others}"), &[&portal]);
    assert_eq!(status, 404, "{body}");
    let (status, body) = request(
        api,
        "POST",
        &format!("/v1/portal/deliveries/{others}/resend"),
        &[&portal],
        b"",
    );
    assert_eq!(status, 404, "{body}");
    // The management API does not take a portal token, nor the portal the
    // admin token; an altered token is refused.
    assert_eq!(get(api, "/v1/deliveries", &[&portal]).0, 403);
    assert_eq!(
        get(api, &format!("/v1/deliveries/{others}"), &[&portal]).0,
        403
    );
    assert_eq!(get(api, "/v1/portal", &[&admin]).0, 401);
    // One character of the payload changed: the MAC no longer matches.
    let at = "hhp_".len() + 2;
    let swapped = if &token[at..at + 1] == "A" { "B" } else { "A" };
    let altered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    assert_eq!(
        get(
            api,
            "/v1/portal",
            &[&format!("Authorization: Bearer {altered}")]
        )
        .0,
        401
    );
    let (_, types) = get(api, "/v1/portal/event-types", &[&portal]);
    let names: Vec<&str> = types["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alarm"], "{types}");

    let shots = screenshots(root.path());
    run_browser_script(
        "portal.mjs",
        api,
        &shots,
        &[
            ("PORTAL_PATH", path.as_ref()),
            ("DELIVERY_ID", own.as_ref()),
            ("OTHER_ID", others.as_ref()),
        ],
    );
    // The portal's re-send reached the customer; the other got nothing more.
    receiver.wait_count("customer", 2, PATIENCE);
    // The portal rotated the customer's signing secret, and only theirs.
    let secrets = |sub: &str| {
        let (_, s) = get(api, &format!("/v1/subscriptions/{sub}"), &[&admin]);
        s["secrets_count"].as_u64()
    };
    assert_eq!((secrets("customer"), secrets("other")), (Some(1), Some(0)));
    server.stop();
    assert_eq!(receiver.count("other"), 1);
    assert!(shots.join("portal.png").is_file());
}
