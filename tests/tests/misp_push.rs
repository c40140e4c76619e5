//! `[misp_push]` against the real binaries: `gapferry-send` sends the real Infoblox MISP
//! events and a real STIX bundle over loopback to `gapferry-recv`, whose push worker talks
//! to a stand-in for the high-side MISP API (a small HTTP server in this test, on
//! 127.0.0.1, answering as MISP's `EventsController` does and recording every call).
//! Every delivered event is added once, edited when a newer version arrives, left alone
//! when an older or equal one does; a 500 is retried and recorded; a refused key is
//! recorded with advice and not retried; a bundle goes through `upload_stix/2`; pushes
//! not made when the receiver stops are recorded; TLS is verified against `ca_file`
//! (an `openssl s_server` with a certificate from a CA made in the test).

use gapferry_tests::harness::refused_at_start;
use gapferry_tests::harness::send_with_binary;
use gapferry_tests::harness::spawn_listening;
use gapferry_tests::harness::{
    binary, free_port, metric_value, read_records, scrape_metrics, with_outcome, ChildGuard,
};
use gapferry_tests::prereq::require;
use gapferry_tests::realdata::{infoblox_events, realdata};
use gapferry_tests::tls::TestPki;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KEY: &str = "gapferryTestKey0123456789abcdefABCDEF0123";

/// The smallest real event: (its path, its parsed JSON).
fn smallest_event() -> (PathBuf, Value) {
    let path = infoblox_events()
        .into_iter()
        .min_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let v = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, v)
}

/// One API call the stand-in MISP received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    authorization: String,
    status: u16,
    body: Vec<u8>,
}

#[derive(Default)]
struct MispState {
    /// Event uuid -> the `Event` object MISP holds.
    events: BTreeMap<String, Value>,
    /// Bundle ids uploaded through upload_stix.
    bundles: BTreeSet<String>,
    calls: Vec<Call>,
    /// Calls still to be answered with a 500.
    fail_next: usize,
}

/// A stand-in for the high-side MISP's REST API, answering with MISP's status codes and
/// JSON shapes (app/Controller/EventsController.php, RestResponseComponent::saveFailResponse,
/// AppController's key check).
struct FakeMisp {
    addr: SocketAddr,
    state: Arc<Mutex<MispState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMisp {
    fn start() -> FakeMisp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(MispState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => serve(conn, &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeMisp {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }
}

impl Drop for FakeMisp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request from `conn`, answers it, closes.
fn serve(conn: TcpStream, state: &Mutex<MispState>) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body).unwrap();
    } else {
        assert!(
            !headers.contains_key("transfer-encoding"),
            "the pusher sends bodies with a length"
        );
    }
    let authorization = headers.get("authorization").cloned().unwrap_or_default();
    let mut st = state.lock().unwrap();
    let (status, answer, location) = answer(&mut st, &method, &path, &authorization, &body);
    st.calls.push(Call {
        method,
        path,
        authorization,
        status,
        body,
    });
    drop(st);
    let answer = answer.to_string();
    let location = location
        .map(|l| format!("Location: {l}\r\n"))
        .unwrap_or_default();
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn error(message: &str, url: &str) -> Value {
    json!({"name": message, "message": message, "url": url})
}

fn save_fail(action: &str, url: &str, errors: &str) -> Value {
    let message = format!("Could not {action} Event");
    json!({"saved": false, "name": message, "message": message, "url": url, "errors": errors})
}

fn event_of(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).expect("the pushed body is JSON");
    v.get("Event").cloned().unwrap_or(v)
}

fn timestamp(e: &Value) -> i64 {
    match &e["timestamp"] {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_i64().unwrap(),
    }
}

