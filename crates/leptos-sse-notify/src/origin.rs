//! This tab's origin: a secret sent only with its own writes, so the events they publish carry a
//! tag that this tab alone recognises, and it does not refetch its own change
//! ([`sse_notify_core::origin`]: the ids carry an HMAC of the origin, never the origin, so no one
//! who reads them can make this tab skip a change of theirs).
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

/// This tab's origin: 16 random characters of `[A-Za-z0-9]` (95 bits from the browser's
/// `crypto.getRandomValues`), made when the page loads (a reloaded or duplicated tab gets a new
/// one). A secret of this tab's: send it with its writes only. Empty on the server, which has no
/// tab.
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
    random_token(sse_notify_core::origin::MAX_ORIGIN_LEN)
}

/// `len` random characters of `[A-Za-z0-9]` from the browser's `crypto`: a tab's origin, and
/// each write's own origin and idempotency key ([`crate::write`]).
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    #[cfg_attr(not(feature = "browser"), allow(unused_mut))]
    let mut bytes = vec![0u8; len];
    #[cfg(feature = "browser")]
    {
        let crypto = web_sys::window().and_then(|w| w.crypto().ok());
        let filled = crypto.is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
        if !filled {
            // Every browser that runs WASM has `crypto`; a guessable origin only weakens this
            // tab's own echo skipping, never what other tabs see.
            bytes.iter_mut().for_each(|b| *b = (js_sys::Math::random() * 256.0) as u8);
        }
    }
    // 256 = 4 x 62 + 8: the modulo leans a little towards the first 8 characters, which costs
    // a fraction of a bit of the 95.
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
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

/// Whether a frame id says this tab wrote its event: its echo tag is the one this tab's origin
/// makes ([`sse_notify_core::origin::is_echo_of`]), or one of its writes' ([`crate::write`]).
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
pub(crate) fn is_own_echo(id: &str) -> bool {
    let own = tab_origin();
    let by_tab = !own.is_empty() && sse_notify_core::origin::is_echo_of(id, own);
    crate::write::note_frame(id) || by_tab
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
        // A write made with `crate::write` goes with its own origin and idempotency key.
        match crate::write::current_headers() {
            Some((origin, key)) => {
                req.headers().set(ORIGIN_HEADER, &origin);
                req.headers().set(crate::write::IDEMPOTENCY_KEY_HEADER, &key);
            }
            None => {
                let origin = tab_origin();
                if !origin.is_empty() {
                    req.headers().set(ORIGIN_HEADER, origin);
                }
            }
        }
        let sent = <BrowserClient as Client<E, InputStreamError, OutputStreamError>>::send(req);
        async move {
            let resp = sent.await?;
            // Still polled as the write's (`crate::write::InWrite`): its answer's position.
            let position = resp.generate_headers().get(crate::write::POSITION_HEADER).cloned();
            crate::write::current_answered(position.as_ref().and_then(|p| p.to_str().ok()));
            Ok(resp)
        }
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
