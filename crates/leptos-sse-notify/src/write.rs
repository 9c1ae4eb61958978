//! Writes as part of the hook: the page that writes shows its change at once, keeps it exactly
//! until the data it holds was fetched at or after the write's position, rolls it back when the
//! write fails, and retries a write whose answer was lost with the same idempotency key.
//!
//! How it knows:
//! - Each write gets its own origin (so its event's echo tag is its own, and this tab can tell
//!   *which* of its writes an event is, even before the write's answer arrives) and its own
//!   `Idempotency-Key`. [`OriginClient`](crate::OriginClient) and [`send_write`] send both, and
//!   read the answer's `sse-position` ([`sse_notify_core::write`]).
//! - The page knows where the data it holds stands: a [`Floor`], taken when its fetch started
//!   (the newest position the page had seen on its stream or in a write's answer). A write is
//!   *covered* by data whose floor is at or after its position; a write whose position cannot be
//!   compared (its event is deferred, or in a log since lost) is covered by data fetched after
//!   its answer came.
//! - An own change is shown over data that does not cover its write, and dropped once the data
//!   does: never earlier (no flicker back), never later (no old change over newer data), in
//!   whatever order the answer, the refetches and other tabs' events arrive.
//!
//! ```no_run
//! use leptos::prelude::*;
//! use leptos_sse_notify::{use_sse, Floor, OwnChanges, OriginClient, Topic};
//! # leptos_sse_notify::sse_event! {
//! #     #[derive(Clone, Debug)]
//! #     pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
//! #     topics(&self) { vec![Topic::new("notes").unwrap()] }
//! # }
//!
//! #[server]
//! async fn list_notes() -> Result<Vec<String>, ServerFnError> { Ok(vec![]) }
//! #[server(client = OriginClient)]
//! async fn add_note(text: String) -> Result<String, ServerFnError> { Ok(text) }
//!
//! #[component]
//! fn Notes() -> impl IntoView {
//!     let live = use_sse::<NoteEvent>(Topic::new("notes").unwrap());
//!     let own = OwnChanges::<Vec<String>>::new();
//!     // Shown at once; replaced by the answer; dropped once a list fetched after it holds it.
//!     let add = own.write(
//!         |text: &String, notes: &mut Vec<String>| notes.push(text.clone()),
//!         |saved: &String, notes: &mut Vec<String>| notes.push(saved.clone()),
//!         add_note,
//!     );
//!     let notes = Resource::new(move || live.version.get(), |_| async {
//!         let floor = Floor::now(); // before the read
//!         (floor, list_notes().await)
//!     });
//!     view! {
//!         <button disabled=move || add.pending().get() on:click=move |_| add.dispatch("hi".to_owned())>"add"</button>
//!         <Transition>
//!             {move || notes.get().map(|(floor, list)| own.apply(&floor, list.unwrap_or_default()).len())}
//!         </Transition>
//!     }
//! }
//! ```

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use leptos::prelude::*;
use sse_notify_core::cursor::Cursor;
pub use sse_notify_core::write::{WritePosition, IDEMPOTENCY_KEY_HEADER, POSITION_HEADER};

/// One write: its own origin and idempotency key, and what is known of where it landed.
pub(crate) struct Write {
    origin: String,
    key: String,
    /// From the answer's `sse-position`, or from the first event of the stream that carried
    /// this write's echo tag.
    position: Cell<Option<WritePosition>>,
    /// The page clock's tick when the answer came (see [`Floor`]).
    answered_at: Cell<Option<u64>>,
    /// How [`send_write`] sends it: the app's options where the write was made.
    #[cfg_attr(not(feature = "browser"), allow(dead_code))]
    fetch: crate::fetch::FetchOptions,
}

