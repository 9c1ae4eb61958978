//! The real server binary as a child process: what a deployment runs, measured from outside
//! (its own memory, apart from the test's clients).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary Cargo built for the integration tests (unset in examples, which do not use it).
const BIN: Option<&str> = option_env!("CARGO_BIN_EXE_server");

/// The server binary on `127.0.0.1:port`, on the embedded broker unless the caller sets Redis.
pub fn command(port: u16) -> Command {
    let mut cmd = Command::new(BIN.expect("the server binary (integration tests only)"));
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

/// Waits (bounded) for the process to exit; `None` if it is still running after `within`.
pub fn exit_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
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

/// A running server process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub base: String,
}

impl ServerProcess {
    /// Starts the binary with `env` and waits until `/health` answers. A port found free may be
    /// taken before the server binds it: then it exits at start, and another port is tried.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        for _ in 0..5 {
            let port = super::free_port();
            let mut cmd = command(port);
            cmd.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::inherit());
            let mut child = cmd.spawn().expect("the binary starts");
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("the server exited at start ({status}); trying another port");
                    break;
                }
                if super::http().get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
                    return Self { child, base };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Killed and reaped: a try that timed out leaves no zombie behind.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the server binary did not start on any of 5 ports");
    }

    /// Asks the process to shut down (SIGTERM: graceful), without waiting for it.
    pub fn terminate(&self) {
        // SAFETY: sends a signal to our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Signs in as the demo CRM's user `id` on this server; the `Cookie` header value.
    pub async fn sign_in(&self, id: u64) -> String {
        super::crm_sign_in_at(&self.base, id).await
    }

    /// Kills the process at once (SIGKILL: no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory now.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// A value from its `/metrics` page (`name value`).
    pub async fn metric(&self, name: &str) -> f64 {
        let page = super::http().get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        super::metric_value(&page, name).unwrap_or_else(|| panic!("no {name} in\n{page}"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
