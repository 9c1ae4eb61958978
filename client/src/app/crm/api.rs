//! The CRM's server functions. Every one checks the signed-in user against `shared::crm`'s rules;
//! comment changes publish `CommentEvent`s, and a reply in someone else's thread notifies its owner.

use leptos::prelude::*;
use shared::crm::{Comment, Thread, User};

#[cfg(feature = "ssr")]
pub(crate) mod backend {
    use leptos::prelude::*;
    use shared::crm::{find_thread, Comment, Thread, User};

    use crate::app::from_context;
    use crate::app::session::SessionKey;
    use crate::app::table::Table;

    pub fn comments() -> Result<Table<Comment>, ServerFnError> {
        from_context()
    }

    pub fn key() -> Result<SessionKey, ServerFnError> {
        from_context()
    }

    /// The signed-in user, if any.
    pub fn current_user() -> Result<Option<User>, ServerFnError> {
        let parts: http::request::Parts = from_context()?;
        Ok(key()?.user(&parts.headers))
    }

    pub fn signed_in() -> Result<User, ServerFnError> {
        current_user()?.ok_or_else(|| ServerFnError::new("not signed in"))
    }

    /// The thread, if `user` may see it; "no such thread" otherwise (not telling which).
    pub fn visible_thread(user: &User, id: u64) -> Result<Thread, ServerFnError> {
        find_thread(id)
            .filter(|t| shared::crm::can_view_thread(user, t))
            .ok_or_else(|| ServerFnError::new(format!("forbidden: no thread {id} for {}", user.name)))
    }

    pub fn set_cookie(value: http::HeaderValue) {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.insert_header(http::header::SET_COOKIE, value);
        }
    }

    pub fn no_such_comment() -> ServerFnError {
        ServerFnError::new("no such comment")
    }

    /// The comment the signed-in user may `verb` (its author or an admin, in a visible thread).
    pub async fn changeable_comment(id: u64, verb: &str) -> Result<(Table<Comment>, Comment), ServerFnError> {
        let user = signed_in()?;
        let table = comments()?;
        let comment = table.get(id).await.map_err(failed)?.ok_or_else(no_such_comment)?;
        visible_thread(&user, comment.thread)?;
        if !shared::crm::can_change_comment(&user, &comment) {
            return Err(ServerFnError::new(format!("forbidden: only the author or an admin may {verb} a comment")));
        }
        Ok((table, comment))
    }

    pub fn failed(e: impl std::fmt::Display) -> ServerFnError {
        ServerFnError::new(e.to_string())
    }
}

/// The signed-in user, or `None`.
#[server]
pub async fn me() -> Result<Option<User>, ServerFnError> {
    backend::current_user()
}

/// Signs in as one of the seeded users (a demo: no password).
#[server]
pub async fn sign_in(user: u64) -> Result<User, ServerFnError> {
    let found = shared::crm::find_user(user).ok_or_else(|| ServerFnError::new(format!("no user {user}")))?;
    backend::set_cookie(backend::key()?.sign_in(found.id));
    Ok(found)
}

#[server]
pub async fn sign_out() -> Result<(), ServerFnError> {
    backend::set_cookie(crate::app::session::SessionKey::sign_out());
    Ok(())
}

/// The threads the signed-in user may see.
#[server]
pub async fn my_threads() -> Result<Vec<Thread>, ServerFnError> {
    let user = backend::signed_in()?;
    Ok(shared::crm::threads().into_iter().filter(|t| shared::crm::can_view_thread(&user, t)).collect())
}

/// A thread's comments, oldest first.
#[server]
pub async fn thread_comments(thread: u64) -> Result<Vec<Comment>, ServerFnError> {
    let user = backend::signed_in()?;
    backend::visible_thread(&user, thread)?;
    let all = backend::comments()?.list().await.map_err(backend::failed)?;
    Ok(all.into_iter().filter(|c| c.thread == thread).collect())
}

#[server]
pub async fn add_comment(thread: u64, text: String) -> Result<Comment, ServerFnError> {
    use shared::crm::{normalize_comment, CommentEvent, ReplyNotification};
    let user = backend::signed_in()?;
    let t = backend::visible_thread(&user, thread)?;
    let text = normalize_comment(&text).map_err(ServerFnError::new)?;
    let comment = backend::comments()?
        .insert(|id| Comment { id, thread, author: user.id, text })
        .await
        .map_err(backend::failed)?;
    crate::sse::publish(&CommentEvent::Created { id: comment.id, thread }).await?;
    if t.owner != user.id {
        let note = ReplyNotification { user: t.owner, thread, comment: comment.id, by: user.name.clone() };
        crate::sse::publish(&note).await?;
    }
    Ok(comment)
}

#[server]
pub async fn edit_comment(id: u64, text: String) -> Result<Comment, ServerFnError> {
    use shared::crm::{normalize_comment, CommentEvent};
    let (table, _) = backend::changeable_comment(id, "edit").await?;
    let text = normalize_comment(&text).map_err(ServerFnError::new)?;
    let changes = serde_json::Map::from_iter([("text".to_owned(), text.into())]);
    let comment = table.patch(id, changes).await.map_err(backend::failed)?.ok_or_else(backend::no_such_comment)?;
    crate::sse::publish(&CommentEvent::Updated { id, thread: comment.thread }).await?;
    Ok(comment)
}

#[server]
pub async fn delete_comment(id: u64) -> Result<(), ServerFnError> {
    use shared::crm::CommentEvent;
    let (table, comment) = backend::changeable_comment(id, "delete").await?;
    table.delete(id).await.map_err(backend::failed)?;
    crate::sse::publish(&CommentEvent::Deleted { id, thread: comment.thread }).await
}