impl Write {
    fn new(fetch: crate::fetch::FetchOptions) -> Rc<Self> {
        let write = Rc::new(Self {
            origin: crate::origin::random_token(sse_notify_core::origin::MAX_ORIGIN_LEN),
            key: crate::origin::random_token(32),
            position: Cell::new(None),
            answered_at: Cell::new(None),
            fetch,
        });
        CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            c.writes.retain(|w| w.strong_count() > 0);
            c.writes.push(Rc::downgrade(&write));
        });
        write
    }

    /// Where it landed, once known.
    pub(crate) fn position(&self) -> Option<WritePosition> {
        self.position.get()
    }

    /// The write's answer came, saying `position` (or nothing: a write that published nothing).
    fn answered(&self, position: Option<WritePosition>) {
        if let Some(p) = position {
            self.position.set(Some(p));
            if let WritePosition::At(at) = p {
                note_cursor(at);
            }
        }
        self.answered_at.set(Some(CLOCK.with(|c| c.borrow_mut().tick())));
    }
}

/// What the page has seen: the newest position (of its stream's frames and its writes'
/// answers), and a tick that orders fetches and answers.
#[derive(Default)]
struct Clock {
    tick: u64,
    seen: Option<Cursor>,
    /// Writes still held by someone (an own change, a pending call): whose echoes this tab
    /// recognises.
    writes: Vec<Weak<Write>>,
}

impl Clock {
    fn tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

thread_local! {
    static CLOCK: RefCell<Clock> = RefCell::default();
    /// The write whose future is being polled: what [`OriginClient`](crate::OriginClient) and
    /// [`send_write`] send with it.
    static CURRENT: RefCell<Option<Rc<Write>>> = const { RefCell::new(None) };
}

/// A position the page saw (a frame's id, a write's answer): everything written up to it is
/// committed, so data fetched from now on holds it.
fn note_cursor(at: Cursor) {
    CLOCK.with(|c| {
        let mut c = c.borrow_mut();
        c.seen = match c.seen {
            // Another log (Redis lost the old one): positions start again in it.
            Some(seen) if seen.log == at.log && seen.position >= at.position => Some(seen),
            _ => Some(Cursor { matched: 0, ..at }),
        };
    });
}

/// A frame with id `id` arrived on this tab's stream: notes its position, and tells whether it
/// is the echo of one of this tab's writes (placing that write, if its answer has not come).
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) fn note_frame(id: &str) -> bool {
    let Ok(cursor) = id.parse::<Cursor>() else { return false };
    note_cursor(cursor);
    let writes: Vec<Rc<Write>> = CLOCK.with(|c| c.borrow().writes.iter().filter_map(Weak::upgrade).collect());
    for write in writes {
        match write.position.get() {
            Some(WritePosition::At(at)) => {
                if at.log == cursor.log && at.position == cursor.position {
                    return true;
                }
            }
            // Not placed yet: its echo tag says.
            _ => {
                if sse_notify_core::origin::is_echo_of(id, &write.origin) {
                    write.position.set(Some(WritePosition::At(Cursor { matched: 0, ..cursor })));
                    return true;
                }
            }
        }
    }
    false
}

/// Where the data a page holds stands: taken just before its fetch started. Data fetched with
/// a floor at or after a write's position holds the write.
///
/// [`use_live_list`](crate::use_live_list) and [`use_live_json`](crate::use_live_json) keep
/// theirs; for a `Resource` of your own, take [`Floor::now`] before the read and keep it with
/// the data (it serializes, for a server-rendered page: the server's floor covers nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Floor {
    seen: Option<String>,
    tick: u64,
}

impl Floor {
    /// The floor of a fetch that starts now: the newest position this page has seen (its
    /// stream's frames, its writes' answers). For reads that no cache answers (a server
    /// function, a route without `ResponseCache`); a cached read's floor is the cursor it sends.
    pub fn now() -> Self {
        #[cfg(feature = "browser")]
        return CLOCK.with(|c| {
            let mut c = c.borrow_mut();
            Floor { seen: c.seen.map(|s| s.to_string()), tick: c.tick() }
        });
        #[cfg(not(feature = "browser"))]
        Floor::default()
    }

