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

//!
//! The hub is the registry of the tab's subscribers and the state of its one stream; the stream
//! itself (`stream.rs`), this tab's part among the tabs (`sharing.rs`) and the presence rosters
//! (`rosters.rs`) are modules of their own that know nothing of the hub, which wires them.

mod polls;
mod rosters;
mod sharing;
mod stream;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use leptos::leptos_dom::helpers::set_timeout;
use leptos::prelude::*;
use sse_notify_core::presence::{PresenceFrame, Roster, PRESENCE_STATE_EVENT};
use sse_notify_core::Topic;
use wasm_bindgen::JsValue;

use crate::decode;
use crate::status::{ConnectionStatus, SseError};
use crate::tabs::{self, TabLink, TabMessage};
use rosters::Rosters;
use sharing::{LeaderCheck, Role, Sharing};
use stream::{Carriage, GaveUp, Handlers, Headers, Liveness, OpenStream, StreamKey};

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
    /// Carried by polls from the start (the app's headers, or `long_poll`): apart from the
    /// EventSource streams of the same path.
    pub polled: bool,
}

struct Hub {
    subscribers: BTreeMap<u64, Subscriber>,
    stream: Option<OpenStream>,
    sync_scheduled: bool,
    /// The stream's cursor: the id of the last frame it saw, or the one the page was rendered at.
    last_event_id: Option<String>,
    status: ArcRwSignal<ConnectionStatus>,
    error: ArcRwSignal<Option<SseError>>,
    sharing: Sharing,
    rosters: Rosters,
    /// When the stream was last heard from, and the server's heartbeat interval.
    liveness: Rc<Liveness>,
    /// How the stream is carried (an EventSource, or polls).
    carriage: Carriage,
    /// The server's heartbeat interval as the app says it (`UseSseOptions::heartbeat`).
    expected_heartbeat: Option<Duration>,
    /// Streams in a row that opened and then said nothing: held back on the way.
    held_back: u32,
    /// Whether this tab left the stream while hidden (`UseSseOptions::pause_when_hidden`).
    pause: Pause,
}

/// A page hidden longer than `after` leaves the stream (wants nothing of it), and resumes from
/// the cursor it had then when it is shown again.
#[derive(Default)]
struct Pause {
    after: Option<Duration>,
    /// When the page was last seen hidden, while it still is.
    hidden_since_ms: Option<f64>,
    /// Left the stream, at this cursor.
    left_at: Option<Option<String>>,
    /// Back, from this cursor: the next sync resumes this tab's topics from it.
    resume_from: Option<Option<String>>,
    /// A frame or resync for this tab's subscribers came while it was away (the stream carried
    /// their topics for another tab) and was not handed to them: they refetch when it is back,
    /// once, instead of a replay that would hand the other tabs what they have.
    missed: bool,
}

impl Pause {
    fn away(&self) -> bool {
        self.left_at.is_some()
    }

    /// What this tab's subscribers are handed now of a frame or resync meant for them: all of
    /// it, or, while the tab is away, nothing (they refetch once when it is back).
    fn hand_over<T>(&mut self, callbacks: Vec<T>) -> Vec<T> {
        if self.away() {
            self.missed |= !callbacks.is_empty();
            return Vec::new();
        }
        callbacks
    }

    /// What the page's visibility now says: `Some(true)` when the tab should leave the stream,
    /// `Some(false)` when it should come back, `None` when nothing changes.
    fn check(&mut self, visible: bool, now_ms: f64, cursor: &Option<String>) -> Option<bool> {
        let after = self.after?;
        if visible {
            self.hidden_since_ms = None;
            self.resume_from = Some(self.left_at.take()?);
            return Some(false);
        }
        let since = *self.hidden_since_ms.get_or_insert(now_ms);
        if self.left_at.is_none() && now_ms - since >= after.as_millis() as f64 {
            self.left_at = Some(cursor.clone());
            return Some(true);
        }
        None
    }
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
            sharing: Sharing::solo(),
            rosters: Rosters::new(),
            liveness: Rc::default(),
            carriage: Carriage::default(),
            expected_heartbeat: Some(Duration::from_secs(sse_notify_core::DEFAULT_HEARTBEAT_SECONDS)),
            held_back: 0,
            pause: Pause::default(),
        }
    }

    /// This tab's own topics, event names and presence topics (none while it left the stream).
    fn own_want(&self) -> StreamKey {
        if self.pause.away() {
            return StreamKey::default();
        }
        let shows_presence = |s: &&Subscriber| s.names.contains(&PRESENCE_STATE_EVENT);
        StreamKey {
            topics: self.subscribers.values().map(|s| s.topic.clone()).collect(),
            names: self.subscribers.values().flat_map(|s| s.names.iter().map(|n| n.to_string())).collect(),
            presence: self.subscribers.values().filter(shows_presence).map(|s| s.topic.clone()).collect(),
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
        watch(key);
    }
    HUBS.with_borrow_mut(|hubs| f(hubs.get_mut(key).expect("made above")))
}

