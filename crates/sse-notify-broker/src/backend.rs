//! The one interface every backend offers the broker.
//!
//! A backend keeps the prefix's ordered event log and brings its new entries into the
//! [`Hub`](super::hub::Hub) for the topics that local streams follow. Everything above it (the
//! cursor, replay and resync rules, the once-per-stream merge, queues and slow consumers) is the
//! broker's and the same for every backend, so the in-process log and the Redis shapes are
//! peers held to one test suite.

use futures::future::BoxFuture;
use sse_notify_core::cursor::{Cursor, LogPosition};
use sse_notify_core::presence::Member;

use crate::error::BackendError;
use crate::log::History;

/// Why [`Backend::append`] fell short.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // the in-process log never falls short
pub(super) enum AppendError {
    /// The event is not in the log (the backend is away, or refused it).
    #[error(transparent)]
    Unavailable(BackendError),
    /// The event is in the log and went out to the streams, but fewer replicas than asked for
    /// (`SSE_REDIS_MIN_REPLICAS`) confirmed it in time: a failover now could lose it.
    #[error(
        "only {acknowledged} of the {asked} replicas SSE_REDIS_MIN_REPLICAS asks for hold the event after {waited:?}"
    )]
    Unconfirmed { at: Cursor, acknowledged: usize, asked: usize, waited: std::time::Duration },
}

pub(super) trait Backend: Send + Sync + 'static {
    /// `"memory"`, `"redis"`, ...: shown by `/health/ready` and logged at start-up.
    fn name(&self) -> &'static str;

    /// Appends one event (its distinct topics, its frame body, encoded once, and the writing
    /// tab's origin) to the log, and says where (a cursor whose `matched` is 0).
    /// Once this returns `Ok`, every stream that follows one of `topics` gets the event, live or
    /// by catch-up after a reconnect, and the hub's heads of `topics` have moved (delivered, or
    /// `Hub::touch`ed when the event comes back later), so no answer kept from before the
    /// write is served after it.
    /// [`AppendError::Unconfirmed`] counts as appended for all of that.
    fn append(
        &self,
        topics: Vec<String>,
        body: String,
        origin: Option<Box<str>>,
    ) -> BoxFuture<'_, Result<Cursor, AppendError>>;

    /// The log's head and, with `after`, every retained event after that position.
    fn history(&self, after: Option<LogPosition>) -> BoxFuture<'_, Result<History, BackendError>>;

    /// Starts bringing `topic`'s new events into the hub; resolves once they flow, so that an
    /// event appended after it resolves is delivered. Called once per topic while any local
    /// stream or watch follows it; a stream's comes before a watch's asked earlier.
    fn follow<'a>(&'a self, topic: &'a str, follower: Follower) -> BoxFuture<'a, Result<(), BackendError>>;

    /// A stream waits on `topic`, whose follow a watch started: it is the stream's now.
    fn hurry(&self, _topic: &str) {}

    /// No local stream follows `topic` any more.
    fn unfollow(&self, topic: &str);

    /// Loads `topic`'s members into the broker's presence book (`PresenceBook::load`), now or
    /// once they are read: its first local stream that sees presence arrived.
    fn presence_load(&self, topic: &str);

    /// `member`'s first local stream on `topic` arrived: they are there for every instance.
    fn presence_join(&self, topic: &str, member: Member);

    /// Member `id`'s last local stream on `topic` ended.
    fn presence_leave(&self, topic: &str, id: String);

    /// Joins and leaves not yet done (the Redis backend makes them in the background).
    fn presence_pending(&self) -> usize {
        0
    }

    /// `topic`'s members now, read from the backend (for a page rendered on the server).
    fn presence_members<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<Member>, BackendError>>;

    /// Whether the backend answers now.
    fn ping(&self) -> BoxFuture<'_, bool>;
}

/// Who follows a topic: a stream (someone waits on it) or the response cache's watch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Follower {
    Stream,
    Watch,
}
