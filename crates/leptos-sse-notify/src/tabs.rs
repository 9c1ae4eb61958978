//! One stream per browser, not per tab: the tabs of one origin elect a leader that holds the
//! EventSource, and the others follow it over a `BroadcastChannel`.
//!
//! HTTP/1.1 gives a browser six connections per origin. A stream per tab would hold all six at
//! six tabs, and every fetch and server function of the app would then wait forever. So:
//!
//! - **Election**: a Web Lock (`navigator.locks`) named after the stream; the tab that holds it
//!   leads. The browser releases it when that tab closes or crashes, and grants it to the next
//!   waiting tab at once, which is the hand-over.
//! - **Followers** announce what their components want (`want`: topics, event names and the
//!   cursor they start from) when it changes and every few seconds; the leader's stream follows
//!   the union of every tab's topics, and forgets a tab that said `bye` or went quiet.
//! - **The leader** sends every frame it receives to the other tabs (`frame`: name, data, id, and
//!   the stream's topic list, so each tab reads the cursor's mask itself), its status and its
//!   resyncs. Every tab keeps the cursor, so a new leader resumes exactly where the old one was.
//!
//! Where the browser has no Web Locks or BroadcastChannel, each tab keeps its own stream.
//!
//! Written against the browser APIs directly (leptos-use has a BroadcastChannel hook but no
//! Web Locks, and the election and the stream must be one piece); `navigator.locks` is called
//! through `js_sys::Reflect` because web-sys exposes it only behind its unstable-APIs flag.

use wasm_bindgen::prelude::*;
use web_sys::{BroadcastChannel, MessageEvent};

pub(crate) use crate::decode::TabMessage;

/// How often followers repeat their `want` (and the leader forgets quiet tabs).
pub(crate) const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(20);
/// A follower not heard from for this long is gone (its tab crashed without a `bye`). Long,
/// because browsers run a hidden tab's timers as rarely as once a minute; a tab that closes
/// says `bye` and is forgotten at once.
pub(crate) const FORGET_AFTER_MS: f64 = 180_000.0;
/// How long a new leader waits for the other tabs' `want` before opening the stream, so that it
/// opens once for all of them rather than once for itself and again for the rest.
pub(crate) const GATHER_WANTS: std::time::Duration = std::time::Duration::from_millis(100);
/// How often the leader says it runs, and each tab checks on its stream or its leader.
pub(crate) const BEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A leader not heard from for this long is frozen or hung, for a tab the user sees: it takes
/// the lock over.
pub(crate) const LEADER_SILENT_MS: f64 = 3_000.0;
/// The same for a hidden tab, whose own timers a browser may run once a minute: only a leader
/// gone quiet for longer than that is taken over from the background.
pub(crate) const LEADER_SILENT_HIDDEN_MS: f64 = 180_000.0;

