//! Checks a detached OpenPGP signature (an image's `.sig`) against a public keyring, by
//! running `gpgv`, GnuPG's verify-only tool, with a fixed argument vector.
//!
//! Why `gpgv` rather than an OpenPGP library: it is the verifier MISP-airgap's own
//! instructions rely on (`gpg --verify`), it is packaged and kept patched by the
//! distribution, it trusts exactly the keys of the keyring it is given (no trust database,
//! no key server, no agent), and it keeps a large cryptographic dependency out of both
//! binaries. The call is made safe by construction:
//! - the argv is `gpgv --homedir <empty temp dir> --status-fd 1 --keyring
//!   <keyring> -- <signature> <data>`, all paths the caller controls, no shell, a cleared
//!   environment (`LC_ALL=C`, the caller's `PATH` only);
//! - the verdict comes from the machine-readable status lines, never from exit codes or
//!   human text alone: valid only when gpgv exits 0, every signature in the file reports
//!   `GOODSIG` and `VALIDSIG`, and none reports `BADSIG`, `ERRSIG`, `NO_PUBKEY`,
//!   `EXPSIG`, `EXPKEYSIG`, `REVKEYSIG` or `NODATA`;
//! - a run longer than the timeout is killed and reported as such.
//!
//! The keyring must be binary (`gpg --export KEYID > publisher.gpg`, or `gpg --dearmor`
//! of an `.asc` file): gpgv does not read ASCII-armoured keyrings, so one is refused up
//! front with that advice.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The verifier program, looked up in `PATH`.
pub const GPGV: &str = "gpgv";
/// Default time a verification may take (a multi-GB image is hashed in full).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Most bytes of gpgv's status and error output kept.
const OUTPUT_LIMIT: u64 = 64 << 10;

