//! gapferry's content formats, on both sides of the diode.
//!
//! Low side: [`kind`] decides from content what a file is (MISP, STIX, LXD image, plain
//! file) and cuts multi-event MISP exports into one document per event.
//!
//! High side: [`misp_feed`] keeps a MISP local-feed directory (`<uuid>.json`,
//! `manifest.json`, `hashes.csv`, equal to PyMISP's feed tooling output, see
//! [`misp_event`]), [`stix_store`] keeps STIX 2.0 and 2.1 bundles (plain, or as OpenCTI's
//! diode-import connector reads them), and [`image_store`] keeps LXD images in
//! MISP-airgap's server layout; [`signature`] checks an image's detached OpenPGP
//! signature (with `gpgv`) on either side; [`archive`] keeps the newest delivered version
//! of each event and bundle so a consumed feed can be republished. Every write is a staging
//! file in the destination
//! directory given its [`Publish`] mode and group, fsync, then rename.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod file_store;
mod fsutil;
pub mod image_store;
mod json_scan;
pub mod kind;
pub mod misp_event;
pub mod misp_feed;
pub mod misp_to_feed;
pub mod precheck;
mod pyformat;
pub mod signature;
pub mod stix_store;

pub use archive::{Archive, ArchiveError};
pub use file_store::{FileStore, FileStoreError};
pub use fsutil::{Publish, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE};
pub use image_store::{DeliveredImage, ImageError, ImageStore};
pub use kind::{
    detect, detect_bytes, detect_with, feed_event_files, image_signature, signature_target,
    split_misp, Compression, DetectError, DetectLimits, Detected, MispEventDoc, MispShape,
};
pub use misp_event::{parse_event, EventError, ManifestEntry, MispEvent};
pub use misp_feed::{
    DeliveredEvent, EventOutcome, FeedListing, FeedSummary, MispBatch, MispError, MispFeed,
};
pub use signature::{GoodSignature, SignatureError, Verifier};
pub use stix_store::{
    OpenCtiImport, StagedBundle, Staging, StixError, StixLayout, StixSpec, StixStore, StoredBundle,
};
