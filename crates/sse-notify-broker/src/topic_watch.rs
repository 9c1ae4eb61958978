//! Following where some topics stand in the log ([`Head`]), for as long as a watch is held:
//! what the response cache keys its answers on.

use std::sync::Arc;
use std::time::Duration;

use sse_notify_core::Topic;
use tokio::sync::watch;

use crate::backend::Follower;
use crate::error::BrokerError;
use crate::limits::checked_topics;
use crate::parts::Parts;
use crate::topic_head::{Head, TopicHead};

/// Watches `topics`: returns once they are live, so no later event of theirs passes unseen.
pub(crate) async fn open(parts: &Arc<Parts>, topics: &[Topic]) -> Result<TopicWatch, BrokerError> {
    let topics = checked_topics(topics)?;
    let head = Arc::new(TopicHead::new());
    let ready = parts.hub.register_head(&head, &topics);
    let watch = TopicWatch { state: head.subscribe(), head, topics, parts: parts.clone() };
    for (topic, ready) in &ready {
        let follow = || parts.backend.follow(topic, Follower::Watch);
        ready.get_or_try_init(follow).await.map_err(BrokerError::Unavailable)?;
    }
    watch.head.start(parts.history(None).await?.head_cursor());
    Ok(watch)
}

/// Where some topics stand (`Broker::watch`); they are followed until it is dropped.
pub struct TopicWatch {
    head: Arc<TopicHead>,
    state: watch::Receiver<Head>,
    topics: Vec<Topic>,
    parts: Arc<Parts>,
}

impl TopicWatch {
    /// The head now.
    pub fn now(&self) -> Head {
        *self.state.borrow()
    }

    /// Waits until `ready(head)` holds, for at most `limit`; the head then.
    pub async fn wait_for(&self, limit: Duration, ready: impl Fn(&Head) -> bool) -> Option<Head> {
        let mut state = self.state.clone();
        let waited = tokio::time::timeout(limit, state.wait_for(|h| ready(h))).await;
        waited.ok().and_then(Result::ok).map(|h| *h)
    }
}

impl Drop for TopicWatch {
    fn drop(&mut self) {
        let parts = &self.parts;
        parts.hub.release_head(&self.head, &self.topics, |topic| parts.backend.unfollow(topic));
    }
}
