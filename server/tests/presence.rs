//! Presence over HTTP, as the demo's CRM and board use it: who is on a topic, kept live by
//! `presence:*` frames; one member however many streams and instances; only for those the
//! topic's `authorize` allows; gone when the re-check closes the stream or the instance dies.

mod common;

use std::time::{Duration, Instant};

use common::*;
use leptos::server_fn::ServerFn;
use sse_notify_axum::BrokerLimits;
use sse_notify_core::presence::{Members, PresenceFrame};

const THREAD: &str = "comment_thread:1";

/// `cfg` with members of a silent instance kept `ttl`.
fn with_presence_ttl(cfg: sse_notify_axum::SseConfig, ttl: Duration) -> sse_notify_axum::SseConfig {
    sse_notify_axum::SseConfig { broker: BrokerLimits { presence_ttl: ttl, ..cfg.broker }, ..cfg }
}

/// A stream on `topics` that asks their presence (`&presence=`).
async fn stream(app: &TestServer, cookie: &str, topics: &str) -> SseClient {
    let url = app.url(&format!("/events?topic={topics}&presence={topics}"));
    SseClient::open_with(streaming().get(url).header("cookie", cookie)).await
}

/// What a stream has been told of one topic's presence.
struct Seen {
    sse: SseClient,
    topic: &'static str,
    members: Members,
    frames: Vec<PresenceFrame>,
}

impl Seen {
    async fn open(app: &TestServer, cookie: &str, topic: &'static str) -> Self {
        let sse = stream(app, cookie, topic).await;
        assert_eq!(sse.status, 200, "{topic} for {cookie}");
        Self { sse, topic, members: Members::default(), frames: Vec::new() }
    }

    /// Applies presence frames until the members are `names` (by name); panics after 10 s.
    async fn until(&mut self, names: &[&str]) {
        self.until_seen(Duration::from_secs(10), &format!("{names:?}"), |s| s.names() == names).await;
    }

    /// Applies presence frames until `done` says so; panics after `within`, naming `what`.
    async fn until_seen(&mut self, within: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            let left = deadline.checked_duration_since(Instant::now());
            let e = match left {
                Some(left) => self.sse.next_any(left).await,
                None => None,
            };
            let Some(e) = e else {
                panic!("{}: members {:?}, never {what}; frames {:?}", self.topic, self.names(), self.frames)
            };
            if let Some(frame) = PresenceFrame::decode(&e.event, &e.data) {
                assert_eq!(frame.topic(), self.topic);
                assert!(e.id.is_none(), "a presence frame has no id: {e:?}");
                self.members.apply(&frame);
                self.frames.push(frame);
            }
        }
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> =
            self.members.list().iter().map(|m| m.info["name"].as_str().unwrap().to_owned()).collect();
        n.sort();
        n
    }
}

async fn open_streams(app: &TestServer) -> f64 {
    metric_value(&app.metrics().await, "sse_connections").unwrap()
}

