//! What the binaries write to their logs when stderr is a file or a pipe (a service's
//! journal, `recv.log`): no terminal colour codes, and `--quiet` keeps warnings only.

use gapferry_tests::harness::binary;
use std::process::Command;

fn send_to_capture(extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.txt");
    std::fs::write(&input, b"hello through the diode\n").unwrap();
    let pcap = dir.path().join("out.pcap");
    let out = Command::new(binary("gapferry-send"))
        .arg("file")
        .arg(&input)
        .args(["--to", "127.0.0.1:9", "--pcap-out"])
        .arg(&pcap)
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("GAPFERRY_LOG")
        .output()
        .unwrap();
    assert!(
        pcap.metadata().map(|m| m.len() > 0).unwrap_or(false),
        "nothing was written to the capture"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn log_lines_into_a_pipe_carry_no_colour_codes() {
    let (ok, log) = send_to_capture(&[]);
    assert!(ok, "{log}");
    assert!(log.contains("INFO"), "info lines expected: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
}

#[test]
fn quiet_keeps_warnings_and_errors_only() {
    let (ok, log) = send_to_capture(&["--quiet"]);
    assert!(ok, "{log}");
    assert!(
        !log.contains("INFO"),
        "--quiet still logged info lines: {log}"
    );
}
