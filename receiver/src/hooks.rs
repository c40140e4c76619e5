//! Post-delivery hooks: checking the configured commands at start, and running them on a
//! bounded pool of worker threads, each hook with a timeout, its process group killed when
//! it overruns, and its outcome recorded (`hook_ok` or `hook_failed` with the reason).
//!
//! A sender chooses object names, so a name must never become command text. The delivered
//! path reaches a hook only as a whole argument (an argument that is exactly `{path}`) and
//! in the environment (`GAPFERRY_PATH`, `GAPFERRY_KIND`, `GAPFERRY_BLAKE3`); a command that
//! embeds `{path}` in a larger argument (`["sh", "-c", "cp {path} /x"]`) is refused at start.
//!
//! When every worker is busy, hooks wait in a bounded queue; when the queue is full the
//! delivery thread does not wait: the hook is not run and `hook_failed: hook queue full` is
//! recorded (the file stays delivered). At shutdown, hooks still queued are recorded as
//! not run, and running ones get [`STOP_GRACE`] before they are killed.

use crate::destinations::{HookCommand, Hooks};
use crate::metrics::ReceiverMetrics;
use crate::records::{Outcome, Record, RecordLog};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use gapferry_common::ObjectKind;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The argument a hook's command writes, on its own, where the delivered path goes.
pub const PATH_PLACEHOLDER: &str = "{path}";
/// Hooks run at once by default.
pub const DEFAULT_WORKERS: usize = 4;
/// Most hooks run at once, whatever the configuration says.
pub const MAX_WORKERS: usize = 64;
/// Hooks waiting for a worker by default.
pub const DEFAULT_QUEUE: usize = 1024;
/// Longest a hook may run by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long running hooks may go on once the receiver is stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// Most bytes of a failed hook's standard error quoted in its record.
const STDERR_QUOTED: u64 = 1024;
/// Directory under the state directory holding each worker's capture of standard error.
const HOOKS_DIR: &str = "hooks";

/// Why the `[hooks]` configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookConfigError {
    /// A hook's command is empty.
    #[error("[hooks] {kind} is empty: give the program and its arguments, e.g. [\"/usr/local/bin/import\", \"{PATH_PLACEHOLDER}\"]")]
    Empty {
        /// The kind the hook is for.
        kind: &'static str,
    },
    /// The program itself would be the delivered file.
    #[error("[hooks] {kind} runs the delivered file itself as the program: a sender would choose what runs; name a program you installed and pass \"{PATH_PLACEHOLDER}\" as an argument")]
    ProgramIsPath {
        /// The kind the hook is for.
        kind: &'static str,
    },
    /// An argument embeds `{path}` in a larger string.
    #[error("[hooks] {kind}: argument {index} {arg:?} embeds {PATH_PLACEHOLDER} inside a larger string, so a sender's file name would become command text; write \"{PATH_PLACEHOLDER}\" as an argument of its own, or read the path from the environment variable GAPFERRY_PATH, e.g. {suggestion}")]
    EmbeddedPath {
        /// The kind the hook is for.
        kind: &'static str,
        /// Position of the argument (0 is the program).
        index: usize,
        /// The argument as configured.
        arg: String,
        /// The command rewritten to read `$GAPFERRY_PATH` instead.
        suggestion: String,
    },
    /// `workers` or `queue` is zero, or `workers` is above [`MAX_WORKERS`].
    #[error("[hooks] {key} = {value} is out of range: use 1 to {max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// The largest value accepted.
        max: u64,
    },
}

/// Checks every configured hook and the pool settings; the receiver refuses to start on error.
pub fn check(hooks: &Hooks) -> Result<(), HookConfigError> {
    for (kind, cmd) in hooks.commands() {
        check_command(kind, cmd)?;
    }
    let range = |key, value: Option<u64>, max: u64| match value {
        Some(v) if v == 0 || v > max => Err(HookConfigError::OutOfRange { key, value: v, max }),
        _ => Ok(()),
    };
    range(
        "workers",
        hooks.workers.map(|v| v as u64),
        MAX_WORKERS as u64,
    )?;
    range("queue", hooks.queue.map(|v| v as u64), 1 << 20)?;
    range("timeout", hooks.timeout, 24 * 3600)
}

