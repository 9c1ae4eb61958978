//! The EventSource's life: opened on the URL of a set of topics, event names and presence
//! topics, from a cursor, handing what it says to the hub's callbacks. It knows nothing of
//! subscribers or tabs.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use sse_notify_core::wire::{HEARTBEAT_EVENT, RESYNC_EVENT};
use sse_notify_core::Topic;
use wasm_bindgen::prelude::*;
use web_sys::{EventSource, EventSourceInit, MessageEvent};

use crate::decode;
use crate::status::SseError;

/// What the open stream was opened for: reopen when this changes.
#[derive(Clone, PartialEq, Eq, Default)]
pub(super) struct StreamKey {
    pub(super) topics: BTreeSet<Topic>,
    pub(super) names: BTreeSet<String>,
    /// The topics whose presence some subscriber shows: the stream asks the server for their
    /// presence (`&presence=`), and gets none for the others.
    pub(super) presence: BTreeSet<Topic>,
}

pub(super) use crate::fetch::RequestHeaders as Headers;

/// What the stream tells its owner.
#[derive(Clone)]
pub(super) struct Handlers {
    /// A frame of one of the key's event names: its name, data and id (empty: none), and the
    /// stream's topics in the URL's order (bit `i` of a cursor's mask is `topics[i]`).
    pub(super) on_frame: Rc<dyn Fn(&str, &str, &str, &Rc<Vec<Topic>>)>,
    /// A `resync`: its id, and the topics it names (`None`: all of them).
    pub(super) on_resync: Rc<dyn Fn(&str, Option<Vec<String>>)>,
    /// The stream opened; `true` the first time when it opened without a cursor (the server
    /// could replay nothing: everything must be fetched again).
    pub(super) on_open: Rc<dyn Fn(bool)>,
    /// The stream dropped (the browser retries), or gave up ([`OpenStream::gave_up`]).
    pub(super) on_error: Rc<dyn Fn()>,
}

/// What the stream that gave up knows of why.
pub(super) enum GaveUp {
    /// EventSource does not say: ask the URL again.
    Ask(String),
    /// The polls kept the server's answer.
    Known(Option<SseError>),
}

/// When the hub's stream was last heard from, and how often the server's heartbeat comes (as
/// measured between two of them: a server with heartbeats off never arms the watchdog, and a
/// quiet topic is not a dead stream). Kept by the hub across its streams, so a stream that
/// reopens is watched at once.
#[derive(Default)]
pub(super) struct Liveness {
    heard_ms: Cell<f64>,
    /// When the stream opened, and whether anything came since.
    opened_ms: Cell<f64>,
    heard_since_open: Cell<bool>,
    last_beat_ms: Cell<Option<f64>>,
    beat_every_ms: Cell<Option<f64>>,
}

impl Liveness {
    /// How far past the heartbeat's interval silence may go before the stream counts as dead
    /// (a heartbeat delayed by a busy server or a slow network is not one missed).
    const SLACK_MS: f64 = 3_000.0;

    pub(super) fn opened(&self) {
        let now = js_sys::Date::now();
        self.heard_ms.set(now);
        self.opened_ms.set(now);
        self.heard_since_open.set(false);
        self.last_beat_ms.set(None);
    }

    pub(super) fn heard(&self) {
        self.heard_ms.set(js_sys::Date::now());
        self.heard_since_open.set(true);
    }

    /// Whether anything came since the stream opened.
    pub(super) fn heard_since_open(&self) -> bool {
        self.heard_since_open.get()
    }

    /// Whether nothing came since the stream opened, for longer than two `every` and the slack.
    fn silent_since_open(&self, every: Duration) -> bool {
        let bound = 2.0 * every.as_millis() as f64 + Self::SLACK_MS;
        !self.heard_since_open.get() && js_sys::Date::now() - self.opened_ms.get() > bound
    }

    pub(super) fn beat(&self) {
        let now = js_sys::Date::now();
        if let Some(last) = self.last_beat_ms.replace(Some(now)) {
            self.beat_every_ms.set(Some((now - last).max(1_000.0)));
        }
        self.heard_ms.set(now);
        self.heard_since_open.set(true);
    }

    /// Whether an open stream has said nothing for two heartbeats and the slack: it is dead
    /// (a proxy or NAT dropped the flow without closing it, the laptop slept, the network
    /// changed), though the browser still holds it open.
    fn silent(&self) -> bool {
        self.beat_every_ms
            .get()
            .is_some_and(|every| js_sys::Date::now() - self.heard_ms.get() > 2.0 * every + Self::SLACK_MS)
    }
}