    /// The floor of a fetch that starts now and sends `cursor` as `Last-Event-ID` (a read behind
    /// the response cache holds what that cursor names, not more).
    #[cfg_attr(not(feature = "browser"), allow(dead_code))]
    pub(crate) fn sending(cursor: Option<&str>) -> Self {
        Floor { seen: cursor.map(str::to_owned), tick: CLOCK.with(|c| c.borrow_mut().tick()) }
    }

    /// Whether data fetched at this floor holds `write`.
    pub(crate) fn covers(&self, write: &Write) -> bool {
        let seen = self.seen.as_deref().and_then(|s| s.parse::<Cursor>().ok());
        if let (Some(position), Some(seen)) = (write.position.get(), seen) {
            if let Some(covered) = position.is_covered_by(&seen) {
                return covered;
            }
        }
        // Nothing to compare (deferred, another log, no position seen, or it published
        // nothing): data fetched after its answer holds it.
        write.answered_at.get().is_some_and(|at| self.tick > at)
    }
}

/// A future polled as `write`'s: what it sends goes with the write's origin and key.
struct InWrite<F> {
    write: Rc<Write>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for InWrite<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let write = self.write.clone();
        let outer = CURRENT.with(|c| c.replace(Some(write)));
        let polled = self.inner.as_mut().poll(cx);
        CURRENT.with(|c| *c.borrow_mut() = outer);
        polled
    }
}

/// The origin and idempotency key of the write being made now, if any (for a client that sends
/// its requests itself: [`OriginClient`](crate::OriginClient), [`send_write`]).
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) fn current_headers() -> Option<(String, String)> {
    CURRENT.with(|c| c.borrow().as_ref().map(|w| (w.origin.clone(), w.key.clone())))
}

/// The write being made now got its answer, with this `sse-position` header.
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) fn current_answered(position: Option<&str>) {
    CURRENT.with(|c| {
        if let Some(w) = c.borrow().as_ref() {
            w.position.set(position.and_then(|p| p.parse().ok()).or(w.position.get()));
        }
    });
}

/// What a write did, for the own changes built on it.
pub(crate) enum Step<'a, I, O> {
    Started(&'a Rc<Write>, &'a I),
    Answered(&'a Rc<Write>, &'a O),
    Failed(&'a Rc<Write>),
}

pub(crate) type Run<I, O, E> = Rc<dyn Fn(I) -> Pin<Box<dyn Future<Output = Result<O, E>>>>>;
pub(crate) type OnStep<I, O> = Rc<dyn Fn(Step<'_, I, O>)>;

/// A write the page makes, shaped like Leptos's `Action`: [`LiveWrite::dispatch`] it, watch
/// [`LiveWrite::pending`] and [`LiveWrite::value`]. Made by [`OwnChanges::write`],
/// [`LiveList::write`](crate::LiveList::write) or [`use_write`].
pub struct LiveWrite<I: 'static, O: 'static, E: 'static> {
    pending: RwSignal<usize>,
    /// The browser's own (a write is made there); `None` while the server renders, whose
    /// render may drop what it made on another thread than the one that made it (a value of
    /// `LocalStorage` may not be).
    local: Option<(RwSignal<Option<Result<O, E>>, LocalStorage>, StoredValue<Rc<dyn Fn(I)>, LocalStorage>)>,
}

impl<I, O, E> Clone for LiveWrite<I, O, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<I, O, E> Copy for LiveWrite<I, O, E> {}

