//! Turning assembler events into deliveries: the [`Delivery`] owns the rooms below and
//! routes each event to the one whose job it is.
//!
//! - `staging`: disk-space and size checks, the staging file, in-order blake3 hashing.
//! - `small`: small MISP events and STIX bundles reassembled in memory, not on disk.
//! - `placing`: verification, then by kind into the STIX store, the image store or the
//!   plain-file store ([`gapferry_feeds::FileStore`]), each by atomic rename with the
//!   kind's configured mode and group (never the sender's).
//! - `group`: group commit of small plain files (durable together, then renamed, then
//!   recorded), closed with the MISP batch.
//! - `misp_batch`: MISP events into the feed, in batches.
//! - `signatures`: an image waits for its signature when `[images] keyring` is set.
//! - `outcomes`: the record of every outcome, its metrics, post-delivery hooks and
//!   pushes into the high-side MISP, the run's [`Summary`].
//! - `session_events`: what sender sessions report (heartbeats and the link state,
//!   refusals, losses, objects delivered before).
//!
//! Nothing reaches a delivery directory before its blake3 matches the descriptor.

use crate::cause::Cause;
use crate::destinations::Destinations;
use crate::hooks::HookPool;
use crate::records::{RecordLog, STATE_DIR};
use gapferry_common::compress::decompress_block;
use gapferry_common::wire::Codec;
use gapferry_common::{Event, ObjectDescriptor, ObjectRef};
use gapferry_feeds::{FileStore, ImageStore, MispFeed, StixStore, Verifier};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod group;
mod misp_batch;
mod outcomes;
mod placing;
mod session_events;
mod signatures;
mod small;
mod staging;

pub use outcomes::{Summary, SUMMARY_NOTABLE};
pub use staging::default_block_threads;
use staging::Staged;

/// Directory under the state directory holding incomplete objects.
pub const STAGING_DIR: &str = "staging";
/// Directory under the state directory holding image signatures until their image arrives.
pub const SIGNATURES_DIR: &str = "signatures";
/// Free space always left on the delivery filesystem, in bytes.
pub const DISK_RESERVE: u64 = 8 << 20;
/// Largest MISP event or STIX bundle read into memory for checking, in bytes, by default
/// (`[limits] max_document`); also the most bytes of MISP events one batch holds.
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// A verified MISP event waiting for its batch: which object, its descriptor, when it
/// started, its bytes.
type PendingEvent = (ObjectRef, ObjectDescriptor, Instant, Vec<u8>);

/// The stores each kind is delivered into.
struct Stores {
    feed: MispFeed,
    stix: StixStore,
    images: ImageStore,
    files: FileStore,
    archive: Option<gapferry_feeds::Archive>,
    /// `[images] keyring`: images must carry a signature that verifies.
    verifier: Option<Verifier>,
}

/// Writes verified objects under `--out` and records every outcome.
pub struct Delivery {
    dest: Destinations,
    stores: Stores,
    state_dir: PathBuf,
    staging_dir: PathBuf,
    signatures_dir: PathBuf,
    records: Arc<Mutex<RecordLog>>,
    hooks: Option<HookPool>,
    push: Option<crate::misp_push::Pusher>,
    metrics: crate::metrics::ReceiverMetrics,
    ledger: Option<Arc<crate::ledger::DeliveredLedger>>,
    feed_tracker: crate::feedcare::SharedTracker,
    _feed_keeper: Option<crate::feedcare::KeeperHandle>,
    pending_misp: Vec<PendingEvent>,
    pending_misp_bytes: u64,
    group: group::FileGroup,
    max_document: u64,
    loss: HashMap<u64, f64>,
    staged: HashMap<ObjectRef, Staged>,
    /// Verified images waiting for their signature, which is still being received, by
    /// the signature's base name.
    awaiting_signature: HashMap<String, (ObjectRef, Staged)>,
    summary: Summary,
    /// Where written blocks' buffers go back to the assembler (see `staging::recycle`).
    spare_blocks: Option<crossbeam_channel::Sender<Vec<u8>>>,
    /// Threads writing and hashing big objects' blocks (see `staging::pool`).
    block_writers: staging::BlockWriters,
}