pub(super) struct OpenStream {
    source: Source,
    liveness: Rc<Liveness>,
    key: StreamKey,
    url: String,
}

/// What carries the stream: the browser's EventSource, or polls when it cannot (headers to
/// send, a proxy that holds a stream back).
enum Source {
    Events {
        source: EventSource,
        // Kept alive as long as the EventSource may call them.
        _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
        _on_open: Closure<dyn FnMut(web_sys::Event)>,
        _on_error: Closure<dyn FnMut(web_sys::Event)>,
    },
    Polls(Rc<super::polls::Polls>),
}

/// How a stream is carried.
#[derive(Clone, Default)]
pub(super) struct Carriage {
    /// Polls instead of an EventSource.
    pub(super) polls: bool,
    /// The app's headers (only polls can send them).
    pub(super) headers: Option<Headers>,
}

impl OpenStream {
    /// Opens the stream of `key` at `path`, resuming after `last_event_id`.
    pub(super) fn open(
        path: &str,
        with_credentials: bool,
        key: StreamKey,
        last_event_id: Option<&str>,
        handlers: Handlers,
        liveness: Rc<Liveness>,
        carriage: &Carriage,
    ) -> Result<Self, JsValue> {
        if carriage.polls || carriage.headers.is_some() {
            let url = stream_url(path, &key, None);
            let topics: Rc<Vec<Topic>> = Rc::new(key.topics.iter().cloned().collect());
            let names = key.names.iter().cloned().collect();
            liveness.opened();
            let how = super::polls::How {
                url: url.clone(),
                with_credentials,
                headers: carriage.headers.clone(),
                topics,
                names,
                handlers,
                liveness: liveness.clone(),
            };
            let polls = super::polls::Polls::start(how, last_event_id.map(str::to_owned));
            return Ok(Self { source: Source::Polls(polls), liveness, key, url });
        }
        let url = stream_url(path, &key, last_event_id);
        let init = EventSourceInit::new();
        init.set_with_credentials(with_credentials);
        let source = EventSource::new_with_event_source_init_dict(&url, &init)?;
        liveness.opened();

        let topics: Rc<Vec<Topic>> = Rc::new(key.topics.iter().cloned().collect());
        let mut listeners = Vec::new();
        for event_name in &key.names {
            let (on_frame, topics, name) = (handlers.on_frame.clone(), topics.clone(), event_name.clone());
            let alive = liveness.clone();
            let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                alive.heard();
                if let Some(data) = ev.data().as_string() {
                    on_frame(&name, &data, &ev.last_event_id(), &topics);
                }
            });
            source.add_event_listener_with_callback(event_name, listener.as_ref().unchecked_ref())?;
            listeners.push(listener);
        }

        // The server could not replay everything for some topics (a cursor too old, this stream
        // fell behind, the broker lost Redis for a while): their subscribers refetch.
        let (on_resync, alive) = (handlers.on_resync.clone(), liveness.clone());
        let resync_listener = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            alive.heard();
            let named = ev.data().as_string().and_then(|d| decode::resync_topics(&d));
            on_resync(&ev.last_event_id(), named);
        });
        source.add_event_listener_with_callback(RESYNC_EVENT, resync_listener.as_ref().unchecked_ref())?;
        listeners.push(resync_listener);

        // The server's heartbeat says the stream is alive, and how often it comes.
        let alive = liveness.clone();
        let heartbeat_listener = Closure::<dyn FnMut(MessageEvent)>::new(move |_: MessageEvent| alive.beat());
        source.add_event_listener_with_callback(HEARTBEAT_EVENT, heartbeat_listener.as_ref().unchecked_ref())?;
        listeners.push(heartbeat_listener);

        // Opened without a cursor, the server cannot replay: the first open refetches everything.
        // (The browser's own reconnects then resume from the `id:` the stream opened with.)
        let refetch_on_open = Cell::new(last_event_id.is_none());
        let (on_open, alive) = (handlers.on_open.clone(), liveness.clone());
        let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            // The headers came; that says nothing of whether the body's bytes will.
            alive.heard_ms.set(js_sys::Date::now());
            on_open(refetch_on_open.replace(false))
        });
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let on_error = handlers.on_error.clone();
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| on_error());
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));

        let source = Source::Events { source, _listeners: listeners, _on_open: on_open, _on_error: on_error };
        Ok(Self { source, liveness, key, url })
    }

    /// What it was opened for.
    pub(super) fn key(&self) -> &StreamKey {
        &self.key
    }

    #[cfg(test)]
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Whether the browser gave up on it: it only retries network drops, and stops after an
    /// HTTP error. Then the URL, to ask why, or why when the polls already know.
    pub(super) fn gave_up(&self) -> Option<GaveUp> {
        match &self.source {
            Source::Events { source, .. } if source.ready_state() == EventSource::CLOSED => {
                Some(GaveUp::Ask(self.url.clone()))
            }
            Source::Polls(polls) if polls.state() == super::polls::State::Closed => {
                Some(GaveUp::Known(polls.refusal()))
            }
            _ => None,
        }
    }

    pub(super) fn close(&self) {
        match &self.source {
            Source::Events { source, .. } => source.close(),
            Source::Polls(polls) => polls.close(),
        }
    }

    /// Whether the stream is open but has said nothing for longer than the server's heartbeat
    /// allows ([`Liveness`]). (Polls give up on an unanswered poll themselves.)
    pub(super) fn dead(&self) -> bool {
        matches!(&self.source, Source::Events { source, .. } if source.ready_state() == EventSource::OPEN)
            && self.liveness.silent()
    }

    /// Whether it opened but has said nothing at all for longer than `expected` heartbeats
    /// allow: the bytes are held back on the way (a proxy that buffers the response).
    pub(super) fn held_back(&self, expected: Option<Duration>) -> bool {
        matches!(&self.source, Source::Events { source, .. } if source.ready_state() == EventSource::OPEN)
            && expected.is_some_and(|every| self.liveness.silent_since_open(every))
    }

    /// Whether the browser is between attempts to reopen it (it dropped; it retries itself,
    /// after `retry:`).
    pub(super) fn reconnecting(&self) -> bool {
        match &self.source {
            Source::Events { source, .. } => source.ready_state() == EventSource::CONNECTING,
            Source::Polls(polls) => polls.state() == super::polls::State::Connecting,
        }
    }
}

