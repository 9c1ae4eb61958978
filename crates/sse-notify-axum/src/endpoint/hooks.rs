//! The app's hooks on a stream: who may follow a topic (`authorize`), what a stream is to a
//! topic's presence, both asked when a stream opens and again at each re-check, and the same
//! answers for a page the server renders ([`PresenceReader`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::request::Parts;
use sse_notify_core::presence::{Member, Roster};
use sse_notify_core::Topic;

use sse_notify_broker::Broker;

use super::kept_head::KeptHead;

pub(super) type AuthorizeFn = dyn Fn(Arc<Parts>, Topic) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;
pub(super) type PresenceFn = dyn Fn(Arc<Parts>, Topic) -> Pin<Box<dyn Future<Output = Presence> + Send>> + Send + Sync;

/// What a stream is to a topic's presence ([`SseEndpoint::presence`](super::SseEndpoint::presence) decides, per request and
/// topic, after `authorize` allowed the topic).
#[derive(Clone, Debug, PartialEq)]
pub enum Presence {
    /// The topic has no presence (its streams get no `presence:*` frames).
    Off,
    /// Sees who is there without being listed (e.g. a visitor not signed in).
    Watch,
    /// Is there as this member, and sees the others.
    Member(Member),
}

/// The topics with presence, and the member the request is on each.
pub(super) async fn presence_of(
    who: &PresenceFn,
    parts: &Arc<Parts>,
    topics: &[Topic],
) -> Vec<(Topic, Option<Member>)> {
    let mut present = Vec::new();
    for topic in topics {
        match who(parts.clone(), topic.clone()).await {
            Presence::Off => {}
            Presence::Watch => present.push((topic.clone(), None)),
            Presence::Member(m) if m.has_valid_id() => present.push((topic.clone(), Some(m))),
            Presence::Member(m) => {
                tracing::warn!(id = ?m.id, "presence: a member id must be 1-128 bytes without control characters; watching only");
                present.push((topic.clone(), None));
            }
        }
    }
    present
}

/// Reads presence for server-rendered pages ([`SseEndpoint::presence_reader`](super::SseEndpoint::presence_reader)).
#[derive(Clone)]
pub struct PresenceReader {
    pub(super) broker: Broker,
    pub(super) authorize: Option<Arc<AuthorizeFn>>,
    pub(super) presence: Option<Arc<PresenceFn>>,
}

impl PresenceReader {
    /// `topic`'s members now (or their number, above `SSE_PRESENCE_MAX_LISTED`), if the
    /// request may see them.
    pub async fn roster(&self, request: Arc<Parts>, topic: Topic) -> Option<Roster> {
        let who = self.presence.as_ref()?;
        if let Some(check) = &self.authorize {
            if !check(request.clone(), topic.clone()).await {
                return None;
            }
        }
        if who(request, topic.clone()).await == Presence::Off {
            return None;
        }
        match self.broker.presence_roster(&topic).await {
            Ok(roster) => Some(roster),
            Err(e) => {
                tracing::warn!(topic = topic.as_str(), error = %e, "presence could not be read");
                None
            }
        }
    }
}

/// The first topic `check` refuses, if any.
pub(super) async fn first_refused<'a>(
    check: &AuthorizeFn,
    parts: &Arc<Parts>,
    topics: &'a [Topic],
) -> Option<&'a Topic> {
    for topic in topics {
        if !check(parts.clone(), topic.clone()).await {
            return Some(topic);
        }
    }
    None
}

/// A stream's periodic re-authorization: `authorize` again for every topic, and the presence
/// hook again, whose verdict must be the one the stream opened with (a member who signed out is
/// no longer listed, even on a topic still open to them as a watcher). Either change closes the
/// stream; EventSource reconnects, and the new stream is decided afresh (its presence state
/// included), while the member the old one held leaves with it.
pub(super) struct Recheck {
    check: Option<Arc<AuthorizeFn>>,
    /// The hook, the topics the stream asked presence of, and what the hook said of them.
    presence: Option<(Arc<PresenceFn>, Vec<Topic>, PresenceVerdict)>,
    head: KeptHead,
    running: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

/// What the presence hook said of a stream: per topic with presence, the member id it is
/// listed as (`None`: watching). Only ids count: a member's shown fields may change without
/// closing streams.
#[derive(Clone, PartialEq, Eq)]
struct PresenceVerdict(Vec<(Topic, Option<String>)>);

impl PresenceVerdict {
    fn of(present: &[(Topic, Option<Member>)]) -> Self {
        Self(present.iter().map(|(t, m)| (t.clone(), m.as_ref().map(|m| m.id.clone()))).collect())
    }
}

impl Recheck {
    /// Re-checks with `check` and the presence hook (`who`, the topics the stream asked
    /// presence of, and what the hook said at open), for the request `head`.
    pub(super) fn new(
        check: Option<Arc<AuthorizeFn>>,
        presence: Option<(Arc<PresenceFn>, Vec<Topic>, &[(Topic, Option<Member>)])>,
        head: KeptHead,
    ) -> Self {
        let presence = presence.map(|(who, mut asked, present)| {
            asked.shrink_to_fit(); // kept for the stream's life
            (who, asked, PresenceVerdict::of(present))
        });
        Self { check, presence, head, running: None }
    }

    /// Starts a check of `topics`, unless one is still running.
    pub(super) fn start(&mut self, topics: &[Topic]) {
        if self.running.is_none() {
            let (check, parts, topics) = (self.check.clone(), Arc::new(self.head.parts()), topics.to_vec());
            let presence = self.presence.clone();
            self.running = Some(Box::pin(async move {
                if let Some(check) = check {
                    if first_refused(check.as_ref(), &parts, &topics).await.is_some() {
                        return false;
                    }
                }
                match presence {
                    Some((who, asked, verdict)) => {
                        PresenceVerdict::of(&presence_of(who.as_ref(), &parts, &asked).await) == verdict
                    }
                    None => true,
                }
            }));
        }
    }

    /// Ready(false) once a check has refused a topic or found the stream's presence changed.
    pub(super) fn poll_allowed(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(running) = &mut self.running else { return Poll::Pending };
        match running.as_mut().poll(cx) {
            Poll::Ready(true) => {
                self.running = None;
                Poll::Pending
            }
            Poll::Ready(false) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }
}