/// Links a new hub to the other tabs of this browser: follows the leading tab, and asks to lead
/// in its turn. Stays [`Role::Solo`] where the browser cannot share.
fn join_other_tabs(key: &HubKey) {
    if !tabs::supported() {
        return;
    }
    let name = lock_name(key);
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
    let in_hub = |key: &HubKey, f: &dyn Fn(&mut Sharing)| {
        HUBS.with_borrow_mut(|hubs| f(&mut hubs.get_mut(key).expect("just made").sharing))
    };
    let link = RefCell::new(Some(link));
    in_hub(key, &|sharing| sharing.link(link.take().expect("once")));
    if let Err(e) = ask_to_lead(key, false) {
        leptos::logging::warn!("use_sse: cannot take part in the election, keeping a stream of this tab: {e:?}");
        in_hub(key, &Sharing::unlink);
        return;
    }
    {
        let key = key.clone();
        tabs::on_page_hide(move || with_hub(&key, |hub| hub.sharing.leave()));
    }
    let key = key.clone();
    let tick = leptos::leptos_dom::helpers::set_interval_with_handle(move || on_tick(&key), tabs::ANNOUNCE_EVERY);
    if let Err(e) = tick {
        leptos::logging::warn!("use_sse: no timer for the other tabs: {e:?}");
    }
}

/// The Web Lock whose holder leads the tabs of `key`'s stream.
fn lock_name(key: &HubKey) -> String {
    format!("leptos-sse-notify:{}:{}", key.path, key.with_credentials)
}

/// Asks for the lock (`steal`: now, from a leader gone silent): this tab leads once granted,
/// and follows again if another tab takes it over.
fn ask_to_lead(key: &HubKey, steal: bool) -> Result<(), JsValue> {
    let (granted, lost) = (key.clone(), key.clone());
    tabs::request_leadership(&lock_name(key), steal, move || become_leader(&granted), move || step_down(&lost))
}

/// Watches, every second, the leader (a follower) or the stream (the tab that holds it), and
/// checks both at once when the page comes back (shown, restored, resumed, online).
fn watch(key: &HubKey) {
    let every = {
        let key = key.clone();
        leptos::leptos_dom::helpers::set_interval_with_handle(move || on_beat(&key), tabs::BEAT_EVERY)
    };
    if let Err(e) = every {
        leptos::logging::warn!("use_sse: no timer to watch the stream: {e:?}");
    }
    let key = key.clone();
    tabs::on_page_back(move || {
        crate::recover::came_back();
        on_beat(&key);
        // The browser may be waiting out `retry:` on a stream that dropped while the page was
        // away, or have given it up: reopen it now.
        let stuck = with_hub(&key, |hub| {
            hub.sharing.role != Role::Follower
                && hub.stream.as_ref().is_some_and(|s| s.reconnecting() || s.gave_up().is_some())
        });
        if stuck {
            reopen(&key);
        }
    });
}

/// The leader says it runs; a follower whose leader went silent takes the lock over; the tab
/// that holds the stream reopens it if it went silent past the server's heartbeat.
fn on_beat(key: &HubKey) {
    let paused = with_hub(key, |hub| hub.pause.check(tabs::page_visible(), tabs::now_ms(), &hub.last_event_id));
    match paused {
        Some(true) => {
            // A follower's topics are no longer streamed for it: not `live` (the leader says
            // what the stream is when this tab asks for its topics again). The tab that holds
            // the stream says what it is: still live for the others, or closed.
            if with_hub(key, |hub| hub.sharing.role == Role::Follower) {
                signals(key).0.set(ConnectionStatus::Connecting);
            }
            return schedule_sync(key);
        }
        Some(false) => schedule_sync(key),
        None => {}
    }
    let (leader, dead, held) = with_hub(key, |hub| {
        let leader = hub.sharing.beat();
        let holds = hub.sharing.role != Role::Follower;
        let dead = holds && hub.stream.as_ref().is_some_and(OpenStream::dead);
        let held = holds && hub.stream.as_ref().is_some_and(|s| s.held_back(hub.expected_heartbeat));
        if holds && !hub.carriage.polls && hub.liveness.heard_since_open() {
            hub.held_back = 0; // a stream that carries: the ones held back were not in a row
        }
        if held {
            hub.held_back += 1;
            if hub.held_back >= HELD_BACK_TO_POLL {
                hub.carriage.polls = true;
            }
        }
        (leader, dead, held)
    });
    if leader == LeaderCheck::Silent {
        take_over(key);
    }
    if held {
        leptos::logging::warn!(
            "use_sse: the stream opened but nothing came through (a proxy that buffers?); reopening it"
        );
        reopen(key);
    } else if dead {
        leptos::logging::warn!("use_sse: the stream went silent past the server's heartbeat; reopening it");
        reopen(key);
    }
}

