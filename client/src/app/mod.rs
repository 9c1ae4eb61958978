//! The demo: a collaborative task board that updates live in every open window.

pub mod api;
pub mod crm;
pub mod error;
#[cfg(feature = "ssr")]
pub mod session;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod table;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use leptos_sse_notify::{
    provide_sse_options, refetch_with_retry, use_live_json_with_options, use_presence, use_presence_count, use_sse,
    FetchError, Floor, OwnChanges, SseError, Topic, UseSseOptions, WriteOptions,
};
use shared::tasks::{Task, TaskEvent};
use sse_notify_core::{SseEvent, TopicBuilder};

use error::AppError;

/// A value the server put in Leptos context for server functions (a missing one is a bug of
/// the server's setup: logged, answered as an internal error).
#[cfg(feature = "ssr")]
pub(crate) fn from_context<T: Clone + Send + Sync + 'static>() -> Result<T, AppError> {
    use_context::<T>().ok_or_else(|| AppError::internal(format!("no {} in context", std::any::type_name::<T>())))
}

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
                // `EVENTS_URL`: the pages' streams come from this endpoint (another origin,
                // with the page's cookies) instead of this server's `/events`.
                {std::env::var("EVENTS_URL").ok().filter(|u| !u.is_empty()).map(|url| view! { <meta name="sse-events-url" content=url /> })}
                // `SSE_HEARTBEAT_SECONDS`: how often the server's heartbeat comes, for the pages'
                // watch on their stream (a stream held back on the way is found by it).
                {std::env::var("SSE_HEARTBEAT_SECONDS").ok().filter(|s| !s.is_empty()).map(|every| view! { <meta name="sse-heartbeat" content=every /> })}
                // `PAUSE_WHEN_HIDDEN_SECONDS`: a page hidden this long leaves its stream, and
                // resumes it from its cursor when shown (default 300; 0: never).
                <meta name="sse-pause-when-hidden" content=std::env::var("PAUSE_WHEN_HIDDEN_SECONDS").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "300".to_owned()) />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Where every hook's stream comes from, once for the whole app.
    provide_sse_options(stream_options());
    view! {
        <Stylesheet id="leptos" href="/pkg/taskboard.css" />
        <Title text="Live task board" />
        <Router>
            <nav class="pages">
                <a href="/">"Task board"</a>
                <a href="/crm">"CRM comments"</a>
            </nav>
            <main>
                <Routes fallback=|| "Page not found.">
                    <Route path=path!("/") view=TaskBoard />
                    <Route path=path!("/crm") view=crm::CrmPage />
                </Routes>
            </main>
        </Router>
    }
}

/// Puts `task` in `list`, in place of the task with its id (or at the end).
fn put(list: &mut Vec<Task>, task: &Task) {
    match list.iter_mut().find(|t| t.id == task.id) {
        Some(t) => *t = task.clone(),
        None => list.push(task.clone()),
    }
}

/// Changes the task `id` of `list` in place, if it is there.
fn change(list: &mut [Task], id: u64, f: impl FnOnce(&mut Task)) {
    if let Some(t) = list.iter_mut().find(|t| t.id == id) {
        f(t);
    }
}

/// The id a task being created shows under until its answer names it: counted down from the
/// top, so it meets no stored task's.
pub(crate) fn provisional_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
    NEXT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed)
}

