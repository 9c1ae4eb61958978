//! Publishing from Leptos server functions.

use leptos::prelude::*;
use shared::{Publisher, SseEvent};

/// Publishes a typed event from inside a `#[server]` function.
///
/// The server provides a [`Publisher`] through Leptos context (`leptos_routes_with_context`);
/// without one this is a server error rather than a silent no-op.
///
/// ```no_run
/// use leptos::prelude::*;
/// use shared::tasks::TaskEvent;
///
/// // In a #[server] function, once the change is stored:
/// async fn task_created(id: u64) -> Result<(), ServerFnError> {
///     client::sse::publish(&TaskEvent::Created { id }).await
/// }
/// ```
pub async fn publish<E: SseEvent>(event: &E) -> Result<(), ServerFnError> {
    let publisher = use_context::<Publisher>()
        .ok_or_else(|| ServerFnError::new("no Publisher in context: provide one with leptos_routes_with_context"))?;
    publisher.publish(event).await.map_err(|e| ServerFnError::new(format!("publish failed: {e}")))
}
