//! `gapferry-send misp-pull` against a stand-in MISP on 127.0.0.1 that answers
//! `POST /events/restSearch` from the real Infoblox feed events the way MISP does
//! (`{"response": [{"Event": {...}}]}`, `tags`, `org`, `published`, `timestamp` as a lower
//! bound or a `[from, to]` range, `order`, `limit`/`page`, 403 for a wrong key): exactly the
//! tagged events are pulled, a restart repeats none and misses none of those added or edited
//! in between (also many of one second across a page boundary), failures (403, no answer,
//! 500, a hostile answer) exit non-zero naming the URL and what to check, and the watch
//! service's `[misp_pull]` pulls into the outbox it sends from.

use gapferry_tests::harness::{binary, free_port, ChildGuard};
use gapferry_tests::prereq::require;
use gapferry_tests::tls::TestPki;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "Zq0wTkUeTjZ9h4ExZ8yVb7N1aK3mP5sR2dC6fG0j";

fn infoblox() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata/misp-feed/infoblox")
}

/// How the stand-in answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Accepts the request and never answers.
    Hang,
    /// 500 Internal Server Error.
    Fail,
    /// 200 with an event whose uuid is a path.
    Hostile,
}

struct Db {
    /// (id, event) in id order.
    events: Vec<(u64, Value)>,
    mode: Mode,
    /// Every request's JSON body, in order.
    requests: Vec<Value>,
}

/// A MISP stand-in: restSearch over an in-memory event table.
struct MockMisp {
    url: String,
    db: Arc<Mutex<Db>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockMisp {
    fn start(events: Vec<Value>) -> MockMisp {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let db = Arc::new(Mutex::new(Db {
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i as u64 + 1, e))
                .collect(),
            mode: Mode::Normal,
            requests: vec![],
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) {
                        handle(&db, req);
                    }
                }
            })
        };
        MockMisp {
            url,
            db,
            stop,
            thread: Some(thread),
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.db.lock().unwrap().mode = mode;
    }

    fn requests(&self) -> Vec<Value> {
        self.db.lock().unwrap().requests.clone()
    }

    /// Adds an event (the next id, as MISP's auto-increment).
    fn add(&self, event: Value) {
        let mut db = self.db.lock().unwrap();
        let id = db.events.last().map_or(1, |(id, _)| id + 1);
        db.events.push((id, event));
    }

    /// Edits the event `uuid` as MISP does: the change raises its timestamp.
    fn edit(&self, uuid: &str, info: &str, timestamp: u64) {
        let mut db = self.db.lock().unwrap();
        let (_, e) = db
            .events
            .iter_mut()
            .find(|(_, e)| e["Event"]["uuid"] == uuid)
            .expect("event to edit");
        e["Event"]["info"] = json!(info);
        e["Event"]["timestamp"] = json!(timestamp.to_string());
    }

    /// The element restSearch returns for `event`, as the exact bytes it serves.
    fn element(id: u64, event: &Value) -> String {
        let mut e = event.clone();
        e["Event"]["id"] = json!(id.to_string());
        serde_json::to_string(&e).unwrap()
    }

    /// The bytes served for the event `uuid` now.
    fn served(&self, uuid: &str) -> String {
        let db = self.db.lock().unwrap();
        let (id, e) = db
            .events
            .iter()
            .find(|(_, e)| e["Event"]["uuid"] == uuid)
            .expect("known event");
        Self::element(*id, e)
    }
}

impl Drop for MockMisp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ts(e: &Value) -> u64 {
    e["Event"]["timestamp"].as_str().unwrap().parse().unwrap()
}

fn tags(e: &Value) -> Vec<String> {
    e["Event"]["Tag"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn json_answer(status: u16, body: String) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(
            tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).unwrap(),
        )
}

