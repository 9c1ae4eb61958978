//! The response body of one stream: the opening lines, then its subscription's frames, a
//! heartbeat when the group's ticker asks, and its end when a re-check refuses it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::Stream;

use super::group::StreamGroup;
use super::hooks::Recheck;
use crate::admission::ConnectionSlot;
use crate::clients::ClientSlot;
use sse_notify_broker::{Signals, Subscription};
use sse_notify_core::presence::{PRESENCE_COUNT_EVENT, PRESENCE_STATE_EVENT};

/// A stream's opening lines: a comment (the response starts at once) and `retry: 2000` (how
/// long EventSource waits before reconnecting); one static for every stream.
const HELLO: &[u8] = b": ok\nretry: 2000\n\n";

/// The response body of one connection. Its task is woken only through its subscription:
/// events, and the signals of the broker (closing) and of the endpoint's tickers.
/// A poll's end: after what was ready at once once something was sent, or at the deadline.
struct PollEnd {
    deadline: Pin<Box<tokio::time::Sleep>>,
    sent: bool,
}

pub(super) struct EventBody {
    /// `Some` for a poll (`?poll=N`), which ends; `None` for a stream.
    poll: Option<PollEnd>,
    /// The opening lines are still to be sent.
    hello: bool,
    events: Subscription,
    heartbeat_due: bool,
    recheck: Option<Recheck>,
    done: bool,
    group: Arc<StreamGroup>,
    /// For the log line when the stream closes (the app's request tracing need not time every
    /// frame of a stream).
    opened: std::time::Instant,
    frames: u64,
    _slots: (ConnectionSlot, Option<ClientSlot>),
}

impl EventBody {
    /// A stream of `events`, re-checked by `recheck`, of `group`, holding its admission slots
    /// until it ends.
    pub(super) fn new(
        events: Subscription,
        recheck: Option<Recheck>,
        group: Arc<StreamGroup>,
        slots: (ConnectionSlot, Option<ClientSlot>),
        poll: Option<std::time::Duration>,
    ) -> Self {
        let poll = poll.map(|wait| PollEnd { deadline: Box::pin(tokio::time::sleep(wait)), sent: false });
        Self {
            poll,
            hello: true,
            events,
            heartbeat_due: false,
            recheck,
            done: false,
            group,
            opened: std::time::Instant::now(),
            frames: 0,
            _slots: slots,
        }
    }
}

/// Whether `frame` is a topic's `presence:state` or `presence:count`.
fn is_presence_summary(frame: &[u8]) -> bool {
    [PRESENCE_STATE_EVENT, PRESENCE_COUNT_EVENT].iter().any(|name| {
        frame
            .strip_prefix(b"event: ")
            .is_some_and(|rest| rest.starts_with(name.as_bytes()) && rest.get(name.len()) == Some(&b'\n'))
    })
}

impl Drop for EventBody {
    fn drop(&mut self) {
        let seconds = self.opened.elapsed().as_secs();
        tracing::debug!(topics = ?self.events.topics(), frames = self.frames, seconds, "stream closed");
    }
}

impl Stream for EventBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut this.hello) {
            return Poll::Ready(Some(Ok(Bytes::from_static(HELLO))));
        }
        let signals = this.events.take_signals();
        this.heartbeat_due |= signals.contains(Signals::HEARTBEAT);
        if let Some(recheck) = &mut this.recheck {
            if signals.contains(Signals::RECHECK) {
                recheck.start(this.events.topics());
            }
            if let Poll::Ready(false) = recheck.poll_allowed(cx) {
                tracing::info!(topics = ?this.events.topics(), "authorization or presence changed; closing the stream");
                this.done = true;
                return Poll::Ready(None);
            }
        }
        // Heartbeat first: it is rare, and a busy topic must not starve it. (A poll has none:
        // its answer ends within the wait anyway.)
        if std::mem::take(&mut this.heartbeat_due) && this.poll.is_none() {
            return Poll::Ready(Some(Ok(this.group.heartbeat())));
        }
        match this.events.poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                this.frames += 1;
                // A topic's presence summary, which a new subscription always starts with, does
                // not end a poll by itself: else every poll of a page that shows presence would
                // end at once, and the next one start, without end.
                if let Some(poll) = &mut this.poll {
                    poll.sent |= !is_presence_summary(&frame);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            // A poll ends once it sent what was ready, or when its wait is over with nothing.
            Poll::Pending if this.poll.as_mut().is_some_and(|p| p.sent || p.deadline.as_mut().poll(cx).is_ready()) => {
                this.done = true;
                Poll::Ready(None)
            }
            // Closed by the broker, or cut off for reading too slowly (after its `resync`):
            // EventSource reconnects.
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_opening_lines_are_a_comment_and_the_retry() {
        let mut hello = sse_notify_core::wire::encode_comment("ok");
        hello.push_str(&sse_notify_core::wire::encode_retry(2000));
        hello.push('\n');
        assert_eq!(super::HELLO, hello.as_bytes());
    }
}
