//! Redis as production runs it: TLS only (`rediss://`, a private CA, client certificates), and
//! an ACL user allowed exactly what the broker needs, its password from a file. Each case is
//! checked on the backend and through the HTTP stream, with the refusals that show the
//! mechanism is really in use.

mod common;

use std::time::Duration;

use common::tls::TlsFiles;
use common::*;
use sse_notify_axum::config::RedisSettings;
use sse_notify_axum::{SseApp, SseConfig};
use sse_notify_core::Topic;

/// What the guide (docs/guide/src/redis.md) tells an operator to grant the broker's user, for the default prefix.
const BROKER_ACL: &[&str] = &[
    "+ping",
    "+info",
    "+evalsha",
    "+script|load",
    "+get",
    "+set",
    "+hgetall",
    "+hset",
    "+hdel",
    "+xadd",
    "+xtrim",
    "+xrange",
    "+publish",
    "+subscribe",
    "+unsubscribe",
    "~sse-log/{sse}",
    "~sse-epoch/{sse}",
    "~sse-head/{sse}",
    "~sse-forks/{sse}",
    "~sse-writer/{sse}",
    "&{sse}/*",
    // Presence (the demo turns it on).
    "+hsetnx",
    "+hincrby",
    "+hget",
    "+hscan",
    "+exists",
    "+hvals",
    "+zadd",
    "+zrangebyscore",
    "+zrem",
    "+del",
    "~sse-presence*/{sse}*",
];

/// `--user broker on >password <rules>` for redis-server, the rules minus `without`.
fn broker_user(password: &str, without: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["--user", "broker", "on"].map(str::to_owned).to_vec();
    args.push(format!(">{password}"));
    args.extend(BROKER_ACL.iter().filter(|r| Some(**r) != without).map(|r| r.to_string()));
    args
}

fn tls_config(redis: &RedisServer, access: RedisSettings) -> SseConfig {
    let url = redis.url.replacen("rediss://", "rediss://broker@", 1);
    SseConfig { redis_url: Some(url), redis: access, ..config(None) }
}

/// A TLS-only redis-server with the broker's user (password `password`, also written to a
/// file), asking clients for certificates as `auth_clients` says (`no`, `optional`, `yes`).
fn tls_redis(name: &str, password: &str, auth_clients: &str) -> (TlsFiles, RedisServer, std::path::PathBuf) {
    let files = TlsFiles::generate(name);
    let mut extra = broker_user(password, None);
    extra.extend(["--tls-auth-clients".to_owned(), auth_clients.to_owned()]);
    let redis = RedisServer::start_tls(&files, &extra);
    let password_file = files.write("password", &format!("{password}\n"));
    (files, redis, password_file)
}

