//! Running a real receiver and sender in-process (or the real binaries) on loopback, and
//! checking what landed.

use gapferry_receiver::pipeline::{ListenReport, Listener};
use gapferry_receiver::records::{RECORDS_FILE, STATE_DIR};
use gapferry_receiver::ReceiverConfig;
use gapferry_sender::progress::Progress;
use gapferry_sender::sink::UdpSink;
use gapferry_sender::transfer::SendReport;
use gapferry_sender::{source, SenderConfig, SenderSession};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A receiver listening on an ephemeral loopback port, delivering into a temporary directory.
pub struct TestReceiver {
    /// Where to send.
    pub addr: SocketAddr,
    /// The delivery root.
    pub out: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<ListenReport>>>,
}

impl TestReceiver {
    /// Starts a receiver with test-friendly timeouts, adjusted by `configure`.
    pub fn start(configure: impl FnOnce(&mut ReceiverConfig)) -> TestReceiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let mut r = Self::start_in(&out, configure);
        r._dir = Some(dir);
        r
    }

    /// Starts a receiver delivering under `out` (kept after the test).
    pub fn start_in(out: &Path, configure: impl FnOnce(&mut ReceiverConfig)) -> TestReceiver {
        let mut cfg = ReceiverConfig::new(out.to_path_buf());
        cfg.limits.grace = Duration::from_millis(500);
        cfg.limits.session_timeout = Duration::from_secs(5);
        configure(&mut cfg);
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), cfg).expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let thread = std::thread::spawn(move || listener.run(flag));
        TestReceiver {
            addr,
            out: out.to_path_buf(),
            _dir: None,
            shutdown,
            thread: Some(thread),
        }
    }

    /// The `files/` delivery directory.
    pub fn files_dir(&self) -> PathBuf {
        self.out.join("files")
    }

    /// The records written so far.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.out)
    }

    /// Waits until at least `n` records exist or `timeout` passes; returns them.
    pub fn wait_records(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.records();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the receiver and returns its report.
    pub fn stop(mut self) -> ListenReport {
        self.shutdown.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("receiver thread")
            .expect("receiver ran")
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads `<out>/.gapferry/records.jsonl`.
pub fn read_records(out: &Path) -> Vec<Value> {
    let path = out.join(STATE_DIR).join(RECORDS_FILE);
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    // The receiver may be appending right now: a last line without its newline is not
    // written yet. Every complete line must be JSON.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("every record line is JSON"))
        .collect()
}

/// Records with `"outcome": outcome`.
pub fn with_outcome<'a>(records: &'a [Value], outcome: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["outcome"] == outcome).collect()
}

/// A sender configuration for loopback tests.
pub fn sender_config(rate_bps: u64) -> SenderConfig {
    SenderConfig {
        rate_bps,
        ..SenderConfig::default()
    }
}

/// Sends `paths` to `to` in-process and ends the session.
pub fn send(paths: &[PathBuf], to: SocketAddr, cfg: SenderConfig) -> Vec<SendReport> {
    let files = source::collect(paths, source::KindMode::Auto).expect("inputs readable");
    let sink = UdpSink::connect(to, None).expect("sender socket");
    let mut session = SenderSession::new(cfg, Box::new(sink)).expect("session");
    let reports = session
        .send_files(&files, &Progress::hidden())
        .expect("send");
    session.finish().expect("finish");
    reports
}

/// Asserts that every file under `expected` exists under `actual` with identical bytes,
/// and that `actual` holds nothing else.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let list = |root: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walk(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect();
        v.sort();
        v
    };
    let (e, a) = (list(expected), list(actual));
    assert_eq!(e, a, "the delivered tree differs from the sent one");
    for rel in e {
        let x = std::fs::read(expected.join(&rel)).unwrap();
        let y = std::fs::read(actual.join(&rel)).unwrap();
        assert!(
            x == y,
            "{} differs ({} vs {} bytes)",
            rel.display(),
            x.len(),
            y.len()
        );
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Path of a workspace binary (`gapferry-send`, `gapferry-recv`), built up to date once
/// per test process so a test never drives a stale binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "gapferry-sender",
            "-p",
            "gapferry-receiver",
            "--bins",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// Runs the real `gapferry-send file PATHS --to TO --quiet EXTRA...` and asserts it
/// succeeded (its stderr is the failure message); returns its output.
pub fn send_with_binary<P: AsRef<std::ffi::OsStr>>(
    paths: &[P],
    to: impl std::fmt::Display,
    extra: &[&str],
) -> std::process::Output {
    let out = std::process::Command::new(binary("gapferry-send"))
        .arg("file")
        .args(paths)
        .args(["--to", &to.to_string(), "--quiet"])
        .args(extra)
        .output()
        .expect("gapferry-send runs");
    assert!(
        out.status.success(),
        "gapferry-send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Spawns `cmd` (the real `gapferry-recv listen ...`, set up by the caller) with its stderr
/// into `log` and waits until it logs that it listens; panics with the log if it exits
/// first or takes more than 30 s.
pub fn spawn_listening(mut cmd: std::process::Command, log: &Path) -> ChildGuard {
    let stderr = std::fs::File::create(log).expect("create the receiver's log");
    let mut child = ChildGuard(
        cmd.stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("gapferry-recv starts"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    while !text().contains("listening") {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the receiver exited ({status}): {}", text());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver never listened: {}",
            text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Runs the real `gapferry-recv listen --config CONFIG`, which must refuse to start, and
/// returns what it said on stderr.
pub fn refused_at_start(config: &Path) -> String {
    let out = std::process::Command::new(binary("gapferry-recv"))
        .args(["listen", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("gapferry-recv runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started anyway: {stderr}");
    stderr
}

/// Writes a new link key to `path` with the real `gapferry-send keygen`.
pub fn keygen(path: &Path) {
    let st = std::process::Command::new(binary("gapferry-send"))
        .arg("keygen")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("gapferry-send runs");
    assert!(st.success(), "gapferry-send keygen failed");
}

/// Peak resident set of process `pid` so far, bytes (`VmHWM` of /proc/<pid>/status);
/// `None` once the process is gone.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    Some(kb << 10)
}

/// A port on 127.0.0.1 free a moment ago (UDP or TCP), for a server the test starts.
pub fn free_port(udp: bool) -> u16 {
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        s.local_addr().expect("bound").port()
    } else {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
        l.local_addr().expect("bound").port()
    }
}

/// A child process killed when the test ends, even by a panic, so no orphan holds ports or pipes.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        self.0.wait().expect("wait for child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `s` without terminal colour codes (the binaries colour their logs on a terminal only,
/// but a test must read either).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

/// The number after the last `key=` in a log text (e.g. `datagrams` in the stop line).
pub fn log_number(log: &str, key: &str) -> Option<u64> {
    let pat = format!("{key}=");
    let at = log.rfind(&pat)? + pat.len();
    log[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// The Prometheus text a `--metrics` endpoint serves at `addr`, or `None` when it does not
/// answer.
pub fn scrape_metrics(addr: SocketAddr) -> Option<String> {
    http_get(addr, "/metrics")
}

/// The whole HTTP/1.0 response (status line, headers, body) to `GET path` at `addr`, or
/// `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the sample line starting with `name` (labels included), if present.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
