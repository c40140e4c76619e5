//! `gapferry-send images-pull` against a test image server on 127.0.0.1 laid out as
//! MISP-airgap's tracker leaves its output directory (`<stem>/<stem>.tar.gz`, `.sig`,
//! `latest_<Name>` symlinks) and served with directory listings: the newest signed images
//! land in the outbox; a second run downloads nothing; a bad or missing signature, an
//! HTTP 403, a persistent 500 and a truncated body are each refused with a clear error and
//! leave nothing in the outbox.

use gapferry_tests::harness::binary;
use gapferry_tests::lxd::lxd_image;
use gapferry_tests::openpgp::{require, TestSigner};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// How the server misbehaves for a path.
#[derive(Clone, Copy)]
enum Fault {
    /// Answer with this status and no body.
    Status(u16),
    /// Announce the full length, send half, close.
    Truncate,
}

#[derive(Default)]
struct ServerState {
    requests: Vec<String>,
    faults: HashMap<String, Fault>,
}

/// A static file server with directory listings, like nginx's autoindex.
struct ImageServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl ImageServer {
    fn start(root: PathBuf) -> ImageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let root = root.clone();
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &root, &state));
            }
        });
        ImageServer { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), fault);
    }

    fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }
}

fn serve(mut stream: TcpStream, root: &Path, state: &Mutex<ServerState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let path = line.split(' ').nth(1).unwrap_or("/").to_string();
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(path.clone());
        s.faults.get(&path).copied()
    };
    let fs_path = root.join(path.trim_start_matches('/'));
    let (status, body) = match fault {
        Some(Fault::Status(code)) => (code, Vec::new()),
        _ if fs_path.is_dir() => {
            let mut names: Vec<String> = std::fs::read_dir(&fs_path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let mut html =
                format!("<html><body><h1>Index of {path}</h1><pre><a href=\"../\">../</a>\n");
            for n in names {
                html.push_str(&format!("<a href=\"{n}\">{n}</a>\n"));
            }
            html.push_str("</pre></body></html>\n");
            (200, html.into_bytes())
        }
        _ => match std::fs::read(&fs_path) {
            Ok(b) => (200, b),
            Err(_) => (404, b"not found".to_vec()),
        },
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    match fault {
        Some(Fault::Truncate) => {
            let _ = stream.write_all(&body[..body.len() / 2]);
        }
        _ => {
            let _ = stream.write_all(&body);
        }
    }
    let _ = stream.flush();
    // Drain so the client sees the close after our bytes, not a reset.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = reader.read(&mut [0u8; 64]);
}

/// Publishes `<stem>.tar.gz` (and its signature by `signer`, if any) and moves
/// `latest_<link>` to it, as the tracker does after a build.
fn publish(root: &Path, link: &str, stem: &str, seed: u64, signer: Option<&TestSigner>) -> PathBuf {
    let dir = root.join(stem);
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join(format!("{stem}.tar.gz"));
    lxd_image(&img, 200 << 10, seed);
    if let Some(s) = signer {
        s.sign(&img);
    }
    let latest = root.join(format!("latest_{link}"));
    let _ = std::fs::remove_file(&latest);
    std::os::unix::fs::symlink(stem, &latest).unwrap();
    img
}

fn pull(server: &ImageServer, outbox: &Path, images: &str, keyring: Option<&Path>) -> Output {
    let mut cmd = Command::new(binary("gapferry-send"));
    cmd.args([
        "images-pull",
        "--quiet",
        "--retries",
        "1",
        "--backoff",
        "0.05",
    ])
    .arg("--outbox")
    .arg(outbox)
    .args(["--base-url", &server.url(), "--image", images]);
    if let Some(k) = keyring {
        cmd.arg("--keyring").arg(k);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn images_in(outbox: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(outbox.join("images"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn staging_is_empty(outbox: &Path) -> bool {
    std::fs::read_dir(outbox.join(".gapferry-send/pull"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn images_pull_mirrors_the_newest_signed_images_once_and_refuses_bad_signatures() {
    let Some(signer) = require(TestSigner::new("MISP airgap <images@example.invalid>")) else {
        return;
    };
    let stranger = TestSigner::new("Mallory <m@example.invalid>").unwrap();
    let root = tempfile::tempdir().unwrap();
    let outbox = tempfile::tempdir().unwrap();
    // An older build still on the server, and the newest ones behind the links.
    publish(root.path(), "MISP", "MISP_v2.5.0_0000", 1, Some(&signer));
    let misp = publish(root.path(), "MISP", "MISP_v2.5.1_aaaa", 2, Some(&signer));
    let modules = publish(
        root.path(),
        "MISP-modules",
        "Modules_2.4.198",
        3,
        Some(&signer),
    );
    let server = ImageServer::start(root.path().to_path_buf());
    let keyring = Some(signer.keyring.as_path());

    let o = pull(&server, outbox.path(), "MISP,MISP-modules", keyring);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        images_in(outbox.path()),
        vec![
            "MISP_v2.5.1_aaaa.tar.gz",
            "MISP_v2.5.1_aaaa.tar.gz.sig",
            "Modules_2.4.198.tar.gz",
            "Modules_2.4.198.tar.gz.sig",
        ]
    );
    for src in [&misp, &modules] {
        let name = src.file_name().unwrap();
        assert_eq!(
            std::fs::read(outbox.path().join("images").join(name)).unwrap(),
            std::fs::read(src).unwrap()
        );
    }
    assert!(staging_is_empty(outbox.path()));
    let first = server.take_requests();
    assert!(
        first.contains(&"/MISP_v2.5.1_aaaa/MISP_v2.5.1_aaaa.tar.gz".to_string()),
        "{first:?}"
    );
    assert!(!first.iter().any(|r| r.contains("v2.5.0")), "{first:?}");

    // The watch service sends and moves them away; a second run downloads nothing.
    std::fs::remove_dir_all(outbox.path().join("images")).unwrap();
    let o = pull(&server, outbox.path(), "MISP,MISP-modules", keyring);
    assert!(o.status.success(), "{}", stderr(&o));
    let second = server.take_requests();
    assert!(
        !second
            .iter()
            .any(|r| r.ends_with(".tar.gz") || r.ends_with(".sig")),
        "second run downloaded: {second:?}"
    );
    assert!(images_in(outbox.path()).is_empty());

    // A new build signed by a key not in the keyring: refused, nothing in the outbox.
    publish(root.path(), "MISP", "MISP_v2.5.2_bbbb", 4, Some(&stranger));
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("MISP_v2.5.2_bbbb.tar.gz: refused"), "{e}");
    assert!(e.contains("not in the keyring"), "{e}");
    assert!(images_in(outbox.path()).is_empty());
    assert!(staging_is_empty(outbox.path()));

    // A tampered signature: refused as BAD.
    let img = publish(root.path(), "MISP", "MISP_v2.5.3_cccc", 5, Some(&signer));
    let sig = PathBuf::from(format!("{}.sig", img.display()));
    let mut bytes = std::fs::read(&sig).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&sig, bytes).unwrap();
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("BAD signature"), "{}", stderr(&o));
    assert!(images_in(outbox.path()).is_empty());

    // No signature while a keyring is set: refused; without a keyring it is pulled.
    publish(root.path(), "MISP", "MISP_v2.5.4_dddd", 6, None);
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no signature on the server"),
        "{}",
        stderr(&o)
    );
    assert!(images_in(outbox.path()).is_empty());
    let o = pull(&server, outbox.path(), "MISP", None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(images_in(outbox.path()), vec!["MISP_v2.5.4_dddd.tar.gz"]);
    std::fs::remove_dir_all(outbox.path().join("images")).unwrap();

    // Server trouble: each a clear error, nothing in the outbox.
    let img = publish(root.path(), "MISP", "MISP_v2.5.5_eeee", 7, Some(&signer));
    let path = format!(
        "/MISP_v2.5.5_eeee/{}",
        img.file_name().unwrap().to_string_lossy()
    );
    server.fault("/latest_MISP/", Fault::Status(403));
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HTTP 403"), "{}", stderr(&o));
    server.clear_faults();
    server.take_requests();
    server.fault(&path, Fault::Status(500));
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HTTP 500"), "{}", stderr(&o));
    let tries = server
        .take_requests()
        .iter()
        .filter(|r| **r == path)
        .count();
    assert_eq!(tries, 2, "one try and one retry");
    server.clear_faults();
    server.fault(&path, Fault::Truncate);
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the download was discarded"),
        "{}",
        stderr(&o)
    );
    assert!(images_in(outbox.path()).is_empty());
    assert!(staging_is_empty(outbox.path()));
    // Once the server behaves, the image comes.
    server.clear_faults();
    let o = pull(&server, outbox.path(), "MISP", keyring);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        images_in(outbox.path()),
        vec!["MISP_v2.5.5_eeee.tar.gz", "MISP_v2.5.5_eeee.tar.gz.sig"]
    );
}
