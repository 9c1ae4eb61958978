//! This tab's origin: sent with its writes, so the events they publish say which tab made them
//! and this tab does not refetch its own change ([`sse_notify_core::origin`]).
//!
//! - Server functions: `#[server(client = OriginClient)]` sends the header with each call.
//! - Your own `fetch` writes: add [`origin_header`] (`sse-origin` with [`tab_origin`]).
//! - The server: `sse_notify_axum::origin::WriterOriginLayer` on the app (server functions),
//!   and `PublishLayer` (REST) read it.
//!
//! A subscription then skips events of its own tab's writes (its cursor still moves on), unless
//! it asked for them with [`crate::UseSseOptions::echo`]. Other tabs, of this browser too, have
//! their own origins and refetch.
//!
//! ```no_run
//! use leptos::prelude::*;
//! use leptos_sse_notify::OriginClient;
//!
//! #[server(client = OriginClient)]
//! async fn rename_note(id: u64, title: String) -> Result<(), ServerFnError> {
//!     Ok(()) // write, then publish: the event names this tab as its writer
//! }
//! ```

use leptos::server_fn::client::browser::BrowserClient;
use leptos::server_fn::client::Client;
use leptos::server_fn::error::FromServerFnError;
use leptos::server_fn::request::browser::BrowserRequest;
use leptos::server_fn::response::browser::BrowserResponse;
pub use sse_notify_core::origin::ORIGIN_HEADER;

/// This tab's origin: 12 random characters of `[A-Za-z0-9]`, made when the page loads (a
/// reloaded or duplicated tab gets a new one). Empty on the server, which has no tab.
pub fn tab_origin() -> &'static str {
    #[cfg(feature = "browser")]
    {
        thread_local! {
            static ORIGIN: &'static str = Box::leak(random_origin().into_boxed_str());
        }
        ORIGIN.with(|o| *o)
    }
    #[cfg(not(feature = "browser"))]
    ""
}

#[cfg(feature = "browser")]
fn random_origin() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..12)
        .map(|_| ALPHABET[(js_sys::Math::random() * ALPHABET.len() as f64) as usize % ALPHABET.len()] as char)
        .collect()
}

/// The header a write sends this tab's origin in, as a `(name, value)` pair for any HTTP client
/// (`None` on the server, which has no tab). Reads need not send it: they publish nothing.
///
/// ```
/// // The headers of a `PUT /api/notes/7`, for whatever client sends it (gloo-net, web-sys...).
/// let mut headers = vec![("content-type", "application/json")];
/// headers.extend(leptos_sse_notify::origin_header());
/// # assert_eq!(headers.len(), 1, "no tab on the server");
/// ```
pub fn origin_header() -> Option<(&'static str, &'static str)> {
    let origin = tab_origin();
    (!origin.is_empty()).then_some((ORIGIN_HEADER, origin))
}

/// Whether a frame id says this tab wrote its event.
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) fn is_own_echo(id: &str) -> bool {
    let own = tab_origin();
    !own.is_empty() && sse_notify_core::cursor::origin_of(id) == Some(own)
}

/// The server functions' browser client, sending this tab's origin with each call: use it as
/// `#[server(client = OriginClient)]` on the server functions that write.
pub struct OriginClient;

impl<E, InputStreamError, OutputStreamError> Client<E, InputStreamError, OutputStreamError> for OriginClient
where
    E: FromServerFnError,
    InputStreamError: FromServerFnError,
    OutputStreamError: FromServerFnError,
{
    type Request = BrowserRequest;
    type Response = BrowserResponse;

    fn send(req: Self::Request) -> impl std::future::Future<Output = Result<Self::Response, E>> + Send {
        let origin = tab_origin();
        if !origin.is_empty() {
            req.headers().set(ORIGIN_HEADER, origin);
        }
        <BrowserClient as Client<E, InputStreamError, OutputStreamError>>::send(req)
    }

    #[allow(clippy::type_complexity)]
    fn open_websocket(
        path: &str,
    ) -> impl std::future::Future<
        Output = Result<
            (
                impl futures::Stream<Item = Result<bytes::Bytes, bytes::Bytes>> + Send + 'static,
                impl futures::Sink<bytes::Bytes> + Send + 'static,
            ),
            E,
        >,
    > + Send {
        <BrowserClient as Client<E, InputStreamError, OutputStreamError>>::open_websocket(path)
    }

    fn spawn(future: impl std::future::Future<Output = ()> + Send + 'static) {
        <BrowserClient as Client<E, InputStreamError, OutputStreamError>>::spawn(future)
    }
}
