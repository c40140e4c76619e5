//! The hardened systemd units (packaging/*.service):
//!
//! - `systemd-analyze security --offline=true` rates each at an exposure of at most 2.0;
//! - the receiver's unit still lets it work: its `ReadWritePaths=` covers `out` and every
//!   `[dirs]` of the packaged configuration, the packaged port needs no capability, its
//!   `IPAddressAllow=` takes loopback and the private ranges a diode link uses;
//! - the system call filter does not refuse anything the receiver and a shell hook do:
//!   the real receiver runs under `strace -f`, delivers a file and runs its hook, and every
//!   system call it made is in the set the unit's `SystemCallFilter=` lines allow (as
//!   `systemd-analyze syscall-filter` expands them); the same for the sender sending a file.
//!
//! Prerequisites: systemd-analyze (package systemd) and strace. Without them a test prints
//! `skipping: <reason>`; under `CI=true` it fails instead.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{
    binary, read_records, send, sender_config, with_outcome, ChildGuard,
};
use gapferry_tests::prereq::ci;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Highest exposure `systemd-analyze security` may give a unit.
const MAX_EXPOSURE: f64 = 2.0;

/// True when `tool` runs; otherwise skips (or fails under CI) with the reason.
fn require(tool: &str, arg: &str) -> bool {
    let works = Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        let reason = format!("{tool} is not installed (apt-get install it)");
        assert!(!ci(), "units test cannot run under CI=true: {reason}");
        println!("skipping: {reason}");
    }
    works
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// Every value of `key=` in the unit's text, in order.
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

