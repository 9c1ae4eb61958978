//! The demo task board server. `cargo leptos watch` runs it; see the README and the guide (docs/guide).

use std::process::ExitCode;

use leptos::config::get_configuration;
use sse_notify_axum::SseApp;

#[tokio::main]
async fn main() -> ExitCode {
    sse_notify_axum::init_logging();
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
