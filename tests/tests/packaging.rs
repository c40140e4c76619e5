//! The Debian packages: `scripts/package` builds `gapferry-send` and `gapferry-recv`, and
//! each one, unpacked into a scratch root with `dpkg -x`, holds its files exactly where its
//! systemd unit and its configuration expect them:
//!
//! - the binary at the unit's `ExecStart=` path, executable, answering `--version`;
//! - the unit in /usr/lib/systemd/system, accepted by `systemd-analyze verify --root=<scratch>`
//!   (when systemd-analyze exists) with no message at all, the unit resolving its
//!   `ExecStart=` inside the scratch root;
//! - the configuration example at the unit's `--config` path, a conffile, byte-equal to the
//!   one in packaging/; every directory it writes to under the unit's `ReadWritePaths=`;
//! - the sysctl drop-in (receiver), the docs the unit's `Documentation=` names, man page and
//!   completions;
//! - a control file naming the package, version, architecture, maintainer and dependencies,
//!   the conffiles list, and maintainer scripts that parse and create the unit's `User=`.
//!
//! Then both packages are installed for real with `dpkg -i` inside a private mount and
//! network namespace whose /etc, /usr and /var are overlays on a tmpfs (nothing reaches the
//! host): the maintainer scripts must create the `gapferry` user, /var/lib/gapferry owned by
//! it, the outbox, a key the service can read, survive a reinstall keeping the key, and
//! purge cleanly.
//!
//! Prerequisites: dpkg, and cargo-deb (which scripts/package installs with `cargo install`
//! when missing); root for the install step. Without them the test prints `skipping:
//! <reason>`, and under `CI=true` it fails instead.

use gapferry_tests::prereq::ci;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Exit status of scripts/package when cargo-deb cannot be installed.
const NO_CARGO_DEB: i32 = 3;
/// The account the units run as and the maintainer scripts create.
const SERVICE_USER: &str = "gapferry";
/// The units' `ReadWritePaths=`: everything the services write is under it.
const STATE_DIR: &str = "/var/lib/gapferry";

/// One of the two packages.
struct Package {
    /// Debian package, binary, unit and configuration name.
    name: &'static str,
    /// The conffiles dpkg must know.
    conffiles: &'static [&'static str],
    /// Files that must be in the package besides the binary, unit and configuration.
    also: &'static [&'static str],
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "gapferry-send",
        conffiles: &["/etc/gapferry/gapferry-send.toml"],
        also: &[],
    },
    Package {
        name: "gapferry-recv",
        conffiles: &[
            "/etc/gapferry/gapferry-recv.toml",
            "/etc/sysctl.d/60-gapferry.conf",
        ],
        also: &["/etc/sysctl.d/60-gapferry.conf"],
    },
];

/// Under CI a missing prerequisite fails the test; elsewhere it skips with the reason.
fn skip_or_fail(reason: &str) {
    if ci() {
        panic!("packaging test cannot run under CI=true: {reason}");
    }
    println!("skipping: {reason}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The target directory this test was built in (target/<profile>/deps/<exe>), so the
/// packages reuse it whatever CARGO_TARGET_DIR says.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<exe>")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8 output")
}

fn tool_works(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs scripts/package; None (after skip_or_fail) when cargo-deb cannot be had.
fn build_packages(target: &Path) -> Option<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/package"))
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target);
    // The variables cargo sets for this test crate are not meant for the builds inside.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_CRATE_")
            || k.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("cannot run bash scripts/package");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {
            println!("scripts/package:\n{log}");
            Some(())
        }
        Some(NO_CARGO_DEB) => {
            skip_or_fail(&format!(
                "scripts/package could not install cargo-deb:\n{log}"
            ));
            None
        }
        _ => panic!("scripts/package failed ({}):\n{log}", out.status),
    }
}

/// The `[Section]` → key → values of a systemd unit (keys may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line without `=`: {line}"));
        sections
            .entry(current.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    sections
}

/// The path `abs` (absolute, as on the installed system) inside the scratch `root`.
fn inside(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn assert_executable(path: &Path) {
    let meta = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} is not in the package: {e}", path.display()));
    assert!(meta.is_file(), "{} is not a regular file", path.display());
    assert!(
        meta.permissions().mode() & 0o111 == 0o111,
        "{} is not executable by everyone (mode {:o})",
        path.display(),
        meta.permissions().mode()
    );
}

fn assert_file(path: &Path) {
    let meta = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} is not in the package: {e}", path.display()));
    assert!(
        meta.is_file() && meta.len() > 0,
        "{} is not a non-empty regular file",
        path.display()
    );
}