#[test]
fn both_units_expose_at_most_2_0_in_systemd_analyze_security() {
    if !require("systemd-analyze", "--version") {
        return;
    }
    for name in ["gapferry-recv.service", "gapferry-send.service"] {
        let unit = packaging().join(name);
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| {
                panic!(
                    "no overall exposure for {name}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
        assert!(
            score <= MAX_EXPOSURE,
            "{name}: exposure {score} above {MAX_EXPOSURE}:\n{text}"
        );
    }
}

#[test]
fn the_receiver_unit_lets_it_write_its_directories_bind_and_receive() {
    let unit = std::fs::read_to_string(packaging().join("gapferry-recv.service")).unwrap();
    let config: packaged_config::Config =
        packaged_config::load(&packaging().join("gapferry-recv.toml"));
    let writable: Vec<PathBuf> = values(&unit, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(PathBuf::from).collect::<Vec<_>>())
        .collect();
    for dir in std::iter::once(&config.out).chain(config.dirs.iter()) {
        assert!(
            writable.iter().any(|w| dir.starts_with(w)),
            "{} is not under ReadWritePaths={writable:?}",
            dir.display()
        );
    }
    // No capability, so the port must not be a privileged one.
    assert_eq!(values(&unit, "CapabilityBoundingSet"), [""]);
    assert!(
        config.port >= 1024,
        "port {} needs CAP_NET_BIND_SERVICE",
        config.port
    );
    // Datagrams come from the diode's low side: loopback and the private ranges pass.
    assert_eq!(values(&unit, "IPAddressDeny"), ["any"]);
    let allow: BTreeSet<String> = values(&unit, "IPAddressAllow")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for needed in ["localhost", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        assert!(
            allow.contains(needed),
            "IPAddressAllow lacks {needed}: {allow:?}"
        );
    }
    // Hooks need exec: nothing may take it away.
    for key in ["NoExecPaths", "ExecPaths"] {
        assert!(values(&unit, key).is_empty(), "{key} would stop hooks");
    }
    // Room for the held blocks the packaged limits allow, plus the socket buffer.
    let max = values(&unit, "MemoryMax");
    let max = max[0].strip_suffix('G').expect("MemoryMax in G");
    let max: u64 = max.parse::<u64>().unwrap() << 30;
    assert!(max > config.max_held_bytes + config.recv_buffer);
    let tasks: u64 = values(&unit, "TasksMax")[0].parse().unwrap();
    assert!(
        tasks >= 64,
        "TasksMax={tasks} leaves no room for solver and hook threads"
    );
}

/// What the units test reads from the packaged receiver configuration.
mod packaged_config {
    use std::path::{Path, PathBuf};

    pub struct Config {
        pub out: PathBuf,
        pub dirs: Vec<PathBuf>,
        pub port: u16,
        pub max_held_bytes: u64,
        pub recv_buffer: u64,
    }

    pub fn load(path: &Path) -> Config {
        let c = gapferry_receiver::config::FileConfig::load(path).unwrap();
        let out = c.out.clone().expect("out");
        let d = c
            .destinations(&out)
            .expect("the packaged configuration has valid [permissions]");
        let port = c
            .bind
            .as_deref()
            .and_then(|b| b.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("bind HOST:PORT");
        Config {
            dirs: vec![d.misp, d.stix, d.images, d.files],
            out,
            port,
            max_held_bytes: c.limits.max_held_bytes.expect("max_held_bytes") as u64,
            recv_buffer: c.recv_buffer.expect("recv_buffer") as u64,
        }
    }
}

/// The system calls in `spec` (names and `@groups`), groups expanded by systemd-analyze.
fn expand(spec: &str, out: &mut BTreeSet<String>) {
    for item in spec.split_whitespace() {
        if let Some(group) = item.strip_prefix('@') {
            let listed = Command::new("systemd-analyze")
                .args(["syscall-filter", "--no-pager", &format!("@{group}")])
                .output()
                .unwrap();
            assert!(listed.status.success(), "unknown group @{group}");
            let text = String::from_utf8(listed.stdout).unwrap();
            for line in text.lines().skip(1) {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                expand(line, out);
            }
        } else {
            out.insert(item.to_string());
        }
    }
}

/// The system calls the unit's SystemCallFilter= lines allow: the allow-lists joined, then
/// the deny-lists (`~`) taken out.
fn allowed_by(unit: &str) -> BTreeSet<String> {
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    for v in values(unit, "SystemCallFilter") {
        match v.strip_prefix('~') {
            Some(d) => expand(d, &mut deny),
            None => expand(&v, &mut allow),
        }
    }
    assert!(
        !allow.is_empty(),
        "the unit has no SystemCallFilter allow-list"
    );
    allow.retain(|s| !deny.contains(s));
    allow
}

/// The system call names in an `strace -f` output.
fn traced(trace: &str) -> BTreeSet<String> {
    trace
        .lines()
        .filter_map(|l| {
            // "PID  name(args) = ret"; "<... name resumed>" lines repeat a call already seen.
            let rest = l.split_once(' ')?.1.trim_start();
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && rest[name.len()..].starts_with('(')).then_some(name)
        })
        .collect()
}

#[test]
fn the_receiver_and_its_hook_make_only_system_calls_the_unit_allows() {
    if !require("systemd-analyze", "--version") || !require("strace", "-V") {
        return;
    }
    let unit = std::fs::read_to_string(packaging().join("gapferry-recv.service")).unwrap();
    let allowed = allowed_by(&unit);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let copy = dir.path().join("copied.bin");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("recv.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{port}\"\nout = {}\nsession_timeout = 5\n[hooks]\nfile = [\"sh\", \"-c\", {}]\n",
            serde_json::to_string(out.to_str().unwrap()).unwrap(),
            serde_json::to_string(&format!("cp -- \"$GAPFERRY_PATH\" '{}'", copy.display())).unwrap(),
        ),
    )
    .unwrap();
    let trace = dir.path().join("trace");
    let log = dir.path().join("recv.log");
    let mut strace = ChildGuard(
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .arg(binary("gapferry-recv"))
            .args(["listen", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(
            strace.0.try_wait().unwrap().is_none(),
            "the receiver exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the receiver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("a.bin");
    random_file(&file, 300_000, 5);
    send(
        std::slice::from_ref(&file),
        format!("127.0.0.1:{port}").parse().unwrap(),
        sender_config(100_000_000),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = read_records(&out);
        if !with_outcome(&r, "hook_ok").is_empty() || !with_outcome(&r, "hook_failed").is_empty() {
            assert_eq!(with_outcome(&r, "hook_ok").len(), 1, "{r:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "no hook outcome: {r:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&file).unwrap());
    // Stop the receiver itself (strace's child) so its shutdown is traced too.
    let receiver = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.0.id()))
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_string));
    match receiver {
        Some(pid) => {
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            let status = strace.0.wait().unwrap();
            assert!(status.success(), "receiver under strace: {status}");
        }
        None => {
            strace.terminate();
        }
    }
    let used = traced(&std::fs::read_to_string(&trace).unwrap());
    assert!(
        used.contains("recvmmsg") || used.contains("recvmsg") || used.contains("recvfrom"),
        "the trace holds no receive call: {used:?}"
    );
    assert!(used.contains("execve"), "the hook did not run: {used:?}");
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter would refuse {refused:?} (used: {used:?})"
    );
}

#[test]
fn the_sender_makes_only_system_calls_its_unit_allows() {
    if !require("systemd-analyze", "--version") || !require("strace", "-V") {
        return;
    }
    let unit = std::fs::read_to_string(packaging().join("gapferry-send.service")).unwrap();
    let allowed = allowed_by(&unit);
    let dir = tempfile::tempdir().unwrap();
    // Nothing reads this socket: the sender only sends, as through the diode.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap().to_string();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(outbox.join("files")).unwrap();
    random_file(&outbox.join("files/a.bin"), 300_000, 6);
    let trace = dir.path().join("trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(binary("gapferry-send"))
        .arg("file")
        .arg(outbox.join("files/a.bin"))
        // A MISP event too: its feed form waits in an unnamed temporary file.
        .arg(
            gapferry_tests::realdata::realdata()
                .join("misp-feed/infoblox/0472809b-1582-4dde-88a9-d82848e9e660.json"),
        )
        .args(["--to", &to, "--rate", "100M", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used = traced(&std::fs::read_to_string(&trace).unwrap());
    assert!(
        used.contains("sendmmsg") || used.contains("sendmsg") || used.contains("sendto"),
        "the trace holds no send call: {used:?}"
    );
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter would refuse {refused:?} (used: {used:?})"
    );
}
