//! Presence: who follows a topic now, per instance, and the `presence:*` frames that keep the
//! streams that may see it up to date ([`sse_notify_core::presence`]).
//!
//! The book holds, for each topic with presence that a local stream follows:
//! - its members as the backend knows them (the embedded broker: this process's; Redis: every
//!   instance's), once it has loaded them;
//! - the local streams that may see them (their `presence:state` first, then joins and leaves);
//! - this instance's own members and how many of its streams each holds, so that a member's
//!   first stream here joins and their last one leaves (one person in two tabs is one member).
//!
//! Changes are applied as they come: a join sets a member, a leave removes one. Each sets one
//! member's state, so a change applied twice, or applied again on top of a member set loaded
//! after it was made, leaves the same set: this is what lets the Redis backend load a topic's
//! members once its channel is subscribed, without ordering the load against the messages.
//! Changes to a topic not loaded yet are dropped (the load will hold them).
//!
//! A large room is counted, not listed: with more members than `max_listed`, a topic's streams
//! get `presence:count` in place of its state and of each join and leave, at most once per
//! [`SUMMARY_INTERVAL`] (a room of 10,000 with people coming and going would otherwise send each
//! of its streams a frame per change, and each new stream a 600 KB state). Crossing back within
//! the cap sends the list again as a `presence:state`, under the same pace.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use sse_notify_core::presence::{Member, PresenceFrame, Roster};

use super::hub::{Delivery, Inbox};

/// The fastest a counted topic's streams are told of its changes.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct PresenceBook {
    topics: Mutex<HashMap<String, TopicPresence>>,
    /// `SSE_PRESENCE_MAX_LISTED`: above this many members a topic is counted.
    max_listed: usize,
    /// Itself, for the timers that send a counted topic's pending summary.
    this: Weak<PresenceBook>,
}

/// A member and its JSON, encoded once: a stream's `presence:state` is the members' JSON put
/// together (a topic of 10,000 members is 10,000 of them for every stream that arrives).
struct Known {
    member: Member,
    json: Box<str>,
}

impl Known {
    fn new(member: Member) -> Self {
        let json = serde_json::to_string(&member).expect("a member is JSON").into_boxed_str();
        Self { member, json }
    }
}

#[derive(Default)]
struct TopicPresence {
    members: BTreeMap<String, Known>,
    loaded: bool,
    /// A load was asked for and has not come yet.
    loading: bool,
    followers: HashMap<u64, Arc<Inbox>>,
    /// `presence:state` as the members are now, built for the first stream that needs it: the
    /// streams that arrive meanwhile share it (a burst of 1,000 streams on a topic of 10,000
    /// members holds one 600 KB frame, not 1,000).
    state: Option<Bytes>,
    /// This instance's members: their number of local streams, and what they show.
    here: HashMap<String, (u32, Member)>,
    /// When the followers were last sent the whole (a state or a count) after a change.
    summarized: Option<Instant>,
    /// Changes the followers have not heard of: a summary is on its way.
    summary_due: bool,
}

/// What a stream's arrival asks of the backend.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Entered {
    /// Load the topic's members (its first follower here).
    pub(crate) load: bool,
    /// The member's first stream here: they join.
    pub(crate) join: Option<Member>,
    /// The topic's `presence:state`, when its members are loaded: the stream puts it after its
    /// replay and before anything live (it is not queued with the live frames).
    pub(crate) state: Option<Bytes>,
}

/// What a stream is first told of `members` (a topic whose members were read for it alone):
/// their `presence:state`, or their `presence:count` when there are more than `max_listed`.
pub(crate) fn summary_frame(topic: &str, members: Vec<Member>, max_listed: usize) -> Bytes {
    let topic = topic.to_owned();
    if members.len() > max_listed {
        frame(&PresenceFrame::Count { topic, count: members.len() })
    } else {
        frame(&PresenceFrame::State { topic, members })
    }
}

fn frame(f: &PresenceFrame) -> Bytes {
    Bytes::from(sse_notify_core::wire::encode_event(None, f.name(), &f.to_json()).expect("a valid presence frame"))
}

impl TopicPresence {
    /// `presence:state`, as [`PresenceFrame::State`] encodes it.
    fn state_frame(&self, topic: &str) -> Bytes {
        let size: usize = self.members.values().map(|k| k.json.len() + 1).sum();
        let mut data = String::with_capacity(size + topic.len() + 32);
        data.push_str("{\"topic\":");
        data.push_str(&serde_json::to_string(topic).expect("a topic is JSON"));
        data.push_str(",\"members\":[");
        for (i, known) in self.members.values().enumerate() {
            if i > 0 {
                data.push(',');
            }
            data.push_str(&known.json);
        }
        data.push_str("]}");
        let name = sse_notify_core::presence::PRESENCE_STATE_EVENT;
        Bytes::from(sse_notify_core::wire::encode_event(None, name, &data).expect("a valid presence frame"))
    }

