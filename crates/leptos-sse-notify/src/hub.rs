//! The hub behind `use_sse`: per events path, one EventSource for the union of all subscribed
//! topics of every tab of the browser (one tab leads and holds it, see [`crate::tabs`]).
//!
//! The hub keeps the stream's cursor (the id of the last frame it saw, or the one the server
//! rendered into the page) and reopens from it, so the server replays what was missed and a
//! reconnect that missed nothing refetches nothing. Each frame's cursor says which of the
//! stream's topics it matched: exactly the subscribers of those topics are notified, and a
//! `resync` notifies exactly the subscribers of the topics it names.
//!
//! Hand-written rather than leptos-use's `use_event_source`, which opens one EventSource per call
//! with a fixed URL: sharing one stream across components, reopening it when the topic set
//! changes and routing typed frames back to each subscriber is exactly what this crate adds.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use leptos::leptos_dom::helpers::set_timeout;
use leptos::prelude::*;
use sse_notify_core::presence::{Members, PresenceFrame, Roster, PRESENCE_STATE_EVENT};
use sse_notify_core::wire::RESYNC_EVENT;
use sse_notify_core::Topic;
use wasm_bindgen::prelude::*;
use web_sys::{EventSource, EventSourceInit, MessageEvent};

use crate::decode;
use crate::tabs::{self, TabLink, TabMessage};
use crate::{ConnectionStatus, SseError};

/// Wait this long before reopening a stream the browser gave up on (e.g. the server said 503).
const REOPEN_AFTER: Duration = Duration::from_secs(3);

/// Called with a frame's event name, data and id, and whether the frame's cursor said it matched
/// the subscriber's topic (false: the server sent no cursor, the subscriber must check itself).
pub(crate) type EventCallback = Rc<dyn Fn(&str, &str, &str, bool)>;

pub(crate) struct Subscriber {
    pub topic: Topic,
    pub names: &'static [&'static str],
    pub on_event: EventCallback,
    pub on_resync: Rc<dyn Fn()>,
}

/// Which stream: subscribers with the same key share one EventSource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HubKey {
    pub path: String,
    pub with_credentials: bool,
}

/// What the open stream was opened for: reopen when this changes.
#[derive(Clone, PartialEq, Eq, Default)]
struct StreamKey {
    topics: BTreeSet<Topic>,
    names: BTreeSet<String>,
    /// The topics whose presence some subscriber shows: the stream asks the server for their
    /// presence (`&presence=`), and gets none for the others.
    presence: BTreeSet<Topic>,
}

/// This tab's part in the browser's one stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// No sharing (the browser lacks Web Locks or BroadcastChannel): this tab's own stream.
    Solo,
    /// Another tab holds the stream; this one announces its topics and gets its frames.
    Follower,
    /// This tab holds the stream for every tab.
    Leader,
}

/// What another tab wants from the leader's stream.
struct Peer {
    topics: BTreeSet<Topic>,
    names: BTreeSet<String>,
    presence: BTreeSet<Topic>,
    since: Option<String>,
    seen_ms: f64,
}

