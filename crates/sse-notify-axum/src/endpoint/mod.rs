//! The SSE endpoint: `GET /events?topic=a,b` streams every event of those topics.
//!
//! A client resumes with the last frame's id, as the `Last-Event-ID` header (EventSource sends it
//! when it reconnects) or `?last_event_id=` (a page opening a new stream); the header wins. A
//! bad cursor never fails the request: the stream starts with a `resync` naming its topics.
//!
//! The body is written by hand rather than with `axum::response::Sse`: axum's `Event` encodes
//! each event per connection, while here a frame is encoded once by the broker and the same
//! `Bytes` goes to every connection; the heartbeat frame is likewise built once per tick by a
//! shared ticker instead of a timer per connection.

mod body;
mod group;
mod hooks;
mod kept_head;
mod query;

pub use hooks::{Presence, PresenceReader};
pub use query::{poll_from_query, presence_from_query, topics_from_query, MAX_POLL_SECONDS};
pub use sse_notify_core::MAX_TOPICS_PER_CONNECTION;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request::Parts, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use sse_notify_core::Topic;

use crate::admission::Admission;
use crate::clients::{address_key, ClientLimits};
use crate::error::ApiError;
use body::EventBody;
use group::StreamGroup;
use hooks::{first_refused, presence_of, AuthorizeFn, PresenceFn, Recheck};
use kept_head::KeptHead;
use query::last_event_id;
use sse_notify_broker::{distinct_topics, Broker, BrokerError};

type ClientKeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// Builds the SSE route.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use sse_notify_axum::{Broker, BrokerLimits, SseEndpoint};
/// let broker = Broker::memory(BrokerLimits::default());
/// let app: axum::Router = axum::Router::new().route(
///     "/events",
///     SseEndpoint::new(broker)
///         .heartbeat(Some(std::time::Duration::from_secs(15)))
///         .authorize(|req, topic| async move {
///             // e.g. look the user up from a cookie in req.headers
///             !topic.as_str().starts_with("admin:") || req.headers.contains_key("x-admin")
///         })
///         .into_route(),
/// );
/// # }
/// ```
#[derive(Clone)]
pub struct SseEndpoint {
    broker: Broker,
    admission: Admission,
    fixed_topics: Option<Vec<Topic>>,
    authorize: Option<Arc<AuthorizeFn>>,
    presence: Option<Arc<PresenceFn>>,
    heartbeat: Option<Duration>,
    recheck: Option<Duration>,
    max_connections: usize,
    client_limits: ClientLimits,
    client_key: Arc<ClientKeyFn>,
}

