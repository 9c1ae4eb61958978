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
//! ```
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
/// The three presence event names.
pub const PRESENCE_EVENTS: &[&str] = &[PRESENCE_STATE_EVENT, PRESENCE_JOIN_EVENT, PRESENCE_LEAVE_EVENT];

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
}

impl PresenceFrame {
    /// Its event name.
    pub fn name(&self) -> &'static str {
        match self {
            PresenceFrame::State { .. } => PRESENCE_STATE_EVENT,
            PresenceFrame::Join { .. } => PRESENCE_JOIN_EVENT,
            PresenceFrame::Leave { .. } => PRESENCE_LEAVE_EVENT,
        }
    }

    /// The topic it is about.
    pub fn topic(&self) -> &str {
        match self {
            PresenceFrame::State { topic, .. }
            | PresenceFrame::Join { topic, .. }
            | PresenceFrame::Leave { topic, .. } => topic,
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

/// A topic's members by id, as a client keeps them from the frames it gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members(BTreeMap<String, Member>);

impl Members {
    /// Applies a frame of this topic; whether the set changed.
    pub fn apply(&mut self, frame: &PresenceFrame) -> bool {
        match frame {
            PresenceFrame::State { members, .. } => {
                let next: BTreeMap<_, _> = members.iter().map(|m| (m.id.clone(), m.clone())).collect();
                std::mem::replace(&mut self.0, next) != self.0
            }
            PresenceFrame::Join { member, .. } => {
                self.0.insert(member.id.clone(), member.clone()).as_ref() != Some(member)
            }
            PresenceFrame::Leave { id, .. } => self.0.remove(id).is_some(),
        }
    }

    /// The members, by id.
    pub fn list(&self) -> Vec<Member> {
        self.0.values().cloned().collect()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Nobody there.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

    proptest! {
        #[test]
        fn any_frame_text_decodes_or_is_refused(name in "presence:(state|join|leave)|x", data in any::<String>()) {
            if let Some(frame) = PresenceFrame::decode(&name, &data) {
                prop_assert_eq!(frame.name(), name.as_str());
            }
        }
    }
}