/// MISP's answer: status, JSON body, Location header.
fn answer(
    st: &mut MispState,
    method: &str,
    path: &str,
    authorization: &str,
    body: &[u8],
) -> (u16, Value, Option<String>) {
    if authorization != KEY {
        return (403, error("Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.", path), None);
    }
    if st.fail_next > 0 {
        st.fail_next -= 1;
        return (500, error("An Internal Error Has Occurred.", path), None);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["events", "view", uuid]) => match st.events.get(*uuid) {
            Some(e) => (200, json!({ "Event": e }), None),
            None => (404, error("Invalid event", path), None),
        },
        ("POST", ["events", "add"]) => {
            let e = event_of(body);
            let uuid = e["uuid"].as_str().unwrap().to_string();
            if st.events.contains_key(&uuid) {
                let id = st.events.keys().position(|k| *k == uuid).unwrap() + 1;
                return (
                    404,
                    error("Event already exists, if you would like to edit it, use the url in the location header.", path),
                    Some(format!("/events/{id}")),
                );
            }
            st.events.insert(uuid, e.clone());
            (200, json!({ "Event": e }), None)
        }
        ("POST", ["events", "edit", uuid]) => {
            let Some(held) = st.events.get(*uuid) else {
                return (404, error("Invalid event", path), None);
            };
            let e = event_of(body);
            if timestamp(&e) <= timestamp(held) {
                return (
                    403,
                    save_fail(
                        "edit",
                        path,
                        "Event could not be saved: Event in the request not newer than the local copy.",
                    ),
                    None,
                );
            }
            st.events.insert(uuid.to_string(), e.clone());
            (200, json!({ "Event": e }), None)
        }
        ("POST", ["events", "upload_stix", "2"]) => {
            let bundle: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if bundle["type"] != "bundle" {
                return (403, save_fail("add", path, "Not a STIX bundle"), None);
            }
            let id = bundle["id"].as_str().unwrap().to_string();
            if !st.bundles.insert(id.clone()) {
                return (
                    403,
                    save_fail("add", path, "Event with the same UUID already exists."),
                    None,
                );
            }
            let uuid = id.trim_start_matches("bundle--").to_string();
            (
                200,
                json!({"Event": {"id": "7", "uuid": uuid, "info": "STIX 2.1 Bundle"}}),
                None,
            )
        }
        _ => (404, error("Not found", path), None),
    }
}

/// A `gapferry-recv listen` with a `[misp_push]` section.
struct Receiver {
    child: ChildGuard,
    out: PathBuf,
    port: u16,
    metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_receiver(misp: &FakeMisp, key: &str) -> Receiver {
    start_receiver_with(&misp.url(), key, "attempts = 3\nbackoff = 1\n")
}

/// A receiver pushing to `url` with `key`; `extra` are more `[misp_push]` lines.
fn start_receiver_with(url: &str, key: &str, extra: &str) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let port = free_port(true);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
    let key_file = dir.path().join("misp.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let config = dir.path().join("recv.toml");
    let quoted = |p: &Path| serde_json::to_string(p.to_str().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{port}\"\nout = {}\nsession_timeout = 5\nmetrics = \"{metrics}\"\n\
             [misp_push]\nurl = \"{url}\"\nkey_file = {}\ntimeout = 30\n{extra}",
            quoted(&out),
            quoted(&key_file),
        ),
    )
    .unwrap();
    let log = dir.path().join("recv.log");
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.args(["listen", "--config"]).arg(&config);
    let child = spawn_listening(cmd, &log);
    Receiver {
        child,
        out,
        port,
        metrics,
        log,
        _dir: dir,
    }
}

impl Receiver {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `paths` with the real `gapferry-send` binary.
    fn send(&self, paths: &[PathBuf]) {
        let to = format!("127.0.0.1:{}", self.port);
        send_with_binary(paths, to, &["--rate", "400M"]);
    }

