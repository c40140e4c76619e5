//! The image store with small synthetic LXD unified tarballs (metadata.yaml + rootfs/).

use gapferry_feeds::{ImageError, ImageStore};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes a small LXD-like unified tarball (gzip) with `payload` bytes in rootfs.
fn make_image(dir: &Path, file_name: &str, payload: usize, seed: u8) -> PathBuf {
    let path = dir.join(file_name);
    let gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let metadata = format!(
        "architecture: x86_64\ncreation_date: {}\nproperties:\n  description: {file_name}\n",
        1_700_000_000 + seed as u64
    );
    let mut h = tar::Header::new_gnu();
    h.set_size(metadata.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "metadata.yaml", metadata.as_bytes())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "rootfs/", std::io::empty())
        .unwrap();
    let body: Vec<u8> = (0..payload)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "rootfs/payload.bin", body.as_slice())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    path
}

fn make_sig(dir: &Path, file_name: &str) -> PathBuf {
    let p = dir.join(format!("{file_name}.sig"));
    let mut f = fs::File::create(&p).unwrap();
    writeln!(
        f,
        "-----BEGIN PGP SIGNATURE-----\n{file_name}\n-----END PGP SIGNATURE-----"
    )
    .unwrap();
    p
}

/// sha256 computed independently: the `sha256sum` tool when present, else the sha2 crate.
fn independent_sums_line(dir: &Path, file: &str) -> String {
    match Command::new("sha256sum")
        .arg(file)
        .current_dir(dir)
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap(),
        _ => {
            use sha2::{Digest, Sha256};
            let h = Sha256::digest(fs::read(dir.join(file)).unwrap());
            let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}  {file}\n")
        }
    }
}

fn dirs_of(store: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn four_versions_keep_three_with_latest_link_sums_and_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let store_dir = tmp.path().join("images");
    let store = ImageStore::new(&store_dir, 3);

    let versions = [
        "MISP_v2.5.1_aaaaaaa",
        "MISP_v2.5.2_bbbbbbb",
        "MISP_v2.5.10_ccccccc",
        "MISP_v2.5.3_ddddddd",
    ];
    // Built in version order (v2.5.10 last), delivered out of it.
    let built = [0u8, 1, 3, 2];
    for (i, stem) in versions.iter().enumerate() {
        let file = format!("{stem}.tar.gz");
        let staged = make_image(&staging, &file, 64 * 1024 + i, built[i]);
        let sig = make_sig(&staging, &file);
        let sig_text = fs::read(&sig).unwrap();
        let d = store.deliver_image(&staged, &file, Some(&sig)).unwrap();
        assert!(!staged.exists() && !sig.exists(), "staged files moved in");
        assert_eq!(d.name, "MISP");
        assert_eq!(d.stem, *stem);
        let image_dir = store_dir.join(stem);
        assert_eq!(d.path, image_dir.join(&file));
        assert_eq!(
            d.signature.as_deref(),
            Some(image_dir.join(format!("{file}.sig")).as_path())
        );
        assert_eq!(
            fs::read(image_dir.join(format!("{file}.sig"))).unwrap(),
            sig_text
        );
        let sums = fs::read_to_string(image_dir.join("SHA256SUMS")).unwrap();
        assert_eq!(sums, independent_sums_line(&image_dir, &file));
        assert_eq!(sums, format!("{}  {file}\n", d.sha256));
        assert!(d.retained);
    }
    assert_eq!(
        dirs_of(&store_dir, "MISP_"),
        vec![
            "MISP_v2.5.10_ccccccc",
            "MISP_v2.5.2_bbbbbbb",
            "MISP_v2.5.3_ddddddd"
        ]
    );
    let latest = store_dir.join("latest_MISP");
    assert!(fs::symlink_metadata(&latest)
        .unwrap()
        .file_type()
        .is_symlink());
    let target = fs::read_link(&latest).unwrap();
    assert!(target.is_relative(), "{target:?}");
    assert_eq!(target, PathBuf::from("MISP_v2.5.10_ccccccc"));
    assert!(latest.join("MISP_v2.5.10_ccccccc.tar.gz").is_file());

    // An older build than all kept ones is pruned at once.
    let file = "MISP_v2.4.199_eeeeeee.tar.gz";
    let staged = make_image(&staging, file, 1000, 0);
    let d = store.deliver_image(&staged, file, None).unwrap();
    assert!(!d.retained);
    assert_eq!(d.latest_stem, "MISP_v2.5.10_ccccccc");
    assert_eq!(dirs_of(&store_dir, "MISP_").len(), 3);

    // The same bytes again: already present, nothing else changes.
    let file = "MISP_v2.5.3_ddddddd.tar.gz";
    let staged = make_image(&staging, file, 64 * 1024 + 3, 2);
    let d = store.deliver_image(&staged, file, None).unwrap();
    assert!(d.already_present);
    assert!(
        store_dir
            .join("MISP_v2.5.3_ddddddd")
            .join(format!("{file}.sig"))
            .is_file(),
        "signature of identical bytes kept"
    );
}

