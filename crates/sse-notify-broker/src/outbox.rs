//! Events accepted after a write while the backend could not take them, published as soon as it
//! can again.
//!
//! "Notify, then fetch" writes first and publishes second. If the publish then fails (Redis went
//! away between the two), answering an error tells the client its write failed although it was
//! stored: a retry stores it twice, and nobody hears of the first. Instead the event waits here,
//! in order, and a relay task retries with backoff until the backend takes it. The outbox is in
//! process memory and bounded (`SSE_OUTBOX_SIZE`): it survives a Redis outage, not a crash of
//! the process during one (the README's production notes say so).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use sse_notify_core::{PublishError, Topic};

use super::{Appended, Broker};

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
    /// Publishes it through `broker`, on behalf of the tab that wrote it.
    async fn publish_on(&self, broker: &Broker) -> Result<Appended, PublishError> {
        broker.publish_appended(self.origin.clone(), &self.topics, &self.event, &self.data).await
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Whether a relay task is draining the queue (at most one, so order is kept).
    relaying: bool,
}

/// The bounded queue and its relay's bookkeeping.
pub(crate) struct Outbox {
    state: Mutex<State>,
    capacity: usize,
}

/// What [`Outbox::push`] did.
pub(crate) enum Pushed {
    /// Queued; the caller must start a relay.
    StartRelay,
    /// Queued behind others; the running relay will get to it.
    Queued,
    /// The outbox is full.
    Full,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub(crate) fn push(&self, event: Pending) -> Pushed {
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
    pub(crate) fn front(&self) -> Option<Pending> {
        let mut state = self.lock();
        let front = state.queue.front().cloned();
        if front.is_none() {
            state.relaying = false;
        }
        front
    }

    /// Removes the oldest event (it was published, or can never be).
    pub(crate) fn pop(&self) {
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

/// How [`Broker::publish_or_defer`] took an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Published now.
    Published,
    /// Kept in the outbox; published once the backend is back.
    Deferred,
    /// Published now, but fewer replicas than `SSE_REDIS_MIN_REPLICAS` confirmed it in time
    /// (a failover now could lose it): it is published once more a moment later, so a stream
    /// gets it at most twice. Counted in `sse_events_unconfirmed_total`.
    Unconfirmed,
}

impl Broker {
    /// Publishes an event that reports a write already made: if the backend cannot take it now,
    /// it waits in the outbox (bounded by `SSE_OUTBOX_SIZE`, in order) and is published as soon
    /// as the backend is back, so the write is answered as the success it was and subscribers
    /// still hear of it. `Err(Unavailable)` only when the outbox is full; other errors (too
    /// large, invalid) are the caller's and are returned as they are.
    ///
    /// `sse_notify_axum::PublishLayer` and the [`sse_notify_core::Publisher`] handed to server functions
    /// publish this way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use sse_notify_broker::Accepted;
    /// use sse_notify_broker::{Broker, BrokerLimits};
    /// let broker = Broker::memory(BrokerLimits::default());
    /// let topics = [sse_notify_core::Topic::new("tasks").unwrap()];
    /// let done = broker.publish_or_defer(&topics, "task:created", &serde_json::json!({"id": 1})).await;
    /// assert_eq!(done.unwrap(), Accepted::Published); // the embedded broker is never away
    /// # }
    /// ```
    pub async fn publish_or_defer(
        &self,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<Accepted, PublishError> {
        self.publish_or_defer_as(None, topics, event, data).await
    }

    /// [`Broker::publish_or_defer`] on behalf of the browser tab `origin` (see
    /// [`Broker::publish_as`]).
    pub async fn publish_or_defer_as(
        &self,
        origin: Option<&str>,
        topics: &[Topic],
        event: &str,
        data: &serde_json::Value,
    ) -> Result<Accepted, PublishError> {
        // Behind events already waiting, so that they keep their order.
        let origin = super::valid_origin(origin);
        let pending =
            || Pending { topics: topics.to_vec(), event: event.to_owned(), data: data.clone(), origin: origin.clone() };
        if self.inner.outbox.len() == 0 {
            match self.publish_appended(origin.clone(), topics, event, data).await {
                Ok(Appended::Confirmed) => return Ok(Accepted::Published),
                Ok(Appended::Unconfirmed) => {
                    self.publish_again_later(pending());
                    return Ok(Accepted::Unconfirmed);
                }
                Err(PublishError::Unavailable) => {}
                Err(e) => return Err(e),
            }
        }
        let pending = pending();
        match self.inner.outbox.push(pending) {
            Pushed::Full => {
                tracing::error!(event, "outbox full (SSE_OUTBOX_SIZE): event refused");
                Err(PublishError::Unavailable)
            }
            pushed => {
                // The write happened: answers kept from before it are stale now, whenever its
                // event gets out (the response cache).
                self.inner.hub.touch(&topics.iter().map(Topic::to_string).collect::<Vec<_>>());
                self.inner.metrics.events_deferred.inc();
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
    fn start_relay(&self) {
        let broker = self.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            while let Some(p) = broker.inner.outbox.front() {
                match p.publish_on(&broker).await {
                    Ok(appended) => {
                        broker.inner.outbox.pop();
                        failures = 0;
                        if appended == Appended::Unconfirmed {
                            broker.publish_again_later(p);
                        }
                    }
                    Err(PublishError::Unavailable) => {
                        tokio::time::sleep(backoff(failures)).await;
                        failures += 1;
                    }
                    Err(e) => {
                        tracing::error!(event = p.event, error = %e, "outbox event can never be published; dropped");
                        broker.inner.outbox.pop();
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
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CONFIRM_AGAIN_AFTER).await;
            match p.publish_on(&broker).await {
                Ok(Appended::Confirmed) => {
                    tracing::info!(event = p.event, "unconfirmed event published again, confirmed")
                }
                Ok(Appended::Unconfirmed) => tracing::error!(
                    event = p.event,
                    "unconfirmed event published again, still unconfirmed: a failover now could lose it"
                ),
                Err(e) => {
                    tracing::error!(event = p.event, error = %e, "unconfirmed event could not be published again")
                }
            }
        });
    }

    /// Events waiting in the outbox for the backend.
    pub fn outbox_len(&self) -> usize {
        self.inner.outbox.len()
    }

    /// Waits up to `within` for the outbox to empty (at shutdown); returns how many events are
    /// still waiting.
    pub async fn flush_outbox(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.outbox_len() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.outbox_len()
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
        let outbox = Outbox::new(2);
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
