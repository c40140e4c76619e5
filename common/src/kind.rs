//! What an object is, which decides where the receiver delivers it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of an object, chosen by the sender and honoured by the receiver's delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// Any file, delivered under `files/` by its relative name.
    File,
    /// One MISP event (`{"Event": {...}}`).
    Misp,
    /// One STIX 2.1 bundle.
    Stix,
    /// A container image tarball (LXD unified image).
    Image,
    /// A detached signature travelling with an image.
    ImageSignature,
}

impl ObjectKind {
    /// The lower-case name used on the command line, in records and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::File => "file",
            ObjectKind::Misp => "misp",
            ObjectKind::Stix => "stix",
            ObjectKind::Image => "image",
            ObjectKind::ImageSignature => "image-signature",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "file" => Ok(ObjectKind::File),
            "misp" => Ok(ObjectKind::Misp),
            "stix" => Ok(ObjectKind::Stix),
            "image" => Ok(ObjectKind::Image),
            "image-signature" => Ok(ObjectKind::ImageSignature),
            other => Err(format!(
                "unknown kind {other:?}: expected file, misp, stix or image"
            )),
        }
    }
}
