//! What the Pub/Sub loop is asked to do: subscribe and unsubscribe channels, load a topic's
//! presence.
//!
//! Not a queue of commands but the state each channel is wanted in, kept until the loop gets to
//! it: an ask for a channel replaces the one before it that has not run (a subscribe after an
//! unsubscribe is a subscribe; its waiters are told once the channel is live). So the asks are
//! bounded by the channels in use, whatever the rate of streams opening and closing, and none
//! is done twice for nothing. And the loop takes them in the order that matters to a person
//! waiting: the subscriptions a stream waits on first, then presence loads, then the rest (the
//! response cache's watches, unsubscribes): reads never delay a stream's subscription.
//!
//! (A plain `mpsc` channel, as before, held every ask in arrival order without bound: a burst
//! of the cache's follows stood in front of the streams' subscriptions.)

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use indexmap::{IndexMap, IndexSet};
use tokio::sync::{oneshot, Notify};

use crate::backend::Follower;
use crate::error::BackendError;

/// Told once a channel is live (or why it could not be).
pub(super) type Confirm = oneshot::Sender<Result<(), BackendError>>;

/// One thing for the loop to do.
pub(super) enum Control {
    /// Make the channel live, then tell everyone waiting.
    Subscribe(String, Vec<Confirm>),
    Unsubscribe(String),
    /// Load a topic's members (its channel is subscribed already).
    LoadPresence(String),
}

enum Want {
    Subscribed(Vec<Confirm>),
    Unsubscribed,
}

#[derive(Default)]
struct Pending {
    /// Subscriptions a stream waits on, oldest first.
    streams: IndexMap<String, Want>,
    /// Everything else a channel is wanted in, oldest first.
    rest: IndexMap<String, Want>,
    presence: IndexSet<String>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// One permit at most: the loop is the only one that waits.
    wake: Notify,
    /// The backend is gone.
    closed: AtomicBool,
}

/// The backend's side.
pub(super) struct Asks(Arc<Shared>);

/// The loop's side.
pub(super) struct Commands(Arc<Shared>);

pub(super) fn channel() -> (Asks, Commands) {
    let shared = Arc::new(Shared { pending: Mutex::default(), wake: Notify::new(), closed: AtomicBool::new(false) });
    (Asks(shared.clone()), Commands(shared))
}

impl Asks {
    /// Wants `channel` live; the answer says when it is.
    pub(super) fn subscribe(&self, channel: String, follower: Follower) -> oneshot::Receiver<Result<(), BackendError>> {
        let (done, answer) = oneshot::channel();
        let mut pending = self.0.pending.lock().unwrap();
        let Pending { streams, rest, .. } = &mut *pending;
        let mut waiters = match (streams.shift_remove(&channel), rest.shift_remove(&channel)) {
            (Some(Want::Subscribed(w)), _) | (_, Some(Want::Subscribed(w))) => w,
            _ => Vec::new(),
        };
        waiters.push(done);
        let queue = if follower == Follower::Stream { streams } else { rest };
        queue.insert(channel, Want::Subscribed(waiters));
        drop(pending);
        self.0.wake.notify_one();
        answer
    }

    /// A stream now waits on `channel`, which a watch asked for first: it goes ahead.
    pub(super) fn hurry(&self, channel: &str) {
        let mut pending = self.0.pending.lock().unwrap();
        if matches!(pending.rest.get(channel), Some(Want::Subscribed(_))) {
            let (channel, want) = pending.rest.shift_remove_entry(channel).expect("just seen");
            pending.streams.insert(channel, want);
        }
    }

    /// Wants `channel` no longer live. Whoever waited on its subscription is gone (the
    /// broker unfollows a topic once nothing holds it).
    pub(super) fn unsubscribe(&self, channel: String) {
        let mut pending = self.0.pending.lock().unwrap();
        pending.streams.shift_remove(&channel);
        pending.rest.shift_remove(&channel);
        pending.rest.insert(channel, Want::Unsubscribed);
        drop(pending);
        self.0.wake.notify_one();
    }

    /// Wants `topic`'s members loaded.
    pub(super) fn load_presence(&self, topic: String) {
        self.0.pending.lock().unwrap().presence.insert(topic);
        self.0.wake.notify_one();
    }

    /// Asks for what is pending now (a test's view): subscriptions, unsubscriptions, loads.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let pending = self.0.pending.lock().unwrap();
        let subscribed = |w: &&Want| matches!(w, Want::Subscribed(_));
        let subs =
            pending.streams.values().filter(subscribed).count() + pending.rest.values().filter(subscribed).count();
        (subs, pending.streams.len() + pending.rest.len() - subs, pending.presence.len())
    }
}

impl Drop for Asks {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

impl Commands {
    /// The next thing to do, given the channels subscribed now (`live`): waits for one; `None`
    /// once the backend is gone. A subscription of a channel already live is answered here.
    pub(super) async fn recv(&mut self, live: &HashSet<String>) -> Option<Control> {
        loop {
            if let Some(next) = self.take(live) {
                return Some(next);
            }
            if self.0.closed.load(Ordering::Acquire) {
                return None;
            }
            self.0.wake.notified().await;
        }
    }