/// Streams in a row that open and then say nothing before the tab polls instead.
const HELD_BACK_TO_POLL: u32 = 2;

/// The leading tab went silent (frozen in the background, or hung): this tab takes the lock
/// from it and opens the stream from its own cursor; until then it is not `live`.
fn take_over(key: &HubKey) {
    leptos::logging::warn!("use_sse: the tab holding the stream went silent; taking it over");
    signals(key).0.set(ConnectionStatus::Connecting);
    if let Err(e) = ask_to_lead(key, true) {
        leptos::logging::warn!("use_sse: cannot take the stream over: {e:?}");
        with_hub(key, |hub| hub.sharing.take_over_failed());
    }
}

/// Another tab took the lock (this one was frozen or hung): it closes its stream and follows,
/// queues for the lock again, and refetches, since what came while it was frozen may not have
/// reached it.
fn step_down(key: &HubKey) {
    let stream = with_hub(key, |hub| {
        if hub.sharing.role != Role::Leader {
            return None;
        }
        hub.sharing.step_down();
        Some(hub.stream.take())
    });
    let Some(stream) = stream else { return };
    if let Some(stream) = stream {
        stream.close();
    }
    if let Err(e) = ask_to_lead(key, false) {
        leptos::logging::warn!("use_sse: cannot queue for the stream again: {e:?}");
    }
    resync(key, None);
    schedule_sync(key);
}

/// Closes the stream and opens it again from the cursor.
fn reopen(key: &HubKey) {
    if let Some(stream) = with_hub(key, |hub| hub.stream.take()) {
        stream.close();
    }
    set_status(key, ConnectionStatus::Connecting);
    schedule_sync(key);
}

/// This tab now holds the lock: it opens the stream for every tab, from the newest cursor it has
/// seen (the old leader's frames carried it), and asks the others what they want.
fn become_leader(key: &HubKey) {
    with_hub(key, |hub| hub.sharing.lead());
    let key = key.clone();
    set_timeout(move || schedule_sync(&key), tabs::GATHER_WANTS);
}

fn on_tick(key: &HubKey) {
    if with_hub(key, |hub| hub.sharing.tick()) {
        schedule_sync(key);
    }
}

fn on_tab_message(key: &HubKey, msg: TabMessage) {
    let from_leader = matches!(
        msg,
        TabMessage::Leader
            | TabMessage::Beat
            | TabMessage::Frame { .. }
            | TabMessage::Status { .. }
            | TabMessage::Error { .. }
            | TabMessage::Resync { .. }
    );
    let role = with_hub(key, |hub| {
        if from_leader {
            hub.sharing.heard_leader();
        }
        hub.sharing.role
    });
    // A leader that hears another's beat does not step down for it: the lock decides. The beat
    // may be a frozen leader's, woken and not yet told it lost the lock (it is told at once, and
    // steps down itself); stepping down for it left no tab holding the stream.
    match (role, msg) {
        (Role::Leader, TabMessage::Want { tab, topics, names, presence, since }) => {
            let want = StreamKey {
                topics: topics.into_iter().collect(),
                names: names.into_iter().collect(),
                presence: presence.into_iter().collect(),
            };
            with_hub(key, |hub| {
                // Presence the stream already has: a tab that joins it gets the state now (the
                // server sends it when the stream opens, which may have been long ago).
                for state in hub.rosters.states(&want.presence) {
                    let (name, data) = (state.name().to_owned(), state.to_json());
                    hub.sharing.send(&TabMessage::Frame { name, data, id: String::new(), topics: Vec::new() });
                }
                hub.sharing.add_peer(tab, want, since);
                hub.sharing.send(&TabMessage::Status { status: hub.status.get_untracked() });
            });
            schedule_sync(key);
        }
        (Role::Leader, TabMessage::Bye { tab }) => {
            with_hub(key, |hub| hub.sharing.remove_peer(&tab));
            schedule_sync(key);
        }
        (Role::Follower, TabMessage::Leader) => {
            with_hub(key, |hub| hub.sharing.forget_announced());
            schedule_sync(key);
        }
        (Role::Follower, TabMessage::Frame { name, data, id, topics }) => {
            if !id.is_empty() {
                with_hub(key, |hub| hub.last_event_id = Some(id.clone()));
            }
            dispatch(key, &name, &data, &id, &topics);
        }
        // A tab that left the stream is not told `live` by the leader that streams for others.
        (Role::Follower, TabMessage::Status { status }) => {
            if with_hub(key, |hub| !hub.pause.away()) {
                signals(key).0.set(status)
            }
        }
        (Role::Follower, TabMessage::Resync { topics }) => resync(key, topics.as_deref()),
        (Role::Follower, TabMessage::Error { error }) => show_error(key, error),
        _ => {}
    }
}