    /// Waits until `done` holds for the records, or panics with them.
    fn wait(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = read_records(&self.out);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; records: {r:#?}\nlog: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self) -> String {
        let out = Command::new(binary("gapferry-recv"))
            .args(["status", "--out"])
            .arg(&self.out)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn count(records: &[Value], outcome: &str) -> usize {
    with_outcome(records, outcome).len()
}

fn pushed_as(records: &[Value], push: &str) -> Vec<String> {
    with_outcome(records, "pushed")
        .into_iter()
        .filter(|r| r["push"] == push)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn calls_to(calls: &[Call], method: &str, prefix: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.method == method && c.path.starts_with(prefix))
        .cloned()
        .collect()
}

/// Writes `event` (with `timestamp` and `info` changed) as `<dir>/<uuid>.json`.
fn version(dir: &Path, event: &Value, timestamp: i64, pretty: bool) -> PathBuf {
    let mut e = event.clone();
    e["Event"]["timestamp"] = json!(timestamp.to_string());
    // The sender rewrites every event into PyMISP's feed form, so formatting alone would
    // not make other bytes: a reformatted copy also says so in its text.
    e["Event"]["info"] = json!(format!(
        "{} (version {timestamp}{})",
        event["Event"]["info"].as_str().unwrap(),
        if pretty { ", reformatted" } else { "" }
    ));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{}.json", e["Event"]["uuid"].as_str().unwrap()));
    let bytes = if pretty {
        serde_json::to_vec_pretty(&e).unwrap()
    } else {
        serde_json::to_vec(&e).unwrap()
    };
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_real_event_is_added_once_then_edited_when_newer_and_left_alone_when_not() {
    let misp = FakeMisp::start();
    let rx = start_receiver(&misp, KEY);
    let events = infoblox_events();
    rx.send(&events);
    let records = rx.wait("41 pushes", |r| count(r, "pushed") >= 41);
    assert_eq!(count(&records, "delivered"), 41);
    assert_eq!(count(&records, "push_failed"), 0, "{records:#?}");
    let calls = misp.calls();
    assert!(
        calls.iter().all(|c| c.authorization == KEY),
        "every call carries the key from key_file"
    );
    // Each event was looked up (404), then added once, with the bytes the feed holds.
    let adds = calls_to(&calls, "POST", "/events/add");
    assert_eq!(adds.len(), 41);
    assert_eq!(calls_to(&calls, "POST", "/events/edit/").len(), 0);
    let views = calls_to(&calls, "GET", "/events/view/");
    assert_eq!(views.len(), 41);
    assert!(views.iter().all(|c| c.status == 404));
    let mut added = BTreeSet::new();
    for add in &adds {
        assert_eq!(add.status, 200);
        let uuid = event_of(&add.body)["uuid"].as_str().unwrap().to_string();
        let in_feed = std::fs::read(rx.out.join("misp").join(format!("{uuid}.json"))).unwrap();
        assert!(
            add.body == in_feed,
            "{uuid}: the pushed bytes are the feed's"
        );
        assert!(added.insert(uuid), "one add per event");
    }
    let sent: BTreeSet<String> = events
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(added, sent, "every delivered event is in MISP");
    assert_eq!(pushed_as(&records, "added").len(), 41);

    // A newer version is edited in; an older one is refused by the feed and never pushed;
    // one with the same timestamp (other bytes) is looked up and left alone.
    let (_, event) = smallest_event();
    let uuid = event["Event"]["uuid"].as_str().unwrap().to_string();
    let ts = timestamp(&event["Event"]);
    let work = tempfile::tempdir().unwrap();
    rx.send(&[version(
        &work.path().join("newer"),
        &event,
        ts + 3600,
        false,
    )]);
    let records = rx.wait("the edit", |r| !pushed_as(r, "edited").is_empty());
    assert_eq!(pushed_as(&records, "edited"), [format!("{uuid}.json")]);
    rx.send(&[version(
        &work.path().join("older"),
        &event,
        ts - 3600,
        false,
    )]);
    rx.send(&[version(&work.path().join("equal"), &event, ts + 3600, true)]);
    let records = rx.wait("the equal version's push", |r| {
        !pushed_as(r, "unchanged").is_empty()
    });
    assert_eq!(
        count(&records, "failed"),
        1,
        "the feed refused the older one"
    );
    let calls = misp.calls();
    let edits = calls_to(&calls, "POST", "/events/edit/");
    assert_eq!(edits.len(), 1, "{edits:#?}");
    assert_eq!(edits[0].path, format!("/events/edit/{uuid}"));
    assert_eq!(edits[0].status, 200);
    assert_eq!(timestamp(&event_of(&edits[0].body)), ts + 3600);
    assert_eq!(calls_to(&calls, "POST", "/events/add").len(), 41, "no add");
    let held = misp.state.lock().unwrap().events[&uuid].clone();
    assert_eq!(timestamp(&held), ts + 3600, "MISP holds the newest version");
    assert_eq!(
        calls.len(),
        41 * 2 + 2 + 1,
        "41 views and adds, a view and an edit, a view for the equal one"
    );
    let status = rx.status();
    assert!(
        status.contains("misp push: 43 pushed (41 added, 1 edited, 1 already current), 0 failed attempts, 0 not pushed"),
        "{status}"
    );
}

#[test]
fn a_500_is_retried_and_recorded_then_pushed_and_a_bundle_goes_through_upload_stix() {
    let misp = FakeMisp::start();
    let rx = start_receiver(&misp, KEY);
    misp.fail_next(2);
    let (event, _) = smallest_event();
    rx.send(&[event]);
    let records = rx.wait("the push", |r| count(r, "pushed") >= 1);
    let failed = with_outcome(&records, "push_failed");
    assert_eq!(failed.len(), 2, "{records:#?}");
    for (i, f) in failed.iter().enumerate() {
        assert_eq!(f["http_status"], 500);
        assert_eq!(f["attempt"], i as u64 + 1);
        assert_eq!(f["retry_in_s"], 1 << i, "the wait doubles");
        let reason = f["reason"].as_str().unwrap();
        assert!(
            reason.contains("HTTP 500")
                && reason.contains("An Internal Error Has Occurred")
                && reason.contains("trying again"),
            "{reason}"
        );
        assert_eq!(f["kind"], "misp");
    }
    let pushed = with_outcome(&records, "pushed");
    assert_eq!(
        (pushed[0]["push"].as_str(), pushed[0]["attempt"].as_u64()),
        (Some("added"), Some(3))
    );
    let calls = misp.calls();
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [500, 500, 404, 200],
        "view failed twice, then view and add"
    );

    // A real STIX 2.1 bundle is posted as is to upload_stix/2.
    let bundle = realdata().join("stix21/oasis-examples/indicator-for-c2-ip-address.json");
    rx.send(std::slice::from_ref(&bundle));
    let records = rx.wait("the bundle's push", |r| count(r, "pushed") >= 2);
    let stix = with_outcome(&records, "pushed")
        .into_iter()
        .find(|r| r["kind"] == "stix")
        .cloned()
        .unwrap();
    assert_eq!(stix["push"], "added");
    let uploads = calls_to(&misp.calls(), "POST", "/events/upload_stix/2");
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].authorization, KEY);
    assert!(uploads[0].body == std::fs::read(&bundle).unwrap());

    let body = scrape_metrics(rx.metrics).expect("metrics answer");
    assert_eq!(
        metric_value(
            &body,
            r#"gapferry_receiver_objects_total{kind="misp",outcome="push_failed"}"#
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        metric_value(
            &body,
            r#"gapferry_receiver_objects_total{kind="stix",outcome="pushed"}"#
        ),
        Some(1.0)
    );
    let status = rx.status();
    assert!(status.contains("misp push: 2 pushed (2 added, 0 edited, 0 already current), 2 failed attempts, 0 not pushed"), "{status}");
    assert!(
        status.contains("last push error:") && status.contains("HTTP 500"),
        "{status}"
    );
}

#[test]
fn a_refused_key_is_recorded_with_advice_and_not_retried() {
    let misp = FakeMisp::start();
    let rx = start_receiver(&misp, "not-the-key-misp-knows");
    let (event, _) = smallest_event();
    rx.send(&[event]);
    let records = rx.wait("the refusal", |r| count(r, "push_failed") >= 1);
    let f = with_outcome(&records, "push_failed")[0].clone();
    assert_eq!(f["http_status"], 403);
    assert!(f["retry_in_s"].is_null(), "{f}");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.contains("Authentication failed")
            && reason.contains("key_file")
            && reason.contains("not retried"),
        "{reason}"
    );
    // A bundle sent afterwards is refused too; by then a retry of the event (1 s backoff)
    // would have reached MISP.
    rx.send(&[realdata().join("stix21/oasis-examples/indicator-for-c2-ip-address.json")]);
    let records = rx.wait("the bundle's refusal", |r| count(r, "push_failed") >= 2);
    assert_eq!(count(&records, "pushed"), 0);
    let calls = misp.calls();
    assert_eq!(calls.len(), 2, "one call each, no retry: {calls:#?}");
    assert!(calls.iter().all(|c| c.status == 403));
    let status = rx.status();
    assert!(
        status.contains("2 failed attempts, 2 not pushed"),
        "{status}"
    );
    assert!(status.contains("HTTP 403"), "{status}");
    assert!(rx
        .log_text()
        .contains("push into the high-side MISP failed"));
}

#[test]
fn a_push_without_a_usable_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("recv.toml");
    let absent = dir.path().join("absent.key");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{}\"\nout = {}\n[misp_push]\nurl = \"https://misp.example\"\nkey_file = {}\n",
            free_port(true),
            serde_json::to_string(dir.path().join("out").to_str().unwrap()).unwrap(),
            serde_json::to_string(absent.to_str().unwrap()).unwrap(),
        ),
    )
    .unwrap();
    let stderr = refused_at_start(&config);
    assert!(
        stderr.contains("[misp_push] key_file")
            && stderr.contains("absent.key")
            && stderr.contains("API key"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "refused before anything was created"
    );
}

