//! The tab-wide hub behind `use_sse`: one EventSource for the union of all subscribed topics.
//!
//! Hand-written rather than leptos-use's `use_event_source`, which opens one EventSource per call
//! with a fixed URL: sharing one stream across components, reopening it when the topic set
//! changes and routing typed frames back to each subscriber is exactly what this crate adds.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use leptos::leptos_dom::helpers::set_timeout;
use leptos::prelude::*;
use shared::Topic;
use wasm_bindgen::prelude::*;
use web_sys::{EventSource, MessageEvent};

use super::{ConnectionStatus, DEFAULT_EVENTS_PATH};

/// Wait this long before reopening a stream the browser gave up on (e.g. the server said 503).
const REOPEN_AFTER: Duration = Duration::from_secs(3);

/// The server's "you may have missed events" event.
const RESYNC_EVENT: &str = "resync";

/// Called with a frame's event name and data.
pub(super) type EventCallback = Rc<dyn Fn(&str, &str)>;

pub(super) struct Subscriber {
    pub topic: Topic,
    pub names: &'static [&'static str],
    pub on_event: EventCallback,
    pub on_resync: Rc<dyn Fn()>,
}

/// What the open stream was opened for: reopen when this changes.
#[derive(Clone, PartialEq, Eq, Default)]
struct StreamKey {
    topics: BTreeSet<Topic>,
    names: BTreeSet<&'static str>,
}

struct OpenStream {
    source: EventSource,
    key: StreamKey,
    // Kept alive as long as the EventSource may call them.
    _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
    _on_open: Closure<dyn FnMut(web_sys::Event)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

struct Hub {
    path: String,
    subscribers: BTreeMap<u64, Subscriber>,
    next_id: u64,
    stream: Option<OpenStream>,
    sync_scheduled: bool,
    last_event_id: Option<String>,
    status: ArcRwSignal<ConnectionStatus>,
}

thread_local! {
    static HUB: RefCell<Hub> = RefCell::new(Hub {
        path: DEFAULT_EVENTS_PATH.to_owned(),
        subscribers: BTreeMap::new(),
        next_id: 0,
        stream: None,
        sync_scheduled: false,
        last_event_id: None,
        status: ArcRwSignal::new(ConnectionStatus::Connecting),
    });
}

pub(super) fn set_path(path: &str) {
    HUB.with_borrow_mut(|hub| hub.path = path.to_owned());
    schedule_sync();
}

pub(super) fn status() -> ArcRwSignal<ConnectionStatus> {
    HUB.with_borrow(|hub| hub.status.clone())
}

pub(super) fn subscribe(sub: Subscriber) -> u64 {
    let id = HUB.with_borrow_mut(|hub| {
        hub.next_id += 1;
        hub.subscribers.insert(hub.next_id, sub);
        hub.next_id
    });
    schedule_sync();
    id
}

pub(super) fn unsubscribe(id: u64) {
    HUB.with_borrow_mut(|hub| hub.subscribers.remove(&id));
    schedule_sync();
}

/// Batches changes: components mounting in one render pass cause one (re)open, not one each.
fn schedule_sync() {
    let already = HUB.with_borrow_mut(|hub| std::mem::replace(&mut hub.sync_scheduled, true));
    if !already {
        set_timeout(sync, Duration::ZERO);
    }
}

fn sync() {
    let status = HUB.with_borrow_mut(|hub| {
        hub.sync_scheduled = false;
        let key = StreamKey {
            topics: hub.subscribers.values().map(|s| s.topic.clone()).collect(),
            names: hub.subscribers.values().flat_map(|s| s.names.iter().copied()).collect(),
        };
        if hub.stream.as_ref().is_some_and(|s| s.key == key) {
            return None;
        }
        if let Some(old) = hub.stream.take() {
            old.source.close();
        }
        if key.topics.is_empty() {
            return None;
        }
        match open(&hub.path, key, hub.last_event_id.as_deref()) {
            Ok(stream) => {
                hub.stream = Some(stream);
                Some(ConnectionStatus::Connecting)
            }
            Err(e) => {
                leptos::logging::error!("use_sse: cannot open EventSource: {e:?}");
                Some(ConnectionStatus::Offline)
            }
        }
    });
    if let Some(status) = status {
        set_status(status);
    }
}

/// Signals are set with the hub released: whatever reacts may subscribe or unsubscribe.
fn set_status(status: ConnectionStatus) {
    HUB.with_borrow(|hub| hub.status.clone()).set(status);
}

/// Bumps every subscriber's version (called with the hub released).
fn resync_all() {
    let callbacks: Vec<_> = HUB.with_borrow(|hub| hub.subscribers.values().map(|s| s.on_resync.clone()).collect());
    for cb in callbacks {
        cb();
    }
}

fn stream_url(path: &str, key: &StreamKey, last_event_id: Option<&str>) -> String {
    let topics: Vec<&str> = key.topics.iter().map(Topic::as_str).collect();
    // Topics are `[A-Za-z0-9_.:-]` only, so they need no percent-encoding.
    let mut url = format!("{path}?topic={}", topics.join(","));
    if let Some(id) = last_event_id {
        url.push_str("&last_event_id=");
        url.push_str(&String::from(js_sys::encode_uri_component(id)));
    }
    url
}

fn open(path: &str, key: StreamKey, last_event_id: Option<&str>) -> Result<OpenStream, JsValue> {
    let source = EventSource::new(&stream_url(path, &key, last_event_id))?;

    let mut listeners = Vec::new();
    for &name in &key.names {
        let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(data) = ev.data().as_string() else {
                return;
            };
            let callbacks: Vec<_> = HUB.with_borrow_mut(|hub| {
                let id = ev.last_event_id();
                if !id.is_empty() {
                    hub.last_event_id = Some(id);
                }
                hub.subscribers.values().filter(|s| s.names.contains(&name)).map(|s| s.on_event.clone()).collect()
            });
            // Called with the hub released: a callback may mount or unmount components.
            for cb in callbacks {
                cb(name, &data);
            }
        });
        source.add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())?;
        listeners.push(listener);
    }

    // The server says events may have been missed (this stream fell behind, or the broker lost
    // Redis for a while): every subscriber refetches, as after a reconnect.
    let resync = Closure::<dyn FnMut(MessageEvent)>::new(move |_: MessageEvent| resync_all());
    source.add_event_listener_with_callback(RESYNC_EVENT, resync.as_ref().unchecked_ref())?;
    listeners.push(resync);

    // Events sent while the tab was not connected are not replayed: refetch on every open.
    let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        set_status(ConnectionStatus::Live);
        resync_all();
    });
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));

    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        set_status(ConnectionStatus::Offline);
        let gave_up =
            HUB.with_borrow(|hub| hub.stream.as_ref().is_some_and(|s| s.source.ready_state() == EventSource::CLOSED));
        if gave_up {
            // The browser only retries network drops; after an HTTP error it stops. Retry ourselves.
            set_timeout(
                || {
                    HUB.with_borrow_mut(|hub| {
                        if hub.stream.as_ref().is_some_and(|s| s.source.ready_state() == EventSource::CLOSED) {
                            hub.stream = None;
                        }
                    });
                    schedule_sync();
                },
                REOPEN_AFTER,
            );
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));

    Ok(OpenStream { source, key, _listeners: listeners, _on_open: on_open, _on_error: on_error })
}
