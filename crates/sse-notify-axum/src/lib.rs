//! The server side of sse-notify: real-time "notify, then fetch" for axum apps (and Leptos apps
//! served by axum), over Server-Sent Events, fanned out across instances by Redis Pub/Sub.
//!
//! - [`Broker`]: publish/subscribe over an in-process or a Redis backend.
//! - [`SseEndpoint`]: the `GET /events?topic=a,b` stream (wire format in [`sse_notify_core::wire`]),
//!   with [`Admission`] deciding who may open one.
//! - [`PublishLayer`]: a tower layer that publishes a route's successful JSON response.
//! - [`ResponseCache`]: a tower layer that keeps a read route's answers until its topics change,
//!   so the refetch wave a notification starts computes each answer once.
//! - [`SseApp`]: one-call setup from the environment ([`SseConfig`]): the broker, the endpoint,
//!   health, readiness and metrics routes, CORS, serving with graceful shutdown.
//! - [`handoff::start_cursor`]: the middleware that lets a server-rendered page resume its stream
//!   from before its data was read.
//! - [`origin::WriterOriginLayer`]: the writing tab's origin on the events its write publishes,
//!   so that tab does not refetch its own change.
//! - [`IdempotencyLayer`]: a write retried with its `Idempotency-Key` happens once, on any
//!   instance.
//! - [`ApiError`]: the JSON error body (`{"error": code, "message": text}`) of every refusal.
//!
//! This crate depends on neither Leptos nor any app. From Leptos server functions, publish
//! through `leptos_sse_notify::publish` once a [`Broker::publisher`] is in Leptos context.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sse_notify_axum::SseApp;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sse = SseApp::from_env().await?; // REDIS_URL unset: the embedded broker
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .merge(sse.routes()); // GET /events, /health, /health/ready, /metrics
//! sse.serve(app, "127.0.0.1:3000".parse()?).await?; // graceful shutdown on Ctrl-C / SIGTERM
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod admission;
pub use sse_notify_broker as broker;
pub mod cache;
pub mod clients;
pub mod config;
pub mod deadline;
mod direct;
pub mod endpoint;
pub mod error;
pub mod handoff;
pub mod health;
pub mod heap_trim;
pub mod idempotency;
pub mod layer;
pub mod metrics;
pub mod origin;
pub mod setup;

pub use admission::Admission;
pub use broker::{Broker, BrokerError, BrokerLimits, Subscription};
#[cfg(feature = "redis")]
pub use broker::{RedisConnection, RedisOptions};
pub use cache::{CacheLimits, CacheScope, ResponseCache};
pub use clients::ClientLimits;
pub use config::{ConfigError, SseConfig};
pub use deadline::BodyTimeout;
pub use endpoint::{Presence, PresenceReader, SseEndpoint};
pub use error::ApiError;
pub use idempotency::{IdempotencyLayer, IdempotencyLimits};
pub use layer::{PublishContext, PublishLayer};
/// The `redis` crate this one is built on ([`Broker::redis_connection`] hands out its types).
#[cfg(feature = "redis")]
pub use redis;
pub use setup::{init_logging, SetupError, SseApp};
/// The core crate (topics, typed events, wire format), re-exported so versions always match.
pub use sse_notify_core as core;

// The crate's README, whose examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
