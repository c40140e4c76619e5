//! A throw-away OpenPGP signer for the tests: a key generated with `gpg` in a temporary
//! GNUPGHOME, its public keyring in binary form (what `[images] keyring` takes), and
//! detached signatures as MISP-airgap's build.sh makes them (`gpg --detach-sign`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A signing key in its own GNUPGHOME.
pub struct TestSigner {
    home: tempfile::TempDir,
    /// The public keyring (binary) holding only this key.
    pub keyring: PathBuf,
}

/// Whether `gpg` and `gpgv` can run here; `Err` names what is missing.
pub fn available() -> Result<(), String> {
    for (tool, package) in [("gpg", "gnupg"), ("gpgv", "gpgv")] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("`{tool}` not found (Debian package {package})"));
        }
    }
    Ok(())
}

pub use crate::prereq::require;

impl TestSigner {
    /// Generates an ed25519 signing key for `uid`; its public keyring is written to
    /// `<home>/pubring-export.gpg`.
    pub fn new(uid: &str) -> Result<TestSigner, String> {
        available()?;
        let home = tempfile::Builder::new()
            .prefix("gapferry-gpg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--quiet", "--passphrase", "", "--quick-gen-key"])
            .args([uid, "ed25519", "sign", "never"])
            .output()
            .map_err(|e| format!("gpg: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "gpg --quick-gen-key failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let keyring = home.path().join("pubring-export.gpg");
        let out = Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--export", "--output"])
            .arg(&keyring)
            .output()
            .map_err(|e| format!("gpg: {e}"))?;
        if !out.status.success() || !keyring.is_file() {
            return Err(format!(
                "gpg --export failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(TestSigner { home, keyring })
    }

    /// The GNUPGHOME holding the secret key.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Writes `<file>.sig`, a binary detached signature of `file`; returns its path.
    pub fn sign(&self, file: &Path) -> PathBuf {
        let mut sig = file.as_os_str().to_owned();
        sig.push(".sig");
        let sig = PathBuf::from(sig);
        let _ = std::fs::remove_file(&sig);
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--yes", "--detach-sign", "--output"])
            .arg(&sig)
            .arg(file)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg --detach-sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sig
    }
}

impl Drop for TestSigner {
    /// Stops the gpg-agent that key generation started in this GNUPGHOME.
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