    /// The shared summary of the members now: their `presence:state`, or `presence:count`
    /// above `max_listed`.
    fn state(&mut self, topic: &str, max_listed: usize) -> Bytes {
        if self.state.is_none() {
            self.state = Some(if self.members.len() > max_listed {
                frame(&PresenceFrame::Count { topic: topic.to_owned(), count: self.members.len() })
            } else {
                self.state_frame(topic)
            });
        }
        self.state.clone().expect("just built")
    }

    /// Sends every follower the summary now.
    fn summarize(&mut self, topic: &str, max_listed: usize) {
        self.summarized = Some(Instant::now());
        self.summary_due = false;
        let state = self.state(topic, max_listed);
        for inbox in self.followers.values() {
            inbox.offer(Delivery::Presence(state.clone()), None);
        }
    }

    /// The members, by id.
    fn list(&self) -> Vec<Member> {
        self.members.values().map(|k| k.member.clone()).collect()
    }

    /// No stream here sees the topic (a member's streams all see it, so none is a member).
    fn is_unused(&self) -> bool {
        self.followers.is_empty()
    }
}

impl PresenceBook {
    /// A book that lists topics of up to `max_listed` members and counts larger ones.
    pub(crate) fn new(max_listed: usize) -> Arc<Self> {
        Arc::new_cyclic(|this| Self { topics: Mutex::default(), max_listed, this: this.clone() })
    }

    /// A stream arrives on `topic`: it sees its presence, and is `member` there when given.
    pub(crate) fn enter(&self, topic: &str, inbox: &Arc<Inbox>, member: Option<&Member>) -> Entered {
        let mut topics = self.topics.lock().unwrap();
        let entry = topics.entry(topic.to_owned()).or_default();
        let mut entered = Entered::default();
        entry.followers.insert(inbox.id(), inbox.clone());
        if entry.loaded {
            entered.state = Some(entry.state(topic, self.max_listed));
        } else if !entry.loading {
            entry.loading = true;
            entered.load = true;
        }
        if let Some(member) = member {
            let (count, shown) = entry.here.entry(member.id.clone()).or_insert_with(|| (0, member.clone()));
            *count += 1;
            *shown = member.clone();
            if *count == 1 {
                entered.join = Some(member.clone());
            }
        }
        entered
    }

