//! The CRM's server functions. Every one checks the signed-in user against `shared::crm`'s rules;
//! comment changes publish `CommentEvent`s, and a reply in someone else's thread notifies its owner.

use leptos::prelude::*;
use shared::crm::{Comment, Thread, User};

use crate::app::error::AppError;

#[cfg(feature = "ssr")]
pub(crate) mod backend {
    use leptos::prelude::*;
    use shared::crm::{find_thread, Comment, Thread, User};

    use crate::app::error::AppError;
    use crate::app::from_context;
    use crate::app::session::Sessions;
    use crate::app::table::Table;

    pub fn comments() -> Result<Table<Comment>, AppError> {
        from_context()
    }

    pub fn sessions() -> Result<Sessions, AppError> {
        from_context()
    }

    /// The request's headers (the session cookie is in them).
    pub fn request_headers() -> Result<http::HeaderMap, AppError> {
        let parts: http::request::Parts = from_context()?;
        Ok(parts.headers)
    }

    /// The signed-in user, if any.
    pub async fn current_user() -> Result<Option<User>, AppError> {
        Ok(sessions()?.user(&request_headers()?).await)
    }

    pub async fn signed_in() -> Result<User, AppError> {
        current_user().await?.ok_or_else(AppError::not_signed_in)
    }

    /// The thread, if `user` may see it; "no such thread" otherwise (not telling which).
    pub fn visible_thread(user: &User, id: u64) -> Result<Thread, AppError> {
        find_thread(id)
            .filter(|t| shared::crm::can_view_thread(user, t))
            .ok_or_else(|| AppError::forbidden(format!("no thread {id} for {}", user.name)))
    }

    pub fn set_cookie(value: http::HeaderValue) {
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.insert_header(http::header::SET_COOKIE, value);
        }
    }

    pub fn no_such_comment() -> AppError {
        AppError::not_found("no such comment")
    }

    pub fn comment_text(raw: &str) -> Result<String, AppError> {
        shared::crm::normalize_comment(raw).map_err(|m| AppError::new("invalid_comment", m))
    }

    /// The comment the signed-in user may `verb` (its author or an admin, in a visible thread).
    pub async fn changeable_comment(id: u64, verb: &str) -> Result<(Table<Comment>, Comment), AppError> {
        let user = signed_in().await?;
        let table = comments()?;
        let comment = table.get(id).await?.ok_or_else(no_such_comment)?;
        visible_thread(&user, comment.thread)?;
        if !shared::crm::can_change_comment(&user, &comment) {
            return Err(AppError::forbidden(format!("only the author or an admin may {verb} a comment")));
        }
        Ok((table, comment))
    }
}

/// The signed-in user, or `None`.
#[server]
pub async fn me() -> Result<Option<User>, AppError> {
    backend::current_user().await
}

/// Signs in as one of the seeded users (a demo: no password).
#[server]
pub async fn sign_in(user: u64) -> Result<User, AppError> {
    let found = shared::crm::find_user(user).ok_or_else(|| AppError::not_found(format!("no user {user}")))?;
    backend::set_cookie(backend::sessions()?.sign_in(found.id).await?);
    Ok(found)
}

#[server]
pub async fn sign_out() -> Result<(), AppError> {
    backend::set_cookie(backend::sessions()?.sign_out(&backend::request_headers()?).await?);
    Ok(())
}

/// The threads the signed-in user may see.
#[server]
pub async fn my_threads() -> Result<Vec<Thread>, AppError> {
    let user = backend::signed_in().await?;
    Ok(shared::crm::threads().into_iter().filter(|t| shared::crm::can_view_thread(&user, t)).collect())
}

/// A thread's comments, oldest first.
#[server]
pub async fn thread_comments(thread: u64) -> Result<Vec<Comment>, AppError> {
    let user = backend::signed_in().await?;
    backend::visible_thread(&user, thread)?;
    let all = backend::comments()?.list().await?;
    Ok(all.into_iter().filter(|c| c.thread == thread).collect())
}

#[server(client = leptos_sse_notify::OriginClient)]
pub async fn add_comment(thread: u64, text: String) -> Result<Comment, AppError> {
    use leptos_sse_notify::publish;
    use shared::crm::{CommentEvent, ReplyNotification};
    let user = backend::signed_in().await?;
    let t = backend::visible_thread(&user, thread)?;
    let text = backend::comment_text(&text)?;
    let comment = backend::comments()?.insert(|id| Comment { id, thread, author: user.id, text }).await?;
    publish(&CommentEvent::Created { id: comment.id, thread }).await?;
    if t.owner != user.id {
        let note = ReplyNotification { user: t.owner, thread, comment: comment.id, by: user.name.clone() };
        publish(&note).await?;
    }
    Ok(comment)
}

#[server(client = leptos_sse_notify::OriginClient)]
pub async fn edit_comment(id: u64, text: String) -> Result<Comment, AppError> {
    use shared::crm::CommentEvent;
    let (table, _) = backend::changeable_comment(id, "edit").await?;
    let text = backend::comment_text(&text)?;
    let changes = serde_json::Map::from_iter([("text".to_owned(), text.into())]);
    let comment = table.patch(id, changes).await?.ok_or_else(backend::no_such_comment)?;
    leptos_sse_notify::publish(&CommentEvent::Updated { id, thread: comment.thread }).await?;
    Ok(comment)
}

#[server(client = leptos_sse_notify::OriginClient)]
pub async fn delete_comment(id: u64) -> Result<(), AppError> {
    use shared::crm::CommentEvent;
    let (table, comment) = backend::changeable_comment(id, "delete").await?;
    table.delete(id).await?;
    Ok(leptos_sse_notify::publish(&CommentEvent::Deleted { id, thread: comment.thread }).await?)
}