/// bob on `a`, carol on `b` (the same instance on the embedded broker): they see each other
/// come and go; dave, of another team, is refused the thread and sees nothing of it.
async fn bob_and_carol_see_each_other_and_dave_sees_neither(a: &TestServer, b: &TestServer) {
    let (bob, carol, dave) = (crm_sign_in(a, 2).await, crm_sign_in(b, 3).await, crm_sign_in(b, 4).await);
    let alice = crm_sign_in(a, 1).await;
    let mut bob_sees = Seen::open(a, &bob, THREAD).await;
    bob_sees.until(&["bob"]).await;
    assert!(matches!(bob_sees.frames[0], PresenceFrame::State { .. }), "the whole set first: {:?}", bob_sees.frames);

    let mut carol_sees = Seen::open(b, &carol, THREAD).await;
    carol_sees.until(&["bob", "carol"]).await; // carol sees bob: the positive control
    bob_sees.until(&["bob", "carol"]).await;

    // dave may not follow the thread: no stream, so no presence; and nobody sees him there.
    assert_eq!(stream(b, &dave, THREAD).await.status, 403, "dave is refused Acme's thread");
    let mut dave_board = Seen::open(b, &dave, "tasks").await;
    dave_board.until(&["dave"]).await;

    // One member however many streams: bob opens a second stream on `b`; closing his first
    // leaves him there. alice's frames after that are carol's leave, which `a` sends after
    // handling the end of bob's first stream: a leave of bob would come before it.
    let mut alice_sees = Seen::open(a, &alice, THREAD).await;
    alice_sees.until(&["alice", "bob", "carol"]).await;
    let mut bob_again = Seen::open(b, &bob, THREAD).await;
    bob_again.until(&["alice", "bob", "carol"]).await;
    let before = open_streams(a).await;
    drop(bob_sees);
    let mut waited = 0;
    while open_streams(a).await >= before && waited < 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert!(open_streams(a).await < before, "bob's first stream ended on a");
    drop(carol_sees);
    alice_sees.until(&["alice", "bob"]).await;
    let leaves: Vec<_> = alice_sees.frames.iter().filter(|f| matches!(f, PresenceFrame::Leave { .. })).collect();
    assert_eq!(leaves.len(), 1, "only carol left: {leaves:?}");
    drop(bob_again);
    alice_sees.until(&["alice"]).await;
}

