//! The demo task board: the Leptos app, its REST API and its store, wired to the integration.

pub mod tasks;

use axum::handler::HandlerWithoutStateExt;
use axum::Router;
use client::app::store::TaskStore;
use client::app::{shell, App};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::services::ServeDir;

use crate::error;
use crate::setup::SseApp;

/// The whole demo app: pages and server functions (with the store and a publisher in context),
/// the REST API, `/events`, health, static files, and a JSON 404 for everything else.
pub fn router(sse: &SseApp, options: LeptosOptions) -> Router {
    let store = match sse.broker().redis_connection() {
        Some(conn) => TaskStore::redis(conn, &sse.config().topic_prefix),
        None => TaskStore::memory(),
    };
    let publisher = sse.broker().publisher();
    let context = {
        let store = store.clone();
        move || {
            provide_context(store.clone());
            provide_context(publisher.clone());
        }
    };
    let site_root = options.site_root.to_string();
    let pages = Router::new()
        .leptos_routes_with_context(&options, generate_route_list(App), context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .with_state(options);
    pages
        .merge(tasks::routes(sse.broker().clone(), store))
        .merge(sse.routes())
        .fallback_service(ServeDir::new(site_root).fallback(error::not_found.into_service()))
}
