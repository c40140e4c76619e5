//! Readable deliveries: the real receiver runs as root under `umask 077` and another,
//! unprivileged uid (`nobody`, through `setpriv`) reads everything it delivered, in all
//! four kinds: plain files in subdirectories, the MISP feed (events, `manifest.json`,
//! `hashes.csv`), STIX bundles and the image store (tarball, `.sig`, `SHA256SUMS`, through
//! the `latest_` link), with the default configuration; then a per-kind group and mode
//! from `[permissions.misp]` keeps the feed to that group.
//!
//! Needs root (to run a reader as another uid) and `setpriv` (util-linux). Without them
//! the tests fail under `CI=true` and print `skipping: <reason>` otherwise.

use gapferry_tests::harness::{binary, read_records, with_outcome, ChildGuard};
use gapferry_tests::lxd::signed_image;
use gapferry_tests::prereq::require;
use gapferry_tests::realdata::realdata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged reader: `nobody` / `nogroup` on Debian.
const READER: &str = "65534";
/// A group the receiver gives the MISP feed in the second test; the reader is put in it
/// or not. No group database entry is needed for a numeric gid.
const FEED_GID: u32 = 4242;
const STEM: &str = "MISP_v2.5.1_abc";

fn prerequisites() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("needs root to read as another uid".into());
    }
    match Command::new("setpriv").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("setpriv (util-linux) is missing".into()),
    }
}

/// Three real MISP events, a STIX 2.1 bundle, a signed LXD image and a tree of plain
/// files with nested directories: what the test sends, and the number of objects.
fn inputs(src: &Path) -> (Vec<PathBuf>, usize) {
    let mut events: Vec<PathBuf> = std::fs::read_dir(realdata().join("misp-feed/infoblox"))
        .expect("realdata MISP feed")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "manifest.json")
        .collect();
    events.sort();
    events.truncate(3);
    let bundle = src.join("bundle.json");
    std::fs::write(
        &bundle,
        r#"{"type":"bundle","id":"bundle--5d0092c5-5f74-4287-9642-33f4c354e56d","objects":[{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2024-01-01T00:00:00.000Z","modified":"2024-01-01T00:00:00.000Z","name":"bad ip","pattern":"[ipv4-addr:value = '198.51.100.7']","pattern_type":"stix","valid_from":"2024-01-01T00:00:00Z"}]}"#,
    )
    .unwrap();
    let (img, sig) = signed_image(src, STEM, 64 << 10, 7);
    let tree = src.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("top.txt"), b"top\n").unwrap();
    std::fs::write(tree.join("sub/deeper/low.bin"), b"low").unwrap();
    // The low side's modes are not the high side's business: a private file and an
    // executable one arrive with the receiver's file mode.
    std::fs::set_permissions(tree.join("top.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(
        tree.join("sub/deeper/low.bin"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let mut paths = events;
    paths.extend([bundle, img, sig, tree]);
    (paths, 3 + 1 + 2 + 2)
}

/// The receiver binary as root with `umask 077`, delivering under `out` (which it creates).
fn start_receiver(out: &Path, config: Option<&Path>, log: &Path) -> (ChildGuard, String) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 077 && exec \"$@\"", "sh"])
        .arg(binary("gapferry-recv"))
        .args(["listen", "--bind", &addr, "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let child = ChildGuard(cmd.spawn().expect("start gapferry-recv"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(
            Instant::now() < deadline,
            "receiver did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

/// Sends `paths` with the real sender, waits for `n` deliveries, stops the receiver.
fn deliver(out: &Path, config: Option<&Path>, paths: &[PathBuf], n: usize) {
    let log = out.with_extension("log");
    let (mut rx, addr) = start_receiver(out, config, &log);
    let sent = Command::new(binary("gapferry-send"))
        .arg("file")
        .args(paths)
        .args(["--to", &addr, "--rate", "400M", "--quiet"])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_records(out).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rx.terminate().success());
    let records = read_records(out);
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        n,
        "{records:#?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Every entry under `out` but the receiver's own state directory.
fn delivered_tree(out: &Path) -> Vec<PathBuf> {
    let mut all = vec![out.to_path_buf()];
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if d == out && e.file_name() == ".gapferry" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            all.push(e.path());
        }
    }
    all.sort();
    all
}