struct OpenStream {
    source: EventSource,
    key: StreamKey,
    url: String,
    // Kept alive as long as the EventSource may call them.
    _listeners: Vec<Closure<dyn FnMut(MessageEvent)>>,
    _on_open: Closure<dyn FnMut(web_sys::Event)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

struct Hub {
    subscribers: BTreeMap<u64, Subscriber>,
    stream: Option<OpenStream>,
    sync_scheduled: bool,
    last_event_id: Option<String>,
    status: ArcRwSignal<ConnectionStatus>,
    error: ArcRwSignal<Option<SseError>>,
    role: Role,
    /// The channel to the other tabs (`None` when [`Role::Solo`]).
    link: Option<TabLink>,
    tab: String,
    /// The other tabs' subscriptions (the leader's view).
    peers: BTreeMap<String, Peer>,
    /// What this tab last told the leader it wants (a follower's view).
    announced: Option<StreamKey>,
    /// Who is on each topic with presence, as the stream's `presence:*` frames said.
    presence: HashMap<String, Members>,
    /// Moves whenever `presence` changes (what `use_presence` tracks).
    presence_changed: ArcRwSignal<u64>,
}

impl Hub {
    fn new() -> Self {
        Self {
            subscribers: BTreeMap::new(),
            stream: None,
            sync_scheduled: false,
            last_event_id: None,
            status: ArcRwSignal::new(ConnectionStatus::Connecting),
            error: ArcRwSignal::new(None),
            role: Role::Solo,
            link: None,
            // The tab's id among its browser's tabs, made from its origin without showing it
            // (the origin is a secret its writes alone send).
            tab: sse_notify_core::origin::echo_tag(crate::tab_origin(), "tab"),
            peers: BTreeMap::new(),
            announced: None,
            presence: HashMap::new(),
            presence_changed: ArcRwSignal::new(0),
        }
    }

    /// This tab's own topics, event names and presence topics.
    fn own_want(&self) -> StreamKey {
        let shows_presence = |s: &&Subscriber| s.names.contains(&PRESENCE_STATE_EVENT);
        StreamKey {
            topics: self.subscribers.values().map(|s| s.topic.clone()).collect(),
            names: self.subscribers.values().flat_map(|s| s.names.iter().map(|n| n.to_string())).collect(),
            presence: self.subscribers.values().filter(shows_presence).map(|s| s.topic.clone()).collect(),
        }
    }

    fn send(&self, msg: &TabMessage) {
        if let Some(link) = &self.link {
            link.send(msg);
        }
    }

