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

use sse_notify_core::Topic;

/// One event waiting for the backend.
#[derive(Clone)]
pub(crate) struct Pending {
    pub(crate) topics: Vec<Topic>,
    pub(crate) event: String,
    pub(crate) data: serde_json::Value,
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

/// The relay's wait after its `attempt`-th failure in a row: 50 ms doubling to 2 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6)).min(2_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: u64) -> Pending {
        Pending { topics: vec![Topic::new("t").unwrap()], event: "e".into(), data: n.into() }
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
    fn backoff_grows_to_two_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_secs(2));
    }
}
