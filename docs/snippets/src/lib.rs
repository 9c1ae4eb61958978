//! The README's and the guide's Rust snippets, compiled (see `build.rs`). Each snippet is written
//! as part of an app; what that app around it has (its event type, its handlers, its session
//! store) is here, in the two modules the frames bring into scope, kept as small as the
//! snippets let them be.

/// What a client-side snippet (a component, a server function, the shared code) finds around it.
pub mod client {
    pub use leptos::prelude::*;
    pub use leptos_sse_notify::*;
    pub use serde::{Deserialize, Serialize};

    sse_event! {
        /// The guide's task events (events.md defines the same).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum TaskEvent {
            Created { id: u64 } = "task:created",
            Updated { id: u64 } = "task:updated",
            Deleted { id: u64 } = "task:deleted",
        }
        topics(&self) { vec![Topic::new("tasks").unwrap(), TopicBuilder::task(self.id())] }
    }

    impl TaskEvent {
        pub fn id(&self) -> u64 {
            let (TaskEvent::Created { id } | TaskEvent::Updated { id } | TaskEvent::Deleted { id }) = self;
            *id
        }
        pub fn board_topic() -> Topic {
            Topic::new("tasks").unwrap()
        }
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Task {
        pub id: u64,
        pub title: String,
    }

    /// The app's error type, as a server function returns it.
    pub type AppError = ServerFnError;

    #[server]
    pub async fn list_tasks() -> Result<Vec<Task>, ServerFnError> {
        Ok(Vec::new())
    }
}

/// What a server-side snippet finds around it: the names of its frame's parameters aside
/// (`sse`, `app`, `my_routes`, `addr`, `sessions`), the app's handlers and access rules. Not
/// `Method` nor axum's `Handler` trait: a snippet that needs them imports them, as its reader must.
pub mod server {
    pub use std::sync::Arc;
    pub use std::time::Duration;

    pub use axum::http::{request::Parts, HeaderMap, StatusCode};
    pub use axum::routing::{get, post};
    pub use axum::{Json, Router};
    pub use leptos::prelude::provide_context;
    pub use leptos_sse_notify::PresenceSnapshot;
    pub use serde_json::json;
    pub use sse_notify_axum::core::presence::Member;
    pub use sse_notify_axum::core::{Topic, TopicBuilder};
    pub use sse_notify_axum::{CacheScope, Presence, PublishLayer, ResponseCache, SseApp};

    pub use super::client::{Task, TaskEvent};

    pub struct User {
        pub id: u64,
        pub name: String,
        pub team: String,
    }

    impl User {
        pub fn is_member_of(&self, workspace: &str) -> bool {
            self.team == workspace
        }
    }

    pub struct Thread {
        pub id: u64,
        pub team: String,
    }

    impl Thread {
        pub fn topic(&self) -> Topic {
            TopicBuilder::comment(self.id)
        }
    }

    /// The app's sessions, shared by its handlers.
    #[derive(Clone)]
    pub struct Sessions;

    impl Sessions {
        pub async fn user(&self, _headers: &HeaderMap) -> Option<User> {
            None
        }
    }

    pub async fn user_from_cookie(_headers: &HeaderMap) -> Option<User> {
        None
    }
    pub fn thread_in(_path: &str) -> Option<Thread> {
        None
    }
    pub fn can_view(user: &User, thread: &Thread) -> bool {
        user.team == thread.team
    }
    /// An `authorize` check.
    pub async fn check(_request: Arc<Parts>, _topic: Topic) -> bool {
        false
    }

    pub async fn list_tasks() -> Json<Vec<Task>> {
        Json(Vec::new())
    }
    pub async fn create(Json(task): Json<Task>) -> (StatusCode, Json<Task>) {
        (StatusCode::CREATED, Json(task))
    }
    pub async fn add_comment(Json(comment): Json<serde_json::Value>) -> (StatusCode, Json<serde_json::Value>) {
        (StatusCode::CREATED, Json(comment))
    }
    pub async fn thread_comments() -> Json<Vec<serde_json::Value>> {
        Json(Vec::new())
    }
}

include!(concat!(env!("OUT_DIR"), "/snippets.rs"));
