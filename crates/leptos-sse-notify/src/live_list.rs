//! A REST list kept live item by item: an event that names an item refetches that item and
//! patches the list the tab holds, instead of the whole list.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use leptos::prelude::*;
use serde::de::DeserializeOwned;
use sse_notify_core::cursor::Cursor;
use sse_notify_core::write::WritePosition;
use sse_notify_core::{SseEvent, Topic};

use crate::fetch::{get_text, FetchError, FetchOptions};
use crate::recover::{is_transient, refetch_with_retry};
use crate::use_sse::{use_sse_tapped, SseSignal, Tap, UseSseOptions};
use crate::write::{make_write, Floor, LiveWrite, OnStep, Step, Write, WriteOptions};

/// What [`use_live_list`] returns.
pub struct LiveList<E: Send + Sync + 'static, T: 'static, K: 'static> {
    /// The subscription that triggers the refetches.
    pub sse: SseSignal<E>,
    /// The list, fetched and patched in the browser (`None` until the first answer, and during
    /// server rendering). A refetch that fails for a passing reason is tried again until it
    /// gets through ([`refetch_with_retry`](crate::refetch_with_retry)); the list stays meanwhile.
    /// [`LiveList::shown`] is this list with the page's own changes over it.
    pub items: ReadSignal<Option<Result<Vec<T>, FetchError>>, LocalStorage>,
    /// Whether a refetch is being tried again: the list may be behind.
    pub stale: ReadSignal<bool>,
    /// The browser's own; `None` while the server renders (see [`LiveWrite`]'s).
    own: Option<StoredValue<Rc<ListOwn<T, K>>, LocalStorage>>,
    own_version: RwSignal<u64>,
}

impl<E: Send + Sync + 'static, T: 'static, K: 'static> Clone for LiveList<E, T, K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Send + Sync + 'static, T: 'static, K: 'static> Copy for LiveList<E, T, K> {}

/// A change the page makes to a live list: an item put (replacing the item with its key, or
/// added at the end), or the item with a key removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListChange<T, K> {
    /// The item, in place of the one with its key (or at the end).
    Put(T),
    /// The item with this key goes.
    Remove(K),
}

/// The page's own changes to a list, and where each part of the list it holds stands.
struct ListOwn<T, K> {
    key: Rc<dyn Fn(&T) -> K>,
    /// The floor of the last whole list, and of each item patched since.
    floors: RefCell<(Floor, Vec<(K, Floor)>)>,
    changes: RefCell<Vec<(Rc<Write>, ListChange<T, K>)>>,
    /// The newest position of this list's own answered writes: its refetches send it as
    /// `Last-Event-ID` when it is newer than their event's, so a cached read holds them.
    newest_write: std::cell::Cell<Option<Cursor>>,
}

impl<T, K: PartialEq> ListOwn<T, K> {
    fn floor_of(&self, key: &K) -> Floor {
        let floors = self.floors.borrow();
        floors.1.iter().find(|(k, _)| k == key).map_or_else(|| floors.0.clone(), |(_, f)| f.clone())
    }

    /// The cursor a refetch triggered by `event` sends: the newer of it and this list's
    /// newest own write (of the same log).
    fn cursor_for(&self, event: Option<String>) -> Option<String> {
        let Some(write) = self.newest_write.get() else { return event };
        match event.as_deref().map(|e| e.parse::<Cursor>()) {
            Some(Ok(e)) if e.log == write.log && e.position >= write.position => event,
            Some(Ok(e)) if e.log != write.log => event,
            _ => Some(write.to_string()),
        }
    }
}

impl<T: Clone, K: PartialEq> ListOwn<T, K> {
    /// `list` with the own changes its parts do not hold yet; forgets the ones they hold.
    fn apply(&self, mut list: Vec<T>) -> Vec<T> {
        let mut changes = self.changes.borrow_mut();
        changes.retain(|(write, change)| {
            let key = match change {
                ListChange::Put(item) => (self.key)(item),
                ListChange::Remove(key) => return !self.floor_of(key).covers(write),
            };
            !self.floor_of(&key).covers(write)
        });
        for (_, change) in changes.iter() {
            match change {
                ListChange::Put(item) => {
                    let key = (self.key)(item);
                    match list.iter_mut().find(|t| (self.key)(t) == key) {
                        Some(slot) => *slot = item.clone(),
                        None => list.push(item.clone()),
                    }
                }
                ListChange::Remove(key) => list.retain(|t| (self.key)(t) != *key),
            }
        }
        list
    }
}

