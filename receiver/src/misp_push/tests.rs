//! Unit tests of the push: options, the queue, backoff, answers, the tally.

use super::api::{refused, view_timestamp, Answer};
use super::*;
use std::path::Path;

fn options(dir: &Path, url: &str) -> MispPushOptions {
    let key = dir.join("misp.key");
    std::fs::write(&key, "0123456789abcdefABCDEF0123456789abcdefAB\n").unwrap();
    MispPushOptions {
        url: url.into(),
        key_file: key,
        ..Default::default()
    }
}

#[test]
fn bad_options_are_refused_with_the_key_and_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "ftp://misp",
        "misp.example",
        "https://",
        "https:///x",
        "http://a b",
        "https://u:p@misp",
    ] {
        let e = options(dir.path(), url).prepare().unwrap_err().to_string();
        assert!(e.contains("[misp_push] url"), "{url}: {e}");
    }
    let mut o = options(dir.path(), "https://misp.example/");
    assert_eq!(o.prepare().unwrap().base, "https://misp.example");
    std::fs::write(&o.key_file, "\n  \n").unwrap();
    let e = o.prepare().unwrap_err().to_string();
    assert!(e.contains("holds no API key"), "{e}");
    o.key_file = dir.path().join("absent.key");
    let e = o.prepare().unwrap_err().to_string();
    assert!(e.contains("key_file") && e.contains("absent.key"), "{e}");
    let mut o = options(dir.path(), "https://misp.example");
    o.ca_file = Some(dir.path().join("misp.key"));
    let e = o.prepare().unwrap_err().to_string();
    assert!(e.contains("ca_file") && e.contains("CERTIFICATE"), "{e}");
    o.ca_file = None;
    o.stix_distribution = Some(4);
    let e = o.prepare().unwrap_err().to_string();
    assert!(e.contains("stix_distribution = 4"), "{e}");
    o.stix_distribution = Some(1);
    o.stix_publish = Some(true);
    assert_eq!(
        o.prepare().unwrap().stix_path,
        "/events/upload_stix/2/distribution:1/publish:1"
    );
    o.attempts = Some(0);
    let e = o.prepare().unwrap_err().to_string();
    assert!(e.contains("attempts = 0"), "{e}");
}

#[test]
fn a_full_queue_is_recorded_and_never_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    // A "MISP" whose kernel accepts connections that nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = options(
        dir.path(),
        &format!("http://{}", silent.local_addr().unwrap()),
    );
    (o.queue, o.attempts, o.timeout) = (Some(1), Some(1), Some(1));
    let records = Arc::new(Mutex::new(RecordLog::open(dir.path()).unwrap()));
    let pusher = Pusher::start(o.prepare().unwrap(), records, ReceiverMetrics::default()).unwrap();
    let event = |n: u32| {
        let mut r = Record::new(Outcome::Delivered, 1, n);
        r.kind = Some(gapferry_common::ObjectKind::Misp);
        r.name = Some(format!("{n}.json"));
        let item = PushItem::Event {
            uuid: "0472809b-1582-4dde-88a9-d82848e9e660".into(),
            timestamp: 1,
            body: b"{}".to_vec(),
        };
        (item, r)
    };
    // The worker takes the first and waits for MISP; the second fills the queue.
    let (item, r) = event(0);
    pusher.submit(item, r);
    let read = || {
        std::fs::read_to_string(dir.path().join(crate::records::RECORDS_FILE)).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pusher.queue.as_ref().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker never took the first push"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for n in 1..4 {
        let (item, r) = event(n);
        pusher.submit(item, r);
    }
    let full: Vec<String> = read()
        .lines()
        .filter(|l| l.contains("push queue full"))
        .map(String::from)
        .collect();
    assert_eq!(full.len(), 2, "{}", read());
    assert!(full.iter().all(
        |l| l.contains("\"outcome\":\"push_failed\"") && l.contains("raise [misp_push] queue")
    ));
    drop(pusher);
    let log = read();
    // The first timed out, the queued one was not made at stop: every push has a record.
    for n in 0..4 {
        assert!(
            log.contains(&format!("\"name\":\"{n}.json\"")),
            "{n}: {log}"
        );
    }
    assert!(log.contains("did not answer in time"), "{log}");
    assert!(
        log.contains("receiver stopped before the push was made"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 4, "one record per push: {log}");
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let s = options(dir.path(), "https://misp.example")
        .prepare()
        .unwrap();
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let first = Duration::from_secs(5);
    assert_eq!(backoff(first, 1), Duration::from_secs(5));
    assert_eq!(backoff(first, 2), Duration::from_secs(10));
    assert_eq!(backoff(first, 4), Duration::from_secs(40));
    assert_eq!(backoff(first, 60), MAX_BACKOFF);
}

