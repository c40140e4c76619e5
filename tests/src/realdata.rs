//! The real public data the tests read in place (`../shared/realdata/`, never copied into
//! the project): where it is, the 41 real Infoblox MISP events, and the feed they must
//! build (the published manifest and PyMISP's `hashes.csv`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The shared real-data directory.
pub fn realdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata")
}

/// The real Infoblox feed's 41 event files, sorted.
pub fn infoblox_events() -> Vec<PathBuf> {
    let dir = realdata().join("misp-feed/infoblox");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "manifest.json")
        .collect();
    v.sort();
    assert_eq!(v.len(), 41, "the realdata holds 41 Infoblox events");
    v
}

/// Asserts that the feed in `misp` equals the published manifest's entries and PyMISP's
/// `hashes.csv` for the 41 Infoblox events.
pub fn assert_feed_matches_infoblox_reference(misp: &Path) {
    let published: serde_json::Value = serde_json::from_slice(
        &std::fs::read(realdata().join("misp-feed/infoblox/manifest.json")).unwrap(),
    )
    .unwrap();
    let ours: serde_json::Value =
        serde_json::from_slice(&std::fs::read(misp.join("manifest.json")).unwrap()).unwrap();
    let ours = ours.as_object().unwrap();
    assert_eq!(ours.len(), 41);
    for (uuid, entry) in ours {
        assert_eq!(Some(entry), published.get(uuid), "manifest entry of {uuid}");
        assert!(misp.join(format!("{uuid}.json")).is_file());
    }
    let lines = |p: PathBuf| -> BTreeSet<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let reference = lines(realdata().join("misp-feed/infoblox-derived/hashes.csv"));
    assert_eq!(lines(misp.join("hashes.csv")), reference);
}