impl SseEndpoint {
    /// An endpoint that takes its topics from `?topic=`, with the default heartbeat
    /// ([`sse_notify_core::DEFAULT_HEARTBEAT_SECONDS`]), no process-wide connection limit, and
    /// the default [`ClientLimits`] per client address.
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            admission: Admission::default(),
            fixed_topics: None,
            authorize: None,
            presence: None,
            heartbeat: Some(Duration::from_secs(sse_notify_core::DEFAULT_HEARTBEAT_SECONDS)),
            recheck: None,
            max_connections: usize::MAX,
            client_limits: ClientLimits::default(),
            client_key: Arc::new(peer_address_key),
        }
    }

    /// Serves these topics whatever the query says (each once, in first-seen order). More than
    /// [`MAX_TOPICS_PER_CONNECTION`] distinct topics cannot be one stream: every request is
    /// then refused with 400 `too_many_topics`, and this logs an error now.
    pub fn topics(mut self, topics: impl IntoIterator<Item = Topic>) -> Self {
        let distinct = distinct_topics(topics);
        if distinct.len() > MAX_TOPICS_PER_CONNECTION {
            tracing::error!(
                topics = distinct.len(),
                "SseEndpoint::topics: more than {MAX_TOPICS_PER_CONNECTION} topics; every stream will be refused"
            );
        }
        self.fixed_topics = Some(distinct);
        self
    }

    /// Asks `check(request, topic)` for every topic before the stream starts; `false` answers 403.
    pub fn authorize<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(Arc<Parts>, Topic) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.authorize = Some(Arc::new(move |parts, topic| Box::pin(check(parts, topic))));
        self
    }

    /// Turns presence on: `who(request, topic)` says, for each topic a stream was authorized
    /// for and asks presence of (`?presence=a,b`, [`presence_from_query`]; the Leptos hook asks
    /// for the topics some `use_presence` shows), whether the topic has presence and who the
    /// requester is there ([`Presence`]). A stream that sees a topic's presence gets
    /// `presence:state` (every member) after any replay and before any live event, then
    /// `presence:join` and `presence:leave`; its member is there until the stream ends (one
    /// member however many streams, tabs or instances). A stream that asks for none gets no
    /// presence frames and lists no one. With [`SseEndpoint::recheck_authorization`], a stream
    /// whose access or presence changed is closed, so its member leaves.
    ///
    /// ```
    /// # use sse_notify_axum::{Broker, BrokerLimits, SseEndpoint};
    /// use sse_notify_axum::endpoint::Presence;
    /// use sse_notify_core::presence::Member;
    /// # let broker = Broker::memory(BrokerLimits::default());
    /// let endpoint = SseEndpoint::new(broker).presence(|req, topic| async move {
    ///     if !topic.as_str().starts_with("board") {
    ///         return Presence::Off;
    ///     }
    ///     match req.headers.get("x-user").and_then(|v| v.to_str().ok()) {
    ///         Some(user) => Presence::Member(Member::new(user, serde_json::json!({ "name": user }))),
    ///         None => Presence::Watch,
    ///     }
    /// });
    /// ```
    pub fn presence<F, Fut>(mut self, who: F) -> Self
    where
        F: Fn(Arc<Parts>, Topic) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Presence> + Send + 'static,
    {
        self.presence = Some(Arc::new(move |parts, topic| Box::pin(who(parts, topic))));
        self
    }

    /// Reads a topic's members for a page rendered on the server, as a stream of the same
    /// request would see them: `None` when `authorize` refuses the topic or it has no presence.
    pub fn presence_reader(&self) -> PresenceReader {
        PresenceReader {
            broker: self.broker.clone(),
            authorize: self.authorize.clone(),
            presence: self.presence.clone(),
        }
    }

    /// Heartbeat interval (`None` = off); the smallest accepted interval is one second.
    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat = every.map(|d| d.max(Duration::from_secs(1)));
        self
    }

    /// Runs `authorize` and the [`SseEndpoint::presence`] hook again for every open stream this
    /// often; a stream whose check now says no, or whose presence changed (a member who signed
    /// out, on a topic still open to watchers), is closed: its reconnect then gets 403, or is
    /// decided afresh, and its member leaves. A user removed from a team stops receiving, and is
    /// no longer listed, within `every`. One shared ticker drives all streams.
    ///
    /// A re-check sees the request's method, URI, version and headers, its `ConnectInfo` and
    /// `OriginalUri`: a stream keeps only those (in one buffer, for its whole life). Other
    /// extensions that the app's layers put on the request are seen when the stream opens,
    /// not at its re-checks (a re-check that read them would decide on what was true then).
    pub fn recheck_authorization(mut self, every: Duration) -> Self {
        self.recheck = Some(every);
        self
    }

    /// Counts this endpoint's streams in `admission`, shared with other endpoints, so that
    /// [`SseEndpoint::max_connections`] and [`SseEndpoint::client_limits`] hold across all of
    /// them ([`crate::SseApp::endpoint`] does this for every endpoint it builds).
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Refuses new streams with 503 once this many are open through its [`Admission`].
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Holds each client to `limits` (429 `too_many_streams_per_client` /
    /// `too_many_topics_per_client` beyond them); [`ClientLimits::UNLIMITED`] turns it off.
    pub fn client_limits(mut self, limits: ClientLimits) -> Self {
        self.client_limits = limits;
        self
    }

    /// Who a request's client is, for [`SseEndpoint::client_limits`]. By default its peer
    /// address (the `ConnectInfo<SocketAddr>` that [`crate::SseApp::serve`] provides; a request
    /// without one is not limited per client). Key by user instead, for example:
    ///
    /// ```
    /// # use sse_notify_axum::{Broker, BrokerLimits, SseEndpoint};
    /// # let broker = Broker::memory(BrokerLimits::default());
    /// let endpoint = SseEndpoint::new(broker).client_key(|req| {
    ///     let user = req.headers.get("x-user-id")?.to_str().ok()?;
    ///     Some(format!("user:{user}"))
    /// });
    /// ```
    pub fn client_key(mut self, key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.client_key = Arc::new(key);
        self
    }

    /// Behind a reverse proxy every request comes from the proxy's address: take the client's
    /// address from this header instead (`X-Forwarded-For`: the last address in it, the one
    /// the trusted proxy added; `X-Real-IP`: the address). Requests without a parseable value
    /// fall back to the peer address. Only set this when a proxy you run sets the header:
    /// otherwise clients choose their own key.
    pub fn client_ip_header(self, name: axum::http::HeaderName) -> Self {
        self.client_key(move |req| {
            let value = req.headers.get_all(&name).iter().next_back()?.to_str().ok()?;
            let last = value.rsplit(',').next()?.trim();
            match last.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(address_key(ip)),
                Err(_) => peer_address_key(req),
            }
        })
    }

    /// The `GET` route. Must be called inside a Tokio runtime (it starts the heartbeat ticker).
    pub fn into_route<S: Clone + Send + Sync + 'static>(self) -> MethodRouter<S> {
        let group = StreamGroup::new(&self.broker);
        if let Some(every) = self.heartbeat {
            group.beat_every(every);
        }
        let decides = self.authorize.is_some() || self.presence.is_some();
        if let (Some(every), true) = (self.recheck, decides) {
            group.recheck_every(every);
        }
        let endpoint = Arc::new(Prepared { endpoint: self, group });
        get(move |req: Request| {
            let endpoint = endpoint.clone();
            async move {
                let metrics = crate::metrics::of(&endpoint.endpoint.broker);
                let poll = req.uri().query().is_some_and(|q| matches!(poll_from_query(q), Ok(Some(_))));
                match endpoint.clone().open(req).await {
                    Ok(resp) => {
                        // Per transport: what a client uses says what its network allows.
                        if poll {
                            metrics.polls.inc();
                        } else {
                            metrics.connections_opened.inc();
                        }
                        resp
                    }
                    Err(e) => {
                        metrics.rejected(e.code);
                        e.into_response()
                    }
                }
            }
        })
        // Any other method: a JSON 405, as every error of the endpoint is.
        .fallback(crate::error::method_not_allowed)
    }
}

