//! The demo app's router and settings.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use client::app::session::{Session, SessionKey, Sessions};
use client::app::store::TaskStore;
use client::app::table::Table;
use client::app::{shell, App};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use leptos_sse_notify::{Member, PresenceSnapshot};
use shared::crm::{has_presence, may_subscribe, Comment};
use sse_notify_axum::clients::address_key;
use sse_notify_axum::origin::WriterOriginLayer;
use sse_notify_axum::IdempotencyLayer;
use sse_notify_axum::Presence;
use sse_notify_axum::{error, ConfigError, ResponseCache, SseApp};
use sse_notify_core::DEFAULT_EVENTS_PATH;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::tasks;

/// The demo's own settings (the integration's are in [`sse_notify_axum::SseConfig`]).
#[derive(Clone)]
pub struct DemoConfig {
    /// `SESSION_SECRET` (32+ bytes): signs the CRM's session cookies. Instances behind one load
    /// balancer need the same one; unset, each process makes a random key.
    pub session: SessionKey,
    /// `SESSION_TTL_SECONDS`: how long a CRM sign-in lasts (default 8 h).
    pub session_ttl: Duration,
    /// `TOKEN_TTL_SECONDS`: how long a bearer token from `POST /api/crm/token` lasts (default
    /// 15 min).
    pub token_ttl: Duration,
    /// `AUTH_RECHECK_SECONDS`: how often open streams are re-authorized, so a user signed out,
    /// expired or removed from a team stops hearing it (default 30 s).
    pub recheck: Duration,
    /// `READ_CACHE` (`on`, the default, or `off`): whether the REST reads are answered from a
    /// response cache until their topics change (`off` measures what it saves).
    pub read_cache: bool,
}

impl DemoConfig {
    /// The defaults, signing with `session`.
    pub fn new(session: SessionKey) -> Self {
        Self {
            session,
            session_ttl: Duration::from_secs(8 * 3600),
            token_ttl: Duration::from_secs(15 * 60),
            recheck: Duration::from_secs(30),
            read_cache: true,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let session = match std::env::var("SESSION_SECRET").ok().filter(|s| !s.is_empty()) {
            Some(secret) => SessionKey::from_secret(secret.as_bytes())
                .map_err(|reason| ConfigError::new("SESSION_SECRET", "(hidden)", reason))?,
            None => {
                tracing::warn!("SESSION_SECRET is unset: CRM sessions are signed with a random key of this process");
                SessionKey::random()
            }
        };
        let d = Self::new(session);
        Ok(Self {
            session_ttl: seconds("SESSION_TTL_SECONDS", d.session_ttl)?,
            token_ttl: seconds("TOKEN_TTL_SECONDS", d.token_ttl)?,
            recheck: seconds("AUTH_RECHECK_SECONDS", d.recheck)?,
            read_cache: switch("READ_CACHE", d.read_cache)?,
            ..d
        })
    }
}

/// `on` or `off` from `var` (or `default` when unset).
fn switch(var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match std::env::var(var).ok().map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()).as_deref() {
        None => Ok(default),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(ConfigError::new(var, other, "must be on or off")),
    }
}

/// A whole number of seconds, at least 1, from `var` (or `default` when unset).
fn seconds(var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(ConfigError::new(var, v, "must be a whole number of seconds, at least 1")),
        },
    }
}

