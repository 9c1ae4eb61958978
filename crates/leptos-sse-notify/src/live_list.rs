//! A REST list kept live item by item: an event that names an item refetches that item and
//! patches the list the tab holds, instead of the whole list.

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use serde::de::DeserializeOwned;
use sse_notify_core::{SseEvent, Topic};

use crate::fetch::{get_text, FetchError, FetchOptions};
use crate::recover::{is_transient, refetch_with_retry};
use crate::use_sse::{use_sse_tapped, SseSignal, Tap, UseSseOptions};

/// What [`use_live_list`] returns.
pub struct LiveList<E: Send + Sync + 'static, T: 'static> {
    /// The subscription that triggers the refetches.
    pub sse: SseSignal<E>,
    /// The list, fetched and patched in the browser (`None` until the first answer, and during
    /// server rendering). A refetch that fails for a passing reason is tried again until it
    /// gets through ([`refetch_with_retry`](crate::refetch_with_retry)); the list stays meanwhile.
    pub items: ReadSignal<Option<Result<Vec<T>, FetchError>>, LocalStorage>,
    /// Whether a refetch is being tried again: the list may be behind.
    pub stale: ReadSignal<bool>,
}

impl<E: Send + Sync + 'static, T: 'static> Clone for LiveList<E, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Send + Sync + 'static, T: 'static> Copy for LiveList<E, T> {}

/// What the list needs fetched, in the order the events came.
enum Refetch<K> {
    /// The whole list (the first load, a resync, an event that names no item).
    List { cursor: Option<String> },
    /// One item: `key`'s answer replaces it, is added at the end, or (404) removes it.
    Item { key: K, url: String, cursor: Option<String> },
}

struct Queue<K> {
    pending: Vec<Refetch<K>>,
    /// A drain task is running (it takes what is queued meanwhile).
    running: bool,
}

/// GETs the JSON list at `list_url` and keeps it live: an event for which `item` gives the
/// item's key and URL refetches only that item (a `200` replaces the item with that key or adds
/// it at the end; a `404` removes it); any other event, a `resync`, a reopened stream or a new
/// `list_url` refetches the whole list. Refetches run one at a time in the order of their events,
/// so an older answer never overwrites a newer one; each carries its event's id as
/// `Last-Event-ID` (see [`crate::use_live_json`]).
///
/// On a board of 100 tasks an item is ~50 bytes against the list's 5 KB, and behind the
/// server's response cache each item is computed once per change like the list.
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{sse_event, use_live_list, Topic, TopicBuilder};
///
/// sse_event! {
///     #[derive(Clone, Debug)]
///     pub enum TaskEvent {
///         Created { id: u64 } = "task:created",
///         Updated { id: u64 } = "task:updated",
///         Deleted { id: u64 } = "task:deleted",
///     }
///     topics(&self) { vec![Topic::new("tasks").unwrap()] }
/// }
///
/// #[derive(Clone, serde::Deserialize)]
/// struct Task { id: u64, title: String }
///
/// #[component]
/// fn Tasks() -> impl IntoView {
///     let tasks = use_live_list::<TaskEvent, Task, u64>(
///         Topic::new("tasks").unwrap(),
///         "/api/tasks".to_owned(),
///         |e| {
///             let (TaskEvent::Created { id } | TaskEvent::Updated { id } | TaskEvent::Deleted { id }) = e;
///             Some((*id, format!("/api/tasks/{id}")))
///         },
///         |t| t.id,
///     );
///     view! {
///         <ul>
///             {move || tasks.items.get().and_then(Result::ok).unwrap_or_default()
///                 .into_iter().map(|t| view! { <li>{t.title}</li> }).collect_view()}
///         </ul>
///     }
/// }
/// ```
pub fn use_live_list<E, T, K>(
    topic: impl Into<Signal<Topic>>,
    list_url: impl Into<Signal<String>>,
    item: impl Fn(&E) -> Option<(K, String)> + 'static,
    key: impl Fn(&T) -> K + 'static,
) -> LiveList<E, T>
where
    E: SseEvent + Clone + Send + Sync,
    T: DeserializeOwned + 'static,
    K: PartialEq + 'static,
{
    use_live_list_with_options(topic, list_url, item, key, UseSseOptions::default())
}

