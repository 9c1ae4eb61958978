//! The demo app's server: the task board and the CRM comments example, wired to
//! `sse-notify-axum` through its public API, as any adopter would.
//!
//! - [`app`]: the whole router (pages and server functions, REST, `/events` authorized from the
//!   session cookie, health, metrics, static files, JSON 404s) and [`app::DemoConfig`].
//! - [`tasks`]: `/api/tasks`, the board as plain JSON REST, publishing through `PublishLayer`,
//!   its reads answered from a `ResponseCache`.
//! - [`crm`]: `/api/crm/threads/{id}/comments`, a thread's comments as JSON, cached per team.

pub mod app;
pub mod crm;
pub mod tasks;
