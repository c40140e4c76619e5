//! A sender session as a state machine with no I/O: object numbering, the burst spreader,
//! padding, heartbeats and inventories. The caller writes objects' datagrams in with
//! [`Session::write`], then takes what is ready to leave with [`Session::poll_transmit`]
//! and sends it on its own pacing; [`Session::poll_timeout`] says when to call again.
//!
//! Every datagram of an object (symbols and descriptor copies) goes through a
//! [`Spreader`], so a burst loss anywhere in the stream costs each object only a sliver;
//! when the stream pauses or ends ([`Session::flush`], [`Session::finish`]), the last matrix
//! is padded with descriptor copies, heartbeats and inventories and sent over at least
//! [`FLUSH_SPAN`]. Time-driven heartbeats and inventories leave at once, beside the spread
//! stream.

use super::object::{Emitted, ObjectSchedule};
use crate::control::{Heartbeat, Inventory, InventoryEntry, ObjectDescriptor};
use crate::emit::DatagramWriter;
use crate::spread::{Spreader, CELLS};
use crate::wire::MAX_OBJECT_ID;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Interval between heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// An inventory of recent objects goes out with every this many heartbeats.
const INVENTORY_EVERY: u64 = 5;
/// Recent objects named in inventories.
const INVENTORY_OBJECTS: usize = 32;
/// Heartbeats sent after the last matrix when a session ends, [`ENDING_SPACING`] apart, on
/// top of those padding the last matrix.
const ENDING_HEARTBEATS: u32 = 5;
/// Time between the trailing ending heartbeats, so one link flap cannot take them all.
pub const ENDING_SPACING: Duration = Duration::from_millis(100);
/// Shortest time over which a padded matrix is sent: its real datagrams leave about
/// `FLUSH_SPAN / 16` apart, so a short link outage costs each object one at most.
pub const FLUSH_SPAN: Duration = Duration::from_millis(250);
/// Descriptors of the current matrix remembered for padding.
const PADDING_DESCRIPTORS: usize = 64;
/// Stands in a padded matrix for a heartbeat built when it leaves, so its counters are
/// those of that moment. No datagram is one byte long: it cannot be mistaken for one.
const HEARTBEAT_SLOT: &[u8] = &[0];

/// A datagram ready to leave.
#[derive(Debug)]
pub struct Transmit<'a> {
    /// The datagram's bytes (the UDP payload).
    pub datagram: &'a [u8],
    /// It must leave at least this long after the previous datagram.
    pub gap: Duration,
}

/// Where the datagram [`Session::poll_transmit`] hands out lies.
enum Ready {
    Cell(usize),
    Buffer,
}

/// Object numbering and the counters heartbeats report.
#[derive(Debug)]
struct Counters {
    started: Instant,
    heartbeat_seq: u64,
    datagrams: u64,
    bytes: u64,
    next_object: u32,
    in_progress: BTreeSet<u32>,
    /// Objects done whose datagrams are not all out of the spreader yet, with the count of
    /// datagrams written when they were done.
    unemitted: VecDeque<(u32, u64)>,
    rate_bps: u64,
}

impl Counters {
    fn done_below(&self) -> u32 {
        let unemitted = self.unemitted.iter().map(|&(id, _)| id).min();
        let in_progress = self.in_progress.first().copied();
        [unemitted, in_progress]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_object)
            .min(self.next_object)
    }

    fn heartbeat(&mut self, now: Instant, ending: bool) -> Heartbeat {
        self.heartbeat_seq += 1;
        Heartbeat {
            seq: self.heartbeat_seq,
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            datagrams_sent: self.datagrams,
            bytes_sent: self.bytes,
            next_object: self.next_object,
            done_below: self.done_below(),
            rate_bps: self.rate_bps,
            ending,
        }
    }
}

