//! The demo app's shared types: what the server and the browser both need to know about the
//! task board ([`tasks`]) and the CRM comments example ([`crm`]): typed events, DTOs, rules.
//!
//! The integration's own types come from `sse_notify_core`; this crate is app code.

pub mod crm;
pub mod tasks;
