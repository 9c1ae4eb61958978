//! `use_presence`: who else is on a topic, live, rendered on the server too.

use leptos::prelude::*;
use sse_notify_core::presence::{Member, Roster};
use sse_notify_core::Topic;

use crate::use_sse::UseSseOptions;

/// How the server reads a topic's members for a page it renders ([`use_presence`] asks it
/// during server rendering), as the stream of the same request would see them (the list, or
/// only the count above the server's cap): `None` when the request may not see the topic's
/// presence.
///
/// Provide it in Leptos context next to the `Publisher`, from the SSE endpoint
/// (`sse_notify_axum::SseEndpoint::presence_reader`):
///
/// ```ignore
/// let reader = events.presence_reader();
/// provide_context(PresenceSnapshot::new(move |request, topic| {
///     let reader = reader.clone();
///     async move { reader.roster(request, topic).await }
/// }));
/// ```
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct PresenceSnapshot(std::sync::Arc<SnapshotFn>);

#[cfg(feature = "ssr")]
type SnapshotFn = dyn Fn(
        std::sync::Arc<http::request::Parts>,
        Topic,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Roster>> + Send>>
    + Send
    + Sync;

#[cfg(feature = "ssr")]
impl PresenceSnapshot {
    /// Reads members with `read(request, topic)`.
    pub fn new<F, Fut>(read: F) -> Self
    where
        F: Fn(std::sync::Arc<http::request::Parts>, Topic) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Option<Roster>> + Send + 'static,
    {
        Self(std::sync::Arc::new(move |request, topic| Box::pin(read(request, topic))))
    }
}

/// Who is on `topic` now, on the default stream path; see [`use_presence_with_options`].
pub fn use_presence(topic: impl Into<Signal<Topic>>) -> Signal<Vec<Member>> {
    use_presence_with_options(topic, UseSseOptions::default())
}

/// Who is on `topic` now (members by id), kept live by the topic's `presence:*` frames on the
/// tab-shared stream (no connection of its own). A room the server counts rather than lists
/// (more members than its `SSE_PRESENCE_MAX_LISTED`) shows nobody here: pair it with
/// [`use_presence_count`], which is right in both.
///
/// During server rendering it reads the members through the `PresenceSnapshot` (feature `ssr`) in context
/// (a Resource), so the page arrives with them and nobody sees "nobody here" flash by: render
/// it inside a `<Transition>` or `<Suspense>`. The browser then follows the stream, which
/// sends the topic's whole member set first. The server's `SseEndpoint::presence` decides who
/// a member is and which topics have presence; a topic without it stays empty.
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{use_presence, Topic};
///
/// #[component]
/// fn WhoIsHere() -> impl IntoView {
///     let here = use_presence(Topic::new("board").unwrap());
///     view! {
///         <Transition>
///             <ul>{move || here.get().into_iter().map(|m| view! { <li>{m.id}</li> }).collect_view()}</ul>
///         </Transition>
///     }
/// }
/// ```
pub fn use_presence_with_options(topic: impl Into<Signal<Topic>>, options: UseSseOptions) -> Signal<Vec<Member>> {
    let roster = use_roster(topic.into(), options);
    Signal::derive(move || roster.with(|r| r.members.clone()))
}

/// How many members `topic` has now, on the default stream path; see
/// [`use_presence_count_with_options`].
pub fn use_presence_count(topic: impl Into<Signal<Topic>>) -> Signal<usize> {
    use_presence_count_with_options(topic, UseSseOptions::default())
}

/// How many members `topic` has now, listed or counted: in a room above the server's cap the
/// stream sends `presence:count` (at most once a second) instead of each member, and this is
/// the one figure that stays right either way. Shares the stream and the server rendering of
/// [`use_presence_with_options`].
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{use_presence_count, Topic};
///
/// #[component]
/// fn HowManyHere() -> impl IntoView {
///     let count = use_presence_count(Topic::new("hall").unwrap());
///     view! { <Transition><p>{move || count.get()} " here"</p></Transition> }
/// }
/// ```
pub fn use_presence_count_with_options(topic: impl Into<Signal<Topic>>, options: UseSseOptions) -> Signal<usize> {
    let roster = use_roster(topic.into(), options);
    Signal::derive(move || roster.with(|r| r.count))
}

/// The topic's roster: as rendered by the server, then as the stream says.
fn use_roster(topic: Signal<Topic>, options: UseSseOptions) -> Signal<Roster> {
    #[cfg(feature = "ssr")]
    let read = (use_context::<PresenceSnapshot>(), use_context::<http::request::Parts>());
    let rendered = Resource::new(
        move || topic.get(),
        move |topic| {
            #[cfg(feature = "ssr")]
            let read = read.clone();
            async move {
                #[cfg(feature = "ssr")]
                if let (Some(snapshot), Some(request)) = read {
                    return (snapshot.0)(std::sync::Arc::new(request), topic).await.unwrap_or_default();
                }
                let _ = topic;
                Roster::default()
            }
        },
    );

    #[cfg(feature = "browser")]
    {
        let options = options.resolve();
        let key = options.hub_key();
        options.configure(&key);
        let changed = crate::hub::presence_changed(&key);
        crate::hub::follow(&key, topic, None, |topic| crate::hub::Subscriber {
            topic,
            names: sse_notify_core::presence::PRESENCE_EVENTS,
            // The hub keeps the members itself, from every presence frame.
            on_event: std::rc::Rc::new(|_, _, _, _| {}),
            on_resync: std::rc::Rc::new(|| {}),
        });
        Signal::derive(move || {
            changed.track();
            match crate::hub::presence(&key, topic.get().as_str()) {
                Some(roster) => roster,
                None => rendered.get().unwrap_or_default(),
            }
        })
    }
    #[cfg(not(feature = "browser"))]
    {
        let _ = options;
        Signal::derive(move || rendered.get().unwrap_or_default())
    }
}
