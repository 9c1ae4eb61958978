//! The demo app's pages: the task board and the CRM comments example, built on
//! `leptos-sse-notify` exactly as any Leptos app would use it.
//!
//! - [`app`]: components, `#[server]` functions, the app's error type; under `ssr` also its
//!   stores and sessions.

pub mod app;

/// WASM entry point: hydrates the server-rendered pages.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
