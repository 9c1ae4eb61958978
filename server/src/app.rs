//! The demo app's router and settings.

use std::time::Duration;

use axum::handler::HandlerWithoutStateExt;
use axum::http::Method;
use axum::Router;
use client::app::session::SessionKey;
use client::app::store::TaskStore;
use client::app::table::Table;
use client::app::{shell, App};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use shared::crm::{may_subscribe, Comment};
use sse_notify_axum::{error, ConfigError, SseApp};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::tasks;

/// How often open streams are re-authorized (a user removed from a team stops hearing it).
const RECHECK_AUTHORIZATION: Duration = Duration::from_secs(30);

/// The demo's own settings (the integration's are in [`sse_notify_axum::SseConfig`]).
#[derive(Clone)]
pub struct DemoConfig {
    /// `SESSION_SECRET` (32+ bytes): signs the CRM's session cookies. Instances behind one load
    /// balancer need the same one; unset, each process makes a random key.
    pub session: SessionKey,
}

impl DemoConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let session = match std::env::var("SESSION_SECRET").ok().filter(|s| !s.is_empty()) {
            Some(secret) => SessionKey::from_secret(secret.as_bytes()).map_err(|reason| ConfigError {
                var: "SESSION_SECRET",
                value: "(hidden)".into(),
                reason,
            })?,
            None => {
                tracing::warn!("SESSION_SECRET is unset: CRM sessions are signed with a random key of this process");
                SessionKey::random()
            }
        };
        Ok(Self { session })
    }
}

/// The whole demo app: pages and server functions (with the stores, the session key and a
/// publisher in context), the REST API, `/events` (authorized per topic from the session
/// cookie), health, metrics, static files, and a JSON 404 for everything else.
pub fn router(sse: &SseApp, options: LeptosOptions, demo: DemoConfig) -> Router {
    let prefix = &sse.config().topic_prefix;
    let (store, comments) = match sse.broker().redis_connection() {
        Some(conn) => (TaskStore::redis(conn.clone(), prefix), Table::<Comment>::redis(conn, prefix, "crm:comments")),
        None => (TaskStore::memory(), Table::memory()),
    };
    let publisher = sse.broker().publisher();
    let context = {
        let (store, key) = (store.clone(), demo.session.clone());
        move || {
            provide_context(store.clone());
            provide_context(comments.clone());
            provide_context(key.clone());
            provide_context(publisher.clone());
        }
    };
    let key = demo.session;
    let events = sse
        .endpoint()
        .authorize(move |req, topic| {
            let user = key.user(&req.headers);
            async move { may_subscribe(user.as_ref(), &topic) }
        })
        .recheck_authorization(RECHECK_AUTHORIZATION);
    let site_root = options.site_root.to_string();
    let pages = Router::new()
        .leptos_routes_with_context(&options, generate_route_list(App), context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .with_state(options);
    let app = sse
        .with_start_cursor(pages)
        .merge(tasks::routes(sse.broker().clone(), store))
        .merge(sse.routes_with(events))
        .fallback_service(ServeDir::new(site_root).fallback(error::not_found.into_service()))
        .layer(TraceLayer::new_for_http());
    match sse.cors() {
        // The stream needs GET; the REST API takes the rest.
        Some(cors) => app.layer(cors.allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])),
        None => app,
    }
}
