//! Image signatures under `[images] keyring`: an image is published only once its
//! detached signature verifies; an image complete before its signature (still being
//! received) waits for it, and fails when the signature fails or is lost.

use super::staging::Staged;
use super::{base_name, Delivery};
use crate::cause::Cause;
use crate::metrics::SignatureResult;
use gapferry_common::name::escape;
use gapferry_common::ObjectKind;

impl Delivery {
    /// Whether the signature `sig` (a base name) is being received now, and not kept yet.
    pub(super) fn signature_in_flight(&self, sig: &str) -> bool {
        let receiving = self.staged.values().any(|o| {
            o.descriptor.kind == ObjectKind::ImageSignature && base_name(&o.descriptor.name) == sig
        });
        receiving && !self.signatures_dir.join(sig).exists()
    }

    /// Verifies a staged image's signature against the keyring, when one is set; on
    /// failure the signature is dropped and the reason says what to do.
    pub(super) fn check_image_signature(&self, s: &Staged) -> Result<(), (String, Cause)> {
        let Some(verifier) = &self.stores.verifier else {
            return Ok(());
        };
        let base = base_name(&s.descriptor.name);
        let sig = self.signatures_dir.join(format!("{base}.sig"));
        let Some(sig) = sig.exists().then_some(sig) else {
            self.metrics.image_signature(SignatureResult::Missing);
            return Err((
                format!(
                    "not published: no signature {base}.sig arrived with the image and [images] keyring ({}) requires one; put the publisher's .sig beside the image in the outbox and send both again",
                    verifier.keyring().display()
                ),
                Cause::Signature,
            ));
        };
        match verifier.verify(&s.path, &sig) {
            Ok(good) => {
                self.metrics.image_signature(SignatureResult::Good);
                tracing::info!(image = %escape(base), key = %good.fingerprint, signer = %escape(&good.signer), "image signature verified");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&sig);
                self.metrics.image_signature(SignatureResult::Bad);
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

    /// Delivers (or fails) the image that waited for the signature `sig_name`, now
    /// placed or failed.
    pub(super) fn signature_settled(&mut self, sig_name: &str, failure: Option<&str>) {
        let Some((object, s)) = self.awaiting_signature.remove(sig_name) else {
            return;
        };
        match failure {
            None => self.deliver_staged(object, s),
            Some(why) => {
                let _ = std::fs::remove_file(&s.path);
                self.metrics.image_signature(SignatureResult::Missing);
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
}
