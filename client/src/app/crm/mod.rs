//! The CRM comments example (fastapi-sse-events' second example): users of two teams, threads
//! only the right team can hear, live comments and per-user reply notifications.

pub mod api;

use leptos::prelude::*;
use leptos_sse_notify::{use_sse, use_sse_with_handler, Floor, OwnChanges, UseSseOptions, WriteOptions};
use shared::crm::{find_user, thread_topic, users, CommentEvent, ReplyNotification, Thread, User};
use sse_notify_core::TopicBuilder;

use api::{SignIn, SignOut};
use shared::crm::Comment;

use super::error::AppError;
use super::provisional_id;

/// Puts `c` in `list`, in place of the comment with its id (or at the end).
fn put_comment(list: &mut Vec<Comment>, c: &Comment) {
    match list.iter_mut().find(|x| x.id == c.id) {
        Some(x) => *x = c.clone(),
        None => list.push(c.clone()),
    }
}

#[component]
pub fn CrmPage() -> impl IntoView {
    let sign_in = ServerAction::<SignIn>::new();
    let sign_out = ServerAction::<SignOut>::new();
    let me = Resource::new(move || (sign_in.version().get(), sign_out.version().get()), |_| api::me());
    view! {
        <header>
            <h1>"CRM comments"</h1>
        </header>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                me.get().map(|result| match result {
                    Ok(Some(user)) => view! { <SignedIn user sign_out /> }.into_any(),
                    Ok(None) => view! { <SignInPicker sign_in /> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                })
            }}
        </Transition>
    }
}

