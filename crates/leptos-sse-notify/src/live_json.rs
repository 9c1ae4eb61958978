//! The REST side of "notify, then fetch": JSON from a URL, fetched again on every notification.

use std::cell::RefCell;
use std::rc::Rc;

use futures::future::{FutureExt, LocalBoxFuture, Shared};
use leptos::prelude::*;
use serde::de::DeserializeOwned;
use sse_notify_core::{SseEvent, Topic};

use crate::{use_sse, SseSignal};

/// Why [`use_live_json`] has no value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status; `code` and `message` come from a JSON error
    /// body (`{"error": .., "message": ..}`) when it had one.
    #[error("{status} {code}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The `error` code of the JSON body (empty if none).
        code: String,
        /// The `message` of the JSON body, or the status text.
        message: String,
    },
    /// The request did not complete (network down, CORS refused).
    #[error("request failed: {0}")]
    Network(String),
    /// The answer was not the JSON that was expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// What [`use_live_json`] returns.
pub struct LiveJson<E: Send + Sync + 'static, T: 'static> {
    /// The subscription that triggers the refetches.
    pub sse: SseSignal<E>,
    /// The JSON, fetched in the browser (pending during server rendering).
    pub data: LocalResource<Result<T, FetchError>>,
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
    let sse = use_sse::<E>(topic);
    let url: Signal<String> = url.into();
    let fetches = Coalescer::default();
    let data = LocalResource::new(move || {
        sse.version.track();
        let url = url.get();
        let cursor = sse.last_event_id.get_untracked();
        // The fetch this version shares with the others that came while one was in flight.
        let body = fetches.run(move || get_text(url, cursor).boxed_local());
        async move { serde_json::from_str::<T>(&body.await?).map_err(|e| FetchError::Decode(e.to_string())) }
    });
    LiveJson { sse, data }
}

/// Coalesces fetches: at most one runs, and every fetch asked for while it runs shares the ONE
/// that runs after it (whose inputs are those of the last asked for).
pub(crate) struct Coalescer<T: Clone> {
    state: Rc<RefCell<Queue<T>>>,
}

type Fetch<T> = Shared<LocalBoxFuture<'static, T>>;
type MakeFetch<T> = Box<dyn FnOnce() -> LocalBoxFuture<'static, T>>;

struct Queue<T: Clone> {
    running: Option<Fetch<T>>,
    /// The fetch after the running one, and how to start it (replaced by each later ask).
    queued: Option<(Fetch<T>, Rc<RefCell<Option<MakeFetch<T>>>>)>,
}

impl<T: Clone> Default for Coalescer<T> {
    fn default() -> Self {
        Self { state: Rc::new(RefCell::new(Queue { running: None, queued: None })) }
    }
}

impl<T: Clone> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Self { state: self.state.clone() }
    }
}

impl<T: Clone + 'static> Coalescer<T> {
    /// The fetch that will answer this ask: `make()` started now when none runs, else the one
    /// queued after the running one, which `make` (the newest inputs) will start.
    pub(crate) fn run(&self, make: impl FnOnce() -> LocalBoxFuture<'static, T> + 'static) -> Fetch<T> {
        let mut q = self.state.borrow_mut();
        if q.running.as_ref().is_some_and(|r| r.peek().is_some()) {
            q.running = None;
        }
        let Some(running) = q.running.clone() else {
            let fetch = make().shared();
            q.running = Some(fetch.clone());
            return fetch;
        };
        if let Some((queued, starter)) = &q.queued {
            *starter.borrow_mut() = Some(Box::new(make));
            return queued.clone();
        }
        let starter: Rc<RefCell<Option<MakeFetch<T>>>> = Rc::new(RefCell::new(Some(Box::new(make))));
        // Weak: the queued fetch, once running, is held by the state it would otherwise hold.
        let state = Rc::downgrade(&self.state);
        let start = starter.clone();
        let queued = async move {
            let _ = running.await;
            let make = start.borrow_mut().take().expect("set when queued");
            if let Some(state) = state.upgrade() {
                // It runs now: later asks queue after it.
                let mut q = state.borrow_mut();
                q.running = q.queued.take().map(|(fetch, _)| fetch);
            }
            make().await
        }
        .boxed_local()
        .shared();
        q.queued = Some((queued.clone(), starter));
        queued
    }
}

