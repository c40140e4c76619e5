//! `gapferry-send status`: what the low side's outbox holds and how its pulls went, read
//! from the state on disk (the outbox directories, `misp-pull.json`, `images-pull.json`),
//! so an operator can ask without a running service or its metrics.

use crate::watch::{JOURNAL_DIR, REFUSED_DIR};
use std::fmt::Write;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Kind directories of the outbox, in the order the report lists them.
const KINDS: [&str; 4] = ["misp", "stix", "images", "files"];

/// The status report of the outbox at `outbox`, as text lines.
pub fn report(outbox: &Path) -> io::Result<String> {
    if !outbox.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is not a directory: give the outbox the watch service uses (--outbox, or `outbox` under [watch] in its configuration)",
                outbox.display()
            ),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    let waiting: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{k} {}", count_files(&outbox.join(k))))
        .collect();
    let _ = writeln!(
        out,
        "outbox {}: waiting {}",
        outbox.display(),
        waiting.join(", ")
    );
    let refused = count_files(&outbox.join(REFUSED_DIR));
    if refused > 0 {
        let _ = writeln!(
            out,
            "refused: {refused} file(s) in {}/ (each with a .reason file); fix and drop them in again",
            outbox.join(REFUSED_DIR).display()
        );
    }
    let journal = outbox.join(JOURNAL_DIR);
    out.push_str(&misp_pull_line(&journal, now));
    out.push_str(&images_pull_line(&journal));
    out.push_str(&crate::lanes::state::report(&journal, now));
    out.push_str(&crate::object_pace::report(&journal, now));
    Ok(out)
}

/// Regular files under `dir` (recursively), skipping hidden names.
fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

/// "`n` s/min/h/d ago".
fn ago(now: u64, then: u64) -> String {
    let s = now.saturating_sub(then);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn misp_pull_line(journal: &Path, now: u64) -> String {
    let path = journal.join(crate::misp_pull::STATE_FILE);
    let state: crate::misp_pull::PullState = match std::fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return "misp pull: never ran\n".into();
        }
        Err(e) => return format!("misp pull: cannot read {}: {e}\n", path.display()),
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(s) => s,
            Err(e) => return format!("misp pull: {} does not parse: {e}\n", path.display()),
        },
    };
    let mut line = String::from("misp pull:");
    match &state.last_pull {
        None => line.push_str(" never ran"),
        Some(p) => {
            let _ = write!(
                line,
                " last {} ({} written, {} already had, {} pages)",
                ago(now, p.finished.max(p.started)),
                p.summary.written,
                p.summary.already_had,
                p.summary.pages
            );
            if let Some(e) = &p.error {
                let _ = write!(line, ", FAILED: {e}");
            }
        }
    }
    match &state.last_success {
        Some(s) => {
            let _ = write!(line, "; last success {}", ago(now, s.finished));
        }
        None if state.last_pull.is_some() => line.push_str("; never succeeded"),
        None => {}
    }
    line.push('\n');
    line
}

fn images_pull_line(journal: &Path) -> String {
    let path = journal.join(crate::images_pull::STATE_FILE);
    let pulled: std::collections::BTreeMap<String, serde_json::Value> = match std::fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return "images pull: never ran\n".into();
        }
        Err(e) => return format!("images pull: cannot read {}: {e}\n", path.display()),
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(s) => s,
            Err(e) => return format!("images pull: {} does not parse: {e}\n", path.display()),
        },
    };
    let names: Vec<String> = pulled
        .iter()
        .map(|(name, e)| match e.get("file").and_then(|f| f.as_str()) {
            Some(f) => format!("{name} {f}"),
            None => name.clone(),
        })
        .collect();
    format!("images pull: newest pulled: {}\n", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_waiting_files_refusals_and_both_pulls() {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path();
        for (rel, n) in [("misp", 2), ("files/sub", 1), ("refused", 1)] {
            std::fs::create_dir_all(o.join(rel)).unwrap();
            for i in 0..n {
                std::fs::write(o.join(rel).join(format!("f{i}")), b"x").unwrap();
            }
        }
        std::fs::write(o.join("misp/.hidden"), b"x").unwrap();
        let text = report(o).unwrap();
        assert!(
            text.contains("waiting misp 2, stix 0, images 0, files 1"),
            "{text}"
        );
        assert!(text.contains("refused: 1 file(s)"), "{text}");
        assert!(text.contains("misp pull: never ran"), "{text}");
        assert!(text.contains("images pull: never ran"), "{text}");

        let j = o.join(JOURNAL_DIR);
        std::fs::create_dir_all(&j).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            j.join(crate::misp_pull::STATE_FILE),
            serde_json::json!({
                "last_pull": {"started": now - 300, "finished": now - 290, "written": 3,
                              "already_had": 1, "pages": 2, "error": "HTTP 403 from https://misp/"},
                "last_success": {"started": now - 7300, "finished": now - 7290, "written": 5,
                                 "already_had": 0, "pages": 1, "error": null}
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            j.join(crate::images_pull::STATE_FILE),
            r#"{"MISP": {"stem": "misp_2026", "file": "misp_2026.tar.gz", "size": 3}}"#,
        )
        .unwrap();
        let text = report(o).unwrap();
        assert!(
            text.contains(
                "misp pull: last 4 min ago (3 written, 1 already had, 2 pages), FAILED: HTTP 403"
            ),
            "{text}"
        );
        assert!(text.contains("last success 2 h ago"), "{text}");
        assert!(
            text.contains("images pull: newest pulled: MISP misp_2026.tar.gz"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_outbox_is_an_error_that_says_what_to_give() {
        let e = report(Path::new("/nonexistent/outbox")).unwrap_err();
        assert!(e.to_string().contains("--outbox"), "{e}");
    }
}