/// The board: a Resource keyed on the `tasks` topic's version refetches on every notification
/// of another tab's change; this tab's own changes show at once, over the list, until a list
/// fetched at or after each write holds it (`OwnChanges`); a write that fails is rolled back
/// and says why; one whose answer was lost is sent again with its idempotency key.
#[component]
fn TaskBoard() -> impl IntoView {
    let live = use_sse::<TaskEvent>(TaskEvent::board_topic());
    let own = OwnChanges::<Vec<Task>>::new();
    let retried = || WriteOptions::default().retry_when(AppError::is_transient);
    let create = own.write_with_options(
        |(title, provisional): &(String, u64), list| {
            list.push(Task { id: *provisional, title: title.clone(), done: false })
        },
        |task: &Task, list| put(list, task),
        |(title, _): (String, u64)| api::create_task(title),
        retried(),
    );
    let rename = own.write_with_options(
        |(id, title): &(u64, String), list| change(list, *id, |t| t.title = title.clone()),
        |task: &Task, list| put(list, task),
        |(id, title): (u64, String)| api::rename_task(id, title),
        retried(),
    );
    let set_done = own.write_with_options(
        |(id, done): &(u64, bool), list| change(list, *id, |t| t.done = *done),
        |task: &Task, list| put(list, task),
        |(id, done): (u64, bool)| api::set_task_done(id, done),
        retried(),
    );
    let delete = own.write_with_options(
        |id: &u64, list: &mut Vec<Task>| list.retain(|t| t.id != *id),
        |id: &u64, list: &mut Vec<Task>| list.retain(|t| t.id != *id),
        api::delete_task,
        retried(),
    );
    let saving = Signal::derive(move || {
        create.pending().get() || rename.pending().get() || set_done.pending().get() || delete.pending().get()
    });
    // The last write that failed (and was rolled back), whichever it was.
    let write_error = RwSignal::new(None::<AppError>);
    for error in [create.error(), rename.error(), set_done.error()] {
        Effect::new(move |_| write_error.set(error.get()));
    }
    Effect::new(move |_| write_error.set(delete.error().get()));
    // A refetch that fails for a passing reason (offline, a proxy's 502 during a deploy) is
    // tried again until it gets through; the last list stays on screen meanwhile, marked stale.
    let stale = RwSignal::new(false);
    let tasks = Resource::new(
        move || live.version.get(),
        move |_| async move {
            // Written only when it changes: a refetch that simply succeeds (every one during
            // server rendering) writes nothing. A write from the resource's task while the page
            // was still being rendered made the server's render read the signal after its owner
            // was gone, now and then, under load (a panic, and the page cut off).
            let mark = move |s| {
                if stale.try_get_untracked() != Some(s) {
                    let _ = stale.try_set(s);
                }
            };
            // Each attempt's floor is taken as it starts: what the list it reads holds.
            let attempt = || async {
                let floor = Floor::now();
                api::list_tasks().await.map(|list| (floor, list))
            };
            refetch_with_retry(attempt, AppError::is_transient, mark).await
        },
    );
    let shown = move || tasks.get().map(|fetched| fetched.map(|(floor, list)| own.apply(&floor, list)));

    let selected = RwSignal::new(None::<u64>);
    let new_title = RwSignal::new(String::new());
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let title = new_title.get_untracked();
        if !title.trim().is_empty() {
            create.dispatch((title, provisional_id()));
            new_title.set(String::new());
        }
    };

    let row = move |task: Task| {
        let id = task.id;
        view! {
            <li data-testid="task" data-id=id data-title=task.title.clone() class:done=task.done>
                <input
                    type="checkbox"
                    data-testid="toggle"
                    checked=task.done
                    on:change=move |ev| set_done.dispatch((id, event_target_checked(&ev)))
                />
                <input
                    type="text"
                    class="title"
                    data-testid="title"
                    maxlength="200"
                    value=task.title.clone()
                    on:change=move |ev| rename.dispatch((id, event_target_value(&ev)))
                />
                <button data-testid="open" title="Follow this task" on:click=move |_| selected.set(Some(id))>
                    "details"
                </button>
                <button data-testid="delete" title="Delete" on:click=move |_| delete.dispatch(id)>
                    "✕"
                </button>
            </li>
        }
    };

    view! {
        <header>
            <h1>"Live task board"</h1>
            <span class="status" data-testid="status" data-status=move || live.status.get().label()>
                {move || live.status.get().label()}
            </span>
            <StreamError error=live.error />
            <Show when=move || stale.get()>
                <span class="stale" data-testid="stale">"showing the last list; retrying"</span>
            </Show>
            <Show when=move || saving.get()>
                <span class="saving" data-testid="saving">"saving…"</span>
            </Show>
        </header>
        {move || write_error.get().map(|e| view! { <p class="error" data-testid="write-error" data-code=e.code.clone()>{e.to_string()}</p> })}
        <WhoIsHere topic=TaskEvent::board_topic() label="On this board: " testid="board-here" />
        <form class="new-task" on:submit=on_submit>
            <input
                type="text"
                data-testid="new-title"
                placeholder="What needs doing?"
                maxlength="200"
                bind:value=new_title
            />
            <button type="submit" data-testid="add">"Add"</button>
        </form>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                shown().map(|result| match result {
                    Ok(list) if list.is_empty() => view! { <p class="empty">"No tasks yet."</p> }.into_any(),
                    Ok(list) => view! { <ul class="tasks">{list.into_iter().map(row).collect_view()}</ul> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                })
            }}
        </Transition>
        {move || selected.get().map(|id| view! { <TaskDetail id on_close=move || selected.set(None) /> })}
    }
}

