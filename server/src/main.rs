//! The demo task board server. `cargo leptos watch` runs it; see the README.

use std::process::ExitCode;

use leptos::config::get_configuration;
use sse_notify_axum::SseApp;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let options = match get_configuration(None) {
        Ok(conf) => conf.leptos_options,
        Err(e) => {
            tracing::error!("cannot read the Leptos configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sse = match SseApp::from_env().await {
        Ok(sse) => sse,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let demo = match server::app::DemoConfig::from_env() {
        Ok(demo) => demo,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = options.site_addr;
    let app = server::app::router(&sse, options, demo);
    match sse.serve(app, addr).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server error on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
