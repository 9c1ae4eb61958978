//! The idempotency layer on the embedded broker: a repeated key runs the handler once, whatever
//! the timing, and within its scope only; a failed first attempt may be retried; what it keeps
//! is bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use http_body_util::BodyExt;
use sse_notify_axum::deadline::BodyDeadlineLayer;
use sse_notify_axum::{Broker, BrokerLimits, IdempotencyLayer, IdempotencyLimits};
use tower::{ServiceBuilder, ServiceExt};

/// A route that counts its runs and answers `{"n": run}`: 500 while `fail` is set, a 100 KB body
/// for the body `big`, a cookie for the body `cookie`, after 300 ms for `slow`;
/// scoped by the `x-user` header.
fn app(limits: IdempotencyLimits) -> (Router, Arc<AtomicUsize>, Arc<AtomicUsize>, IdempotencyLayer) {
    let runs = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicUsize::new(0));
    let broker = Broker::memory(BrokerLimits::default());
    let layer = IdempotencyLayer::with_limits(
        &broker,
        |parts| {
            let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
            async move { user }
        },
        limits,
    );
    let handler = {
        let (runs, fail) = (runs.clone(), fail.clone());
        move |body: String| {
            let (runs, fail) = (runs.clone(), fail.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(if body == "slow" { 300 } else { 0 })).await;
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                if fail.load(Ordering::SeqCst) > 0 {
                    fail.fetch_sub(1, Ordering::SeqCst);
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                let cookie = if body == "cookie" { "s=1" } else { "" };
                // A header that echoes the request (a redirect's Location, say).
                let echo = if body.starts_with("echo:") { body.clone() } else { String::new() };
                let body = if body == "big" { "x".repeat(100_000) } else { format!("{{\"n\":{n}}}") };
                let mut answer = (StatusCode::CREATED, [("sse-position", "deferred")], body).into_response();
                if !cookie.is_empty() {
                    answer.headers_mut().insert("set-cookie", cookie.parse().unwrap());
                }
                if !echo.is_empty() {
                    answer.headers_mut().insert("location", echo.parse().unwrap());
                }
                answer
            }
        }
    };
    let router = Router::new().route("/w", post(handler)).layer(layer.clone());
    (router, runs, fail, layer)
}

async fn send(app: &Router, user: Option<&str>, key: Option<&str>, body: &str) -> (StatusCode, String, bool, bool) {
    let mut req = Request::post("/w");
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let cookie = resp.headers().get("set-cookie").is_some();
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, body, replayed, cookie)
}

