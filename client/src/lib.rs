//! The browser side of leptos-sse and the demo task board.
//!
//! - [`sse`]: the reusable integration: [`sse::use_sse`] (one shared EventSource per tab) and,
//!   under `ssr`, [`sse::publish`] for server functions.
//! - [`app`]: the demo task board (components, server functions, its task store).

pub mod app;
pub mod sse;

/// WASM entry point: hydrates the server-rendered board.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
