//! The link's state on disk (`<out>/.gapferry/link.json`, rewritten on each heartbeat;
//! `<out>/.gapferry/activity.json`, rewritten about once a second while authenticated
//! datagrams arrive) and the `status` report built from them and the record log, every
//! text from the log escaped so that a name cannot take over the operator's terminal.

use crate::records::{Outcome, Record, RECORDS_FILE, STATE_DIR};
use gapferry_common::assembler::OwnDrops;
use gapferry_common::name::escape;
use gapferry_common::Heartbeat;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File name of the link state inside the state directory.
pub const LINK_FILE: &str = "link.json";
/// File name of the datagram activity inside the state directory.
pub const ACTIVITY_FILE: &str = "activity.json";
/// A link that carried no authenticated datagram for this long is reported down.
pub const LINK_DOWN_AFTER: Duration = Duration::from_secs(5);

/// The last heartbeat heard and what it says about the link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkState {
    /// Sender session id (16 hex digits).
    pub session: String,
    /// When the last heartbeat arrived, Unix milliseconds.
    pub last_heartbeat_unix_ms: u64,
    /// The sender's counters from that heartbeat.
    pub sender_datagrams_sent: u64,
    /// UDP payload bytes the sender sent.
    pub sender_bytes_sent: u64,
    /// The sender's next object id.
    pub sender_next_object: u32,
    /// The sender's configured rate.
    pub sender_rate_bps: u64,
    /// Datagrams of the session the receiver accepted.
    pub received: u64,
    /// Share of datagrams lost on the way since the receiver first heard the session.
    pub loss_rate: Option<f64>,
    /// Whether the sender said it was ending its session.
    pub ending: bool,
    /// The receiver's measured commit rate when the heartbeat arrived.
    #[serde(default)]
    pub commits: Option<crate::commit_rate::CommitState>,
}

impl LinkState {
    /// The state after `hb` arrived now.
    pub fn from_heartbeat(
        session: u64,
        hb: &Heartbeat,
        received: u64,
        loss_rate: Option<f64>,
    ) -> Self {
        LinkState {
            session: format!("{session:016x}"),
            last_heartbeat_unix_ms: unix_ms(SystemTime::now()),
            sender_datagrams_sent: hb.datagrams_sent,
            sender_bytes_sent: hb.bytes_sent,
            sender_next_object: hb.next_object,
            sender_rate_bps: hb.rate_bps,
            received,
            loss_rate,
            ending: hb.ending,
            commits: None,
        }
    }

    /// The state with the receiver's commit rate.
    pub fn with_commits(self, commits: Option<crate::commit_rate::CommitState>) -> Self {
        LinkState { commits, ..self }
    }

    /// Writes the state atomically under `state_dir`.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        save_json(self, state_dir, LINK_FILE)
    }
}

/// When authenticated datagrams last arrived, heartbeats or not, and what the receiver
/// dropped itself, since it started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    /// Session of the last authenticated datagram (16 hex digits), if any arrived.
    pub session: Option<String>,
    /// When it arrived, Unix milliseconds (to the assembler's tick, 0.1 s).
    pub last_datagram_unix_ms: Option<u64>,
    /// Authenticated datagrams since the receiver started.
    pub datagrams: u64,
    /// Datagrams the receiver dropped itself since it started.
    #[serde(default)]
    pub own_drops: OwnDropCounts,
}

/// The receiver's own drops by cause, as `activity.json` holds them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OwnDropCounts {
    /// Dropped because the assembler's queue was full.
    pub queue_full: u64,
    /// Refused over the memory limit for incomplete blocks.
    pub memory_limit: u64,
    /// Refused because too many objects were in flight.
    pub object_limit: u64,
    /// Dropped by the kernel: the socket's receive buffer was full.
    pub socket_buffer_full: u64,
}

impl From<OwnDrops> for OwnDropCounts {
    fn from(d: OwnDrops) -> Self {
        OwnDropCounts {
            queue_full: d.queue_full,
            memory_limit: d.memory_limit,
            object_limit: d.objects_limit,
            socket_buffer_full: d.socket_buffer,
        }
    }
}

impl From<OwnDropCounts> for OwnDrops {
    fn from(d: OwnDropCounts) -> Self {
        OwnDrops {
            queue_full: d.queue_full,
            memory_limit: d.memory_limit,
            objects_limit: d.object_limit,
            socket_buffer: d.socket_buffer_full,
        }
    }
}

