//! Sender sessions: the session table and its fairness between sources, heartbeats,
//! closing, and resolving (failing or losing) what a session left unfinished.

use super::*;

pub(super) struct Session {
    /// The source whose datagram opened it.
    pub(super) source: u64,
    pub(super) started: Duration,
    pub(super) last_seen: Duration,
    pub(super) objects: HashMap<u32, ObjectState>,
    pub(super) resolved: Resolved,
    pub(super) first_object: u32,
    /// Object ids below this exist: seen in datagrams, or claimed by a heartbeat within
    /// [`LOST_AHEAD`] of what was seen.
    pub(super) next_object: u32,
    /// One past the highest object id seen in a descriptor or data datagram.
    pub(super) seen_next: u32,
    /// The highest `next_object` a heartbeat claimed, bounded or not.
    pub(super) claimed_next: u32,
    pub(super) done_below: u32,
    pub(super) done_below_since: Duration,
    pub(super) ending: bool,
    pub(super) received: u64,
    pub(super) baseline: Option<(u64, u64)>,
    pub(super) inventory: std::collections::BTreeMap<u32, (crate::ObjectKind, String)>,
    /// The receiver's own drops when the session's last object was admitted (or, before
    /// that, at the last datagram heard before the session began): the next object's
    /// datagrams were on their way since about then.
    pub(super) own_drops_mark: OwnDrops,
}

/// Inventory names remembered per session.
pub(super) const INVENTORY_MEMORY: usize = 4096;

impl Session {
    /// A session closed for silence comes back: it resumes above what it had resolved,
    /// so nothing it ended starts again.
    pub(super) fn resume_above(&mut self, watermark: u32) {
        self.resolved.raise_to(watermark);
        self.next_object = self.next_object.max(watermark);
        self.first_object = self.first_object.max(watermark);
    }
}

impl Assembler {
    /// Notes the names an inventory gives a session's objects not yet resolved.
    pub(super) fn on_inventory(&mut self, session_id: u64, body: &[u8]) -> Result<(), Reject> {
        let inv: crate::control::Inventory =
            control::decode(body).map_err(|_| Reject::Malformed("inventory does not decode"))?;
        let s = self.sessions.get_mut(&session_id).expect("touched");
        for e in inv.entries {
            if !s.resolved.contains(e.object) || s.objects.contains_key(&e.object) {
                s.inventory.insert(e.object, (e.kind, e.name));
            }
        }
        while s.inventory.len() > INVENTORY_MEMORY {
            s.inventory.pop_first();
        }
        Ok(())
    }

    /// Notes a datagram of session `id` (opening the session if new); `first_object` is
    /// the lowest object id the datagram shows the sender still working on, if any.
    pub(super) fn touch_session(
        &mut self,
        now: Duration,
        id: u64,
        first_object: Option<u32>,
        seen: bool,
    ) -> Result<(), Reject> {
        // An object id in a datagram of the object itself is seen; one derived from a
        // heartbeat's counters is only claimed.
        let hint_seen = match first_object {
            Some(first) if seen => first.saturating_add(1),
            _ => 0,
        };
        if !self.sessions.contains_key(&id) {
            self.check_fresh(id)?;
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_seen = now;
            if let Some(first) = first_object {
                if first < s.first_object && !s.resolved.contains(first) {
                    s.first_object = first;
                }
            }
            return Ok(());
        }
        let first_object = first_object.unwrap_or(0);
        if self.sessions.len() >= self.limits.max_sessions {
            self.make_room(now, id, first_object)?;
        }
        let first_object = match self.refused.remove(&id) {
            Some(lowest) => first_object.min(lowest),
            None => first_object,
        };
        // A session known from before a restart resumes where it was resolved.
        let resume = self
            .freshness
            .as_ref()
            .and_then(|f| f.known.get(&id))
            .map_or(0, |k| k.resolved_below);
        self.sessions.insert(
            id,
            Session {
                source: self.source,
                started: now,
                last_seen: now,
                objects: HashMap::new(),
                resolved: Resolved {
                    below: resume,
                    above: BTreeSet::new(),
                },
                first_object,
                next_object: first_object.max(resume),
                seen_next: hint_seen,
                claimed_next: 0,
                done_below: 0,
                done_below_since: now,
                ending: false,
                received: 0,
                baseline: None,
                inventory: Default::default(),
                own_drops_mark: self.own_drops_heard,
            },
        );
        self.events.push_back(Event::SessionStarted {
            session: id,
            first_object,
        });
        Ok(())
    }