/// Why a signature was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The keyring file cannot be used.
    #[error("keyring {}: {reason}", path.display())]
    Keyring {
        /// The keyring.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The signature does not match the data (tampered image or signature).
    #[error("BAD signature by key {key}: the image or its signature was altered; do not use this image, fetch it and its .sig again from the publisher")]
    Bad {
        /// The signing key id gpgv names.
        key: String,
    },
    /// The signing key is not in the keyring.
    #[error("signed by key {key}, which is not in the keyring; add the publisher's key to the keyring if (and only if) you trust it")]
    UnknownKey {
        /// The signing key id.
        key: String,
    },
    /// The signature or its key expired, or the key was revoked.
    #[error(
        "signature not valid: {status}; ask the publisher for a build signed with a current key"
    )]
    Expired {
        /// The status keyword (`EXPSIG`, `EXPKEYSIG`, `REVKEYSIG`).
        status: String,
    },
    /// The `.sig` holds no OpenPGP signature gpgv could read.
    #[error("the .sig file holds no readable OpenPGP signature (gpgv: {detail}); fetch the signature again")]
    Unreadable {
        /// gpgv's own words.
        detail: String,
    },
    /// gpgv could not be run.
    #[error("cannot run {program}: {reason}; install it (Debian package `gpgv`)")]
    NotRunnable {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// gpgv ran longer than allowed and was killed.
    #[error("gpgv took longer than {0:?} and was stopped; check the machine's load or raise the timeout")]
    Timeout(Duration),
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodSignature {
    /// Fingerprint of the signing (sub)key, from `VALIDSIG`.
    pub fingerprint: String,
    /// The signer's user id, from `GOODSIG`.
    pub signer: String,
}

/// A keyring and how to run the verifier against it.
#[derive(Debug, Clone)]
pub struct Verifier {
    keyring: PathBuf,
    program: PathBuf,
    timeout: Duration,
}

impl Verifier {
    /// A verifier trusting exactly the keys of `keyring` (an absolute path is kept as is,
    /// a relative one is made absolute: gpgv would look for it in its home directory).
    pub fn new(keyring: impl Into<PathBuf>) -> Self {
        let keyring = keyring.into();
        let keyring = if keyring.is_absolute() {
            keyring
        } else {
            std::env::current_dir()
                .map(|d| d.join(&keyring))
                .unwrap_or(keyring)
        };
        Verifier {
            keyring,
            program: PathBuf::from(GPGV),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same verifier with another time limit per verification.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same verifier running `program` instead of `gpgv` from `PATH`.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The keyring.
    pub fn keyring(&self) -> &Path {
        &self.keyring
    }

    /// Checks that the keyring is a readable, binary, non-empty file (at start-up, so a
    /// misconfiguration is seen before the first image).
    pub fn check_keyring(&self) -> Result<(), SignatureError> {
        let bad = |reason: String| SignatureError::Keyring {
            path: self.keyring.clone(),
            reason,
        };
        let mut head = [0u8; 64];
        let n = std::fs::File::open(&self.keyring)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| bad(format!("{e}; give the publisher's public key file")))?;
        if n == 0 {
            return Err(bad(
                "empty; export the publisher's public key into it".into()
            ));
        }
        if head[..n].starts_with(b"-----BEGIN PGP") {
            return Err(bad(
                "ASCII-armoured; gpgv reads binary keyrings only: convert it with \
                 `gpg --dearmor < key.asc > publisher.gpg` and name the .gpg file"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks the keyring and that the verifier program runs (`gpgv --version`), at
    /// start-up.
    pub fn check(&self) -> Result<(), SignatureError> {
        self.check_keyring()?;
        let runs = Command::new(&self.program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match runs {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(SignatureError::NotRunnable {
                program: self.program.display().to_string(),
                reason: format!("`--version` exited with {s}"),
            }),
            Err(e) => Err(SignatureError::NotRunnable {
                program: self.program.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Verifies `signature` (a detached signature) over the file `data`.
    pub fn verify(&self, data: &Path, signature: &Path) -> Result<GoodSignature, SignatureError> {
        self.check_keyring()?;
        let not_runnable = |reason: String| SignatureError::NotRunnable {
            program: self.program.display().to_string(),
            reason,
        };
        // An empty home: gpgv reads no option file and writes nothing of its own.
        let home = tempfile::Builder::new()
            .prefix("gapferry-gpgv")
            .tempdir()
            .map_err(|e| not_runnable(format!("cannot create its home directory: {e}")))?;
        let mut cmd = Command::new(&self.program);
        cmd.env_clear()
            .env("LC_ALL", "C")
            .arg("--homedir")
            .arg(home.path())
            .args(["--status-fd", "1"])
            .arg("--keyring")
            .arg(&self.keyring)
            .arg("--")
            .arg(signature)
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let mut child = cmd.spawn().map_err(|e| not_runnable(e.to_string()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let read = |r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.take(OUTPUT_LIMIT).read_to_string(&mut s);
                s
            })
        };
        let out = read(Box::new(stdout));
        let err = read(Box::new(stderr));
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SignatureError::Timeout(self.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(not_runnable(e.to_string())),
            }
        };
        let status_text = out.join().unwrap_or_default();
        let err_text = err.join().unwrap_or_default();
        verdict(status.success(), &status_text, &err_text)
    }
}

/// Reads gpgv's status lines (`[GNUPG:] KEYWORD args`) into a verdict.
fn verdict(exit_ok: bool, status: &str, stderr: &str) -> Result<GoodSignature, SignatureError> {
    let mut signatures = 0;
    let mut good = 0;
    let mut valid: Option<GoodSignature> = None;
    let mut signer = String::new();
    let mut unknown_key: Option<String> = None;
    let mut unreadable: Option<String> = None;
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let (keyword, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let first = args.split(' ').next().unwrap_or("").to_string();
        match keyword {
            "NEWSIG" => signatures += 1,
            "GOODSIG" => {
                good += 1;
                signer = args.split_once(' ').map_or("", |(_, u)| u).to_string();
            }
            "VALIDSIG" => {
                valid = Some(GoodSignature {
                    fingerprint: first,
                    signer: signer.clone(),
                })
            }
            "BADSIG" => return Err(SignatureError::Bad { key: first }),
            "EXPSIG" | "EXPKEYSIG" | "REVKEYSIG" => {
                return Err(SignatureError::Expired {
                    status: keyword.to_string(),
                })
            }
            "NO_PUBKEY" => unknown_key = Some(first),
            "ERRSIG" | "NODATA" => unreadable = Some(rest.to_string()),
            _ => {}
        }
    }
    if let Some(key) = unknown_key {
        return Err(SignatureError::UnknownKey { key });
    }
    if let Some(rest) = unreadable {
        return Err(SignatureError::Unreadable {
            detail: summary(stderr, &rest),
        });
    }
    match valid {
        Some(v) if exit_ok && good >= 1 && good == signatures.max(1) => Ok(v),
        _ => Err(SignatureError::Unreadable {
            detail: summary(stderr, "no GOODSIG and VALIDSIG for every signature"),
        }),
    }
}

/// The last line of gpgv's human output, or `fallback`.
fn summary(stderr: &str, fallback: &str) -> String {
    stderr
        .lines()
        .rev()
        .map(|l| l.trim().trim_start_matches("gpgv:").trim())
        .find(|l| !l.is_empty())
        .unwrap_or(fallback)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[GNUPG:] NEWSIG\n[GNUPG:] KEY_CONSIDERED ABCD 0\n\
        [GNUPG:] GOODSIG 6318E58BA949C126 Test Signer <t@example.invalid>\n\
        [GNUPG:] VALIDSIG BD00A6AE5284D2EFA1E9E24F6318E58BA949C126 2026-11-29 1 0 4 0 22 8 00 BD00\n";

    #[test]
    fn a_good_and_valid_signature_with_exit_zero_passes() {
        let v = verdict(true, GOOD, "").unwrap();
        assert_eq!(v.fingerprint, "BD00A6AE5284D2EFA1E9E24F6318E58BA949C126");
        assert_eq!(v.signer, "Test Signer <t@example.invalid>");
        // The same lines with a failing exit code are not enough.
        assert!(verdict(false, GOOD, "").is_err());
    }

    #[test]
    fn failure_states_are_named() {
        let bad = "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 6318E58BA949C126 T <t@x>\n";
        assert_eq!(
            verdict(false, bad, ""),
            Err(SignatureError::Bad {
                key: "6318E58BA949C126".into()
            })
        );
        let unknown = "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG 63 22 8 00 1 9 BD\n[GNUPG:] NO_PUBKEY 63\n";
        assert_eq!(
            verdict(false, unknown, ""),
            Err(SignatureError::UnknownKey { key: "63".into() })
        );
        let nodata = "[GNUPG:] NODATA 1\n";
        assert!(matches!(
            verdict(false, nodata, "gpgv: no valid OpenPGP data found.\n"),
            Err(SignatureError::Unreadable { detail }) if detail == "no valid OpenPGP data found."
        ));
        for kw in ["EXPSIG", "EXPKEYSIG", "REVKEYSIG"] {
            let s = format!("[GNUPG:] NEWSIG\n[GNUPG:] {kw} 63 T\n{GOOD}");
            assert!(matches!(
                verdict(true, &s, ""),
                Err(SignatureError::Expired { .. })
            ));
        }
    }

    #[test]
    fn every_signature_must_be_good_and_silence_is_not_success() {
        assert!(verdict(true, "", "").is_err());
        // Two signatures, one GOODSIG: refused even with a VALIDSIG and exit 0.
        let two = format!("[GNUPG:] NEWSIG\n{GOOD}");
        assert!(verdict(true, &two, "").is_err());
        // GOODSIG without VALIDSIG is not enough.
        let no_valid = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 63 T\n";
        assert!(verdict(true, no_valid, "").is_err());
        // Status keywords only count at the start of a status line.
        let forged = "x [GNUPG:] GOODSIG 63 T\nVALIDSIG AB\n";
        assert!(verdict(true, forged, "").is_err());
    }

    #[test]
    fn an_armoured_or_missing_keyring_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let asc = dir.path().join("k.asc");
        std::fs::write(&asc, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap();
        let e = Verifier::new(&asc).check_keyring().unwrap_err();
        assert!(e.to_string().contains("gpg --dearmor"), "{e}");
        let e = Verifier::new(dir.path().join("none"))
            .check_keyring()
            .unwrap_err();
        assert!(matches!(e, SignatureError::Keyring { .. }));
        let empty = dir.path().join("empty.gpg");
        std::fs::write(&empty, b"").unwrap();
        assert!(Verifier::new(&empty).check_keyring().is_err());
    }

    #[test]
    fn a_missing_program_is_reported_not_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let kr = dir.path().join("k.gpg");
        std::fs::write(&kr, [0x99u8, 0, 1]).unwrap();
        let data = dir.path().join("d");
        std::fs::write(&data, b"d").unwrap();
        let e = Verifier::new(&kr)
            .with_program(dir.path().join("no-such-gpgv"))
            .verify(&data, &data)
            .unwrap_err();
        assert!(matches!(e, SignatureError::NotRunnable { .. }), "{e}");
    }
}
