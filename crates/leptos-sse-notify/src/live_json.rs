//! The REST side of "notify, then fetch": JSON from a URL, fetched again on every notification.

use leptos::prelude::*;
use serde::de::DeserializeOwned;
use sse_notify_core::{SseEvent, Topic};

use crate::fetch::{get_text, FetchError};
use crate::recover::{is_transient, refetch_with_retry};
use crate::use_sse::{use_sse_tapped, SseSignal, UseSseOptions};
use crate::write::{Floor, OwnChanges};

/// What [`use_live_json`] returns.
pub struct LiveJson<E: Send + Sync + 'static, T: 'static> {
    /// The subscription that triggers the refetches.
    pub sse: SseSignal<E>,
    /// The JSON, fetched in the browser (pending during server rendering). A refetch that
    /// fails for a passing reason is tried again until it gets through ([`refetch_with_retry`]):
    /// under a `<Transition>` the last good value stays meanwhile.
    pub data: LocalResource<Result<T, FetchError>>,
    /// Whether a refetch is being tried again: what is shown may be behind.
    pub stale: ReadSignal<bool>,
    /// Where the data it holds stands (its fetch's [`Floor`]), for [`LiveJson::shown`].
    floor: StoredValue<Floor>,
}

impl<E: Send + Sync + 'static, T: Clone + Send + Sync + 'static> LiveJson<E, T> {
    /// The data with the page's own changes over it (an [`OwnChanges`] of this data, whose
    /// writes the page makes): each shown until the data was fetched at or after its write.
    ///
    /// ```no_run
    /// # use leptos::prelude::*;
    /// # use leptos_sse_notify::{use_live_json, send_write, FetchError, OwnChanges, Topic};
    /// # leptos_sse_notify::sse_event! {
    /// #     #[derive(Clone, Debug)]
    /// #     pub enum DocEvent { Saved { id: u64 } = "doc:saved" }
    /// #     topics(&self) { vec![Topic::new("doc").unwrap()] }
    /// # }
    /// #[derive(Clone, serde::Deserialize)]
    /// struct Doc { title: String }
    ///
    /// # #[component] fn Title() -> impl IntoView {
    /// let doc = use_live_json::<DocEvent, Doc>(Topic::new("doc").unwrap(), "/api/doc".to_owned());
    /// let own = OwnChanges::<Doc>::new();
    /// let rename = own.write(
    ///     |title: &String, doc| doc.title = title.clone(),
    ///     |_: &String, _| {}, // the answer is the body; the optimistic title stays until covered
    ///     |title: String| async move {
    ///         send_write("PUT", "/api/doc", Some(&serde_json::json!({ "title": title }))).await
    ///     },
    /// );
    /// let shown = doc.shown(own);
    /// view! { <h1>{move || shown.get().and_then(Result::ok).map(|d| d.title)}</h1> }
    /// # }
    /// ```
    pub fn shown(&self, own: OwnChanges<T>) -> Signal<Option<Result<T, FetchError>>> {
        let (data, floor) = (self.data, self.floor);
        Signal::derive(move || {
            let fetched = data.get()?;
            // The floor was stored before the data came (in the same task, with nothing run in
            // between): it is the floor of the data read here.
            let floor = floor.try_get_value().unwrap_or_default();
            Some(fetched.map(|t| own.apply(&floor, t)))
        })
    }
}

