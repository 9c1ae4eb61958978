//! The real binary (`target/debug/server`) as a process: SIGTERM with open streams ends every
//! stream and exits 0 in time, and a bad environment value stops it with a message naming the
//! variable.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::process::{command, exit_within};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_open_stream_and_exits_zero() {
    let port = free_port();
    let mut child = command(port).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("the binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}/health");
    let up = eventually(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
    assert!(up, "the server listens within 30 s");
    assert_eq!(status_of(&health).await, 200);
    let mut streams = Vec::new();
    for i in 0..20 {
        streams.push(SseClient::subscribe(&base, &format!("tasks,task:{i}")).await.started().await);
    }
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let Some(status) = exit_within(&mut child, Duration::from_secs(5)) else {
        let _ = child.kill();
        panic!("the server ignored SIGTERM for 5 s with 20 open streams");
    };
    println!("exited {status} {:?} after SIGTERM with 20 open streams", started.elapsed());
    assert!(status.success(), "exit status {status}");
    for s in &mut streams {
        assert!(s.ended_within(Duration::from_secs(1)).await, "every stream ended");
    }
}

/// A connection that never sends a request (a browser opens spare ones ahead and may never use
/// them) does not hold the shutdown: it is closed when shutdown starts, not after its head
/// timeout or the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_connections_that_never_sent_a_request() {
    let port = free_port();
    let mut child = command(port)
        .env("HTTP_HEADER_TIMEOUT_SECONDS", "20")
        .env("SHUTDOWN_GRACE_SECONDS", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let up = eventually(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
    assert!(up, "the server listens within 30 s");
    let mut spare = Vec::new();
    for _ in 0..3 {
        spare.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Past the moment a silent connection counts as waiting for its head.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let Some(status) = exit_within(&mut child, Duration::from_secs(5)) else {
        let _ = child.kill();
        panic!("the server waited on connections that never sent a request (5 s after SIGTERM)");
    };
    println!("exited {status} {:?} after SIGTERM with 3 silent connections", started.elapsed());
    assert!(status.success(), "exit status {status}");
    drop(spare);
}

fn run_with(var: &str, value: &str) -> Output {
    let mut child = command(free_port())
        .env(var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    if exit_within(&mut child, Duration::from_secs(20)).is_none() {
        let _ = child.kill();
        panic!("with {var}={value:?} the server did not stop within 20 s");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_bad_environment_value_stops_start_up_naming_the_variable() {
    for (var, value) in [
        ("SSE_MAX_CONNECTIONS", "lots"),
        ("SSE_HISTORY_SIZE", "0"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "-1"),
        ("TOPIC_PREFIX", "a/b"),
        ("REDIS_URL", "http://not-redis"),
        ("SESSION_SECRET", "short"),
    ] {
        let out = run_with(var, value);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{var}={value:?}: {text}");
        assert!(text.contains(var), "{var}={value:?}: the message names the variable: {text}");
    }
}

/// A client that pipelines requests and never reads holds hyper's graceful shutdown forever;
/// with `SHUTDOWN_GRACE_SECONDS` the process still exits 0 in time, and an event deferred while
/// Redis refused it is published when Redis takes it again during the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_grace_period_whatever_clients_do_and_flushes_the_outbox() {
    use redis::Commands;
    let redis = RedisServer::start();
    let port = free_port();
    let grace = 3;
    let mut child = command(port)
        .env("REDIS_URL", &redis.url)
        .env("SHUTDOWN_GRACE_SECONDS", grace.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
    assert!(up, "the server listens within 30 s");

    // The never-reading client: /metrics pages (a few KiB each) pipelined until the server
    // stops taking requests, because its answers fill both sockets' buffers.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut hog = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    let mut blocked = false;
    for _ in 0..20_000 {
        use tokio::io::AsyncWriteExt;
        if tokio::time::timeout(Duration::from_millis(500), hog.write_all(&request)).await.is_err() {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the server stopped reading the never-reading client's requests");

    // A write whose event Redis refuses (scripts denied, the store's commands allowed): 201,
    // and the event waits in the outbox.
    let mut admin = redis.client().get_connection().unwrap();
    let acl = |conn: &mut redis::Connection, rule: &str| {
        let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg(rule).query(conn).unwrap();
    };
    acl(&mut admin, "-evalsha");
    acl(&mut admin, "-eval");
    let resp =
        http().post(format!("{base}/api/tasks")).json(&serde_json::json!({"title": "late"})).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(has_line(&metrics, "sse_outbox_events 1"), "{metrics}");
    let log = "sse-log/{sse}";
    let logged_before: usize = admin.xlen(log).unwrap();

    let started = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    // Redis takes scripts again during the grace period.
    tokio::time::sleep(Duration::from_millis(500)).await;
    acl(&mut admin, "+eval");
    acl(&mut admin, "+evalsha");
    let Some(status) = exit_within(&mut child, Duration::from_secs(grace + 5)) else {
        let _ = child.kill();
        panic!("still running {grace} + 5 s after SIGTERM with a never-reading client");
    };
    println!("exited {status} {:?} after SIGTERM", started.elapsed());
    assert!(status.success(), "exit status {status}");
    let logged_after: usize = admin.xlen(log).unwrap();
    assert_eq!(logged_after, logged_before + 1, "the deferred event was published before the process exited");
    drop(hog);
}