/// Checks one hook command: not empty, not the delivered file as program, `{path}` only whole.
pub fn check_command(kind: &'static str, cmd: &[String]) -> Result<(), HookConfigError> {
    let Some(program) = cmd.first() else {
        return Err(HookConfigError::Empty { kind });
    };
    if program.contains(PATH_PLACEHOLDER) {
        return Err(HookConfigError::ProgramIsPath { kind });
    }
    for (index, arg) in cmd.iter().enumerate().skip(1) {
        if arg != PATH_PLACEHOLDER && arg.contains(PATH_PLACEHOLDER) {
            let rewritten: Vec<String> = cmd
                .iter()
                .map(|a| {
                    if a == PATH_PLACEHOLDER {
                        a.clone()
                    } else {
                        a.replace(PATH_PLACEHOLDER, "\"$GAPFERRY_PATH\"")
                    }
                })
                .collect();
            return Err(HookConfigError::EmbeddedPath {
                kind,
                index,
                arg: arg.clone(),
                suggestion: format!("{rewritten:?}"),
            });
        }
    }
    Ok(())
}

/// The argument vector of `cmd` for the delivered `path`: each argument that is exactly
/// `{path}` becomes the path; every other argument is passed as written.
pub fn arguments(cmd: &[String], path: &Path) -> Vec<std::ffi::OsString> {
    cmd.iter()
        .map(|a| {
            if a == PATH_PLACEHOLDER {
                path.as_os_str().to_owned()
            } else {
                a.into()
            }
        })
        .collect()
}

/// One hook to run for one delivered object.
#[derive(Debug, Clone)]
pub struct HookJob {
    /// The configured command.
    pub command: HookCommand,
    /// Where the object was delivered.
    pub path: PathBuf,
    /// Its kind.
    pub kind: ObjectKind,
    /// Its blake3 (hex).
    pub blake3: String,
    /// The delivery's record, whose identifying fields the hook's record repeats.
    pub record: Record,
}

/// Shared by the pool and its workers.
struct Shared {
    records: Arc<Mutex<RecordLog>>,
    metrics: ReceiverMetrics,
    timeout: Duration,
    stopping: AtomicBool,
}

/// A fixed number of worker threads running hooks from a bounded queue.
pub struct HookPool {
    queue: Option<Sender<HookJob>>,
    capacity: usize,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl HookPool {
    /// Starts the workers `hooks` asks for; `state_dir` holds their standard-error captures.
    pub fn start(
        hooks: &Hooks,
        state_dir: &Path,
        records: Arc<Mutex<RecordLog>>,
        metrics: ReceiverMetrics,
    ) -> std::io::Result<Self> {
        check(hooks).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let workers = hooks.workers.unwrap_or(DEFAULT_WORKERS);
        let capacity = hooks.queue.unwrap_or(DEFAULT_QUEUE);
        let timeout = hooks.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let shared = Arc::new(Shared {
            records,
            metrics,
            timeout,
            stopping: AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam_channel::bounded::<HookJob>(capacity);
        let dir = state_dir.join(HOOKS_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let stderr = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(format!("stderr-{i}")))?;
            let (rx, shared) = (rx.clone(), shared.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("gapferry-hook-{i}"))
                    .spawn(move || work(&rx, &shared, stderr))?,
            );
        }
        tracing::info!(
            workers,
            queue = capacity,
            timeout_s = timeout.as_secs(),
            "post-delivery hooks ready"
        );
        Ok(HookPool {
            queue: Some(tx),
            capacity,
            workers: handles,
            shared,
        })
    }

    /// Queues `job`; when the queue is full the hook is not run and `hook_failed` recorded.
    pub fn submit(&self, job: HookJob) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => finish(
                &self.shared,
                &job,
                Err(format!(
                    "hook queue full ({} hooks waiting for a worker): not run; run it by hand, and raise [hooks] workers or queue, or make the hook faster",
                    self.capacity
                )),
                Duration::ZERO,
            ),
            Err(TrySendError::Disconnected(job)) => finish(
                &self.shared,
                &job,
                Err("no hook worker is running: not run; run it by hand".into()),
                Duration::ZERO,
            ),
        }
    }
}

