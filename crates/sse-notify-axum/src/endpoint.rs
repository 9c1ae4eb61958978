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

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{OriginalUri, Request};
use axum::http::{header, request::Parts, HeaderName, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use bytes::Bytes;
use futures::stream::Stream;
use sse_notify_core::presence::{Member, Roster};
use sse_notify_core::Topic;

use crate::admission::{Admission, ConnectionSlot};
use crate::broker::{distinct_topics, Broker, BrokerError, Signals, Subscription};
use crate::clients::{address_key, ClientLimits, ClientSlot};
use crate::error::ApiError;

use sse_notify_core::wire::HEARTBEAT_EVENT;
pub use sse_notify_core::MAX_TOPICS_PER_CONNECTION;

/// How long EventSource waits before reconnecting (sent as `retry:`).
const RETRY_MS: u64 = 2000;

type AuthorizeFn = dyn Fn(Arc<Parts>, Topic) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;
type PresenceFn = dyn Fn(Arc<Parts>, Topic) -> Pin<Box<dyn Future<Output = Presence> + Send>> + Send + Sync;
type ClientKeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// What a stream is to a topic's presence ([`SseEndpoint::presence`] decides, per request and
/// topic, after `authorize` allowed the topic).
#[derive(Clone, Debug, PartialEq)]
pub enum Presence {
    /// The topic has no presence (its streams get no `presence:*` frames).
    Off,
    /// Sees who is there without being listed (e.g. a visitor not signed in).
    Watch,
    /// Is there as this member, and sees the others.
    Member(Member),
}

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
        let endpoint = Arc::new(Prepared {
            group: self.broker.new_group(),
            heartbeat_frame: Mutex::new(heartbeat_frame()),
            endpoint: self,
        });
        if let Some(every) = endpoint.endpoint.heartbeat {
            spawn_ticker(&endpoint, every, |p| {
                *p.heartbeat_frame.lock().unwrap() = heartbeat_frame();
                Signals::HEARTBEAT
            });
        }
        let decides = endpoint.endpoint.authorize.is_some() || endpoint.endpoint.presence.is_some();
        if let (Some(every), true) = (endpoint.endpoint.recheck, decides) {
            spawn_ticker(&endpoint, every, |_| Signals::RECHECK);
        }
        get(move |req: Request| {
            let endpoint = endpoint.clone();
            async move {
                let metrics = crate::metrics::of(&endpoint.endpoint.broker);
                match endpoint.clone().open(req).await {
                    Ok(resp) => {
                        metrics.connections_opened.inc();
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

/// An endpoint in service: its streams' group and the heartbeat frame of the last tick.
struct Prepared {
    endpoint: SseEndpoint,
    group: u32,
    heartbeat_frame: Mutex<Bytes>,
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
        let last_event_id = last_event_id(&parts.headers, query);
        let client_key = (ep.client_key)(&parts);
        // Only a stream that is re-checked keeps its request head (for its whole life).
        let parts = Arc::new(if ep.recheck.is_some() { detached(parts) } else { parts });
        if let Some(check) = &ep.authorize {
            if let Some(topic) = first_refused(check.as_ref(), &parts, &topics).await {
                return Err(ApiError::forbidden(format!("not allowed to subscribe to topic {:?}", topic.as_str())));
            }
        }
        let presence = match &ep.presence {
            Some(who) => presence_of(who.as_ref(), &parts, &presence_asked).await,
            None => Vec::new(),
        };
        let recheck = match (&ep.authorize, &ep.presence, ep.recheck) {
            (None, None, _) | (_, _, None) => None,
            (check, who, Some(_)) => Some(Recheck {
                check: check.clone(),
                presence: who.clone().map(|who| (who, presence_asked, PresenceVerdict::of(&presence))),
                parts,
                running: None,
            }),
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
            ep.broker.subscribe_present(self.group, &topics, last_event_id.as_deref(), presence).await.map_err(
                |e| match e {
                    BrokerError::TooManyTopics { .. } => ApiError::bad_request("too_many_topics", e.to_string()),
                    _ => ApiError::unavailable("broker_unavailable", e.to_string()),
                },
            )?;

        tracing::debug!(topics = ?topics, resumed = last_event_id.is_some(), "stream opened");
        let mut hello = sse_notify_core::wire::encode_comment("ok");
        hello.push_str(&sse_notify_core::wire::encode_retry(RETRY_MS));
        hello.push('\n');
        // A stream opened after shutdown began starts closed (the broker's hub sees to it), or
        // the graceful shutdown would wait on it forever.
        let body = EventBody {
            hello: Some(Bytes::from(hello)),
            events: subscription,
            heartbeat_due: false,
            recheck,
            done: false,
            endpoint: self.clone(),
            opened: std::time::Instant::now(),
            frames: 0,
            _slots: (slot, client),
        };
        let mut resp = Response::new(Body::from_stream(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        *resp.status_mut() = StatusCode::OK;
        Ok(resp)
    }
}

/// The request's head, copied out of the buffer it was parsed in. A URI or header value that
/// hyper (or the direct reader) parsed is a slice of the connection's read buffer; kept for a
/// stream's whole life (the re-check holds the head), it kept that whole buffer alive: ~12 KiB
/// more per stream on a kept-alive connection, measured from outside the server
/// (`server/tests/memory.rs`).
fn detached(parts: Parts) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method;
    head.uri = parts.uri.to_string().parse().unwrap_or(parts.uri);
    head.version = parts.version;
    head.extensions = parts.extensions;
    // axum keeps the URI as it came (for nested routers) in the extensions: a slice of the
    // buffer too. (Found by measuring: the headers alone were not it.)
    if let Some(OriginalUri(uri)) = head.extensions.get_mut::<OriginalUri>() {
        if let Ok(owned) = uri.to_string().parse() {
            *uri = owned;
        }
    }
    head.headers.reserve(parts.headers.len());
    for (name, value) in &parts.headers {
        let name = HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        head.headers.append(name, copy);
    }
    head
}

/// Parses `topic=a,b&topic=c` into distinct, validated topics (first-seen order).
pub fn topics_from_query(query: &str) -> Result<Vec<Topic>, ApiError> {
    let topics = topics_named(query, "topic")?;
    if topics.is_empty() {
        return Err(ApiError::bad_request("missing_topic", "give at least one topic: ?topic=a,b"));
    }
    if topics.len() > MAX_TOPICS_PER_CONNECTION {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!("{} topics asked; at most {MAX_TOPICS_PER_CONNECTION} per connection", topics.len()),
        ));
    }
    Ok(topics)
}

/// The distinct topics of every `key=` parameter of `query` (comma-separated; the parameter may
/// repeat), in the order given.
fn topics_named(query: &str, key: &str) -> Result<Vec<Topic>, ApiError> {
    let mut seen = BTreeSet::new();
    let mut topics = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != key {
            continue;
        }
        for raw in value.split(',') {
            let topic = Topic::new(raw)
                .map_err(|e| ApiError::bad_request("invalid_topic", format!("{key} {raw:?} is invalid: {e}")))?;
            if seen.insert(topic.clone()) {
                topics.push(topic);
            }
        }
    }
    Ok(topics)
}

/// The topics a stream asks presence of (`?presence=a,b`): of its own `topics` only (a topic
/// it does not follow was not authorized for it), in their order. A stream that asks none gets
/// no presence frames and is listed nowhere: presence is asked for, not pushed.
///
/// ```
/// use sse_notify_axum::endpoint::presence_from_query;
/// use sse_notify_core::Topic;
/// let topics = [Topic::new("board").unwrap(), Topic::new("task:7").unwrap()];
/// let asked = presence_from_query("topic=board,task:7&presence=board,elsewhere", &topics).unwrap();
/// assert_eq!(asked, [Topic::new("board").unwrap()]);
/// assert_eq!(presence_from_query("presence=a%20b", &topics).unwrap_err().code, "invalid_topic");
/// ```
pub fn presence_from_query(query: &str, topics: &[Topic]) -> Result<Vec<Topic>, ApiError> {
    let asked = topics_named(query, "presence")?;
    Ok(topics.iter().filter(|t| asked.contains(t)).cloned().collect())
}

/// The client's resume point: the `Last-Event-ID` header, else `?last_event_id=`. An empty
/// value is no cursor (EventSource sends none before it has seen an id).
fn last_event_id(headers: &axum::http::HeaderMap, query: &str) -> Option<String> {
    let header = headers.get("last-event-id").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let query = || form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "last_event_id").map(|(_, v)| v.into());
    header.filter(|v| !v.is_empty()).or_else(query).filter(|v: &String| !v.is_empty())
}

/// The default client key: the peer address (IPv6 by its /64).
fn peer_address_key(req: &Parts) -> Option<String> {
    let peer = req.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
    Some(address_key(peer.0.ip()))
}

/// The topics with presence, and the member the request is on each.
async fn presence_of(who: &PresenceFn, parts: &Arc<Parts>, topics: &[Topic]) -> Vec<(Topic, Option<Member>)> {
    let mut present = Vec::new();
    for topic in topics {
        match who(parts.clone(), topic.clone()).await {
            Presence::Off => {}
            Presence::Watch => present.push((topic.clone(), None)),
            Presence::Member(m) if m.has_valid_id() => present.push((topic.clone(), Some(m))),
            Presence::Member(m) => {
                tracing::warn!(id = ?m.id, "presence: a member id must be 1-128 bytes without control characters; watching only");
                present.push((topic.clone(), None));
            }
        }
    }
    present
}

/// Reads presence for server-rendered pages ([`SseEndpoint::presence_reader`]).
#[derive(Clone)]
pub struct PresenceReader {
    broker: Broker,
    authorize: Option<Arc<AuthorizeFn>>,
    presence: Option<Arc<PresenceFn>>,
}

impl PresenceReader {
    /// `topic`'s members now (or their number, above `SSE_PRESENCE_MAX_LISTED`), if the
    /// request may see them.
    pub async fn roster(&self, request: Arc<Parts>, topic: Topic) -> Option<Roster> {
        let who = self.presence.as_ref()?;
        if let Some(check) = &self.authorize {
            if !check(request.clone(), topic.clone()).await {
                return None;
            }
        }
        if who(request, topic.clone()).await == Presence::Off {
            return None;
        }
        match self.broker.presence_roster(&topic).await {
            Ok(roster) => Some(roster),
            Err(e) => {
                tracing::warn!(topic = topic.as_str(), error = %e, "presence could not be read");
                None
            }
        }
    }
}

/// The first topic `check` refuses, if any.
async fn first_refused<'a>(check: &AuthorizeFn, parts: &Arc<Parts>, topics: &'a [Topic]) -> Option<&'a Topic> {
    for topic in topics {
        if !check(parts.clone(), topic.clone()).await {
            return Some(topic);
        }
    }
    None
}

fn heartbeat_frame() -> Bytes {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Bytes::from(
        sse_notify_core::wire::encode_event(None, HEARTBEAT_EVENT, &format!("{{\"ts\":{ts}}}")).expect("valid frame"),
    )
}

/// One ticker per endpoint and purpose, shared by all its streams (instead of a timer per
/// stream): every `every`, `tick` runs once and the signal it returns is raised on every stream
/// of the endpoint. It stops once the endpoint is gone.
fn spawn_ticker(endpoint: &Arc<Prepared>, every: Duration, tick: fn(&Prepared) -> Signals) {
    let endpoint = Arc::downgrade(endpoint);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(endpoint) = endpoint.upgrade() else { break };
            let signal = tick(&endpoint);
            endpoint.endpoint.broker.raise(endpoint.group, signal);
        }
    });
}