/// The whole demo app: pages and server functions (with the stores, the session key and a
/// publisher in context), the REST API, `/events` (authorized per topic from the session
/// cookie), health, metrics, static files, and a JSON 404 for everything else.
pub fn router(sse: &SseApp, options: LeptosOptions, demo: DemoConfig) -> Router {
    let prefix = &sse.config().broker.topic_prefix;
    let (store, comments, sessions) = match sse.broker().redis_connection() {
        Some(conn) => (
            TaskStore::redis(conn.clone(), prefix),
            Table::<Comment>::redis(conn.clone(), prefix, "crm:comments"),
            Table::<Session>::redis(conn, prefix, "crm:sessions"),
        ),
        None => (TaskStore::memory(), Table::memory(), Table::memory()),
    };
    let sessions = Sessions::new(demo.session, sessions, demo.session_ttl).token_ttl(demo.token_ttl);
    let cache = demo.read_cache.then(|| ResponseCache::new(sse.broker().clone()));
    let crm_api = crate::crm::routes(sessions.clone(), comments.clone(), cache.clone());
    let publisher = sse.publisher();
    let events = sse
        .endpoint()
        .authorize({
            let sessions = sessions.clone();
            move |req, topic| {
                let sessions = sessions.clone();
                async move { may_subscribe(sessions.user(&req.headers).await.as_ref(), &topic) }
            }
        })
        // Signed-in users are on the board, the tasks and the threads they have open, by name;
        // visitors see who is there without being listed.
        .presence({
            let sessions = sessions.clone();
            move |req, topic| {
                let sessions = sessions.clone();
                async move {
                    if !has_presence(&topic) {
                        return Presence::Off;
                    }
                    match sessions.user(&req.headers).await {
                        Some(u) => {
                            Presence::Member(Member::new(u.id.to_string(), serde_json::json!({ "name": u.name })))
                        }
                        None => Presence::Watch,
                    }
                }
            }
        })
        .recheck_authorization(demo.recheck);
    let presence = events.presence_reader();
    let context = {
        let (store, sessions) = (store.clone(), sessions.clone());
        move || {
            provide_context(store.clone());
            provide_context(comments.clone());
            provide_context(sessions.clone());
            provide_context(publisher.clone());
            let presence = presence.clone();
            provide_context(PresenceSnapshot::new(move |request, topic| {
                let presence = presence.clone();
                async move { presence.roster(request, topic).await }
            }));
        }
    };
    let files = ServeDir::new(options.site_root.to_string())
        .append_index_html_on_directories(false)
        .fallback(error::not_found.into_service());
    let pages = Router::new()
        .leptos_routes_with_context(&options, generate_route_list(App), context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .with_state(options);
    // The layers go on as one stack: axum wraps a router's routes once per `Router::layer` call,
    // and each wrapping is cloned for every request (one by one, they made a cached read 13.2
    // µs of server CPU; as one stack, with the store one `Arc`, 10.5 µs: docs/benchmarks.md).
    let layers = ServiceBuilder::new()
        // Every request is traced but the streams': tower-http's trace body reads the clock
        // twice for each frame it passes on (a tenth of the server's CPU at full fan-out), and
        // the endpoint logs its streams' opening and closing itself.
        .layer(TraceLayer::new_for_http())
        // Pages, server functions and the REST API read bodies: those must arrive in time.
        .layer(sse.body_timeout())
        // A write retried with its Idempotency-Key (the board's and the CRM's, by
        // `leptos_sse_notify::write`) happens once, whichever instance the retry reaches.
        // Keys are kept per signed-in user, and per address for visitors (a scope pushes out
        // only its own keys: one visitor writing a lot cannot make another's retry run
        // twice). Outside the origin layer, so a repeat gets the first answer's
        // `sse-position` too; inside the body timeout, since it reads a keyed write's body
        // whole before the handler does.
        .layer(IdempotencyLayer::new(sse.broker(), {
            let sessions = sessions.clone();
            move |parts| {
                let (sessions, headers) = (sessions.clone(), parts.headers.clone());
                let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| address_key(c.0.ip()));
                async move {
                    Some(match sessions.user(&headers).await {
                        Some(user) => format!("user:{}", user.id),
                        None => format!("visitor:{}", peer.unwrap_or_default()),
                    })
                }
            }
        }))
        // A write's events say which tab made it (server functions and REST alike), so that
        // tab does not refetch its own change.
        .layer(WriterOriginLayer);
    let app = sse
        .with_start_cursor(pages)
        .merge(tasks::routes(sse.broker().clone(), store, cache))
        .merge(crm_api)
        .merge(sse.health_routes())
        .merge(sse.metrics_routes())
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(move |req: Request| static_file(files.clone(), req))
        .layer(layers)
        .route(DEFAULT_EVENTS_PATH, events.into_route());
    let app = with_security_headers(app);
    match sse.cors() {
        // The stream needs GET; the REST API takes the rest.
        Some(cors) => app.layer(cors.allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])),
        None => app,
    }
}

/// The longest file name the site root can hold (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;

/// Files under the site root (the WASM bundle, CSS, favicon); everything else is the JSON 404.
/// `files` does not redirect directories to a trailing slash (`//pkg` -> `//pkg/` would send
/// browsers to the host `pkg`), a path segment too long to be a file name is a 404 here, not
/// the 500 the file system's error would give, and so is a method other than GET and HEAD (to
/// which `ServeDir` answers an empty 405: no route takes it here).
async fn static_file<S>(files: S, req: Request) -> Response
where
    S: tower::Service<Request, Error = std::convert::Infallible>,
    S::Response: IntoResponse,
{
    let path = req.uri().path();
    let readable = matches!(*req.method(), Method::GET | Method::HEAD);
    if !readable || path.starts_with("//") || path.split('/').any(|segment| segment.len() > NAME_MAX) {
        return error::not_found(req.uri().clone()).await.into_response();
    }
    match files.oneshot(req).await {
        Ok(resp) => resp.into_response(),
        Err(never) => match never {},
    }
}

/// Headers every answer carries: no MIME sniffing, no framing by other sites (also as CSP
/// `frame-ancestors`), no plugins, no `<base>` from elsewhere, and no full URLs in `Referer`
/// to other origins. Script sources are left to the app (Leptos hydration uses inline scripts).
fn with_security_headers(app: Router) -> Router {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    app.layer(
        ServiceBuilder::new()
            .layer(set(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'; object-src 'none'; base-uri 'self'"))
            .layer(set(header::REFERRER_POLICY, "strict-origin-when-cross-origin"))
            .layer(set(header::X_FRAME_OPTIONS, "DENY"))
            .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
    )
}
