//! Capture and replay: `--pcap-out` captures and real tcpdump captures replay into
//! byte-identical deliveries; losses within the repair budget are survived, beyond it
//! recorded; odd framings, truncated and garbage files are handled.

use gapferry_pcap::{CaptureReader, CaptureWriter, VlanTags, WriterOptions};
use gapferry_tests::fixtures::{json_file, random_file};
use gapferry_tests::harness::{assert_same_tree, binary, read_records, with_outcome, TestReceiver};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sample_tree(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    json_file(&dir.join("event.json"), 12_000, 1);
    random_file(&dir.join("blob.bin"), 6 << 20, 2);
    json_file(&dir.join("sub/bundle.json"), 400_000, 3);
}

/// Runs the sender binary with `--pcap-out`.
fn sender_capture(src: &Path, pcap: &Path, to: &str, extra: &[&str]) {
    let mut args = vec![
        "file",
        src.to_str().unwrap(),
        "--to",
        to,
        "--pcap-out",
        pcap.to_str().unwrap(),
        "--rate",
        "1G",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let st = Command::new(binary("gapferry-send"))
        .args(&args)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

fn replay(pcaps: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.arg("replay");
    for p in pcaps {
        cmd.arg(p);
    }
    cmd.args(["--out", out.to_str().unwrap()]).args(extra);
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies a capture, keeping datagram `i` only when `keep(i)`; `fragment` splits every
/// kept datagram into IP fragments; `options` and addresses pick the framing.
fn rewrite(
    from: &Path,
    to: &Path,
    src: SocketAddr,
    dst: SocketAddr,
    options: WriterOptions,
    fragment: bool,
    mut keep: impl FnMut(u64, &[u8]) -> bool,
) -> (u64, u64) {
    let mut r = CaptureReader::open(from).unwrap();
    let file = std::io::BufWriter::new(std::fs::File::create(to).unwrap());
    let mut w = CaptureWriter::with_options(file, src, dst, options).unwrap();
    let (mut i, mut dropped) = (0u64, 0u64);
    while let Some(d) = r.next_datagram().unwrap() {
        // A live capture on the sending host holds GSO batches: thin datagram by datagram,
        // not frame by frame, or one dropped frame is a burst of up to 64 datagrams.
        for part in gapferry_common::wire::split_coalesced(&d.payload) {
            if keep(i, part) {
                if fragment {
                    w.write_fragmented(d.timestamp, part, 512).unwrap();
                } else {
                    w.write_datagram(d.timestamp, part).unwrap();
                }
            } else {
                dropped += 1;
            }
            i += 1;
        }
    }
    w.flush().unwrap();
    (i, dropped)
}

fn v4() -> (SocketAddr, SocketAddr) {
    (
        "10.0.0.1:40000".parse().unwrap(),
        "10.0.0.2:7000".parse().unwrap(),
    )
}

#[test]
fn sender_capture_replays_byte_identical_even_with_drops_within_the_repair_budget() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let pcap = dir.path().join("send.pcap");
    sender_capture(&src, &pcap, "10.0.0.2:7000", &["--repair", "15"]);

    let out = dir.path().join("plain");
    let o = replay(&[&pcap], &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("4 delivered, 0 failed, 0 lost"),
        "{}",
        text(&o)
    );
    assert_same_tree(&src, &out.join("files"));

    // 5 % dropped at random, and separately a burst of 300 in the middle of the big object.
    let (s, d) = v4();
    let mut rng = StdRng::seed_from_u64(5);
    let random = dir.path().join("random.pcap");
    let (n, dropped) = rewrite(
        &pcap,
        &random,
        s,
        d,
        WriterOptions::default(),
        false,
        |_, _| rng.random::<f64>() >= 0.05,
    );
    assert!(dropped > n / 40, "{dropped} of {n}");
    let burst = dir.path().join("burst.pcap");
    rewrite(
        &pcap,
        &burst,
        s,
        d,
        WriterOptions::default(),
        false,
        |i, _| !(1_500..1_800).contains(&i),
    );
    for (name, cap) in [("random", &random), ("burst", &burst)] {
        let out = dir.path().join(format!("out-{name}"));
        let o = replay(&[cap], &out, &[]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert_same_tree(&src, &out.join("files"));
    }
}

#[test]
fn drops_beyond_the_budget_fail_the_object_with_a_record_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src.join("a.bin"), 3 << 20, 1);
    random_file(&src.join("b.bin"), 1 << 20, 2);
    let pcap = dir.path().join("send.pcap");
    sender_capture(&src, &pcap, "10.0.0.2:7000", &[]);
    let (s, d) = v4();
    let lossy = dir.path().join("lossy.pcap");
    let keys = gapferry_common::KeyRing::default();
    let mut n = 0u64;
    rewrite(
        &pcap,
        &lossy,
        s,
        d,
        WriterOptions::default(),
        false,
        |_, p| match gapferry_common::wire::parse(p, &keys) {
            Ok(gapferry_common::Datagram::Data { header, .. }) if header.object == 0 => {
                n += 1;
                !n.is_multiple_of(3)
            }
            _ => true,
        },
    );
    let out = dir.path().join("out");
    let o = replay(&[&lossy], &out, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 delivered, 1 failed"), "{}", text(&o));
    let records = read_records(&out);
    let failed = with_outcome(&records, "failed");
    assert_eq!(failed[0]["name"], "a.bin");
    assert!(failed[0]["reason"]
        .as_str()
        .unwrap()
        .contains("blocks decoded"));
    assert!(!out.join("files/a.bin").exists());
    assert_eq!(
        std::fs::read(out.join("files/b.bin")).unwrap(),
        std::fs::read(src.join("b.bin")).unwrap()
    );
}

#[test]
fn vlan_tags_ipv6_and_ip_fragments_replay() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let pcap = dir.path().join("send.pcap");
    sender_capture(&src, &pcap, "10.0.0.2:7000", &[]);
    let (s4, d4) = v4();
    let (s6, d6): (SocketAddr, SocketAddr) = (
        "[fd00::1]:40000".parse().unwrap(),
        "[fd00::2]:7000".parse().unwrap(),
    );
    let vlan = WriterOptions {
        vlan: VlanTags::Single(42),
        ..WriterOptions::default()
    };
    let cases = [
        ("vlan", s4, d4, vlan, false),
        ("ipv6", s6, d6, WriterOptions::default(), false),
        ("frag4", s4, d4, WriterOptions::default(), true),
        ("frag6-vlan", s6, d6, vlan, true),
    ];
    for (name, s, d, opts, frag) in cases {
        let cap = dir.path().join(format!("{name}.pcap"));
        rewrite(&pcap, &cap, s, d, opts, frag, |_, _| true);
        let out = dir.path().join(format!("out-{name}"));
        let o = replay(&[&cap], &out, &["--port", "7000"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert_same_tree(&src, &out.join("files"));
    }
    // --port picks the stream: nothing is ours on another port.
    let out = dir.path().join("other-port");
    let o = replay(&[&pcap], &out, &["--port", "7001"]);
    assert!(text(&o).contains("0 delivered"), "{}", text(&o));
}

#[test]
fn truncated_and_garbage_captures_give_clear_errors_and_no_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    random_file(&src.join("a-first.bin"), 1 << 20, 1);
    random_file(&src.join("b-second.bin"), 4 << 20, 2);
    let pcap = dir.path().join("send.pcap");
    sender_capture(&src, &pcap, "10.0.0.2:7000", &[]);
    let bytes = std::fs::read(&pcap).unwrap();
    // Cut in the middle of a record well inside the second object.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let out = dir.path().join("out");
    let o = replay(&[&cut], &out, &[]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("truncated") && t.contains("offset"),
        "the error says where: {t}"
    );
    assert_eq!(
        std::fs::read(out.join("files/a-first.bin")).unwrap(),
        std::fs::read(src.join("a-first.bin")).unwrap()
    );
    assert!(!out.join("files/b-second.bin").exists());
    assert_eq!(
        std::fs::read_dir(out.join(".gapferry/staging"))
            .unwrap()
            .count(),
        0
    );

    let garbage = dir.path().join("garbage.pcap");
    let mut rng = StdRng::seed_from_u64(1);
    std::fs::write(
        &garbage,
        (0..100_000).map(|_| rng.random::<u8>()).collect::<Vec<_>>(),
    )
    .unwrap();
    for bad in [garbage.as_path(), Path::new("/nonexistent.pcap")] {
        let out = dir.path().join("out-bad");
        let o = replay(&[bad], &out, &[]);
        let t = text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(t.contains(bad.to_str().unwrap()), "{t}");
        assert!(!t.contains("panicked"), "{t}");
    }
}

/// Whether `tool` exists; under CI a missing tool fails the test, elsewhere it skips.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{tool} is missing: .ci/run installs it (apt-get install tcpdump tshark)"
        );
        eprintln!("skipping: {tool} is not installed (apt-get install tcpdump tshark)");
    }
    found
}