impl<I: 'static, O: 'static, E: 'static> LiveWrite<I, O, E> {
    /// Makes the write with `input`: its own change shows at once, and it is sent (and sent
    /// again with the same idempotency key while it fails as [`WriteOptions::retry_when`] says).
    pub fn dispatch(&self, input: I) {
        if let Some(dispatch) = self.local.and_then(|(_, dispatch)| dispatch.try_get_value()) {
            dispatch(input);
        }
    }

    /// Whether a write is on its way (for a spinner or a disabled button).
    pub fn pending(&self) -> Signal<bool> {
        let pending = self.pending;
        Signal::derive(move || pending.get() > 0)
    }

    /// How many writes are on their way.
    pub fn pending_count(&self) -> ReadSignal<usize> {
        self.pending.read_only()
    }

    /// The last write's result (`None` before one is answered, and while the server renders:
    /// writes are made in the browser).
    pub fn value(&self) -> Signal<Option<Result<O, E>>>
    where
        O: Clone + Send + Sync,
        E: Clone + Send + Sync,
    {
        // A signal of the thread-safe kind: the server's render may drop it on another thread
        // than the one that made it, which a `LocalStorage` one may not be.
        let value = self.local.map(|(value, _)| value);
        Signal::derive(move || value.and_then(|v| v.get()))
    }

    /// The last write's error, if it failed (its change was rolled back).
    pub fn error(&self) -> Signal<Option<E>>
    where
        E: Clone + Send + Sync,
    {
        let value = self.local.map(|(value, _)| value);
        Signal::derive(move || value?.with(|v| v.as_ref().and_then(|r| r.as_ref().err().cloned())))
    }
}

/// How a write is sent.
pub struct WriteOptions<E> {
    retry_when: Option<Rc<dyn Fn(&E) -> bool>>,
}

impl<E> Default for WriteOptions<E> {
    fn default() -> Self {
        Self { retry_when: None }
    }
}

impl<E> WriteOptions<E> {
    /// Sends the write again, with the same idempotency key, while it fails with an error
    /// `transient` passes (the answer was lost, a proxy's 502), waiting as
    /// [`refetch_with_retry`](crate::refetch_with_retry) does; the server answers a repeat of
    /// a write it made with the first answer, so it happens once. The write stays pending
    /// meanwhile.
    pub fn retry_when(mut self, transient: impl Fn(&E) -> bool + 'static) -> Self {
        self.retry_when = Some(Rc::new(transient));
        self
    }
}

/// A write of the page's own, with no own change to show: `run` sends it (a server function
/// with [`OriginClient`](crate::OriginClient), or [`send_write`]), and the page learns where it
/// landed. See [`OwnChanges::write`] for the usual case.
pub fn use_write<I, O, E, Fut>(run: impl Fn(I) -> Fut + 'static, options: WriteOptions<E>) -> LiveWrite<I, O, E>
where
    I: Clone + 'static,
    O: 'static,
    E: 'static,
    Fut: Future<Output = Result<O, E>> + 'static,
{
    make_write(Rc::new(move |input| Box::pin(run(input))), options, Rc::new(|_| {}))
}

pub(crate) fn make_write<I, O, E>(run: Run<I, O, E>, options: WriteOptions<E>, on: OnStep<I, O>) -> LiveWrite<I, O, E>
where
    I: Clone + 'static,
    O: 'static,
    E: 'static,
{
    let pending = RwSignal::new(0usize);
    if !cfg!(feature = "browser") {
        let _ = (run, options, on);
        return LiveWrite { pending, local: None };
    }
    let value = RwSignal::new_local(None::<Result<O, E>>);
    let retry_when = options.retry_when;
    // The app's options (cookies to another origin, its headers) where the write is made.
    let fetch = crate::use_sse::UseSseOptions::default().resolve().fetch();
    let dispatch = move |input: I| {
        let write = Write::new(fetch.clone());
        on(Step::Started(&write, &input));
        pending.update(|n| *n += 1);
        let (run, on, retry_when) = (run.clone(), on.clone(), retry_when.clone());
        let send = async move {
            let attempt = || InWrite { write: write.clone(), inner: Box::pin(run(input.clone())) };
            let result = match &retry_when {
                Some(transient) => crate::recover::refetch_with_retry(attempt, |e| transient(e), |_| {}).await,
                None => attempt().await,
            };
            match &result {
                Ok(out) => {
                    write.answered(write.position.get());
                    on(Step::Answered(&write, out));
                }
                Err(_) => on(Step::Failed(&write)),
            }
            let _ = pending.try_update(|n| *n = n.saturating_sub(1));
            let _ = value.try_set(Some(result));
        };
        leptos::task::spawn_local(send);
    };
    LiveWrite { pending, local: Some((value, StoredValue::new_local(Rc::new(dispatch)))) }
}

/// One own change: the write it belongs to, and what it does to the data.
struct OwnChange<T> {
    write: Rc<Write>,
    change: Rc<dyn Fn(&mut T)>,
}

/// This page's own changes to data of type `T` (a list, a document), kept over the data it
/// fetches until that data holds them. One per piece of data.
pub struct OwnChanges<T: 'static> {
    /// The browser's own; `None` while the server renders (see [`LiveWrite`]'s).
    changes: Option<StoredValue<Rc<RefCell<Vec<OwnChange<T>>>>, LocalStorage>>,
    version: RwSignal<u64>,
}