/// A stream's periodic re-authorization: `authorize` again for every topic, and the presence
/// hook again, whose verdict must be the one the stream opened with (a member who signed out is
/// no longer listed, even on a topic still open to them as a watcher). Either change closes the
/// stream; EventSource reconnects, and the new stream is decided afresh (its presence state
/// included), while the member the old one held leaves with it.
struct Recheck {
    check: Option<Arc<AuthorizeFn>>,
    /// The hook, the topics the stream asked presence of, and what the hook said of them.
    presence: Option<(Arc<PresenceFn>, Vec<Topic>, PresenceVerdict)>,
    parts: Arc<Parts>,
    running: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

/// What the presence hook said of a stream: per topic with presence, the member id it is
/// listed as (`None`: watching). Only ids count: a member's shown fields may change without
/// closing streams.
#[derive(Clone, PartialEq, Eq)]
struct PresenceVerdict(Vec<(Topic, Option<String>)>);

impl PresenceVerdict {
    fn of(present: &[(Topic, Option<Member>)]) -> Self {
        Self(present.iter().map(|(t, m)| (t.clone(), m.as_ref().map(|m| m.id.clone()))).collect())
    }
}

impl Recheck {
    /// Starts a check of `topics`, unless one is still running.
    fn start(&mut self, topics: &[Topic]) {
        if self.running.is_none() {
            let (check, parts, topics) = (self.check.clone(), self.parts.clone(), topics.to_vec());
            let presence = self.presence.clone();
            self.running = Some(Box::pin(async move {
                if let Some(check) = check {
                    if first_refused(check.as_ref(), &parts, &topics).await.is_some() {
                        return false;
                    }
                }
                match presence {
                    Some((who, asked, verdict)) => {
                        PresenceVerdict::of(&presence_of(who.as_ref(), &parts, &asked).await) == verdict
                    }
                    None => true,
                }
            }));
        }
    }