/// The control fields `dpkg-deb -f` prints.
fn control_fields(deb: &Path) -> BTreeMap<String, String> {
    let text = stdout(Command::new("dpkg-deb").arg("-f").arg(deb));
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            let v: &mut String = fields.get_mut(&last).expect("continuation after a field");
            v.push('\n');
            v.push_str(line.trim());
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_string();
            fields.insert(last.clone(), v.trim().to_string());
        }
    }
    fields
}

/// Checks what `dpkg-deb -I` says about `deb`: the members, the control file, conffiles and
/// the maintainer scripts.
fn check_control(p: &Package, deb: &Path, version: &str, arch: &str, scratch: &Path) {
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(deb));
    for member in ["control", "conffiles", "postinst", "prerm", "postrm"] {
        assert!(
            info.lines()
                .any(|l| l.contains(" lines ") && l.split_whitespace().any(|w| w == member)),
            "{}: no {member} in the control archive:\n{info}",
            p.name
        );
    }

    let f = control_fields(deb);
    assert_eq!(f.get("Package").map(String::as_str), Some(p.name), "{f:?}");
    assert_eq!(
        f.get("Version"),
        Some(&format!("{version}-1")),
        "Version: {f:?}"
    );
    assert_eq!(f.get("Architecture").map(String::as_str), Some(arch));
    let maintainer = f.get("Maintainer").cloned().unwrap_or_default();
    assert!(
        maintainer.contains('<') && maintainer.ends_with('>'),
        "Maintainer should be `Name <address>`: {maintainer:?}"
    );
    let depends = f.get("Depends").cloned().unwrap_or_default();
    for dep in ["adduser", "libc6"] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends:?}");
    }
    let description = f.get("Description").cloned().unwrap_or_default();
    assert!(
        description.lines().count() >= 2 && description.contains("diode"),
        "Description needs a summary and an extended text: {description:?}"
    );
    let size: u64 = f
        .get("Installed-Size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(size > 100, "Installed-Size {size} KiB: no binary inside?");

    let conffiles: BTreeSet<String> =
        stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"))
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    let expected: BTreeSet<String> = p.conffiles.iter().map(|s| s.to_string()).collect();
    assert_eq!(conffiles, expected, "{}: conffiles", p.name);

    for script in ["postinst", "prerm", "postrm"] {
        let text = stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg(script));
        assert!(
            text.starts_with("#!/bin/sh"),
            "{} {script}: not a sh script",
            p.name
        );
        assert!(
            !text.contains("#DEBHELPER#"),
            "{} {script}: #DEBHELPER# left unsubstituted",
            p.name
        );
        let path = scratch.join(format!("{}.{script}", p.name));
        std::fs::write(&path, &text).unwrap();
        run(Command::new("sh").arg("-n").arg(&path));
    }
    let postinst = stdout(Command::new("dpkg-deb").arg("-I").arg(deb).arg("postinst"));
    for needle in [
        "adduser --system",
        "addgroup --system",
        "install -d -o gapferry -g gapferry",
        STATE_DIR,
        "deb-systemd-helper",
    ] {
        assert!(
            postinst.contains(needle),
            "{} postinst lacks `{needle}`:\n{postinst}",
            p.name
        );
    }
}

