//! A Sentinel-managed Redis on loopback: a primary, its replicas and three sentinels (quorum 2),
//! as the guide's Redis page (docs/guide/src/redis.md) describes, with failure detection in one second.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, RedisServer};

pub const MASTER: &str = "main";

pub struct SentinelSet {
    pub primary: RedisServer,
    pub replicas: Vec<RedisServer>,
    sentinels: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl SentinelSet {
    /// Starts everything and waits until the sentinels know the replicas and each other (a
    /// failover needs both).
    pub fn start(replicas: usize) -> Self {
        let sync = ["--repl-diskless-sync-delay".to_owned(), "0".to_owned()];
        let primary = RedisServer::start_with(&sync);
        let mut replica_args = vec!["--replicaof".to_owned(), "127.0.0.1".to_owned(), primary.port.to_string()];
        replica_args.extend_from_slice(&sync);
        let replicas = (0..replicas).map(|_| RedisServer::start_with(&replica_args)).collect();
        let dir = std::env::temp_dir().join(format!("sse-sentinels-{}-{}", std::process::id(), primary.port));
        std::fs::create_dir_all(&dir).unwrap();
        let mut set = Self { primary, replicas, sentinels: Vec::new(), dir };
        for i in 0..3 {
            let port = free_port();
            let conf = set.dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = set.dir.display(),
                    primary = set.primary.port,
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("redis-server must be installed (scripts/setup.sh installs it)");
            set.sentinels.push((port, child));
        }
        set.wait_until("the sentinels know the replicas and each other", |set| {
            set.sentinels.iter().all(|(port, _)| {
                let replicas = sentinel_query(*port, &["SENTINEL", "REPLICAS", MASTER]).unwrap_or_default();
                let others = sentinel_query(*port, &["SENTINEL", "SENTINELS", MASTER]).unwrap_or_default();
                replicas.len() == set.replicas.len() && others.len() == 2
            })
        });
        set
    }

    /// `host:port,...` for `REDIS_SENTINELS`.
    pub fn addresses(&self) -> Vec<(String, u16)> {
        self.sentinels.iter().map(|(port, _)| ("127.0.0.1".to_owned(), *port)).collect()
    }

    /// The tests' config, on these sentinels.
    pub fn config(&self, min_replicas: usize) -> sse_notify_axum::SseConfig {
        let redis = sse_notify_axum::config::RedisSettings {
            sentinels: self.addresses(),
            sentinel_master: Some(MASTER.to_owned()),
            min_replicas,
            ..Default::default()
        };
        sse_notify_axum::SseConfig { redis, ..super::config(None) }
    }

    /// The port the sentinels name as the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let (port, _) = self.sentinels.first()?;
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
        let addr: Vec<String> =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER).query(&mut conn).ok()?;
        addr.get(1)?.parse().ok()
    }

    /// Kills the primary (SIGKILL) and returns when the sentinels have promoted a replica.
    pub fn kill_primary_and_wait_for_failover(&mut self) -> Duration {
        let killed = Instant::now();
        self.primary.stop();
        let replicas: Vec<u16> = self.replicas.iter().map(|r| r.port).collect();
        self.wait_until("the sentinels promote a replica", |set| {
            set.primary_port().is_some_and(|p| replicas.contains(&p))
        });
        killed.elapsed()
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "not within 30 s: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A sentinel command's reply as a list (empty when it fails).
fn sentinel_query(port: u16, args: &[&str]) -> Option<Vec<redis::Value>> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?.get_connection().ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).ok()
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