    /// Refuses a session this receiver closed before, or one older than every session
    /// it remembers (a replay), when replay protection is on.
    fn check_fresh(&mut self, id: u64) -> Result<(), Reject> {
        match self.freshness.as_mut().map(|f| f.admit(id)) {
            Some(Err(crate::freshness::Stale::Closed)) => {
                Err(Reject::Replayed("the session was closed before"))
            }
            Some(Err(crate::freshness::Stale::BeforeFloor)) => Err(Reject::Replayed(
                "the session started before every session remembered",
            )),
            _ => Ok(()),
        }
    }

    /// The session table is full: closes the session that ended or went quiet longest
    /// ago (or one of a source over its share); only when every tracked session is alive
    /// is the newcomer refused (and reported).
    fn make_room(&mut self, now: Duration, id: u64, first_object: u32) -> Result<(), Reject> {
        let grace = self.limits.grace;
        let evictable = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ending || now.saturating_sub(s.last_seen) >= grace)
            .min_by_key(|(_, s)| (!s.ending, s.last_seen))
            .map(|(&id, _)| id)
            .or_else(|| self.over_share());
        match evictable {
            Some(old) => {
                self.close_session(old, "a newer sender session needed its place".into());
                Ok(())
            }
            None => {
                let reason = "too many sender sessions";
                self.note_refused(now, id, first_object, reason);
                Err(Reject::Refused(reason))
            }
        }
    }

    /// With every session alive: while the newcomer's source holds less than its share
    /// (the table divided among the sources holding places and the newcomer's), the least
    /// recently heard session of a source holding more than its share.
    pub(super) fn over_share(&self) -> Option<u64> {
        let mut per_source: HashMap<u64, usize> = HashMap::new();
        for s in self.sessions.values() {
            *per_source.entry(s.source).or_default() += 1;
        }
        let mine = per_source.get(&self.source).copied().unwrap_or(0);
        let sources = per_source.len() + usize::from(mine == 0);
        let share = (self.limits.max_sessions / sources).max(1);
        if mine >= share {
            return None;
        }
        self.sessions
            .iter()
            .filter(|(_, s)| per_source[&s.source] > share)
            .min_by_key(|(&id, s)| (s.last_seen, id))
            .map(|(&id, _)| id)
    }

    /// Remembers a refused session's lowest object id; the first refusal of a session is an
    /// event, at most one a second.
    pub(super) fn note_refused(
        &mut self,
        now: Duration,
        id: u64,
        object: u32,
        reason: &'static str,
    ) {
        if let Some(lowest) = self.refused.get_mut(&id) {
            *lowest = (*lowest).min(object);
            return;
        }
        if self.refused.len() >= REFUSED_MEMORY {
            return;
        }
        self.refused.insert(id, object);
        let quiet = self
            .last_refusal_event
            .is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(1));
        if quiet {
            self.last_refusal_event = Some(now);
            self.events.push_back(Event::SessionRefused {
                session: id,
                object,
                reason,
            });
        }
    }

    pub(super) fn on_heartbeat(&mut self, now: Duration, session_id: u64, hb: Heartbeat) {
        let s = self.sessions.get_mut(&session_id).expect("touched");
        // A heartbeat's counters are the sender's word: the ids it claims count only up to
        // a bounded distance past the objects actually seen, so two forged datagrams
        // cannot make the receiver report billions of objects lost.
        s.claimed_next = s.claimed_next.max(hb.next_object);
        let bound = s.seen_next.max(s.first_object).saturating_add(LOST_AHEAD);
        s.next_object = s.next_object.max(hb.next_object.min(bound));
        if hb.done_below > s.done_below {
            s.done_below = hb.done_below.min(s.next_object);
            s.done_below_since = now;
        }
        s.ending |= hb.ending;
        let (sent0, received0) = *s.baseline.get_or_insert((hb.datagrams_sent, s.received));
        let sent = hb.datagrams_sent.saturating_sub(sent0);
        let got = s.received.saturating_sub(received0);
        let loss_rate = (sent > 0).then(|| 1.0 - (got as f64 / sent as f64).min(1.0));
        let received = s.received;
        self.events.push_back(Event::Heartbeat {
            session: session_id,
            heartbeat: hb,
            received,
            loss_rate,
        });
    }

    /// Fails or loses every unresolved object of `session` below `upto`.
    pub(super) fn resolve_below(&mut self, session: u64, upto: u32, why: &str) {
        let mut budget = RESOLVE_PER_TICK;
        loop {
            let s = &self.sessions[&session];
            let id = s.resolved.below;
            if id >= upto || budget == 0 {
                break;
            }
            budget -= 1;
            let o = ObjectRef {
                session,
                object: id,
            };
            if s.objects.contains_key(&id) {
                self.fail_incomplete(o, why);
            } else if let Some(named) = s.inventory.get(&id).cloned() {
                let report = id >= s.first_object;
                let s = self.sessions.get_mut(&session).expect("present");
                s.resolved.insert(id);
                if report {
                    self.events.push_back(Event::ObjectLost {
                        object: o,
                        through: id,
                        named: Some(named),
                    });
                }
            } else {
                // A run of ids of which nothing arrived and no inventory named: one event.
                let end = [
                    s.objects.keys().copied().filter(|&k| k >= id).min(),
                    s.inventory.range(id..).next().map(|(&k, _)| k),
                    s.resolved.above.range(id..).next().copied(),
                ]
                .into_iter()
                .flatten()
                .fold(upto, u32::min);
                let first = id.max(s.first_object);
                let s = self.sessions.get_mut(&session).expect("present");
                s.resolved.raise_to(end);
                if first < end {
                    self.events.push_back(Event::ObjectLost {
                        object: ObjectRef {
                            session,
                            object: first,
                        },
                        through: end - 1,
                        named: None,
                    });
                }
            }
        }
        // Objects above the watermark that are in flight but below `upto`.
        let pending: Vec<u32> = self.sessions[&session]
            .objects
            .keys()
            .copied()
            .filter(|&id| id < upto)
            .collect();
        for id in pending {
            self.fail_incomplete(
                ObjectRef {
                    session,
                    object: id,
                },
                why,
            );
        }
    }

    /// Closes a session, failing or losing what it left unresolved. A session that said it
    /// was ending is closed for good (anything more of it is ignored, and with replay
    /// protection refused after a restart too); one closed for silence, eviction or a
    /// shutdown may come back and resume after what it had resolved before.
    pub(super) fn close_session(&mut self, session: u64, mut reason: String) {
        let s = &self.sessions[&session];
        let for_good = s.ending;
        let resolved_before = s.resolved.below;
        if s.claimed_next > s.next_object {
            reason.push_str(&format!(
                "; its heartbeats claimed {} more object ids, over {LOST_AHEAD} past the last \
                 object seen, not recorded",
                s.claimed_next - s.next_object
            ));
        }
        let end = s
            .next_object
            .max(s.objects.keys().max().map_or(0, |m| m.saturating_add(1)));
        self.resolve_below(session, end, &format!("session closed: {reason}"));
        let leftover: Vec<u32> = self.sessions[&session].objects.keys().copied().collect();
        for id in leftover {
            self.fail_incomplete(
                ObjectRef {
                    session,
                    object: id,
                },
                &reason,
            );
        }
        let watermark = self.sessions[&session].resolved.below;
        self.sessions.remove(&session);
        self.announced.retain(|o, _| o.session != session);
        self.closed
            .push_back((session, (!for_good).then_some(watermark)));
        if self.closed.len() > CLOSED_MEMORY {
            self.closed.pop_front();
        }
        if let Some(f) = self.freshness.as_mut() {
            if for_good {
                f.closed(session);
            } else {
                f.resolved(session, resolved_before);
            }
        }
        self.events
            .push_back(Event::SessionClosed { session, reason });
    }
}
