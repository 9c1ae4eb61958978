//! Who is on each topic with presence, as this tab's stream said (its `presence:*` frames).

use std::collections::HashMap;

use leptos::prelude::*;
use sse_notify_core::presence::{Members, PresenceFrame, Roster};
use sse_notify_core::Topic;

pub(super) struct Rosters {
    by_topic: HashMap<String, Members>,
    /// Moves whenever a roster changes (what `use_presence` tracks).
    changed: ArcRwSignal<u64>,
}

impl Rosters {
    pub(super) fn new() -> Self {
        Self { by_topic: HashMap::new(), changed: ArcRwSignal::new(0) }
    }

    /// Who is on `topic`, once the stream said (`None` before its `presence:state` or `count`).
    pub(super) fn roster(&self, topic: &str) -> Option<Roster> {
        self.by_topic.get(topic).map(Members::roster)
    }

    /// Moves whenever any roster changes.
    pub(super) fn changed(&self) -> ArcRwSignal<u64> {
        self.changed.clone()
    }

    /// Applies a frame; the signal to move (with the hub released) when it changed a roster.
    pub(super) fn apply(&mut self, frame: &PresenceFrame) -> Option<ArcRwSignal<u64>> {
        let topic = frame.topic();
        let changed = match self.by_topic.get_mut(topic) {
            Some(members) => members.apply(frame),
            // The topic's first state or count (a join or leave before it is not the whole story).
            None if matches!(frame, PresenceFrame::State { .. } | PresenceFrame::Count { .. }) => {
                self.by_topic.entry(topic.to_owned()).or_default().apply(frame);
                true
            }
            None => false,
        };
        changed.then(|| self.changed.clone())
    }

    /// The state (or count) of each of `topics` known here: what a tab that joins the stream
    /// is sent, since the server sent it when the stream opened.
    pub(super) fn states<'a>(&self, topics: impl IntoIterator<Item = &'a Topic>) -> Vec<PresenceFrame> {
        topics.into_iter().filter_map(|t| Some(self.by_topic.get(t.as_str())?.summary(t.as_str()))).collect()
    }
}
