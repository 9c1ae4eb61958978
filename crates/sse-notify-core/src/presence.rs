//! Presence: who else follows a topic right now, kept live as people come and go.
//!
//! A stream that follows a topic with presence first gets `presence:state`, the whole member
//! set, then `presence:join` and `presence:leave` as members come and go. These frames carry no
//! `id:` line: they are not log events, a resume does not replay them, and a resumed or resynced
//! stream gets the current `presence:state` instead. A member is who the app says (an id and
//! the fields it lets others see), once however many tabs, browsers or servers they are on.
//!
//! ```text
//! event: presence:state
//! data: {"topic":"board","members":[{"id":"bob","info":{"name":"Bob"}}]}
//!
//! event: presence:join
//! data: {"topic":"board","member":{"id":"carol","info":{"name":"Carol"}}}
//!
//! event: presence:leave
//! data: {"topic":"board","id":"bob"}
//!
//! event: presence:count
//! data: {"topic":"hall","count":12000}
//! ```
//!
//! A large room is counted, not listed: above the server's cap (`SSE_PRESENCE_MAX_LISTED`), a
//! stream gets `presence:count` instead of the state and of each join and leave, at most once a
//! second per topic; once the room is back within the cap, a `presence:state` lists it again.
//!
//! ```
//! use sse_notify_core::presence::{Member, Members, PresenceFrame};
//!
//! let mut here = Members::default();
//! let join = PresenceFrame::Join { topic: "board".into(), member: Member::new("bob", serde_json::json!({"name": "Bob"})) };
//! let frame = PresenceFrame::decode(join.name(), &join.to_json()).unwrap();
//! assert!(here.apply(&frame));
//! assert!(!here.apply(&frame), "a member is there once");
//! assert_eq!(here.list()[0].id, "bob");
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole member set of a topic.
pub const PRESENCE_STATE_EVENT: &str = "presence:state";
/// A member came.
pub const PRESENCE_JOIN_EVENT: &str = "presence:join";
/// A member left.
pub const PRESENCE_LEAVE_EVENT: &str = "presence:leave";
/// How many members a topic has, when it has more than the server lists.
pub const PRESENCE_COUNT_EVENT: &str = "presence:count";
/// The presence event names.
pub const PRESENCE_EVENTS: &[&str] =
    &[PRESENCE_STATE_EVENT, PRESENCE_JOIN_EVENT, PRESENCE_LEAVE_EVENT, PRESENCE_COUNT_EVENT];

/// The longest member id.
pub const MAX_MEMBER_ID_LEN: usize = 128;

/// One member of a topic: an id (the same person on any tab, browser or server is one member)
/// and what the app lets the others see of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Who they are, as the app names them (e.g. a user id).
    pub id: String,
    /// What others may see (e.g. `{"name":"Bob"}`); `null` for nothing.
    #[serde(default)]
    pub info: serde_json::Value,
}

impl Member {
    /// A member with the fields others may see.
    pub fn new(id: impl Into<String>, info: serde_json::Value) -> Self {
        Self { id: id.into(), info }
    }

    /// Whether the id can be a member's: 1-128 bytes without control characters.
    pub fn has_valid_id(&self) -> bool {
        (1..=MAX_MEMBER_ID_LEN).contains(&self.id.len()) && !self.id.chars().any(char::is_control)
    }
}

/// A presence frame, as sent and as decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PresenceFrame {
    /// `presence:state`: everyone there now.
    State {
        /// The topic, as the client named it.
        topic: String,
        /// Its members, by id.
        members: Vec<Member>,
    },
    /// `presence:join`.
    Join {
        /// The topic.
        topic: String,
        /// Who came.
        member: Member,
    },
    /// `presence:leave`.
    Leave {
        /// The topic.
        topic: String,
        /// Who left.
        id: String,
    },
    /// `presence:count`: more members than the server lists; how many.
    Count {
        /// The topic.
        topic: String,
        /// Its members.
        count: usize,
    },
}

impl PresenceFrame {
    /// Its event name.
    pub fn name(&self) -> &'static str {
        match self {
            PresenceFrame::State { .. } => PRESENCE_STATE_EVENT,
            PresenceFrame::Join { .. } => PRESENCE_JOIN_EVENT,
            PresenceFrame::Leave { .. } => PRESENCE_LEAVE_EVENT,
            PresenceFrame::Count { .. } => PRESENCE_COUNT_EVENT,
        }
    }

    /// The topic it is about.
    pub fn topic(&self) -> &str {
        match self {
            PresenceFrame::State { topic, .. }
            | PresenceFrame::Join { topic, .. }
            | PresenceFrame::Leave { topic, .. }
            | PresenceFrame::Count { topic, .. } => topic,
        }
    }

    /// Its `data:` JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a presence frame is JSON")
    }

    /// The frame `name` and `data` make, if they are one (`None` for anything else).
    pub fn decode(name: &str, data: &str) -> Option<Self> {
        let frame: PresenceFrame = serde_json::from_str(data).ok()?;
        (frame.name() == name).then_some(frame)
    }
}

