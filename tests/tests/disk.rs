//! A full disk under the data folder: ingest answers 503 (with Retry-After)
//! and `/readyz` says why while it is full; once space is freed the server
//! recovers by itself, without a restart, and every acknowledged event is
//! delivered. Needs a small filesystem of its own: a tmpfs mounted here
//! (root only; skipped with a message elsewhere).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hookhost_tests::http::{Receiver, get, request_with_headers};
use hookhost_tests::{PATIENCE, Running, wait_until};
use serde_json::json;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> Result<SmallFs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallFs(at.to_owned()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `file` until the filesystem is full.
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).expect("fill file");
    let chunk = vec![0u8; 256 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_under_the_journal_gives_503_and_once_freed_the_server_recovers() {
    full_disk_then_freed(Under::JournalAndStore);
}

/// The journal on another disk: acknowledgements go on while sled cannot
/// write, until the failed store is noticed; once freed, sled is reopened
/// and what it lost is run again from the journal.
#[test]
fn a_full_disk_under_the_store_gives_503_and_once_freed_the_store_is_reopened() {
    full_disk_then_freed(Under::Store);
}

#[derive(PartialEq)]
enum Under {
    JournalAndStore,
    Store,
}

fn full_disk_then_freed(under: Under) {
    let root = tempfile::tempdir().unwrap();
    let fs = match SmallFs::mount(&root.path().join("fs"), "16m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED disk-full test: cannot mount a tmpfs here ({why}); it needs root");
            return;
        }
    };
    let receiver = Receiver::start();
    let journal = match under {
        Under::JournalAndStore => String::new(),
        Under::Store => format!(
            "journal_dir = \"{}\"\n",
            root.path().join("journal").display()
        ),
    };
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        &format!("admin_token = \"adm1n\"\ncheckpoint_ms = 200\n{journal}"),
        &format!(
            "[[subscriptions]]\nid = \"all\"\nurl = \"{}\"\ntypes = [\"*\"]\nseed = \"s\"\n\
             intervals = {{ \"*\" = \"direct\" }}\n",
            receiver.url("all")
        ),
    );
    // The data folder on the small filesystem.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "data_dir = \"db\"",
        &format!("data_dir = \"{}\"", fs.0.join("db").display()),
    );
    std::fs::write(&config, text).unwrap();
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let pad = "x".repeat(3000);
    let mut n = 0;
    let mut acknowledged = BTreeSet::new();
    let mut send = |acknowledged: &mut BTreeSet<u32>| {
        n += 1;
        let event = json!({"type": "report", "data": {"n": n, "pad": pad}});
        let (status, headers, body) =
            request_with_headers(api, "POST", "/v1/events", &[], event.to_string().as_bytes());
        match status {
            202 => {
                acknowledged.insert(n);
            }
            503 => {
                assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
                let error = body["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains("journal") || error.contains("store"),
                    "{body}"
                );
            }
            other => panic!("ingest answered {other}: {body}"),
        }
        status
    };
    assert_eq!(send(&mut acknowledged), 202);
    fill(&fs.0.join("fill"));
    // Writes fail once the space the files already hold runs out.
    let refused = wait_until(PATIENCE, || send(&mut acknowledged) == 503);
    assert!(refused.is_some(), "ingest never refused on a full disk");
    let not_ready = wait_until(PATIENCE, || {
        let (status, body) = get(api, "/readyz", &[]);
        status == 503 && body.to_string().contains("cannot write")
    });
    assert!(
        not_ready.is_some(),
        "/readyz: {:?}",
        get(api, "/readyz", &[])
    );
    if under == Under::Store {
        server.wait_for(&["the store cannot write"], PATIENCE);
    }
    for _ in 0..5 {
        send(&mut acknowledged);
    }
    std::fs::remove_file(fs.0.join("fill")).unwrap();
    // No restart: the server notices and recovers.
    let ready = wait_until(PATIENCE, || get(api, "/readyz", &[]).0 == 200);
    assert!(ready.is_some(), "/readyz: {:?}", get(api, "/readyz", &[]));
    if under == Under::Store {
        server.wait_for(&["the store writes again"], PATIENCE);
    }
    for _ in 0..5 {
        assert_eq!(send(&mut acknowledged), 202);
    }
    let delivered = || -> BTreeSet<u32> {
        receiver
            .bodies("all")
            .iter()
            .filter_map(|b| b["data"]["n"].as_u64())
            .map(|n| n as u32)
            .collect()
    };
    let all = wait_until(PATIENCE, || acknowledged.is_subset(&delivered()));
    assert!(
        all.is_some(),
        "acknowledged {acknowledged:?}, delivered {:?}",
        delivered()
    );
    // Failed writes left no files behind.
    let journal_dir = match under {
        Under::JournalAndStore => fs.0.join("db/journal"),
        Under::Store => root.path().join("journal"),
    };
    let segments = std::fs::read_dir(journal_dir).unwrap().count();
    assert!(segments <= 3, "{segments} journal segments");
    // The management API writes again too.
    let (status, body) = hookhost_tests::http::request(
        api,
        "POST",
        "/v1/subscriptions",
        &["Authorization: Bearer adm1n"],
        json!({"id": "later", "url": receiver.url("later"), "types": ["*"], "seed": "s"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let status = server.terminate(PATIENCE);
    assert!(status.success(), "exit status {status}");
}
