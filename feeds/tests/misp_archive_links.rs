//! The MISP archive as hard links (issue 12): an event's archive copy is a second link to
//! its durable feed file, not a second file, when both are on one filesystem and the
//! feed's file mode lets nobody but the receiver write it. MISP deleting the feed file
//! leaves the archive holding the original bytes; a newer version replaces both names by
//! rename and never rewrites the archived bytes in place; a link that cannot be made
//! falls back to a copy; a group- or other-writable feed mode gets a copy.

use gapferry_feeds::archive::{misp_event_name, Archive, MISP};
use gapferry_feeds::{MispFeed, Publish};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const UUID: &str = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";

fn event(timestamp: i64) -> Vec<u8> {
    serde_json::json!({"Event": {
        "uuid": UUID,
        "info": format!("version {timestamp}"),
        "date": "2024-01-02",
        "timestamp": timestamp.to_string(),
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Attribute": [{"type": "domain", "category": "Network activity", "value": "a.example"}],
    }})
    .to_string()
    .into_bytes()
}

/// A feed in `base/feed` archiving into `base/archive`, publishing with `file_mode`.
fn feed(base: &Path, file_mode: u32) -> (MispFeed, Archive) {
    let archive = Archive::new(base.join("archive"));
    let publish = Publish {
        file_mode,
        ..Publish::default()
    };
    let feed = MispFeed::new(base.join("feed"))
        .with_publish(publish)
        .with_archive(archive.clone());
    (feed, archive)
}

fn paths(base: &Path, archive: &Archive) -> (PathBuf, PathBuf) {
    let name = misp_event_name(UUID).unwrap();
    (
        base.join("feed").join(&name),
        archive.path_of(MISP, &name).unwrap(),
    )
}

/// Names in the archive's MISP directory, hidden ones included.
fn archive_names(archive: &Archive) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(archive.kind_dir(MISP).unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_archive_link_survives_misp_deleting_the_feed_file_and_a_replacement_never_rewrites_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut feed, archive) = feed(tmp.path(), 0o644);
    let (in_feed, archived) = paths(tmp.path(), &archive);
    let v1 = event(100);
    feed.deliver_event(&v1).unwrap();
    let (f, a) = (
        fs::metadata(&in_feed).unwrap(),
        fs::metadata(&archived).unwrap(),
    );
    assert_eq!(
        f.ino(),
        a.ino(),
        "the archive copy is a link of the feed file"
    );
    assert_eq!(a.nlink(), 2);
    assert_eq!(fs::read(&archived).unwrap(), v1);
    assert_eq!(archive_names(&archive), [misp_event_name(UUID).unwrap()]);

    // MISP consumed the event: the archive still holds its bytes.
    fs::remove_file(&in_feed).unwrap();
    assert_eq!(fs::read(&archived).unwrap(), v1);
    assert_eq!(fs::metadata(&archived).unwrap().nlink(), 1);

    // Put back (as `feed republish` does), then replaced by a newer version while the
    // older file is in the feed: both names move to the new bytes by rename; the old
    // inode, still open here, keeps the old bytes.
    feed.deliver_event(&fs::read(&archived).unwrap()).unwrap();
    let mut old = fs::File::open(&archived).unwrap();
    let old_ino = old.metadata().unwrap().ino();
    let v2 = event(200);
    feed.deliver_event(&v2).unwrap();
    assert_eq!(fs::read(&in_feed).unwrap(), v2);
    assert_eq!(fs::read(&archived).unwrap(), v2);
    let (f, a) = (
        fs::metadata(&in_feed).unwrap(),
        fs::metadata(&archived).unwrap(),
    );
    assert_eq!(f.ino(), a.ino());
    assert_ne!(
        a.ino(),
        old_ino,
        "a replacement is a new file, never a rewrite"
    );
    let mut kept = Vec::new();
    old.read_to_end(&mut kept).unwrap();
    assert_eq!(kept, v1, "the replaced archive copy's bytes were rewritten");
    assert_eq!(archive_names(&archive), [misp_event_name(UUID).unwrap()]);
}

#[test]
fn a_feed_mode_others_may_write_gets_an_archive_copy_not_a_link() {
    for mode in [0o664, 0o646] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut feed, archive) = feed(tmp.path(), mode);
        let (in_feed, archived) = paths(tmp.path(), &archive);
        let v1 = event(100);
        feed.deliver_event(&v1).unwrap();
        let (f, a) = (
            fs::metadata(&in_feed).unwrap(),
            fs::metadata(&archived).unwrap(),
        );
        assert_ne!(f.ino(), a.ino(), "mode {mode:o}: linked");
        assert_eq!(fs::read(&archived).unwrap(), v1);
        assert_eq!(f.mode() & 0o777, mode);
        assert_eq!(a.mode() & 0o777, 0o640, "the archive's own mode");
    }
}

#[test]
fn a_link_that_cannot_be_made_falls_back_to_a_copy_and_the_event_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut feed, archive) = feed(tmp.path(), 0o644);
    let (in_feed, archived) = paths(tmp.path(), &archive);
    // A directory planted under the hidden name the link goes through: the link fails.
    let name = misp_event_name(UUID).unwrap();
    let planted = archive
        .kind_dir(MISP)
        .unwrap()
        .join(format!(".gapferry-link-{name}"));
    fs::create_dir_all(&planted).unwrap();
    fs::write(planted.join("x"), b"x").unwrap();
    let v1 = event(100);
    let delivered = feed.deliver_event(&v1).unwrap();
    assert_eq!(delivered.path, in_feed);
    assert_eq!(fs::read(&in_feed).unwrap(), v1);
    assert_eq!(fs::read(&archived).unwrap(), v1, "archived as a copy");
    assert_ne!(
        fs::metadata(&in_feed).unwrap().ino(),
        fs::metadata(&archived).unwrap().ino()
    );
}

#[test]
fn a_batch_of_events_is_archived_as_links_in_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut feed, archive) = feed(tmp.path(), 0o644);
    let events: Vec<Vec<u8>> = (0..20u32)
        .map(|n| {
            let uuid = format!("5a0a9aa9-23a4-4607-b6df-41a9950d{n:04x}");
            String::from_utf8(event(100))
                .unwrap()
                .replace(UUID, &uuid)
                .into_bytes()
        })
        .collect();
    let results = feed.deliver_batch(&events).unwrap();
    for (r, bytes) in results.into_iter().zip(&events) {
        let r = r.unwrap();
        let name = misp_event_name(&r.uuid).unwrap();
        let archived = archive.path_of(MISP, &name).unwrap();
        assert_eq!(fs::read(&archived).unwrap(), *bytes);
        assert_eq!(
            fs::metadata(&r.path).unwrap().ino(),
            fs::metadata(&archived).unwrap().ino()
        );
    }
    // Only the archived names: no hidden link or staging file left behind.
    assert_eq!(archive_names(&archive).len(), 20);
    assert!(archive_names(&archive).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn a_link_left_by_a_crash_before_its_rename_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut feed, archive) = feed(tmp.path(), 0o644);
    let (in_feed, archived) = paths(tmp.path(), &archive);
    let name = misp_event_name(UUID).unwrap();
    let dir = archive.kind_dir(MISP).unwrap();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!(".gapferry-link-{name}")), b"stale").unwrap();
    let v1 = event(100);
    feed.deliver_event(&v1).unwrap();
    assert_eq!(fs::read(&archived).unwrap(), v1);
    assert_eq!(
        fs::metadata(&in_feed).unwrap().ino(),
        fs::metadata(&archived).unwrap().ino()
    );
    assert_eq!(archive_names(&archive), [name]);
}