/// The sender's side of one session, without I/O.
pub struct Session {
    writer: DatagramWriter,
    counters: Counters,
    spreader: Spreader,
    /// Objects whose descriptor copies went into the current matrix, for padding it.
    matrix_descriptors: Vec<(u32, ObjectDescriptor)>,
    recent: VecDeque<InventoryEntry>,
    /// Set while the spreader's matrix is read out, with the gap between its datagrams.
    draining: Option<Duration>,
    last_heartbeat: Option<Instant>,
    inventory_due: bool,
    /// Set once the session is ending: heartbeats then say so.
    ending: bool,
    ending_heartbeats: u32,
    buf: Vec<u8>,
}

impl Session {
    /// A session writing with `writer`, started at `now`, announcing `rate_bps` in its
    /// heartbeats.
    pub fn new(writer: DatagramWriter, rate_bps: u64, now: Instant) -> Self {
        Session {
            writer,
            counters: Counters {
                started: now,
                heartbeat_seq: 0,
                datagrams: 0,
                bytes: 0,
                next_object: 0,
                in_progress: BTreeSet::new(),
                unemitted: VecDeque::new(),
                rate_bps,
            },
            spreader: Spreader::new(),
            matrix_descriptors: Vec::new(),
            recent: VecDeque::new(),
            draining: None,
            last_heartbeat: None,
            inventory_due: false,
            ending: false,
            ending_heartbeats: 0,
            buf: Vec::new(),
        }
    }

    /// The datagram writer (session id, key).
    pub fn writer(&self) -> &DatagramWriter {
        &self.writer
    }