/// Runs `sh -c script` as the unprivileged reader, in the supplementary `groups` only.
fn as_reader(groups: &[u32], script: &str, args: &[&Path]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", READER, "--regid", READER]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.args(["--groups", &list.join(",")]);
    }
    cmd.args(["--", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .expect("run setpriv")
}

/// Lists every directory and reads every file (following symlinks) in `paths` as the
/// reader; returns the paths it could not read.
fn unreadable(groups: &[u32], paths: &[&Path]) -> Vec<String> {
    let script = r#"for p; do
  if [ -d "$p" ]; then ls -- "$p" >/dev/null 2>&1 || echo "$p"
  else cat -- "$p" >/dev/null 2>&1 || echo "$p"; fi
done
echo END"#;
    let out = as_reader(groups, script, paths);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.ends_with("END\n"),
        "the reader did not run: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| *l != "END")
        .map(str::to_string)
        .collect()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A world-traversable scratch directory (tempdir makes 0700 ones).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn another_uid_reads_every_delivery_of_every_kind_with_the_default_config() {
    if require(prerequisites()).is_none() {
        return;
    }
    let src = scratch();
    let (paths, n) = inputs(src.path());
    let base = scratch();
    let out = base.path().join("out");
    deliver(&out, None, &paths, n);

    let tree = delivered_tree(&out);
    let must = [
        "misp/manifest.json",
        "misp/hashes.csv",
        "stix/bundle--5d0092c5-5f74-4287-9642-33f4c354e56d.json",
        &format!("images/{STEM}/{STEM}.tar.gz"),
        &format!("images/{STEM}/{STEM}.tar.gz.sig"),
        &format!("images/{STEM}/SHA256SUMS"),
        "images/latest_MISP",
        "files/top.txt",
        "files/sub/deeper/low.bin",
    ];
    for m in must {
        assert!(tree.contains(&out.join(m)), "{m} missing from {tree:#?}");
    }
    let events = tree
        .iter()
        .filter(|p| p.parent() == Some(&out.join("misp")) && !p.ends_with("manifest.json"))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .count();
    assert_eq!(events, 3, "{tree:#?}");

    // Whatever the receiver's umask (077 here): files 0644, directories 0755.
    for p in &tree {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.is_dir() {
            assert_eq!(mode_of(p), 0o755, "{}", p.display());
        } else if meta.is_file() {
            assert_eq!(mode_of(p), 0o644, "{}", p.display());
        }
    }

    // Another uid, in no group of the receiver's: every directory listed, every file read,
    // also through the latest_ link as MISP-airgap's scripts use it.
    let latest = out.join("images/latest_MISP");
    let via_latest = [
        latest.join(format!("{STEM}.tar.gz")),
        latest.join(format!("{STEM}.tar.gz.sig")),
        latest.join("SHA256SUMS"),
    ];
    let mut all: Vec<&Path> = tree.iter().map(PathBuf::as_path).collect();
    all.extend(via_latest.iter().map(PathBuf::as_path));
    assert_eq!(unreadable(&[], &all), Vec::<String>::new());
    let image = as_reader(&[], r#"cat -- "$1""#, &[&via_latest[0]]);
    assert!(image.status.success());
    assert_eq!(
        image.stdout,
        std::fs::read(src.path().join(format!("{STEM}.tar.gz"))).unwrap(),
        "the reader gets the image's bytes through latest_MISP"
    );

    // The reader is really unprivileged: the receiver's private state (created under
    // umask 077) stays closed to it.
    let records = out.join(".gapferry/records.jsonl");
    assert!(records.is_file());
    assert_eq!(
        unreadable(&[], &[&records]),
        vec![records.display().to_string()]
    );
}

#[test]
fn a_group_and_modes_from_the_misp_section_keep_the_feed_to_that_group() {
    if require(prerequisites()).is_none() {
        return;
    }
    let src = scratch();
    let (paths, n) = inputs(src.path());
    let base = scratch();
    let config = base.path().join("recv.toml");
    std::fs::write(
        &config,
        format!("[permissions.misp]\ngroup = \"{FEED_GID}\"\nfile_mode = \"0640\"\ndir_mode = \"0750\"\n"),
    )
    .unwrap();
    let out = base.path().join("out");
    deliver(&out, Some(&config), &paths, n);

    let misp = out.join("misp");
    let feed: Vec<PathBuf> = std::iter::once(misp.clone())
        .chain(std::fs::read_dir(&misp).unwrap().map(|e| e.unwrap().path()))
        .collect();
    assert_eq!(feed.len(), 1 + 3 + 2, "{feed:#?}");
    for p in &feed {
        let meta = std::fs::metadata(p).unwrap();
        assert_eq!(meta.gid(), FEED_GID, "{}", p.display());
        let want = if meta.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode_of(p), want, "{}", p.display());
    }
    let feed_refs: Vec<&Path> = feed.iter().map(PathBuf::as_path).collect();
    // In the group: everything; outside it: nothing of the feed, the other kinds still.
    assert_eq!(unreadable(&[FEED_GID], &feed_refs), Vec::<String>::new());
    let refused = unreadable(&[], &feed_refs);
    assert_eq!(refused.len(), feed.len(), "{refused:#?}");
    let stix = out.join("stix");
    assert_eq!(mode_of(&stix), 0o755);
    assert_eq!(
        unreadable(&[], &[&stix, &out.join("files/top.txt")]),
        Vec::<String>::new()
    );
}

#[test]
fn a_bad_permissions_value_stops_the_receiver_at_start_with_the_key() {
    let base = tempfile::tempdir().unwrap();
    let out = base.path().join("out");
    for (toml, expect) in [
        ("[permissions]\nfile_mode = \"4755\"\n", "setuid"),
        (
            "[permissions.misp]\ngroup = \"no-such-group-gapferry\"\n",
            "no group named",
        ),
    ] {
        let config = base.path().join("recv.toml");
        std::fs::write(&config, toml).unwrap();
        let run = Command::new(binary("gapferry-recv"))
            .args(["listen", "--bind", "127.0.0.1:0", "--out"])
            .arg(&out)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{toml}: {err}");
        assert!(err.contains(expect), "{toml}: {err}");
        assert!(err.contains("[permissions"), "{toml}: {err}");
        assert!(
            !out.exists(),
            "nothing is created before the configuration is accepted"
        );
    }
}
