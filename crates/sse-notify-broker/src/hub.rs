//! Local fan-out: which open streams follow which topic, and one bounded queue per stream.
//!
//! An event reaches a stream once however many of its topics the stream follows: the hub
//! collects, per stream, the bits of every matched topic and queues one [`Delivery`] carrying
//! that mask (it becomes the end of the frame's cursor). The queue is the stream's memory
//! bound: when it is full the stream is marked overflowed and cut off with a `resync`.
//!
//! Per-stream queues rather than one broadcast ring per topic: a ring cannot deliver an event
//! once to a stream that follows two of its topics, and it allocates its whole capacity up front.
//! The queue is hand-written rather than `tokio::sync::mpsc`: fan-out touches every stream's
//! queue once per event, and tokio's channel spreads its state over several cache-padded lines
//! (semaphore, list tail, block, receiver waker); here a push is one uncontended lock, a
//! `VecDeque` push and, for a stream that was waiting, a wake. Memory grows with what is queued.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
use sse_notify_core::wire::ResyncReason;
use sse_notify_core::Topic;
use tokio::sync::OnceCell;

use crate::topic_head::TopicHead;

/// One published event, as every local stream receives it.
pub(crate) struct LogEvent {
    /// Its position in the prefix's log.
    pub(crate) position: LogPosition,
    /// The topics it was published on (without the prefix).
    pub(crate) topics: Vec<String>,
    /// The connection-independent start of its cursor (`Cursor::encode_head`).
    pub(crate) id_head: String,
    /// `event:` and `data:` lines and the blank line, encoded once.
    pub(crate) body: Bytes,
    /// The echo tag of the writing tab's origin, when its write said
    /// ([`sse_notify_core::origin::echo_tag`]): it ends the frame's id. Never the origin itself,
    /// which every subscriber would read and anyone could send back.
    pub(crate) echo_tag: Option<Box<str>>,
}

impl LogEvent {
    /// The event at `position` of `log`: its id's head and, for a write that said its origin,
    /// its echo tag, each made once for every stream.
    pub(crate) fn new(
        log: LogId,
        position: LogPosition,
        topics: Vec<String>,
        body: Bytes,
        origin: Option<&str>,
    ) -> Self {
        let id_head = Cursor::encode_head(log, position);
        let echo_tag = origin.map(|o| sse_notify_core::origin::echo_tag(o, &id_head).into_boxed_str());
        Self { position, topics, id_head, body, echo_tag }
    }

    /// The frame for a stream whose matched-topic mask is `matched`: `id: <cursor>` then the
    /// pre-encoded lines.
    pub(crate) fn frame(&self, matched: u64) -> Bytes {
        let mut id = String::with_capacity(self.id_head.len() + 32);
        id.push_str(&self.id_head);
        sse_notify_core::cursor::push_matched(&mut id, matched);
        if let Some(tag) = &self.echo_tag {
            sse_notify_core::cursor::push_echo_tag(&mut id, tag);
        }
        let mut frame = BytesMut::with_capacity(id.len() + 5 + self.body.len());
        frame.put_slice(b"id: ");
        frame.put_slice(id.as_bytes());
        frame.put_u8(b'\n');
        frame.put_slice(&self.body);
        frame.freeze()
    }
}

/// Frames of one event by matched-topic mask, built once per mask: every stream whose mask is
/// the same (e.g. all streams that follow the event's one topic as their first) shares one
/// `Bytes`, so a delivery costs a reference count, not an allocation and a copy.
struct Frames<'a> {
    event: &'a LogEvent,
    built: Vec<(u64, Bytes)>,
}

impl Frames<'_> {
    fn get(&mut self, matched: u64) -> Bytes {
        if let Some((_, f)) = self.built.iter().find(|(m, _)| *m == matched) {
            return f.clone();
        }
        let f = self.event.frame(matched);
        self.built.push((matched, f.clone()));
        f
    }
}