/// restSearch as MISP's Event::filterEventIds and JsonExport do it, for the filters misp-pull uses.
fn handle(db: &Arc<Mutex<Db>>, mut req: tiny_http::Request) {
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let key_ok = req
        .headers()
        .iter()
        .any(|h| h.field.equiv("Authorization") && h.value.as_str() == KEY);
    let mut db = db.lock().unwrap();
    let q: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    db.requests.push(q.clone());
    if req.url() != "/events/restSearch" || *req.method() != tiny_http::Method::Post {
        let _ = req.respond(json_answer(
            404,
            r#"{"name": "Not Found", "message": "Not Found", "url": "/"}"#.into(),
        ));
        return;
    }
    if !key_ok {
        let _ = req.respond(json_answer(403, r#"{"name": "Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.", "message": "Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.", "url": "\/events\/restSearch"}"#.into()));
        return;
    }
    match db.mode {
        Mode::Normal => {}
        Mode::Hang => {
            // Hold the connection open without a word, longer than the client waits.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(8));
                drop(req);
            });
            return;
        }
        Mode::Fail => {
            let _ = req.respond(json_answer(500, r#"{"name": "An Internal Error Has Occurred.", "message": "An Internal Error Has Occurred.", "url": "\/events\/restSearch"}"#.into()));
            return;
        }
        Mode::Hostile => {
            let _ = req.respond(json_answer(200, r#"{"response": [{"Event": {"uuid": "../../../etc/cron.d/x", "timestamp": "1", "info": "x"}}]}"#.into()));
            return;
        }
    }
    assert_eq!(q["returnFormat"], "json", "misp-pull asks for MISP JSON");
    let want_tags: Option<BTreeSet<String>> = q["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect());
    let want_orgs: Option<BTreeSet<String>> = q["org"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect());
    let num = |v: &Value| -> u64 {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap()
    };
    let (lo, hi) = match &q["timestamp"] {
        Value::Null => (0, u64::MAX),
        Value::Array(a) => (num(&a[0]), num(&a[1])),
        v => (num(v), u64::MAX),
    };
    let mut hits: Vec<&(u64, Value)> = db
        .events
        .iter()
        .filter(|(_, e)| (lo..=hi).contains(&ts(e)))
        .filter(|(_, e)| {
            q["published"]
                .as_bool()
                .is_none_or(|p| e["Event"]["published"].as_bool() == Some(p))
        })
        .filter(|(_, e)| {
            want_tags
                .as_ref()
                .is_none_or(|w| tags(e).iter().any(|t| w.contains(t)))
        })
        .filter(|(_, e)| {
            want_orgs.as_ref().is_none_or(|w| {
                e["Event"]["Orgc"]["name"]
                    .as_str()
                    .is_some_and(|o| w.contains(o))
            })
        })
        .collect();
    match q["order"].as_str() {
        Some("Event.timestamp ASC, Event.id ASC") => hits.sort_by_key(|(id, e)| (ts(e), *id)),
        None => {}
        Some(other) => panic!("unexpected order {other}"),
    }
    if let Some(limit) = q["limit"].as_u64() {
        let page = q["page"].as_u64().unwrap_or(1).max(1);
        hits = hits
            .into_iter()
            .skip(((page - 1) * limit) as usize)
            .take(limit as usize)
            .collect();
    }
    let elements: Vec<String> = hits
        .iter()
        .map(|(id, e)| MockMisp::element(*id, e))
        .collect();
    let _ = req.respond(json_answer(
        200,
        format!("{{\"response\": [{}]}}\n", elements.join(",")),
    ));
}

/// The 41 real Infoblox feed events (18 tagged tlp:white, 23 tlp:clear), in file order.
fn real_events() -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(infoblox())
        .expect("../shared/realdata/misp-feed/infoblox")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().unwrap() != "manifest.json" && p.extension().is_some_and(|x| x == "json")
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn uuids_tagged(events: &[Value], tag: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| tags(e).iter().any(|t| t == tag))
        .map(|e| e["Event"]["uuid"].as_str().unwrap().to_string())
        .collect()
}

/// A new event made from a real one: another uuid, tag and timestamp.
fn derived(base: &Value, n: u64, tag: &str, timestamp: u64) -> Value {
    let mut e = base.clone();
    e["Event"]["uuid"] = json!(format!("00000000-0000-4000-8000-{n:012x}"));
    e["Event"]["info"] = json!(format!("added between pulls #{n}"));
    e["Event"]["timestamp"] = json!(timestamp.to_string());
    e["Event"]["Tag"] =
        json!([{"colour": "#ffffff", "local": false, "name": tag, "relationship_type": ""}]);
    e
}

fn key_file(dir: &Path, key: &str) -> PathBuf {
    let p = dir.join("misp.key");
    std::fs::write(&p, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn pull(outbox: &Path, url: &str, key: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(binary("gapferry-send"));
    cmd.args(["misp-pull", "--outbox"])
        .arg(outbox)
        .args(["--url", url, "--key-file"])
        .arg(key)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    cmd.output().expect("run gapferry-send misp-pull")
}

fn stderr(o: &Output) -> String {
    gapferry_tests::harness::strip_ansi(&String::from_utf8_lossy(&o.stderr))
}

/// The event files in OUTBOX/misp: uuid -> content.
fn pulled(outbox: &Path) -> BTreeMap<String, String> {
    let dir = outbox.join("misp");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    rd.map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert!(!name.starts_with('.'), "a temporary file was left: {name}");
            let uuid = name.strip_suffix(".json").expect("<uuid>.json").to_string();
            (uuid, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// What the watch service does with pulled files: takes them out of `misp/`.
fn take_away(outbox: &Path) {
    for (uuid, _) in pulled(outbox) {
        std::fs::remove_file(outbox.join("misp").join(format!("{uuid}.json"))).unwrap();
    }
}

fn state(outbox: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(outbox.join(".gapferry-send/misp-pull.json")).expect("the pull state"),
    )
    .unwrap()
}

#[test]
fn pulls_exactly_the_tagged_events_and_a_restart_repeats_and_misses_none() {
    let events = real_events();
    assert_eq!(events.len(), 41, "the Infoblox sample changed");
    let clear = uuids_tagged(&events, "tlp:clear");
    assert_eq!(clear.len(), 23);
    let misp = MockMisp::start(events.clone());
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let key = key_file(dir.path(), KEY);
    let args = ["--tag", "tlp:clear", "--limit", "5"];

    // First pull: exactly the 23 tagged events, each as the API served it, in pages of 5.
    let o = pull(&outbox, &misp.url, &key, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = pulled(&outbox);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), clear);
    for (uuid, content) in &got {
        assert_eq!(*content, misp.served(uuid), "{uuid} not written as served");
    }
    let reqs = misp.requests();
    assert!(
        reqs.len() >= 5,
        "23 events in pages of 5 need 5 pages at least: {}",
        reqs.len()
    );
    for q in &reqs {
        assert_eq!(q["tags"], json!(["tlp:clear"]));
        assert_eq!(q["limit"], 5);
        assert_eq!(q["published"], true);
    }
    assert!(stderr(&o).contains("23 events written"), "{}", stderr(&o));
    let st = state(&outbox);
    let max_clear = events
        .iter()
        .filter(|e| clear.contains(e["Event"]["uuid"].as_str().unwrap()))
        .map(ts)
        .max()
        .unwrap();
    assert_eq!(st["since"], max_clear);
    assert_eq!(st["last_success"]["written"], 23);
    assert!(st["last_pull"]["error"].is_null());

    // The watch service takes them; a second pull repeats none.
    take_away(&outbox);
    let before = misp.requests().len();
    let o = pull(&outbox, &misp.url, &key, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        pulled(&outbox).is_empty(),
        "repeated: {:?}",
        pulled(&outbox).keys()
    );
    assert!(
        misp.requests().len() > before,
        "the second pull asked the server"
    );
    assert_eq!(
        misp.requests()[before]["timestamp"],
        json!(max_clear),
        "the second pull starts at the last timestamp taken"
    );

    // Between runs: 7 tagged events of the very second the cursor stands at (more than a
    // page of one second), one later, one with another tag, and an edit of a pulled event.
    let base = &events[0];
    let mut expected = BTreeSet::new();
    for n in 1..=7 {
        let e = derived(base, n, "tlp:clear", max_clear);
        expected.insert(e["Event"]["uuid"].as_str().unwrap().to_string());
        misp.add(e);
    }
    let later = derived(base, 8, "tlp:clear", max_clear + 5);
    expected.insert(later["Event"]["uuid"].as_str().unwrap().to_string());
    misp.add(later);
    misp.add(derived(base, 9, "tlp:white", max_clear + 6));
    let edited = clear.iter().next().unwrap().clone();
    misp.edit(&edited, "edited between pulls", max_clear + 10);
    expected.insert(edited.clone());

    let o = pull(&outbox, &misp.url, &key, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = pulled(&outbox);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(got[&edited].contains("edited between pulls"));
    for (uuid, content) in &got {
        assert_eq!(*content, misp.served(uuid));
    }
    assert!(
        misp.requests()
            .iter()
            .any(|q| q["timestamp"] == json!([max_clear, max_clear])),
        "a full page of one second is paged through by range"
    );

    // And again: nothing new, nothing repeated.
    take_away(&outbox);
    let o = pull(&outbox, &misp.url, &key, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        pulled(&outbox).is_empty(),
        "repeated: {:?}",
        pulled(&outbox).keys()
    );
    assert_eq!(state(&outbox)["since"], max_clear + 10);

    // Other filters start over: organisation Infoblox, tag tlp:white: the 18 white ones
    // and the one added with that tag.
    let o = pull(
        &outbox,
        &misp.url,
        &key,
        &["--tag", "tlp:white", "--org", "Infoblox", "--limit", "7"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut white = uuids_tagged(&events, "tlp:white");
    white.insert("00000000-0000-4000-8000-000000000009".into());
    assert_eq!(
        pulled(&outbox).keys().cloned().collect::<BTreeSet<_>>(),
        white
    );
}

#[test]
fn a_refused_key_exits_non_zero_naming_the_url_and_the_key_file() {
    let misp = MockMisp::start(real_events());
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let key = key_file(dir.path(), "not-the-key-0123456789");
    let o = pull(&outbox, &misp.url, &key, &["--retries", "3"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}/events/restSearch", misp.url)),
        "{err}"
    );
    assert!(err.contains("403"), "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(err.contains("allowed IPs"), "{err}");
    assert_eq!(misp.requests().len(), 1, "a 403 is not retried");
    assert!(pulled(&outbox).is_empty());
    let st = state(&outbox);
    assert!(st["last_pull"]["error"].as_str().unwrap().contains("403"));
    assert!(st["last_success"].is_null());
}

#[test]
fn no_answer_and_server_errors_are_retried_then_reported() {
    let misp = MockMisp::start(real_events());
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let key = key_file(dir.path(), KEY);
    let endpoint = format!("{}/events/restSearch", misp.url);

    misp.set_mode(Mode::Hang);
    let o = pull(
        &outbox,
        &misp.url,
        &key,
        &["--timeout", "1", "--retries", "1"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&endpoint), "{err}");
    assert!(
        err.contains("did not answer within 1 s on each of 2 attempts"),
        "{err}"
    );
    assert!(err.contains("reachable"), "{err}");
    assert_eq!(misp.requests().len(), 2, "one retry");

    misp.set_mode(Mode::Fail);
    let o = pull(
        &outbox,
        &misp.url,
        &key,
        &["--timeout", "5", "--retries", "2"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&endpoint) && err.contains("500 on each of 3 attempts"),
        "{err}"
    );
    assert_eq!(misp.requests().len(), 5, "two retries");
    assert!(pulled(&outbox).is_empty());

    // Nothing was lost: once the server answers, everything comes.
    misp.set_mode(Mode::Normal);
    let o = pull(&outbox, &misp.url, &key, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(pulled(&outbox).len(), 41);
}

#[test]
fn a_hostile_answer_writes_nothing() {
    let misp = MockMisp::start(real_events());
    misp.set_mode(Mode::Hostile);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let key = key_file(dir.path(), KEY);
    let o = pull(&outbox, &misp.url, &key, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("not a UUID") && err.contains("restSearch"),
        "{err}"
    );
    assert!(pulled(&outbox).is_empty());
    let strays: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("cron"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_watch_service_pulls_into_its_outbox_and_sends_what_it_pulled() {
    let events = real_events();
    let clear = uuids_tagged(&events, "tlp:clear");
    let misp = MockMisp::start(events);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let key = key_file(dir.path(), KEY);
    let config = dir.path().join("send.toml");
    std::fs::write(
        &config,
        format!(
            "to = \"127.0.0.1:9\"\nrate = \"50M\"\n[watch]\noutbox = {:?}\nsettle = 0.2\n[misp_pull]\nurl = {:?}\nkey_file = {:?}\ntags = [\"tlp:clear\"]\nlimit = 10\ninterval = 1.0\n",
            outbox, misp.url, key
        ),
    )
    .unwrap();
    let capture = dir.path().join("out.pcap");
    let mut child = ChildGuard(
        Command::new(binary("gapferry-send"))
            .args(["watch", "--quiet", "--config"])
            .arg(&config)
            .arg("--pcap-out")
            .arg(&capture)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sent = outbox.join("sent/misp");
    let deadline = Instant::now() + Duration::from_secs(60);
    let names = || -> BTreeSet<String> {
        std::fs::read_dir(&sent)
            .map(|rd| {
                rd.map(|e| {
                    e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .trim_end_matches(".json")
                        .to_string()
                })
                .collect()
            })
            .unwrap_or_default()
    };
    while names() != clear {
        assert!(
            Instant::now() < deadline,
            "the pulled events were not sent: {} of {}",
            names().len(),
            clear.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The service holds the outbox: a one-shot pull beside it is refused, saying why.
    let o = pull(&outbox, &misp.url, &key, &["--tag", "tlp:clear"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("another misp-pull is using the outbox"),
        "{}",
        stderr(&o)
    );
    // A later pull of the running service brings an event added meanwhile.
    let added = derived(&real_events()[0], 42, "tlp:clear", 1_900_000_000);
    misp.add(added);
    let mut want = clear.clone();
    want.insert("00000000-0000-4000-8000-00000000002a".into());
    while names() != want {
        assert!(
            Instant::now() < deadline,
            "the event added later was not pulled and sent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.terminate().success());
    assert!(std::fs::metadata(&capture).unwrap().len() > 0);
    assert!(state(&outbox)["last_success"]["finished"].as_u64().unwrap() > 0);
}

#[test]
fn tls_is_verified_and_a_ca_file_makes_a_private_ca_trusted() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let Some(pki) = require(TestPki::make(dir.path())) else {
        return;
    };
    let port = free_port(false);
    // openssl's test server terminates TLS; what the client sends comes out on its stdout,
    // what the test writes to its stdin goes back to the client.
    let mut server = pki.serve(port, false);
    let url = format!("https://127.0.0.1:{port}");
    let outbox = dir.path().join("outbox");
    let key = key_file(dir.path(), KEY);

    // Not trusted: the built-in roots do not know this CA.
    let o = pull(&outbox, &url, &key, &["--retries", "0", "--timeout", "5"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("TLS with {url}/events/restSearch failed"))
            && err.contains("--ca-file"),
        "{err}"
    );

    // Trusted through --ca-file: the request arrives, and the answer is taken.
    let event = real_events().remove(0);
    let element = MockMisp::element(7, &event);
    let body = format!("{{\"response\": [{element}]}}");
    let mut stdin = server.0.stdin.take().unwrap();
    let stdout = server.0.stdout.take().unwrap();
    let answered = std::thread::spawn(move || {
        // Up to the end of the JSON body (no newline after it); EOF when the server is killed.
        let mut request = Vec::new();
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\"returnFormat\"") {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(
            stdin,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .and_then(|()| stdin.flush());
        String::from_utf8_lossy(&request).into_owned()
    });
    let ca = pki.ca.clone();
    let o = pull(
        &outbox,
        &url,
        &key,
        &[
            "--retries",
            "0",
            "--timeout",
            "10",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    );
    server.0.kill().unwrap();
    let request = answered.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        request.starts_with("POST /events/restSearch HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.contains(&format!("authorization: {KEY}")),
        "{request}"
    );
    let uuid = event["Event"]["uuid"].as_str().unwrap();
    assert_eq!(pulled(&outbox).get(uuid), Some(&element));
}