impl<E, T, K> LiveList<E, T, K>
where
    E: Send + Sync + 'static,
    T: Clone + 'static,
    K: PartialEq + 'static,
{
    /// The list with the page's own changes over it ([`LiveList::write`]): each shown until the
    /// list (or its item) was fetched at or after the write's position.
    pub fn shown(&self) -> Signal<Option<Result<Vec<T>, FetchError>>>
    where
        T: Send + Sync,
    {
        // A signal of the thread-safe kind: the server's render may drop it on another thread.
        let (items, own, version) = (self.items, self.own, self.own_version);
        Signal::derive(move || {
            version.track();
            let own = own?; // fetched in the browser only
            let list = items.get()?;
            Some(list.map(|list| match own.try_get_value() {
                Some(own) => own.apply(list),
                None => list,
            }))
        })
    }

    /// A write to this list: `optimistic(input)` shows at once, `answered(output)` once its
    /// answer comes, until the list holds it; a failed write is rolled back (its error in
    /// [`LiveWrite::error`]). `run` sends it: [`send_write`](crate::send_write), or a server
    /// function with [`OriginClient`](crate::OriginClient).
    ///
    /// ```no_run
    /// # use leptos::prelude::*;
    /// # use leptos_sse_notify::{use_live_list, send_write, FetchError, ListChange, Topic, WriteOptions};
    /// # leptos_sse_notify::sse_event! {
    /// #     #[derive(Clone, Debug)]
    /// #     pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
    /// #     topics(&self) { vec![Topic::new("notes").unwrap()] }
    /// # }
    /// #[derive(Clone, serde::Deserialize)]
    /// struct Note { id: u64, text: String }
    ///
    /// # #[component] fn Notes() -> impl IntoView {
    /// let notes = use_live_list::<NoteEvent, Note, u64>(
    ///     Topic::new("notes").unwrap(), "/api/notes".to_owned(),
    ///     |NoteEvent::Saved { id }| Some((*id, format!("/api/notes/{id}"))), |n| n.id,
    /// );
    /// let add = notes.write(
    ///     // Shown at once, under a key no saved note has.
    ///     |text: &String| Some(ListChange::Put(Note { id: 0, text: text.clone() })),
    ///     |saved: &Note| Some(ListChange::Put(saved.clone())),
    ///     |text: String| async move {
    ///         let body = serde_json::json!({ "text": text });
    ///         let answer = send_write("POST", "/api/notes", Some(&body)).await?;
    ///         serde_json::from_str::<Note>(&answer).map_err(|e| FetchError::Decode(e.to_string()))
    ///     },
    ///     WriteOptions::default().retry_when(leptos_sse_notify::is_transient),
    /// );
    /// # view! { <button on:click=move |_| add.dispatch("hi".into())>"add"</button> } }
    /// ```
    pub fn write<I, O, Er, Fut>(
        &self,
        optimistic: impl Fn(&I) -> Option<ListChange<T, K>> + 'static,
        answered: impl Fn(&O) -> Option<ListChange<T, K>> + 'static,
        run: impl Fn(I) -> Fut + 'static,
        options: WriteOptions<Er>,
    ) -> LiveWrite<I, O, Er>
    where
        I: Clone + 'static,
        O: 'static,
        Er: 'static,
        Fut: Future<Output = Result<O, Er>> + 'static,
    {
        let (own, version) = (self.own, self.own_version);
        let set = move |write: &Rc<Write>, change: Option<ListChange<T, K>>| {
            let Some(own) = own else { return };
            own.try_with_value(|own| {
                let mut changes = own.changes.borrow_mut();
                changes.retain(|(w, _)| !Rc::ptr_eq(w, write));
                if let Some(change) = change {
                    changes.push((write.clone(), change));
                }
            });
            let _ = version.try_update(|v| *v += 1);
        };
        let on: OnStep<I, O> = Rc::new(move |step| match step {
            Step::Started(write, input) => set(write, optimistic(input)),
            Step::Answered(write, output) => {
                if let (Some(WritePosition::At(at)), Some(own)) = (write.position(), own) {
                    own.try_with_value(|own| {
                        let newer = own.newest_write.get().is_none_or(|n| n.log != at.log || n.position < at.position);
                        if newer {
                            own.newest_write.set(Some(at));
                        }
                    });
                }
                // Without a change from the answer, the optimistic one stays until covered.
                if let Some(change) = answered(output) {
                    set(write, Some(change));
                }
            }
            Step::Failed(write) => set(write, None),
        });
        make_write(Rc::new(move |input| Box::pin(run(input))), options, on)
    }
}

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
) -> LiveList<E, T, K>
where
    E: SseEvent + Clone + Send + Sync,
    T: DeserializeOwned + 'static,
    K: PartialEq + Clone + 'static,
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
) -> LiveList<E, T, K>
where
    E: SseEvent + Clone + Send + Sync,
    T: DeserializeOwned + 'static,
    K: PartialEq + Clone + 'static,
{
    let options = options.resolve();
    let how = options.fetch();
    let items = RwSignal::new_local(None::<Result<Vec<T>, FetchError>>);
    let (stale, set_stale) = signal(false);
    let list_url: Signal<String> = list_url.into();
    let queue = Rc::new(RefCell::new(Queue::<K> { pending: Vec::new(), running: false }));
    let key: Rc<dyn Fn(&T) -> K> = Rc::new(key);
    let own = Rc::new(ListOwn {
        key: key.clone(),
        floors: RefCell::new((Floor::default(), Vec::new())),
        changes: RefCell::default(),
        newest_write: std::cell::Cell::new(None),
    });
    let own_version = RwSignal::new(0u64);
    let push = {
        let (queue, own) = (queue.clone(), own.clone());
        Rc::new(move |refetch: Refetch<K>| {
            let mut q = queue.borrow_mut();
            q.pending.push(refetch);
            if !q.running && cfg!(feature = "browser") {
                q.running = true;
                let drained = drain(queue.clone(), list_url, items, set_stale, own.clone(), how.clone());
                leptos::task::spawn_local(drained);
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
    let own = cfg!(feature = "browser").then(|| StoredValue::new_local(own));
    LiveList { sse, items: items.read_only(), stale, own, own_version }
}

/// Runs the queued refetches until none is left: a list refetch covers everything queued before
/// it started; item refetches patch the list one by one.
async fn drain<K: PartialEq + Clone, T: DeserializeOwned + 'static>(
    queue: Rc<RefCell<Queue<K>>>,
    list_url: Signal<String>,
    items: RwSignal<Option<Result<Vec<T>, FetchError>>, LocalStorage>,
    set_stale: WriteSignal<bool>,
    own: Rc<ListOwn<T, K>>,
    how: FetchOptions,
) {
    let key = own.key.clone();
    let stale = move |s| {
        let _ = set_stale.try_set(s);
    };
    // The answer, and the floor of the attempt that got it (taken as each attempt starts).
    let get = |url: String, cursor: Option<String>| {
        let how = how.clone();
        async move {
            let floor = std::cell::Cell::new(Floor::default());
            let attempt = || {
                floor.set(Floor::sending(cursor.as_deref()));
                get_text(url.clone(), cursor.clone(), how.clone())
            };
            let answer = refetch_with_retry(attempt, is_transient, stale).await;
            (floor.take(), answer)
        }
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
            let (floor, answer) = get(list_url.get_untracked(), own.cursor_for(newest)).await;
            let list = answer
                .and_then(|body| serde_json::from_str::<Vec<T>>(&body).map_err(|e| FetchError::Decode(e.to_string())));
            if list.is_ok() {
                *own.floors.borrow_mut() = (floor, Vec::new());
            }
            items.try_set(Some(list));
            continue;
        }
        for refetch in distinct_items(batch) {
            let Refetch::Item { key: wanted, url, cursor } = refetch else { continue };
            let (floor, answer) = get(url, own.cursor_for(cursor)).await;
            if matches!(answer, Ok(_) | Err(FetchError::Status { status: 404, .. })) {
                let mut floors = own.floors.borrow_mut();
                floors.1.retain(|(k, _)| *k != wanted);
                floors.1.push((wanted.clone(), floor));
            }
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