fn is_root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if !root {
        assert!(
            std::env::var("CI").is_err(),
            "capturing needs root; CI runs as root"
        );
        eprintln!("skipping: capturing with tcpdump needs root");
    }
    root
}

fn tcpdump_capture(iface: &str, port: u16, file: &Path, src: &Path) -> (PathBuf, String) {
    let log = file.with_extension("log");
    let mut dump = Command::new("tcpdump")
        .args([
            "-i",
            iface,
            "-B",
            "65536",
            "-U",
            "-w",
            file.to_str().unwrap(),
            "udp",
            "port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until tcpdump has written its file header, then a little more for the filter.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(file).map_or(true, |m| m.len() == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let st = Command::new(binary("gapferry-send"))
        .args([
            "file",
            src.to_str().unwrap(),
            "--to",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "50M",
            "--repair",
            "10",
            "--quiet",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &dump.id().to_string()])
        .status()
        .unwrap();
    dump.wait().unwrap();
    (
        file.to_path_buf(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn live_tcpdump_captures_on_lo_and_any_and_their_pcapng_replay_byte_identical() {
    if !(have("tcpdump") && have("editcap") && is_root()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    for iface in ["lo", "any"] {
        let rx = TestReceiver::start(|_| {});
        let port = rx.addr.port();
        let (pcap, dump_log) =
            tcpdump_capture(iface, port, &dir.path().join(format!("{iface}.pcap")), &src);
        let records = rx.wait_records(4, Duration::from_secs(20));
        assert_eq!(
            with_outcome(&records, "delivered").len(),
            4,
            "live transfer on {iface}"
        );
        drop(rx);
        let pcapng = dir.path().join(format!("{iface}.pcapng"));
        let st = Command::new("editcap")
            .args([
                "-F",
                "pcapng",
                pcap.to_str().unwrap(),
                pcapng.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        for cap in [&pcap, &pcapng] {
            let out = dir.path().join(format!(
                "out-{}",
                cap.file_name().unwrap().to_str().unwrap()
            ));
            let o = replay(&[cap], &out, &["--port", &port.to_string()]);
            assert!(o.status.success(), "{}: {}", cap.display(), text(&o));
            assert!(
                text(&o).contains("4 delivered"),
                "{}: {}\ntcpdump: {dump_log}",
                cap.display(),
                text(&o)
            );
            assert_same_tree(&src, &out.join("files"));
        }
        // Datagrams removed within the repair budget: every 25th, counted after a GSO
        // batch in the capture is split into the datagrams the wire carried.
        let (s, d) = v4();
        let thinned = dir.path().join(format!("{iface}-thinned.pcap"));
        let (n, dropped) = rewrite(
            &pcap,
            &thinned,
            s,
            d,
            WriterOptions::default(),
            false,
            |i, _| i % 25 != 7,
        );
        assert!(
            n > 4000 && dropped == n / 25 + u64::from(n % 25 > 7),
            "{n} {dropped}"
        );
        let out = dir.path().join(format!("out-{iface}-thinned"));
        let o = replay(&[&thinned], &out, &[]);
        assert!(o.status.success(), "{}", text(&o));
        assert_same_tree(&src, &out.join("files"));
    }
}