/// GETs JSON from `url` with gloo-net, and again every time [`SseSignal::version`] of a
/// subscription to `topic` moves (a matched event, a reopened stream, a `resync`), or `url`
/// changes. The seed's browser examples did this with `fetch`; here it is typed end to end.
///
/// Made for the server's response cache (`sse_notify_axum::ResponseCache`):
/// - each refetch carries the triggering event's id as `Last-Event-ID`, so the answer is at
///   least as new as the event, whichever instance serves it;
/// - the browser's HTTP cache revalidates with the answer's `ETag`: an unchanged answer costs
///   a `304` and no body;
/// - refetches are coalesced: events that arrive while one is in flight are covered by ONE
///   refetch after it (a burst of fifty changes costs two requests, not fifty).
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{use_live_json, FetchError};
/// use sse_notify_core::{sse_event, Topic, TopicBuilder};
///
/// sse_event! {
///     #[derive(Clone, Debug)]
///     pub enum TaskEvent { Updated { id: u64 } = "task:updated" }
///     topics(&self) { let TaskEvent::Updated { id } = self; vec![TopicBuilder::task(id)] }
/// }
///
/// #[derive(Clone, serde::Deserialize)]
/// struct Task { title: String }
///
/// #[component]
/// fn TaskTitle(id: u64) -> impl IntoView {
///     let task = use_live_json::<TaskEvent, Task>(TopicBuilder::task(id), format!("/api/tasks/{id}"));
///     view! {
///         <Suspense>
///             {move || task.data.get().map(|r| match r {
///                 Ok(t) => t.title,
///                 Err(FetchError::Status { status: 404, .. }) => "deleted".to_owned(),
///                 Err(e) => e.to_string(),
///             })}
///         </Suspense>
///     }
/// }
/// ```
pub fn use_live_json<E, T>(topic: impl Into<Signal<Topic>>, url: impl Into<Signal<String>>) -> LiveJson<E, T>
where
    E: SseEvent + Clone + Send + Sync,
    T: DeserializeOwned + 'static,
{
    use_live_json_with_options(topic, url, UseSseOptions::default())
}

/// [`use_live_json`] with the stream's options: another origin, or a refetch wave spread over
/// a random [`UseSseOptions::jitter`].
///
/// ```no_run
/// # use leptos::prelude::*;
/// # use leptos_sse_notify::{use_live_json_with_options, UseSseOptions, Topic};
/// # sse_notify_core::sse_event! {
/// #     #[derive(Clone, Debug)]
/// #     pub enum BoardEvent { Changed { id: u64 } = "board:changed" }
/// #     topics(&self) { vec![Topic::new("board").unwrap()] }
/// # }
/// # #[component]
/// # fn Board() -> impl IntoView {
/// // A board watched by thousands: each tab refetches up to 250 ms after a change.
/// let board = use_live_json_with_options::<BoardEvent, Vec<String>>(
///     Topic::new("board").unwrap(),
///     "/api/board".to_owned(),
///     UseSseOptions::default().jitter(std::time::Duration::from_millis(250)),
/// );
/// # view! {}
/// # }
/// ```
pub fn use_live_json_with_options<E, T>(
    topic: impl Into<Signal<Topic>>,
    url: impl Into<Signal<String>>,
    options: UseSseOptions,
) -> LiveJson<E, T>
where
    E: SseEvent + Clone + Send + Sync,
    T: DeserializeOwned + 'static,
{
    let options = options.resolve();
    let how = options.fetch();
    let sse = use_sse_tapped::<E>(topic.into(), options, None);
    let url: Signal<String> = url.into();
    let (stale, set_stale) = signal(false);
    let floor = StoredValue::new(Floor::default());
    // A resource runs one fetch at a time: notifications that arrive while it is in flight rerun
    // it once after it (Leptos's async derived values await each run before the next), which is
    // the coalescing a refetch wave needs (checked in end2end/tests/refetch.spec.ts).
    let data = LocalResource::new(move || {
        sse.version.track();
        let url = url.get();
        let cursor = sse.last_event_id.get_untracked();
        let how = how.clone();
        async move {
            // Each attempt's floor as it starts: the data is the last attempt's.
            let fetched = std::cell::Cell::new(Floor::default());
            let get = || {
                fetched.set(Floor::sending(cursor.as_deref()));
                get_text(url.clone(), cursor.clone(), how.clone())
            };
            let body = refetch_with_retry(get, is_transient, move |s| {
                let _ = set_stale.try_set(s);
            })
            .await?;
            let parsed = serde_json::from_str::<T>(&body).map_err(|e| FetchError::Decode(e.to_string()));
            if parsed.is_ok() {
                floor.try_set_value(fetched.take());
            }
            parsed
        }
    });
    LiveJson { sse, data, stale, floor }
}

impl<E: Send + Sync + 'static, T: 'static> Clone for LiveJson<E, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Send + Sync + 'static, T: 'static> Copy for LiveJson<E, T> {}