#[tokio::test]
async fn a_repeated_key_runs_once_and_answers_the_first_answer() {
    let (app, runs, _, _) = app(IdempotencyLimits::default());
    let first = send(&app, Some("ann"), Some("k1"), "a").await;
    assert_eq!((first.0, first.1.as_str(), first.2), (StatusCode::CREATED, "{\"n\":1}", false));
    let again = send(&app, Some("ann"), Some("k1"), "a").await;
    assert_eq!((again.0, again.1.as_str(), again.2), (StatusCode::CREATED, "{\"n\":1}", true));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Another key, no key: they run.
    assert_eq!(send(&app, Some("ann"), Some("k2"), "a").await.1, "{\"n\":2}");
    assert_eq!(send(&app, Some("ann"), None, "a").await.1, "{\"n\":3}");
    assert_eq!(send(&app, Some("ann"), None, "a").await.1, "{\"n\":4}");

    // The same key for another request: refused, nothing runs.
    let reused = send(&app, Some("ann"), Some("k1"), "b").await;
    assert_eq!(reused.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reused.1.contains("\"error\":\"idempotency_key_reused\""), "{}", reused.1);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

/// Keys are a write's secret within its scope: another user who sends the same key (read off a
/// log, guessed) runs their own write and never sees the first answer; no scope, no memory.
#[tokio::test]
async fn a_key_means_nothing_outside_its_scope() {
    let (app, runs, _, layer) = app(IdempotencyLimits::default());
    send(&app, Some("ann"), Some("shared"), "a").await;
    let bob = send(&app, Some("bob"), Some("shared"), "a").await;
    assert_eq!((bob.1.as_str(), bob.2), ("{\"n\":2}", false), "bob's own write");
    let nobody = send(&app, None, Some("shared"), "a").await;
    assert_eq!((nobody.1.as_str(), nobody.2), ("{\"n\":3}", false));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(layer.len().await, 2, "ann's and bob's; none without a scope");
}

#[tokio::test]
async fn a_repeat_during_the_first_attempt_waits_for_its_answer() {
    let (app, runs, _, _) = app(IdempotencyLimits::default());
    let (a, b) = tokio::join!(send(&app, Some("ann"), Some("k"), "slow"), send(&app, Some("ann"), Some("k"), "slow"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!((a.1.as_str(), b.1.as_str()), ("{\"n\":1}", "{\"n\":1}"));
    assert!(a.2 != b.2, "one ran, one was the replay");

    // Past the wait: 409, and still one run.
    let (app, runs, _, _) = self::app(IdempotencyLimits { wait: Duration::from_millis(50), ..Default::default() });
    let (a, b) = tokio::join!(send(&app, Some("ann"), Some("k"), "slow"), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(&app, Some("ann"), Some("k"), "slow").await
    });
    assert_eq!((a.0, b.0), (StatusCode::CREATED, StatusCode::CONFLICT));
    assert!(b.1.contains("idempotency_key_in_use"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The client goes away while its write runs (the lost answer itself): the write still ends and
/// is kept, and the retry gets its answer instead of waiting on a key that stays pending.
#[tokio::test]
async fn a_write_whose_client_went_away_ends_and_its_retry_gets_the_answer() {
    let (app, runs, _, _) = app(IdempotencyLimits { wait: Duration::from_millis(100), ..Default::default() });
    let gone = tokio::time::timeout(Duration::from_millis(50), send(&app, Some("ann"), Some("k"), "slow")).await;
    assert!(gone.is_err(), "the client stopped waiting");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let retry = send(&app, Some("ann"), Some("k"), "slow").await;
    assert_eq!((retry.0, retry.1.as_str(), retry.2), (StatusCode::CREATED, "{\"n\":1}", true));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_first_attempt_is_forgotten_and_a_large_answer_is_not_run_again() {
    let (app, runs, fail, _) = app(IdempotencyLimits { max_answer: 1000, ..Default::default() });
    fail.store(1, Ordering::SeqCst);
    assert_eq!(send(&app, Some("ann"), Some("k"), "a").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    let retried = send(&app, Some("ann"), Some("k"), "a").await;
    assert_eq!((retried.0, retried.2), (StatusCode::CREATED, false), "the retry ran");
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // An answer too large to keep is still its request's, whole.
    // Headers count: one that echoes a large request makes the answer too large to keep.
    let echoed = format!("echo:{}", "y".repeat(5_000));
    assert_eq!(send(&app, Some("ann"), Some("echo"), &echoed).await.0, StatusCode::CREATED);
    let again = send(&app, Some("ann"), Some("echo"), &echoed).await;
    assert_eq!(again.0, StatusCode::CONFLICT, "not kept, not run: {}", again.1);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let big = send(&app, Some("ann"), Some("big"), "big").await;
    assert_eq!((big.0, big.1.len()), (StatusCode::CREATED, 100_000));
    let again = send(&app, Some("ann"), Some("big"), "big").await;
    assert_eq!(again.0, StatusCode::CONFLICT);
    assert!(again.1.contains("idempotent_answer_not_kept"));
    assert_eq!(runs.load(Ordering::SeqCst), 4, "the large write ran once");
}

#[tokio::test]
async fn bad_keys_and_reads() {
    let (app, runs, _, _) = app(IdempotencyLimits { max_request: 10, ..Default::default() });
    for key in ["", "a b", &"k".repeat(129)] {
        let bad = send(&app, Some("ann"), Some(key), "a").await;
        assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{key:?}");
        assert!(bad.1.contains("bad_idempotency_key"));
    }
    let large = send(&app, Some("ann"), Some("k"), "more than ten bytes").await;
    assert_eq!(large.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// A scope pushes out only its own oldest keys; when everything is held, a new key is refused
/// rather than anyone's forgotten (that would let their retried write run twice).
#[tokio::test]
async fn what_it_keeps_is_bounded_per_scope_and_in_all() {
    let (app, _, _, layer) = app(IdempotencyLimits { max_keys: 120, max_keys_per_scope: 50, ..Default::default() });
    send(&app, Some("bob"), Some("bobs-key"), "a").await;
    for n in 0..300 {
        send(&app, Some("ann"), Some(&format!("key{n}")), "a").await;
    }
    assert_eq!(layer.len().await, 51);
    assert!(send(&app, Some("ann"), Some("key299"), "a").await.2, "ann's newest are kept");
    assert!(send(&app, Some("bob"), Some("bobs-key"), "a").await.2, "bob's key outlived ann's flood");
    for user in 0..3 {
        for n in 0..50 {
            send(&app, Some(&format!("user{user}")), Some(&format!("k{n}")), "a").await;
        }
    }
    let full = send(&app, Some("carol"), Some("k"), "a").await;
    assert_eq!(full.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.1.contains("idempotency_full"), "{}", full.1);
    assert!(send(&app, Some("bob"), Some("bobs-key"), "a").await.2, "and still kept");
}

/// An answer meant for its requester alone (a cookie, `no-store`) is not kept: its repeat is
/// told so and runs nothing; two keys, or the same bytes as another type, are other requests.
#[tokio::test]
async fn private_answers_are_not_kept_and_requests_are_told_apart() {
    let (app, runs, _, _) = app(IdempotencyLimits::default());
    let resp = app
        .clone()
        .oneshot(
            Request::post("/w")
                .header("x-user", "ann")
                .header("idempotency-key", "k")
                .body(Body::from("cookie"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(resp.headers().contains_key("set-cookie"), "the first answer is whole");
    let again = send(&app, Some("ann"), Some("k"), "cookie").await;
    assert_eq!(again.0, StatusCode::CONFLICT, "its cookie makes it private: {}", again.1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let two = app
        .clone()
        .oneshot(
            Request::post("/w")
                .header("x-user", "ann")
                .header("idempotency-key", "k1")
                .header("idempotency-key", "k2")
                .body(Body::from("a"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// As one `ServiceBuilder` stack inside a body timeout (the guide's writes page shows it): a
/// repeat gets the first answer, and a keyed body that stalls is ended by the body timeout
/// around the layer, not by the layer's own 30 s deadline.
#[tokio::test]
async fn it_stacks_inside_a_body_timeout() {
    let broker = Broker::memory(BrokerLimits::default());
    let layer = IdempotencyLayer::new(&broker, |_| async { Some("everyone".to_owned()) });
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = runs.clone();
        move |body: String| {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("{n}:{body}") }
        }
    };
    let app: Router = Router::new()
        .route("/w", post(handler))
        .layer(ServiceBuilder::new().layer(BodyDeadlineLayer::new(Duration::from_millis(200))).layer(layer));
    let keyed = |key: &str, body: Body| Request::post("/w").header("idempotency-key", key).body(body).unwrap();
    let text = |resp: axum::response::Response| async move {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };

    let first = app.clone().oneshot(keyed("k1", Body::from("a"))).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(text(first).await, "1:a");
    let again = app.clone().oneshot(keyed("k1", Body::from("a"))).await.unwrap();
    assert!(again.headers().contains_key("idempotent-replayed"));
    assert_eq!(text(again).await, "1:a");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let stalls = futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")) })
        .chain(futures::stream::pending());
    let started = std::time::Instant::now();
    let ended =
        tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(keyed("k2", Body::from_stream(stalls))))
            .await
            .expect("the body deadline ends a stalled keyed body")
            .unwrap();
    assert_eq!(ended.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(text(ended).await.contains("body_incomplete"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a write whose body never came whole does not run");
}
