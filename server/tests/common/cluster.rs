//! A Redis Cluster on loopback: three primaries with a replica each, made by `redis-cli
//! --cluster create`, with failure detection in one second.

use std::process::Command;
use std::time::{Duration, Instant};

use super::RedisServer;

pub struct ClusterSet {
    pub nodes: Vec<RedisServer>,
}

impl ClusterSet {
    pub fn start() -> Self {
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            "--repl-diskless-sync-delay",
            "0",
        ]
        .map(str::to_owned)
        .to_vec();
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_with(&args)).collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(out.status.success(), "redis-cli --cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let set = Self { nodes };
        set.wait_until("every node sees the cluster ok", |set| set.nodes.iter().all(|n| cluster_ok(n.port)));
        set
    }

    /// `host:port` of every node, for `REDIS_CLUSTER_NODES`.
    pub fn addresses(&self) -> Vec<(String, u16)> {
        self.nodes.iter().map(|n| ("127.0.0.1".to_owned(), n.port)).collect()
    }

    /// The tests' config, on this cluster.
    pub fn config(&self) -> sse_notify_axum::SseConfig {
        let redis = sse_notify_axum::config::RedisSettings { cluster_nodes: self.addresses(), ..Default::default() };
        sse_notify_axum::SseConfig { redis, ..super::config(None) }
    }

    /// The port of the primary that owns `key`'s slot, asked of any live node.
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        self.nodes.iter().filter(|n| n.is_running()).find_map(|n| {
            let mut conn = n.client().get_connection().ok()?;
            let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut conn).ok()?;
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn).ok()?;
            nodes.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let is_live_primary = fields.get(2)?.split(',').any(|f| f == "master") && !fields[2].contains("fail");
                let owns = fields.iter().skip(8).any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                });
                (is_live_primary && owns).then(|| fields[1].split(['@', ':']).nth(1)?.parse().ok())?
            })
        })
    }

    /// Kills the primary that owns `key`'s slot and returns when its replica serves the slot
    /// and the cluster is ok again.
    pub fn kill_owner_and_wait_for_failover(&mut self, key: &str) -> (u16, Duration) {
        let owner = self.owner_of(key).expect("an owner");
        let killed = Instant::now();
        self.nodes.iter_mut().find(|n| n.port == owner).unwrap().stop();
        self.wait_until("a replica takes the slot over", |set| {
            set.owner_of(key).is_some_and(|p| p != owner)
                && set.nodes.iter().filter(|n| n.is_running()).all(|n| cluster_ok(n.port))
        });
        (owner, killed.elapsed())
    }

    /// Moves `key`'s slot, with its keys, from its primary to another one (`CLUSTER SETSLOT`
    /// IMPORTING/MIGRATING, `MIGRATE`, then the new owner announced to every node), as an
    /// operator rebalancing the cluster does. Returns the old and the new owner's ports.
    pub fn migrate_slot_of(&self, key: &str) -> (u16, u16) {
        let from = self.owner_of(key).expect("an owner");
        let to = self.nodes.iter().map(|n| n.port).find(|&p| p != from && self.is_primary(p)).expect("another primary");
        let query = |port: u16, args: &[&str]| -> redis::Value {
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query(&mut conn).unwrap_or_else(|e| panic!("{args:?} on :{port}: {e}"))
        };
        let id = |port: u16| -> String { redis::from_redis_value(query(port, &["CLUSTER", "MYID"])).unwrap() };
        let slot: i64 = redis::from_redis_value(query(from, &["CLUSTER", "KEYSLOT", key])).unwrap();
        let slot = slot.to_string();
        let (from_id, to_id) = (id(from), id(to));
        query(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        query(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> =
                redis::from_redis_value(query(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])).unwrap();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            query(from, &args);
        }
        // The new owner first, then the old one; the others learn it through the cluster bus.
        for port in [to, from] {
            query(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        for node in self.nodes.iter().filter(|n| n.is_running() && ![to, from].contains(&n.port)) {
            if self.is_primary(node.port) {
                query(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            }
        }
        (from, to)
    }

    fn is_primary(&self, port: u16) -> bool {
        let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}")).and_then(|c| c.get_connection())
        else {
            return false;
        };
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).unwrap_or_default();
        matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "not within 30 s: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cluster_ok(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else { return false };
    let Ok(mut conn) = client.get_connection() else { return false };
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap_or_default();
    info.lines().any(|l| l.trim() == "cluster_state:ok")
}
