//! `SseApp`'s routes compose with an app that has its own: nothing panics on merge, nothing is
//! applied to the app that it did not ask for.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use sse_notify_axum::{SseApp, SseConfig};
use tower::ServiceExt;

async fn get_text(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, mut body) = resp.into_parts();
    // A stream never ends: read only its first chunk.
    let text = match body.frame().await {
        Some(Ok(frame)) => {
            String::from_utf8_lossy(frame.data_ref().map(|b| b.as_ref()).unwrap_or_default()).into_owned()
        }
        _ => String::new(),
    };
    (parts.status, parts.headers, text)
}

#[tokio::test]
async fn health_metrics_and_stream_mount_beside_an_apps_own_routes() {
    let sse = SseApp::new(SseConfig::default()).await.unwrap();
    let app: Router = Router::new()
        .route("/health", get(|| async { "the app's own" }))
        .route("/live", sse.endpoint().into_route())
        .nest("/sse", sse.health_routes().merge(sse.metrics_routes()));

    assert_eq!(get_text(&app, "/health", &[]).await.2, "the app's own");
    let (status, _, ready) = get_text(&app, "/sse/health/ready", &[]).await;
    assert_eq!(status, 200);
    assert!(ready.contains("\"ready\""), "{ready}");
    let (status, _, metrics) = get_text(&app, "/sse/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(metrics.lines().any(|l| l == "sse_connections 0"), "{metrics}");
    let (status, headers, first) = get_text(&app, "/live?topic=notes", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(first.starts_with(": ok\n"), "{first:?}");
    // `routes()` at the usual paths would collide with the app's /health: the parts exist so
    // that an app never has to merge that.
    assert_eq!(get_text(&app, "/events?topic=notes", &[]).await.0, 404);
}

#[tokio::test]
async fn cors_is_the_apps_choice() {
    let origin = "http://app.test";
    let config = SseConfig { cors_origins: vec![origin.into()], ..SseConfig::default() };
    let sse = SseApp::new(config).await.unwrap();
    // Without the layer, nothing is added.
    let plain: Router = sse.routes();
    let (_, headers, _) = get_text(&plain, "/health", &[("origin", origin)]).await;
    assert!(!headers.contains_key("access-control-allow-origin"));
    // With it: the listed origin, credentials, GET (and whatever the app adds).
    let cors = sse.cors().expect("CORS_ORIGINS set");
    let app: Router = sse.routes().layer(cors.allow_methods([axum::http::Method::GET, axum::http::Method::PATCH]));
    let preflight = Request::options("/events?topic=a")
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(preflight).await.unwrap();
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], origin);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("PATCH") && methods.contains("GET"), "{methods}");
    assert!(SseApp::new(SseConfig::default()).await.unwrap().cors().is_none(), "off when CORS_ORIGINS is unset");
}

/// The whole answer of a poll (it ends).
async fn poll_text(app: &Router, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), resp.into_body().collect()).await;
    (status, String::from_utf8_lossy(&body.expect("a poll ends").unwrap().to_bytes()).into_owned())
}

// A stream carried by polls (the hook's transport for a bearer token) reaches `authorize` with
// its headers, as any request does: a token decides, and a preflight allows the header.
#[tokio::test]
async fn authorize_sees_a_polls_bearer_token_and_cors_allows_it() {
    let origin = "http://app.test";
    let sse = SseApp::new(SseConfig { cors_origins: vec![origin.into()], ..SseConfig::default() }).await.unwrap();
    let endpoint = sse.endpoint().authorize(|req, topic| async move {
        let bearer = req.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        topic.as_str() != "secret" || bearer == "Bearer let-me-in"
    });
    let app: Router = Router::new().route("/events", endpoint.into_route()).layer(sse.cors().unwrap());

    let (status, _) = poll_text(&app, "/events?topic=secret&poll=1", &[]).await;
    assert_eq!(status, 403, "no token");
    let (status, _) = poll_text(&app, "/events?topic=secret&poll=1", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 403, "a wrong token");
    let (status, body) = poll_text(&app, "/events?topic=secret&poll=1", &[("authorization", "Bearer let-me-in")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("\nid: "), "the cursor to go on from: {body:?}");

    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/events?topic=secret&poll=1")
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization,last-event-id")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(preflight).await.unwrap();
    let allowed = resp.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("last-event-id"), "{allowed}");
}

// A poll sees a topic's presence but is not listed in it: as a member it would join and leave
// with every poll, and the others would see it come and go all the time. A stream is listed.
#[tokio::test]
async fn a_poll_sees_presence_but_is_not_listed_in_it() {
    use sse_notify_axum::core::presence::Member;
    use sse_notify_axum::core::Topic;
    use sse_notify_axum::Presence;
    let sse = SseApp::new(SseConfig::default()).await.unwrap();
    let endpoint =
        sse.endpoint().presence(|_, _| async { Presence::Member(Member::new("bob", serde_json::json!({}))) });
    let app: Router = Router::new().route("/events", endpoint.into_route());
    let room = Topic::new("room").unwrap();
    let listed = || async { sse.broker().presence_roster(&room).await.unwrap().count };

    // A poll without a cursor answers at once with one; the next, from it, waits.
    let (_, first) = poll_text(&app, "/events?topic=room&poll=2", &[]).await;
    let cursor = first.lines().find_map(|l| l.strip_prefix("id: ")).expect("a cursor").to_owned();
    let started = std::time::Instant::now();
    let polling = tokio::spawn({
        let app = app.clone();
        async move { poll_text(&app, "/events?topic=room&presence=room&poll=2", &[("last-event-id", &cursor)]).await }
    });
    // While the poll waits (2 s), nobody is listed.
    for _ in 0..10 {
        assert_eq!(listed().await, 0, "a poll is not a member");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, body) = polling.await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1900), "it waited: {:?}", started.elapsed());
    assert_eq!(status, 200);
    assert!(body.contains("event: presence:state"), "it sees the room: {body:?}");

    // The control: a stream, held open, is listed.
    let req = Request::get("/events?topic=room&presence=room").body(Body::empty()).unwrap();
    let stream = app.clone().oneshot(req).await.unwrap();
    let mut seen = false;
    for _ in 0..50 {
        if listed().await == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "a stream is a member");
    drop(stream);
}