impl Activity {
    /// `datagrams` authenticated datagrams, the last (if any) of a session at a time, and
    /// the receiver's own drops.
    pub fn new(last: Option<(u64, SystemTime)>, datagrams: u64, own_drops: OwnDrops) -> Self {
        Activity {
            session: last.map(|(s, _)| format!("{s:016x}")),
            last_datagram_unix_ms: last.map(|(_, at)| unix_ms(at)),
            datagrams,
            own_drops: own_drops.into(),
        }
    }

    /// Writes the activity atomically under `state_dir`.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        save_json(self, state_dir, ACTIVITY_FILE)
    }
}

fn save_json<T: Serialize>(value: &T, state_dir: &Path, name: &str) -> std::io::Result<()> {
    let tmp = state_dir.join(format!(".{name}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, state_dir.join(name))
}

fn load_json<T: serde::de::DeserializeOwned>(state_dir: &Path, name: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(state_dir.join(name)).ok()?).ok()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `status` report: link and outcome counts, with the last failures named.
pub fn report(out: &Path, last: usize) -> std::io::Result<String> {
    let state = out.join(STATE_DIR);
    let mut text = link_report(
        unix_ms(SystemTime::now()),
        load_json(&state, LINK_FILE),
        load_json(&state, ACTIVITY_FILE),
    );
    text += &crate::lanes::report(&state);
    match std::fs::File::open(state.join(RECORDS_FILE)) {
        Ok(file) => text += &records_report(file, last)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            text += &records_report(&[][..], last)?
        }
        Err(e) => return Err(e),
    }
    Ok(text)
}

/// The outcome counts and the last `last` objects not delivered, from a record log's
/// content streamed line by line: memory does not depend on the log's length.
pub fn records_report(records: impl std::io::Read, last: usize) -> std::io::Result<String> {
    let mut counts: HashMap<Outcome, u64> = HashMap::new();
    let mut bad_total = 0usize;
    let mut bad: VecDeque<Record> = VecDeque::new();
    let mut pushes = crate::misp_push::PushTally::default();
    crate::record_lines::for_each_line(records, |line| {
        let Ok(r) = serde_json::from_slice::<Record>(line) else {
            return;
        };
        pushes.note(&r);
        *counts.entry(r.outcome).or_default() += 1;
        if !r.outcome.is_success() {
            bad_total += 1;
            if last > 0 {
                if bad.len() == last {
                    bad.pop_front();
                }
                bad.push_back(r);
            }
        }
    })?;
    let count = |o: Outcome| counts.get(&o).copied().unwrap_or(0);
    let mut text = format!(
        "objects: {} delivered, {} failed, {} lost, {} skipped (already delivered), {} hooks failed\n",
        count(Outcome::Delivered),
        count(Outcome::Failed),
        count(Outcome::Lost),
        count(Outcome::Skipped),
        count(Outcome::HookFailed)
    );
    text += &pushes.report();
    if bad_total > 0 {
        text += &format!("last {} not delivered:\n", bad_total.min(last));
        for r in &bad {
            text += &not_delivered_line(r);
        }
    }
    Ok(text)
}

/// One line naming a record not delivered. Every field may hold a sender's text (names,
/// reasons): escaped, it cannot drive the terminal (escape sequences) or disguise itself
/// (bidi overrides).
fn not_delivered_line(r: &Record) -> String {
    let name = match &r.name {
        Some(n) => escape(n).into_owned(),
        None => "(name unknown)".into(),
    };
    format!(
        "  {} {:<11} session {} object {} {} {}\n",
        escape(&r.time),
        r.outcome.as_str(),
        escape(&r.session),
        r.object,
        name,
        r.reason
            .as_deref()
            .map(|s| format!("— {}", escape(s)))
            .unwrap_or_default()
    )
}

/// The link lines of the report at `now_ms`: up while authenticated datagrams arrive,
/// heartbeats or not; the last datagram's and the last heartbeat's ages apart; the loss
/// rate from the sender's counters.
fn link_report(now_ms: u64, link: Option<LinkState>, activity: Option<Activity>) -> String {
    let age = |ms: u64| Duration::from_millis(now_ms.saturating_sub(ms));
    // A heartbeat is an authenticated datagram too.
    let last = [
        activity
            .as_ref()
            .and_then(|a| Some((a.last_datagram_unix_ms?, a.session.as_deref()?))),
        link.as_ref()
            .map(|l| (l.last_heartbeat_unix_ms, l.session.as_str())),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(ms, _)| *ms);
    let heard = activity.as_ref().map_or(String::new(), |a| {
        format!(
            "; {} authenticated datagrams since the receiver started",
            a.datagrams
        )
    });
    let mut text = match last {
        Some((ms, session)) => format!(
            "link: {} (last datagram {:.1} s ago, session {session}{heard})\n",
            if age(ms) < LINK_DOWN_AFTER {
                "up"
            } else {
                "down"
            },
            age(ms).as_secs_f64(),
        ),
        None => "link: down (no authenticated datagram ever heard)\n".to_string(),
    };
    if let Some(a) = &activity {
        let own = OwnDrops::from(a.own_drops);
        if own.total() > 0 {
            text += &format!(
                "receiver's own drops: {} datagrams since it started, not the link's ({}): {}\n",
                own.total(),
                crate::cause::breakdown(&own),
                crate::cause::own_advice(&own)
            );
        }
    }
    match &link {
        Some(l) => {
            text += &format!(
                "last heartbeat: {:.1} s ago (session {}{})\n",
                age(l.last_heartbeat_unix_ms).as_secs_f64(),
                l.session,
                if l.ending {
                    ", the sender ended its session"
                } else {
                    ""
                }
            );
            text += &format!(
                "loss rate: {}  (sender sent {} datagrams, receiver accepted {}; sender rate {} bit/s)\n",
                l.loss_rate.map_or("n/a".to_string(), |l| format!("{:.2} %", l * 100.0)),
                l.sender_datagrams_sent,
                l.received,
                l.sender_rate_bps
            );
            if let Some(c) = &l.commits {
                text += &format!(
                    "commit rate: {:.0} objects/s over the last {} s that delivered ({} delivered since the receiver started): keep the sender's --max-objects-rate below it\n",
                    c.per_second, c.seconds, c.delivered
                );
            }
        }
        None => {
            text += "last heartbeat: never\n";
            text += "loss rate: n/a  (no heartbeat heard: the sender's counters are unknown)\n";
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Outcome, Record, RecordLog};

    const NOW: u64 = 1_800_000_000_000;

    fn heartbeat_at(ms: u64, session: &str, ending: bool) -> LinkState {
        LinkState {
            session: session.into(),
            last_heartbeat_unix_ms: ms,
            sender_datagrams_sent: 1000,
            sender_bytes_sent: 1_000_000,
            sender_next_object: 3,
            sender_rate_bps: 100_000_000,
            received: 400,
            loss_rate: Some(0.6),
            ending,
            commits: None,
        }
    }

    fn datagrams_at(ms: u64, session: &str) -> Activity {
        Activity {
            session: Some(session.into()),
            last_datagram_unix_ms: Some(ms),
            datagrams: 922,
            own_drops: OwnDropCounts::default(),
        }
    }

    #[test]
    fn datagrams_without_a_heartbeat_mean_the_link_is_up() {
        let t = link_report(NOW, None, Some(datagrams_at(NOW - 300, "00000000000000aa")));
        assert!(
            t.starts_with("link: up (last datagram 0.3 s ago, session 00000000000000aa; 922 authenticated datagrams since the receiver started)"),
            "{t}"
        );
        assert!(t.contains("\nlast heartbeat: never\n"), "{t}");
        assert!(t.contains("loss rate: n/a"), "{t}");
    }

    #[test]
    fn the_last_datagram_and_the_last_heartbeat_are_aged_apart() {
        let t = link_report(
            NOW,
            Some(heartbeat_at(NOW - 4_200, "00000000000000aa", false)),
            Some(datagrams_at(NOW - 100, "00000000000000aa")),
        );
        assert!(t.starts_with("link: up (last datagram 0.1 s ago"), "{t}");
        assert!(
            t.contains("last heartbeat: 4.2 s ago (session 00000000000000aa)"),
            "{t}"
        );
        assert!(t.contains("loss rate: 60.00 %"), "{t}");
    }

    #[test]
    fn silence_takes_the_link_down_whatever_was_heard_before() {
        let t = link_report(
            NOW,
            Some(heartbeat_at(NOW - 9_000, "00000000000000aa", true)),
            Some(datagrams_at(NOW - 6_000, "00000000000000aa")),
        );
        assert!(t.starts_with("link: down (last datagram 6.0 s ago"), "{t}");
        assert!(
            t.contains("9.0 s ago (session 00000000000000aa, the sender ended its session)"),
            "{t}"
        );
        let t = link_report(NOW, None, None);
        assert!(
            t.starts_with("link: down (no authenticated datagram ever heard)"),
            "{t}"
        );
        assert!(t.contains("last heartbeat: never"), "{t}");
    }

    #[test]
    fn a_heartbeat_newer_than_the_activity_file_counts_as_a_datagram() {
        let t = link_report(
            NOW,
            Some(heartbeat_at(NOW - 500, "00000000000000bb", false)),
            Some(datagrams_at(NOW - 60_000, "00000000000000aa")),
        );
        assert!(
            t.starts_with("link: up (last datagram 0.5 s ago, session 00000000000000bb; 922 "),
            "{t}"
        );
    }

    #[test]
    fn the_receivers_own_drops_are_shown_apart_from_the_link() {
        let t = link_report(NOW, None, Some(datagrams_at(NOW - 300, "00000000000000aa")));
        assert!(!t.contains("own drops"), "{t}");
        let mut a = datagrams_at(NOW - 300, "00000000000000aa");
        a.own_drops.queue_full = 3990;
        a.own_drops.socket_buffer_full = 10;
        let t = link_report(NOW, None, Some(a));
        assert!(
            t.contains("\nreceiver's own drops: 4000 datagrams since it started, not the link's (queue full: 3990, socket buffer full: 10): lower --rate"),
            "{t}"
        );
        // Everything dropped before the assembler: nothing authenticated, the drops shown.
        let only_drops = Activity::new(
            None,
            0,
            OwnDrops {
                queue_full: 5,
                ..OwnDrops::default()
            },
        );
        let t = link_report(NOW, None, Some(only_drops));
        assert!(t.starts_with("link: down (no authenticated datagram ever heard)\nreceiver's own drops: 5 datagrams"), "{t}");
    }

    #[test]
    fn the_commit_rate_is_shown_with_what_to_do_with_it() {
        let t = link_report(
            NOW,
            Some(heartbeat_at(NOW - 300, "00000000000000aa", false)),
            None,
        );
        assert!(!t.contains("commit rate"), "{t}");
        let with = heartbeat_at(NOW - 300, "00000000000000aa", false).with_commits(Some(
            crate::commit_rate::CommitState {
                per_second: 812.4,
                seconds: 12,
                delivered: 9000,
            },
        ));
        let t = link_report(NOW, Some(with), None);
        assert!(
            t.contains("\ncommit rate: 812 objects/s over the last 12 s that delivered (9000 delivered since the receiver started): keep the sender's --max-objects-rate below it\n"),
            "{t}"
        );
        // A state file of an older receiver, without the rate, still reads.
        let old = r#"{"session":"aa","last_heartbeat_unix_ms":1,"sender_datagrams_sent":1,"sender_bytes_sent":1,"sender_next_object":1,"sender_rate_bps":1,"received":1,"loss_rate":null,"ending":false}"#;
        assert_eq!(
            serde_json::from_str::<LinkState>(old).unwrap().commits,
            None
        );
    }

    #[test]
    fn unreadable_state_files_read_as_nothing_heard() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(ACTIVITY_FILE), b"{\"session\": 7").unwrap();
        std::fs::write(state.join(LINK_FILE), [0xff, 0xfe, 0]).unwrap();
        let t = report(dir.path(), 10).unwrap();
        assert!(
            t.starts_with("link: down (no authenticated datagram ever heard)"),
            "{t}"
        );
        datagrams_at(NOW, "00000000000000aa").save(&state).unwrap();
        let back: Activity = load_json(&state, ACTIVITY_FILE).unwrap();
        assert_eq!(back, datagrams_at(NOW, "00000000000000aa"));
    }

    #[test]
    fn status_escapes_terminal_sequences_and_bidi_controls_in_names_and_reasons() {
        let out = tempfile::tempdir().unwrap();
        let state = out.path().join(STATE_DIR);
        let mut log = RecordLog::open(&state).unwrap();
        // Records written by an older receiver, or by hand: names it would refuse today.
        let mut r = Record::new(Outcome::Failed, 7, 3);
        r.name = Some("evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mname\u{202e}fdp.exe".into());
        r.reason = Some("blake3 differs\u{1b}[1A\rdelivered OK".into());
        log.append(&r).unwrap();
        let mut ok = Record::new(Outcome::HookOk, 7, 4);
        ok.name = Some("fine.json".into());
        log.append(&ok).unwrap();
        let text = report(out.path(), 10).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n')
                    || gapferry_common::name::is_invisible_format(c)),
            "raw control or format character in {text:?}"
        );
        assert!(
            text.contains("evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
            "{text}"
        );
        assert!(text.contains("name\\u{202e}fdp.exe"), "{text}");
        assert!(
            text.contains("differs\\u{1b}[1A\\u{d}delivered OK"),
            "{text}"
        );
        // A successful hook is not listed among what was not delivered.
        assert!(!text.contains("fine.json"), "{text}");
        assert!(text.contains("last 1 not delivered"), "{text}");
    }
}
