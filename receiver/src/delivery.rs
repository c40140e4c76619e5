//! Turning assembler events into deliveries: staging, in-order hashing, verification,
//! then by kind: MISP feed, STIX store, image store or plain files, each by atomic rename
//! with the kind's configured mode and group (never the sender's), post-delivery hooks,
//! and a record of every outcome.
//!
//! Nothing reaches a delivery directory before its blake3 matches the descriptor.

use crate::cause::Cause;
use crate::destinations::Destinations;
use crate::hooks::{HookJob, HookPool};
use crate::records::{Outcome, Record, RecordLog, STATE_DIR};
use gapferry_common::compress::decompress_block;
use gapferry_common::name::escape;
use gapferry_common::{Event, ObjectDescriptor, ObjectKind, ObjectRef};
use gapferry_feeds::{ImageStore, MispFeed, Publish, StixStore, Verifier};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Directory under the state directory holding incomplete objects.
pub const STAGING_DIR: &str = "staging";
/// Directory under the state directory holding image signatures until their image arrives.
pub const SIGNATURES_DIR: &str = "signatures";
/// Most MISP events delivered in one batch (one manifest and hashes rewrite).
const MISP_BATCH: usize = 256;
/// Free space always left on the delivery filesystem, in bytes.
pub const DISK_RESERVE: u64 = 8 << 20;
/// Largest MISP event or STIX bundle read into memory for checking, in bytes, by default
/// (`[limits] max_document`); also the most bytes of MISP events one batch holds.
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// Records of objects not delivered (or delivered without a name) a [`Summary`] keeps.
pub const SUMMARY_NOTABLE: usize = 100;

/// Counts of outcomes, and the last few records worth naming: its size does not grow
/// with the run's length (every record is in `records.jsonl`).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Objects verified and published.
    pub delivered: u64,
    /// Objects seen but not delivered.
    pub failed: u64,
    /// Objects sent but never seen.
    pub lost: u64,
    /// The last [`SUMMARY_NOTABLE`] records with a reason or without a name, in order.
    pub notable: std::collections::VecDeque<Record>,
    /// Notable records left out of `notable` because newer ones took their place.
    pub notable_dropped: u64,
}

impl Summary {
    /// Keeps `r` if it has a reason or no name, forgetting the oldest beyond the bound.
    pub fn note(&mut self, r: &Record) {
        if r.reason.is_none() && r.name.is_some() {
            return;
        }
        if self.notable.len() == SUMMARY_NOTABLE {
            self.notable.pop_front();
            self.notable_dropped += 1;
        }
        self.notable.push_back(r.clone());
    }
}

struct Staged {
    descriptor: ObjectDescriptor,
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    next_hash_block: u32,
    written_ahead: BTreeSet<u32>,
    written: u64,
    writeback: crate::writeback::Writeback,
    started: Instant,
}

/// Writes verified objects under `--out` and records every outcome.
pub struct Delivery {
    dest: Destinations,
    feed: MispFeed,
    stix: StixStore,
    images: ImageStore,
    state_dir: PathBuf,
    staging_dir: PathBuf,
    signatures_dir: PathBuf,
    records: Arc<Mutex<RecordLog>>,
    hooks: Option<HookPool>,
    push: Option<crate::misp_push::Pusher>,
    metrics: crate::metrics::ReceiverMetrics,
    ledger: Option<Arc<crate::ledger::DeliveredLedger>>,
    archive: Option<gapferry_feeds::Archive>,
    feed_tracker: crate::feedcare::SharedTracker,
    _feed_keeper: Option<crate::feedcare::KeeperHandle>,
    pending_misp: Vec<(ObjectRef, ObjectDescriptor, Instant, Vec<u8>)>,
    pending_misp_bytes: u64,
    max_document: u64,
    loss: HashMap<u64, f64>,
    staged: HashMap<ObjectRef, Staged>,
    /// `[images] keyring`: images must carry a signature that verifies.
    verifier: Option<Verifier>,
    /// Verified images waiting for their signature, which is still being received, by
    /// the signature's base name.
    awaiting_signature: HashMap<String, (ObjectRef, Staged)>,
    summary: Summary,
}

