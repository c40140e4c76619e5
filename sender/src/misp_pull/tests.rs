//! Tests of the pull's settings, answers, key file and outbox lock.
use super::*;

#[test]
fn answers_parse_and_hostile_ones_are_refused() {
    let ok = br#"{"response": [{"Event": {"uuid": "0472809B-1582-4dde-88a9-d82848e9e660", "timestamp": "1715767125", "info": "x"}}, {"Event": {"uuid": "0985427f-ab14-4acb-b62f-d56529114048", "timestamp": 1783434180}}]}"#;
    let e = parse_answer(ok).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].uuid, "0472809b-1582-4dde-88a9-d82848e9e660");
    assert_eq!(e[0].timestamp, 1_715_767_125);
    assert_eq!(
        e[0].raw.get(),
        r#"{"Event": {"uuid": "0472809B-1582-4dde-88a9-d82848e9e660", "timestamp": "1715767125", "info": "x"}}"#
    );
    assert_eq!(e[1].timestamp, 1_783_434_180);
    assert!(parse_answer(br#"{"response": []}"#).unwrap().is_empty());
    for hostile in [
        &br#"{"response": [{"Event": {"uuid": "../../etc/passwd", "timestamp": "1"}}]}"#[..],
        br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e66/", "timestamp": "1"}}]}"#,
        br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e660", "timestamp": "-5"}}]}"#,
        br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e660"}}]}"#,
        br#"{"response": [{"Attribute": {}}]}"#,
        br#"{"name": "Not Found", "message": "x", "url": "/events/restSearch"}"#,
        br#"<html>login</html>"#,
        br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e660", "timestamp": "1"}}"#,
    ] {
        assert!(parse_answer(hostile).is_err(), "{}", String::from_utf8_lossy(hostile));
    }
}

#[test]
fn the_key_file_must_hold_only_a_key_that_others_cannot_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("misp.key");
    std::fs::write(&p, "  abcdefABCDEF0123456789abcdefABCDEF012345\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        read_key(&p).unwrap(),
        "abcdefABCDEF0123456789abcdefABCDEF012345"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = read_key(&p).unwrap_err().to_string();
    assert!(e.contains("chmod o-rwx") && e.contains("644"), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    for bad in ["", "key\r\nX-Injected: 1", "two words"] {
        std::fs::write(&p, bad).unwrap();
        assert!(read_key(&p).is_err(), "{bad:?}");
    }
}

#[test]
fn one_puller_per_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "k3y\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = MispPullConfig::from_section(&MispPullSection {
        url: Some("http://127.0.0.1:9".into()),
        key_file: Some(key),
        ..Default::default()
    })
    .unwrap();
    let outbox = dir.path().join("outbox");
    let first = MispPuller::new(cfg.clone(), &outbox, MispPullMetrics::default()).unwrap();
    let e = MispPuller::new(cfg.clone(), &outbox, MispPullMetrics::default())
        .err()
        .expect("second puller refused");
    assert!(matches!(e, PullError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("misp-pull.lock"), "{e}");
    drop(first);
    MispPuller::new(cfg, &outbox, MispPullMetrics::default()).expect("free again");
}

#[test]
fn the_packaged_example_section_parses_once_uncommented() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/gapferry-send.toml");
    let text = std::fs::read_to_string(p).unwrap();
    let start = text.find("# [misp_pull]").expect("the example section");
    // Up to the next section of the file (commented out or not).
    let section: String = text[start..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !(l.starts_with('[') || l.starts_with("# [")))
        .filter_map(|(_, l)| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let c: crate::config::FileConfig = toml::from_str(&section).unwrap();
    let s = c.misp_pull.expect("[misp_pull]");
    let cfg = MispPullConfig::from_section(&s).unwrap();
    assert_eq!(cfg.url, "https://misp.example.org");
    assert_eq!(cfg.tags, ["airgap:export"]);
    assert_eq!(cfg.interval, Duration::from_secs(300));
    assert_eq!(
        cfg.http.ca_file,
        Some(PathBuf::from("/etc/gapferry/misp-ca.pem"))
    );
}

#[test]
fn the_section_needs_url_and_key_and_bad_urls_are_refused() {
    let e = MispPullConfig::from_section(&MispPullSection::default()).unwrap_err();
    assert!(e.to_string().contains("`url`"), "{e}");
    let s = MispPullSection {
        url: Some("ftp://misp/".into()),
        key_file: Some("/nonexistent".into()),
        ..Default::default()
    };
    let cfg = MispPullConfig::from_section(&s).unwrap();
    assert_eq!(cfg.limit, DEFAULT_LIMIT);
    assert_eq!(cfg.published, Published::Yes);
    let dir = tempfile::tempdir().unwrap();
    let e = MispPuller::new(cfg, dir.path(), MispPullMetrics::default())
        .err()
        .unwrap();
    assert!(matches!(e, PullError::BadUrl(_)), "{e}");
}
