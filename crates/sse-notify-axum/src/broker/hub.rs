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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use sse_notify_core::cursor::{Cursor, LogPosition};
use sse_notify_core::wire::ResyncReason;
use tokio::sync::OnceCell;

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
}

impl LogEvent {
    /// The frame for a stream whose matched-topic mask is `matched`: `id: <cursor>` then the
    /// pre-encoded lines.
    pub(crate) fn frame(&self, matched: u64) -> Bytes {
        let mut id = String::with_capacity(self.id_head.len() + 16);
        id.push_str(&self.id_head);
        sse_notify_core::cursor::push_matched(&mut id, matched);
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

/// What the hub puts in a stream's queue.
pub(crate) enum Delivery {
    /// An event's position and its frame for this stream.
    Event(LogPosition, Bytes),
    /// Events of every topic of the stream may be lost; `head` is the cursor to go on from.
    Resync(ResyncReason, Cursor),
}

/// The hub's handle on one stream: its bounded queue.
pub(crate) struct Inbox {
    id: u64,
    capacity: usize,
    /// Set with `state.overflow`; read without the lock on every frame the stream sends.
    overflowed: AtomicBool,
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
    fn offer(&self, d: Delivery, event: Option<&LogEvent>) {
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

    /// Moves everything queued into `into` (which must be empty), or registers the task to be
    /// woken by the next delivery. One lock per batch, not per event.
    pub(crate) fn poll_take(&self, into: &mut VecDeque<Delivery>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().unwrap();
        if s.queue.is_empty() {
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
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
struct TopicEntry {
    /// Stream id -> (inbox, index of this topic in the stream's topic list).
    inboxes: HashMap<u64, (Arc<Inbox>, u8)>,
    /// Set once the backend confirmed the subscription (Redis SUBSCRIBE answered); left unset by
    /// a failure, so the next stream tries again.
    ready: Arc<OnceCell<()>>,
}

/// Every local stream by topic.
#[derive(Default)]
pub(crate) struct Hub {
    topics: Mutex<HashMap<String, TopicEntry>>,
    next_id: AtomicU64,
}

/// A stream's registration: its inbox and each topic's readiness.
pub(crate) struct Registration {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) ready: Vec<(String, Arc<OnceCell<()>>)>,
}

impl Hub {
    /// Registers a stream on `topics` (at most 64, distinct) with a queue of `capacity`.
    pub(crate) fn register(&self, topics: &[String], capacity: usize) -> Registration {
        let inbox = Arc::new(Inbox {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            capacity,
            overflowed: AtomicBool::new(false),
            state: Mutex::default(),
        });
        let mut map = self.topics.lock().unwrap();
        let ready = topics
            .iter()
            .enumerate()
            .map(|(bit, topic)| {
                let entry = map
                    .entry(topic.clone())
                    .or_insert_with(|| TopicEntry { inboxes: HashMap::new(), ready: Arc::default() });
                entry.inboxes.insert(inbox.id, (inbox.clone(), bit as u8));
                (topic.clone(), entry.ready.clone())
            })
            .collect();
        Registration { inbox, ready }
    }

    /// Removes a stream; calls `unused(topic)` for each topic that has no stream left, while
    /// holding the lock (so an unsubscribe is always queued before a later re-subscribe).
    pub(crate) fn release(&self, inbox: &Inbox, topics: &[String], mut unused: impl FnMut(&str)) {
        let mut map = self.topics.lock().unwrap();
        for topic in topics {
            if let Some(entry) = map.get_mut(topic) {
                entry.inboxes.remove(&inbox.id);
                if entry.inboxes.is_empty() {
                    map.remove(topic);
                    unused(topic);
                }
            }
        }
    }

    /// Queues `event` once for every stream following at least one of its topics.
    pub(crate) fn deliver(&self, event: &LogEvent) {
        let mut frames = Frames { event, built: Vec::new() };
        let map = self.topics.lock().unwrap();
        if let [topic] = event.topics.as_slice() {
            if let Some(entry) = map.get(topic) {
                for (inbox, bit) in entry.inboxes.values() {
                    inbox.offer(Delivery::Event(event.position, frames.get(1 << bit)), Some(event));
                }
            }
            return;
        }
        let mut targets: HashMap<u64, (&Arc<Inbox>, u64)> = HashMap::new();
        for topic in &event.topics {
            if let Some(entry) = map.get(topic) {
                for (id, (inbox, bit)) in &entry.inboxes {
                    targets.entry(*id).or_insert((inbox, 0)).1 |= 1 << bit;
                }
            }
        }
        for (inbox, mask) in targets.into_values() {
            inbox.offer(Delivery::Event(event.position, frames.get(mask)), Some(event));
        }
    }

    /// Tells every local stream to refetch all its topics and go on from `head`.
    pub(crate) fn resync_all(&self, reason: ResyncReason, head: Cursor) {
        self.for_each_stream(|inbox| inbox.offer(Delivery::Resync(reason, head), None));
    }

    /// Events waiting in streams' queues: in all of them, and in the fullest one.
    pub(crate) fn queued(&self) -> (usize, usize) {
        let (mut total, mut max) = (0, 0);
        self.for_each_stream(|inbox| {
            let n = inbox.state.lock().unwrap().queue.len();
            total += n;
            max = max.max(n);
        });
        (total, max)
    }

    /// Calls `f` once for every local stream (a stream is listed under each of its topics).
    fn for_each_stream(&self, mut f: impl FnMut(&Inbox)) {
        let map = self.topics.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        for entry in map.values() {
            for (id, (inbox, _)) in &entry.inboxes {
                if seen.insert(*id) {
                    f(inbox);
                }
            }
        }
    }

    /// Topics with at least one local stream.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.topics.lock().unwrap().keys().cloned().collect()
    }

    /// How many topics have at least one local stream.
    pub(crate) fn len(&self) -> usize {
        self.topics.lock().unwrap().len()
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
        })
    }

    fn strings(t: &[&str]) -> Vec<String> {
        t.iter().map(|t| t.to_string()).collect()
    }

    fn take(r: &Registration) -> Vec<(LogPosition, Bytes)> {
        let mut got = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let _ = r.inbox.poll_take(&mut got, &mut cx);
        got.into_iter()
            .map(|d| match d {
                Delivery::Event(p, f) => (p, f),
                Delivery::Resync(..) => panic!("no resync expected"),
            })
            .collect()
    }

    #[test]
    fn an_event_on_several_followed_topics_arrives_once_with_every_matched_bit() {
        let hub = Hub::default();
        let both = hub.register(&strings(&["a", "b", "c"]), 8);
        let only_c = hub.register(&strings(&["c"]), 8);
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
        let r = hub.register(&strings(&["a"]), 2);
        for p in 1..=4 {
            hub.deliver(&event(p, &["a"]));
        }
        assert_eq!(r.inbox.overflowed(), Some(("h3-".to_owned(), 4)), "2 refused + 2 still queued");
    }

    #[test]
    fn release_reports_topics_left_without_streams_and_frees_them() {
        let hub = Hub::default();
        let a = hub.register(&strings(&["a", "b"]), 2);
        let _b = hub.register(&strings(&["b"]), 2);
        let mut unused = Vec::new();
        hub.release(&a.inbox, &strings(&["a", "b"]), |t| unused.push(t.to_owned()));
        assert_eq!(unused, ["a"]);
        assert_eq!(hub.topics(), ["b"]);
    }
}