fn invalid_input(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// Creates the delivery and state directories; readers (MISP, LXD) must traverse every
/// directory the receiver creates on the way to a delivery, the state directory is the
/// receiver's own.
fn create_dirs(out: &Path, dest: &Destinations, state: &Path) -> io::Result<()> {
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
    for dir in [STAGING_DIR, SIGNATURES_DIR] {
        std::fs::create_dir_all(state.join(dir))?;
    }
    // Staging files of a previous run can never complete: their state is gone.
    for entry in std::fs::read_dir(state.join(STAGING_DIR))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

impl Stores {
    /// The stores `dest` names, the image keyring checked.
    fn open(dest: &Destinations, state: &Path) -> io::Result<Self> {
        let perms = dest.permissions;
        let verifier = match &dest.image_keyring {
            Some(keyring) => {
                let v = Verifier::new(keyring);
                v.check()
                    .map_err(|e| invalid_input(format!("[images] {e}")))?;
                Some(v)
            }
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
        let stix = StixStore::new(&dest.stix)
            .with_publish(perms.stix)
            .with_layout(dest.stix_layout.clone());
        // Bundles staged for a group the previous run never committed.
        match stix.remove_stale_staging() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "uncommitted STIX staging files of a previous run removed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot clear stale STIX staging files"),
        }
        Ok(Stores {
            feed,
            stix,
            images: ImageStore::new(&dest.images, dest.keep_images).with_publish(perms.images),
            files: FileStore::new(&dest.files, perms.files),
            archive,
            verifier,
        })
    }
}

impl Delivery {
    /// Prepares delivery under `out`, creating its directories and clearing stale staging files.
    pub fn open(
        out: &Path,
        dest: Destinations,
        metrics: crate::metrics::ReceiverMetrics,
    ) -> io::Result<Self> {
        dest.check_separate(out).map_err(invalid_input)?;
        let state = out.join(STATE_DIR);
        create_dirs(out, &dest, &state)?;
        let stores = Stores::open(&dest, &state)?;
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
                options.prepare().map_err(invalid_input)?,
                records.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        let feed_tracker = crate::feedcare::SharedTracker::default();
        let keeper = crate::feedcare::FeedKeeper::new(
            &state,
            &dest.misp,
            dest.permissions.misp,
            stores.archive.clone().map(|a| (a, dest.archive.keep)),
            feed_tracker.clone(),
            metrics.clone(),
        )
        .spawn()?;
        Ok(Delivery {
            stores,
            feed_tracker,
            _feed_keeper: Some(keeper),
            dest,
            staging_dir: state.join(STAGING_DIR),
            signatures_dir: state.join(SIGNATURES_DIR),
            state_dir: state,
            records,
            hooks,
            push,
            metrics,
            ledger: None,
            pending_misp: Vec::new(),
            pending_misp_bytes: 0,
            group: Default::default(),
            max_document: MAX_DOCUMENT,
            loss: HashMap::new(),
            staged: HashMap::new(),
            awaiting_signature: HashMap::new(),
            summary: Summary::default(),
            spare_blocks: None,
            block_writers: Default::default(),
        })
    }

    /// Sets the largest MISP event or STIX bundle read into memory, which is also the
    /// bytes of MISP events one feed update holds.
    pub fn set_max_document(&mut self, bytes: u64) {
        self.max_document = bytes;
    }

    /// Notes every delivery in `ledger`.
    pub fn set_ledger(&mut self, ledger: Arc<crate::ledger::DeliveredLedger>) {
        ledger.set_archive(self.stores.archive.clone());
        self.ledger = Some(ledger);
    }

    /// What happened so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Commits what waits in the open group, then returns the summary: verified objects
    /// are never left behind unrecorded because the delivery ended.
    pub fn into_summary(mut self) -> Summary {
        self.flush();
        self.summary
    }

    /// Objects being written now or waiting for their group's commit.
    pub fn in_progress(&self) -> usize {
        self.staged.len() + self.group.len() + self.pending_misp.len()
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
            } => self.session_refused(session, object, reason),
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
            } => self.heartbeat(session, &heartbeat, received, loss_rate),
            Event::ObjectStarted { object, descriptor } => self.started(object, descriptor),
            Event::BlockDecoded {
                object,
                block,
                codec,
                plain_len,
                data,
            } => self.block_decoded(object, block, codec, plain_len, data),
            Event::ObjectComplete { object, blake3 } => {
                if let Some(mut staged) = self.staged.remove(&object) {
                    // The hash to verify against: the descriptor's, or the one its last
                    // copies brought when the sender read the object once.
                    staged.descriptor.blake3 = blake3;
                    self.finish(object, staged);
                }
            }
            Event::ObjectFailed {
                object,
                descriptor,
                reason,
                shortfall,
            } => self.object_failed(object, descriptor, reason, shortfall),
            // The pipeline answers announcements from the ledger; none reaches here.
            Event::ObjectAnnounced { .. } => {}
            Event::ObjectAlreadyDelivered { object, descriptor } => {
                self.already_delivered(object, &descriptor)
            }
            Event::ObjectLost {
                object,
                through,
                named,
            } => self.lost(object, through, named),
        }
        if self.group_due() {
            self.flush();
        }
    }

    /// Stages a new object, or records why it cannot be.
    fn started(&mut self, object: ObjectRef, descriptor: ObjectDescriptor) {
        if let Err(e) = self.start(object, descriptor.clone()) {
            self.record_failure_because(
                object,
                Some(&descriptor),
                format!("cannot stage the object: {e}"),
                Some(Cause::Receiver),
            );
        }
    }

    /// Decompresses and writes one block, failing the object when it cannot.
    fn block_decoded(
        &mut self,
        object: ObjectRef,
        block: u32,
        codec: Codec,
        plain_len: u32,
        data: Vec<u8>,
    ) {
        if !self.staged.contains_key(&object) {
            return; // already failed
        }
        let result = decompress_block(codec, data, plain_len)
            .map_err(|e| (format!("block {block}: {e}"), None))
            .and_then(|plain| {
                self.write_block(object, block, plain).map_err(|e| {
                    let reason = format!("cannot write block {block}: {e}");
                    (reason, Some(Cause::Receiver))
                })
            });
        if let Err((reason, cause)) = result {
            self.abort(object, reason, cause);
        }
    }

    fn abort(&mut self, object: ObjectRef, reason: String, cause: Option<Cause>) {
        if let Some(s) = self.staged.remove(&object) {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure_because(object, Some(&s.descriptor), reason, cause);
        }
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

/// The last component of an object name.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