/// Checks the unpacked package under `root` against its own unit and configuration.
fn check_layout(p: &Package, root: &Path, version: &str) {
    let unit_path = inside(root, &format!("/usr/lib/systemd/system/{}.service", p.name));
    let unit_text = std::fs::read_to_string(&unit_path)
        .unwrap_or_else(|e| panic!("{}: no unit at {}: {e}", p.name, unit_path.display()));
    let shipped =
        std::fs::read_to_string(workspace_root().join(format!("packaging/{}.service", p.name)))
            .unwrap();
    assert_eq!(unit_text, shipped, "the packaged unit is packaging/'s");
    let unit = parse_unit(&unit_text);
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let v = service
            .get(key)
            .unwrap_or_else(|| panic!("{}: no {key}=", p.name));
        assert_eq!(v.len(), 1, "{}: {key}= given {} times", p.name, v.len());
        &v[0]
    };

    // ExecStart: the binary, executable, and its --config, a conffile.
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], format!("/usr/bin/{}", p.name), "ExecStart binary");
    let binary = inside(root, exec[0]);
    assert_executable(&binary);
    let config = exec
        .iter()
        .position(|a| *a == "--config")
        .map(|i| exec[i + 1])
        .unwrap_or_else(|| panic!("{}: ExecStart has no --config", p.name));
    assert_eq!(config, format!("/etc/gapferry/{}.toml", p.name));
    assert!(p.conffiles.contains(&config), "{config} is not a conffile");
    let config_text = std::fs::read_to_string(inside(root, config))
        .unwrap_or_else(|e| panic!("{}: {config} not in the package: {e}", p.name));
    let example =
        std::fs::read_to_string(workspace_root().join(format!("packaging/{}.toml", p.name)))
            .unwrap();
    assert_eq!(config_text, example, "{config} is packaging/'s example");

    // The account and the only writable place.
    assert_eq!(one("User"), SERVICE_USER);
    assert_eq!(one("Group"), SERVICE_USER);
    assert_eq!(one("ReadWritePaths"), STATE_DIR);
    assert_eq!(
        format!("/var/lib/{}", one("StateDirectory")),
        STATE_DIR,
        "StateDirectory= and ReadWritePaths= agree"
    );
    assert_eq!(one("ProtectSystem"), "strict");
    // Every directory the configuration writes to is writable in that sandbox; keys are read
    // from /etc/gapferry.
    for line in config_text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.starts_with('#') {
            continue;
        }
        let paths: Vec<&str> = value
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with('/'))
            .collect();
        for path in paths {
            if key == "key" || key == "keys" {
                assert!(
                    path.starts_with("/etc/gapferry/"),
                    "{}: {key} = {path} is outside /etc/gapferry",
                    p.name
                );
            } else {
                assert!(
                    path == STATE_DIR || path.starts_with(&format!("{STATE_DIR}/")),
                    "{}: {key} = {path} is not writable under ReadWritePaths={STATE_DIR}",
                    p.name
                );
            }
        }
    }

    // Documentation= names files the package holds.
    for doc in &unit["Unit"]["Documentation"] {
        for uri in doc.split_whitespace() {
            if let Some(path) = uri.strip_prefix("file://") {
                assert_file(&inside(root, path));
            }
        }
    }

    for path in p.also {
        assert_file(&inside(root, path));
        let name = Path::new(path).file_name().unwrap();
        let shipped = std::fs::read(workspace_root().join("packaging").join(name)).unwrap();
        assert_eq!(
            std::fs::read(inside(root, path)).unwrap(),
            shipped,
            "{path} is packaging/'s"
        );
    }
    for doc in ["README.md", "OPERATIONS.md", "copyright"] {
        assert_file(&inside(root, &format!("/usr/share/doc/{}/{doc}", p.name)));
    }
    for generated in [
        format!("/usr/share/man/man1/{}.1.gz", p.name),
        format!("/usr/share/bash-completion/completions/{}", p.name),
        format!("/usr/share/zsh/vendor-completions/_{}", p.name),
        format!("/usr/share/fish/vendor_completions.d/{}.fish", p.name),
    ] {
        assert_file(&inside(root, &generated));
    }

    // Nothing outside the places a package may own.
    for entry in walk(root) {
        let rel = entry.strip_prefix(root).unwrap();
        let top = rel.components().next().unwrap().as_os_str();
        assert!(
            top == "usr" || top == "etc",
            "{}: unexpected {}",
            p.name,
            rel.display()
        );
    }

    // The binary runs.
    let v = stdout(Command::new(&binary).arg("--version"));
    assert_eq!(v.trim(), format!("{} {version}", p.name));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `systemd-analyze verify --root=<root>` on both units, with the host's systemd units
/// beside them (the dependencies the units name: network-online.target, sysinit.target...),
/// so `ExecStart=/usr/bin/...` resolves to the unpacked binary. Any message fails.
fn verify_units(root: &Path) {
    if !tool_works("systemd-analyze", "--version") {
        println!("systemd-analyze not found: units not verified");
        return;
    }
    let system = inside(root, "/usr/lib/systemd/system");
    // -n: the packaged units win over anything of the same name on the host.
    run(Command::new("cp")
        .arg("-an")
        .arg("/usr/lib/systemd/system/.")
        .arg(&system));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(PACKAGES.iter().map(|p| format!("{}.service", p.name)))
        .output()
        .expect("cannot run systemd-analyze");
    let messages = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && messages.trim().is_empty(),
        "systemd-analyze verify --root={} ({}):\n{messages}",
        root.display(),
        out.status
    );
    // And it does look: a unit whose binary is missing is refused.
    let send = inside(root, "/usr/bin/gapferry-send");
    let moved = send.with_extension("moved");
    std::fs::rename(&send, &moved).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("gapferry-send.service")
        .output()
        .expect("cannot run systemd-analyze");
    std::fs::rename(&moved, &send).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is not executable"),
        "systemd-analyze verify did not notice a missing ExecStart binary: {stderr}"
    );
}

/// Installs both packages with dpkg inside private namespaces, /etc, /usr and /var being
/// overlays on a tmpfs, and prints `@name value` facts for the assertions.
const INSTALL_SCRIPT: &str = r#"
set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
scratch=$1 send_deb=$2 recv_deb=$3
mount -t tmpfs gapferry-package-test "$scratch"
for d in etc usr var; do
    mkdir -p "$scratch/$d.upper" "$scratch/$d.work"
    mount -t overlay overlay \
        -o "lowerdir=/$d,upperdir=$scratch/$d.upper,workdir=$scratch/$d.work" "/$d"
