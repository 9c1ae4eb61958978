//! The stream as a sequence of polls (`GET /events?..&poll=25`, fetched): for what EventSource
//! cannot do. It sends the app's headers (an `Authorization` token, asked for again before each
//! poll, so a refreshed token goes with the next), and it gets through a proxy that holds a
//! response back until it ends (each poll's answer ends). The frames and the cursor are the
//! stream's: each poll resumes from the last id the one before it gave (`Last-Event-ID`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use sse_notify_core::wire::{SseParser, HEARTBEAT_EVENT, RESYNC_EVENT};
use sse_notify_core::Topic;

use super::stream::{Handlers, Headers, Liveness};
use crate::decode;
use crate::recover::sleep;
use crate::status::SseError;

/// How long the server may hold a poll open for something to send.
const POLL_SECONDS: u64 = 25;
/// A poll not answered this long after its wait is given up (a network that went away without
/// a word) and made again.
const ANSWER_SLACK: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum State {
    Connecting,
    Open,
    /// Refused with an HTTP error: the hub says why and tries again later.
    Closed,
}

/// The polls of one stream; they stop when it is dropped or closed.
pub(super) struct Polls {
    state: Cell<State>,
    stopped: Cell<bool>,
    /// Aborts the poll in flight (on close).
    abort: RefCell<Option<web_sys::AbortController>>,
    /// Why the server refused the last poll.
    refusal: RefCell<Option<SseError>>,
    /// Opened without a cursor, the server cannot replay: the first answer refetches all.
    refetch: Cell<bool>,
}

impl Polls {
    /// Starts polling as `how` says, from `cursor`.
    pub(super) fn start(how: How, cursor: Option<String>) -> Rc<Self> {
        let polls = Rc::new(Self {
            state: Cell::new(State::Connecting),
            stopped: Cell::new(false),
            abort: RefCell::new(None),
            refusal: RefCell::new(None),
            refetch: Cell::new(cursor.is_none()),
        });
        let running = polls.clone();
        leptos::task::spawn_local(async move { running.run(how, cursor).await });
        polls
    }

    pub(super) fn state(&self) -> State {
        self.state.get()
    }

    /// Why the server refused the last poll (its status and JSON error).
    pub(super) fn refusal(&self) -> Option<SseError> {
        self.refusal.borrow().clone()
    }

    pub(super) fn close(&self) {
        self.stopped.set(true);
        if let Some(abort) = self.abort.borrow_mut().take() {
            abort.abort();
        }
    }

