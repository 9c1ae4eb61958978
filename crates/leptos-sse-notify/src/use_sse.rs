//! [`use_sse`]: a component's subscription to a topic of the tab's shared stream, as signals.

use leptos::prelude::*;
use sse_notify_core::{SseEvent, Topic, DEFAULT_EVENTS_PATH};

use crate::fetch::RequestHeaders;
#[cfg(feature = "browser")]
use crate::hub;
#[cfg(feature = "browser")]
use crate::origin;
use crate::status::{ConnectionStatus, SseError};

/// How [`use_sse_with_options`] connects (and the other hooks: their `_with_options` forms
/// take the same options).
///
/// Options given to a hook are laid over the app's own, given once with
/// [`provide_sse_options`], which are laid over the defaults: a frontend whose API is on another
/// origin says so in one place, and a hook that only adds `jitter` keeps it.
///
/// ```
/// use leptos_sse_notify::UseSseOptions;
/// use std::time::Duration;
/// let app = UseSseOptions::default().events_path("https://api.example.com/events").with_credentials(true);
/// let this_hook = UseSseOptions::default().jitter(Duration::from_millis(500));
/// // What the hook uses: the app's path and credentials, its own jitter.
/// # let _ = (app, this_hook);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UseSseOptions {
    events_path: Option<String>,
    with_credentials: Option<bool>,
    jitter: Option<std::time::Duration>,
    echo: Option<bool>,
    headers: Option<RequestHeaders>,
    long_poll: Option<bool>,
    heartbeat: Option<Option<std::time::Duration>>,
    pause_when_hidden: Option<Option<std::time::Duration>>,
}

/// Gives every hook below the calling component (normally the app's root) these options, under
/// the ones a hook is given itself: where the events are (another origin, with credentials),
/// the bearer token, the server's heartbeat, and the rest. The hooks read them when they are
/// called; the data fetches of [`use_live_json`](crate::use_live_json) and
/// [`use_live_list`](crate::use_live_list) send the same credentials and headers.
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{provide_sse_options, UseSseOptions};
///
/// #[component]
/// fn App() -> impl IntoView {
///     // The API, and its events, are on another origin that takes this page's cookies.
///     provide_sse_options(UseSseOptions::default().events_path("https://api.example.com/events").with_credentials(true));
///     view! { <main>"..."</main> }
/// }
/// ```
pub fn provide_sse_options(options: UseSseOptions) {
    provide_context(AppOptions(options));
}

/// The app's options in context ([`provide_sse_options`]).
#[derive(Clone)]
struct AppOptions(UseSseOptions);

/// Options with every choice made: a hook's, over the app's, over the defaults.
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
#[derive(Clone, Debug)]
pub(crate) struct StreamOptions {
    pub(crate) events_path: String,
    pub(crate) with_credentials: bool,
    pub(crate) jitter: std::time::Duration,
    pub(crate) echo: bool,
    pub(crate) headers: Option<RequestHeaders>,
    pub(crate) long_poll: bool,
    pub(crate) heartbeat: Option<std::time::Duration>,
    pub(crate) pause_when_hidden: Option<std::time::Duration>,
}

impl UseSseOptions {
    /// The stream endpoint's path or URL (default `/events`). Calls with the same path and
    /// credentials setting share one EventSource.
    pub fn events_path(mut self, path: impl Into<String>) -> Self {
        self.events_path = Some(path.into());
        self
    }

    /// Sends cookies with the stream request to another origin (EventSource `withCredentials`),
    /// and with the data fetches of [`use_live_json`](crate::use_live_json) and
    /// [`use_live_list`](crate::use_live_list) (`credentials: "include"`), for an API on another
    /// host; the server must list this page's origin in `CORS_ORIGINS`.
    pub fn with_credentials(mut self, yes: bool) -> Self {
        self.with_credentials = Some(yes);
        self
    }