/// The channel to the other tabs of this stream.
pub(crate) struct TabLink {
    channel: BroadcastChannel,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl TabLink {
    /// Opens the channel `name` and calls `on_message` with each message of the other tabs.
    pub(crate) fn open(name: &str, mut on_message: impl FnMut(TabMessage) + 'static) -> Result<Self, JsValue> {
        let channel = BroadcastChannel::new(name)?;
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else { return };
            match crate::decode::tab_message(&text) {
                Ok(msg) => on_message(msg),
                Err(e) => leptos::logging::warn!("use_sse: ignoring a message from another tab: {e}"),
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Ok(Self { channel, _on_message: on_message })
    }

    /// Sends `msg` to every other tab (a tab does not receive its own messages).
    pub(crate) fn send(&self, msg: &TabMessage) {
        let text = serde_json::to_string(msg).expect("tab messages serialize");
        if let Err(e) = self.channel.post_message(&JsValue::from_str(&text)) {
            leptos::logging::warn!("use_sse: cannot reach the other tabs: {e:?}");
        }
    }
}

impl Drop for TabLink {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
    }
}

/// Whether this browser can share a stream between tabs.
pub(crate) fn supported() -> bool {
    let global = js_sys::global();
    let has = |target: &JsValue, name: &str| {
        js_sys::Reflect::get(target, &JsValue::from_str(name)).is_ok_and(|v| !v.is_undefined() && !v.is_null())
    };
    let Ok(navigator) = js_sys::Reflect::get(&global, &JsValue::from_str("navigator")) else { return false };
    has(&navigator, "locks") && has(&global, "BroadcastChannel")
}

/// Asks for the Web Lock `name` (with `steal`, takes it from the tab that holds it); calls
/// `on_granted` once this tab holds it, which it then keeps until the tab goes (the browser
/// releases it then) or another tab steals it (then `on_lost` is called, as soon as this tab
/// runs again: a frozen leader learns it on waking).
pub(crate) fn request_leadership(
    name: &str,
    steal: bool,
    on_granted: impl FnOnce() + 'static,
    on_lost: impl FnOnce() + 'static,
) -> Result<(), JsValue> {
    let global = js_sys::global();
    let navigator = js_sys::Reflect::get(&global, &JsValue::from_str("navigator"))?;
    let locks = js_sys::Reflect::get(&navigator, &JsValue::from_str("locks"))?;
    let request: js_sys::Function = js_sys::Reflect::get(&locks, &JsValue::from_str("request"))?.dyn_into()?;
    let mut on_granted = Some(on_granted);
    let granted = Closure::<dyn FnMut(JsValue) -> js_sys::Promise>::new(move |_lock: JsValue| {
        if let Some(f) = on_granted.take() {
            f();
        }
        // Held until the tab goes: a promise that never settles.
        js_sys::Promise::new(&mut |_, _| {})
    });
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &JsValue::from_str("steal"), &JsValue::from_bool(steal))?;
    let held: js_sys::Promise =
        request.call3(&locks, &JsValue::from_str(name), &options, granted.as_ref().unchecked_ref())?.dyn_into()?;
    // The lock manager keeps the callback until it runs; it runs at most once per request.
    granted.forget();
    // The request's promise settles only when the lock is let go without the tab going: it
    // was stolen (an `AbortError`).
    let mut on_lost = Some(on_lost);
    let lost = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(f) = on_lost.take() {
            f();
        }
    });
    let _ = held.catch(&lost);
    lost.forget();
    Ok(())
}

/// Whether the user sees this page now.
pub(crate) fn page_visible() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_none_or(|d| d.visibility_state() == web_sys::VisibilityState::Visible)
}

/// Calls `f` whenever the page may just have come back (shown again, restored from the
/// back/forward cache, resumed from a freeze, back online), for the rest of the page's life.
pub(crate) fn on_page_back(f: impl FnMut() + 'static) {
    let Some(window) = web_sys::window() else { return };
    let f = std::rc::Rc::new(std::cell::RefCell::new(f));
    let listener = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        if page_visible() {
            (f.borrow_mut())();
        }
    });
    let target: &web_sys::EventTarget = window.as_ref();
    for event in ["pageshow", "online", "focus"] {
        let _ = target.add_event_listener_with_callback(event, listener.as_ref().unchecked_ref());
    }
    if let Some(document) = window.document() {
        for event in ["visibilitychange", "resume"] {
            let _ = document.add_event_listener_with_callback(event, listener.as_ref().unchecked_ref());
        }
    }
    // Lives as long as the page.
    listener.forget();
}

/// Calls `f` when the page is going away (`pagehide`), for the rest of the page's life.
pub(crate) fn on_page_hide(f: impl FnMut() + 'static) {
    let Some(window) = web_sys::window() else { return };
    let mut f = f;
    let listener = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| f());
    if window.add_event_listener_with_callback("pagehide", listener.as_ref().unchecked_ref()).is_ok() {
        // Lives as long as the page.
        listener.forget();
    }
}

/// Milliseconds since the epoch, for forgetting quiet tabs.
pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}
