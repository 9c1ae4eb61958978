//! The CRM example over HTTP: signed-cookie sessions, role-based `authorize` on the SSE
//! endpoint, live comments and per-user notifications.

mod common;

use common::*;
use leptos::server_fn::ServerFn;

use client::app::crm::api::{AddComment, ThreadComments};
use common::crm_sign_in as sign_in;

async fn call(app: &TestServer, path: &str, cookie: &str, body: String) -> reqwest::Response {
    http()
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn stream(app: &TestServer, cookie: &str, topics: &str) -> SseClient {
    SseClient::open_with(streaming().get(app.url(&format!("/events?topic={topics}"))).header("cookie", cookie)).await
}

on_both_backends! {
async fn only_the_right_users_hear_a_thread_and_owners_get_notified(cfg) {
    let app = TestServer::demo(cfg.clone()).await;
    let (bob, carol, dave) = (sign_in(&app, 2).await, sign_in(&app, 3).await, sign_in(&app, 4).await);

    // Refused before any stream starts, naming the topic.
    let refused = http().get(app.url("/events?topic=comment_thread:1")).header("cookie", &dave).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("comment_thread:1"));
    assert_eq!(stream(&app, "", "user:2").await.status, 403, "signed out: no user topics");
    assert_eq!(stream(&app, &carol, "user:2").await.status, 403, "nobody hears another user's inbox");
    assert_eq!(stream(&app, "", "tasks").await.status, 200, "the task board stays public");
    let forged = bob.replacen("crm_session=", "crm_session=x", 1);
    assert_eq!(stream(&app, &forged, "comment_thread:1").await.status, 403, "a tampered cookie is nobody");

    let mut bob_thread = stream(&app, &bob, "comment_thread:1,user:2").await;
    assert_eq!(bob_thread.status, 200);
    let mut dave_team = stream(&app, &dave, "workspace:globex").await;
    assert_eq!(dave_team.status, 200);

    // Carol replies in Bob's thread: Bob hears the comment and gets a notification.
    let resp = call(&app, AddComment::PATH, &carol, "thread=1&text=hello%20bob".into()).await;
    assert_eq!(resp.status(), 200);
    let first = bob_thread.expect_event().await;
    let second = bob_thread.expect_event().await;
    let mut got = [(first.event, first.data), (second.event, second.data)];
    got.sort();
    assert_eq!(
        got,
        [
            ("comment:created".to_owned(), r#"{"id":1,"thread":1}"#.to_owned()),
            ("notification:reply".to_owned(), r#"{"by":"carol","comment":1,"thread":1,"user":2}"#.to_owned()),
        ]
    );

    // Dave can neither read the thread nor write to it; his own team's events reach him, Acme's never.
    let read = call(&app, ThreadComments::PATH, &dave, "thread=1".into()).await;
    assert_eq!(read.status(), 403);
    assert!(read.text().await.unwrap().contains("forbidden"));
    let write = call(&app, AddComment::PATH, &dave, "thread=1&text=sneaky".into()).await;
    assert_eq!(write.status(), 403);
    assert_eq!(call(&app, AddComment::PATH, &dave, "thread=3&text=pilot%20note".into()).await.status(), 200);
    let e = dave_team.expect_event().await;
    assert_eq!((e.event.as_str(), e.data.as_str()), ("comment:created", r#"{"id":2,"thread":3}"#));
}
}

on_both_backends! {
async fn the_admin_hears_every_team_and_a_rep_only_his_own(cfg) {
    let app = TestServer::demo(cfg.clone()).await;
    let (alice, dave) = (sign_in(&app, 1).await, sign_in(&app, 4).await);
    // Alice (admin, Acme) may follow Globex's workspace and thread; Dave (rep, Globex) may not
    // follow Acme's workspace.
    let mut alice_globex = stream(&app, &alice, "workspace:globex,comment_thread:3").await.started().await;
    assert_eq!(alice_globex.status, 200);
    let refused = stream(&app, &dave, "workspace:acme").await;
    assert_eq!(refused.status, 403);
    let mut dave_team = stream(&app, &dave, "workspace:globex").await.started().await;

    // Dave comments in his team's thread: both hear it, Alice on both her topics in one frame.
    let resp = call(&app, AddComment::PATH, &dave, "thread=3&text=hi".into()).await;
    assert_eq!(resp.status(), 200);
    let e = alice_globex.expect_event().await;
    assert_eq!(e.event, "comment:created");
    assert_eq!(matched(e.id.as_deref()), 0b11, "workspace:globex and comment_thread:3, once");
    assert_eq!(dave_team.expect_event().await.event, "comment:created");
    // Alice may also read the thread; Dave may not read Acme's.
    assert!(call(&app, ThreadComments::PATH, &alice, "thread=3".into()).await.status().is_success());
    assert!(!call(&app, ThreadComments::PATH, &dave, "thread=1".into()).await.status().is_success());
}
}

/// The demo's settings with a fast re-check and the given session lifetime.
fn quick(session_ttl: std::time::Duration) -> server::app::DemoConfig {
    let recheck = std::time::Duration::from_secs(1);
    server::app::DemoConfig { session_ttl, recheck, ..server::app::DemoConfig::new(test_session_key()) }
}

on_both_backends! {
async fn signing_out_ends_the_session_everywhere_and_closes_its_streams(cfg) {
    let app = TestServer::demo_with(cfg.clone(), quick(std::time::Duration::from_secs(3600))).await;
    let bob = sign_in(&app, 2).await;
    let mut inbox = stream(&app, &bob, "user:2,workspace:acme").await;
    assert_eq!(inbox.status, 200);
    let resp = call(&app, client::app::crm::api::SignOut::PATH, &bob, String::new()).await;
    assert_eq!(resp.status(), 200);
    let removal = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(removal.contains("Max-Age=0"), "the browser drops the cookie: {removal}");
    // A copy of the old cookie (another tab, a stolen one) is nobody now: the session is gone
    // on the server, not only in this browser.
    assert!(inbox.ended_within(std::time::Duration::from_secs(10)).await, "the open stream is closed at the re-check");
    assert_eq!(stream(&app, &bob, "user:2").await.status, 403, "its reconnect is refused");
    let listed = call(&app, ThreadComments::PATH, &bob, "thread=1".into()).await;
    assert!(!listed.status().is_success(), "server functions refuse the old cookie too");
}
}

on_both_backends! {
async fn an_expired_session_is_refused_and_its_streams_closed(cfg) {
    let app = TestServer::demo_with(cfg.clone(), quick(std::time::Duration::from_secs(2))).await;
    let bob = sign_in(&app, 2).await;
    let mut inbox = stream(&app, &bob, "user:2").await;
    assert_eq!(inbox.status, 200, "valid while the session lasts");
    assert!(inbox.ended_within(std::time::Duration::from_secs(15)).await, "closed at the first re-check after expiry");
    assert_eq!(stream(&app, &bob, "user:2").await.status, 403);
}
}

/// A Redis that loses its data (a flush, a restart without persistence) must not make a
/// still-valid signed cookie name the next user's session (the ids once came from `INCR`, and
/// carol's new session got id 1, the one bob's cookie named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_an_old_cookie_names_nobody() {
    let redis = RedisServer::start();
    let app = TestServer::demo(config(Some(&redis))).await;
    let bob = sign_in(&app, 2).await;
    assert_eq!(stream(&app, &bob, "user:2").await.status, 200, "positive control");
    let mut conn = redis.client().get_connection().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    let carol = sign_in(&app, 3).await;
    assert_eq!(stream(&app, &carol, "user:3").await.status, 200);
    assert_eq!(stream(&app, &bob, "user:3").await.status, 403, "bob's cookie opened carol's inbox");
    assert_eq!(stream(&app, &bob, "user:2").await.status, 403, "a lost session is nobody");
}

// A server function's error answers the status its REST twin answers for the same code, not
// 500 for all (found by an outside probe: a client, a proxy or a retry policy took every
// refusal and every bad argument for the server's own failure). The body is the same JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_functions_error_answers_its_status_with_its_json() {
    use client::app::api::{CreateTask, RenameTask};
    use client::app::crm::api::{MyThreads, SignIn};

    let app = TestServer::demo(config(None)).await;
    let carol = sign_in(&app, 3).await;
    let cases: [(&str, &str, String, u16, &str); 6] = [
        (SignIn::PATH, "", "user=99".into(), 404, "not_found"),
        (SignIn::PATH, "", "user=abc".into(), 400, "invalid_arguments"),
        (MyThreads::PATH, "", String::new(), 401, "not_signed_in"),
        (AddComment::PATH, &carol, "thread=1&text=".into(), 422, "invalid_comment"),
        (CreateTask::PATH, "", "title=".into(), 422, "invalid_title"),
        (RenameTask::PATH, "", "id=999999&title=x".into(), 404, "not_found"),
    ];
    for (path, cookie, body, status, code) in cases {
        let resp = call(&app, path, cookie, body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{path} {body}");
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(answer["error"], code, "{path} {body}: {answer}");
    }
    assert_eq!(call(&app, AddComment::PATH, &carol, "thread=1&text=fine".into()).await.status(), 200);
    // A plain HTML form post (no JavaScript) is still sent back to its page.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = no_redirects
        .post(app.url(CreateTask::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .header("referer", app.url("/"))
        .body("title=")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 302);
}
