//! Post-delivery hooks against the real `gapferry-recv` binary: a hook that would paste a
//! sender's file name into command text is refused at start; hooks run on a bounded pool
//! (500 deliveries with a slow hook never run more hooks at once than the pool has
//! workers, and every delivery gets its hook outcome recorded); hostile names reach a hook
//! only as data; a hook that cannot start, fails, overruns its timeout, or finds the queue
//! full is recorded `hook_failed` with the reason; an overrunning hook is killed with
//! what it started, and what a hook leaves running is killed when it exits. A receiver
//! without a key warns at start.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::free_port;
use gapferry_tests::harness::refused_at_start;
use gapferry_tests::harness::spawn_listening;
use gapferry_tests::harness::{
    binary, read_records, send, sender_config, with_outcome, ChildGuard,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A receiver binary started with a configuration file.
struct Receiver {
    child: ChildGuard,
    out: PathBuf,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// TOML for a string list.
fn toml_list(args: &[&str]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// Starts `gapferry-recv listen --config` with `hooks` (the `[hooks]` table's lines), its
/// working directory `cwd`, and waits until it listens.
fn start(hooks: &str, cwd: &Path) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let port = free_port(true);
    let config = dir.path().join("recv.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{port}\"\nout = {}\nsession_timeout = 5\n[hooks]\n{hooks}\n",
            serde_json::to_string(out.to_str().unwrap()).unwrap()
        ),
    )
    .unwrap();
    let log = dir.path().join("recv.log");
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.args(["listen", "--config"])
        .arg(&config)
        .current_dir(cwd);
    let child = spawn_listening(cmd, &log);
    Receiver {
        child,
        out,
        port,
        log,
        _dir: dir,
    }
}

impl Receiver {
    fn send(&self, files: &[PathBuf]) {
        let to = format!("127.0.0.1:{}", self.port).parse().unwrap();
        send(files, to, sender_config(200_000_000));
    }

    /// Waits until `done` holds for the records, or panics with them after `timeout`.
    fn wait(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = read_records(&self.out);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting; records: {r:#?}\nlog: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn hook_outcomes(records: &[Value]) -> usize {
    with_outcome(records, "hook_ok").len() + with_outcome(records, "hook_failed").len()
}

#[test]
fn a_hook_embedding_the_path_in_a_larger_argument_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("recv.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{}\"\nout = {}\n[hooks]\nfile = {}\n",
            free_port(true),
            serde_json::to_string(dir.path().join("out").to_str().unwrap()).unwrap(),
            toml_list(&["sh", "-c", "cp {path} /x"])
        ),
    )
    .unwrap();
    let stderr = refused_at_start(&config);
    assert!(
        stderr.contains("cp {path} /x"),
        "names the argument: {stderr}"
    );
    assert!(
        stderr.contains("argument of its own") && stderr.contains("GAPFERRY_PATH"),
        "says what to write instead: {stderr}"
    );
    assert!(
        stderr.contains(r#"cp \"$GAPFERRY_PATH\" /x"#),
        "gives the rewritten command: {stderr}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "refused before anything was created"
    );
}

#[test]
fn overlapping_dirs_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = dir.path().join("recv.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{}\"\nout = {}\n[dirs]\nstix = {}\n",
            free_port(true),
            serde_json::to_string(out.to_str().unwrap()).unwrap(),
            serde_json::to_string(out.join("misp").to_str().unwrap()).unwrap(),
        ),
    )
    .unwrap();
    let stderr = refused_at_start(&config);
    assert!(
        stderr.contains("[dirs] stix") && stderr.contains("same directory as [dirs] misp"),
        "{stderr}"
    );
}