async fn start_error(cfg: SseConfig) -> String {
    match tokio::time::timeout(Duration::from_secs(15), SseApp::new(cfg)).await {
        Ok(Ok(_)) => panic!("the app started"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("start-up neither succeeded nor failed within 15 s"),
    }
}

async fn serve(cfg: SseConfig) -> TestServer {
    let sse = SseApp::new(cfg).await.expect("the app starts");
    let router = sse.routes();
    TestServer::serve(sse, router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_an_acl_user_carry_events_between_instances() {
    let (files, redis, password) = tls_redis("e2e", "pw-from-file", "no");
    let access =
        RedisSettings { tls_ca_file: Some(files.ca.clone()), password_file: Some(password), ..Default::default() };
    let a = serve(tls_config(&redis, access.clone())).await;
    let b = serve(tls_config(&redis, access)).await;

    let mut stream = SseClient::subscribe(&a.base, "tasks").await.started().await;
    let topic = Topic::new("tasks").unwrap();
    b.sse.broker().publish(&topic, "task:created", &serde_json::json!({"id": 7})).await.expect("published over TLS");
    let e = stream.expect_event().await;
    assert_eq!((e.event.as_str(), e.data.as_str()), ("task:created", r#"{"id":7}"#));

    // A resume replays from the log read over TLS, on the other instance.
    b.sse.broker().publish(&topic, "task:deleted", &serde_json::json!({"id": 7})).await.unwrap();
    let missed = stream.expect_event().await;
    let from = e.id.expect("a cursor");
    let mut resumed =
        SseClient::open_with(streaming().get(b.url("/events?topic=tasks")).header("Last-Event-ID", &from)).await;
    assert_eq!(resumed.expect_event().await.event, "task:deleted");
    assert_eq!(missed.event, "task:deleted");

    let ready: serde_json::Value = http().get(a.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["backend"], "redis", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tls_settings_redis_is_not_reached() {
    let (files, redis, password) = tls_redis("refusals", "pw", "optional");
    let with = |ca: &std::path::Path| RedisSettings {
        tls_ca_file: Some(ca.to_owned()),
        password_file: Some(password.clone()),
        ..Default::default()
    };

    // Plain TCP to the TLS port: no answer that Redis would give.
    let plain = SseConfig { redis_url: Some(redis.url.replacen("rediss://", "redis://broker:pw@", 1)), ..config(None) };
    let e = start_error(plain).await;
    assert!(e.contains("cannot connect to Redis"), "{e}");
    // The system's CAs, or another CA, do not vouch for the test's server.
    let e =
        start_error(tls_config(&redis, RedisSettings { password_file: Some(password.clone()), ..Default::default() }))
            .await;
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    let e = start_error(tls_config(&redis, with(&files.other_ca))).await;
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    // The right CA and the wrong password.
    let wrong = files.write("wrong", "not-it");
    let e = start_error(tls_config(&redis, RedisSettings { password_file: Some(wrong), ..with(&files.ca) })).await;
    assert!(e.contains("authentication failed"), "{e}");
    assert!(!e.contains("not-it"), "a password never reaches an error message: {e}");
    // The positive control: everything right.
    SseApp::new(tls_config(&redis, with(&files.ca))).await.expect("the app starts with the right CA and password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let (files, redis, password) = tls_redis("mtls", "pw", "yes");
    let access =
        RedisSettings { tls_ca_file: Some(files.ca.clone()), password_file: Some(password), ..Default::default() };
    let e = start_error(tls_config(&redis, access.clone())).await;
    assert!(e.contains("cannot connect to Redis"), "{e}");
    let with_cert = RedisSettings {
        tls_cert_file: Some(files.client_cert.clone()),
        tls_key_file: Some(files.client_key.clone()),
        ..access
    };
    let app = serve(tls_config(&redis, with_cert)).await;
    let mut stream = SseClient::subscribe(&app.base, "task:1").await.started().await;
    app.sse
        .broker()
        .publish(&Topic::new("task:1").unwrap(), "task:updated", &serde_json::json!({"id": 1}))
        .await
        .unwrap();
    assert_eq!(stream.expect_event().await.event, "task:updated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_without_what_the_broker_needs_stops_start_up_naming_it() {
    for (without, named) in [
        ("+xadd", "XADD"),
        ("+xrange", "XRANGE"),
        ("+publish", "PUBLISH"),
        ("&{sse}/*", "PUBLISH"),
        ("+subscribe", "SUBSCRIBE"),
        ("+evalsha", "evalsha"),
        ("~sse-head/{sse}", "keys"),
        ("+ping", "PING"),
        ("+info", "INFO"),
        ("+hset", "HSET"),
        ("~sse-writer/{sse}", "keys"),
    ] {
        let redis = RedisServer::start_with(&broker_user("pw", Some(without)));
        let url = redis.url.replacen("redis://", "redis://broker:pw@", 1);
        let e = start_error(SseConfig { redis_url: Some(url), ..config(None) }).await;
        assert!(e.contains(named) && e.contains("ACL"), "without {without}: {e}");
        assert!(e.contains("+xadd") && e.contains("&{sse}/*"), "the error lists what the broker needs: {e}");
    }
    // The positive control: the whole list is enough, on plain TCP too.
    let redis = RedisServer::start_with(&broker_user("pw", None));
    let url = redis.url.replacen("redis://", "redis://broker:pw@", 1);
    let app = serve(SseConfig { redis_url: Some(url), ..config(None) }).await;
    let mut stream = SseClient::subscribe(&app.base, "tasks").await.started().await;
    app.sse
        .broker()
        .publish(&Topic::new("tasks").unwrap(), "task:created", &serde_json::json!({"id": 2}))
        .await
        .unwrap();
    assert_eq!(stream.expect_event().await.data, r#"{"id":2}"#);
}
