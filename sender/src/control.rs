//! The sender daemon's control plane: one small single-threaded tokio runtime, on a thread
//! of its own, hosting what is event-driven: outbox events (inotify through `notify`), the
//! polling timer (the fallback where events are unavailable, a safety net where they are),
//! SIGINT/SIGTERM, and the metrics endpoint when `--metrics` is given. It never reads, prepares or sends anything: it only wakes the data
//! plane (the watch loop on its own thread) through a bounded channel, and sets the
//! shutdown flag on a signal. A wake-up means "scan now", never "this file is complete":
//! the watch loop's settle rule still decides.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use notify::{Event, EventKind, RecursiveMode, Watcher as _};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Outbox events buffered between notify's thread and the runtime; more are dropped, as
/// one pending event already means a scan.
const EVENT_BUFFER: usize = 64;

/// The running control plane; dropping it stops its thread.
pub struct ControlPlane {
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
    handle: tokio::runtime::Handle,
    /// Whether outbox events are delivered (false: polling only).
    pub events: bool,
}

impl ControlPlane {
    /// Starts the runtime: wakes on outbox events under `outbox` and every `poll_interval`,
    /// and sets `shutdown` (then wakes) on SIGINT or SIGTERM. Returns the wake-ups for
    /// [`crate::watch::Watcher::wake_on`].
    pub fn start(
        outbox: &Path,
        poll_interval: Duration,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<(ControlPlane, Receiver<()>)> {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let stop = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let outbox = outbox.to_path_buf();
        let stop_rt = stop.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let thread = std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                runtime.block_on(serve(
                    outbox,
                    poll_interval,
                    shutdown,
                    wake_tx,
                    stop_rt,
                    ready_tx,
                ));
            })?;
        let events = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the control plane's thread ended at start"))??;
        let plane = ControlPlane {
            stop,
            thread: Some(thread),
            handle,
            events,
        };
        Ok((plane, wake_rx))
    }
}

impl ControlPlane {
    /// The runtime, for the daemon's other event-driven parts (the metrics endpoint).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The runtime's life: install signals and the outbox watch, report ready, run the tasks
/// until stopped.
async fn serve(
    outbox: PathBuf,
    poll_interval: Duration,
    shutdown: Arc<AtomicBool>,
    wake: Sender<()>,
    stop: Arc<Notify>,
    ready: std::sync::mpsc::Sender<io::Result<bool>>,
) {
    if let Err(e) = signals(shutdown, wake.clone(), stop.clone()) {
        let _ = ready.send(Err(e));
        return;
    }
    // Kept alive for the runtime's life: dropping it ends the inotify watch.
    let watch = outbox_events(&outbox, wake.clone());
    let events = watch.is_some();
    tokio::spawn(poll(poll_interval, wake));
    let _ = ready.send(Ok(events));
    stop.notified().await;
    drop(watch);
}

/// Sets `shutdown` and wakes the data plane on SIGINT or SIGTERM.
fn signals(shutdown: Arc<AtomicBool>, wake: Sender<()>, stop: Arc<Notify>) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let mut s = signal(kind)?;
        let (shutdown, wake, stop) = (shutdown.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                tracing::info!("signal received: stopping after the current window");
                shutdown.store(true, Ordering::Relaxed);
                wake_up(&wake);
                stop.notify_one();
            }
        });
    }
    Ok(())
}

/// Watches `outbox` (recursively) and forwards its events to a task that wakes the data
/// plane; `None` (polling only) where inotify is unavailable.
fn outbox_events(outbox: &Path, wake: Sender<()>) -> Option<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::channel::<()>(EVENT_BUFFER);
    let root = outbox.to_path_buf();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if event.is_ok_and(|e| matters(&e, &root)) {
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(outbox, RecursiveMode::Recursive).map(|()| w));
    match watcher {
        Ok(w) => {
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    wake_up(&wake);
                }
            });
            Some(w)
        }
        Err(e) => {
            tracing::warn!(outbox = %outbox.display(), "outbox events unavailable ({e}); scanning it on the polling interval only (raise fs.inotify.max_user_watches if that is the cause)");
            None
        }
    }
}

/// Whether an event can make a file complete: not a read, and not only under hidden
/// names inside the outbox (the journal, writers' temporary files).
fn matters(e: &Event, outbox: &Path) -> bool {
    let hidden = |p: &Path| {
        p.strip_prefix(outbox).unwrap_or(p).components().any(|c| {
            c.as_os_str()
                .to_str()
                .is_some_and(|s| s.starts_with('.') && s != "." && s != "..")
        })
    };
    !matches!(e.kind, EventKind::Access(_)) && e.paths.iter().any(|p| !hidden(p))
}

/// The polling timer.
async fn poll(every: Duration, wake: Sender<()>) {
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        wake_up(&wake);
    }
}

/// Asks the data plane for a scan; one pending request is enough.
fn wake_up(wake: &Sender<()>) {
    match wake.try_send(()) {
        Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reads_and_hidden_names_do_not_wake_the_data_plane() {
        use notify::event::{AccessKind, CreateKind, ModifyKind};
        // The outbox itself may sit under a hidden directory.
        let o = Path::new("/srv/.state/o");
        let wakes = |kind, path: &str| matters(&event(kind, path), o);
        let create = EventKind::Create(CreateKind::File);
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(wakes(create, "/srv/.state/o/misp/a.json"));
        assert!(wakes(modify, "/srv/.state/o/files/x"));
        assert!(!wakes(
            EventKind::Access(AccessKind::Any),
            "/srv/.state/o/files/x"
        ));
        assert!(!wakes(modify, "/srv/.state/o/.gapferry-send/journal.jsonl"));
        assert!(!wakes(create, "/srv/.state/o/misp/.a.json.tmp"));
    }

    #[test]
    fn a_file_dropped_into_the_outbox_wakes_the_data_plane_before_the_poll() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let (plane, wake) =
            ControlPlane::start(dir.path(), Duration::from_secs(3600), shutdown).unwrap();
        if !plane.events {
            assert!(std::env::var_os("CI").is_none(), "no inotify under CI");
            eprintln!("skipping: inotify unavailable here");
            return;
        }
        // The interval's first tick is immediate: take it.
        wake.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            wake.recv_timeout(Duration::from_millis(300)).is_err(),
            "woken with nothing new"
        );
        std::fs::write(dir.path().join("a.json"), b"{}").unwrap();
        wake.recv_timeout(Duration::from_secs(30))
            .expect("no wake-up for a new file within 30 s of a 3600 s poll");
    }
}
