//! This tab's part in the browser's one stream ([`crate::tabs`] has the election and the
//! channel): alone, following the leading tab, or leading, with what the other tabs want.

use std::collections::{BTreeMap, BTreeSet};

use sse_notify_core::Topic;

use super::stream::StreamKey;
use crate::decode;
use crate::tabs::{self, TabLink, TabMessage};

/// This tab's part in the browser's one stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    /// No sharing (the browser lacks Web Locks or BroadcastChannel): this tab's own stream.
    Solo,
    /// Another tab holds the stream; this one announces its topics and gets its frames.
    Follower,
    /// This tab holds the stream for every tab.
    Leader,
}

/// What another tab wants from the leader's stream.
struct Peer {
    want: StreamKey,
    since: Option<String>,
    seen_ms: f64,
}

pub(super) struct Sharing {
    pub(super) role: Role,
    /// The channel to the other tabs (`None` when [`Role::Solo`]).
    link: Option<TabLink>,
    /// The tab's id among its browser's tabs, made from its origin without showing it (the
    /// origin is a secret its writes alone send).
    tab: String,
    /// The other tabs' subscriptions (the leader's view).
    peers: BTreeMap<String, Peer>,
    /// What this tab last told the leader it wants (a follower's view).
    announced: Option<StreamKey>,
    /// When the leader was last heard from (a follower's view).
    leader_heard_ms: f64,
    /// This tab asked to take the lock over from a silent leader, and waits for it.
    taking_over: bool,
}

/// What a follower's check of its leader found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum LeaderCheck {
    /// Heard from recently enough (or this tab is no follower).
    Alive,
    /// Silent past the bound: take the lock over.
    Silent,
}

impl Sharing {
    pub(super) fn solo() -> Self {
        Self {
            role: Role::Solo,
            link: None,
            tab: sse_notify_core::origin::echo_tag(crate::origin::tab_origin(), "tab"),
            peers: BTreeMap::new(),
            announced: None,
            leader_heard_ms: tabs::now_ms(),
            taking_over: false,
        }
    }

    /// Linked to the other tabs: a follower until the election makes it lead.
    pub(super) fn link(&mut self, link: TabLink) {
        self.link = Some(link);
        self.role = Role::Follower;
    }

    /// Back to a stream of this tab's own (the election could not be joined).
    pub(super) fn unlink(&mut self) {
        self.link = None;
        self.role = Role::Solo;
    }

    pub(super) fn send(&self, msg: &TabMessage) {
        if let Some(link) = &self.link {
            link.send(msg);
        }
    }

    /// Sends `msg` to the other tabs when this tab leads (what its stream says, they hear).
    pub(super) fn tell_followers(&self, msg: impl FnOnce() -> TabMessage) {
        if self.role == Role::Leader {
            self.send(&msg());
        }
    }

    /// The page goes away: a follower says so (a leader's lock tells the others).
    pub(super) fn leave(&self) {
        if self.role == Role::Follower {
            self.send(&TabMessage::Bye { tab: self.tab.clone() });
        }
    }

    /// This tab now leads: it asks the others what they want.
    pub(super) fn lead(&mut self) {
        self.role = Role::Leader;
        self.taking_over = false;
        self.peers.clear();
        self.send(&TabMessage::Leader);
    }

    /// This tab no longer leads (another took the lock while it was frozen or hung): it
    /// follows the one that does.
    pub(super) fn step_down(&mut self) {
        self.role = Role::Follower;
        self.peers.clear();
        self.announced = None;
        self.leader_heard_ms = tabs::now_ms();
    }

    /// A message from the leader came.
    pub(super) fn heard_leader(&mut self) {
        self.leader_heard_ms = tabs::now_ms();
    }

    /// Every second: the leader says it runs; a follower checks that its leader does, within
    /// a bound that is short while the user sees the tab and long while it is hidden (a
    /// hidden tab's timers may run once a minute, the leader's too). A follower that found it
    /// silent once waits for the lock it then asked for, without asking again.
    pub(super) fn beat(&mut self) -> LeaderCheck {
        match self.role {
            Role::Leader => {
                self.send(&TabMessage::Beat);
                LeaderCheck::Alive
            }
            Role::Follower if !self.taking_over => {
                let bound = if tabs::page_visible() { tabs::LEADER_SILENT_MS } else { tabs::LEADER_SILENT_HIDDEN_MS };
                if tabs::now_ms() - self.leader_heard_ms > bound {
                    self.taking_over = true;
                    LeaderCheck::Silent
                } else {
                    LeaderCheck::Alive
                }
            }
            Role::Follower | Role::Solo => LeaderCheck::Alive,
        }
    }

    /// The lock could not be asked for: wait for the leader again, and check it later.
    pub(super) fn take_over_failed(&mut self) {
        self.taking_over = false;
        self.leader_heard_ms = tabs::now_ms();
    }

    /// Every few seconds: a follower announces again (a new leader, or one that missed a
    /// message, learns what it wants); the leader forgets tabs it has not heard from. Whether
    /// the stream must be looked at again.
    pub(super) fn tick(&mut self) -> bool {
        match self.role {
            Role::Follower => {
                self.announced = None;
                true
            }
            Role::Leader => {
                let now = tabs::now_ms();
                let before = self.peers.len();
                self.peers.retain(|_, p| now - p.seen_ms < tabs::FORGET_AFTER_MS);
                self.peers.len() != before
            }
            Role::Solo => false,
        }
    }

    /// A new leader: announce again.
    pub(super) fn forget_announced(&mut self) {
        self.announced = None;
    }

    /// A follower tells the leader what this tab wants, when that changed since it last did.
    pub(super) fn announce(&mut self, wanted: StreamKey, since: Option<String>) {
        if self.announced.as_ref() == Some(&wanted) {
            return;
        }
        self.send(&TabMessage::Want {
            tab: self.tab.clone(),
            topics: wanted.topics.iter().cloned().collect(),
            names: wanted.names.iter().cloned().collect(),
            presence: wanted.presence.iter().cloned().collect(),
            since,
        });
        self.announced = Some(wanted);
    }

    /// The leader hears another tab's want.
    pub(super) fn add_peer(&mut self, tab: String, want: StreamKey, since: Option<String>) {
        self.peers.insert(tab, Peer { want, since, seen_ms: tabs::now_ms() });
    }

    pub(super) fn remove_peer(&mut self, tab: &str) {
        self.peers.remove(tab);
    }

    /// The leader's stream: this tab's `wanted` and every other tab's, from `since` or, for
    /// topics another tab adds to `streamed`, that tab's cursor when it is older (so nothing
    /// published since it rendered is missed).
    pub(super) fn union(
        &self,
        mut wanted: StreamKey,
        mut since: Option<String>,
        streamed: Option<&BTreeSet<Topic>>,
    ) -> (StreamKey, Option<String>) {
        for peer in self.peers.values() {
            wanted.topics.extend(peer.want.topics.iter().cloned());
            wanted.names.extend(peer.want.names.iter().cloned());
            wanted.presence.extend(peer.want.presence.iter().cloned());
            if !streamed.is_some_and(|s| peer.want.topics.is_subset(s)) {
                since = decode::older(since, peer.since.as_ref());
            }
        }
        (wanted, since)
    }
}
