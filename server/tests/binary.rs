//! The real binary (`target/debug/server`) as a process: SIGTERM with open streams ends every
//! stream and exits 0 in time, and a bad environment value stops it with a message naming the
//! variable.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_server");

fn command(port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    // The workspace root, as `cargo leptos` runs it.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .env("LEPTOS_OUTPUT_NAME", "taskboard")
        .env("LEPTOS_SITE_ROOT", "target/site")
        .env("RUST_LOG", "info")
        .env("SESSION_SECRET", "binary-tests-session-secret-0123456789abcdef")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST");
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) for the process to exit; `None` if it is still running after `within`.
fn exit_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