#[test]
fn latest_follows_the_newest_build_not_the_highest_version_and_modules_link_as_the_tracker() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let store_dir = tmp.path().join("images");
    let store = ImageStore::new(&store_dir, 3);
    // v2.5.10 built first, then a rebuild of v2.5.9 (a rollback build): the tracker links
    // the build it made last, so does the store.
    let a = make_image(&staging, "MISP_v2.5.10_aaa.tar.gz", 100, 1);
    store
        .deliver_image(&a, "MISP_v2.5.10_aaa.tar.gz", None)
        .unwrap();
    let b = make_image(&staging, "MISP_v2.5.9_bbb.tar.gz", 100, 2);
    let d = store
        .deliver_image(&b, "MISP_v2.5.9_bbb.tar.gz", None)
        .unwrap();
    assert_eq!(d.latest_stem, "MISP_v2.5.9_bbb");
    assert_eq!(
        fs::read_link(store_dir.join("latest_MISP")).unwrap(),
        PathBuf::from("MISP_v2.5.9_bbb")
    );
    // The same higher version delivered again later is still the older build.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let a = make_image(&staging, "MISP_v2.5.10_aaa.tar.gz", 100, 1);
    let d = store
        .deliver_image(&a, "MISP_v2.5.10_aaa.tar.gz", None)
        .unwrap();
    assert_eq!(d.latest_stem, "MISP_v2.5.9_bbb");

    // build.sh names the modules image `Modules_<version>`; the tracker links it as
    // `latest_MISP-modules`.
    let m = make_image(&staging, "Modules_2.4.198.tar.gz", 100, 3);
    let d = store
        .deliver_image(&m, "Modules_2.4.198.tar.gz", None)
        .unwrap();
    assert_eq!(d.latest, store_dir.join("latest_MISP-modules"));
    assert_eq!(
        fs::read_link(store_dir.join("latest_MISP-modules")).unwrap(),
        PathBuf::from("Modules_2.4.198")
    );
    assert!(fs::symlink_metadata(store_dir.join("latest_Modules")).is_err());
}

#[test]
fn names_without_versions_follow_delivery_order_and_names_are_separate() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let store_dir = tmp.path().join("images");
    let store = ImageStore::new(&store_dir, 2);

    let mysql = make_image(&staging, "MySQL_10.11.2.tar.gz", 100, 1);
    store
        .deliver_image(&mysql, "MySQL_10.11.2.tar.gz", None)
        .unwrap();
    for (i, stem) in ["Valkey_zeta", "Valkey_alpha", "Valkey_mid"]
        .iter()
        .enumerate()
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = format!("{stem}.tar.gz");
        let staged = make_image(&staging, &file, 100, i as u8);
        let d = store.deliver_image(&staged, &file, None).unwrap();
        assert_eq!(d.latest_stem, *stem, "the last delivered is the newest");
    }
    assert_eq!(
        dirs_of(&store_dir, "Valkey_"),
        vec!["Valkey_alpha", "Valkey_mid"]
    );
    assert_eq!(
        fs::read_link(store_dir.join("latest_Valkey")).unwrap(),
        PathBuf::from("Valkey_mid")
    );
    assert_eq!(
        fs::read_link(store_dir.join("latest_MySQL")).unwrap(),
        PathBuf::from("MySQL_10.11.2")
    );
    assert_eq!(dirs_of(&store_dir, "MySQL_"), vec!["MySQL_10.11.2"]);

    // An xz image keeps its own suffix.
    let xz_path = staging.join("Redis_7.2.4.tar.xz");
    {
        let mut enc = liblzma::write::XzEncoder::new(fs::File::create(&xz_path).unwrap(), 1);
        let mut tar = tar::Builder::new(&mut enc);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        tar.append_data(&mut h, "metadata.yaml", &b"a: b"[..3])
            .unwrap();
        tar.finish().unwrap();
        drop(tar);
        enc.finish().unwrap();
    }
    let d = store
        .deliver_image(&xz_path, "Redis_7.2.4.tar.xz", None)
        .unwrap();
    assert_eq!(d.path, store_dir.join("Redis_7.2.4/Redis_7.2.4.tar.xz"));
}