    /// Spreads the refetch wave of a popular page: [`SseSignal::version`] moves a random time of
    /// up to `jitter` after an event instead of at once (events meanwhile move it once), so a
    /// thousand tabs do not refetch in the same millisecond, and a burst of changes costs one
    /// refetch. Zero (the default): at once. `latest` and `last_event_id` move at once.
    pub fn jitter(mut self, jitter: std::time::Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Whether events of this tab's own writes move [`SseSignal::version`] too. By default
    /// (`false`) they do not: the tab that made a change holds it from its write's answer (see
    /// [`OriginClient`](crate::OriginClient)); `latest` and `last_event_id` still move, so the cursor goes on. Other
    /// tabs, of this browser too, are not this tab.
    pub fn echo(mut self, yes: bool) -> Self {
        self.echo = Some(yes);
        self
    }

    /// Sends these headers with the stream's requests (an `Authorization` token), asking
    /// `headers` for them before each request, so a refreshed token goes with the next one;
    /// the data fetches of [`use_live_json`](crate::use_live_json) and
    /// [`use_live_list`](crate::use_live_list) send them too.
    /// EventSource cannot send headers: the stream is then carried by polls
    /// (`GET /events?..&poll=25`, with `fetch`), which keep its cursor and frames; the server's
    /// `authorize` hook sees the headers. Shared across the tabs like any stream. Cross-origin,
    /// the server's CORS must allow the headers.
    ///
    /// ```
    /// use leptos_sse_notify::UseSseOptions;
    /// let options = UseSseOptions::default()
    ///     .events_path("https://api.example.com/events")
    ///     .headers(|| vec![("authorization".to_owned(), format!("Bearer {}", "token-of-now"))]);
    /// # let _ = options;
    /// ```
    pub fn headers(mut self, headers: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static) -> Self {
        self.headers = Some(RequestHeaders(std::sync::Arc::new(headers)));
        self
    }

    /// Carries the stream by polls from the start, rather than by an EventSource, for a proxy
    /// known to hold a response back until it ends. (A tab finds such a proxy by itself after two
    /// streams that opened and said nothing, and polls then; see [`UseSseOptions::heartbeat`].)
    pub fn long_poll(mut self, yes: bool) -> Self {
        self.long_poll = Some(yes);
        self
    }

    /// The server's heartbeat interval (`SSE_HEARTBEAT_SECONDS`; 30 s by default, `None` when
    /// it is off). A stream that opens and then says nothing for two of them and 3 s is held
    /// back on the way: after two such, the tab polls instead and says why
    /// ([`SseError::HeldBack`]). With `None` a silent stream is taken for a quiet one.
    pub fn heartbeat(mut self, every: Option<std::time::Duration>) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// Lets a page that stays hidden longer than `after` (a background tab, a phone's locked
    /// screen) leave the stream: its topics are dropped from it, and when no tab of the browser
    /// wants any the connection closes, saving the radio and the server's connection. When the
    /// page is shown again it resumes from the cursor it had when it left: what was published
    /// meanwhile is replayed (or, if the server no longer has it, refetched), nothing is
    /// missed. Off by default (`None`): a hidden page keeps its stream.
    ///
    /// ```
    /// use leptos_sse_notify::UseSseOptions;
    /// use std::time::Duration;
    /// let options = UseSseOptions::default().pause_when_hidden(Some(Duration::from_secs(5 * 60)));
    /// # let _ = options;
    /// ```
    pub fn pause_when_hidden(mut self, after: Option<std::time::Duration>) -> Self {
        self.pause_when_hidden = Some(after);
        self
    }

    /// These options laid over `under`: what these leave unset, `under` says.
    fn over(self, under: UseSseOptions) -> UseSseOptions {
        UseSseOptions {
            events_path: self.events_path.or(under.events_path),
            with_credentials: self.with_credentials.or(under.with_credentials),
            jitter: self.jitter.or(under.jitter),
            echo: self.echo.or(under.echo),
            headers: self.headers.or(under.headers),
            long_poll: self.long_poll.or(under.long_poll),
            heartbeat: self.heartbeat.or(under.heartbeat),
            pause_when_hidden: self.pause_when_hidden.or(under.pause_when_hidden),
        }
    }

    /// These options over the app's ([`provide_sse_options`], read from the calling component's
    /// context) over the defaults.
    pub(crate) fn resolve(self) -> StreamOptions {
        let app = use_context::<AppOptions>().map(|a| a.0).unwrap_or_default();
        let o = self.over(app);
        StreamOptions {
            events_path: o.events_path.unwrap_or_else(|| DEFAULT_EVENTS_PATH.to_owned()),
            with_credentials: o.with_credentials.unwrap_or(false),
            jitter: o.jitter.unwrap_or_default(),
            echo: o.echo.unwrap_or(false),
            headers: o.headers,
            long_poll: o.long_poll.unwrap_or(false),
            heartbeat: o
                .heartbeat
                .unwrap_or(Some(std::time::Duration::from_secs(sse_notify_core::DEFAULT_HEARTBEAT_SECONDS))),
            pause_when_hidden: o.pause_when_hidden.flatten(),
        }
    }
}

impl StreamOptions {
    /// Which of the tab's shared streams these options follow.
    #[cfg(feature = "browser")]
    pub(crate) fn hub_key(&self) -> hub::HubKey {
        let polled = self.long_poll || self.headers.is_some();
        hub::HubKey { path: self.events_path.clone(), with_credentials: self.with_credentials, polled }
    }

