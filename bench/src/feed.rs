//! The MISP feed that is already there before a run (the `misp-100k` row): built once per
//! bench work directory with the feeds crate's own code, then given to each run as a cheap
//! copy: the event files hardlinked, `manifest.json` and `hashes.csv` copied (the receiver
//! appends to the one and renames the other). The receiver writes event files by staging
//! file and rename, never in place; [`SeedFeed::check_untouched`] verifies that after each
//! run, so a receiver that ever wrote into a shared inode is caught, not measured.
//!
//! The harness does all three in a child process ([`SUBCOMMAND`]): building parses 100 000
//! events and holds their manifest, and a child's peak RSS (`ru_maxrss`) starts from its
//! parent's high-water mark, so a harness that did it itself would inflate every later row's
//! peak RSS (it did: 214 MiB for every process after `misp-100k`).

use crate::data;
use anyhow::{bail, Context, Result};
use gapferry_feeds::misp_feed::{HASHES, MANIFEST};
use gapferry_feeds::{parse_event, MispFeed};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The hidden subcommand: `gapferry-bench __seed_feed build DIR EVENTS SIZE`,
/// `... clone DIR TO` or `... check DIR`.
pub const SUBCOMMAND: &str = "__seed_feed";
/// The file in the seed directory holding each event file's stamp as built.
const STAMPS: &str = ".bench-stamps";

/// Runs [`SUBCOMMAND`] with its arguments.
pub fn run_subcommand(args: &[String]) -> Result<()> {
    match args {
        [op, dir, events, size] if op == "build" => {
            SeedFeed::build(Path::new(dir), events.parse()?, size.parse()?)?;
            Ok(())
        }
        [op, dir, to] if op == "clone" => SeedFeed::open(Path::new(dir))?.clone_into(Path::new(to)),
        [op, dir] if op == "check" => SeedFeed::open(Path::new(dir))?.check_untouched(),
        _ => bail!(
            "usage: gapferry-bench {SUBCOMMAND} build DIR EVENTS SIZE | clone DIR TO | check DIR"
        ),
    }
}

/// A seed feed handled through child processes of the harness: only its path is held here.
#[derive(Debug)]
pub struct SeedFeedChild {
    dir: PathBuf,
    events: usize,
}

fn child(args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = Command::new(std::env::current_exe()?)
        .arg(SUBCOMMAND)
        .args(args)
        .output()
        .context("running the seed feed child")?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let cause = text
            .lines()
            .find_map(|l| l.strip_prefix("Error: "))
            .unwrap_or("the seed feed child failed");
        bail!("{cause}");
    }
    Ok(())
}

impl SeedFeedChild {
    /// Builds the seed feed of `events` events of `size` bytes in `dir`, in a child.
    pub fn build(dir: &Path, events: usize, size: usize) -> Result<Self> {
        let (n, sz) = (events.to_string(), size.to_string());
        child(&["build".as_ref(), dir.as_ref(), n.as_ref(), sz.as_ref()])?;
        Ok(SeedFeedChild {
            dir: dir.to_path_buf(),
            events,
        })
    }

    /// Events in the feed.
    pub fn events(&self) -> usize {
        self.events
    }

    /// [`SeedFeed::clone_into`], in a child.
    pub fn clone_into(&self, to: &Path) -> Result<()> {
        child(&["clone".as_ref(), self.dir.as_ref(), to.as_ref()])
    }

    /// [`SeedFeed::check_untouched`], in a child.
    pub fn check_untouched(&self) -> Result<()> {
        child(&["check".as_ref(), self.dir.as_ref()])
    }
}

/// Seeds of the events already in the feed: far from the seeds `0..count` of the events
/// a run sends, so no uuid of a run's events is already in the feed.
const SEED_BASE: u64 = 1 << 40;

/// A MISP feed directory built once and cloned into each run's output.
#[derive(Debug)]
pub struct SeedFeed {
    dir: PathBuf,
    /// Event file names with (size, mtime ns, inode) as built, to prove runs left them alone.
    stamps: Vec<(String, u64, i128, u64)>,
}

fn stamp(path: &Path) -> Result<(u64, i128, u64)> {
    let m = std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    Ok((m.len(), mtime, m.ino()))
}