#[test]
fn unsafe_names_and_planted_links_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let store_dir = tmp.path().join("images");
    fs::create_dir(&store_dir).unwrap();
    let store = ImageStore::new(&store_dir, 3);
    let staged = make_image(&staging, "x.tar.gz", 10, 0);

    for bad in [
        "../MISP_v1.tar.gz",
        "a/b.tar.gz",
        "MISP_v1..2.tar.gz",
        "MISP\u{7}.tar.gz",
        "latest_MISP.tar.gz",
        ".hidden.tar.gz",
    ] {
        let err = store.deliver_image(&staged, bad, None).unwrap_err();
        assert!(matches!(err, ImageError::BadName { .. }), "{bad:?}: {err}");
        assert!(staged.is_file(), "a refused image stays staged");
    }

    // A symlink planted where an image directory goes is refused, not followed.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, store_dir.join("MISP_v9_x")).unwrap();
    let err = store
        .deliver_image(&staged, "MISP_v9_x.tar.gz", None)
        .unwrap_err();
    assert!(matches!(err, ImageError::Planted(_)), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // A symlink planted in place of the tarball is replaced, its target untouched.
    fs::create_dir(store_dir.join("MISP_v8_y")).unwrap();
    let precious = tmp.path().join("precious");
    fs::write(&precious, b"keep me").unwrap();
    std::os::unix::fs::symlink(&precious, store_dir.join("MISP_v8_y/MISP_v8_y.tar.gz")).unwrap();
    std::os::unix::fs::symlink(&precious, store_dir.join("MISP_v8_y/SHA256SUMS")).unwrap();
    let d = store
        .deliver_image(&staged, "MISP_v8_y.tar.gz", None)
        .unwrap();
    assert!(fs::symlink_metadata(&d.path).unwrap().is_file());
    assert!(fs::symlink_metadata(&d.sums).unwrap().is_file());
    assert_eq!(fs::read(&precious).unwrap(), b"keep me");

    // Not a tarball at all.
    let text = staging.join("notes.tar.gz");
    fs::write(&text, b"plain text").unwrap();
    let err = store
        .deliver_image(&text, "notes.tar.gz", None)
        .unwrap_err();
    assert!(matches!(err, ImageError::NotATarball(_)), "{err}");
    assert!(err.to_string().contains("gzip nor xz"));
}

#[test]
fn an_older_build_arriving_later_neither_moves_latest_nor_deletes_the_newer() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let store_dir = tmp.path().join("images");
    let store = ImageStore::new(&store_dir, 1);
    // Built first (creation_date 1_700_000_001), then a newer build.
    let aaa = make_image(&staging, "Redis_aaa.tar.gz", 100, 1);
    store.deliver_image(&aaa, "Redis_aaa.tar.gz", None).unwrap();
    let bbb = make_image(&staging, "Redis_bbb.tar.gz", 100, 2);
    let d = store.deliver_image(&bbb, "Redis_bbb.tar.gz", None).unwrap();
    assert_eq!(d.latest_stem, "Redis_bbb");
    assert_eq!(dirs_of(&store_dir, "Redis_"), vec!["Redis_bbb"]);
    // The older build comes again (a replay, a carousel of an old file): delivered last, but
    // older by its metadata, so it is pruned at once and the newer one stays.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = make_image(&staging, "Redis_aaa.tar.gz", 100, 1);
    let d = store
        .deliver_image(&again, "Redis_aaa.tar.gz", None)
        .unwrap();
    assert!(!d.retained, "the older build is not kept");
    assert_eq!(d.latest_stem, "Redis_bbb");
    assert_eq!(dirs_of(&store_dir, "Redis_"), vec!["Redis_bbb"]);
    assert_eq!(
        fs::read_link(store_dir.join("latest_Redis")).unwrap(),
        PathBuf::from("Redis_bbb")
    );
}