/// An endpoint in service, with its streams' group.
struct Prepared {
    endpoint: SseEndpoint,
    group: Arc<StreamGroup>,
}

impl Prepared {
    async fn open(self: Arc<Self>, req: Request) -> Result<Response<Body>, ApiError> {
        let ep = &self.endpoint;
        let (parts, _body) = req.into_parts();
        let query = parts.uri.query().unwrap_or("");
        let topics = match &ep.fixed_topics {
            Some(t) => t.clone(),
            None => topics_from_query(query)?,
        };
        let presence_asked = presence_from_query(query, &topics)?;
        let poll = poll_from_query(query)?;
        let last_event_id = last_event_id(&parts.headers, query);
        let client_key = (ep.client_key)(&parts);
        let parts = Arc::new(parts);
        if let Some(check) = &ep.authorize {
            if let Some(topic) = first_refused(check.as_ref(), &parts, &topics).await {
                return Err(ApiError::forbidden(format!("not allowed to subscribe to topic {:?}", topic.as_str())));
            }
        }
        let mut presence = match &ep.presence {
            Some(who) => presence_of(who.as_ref(), &parts, &presence_asked).await,
            None => Vec::new(),
        };
        if poll.is_some() {
            // A poll sees presence but is not listed in it: as a member it would join and leave
            // with every poll, and the others would see it come and go all the time.
            for (_, member) in &mut presence {
                *member = None;
            }
        }
        let recheck = match (&ep.authorize, &ep.presence, ep.recheck) {
            (None, None, _) | (_, _, None) => None,
            (check, who, Some(_)) => {
                let presence = who.clone().map(|who| (who, presence_asked, presence.as_slice()));
                // Only a stream that is re-checked keeps its request head (for its whole life).
                Some(Recheck::new(check.clone(), presence, KeptHead::of(&parts)))
            }
        };
        if *ep.broker.closing().borrow() {
            return Err(ApiError::unavailable("shutting_down", "the server is shutting down; reconnect"));
        }
        let client = match client_key {
            Some(key) => Some(ep.admission.admit_client(key, &topics, ep.client_limits)?),
            None => None,
        };
        let slot = ep.admission.try_acquire_connection(ep.max_connections).ok_or_else(|| {
            ApiError::unavailable(
                "too_many_connections",
                format!("the server holds its limit of {} streams", ep.max_connections),
            )
        })?;
        let subscription =
            ep.broker.subscribe_present(self.group.id, &topics, last_event_id.as_deref(), presence).await.map_err(
                |e| match e {
                    BrokerError::TooManyTopics { .. } => ApiError::bad_request("too_many_topics", e.to_string()),
                    _ => {
                        // The cause is for the operator's log, not for whoever asked.
                        tracing::warn!(error = %e, "stream refused: the broker is unavailable");
                        ApiError::unavailable("broker_unavailable", "the broker is unavailable; try again shortly")
                    }
                },
            )?;

        tracing::debug!(topics = ?topics, resumed = last_event_id.is_some(), "stream opened");
        // A stream opened after shutdown began starts closed (the broker's hub sees to it), or
        // the graceful shutdown would wait on it forever.
        let body = EventBody::new(subscription, recheck, self.group.clone(), (slot, client), poll);
        let mut resp = Response::new(Body::from_stream(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        *resp.status_mut() = StatusCode::OK;
        Ok(resp)
    }
}

/// The default client key: the peer address (IPv6 by its /64).
fn peer_address_key(req: &Parts) -> Option<String> {
    let peer = req.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
    Some(address_key(peer.0.ip()))
}