/// Follows one task on its resource topic `task:{id}` through the REST route: a second
/// subscription on the page (carried by the same EventSource as the board's) that GETs
/// `/api/tasks/{id}` again on each of its events.
#[component]
fn TaskDetail(id: u64, on_close: impl Fn() + Send + Sync + 'static) -> impl IntoView {
    // The board's edits are this tab's own, and this panel is not told of them otherwise.
    let live = use_live_json_with_options::<TaskEvent, Task>(
        TopicBuilder::task(id),
        format!("/api/tasks/{id}"),
        UseSseOptions::default().echo(true),
    );
    let last_event = move || live.sse.latest.get().map(|e| e.name()).unwrap_or("none yet");
    view! {
        <aside class="detail" data-testid="detail" data-id=id>
            <header>
                <h2>"Task #" {id}</h2>
                <button data-testid="close-detail" on:click=move |_| on_close()>"close"</button>
            </header>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    live.data.get().map(|result| match result {
                        Ok(t) => view! {
                            <p data-testid="detail-title">{t.title}</p>
                            <p data-testid="detail-done">{if t.done { "done" } else { "open" }}</p>
                        }.into_any(),
                        Err(FetchError::Status { status: 404, .. }) => {
                            view! { <p data-testid="detail-gone">"This task was deleted."</p> }.into_any()
                        }
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    })
                }}
            </Transition>
            <p class="muted">"Last event on task:" {id} ": " <span data-testid="detail-last">{last_event}</span></p>
            <WhoIsHere topic=TopicBuilder::task(id) label="Has it open: " testid="detail-here" />
        </aside>
    }
}

/// Who is on `topic` now (signed-in users, by name), live, and already in the server-rendered
/// page. Visitors who are not signed in see it without being listed.
#[component]
pub(crate) fn WhoIsHere(
    #[prop(into)] topic: Signal<Topic>,
    label: &'static str,
    testid: &'static str,
) -> impl IntoView {
    let here = use_presence(topic);
    // Above the server's SSE_PRESENCE_MAX_LISTED a room is counted, not listed.
    let count = use_presence_count(topic);
    view! {
        <Transition fallback=|| ()>
            <p class="here" data-testid=testid>
                {label}
                {move || {
                    let members = here.get();
                    if members.is_empty() {
                        return match count.get() {
                            0 => view! { <span class="muted">"nobody signed in"</span> }.into_any(),
                            n => view! { <span data-testid="member-count">{n} " signed in"</span> }.into_any(),
                        };
                    }
                    members
                        .into_iter()
                        .map(|m| {
                            let name = m.info.get("name").and_then(|n| n.as_str()).unwrap_or(&m.id).to_owned();
                            view! { <span class="member" data-testid="member" data-name=name.clone()>{name.clone()}</span> }
                        })
                        .collect_view()
                        .into_any()
                }}
            </p>
        </Transition>
    }
}

/// Why the stream is refused, when it is (`live.error`): the status and code the server
/// answered and its message, which names the topic for a 403. Empty while all is well.
#[component]
pub(crate) fn StreamError(error: Signal<Option<SseError>>) -> impl IntoView {
    move || {
        error.get().map(|e| {
            let (status, code) = match &e {
                SseError::Refused { status, code, .. } => (status.to_string(), code.clone()),
                SseError::Decode { .. } => (String::new(), "decode".to_owned()),
                SseError::Unreachable(_) => (String::new(), "unreachable".to_owned()),
                SseError::HeldBack => (String::new(), "held_back".to_owned()),
            };
            view! {
                <span class="stream-error" data-testid="stream-error" data-http-status=status data-code=code>
                    {e.to_string()}
                </span>
            }
        })
    }
}

/// Where this page's streams come from: this server's `/events`, or the endpoint the server
/// named in `<meta name="sse-events-url">` (`EVENTS_URL`), on another origin, with the page's
/// cookies (that server lists this one in its `CORS_ORIGINS`). Read in the browser only: on the
/// server no stream is opened.
fn stream_options() -> UseSseOptions {
    #[cfg(not(feature = "ssr"))]
    {
        let meta = |name: &str| {
            let found = document().query_selector(&format!("meta[name={name}]")).ok().flatten();
            found.and_then(|m| m.get_attribute("content"))
        };
        let mut options = UseSseOptions::default();
        if let Some(url) = meta("sse-events-url") {
            options = options.events_path(url).with_credentials(true);
        }
        if let Some(seconds) = meta("sse-heartbeat").and_then(|s| s.parse::<u64>().ok()) {
            options = options.heartbeat((seconds > 0).then(|| std::time::Duration::from_secs(seconds)));
        }
        if let Some(seconds) = meta("sse-pause-when-hidden").and_then(|s| s.trim().parse::<u64>().ok()) {
            if seconds > 0 {
                options = options.pause_when_hidden(Some(std::time::Duration::from_secs(seconds)));
            }
        }
        // A page that holds a bearer token (as a single-page app against an API would, in its
        // storage) sends it with its stream, read afresh before each request: a refreshed token
        // goes with the next one.
        let authorization = || window().local_storage().ok().flatten()?.get_item("sse-authorization").ok().flatten();
        if authorization().is_some() {
            options =
                options.headers(move || authorization().map(|a| ("authorization".to_owned(), a)).into_iter().collect());
        }
        options
    }
    #[cfg(feature = "ssr")]
    UseSseOptions::default()
}
