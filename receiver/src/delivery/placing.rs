//! Placing a verified object where its kind belongs: the plain-file store, the STIX store
//! (and the archive), the image store, or the signatures directory where an image's
//! signature waits for its image. MISP events go to `misp_batch`; an image whose
//! signature is still being received waits in `signatures`.

use super::small::{discard, read_staged};
use super::staging::Staged;
use super::{base_name, Delivery};
use gapferry_common::name::escape;
use gapferry_common::{ObjectKind, ObjectRef};
use gapferry_feeds::StixLayout;
use std::path::{Path, PathBuf};

impl Delivery {
    /// Verifies a complete object, then batches it (MISP), holds it for its signature
    /// (an image with a keyring) or places it.
    pub(super) fn finish(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        if let Err(reason) = s.verify() {
            discard(&s);
            self.record_failure(object, Some(d), reason);
            return;
        }
        if d.kind == ObjectKind::Misp {
            self.batch_misp(object, s);
            return;
        }
        if d.kind == ObjectKind::Image && self.stores.verifier.is_some() {
            let sig = format!("{}.sig", base_name(&d.name));
            if self.signature_in_flight(&sig) {
                tracing::info!(object = %object, name = %escape(&d.name), "image complete; waiting for its signature, still being received");
                self.awaiting_signature.insert(sig, (object, s));
                return;
            }
        }
        self.deliver_staged(object, s);
    }

    /// Places a verified object, an image only once its signature verified (with a
    /// keyring), and records the outcome.
    pub(super) fn deliver_staged(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        if d.kind == ObjectKind::Image {
            if let Err((reason, cause)) = self.check_image_signature(&s) {
                let _ = std::fs::remove_file(&s.path);
                self.record_failure_because(object, Some(d), reason, Some(cause));
                return;
            }
        }
        if d.size <= super::group::SMALL_OBJECT {
            match d.kind {
                ObjectKind::File => return self.group_file(object, s),
                ObjectKind::Stix => return self.group_bundle(object, s),
                _ => {}
            }
        }
        let placed = self.place(&s);
        self.placed(object, d, s.started, placed, &s.path, None);
    }

    /// Moves a verified staging file to where its kind belongs; returns the delivered path.
    fn place(&mut self, s: &Staged) -> Result<PathBuf, String> {
        let d = &s.descriptor;
        match d.kind {
            ObjectKind::File => self
                .stores
                .files
                .deliver_file(&s.file, &s.path, &d.name, d.mtime)
                .map_err(|e| e.to_string()),
            ObjectKind::Misp => unreachable!("MISP events are delivered in batches by flush"),
            ObjectKind::Stix => self.place_bundle(s),
            ObjectKind::Image => self.place_image(s),
            ObjectKind::ImageSignature => {
                // Kept until its image arrives, which the sender sends right after it.
                let dest = self.signatures_dir.join(base_name(&d.name));
                let perms = self.dest.permissions.images;
                gapferry_feeds::file_store::publish_staged(&s.file, &s.path, &dest, &perms)
                    .map_err(|e| format!("cannot keep the signature: {e}"))?;
                Ok(dest)
            }
        }
    }

    /// Stores a STIX bundle (and archives it when the archive is on).
    fn place_bundle(&mut self, s: &Staged) -> Result<PathBuf, String> {
        let bytes = read_staged(s, self.max_document)?;
        discard(s);
        let stored = self
            .stores
            .stix
            .deliver_bundle(&bytes)
            .map_err(|e| format!("refused by the STIX store: {e}"))?;
        self.archive_bundles([(stored.as_path(), bytes.as_slice())]);
        Ok(stored)
    }

    /// Archives delivered STIX bundles (path in the store, bytes as they crossed) when
    /// the archive is on: as hard links of the stored files when the store writes the
    /// bundle as it crossed, on the archive's filesystem, with a mode nobody else may
    /// write through; otherwise (or when a link fails) as copies. A failure is logged:
    /// the bundle is delivered all the same.
    pub(super) fn archive_bundles<'a>(
        &self,
        delivered: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
    ) {
        use gapferry_feeds::archive::STIX;
        let Some(a) = &self.stores.archive else {
            return;
        };
        let link = self.dest.stix_layout == StixLayout::Plain
            && self.dest.permissions.stix.file_mode & 0o022 == 0
            && a.links_from(STIX, self.stores.stix.dir());
        let mut linked = false;
        for (path, bytes) in delivered {
            let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
                continue;
            };
            let linked_now = link && a.link(STIX, &name, path).is_ok();
            linked |= linked_now;
            if !linked_now {
                if let Err(e) = a.store(STIX, &name, bytes) {
                    tracing::warn!(error = %e, "bundle delivered but not archived");
                }
            }
        }
        if linked {
            if let Err(e) = a.sync_kind(STIX) {
                tracing::warn!(error = %e, "bundles delivered but their archive links may not be durable");
            }
        }
    }

    /// Stores an LXD image, with its signature when one was kept for it.
    fn place_image(&mut self, s: &Staged) -> Result<PathBuf, String> {
        let base = base_name(&s.descriptor.name).to_string();
        s.file
            .sync_all()
            .map_err(|e| format!("cannot fsync the staged image: {e}"))?;
        // The same check the sender ran before sending.
        gapferry_feeds::precheck::check_image(&s.path, &base)
            .map_err(|e| format!("refused by the image store: {e}"))?;
        let sig = self.signatures_dir.join(format!("{base}.sig"));
        let sig = sig.exists().then_some(sig);
        let delivered = self
            .stores
            .images
            .deliver_image(&s.path, &base, sig.as_deref())
            .map_err(|e| format!("refused by the image store: {e}"))?;
        if let Some(sig) = sig {
            let _ = std::fs::remove_file(sig);
        }
        tracing::info!(image = %escape(&delivered.stem), sha256 = %delivered.sha256, latest = %escape(&delivered.latest_stem), "image stored; its sha256 is the LXD fingerprint");
        Ok(delivered.path)
    }
}