impl<T> Clone for OwnChanges<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OwnChanges<T> {}

impl<T: 'static> Default for OwnChanges<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> OwnChanges<T> {
    /// No own change yet.
    pub fn new() -> Self {
        let changes = cfg!(feature = "browser").then(|| StoredValue::new_local(Rc::default()));
        Self { changes, version: RwSignal::new(0) }
    }

    /// A write that shows `optimistic(input)` at once, `answered(output)` once its answer
    /// comes, either until the data holds it; rolled back (and its error in
    /// [`LiveWrite::error`]) if it fails. `run` sends it: a server function with
    /// [`OriginClient`](crate::OriginClient), or [`send_write`].
    pub fn write<I, O, E, Fut>(
        &self,
        optimistic: impl Fn(&I, &mut T) + 'static,
        answered: impl Fn(&O, &mut T) + 'static,
        run: impl Fn(I) -> Fut + 'static,
    ) -> LiveWrite<I, O, E>
    where
        I: Clone + 'static,
        O: Clone + 'static,
        E: 'static,
        Fut: Future<Output = Result<O, E>> + 'static,
    {
        self.write_with_options(optimistic, answered, run, WriteOptions::default())
    }

    /// [`OwnChanges::write`] with [`WriteOptions`] (retries).
    pub fn write_with_options<I, O, E, Fut>(
        &self,
        optimistic: impl Fn(&I, &mut T) + 'static,
        answered: impl Fn(&O, &mut T) + 'static,
        run: impl Fn(I) -> Fut + 'static,
        options: WriteOptions<E>,
    ) -> LiveWrite<I, O, E>
    where
        I: Clone + 'static,
        O: Clone + 'static,
        E: 'static,
        Fut: Future<Output = Result<O, E>> + 'static,
    {
        let this = *self;
        let (optimistic, answered) = (Rc::new(optimistic), Rc::new(answered));
        let on: OnStep<I, O> = Rc::new(move |step| match step {
            Step::Started(write, input) => {
                let (optimistic, input) = (optimistic.clone(), input.clone());
                this.put(write, Rc::new(move |data: &mut T| optimistic(&input, data)));
            }
            Step::Answered(write, output) => {
                let (answered, output) = (answered.clone(), output.clone());
                this.put(write, Rc::new(move |data: &mut T| answered(&output, data)));
            }
            Step::Failed(write) => this.remove(write),
        });
        make_write(Rc::new(move |input| Box::pin(run(input))), options, on)
    }

    fn put(&self, write: &Rc<Write>, change: Rc<dyn Fn(&mut T)>) {
        let Some(changes) = self.changes.and_then(|c| c.try_get_value()) else { return };
        {
            let mut changes = changes.borrow_mut();
            match changes.iter_mut().find(|c| Rc::ptr_eq(&c.write, write)) {
                Some(c) => c.change = change,
                None => changes.push(OwnChange { write: write.clone(), change }),
            }
        }
        let _ = self.version.try_update(|v| *v += 1);
    }

    fn remove(&self, write: &Rc<Write>) {
        let Some(changes) = self.changes.and_then(|c| c.try_get_value()) else { return };
        changes.borrow_mut().retain(|c| !Rc::ptr_eq(&c.write, write));
        let _ = self.version.try_update(|v| *v += 1);
    }

    /// `data`, fetched at `floor`, with this page's own changes that it does not hold yet, in
    /// the order they were made. Reactive: call it where the data is shown. Changes that
    /// `floor` covers are forgotten (newer data covers them too).
    pub fn apply(&self, floor: &Floor, mut data: T) -> T {
        self.version.track();
        let Some(changes) = self.changes.and_then(|c| c.try_get_value()) else { return data };
        let mut changes = changes.borrow_mut();
        changes.retain(|c| !floor.covers(&c.write));
        for c in changes.iter() {
            (c.change)(&mut data);
        }
        data
    }

    /// Own changes not yet in the data last applied.
    pub fn len(&self) -> usize {
        self.version.track();
        self.changes.and_then(|c| c.try_get_value()).map_or(0, |c| c.borrow().len())
    }

    /// Whether every own change is in the data last applied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends a REST write with `method` to `url` (with a JSON `body`), as the write being made
