//! A private CA and a TLS server for 127.0.0.1 made with the `openssl` tool, for the tests
//! of the HTTPS clients (`misp-pull`, `[misp_push]`).

use crate::harness::ChildGuard;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and a server certificate for 127.0.0.1 it signed, as files in one directory.
pub struct TestPki {
    /// The CA certificate, what a client is told to trust.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl cannot run ({e}); install the openssl package"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl TestPki {
    /// Makes the CA (`ca.pem`) and the server's certificate (`srv.pem`, `srv.key`) in `dir`.
    pub fn make(dir: &Path) -> Result<TestPki, String> {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let ca = [
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gapferry test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ];
        openssl(dir, &[&["req", "-x509"], &ec[..], &ca[..]].concat())?;
        let csr = [
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ];
        openssl(dir, &[&["req"], &ec[..], &csr[..]].concat())?;
        std::fs::write(
            dir.join("srv.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| format!("cannot write the certificate extensions: {e}"))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "srv.ext",
            ],
        )?;
        Ok(TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("srv.pem"),
            key: dir.join("srv.key"),
        })
    }

    /// Starts `openssl s_server` on 127.0.0.1:`port` with this certificate and waits until it
    /// listens. With `www` it answers every request with a status page; without, what the
    /// client sends comes out on the child's stdout and what the test writes to its stdin
    /// goes back to the client (both piped).
    pub fn serve(&self, port: u16, www: bool) -> ChildGuard {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&self.cert)
            .arg("-key")
            .arg(&self.key)
            .stderr(Stdio::null());
        if www {
            cmd.arg("-www").stdin(Stdio::null()).stdout(Stdio::null());
        } else {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        }
        let server = ChildGuard(cmd.spawn().expect("openssl s_server starts"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}