    /// Tells the hub of `key` how its stream is carried.
    #[cfg(feature = "browser")]
    pub(crate) fn configure(&self, key: &hub::HubKey) {
        hub::configure(key, self.headers.clone(), self.heartbeat, self.pause_when_hidden);
    }

    /// How the data fetches that go with the stream are sent.
    pub(crate) fn fetch(&self) -> crate::fetch::FetchOptions {
        crate::fetch::FetchOptions { with_credentials: self.with_credentials, headers: self.headers.clone() }
    }
}

/// What [`use_sse`] returns.
pub struct SseSignal<E: Send + Sync + 'static> {
    /// The latest event received on the topic (None until one arrives).
    pub latest: ReadSignal<Option<E>>,
    /// Moves on every event of the topic, and when the server sends a `resync` naming it (events
    /// of the topic may have been missed); also once when the stream had to open without a
    /// cursor. A reconnect that missed nothing does not move it: key Resources on it. The
    /// events of this tab's own writes do not move it ([`UseSseOptions::echo`]).
    pub version: ReadSignal<u64>,
    /// The id (cursor) of the latest event of the topic; `None` before one and after a
    /// `resync`. Send it as the `Last-Event-ID` header of the refetch the event triggers: a
    /// read route behind the server's response cache then answers with data at least as new as
    /// the event, even from another instance ([`use_live_json`](crate::use_live_json) does this).
    pub last_event_id: ReadSignal<Option<String>>,
    /// The shared stream's status.
    pub status: Signal<ConnectionStatus>,
    /// The last problem: an HTTP refusal of the stream (cleared when it opens again) or a
    /// frame that did not decode.
    pub error: Signal<Option<SseError>>,
}

impl<E: Send + Sync + 'static> Clone for SseSignal<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Send + Sync + 'static> Copy for SseSignal<E> {}

/// Subscribes the current component to `topic` for events of type `E`, on the default stream
/// path; see [`use_sse_with_options`].
pub fn use_sse<E>(topic: impl Into<Signal<Topic>>) -> SseSignal<E>
where
    E: SseEvent + Clone + Send + Sync,
{
    use_sse_with_options(topic, UseSseOptions::default())
}

/// Subscribes the current component to `topic` for events of type `E`.
///
/// `topic` may be a plain [`Topic`] or any signal of one: when it changes, the subscription
/// follows it. The subscription ends when the component's owner is cleaned up. During server
/// rendering it reports `Connecting` and no event; the browser takes over after hydration.
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{use_sse_with_options, UseSseOptions};
/// use sse_notify_core::{sse_event, Topic, TopicBuilder};
///
/// sse_event! {
///     #[derive(Clone, Debug)]
///     pub enum DocEvent { Changed { id: u64 } = "doc:changed" }
///     topics(&self) { let DocEvent::Changed { id } = self; vec![TopicBuilder::custom("doc", id).unwrap()] }
/// }
///
/// #[component]
/// fn Doc(id: ReadSignal<u64>) -> impl IntoView {
///     let topic = Signal::derive(move || TopicBuilder::custom("doc", id.get()).unwrap());
///     let live = use_sse_with_options::<DocEvent>(
///         topic,
///         UseSseOptions::default().events_path("https://api.example.com/events").with_credentials(true),
///     );
///     view! { <p>{move || live.error.get().map(|e| e.to_string())}</p> }
/// }
/// ```
pub fn use_sse_with_options<E>(topic: impl Into<Signal<Topic>>, options: UseSseOptions) -> SseSignal<E>
where
    E: SseEvent + Clone + Send + Sync,
{
    use_sse_tapped(topic.into(), options.resolve(), None)
}

