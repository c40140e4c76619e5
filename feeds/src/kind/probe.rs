//! The streaming JSON probe behind [`super::detect`]: reads a JSON document key by key,
//! skipping values without building them, until it can say which MISP shape (or STIX
//! bundle) the document is. One visitor, [`Probe`], plays every role the walk needs
//! ([`Role`]); the walk stops at the first decision by returning an error.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::io::Read;

/// What the probe decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// `{"Event": {...}}`.
    Event,
    /// A bare event object (`info`, `uuid`, `Orgc` at the top).
    Bare,
    /// `{"response": [{"Event": ...}]}`.
    Rest,
    /// `[{"Event": ...}]`.
    List,
    /// `{"type": "bundle"}`.
    Stix,
}

/// Where the decision is left when the walk stops.
type Decided = Cell<Option<Verdict>>;

/// Reads `reader` until a verdict, or to its end (then `None`).
pub(super) fn json_verdict<R: Read>(reader: R) -> Option<Verdict> {
    let decided = Decided::new(None);
    let mut de = serde_json::Deserializer::from_reader(reader);
    // The walk stops with an error once decided; an error before that is "not MISP".
    let _ = Probe {
        decided: &decided,
        role: Role::Top,
    }
    .deserialize(&mut de);
    decided.get()
}

/// The part a value plays in the document, which says what the probe looks for in it.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// The document itself: an event wrapper, a REST export, a bare event, a bundle or a
    /// list of events.
    Top,
    /// The value of `Event`: decides its verdict when it is an object.
    EventObject(Verdict),
    /// The value of `response`: a list whose first element is looked at.
    EventList(Verdict),
    /// An element of a list of events: `{"Event": {...}}` or a bare event.
    ListElement(Verdict),
    /// The value of `type`: whether it is the string `bundle`.
    BundleType,
}

/// The one visitor of the probe; its value says whether `type` was `bundle`.
struct Probe<'a> {
    decided: &'a Decided,
    role: Role,
}

impl Probe<'_> {
    /// Records `verdict` and stops the walk.
    fn decide<E: de::Error>(&self, verdict: Verdict) -> E {
        self.decided.set(Some(verdict));
        E::custom("decided")
    }

    /// A probe of the same walk in another role.
    fn child(&self, role: Role) -> Probe<'_> {
        Probe {
            decided: self.decided,
            role,
        }
    }

    /// Walks an object's members: `Event`, `response` (at the top) and `type` (at the
    /// top) are looked into, a bare event is recognised by `info`, `uuid` and `Orgc`.
    fn members<'de, A: MapAccess<'de>>(
        &self,
        mut map: A,
        verdict: Verdict,
        top: bool,
    ) -> Result<bool, A::Error> {
        let (mut info, mut orgc, mut uuid) = (false, false, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Event" => {
                    // At the top an `Event` object is the wrapper; in a list it decides
                    // the list's verdict.
                    let decides = if top { Verdict::Event } else { verdict };
                    map.next_value_seed(self.child(Role::EventObject(decides)))?;
                }
                "response" if top => {
                    map.next_value_seed(self.child(Role::EventList(Verdict::Rest)))?;
                }
                "type" if top => {
                    if map.next_value_seed(self.child(Role::BundleType))? {
                        return Err(self.decide(Verdict::Stix));
                    }
                }
                other => {
                    match other {
                        "info" => info = true,
                        "Orgc" => orgc = true,
                        "uuid" => uuid = true,
                        _ => {}
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if info && orgc && uuid {
            return Err(self.decide(verdict));
        }
        Ok(false)
    }

    /// Looks at the first element of a list as an element of a list of events.
    fn first_element<'de, A: SeqAccess<'de>>(
        &self,
        mut seq: A,
        verdict: Verdict,
    ) -> Result<bool, A::Error> {
        if seq
            .next_element_seed(self.child(Role::ListElement(verdict)))?
            .is_some()
        {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        }
        Ok(false)
    }
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(matches!(self.role, Role::BundleType) && v == "bundle")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        match self.role {
            Role::Top => self.members(map, Verdict::Bare, true),
            Role::ListElement(verdict) => self.members(map, verdict, false),
            Role::EventObject(verdict) => Err(self.decide(verdict)),
            Role::EventList(_) | Role::BundleType => {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(false)
            }
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        match self.role {
            Role::Top => self.first_element(seq, Verdict::List),
            Role::EventList(verdict) => self.first_element(seq, verdict),
            Role::ListElement(_) | Role::EventObject(_) | Role::BundleType => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(false)
            }
        }
    }
}
