//! Images verified before they are published, end to end through `gapferry-send` and the
//! receiver: with `[images] keyring`, an LXD image signed by the keyring's key is
//! published and `latest_` moves to it; a tampered signature, a tampered image, a
//! signature by another key and a missing signature are each failed with the reason
//! (cause `signature`), counted, and `latest_` stays where it was.

use gapferry_receiver::metrics::{ReceiverMetrics, ResultLabel};
use gapferry_tests::harness::send_with_binary;
use gapferry_tests::harness::{binary, with_outcome, TestReceiver};
use gapferry_tests::lxd::lxd_image;
use gapferry_tests::openpgp::{require, TestSigner};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn send_cli(paths: &[&Path], to: std::net::SocketAddr) {
    send_with_binary(paths, to, &["--rate", "400M"]);
}

fn signature_checks(m: &ReceiverMetrics, result: &str) -> u64 {
    m.image_signatures
        .get_or_create(&ResultLabel {
            result: result.into(),
        })
        .get()
}

/// The record of the image (not its signature) named `file`.
fn image_record<'a>(records: &'a [Value], file: &str) -> &'a Value {
    records
        .iter()
        .rev()
        .find(|r| r["kind"] == "image" && r["name"] == file)
        .unwrap_or_else(|| panic!("no image record for {file}: {records:#?}"))
}

fn latest(out: &Path) -> PathBuf {
    std::fs::read_link(out.join("images/latest_MISP")).unwrap()
}

