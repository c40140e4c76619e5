//! Kind detection over every file of realdata, synthetic tarballs and random bytes.

use gapferry_common::ObjectKind;
use gapferry_feeds::{
    detect, detect_with, feed_event_files, split_misp, Compression, DetectError, DetectLimits,
    Detected, MispShape,
};
use proptest::prelude::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn realdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata")
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// What each realdata file is, by its path relative to realdata/.
fn expected(rel: &str) -> Detected {
    use Detected::*;
    let event = Misp(MispShape::Event);
    match rel {
        "misp-feed/infoblox/manifest.json" => File,
        r if r.starts_with("misp-feed/infoblox/") && r.ends_with(".json") => event,
        "misp-events/pymisp-tests/mispevent_testfiles__existing_event.json" => {
            Misp(MispShape::BareEvent)
        }
        // info, date, analysis... but no uuid or Orgc: not an event a feed can hold.
        "misp-events/pymisp-tests/mispevent_testfiles__event.json" => File,
        "misp-events/pymisp-schema.json" | "misp-events/pymisp-schema-lax.json" => File,
        r if r.starts_with("misp-events/") && r.ends_with(".json") => event,
        "stix21/misp-stix-tests/test_events_collection_1.json" => Misp(MispShape::RestSearch),
        "stix21/mitre-attack-stix-data/index.json" => File,
        "stix21/oasis-examples/interop-objectmarking-test.json" => File,
        r if r.starts_with("stix21/") && r.ends_with(".json") => Stix,
        // STIX 2.0 bundles (`spec_version` "2.0") are bundles too.
        r if r.starts_with("stix20/") && r.ends_with(".json") => Stix,
        _ => File,
    }
}

#[test]
fn every_realdata_file_is_classified() {
    let root = realdata();
    let mut files = Vec::new();
    all_files(&root, &mut files);
    files.sort();
    assert!(files.len() > 70, "realdata has {} files", files.len());
    let mut counts = std::collections::HashMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap().to_str().unwrap();
        let got = detect(f).unwrap();
        assert_eq!(got, expected(rel), "{rel}");
        *counts.entry(got.kind()).or_insert(0) += 1;
    }
    assert_eq!(counts[&ObjectKind::Misp], 41 + 8 + 1);
    assert_eq!(counts[&ObjectKind::Stix], 13 + 3);

    let feed = root.join("misp-feed/infoblox");
    assert_eq!(
        detect(&feed).unwrap(),
        Detected::Misp(MispShape::FeedDirectory)
    );
    let events = feed_event_files(&feed).unwrap();
    assert_eq!(events.len(), 41);
    assert!(events
        .iter()
        .all(|p| p.file_name().unwrap() != "manifest.json"));
    assert!(matches!(
        detect(&root.join("stix21")),
        Err(DetectError::NotAFeedDirectory(_))
    ));
}

#[test]
fn a_rest_export_of_several_events_splits_into_them() {
    let dir = realdata().join("misp-events/pymisp-tests");
    let names = [
        "reportlab_testfiles__to_delete1.json",
        "reportlab_testfiles__to_delete3.json",
        "57c4445b-c548-4654-af0b-4be3950d210f.json",
    ];
    let originals: Vec<Value> = names
        .iter()
        .map(|n| serde_json::from_slice(&fs::read(dir.join(n)).unwrap()).unwrap())
        .collect();
    let export = serde_json::json!({ "response": originals }).to_string();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("export.json");
    fs::write(&path, &export).unwrap();
    assert_eq!(
        detect(&path).unwrap(),
        Detected::Misp(MispShape::RestSearch)
    );
    let docs = split_misp(export.as_bytes()).unwrap();
    assert_eq!(docs.len(), 3);
    for (doc, original) in docs.iter().zip(&originals) {
        assert_eq!(doc.uuid, original["Event"]["uuid"].as_str().unwrap());
        let v: Value = serde_json::from_slice(&doc.json).unwrap();
        assert_eq!(&v, original);
    }
    // A plain list of events splits the same way.
    let list = serde_json::to_string(&originals).unwrap();
    assert_eq!(split_misp(list.as_bytes()).unwrap().len(), 3);
    fs::write(&path, &list).unwrap();
    assert_eq!(detect(&path).unwrap(), Detected::Misp(MispShape::EventList));
}

fn tarball(path: &Path, entries: &[&str], compression: Compression) {
    let file = fs::File::create(path).unwrap();
    let write_entries = |w: &mut dyn std::io::Write| {
        let mut tar = tar::Builder::new(w);
        for name in entries {
            let mut h = tar::Header::new_gnu();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                tar.append_data(&mut h, name, std::io::empty()).unwrap();
            } else {
                let body = format!("content of {name}\n");
                h.set_size(body.len() as u64);
                h.set_cksum();
                tar.append_data(&mut h, name, body.as_bytes()).unwrap();
            }
        }
        tar.finish().unwrap();
    };
    match compression {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            write_entries(&mut enc);
            enc.finish().unwrap();
        }
        Compression::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(file, 1);
            write_entries(&mut enc);
            enc.finish().unwrap();
        }
    }
}