impl Drop for HookPool {
    /// Stops taking hooks, records the queued ones as not run, lets running ones finish
    /// within [`STOP_GRACE`], and joins the workers.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(rx: &Receiver<HookJob>, shared: &Shared, mut stderr: File) {
    for job in rx.iter() {
        if shared.stopping.load(Ordering::SeqCst) {
            finish(
                shared,
                &job,
                Err("the receiver stopped before the hook ran: not run; run it by hand".into()),
                Duration::ZERO,
            );
            continue;
        }
        let started = Instant::now();
        let result = run(shared, &job, &mut stderr);
        finish(shared, &job, result, started.elapsed());
    }
}

/// Records (and logs and counts) a hook's outcome.
fn finish(shared: &Shared, job: &HookJob, result: Result<(), String>, elapsed: Duration) {
    let mut r = job.record.clone();
    r.time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    r.elapsed_ms = Some(elapsed.as_millis() as u64);
    r.path = Some(job.path.clone());
    match result {
        Ok(()) => {
            tracing::debug!(path = %job.path.display(), ms = elapsed.as_millis() as u64, "post-delivery hook done");
            r.outcome = Outcome::HookOk;
            r.reason = None;
        }
        Err(reason) => {
            tracing::warn!(
                path = %gapferry_common::name::escape(&job.path.to_string_lossy()),
                kind = %job.kind,
                %reason,
                "post-delivery hook failed; the delivered file stays"
            );
            r.outcome = Outcome::HookFailed;
            r.reason = Some(reason);
        }
    }
    shared.metrics.object(r.kind, r.outcome);
    let mut log = shared.records.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = log.append(&r) {
        tracing::error!(path = %log.path().display(), "cannot append to the record log: {e}");
    }
}