#[component]
fn SignInPicker(sign_in: ServerAction<SignIn>) -> impl IntoView {
    view! {
        <p>"Sign in as one of the seeded users:"</p>
        <ul class="users">
            {users()
                .into_iter()
                .map(|u| {
                    let id = u.id;
                    view! {
                        // A form, so that a click before the page has hydrated (a slow
                        // connection, a busy machine) still signs in: the browser posts it to
                        // the server function, which redirects back signed in.
                        <li>
                            <leptos::form::ActionForm action=sign_in attr:class="sign-in">
                                <input type="hidden" name="user" value=id />
                                <button type="submit" data-testid=format!("sign-in-{}", u.name)>
                                    {u.name.clone()}
                                </button>
                            </leptos::form::ActionForm>
                            {format!(" {:?} · {}", u.role, u.team)}
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
}

#[component]
fn SignedIn(user: User, sign_out: ServerAction<SignOut>) -> impl IntoView {
    let threads = Resource::new(|| (), |_| api::my_threads());
    let selected = RwSignal::new(None::<Thread>);
    // Per-user notifications on `user:{id}`: only this user may subscribe to it.
    // Every one of them, in order: `latest` alone keeps only the newest of those that arrive
    // together (a replay after the page was away, a poll's answer).
    let notes = RwSignal::new(Vec::<ReplyNotification>::new());
    let inbox =
        use_sse_with_handler(TopicBuilder::user(user.id), UseSseOptions::default(), move |n: &ReplyNotification| {
            notes.update(|all| all.push(n.clone()))
        });
    view! {
        <p class="whoami">
            "Signed in as " <strong data-testid="whoami">{user.name.clone()}</strong>
            {format!(" ({:?}, {})", user.role, user.team)} " "
            <span class="status" data-testid="status" data-status=move || inbox.status.get().label()>
                {move || inbox.status.get().label()}
            </span> " "
            <super::StreamError error=inbox.error /> " "
            <button data-testid="sign-out" on:click=move |_| { sign_out.dispatch(SignOut {}); }>"sign out"</button>
        </p>
        <ul class="notifications" data-testid="notifications">
            {move || {
                notes
                    .get()
                    .into_iter()
                    .map(|n| {
                        let thread = shared::crm::find_thread(n.thread).map(|t| t.title).unwrap_or_default();
                        view! { <li data-testid="notification">{format!("{} replied in your thread “{thread}”", n.by)}</li> }
                    })
                    .collect_view()
            }}
        </ul>
        <nav class="threads">
            <Transition fallback=|| ()>
                {move || {
                    threads.get().map(|r| {
                        r.unwrap_or_default()
                            .into_iter()
                            .map(|t| {
                                let pick = t.clone();
                                view! {
                                    <button data-testid=format!("thread-{}", t.id) on:click=move |_| selected.set(Some(pick.clone()))>
                                        {t.title.clone()}
                                    </button>
                                }
                            })
                            .collect_view()
                    })
                }}
            </Transition>
        </nav>
        // One thread view for every thread picked: its stream topic is a signal that follows the
        // pick (the hook moves the tab's stream to the new topic), not a view made per thread.
        <Show when=move || selected.with(Option::is_some)>
            <ThreadView thread=Signal::derive(move || selected.get().expect("shown with a thread")) me=user.clone() />
        </Show>
    }
}

/// The picked thread's comments, refetched whenever its `comment_thread:{id}` says something
/// changed. `thread` changes when another thread is picked: the topic follows it.
#[component]
fn ThreadView(thread: Signal<Thread>, me: User) -> impl IntoView {
    let id = Memo::new(move |_| thread.with(|t| t.id));
    let topic = Signal::derive(move || thread_topic(id.get()));
    let live = use_sse::<CommentEvent>(topic);
    // This tab's own comments, edits and deletions show at once, over the thread they belong
    // to, until a list read at or after each holds it; the events of its own writes read
    // nothing again (the server functions say which write they are).
    let own = OwnChanges::<(u64, Vec<Comment>)>::new();
    let retried = || WriteOptions::default().retry_when(AppError::is_transient);
    let me_id = me.id;
    let add = own.write_with_options(
        move |(thread, text, provisional): &(u64, String, u64), (shown, list)| {
            if thread == shown {
                list.push(Comment { id: *provisional, thread: *thread, author: me_id, text: text.clone() });
            }
        },
        |c: &Comment, (shown, list)| {
            if c.thread == *shown {
                put_comment(list, c);
            }
        },
        |(thread, text, _): (u64, String, u64)| api::add_comment(thread, text),
        retried(),
    );
    let edit = own.write_with_options(
        |(cid, text): &(u64, String), (_, list)| {
            if let Some(c) = list.iter_mut().find(|c| c.id == *cid) {
                c.text = text.clone();
            }
        },
        |c: &Comment, (shown, list)| {
            if c.thread == *shown {
                put_comment(list, c);
            }
        },
        |(cid, text): (u64, String)| api::edit_comment(cid, text),
        retried(),
    );
    let delete = own.write_with_options(
        |cid: &u64, (_, list): &mut (u64, Vec<Comment>)| list.retain(|c| c.id != *cid),
        |_: &(), _: &mut (u64, Vec<Comment>)| {},
        api::delete_comment,
        retried(),
    );
    let comments = Resource::new(
        move || (id.get(), live.version.get()),
        move |(id, _)| async move {
            let floor = Floor::now();
            api::thread_comments(id).await.map(|list| (floor, list))
        },
    );
    let shown = move || {
        comments.get().map(|fetched| fetched.map(|(floor, list)| own.apply(&floor, (id.get_untracked(), list)).1))
    };
    let write_error = RwSignal::new(None::<AppError>);
    for error in [add.error(), edit.error()] {
        Effect::new(move |_| write_error.set(error.get()));
    }
    Effect::new(move |_| write_error.set(delete.error().get()));
    let draft = RwSignal::new(String::new());
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = draft.get_untracked();
        if !text.trim().is_empty() {
            add.dispatch((id.get_untracked(), text, provisional_id()));
            draft.set(String::new());
        }
    };
    let admin = me.role == shared::crm::Role::Admin;
    view! {
        <section class="thread" data-testid="thread" data-id=move || id.get()>
            <h2>{move || thread.with(|t| t.title.clone())}</h2>
            <super::WhoIsHere topic label="In this thread: " testid="thread-here" />
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    shown().map(|r| match r {
                        Ok(list) => view! {
                            <ul class="comments">
                                {list
                                    .into_iter()
                                    .map(|c| {
                                        let cid = c.id;
                                        let author = find_user(c.author).map(|u| u.name).unwrap_or_default();
                                        let mine = admin || c.author == me_id;
                                        view! {
                                            <li data-testid="comment" data-text=c.text.clone()>
                                                <span class="author">{author}</span>
                                                <input
                                                    type="text"
                                                    data-testid="comment-text"
                                                    value=c.text.clone()
                                                    disabled=!mine
                                                    on:change=move |ev| edit.dispatch((cid, event_target_value(&ev)))
                                                />
                                                <Show when=move || mine>
                                                    <button data-testid="delete-comment" on:click=move |_| delete.dispatch(cid)>"✕"</button>
                                                </Show>
                                            </li>
                                        }
                                    })
                                    .collect_view()}
                            </ul>
                        }
                        .into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    })
                }}
            </Transition>
            {move || write_error.get().map(|e| view! { <p class="error" data-testid="write-error" data-code=e.code.clone()>{e.to_string()}</p> })}
            <form class="new-task" on:submit=on_submit>
                <input type="text" data-testid="new-comment" placeholder="Write a comment" maxlength="2000" bind:value=draft />
                <button type="submit" data-testid="send">"Send"</button>
            </form>
        </section>
    }
}