#[test]
fn pushes_waiting_when_the_receiver_stops_are_recorded_as_not_made() {
    let misp = FakeMisp::start();
    misp.fail_next(usize::MAX);
    let mut rx = start_receiver_with(&misp.url(), KEY, "attempts = 5\nbackoff = 600\n");
    let (event, _) = smallest_event();
    rx.send(&[event]);
    let records = rx.wait("the first failure", |r| count(r, "push_failed") >= 1);
    assert_eq!(with_outcome(&records, "push_failed")[0]["retry_in_s"], 600);
    let status = rx.child.terminate();
    assert!(status.success(), "{status}: {}", rx.log_text());
    let records = read_records(&rx.out);
    let failed = with_outcome(&records, "push_failed");
    assert_eq!(failed.len(), 2, "{records:#?}");
    assert!(failed[1]["retry_in_s"].is_null());
    let reason = failed[1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("receiver stopped")
            && reason.contains("not resumed")
            && reason.contains("feed"),
        "{reason}"
    );
    assert_eq!(
        misp.calls().len(),
        1,
        "stopping does not wait for the retry"
    );
}

#[test]
fn tls_is_verified_against_the_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let Some(pki) = require(TestPki::make(certs.path())) else {
        return;
    };
    // openssl's test server answers any request with a status page, over TLS with the
    // certificate the test's CA signed.
    let port = free_port(false);
    let server = pki.serve(port, true);
    let url = format!("https://127.0.0.1:{port}");
    let (event, _) = smallest_event();

    // Without the CA, the certificate is refused: no HTTP status, advice about ca_file.
    let rx = start_receiver_with(&url, KEY, "attempts = 1\n");
    rx.send(std::slice::from_ref(&event));
    let records = rx.wait("the TLS refusal", |r| count(r, "push_failed") >= 1);
    let f = with_outcome(&records, "push_failed")[0].clone();
    assert!(f["http_status"].is_null(), "{f}");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.contains("TLS") && reason.contains("ca_file"),
        "{reason}"
    );
    drop(rx);

    // With it, the handshake succeeds and the view is answered (an HTML page, which is
    // refused as not MISP's: nothing is added or edited on a server that is not MISP).
    let ca = serde_json::to_string(pki.ca.to_str().unwrap()).unwrap();
    let rx = start_receiver_with(&url, KEY, &format!("attempts = 1\nca_file = {ca}\n"));
    rx.send(&[event]);
    let records = rx.wait("the push's outcome", |r| count(r, "push_failed") >= 1);
    assert_eq!(count(&records, "pushed"), 0);
    let f = with_outcome(&records, "push_failed")[0].clone();
    assert_eq!(f["http_status"], 200, "{f}");
    let reason = f["reason"].as_str().unwrap();
    assert!(
        reason.contains("not a MISP event") && reason.contains("[misp_push] url"),
        "{reason}"
    );
    drop(server);
}
