//! STIX bundles built to inflate: checking one walks its objects without building a JSON
//! tree, so it costs about the bundle's own size.

use gapferry_feeds::stix_store::validate_bundle;
use gapferry_feeds::StixError;

/// Peak resident set of this process so far, bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb << 10
}

fn bundle(object: &str, n: usize) -> Vec<u8> {
    let mut s = String::from(
        r#"{"type":"bundle","id":"bundle--5a0a9aa9-23a4-4607-b6df-41a9950d210f","objects":["#,
    );
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(object);
    }
    s.push_str("]}");
    s.into_bytes()
}

#[test]
fn millions_of_empty_objects_are_refused_at_the_first_in_bounded_memory() {
    // 5 Mi `{}`: 15 MiB of JSON, hundreds of MiB as a tree.
    let doc = bundle("{}", 5 << 20);
    let before = peak_rss();
    let err = validate_bundle(&doc).unwrap_err();
    let grew = peak_rss().saturating_sub(before);
    assert!(
        matches!(&err, StixError::NotABundle(r) if r == "object 0 has no `type`"),
        "{err}"
    );
    assert!(
        grew < 32 << 20,
        "checking grew the peak RSS by {grew} bytes"
    );
}

#[test]
fn a_bundle_of_many_objects_is_counted_in_bounded_memory() {
    let n = 300_000;
    let doc = bundle(
        r#"{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","pattern":"[ipv4-addr:value = '10.0.0.1']"}"#,
        n,
    );
    let before = peak_rss();
    let info = validate_bundle(&doc).unwrap();
    let grew = peak_rss().saturating_sub(before);
    assert_eq!(info.objects, n);
    assert!(
        grew < 16 << 20,
        "checking grew the peak RSS by {grew} bytes"
    );
}