/// The body of a GET of `url` (an error status as its JSON error), sent with `cursor` as
/// `Last-Event-ID`.
#[cfg(feature = "browser")]
async fn get_text(url: String, cursor: Option<String>) -> Result<String, FetchError> {
    let mut req = gloo_net::http::Request::get(&url).header("accept", "application/json");
    if let Some(cursor) = &cursor {
        req = req.header("last-event-id", cursor);
    }
    let resp = req.send().await.map_err(|e| FetchError::Network(e.to_string()))?;
    if !resp.ok() {
        let status = resp.status();
        let (code, message) = error_body(&resp).await;
        return Err(FetchError::Status { status, code, message: message.unwrap_or_else(|| resp.status_text()) });
    }
    resp.text().await.map_err(|e| FetchError::Network(e.to_string()))
}

/// The `error` code and `message` of a JSON error body (`{"error": .., "message": ..}`);
/// an empty code and no message when the body is something else.
#[cfg(feature = "browser")]
pub(crate) async fn error_body(resp: &gloo_net::http::Response) -> (String, Option<String>) {
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let text = |field: &str| body.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    (text("error").unwrap_or_default(), text("message"))
}

/// Outside the browser a `LocalResource` never runs its fetcher; this only has to compile.
#[cfg(not(feature = "browser"))]
async fn get_text(url: String, cursor: Option<String>) -> Result<String, FetchError> {
    let _ = (url, cursor);
    std::future::pending().await
}

impl<E: Send + Sync + 'static, T: 'static> Clone for LiveJson<E, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Send + Sync + 'static, T: 'static> Copy for LiveJson<E, T> {}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use futures::channel::oneshot;
    use futures::executor::block_on;

    use super::*;

    /// A fetch that answers `name` once its sender fires, counting the fetches started.
    fn fetch(
        started: &Rc<Cell<u32>>,
        name: &'static str,
    ) -> (impl FnOnce() -> LocalBoxFuture<'static, &'static str> + 'static, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel::<()>();
        let started = started.clone();
        let make = move || {
            started.set(started.get() + 1);
            async move {
                let _ = rx.await;
                name
            }
            .boxed_local()
        };
        (make, tx)
    }

    #[test]
    fn asks_while_a_fetch_runs_share_one_fetch_after_it_with_the_newest_inputs() {
        let started = Rc::new(Cell::new(0));
        let c = Coalescer::<&'static str>::default();
        let (a, a_done) = fetch(&started, "a");
        let first = c.run(a);
        assert_eq!(started.get(), 1, "nothing runs: it starts at once");
        let ((b, _), (d, d_done)) = (fetch(&started, "b"), fetch(&started, "d"));
        let second = c.run(b);
        let third = c.run(d);
        assert!(second.ptr_eq(&third), "two asks during a fetch share the next one");
        assert_eq!(started.get(), 1, "which waits for the running one");
        a_done.send(()).unwrap();
        assert_eq!(block_on(first), "a");
        // The queued fetch starts when polled, with the last ask's inputs; an ask meanwhile
        // queues behind it.
        assert!(second.clone().now_or_never().is_none());
        assert_eq!(started.get(), 2);
        let (e, e_done) = fetch(&started, "e");
        let fourth = c.run(e);
        assert_eq!(started.get(), 2, "one fetch at a time");
        d_done.send(()).unwrap();
        assert_eq!((block_on(second), block_on(third)), ("d", "d"));
        e_done.send(()).unwrap();
        assert_eq!(block_on(fourth), "e");
        assert_eq!(started.get(), 3, "five asks, three fetches");
        let (f, f_done) = fetch(&started, "f");
        f_done.send(()).unwrap();
        assert_eq!(block_on(c.run(f)), "f", "idle again: a new ask starts at once");
    }
}