    /// Sends `msg` to the other tabs when this tab leads (what its stream says, they hear).
    fn tell_followers(&self, msg: impl FnOnce() -> TabMessage) {
        if self.role == Role::Leader {
            self.send(&msg());
        }
    }
}

thread_local! {
    static HUBS: RefCell<HashMap<HubKey, Hub>> = RefCell::new(HashMap::new());
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` on the hub for `key` (made on first use). Never call signals' setters or
/// subscriber callbacks inside: whatever reacts may come back into the hub.
fn with_hub<R>(key: &HubKey, f: impl FnOnce(&mut Hub) -> R) -> R {
    let made = HUBS.with_borrow_mut(|hubs| {
        let made = !hubs.contains_key(key);
        hubs.entry(key.clone()).or_insert_with(Hub::new);
        made
    });
    if made {
        join_other_tabs(key);
    }
    HUBS.with_borrow_mut(|hubs| f(hubs.get_mut(key).expect("made above")))
}

/// Links a new hub to the other tabs of this browser: follows the leading tab, and asks to lead
/// in its turn. Stays [`Role::Solo`] where the browser cannot share.
fn join_other_tabs(key: &HubKey) {
    if !tabs::supported() {
        return;
    }
    let name = format!("leptos-sse-notify:{}:{}", key.path, key.with_credentials);
    let link = {
        let key = key.clone();
        TabLink::open(&name, move |msg| on_tab_message(&key, msg))
    };
    let link = match link {
        Ok(link) => link,
        Err(e) => {
            leptos::logging::warn!("use_sse: cannot reach other tabs, keeping a stream of this tab: {e:?}");
            return;
        }
    };
    HUBS.with_borrow_mut(|hubs| {
        let hub = hubs.get_mut(key).expect("just made");
        hub.link = Some(link);
        hub.role = Role::Follower;
    });
    let granted = {
        let key = key.clone();
        move || become_leader(&key)
    };
    if let Err(e) = tabs::request_leadership(&name, granted) {
        leptos::logging::warn!("use_sse: cannot take part in the election, keeping a stream of this tab: {e:?}");
        HUBS.with_borrow_mut(|hubs| {
            let hub = hubs.get_mut(key).expect("just made");
            hub.link = None;
            hub.role = Role::Solo;
        });
        return;
    }
    {
        let key = key.clone();
        tabs::on_page_hide(move || {
            with_hub(&key, |hub| {
                if hub.role == Role::Follower {
                    hub.send(&TabMessage::Bye { tab: hub.tab.clone() });
                }
            })
        });
    }
    let key = key.clone();
    let tick = leptos::leptos_dom::helpers::set_interval_with_handle(move || on_tick(&key), tabs::ANNOUNCE_EVERY);
    if let Err(e) = tick {
        leptos::logging::warn!("use_sse: no timer for the other tabs: {e:?}");
    }
}

/// This tab now holds the lock: it opens the stream for every tab, from the newest cursor it has
/// seen (the old leader's frames carried it), and asks the others what they want.
fn become_leader(key: &HubKey) {
    with_hub(key, |hub| {
        hub.role = Role::Leader;
        hub.peers.clear();
        hub.send(&TabMessage::Leader);
    });
    let key = key.clone();
    set_timeout(move || schedule_sync(&key), tabs::GATHER_WANTS);
}

/// Followers repeat what they want (a new leader, or one that missed a message, learns it);
/// the leader forgets tabs it has not heard from.
fn on_tick(key: &HubKey) {
    let changed = with_hub(key, |hub| match hub.role {
        Role::Follower => {
            hub.announced = None;
            true
        }
        Role::Leader => {
            let now = tabs::now_ms();
            let before = hub.peers.len();
            hub.peers.retain(|_, p| now - p.seen_ms < tabs::FORGET_AFTER_MS);
            hub.peers.len() != before
        }
        Role::Solo => false,
    });
    if changed {
        schedule_sync(key);
    }
}

fn on_tab_message(key: &HubKey, msg: TabMessage) {
    let role = with_hub(key, |hub| hub.role);
    match (role, msg) {
        (Role::Leader, TabMessage::Want { tab, topics, names, presence, since }) => {
            let peer = Peer {
                topics: topics.into_iter().collect(),
                names: names.into_iter().collect(),
                presence: presence.into_iter().collect(),
                since,
                seen_ms: tabs::now_ms(),
            };
            with_hub(key, |hub| {
                // Presence the stream already has: a tab that joins it gets the state now (the
                // server sends it when the stream opens, which may have been long ago).
                for topic in &peer.presence {
                    if let Some(members) = hub.presence.get(topic.as_str()) {
                        let state = members.summary(topic.as_str());
                        hub.send(&TabMessage::Frame {
                            name: state.name().to_owned(),
                            data: state.to_json(),
                            id: String::new(),
                            topics: Vec::new(),
                        });
                    }
                }
                hub.peers.insert(tab, peer);
                hub.send(&TabMessage::Status { status: hub.status.get_untracked() });
            });
            schedule_sync(key);
        }
        (Role::Leader, TabMessage::Bye { tab }) => {
            with_hub(key, |hub| hub.peers.remove(&tab));
            schedule_sync(key);
        }
        (Role::Follower, TabMessage::Leader) => {
            with_hub(key, |hub| hub.announced = None);
            schedule_sync(key);
        }
        (Role::Follower, TabMessage::Frame { name, data, id, topics }) => {
            if !id.is_empty() {
                with_hub(key, |hub| hub.last_event_id = Some(id.clone()));
            }
            dispatch(key, &name, &data, &id, &topics);
        }
        (Role::Follower, TabMessage::Status { status }) => signals(key).0.set(status),
        (Role::Follower, TabMessage::Resync { topics }) => resync(key, topics.as_deref()),
        (Role::Follower, TabMessage::Error { error }) => show_error(key, error),
        _ => {}
    }
}

/// The stream's status and its last HTTP error, shared by every subscriber of `key`.
pub(crate) fn signals(key: &HubKey) -> (ArcRwSignal<ConnectionStatus>, ArcRwSignal<Option<SseError>>) {
    with_hub(key, |hub| (hub.status.clone(), hub.error.clone()))
}

/// Adds a subscriber. `start_cursor` is the cursor a server-rendered page was given: the stream
/// opens from it unless the hub already has a newer one.
pub(crate) fn subscribe(key: &HubKey, sub: Subscriber, start_cursor: Option<String>) -> u64 {
    let id = NEXT_ID.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    with_hub(key, |hub| {
        if hub.last_event_id.is_none() {
            hub.last_event_id = start_cursor;
        }
        hub.subscribers.insert(id, sub)
    });
    schedule_sync(key);
    id
}

/// Keeps a subscriber on `topic` as it changes (`make` builds it for each topic), for as long as
/// the calling component's owner lives.
pub(crate) fn follow(
    key: &HubKey,
    topic: Signal<Topic>,
    start_cursor: Option<String>,
    make: impl Fn(Topic) -> Subscriber + 'static,
) {
    // Shared with the cleanup, which must be `Send` (the id is all it holds).
    let current = std::sync::Arc::new(std::sync::Mutex::new(None::<u64>));
    Effect::new({
        let (key, current) = (key.clone(), current.clone());
        move |_| {
            let topic = topic.get();
            if let Some(old) = current.lock().unwrap().take() {
                unsubscribe(&key, old);
            }
            let id = subscribe(&key, make(topic), start_cursor.clone());
            *current.lock().unwrap() = Some(id);
        }
    });
    let key = key.clone();
    on_cleanup(move || {
        if let Some(id) = current.lock().unwrap().take() {
            unsubscribe(&key, id);
        }
    });
}

pub(crate) fn unsubscribe(key: &HubKey, id: u64) {
    with_hub(key, |hub| hub.subscribers.remove(&id));
    schedule_sync(key);
}

/// Batches changes: components mounting in one render pass cause one (re)open, not one each.
fn schedule_sync(key: &HubKey) {
    let already = with_hub(key, |hub| std::mem::replace(&mut hub.sync_scheduled, true));
    if !already {
        let key = key.clone();
        set_timeout(move || sync(&key), Duration::ZERO);
    }
}

fn sync(key: &HubKey) {
    let status = with_hub(key, |hub| {
        hub.sync_scheduled = false;
        let mut wanted = hub.own_want();
        if hub.role == Role::Follower {
            // The leader holds the stream: tell it what this tab wants, when that changes.
            if hub.announced.as_ref() != Some(&wanted) {
                hub.send(&TabMessage::Want {
                    tab: hub.tab.clone(),
                    topics: wanted.topics.iter().cloned().collect(),
                    names: wanted.names.iter().cloned().collect(),
                    presence: wanted.presence.iter().cloned().collect(),
                    since: hub.last_event_id.clone(),
                });
                hub.announced = Some(wanted);
            }
            return None;
        }
        // Topics another tab adds are replayed from that tab's cursor when it is older, so
        // nothing published since it rendered is missed.
        let mut since = hub.last_event_id.clone();
        let streamed = hub.stream.as_ref().map(|s| &s.key.topics);
        for peer in hub.peers.values() {
            wanted.topics.extend(peer.topics.iter().cloned());
            wanted.names.extend(peer.names.iter().cloned());
            wanted.presence.extend(peer.presence.iter().cloned());
            if !streamed.is_some_and(|s| peer.topics.is_subset(s)) {
                since = decode::older(since, peer.since.as_ref());
            }
        }
        if hub.stream.as_ref().is_some_and(|s| s.key == wanted) {
            return None;
        }
        if let Some(old) = hub.stream.take() {
            old.source.close();
        }
        if wanted.topics.is_empty() {
            return None;
        }
        match open(key, wanted, since.as_deref()) {
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
        set_status(key, status);
    }
}

/// Signals are set with the hub released: whatever reacts may subscribe or unsubscribe. The
/// leader tells the other tabs too.
fn set_status(key: &HubKey, status: ConnectionStatus) {
    with_hub(key, |hub| hub.tell_followers(|| TabMessage::Status { status }));
    signals(key).0.set(status);
}

fn set_error(key: &HubKey, error: Option<SseError>) {
    with_hub(key, |hub| hub.tell_followers(|| TabMessage::Error { error: error.clone() }));
    show_error(key, error);
}

/// Sets this tab's error signal (when it changes).
fn show_error(key: &HubKey, error: Option<SseError>) {
    let signal = signals(key).1;
    if signal.get_untracked() != error {
        signal.set(error);
    }
}

/// Bumps the version of every subscriber of `topics` (all of them for `None`); called with the
/// hub released.
fn resync(key: &HubKey, topics: Option<&[String]>) {
    let callbacks: Vec<_> = with_hub(key, |hub| {
        hub.tell_followers(|| TabMessage::Resync { topics: topics.map(<[String]>::to_vec) });
        hub.subscribers
            .values()
            .filter(|s| topics.is_none_or(|t| t.iter().any(|t| t == s.topic.as_str())))
            .map(|s| s.on_resync.clone())
            .collect()
    });
    for cb in callbacks {
        cb();
    }
}

/// Who is on `topic`, once the stream said (`None` before its `presence:state` or `count`).
pub(crate) fn presence(key: &HubKey, topic: &str) -> Option<Roster> {
    with_hub(key, |hub| hub.presence.get(topic).map(Members::roster))
}

/// Moves whenever the presence of any topic of `key`'s stream changes.
pub(crate) fn presence_changed(key: &HubKey) -> ArcRwSignal<u64> {
    with_hub(key, |hub| hub.presence_changed.clone())
}

/// Applies a `presence:*` frame; the signal is moved with the hub released.
fn apply_presence(key: &HubKey, name: &str, data: &str) {
    let Some(frame) = PresenceFrame::decode(name, data) else {
        leptos::logging::warn!("use_presence: a {name} frame that is not one: {data}");
        return;
    };
    let changed = with_hub(key, |hub| {
        let topic = frame.topic().to_owned();
        let changed = match hub.presence.get_mut(&topic) {
            Some(members) => members.apply(&frame),
            // The topic's first state or count (a join or leave before it is not the whole story).
            None if matches!(frame, PresenceFrame::State { .. } | PresenceFrame::Count { .. }) => {
                hub.presence.entry(topic).or_default().apply(&frame);
                true
            }
            None => false,
        };
        changed.then(|| hub.presence_changed.clone())
    });
    if let Some(signal) = changed {
        signal.update(|n| *n += 1);
    }
}

/// Hands a frame to this tab's subscribers of its event name and of the topics its cursor says
/// it matched (`topics`: the stream's topic list, bit `i` of the mask is `topics[i]`).
fn dispatch(key: &HubKey, name: &str, data: &str, id: &str, topics: &[Topic]) {
    if name.starts_with("presence:") {
        return apply_presence(key, name, data);
    }
    let matched = decode::matched_topics(id, topics);
    let callbacks: Vec<_> = with_hub(key, |hub| {
        hub.subscribers
            .values()
            .filter(|s| s.names.contains(&name))
            .filter(|s| matched.as_ref().is_none_or(|m| m.contains(&&s.topic)))
            .map(|s| s.on_event.clone())
            .collect()
    });
    // Called with the hub released: a callback may mount or unmount components.
    for cb in callbacks {
        cb(name, data, id, matched.is_some());
    }
}

/// Remembers a frame's id as the stream's cursor (frames without one leave it alone).
fn remember_cursor(key: &HubKey, ev: &MessageEvent) {
    let id = ev.last_event_id();
    if !id.is_empty() {
        with_hub(key, |hub| hub.last_event_id = Some(id));
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

fn open(hub_key: &HubKey, key: StreamKey, last_event_id: Option<&str>) -> Result<OpenStream, JsValue> {
    let url = stream_url(&hub_key.path, &key, last_event_id);
    let init = EventSourceInit::new();
    init.set_with_credentials(hub_key.with_credentials);
    let source = EventSource::new_with_event_source_init_dict(&url, &init)?;

    // The topics in the order the URL lists them: bit `i` of a cursor's mask is `topics[i]`.
    let topics: Rc<Vec<Topic>> = Rc::new(key.topics.iter().cloned().collect());
    // Opened without a cursor, the server cannot replay: the first open refetches everything.
    // (The browser's own reconnects then resume from the `id:` the stream opened with.)
    let refetch_on_open = Rc::new(Cell::new(last_event_id.is_none()));
    let mut listeners = Vec::new();
    for event_name in &key.names {
        let (hub_key, topics, name) = (hub_key.clone(), topics.clone(), event_name.clone());
        let listener = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(data) = ev.data().as_string() else {
                return;
            };
            remember_cursor(&hub_key, &ev);
            let id = ev.last_event_id();
            with_hub(&hub_key, |hub| {
                hub.tell_followers(|| TabMessage::Frame {
                    name: name.clone(),
                    data: data.clone(),
                    id: id.clone(),
                    topics: topics.to_vec(),
                })
            });
            dispatch(&hub_key, &name, &data, &id, &topics);
        });
        source.add_event_listener_with_callback(event_name, listener.as_ref().unchecked_ref())?;
        listeners.push(listener);
    }

    // The server could not replay everything for some topics (a cursor too old, this stream fell
    // behind, the broker lost Redis for a while): their subscribers refetch.
    let resync_listener = {
        let hub_key = hub_key.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            remember_cursor(&hub_key, &ev);
            let named = ev.data().as_string().and_then(|d| decode::resync_topics(&d));
            resync(&hub_key, named.as_deref());
        })
    };
    source.add_event_listener_with_callback(RESYNC_EVENT, resync_listener.as_ref().unchecked_ref())?;
    listeners.push(resync_listener);

    let on_open = {
        let (hub_key, refetch_on_open) = (hub_key.clone(), refetch_on_open.clone());
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            set_status(&hub_key, ConnectionStatus::Live);
            set_error(&hub_key, None);
            if refetch_on_open.replace(false) {
                resync(&hub_key, None);
            }
        })
    };
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));

    let on_error = {
        let hub_key = hub_key.clone();
        Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            set_status(&hub_key, ConnectionStatus::Offline);
            let gave_up = with_hub(&hub_key, |hub| {
                hub.stream.as_ref().filter(|s| s.source.ready_state() == EventSource::CLOSED).map(|s| s.url.clone())
            });
            // The browser only retries network drops; after an HTTP error it stops. Find out
            // why (EventSource does not say), then retry ourselves.
            if let Some(url) = gave_up {
                let diagnosed = hub_key.clone();
                leptos::task::spawn_local(async move {
                    let error = diagnose(&url, diagnosed.with_credentials).await;
                    set_error(&diagnosed, error);
                });
                let hub_key = hub_key.clone();
                set_timeout(
                    move || {
                        with_hub(&hub_key, |hub| {
                            if hub.stream.as_ref().is_some_and(|s| s.source.ready_state() == EventSource::CLOSED) {
                                hub.stream = None;
                            }
                        });
                        schedule_sync(&hub_key);
                    },
                    REOPEN_AFTER,
                );
            }
        })
    };
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));

    Ok(OpenStream { source, key, url, _listeners: listeners, _on_open: on_open, _on_error: on_error })
}

/// Asks the stream URL again with `fetch` to learn the status and JSON error that EventSource
/// hides; `None` when it now answers 200 (the request is aborted at once).
async fn diagnose(url: &str, with_credentials: bool) -> Option<SseError> {
    let abort = web_sys::AbortController::new().ok();
    let mut request = gloo_net::http::Request::get(url)
        .header("accept", "text/event-stream")
        .abort_signal(abort.as_ref().map(|a| a.signal()).as_ref());
    if with_credentials {
        request = request.credentials(web_sys::RequestCredentials::Include);
    }
    match request.send().await {
        Ok(resp) if resp.status() == 200 => {
            if let Some(abort) = abort {
                abort.abort();
            }
            None
        }
        Ok(resp) => {
            let (code, message) = crate::live_json::error_body(&resp).await;
            Some(SseError::Refused { status: resp.status(), code, message: message.unwrap_or_default() })
        }
        Err(e) => Some(SseError::Unreachable(e.to_string())),
    }
}

/// The hub in a real browser (headless Chromium through wasm-bindgen-test): routing by a
/// frame's mask, resync fan-out, and another tab's want joining the leading tab's stream.
#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests {
    use super::*;
    use sse_notify_core::cursor::{Cursor, LogId, LogPosition};
    use wasm_bindgen_test::*;

    wasm_bindgen_test_configure!(run_in_browser);

    /// A hub of its own for each test (hubs are per events path).
    fn key(test: &str) -> HubKey {
        HubKey { path: format!("/hub-test/{test}"), with_credentials: false }
    }

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    /// Subscribes to `name` and records what its callbacks get.
    fn recorder(key: &HubKey, name: &str) -> (Rc<RefCell<Vec<String>>>, Rc<Cell<u32>>) {
        let (events, resyncs) = (Rc::new(RefCell::new(Vec::new())), Rc::new(Cell::new(0)));
        let (e, r) = (events.clone(), resyncs.clone());
        let sub = Subscriber {
            topic: topic(name),
            names: &["note:saved"],
            on_event: Rc::new(move |_, data, _, _| e.borrow_mut().push(data.to_owned())),
            on_resync: Rc::new(move || r.set(r.get() + 1)),
        };
        subscribe(key, sub, None);
        (events, resyncs)
    }

    /// A frame id whose mask says it matched the topics at `bits`.
    fn cursor(bits: &[usize]) -> String {
        let matched = bits.iter().fold(0u64, |m, b| m | 1 << b);
        Cursor { log: LogId { tag: 1, epoch: 1 }, position: LogPosition { ms: 1, seq: 0 }, matched }.to_string()
    }

    async fn a_moment() {
        let wait = js_sys::Promise::new(&mut |resolve, _| {
            web_sys::window().unwrap().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 50).unwrap();
        });
        wasm_bindgen_futures::JsFuture::from(wait).await.unwrap();
    }

    #[wasm_bindgen_test]
    fn a_frame_reaches_the_subscribers_of_the_topics_its_mask_names_only() {
        let key = key("mask");
        let (a, _) = recorder(&key, "a");
        let (b, _) = recorder(&key, "b");
        let (c, _) = recorder(&key, "c");
        let stream_topics = [topic("a"), topic("b"), topic("c")];
        dispatch(&key, "note:saved", "{\"id\":1}", &cursor(&[1]), &stream_topics);
        dispatch(&key, "note:saved", "{\"id\":2}", &cursor(&[0, 2]), &stream_topics);
        dispatch(&key, "other:event", "{\"id\":3}", &cursor(&[0]), &stream_topics);
        assert_eq!(*a.borrow(), ["{\"id\":2}"]);
        assert_eq!(*b.borrow(), ["{\"id\":1}"]);
        assert_eq!(*c.borrow(), ["{\"id\":2}"], "an event name no subscriber decodes reaches none");
    }

    #[wasm_bindgen_test]
    fn presence_frames_keep_the_members_once_the_state_came() {
        let key = key("presence");
        let ids = || presence(&key, "room").map(|r| r.members.into_iter().map(|m| m.id).collect::<Vec<_>>());
        let frame = |name: &str, data: &str| dispatch(&key, name, data, "", &[]);
        frame("presence:join", r#"{"topic":"room","member":{"id":"a","info":null}}"#);
        assert_eq!(ids(), None, "a join before the state is not the whole set");
        frame("presence:state", r#"{"topic":"room","members":[{"id":"b","info":{"name":"B"}}]}"#);
        assert_eq!(ids(), Some(vec!["b".to_owned()]));
        frame("presence:join", r#"{"topic":"room","member":{"id":"c","info":null}}"#);
        frame("presence:leave", r#"{"topic":"room","id":"b"}"#);
        frame("presence:leave", r#"{"topic":"other","id":"c"}"#);
        assert_eq!(ids(), Some(vec!["c".to_owned()]));
        assert_eq!(presence_changed(&key).get_untracked(), 3, "state, join, leave; nothing for another topic");
        // A room grown past the server's cap: counted, then listed again.
        frame("presence:count", r#"{"topic":"room","count":500}"#);
        assert_eq!(presence(&key, "room").map(|r| (r.members.len(), r.count)), Some((0, 500)));
        frame("presence:state", r#"{"topic":"room","members":[{"id":"d","info":null}]}"#);
        assert_eq!(presence(&key, "room").map(|r| r.count), Some(1));
        frame("presence:count", r#"{"topic":"hall","count":7}"#);
        assert_eq!(presence(&key, "hall").map(|r| r.count), Some(7), "a count can be a topic's first frame");
    }

    #[wasm_bindgen_test]
    fn an_id_tagged_with_this_tabs_origin_is_its_own_echo_and_others_are_not() {
        use sse_notify_core::origin::echo_tag;
        let plain = cursor(&[0]);
        let head = sse_notify_core::cursor::head_of(&plain).unwrap().to_owned();
        let tagged = |origin: &str| {
            let mut id = plain.clone();
            sse_notify_core::cursor::push_echo_tag(&mut id, &echo_tag(origin, &head));
            id
        };
        let (mine, theirs) = (tagged(crate::tab_origin()), tagged("someoneElse"));
        assert!(crate::origin::is_own_echo(&mine));
        assert!(!crate::origin::is_own_echo(&theirs) && !crate::origin::is_own_echo(&plain));
        // Whoever read this tab's ids and sends their tag back as its own origin writes events
        // that are not this tab's echo.
        let read_tag = sse_notify_core::cursor::echo_tag_of(&mine).unwrap().to_owned();
        assert!(!crate::origin::is_own_echo(&tagged(&read_tag)));
        assert!(!mine.contains(crate::tab_origin()), "the id never shows the origin");
        assert_eq!(crate::tab_origin().len(), 16);
        assert!(sse_notify_core::origin::is_origin(crate::tab_origin()));
    }

    #[wasm_bindgen_test]
    fn a_resync_reaches_the_subscribers_of_the_topics_it_names_only() {
        let key = key("resync");
        let (_, a) = recorder(&key, "a");
        let (_, b) = recorder(&key, "b");
        resync(&key, Some(&["b".to_owned()]));
        assert_eq!((a.get(), b.get()), (0, 1));
        resync(&key, None);
        assert_eq!((a.get(), b.get()), (1, 2), "a resync naming no topic reaches every subscriber");
    }

    #[wasm_bindgen_test]
    async fn another_tabs_want_joins_the_leaders_stream_and_a_bye_leaves_it() {
        let key = key("want");
        let _own = recorder(&key, "mine");
        with_hub(&key, |hub| hub.role = Role::Leader);
        on_tab_message(
            &key,
            TabMessage::Want {
                tab: "other".into(),
                topics: vec![topic("theirs")],
                names: vec!["note:saved".into()],
                presence: Vec::new(),
                since: None,
            },
        );
        a_moment().await;
        let url = with_hub(&key, |hub| hub.stream.as_ref().map(|s| s.url.clone())).expect("a stream");
        assert!(url.contains("mine") && url.contains("theirs"), "one stream for both tabs' topics: {url}");
        on_tab_message(&key, TabMessage::Bye { tab: "other".into() });
        a_moment().await;
        let url = with_hub(&key, |hub| hub.stream.as_ref().map(|s| s.url.clone())).expect("a stream");
        assert!(url.contains("mine") && !url.contains("theirs"), "the tab that left is out of it: {url}");
    }
}