/// A batch this small means the stream keeps up with its events.
const SMALL_BATCH: usize = 2;
/// Deliveries' room a stream's queues keep after a backlog (48 bytes each).
const ROOM_KEPT: usize = 32;

/// What the hub puts in a stream's queue.
pub(crate) enum Delivery {
    /// An event's position and its frame for this stream.
    Event(LogPosition, Bytes),
    /// Events of every topic of the stream may be lost; `head` is the cursor to go on from.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's: a reconnect, a failover
    Resync(ResyncReason, Cursor),
    /// A `presence:*` frame (no position: not a log event).
    Presence(Bytes),
    /// The log was forked (a failover): the new epoch holds the old one up to `kept`, and
    /// goes on from there with positions of its own (above `kept`, whatever the new primary's
    /// clock says, but maybe not above what was lost past `kept`). A stream that saw past
    /// `kept` saw lost events, and resyncs to `head`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's: a failover
    Forked { kept: LogPosition, head: Cursor },
}

/// What wakes a stream besides its events: bits raised by the broker and its endpoint's
/// tickers, taken by the stream when it next runs.
///
/// Carried by the inbox, whose waker the stream registers anyway, rather than by a watch
/// channel per purpose: a stream follows one wake source, not four, and a shared `Notify` is
/// not locked by every stream each time it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals(u8);

impl Signals {
    /// The broker is closing: the stream ends (sticky: never taken).
    pub(crate) const CLOSE: Self = Self(1);
    /// Time for a heartbeat frame.
    pub const HEARTBEAT: Self = Self(2);
    /// Time to run the authorization check again.
    pub const RECHECK: Self = Self(4);