/// LXD images by their top-level `metadata.yaml`, whatever the name; others are files.
fn images_by_content(t: &dyn Fn(&str) -> PathBuf) {
    tarball(
        &t("img.tar.gz"),
        &[
            "metadata.yaml",
            "templates/",
            "rootfs/",
            "rootfs/etc/hostname",
        ],
        Compression::Gzip,
    );
    assert_eq!(
        detect(&t("img.tar.gz")).unwrap(),
        Detected::Image {
            compression: Compression::Gzip,
            signature: None
        }
    );
    // Content decides, not the name; metadata.yaml may come after rootfs.
    tarball(
        &t("img.bin"),
        &["rootfs/", "rootfs/a", "./metadata.yaml"],
        Compression::Xz,
    );
    assert_eq!(
        detect(&t("img.bin")).unwrap(),
        Detected::Image {
            compression: Compression::Xz,
            signature: None
        }
    );
    tarball(
        &t("noimg.tar.gz"),
        &["rootfs/", "rootfs/metadata.yaml", "data.txt"],
        Compression::Gzip,
    );
    assert_eq!(detect(&t("noimg.tar.gz")).unwrap(), Detected::File);
    tarball(
        &t("noimg.tar.xz"),
        &["metadata.yaml/", "x"],
        Compression::Xz,
    );
    assert_eq!(detect(&t("noimg.tar.xz")).unwrap(), Detected::File);
}

/// A `metadata.yaml` beyond the listing bound is not found.
fn tar_listing_is_bounded(t: &dyn Fn(&str) -> PathBuf) {
    // The listing is bounded.
    let mut many: Vec<String> = (0..50).map(|i| format!("rootfs/f{i}")).collect();
    many.push("metadata.yaml".into());
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    tarball(&t("late.tar.gz"), &many, Compression::Gzip);
    let tight = DetectLimits {
        max_tar_entries: 20,
        ..DetectLimits::default()
    };
    assert_eq!(
        detect_with(&t("late.tar.gz"), &tight).unwrap(),
        Detected::File
    );
    assert!(matches!(
        detect(&t("late.tar.gz")).unwrap(),
        Detected::Image { .. }
    ));
}

/// `img.tar.gz.sig` goes with `img.tar.gz`; a signature without its image is a file.
fn signature_travels_with_its_image(t: &dyn Fn(&str) -> PathBuf) {
    // A detached signature travels with its image.
    fs::write(t("img.tar.gz.sig"), b"sig").unwrap();
    assert_eq!(
        detect(&t("img.tar.gz")).unwrap(),
        Detected::Image {
            compression: Compression::Gzip,
            signature: Some(t("img.tar.gz.sig"))
        }
    );
    let sig = detect(&t("img.tar.gz.sig")).unwrap();
    assert_eq!(
        sig,
        Detected::Signature {
            image: t("img.tar.gz")
        }
    );
    assert_eq!(sig.kind(), ObjectKind::ImageSignature);
    // A .sig without its image is a plain file.
    fs::write(t("gone.tar.gz.sig"), b"sig").unwrap();
    assert_eq!(detect(&t("gone.tar.gz.sig")).unwrap(), Detected::File);
}

/// gzip that is not a tarball, and garbage behind a gzip magic.
fn gzip_without_tar_is_a_file(t: &dyn Fn(&str) -> PathBuf) {
    // gzip that is not a tarball, and garbage behind a gzip magic.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, b"just some text, no tar here").unwrap();
    fs::write(t("text.gz"), enc.finish().unwrap()).unwrap();
    assert_eq!(detect(&t("text.gz")).unwrap(), Detected::File);
    fs::write(t("fake.tar.gz"), [0x1f, 0x8b, 1, 2, 3, 4, 5]).unwrap();
    assert_eq!(detect(&t("fake.tar.gz")).unwrap(), Detected::File);
}

#[test]
fn tarballs_with_and_without_metadata_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name);
    images_by_content(&t);
    tar_listing_is_bounded(&t);
    signature_travels_with_its_image(&t);
    gzip_without_tar_is_a_file(&t);
}

#[test]
fn random_binary_and_big_json() {
    let tmp = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(tmp.path().join("random.bin"), &bytes).unwrap();
    assert_eq!(
        detect(&tmp.path().join("random.bin")).unwrap(),
        Detected::File
    );
    fs::write(tmp.path().join("empty"), b"").unwrap();
    assert_eq!(detect(&tmp.path().join("empty")).unwrap(), Detected::File);

    // A multi-MB JSON whose deciding key comes last is still detected.
    let mut big =
        String::from("{\"id\": \"bundle--5d0092c5-5f74-4287-9642-33f4c354e56d\", \"objects\": [");
    for i in 0..40_000 {
        if i > 0 {
            big.push(',');
        }
        big.push_str(&format!(
            "{{\"type\": \"indicator\", \"id\": \"indicator--{i:08}-0000-4000-8000-000000000000\", \"pattern\": \"[ipv4-addr:value = '10.0.{}.{}']\"}}",
            i / 256 % 256,
            i % 256
        ));
    }
    big.push_str("], \"type\": \"bundle\"}");
    assert!(big.len() > 4_000_000);
    fs::write(tmp.path().join("big.json"), &big).unwrap();
    assert_eq!(
        detect(&tmp.path().join("big.json")).unwrap(),
        Detected::Stix
    );
}

proptest! {
    #[test]
    fn detection_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let d = gapferry_feeds::detect_bytes(&bytes);
        let _ = d.kind();
        let _ = split_misp(&bytes);
        let _ = gapferry_feeds::parse_event(&bytes);
    }

    #[test]
    fn detection_never_panics_on_json_prefixes(cut in 0usize..2000) {
        let src = fs::read(realdata().join("misp-events/pymisp-tests/new_misp_event.json")).unwrap();
        let cut = cut.min(src.len());
        let _ = gapferry_feeds::detect_bytes(&src[..cut]);
        let _ = gapferry_feeds::parse_event(&src[..cut]);
    }
}