#[test]
fn five_hundred_deliveries_with_a_slow_hook_run_on_a_bounded_pool_and_names_stay_data() {
    const FILES: usize = 500;
    const WORKERS: usize = 8;
    let cwd = tempfile::tempdir().unwrap();
    let marks = cwd.path().join("marks.log");
    let paths = cwd.path().join("paths.log");
    // `{path}` reaches the script only as its own argument ($1), and as GAPFERRY_PATH.
    let script = format!(
        "echo start >> '{m}'; printf '%s\\n' \"$1\" >> '{p}'; \
         [ \"$1\" = \"$GAPFERRY_PATH\" ] && [ \"$GAPFERRY_KIND\" = file ] && [ ${{#GAPFERRY_BLAKE3}} -eq 64 ] || echo env-mismatch >> '{m}'; \
         sleep 0.2; echo end >> '{m}'",
        m = marks.display(),
        p = paths.display()
    );
    let rx = start(
        &format!(
            "file = {}\nworkers = {WORKERS}\nqueue = 1000\ntimeout = 60",
            toml_list(&["sh", "-c", &script, "hook", "{path}"])
        ),
        cwd.path(),
    );
    let src = tempfile::tempdir().unwrap();
    // Names a shell would run, were they pasted into command text.
    let hostile = [
        "x$(touch PWNED1)",
        "y`touch PWNED2`",
        "z;touch PWNED3",
        "w' ; touch PWNED4 ; '",
        "v\"$(touch PWNED5)\"",
    ];
    let mut files = Vec::new();
    for i in 0..FILES {
        let name = match hostile.get(i) {
            Some(h) => h.to_string(),
            None => format!("f{i:03}.bin"),
        };
        let p = src.path().join(&name);
        random_file(&p, 64, i as u64);
        files.push(p);
    }
    rx.send(&[src.path().to_path_buf()]);
    let records = rx.wait(Duration::from_secs(240), |r| {
        with_outcome(r, "delivered").len() + with_outcome(r, "failed").len() >= FILES
            && hook_outcomes(r) >= with_outcome(r, "delivered").len()
    });
    let delivered = with_outcome(&records, "delivered");
    assert_eq!(delivered.len(), FILES, "{records:#?}");
    let ok = with_outcome(&records, "hook_ok");
    assert_eq!(
        ok.len(),
        FILES,
        "every delivery has its hook outcome: {:#?}",
        with_outcome(&records, "hook_failed")
    );
    // Each delivered path has its own hook record.
    let mut delivered_paths: Vec<&str> = delivered
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let mut hooked: Vec<&str> = ok.iter().map(|r| r["path"].as_str().unwrap()).collect();
    delivered_paths.sort();
    hooked.sort();
    assert_eq!(delivered_paths, hooked);

    let marks = std::fs::read_to_string(&marks).unwrap();
    assert!(
        !marks.contains("env-mismatch"),
        "GAPFERRY_* differ from the argument"
    );
    let (mut running, mut most, mut starts) = (0usize, 0usize, 0usize);
    for line in marks.lines() {
        match line {
            "start" => {
                running += 1;
                starts += 1;
                most = most.max(running);
            }
            "end" => running -= 1,
            other => panic!("unexpected mark {other:?}"),
        }
    }
    assert_eq!(starts, FILES);
    assert_eq!(running, 0);
    assert!(
        most <= WORKERS,
        "{most} hooks ran at once with a pool of {WORKERS}"
    );
    // The hostile names arrived as data, never ran.
    let seen = std::fs::read_to_string(&paths).unwrap();
    for (i, h) in hostile.iter().enumerate() {
        assert!(
            seen.lines().any(|l| l.ends_with(&format!("/files/{h}"))),
            "{h} not passed verbatim: {seen}"
        );
        let pwned = cwd.path().join(format!("PWNED{}", i + 1));
        assert!(
            !pwned.exists(),
            "a name ran as a command: {}",
            pwned.display()
        );
    }
    let mut rx = rx;
    assert!(rx.child.terminate().success());
}

#[test]
fn a_hook_that_cannot_start_or_fails_is_recorded_with_the_reason_and_no_key_warns() {
    let cwd = tempfile::tempdir().unwrap();
    // file: a program that does not exist; image signatures have no hook; the second
    // receiver's hook exits non-zero with a message.
    let rx = start(
        &format!(
            "file = {}",
            toml_list(&["/nonexistent/gapferry-import", "{path}"])
        ),
        cwd.path(),
    );
    // Started without a key: it says so, and how to make one.
    let log = std::fs::read_to_string(&rx.log).unwrap();
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("no key"))
        .unwrap_or_else(|| panic!("no WARN about the missing key: {log}"));
    assert!(
        warn.contains("anyone who can reach") && warn.contains("gapferry-send keygen"),
        "{warn}"
    );
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("a.bin");
    random_file(&f, 1000, 1);
    rx.send(std::slice::from_ref(&f));
    let records = rx.wait(Duration::from_secs(30), |r| hook_outcomes(r) >= 1);
    assert_eq!(with_outcome(&records, "delivered").len(), 1);
    let failed = with_outcome(&records, "hook_failed");
    assert_eq!(failed.len(), 1, "{records:#?}");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not start") && reason.contains("/nonexistent/gapferry-import"),
        "{reason}"
    );
    assert!(failed[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("/files/a.bin"));
    assert!(
        rx.out.join("files/a.bin").exists(),
        "the file stays delivered"
    );

    let rx = start(
        &format!(
            "file = {}",
            toml_list(&["sh", "-c", "echo 'import refused: disk full' >&2; exit 3"])
        ),
        cwd.path(),
    );
    rx.send(&[f]);
    let records = rx.wait(Duration::from_secs(30), |r| hook_outcomes(r) >= 1);
    let failed = with_outcome(&records, "hook_failed");
    assert_eq!(failed.len(), 1, "{records:#?}");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("exit status: 3") && reason.contains("import refused: disk full"),
        "{reason}"
    );
}