    /// The next thing to do, if any.
    fn take(&mut self, live: &HashSet<String>) -> Option<Control> {
        let mut pending = self.0.pending.lock().unwrap();
        loop {
            let next = match pending.streams.shift_remove_index(0) {
                Some(next) => next,
                None => match pending.presence.shift_remove_index(0) {
                    Some(topic) => return Some(Control::LoadPresence(topic)),
                    None => pending.rest.shift_remove_index(0)?,
                },
            };
            match next {
                (channel, Want::Subscribed(waiters)) if live.contains(&channel) => {
                    for done in waiters {
                        let _ = done.send(Ok(()));
                    }
                }
                (channel, Want::Subscribed(waiters)) => return Some(Control::Subscribe(channel, waiters)),
                (channel, Want::Unsubscribed) if live.contains(&channel) => return Some(Control::Unsubscribe(channel)),
                (_, Want::Unsubscribed) => {}
            }
        }
    }

    /// While disconnected: answers every pending subscription with `error` (the SSE endpoint
    /// turns it into 503; the topic is subscribed with the rest on reconnect anyway) and drops
    /// the rest (a fresh connection starts with nothing subscribed, and loads every presence
    /// topic again). False once the backend is gone.
    pub(super) fn refuse_all(&mut self, error: BackendError) -> bool {
        let mut pending = std::mem::take(&mut *self.0.pending.lock().unwrap());
        for (_, want) in pending.streams.drain(..).chain(pending.rest.drain(..)) {
            if let Want::Subscribed(waiters) = want {
                for done in waiters {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
        !self.0.closed.load(Ordering::Acquire)
    }

    /// Waits for an ask (or the backend's end).
    pub(super) async fn asked(&self) {
        if !self.0.closed.load(Ordering::Acquire) {
            self.0.wake.notified().await;
        }
    }
}

/// Reports what a subscription's answer said.
fn answer(waiters: Vec<Confirm>, result: &Result<(), BackendError>) {
    for done in waiters {
        let _ = done.send(result.clone());
    }
}

/// After the subscription of `channel` answered `result`: the channel is live when it
/// succeeded, the failure is logged, and everyone waiting is told.
pub(super) fn subscribed(
    live: &mut HashSet<String>,
    channel: String,
    waiters: Vec<Confirm>,
    result: Result<(), BackendError>,
) {
    match &result {
        Ok(()) => drop(live.insert(channel)),
        Err(e) => tracing::error!(channel, error = %e, "redis subscription failed"),
    }
    answer(waiters, &result);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(channels: &[&str]) -> HashSet<String> {
        channels.iter().map(|c| c.to_string()).collect()
    }

    #[tokio::test]
    async fn a_streams_subscription_goes_before_every_watch_and_unsubscribe_asked_earlier() {
        let (asks, mut commands) = channel();
        let watches: Vec<_> = (0..1000).map(|i| asks.subscribe(format!("w{i}"), Follower::Watch)).collect();
        asks.unsubscribe("gone".into());
        let _stream = asks.subscribe("s".into(), Follower::Stream);
        asks.load_presence("room".into());
        let mut now = live(&["gone"]);
        let Some(Control::Subscribe(first, _)) = commands.recv(&now).await else { panic!("a subscribe") };
        assert_eq!(first, "s", "the stream's, ahead of 1,000 watches");
        assert!(matches!(commands.recv(&now).await, Some(Control::LoadPresence(t)) if t == "room"));
        let Some(Control::Subscribe(next, waiters)) = commands.recv(&now).await else { panic!() };
        assert_eq!(next, "w0");
        answer(waiters, &Ok(()));
        drop(watches);
        now.insert("w0".into());
        assert_eq!(asks.counts(), (999, 1, 0));
    }

    #[tokio::test]
    async fn asks_for_one_channel_are_one_entry_and_a_live_channel_is_answered_at_once() {
        let (asks, mut commands) = channel();
        for _ in 0..10_000 {
            drop(asks.subscribe("t".into(), Follower::Stream));
            asks.unsubscribe("t".into());
        }
        assert_eq!(asks.counts(), (0, 1, 0), "10,000 opens and closes are one unsubscribe");
        assert!(matches!(commands.recv(&live(&["t"])).await, Some(Control::Unsubscribe(c)) if c == "t"));

        asks.unsubscribe("t".into());
        let answer = asks.subscribe("t".into(), Follower::Watch);
        let hurried = asks.subscribe("u".into(), Follower::Watch);
        asks.hurry("u");
        let Some(Control::Subscribe(first, _)) = commands.recv(&live(&["t"])).await else { panic!() };
        assert_eq!(first, "u", "hurried ahead");
        // `t` is live still (its unsubscribe never ran): its subscribe is answered without Redis.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(10), commands.recv(&live(&["t"]))).await;
        assert!(idle.is_err(), "nothing left for Redis");
        assert!(answer.await.unwrap().is_ok());
        drop(hurried);
    }

    #[tokio::test]
    async fn refused_while_away_and_ended_with_the_backend() {
        let (asks, mut commands) = channel();
        let answer = asks.subscribe("t".into(), Follower::Stream);
        asks.load_presence("t".into());
        assert!(commands.refuse_all(BackendError::Reconnecting));
        assert!(matches!(answer.await.unwrap(), Err(BackendError::Reconnecting)));
        drop(asks);
        assert!(commands.recv(&HashSet::new()).await.is_none());
        assert!(!commands.refuse_all(BackendError::Reconnecting));
    }
}
