//! The API's connection hygiene against hostile clients: slow heads and idle
//! keep-alives are cut off, slow bodies time out, a flood of idle sockets
//! cannot lock out `/healthz` or ingest, and at the cap with every
//! connection busy a new one is told so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hookhost_tests::http::{get, post};
use hookhost_tests::{PATIENCE, Running, wait_until};

fn start(server: &str) -> (tempfile::TempDir, Running, SocketAddr) {
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(root.path(), "", server, "");
    let mut running = Running::start(&["serve", "--config", &config]);
    let api = running.api_addr(PATIENCE);
    (root, running, api)
}

/// Whether the server has closed `conn`: a read sees the end of the stream
/// (or a reset) rather than nothing yet. Anything sent before is skipped.
fn closed_by_server(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn slow_heads_and_idle_keep_alives_are_cut_off_while_healthz_answers() {
    let (_root, server, api) = start("header_timeout_ms = 1000\nbody_timeout_ms = 1000\n");
    // A body that never completes is answered 408.
    let mut slow_body = slow_body(api);
    // A client sending its head one byte at a time, forever.
    let mut slow = TcpStream::connect(api).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    // A client that sends one request, reads the answer and stays silent.
    let mut idle = TcpStream::connect(api).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut slow_cut = false;
    let cut = wait_until(PATIENCE, || {
        let (status, _) = get(api, "/healthz", &[]);
        assert_eq!(status, 200, "/healthz while slow clients hold connections");
        if !slow_cut && slow.write_all(b"x").is_err() {
            slow_cut = true;
        }
        slow_cut = slow_cut || closed_by_server(&mut slow);
        std::thread::sleep(Duration::from_millis(100));
        slow_cut && closed_by_server(&mut idle)
    });
    assert!(
        cut.is_some(),
        "the slow head or the idle keep-alive was not cut off"
    );
    slow_body.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let _ = slow_body.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("server.body_timeout_ms"), "{answer}");
    drop(server);
}

#[test]
fn a_flood_of_idle_connections_does_not_lock_out_healthz_or_ingest() {
    // The head timeout is long: only shedding at the cap can make room.
    let (_root, server, api) = start("max_connections = 32\nheader_timeout_ms = 600000\n");
    let mut flood: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(api).expect("connect"))
        .collect();
    // One half-sent head among them, as a slowloris client would leave it.
    flood[0].write_all(b"POST /v1/events HTTP/1.1\r\n").unwrap();
    let (status, _) = get(api, "/healthz", &[]);
    assert_eq!(status, 200);
    let (status, answer) = post(
        api,
        "/v1/events",
        br#"{"id": "during-flood", "type": "report", "data": {}}"#,
    );
    assert_eq!(status, 202, "{answer}");
    // The server holds at most its cap: the oldest idle sockets were closed.
    let mut closed = vec![false; flood.len()];
    let shed = wait_until(PATIENCE, || {
        for (conn, closed) in flood.iter_mut().zip(closed.iter_mut()) {
            *closed = *closed || closed_by_server(conn);
        }
        closed.iter().filter(|c| **c).count() >= flood.len() - 32
    });
    assert!(
        shed.is_some(),
        "{} of {} flood connections closed",
        closed.iter().filter(|c| **c).count(),
        flood.len()
    );
    assert!(closed[0], "the oldest (half-sent head) went first");
    let (status, metrics) = get(api, "/metrics", &[]);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("hookhost_api_connections_dropped_total{how=\"shed\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    drop(server);
}

#[test]
fn at_the_cap_with_every_connection_in_a_request_a_new_one_gets_503() {
    let (_root, server, api) = start("max_connections = 3\nbody_timeout_ms = 600000\n");
    // Three requests whose bodies do not come: each connection is busy.
    let mut slow: Vec<TcpStream> = (0..3).map(|_| slow_body(api)).collect();
    let (status, answer) = get(api, "/healthz", &[]);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("server.max_connections"),
        "{answer}"
    );
    // One client gives up: its place is free again.
    drop(slow.pop());
    let freed = wait_until(PATIENCE, || get(api, "/healthz", &[]).0 == 200);
    assert!(
        freed.is_some(),
        "/healthz never answered after a slot freed"
    );
    drop(server);
}

/// A connection whose ingest request announces 100 bytes and sends 8, once
/// the server is reading the body (its `100 Continue` says so).
fn slow_body(api: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(api).unwrap();
    conn.write_all(
        b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          expect: 100-continue\r\ncontent-length: 100\r\n\r\n",
    )
    .unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    conn.write_all(b"{\"type\":").unwrap();
    conn
}