    /// Ready(false) once a check has refused a topic or found the stream's presence changed.
    fn poll_allowed(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Some(running) = &mut self.running else { return Poll::Pending };
        match running.as_mut().poll(cx) {
            Poll::Ready(true) => {
                self.running = None;
                Poll::Pending
            }
            Poll::Ready(false) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The response body of one connection. Its task is woken only through its subscription:
/// events, and the signals of the broker (closing) and of the endpoint's tickers.
struct EventBody {
    hello: Option<Bytes>,
    events: Subscription,
    heartbeat_due: bool,
    recheck: Option<Recheck>,
    done: bool,
    endpoint: Arc<Prepared>,
    /// For the log line when the stream closes (the app's request tracing need not time every
    /// frame of a stream).
    opened: std::time::Instant,
    frames: u64,
    _slots: (ConnectionSlot, Option<ClientSlot>),
}

impl Drop for EventBody {
    fn drop(&mut self) {
        let seconds = self.opened.elapsed().as_secs();
        tracing::debug!(topics = ?self.events.topics(), frames = self.frames, seconds, "stream closed");
    }
}

impl Stream for EventBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(hello) = this.hello.take() {
            return Poll::Ready(Some(Ok(hello)));
        }
        let signals = this.events.take_signals();
        this.heartbeat_due |= signals.contains(Signals::HEARTBEAT);
        if let Some(recheck) = &mut this.recheck {
            if signals.contains(Signals::RECHECK) {
                recheck.start(this.events.topics());
            }
            if let Poll::Ready(false) = recheck.poll_allowed(cx) {
                tracing::info!(topics = ?this.events.topics(), "authorization or presence changed; closing the stream");
                this.done = true;
                return Poll::Ready(None);
            }
        }
        // Heartbeat first: it is rare, and a busy topic must not starve it.
        if std::mem::take(&mut this.heartbeat_due) {
            return Poll::Ready(Some(Ok(this.endpoint.heartbeat_frame.lock().unwrap().clone())));
        }
        match this.events.poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                this.frames += 1;
                Poll::Ready(Some(Ok(frame)))
            }
            // Closed by the broker, or cut off for reading too slowly (after its `resync`):
            // EventSource reconnects.
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(q: &str) -> Result<Vec<String>, ApiError> {
        topics_from_query(q).map(|t| t.into_iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn a_kept_request_head_holds_nothing_of_the_buffer_it_was_parsed_in() {
        // As a server parses it: the URI and header values are slices of one read buffer.
        let mut raw = b"/events?topic=tasks".to_vec();
        raw.resize(16 * 1024, b'x');
        let buffer = Bytes::from(raw);
        let in_buffer = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let uri = axum::http::Uri::from_maybe_shared(buffer.slice(..19)).unwrap();
        let mut req = Request::builder().uri(uri.clone()).body(()).unwrap();
        let value = HeaderValue::from_maybe_shared(buffer.slice(100..110)).unwrap();
        req.headers_mut().insert("x-custom", value);
        req.extensions_mut().insert(OriginalUri(uri));
        let (parts, ()) = req.into_parts();
        assert!(in_buffer(parts.headers["x-custom"].as_bytes().as_ptr()), "the test's head does share it");

        let kept = detached(parts);
        assert!(!in_buffer(kept.headers["x-custom"].as_bytes().as_ptr()));
        assert_eq!(kept.uri, "/events?topic=tasks");
        assert_eq!(
            kept.extensions.get::<OriginalUri>().map(|u| u.0.to_string()).as_deref(),
            Some("/events?topic=tasks")
        );
        assert_eq!(kept.headers["x-custom"], "xxxxxxxxxx");
    }

    #[test]
    fn comma_separated_and_repeated() {
        assert_eq!(names("topic=a,b&topic=c&x=1&topic=a").unwrap(), ["a", "b", "c"]);
        assert_eq!(names("topic=task%3A7").unwrap(), ["task:7"]);
    }

    #[test]
    fn the_header_wins_over_the_query_and_empty_is_none() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(last_event_id(&h, "topic=a&last_event_id=q1"), Some("q1".into()));
        assert_eq!(last_event_id(&h, "last_event_id="), None);
        h.insert("last-event-id", HeaderValue::from_static("h1"));
        assert_eq!(last_event_id(&h, "last_event_id=q1"), Some("h1".into()));
        h.insert("last-event-id", HeaderValue::from_static(""));
        assert_eq!(last_event_id(&h, "last_event_id=q1"), Some("q1".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(names("").unwrap_err().code, "missing_topic");
        assert_eq!(names("topic=").unwrap_err().code, "invalid_topic");
        assert_eq!(names("topic=a,,b").unwrap_err().code, "invalid_topic");
        assert_eq!(names("topic=a%20b").unwrap_err().code, "invalid_topic");
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(names(&format!("topic={}", many.join(","))).unwrap_err().code, "too_many_topics");
        assert!(names(&format!("topic={}", many[..64].join(","))).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn queryish() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                proptest::string::string_regex("(topic=[A-Za-z0-9_.:%, -]{0,30}&?){0,80}").unwrap(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_query_gives_topics_or_a_400(query in queryish()) {
                match topics_from_query(&query) {
                    Ok(topics) => {
                        prop_assert!((1..=MAX_TOPICS_PER_CONNECTION).contains(&topics.len()));
                        let distinct: BTreeSet<_> = topics.iter().collect();
                        prop_assert_eq!(distinct.len(), topics.len());
                    }
                    Err(e) => {
                        prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                        prop_assert!(["missing_topic", "invalid_topic", "too_many_topics"].contains(&e.code));
                    }
                }
            }

            #[test]
            fn any_query_gives_presence_topics_of_the_stream_or_a_400(query in queryish()) {
                let stream: Vec<Topic> = ["a", "b", "task:7"].iter().map(|t| Topic::new(*t).unwrap()).collect();
                let query = query.replace("topic=", "presence=");
                match presence_from_query(&query, &stream) {
                    Ok(asked) => prop_assert!(asked.iter().all(|t| stream.contains(t)) && asked.len() <= stream.len()),
                    Err(e) => prop_assert_eq!((e.status, e.code), (axum::http::StatusCode::BAD_REQUEST, "invalid_topic")),
                }
            }

            #[test]
            fn any_last_event_id_bytes_give_a_cursor_text_or_none(
                header in proptest::collection::vec(any::<u8>(), 0..80),
                query in any::<String>(),
            ) {
                let mut headers = axum::http::HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&header) {
                    headers.insert("last-event-id", v);
                }
                if let Some(id) = last_event_id(&headers, &query) {
                    prop_assert!(!id.is_empty());
                    // Whatever it is, the cursor parser answers (a resync when it is no cursor).
                    let _ = id.parse::<sse_notify_core::cursor::Cursor>();
                }
            }
        }
    }
}