/// [`use_live_list`] with the stream's options (over the app's, [`provide_sse_options`](crate::provide_sse_options)):
/// an API on another origin (its events path, cookies or headers, which the list's and items'
/// fetches send too), a refetch wave spread over a random [`UseSseOptions::jitter`], or
/// [`UseSseOptions::echo`].
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{sse_event, use_live_list_with_options, Topic, UseSseOptions};
///
/// sse_event! {
///     #[derive(Clone, Debug)]
///     pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
///     topics(&self) { vec![Topic::new("notes").unwrap()] }
/// }
///
/// #[derive(Clone, serde::Deserialize)]
/// struct Note { id: u64, text: String }
///
/// #[component]
/// fn Notes() -> impl IntoView {
///     let api = "https://api.example.com";
///     let notes = use_live_list_with_options::<NoteEvent, Note, u64>(
///         Topic::new("notes").unwrap(),
///         format!("{api}/api/notes"),
///         move |NoteEvent::Saved { id }| Some((*id, format!("{api}/api/notes/{id}"))),
///         |n| n.id,
///         UseSseOptions::default().events_path(format!("{api}/events")).with_credentials(true),
///     );
///     view! { <p>{move || notes.items.get().and_then(Result::ok).map(|n| n.len())}</p> }
/// }
/// ```
pub fn use_live_list_with_options<E, T, K>(
    topic: impl Into<Signal<Topic>>,
    list_url: impl Into<Signal<String>>,
    item: impl Fn(&E) -> Option<(K, String)> + 'static,
    key: impl Fn(&T) -> K + 'static,
    options: UseSseOptions,
) -> LiveList<E, T>
where
    E: SseEvent + Clone + Send + Sync,
    T: DeserializeOwned + 'static,
    K: PartialEq + 'static,
{
    let options = options.resolve();
    let how = options.fetch();
    let items = RwSignal::new_local(None::<Result<Vec<T>, FetchError>>);
    let (stale, set_stale) = signal(false);
    let list_url: Signal<String> = list_url.into();
    let queue = Rc::new(RefCell::new(Queue::<K> { pending: Vec::new(), running: false }));
    let key: Rc<dyn Fn(&T) -> K> = Rc::new(key);
    let push = {
        let queue = queue.clone();
        Rc::new(move |refetch: Refetch<K>| {
            let mut q = queue.borrow_mut();
            q.pending.push(refetch);
            if !q.running && cfg!(feature = "browser") {
                q.running = true;
                leptos::task::spawn_local(drain(queue.clone(), list_url, items, set_stale, key.clone(), how.clone()));
            }
        })
    };
    let tap = Tap {
        on_event: {
            let push = push.clone();
            Rc::new(move |event: &E, id: &str| {
                let cursor = Some(id.to_owned()).filter(|id| !id.is_empty());
                push(match item(event) {
                    Some((key, url)) => Refetch::Item { key, url, cursor },
                    None => Refetch::List { cursor },
                })
            })
        },
        on_resync: {
            let push = push.clone();
            Rc::new(move || push(Refetch::List { cursor: None }))
        },
    };
    let sse = use_sse_tapped(topic.into(), options, Some(tap));
    // The first load, and again whenever the URL changes.
    Effect::new(move |_| {
        list_url.track();
        push(Refetch::List { cursor: None });
    });
    LiveList { sse, items: items.read_only(), stale }
}

/// Runs the queued refetches until none is left: a list refetch covers everything queued before
/// it started; item refetches patch the list one by one.
async fn drain<K: PartialEq, T: DeserializeOwned + 'static>(
    queue: Rc<RefCell<Queue<K>>>,
    list_url: Signal<String>,
    items: RwSignal<Option<Result<Vec<T>, FetchError>>, LocalStorage>,
    set_stale: WriteSignal<bool>,
    key: Rc<dyn Fn(&T) -> K>,
    how: FetchOptions,
) {
    let stale = move |s| {
        let _ = set_stale.try_set(s);
    };
    let get = |url: String, cursor: Option<String>| {
        let how = how.clone();
        refetch_with_retry(move || get_text(url.clone(), cursor.clone(), how.clone()), is_transient, stale)
    };
    loop {
        let batch = {
            let mut q = queue.borrow_mut();
            if q.pending.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.pending)
        };
        // Patches need a list to patch: without one (not loaded yet, or its last fetch failed)
        // the whole list is fetched instead.
        let have_list = items.with_untracked(|l| matches!(l, Some(Ok(_))));
        let newest = batch.iter().rev().find_map(|r| match r {
            Refetch::List { cursor } | Refetch::Item { cursor, .. } => cursor.clone(),
        });
        if !have_list || batch.iter().any(|r| matches!(r, Refetch::List { .. })) {
            let list = get(list_url.get_untracked(), newest)
                .await
                .and_then(|body| serde_json::from_str::<Vec<T>>(&body).map_err(|e| FetchError::Decode(e.to_string())));
            items.try_set(Some(list));
            continue;
        }
        for refetch in distinct_items(batch) {
            let Refetch::Item { key: wanted, url, cursor } = refetch else { continue };
            let answer = get(url, cursor).await;
            let patch = match answer {
                Ok(body) => serde_json::from_str::<T>(&body).map(Some).map_err(|e| FetchError::Decode(e.to_string())),
                Err(FetchError::Status { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            };
            items.try_update(|list| match (list, patch) {
                (Some(Ok(list)), Ok(Some(found))) => match list.iter_mut().find(|t| key(t) == wanted) {
                    Some(slot) => *slot = found,
                    None => list.push(found),
                },
                (Some(Ok(list)), Ok(None)) => list.retain(|t| key(t) != wanted),
                (list, Err(e)) => *list = Some(Err(e)),
                (_, Ok(_)) => {}
            });
        }
    }
}

/// Each item once, at its last place in the batch, with the newest cursor.
fn distinct_items<K: PartialEq>(batch: Vec<Refetch<K>>) -> Vec<Refetch<K>> {
    let mut out: Vec<Refetch<K>> = Vec::with_capacity(batch.len());
    for r in batch {
        if let Refetch::Item { key, .. } = &r {
            out.retain(|o| !matches!(o, Refetch::Item { key: k, .. } if k == key));
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_named_twice_in_a_batch_is_fetched_once_at_its_last_place_with_its_newest_cursor() {
        let item = |key: u64, c: &str| Refetch::Item { key, url: format!("/t/{key}"), cursor: Some(c.to_owned()) };
        let out = distinct_items(vec![item(1, "a"), item(2, "b"), item(1, "c")]);
        let seen: Vec<(u64, String)> = out
            .into_iter()
            .map(|r| match r {
                Refetch::Item { key, cursor, .. } => (key, cursor.unwrap()),
                Refetch::List { .. } => panic!("no list"),
            })
            .collect();
        assert_eq!(seen, [(2, "b".to_owned()), (1, "c".to_owned())]);
    }
}
