//! The raw UDP ceiling of this machine: iperf3 with 1472-byte datagrams and no rate limit
//! on loopback, measured in the same run as gapferry so both see the same machine load.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::Duration;

/// One iperf3 UDP measurement.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Payload bytes per second that reached the server.
    pub received_bps: f64,
    /// Payload bytes per second the client sent.
    pub sent_bps: f64,
    /// Datagrams the client sent.
    pub datagrams: u64,
    /// Percent of them the server never got.
    pub lost_percent: f64,
}

/// Whether an `iperf3` binary is on the PATH.
pub fn available() -> bool {
    Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `iperf3 -s -1` and a `-u -b 0 -l 1472 -t secs` client on 127.0.0.1:`port`.
///
/// With `window`, the client asks for that socket buffer (`-w`) on both ends: `-w` is a
/// client option (the server refuses it and exits), the client hands it to the server.
pub fn measure(port: u16, secs: u32, window: Option<&str>) -> Result<Ceiling> {
    let w: Vec<&str> = window.map(|w| vec!["-w", w]).unwrap_or_default();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    // The server may take a while to listen on a busy machine: the client retries a
    // refused connection for a few seconds (it fails at once, sending nothing).
    let mut attempt = 0;
    let out = loop {
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string()])
            .args(["-u", "-b", "0", "-l", "1472", "-t", &secs.to_string(), "-J"])
            .args(&w)
            .stderr(Stdio::null())
            .output()
            .context("running iperf3 -c")?;
        attempt += 1;
        if attempt < 15 && refused(&out.stdout) {
            continue;
        }
        break out;
    };
    let _ = server.kill();
    let _ = server.wait();
    if !out.status.success() {
        bail!(
            "iperf3 client failed: {}",
            error_of(&out.stdout).unwrap_or_else(|| String::from_utf8_lossy(&out.stdout).into())
        );
    }
    parse(&out.stdout)
}

/// The `error` iperf3 -J reports, if any.
fn error_of(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    v["error"].as_str().map(str::to_string)
}

fn refused(json: &[u8]) -> bool {
    error_of(json).is_some_and(|e| e.contains("unable to connect"))
}

fn parse(json: &[u8]) -> Result<Ceiling> {
    let v: serde_json::Value = serde_json::from_slice(json).context("iperf3 -J output")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let num = |x: &serde_json::Value| x.as_f64().context("iperf3 field missing");
    let received = &end["sum_received"];
    let sent = &end["sum_sent"];
    let secs = num(&received["seconds"])?.max(1e-9);
    Ok(Ceiling {
        received_bps: num(&received["bytes"])? / secs,
        sent_bps: num(&sent["bytes"])? / num(&sent["seconds"])?.max(1e-9),
        datagrams: num(&sent["packets"])? as u64,
        lost_percent: num(&received["lost_percent"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_client_summary() {
        let j = br#"{"end":{"sum_sent":{"seconds":5.0,"bytes":2000,"packets":10},
            "sum_received":{"seconds":4.0,"bytes":1000,"lost_percent":50.0}}}"#;
        let c = parse(j).unwrap();
        assert_eq!(c.received_bps, 250.0);
        assert_eq!(c.sent_bps, 400.0);
        assert_eq!(c.datagrams, 10);
        assert_eq!(c.lost_percent, 50.0);
    }

    #[test]
    fn a_refused_client_is_retried_and_its_error_reported() {
        let j = br#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#;
        assert!(refused(j));
        let e = parse(j).unwrap_err().to_string();
        assert_eq!(e, "iperf3: unable to connect to server: Connection refused");
        assert!(!refused(br#"{"end":{},"error":"interrupt"}"#));
        assert!(!refused(b"not json"));
    }
}
