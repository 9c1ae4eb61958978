//! The server side of leptos-sse: real-time "notify, then fetch" for Leptos + Axum apps.
//!
//! - [`Broker`]: publish/subscribe over an in-process or a Redis backend.
//! - [`SseEndpoint`]: the `GET /events?topic=a,b` stream (wire contract in `shared::wire`).
//! - [`PublishLayer`]: publishes a plain Axum route's successful JSON response.
//! - [`SseApp`]: one-call setup from the environment ([`SseConfig`]).
//! - From Leptos server functions, publish with `client::sse::publish` once
//!   [`Broker::publisher`] is in context.
//!
//! [`demo`] is the example task board app, kept apart from the integration.

pub mod broker;
pub mod config;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod layer;
pub mod metrics;
pub mod setup;

pub use broker::{Broker, BrokerError, BrokerLimits, Subscription};
pub use config::{ConfigError, SseConfig};
pub use endpoint::SseEndpoint;
pub use error::ApiError;
pub use layer::{PublishContext, PublishLayer};
pub use setup::{SetupError, SseApp};