/// [`use_sse_with_options`], also calling `on_event` with every event of the topic, each one in
/// order: for what keeps a list of events (an inbox, a log), since [`SseSignal::latest`] is a
/// signal and keeps only the newest of events that arrive together (a replay after a reconnect,
/// a poll's answer). Not called for this tab's own writes unless [`UseSseOptions::echo`].
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{sse_event, use_sse_with_handler, Topic, UseSseOptions};
///
/// sse_event! {
///     #[derive(Clone, Debug)]
///     pub enum Reply { Posted { by: String } = "reply:posted" }
///     topics(&self) { vec![Topic::new("inbox").unwrap()] }
/// }
///
/// #[component]
/// fn Inbox() -> impl IntoView {
///     let replies = RwSignal::new(Vec::<Reply>::new());
///     use_sse_with_handler(Topic::new("inbox").unwrap(), UseSseOptions::default(), move |r: &Reply| {
///         replies.update(|all| all.push(r.clone()))
///     });
///     view! { <p>{move || replies.with(Vec::len)} " replies"</p> }
/// }
/// ```
pub fn use_sse_with_handler<E>(
    topic: impl Into<Signal<Topic>>,
    options: UseSseOptions,
    on_event: impl Fn(&E) + 'static,
) -> SseSignal<E>
where
    E: SseEvent + Clone + Send + Sync,
{
    let tap = Tap {
        on_event: std::rc::Rc::new(move |event: &E, _id: &str| on_event(event)),
        on_resync: std::rc::Rc::new(|| {}),
    };
    use_sse_tapped(topic.into(), options.resolve(), Some(tap))
}

/// Every matched event (with its id) and every resync of a subscription, for hooks that must
/// see each one rather than the latest ([`use_live_list`](crate::use_live_list) patches its list per event).
/// Called with each matched event and its id.
pub(crate) type TapEvent<E> = std::rc::Rc<dyn Fn(&E, &str)>;

#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) struct Tap<E> {
    pub(crate) on_event: TapEvent<E>,
    pub(crate) on_resync: std::rc::Rc<dyn Fn()>,
}

/// [`use_sse_with_options`], also calling `tap` for each event and resync.
pub(crate) fn use_sse_tapped<E>(topic: Signal<Topic>, options: StreamOptions, tap: Option<Tap<E>>) -> SseSignal<E>
where
    E: SseEvent + Clone + Send + Sync,
{
    let (latest, set_latest) = signal(None::<E>);
    let (version, set_version) = signal(0u64);
    let (last_event_id, set_last_event_id) = signal(None::<String>);
    let (decode_error, set_decode_error) = signal(None::<SseError>);
    let start = start_cursor();
    let echo = options.echo;

    #[cfg(feature = "browser")]
    let (status, error) = {
        let bump = version_bump(set_version, options.jitter);
        let key = options.hub_key();
        options.configure(&key);
        let (status, stream_error) = hub::signals(&key);
        hub::follow(&key, topic, start, move |topic| {
            let (bump_event, bump_resync) = (bump.clone(), bump.clone());
            let (tap_event, tap_resync) = match &tap {
                Some(t) => (Some(t.on_event.clone()), Some(t.on_resync.clone())),
                None => (None, None),
            };
            hub::Subscriber {
                topic: topic.clone(),
                names: E::NAMES,
                on_event: std::rc::Rc::new(move |name: &str, data: &str, id: &str, matched: bool| {
                    match E::decode(name, data) {
                        // The hub routed it by the frame's cursor (topics the publisher added
                        // included); without a cursor the event's own topics must say it.
                        Ok(event) if matched || event.topics().contains(&topic) => {
                            // This tab's own write: it holds the change already.
                            // (Asked first: it also notes the frame's position for the page's writes.)
                            let own = origin::is_own_echo(id) && !echo;
                            if let (Some(tap), false) = (&tap_event, own) {
                                tap(&event, id);
                            }
                            set_latest.try_set(Some(event));
                            set_last_event_id.try_set(Some(id.to_owned()).filter(|id| !id.is_empty()));
                            if !own {
                                bump_event();
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let error = SseError::Decode { event: name.to_owned(), message: e.to_string() };
                            leptos::logging::warn!("use_sse: {error}");
                            set_decode_error.try_set(Some(error));
                        }
                    }
                }),
                on_resync: std::rc::Rc::new(move || {
                    if let Some(tap) = &tap_resync {
                        tap();
                    }
                    set_last_event_id.try_set(None);
                    bump_resync();
                }),
            }
        });
        (
            Signal::derive(move || status.get()),
            Signal::derive(move || decode_error.get().or_else(|| stream_error.get())),
        )
    };

    #[cfg(not(feature = "browser"))]
    let (status, error) = {
        let _ = (topic, options, tap, set_latest, set_version, set_last_event_id, set_decode_error, start, echo);
        (Signal::stored(ConnectionStatus::Connecting), Signal::derive(move || decode_error.get()))
    };

    SseSignal { latest, version, last_event_id, status, error }
}

/// Moves `version` by one, at once or (with `jitter`) after a random delay of up to it, once for
/// every bump meanwhile.
#[cfg(feature = "browser")]
fn version_bump(set_version: WriteSignal<u64>, jitter: std::time::Duration) -> std::rc::Rc<dyn Fn()> {
    let waiting = std::rc::Rc::new(std::cell::Cell::new(false));
    std::rc::Rc::new(move || {
        if jitter.is_zero() {
            set_version.try_update(|v| *v += 1);
            return;
        }
        if waiting.replace(true) {
            return;
        }
        let waiting = waiting.clone();
        let delay = jitter.mul_f64(js_sys::Math::random());
        leptos::leptos_dom::helpers::set_timeout(
            move || {
                waiting.set(false);
                set_version.try_update(|v| *v += 1);
            },
            delay,
        );
    })
}

/// The cursor the server rendered this page from ([`sse_notify_core::cursor::StartCursor`], put in
/// the request by `sse_notify_axum::handoff::start_cursor`), carried to the browser in the
/// page's hydration data. `None` in a client-side-rendered app or without the middleware.
fn start_cursor() -> Option<String> {
    #[cfg(feature = "ssr")]
    let read = || {
        use_context::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<sse_notify_core::cursor::StartCursor>().map(|c| c.0.clone()))
    };
    #[cfg(not(feature = "ssr"))]
    let read = || None;
    SharedValue::new(read).into_inner()
}