    async fn run(self: Rc<Self>, how: How, mut cursor: Option<String>) {
        let mut backoff = Duration::from_secs(1);
        // Whether a refused poll was just made again with new headers (once per refusal).
        let mut retried_with_new_headers = false;
        while !self.stopped.get() {
            match self.poll_once(&how, cursor.as_deref()).await {
                Answer::Frames(body, took) => {
                    backoff = Duration::from_secs(1);
                    retried_with_new_headers = false;
                    how.liveness.heard();
                    let mut parser = SseParser::new();
                    let events = parser.feed(body.as_bytes());
                    for event in &events {
                        how.dispatch(&event.event, &event.data, &event.last_event_id);
                    }
                    let moved = !parser.last_event_id().is_empty() && cursor.as_deref() != Some(parser.last_event_id());
                    if moved {
                        cursor = Some(parser.last_event_id().to_owned());
                    }
                    // An answer that brought nothing at once (something on the way answers for
                    // the server): the next poll waits a second, never a loop of requests.
                    if events.is_empty() && !moved && took < Duration::from_secs(1) {
                        sleep(Duration::from_secs(1)).await;
                    }
                }
                Answer::Refused(error, sent) => {
                    // A token that expired while the page already holds a new one (refreshed on
                    // the app's own schedule): the same cursor with the new headers, at once.
                    let denied = matches!(error, SseError::Refused { status: 401 | 403, .. });
                    if denied && !retried_with_new_headers && how.headers.as_ref().is_some_and(|h| (h.0)() != sent) {
                        retried_with_new_headers = true;
                        continue;
                    }
                    *self.refusal.borrow_mut() = Some(error);
                    self.state.set(State::Closed);
                    (how.handlers.on_error)();
                    return;
                }
                Answer::Failed => {
                    if self.stopped.get() {
                        return;
                    }
                    self.state.set(State::Connecting);
                    (how.handlers.on_error)();
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn poll_once(&self, how: &How, cursor: Option<&str>) -> Answer {
        let started = js_sys::Date::now();
        let abort = web_sys::AbortController::new().ok();
        let signal = abort.as_ref().map(|a| a.signal());
        let mut request = gloo_net::http::Request::get(&format!("{}&poll={POLL_SECONDS}", how.url))
            .header("accept", "text/event-stream")
            .abort_signal(signal.as_ref());
        if let Some(cursor) = cursor {
            request = request.header("last-event-id", cursor);
        }
        let sent = how.headers.as_ref().map(|h| (h.0)()).unwrap_or_default();
        for (name, value) in &sent {
            request = request.header(name, value);
        }
        if how.with_credentials {
            request = request.credentials(web_sys::RequestCredentials::Include);
        }
        // Given up if not answered within the wait and the slack.
        if let Some(abort) = &abort {
            let late = abort.clone();
            leptos::leptos_dom::helpers::set_timeout(
                move || late.abort(),
                Duration::from_secs(POLL_SECONDS) + ANSWER_SLACK,
            );
        }
        *self.abort.borrow_mut() = abort;
        let answer = match request.send().await {
            Ok(resp) if resp.status() == 200 => {
                // Open once a poll is answered (its frames may wait for the poll's end).
                if self.state.replace(State::Open) != State::Open {
                    (how.handlers.on_open)(self.refetch.replace(false));
                }
                match resp.text().await {
                    Ok(body) => Answer::Frames(body, Duration::from_millis((js_sys::Date::now() - started) as u64)),
                    Err(_) => Answer::Failed,
                }
            }
            // A server or proxy that cannot serve it now: tried again.
            Ok(resp) if resp.status() >= 500 || resp.status() == 408 || resp.status() == 429 => Answer::Failed,
            Ok(resp) => {
                let (code, message) = crate::fetch::error_body(&resp).await;
                let error = SseError::Refused { status: resp.status(), code, message: message.unwrap_or_default() };
                Answer::Refused(error, sent)
            }
            Err(_) => Answer::Failed,
        };
        self.abort.borrow_mut().take();
        answer
    }
}

impl Drop for Polls {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a poll brought.
enum Answer {
    /// The answer's body (the frames since the cursor; none if the wait ended first), and how
    /// long it took.
    Frames(String, Duration),
    /// An HTTP error that trying again will not mend (403, 404, ...), and the headers the poll
    /// sent.
    Refused(SseError, Vec<(String, String)>),
    /// No answer (the network), or a 5xx: tried again with backoff.
    Failed,
}

/// Where and how the polls go, and whom they tell.
pub(super) struct How {
    /// The stream's URL, without a cursor.
    pub(super) url: String,
    pub(super) with_credentials: bool,
    pub(super) headers: Option<Headers>,
    /// The stream's topics, in the URL's order.
    pub(super) topics: Rc<Vec<Topic>>,
    /// The event names handed on.
    pub(super) names: Vec<String>,
    pub(super) handlers: Handlers,
    pub(super) liveness: Rc<Liveness>,
}

impl How {
    /// Hands one event to the stream's owner, as the EventSource's listeners do.
    fn dispatch(&self, name: &str, data: &str, id: &str) {
        self.liveness.heard();
        if name == HEARTBEAT_EVENT {
            self.liveness.beat();
        } else if name == RESYNC_EVENT {
            (self.handlers.on_resync)(id, decode::resync_topics(data));
        } else if self.names.iter().any(|n| n == name) {
            (self.handlers.on_frame)(name, data, id, &self.topics);
        }
    }
}