/// What a page shows of a topic's presence: its members while the server lists them, and how
/// many there are (a large room, above the server's cap, is counted and not listed: `members` is
/// empty and `count` says how many).
///
/// ```
/// use sse_notify_core::presence::{Member, Roster};
///
/// let three: Vec<Member> = (0..3).map(|i| Member::new(i.to_string(), serde_json::Value::Null)).collect();
/// assert_eq!(Roster::of(three.clone(), 100).members.len(), 3);
/// let counted = Roster::of(three, 2);
/// assert!(counted.members.is_empty() && counted.count == 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The members, by id; empty when the room is counted.
    pub members: Vec<Member>,
    /// How many members there are.
    pub count: usize,
}

impl Roster {
    /// `members`, listed while there are at most `max_listed` of them.
    pub fn of(members: Vec<Member>, max_listed: usize) -> Self {
        let count = members.len();
        if count > max_listed {
            Self { members: Vec::new(), count }
        } else {
            Self { members, count }
        }
    }

    /// Whether the room is counted rather than listed.
    pub fn is_counted(&self) -> bool {
        self.members.len() != self.count
    }
}

/// A topic's members by id, as a client keeps them from the frames it gets (or only their
/// number, after a `presence:count`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    listed: BTreeMap<String, Member>,
    /// Set by `presence:count` until the next `presence:state`.
    counted: Option<usize>,
}

impl Members {
    /// Applies a frame of this topic; whether what it shows changed. A join or leave while the
    /// room is counted changes nothing (the server sends neither then: the next count says it).
    pub fn apply(&mut self, frame: &PresenceFrame) -> bool {
        match frame {
            PresenceFrame::State { members, .. } => {
                let next: BTreeMap<_, _> = members.iter().map(|m| (m.id.clone(), m.clone())).collect();
                let was_counted = self.counted.take().is_some();
                std::mem::replace(&mut self.listed, next) != self.listed || was_counted
            }
            PresenceFrame::Join { .. } | PresenceFrame::Leave { .. } if self.counted.is_some() => false,
            PresenceFrame::Join { member, .. } => {
                self.listed.insert(member.id.clone(), member.clone()).as_ref() != Some(member)
            }
            PresenceFrame::Leave { id, .. } => self.listed.remove(id).is_some(),
            PresenceFrame::Count { count, .. } => {
                self.listed.clear();
                self.counted.replace(*count) != Some(*count)
            }
        }
    }

    /// The members, by id (none while the room is counted).
    pub fn list(&self) -> Vec<Member> {
        self.listed.values().cloned().collect()
    }

    /// The frame that tells all of it to someone who knew nothing: `presence:state`, or
    /// `presence:count` while the room is counted.
    pub fn summary(&self, topic: &str) -> PresenceFrame {
        let topic = topic.to_owned();
        match self.counted {
            Some(count) => PresenceFrame::Count { topic, count },
            None => PresenceFrame::State { topic, members: self.list() },
        }
    }

    /// The members and their number.
    pub fn roster(&self) -> Roster {
        Roster { members: self.list(), count: self.len() }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.counted.unwrap_or(self.listed.len())
    }

    /// Nobody there.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_keep_to_the_wire_contract() {
        let bob = Member::new("bob", serde_json::json!({"name": "Bob"}));
        let state = PresenceFrame::State { topic: "board".into(), members: vec![bob.clone()] };
        assert_eq!(state.to_json(), r#"{"topic":"board","members":[{"id":"bob","info":{"name":"Bob"}}]}"#);
        let leave = PresenceFrame::Leave { topic: "board".into(), id: "bob".into() };
        assert_eq!(leave.to_json(), r#"{"topic":"board","id":"bob"}"#);
        assert_eq!(PresenceFrame::decode("presence:leave", &leave.to_json()), Some(leave.clone()));
        assert_eq!(PresenceFrame::decode("presence:join", &leave.to_json()), None, "the name must match");
        let mut here = Members::default();
        assert!(here.apply(&state));
        assert!(!here.apply(&state));
        assert!(here.apply(&leave) && here.is_empty());
    }

    #[test]
    fn a_counted_room_shows_its_count_until_it_is_listed_again() {
        let count = PresenceFrame::Count { topic: "hall".into(), count: 12_000 };
        assert_eq!(count.to_json(), r#"{"topic":"hall","count":12000}"#);
        assert_eq!(PresenceFrame::decode("presence:count", &count.to_json()), Some(count.clone()));
        let mut here = Members::default();
        here.apply(&PresenceFrame::Join { topic: "hall".into(), member: Member::new("a", serde_json::Value::Null) });
        assert!(here.apply(&count));
        assert_eq!((here.len(), here.list().len()), (12_000, 0));
        assert!(!here.apply(&PresenceFrame::Leave { topic: "hall".into(), id: "a".into() }));
        assert_eq!(here.roster(), Roster { members: vec![], count: 12_000 });
        assert_eq!(here.summary("hall"), count, "a tab that joins the stream is told the count");
        let state = PresenceFrame::State { topic: "hall".into(), members: vec![] };
        assert!(here.apply(&state), "listed again, even when empty");
        assert_eq!(here.len(), 0);
    }

    proptest! {
        #[test]
        fn any_frame_text_decodes_or_is_refused(name in "presence:(state|join|leave|count)|x", data in any::<String>()) {
            if let Some(frame) = PresenceFrame::decode(&name, &data) {
                prop_assert_eq!(frame.name(), name.as_str());
            }
        }
    }
}