/// The version's jitter in a real browser (headless Chromium through wasm-bindgen-test).
#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests {
    use super::*;
    use wasm_bindgen_test::*;

    wasm_bindgen_test_configure!(run_in_browser);

    async fn sleep(ms: i32) {
        let wait = js_sys::Promise::new(&mut |resolve, _| {
            web_sys::window().unwrap().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms).unwrap();
        });
        wasm_bindgen_futures::JsFuture::from(wait).await.unwrap();
    }

    #[wasm_bindgen_test]
    async fn with_jitter_a_burst_of_events_moves_the_version_once_and_later() {
        let (version, set_version) = signal(0u64);
        let bump = version_bump(set_version, std::time::Duration::from_millis(100));
        for _ in 0..5 {
            bump();
        }
        assert_eq!(version.get_untracked(), 0, "not at once");
        sleep(150).await;
        assert_eq!(version.get_untracked(), 1, "once for the burst, within the jitter");
        bump();
        sleep(150).await;
        assert_eq!(version.get_untracked(), 2, "a later event moves it again");
        let (now, set_now) = signal(0u64);
        let at_once = version_bump(set_now, std::time::Duration::ZERO);
        at_once();
        at_once();
        assert_eq!(now.get_untracked(), 2, "without jitter: at once, each time");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_hooks_options_lie_over_the_apps_which_lie_over_the_defaults() {
        let owner = Owner::new();
        owner.with(|| {
            let bare = UseSseOptions::default().resolve();
            assert_eq!(bare.events_path, DEFAULT_EVENTS_PATH);
            assert!(!bare.with_credentials && !bare.echo && !bare.long_poll && bare.headers.is_none());
            assert_eq!(bare.heartbeat, Some(Duration::from_secs(sse_notify_core::DEFAULT_HEARTBEAT_SECONDS)));
            assert_eq!(bare.pause_when_hidden, None);

            provide_sse_options(
                UseSseOptions::default()
                    .events_path("https://api.example.com/events")
                    .with_credentials(true)
                    .heartbeat(None)
                    .pause_when_hidden(Some(Duration::from_secs(60)))
                    .headers(|| vec![("authorization".to_owned(), "Bearer t".to_owned())]),
            );
            let hook = UseSseOptions::default().jitter(Duration::from_millis(500)).pause_when_hidden(None).resolve();
            assert_eq!(hook.events_path, "https://api.example.com/events", "the app's path, kept");
            assert!(hook.with_credentials);
            assert_eq!(hook.jitter, Duration::from_millis(500), "the hook's own");
            assert_eq!(hook.heartbeat, None, "the app's: heartbeats off");
            assert_eq!(hook.pause_when_hidden, None, "the hook turned the app's pause off");
            let fetch = hook.fetch();
            assert!(fetch.with_credentials);
            assert_eq!(
                (fetch.headers.expect("the app's headers").0)(),
                vec![("authorization".to_owned(), "Bearer t".to_owned())]
            );
            let elsewhere = UseSseOptions::default().events_path("/other").with_credentials(false).resolve();
            assert_eq!((elsewhere.events_path.as_str(), elsewhere.with_credentials), ("/other", false));
        });
    }
}
