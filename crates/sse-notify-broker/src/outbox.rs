//! Events accepted after a write while the backend could not take them, published as soon as it
//! can again.
//!
//! "Notify, then fetch" writes first and publishes second. If the publish then fails (Redis went
//! away between the two), answering an error tells the client its write failed although it was
//! stored: a retry stores it twice, and nobody hears of the first. Instead the event waits here,
//! in order, and a relay task retries with backoff until the backend takes it. The outbox is in
//! process memory and bounded (`SSE_OUTBOX_SIZE`): it survives a Redis outage, not a crash of
//! the process during one (the guide's operations page says so).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sse_notify_core::cursor::Cursor;
use sse_notify_core::write::WritePosition;
use sse_notify_core::{PublishError, Topic};

use crate::parts::Parts;
use crate::publish::{publish, valid_origin, Appended};

/// One event waiting for the backend.
#[derive(Clone)]
pub(crate) struct Pending {
    pub(crate) topics: Vec<Topic>,
    pub(crate) event: String,
    pub(crate) data: serde_json::Value,
    /// The writing tab's origin, taken when the write was accepted.
    pub(crate) origin: Option<Box<str>>,
}

impl Pending {
    /// Publishes it, on behalf of the tab that wrote it.
    async fn publish_on(&self, parts: &Parts) -> Result<Appended, PublishError> {
        publish(parts, self.origin.clone(), &self.topics, &self.event, &self.data).await
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Whether a relay task is draining the queue (at most one, so order is kept).
    relaying: bool,
}

/// The events waiting, and what they are published with.
pub(crate) struct Outbox {
    queue: Queue,
    parts: Arc<Parts>,
}

/// The bounded queue and its relay's bookkeeping.
struct Queue {
    state: Mutex<State>,
    capacity: usize,
}

/// What [`Queue::push`] did.
enum Pushed {
    /// Queued; the caller must start a relay.
    StartRelay,
    /// Queued behind others; the running relay will get to it.
    Queued,
    /// The outbox is full.
    Full,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().queue.len()
    }

    fn push(&self, event: Pending) -> Pushed {
        let mut state = self.lock();
        if state.queue.len() >= self.capacity {
            return Pushed::Full;
        }
        state.queue.push_back(event);
        if state.relaying {
            Pushed::Queued
        } else {
            state.relaying = true;
            Pushed::StartRelay
        }
    }

    /// The oldest waiting event, or `None` (and the relay ends) when there is none.
    fn front(&self) -> Option<Pending> {
        let mut state = self.lock();
        let front = state.queue.front().cloned();
        if front.is_none() {
            state.relaying = false;
        }
        front
    }

    /// Removes the oldest event (it was published, or can never be).
    fn pop(&self) {
        self.lock().queue.pop_front();
    }
}

/// The relay's wait after its `attempt`-th failure in a row: 50 ms doubling to 500 ms. (A
/// Sentinel failover takes a few seconds; a longer wait would keep events back long after it.)
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(4)).min(500))
}

/// How long an event the replicas did not confirm waits before it is published once more.
const CONFIRM_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// How `Broker::publish_or_defer` took an event, and where it is in the log when it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Published now, at this position (a cursor whose `matched` is 0).
    Published(Cursor),
    /// Kept in the outbox; published once the backend is back.
    Deferred,
    /// Published now at this position, but fewer replicas than `SSE_REDIS_MIN_REPLICAS`
    /// confirmed it in time (a failover now could lose it): it is published once more a moment
    /// later, so a stream gets it at most twice. Counted in `sse_events_unconfirmed_total`.
    Unconfirmed(Cursor),
}

impl Accepted {
    /// Where the event is, as a write's answer says it ([`sse_notify_core::write::POSITION_HEADER`]).
    pub fn position(&self) -> WritePosition {
        match *self {
            Accepted::Published(at) | Accepted::Unconfirmed(at) => WritePosition::At(at),
            Accepted::Deferred => WritePosition::Deferred,
        }
    }
}