/// Runs one hook to its end or its timeout; `Err` says why it failed.
fn run(shared: &Shared, job: &HookJob, stderr: &mut File) -> Result<(), String> {
    let args = arguments(&job.command, &job.path);
    let (program, rest) = args.split_first().ok_or("empty hook command")?;
    let shown = program.to_string_lossy().into_owned();
    stderr
        .set_len(0)
        .and_then(|()| stderr.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| format!("cannot reset the hook's stderr capture: {e}"))?;
    let capture = stderr
        .try_clone()
        .map_err(|e| format!("cannot capture the hook's stderr: {e}"))?;
    let mut child = Command::new(program)
        .args(rest)
        .env("GAPFERRY_PATH", &job.path)
        .env("GAPFERRY_KIND", job.kind.as_str())
        .env("GAPFERRY_BLAKE3", &job.blake3)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(capture)
        // Its own process group, so a timeout kills whatever the hook started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("hook {shown} could not start: {e}"))?;
    let deadline = Instant::now() + shared.timeout;
    let mut stop_deadline: Option<Instant> = None;
    let mut pause = Duration::from_millis(5);
    let status = loop {
        match exited(child.id()) {
            Ok(true) => {
                // What the hook left running in its group may not outlive it; killed while
                // the hook is a zombie, so its pid (the group's id) cannot be reused yet.
                signal_group(child.id(), libc::SIGKILL);
                match child.wait() {
                    Ok(status) => break status,
                    Err(e) => return Err(format!("hook {shown}: cannot reap it: {e}")),
                }
            }
            Ok(false) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(format!("hook {shown}: cannot wait for it: {e}"));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            return Err(format!(
                "hook {shown} timed out after {} s and was killed",
                shared.timeout.as_secs()
            ));
        }
        if shared.stopping.load(Ordering::SeqCst) {
            let end = *stop_deadline.get_or_insert(now + STOP_GRACE);
            if now >= end {
                kill_group(&mut child);
                return Err(format!(
                    "hook {shown} was killed: the receiver stopped while it ran; run it by hand"
                ));
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    if status.success() {
        Ok(())
    } else {
        Err(failed(&shown, status, stderr))
    }
}

fn failed(shown: &str, status: ExitStatus, stderr: &mut File) -> String {
    let len = stderr.metadata().map_or(0, |m| m.len());
    let mut tail = Vec::new();
    let _ = stderr
        .seek(SeekFrom::Start(len.saturating_sub(STDERR_QUOTED)))
        .and_then(|_| stderr.take(STDERR_QUOTED).read_to_end(&mut tail));
    let text = String::from_utf8_lossy(&tail);
    let text = gapferry_common::name::escape(text.trim());
    if text.is_empty() {
        format!("hook {shown} exited with {status}")
    } else {
        format!("hook {shown} exited with {status}: {text}")
    }
}

/// Kills the hook's whole process group (the hook is not reaped yet, so the group id is
/// still its own) and reaps the hook.
fn kill_group(child: &mut Child) {
    signal_group(child.id(), libc::SIGKILL);
    let _ = child.wait();
}

/// Whether the hook `pid` has exited, without reaping it.
fn exited(pid: u32) -> std::io::Result<bool> {
    let id = libc::id_t::from(pid);
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: waitid(2) writes at most one siginfo_t into `info`, which is zeroed and
    // large enough; WNOWAIT leaves the child to be reaped by Child::wait.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            info.as_mut_ptr(),
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and possibly filled by waitid: valid either way; si_pid
    // stays 0 when the child has not exited (WNOHANG).
    let pid = unsafe { info.assume_init().si_pid() };
    Ok(pid != 0)
}

/// Sends `signal` to the process group led by `pid` (the hook, started with its own group).
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers; a negative pid names the process group the
    // hook leads (it was started with process_group(0)), never the receiver's own group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_path_embedded_in_a_larger_argument_is_refused_with_what_to_write() {
        let e = check_command("file", &cmd(&["sh", "-c", "cp {path} /x"])).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, HookConfigError::EmbeddedPath { index: 2, .. }),
            "{e:?}"
        );
        assert!(text.contains("GAPFERRY_PATH"), "{text}");
        assert!(text.contains("argument of its own"), "{text}");
        assert!(text.contains(r#"cp \"$GAPFERRY_PATH\" /x"#), "{text}");
        assert!(check_command("file", &cmd(&["cp", "--target={path}"])).is_err());
        assert!(matches!(
            check_command("image", &cmd(&["{path}", "x"])),
            Err(HookConfigError::ProgramIsPath { .. })
        ));
        assert!(matches!(
            check_command("image", &[]),
            Err(HookConfigError::Empty { .. })
        ));
        assert_eq!(
            check_command("image", &cmd(&["lxc", "image", "import", "{path}"])),
            Ok(())
        );
    }

    #[test]
    fn the_path_is_substituted_only_as_a_whole_argument() {
        let name = Path::new("/srv/out/files/a$(touch x);`id`");
        let args = arguments(&cmd(&["cp", "{path}", "/x/{path}/y", "-"]), name);
        assert_eq!(args[1], name.as_os_str());
        assert_eq!(args[2], "/x/{path}/y");
        assert_eq!(args.len(), 4);
    }

    #[test]
    fn pool_sizes_out_of_range_are_refused() {
        let hooks = Hooks {
            workers: Some(0),
            ..Hooks::default()
        };
        assert!(matches!(
            check(&hooks),
            Err(HookConfigError::OutOfRange { key: "workers", .. })
        ));
        let hooks = Hooks {
            queue: Some(0),
            ..Hooks::default()
        };
        assert!(check(&hooks).is_err());
        let hooks = Hooks {
            workers: Some(MAX_WORKERS + 1),
            ..Hooks::default()
        };
        assert!(check(&hooks).is_err());
        assert_eq!(check(&Hooks::default()), Ok(()));
    }
}
