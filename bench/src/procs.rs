//! Child processes and what the kernel says about them: `wait4` rusage (CPU time, peak
//! RSS), `/proc/<pid>/status`, `/proc/net/snmp` and `/proc/net/udp` counters.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What `wait4` reported for a child that exited.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exit {
    /// Exit code (or 128 + signal).
    pub code: i32,
    /// User plus system CPU seconds of all its threads.
    pub cpu_seconds: f64,
    /// Peak resident set size in bytes (`ru_maxrss`).
    pub max_rss: u64,
    /// When the harness saw it exit.
    pub at: Option<Instant>,
}

/// A running child whose exit status and rusage are collected with `wait4`.
pub struct Proc {
    pid: libc::pid_t,
    name: &'static str,
    exit: Option<Exit>,
    // Kept so std does not consider the handle dropped; never waited through std.
    _child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            pid: child.id() as libc::pid_t,
            name,
            exit: None,
            _child: child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The exit record once the child has exited (polls without blocking).
    pub fn try_exit(&mut self) -> Result<Option<Exit>> {
        if self.exit.is_none() {
            self.exit = wait4(self.pid, libc::WNOHANG)?;
        }
        Ok(self.exit)
    }

    /// Waits up to `timeout` for the child to exit, then kills it.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_exit()? {
                return Ok(e);
            }
            if Instant::now() > deadline {
                self.signal(libc::SIGKILL);
                let e = wait4(self.pid, 0)?.context("wait4 after SIGKILL")?;
                self.exit = Some(e);
                bail!(
                    "{} (pid {}) did not exit within {timeout:?}; killed",
                    self.name,
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` to the child if it is still running.
    pub fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet so not reused.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Peak RSS so far from `/proc/<pid>/status` (VmHWM), in bytes.
    pub fn vm_hwm(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
            let _ = wait4(self.pid, 0);
        }
    }
}

fn wait4(pid: libc::pid_t, flags: libc::c_int) -> Result<Option<Exit>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with pointers to live locals of the right types.
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
    if r == 0 {
        return Ok(None);
    }
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(Some(Exit {
        code,
        cpu_seconds: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss: ru.ru_maxrss as u64 * 1024,
        at: Some(Instant::now()),
    }))
}

/// `RcvbufErrors` of the `Udp:` line in `/proc/net/snmp` (datagrams the kernel dropped
/// because a socket's receive buffer was full), system-wide.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

/// The `drops` column of `/proc/net/udp` for the socket bound to local `port`.
pub fn udp_socket_drops(port: u16) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!(":{port:04X}");
    s.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.get(1)?.ends_with(&want) {
            cols.last()?.parse().ok()
        } else {
            None
        }
    })
}

/// The 1-minute load average, to warn when the machine is busy with something else.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_readable() {
        assert!(udp_rcvbuf_errors().is_some());
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert_eq!(udp_socket_drops(port), Some(0));
    }

    #[test]
    fn rusage_of_a_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut p = Proc::spawn("sh", cmd, &dir.path().join("log")).unwrap();
        let e = p.wait(Duration::from_secs(10)).unwrap();
        assert_eq!(e.code, 3);
        assert!(e.max_rss > 0);
    }
}