impl Delivery {
    /// Prepares delivery under `out`, creating its directories and clearing stale staging files.
    pub fn open(
        out: &Path,
        dest: Destinations,
        metrics: crate::metrics::ReceiverMetrics,
    ) -> io::Result<Self> {
        dest.check_separate(out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let state = out.join(STATE_DIR);
        let staging_dir = state.join(STAGING_DIR);
        let signatures_dir = state.join(SIGNATURES_DIR);
        // Readers (MISP, LXD) must traverse every directory the receiver creates on the
        // way to a delivery; the state directory is the receiver's own.
        let perms = dest.permissions;
        perms.default.create_dir_all(out)?;
        for (dir, publish) in [
            (&dest.files, perms.files),
            (&dest.misp, perms.misp),
            (&dest.stix, perms.stix),
            (&dest.images, perms.images),
        ] {
            publish.create_dir_all(dir)?;
        }
        for dir in [&staging_dir, &signatures_dir] {
            std::fs::create_dir_all(dir)?;
        }
        let verifier = match &dest.image_keyring {
            Some(keyring) => {
                let v = Verifier::new(keyring);
                v.check().map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("[images] {e}"))
                })?;
                Some(v)
            }
            None => None,
        };
        // Staging files of a previous run can never complete: their state is gone.
        for entry in std::fs::read_dir(&staging_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        let records = Arc::new(Mutex::new(RecordLog::open(&state)?));
        let hooks = if dest.hooks.any() {
            Some(HookPool::start(
                &dest.hooks,
                &state,
                records.clone(),
                metrics.clone(),
            )?)
        } else {
            None
        };
        let push = match &dest.misp_push {
            Some(options) => Some(crate::misp_push::Pusher::start(
                options
                    .prepare()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                records.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        // The archive and the feed keeper (see feedcare): MISP deletes what it consumed.
        let archive = dest
            .archive
            .enabled
            .then(|| gapferry_feeds::Archive::new(state.join(crate::feedcare::ARCHIVE_DIR)));
        let mut feed = MispFeed::new(&dest.misp).with_publish(perms.misp);
        if let Some(a) = &archive {
            feed = feed.with_archive(a.clone());
        }
        let feed_tracker = crate::feedcare::SharedTracker::default();
        let keeper = crate::feedcare::FeedKeeper::new(
            &state,
            &dest.misp,
            perms.misp,
            archive.clone().map(|a| (a, dest.archive.keep)),
            feed_tracker.clone(),
            metrics.clone(),
        )
        .spawn()?;
        Ok(Delivery {
            feed,
            archive,
            feed_tracker,
            _feed_keeper: Some(keeper),
            stix: StixStore::new(&dest.stix)
                .with_publish(perms.stix)
                .with_layout(dest.stix_layout.clone()),
            images: ImageStore::new(&dest.images, dest.keep_images).with_publish(perms.images),
            dest,
            state_dir: state.clone(),
            staging_dir,
            signatures_dir,
            records,
            hooks,
            push,
            metrics,
            ledger: None,
            pending_misp: Vec::new(),
            pending_misp_bytes: 0,
            max_document: MAX_DOCUMENT,
            loss: HashMap::new(),
            staged: HashMap::new(),
            verifier,
            awaiting_signature: HashMap::new(),
            summary: Summary::default(),
        })
    }

    /// Sets the largest MISP event or STIX bundle read into memory, which is also the
    /// bytes of MISP events one feed update holds.
    pub fn set_max_document(&mut self, bytes: u64) {
        self.max_document = bytes;
    }

    /// Notes every delivery in `ledger`.
    pub fn set_ledger(&mut self, ledger: Arc<crate::ledger::DeliveredLedger>) {
        ledger.set_archive(self.archive.clone());
        self.ledger = Some(ledger);
    }

    /// What happened so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Consumes the delivery, returning its summary.
    pub fn into_summary(self) -> Summary {
        self.summary
    }

    /// Objects being written now.
    pub fn in_progress(&self) -> usize {
        self.staged.len()
    }

    /// Sender sessions whose loss rate is kept (those not closed yet).
    pub fn sessions_tracked(&self) -> usize {
        self.loss.len()
    }

    /// Acts on one assembler event.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::SessionStarted {
                session,
                first_object,
            } => tracing::info!(
                session = format_args!("{session:016x}"),
                first_object,
                "sender session heard"
            ),
            Event::SessionRefused {
                session,
                object,
                reason,
            } => {
                tracing::warn!(
                    session = format_args!("{session:016x}"),
                    reason,
                    "a sender session was refused: its datagrams are dropped until a place \
                     frees up; if no other sender is running, someone else is sending to this \
                     port (raise [limits] max_sessions only if several senders are legitimate)"
                );
                let mut r = Record::new(Outcome::SessionRefused, session, object);
                r.reason = Some(format!(
                    "sender session refused: {reason}; its datagrams are dropped until a place \
                     frees up"
                ));
                self.record(r);
            }
            Event::SessionClosed { session, reason } => {
                tracing::info!(session = format_args!("{session:016x}"), %reason, "sender session closed");
                // Per-session state ends with the session: forged session ids cannot grow it.
                self.loss.remove(&session);
            }
            Event::Heartbeat {
                session,
                heartbeat,
                received,
                loss_rate,
            } => {
                tracing::debug!(
                    session = format_args!("{session:016x}"),
                    seq = heartbeat.seq,
                    datagrams_sent = heartbeat.datagrams_sent,
                    received,
                    loss_rate,
                    "heartbeat"
                );
                self.metrics.heartbeat(loss_rate, heartbeat.rate_bps);
                if let Some(l) = loss_rate {
                    self.loss.insert(session, l);
                }
                let link = crate::status::LinkState::from_heartbeat(
                    session, &heartbeat, received, loss_rate,
                );
                if let Err(e) = link.save(&self.state_dir) {
                    tracing::warn!("cannot write the link state: {e}");
                }
            }
            Event::ObjectStarted { object, descriptor } => {
                if let Err(e) = self.start(object, descriptor.clone()) {
                    self.record_failure_because(
                        object,
                        Some(&descriptor),
                        format!("cannot stage the object: {e}"),
                        Some(Cause::Receiver),
                    );
                }
            }
            Event::BlockDecoded {
                object,
                block,
                codec,
                plain_len,
                data,
            } => {
                if !self.staged.contains_key(&object) {
                    return; // already failed
                }
                let result = decompress_block(codec, data, plain_len)
                    .map_err(|e| (format!("block {block}: {e}"), None))
                    .and_then(|plain| {
                        self.write_block(object, block, &plain).map_err(|e| {
                            let reason = format!("cannot write block {block}: {e}");
                            (reason, Some(Cause::Receiver))
                        })
                    });
                if let Err((reason, cause)) = result {
                    self.abort(object, reason, cause);
                }
            }
            Event::ObjectComplete { object } => {
                if let Some(staged) = self.staged.remove(&object) {
                    self.finish(object, staged);
                }
            }
            Event::ObjectFailed {
                object,
                descriptor,
                reason,
                shortfall,
            } => {
                // The core states facts; the advice depends on where the datagrams went.
                let (cause, reason) = match &shortfall {
                    Some(s) => {
                        let (cause, message) = crate::cause::explain(&reason, s);
                        (Some(cause), message)
                    }
                    None => (None, reason),
                };
                let descriptor = match self.staged.remove(&object) {
                    Some(staged) => {
                        let _ = std::fs::remove_file(&staged.path);
                        Some(staged.descriptor)
                    }
                    None => descriptor,
                };
                self.record_failure_because(object, descriptor.as_ref(), reason, cause);
            }
            Event::ObjectAlreadyDelivered { object, descriptor } => {
                tracing::info!(object = %object, name = %escape(&descriptor.name), "already delivered; ignored");
                let mut r = described(
                    Record::new(Outcome::Skipped, object.session, object.object),
                    &descriptor,
                );
                r.reason = Some(
                    "already delivered (same name and content); not decoded or written again"
                        .into(),
                );
                self.record(r);
            }
            Event::ObjectLost {
                object,
                through,
                named,
            } => {
                let name = named.as_ref().map(|(_, n)| escape(n).into_owned());
                let count = u64::from(through - object.object) + 1;
                if count == 1 {
                    tracing::warn!(object = %object, name, "object lost: sent but never seen");
                } else {
                    tracing::warn!(object = %object, through, count, "objects lost: sent but never seen");
                }
                self.summary.lost += count;
                let mut r = Record::new(Outcome::Lost, object.session, object.object);
                if count > 1 {
                    r.objects = Some([object.object, through]);
                }
                let lost_signature = match &named {
                    Some((ObjectKind::ImageSignature, name)) => Some(base_name(name).to_string()),
                    _ => None,
                };
                if let Some((kind, name)) = named {
                    r.kind = Some(kind.to_string());
                    r.name = Some(name);
                }
                self.record(r);
                if let Some(sig) = lost_signature {
                    self.signature_settled(&sig, Some("lost on the link"));
                }
            }
        }
    }

    fn start(&mut self, object: ObjectRef, descriptor: ObjectDescriptor) -> io::Result<()> {
        // Refuse up front what cannot fit, rather than fill the disk and fail half-way.
        let free = crate::disk::available_bytes(&self.staging_dir)?;
        if descriptor.size.saturating_add(DISK_RESERVE) > free {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "not enough disk space: {} bytes needed plus a {} MiB reserve, {} available under {}; free space and the next pass or send will deliver it",
                    descriptor.size,
                    DISK_RESERVE >> 20,
                    free,
                    self.staging_dir.display()
                ),
            ));
        }
        // MISP events and STIX bundles are read into memory to be checked: refuse before
        // decoding what could never be.
        if matches!(descriptor.kind, ObjectKind::Misp | ObjectKind::Stix)
            && descriptor.size > self.max_document
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a {}-byte {} document is above the {}-byte limit; raise [limits] max_document in the receiver's configuration, or send it as kind `file`",
                    descriptor.size, descriptor.kind, self.max_document
                ),
            ));
        }
        let path = self
            .staging_dir
            .join(format!("{:016x}-{}.part", object.session, object.object));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        self.staged.insert(
            object,
            Staged {
                descriptor,
                file,
                path,
                hasher: blake3::Hasher::new(),
                next_hash_block: 0,
                written_ahead: BTreeSet::new(),
                written: 0,
                writeback: Default::default(),
                started: Instant::now(),
            },
        );
        Ok(())
    }

    fn write_block(&mut self, object: ObjectRef, block: u32, plain: &[u8]) -> io::Result<()> {
        let s = self.staged.get_mut(&object).expect("checked");
        let offset = block as u64 * s.descriptor.block_plain_size as u64;
        s.file.write_all_at(plain, offset)?;
        s.written += plain.len() as u64;
        if block != s.next_hash_block {
            s.written_ahead.insert(block);
            return Ok(());
        }
        s.hasher.update(plain);
        s.next_hash_block += 1;
        // Blocks that decoded early are hashed from the file, in order, once their turn comes.
        let mut buf = Vec::new();
        while s.written_ahead.remove(&s.next_hash_block) {
            let b = s.next_hash_block;
            buf.resize(s.descriptor.block_plain_len(b) as usize, 0);
            s.file
                .read_exact_at(&mut buf, b as u64 * s.descriptor.block_plain_size as u64)?;
            s.hasher.update(&buf);
            s.next_hash_block += 1;
        }
        // Bytes below the hashed blocks are never read again.
        let settled = s.next_hash_block as u64 * s.descriptor.block_plain_size as u64;
        s.writeback.wrote(&s.file, s.written, settled);
        Ok(())
    }

    fn finish(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        if s.next_hash_block as u64 != d.block_count() {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure(
                object,
                Some(d),
                "internal: not every block was written".into(),
            );
            return;
        }
        if s.hasher.finalize().as_bytes() != &d.blake3 {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure(
                object,
                Some(d),
                "blake3 of the reassembled bytes differs from the descriptor's (corrupted or forged data; use --key)".into(),
            );
            return;
        }
        if d.kind == ObjectKind::Misp {
            // Events are batched: the feed's manifest and hashes are rewritten once per batch.
            // A batch holds at most `max_document` bytes of events (one event always fits).
            if self.pending_misp_bytes + d.size > self.max_document {
                self.flush();
            }
            let doc = read_document(&s.path, d.size, self.max_document);
            let _ = std::fs::remove_file(&s.path);
            match doc {
                Ok(bytes) => {
                    self.pending_misp_bytes += bytes.len() as u64;
                    self.pending_misp
                        .push((object, s.descriptor.clone(), s.started, bytes))
                }
                Err(reason) => self.record_failure(object, Some(d), reason),
            }
            if self.pending_misp.len() >= MISP_BATCH {
                self.flush();
            }
            return;
        }
        if d.kind == ObjectKind::Image && self.verifier.is_some() {
            let sig = format!("{}.sig", base_name(&d.name));
            let sig_in_flight = self.staged.values().any(|o| {
                o.descriptor.kind == ObjectKind::ImageSignature
                    && base_name(&o.descriptor.name) == sig
            });
            if sig_in_flight && !self.signatures_dir.join(&sig).exists() {
                tracing::info!(object = %object, name = %escape(&d.name), "image complete; waiting for its signature, still being received");
                self.awaiting_signature.insert(sig, (object, s));
                return;
            }
        }
        self.deliver_staged(object, s);
    }

    /// Places a verified object, an image only once its signature verified (with a
    /// keyring), and records the outcome.
    fn deliver_staged(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        if d.kind == ObjectKind::Image {
            if let Some(verifier) = &self.verifier {
                let base = base_name(&d.name);
                let sig = self.signatures_dir.join(format!("{base}.sig"));
                let sig = sig.exists().then_some(sig);
                if let Err((reason, cause)) =
                    self.check_signature(verifier, &s.path, base, sig.as_deref())
                {
                    let _ = std::fs::remove_file(&s.path);
                    self.record_failure_because(object, Some(d), reason, Some(cause));
                    return;
                }
            }
        }
        let placed = self.place(&s);
        self.placed(object, d, s.started, placed, &s.path, None);
    }

    /// Delivers (or fails) the image that waited for the signature `sig_name`, now
    /// placed or failed.
    fn signature_settled(&mut self, sig_name: &str, failure: Option<&str>) {
        let Some((object, s)) = self.awaiting_signature.remove(sig_name) else {
            return;
        };
        match failure {
            None => self.deliver_staged(object, s),
            Some(why) => {
                let _ = std::fs::remove_file(&s.path);
                self.metrics.image_signature("missing");
                self.record_failure_because(
                    object,
                    Some(&s.descriptor),
                    format!(
                        "not published: its signature {} did not arrive ({why}); [images] keyring requires one; send the image and its .sig again",
                        escape(sig_name)
                    ),
                    Some(Cause::Signature),
                );
            }
        }
    }

    /// Delivers the MISP events waiting for a batch; call when no event is queued.
    pub fn flush(&mut self) {
        if self.pending_misp.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_misp);
        self.pending_misp_bytes = 0;
        // Held while writing: `feed rebuild|republish` and the keeper may write too.
        let lock = crate::feedcare::FeedLock::acquire(&self.state_dir).inspect_err(|e| {
            tracing::warn!("cannot take the feed lock: {e}; delivering without it")
        });
        let results = self
            .feed
            .deliver_batch(pending.iter().map(|(_, _, _, b)| b.as_slice()));
        drop(lock);
        match results {
            Ok(results) => {
                let mut tracker = self.feed_tracker.lock().unwrap_or_else(|p| p.into_inner());
                for r in results.iter().flatten() {
                    tracker.delivered(&r.uuid, r.timestamp, &r.outcome, r.listed);
                }
                drop(tracker);
                for ((object, d, started, body), r) in pending.into_iter().zip(results) {
                    let (placed, push) = match r {
                        Ok(e) => {
                            let push = crate::misp_push::PushItem::Event {
                                uuid: e.uuid,
                                timestamp: e.timestamp,
                                body,
                            };
                            (Ok(e.path), Some(push))
                        }
                        Err(e) => (Err(format!("refused by the MISP feed: {e}")), None),
                    };
                    self.placed(object, &d, started, placed, Path::new(""), push);
                }
            }
            Err(e) => {
                for (object, d, _, _) in &pending {
                    self.record_failure(
                        *object,
                        Some(d),
                        format!("the MISP feed could not be updated: {e}"),
                    );
                }
            }
        }
    }

    /// Records where a verified object went (or why it could not go there), runs its hook
    /// and queues its push into the high-side MISP (a MISP event's is `push`).
    fn placed(
        &mut self,
        object: ObjectRef,
        d: &ObjectDescriptor,
        started: Instant,
        placed: Result<PathBuf, String>,
        staged: &Path,
        push: Option<crate::misp_push::PushItem>,
    ) {
        match placed {
            Ok(dest) => {
                let elapsed = started.elapsed();
                tracing::info!(
                    object = %object,
                    name = %escape(&d.name),
                    kind = %d.kind,
                    size = d.size,
                    blake3 = %blake3::Hash::from(d.blake3).to_hex(),
                    path = %escape(&dest.to_string_lossy()),
                    ms = elapsed.as_millis() as u64,
                    loss_rate = self.loss.get(&object.session).copied(),
                    "delivered"
                );
                self.summary.delivered += 1;
                if let Some(l) = &self.ledger {
                    l.insert(d, &dest);
                }
                let mut r = described(
                    Record::new(Outcome::Delivered, object.session, object.object),
                    d,
                );
                r.path = Some(dest.clone());
                r.elapsed_ms = Some(elapsed.as_millis() as u64);
                let push = match (&self.push, push) {
                    (Some(p), _) if !p.pushes(d.kind) => None,
                    (Some(_), Some(item)) => Some(item),
                    (Some(_), None) if d.kind == ObjectKind::Stix => {
                        Some(crate::misp_push::PushItem::Stix { path: dest.clone() })
                    }
                    _ => None,
                };
                let job = self.dest.hooks.for_kind(d.kind).map(|hook| HookJob {
                    command: hook.clone(),
                    path: dest,
                    kind: d.kind,
                    blake3: r.blake3.clone().unwrap_or_default(),
                    record: r.clone(),
                });
                let push = push.map(|item| (item, r.clone()));
                self.record(r);
                if let (Some(pusher), Some((item, r))) = (&self.push, push) {
                    pusher.submit(item, r);
                }
                if let (Some(pool), Some(job)) = (&self.hooks, job) {
                    pool.submit(job);
                }
                if d.kind == ObjectKind::ImageSignature {
                    self.signature_settled(base_name(&d.name), None);
                }
            }
            Err(reason) => {
                if !staged.as_os_str().is_empty() {
                    let _ = std::fs::remove_file(staged);
                }
                self.record_failure(object, Some(d), reason);
            }
        }
    }

    /// Moves a verified staging file to where its kind belongs; returns the delivered path.
    fn place(&mut self, s: &Staged) -> Result<PathBuf, String> {
        let d = &s.descriptor;
        let base = d.name.rsplit('/').next().unwrap_or(&d.name).to_string();
        match d.kind {
            ObjectKind::File => {
                let dest = safe_destination(&self.dest.files, &d.name)?;
                if let Ok(existing) = std::fs::symlink_metadata(&dest) {
                    let newer = existing
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |t| t.as_secs() as i64);
                    if d.mtime < newer {
                        return Err(format!(
                            "{} already holds a newer version (modified {newer}, this one {}); not replaced",
                            dest.display(),
                            d.mtime
                        ));
                    }
                }
                if d.mtime > 0 {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(d.mtime as u64);
                    let _ = s.file.set_modified(t);
                }
                let perms = self.dest.permissions.files;
                publish(&s.file, &s.path, &dest, &perms)
                    .map_err(|e| format!("cannot publish to {}: {e}", dest.display()))?;
                Ok(dest)
            }
            ObjectKind::Misp => unreachable!("MISP events are delivered in batches by flush"),
            ObjectKind::Stix => {
                let bytes = read_document(&s.path, d.size, self.max_document)?;
                let _ = std::fs::remove_file(&s.path);
                let stored = self
                    .stix
                    .deliver_bundle(&bytes)
                    .map_err(|e| format!("refused by the STIX store: {e}"))?;
                if let (Some(a), Some(name)) = (&self.archive, stored.file_name()) {
                    let name = name.to_string_lossy();
                    if let Err(e) = a.store(gapferry_feeds::archive::STIX, &name, &bytes) {
                        tracing::warn!(error = %e, "bundle delivered but not archived");
                    }
                }
                Ok(stored)
            }
            ObjectKind::Image => {
                s.file
                    .sync_all()
                    .map_err(|e| format!("cannot fsync the staged image: {e}"))?;
                // The same check the sender ran before sending.
                gapferry_feeds::precheck::check_image(&s.path, &base)
                    .map_err(|e| format!("refused by the image store: {e}"))?;
                let sig = self.signatures_dir.join(format!("{base}.sig"));
                let sig = sig.exists().then_some(sig);
                let delivered = self
                    .images
                    .deliver_image(&s.path, &base, sig.as_deref())
                    .map_err(|e| format!("refused by the image store: {e}"))?;
                if let Some(sig) = sig {
                    let _ = std::fs::remove_file(sig);
                }
                tracing::info!(image = %escape(&delivered.stem), sha256 = %delivered.sha256, latest = %escape(&delivered.latest_stem), "image stored; its sha256 is the LXD fingerprint");
                Ok(delivered.path)
            }
            ObjectKind::ImageSignature => {
                // Kept until its image arrives, which the sender sends right after it.
                let dest = self.signatures_dir.join(&base);
                let perms = self.dest.permissions.images;
                publish(&s.file, &s.path, &dest, &perms)
                    .map_err(|e| format!("cannot keep the signature: {e}"))?;
                Ok(dest)
            }
        }
    }

    /// Verifies an image's signature against the keyring; on failure the signature is
    /// dropped and the reason says what to do.
    fn check_signature(
        &self,
        verifier: &Verifier,
        image: &Path,
        base: &str,
        sig: Option<&Path>,
    ) -> Result<(), (String, Cause)> {
        let Some(sig) = sig else {
            self.metrics.image_signature("missing");
            return Err((
                format!(
                    "not published: no signature {base}.sig arrived with the image and [images] keyring ({}) requires one; put the publisher's .sig beside the image in the outbox and send both again",
                    verifier.keyring().display()
                ),
                Cause::Signature,
            ));
        };
        match verifier.verify(image, sig) {
            Ok(good) => {
                self.metrics.image_signature("good");
                tracing::info!(image = %escape(base), key = %good.fingerprint, signer = %escape(&good.signer), "image signature verified");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(sig);
                self.metrics.image_signature("bad");
                Err((
                    format!(
                        "not published: its signature does not verify against [images] keyring {}: {e}",
                        verifier.keyring().display()
                    ),
                    Cause::Signature,
                ))
            }
        }
    }

    fn abort(&mut self, object: ObjectRef, reason: String, cause: Option<Cause>) {
        if let Some(s) = self.staged.remove(&object) {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure_because(object, Some(&s.descriptor), reason, cause);
        }
    }

    fn record_failure(&mut self, object: ObjectRef, d: Option<&ObjectDescriptor>, reason: String) {
        self.record_failure_because(object, d, reason, None);
    }

    /// Records a failure whose `cause` is known.
    fn record_failure_because(
        &mut self,
        object: ObjectRef,
        d: Option<&ObjectDescriptor>,
        reason: String,
        cause: Option<Cause>,
    ) {
        tracing::warn!(
            object = %object,
            name = d.map(|d| escape(&d.name).into_owned()),
            kind = d.map(|d| d.kind.as_str()),
            size = d.map(|d| d.size),
            blake3 = d.map(|d| blake3::Hash::from(d.blake3).to_hex().to_string()),
            loss_rate = self.loss.get(&object.session).copied(),
            cause = cause.map(Cause::as_str),
            %reason,
            "object failed"
        );
        self.summary.failed += 1;
        let mut r = Record::new(Outcome::Failed, object.session, object.object);
        if let Some(d) = d {
            r = described(r, d);
        }
        r.reason = Some(reason.clone());
        r.cause = cause;
        self.record(r);
        if let Some(d) = d.filter(|d| d.kind == ObjectKind::ImageSignature) {
            self.signature_settled(base_name(&d.name), Some(&reason));
        }
    }

    fn record(&mut self, r: Record) {
        let outcome = serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.metrics.object(r.kind.as_deref(), &outcome);
        if r.outcome == Outcome::Delivered {
            self.metrics.delivered_bytes.inc_by(r.size.unwrap_or(0));
        }
        append_record(&self.records, &r);
        self.summary.note(&r);
    }

    /// Drops every incomplete object's staging file (at shutdown).
    pub fn abandon_all(&mut self, reason: &str) {
        self.flush();
        let waiting: Vec<String> = self.awaiting_signature.keys().cloned().collect();
        for sig in waiting {
            self.signature_settled(&sig, Some(reason));
        }
        let objects: Vec<ObjectRef> = self.staged.keys().copied().collect();
        for o in objects {
            self.abort(o, reason.to_string(), Some(Cause::Interrupted));
        }
    }
}