#[test]
fn with_a_keyring_only_images_whose_signature_verifies_are_published() {
    let Some(signer) = require(TestSigner::new("Image Publisher <images@example.invalid>")) else {
        return;
    };
    let stranger = TestSigner::new("Someone Else <else@example.invalid>").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut metrics = None;
    let rx = TestReceiver::start(|cfg| {
        cfg.destinations.image_keyring = Some(signer.keyring.clone());
        metrics = Some(cfg.metrics.clone());
    });
    let metrics = metrics.unwrap();
    let mut expected_records = 0;

    // A good image: signed by the keyring's key. Published, latest_ moves to it.
    let good = dir.path().join("MISP_v2.5.1_aaaa.tar.gz");
    lxd_image(&good, 256 << 10, 1_700_000_001);
    let good_sig = signer.sign(&good);
    send_cli(&[&good], rx.addr);
    expected_records += 2;
    let records = rx.wait_records(expected_records, Duration::from_secs(60));
    let r = image_record(&records, "MISP_v2.5.1_aaaa.tar.gz");
    assert_eq!(r["outcome"], "delivered", "{r:#}");
    let stored = rx.out.join("images/MISP_v2.5.1_aaaa");
    assert_eq!(
        std::fs::read(stored.join("MISP_v2.5.1_aaaa.tar.gz")).unwrap(),
        std::fs::read(&good).unwrap()
    );
    assert_eq!(
        std::fs::read(stored.join("MISP_v2.5.1_aaaa.tar.gz.sig")).unwrap(),
        std::fs::read(&good_sig).unwrap()
    );
    assert_eq!(latest(&rx.out), PathBuf::from("MISP_v2.5.1_aaaa"));
    assert_eq!(signature_checks(&metrics, "good"), 1);

    // Newer builds, each with something wrong: none is published, latest_ stays.
    let cases: [(&str, &str, &str); 4] = [
        ("MISP_v2.5.2_bbbb", "tampered-signature", "does not verify"),
        ("MISP_v2.5.3_cccc", "tampered-image", "BAD signature"),
        ("MISP_v2.5.4_dddd", "other-key", "not in the keyring"),
        ("MISP_v2.5.5_eeee", "no-signature", "no signature"),
    ];
    for (i, (stem, how, says)) in cases.iter().enumerate() {
        let file = format!("{stem}.tar.gz");
        let img = dir.path().join(&file);
        lxd_image(&img, 128 << 10, 1_700_000_010 + i as u64);
        let objects = match *how {
            "tampered-signature" => {
                let sig = signer.sign(&img);
                let mut bytes = std::fs::read(&sig).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
                std::fs::write(&sig, bytes).unwrap();
                2
            }
            "tampered-image" => {
                signer.sign(&img);
                // Same name and size class, other bytes: the signature no longer matches.
                lxd_image(&img, 128 << 10, 1_700_000_099);
                2
            }
            "other-key" => {
                stranger.sign(&img);
                2
            }
            _ => 1,
        };
        send_cli(&[&img], rx.addr);
        expected_records += objects;
        let records = rx.wait_records(expected_records, Duration::from_secs(60));
        let r = image_record(&records, &file);
        assert_eq!(r["outcome"], "failed", "{how}: {r:#}");
        assert_eq!(r["cause"], "signature", "{how}: {r:#}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains(says), "{how}: {reason}");
        assert!(reason.contains("not published"), "{how}: {reason}");
        assert!(
            !rx.out.join("images").join(stem).exists(),
            "{how}: the refused image is not in the store"
        );
        assert_eq!(
            latest(&rx.out),
            PathBuf::from("MISP_v2.5.1_aaaa"),
            "{how}: latest_ unmoved"
        );
    }
    assert_eq!(signature_checks(&metrics, "good"), 1);
    assert_eq!(signature_checks(&metrics, "bad"), 3);
    assert_eq!(signature_checks(&metrics, "missing"), 1);
    let records = rx.records();
    assert_eq!(
        with_outcome(&records, "failed").len(),
        4,
        "only the four images failed, their signatures were received: {records:#?}"
    );

    // The good image's newer build, properly signed, is published after all that.
    let next = dir.path().join("MISP_v2.5.6_ffff.tar.gz");
    lxd_image(&next, 128 << 10, 1_700_000_100);
    signer.sign(&next);
    send_cli(&[&next], rx.addr);
    let records = rx.wait_records(expected_records + 2, Duration::from_secs(60));
    assert_eq!(
        image_record(&records, "MISP_v2.5.6_ffff.tar.gz")["outcome"],
        "delivered"
    );
    assert_eq!(latest(&rx.out), PathBuf::from("MISP_v2.5.6_ffff"));
}

#[test]
fn a_receiver_with_an_armoured_keyring_refuses_to_start_and_says_how_to_convert_it() {
    let dir = tempfile::tempdir().unwrap();
    let asc = dir.path().join("publisher.asc");
    std::fs::write(&asc, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n").unwrap();
    let config = dir.path().join("recv.toml");
    std::fs::write(
        &config,
        format!("[images]\nkeyring = {:?}\n", asc.to_str().unwrap()),
    )
    .unwrap();
    let mut child = gapferry_tests::harness::ChildGuard(
        Command::new(binary("gapferry-recv"))
            .args(["listen", "--bind", "127.0.0.1:0", "--out"])
            .arg(dir.path().join("out"))
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver kept running with an unusable keyring"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("gpg --dearmor"), "{stderr}");
}

/// The descriptor and the one-block events of `bytes` as object `id`.
/// The event saying `object`, the file at `path`, decoded whole with its blake3.
fn complete(object: gapferry_common::ObjectRef, path: &Path) -> gapferry_common::Event {
    gapferry_common::Event::ObjectComplete {
        object,
        blake3: *blake3::hash(&std::fs::read(path).unwrap()).as_bytes(),
    }
}

fn object_events(
    id: u32,
    kind: gapferry_common::ObjectKind,
    name: &str,
    bytes: &[u8],
) -> (
    gapferry_common::ObjectRef,
    gapferry_common::Event,
    gapferry_common::Event,
) {
    let object = gapferry_common::ObjectRef {
        session: 0xfeed,
        object: id,
    };
    let descriptor = gapferry_common::ObjectDescriptor {
        kind,
        name: name.to_string(),
        size: bytes.len() as u64,
        blake3: *blake3::hash(bytes).as_bytes(),
        block_plain_size: bytes.len() as u32,
        mtime: 0,
        pass: 0,
        passes: 1,
    };
    let started = gapferry_common::Event::ObjectStarted { object, descriptor };
    let block = gapferry_common::Event::BlockDecoded {
        object,
        block: 0,
        codec: gapferry_common::wire::Codec::None,
        plain_len: bytes.len() as u32,
        data: bytes.to_vec(),
    };
    (object, started, block)
}

#[test]
fn an_image_complete_before_its_signature_waits_for_it_and_fails_if_it_never_comes() {
    use gapferry_common::{Event, ObjectDescriptor, ObjectKind};
    use gapferry_receiver::delivery::Delivery;
    let Some(signer) = require(TestSigner::new("Image Publisher <images@example.invalid>")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut dest = gapferry_receiver::destinations::Destinations::under(&out);
    dest.image_keyring = Some(signer.keyring.clone());
    let mut delivery = Delivery::open(&out, dest, ReceiverMetrics::default()).unwrap();
    let records = || gapferry_tests::harness::read_records(&out);

    // 1. The signature starts, the image completes first: it waits, then both go in.
    let img = dir.path().join("MISP_v2.5.1_aaaa.tar.gz");
    lxd_image(&img, 64 << 10, 1_700_000_001);
    let sig = signer.sign(&img);
    let (sig_ref, sig_started, sig_block) = object_events(
        1,
        ObjectKind::ImageSignature,
        "MISP_v2.5.1_aaaa.tar.gz.sig",
        &std::fs::read(&sig).unwrap(),
    );
    let (img_ref, img_started, img_block) = object_events(
        2,
        ObjectKind::Image,
        "MISP_v2.5.1_aaaa.tar.gz",
        &std::fs::read(&img).unwrap(),
    );
    delivery.handle(sig_started);
    delivery.handle(img_started);
    delivery.handle(img_block);
    delivery.handle(complete(img_ref, &img));
    assert!(records().is_empty(), "the image waits: {:#?}", records());
    assert!(!out.join("images/latest_MISP").exists());
    delivery.handle(sig_block);
    delivery.handle(complete(sig_ref, &sig));
    let r = records();
    assert_eq!(with_outcome(&r, "delivered").len(), 2, "{r:#?}");
    assert_eq!(latest(&out), PathBuf::from("MISP_v2.5.1_aaaa"));

    // 2. The signature starts but fails: the waiting image fails with it, latest_ stays.
    let img = dir.path().join("MISP_v2.5.2_bbbb.tar.gz");
    lxd_image(&img, 64 << 10, 1_700_000_002);
    let sig = signer.sign(&img);
    let sig_bytes = std::fs::read(&sig).unwrap();
    let (sig_ref, sig_started, _) = object_events(
        3,
        ObjectKind::ImageSignature,
        "MISP_v2.5.2_bbbb.tar.gz.sig",
        &sig_bytes,
    );
    let sig_descriptor: Option<ObjectDescriptor> = match &sig_started {
        Event::ObjectStarted { descriptor, .. } => Some(descriptor.clone()),
        _ => None,
    };
    let (img_ref, img_started, img_block) = object_events(
        4,
        ObjectKind::Image,
        "MISP_v2.5.2_bbbb.tar.gz",
        &std::fs::read(&img).unwrap(),
    );
    delivery.handle(sig_started);
    delivery.handle(img_started);
    delivery.handle(img_block);
    delivery.handle(complete(img_ref, &img));
    delivery.handle(Event::ObjectFailed {
        object: sig_ref,
        descriptor: sig_descriptor,
        reason: "timed out with 0 of 1 blocks".into(),
        shortfall: None,
    });
    let r = records();
    let failed = image_record(&r, "MISP_v2.5.2_bbbb.tar.gz");
    assert_eq!(failed["outcome"], "failed", "{failed:#}");
    assert_eq!(failed["cause"], "signature");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("did not arrive"),
        "{failed:#}"
    );
    assert_eq!(latest(&out), PathBuf::from("MISP_v2.5.1_aaaa"));
    assert!(!out.join("images/MISP_v2.5.2_bbbb").exists());

    // 3. Still waiting when the receiver stops: failed, not left behind.
    let (_, sig_started, _) = object_events(
        5,
        ObjectKind::ImageSignature,
        "MISP_v2.5.2_bbbb.tar.gz.sig",
        &sig_bytes,
    );
    let (img_ref, img_started, img_block) = object_events(
        6,
        ObjectKind::Image,
        "MISP_v2.5.2_bbbb.tar.gz",
        &std::fs::read(&img).unwrap(),
    );
    delivery.handle(sig_started);
    delivery.handle(img_started);
    delivery.handle(img_block);
    delivery.handle(complete(img_ref, &img));
    let before = with_outcome(&records(), "failed").len();
    delivery.abandon_all("the receiver stopped");
    let r = records();
    let img_failures: Vec<_> = with_outcome(&r, "failed")
        .into_iter()
        .filter(|r| r["kind"] == "image" && r["object"] == 6)
        .collect();
    assert_eq!(img_failures.len(), 1, "{r:#?}");
    assert!(with_outcome(&r, "failed").len() > before);
    assert_eq!(latest(&out), PathBuf::from("MISP_v2.5.1_aaaa"));
    let staging = out.join(".gapferry/staging");
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "no staged file left behind"
    );
}