/// (its origin and idempotency key; cookies and the app's headers as the stream's options
/// say, [`provide_sse_options`](crate::provide_sse_options)), and gives the answer's body. An
/// error status is a [`FetchError::Status`](crate::FetchError) with the JSON error body's code.
///
/// ```no_run
/// # async fn demo() -> Result<(), leptos_sse_notify::FetchError> {
/// let body = serde_json::json!({ "title": "write the docs" });
/// let created: String = leptos_sse_notify::send_write("POST", "/api/tasks", Some(&body)).await?;
/// # Ok(()) }
/// ```
pub async fn send_write(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
) -> Result<String, crate::FetchError> {
    #[cfg(feature = "browser")]
    {
        let how = CURRENT.with(|c| c.borrow().as_ref().map(|w| w.fetch.clone())).unwrap_or_default();
        crate::fetch::send_write(method, url, body, how).await
    }
    #[cfg(not(feature = "browser"))]
    {
        let _ = (method, url, body);
        Err(crate::FetchError::Network("writes are sent from the browser".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_notify_core::cursor::{LogId, LogPosition};

    fn at(ms: u64) -> Cursor {
        Cursor { log: LogId::new("", 1), position: LogPosition { ms, seq: 0 }, matched: 0 }
    }

    fn floor(seen: Option<u64>, tick: u64) -> Floor {
        Floor { seen: seen.map(|ms| at(ms).to_string()), tick }
    }

    fn write(position: Option<WritePosition>, answered_at: Option<u64>) -> Write {
        Write {
            origin: "o".into(),
            key: "k".into(),
            position: Cell::new(position),
            answered_at: Cell::new(answered_at),
            fetch: Default::default(),
        }
    }

    #[test]
    fn a_write_is_covered_by_data_fetched_at_or_after_it_and_not_before() {
        let placed = write(Some(WritePosition::At(at(100))), None);
        assert!(!floor(Some(99), 5).covers(&placed), "fetched before it: keep the own change");
        assert!(floor(Some(100), 5).covers(&placed) && floor(Some(130), 5).covers(&placed));
        assert!(!floor(None, 5).covers(&placed), "no position to compare, not answered: keep it");
        // Known only from its echo, the answer still on its way: data after it covers it.
        let answered = write(Some(WritePosition::At(at(100))), Some(7));
        assert!(!floor(Some(90), 9).covers(&answered), "comparable positions decide, not ticks");
        assert!(floor(None, 8).covers(&answered) && !floor(None, 7).covers(&answered));
        let deferred = write(Some(WritePosition::Deferred), Some(7));
        assert!(floor(Some(500), 8).covers(&deferred) && !floor(Some(500), 6).covers(&deferred));
        let pending = write(None, None);
        assert!(!floor(Some(u64::MAX), u64::MAX).covers(&pending), "a write in flight is never covered");
    }
}