fn answer(status: u16, text: &str) -> Answer {
    Answer {
        status,
        text: text.into(),
        view: None,
        location: None,
    }
}

#[test]
fn answers_are_classified_retryable_or_not_with_advice() {
    let auth = refused(
        &answer(
            403,
            r#"{"name":"Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.","message":"Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.","url":"\/events\/view\/x"}"#,
        ),
        "view",
    );
    assert_eq!(auth.status, Some(403));
    assert!(!auth.retry);
    assert!(
        auth.reason.contains("key_file") && auth.reason.contains("Authentication failed"),
        "{}",
        auth.reason
    );
    let perm = refused(
        &answer(
            403,
            r#"{"saved":false,"name":"Could not edit Event","message":"Could not edit Event","url":"\/events\/edit\/1","errors":"Event could not be saved: The user used to edit the event is not authorised to do so."}"#,
        ),
        "edit",
    );
    assert!(
        !perm.retry && perm.reason.contains("not authorised") && perm.reason.contains("role"),
        "{}",
        perm.reason
    );
    let down = refused(
        &answer(500, "<html>Internal error \u{1b}[31m</html>"),
        "add",
    );
    assert!(
        down.retry && down.reason.contains("HTTP 500"),
        "{}",
        down.reason
    );
    assert!(
        !down.reason.contains('\u{1b}'),
        "MISP's text is escaped: {}",
        down.reason
    );
    assert!(refused(&answer(429, ""), "add").retry);
    assert!(!refused(&answer(400, "{}"), "add").retry);
    let long = refused(&answer(502, &"x".repeat(10_000)), "add");
    assert!(
        long.reason.len() < 1000,
        "quoted, not copied: {}",
        long.reason.len()
    );
    let moved = Answer {
        status: 302,
        text: String::new(),
        view: None,
        location: Some("https://misp.example/users/login".into()),
    };
    let r = refused(&moved, "view");
    assert!(
        !r.retry && r.reason.contains("/users/login") && r.reason.contains("url"),
        "{}",
        r.reason
    );
}

#[test]
fn view_timestamps_are_read_as_misp_writes_them() {
    assert_eq!(
        view_timestamp(
            &br#"{"Event":{"id":"1","timestamp":"1715767125","Attribute":[{"timestamp":"9999999999"}]}}"#[..]
        ),
        Ok(Some(1715767125))
    );
    assert_eq!(
        view_timestamp(&br#"{"Event":{"timestamp":1700000000}}"#[..]),
        Ok(Some(1700000000))
    );
    assert_eq!(view_timestamp(&br#"{"Event":{}}"#[..]), Ok(None));
    assert!(view_timestamp(&b"<html>"[..]).is_err());
    assert!(view_timestamp(&br#"{"name":"Login"}"#[..]).is_err());
}

#[test]
fn the_tally_counts_pushes_and_keeps_the_last_error() {
    let mut t = PushTally::default();
    assert_eq!(t.report(), "");
    for line in [
        r#"{"time":"t1","outcome":"pushed","push":"added","name":"a.json"}"#,
        r#"{"time":"t2","outcome":"push_failed","http_status":500,"retry_in_s":5,"reason":"add: MISP answered HTTP 500"}"#,
        r#"{"time":"t3","outcome":"pushed","push":"edited","name":"b.json"}"#,
        r#"{"time":"t4","outcome":"push_failed","http_status":403,"reason":"view: bad key \u001b[2J"}"#,
        r#"{"time":"t5","outcome":"delivered","name":"c.json"}"#,
    ] {
        t.note(&serde_json::from_str(line).unwrap());
    }
    let r = t.report();
    assert!(
        r.contains(
            "2 pushed (1 added, 1 edited, 0 already current), 2 failed attempts, 1 not pushed"
        ),
        "{r}"
    );
    assert!(r.contains("last push: t3 b.json"), "{r}");
    assert!(
        r.contains("last push error: t4 HTTP 403 — view: bad key"),
        "{r}"
    );
    assert!(!r.contains('\u{1b}'), "{r}");
}