impl Outbox {
    /// Keeps up to `capacity` events (at least one).
    pub(crate) fn new(capacity: usize, parts: Arc<Parts>) -> Arc<Self> {
        Arc::new(Self { queue: Queue::new(capacity.max(1)), parts })
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Publishes an event that reports a write already made, on behalf of the tab `origin`;
    /// if the backend cannot take it now, keeps it, in order, until it can (see
    /// `Broker::publish_or_defer`).
    pub(crate) async fn publish_or_defer(
        self: &Arc<Self>,
        origin: Option<&str>,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<Accepted, PublishError> {
        // Behind events already waiting, so that they keep their order.
        let origin = valid_origin(origin);
        let pending =
            || Pending { topics: topics.to_vec(), event: event.to_owned(), data: data.clone(), origin: origin.clone() };
        if self.len() == 0 {
            match publish(&self.parts, origin.clone(), topics, event, data).await {
                Ok(Appended::Confirmed(at)) => return Ok(Accepted::Published(at)),
                Ok(Appended::Unconfirmed(at)) => {
                    self.publish_again_later(pending());
                    return Ok(Accepted::Unconfirmed(at));
                }
                Err(PublishError::Unavailable) => {}
                Err(e) => return Err(e),
            }
        }
        let pending = pending();
        match self.queue.push(pending) {
            Pushed::Full => {
                tracing::error!(event, "outbox full (SSE_OUTBOX_SIZE): event refused");
                Err(PublishError::Unavailable)
            }
            pushed => {
                // The write happened: answers kept from before it are stale now, whenever its
                // event gets out (the response cache).
                self.parts.hub.touch(&topics.iter().map(Topic::to_string).collect::<Vec<_>>());
                self.parts.metrics.events_deferred.inc();
                tracing::warn!(event, "backend unavailable: event kept in the outbox until it is back");
                if matches!(pushed, Pushed::StartRelay) {
                    self.start_relay();
                }
                Ok(Accepted::Deferred)
            }
        }
    }

    /// Drains the outbox in order, retrying with backoff while the backend is away; ends when
    /// the outbox is empty (the next deferred event starts another).
    fn start_relay(self: &Arc<Self>) {
        let outbox = self.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            while let Some(p) = outbox.queue.front() {
                match p.publish_on(&outbox.parts).await {
                    Ok(appended) => {
                        outbox.queue.pop();
                        failures = 0;
                        if matches!(appended, Appended::Unconfirmed(_)) {
                            outbox.publish_again_later(p);
                        }
                    }
                    Err(PublishError::Unavailable) => {
                        tokio::time::sleep(backoff(failures)).await;
                        failures += 1;
                    }
                    Err(e) => {
                        tracing::error!(event = p.event, error = %e, "outbox event can never be published; dropped");
                        outbox.queue.pop();
                    }
                }
            }
        });
    }

    /// An event is in the log but the replicas did not confirm it: it is published once more
    /// after [`CONFIRM_AGAIN_AFTER`], by a task of its own (so the writes behind it go on in
    /// the meantime, in order), and whatever that gives, not again. Republishing until some
    /// replica confirms would repeat it for as long as the replica stays away (each copy a new
    /// position and a refetch wave), and hold back every write behind it.
    fn publish_again_later(&self, p: Pending) {
        let parts = self.parts.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CONFIRM_AGAIN_AFTER).await;
            match p.publish_on(&parts).await {
                Ok(Appended::Confirmed(_)) => {
                    tracing::info!(event = p.event, "unconfirmed event published again, confirmed")
                }
                Ok(Appended::Unconfirmed(_)) => tracing::error!(
                    event = p.event,
                    "unconfirmed event published again, still unconfirmed: a failover now could lose it"
                ),
                Err(e) => {
                    tracing::error!(event = p.event, error = %e, "unconfirmed event could not be published again")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: u64) -> Pending {
        Pending { topics: vec![Topic::new("t").unwrap()], event: "e".into(), data: n.into(), origin: None }
    }

    #[test]
    fn one_relay_in_order_and_bounded() {
        let outbox = Queue::new(2);
        assert!(matches!(outbox.push(pending(1)), Pushed::StartRelay));
        assert!(matches!(outbox.push(pending(2)), Pushed::Queued));
        assert!(matches!(outbox.push(pending(3)), Pushed::Full));
        assert_eq!(outbox.front().unwrap().data, 1);
        outbox.pop();
        assert_eq!(outbox.front().unwrap().data, 2);
        outbox.pop();
        assert!(outbox.front().is_none(), "empty: the relay ends");
        assert!(matches!(outbox.push(pending(4)), Pushed::StartRelay), "and the next push starts one");
    }

    #[test]
    fn backoff_grows_to_half_a_second() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(4), Duration::from_millis(500));
        assert_eq!(backoff(30), Duration::from_millis(500));
    }
}