    /// Datagrams and UDP payload bytes handed out so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.counters.datagrams, self.counters.bytes)
    }

    /// The next object id to be assigned.
    pub fn next_object(&self) -> u32 {
        self.counters.next_object
    }

    /// Object ids this session can still assign (ids run up to [`MAX_OBJECT_ID`]).
    pub fn ids_left(&self) -> u64 {
        (MAX_OBJECT_ID as u64 + 1).saturating_sub(self.counters.next_object as u64)
    }

    /// Moves the next object id up to `next`: for tests of the end of the id space.
    #[doc(hidden)]
    pub fn skip_ids_to(&mut self, next: u32) {
        self.counters.next_object = self.counters.next_object.max(next.min(MAX_OBJECT_ID));
    }

    /// Reserves the next object id; it counts as in progress until [`Self::object_done`].
    ///
    /// # Panics
    /// When every id is taken ([`Self::ids_left`] is 0): a long-running sender starts a
    /// new session before that, since an id that wrapped to 0 would name an object the
    /// receiver already resolved, and its data would be ignored.
    pub fn allocate_object(&mut self) -> u32 {
        let id = self.counters.next_object;
        assert!(
            id <= MAX_OBJECT_ID,
            "every object id of session {:016x} is taken: start a new session",
            self.writer.session()
        );
        self.counters.next_object += 1;
        self.counters.in_progress.insert(id);
        id
    }

    /// Records that object `id` has had its last pass (or will never be sent).
    pub fn object_done(&mut self, id: u32) {
        if self.counters.in_progress.remove(&id) && self.spreader.held() > 0 {
            self.counters
                .unemitted
                .push_back((id, self.spreader.written()));
        }
    }

    /// Every object id below this has had its last pass, and its last datagram has left.
    pub fn done_below(&self) -> u32 {
        self.counters.done_below()
    }

    /// Whether a datagram can be written: false while a matrix is being read out (take
    /// everything [`Self::poll_transmit`] has first).
    pub fn can_write(&self) -> bool {
        self.draining.is_none()
    }

    /// Writes `schedule`'s next datagram into the spread stream; false when it has none now.
    ///
    /// Panics unless [`Self::can_write`].
    pub fn write(&mut self, schedule: &mut ObjectSchedule) -> bool {
        assert!(self.can_write(), "take the ready datagrams first");
        let Some(emitted) = schedule.next(&self.writer, self.spreader.slot()) else {
            return false;
        };
        self.spreader.commit();
        if emitted == Emitted::Descriptor {
            self.note_descriptor(schedule.object(), schedule.descriptor());
        }
        if self.spreader.is_full() {
            self.draining = Some(Duration::ZERO);
        }
        true
    }

    /// Remembers a descriptor for inventories and for padding the current matrix.
    fn note_descriptor(&mut self, object: u32, d: &ObjectDescriptor) {
        if !self.recent.iter().any(|e| e.object == object) {
            self.recent.push_back(InventoryEntry {
                object,
                kind: d.kind,
                name: d.name.clone(),
                size: d.size,
            });
            if self.recent.len() > INVENTORY_OBJECTS {
                self.recent.pop_front();
            }
        }
        let room = self.matrix_descriptors.len() < PADDING_DESCRIPTORS;
        match self
            .matrix_descriptors
            .iter_mut()
            .find(|(o, _)| *o == object)
        {
            // Padding copies carry the hash once the object's copies do.
            Some((_, known)) if known.known_blake3().is_none() && d.known_blake3().is_some() => {
                *known = d.clone();
            }
            Some(_) => {}
            None if room => self.matrix_descriptors.push((object, d.clone())),
            None => {}
        }
    }

    /// Pads the spreader's matrix (descriptor copies of its objects, heartbeats, and the
    /// inventory) so it leaves over at least [`FLUSH_SPAN`]: for a pause in the stream.
    pub fn flush(&mut self) {
        if self.spreader.held() == 0 || self.draining.is_some() {
            return;
        }
        let inventory = Inventory::fitting(self.recent.iter().cloned().collect());
        let descriptors = &self.matrix_descriptors;
        let writer = &self.writer;
        let heartbeat_every = if self.ending { 4 } else { 16 };
        let mut i = 0usize;
        let mut next_descriptor = 0usize;
        self.spreader.pad(|out| {
            i += 1;
            if i % 64 == 1 && !inventory.entries.is_empty() {
                writer.inventory(out, &inventory);
            } else if i.is_multiple_of(heartbeat_every) || descriptors.is_empty() {
                out.extend_from_slice(HEARTBEAT_SLOT);
            } else {
                let (object, d) = &descriptors[next_descriptor % descriptors.len()];
                next_descriptor += 1;
                writer
                    .descriptor(out, *object, d)
                    .expect("it was encoded once already");
            }
        });
        self.draining = Some(FLUSH_SPAN / CELLS as u32);
    }

    /// Ends the session: every object counts as done, the last matrix leaves padded with
    /// ending heartbeats, then more ending heartbeats follow, spaced in time, so the
    /// receiver learns every object was sent.
    pub fn finish(&mut self) {
        let ids: Vec<u32> = self.counters.in_progress.iter().copied().collect();
        for id in ids {
            self.object_done(id);
        }
        self.ending = true;
        self.flush();
        self.ending_heartbeats = ENDING_HEARTBEATS;
    }

    /// The next datagram to send at `now`, if one is ready: the spreader's matrix while it
    /// is read out, then a due heartbeat and its inventory.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        let (ready, gap) = self.next_ready(now)?;
        let datagram = match ready {
            Ready::Cell(index) => self.spreader.cell(index),
            Ready::Buffer => &self.buf,
        };
        self.counters.datagrams += 1;
        self.counters.bytes += datagram.len() as u64;
        Some(Transmit { datagram, gap })
    }

    /// Chooses the next datagram and builds it if it is built at sending time.
    fn next_ready(&mut self, now: Instant) -> Option<(Ready, Duration)> {
        if let Some(gap) = self.draining {
            match self.spreader.next_cell() {
                Some(index) if self.spreader.cell(index) == HEARTBEAT_SLOT => {
                    let hb = self.counters.heartbeat(now, self.ending);
                    self.writer.heartbeat(&mut self.buf, &hb);
                    return Some((Ready::Buffer, gap));
                }
                Some(index) => return Some((Ready::Cell(index), gap)),
                None => self.drained(),
            }
        }
        if self.inventory_due {
            self.inventory_due = false;
            let inventory = Inventory::fitting(self.recent.iter().cloned().collect());
            self.writer.inventory(&mut self.buf, &inventory);
            return Some((Ready::Buffer, Duration::ZERO));
        }
        let gap = if self.ending {
            if self.ending_heartbeats == 0 {
                return None;
            }
            self.ending_heartbeats -= 1;
            ENDING_SPACING
        } else if self
            .last_heartbeat
            .is_none_or(|t| now.saturating_duration_since(t) >= HEARTBEAT_EVERY)
        {
            Duration::ZERO
        } else {
            return None;
        };
        self.last_heartbeat = Some(now);
        let hb = self.counters.heartbeat(now, self.ending);
        self.inventory_due =
            (self.ending || hb.seq.is_multiple_of(INVENTORY_EVERY)) && !self.recent.is_empty();
        self.writer.heartbeat(&mut self.buf, &hb);
        Some((Ready::Buffer, gap))
    }

    /// A matrix has been read out: objects whose datagrams have all left are no longer
    /// unemitted, and the next matrix starts without padding descriptors.
    fn drained(&mut self) {
        self.draining = None;
        let drained = self.spreader.drained_below();
        let unemitted = &mut self.counters.unemitted;
        while unemitted.front().is_some_and(|&(_, w)| w <= drained) {
            unemitted.pop_front();
        }
        self.matrix_descriptors.clear();
    }

    /// When [`Self::poll_transmit`] will next have something without a write: the next
    /// heartbeat (an instant already past when something is ready now), or `None` once an
    /// ended session has sent everything.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.draining.is_some() || self.inventory_due {
            return Some(self.counters.started);
        }
        if self.ending {
            return (self.ending_heartbeats > 0).then_some(self.counters.started);
        }
        Some(
            self.last_heartbeat
                .map_or(self.counters.started, |t| t + HEARTBEAT_EVERY),
        )
    }

    /// Whether an ended session has handed out its last datagram.
    pub fn is_finished(&self) -> bool {
        self.ending && self.draining.is_none() && !self.inventory_due && self.ending_heartbeats == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::decode;
    use crate::wire::{self, Datagram, DatagramType};
    use crate::ObjectKind;

    /// What one handed-out datagram was.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Heartbeat(Heartbeat),
        Inventory,
        Descriptor(u32),
        Data(u32),
    }

    fn seen(datagram: &[u8]) -> Seen {
        match wire::parse(datagram, &Default::default()).unwrap() {
            Datagram::Data { header, .. } => Seen::Data(header.object),
            Datagram::Control {
                kind, object, body, ..
            } => match kind {
                DatagramType::Heartbeat => Seen::Heartbeat(decode(body).unwrap()),
                DatagramType::Inventory => Seen::Inventory,
                DatagramType::Descriptor => Seen::Descriptor(object),
                other => panic!("{other:?}"),
            },
        }
    }

    fn schedule(object: u32, len: usize) -> ObjectSchedule {
        let d = ObjectDescriptor {
            kind: ObjectKind::File,
            name: format!("f{object}"),
            size: len as u64,
            blake3: [1; 32],
            block_plain_size: 1 << 20,
            mtime: 0,
            pass: 1,
            passes: 1,
        };
        ObjectSchedule::new(object, d).unwrap()
    }

    /// Takes everything ready at `now`, with the gaps asked for.
    fn take(s: &mut Session, now: Instant) -> Vec<(Seen, Duration)> {
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit(now) {
            out.push((seen(t.datagram), t.gap));
        }
        out
    }

    fn block(object: u32, len: usize) -> crate::emit::OutgoingBlock {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + object as usize) as u8).collect();
        crate::emit::OutgoingBlock::new(
            9,
            object,
            0,
            crate::wire::Codec::None,
            len as u32,
            data,
            1000,
            10,
            1,
        )
    }

    #[test]
    fn an_ended_session_sends_everything_once_then_spaced_ending_heartbeats() {
        let t0 = Instant::now();
        let w = DatagramWriter::new(9, None);
        let mut s = Session::new(w.clone(), 1_000_000, t0);
        let mut sent = Vec::new();
        let mut expected: Vec<Vec<u8>> = Vec::new();
        for object in 0..3u32 {
            let id = s.allocate_object();
            assert_eq!(id, object);
            let len = 3000;
            expected.extend(schedule(id, len).all_datagrams(&w, [vec![block(id, len)]]));
            let mut sched = schedule(id, len);
            while s.write(&mut sched) {
                sent.extend(take(&mut s, t0));
            }
            sched.add_window([block(id, len)]);
            sched.close();
            while s.write(&mut sched) {
                sent.extend(take(&mut s, t0));
            }
            s.object_done(id);
            assert!(
                s.done_below() <= id,
                "its datagrams are still in the spreader"
            );
        }
        s.finish();
        let mut out = Vec::new();
        while let Some(t) = s.poll_transmit(t0) {
            out.push(t.datagram.to_vec());
            sent.push((seen(t.datagram), t.gap));
        }
        assert!(s.is_finished());
        assert_eq!(s.poll_timeout(), None);
        // Every data datagram written leaves exactly once; every descriptor at least once.
        for d in &expected {
            let n = out.iter().filter(|o| *o == d).count();
            match seen(d) {
                Seen::Data(_) => assert_eq!(n, 1),
                _ => assert!(n >= 1),
            }
        }
        let heartbeats: Vec<&Heartbeat> = sent
            .iter()
            .filter_map(|(d, _)| match d {
                Seen::Heartbeat(h) => Some(h),
                _ => None,
            })
            .collect();
        let last = heartbeats.last().unwrap();
        assert!(last.ending);
        assert_eq!((last.next_object, last.done_below), (3, 3));
        // The last five heartbeats each leave ENDING_SPACING after what precedes them.
        let tail: Vec<Duration> = sent
            .iter()
            .filter(|(d, _)| matches!(d, Seen::Heartbeat(h) if h.ending))
            .map(|(_, gap)| *gap)
            .rev()
            .take(5)
            .collect();
        assert_eq!(tail, vec![ENDING_SPACING; 5]);
        let (datagrams, _) = s.counters();
        assert_eq!(datagrams as usize, sent.len());
    }

    #[test]
    fn the_last_object_id_is_assigned_and_then_none_wraps() {
        let mut s = Session::new(DatagramWriter::new(9, None), 1_000_000, Instant::now());
        assert_eq!(s.ids_left(), u32::MAX as u64);
        s.skip_ids_to(MAX_OBJECT_ID - 1);
        assert_eq!(s.ids_left(), 2);
        assert_eq!(s.allocate_object(), MAX_OBJECT_ID - 1);
        assert_eq!(s.allocate_object(), MAX_OBJECT_ID);
        assert_eq!(s.ids_left(), 0);
        let wrapped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.allocate_object()));
        assert!(wrapped.is_err(), "no id after the last: {wrapped:?}");
    }

    #[test]
    fn heartbeats_are_due_once_a_second_with_an_inventory_every_fifth() {
        let t0 = Instant::now();
        let mut s = Session::new(DatagramWriter::new(9, None), 1_000_000, t0);
        let id = s.allocate_object();
        let mut sched = schedule(id, 0);
        assert!(s.write(&mut sched));
        let mut seqs = Vec::new();
        let mut inventories = 0;
        for second in 0..10u64 {
            let now = t0 + Duration::from_secs(second);
            assert!(s.poll_timeout().unwrap() <= now);
            for (d, _) in take(&mut s, now) {
                match d {
                    Seen::Heartbeat(h) => seqs.push(h.seq),
                    Seen::Inventory => inventories += 1,
                    other => panic!("{other:?}"),
                }
            }
            assert!(take(&mut s, now + Duration::from_millis(500)).is_empty());
            assert_eq!(
                s.poll_timeout(),
                Some(now + HEARTBEAT_EVERY),
                "next heartbeat a second later"
            );
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(inventories, 2);
    }
}
