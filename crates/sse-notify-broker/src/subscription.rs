//! One stream's subscription: opening it (follow its topics, read the log once, replay or
//! resync, the presence states), then its frames, each once, until it is dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use sse_notify_core::cursor::{Cursor, LogPosition};
use sse_notify_core::presence::Member;
use sse_notify_core::wire::{Resync, ResyncReason, RESYNC_EVENT};
use sse_notify_core::Topic;

use crate::backend::Follower;
use crate::error::BrokerError;
use crate::hub::{Delivery, Inbox, Signals};
use crate::limits::checked_topics;
use crate::metrics::SharedMetrics;
use crate::parts::Parts;
use crate::presence;

/// Opens a subscription to `topics` for a stream of `group`, resuming from `last_event_id`,
/// seeing the presence of each topic of `presence` (as its member when one is given).
pub(crate) async fn open(
    parts: &Arc<Parts>,
    group: u32,
    topics: &[Topic],
    last_event_id: Option<&str>,
    presence: Vec<(Topic, Option<Member>)>,
) -> Result<Subscription, BrokerError> {
    // Bit `i` of every frame's mask, live or replayed, is the `i`-th of these.
    let topics = checked_topics(topics)?;
    let registration = parts.hub.register(group, &topics, parts.limits.max_queue_size);
    // From here on the guard cleans up, even if this future is dropped or fails.
    let mut guard = SubscriptionGuard { parts: parts.clone(), inbox: registration.inbox, topics, presence: Vec::new() };
    for (topic, ready) in &registration.ready {
        if !ready.initialized() {
            parts.backend.hurry(topic); // a watch may have asked for it first
        }
        let follow = || parts.backend.follow(topic, Follower::Stream);
        ready.get_or_try_init(follow).await.map_err(BrokerError::Unavailable)?;
    }
    // Followed first: a Redis topic's members are loaded once its changes flow.
    let mut states = Vec::new();
    for (topic, member) in presence {
        let entered = parts.presence.enter(topic.as_str(), &guard.inbox, member.as_ref());
        if entered.load {
            parts.backend.presence_load(topic.as_str());
        }
        if let Some(member) = entered.join {
            parts.backend.presence_join(topic.as_str(), member);
        }
        // In the guard before the read below: if this future is dropped there, the stream
        // still leaves the topic.
        guard.presence.push((topic.clone(), member.map(|m| m.id)));
        // The state goes after the replay and before anything live. Members still loading
        // (the first stream of a Redis topic here) are read for this stream now; the load,
        // when it lands, sends every follower the state again (a reload, as the contract
        // allows), and the changes after it.
        let state = match entered.state.or_else(|| parts.presence.loaded_state(topic.as_str())) {
            Some(state) => Some(state),
            None => match parts.backend.presence_members(topic.as_str()).await {
                Ok(members) => Some(presence::summary_frame(topic.as_str(), members, parts.limits.presence_max_listed)),
                Err(e) => {
                    tracing::debug!(topic = topic.as_str(), error = %e, "presence: state comes with the load");
                    None
                }
            },
        };
        states.extend(state);
    }
    // Kept for the stream's life: without the room pushes left (four entries' worth for one).
    guard.presence.shrink_to_fit();
    let mut sub = Subscription {
        first: VecDeque::new(),
        batch: VecDeque::new(),
        after: LogPosition::START,
        done: false,
        metrics: parts.metrics.clone(),
        guard,
    };
    // Subscribed before the log is read: whatever the read misses is already queued live,
    // and live events at or before what was replayed are skipped. One read serves every
    // case: the head for a fresh start or a resync, the events after a cursor of this log.
    let cursor = last_event_id.map(str::parse::<Cursor>);
    let after = match &cursor {
        Some(Ok(c)) if c.log.tag == parts.log_tag => Some(c.position),
        _ => None,
    };
    let h = parts.history(after).await?;
    let resync = match cursor {
        None => {
            sub.first.push_back(Bytes::from(format!("id: {}\n\n", h.head_cursor())));
            None
        }
        Some(Err(_)) => Some(ResyncReason::MalformedCursor),
        Some(Ok(c)) if c.log.tag != parts.log_tag => Some(ResyncReason::ForeignCursor),
        Some(Ok(c)) if !h.covers(c.log, c.position) => Some(ResyncReason::UnknownCursor),
        Some(Ok(_)) if !h.complete => Some(ResyncReason::CursorTrimmed),
        Some(Ok(c)) => {
            sub.after = c.position;
            let mut replayed = 0;
            for event in &h.events {
                let mask = sub.mask(&event.topics);
                if mask != 0 {
                    sub.first.push_back(event.frame(mask));
                    replayed += 1;
                }
                sub.after = event.position;
            }
            parts.metrics.events_replayed.inc_by(replayed);
            parts.metrics.events_delivered.inc_by(replayed);
            None
        }
    };
    if let Some(reason) = resync {
        sub.first.push_back(resync_frame(reason, Some(&h.head_cursor().to_string()), sub.topics()));
        sub.after = h.head;
        parts.metrics.resynced(reason, 1);
    }
    sub.first.extend(states);
    Ok(sub)
}