    /// Whether every signal of `other` is raised here.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The hub's handle on one stream: its bounded queue.
pub(crate) struct Inbox {
    id: u64,
    /// The stream group whose tickers signal this stream (0: none; see `Hub::raise`).
    group: u32,
    capacity: usize,
    /// Set with `state.overflow`; read without the lock on every frame the stream sends.
    overflowed: AtomicBool,
    /// Raised [`Signals`] not yet taken.
    signals: AtomicU8,
    /// `Hub::deliver`'s scratch: the matched-topic bits of the event being delivered, gathered
    /// over its topics. Only touched under the hub's lock (so `Relaxed`).
    gathered: AtomicU64,
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    queue: VecDeque<Delivery>,
    /// The stream's task, when it found the queue empty.
    waker: Option<Waker>,
    /// Cursor head of the first event that did not fit, once one did not.
    overflow: Option<String>,
    /// Events refused because the queue was full.
    dropped: u64,
}

impl Inbox {
    /// The stream's id in the hub.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn offer(&self, d: Delivery, event: Option<&LogEvent>) {
        let waker = {
            let mut s = self.state.lock().unwrap();
            if s.queue.len() < self.capacity {
                s.queue.push_back(d);
            } else {
                if s.overflow.is_none() {
                    s.overflow = Some(event.map(|e| e.id_head.clone()).unwrap_or_default());
                    self.overflowed.store(true, Ordering::Release);
                }
                s.dropped += 1;
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Raises `signals` and wakes the stream if it is waiting.
    pub(crate) fn raise(&self, signals: Signals) {
        // Set before the lock: `poll_take` reads it under the lock, so either it sees the bit or
        // it has registered the waker that is taken here.
        self.signals.fetch_or(signals.0, Ordering::AcqRel);
        let waker = self.state.lock().unwrap().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Takes the raised signals (`CLOSE` stays raised).
    pub(crate) fn take_signals(&self) -> Signals {
        Signals(self.signals.fetch_and(Signals::CLOSE.0, Ordering::AcqRel))
    }

    /// Whether the stream was told to end.
    pub(crate) fn is_closed(&self) -> bool {
        Signals(self.signals.load(Ordering::Acquire)).contains(Signals::CLOSE)
    }

    /// Moves everything queued into `into` (which must be empty), or registers the task to be
    /// woken by the next delivery or signal. One lock per batch, not per event. `Ready` with
    /// nothing moved means a signal is waiting.
    pub(crate) fn poll_take(&self, into: &mut VecDeque<Delivery>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().unwrap();
        if s.queue.is_empty() {
            if self.signals.load(Ordering::Acquire) != 0 {
                return Poll::Ready(());
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        if s.queue.len() <= SMALL_BATCH && into.capacity().max(s.queue.capacity()) > ROOM_KEPT {
            // The stream keeps up again: the room a past backlog took (up to `max_queue_size`
            // deliveries, in both queues) is given back rather than kept for the stream's life.
            // Only then, and only past `ROOM_KEPT`: a shrink after every batch cost busy streams
            // a reallocation each (measured: ~10% more CPU per delivery at full rate).
            into.shrink_to(ROOM_KEPT);
            s.queue.shrink_to(ROOM_KEPT);
        }
        std::mem::swap(&mut s.queue, into);
        Poll::Ready(())
    }

    /// `Some((cursor head, events refused + still queued))` once the queue has overflowed.
    pub(crate) fn overflowed(&self) -> Option<(String, u64)> {
        if !self.overflowed.load(Ordering::Acquire) {
            return None;
        }
        let s = self.state.lock().unwrap();
        s.overflow.clone().map(|head| (head, s.dropped + s.queue.len() as u64))
    }
}

/// The streams of one topic.
#[derive(Default)]
struct TopicEntry {
    /// Stream id -> (inbox, index of this topic in the stream's topic list).
    inboxes: HashMap<u64, (Arc<Inbox>, u8)>,
    /// Heads that follow the topic ([`TopicHead`]): told of its events before any stream is.
    heads: Vec<Arc<TopicHead>>,
    /// Set once the backend confirmed the subscription (Redis SUBSCRIBE answered); left unset by
    /// a failure, so the next stream tries again.
    ready: Arc<OnceCell<()>>,
}

impl TopicEntry {
    fn is_unused(&self) -> bool {
        self.inboxes.is_empty() && self.heads.is_empty()
    }
}

/// Every local stream, by topic and by id.
#[derive(Default)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct HubState {
    topics: HashMap<String, TopicEntry>,
    streams: HashMap<u64, Arc<Inbox>>,
    /// Set by `close`: a stream registered afterwards starts closed.
    closed: bool,
}

/// A stream's registration: its inbox and each topic's readiness.
pub(crate) struct Registration {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) ready: Vec<(String, Arc<OnceCell<()>>)>,
}

impl Hub {
    /// Registers a stream of `group` on `topics` (at most 64, distinct) with a queue of
    /// `capacity`.
    pub(crate) fn register(&self, group: u32, topics: &[Topic], capacity: usize) -> Registration {
        let mut state = self.state.lock().unwrap();
        let inbox = Arc::new(Inbox {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            group,
            capacity,
            overflowed: AtomicBool::new(false),
            signals: AtomicU8::new(if state.closed { Signals::CLOSE.0 } else { 0 }),
            gathered: AtomicU64::new(0),
            state: Mutex::default(),
        });
        state.streams.insert(inbox.id, inbox.clone());
        let ready = topics
            .iter()
            .enumerate()
            .map(|(bit, topic)| {
                let entry = state.topics.entry(topic.to_string()).or_default();
                entry.inboxes.insert(inbox.id, (inbox.clone(), bit as u8));
                (topic.to_string(), entry.ready.clone())
            })
            .collect();
        Registration { inbox, ready }
    }

    /// Removes a stream; calls `unused(topic)` for each topic that has no stream left, while
    /// holding the lock (so an unsubscribe is always queued before a later re-subscribe).
    pub(crate) fn release(&self, inbox: &Inbox, topics: &[Topic], mut unused: impl FnMut(&str)) {
        let mut state = self.state.lock().unwrap();
        state.streams.remove(&inbox.id);
        for topic in topics.iter().map(Topic::as_str) {
            if let Some(entry) = state.topics.get_mut(topic) {
                entry.inboxes.remove(&inbox.id);
                if entry.is_unused() {
                    state.topics.remove(topic);
                    unused(topic);
                }
            }
        }
    }

    /// Has `head` told of every event of `topics` (distinct) from now on; returns each topic's
    /// readiness, as [`Hub::register`] does.
    pub(crate) fn register_head(&self, head: &Arc<TopicHead>, topics: &[Topic]) -> Vec<(String, Arc<OnceCell<()>>)> {
        let mut state = self.state.lock().unwrap();
        topics
            .iter()
            .map(|topic| {
                let entry = state.topics.entry(topic.to_string()).or_default();
                entry.heads.push(head.clone());
                (topic.to_string(), entry.ready.clone())
            })
            .collect()
    }

    /// Removes a head; calls `unused(topic)` like [`Hub::release`].
    pub(crate) fn release_head(&self, head: &Arc<TopicHead>, topics: &[Topic], mut unused: impl FnMut(&str)) {
        let mut state = self.state.lock().unwrap();
        for topic in topics.iter().map(Topic::as_str) {
            if let Some(entry) = state.topics.get_mut(topic) {
                entry.heads.retain(|h| !Arc::ptr_eq(h, head));
                if entry.is_unused() {
                    state.topics.remove(topic);
                    unused(topic);
                }
            }
        }
    }

    /// A write to `topics` was accepted here: their heads move on now, before the write's event
    /// comes back from the backend.
    pub(crate) fn touch(&self, topics: &[String]) {
        let state = self.state.lock().unwrap();
        for entry in topics.iter().filter_map(|t| state.topics.get(t)) {
            entry.heads.iter().for_each(|h| h.touch());
        }
    }

    /// Queues `event` once for every stream following at least one of its topics.
    pub(crate) fn deliver(&self, event: &LogEvent) {
        let mut frames = Frames { event, built: Vec::new() };
        let state = self.state.lock().unwrap();
        // Heads first: a stream's client that refetches on this event finds its topics' heads
        // already past it.
        for entry in event.topics.iter().filter_map(|t| state.topics.get(t)) {
            entry.heads.iter().for_each(|h| h.advance(event.position));
        }
        let mut entries = event.topics.iter().filter_map(|t| state.topics.get(t));
        let (Some(first), second) = (entries.next(), entries.next()) else { return };
        let Some(second) = second else {
            // One of its topics has streams here (the usual case): each stream once, as listed.
            for (inbox, bit) in first.inboxes.values() {
                inbox.offer(Delivery::Event(event.position, frames.get(1 << bit)), Some(event));
            }
            return;
        };
        // Several: gather each stream's bits in its scratch word (no map of streams to build),
        // listing a stream when its first bit arrives, then offer once per listed stream.
        let mut listed: Vec<&Arc<Inbox>> = Vec::new();
        for entry in [first, second].into_iter().chain(entries) {
            for (inbox, bit) in entry.inboxes.values() {
                if inbox.gathered.fetch_or(1 << bit, Ordering::Relaxed) == 0 {
                    listed.push(inbox);
                }
            }
        }
        for inbox in listed {
            let mask = inbox.gathered.swap(0, Ordering::Relaxed);
            inbox.offer(Delivery::Event(event.position, frames.get(mask)), Some(event));
        }
    }

    /// Tells every local stream to refetch all its topics and go on from `head`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's: a reconnect, a failover
    pub(crate) fn resync_all(&self, reason: ResyncReason, head: Cursor) {
        for entry in self.state.lock().unwrap().topics.values() {
            entry.heads.iter().for_each(|h| h.reset(head));
        }
        for inbox in self.streams(|_| true) {
            inbox.offer(Delivery::Resync(reason, head), None);
        }
    }

    /// Tells every stream the log was forked at `kept` ([`Delivery::Forked`]).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's
    pub(crate) fn forked_all(&self, kept: LogPosition, head: Cursor) {
        for inbox in self.streams(|_| true) {
            inbox.offer(Delivery::Forked { kept, head }, None);
        }
    }

    /// Raises `signals` on every stream of `group`.
    pub(crate) fn raise(&self, group: u32, signals: Signals) {
        // Collected first: waking thousands of streams must not hold up deliveries.
        for inbox in self.streams(|inbox| inbox.group == group) {
            inbox.raise(signals);
        }
    }

    /// Ends every stream, and every stream registered from now on.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap().closed = true;
        for inbox in self.streams(|_| true) {
            inbox.raise(Signals::CLOSE);
        }
    }

    /// Events waiting in streams' queues: in all of them, and in the fullest one.
    pub(crate) fn queued(&self) -> (usize, usize) {
        let (mut total, mut max) = (0, 0);
        for inbox in self.streams(|_| true) {
            let n = inbox.state.lock().unwrap().queue.len();
            total += n;
            max = max.max(n);
        }
        (total, max)
    }

    /// The local streams that `pick` picks.
    fn streams(&self, pick: impl Fn(&Inbox) -> bool) -> Vec<Arc<Inbox>> {
        self.state.lock().unwrap().streams.values().filter(|i| pick(i)).cloned().collect()
    }

    /// Topics with at least one local stream.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // the Redis backend's: a reconnect, a failover
    pub(crate) fn topics(&self) -> Vec<String> {
        self.state.lock().unwrap().topics.keys().cloned().collect()
    }

    /// How many topics have at least one local stream.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().topics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, topics: &[&str]) -> Arc<LogEvent> {
        Arc::new(LogEvent {
            position: LogPosition { ms: position, seq: 0 },
            topics: topics.iter().map(|t| t.to_string()).collect(),
            id_head: format!("h{position}-"),
            body: Bytes::from_static(b"event: x\ndata: {}\n\n"),
            echo_tag: None,
        })
    }

    fn named(t: &[&str]) -> Vec<Topic> {
        t.iter().map(|t| Topic::new(*t).unwrap()).collect()
    }

    fn take(r: &Registration) -> Vec<(LogPosition, Bytes)> {
        let mut got = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let _ = r.inbox.poll_take(&mut got, &mut cx);
        got.into_iter()
            .map(|d| match d {
                Delivery::Event(p, f) => (p, f),
                Delivery::Resync(..) | Delivery::Presence(_) | Delivery::Forked { .. } => panic!("an event expected"),
            })
            .collect()
    }

    #[test]
    fn an_event_on_several_followed_topics_arrives_once_with_every_matched_bit() {
        let hub = Hub::default();
        let both = hub.register(0, &named(&["a", "b", "c"]), 8);
        let only_c = hub.register(0, &named(&["c"]), 8);
        hub.deliver(&event(1, &["c", "a"]));
        hub.deliver(&event(2, &["b"]));
        let pos = |ms| LogPosition { ms, seq: 0 };
        assert_eq!(
            take(&both),
            [(pos(1), Bytes::from("id: h1-5\nevent: x\ndata: {}\n\n")), (pos(2), event(2, &[]).frame(0b010))]
        );
        assert_eq!(take(&only_c), [(pos(1), event(1, &[]).frame(1))]);
        assert!(take(&only_c).is_empty());
    }

    #[test]
    fn a_full_queue_marks_the_stream_with_the_first_event_it_missed() {
        let hub = Hub::default();
        let r = hub.register(0, &named(&["a"]), 2);
        for p in 1..=4 {
            hub.deliver(&event(p, &["a"]));
        }
        assert_eq!(r.inbox.overflowed(), Some(("h3-".to_owned(), 4)), "2 refused + 2 still queued");
    }

    #[test]
    fn signals_reach_their_group_and_close_reaches_every_stream_even_later_ones() {
        let hub = Hub::default();
        let (one, two) = (hub.register(1, &named(&["a"]), 2), hub.register(2, &named(&["a"]), 2));
        hub.raise(1, Signals::HEARTBEAT);
        assert_eq!(one.inbox.take_signals(), Signals::HEARTBEAT);
        assert_eq!(one.inbox.take_signals(), Signals::default(), "taken once");
        assert_eq!(two.inbox.take_signals(), Signals::default(), "another group's tick");
        // A raised signal makes a waiting stream's poll ready, so its task runs and takes it.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(two.inbox.poll_take(&mut VecDeque::new(), &mut cx).is_pending());
        hub.raise(2, Signals::RECHECK);
        assert!(two.inbox.poll_take(&mut VecDeque::new(), &mut cx).is_ready());
        hub.close();
        let later = hub.register(1, &named(&["b"]), 2);
        for inbox in [&one.inbox, &two.inbox, &later.inbox] {
            assert!(inbox.is_closed());
            inbox.take_signals();
            assert!(inbox.is_closed(), "closing is never taken");
        }
    }

    #[test]
    fn a_stream_that_keeps_up_again_gives_back_the_room_of_its_backlog() {
        let hub = Hub::default();
        let r = hub.register(0, &named(&["a"]), 256);
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = VecDeque::new();
        for p in 1..=200 {
            hub.deliver(&event(p, &["a"]));
        }
        assert!(r.inbox.poll_take(&mut batch, &mut cx).is_ready());
        assert_eq!(batch.len(), 200, "the backlog");
        batch.clear();
        hub.deliver(&event(201, &["a"]));
        assert!(r.inbox.poll_take(&mut batch, &mut cx).is_ready());
        assert_eq!(batch.len(), 1);
        let queue = r.inbox.state.lock().unwrap().queue.capacity();
        assert!(batch.capacity() <= ROOM_KEPT && queue <= ROOM_KEPT, "kept {} and {queue}", batch.capacity());
    }

    #[test]
    fn a_head_hears_of_its_topics_events_writes_and_resyncs_and_keeps_its_topics_followed() {
        let hub = Hub::default();
        let head = Arc::new(TopicHead::new());
        let state = head.subscribe();
        hub.register_head(&head, &named(&["a", "b"]));
        let _stream = hub.register(0, &named(&["b"]), 2);
        let generation = |s: &tokio::sync::watch::Receiver<super::super::Head>| s.borrow().generation;
        let g0 = generation(&state);
        hub.deliver(&event(5, &["c"]));
        assert_eq!(generation(&state), g0, "another topic's event");
        hub.deliver(&event(5, &["b", "a"]));
        assert_eq!(state.borrow().position, LogPosition { ms: 5, seq: 0 });
        let g1 = generation(&state);
        assert_ne!(g1, g0);
        hub.touch(&["a".to_owned()]);
        assert_ne!(generation(&state), g1, "a write accepted here");
        let new_epoch = Cursor {
            log: sse_notify_core::cursor::LogId { tag: 1, epoch: 9 },
            position: LogPosition::START,
            matched: 0,
        };
        hub.resync_all(ResyncReason::BrokerReconnected, new_epoch);
        assert_eq!((state.borrow().log, state.borrow().position), (Some(new_epoch.log), LogPosition::START));
        let mut unused = Vec::new();
        hub.release_head(&head, &named(&["a", "b"]), |t| unused.push(t.to_owned()));
        assert_eq!(unused, ["a"], "b still has a stream");
    }

    #[test]
    fn release_reports_topics_left_without_streams_and_frees_them() {
        let hub = Hub::default();
        let a = hub.register(0, &named(&["a", "b"]), 2);
        let _b = hub.register(0, &named(&["b"]), 2);
        let mut unused = Vec::new();
        hub.release(&a.inbox, &named(&["a", "b"]), |t| unused.push(t.to_owned()));
        assert_eq!(unused, ["a"]);
        assert_eq!(hub.topics(), ["b"]);
    }
}
