//! The adopter's server: its own routes plus the few lines that add sse-notify.

use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use sse_notify_axum::SseApp;

#[tokio::main]
async fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into()).parse().unwrap();
    let options = LeptosOptions::builder().output_name("adopter").site_addr(addr).build();

    let sse = SseApp::from_env().await.expect("sse-notify starts");
    let publisher = sse.broker().publisher();
    let pages = Router::new()
        .leptos_routes_with_context(
            &options,
            generate_route_list(adopter::App),
            move || provide_context(publisher.clone()),
            {
                let options = options.clone();
                move || {
                    view! {
                        <!DOCTYPE html>
                        <html>
                            <head><HydrationScripts options=options.clone() /></head>
                            <body><adopter::App /></body>
                        </html>
                    }
                }
            },
        )
        .with_state(options);
    // Pages carry the stream cursor taken before their data is read; then the stream routes.
    let app = sse.with_start_cursor(pages).merge(sse.routes());
    sse.serve(app, addr).await.expect("serves");
}