/// `event: resync` naming `topics`, with the cursor to go on from.
fn resync_frame(reason: ResyncReason, head: Option<&str>, topics: &[Topic]) -> Bytes {
    let data = Resync::new(reason, topics.iter().map(Topic::as_str)).to_json();
    Bytes::from(sse_notify_core::wire::encode_event(head, RESYNC_EVENT, &data).expect("valid frame"))
}

/// One stream's events: first what it missed (or a `resync`), then live ones, each once.
pub struct Subscription {
    first: VecDeque<Bytes>,
    /// Deliveries taken from the inbox in one go, sent one by one.
    batch: VecDeque<Delivery>,
    /// Live events at or before this position were replayed or are covered by a resync.
    after: LogPosition,
    done: bool,
    metrics: SharedMetrics,
    /// Also holds the stream's inbox and its topics (their one copy).
    guard: SubscriptionGuard,
}

impl Subscription {
    /// The topics, in the order their bits appear in each frame's cursor.
    pub fn topics(&self) -> &[Topic] {
        &self.guard.topics
    }

    fn mask(&self, event_topics: &[String]) -> u64 {
        let mut mask = 0;
        for (bit, t) in self.topics().iter().enumerate() {
            if event_topics.iter().any(|e| e == t.as_str()) {
                mask |= 1 << bit;
            }
        }
        mask
    }

    /// The next frame; `None` after the stream was cut off for reading too slowly.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Takes the heartbeat and re-check signals raised for this stream since the last call.
    pub fn take_signals(&self) -> Signals {
        self.guard.inbox.take_signals()
    }

    /// Polls for the next frame (see [`Subscription::next_frame`]). Ends when the broker is
    /// closed.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.done || self.guard.inbox.is_closed() {
            self.done = true;
            return Poll::Ready(None);
        }
        if let Some((head, dropped)) = self.guard.inbox.overflowed() {
            // Too slow: what is queued is dropped. The resync covers everything up to the first
            // event that did not fit (the client refetches after receiving it), and its id
            // resumes right after that event.
            self.done = true;
            let dropped = dropped + self.batch.len() as u64;
            tracing::info!(dropped, "slow SSE consumer cut off");
            self.metrics.events_dropped.inc_by(dropped);
            self.metrics.slow_consumer_disconnects.inc();
            self.metrics.resynced(ResyncReason::SlowConsumer, 1);
            // (No event to name when what overflowed was a resync: then the client resumes from
            // its last id, and a replay may repeat a few events; a duplicate refetch, not a miss.)
            let head = (!head.is_empty()).then(|| format!("{head}0"));
            return Poll::Ready(Some(resync_frame(ResyncReason::SlowConsumer, head.as_deref(), self.topics())));
        }
        if let Some(frame) = self.first.pop_front() {
            if self.first.is_empty() {
                // Filled once, at the start: its room is given back rather than kept for the
                // stream's life (~130 B of every idle stream).
                self.first = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        loop {
            let Some(next) = self.batch.pop_front() else {
                match self.guard.inbox.poll_take(&mut self.batch, cx) {
                    Poll::Ready(()) if self.batch.is_empty() => {
                        // A signal is waiting.
                        if self.guard.inbox.is_closed() {
                            self.done = true;
                            return Poll::Ready(None);
                        }
                        // A heartbeat or re-check, for the endpoint that takes them: poll again
                        // at once (a plain subscription's group is never signalled).
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Ready(()) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            };
            return match next {
                Delivery::Event(position, frame) => {
                    if position <= self.after {
                        continue;
                    }
                    self.after = position;
                    self.metrics.events_delivered.inc();
                    Poll::Ready(Some(frame))
                }
                Delivery::Resync(reason, head) => {
                    self.after = head.position;
                    Poll::Ready(Some(resync_frame(reason, Some(&head.to_string()), self.topics())))
                }
                // Positions up to `kept` are the same events in both epochs, and the new
                // epoch's go on above `kept`: a stream at or before it goes on comparing. One
                // past it (it replayed from the log what this instance had not delivered yet)
                // saw events the new log lost, whose positions the new epoch may issue again:
                // comparing would drop new events as seen.
                Delivery::Forked { kept, .. } if self.after <= kept => continue,
                Delivery::Forked { head, .. } => {
                    self.after = head.position;
                    let reason = ResyncReason::BrokerReconnected;
                    Poll::Ready(Some(resync_frame(reason, Some(&head.to_string()), self.topics())))
                }
                Delivery::Presence(frame) => Poll::Ready(Some(frame)),
            };
        }
    }
}

/// Removes the stream from the hub, and unsubscribes topics no stream follows any more; the
/// stream's member leaves the topics it was the last stream of here.
struct SubscriptionGuard {
    parts: Arc<Parts>,
    inbox: Arc<Inbox>,
    topics: Vec<Topic>,
    /// Topics whose presence the stream sees, and the member it is there.
    presence: Vec<(Topic, Option<String>)>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let parts = &self.parts;
        for (topic, member) in &self.presence {
            if let Some(id) = parts.presence.exit(topic.as_str(), self.inbox.id(), member.as_deref()) {
                parts.backend.presence_leave(topic.as_str(), id);
            }
        }
        parts.hub.release(&self.inbox, &self.topics, |topic| parts.backend.unfollow(topic));
    }
}