    /// A stream leaves `topic`; `Some(id)` when it was the member's last stream here.
    pub(crate) fn exit(&self, topic: &str, inbox: u64, member: Option<&str>) -> Option<String> {
        let mut topics = self.topics.lock().unwrap();
        let entry = topics.get_mut(topic)?;
        entry.followers.remove(&inbox);
        let mut left = None;
        if let Some(id) = member {
            if let Some((count, _)) = entry.here.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    entry.here.remove(id);
                    left = Some(id.to_owned());
                }
            }
        }
        if entry.is_unused() {
            let topics = &mut *topics;
            topics.remove(topic);
            // The room of many topics whose streams are gone goes back too (amortized: only
            // once three quarters of it stand empty).
            if topics.capacity() > 64 && topics.len() < topics.capacity() / 4 {
                topics.shrink_to(topics.len() * 2);
            }
        }
        left
    }

    /// The topic's members as loaded: every follower gets them whole.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's
    pub(crate) fn load(&self, topic: &str, members: Vec<Member>) {
        let mut topics = self.topics.lock().unwrap();
        let Some(entry) = topics.get_mut(topic) else { return };
        entry.members = members.into_iter().map(|m| (m.id.clone(), Known::new(m))).collect();
        entry.state = None;
        entry.loaded = true;
        entry.loading = false;
        entry.summarize(topic, self.max_listed);
    }

    /// The embedded broker's load: the book's members are all there are, so the topic is
    /// loaded as it stands (its only follower, the stream that asked, takes the state from
    /// [`PresenceBook::loaded_state`]).
    pub(crate) fn load_here(&self, topic: &str) {
        if let Some(entry) = self.topics.lock().unwrap().get_mut(topic) {
            (entry.loaded, entry.loading) = (true, false);
        }
    }

    /// The topic's `presence:state` if its members are loaded.
    pub(crate) fn loaded_state(&self, topic: &str) -> Option<Bytes> {
        let mut topics = self.topics.lock().unwrap();
        topics.get_mut(topic).filter(|e| e.loaded).map(|e| e.state(topic, self.max_listed))
    }

    /// A join or leave (a state is a load): followers hear of it when it changes the set, as
    /// the frame itself while the topic is listed before and after, else by a summary (at once
    /// if none went out within [`SUMMARY_INTERVAL`], else when that much has passed).
    pub(crate) fn apply(&self, change: &PresenceFrame) {
        let mut topics = self.topics.lock().unwrap();
        let topic = change.topic();
        let Some(entry) = topics.get_mut(topic).filter(|e| e.loaded) else { return };
        let listed_before = entry.members.len() <= self.max_listed;
        let changed = match change {
            PresenceFrame::Join { member, .. } => {
                let old = entry.members.insert(member.id.clone(), Known::new(member.clone()));
                old.is_none_or(|k| k.member != *member)
            }
            PresenceFrame::Leave { id, .. } => entry.members.remove(id).is_some(),
            PresenceFrame::State { .. } | PresenceFrame::Count { .. } => false,
        };
        if !changed {
            return;
        }
        entry.state = None;
        let listed_after = entry.members.len() <= self.max_listed;
        if listed_before && listed_after && !entry.summary_due {
            let f = frame(change);
            for inbox in entry.followers.values() {
                inbox.offer(Delivery::Presence(f.clone()), None);
            }
            return;
        }
        if entry.summary_due {
            return; // its timer is set
        }
        let next = entry.summarized.map_or(Instant::now(), |at| at + SUMMARY_INTERVAL);
        if next <= Instant::now() {
            entry.summarize(topic, self.max_listed);
            return;
        }
        entry.summary_due = true;
        let (book, owned) = (self.this.clone(), topic.to_owned());
        let send = async move {
            tokio::time::sleep_until(next).await;
            if let Some(book) = book.upgrade() {
                book.send_due_summary(&owned);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(send)),
            // No runtime to wait in (a change applied outside one): summarize now.
            Err(_) => entry.summarize(topic, self.max_listed),
        }
    }

    fn send_due_summary(&self, topic: &str) {
        let mut topics = self.topics.lock().unwrap();
        if let Some(entry) = topics.get_mut(topic).filter(|e| e.summary_due) {
            entry.summarize(topic, self.max_listed);
        }
    }

    /// Marks every loaded topic as needing a load again (the backend may have missed changes),
    /// and returns them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's
    pub(crate) fn unload_all(&self) -> Vec<String> {
        let mut topics = self.topics.lock().unwrap();
        let mut unloaded = Vec::new();
        for (topic, entry) in topics.iter_mut().filter(|(_, e)| e.loaded || e.loading) {
            entry.loaded = false;
            entry.loading = true;
            unloaded.push(topic.clone());
        }
        unloaded
    }

    /// A load failed: the next follower asks again.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's
    pub(crate) fn load_failed(&self, topic: &str) {
        if let Some(entry) = self.topics.lock().unwrap().get_mut(topic) {
            entry.loading = false;
        }
    }

    /// The members of a loaded topic.
    pub(crate) fn members(&self, topic: &str) -> Option<Vec<Member>> {
        let topics = self.topics.lock().unwrap();
        topics.get(topic).filter(|e| e.loaded).map(TopicPresence::list)
    }

    /// What a page shows of a loaded topic (its members, or their number above the cap).
    pub(crate) fn roster(&self, topic: &str) -> Option<Roster> {
        let topics = self.topics.lock().unwrap();
        let entry = topics.get(topic).filter(|e| e.loaded)?;
        let count = entry.members.len();
        // A counted room's members are not copied only to be dropped.
        let members = if count > self.max_listed { Vec::new() } else { entry.list() };
        Some(Roster { members, count })
    }

    /// Topics in the book, and this instance's members summed over them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let topics = self.topics.lock().unwrap();
        (topics.len(), topics.values().map(|e| e.here.len()).sum())
    }

    /// Member `id` of `topic`, while they have a stream here.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's
    pub(crate) fn here_as(&self, topic: &str, id: &str) -> Option<Member> {
        self.topics.lock().unwrap().get(topic)?.here.get(id).map(|(_, m)| m.clone())
    }

    /// This instance's members, by topic (to join again after the backend lost them).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's
    pub(crate) fn here(&self) -> Vec<(String, Member)> {
        let topics = self.topics.lock().unwrap();
        topics.iter().flat_map(|(t, e)| e.here.values().map(move |(_, m)| (t.clone(), m.clone()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_frame_is_the_wire_contracts_presence_state() {
        let mut entry = TopicPresence::default();
        for (id, name) in [("2", "bob \"b\""), ("1", "alice")] {
            entry.members.insert(id.to_owned(), Known::new(Member::new(id, serde_json::json!({ "name": name }))));
        }
        let members = entry.members.values().map(|k| k.member.clone()).collect();
        assert_eq!(entry.state_frame("board"), frame(&PresenceFrame::State { topic: "board".into(), members }));
        let empty = PresenceFrame::State { topic: "t".into(), members: vec![] };
        assert_eq!(TopicPresence::default().state_frame("t"), frame(&empty));
    }

    #[test]
    fn streams_arriving_while_the_members_stay_the_same_share_one_state_frame() {
        let book = PresenceBook::new(100);
        let hub = super::super::hub::Hub::default();
        let topic = [sse_notify_core::Topic::new("room").unwrap()];
        let inboxes: Vec<_> = (0..3).map(|_| hub.register(0, &topic, 8).inbox).collect();
        let entered = book.enter("room", &inboxes[0], None);
        assert!(entered.load && entered.state.is_none(), "the first stream asks for the load");
        book.load("room", vec![Member::new("a", serde_json::Value::Null)]);
        // The stream that was waiting gets the loaded state with its live frames; a stream that
        // arrives now takes it with its opening frames (after its replay), not queued.
        let mut got = std::collections::VecDeque::new();
        let _ = inboxes[0].poll_take(&mut got, &mut std::task::Context::from_waker(std::task::Waker::noop()));
        let Some(Delivery::Presence(first)) = got.pop_back() else { panic!("a presence frame") };
        let second = book.enter("room", &inboxes[1], None).state.expect("loaded: the state at once");
        assert_eq!(first.as_ptr(), second.as_ptr(), "one frame for both");
        book.apply(&PresenceFrame::Join { topic: "room".into(), member: Member::new("b", serde_json::Value::Null) });
        let third = book.enter("room", &inboxes[2], None).state.expect("loaded");
        assert!(std::str::from_utf8(&third).unwrap().contains(r#""id":"b""#), "a new state after a change");
    }

    fn taken(inbox: &Inbox) -> Vec<String> {
        let mut got = std::collections::VecDeque::new();
        let _ = inbox.poll_take(&mut got, &mut std::task::Context::from_waker(std::task::Waker::noop()));
        got.into_iter()
            .map(|d| match d {
                Delivery::Presence(f) => String::from_utf8(f.to_vec()).unwrap(),
                _ => panic!("only presence frames here"),
            })
            .collect()
    }

    // Real time (tokio's paused clock would rebuild tokio with test-util for every test): a
    // summary's timer ends before the test's wait, which is a tenth of a second longer.
    #[tokio::test]
    async fn a_room_above_the_cap_is_counted_at_most_once_a_second_and_listed_again_below_it() {
        let book = PresenceBook::new(2);
        let hub = super::super::hub::Hub::default();
        let topic = [sse_notify_core::Topic::new("hall").unwrap()];
        let (watcher, late) = (hub.register(0, &topic, 64).inbox, hub.register(0, &topic, 64).inbox);
        book.enter("hall", &watcher, None);
        book.load("hall", vec![]);
        taken(&watcher);
        // The load was a summary: the first count may go out a second after it.
        tokio::time::sleep(SUMMARY_INTERVAL + Duration::from_millis(100)).await;
        let join =
            |id: &str| PresenceFrame::Join { topic: "hall".into(), member: Member::new(id, serde_json::Value::Null) };
        let leave = |id: &str| PresenceFrame::Leave { topic: "hall".into(), id: id.into() };
        book.apply(&join("a"));
        book.apply(&join("b"));
        assert_eq!(taken(&watcher).len(), 2, "within the cap: each join");
        book.apply(&join("c"));
        assert_eq!(taken(&watcher), ["event: presence:count\ndata: {\"topic\":\"hall\",\"count\":3}\n\n"]);
        let state = book.enter("hall", &late, None).state.expect("loaded");
        assert!(state.starts_with(b"event: presence:count\n"), "a new stream is told the count, not 3 members");
        for id in ["d", "e", "f"] {
            book.apply(&join(id));
        }
        book.apply(&leave("f"));
        assert!(taken(&watcher).is_empty(), "a second has not passed");
        tokio::time::sleep(SUMMARY_INTERVAL + Duration::from_millis(100)).await;
        assert_eq!(taken(&watcher), ["event: presence:count\ndata: {\"topic\":\"hall\",\"count\":5}\n\n"]);
        for id in ["c", "d", "e", "a"] {
            book.apply(&leave(id));
        }
        book.apply(&join("g"));
        tokio::time::sleep(SUMMARY_INTERVAL + Duration::from_millis(100)).await;
        let listed = taken(&watcher);
        assert_eq!(listed.len(), 1, "one summary for five changes: {listed:?}");
        assert!(listed[0].starts_with("event: presence:state\n") && listed[0].contains("\"id\":\"g\""), "{listed:?}");
        tokio::time::sleep(SUMMARY_INTERVAL + Duration::from_millis(100)).await;
        book.apply(&leave("g"));
        assert_eq!(taken(&watcher), ["event: presence:leave\ndata: {\"topic\":\"hall\",\"id\":\"g\"}\n\n"]);
    }
}
