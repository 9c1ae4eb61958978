//! Refetches that recover. A notification is used up once its refetch starts; a refetch that
//! then fails for a reason that passes (the network is down, a proxy answers 502 during a
//! deploy) would leave the page wrong until the next event. So it is tried again: with backoff,
//! and at once when the page comes back (online, shown, restored, resumed) or its stream opens
//! again. The caller's last good data stays on screen meanwhile (a Resource under a
//! `<Transition>` keeps it while the fetch is pending), marked stale.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use crate::fetch::FetchError;

thread_local! {
    /// Moves whenever the page may have come back: what a waiting retry watches.
    static CAME_BACK: Cell<u64> = const { Cell::new(0) };
}

/// The page came back (online, shown, resumed) or a stream opened again: retries waiting for
/// their backoff go now.
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) fn came_back() {
    CAME_BACK.with(|n| n.set(n.get() + 1));
}

/// The first wait after a failure, doubled after each one up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(15);

/// Whether a failed fetch is worth trying again: the request did not complete, or a server or
/// proxy answered that it could not serve it now (5xx, 408, 429). An answer (a 404, a 403, a
/// body that does not decode) is not: it is the result.
///
/// ```
/// use leptos_sse_notify::{is_transient, FetchError};
/// assert!(is_transient(&FetchError::Network("Failed to fetch".into())));
/// assert!(is_transient(&FetchError::Status { status: 502, code: String::new(), message: String::new() }));
/// assert!(!is_transient(&FetchError::Status { status: 404, code: "not_found".into(), message: String::new() }));
/// ```
pub fn is_transient(error: &FetchError) -> bool {
    match error {
        FetchError::Network(_) => true,
        FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
        FetchError::Decode(_) => false,
    }
}

/// Runs `attempt` until it succeeds, or fails with an error `transient` does not pass. Between
/// tries it waits, 0.5 s doubling to 15 s, or less when the page comes back online or into
/// view, or its stream reopens; `stale` is told `true` while it retries and `false` once it is
/// through. For the Resources of "notify, then fetch": the notification's refetch then ends on
/// the data, however long the network was away. During server rendering it tries once and
/// tells `stale` nothing. Give it `try_set` (as below): the page may be gone when it is through.
///
/// ```no_run
/// use leptos::prelude::*;
/// use leptos_sse_notify::{refetch_with_retry, use_sse, Topic};
/// # leptos_sse_notify::sse_event! {
/// #     #[derive(Clone, Debug)]
/// #     pub enum NoteEvent { Saved { id: u64 } = "note:saved" }
/// #     topics(&self) { vec![Topic::new("notes").unwrap()] }
/// # }
/// #[server]
/// async fn count_notes() -> Result<usize, ServerFnError> {
///     Ok(0)
/// }
///
/// #[component]
/// fn Notes() -> impl IntoView {
///     let live = use_sse::<NoteEvent>(Topic::new("notes").unwrap());
///     let stale = RwSignal::new(false);
///     let count = Resource::new(
///         move || live.version.get(),
///         move |_| refetch_with_retry(count_notes, |e| matches!(e, ServerFnError::Request(_)), move |s| { let _ = stale.try_set(s); }),
///     );
///     view! {
///         <Transition>{move || count.get().map(|n| n.unwrap_or(0))}</Transition>
///         <Show when=move || stale.get()>" (reconnecting…)"</Show>
///     }
/// }
/// ```
pub async fn refetch_with_retry<T, E, F>(
    mut attempt: impl FnMut() -> F,
    transient: impl Fn(&E) -> bool,
    stale: impl Fn(bool),
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let mut wait = FIRST_WAIT;
    loop {
        match attempt().await {
            Err(e) if cfg!(feature = "browser") && transient(&e) => {
                stale(true);
                until_due(wait).await;
                wait = (wait * 2).min(LONGEST_WAIT);
            }
            done => {
                // Nothing to say while the server renders (no retries there): a write from the
                // resource's task can land while the page is still being rendered.
                if cfg!(feature = "browser") {
                    stale(false);
                }
                return done;
            }
        }
    }
}

/// Waits `wait`, or until the page comes back, whichever is first.
async fn until_due(wait: Duration) {
    const STEP: Duration = Duration::from_millis(100);
    let back = CAME_BACK.with(Cell::get);
    let mut waited = Duration::ZERO;
    while waited < wait && CAME_BACK.with(Cell::get) == back {
        sleep(STEP).await;
        waited += STEP;
    }
}

/// Waits `d` (a timer of the page).
#[cfg(feature = "browser")]
pub(crate) async fn sleep(d: Duration) {
    let (done, slept) = futures::channel::oneshot::channel::<()>();
    leptos::leptos_dom::helpers::set_timeout(
        move || {
            let _ = done.send(());
        },
        d,
    );
    let _ = slept.await;
}

#[cfg(not(feature = "browser"))]
async fn sleep(_: Duration) {}
