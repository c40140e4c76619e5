//! The kind checks both sides run: the sender before a datagram leaves, so that what the
//! high side would refuse is refused on the low side with its reason, and the receiver
//! before it stores an object. One code path, so the two sides cannot diverge.
//!
//! - kind `stix`: a STIX 2.0 or 2.1 bundle ([`crate::stix_store::validate_bundle`]);
//! - kind `misp`: every event a document holds is one PyMISP's feed tooling accepts
//!   ([`crate::misp_event::parse_event_at`]);
//! - kind `image`: a name the image store can hold, gzip or xz compression, and a
//!   top-level `metadata.yaml` in the tar listing (an LXD unified image).

use crate::image_store::image_stem;
use crate::kind::{tar_has_metadata, Compression, DetectLimits};
use crate::misp_event::{parse_event_at, EventError};
use crate::stix_store::{validate_bundle, BundleInfo, StixError};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::SystemTime;
use thiserror::Error;

/// Why an image would be refused.
#[derive(Debug, Error)]
pub enum ImageRefusal {
    /// The name cannot name an image in the store.
    #[error("{0}")]
    Name(#[from] crate::image_store::ImageError),
    /// Neither gzip nor xz.
    #[error("it is neither gzip nor xz compressed: LXD unified images travel as .tar.gz or .tar.xz; send other files as kind `file`")]
    NotATarball,
    /// No `metadata.yaml` at the top of the tar listing.
    #[error("its tar listing has no top-level metadata.yaml within the first {entries} entries: it is not an LXD unified image; build it with `lxc image export`, or send it as kind `file`")]
    NoMetadata {
        /// Entries listed.
        entries: usize,
    },
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
}

/// Checks that the tarball at `path`, to be stored as `name`, is an LXD unified image.
pub fn check_image(path: &Path, name: &str) -> Result<(), ImageRefusal> {
    image_stem(name)?;
    let mut file = File::open(path)?;
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let compression = Compression::sniff(&head[..n]).ok_or(ImageRefusal::NotATarball)?;
    let reader = BufReader::with_capacity(1 << 16, io::Cursor::new(head[..n].to_vec()).chain(file));
    let limits = DetectLimits::default();
    let found = match compression {
        Compression::Gzip => tar_has_metadata(flate2::read::MultiGzDecoder::new(reader), &limits),
        Compression::Xz => tar_has_metadata(liblzma::read::XzDecoder::new(reader), &limits),
    };
    if found {
        Ok(())
    } else {
        Err(ImageRefusal::NoMetadata {
            entries: limits.max_tar_entries,
        })
    }
}

/// Checks that `json` is a STIX bundle the STIX store accepts.
pub fn check_stix(json: &[u8]) -> Result<BundleInfo, StixError> {
    validate_bundle(json)
}

/// Checks that `json`, one `{"Event": {...}}` document, is an event the MISP feed
/// accepts; `now` stands for the delivery time (defaults of missing fields).
pub fn check_misp_event(json: &[u8], now: SystemTime) -> Result<(), EventError> {
    parse_event_at(json, now).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tarball(dir: &Path, name: &str, member: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        let body = b"architecture: x86_64\ncreation_date: 1700000000\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, member, &body[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap().flush().unwrap();
        path
    }

    #[test]
    fn images_need_a_name_compression_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let good = tarball(dir.path(), "MISP_v2.5.1_abc.tar.gz", "metadata.yaml");
        check_image(&good, "MISP_v2.5.1_abc.tar.gz").unwrap();
        let e = check_image(&good, "latest_MISP.tar.gz").unwrap_err();
        assert!(e.to_string().contains("latest_"), "{e}");
        let nested = tarball(dir.path(), "x.tar.gz", "rootfs/metadata.yaml");
        let e = check_image(&nested, "x.tar.gz").unwrap_err();
        assert!(e.to_string().contains("metadata.yaml"), "{e}");
        let plain = dir.path().join("y.tar.gz");
        std::fs::write(&plain, b"not compressed at all").unwrap();
        let e = check_image(&plain, "y.tar.gz").unwrap_err();
        assert!(e.to_string().contains("neither gzip nor xz"), "{e}");
        let empty = dir.path().join("z.tar.gz");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            check_image(&empty, "z.tar.gz"),
            Err(ImageRefusal::NotATarball)
        ));
        // gzip of garbage: no tar listing.
        let garbage = dir.path().join("g.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&garbage).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(&[0xA5; 4096]).unwrap();
        enc.finish().unwrap();
        assert!(matches!(
            check_image(&garbage, "g.tar.gz"),
            Err(ImageRefusal::NoMetadata { .. })
        ));
    }

    #[test]
    fn stix_and_misp_checks_are_the_stores_own() {
        assert!(check_stix(br#"{"type":"report"}"#).is_err());
        assert!(check_stix(
            br#"{"type":"bundle","id":"bundle--5d0092c5-5f74-4287-9642-33f4c354e56d","objects":[]}"#
        )
        .is_ok());
        let now = SystemTime::now();
        assert!(check_misp_event(br#"{"Event":{"info":"x"}}"#, now).is_err());
        assert!(check_misp_event(
            br#"{"Event":{"uuid":"5a0a9aa9-23a4-4607-b6df-41a9950d210f","info":"x","Orgc":{"name":"o","uuid":"5a0a9aa9-23a4-4607-b6df-41a9950d210f"}}}"#,
            now
        )
        .is_ok());
    }
}