on_both_backends! {
// Presence is asked for, not pushed: bob's stream on the thread that does not ask gets no
// presence frame and lists him nowhere, while carol's, which asks, sees only herself; the
// topic's events reach both. (Before, every stream of a presence topic got every frame, and
// every signed-in stream was a member.)
async fn a_stream_that_does_not_ask_for_presence_gets_none_and_is_not_listed(cfg) {
    let app = TestServer::demo(cfg).await;
    let (bob, carol) = (crm_sign_in(&app, 2).await, crm_sign_in(&app, 3).await);
    let mut bob_plain = SseClient::open_with(
        streaming().get(app.url(&format!("/events?topic={THREAD}"))).header("cookie", &bob),
    )
    .await;
    assert_eq!(bob_plain.status, 200);
    let mut carol_sees = Seen::open(&app, &carol, THREAD).await;
    carol_sees.until(&["carol"]).await;
    let added = http()
        .post(app.url(client::app::crm::api::AddComment::PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &carol)
        .body("thread=1&text=hello")
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    let mut names = Vec::new();
    while !names.iter().any(|n: &String| n == "comment:created") {
        let e = bob_plain.next_any(Duration::from_secs(5)).await.expect("the comment reaches bob's stream");
        names.push(e.event);
    }
    assert!(names.iter().all(|n| !n.starts_with("presence:")), "bob asked for no presence: {names:?}");
    // A new stream's state after the same event: still only carol (bob would be listed first).
    let mut fresh = Seen::open(&app, &carol, THREAD).await;
    fresh.until(&["carol"]).await;
    assert!(matches!(&fresh.frames[0], PresenceFrame::State { members, .. } if members.len() == 1), "{:?}", fresh.frames);
    drop(carol_sees);
    let bad = http().get(app.url(&format!("/events?topic={THREAD}&presence=a%20b"))).header("cookie", &bob).send().await;
    assert_eq!(error_code(bad.unwrap(), 400).await, "invalid_topic");
}
}

on_both_backends! {
// A resumed stream that asks presence gets its replay, then `presence:state`, then what is
// live, in that order (the contract's words).
async fn a_resumed_stream_gets_its_replay_then_the_state_then_live_events(cfg) {
    let app = TestServer::demo(cfg).await;
    let carol = crm_sign_in(&app, 3).await;
    let mut first = Seen::open(&app, &carol, "tasks").await;
    first.until(&["carol"]).await;
    let cursor = first.sse.cursor();
    drop(first);
    for title in ["one", "two"] {
        let made = http().post(app.url("/api/tasks")).json(&serde_json::json!({ "title": title })).send().await.unwrap();
        assert_eq!(made.status(), 201);
    }
    let url = app.url("/events?topic=tasks&presence=tasks");
    let mut resumed =
        SseClient::open_with(streaming().get(url).header("cookie", &carol).header("last-event-id", cursor)).await;
    let mut names = Vec::new();
    while names.len() < 3 {
        let e = resumed.next_any(Duration::from_secs(5)).await.expect("a frame");
        if e.event != "heartbeat" && !e.event.is_empty() {
            names.push(e.event);
        }
    }
    assert_eq!(names, ["task:created", "task:created", "presence:state"], "replay first, then the state");
    let made = http().post(app.url("/api/tasks")).json(&serde_json::json!({ "title": "live" })).send().await.unwrap();
    assert_eq!(made.status(), 201);
    let next = loop {
        let e = resumed.next_any(Duration::from_secs(5)).await.expect("the live event");
        if !e.event.starts_with("presence:") && e.event != "heartbeat" {
            break e.event;
        }
    };
    assert_eq!(next, "task:created");
}
}

on_every_backend! {
async fn members_by_id_only_for_the_authorized_across_instances(cfg) {
    let a = TestServer::demo(cfg.clone()).await;
    // The embedded broker is one instance; every Redis shape gets a second one.
    let b = a.another(cfg).await;
    bob_and_carol_see_each_other_and_dave_sees_neither(&a, b.as_ref().unwrap_or(&a)).await;
}
}

on_backends! {
[redis, redis_sentinel, redis_cluster]
async fn a_silent_instances_members_are_swept_out_by_the_others(cfg) {
    let cfg = sse_notify_axum::SseConfig { broker: BrokerLimits { presence_ttl: Duration::from_secs(1), ..cfg.broker }, ..cfg };
    let app = TestServer::demo(cfg).await;
    let alice = crm_sign_in(&app, 1).await;
    // A member of an instance that reports for the last time now, as Redis holds it (on a
    // Cluster these keys are the prefix's slot's, which the sweeping script names itself).
    let mut conn = app.sse.broker().redis_connection().unwrap();
    let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 1500;
    let ghost = r#"{"id":"ghost","info":{"name":"ghost"}}"#;
    let writes = [
        redis::cmd("HSET").arg("sse-presence/{sse}/comment_thread:1").arg("ghost").arg(ghost).clone(),
        redis::cmd("HSET").arg("sse-presence-count/{sse}/comment_thread:1").arg("ghost").arg(1).clone(),
        redis::cmd("HSET").arg("sse-presence-owned/{sse}/silent").arg("comment_thread:1\nghost").arg(1).clone(),
        redis::cmd("ZADD").arg("sse-presence-alive/{sse}").arg(deadline as u64).arg("silent").clone(),
    ];
    for write in writes {
        write.query_async::<i64>(&mut conn).await.unwrap();
    }
    let mut alice_sees = Seen::open(&app, &alice, THREAD).await;
    alice_sees.until(&["alice", "ghost"]).await;
    alice_sees.until(&["alice"]).await;
    let left: i64 = redis::cmd("EXISTS").arg("sse-presence-owned/{sse}/silent").query_async(&mut conn).await.unwrap();
    assert_eq!(left, 0, "the silent instance's share is gone");
}
}

on_backends! {
[redis, redis_cluster]
// Redis loses every presence key (as a flush or a restart without persistence does), and a
// join on instance A comes before A's next report: that join lists A again, and A must still
// learn that it was swept and join bob again (before, its report found it listed and bob
// vanished from Redis and from instance B for good).
async fn after_redis_loses_presence_a_join_in_the_window_does_not_hide_the_loss(cfg) {
    let cfg = sse_notify_axum::SseConfig { broker: BrokerLimits { presence_ttl: Duration::from_secs(3), ..cfg.broker }, ..cfg };
    let a = TestServer::demo(cfg.clone()).await;
    let b = a.another(cfg).await.expect("two instances");
    let (alice, bob, carol) = (crm_sign_in(&b, 1).await, crm_sign_in(&a, 2).await, crm_sign_in(&a, 3).await);
    let mut alice_sees = Seen::open(&b, &alice, THREAD).await;
    let _bob_on_a = Seen::open(&a, &bob, THREAD).await;
    alice_sees.until(&["alice", "bob"]).await;

    let mut conn = a.sse.broker().redis_connection().unwrap();
    let instances: Vec<String> =
        redis::cmd("ZRANGE").arg("sse-presence-alive/{sse}").arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    assert_eq!(instances.len(), 2, "both instances report");
    let mut lost = vec![
        "sse-presence-alive/{sse}".to_owned(),
        format!("sse-presence/{{sse}}/{THREAD}"),
        format!("sse-presence-count/{{sse}}/{THREAD}"),
    ];
    lost.extend(instances.iter().map(|i| format!("sse-presence-owned/{{sse}}/{i}")));
    let _: i64 = redis::cmd("DEL").arg(&lost).query_async(&mut conn).await.unwrap();
    let _carol_on_a = Seen::open(&a, &carol, THREAD).await;

    // Within the TTL and a third (plus scheduling), everyone is back in Redis (B's own view
    // never lost bob: no leave was sent), and an instance that loads the topic now sees them.
    let key = format!("sse-presence/{{sse}}/{THREAD}");
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut stored: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        stored = redis::cmd("HKEYS").arg(&key).query_async(&mut conn).await.unwrap();
        if stored.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stored.sort();
    assert_eq!(stored, ["1", "2", "3"], "every member is back in Redis (ids of alice, bob, carol)");
    let c = a.another(with_presence_ttl(a.sse.config().clone(), Duration::from_secs(3))).await;
    let mut fresh = Seen::open(c.as_ref().unwrap(), &alice, THREAD).await;
    fresh.until(&["alice", "bob", "carol"]).await;
    alice_sees.until(&["alice", "bob", "carol"]).await;
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_access_is_withdrawn_leaves_and_sees_no_more() {
    let quick =
        server::app::DemoConfig { recheck: Duration::from_secs(1), ..server::app::DemoConfig::new(test_session_key()) };
    let app = TestServer::demo_with(config(None), quick).await;
    let (bob, carol) = (crm_sign_in(&app, 2).await, crm_sign_in(&app, 3).await);
    let mut carol_sees = Seen::open(&app, &carol, THREAD).await;
    carol_sees.until(&["carol"]).await;
    let mut bob_sees = Seen::open(&app, &bob, THREAD).await;
    carol_sees.until(&["bob", "carol"]).await;
    let page = app.metrics().await;
    assert_eq!(metric_value(&page, "sse_presence_members"), Some(2.0), "{page}");
    assert_eq!(metric_value(&page, "sse_presence_topics"), Some(1.0));
    // bob's session ends (signed out elsewhere): the re-check closes his stream, he leaves.
    let resp = http().post(app.url(client::app::crm::api::SignOut::PATH)).header("cookie", &bob).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(bob_sees.sse.ended_within(Duration::from_secs(10)).await, "his stream is closed: he sees no more");
    carol_sees.until(&["carol"]).await;
    assert_eq!(metric_value(&app.metrics().await, "sse_presence_members"), Some(1.0));
}

on_both_backends! {
// bob follows the public board signed in, then signs out: the board stays open to him as a
// watcher, so authorization alone keeps his stream; the re-check decides presence again, and
// he leaves within its interval (before, he stayed listed for as long as the stream lived).
async fn a_member_who_signs_out_leaves_a_topic_still_open_to_him(cfg) {
    let quick =
        server::app::DemoConfig { recheck: Duration::from_secs(1), ..server::app::DemoConfig::new(test_session_key()) };
    let app = TestServer::demo_with(cfg, quick).await;
    let (bob, carol) = (crm_sign_in(&app, 2).await, crm_sign_in(&app, 3).await);
    let mut carol_sees = Seen::open(&app, &carol, "tasks").await;
    carol_sees.until(&["carol"]).await;
    let _bob_board = Seen::open(&app, &bob, "tasks").await;
    carol_sees.until(&["bob", "carol"]).await;
    let resp = http().post(app.url(client::app::crm::api::SignOut::PATH)).header("cookie", &bob).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let signed_out = Instant::now();
    carol_sees.until_seen(Duration::from_secs(6), "bob gone", |s| s.names() == ["carol"]).await;
    assert!(signed_out.elapsed() < Duration::from_secs(4), "bob left {:?} after signing out", signed_out.elapsed());
    // A new stream's state agrees, and bob's cookie now opens the board as a watcher.
    let mut fresh = Seen::open(&app, "", "tasks").await;
    fresh.until(&["carol"]).await;
    let mut bob_again = Seen::open(&app, &bob, "tasks").await;
    bob_again.until(&["carol"]).await;
}
}

/// alice watching the thread on `watcher`, and bob on it through the server process `other`:
/// alice's view once she sees him, and bob's stream.
async fn alice_sees_bob_through(watcher: &TestServer, other: &process::ServerProcess) -> (Seen, SseClient) {
    let alice = crm_sign_in(watcher, 1).await;
    let mut alice_sees = Seen::open(watcher, &alice, THREAD).await;
    alice_sees.until(&["alice"]).await;
    let bob = other.sign_in(2).await;
    let bob_sees = SseClient::open_with(
        streaming().get(format!("{}/events?topic={THREAD}&presence={THREAD}", other.base)).header("cookie", &bob),
    )
    .await;
    assert_eq!(bob_sees.status, 200);
    alice_sees.until(&["alice", "bob"]).await;
    (alice_sees, bob_sees)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_of_a_killed_instance_leave_within_the_ttl_and_a_third() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(2);
    let cfg = with_presence_ttl(config(Some(&redis)), ttl);
    let watcher = TestServer::demo(cfg).await;
    let mut doomed =
        process::ServerProcess::start(&[("REDIS_URL", &redis.url), ("SSE_PRESENCE_TTL_SECONDS", "2")]).await;
    let (mut alice_sees, _bob_sees) = alice_sees_bob_through(&watcher, &doomed).await;

    doomed.kill();
    let killed = Instant::now();
    alice_sees.until(&["alice"]).await;
    let took = killed.elapsed();
    eprintln!("a killed instance's member left after {took:?} (TTL {ttl:?})");
    assert!(
        took <= ttl + ttl / 3 + Duration::from_millis(1500),
        "left after {took:?}: the bound is the TTL and a third"
    );
}

// An instance with no stream that watches presence still renders it in its pages: it sweeps
// out a killed instance's members as one with such streams does (before, its board page
// listed bob for good; found by an outside probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_rendered_where_no_stream_watches_presence_loses_a_killed_instances_members() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(2);
    let cfg = with_presence_ttl(config(Some(&redis)), ttl);
    let renderer = TestServer::demo(cfg).await;
    let mut doomed =
        process::ServerProcess::start(&[("REDIS_URL", &redis.url), ("SSE_PRESENCE_TTL_SECONDS", "2")]).await;
    let bob = crm_sign_in_at(&doomed.base, 2).await;
    let mut bob_board = SseClient::open_with(
        streaming().get(format!("{}/events?topic=tasks&presence=tasks", doomed.base)).header("cookie", &bob),
    )
    .await;
    assert_eq!(bob_board.status, 200);
    let page = || async { http().get(renderer.url("/")).send().await.unwrap().text().await.unwrap() };
    let listed = |page: &str| page.contains(r#"data-name="bob""#);
    let shown = Instant::now();
    while !listed(&page().await) {
        assert!(shown.elapsed() < Duration::from_secs(5), "bob's join reaches the renderer's pages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = bob_board.next_any(Duration::from_millis(10)).await;
    doomed.kill();
    let killed = Instant::now();
    while listed(&page().await) {
        assert!(
            killed.elapsed() < ttl + ttl / 3 + Duration::from_millis(1500),
            "bob still listed {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_comes_back_empty_the_members_join_again_and_streams_get_the_state_again() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let cfg = with_presence_ttl(config(Some(&redis)), Duration::from_secs(2));
    let app = TestServer::demo(cfg).await;
    let (bob, carol) = (crm_sign_in(&app, 2).await, crm_sign_in(&app, 3).await);
    let _bob_sees = Seen::open(&app, &bob, THREAD).await;
    let mut carol_sees = Seen::open(&app, &carol, THREAD).await;
    carol_sees.until(&["bob", "carol"]).await;

    // Redis goes and comes back without its data (sessions included: the streams stay open, as
    // EventSource streams do; only a re-check would ask again).
    redis.stop();
    let _redis = RedisServer::start_on(port);
    let states = |s: &Seen| s.frames.iter().filter(|f| matches!(f, PresenceFrame::State { .. })).count();
    carol_sees
        .until_seen(Duration::from_secs(20), "a new presence:state after the reconnect", |s| states(s) >= 2)
        .await;
    // The instance finds itself gone from Redis at its next report and joins its members again.
    carol_sees.until(&["bob", "carol"]).await;
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let stored: Vec<String> = redis::Commands::hvals(&mut conn, "sse-presence/{sse}/comment_thread:1").unwrap();
    assert_eq!(stored.len(), 2, "both members are back in Redis: {stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_shut_down_gracefully_takes_its_members_out_at_once_not_at_the_ttl() {
    let redis = RedisServer::start();
    let watcher = TestServer::demo(config(Some(&redis))).await;
    // The default TTL (15 s): only the shutdown's own leaves can be this quick.
    let leaving = process::ServerProcess::start(&[("REDIS_URL", &redis.url)]).await;
    let (mut alice_sees, _bob_sees) = alice_sees_bob_through(&watcher, &leaving).await;

    let stopped = Instant::now();
    leaving.terminate();
    alice_sees.until(&["alice"]).await;
    let took = stopped.elapsed();
    eprintln!("a member of an instance shut down gracefully left after {took:?}");
    assert!(took < Duration::from_secs(5), "left after {took:?}: the shutdown's leave, not the 15 s TTL");
}

on_both_backends! {
// A large room is counted, not listed (SSE_PRESENCE_MAX_LISTED, 2 here): above the cap the
// streams that asked get `presence:count`, not the member list nor each join and leave, and a
// new stream's first frame is the count; back within the cap the list comes again. The page
// the server renders says the count too.
async fn a_room_above_the_cap_is_counted_and_listed_again_below_it(cfg) {
    let app = TestServer::demo(sse_notify_axum::SseConfig { broker: BrokerLimits { presence_max_listed: 2, ..cfg.broker }, ..cfg }).await;
    let cookies: Vec<String> = futures::future::join_all((1..=4).map(|id| crm_sign_in(&app, id))).await;
    let mut carol_sees = Seen::open(&app, &cookies[2], "tasks").await;
    carol_sees.until(&["carol"]).await;
    let bob = Seen::open(&app, &cookies[1], "tasks").await;
    carol_sees.until(&["bob", "carol"]).await;
    let counted = |n: usize| move |s: &Seen| s.members.len() == n && s.names().is_empty();
    let alice = Seen::open(&app, &cookies[0], "tasks").await;
    carol_sees.until_seen(Duration::from_secs(3), "3 counted", counted(3)).await;
    let _dave = Seen::open(&app, &cookies[3], "tasks").await;
    carol_sees.until_seen(Duration::from_secs(3), "4 counted", counted(4)).await;
    let above = carol_sees.frames.iter().skip_while(|f| !matches!(f, PresenceFrame::Count { .. }));
    assert!(above.clone().all(|f| matches!(f, PresenceFrame::Count { .. })), "only counts above the cap: {:?}", carol_sees.frames);
    let mut fresh = Seen::open(&app, "", "tasks").await;
    fresh.until_seen(Duration::from_secs(3), "4 counted", counted(4)).await;
    assert_eq!(fresh.frames[0], PresenceFrame::Count { topic: "tasks".into(), count: 4 });
    let page = http().get(app.url("/")).header("cookie", &cookies[2]).send().await.unwrap().text().await.unwrap();
    let shown: Option<String> = page.find("board-here").map(|at| page[at..].chars().take(300).collect());
    assert!(shown.as_deref().is_some_and(|s| s.contains("member-count\">4<!> signed in")), "the rendered page counts them: {shown:?}");

    drop((alice, bob));
    carol_sees.until_seen(Duration::from_secs(3), "listed again", |s| s.names() == ["carol", "dave"]).await;
    assert!(matches!(carol_sees.frames.last(), Some(PresenceFrame::State { .. })), "{:?}", carol_sees.frames);
}
}

// A stopped instance's share of 10,000 members is swept out in batches (each script call a
// few milliseconds: every other client of Redis waits while one runs), not in one script
// over the whole share; all 10,000 leave within the TTL and a third as before, and the
// instance is unlisted once its share is gone. The instance is seeded as Redis would hold it.
// (A share that large is a hash table in Redis: restarting `HSCAN` at 0 each call, as a first
// cut did, emptied the same buckets and then swept nothing more, found by an outside probe.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instances_large_share_is_swept_out_in_batches() {
    let redis = RedisServer::start();
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let (alive, owned) = ("sse-presence-alive/{sse}", "sse-presence-owned/{sse}/deadbeef");
    let (members, counts) = ("sse-presence/{sse}/hall", "sse-presence-count/{sse}/hall");
    let mut seed = redis::pipe();
    seed.cmd("ZADD").arg(alive).arg(1).arg("deadbeef").ignore();
    for id in 0..10_000 {
        seed.cmd("HSET").arg(owned).arg(format!("hall\n{id}")).arg(1).ignore();
        seed.cmd("HSET").arg(counts).arg(id).arg(1).ignore();
        seed.cmd("HSET").arg(members).arg(id).arg(format!(r#"{{"id":"{id}","info":null}}"#)).ignore();
    }
    let () = seed.query_async(&mut conn).await.unwrap();
    // Every command Redis runs from here on, with its time.
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli");
    let seen = std::thread::spawn({
        let out = monitor.stdout.take().unwrap();
        move || std::io::read_to_string(out).unwrap_or_default()
    });

    // A live instance with presence reports (every third of its 2 s TTL) and sweeps.
    let cfg = with_presence_ttl(config(Some(&redis)), Duration::from_secs(2));
    let app = TestServer::demo(cfg).await;
    let carol = crm_sign_in(&app, 3).await;
    let mut carol_sees = Seen::open(&app, &carol, "tasks").await;
    carol_sees.until(&["carol"]).await;
    let started = Instant::now();
    loop {
        let left: usize = redis::cmd("HLEN").arg(members).query_async(&mut conn).await.unwrap();
        let listed: Option<f64> = redis::cmd("ZSCORE").arg(alive).arg("deadbeef").query_async(&mut conn).await.unwrap();
        if left == 0 && listed.is_none() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(8), "{left} members still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    monitor.kill().unwrap();
    monitor.wait().unwrap();
    let log = seen.join().unwrap();
    // The report script's calls: one key, the instances' report times.
    let reports = log.lines().filter(|l| l.contains(r#""1" "sse-presence-alive/{sse}""#)).count();
    assert!(reports >= 15, "10,000 members in batches of about 500: {reports} calls");
    let gone: usize = redis::cmd("EXISTS").arg(owned).arg(counts).query_async(&mut conn).await.unwrap();
    assert_eq!(gone, 0, "the instance's share and the counts are gone");
}