fn append_record(log: &Mutex<RecordLog>, r: &Record) {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = log.append(r) {
        tracing::error!(path = %log.path().display(), "cannot append to the record log: {e}");
    }
}

/// Reads a verified staged document (MISP event, STIX bundle) for its store's checks.
fn read_document(path: &Path, size: u64, limit: u64) -> Result<Vec<u8>, String> {
    if size > limit {
        return Err(format!("a {size}-byte document is above the {limit}-byte limit for MISP and STIX objects; raise [limits] max_document in the receiver's configuration, or send it as kind `file`"));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the staged object: {e}"))?;
    Ok(bytes)
}

/// The last component of an object name.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn described(mut r: Record, d: &ObjectDescriptor) -> Record {
    r.kind = Some(d.kind.to_string());
    r.name = Some(d.name.clone());
    r.size = Some(d.size);
    r.blake3 = Some(blake3::Hash::from(d.blake3).to_hex().to_string());
    r
}

/// `root/name`, refusing any symbolic link planted on the way (never followed) and any
/// existing path component that is not a directory.
fn safe_destination(root: &Path, name: &str) -> Result<PathBuf, String> {
    let mut path = root.to_path_buf();
    let components: Vec<&str> = name.split('/').collect();
    for (i, c) in components.iter().enumerate() {
        path.push(c);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "refusing to deliver through the symbolic link {}; remove it",
                    path.display()
                ))
            }
            Ok(m) if i + 1 < components.len() && !m.is_dir() => {
                return Err(format!(
                    "{} is in the way: it is not a directory",
                    path.display()
                ))
            }
            Ok(m) if i + 1 == components.len() && m.is_dir() => {
                return Err(format!("{} is a directory; not replaced", path.display()))
            }
            _ => {}
        }
    }
    Ok(path)
}

/// Gives `staged` the mode and group of `perms`, fsyncs it, renames it to `dest`
/// (creating parents with `perms`' directory mode) and fsyncs the directory.
fn publish(file: &File, staged: &Path, dest: &Path, perms: &Publish) -> io::Result<()> {
    perms.apply_to_file(file)?;
    file.sync_all()?;
    let parent = dest.parent().expect("dest is under the files directory");
    perms.create_dir_all(parent)?;
    std::fs::rename(staged, dest)?;
    File::open(parent)?.sync_all()
}