/// How the stream of `key` is carried, as a subscriber's options say: the app's headers (sent
/// by polls), always polls, and the server's heartbeat interval.
pub(crate) fn configure(
    key: &HubKey,
    headers: Option<Headers>,
    heartbeat: Option<Duration>,
    pause_when_hidden: Option<Duration>,
) {
    with_hub(key, |hub| {
        if pause_when_hidden.is_some() {
            hub.pause.after = pause_when_hidden;
        }
        hub.carriage.polls |= key.polled;
        if headers.is_some() {
            hub.carriage.headers = headers;
        }
        hub.expected_heartbeat = heartbeat;
    });
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

/// What a sync leaves to do with the hub released.
struct Synced {
    status: Option<ConnectionStatus>,
    /// This tab's subscribers refetch (they let frames by while away).
    refetch_own: bool,
}

fn sync(key: &HubKey) {
    let synced = with_hub(key, |hub| {
        hub.sync_scheduled = false;
        let wanted = hub.own_want();
        // Back from a pause: this tab's topics resume from where it left, unless the stream
        // carried them all along (for another tab).
        let streamed = hub.stream.as_ref().map(|s| &s.key().topics);
        let mut since = hub.last_event_id.clone();
        let mut refetch_own = false;
        if let Some(left_at) = hub.pause.resume_from.take() {
            if std::mem::take(&mut hub.pause.missed) {
                // The stream went on for another tab, and this one let its frames by.
                refetch_own = true;
            } else if !streamed.is_some_and(|s| wanted.topics.is_subset(s)) {
                since = decode::older(since, left_at.as_ref());
            }
        }
        if hub.sharing.role == Role::Follower {
            // The leader holds the stream: tell it what this tab wants, when that changes.
            hub.sharing.announce(wanted, since);
            return Synced { status: None, refetch_own };
        }
        let (wanted, since) = hub.sharing.union(wanted, since, streamed);
        if hub.stream.as_ref().is_some_and(|s| *s.key() == wanted) {
            return Synced { status: None, refetch_own };
        }
        let closed = hub.stream.take().map(|old| old.close()).is_some();
        if wanted.topics.is_empty() {
            // No stream now: not `live`.
            return Synced { status: closed.then_some(ConnectionStatus::Connecting), refetch_own };
        }
        let (liveness, carriage) = (hub.liveness.clone(), &hub.carriage);
        let opened = OpenStream::open(
            &key.path,
            key.with_credentials,
            wanted,
            since.as_deref(),
            handlers(key),
            liveness,
            carriage,
        );
        let status = match opened {
            Ok(stream) => {
                hub.stream = Some(stream);
                ConnectionStatus::Connecting
            }
            Err(e) => {
                leptos::logging::error!("use_sse: cannot open EventSource: {e:?}");
                ConnectionStatus::Offline
            }
        };
        Synced { status: Some(status), refetch_own }
    });
    if let Some(status) = synced.status {
        set_status(key, status);
    }
    if synced.refetch_own {
        refetch_own(key);
    }
}

/// Bumps the version of every subscriber of this tab (none of the others').
fn refetch_own(key: &HubKey) {
    let callbacks: Vec<_> = with_hub(key, |hub| hub.subscribers.values().map(|s| s.on_resync.clone()).collect());
    for cb in callbacks {
        cb();
    }
}

/// What the stream of `key` does with what it hears.
fn handlers(key: &HubKey) -> Handlers {
    let on_frame = {
        let key = key.clone();
        Rc::new(move |name: &str, data: &str, id: &str, topics: &Rc<Vec<Topic>>| {
            remember_cursor(&key, id);
            with_hub(&key, |hub| {
                hub.sharing.tell_followers(|| TabMessage::Frame {
                    name: name.to_owned(),
                    data: data.to_owned(),
                    id: id.to_owned(),
                    topics: topics.to_vec(),
                })
            });
            dispatch(&key, name, data, id, topics);
        })
    };
    let on_resync = {
        let key = key.clone();
        Rc::new(move |id: &str, named: Option<Vec<String>>| {
            remember_cursor(&key, id);
            resync(&key, named.as_deref());
        })
    };
    let on_open = {
        let key = key.clone();
        Rc::new(move |refetch: bool| {
            crate::recover::came_back();
            set_status(&key, ConnectionStatus::Live);
            // Polls that replaced a stream held back on the way say why, for as long as they run.
            let held_back = with_hub(&key, |hub| (hub.held_back >= HELD_BACK_TO_POLL).then_some(SseError::HeldBack));
            set_error(&key, held_back);
            if refetch {
                resync(&key, None);
            }
        })
    };
    let on_error = {
        let key = key.clone();
        Rc::new(move || {
            set_status(&key, ConnectionStatus::Offline);
            let gave_up = with_hub(&key, |hub| hub.stream.as_ref().and_then(OpenStream::gave_up));
            // The browser only retries network drops; after an HTTP error it stops. Find out
            // why (EventSource does not say; polls kept the answer), then retry ourselves.
            if let Some(gave_up) = gave_up {
                match gave_up {
                    GaveUp::Ask(url) => {
                        let diagnosed = key.clone();
                        leptos::task::spawn_local(async move {
                            let error = stream::diagnose(&url, diagnosed.with_credentials).await;
                            set_error(&diagnosed, error);
                        });
                    }
                    GaveUp::Known(error) => set_error(&key, error),
                }
                let key = key.clone();
                set_timeout(
                    move || {
                        with_hub(&key, |hub| {
                            if hub.stream.as_ref().is_some_and(|s| s.gave_up().is_some()) {
                                hub.stream = None;
                            }
                        });
                        schedule_sync(&key);
                    },
                    REOPEN_AFTER,
                );
            }
        })
    };
    Handlers { on_frame, on_resync, on_open, on_error }
}

/// Signals are set with the hub released: whatever reacts may subscribe or unsubscribe. The
/// leader tells the other tabs too.
fn set_status(key: &HubKey, status: ConnectionStatus) {
    with_hub(key, |hub| hub.sharing.tell_followers(|| TabMessage::Status { status }));
    signals(key).0.set(status);
}

fn set_error(key: &HubKey, error: Option<SseError>) {
    with_hub(key, |hub| hub.sharing.tell_followers(|| TabMessage::Error { error: error.clone() }));
    show_error(key, error);
}

/// Sets this tab's error signal (when it changes).
fn show_error(key: &HubKey, error: Option<SseError>) {
    let signal = signals(key).1;
    if signal.get_untracked() != error {
        // Once per new problem, in the console too: a page that shows no error still says why
        // it is not live where its developer looks.
        if let Some(error) = &error {
            leptos::logging::warn!("use_sse ({}): {error}", key.path);
        }
        signal.set(error);
    }
}

/// Bumps the version of every subscriber of `topics` (all of them for `None`); called with the
/// hub released.
fn resync(key: &HubKey, topics: Option<&[String]>) {
    let callbacks: Vec<_> = with_hub(key, |hub| {
        hub.sharing.tell_followers(|| TabMessage::Resync { topics: topics.map(<[String]>::to_vec) });
        let named: Vec<_> = hub
            .subscribers
            .values()
            .filter(|s| topics.is_none_or(|t| t.iter().any(|t| t == s.topic.as_str())))
            .map(|s| s.on_resync.clone())
            .collect();
        hub.pause.hand_over(named)
    });
    for cb in callbacks {
        cb();
    }
}

/// Who is on `topic`, once the stream said (`None` before its `presence:state` or `count`).
pub(crate) fn presence(key: &HubKey, topic: &str) -> Option<Roster> {
    with_hub(key, |hub| hub.rosters.roster(topic))
}

/// Moves whenever the presence of any topic of `key`'s stream changes.
pub(crate) fn presence_changed(key: &HubKey) -> ArcRwSignal<u64> {
    with_hub(key, |hub| hub.rosters.changed())
}

/// Applies a `presence:*` frame; the signal is moved with the hub released.
fn apply_presence(key: &HubKey, name: &str, data: &str) {
    let Some(frame) = PresenceFrame::decode(name, data) else {
        leptos::logging::warn!("use_presence: a {name} frame that is not one: {data}");
        return;
    };
    if let Some(signal) = with_hub(key, |hub| hub.rosters.apply(&frame)) {
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
        let named: Vec<_> = hub
            .subscribers
            .values()
            .filter(|s| s.names.contains(&name))
            .filter(|s| matched.as_ref().is_none_or(|m| m.contains(&&s.topic)))
            .map(|s| s.on_event.clone())
            .collect();
        hub.pause.hand_over(named)
    });
    // Called with the hub released: a callback may mount or unmount components.
    for cb in callbacks {
        cb(name, data, id, matched.is_some());
    }
}