fn stream_url(path: &str, key: &StreamKey, last_event_id: Option<&str>) -> String {
    let topics: Vec<&str> = key.topics.iter().map(Topic::as_str).collect();
    // Topics are `[A-Za-z0-9_.:-]` only, so they need no percent-encoding.
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{sep}topic={}", topics.join(","));
    if !key.presence.is_empty() {
        let presence: Vec<&str> = key.presence.iter().map(Topic::as_str).collect();
        url.push_str("&presence=");
        url.push_str(&presence.join(","));
    }
    if let Some(id) = last_event_id {
        url.push_str("&last_event_id=");
        url.push_str(&String::from(js_sys::encode_uri_component(id)));
    }
    url
}

/// Asks the stream URL again with `fetch` to learn the status and JSON error that EventSource
/// hides; `None` when it now answers 200 (the request is aborted at once).
pub(super) async fn diagnose(url: &str, with_credentials: bool) -> Option<SseError> {
    let abort = web_sys::AbortController::new().ok();
    let mut request = gloo_net::http::Request::get(url)
        .header("accept", "text/event-stream")
        .abort_signal(abort.as_ref().map(|a| a.signal()).as_ref());
    if with_credentials {
        request = request.credentials(web_sys::RequestCredentials::Include);
    }
    match request.send().await {
        Ok(resp) if resp.status() == 200 => {
            let kind = resp.headers().get("content-type").unwrap_or_default();
            if let Some(abort) = abort {
                abort.abort();
            }
            // A page server that answers every path with its index (a dev server, a SPA's
            // fallback): EventSource gives up on it and says nothing of why.
            (!kind.starts_with("text/event-stream")).then(|| SseError::Refused {
                status: 200,
                code: "not_an_event_stream".to_owned(),
                message: format!("{url} answered {kind:?}, not an event stream: is the events path right (events_path, provide_sse_options)?"),
            })
        }
        Ok(resp) => {
            let status = resp.status();
            let (code, message) = crate::fetch::error_body(&resp).await;
            let message = message.unwrap_or_else(|| match status {
                404 => format!("{url} is not found: is the events path right (events_path, provide_sse_options)?"),
                _ => resp.status_text(),
            });
            Some(SseError::Refused { status, code, message })
        }
        Err(e) => Some(SseError::Unreachable(e.to_string())),
    }
}