done
fact() { printf '@%s %s\n' "$1" "$2"; }
log=$scratch/dpkg.log
export DEBIAN_FRONTEND=noninteractive
dpkg -i "$send_deb" "$recv_deb" >"$log" 2>&1 || { cat "$log"; exit 1; }
fact user "$(getent passwd gapferry | cut -d: -f1,6,7)"
fact group "$(getent group gapferry | cut -d: -f1)"
fact system_uid "$(test "$(id -u gapferry)" -lt 1000 && echo yes || echo no)"
for d in /var/lib/gapferry /var/lib/gapferry/outbox /var/lib/gapferry/outbox/misp \
         /var/lib/gapferry/outbox/stix /var/lib/gapferry/outbox/images \
         /var/lib/gapferry/outbox/files /var/lib/gapferry/sent; do
    fact "dir:$d" "$(stat -c '%U:%G %a' "$d")"
done
fact key "$(stat -c '%U:%G %a' /etc/gapferry/link.key)"
fact status "$(dpkg-query -W -f='${Status}' gapferry-send) / $(dpkg-query -W -f='${Status}' gapferry-recv)"
fact service_reads_config "$(runuser -u gapferry -- cat /etc/gapferry/link.key /etc/gapferry/gapferry-send.toml /etc/gapferry/gapferry-recv.toml >/dev/null && echo yes)"
fact service_writes_state "$(runuser -u gapferry -- touch /var/lib/gapferry/.probe && echo yes)"
key_before=$(sha256sum /etc/gapferry/link.key)
dpkg -i "$send_deb" "$recv_deb" >"$log" 2>&1 || { cat "$log"; exit 1; }
fact key_kept "$(test "$key_before" = "$(sha256sum /etc/gapferry/link.key)" && echo yes || echo no)"
dpkg --purge gapferry-send gapferry-recv >"$log" 2>&1 || { cat "$log"; exit 1; }
fact purged "$(test ! -e /usr/bin/gapferry-send && test ! -e /usr/bin/gapferry-recv \
    && test ! -e /etc/gapferry/gapferry-send.toml && test ! -e /etc/sysctl.d/60-gapferry.conf \
    && test ! -e /usr/lib/systemd/system/gapferry-recv.service && echo yes || echo no)"
"#;

fn install_for_real(debs: &[PathBuf]) {
    if !is_root() {
        skip_or_fail("installing with dpkg -i (in private namespaces) needs root");
        return;
    }
    if !tool_works("unshare", "--version") || !tool_works("runuser", "--version") {
        skip_or_fail("unshare or runuser (util-linux) not found");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(INSTALL_SCRIPT)
        .arg("sh")
        .arg(scratch.path())
        .args(debs)
        .output()
        .expect("cannot run unshare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "installing the packages in a private namespace failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix('@'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let expect = |k: &str, v: &str| {
        assert_eq!(
            facts.get(k).copied(),
            Some(v),
            "{k} after dpkg -i: {facts:#?}"
        );
    };
    expect("user", "gapferry:/var/lib/gapferry:/usr/sbin/nologin");
    expect("group", "gapferry");
    expect("system_uid", "yes");
    expect("dir:/var/lib/gapferry", "gapferry:gapferry 755");
    for d in [
        "outbox",
        "outbox/misp",
        "outbox/stix",
        "outbox/images",
        "outbox/files",
    ] {
        expect(
            &format!("dir:/var/lib/gapferry/{d}"),
            "gapferry:gapferry 2775",
        );
    }
    expect("dir:/var/lib/gapferry/sent", "gapferry:gapferry 750");
    expect("key", "root:gapferry 640");
    expect("status", "install ok installed / install ok installed");
    expect("service_reads_config", "yes");
    expect("service_writes_state", "yes");
    expect("key_kept", "yes");
    expect("purged", "yes");
}

#[test]
fn packages_install_their_files_where_the_units_expect_them() {
    if !tool_works("dpkg-deb", "--version") || !tool_works("dpkg", "--version") {
        skip_or_fail("dpkg and dpkg-deb not found (not a Debian-like system)");
        return;
    }
    let target = target_dir();
    if build_packages(&target).is_none() {
        return;
    }
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string();
    let version = env!("CARGO_PKG_VERSION");
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    let mut debs = Vec::new();
    for p in &PACKAGES {
        let deb = target
            .join("debian")
            .join(format!("{}_{version}-1_{arch}.deb", p.name));
        assert!(deb.is_file(), "{} was not built", deb.display());
        check_control(p, &deb, version, &arch, scratch.path());
        let own_root = scratch.path().join(p.name);
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&own_root));
        check_layout(p, &own_root, version);
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
        debs.push(deb);
    }
    verify_units(&root);
    install_for_real(&debs);
}
