//! Every store publishes with the permissions it is given: the MISP feed's event files,
//! `manifest.json` and `hashes.csv`, STIX bundles, the image store's tarball, signature
//! and `SHA256SUMS`, and every directory a store creates, whatever mode the staged input
//! or an earlier copy had.

use gapferry_feeds::{ImageStore, MispFeed, Publish, StixStore};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn realdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata")
}

/// Both modes differ from the defaults and from what tempfile or a umask would give.
const PUBLISH: Publish = Publish {
    file_mode: 0o640,
    dir_mode: 0o750,
    gid: None,
};

fn a_real_event() -> Vec<u8> {
    let dir = realdata().join("misp-feed/infoblox");
    let mut events: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "manifest.json")
        .collect();
    events.sort();
    fs::read(&events[0]).unwrap()
}

#[test]
fn the_misp_feed_publishes_events_manifest_and_hashes_with_the_given_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/feed");
    let mut feed = MispFeed::new(&dir).with_publish(PUBLISH);
    let ev = feed.deliver_event(&a_real_event()).unwrap();
    for f in [
        ev.path.clone(),
        dir.join("manifest.json"),
        dir.join("hashes.csv"),
    ] {
        assert_eq!(mode_of(&f), 0o640, "{}", f.display());
    }
    assert_eq!(mode_of(&dir), 0o750);
    assert_eq!(mode_of(dir.parent().unwrap()), 0o750);
    // The default is readable by everyone.
    let other = tmp.path().join("default");
    let ev = MispFeed::new(&other)
        .deliver_event(&a_real_event())
        .unwrap();
    assert_eq!(mode_of(&ev.path), 0o644);
    assert_eq!(mode_of(&other.join("manifest.json")), 0o644);
    assert_eq!(mode_of(&other), 0o755);
}

#[test]
fn the_stix_store_publishes_bundles_and_their_alternates_with_the_given_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stix");
    let store = StixStore::new(&dir).with_publish(PUBLISH);
    let id = "bundle--33333333-3333-4333-8333-333333333333";
    let one = format!(r#"{{"type":"bundle","id":"{id}","objects":[]}}"#);
    let two = format!(r#"{{"type":"bundle","id":"{id}","objects":[] }}"#);
    let first = store.deliver_bundle(one.as_bytes()).unwrap();
    let second = store.deliver_bundle(two.as_bytes()).unwrap();
    assert_ne!(first, second, "different bytes, same id: two files");
    for f in [&first, &second] {
        assert_eq!(mode_of(f), 0o640, "{}", f.display());
    }
    assert_eq!(mode_of(&dir), 0o750);
}

#[test]
fn the_image_store_publishes_tarball_signature_and_sums_whatever_the_staged_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let tarball = staging.join("1.part");
    let sig = staging.join("MISP_v2.5.1_abc.tar.gz.sig");
    // gzip magic is all the store checks; the staged files are private, as the receiver's are.
    fs::write(&tarball, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    fs::write(&sig, b"signature").unwrap();
    for f in [&tarball, &sig] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let store_dir = tmp.path().join("images");
    let store = ImageStore::new(&store_dir, 3).with_publish(PUBLISH);
    let d = store
        .deliver_image(&tarball, "MISP_v2.5.1_abc.tar.gz", Some(&sig))
        .unwrap();
    for f in [&d.path, d.signature.as_ref().unwrap(), &d.sums] {
        assert_eq!(mode_of(f), 0o640, "{}", f.display());
    }
    for dir in [&store_dir, &d.path.parent().unwrap().to_path_buf()] {
        assert_eq!(mode_of(dir), 0o750, "{}", dir.display());
    }
    // Following the latest_ link reaches the published tarball.
    let via_latest = d.latest.join("MISP_v2.5.1_abc.tar.gz");
    assert_eq!(
        fs::metadata(via_latest).unwrap().permissions().mode() & 0o7777,
        0o640
    );
}