/// True once `pid` has exited (gone, or a zombie waiting for its reaper).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_hook_over_its_timeout_is_killed_with_what_it_started_and_recorded() {
    let cwd = tempfile::tempdir().unwrap();
    let pids = cwd.path().join("pids");
    // The hook starts a background child, then waits far beyond the 1 s timeout.
    let script = format!(
        "sleep 300 & echo $! >> '{p}'; echo $$ >> '{p}'; wait",
        p = pids.display()
    );
    let rx = start(
        &format!("file = {}\ntimeout = 1", toml_list(&["sh", "-c", &script])),
        cwd.path(),
    );
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("slow.bin");
    random_file(&f, 1000, 2);
    rx.send(&[f]);
    let records = rx.wait(Duration::from_secs(60), |r| hook_outcomes(r) >= 1);
    let failed = with_outcome(&records, "hook_failed");
    assert_eq!(failed.len(), 1, "{records:#?}");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("timed out") && reason.contains("killed"),
        "{reason}"
    );
    let pids: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&p| gone(p)) {
        assert!(
            Instant::now() < deadline,
            "hook processes {pids:?} still running after the timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hooks_beyond_a_full_queue_are_recorded_not_run() {
    let cwd = tempfile::tempdir().unwrap();
    let rx = start(
        &format!(
            "file = {}\nworkers = 1\nqueue = 1\ntimeout = 30",
            toml_list(&["sleep", "3"])
        ),
        cwd.path(),
    );
    let src = tempfile::tempdir().unwrap();
    for i in 0..6 {
        random_file(&src.path().join(format!("q{i}.bin")), 100, i);
    }
    rx.send(&[src.path().to_path_buf()]);
    let records = rx.wait(Duration::from_secs(60), |r| {
        with_outcome(r, "delivered").len() == 6 && hook_outcomes(r) >= 6
    });
    let full: Vec<&Value> = with_outcome(&records, "hook_failed")
        .into_iter()
        .filter(|r| r["reason"].as_str().unwrap().contains("hook queue full"))
        .collect();
    // One hook runs, one waits: at least the rest found the queue full (a delivery that
    // came after the first hook ended may have found room).
    assert!(!full.is_empty(), "{records:#?}");
    assert_eq!(hook_outcomes(&records), 6, "one outcome per delivery");
}

#[test]
fn what_a_hook_leaves_running_is_killed_when_it_exits() {
    let cwd = tempfile::tempdir().unwrap();
    let pid_file = cwd.path().join("pid");
    let script = format!("sleep 300 & echo $! > '{}'; exit 0", pid_file.display());
    let rx = start(
        &format!("file = {}", toml_list(&["sh", "-c", &script])),
        cwd.path(),
    );
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("bg.bin");
    random_file(&f, 1000, 3);
    rx.send(&[f]);
    let records = rx.wait(Duration::from_secs(60), |r| hook_outcomes(r) >= 1);
    assert_eq!(with_outcome(&records, "hook_ok").len(), 1, "{records:#?}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        assert!(
            Instant::now() < deadline,
            "the hook's background process {pid} outlived it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn on_sigterm_queued_hooks_are_recorded_not_run_and_the_running_one_finishes() {
    let cwd = tempfile::tempdir().unwrap();
    let mut rx = start(
        &format!(
            "file = {}\nworkers = 1\nqueue = 10\ntimeout = 30",
            toml_list(&["sleep", "2"])
        ),
        cwd.path(),
    );
    let src = tempfile::tempdir().unwrap();
    for i in 0..3 {
        random_file(&src.path().join(format!("t{i}.bin")), 100, i);
    }
    rx.send(&[src.path().to_path_buf()]);
    rx.wait(Duration::from_secs(30), |r| {
        with_outcome(r, "delivered").len() == 3
    });
    let status = rx.child.terminate();
    assert!(status.success(), "{status}");
    let records = read_records(&rx.out);
    assert_eq!(hook_outcomes(&records), 3, "{records:#?}");
    let ok = with_outcome(&records, "hook_ok");
    assert_eq!(ok.len(), 1, "the running hook finished: {records:#?}");
    let stopped = with_outcome(&records, "hook_failed");
    assert_eq!(stopped.len(), 2, "{records:#?}");
    for r in stopped {
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("receiver stopped before the hook ran"),
            "{reason}"
        );
    }
}