impl SeedFeed {
    /// Builds a feed of `events` MISP events of `size` bytes in `dir` (replacing what is
    /// there): event files written without fsync (a benchmark fixture, not a delivery),
    /// then `manifest.json` and `hashes.csv` by the feeds crate's `rebuild`.
    pub fn build(dir: &Path, events: usize, size: usize) -> Result<SeedFeed> {
        let t = Instant::now();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut stamps = Vec::with_capacity(events);
        for i in 0..events {
            let doc = data::json_object(size, SEED_BASE + i as u64);
            let event = parse_event(&doc).context("a generated MISP event was refused")?;
            let name = format!("{}.json", event.uuid);
            std::fs::write(dir.join(&name), &event.document)?;
            stamps.push((name, 0, 0, 0));
        }
        let summary = MispFeed::new(dir)
            .rebuild()
            .context("building the seed feed's manifest")?;
        if summary.entries != events {
            bail!(
                "the seed feed lists {} events, {events} were written (uuid collision?)",
                summary.entries
            );
        }
        let mut lines = String::new();
        for s in &mut stamps {
            let (len, mtime, ino) = stamp(&dir.join(&s.0))?;
            (s.1, s.2, s.3) = (len, mtime, ino);
            lines.push_str(&format!("{} {len} {mtime} {ino}\n", s.0));
        }
        std::fs::write(dir.join(STAMPS), lines)?;
        eprintln!(
            "  built a MISP feed of {events} events in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(SeedFeed {
            dir: dir.to_path_buf(),
            stamps,
        })
    }

    /// The seed feed [`SeedFeed::build`] left in `dir`, with the stamps it recorded.
    pub fn open(dir: &Path) -> Result<SeedFeed> {
        let text = std::fs::read_to_string(dir.join(STAMPS))
            .with_context(|| format!("{} holds no seed feed", dir.display()))?;
        let stamps = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let [name, len, mtime, ino] = f[..] else {
                    bail!("bad stamp line {l:?}");
                };
                Ok((name.to_string(), len.parse()?, mtime.parse()?, ino.parse()?))
            })
            .collect::<Result<_>>()?;
        Ok(SeedFeed {
            dir: dir.to_path_buf(),
            stamps,
        })
    }

    /// Events in the feed.
    pub fn events(&self) -> usize {
        self.stamps.len()
    }

    /// Makes `to` (created) a copy of the feed: event files hardlinked, manifest and hash
    /// list copied.
    pub fn clone_into(&self, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to)?;
        for (name, ..) in &self.stamps {
            std::fs::hard_link(self.dir.join(name), to.join(name))
                .with_context(|| format!("hardlinking {name} into {}", to.display()))?;
        }
        for name in [MANIFEST, HASHES] {
            std::fs::copy(self.dir.join(name), to.join(name))
                .with_context(|| format!("copying {name} into {}", to.display()))?;
        }
        Ok(())
    }

    /// Fails when any event file of the seed changed size, time or inode since it was
    /// built: a run wrote into a hardlinked file in place (or replaced it in the seed).
    pub fn check_untouched(&self) -> Result<()> {
        for (name, len, mtime, ino) in &self.stamps {
            let now = stamp(&self.dir.join(name))?;
            if now != (*len, *mtime, *ino) {
                bail!(
                    "the receiver changed the hardlinked seed event {name} in place \
                     (size, mtime or inode differ): hardlinked copies are not safe, copy the feed instead"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_events_and_an_in_place_write_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        SeedFeed::build(&dir.path().join("seed"), 20, 2_000).unwrap();
        let seed = SeedFeed::open(&dir.path().join("seed")).unwrap();
        assert_eq!(seed.events(), 20);
        let run = dir.path().join("run");
        seed.clone_into(&run).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(manifest.as_object().unwrap().len(), 20);
        // Replacing a clone's file by rename (what the receiver does) leaves the seed alone.
        let (name, ..) = &seed.stamps[3];
        std::fs::write(run.join("staged"), b"{}").unwrap();
        std::fs::rename(run.join("staged"), run.join(name)).unwrap();
        seed.check_untouched().unwrap();
        // Writing into a clone's file in place changes the seed's shared inode.
        let (name, ..) = &seed.stamps[7];
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(run.join(name), b"{\"Event\":{}}").unwrap();
        let err = seed.check_untouched().unwrap_err().to_string();
        assert!(err.contains(name.as_str()), "{err}");
    }
}