/// Remembers a frame's id as the stream's cursor (frames without one leave it alone).
fn remember_cursor(key: &HubKey, id: &str) {
    if !id.is_empty() {
        with_hub(key, |hub| hub.last_event_id = Some(id.to_owned()));
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
        HubKey { path: format!("/hub-test/{test}"), with_credentials: false, polled: false }
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
    fn a_page_hidden_past_the_pause_leaves_at_its_cursor_and_comes_back_from_it() {
        let cursor = |s: &str| Some(s.to_owned());
        let mut off = Pause::default();
        assert_eq!(off.check(false, 1e9, &cursor("a")), None, "no pause asked: never leaves");
        let mut pause = Pause { after: Some(Duration::from_secs(60)), ..Pause::default() };
        assert_eq!(pause.check(false, 0.0, &cursor("a")), None);
        assert_eq!(pause.check(false, 59_999.0, &cursor("b")), None, "hidden less than the pause");
        assert_eq!(pause.check(false, 60_000.0, &cursor("c")), Some(true));
        assert_eq!(pause.check(false, 90_000.0, &cursor("d")), None, "leaves once");
        assert_eq!(pause.check(true, 95_000.0, &cursor("e")), Some(false));
        assert_eq!(pause.resume_from, Some(cursor("c")), "resumes from where it left");
        assert_eq!(pause.check(true, 96_000.0, &cursor("f")), None);
        // Shown before the pause ran out: the clock starts again when it hides again.
        assert_eq!(pause.check(false, 100_000.0, &cursor("g")), None);
        assert_eq!(pause.check(true, 150_000.0, &cursor("g")), None);
        assert_eq!(pause.check(false, 160_000.0, &cursor("g")), None);
        assert_eq!(pause.check(false, 219_999.0, &cursor("g")), None);
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
        let (mine, theirs) = (tagged(crate::origin::tab_origin()), tagged("someoneElse"));
        assert!(crate::origin::is_own_echo(&mine));
        assert!(!crate::origin::is_own_echo(&theirs) && !crate::origin::is_own_echo(&plain));
        // Whoever read this tab's ids and sends their tag back as its own origin writes events
        // that are not this tab's echo.
        let read_tag = sse_notify_core::cursor::echo_tag_of(&mine).unwrap().to_owned();
        assert!(!crate::origin::is_own_echo(&tagged(&read_tag)));
        assert!(!mine.contains(crate::origin::tab_origin()), "the id never shows the origin");
        assert_eq!(crate::origin::tab_origin().len(), 16);
        assert!(sse_notify_core::origin::is_origin(crate::origin::tab_origin()));
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
        with_hub(&key, |hub| hub.sharing.role = Role::Leader);
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
        let url = with_hub(&key, |hub| hub.stream.as_ref().map(|s| s.url().to_owned())).expect("a stream");
        assert!(url.contains("mine") && url.contains("theirs"), "one stream for both tabs' topics: {url}");
        on_tab_message(&key, TabMessage::Bye { tab: "other".into() });
        a_moment().await;
        let url = with_hub(&key, |hub| hub.stream.as_ref().map(|s| s.url().to_owned())).expect("a stream");
        assert!(url.contains("mine") && !url.contains("theirs"), "the tab that left is out of it: {url}");
    }
}
