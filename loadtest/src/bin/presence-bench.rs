//! Presence at scale: MEMBERS members of one topic over three instances on one Redis, watched
//! from a fourth. Prints, in order:
//! - the publish rate on the topic followed by MEMBERS streams without presence;
//! - join latency to the watcher (p50/p99), while the instances join their members at RATE/s;
//! - the instances' CPU per join (their whole process: each join's fan-out to every member's
//!   stream on the instance included) and Redis memory per member;
//! - the publish rate on the topic with every member on it;
//! - leave latency (two instances' members leave at RATE/s);
//! - how long the third instance's members take to leave after it is killed (SIGKILL).
//!
//! ```text
//! presence-bench --redis redis://127.0.0.1:6379 --members 10000 --rate 1000 --ttl 15
//! ```
//! (`scripts/bench-presence.sh` starts a redis-server and runs it.) The instances are this
//! binary again (`presence-bench instance ...`), each a `Broker` with the members' subscriptions
//! in memory: what an instance holds for streams, without the sockets.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sse_notify_axum::{Broker, BrokerLimits};
use sse_notify_core::presence::{Member, PresenceFrame};
use sse_notify_core::wire::SseParser;
use sse_notify_core::Topic;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TOPIC: &str = "room";
const INSTANCES: usize = 3;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// This process's CPU time (user + system), in microseconds.
fn cpu_us() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn limits(ttl: u64) -> BrokerLimits {
    // Every member listed (the costlier path): by default a room above 100 members is counted,
    // and its streams get at most one `presence:count` a second whatever the churn.
    BrokerLimits { presence_ttl: Duration::from_secs(ttl), presence_max_listed: usize::MAX, ..BrokerLimits::default() }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let redis = arg(&args, "--redis", "redis://127.0.0.1:6379");
    let members: usize = arg(&args, "--members", "10000").parse().expect("--members N");
    let rate: f64 = arg(&args, "--rate", "1000").parse().expect("--rate N");
    let ttl: u64 = arg(&args, "--ttl", "15").parse().expect("--ttl SECONDS");
    if args.get(1).map(String::as_str) == Some("instance") {
        let index: usize = arg(&args, "--index", "0").parse().unwrap();
        return instance(&redis, index, members, rate, ttl).await;
    }
    coordinator(&redis, members, rate, ttl).await;
}

/// One instance: joins its members on "join", has them leave on "leave" (printing each leave's
/// time), prints its CPU time on "cpu".
async fn instance(redis: &str, index: usize, members: usize, rate: f64, ttl: u64) {
    let broker = Broker::redis(redis, limits(ttl)).await.expect("redis");
    let topic = Topic::new(TOPIC).unwrap();
    let mut held = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("ready");
    while let Ok(Some(line)) = lines.next_line().await {
        match line.as_str() {
            "join" => {
                let every = Duration::from_secs_f64(1.0 / rate);
                let mut tick = tokio::time::interval(every);
                for i in 0..members {
                    tick.tick().await;
                    let info = serde_json::json!({ "t": now_us() });
                    let member = Member::new(format!("m{index}-{i}"), info);
                    let sub = broker
                        .subscribe_with_presence(&[topic.clone()], None, vec![(topic.clone(), Some(member))])
                        .await
                        .expect("subscribe");
                    held.push(sub);
                }
                println!("joined");
            }
            "leave" => {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                for (i, sub) in held.drain(..).enumerate() {
                    tick.tick().await;
                    println!("left m{index}-{i} {}", now_us());
                    drop(sub);
                }
                println!("done");
            }
            // The same number of streams on the topic, without presence.
            // Paced like the joins, so both runs' streams are made alike.
            "plain" => {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                for _ in 0..members {
                    tick.tick().await;
                    held.push(broker.subscribe(&[topic.clone()], None).await.expect("subscribe"));
                }
                println!("held");
            }
            "unplain" => {
                held.clear();
                println!("dropped");
            }
            "cpu" => println!("cpu {}", cpu_us()),
            _ => {}
        }
    }
}

#[derive(Default)]
struct Watched {
    /// Join latency (µs) of each member, by id.
    joined: HashMap<String, u64>,
    /// When each member's leave arrived (unix µs), by id.
    left: HashMap<String, u64>,
    events: u64,
}

/// The `p` quantile of `samples` (µs), in ms, with the load tool's histogram.
fn percentile(samples: &[u64], p: f64) -> f64 {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits");
    samples.iter().for_each(|&us| h.saturating_record(us));
    h.value_at_quantile(p) as f64 / 1000.0
}

async fn redis_memory(conn: &mut sse_notify_axum::RedisConnection) -> u64 {
    let info: String = sse_notify_axum::redis::cmd("INFO").arg("memory").query_async(conn).await.unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

type Instance =
    (tokio::process::Child, tokio::process::ChildStdin, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>);

/// The instances' CPU time (µs, all of them).
async fn instances_cpu(children: &mut [Instance]) -> u64 {
    let mut total = 0;
    for (_, stdin, out) in children {
        stdin.write_all(b"cpu\n").await.unwrap();
        let line = out.next_line().await.unwrap().unwrap();
        total += line.strip_prefix("cpu ").unwrap().parse::<u64>().unwrap();
    }
    total
}

/// Publishes on the topic for 3 s; events per second, and the instances' CPU per event and
/// stream (µs).
async fn publish_run(broker: &Broker, children: &mut [Instance], streams: usize) -> (f64, f64) {
    let before = instances_cpu(children).await;
    let started = Instant::now();
    let rate = publish_rate(broker).await;
    let events = rate * started.elapsed().as_secs_f64();
    let cpu = instances_cpu(children).await - before;
    (rate, cpu as f64 / events / streams as f64)
}

/// Publishes on the topic from 4 tasks for 3 s; events per second.
async fn publish_rate(broker: &Broker) -> f64 {
    let topic = Topic::new(TOPIC).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (broker, topic) = (broker.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(3) {
                broker.publish(&topic, "tick", &serde_json::json!({ "n": n })).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn coordinator(redis: &str, members: usize, rate: f64, ttl: u64) {
    let per = members / INSTANCES;
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    for index in 0..INSTANCES {
        let mut child = tokio::process::Command::new(&exe)
            .args(["instance", "--redis", redis, "--index", &index.to_string(), "--members", &per.to_string()])
            .args(["--rate", &(rate / INSTANCES as f64).to_string(), "--ttl", &ttl.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("an instance");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(out.next_line().await.unwrap().as_deref(), Some("ready"));
        children.push((child, stdin, out));
    }
    // The watcher must not be cut off while the publish-rate runs flood it.
    let watcher_limits = BrokerLimits { max_queue_size: 10_000_000, ..limits(ttl) };
    let broker = Broker::redis(redis, watcher_limits).await.expect("redis");
    let mut conn = broker.redis_connection().unwrap();
    let topic = Topic::new(TOPIC).unwrap();
    let watched = Arc::new(Mutex::new(Watched::default()));
    let mut watcher =
        broker.subscribe_with_presence(&[topic.clone()], None, vec![(topic.clone(), None)]).await.unwrap();
    {
        let watched = watched.clone();
        tokio::spawn(async move {
            let mut parser = SseParser::new();
            while let Some(frame) = watcher.next_frame().await {
                let at = now_us();
                for e in parser.feed(&frame) {
                    let mut w = watched.lock().unwrap();
                    match PresenceFrame::decode(&e.event, &e.data) {
                        Some(PresenceFrame::Join { member, .. }) => {
                            let t = member.info["t"].as_u64().unwrap_or(at);
                            w.joined.insert(member.id, at.saturating_sub(t));
                        }
                        Some(PresenceFrame::Leave { id, .. }) => {
                            w.left.insert(id, at);
                        }
                        _ => w.events += 1,
                    }
                }
            }
            eprintln!("the watcher's stream ended (cut off as too slow?)");
        });
    }
    for (_, stdin, out) in &mut children {
        stdin.write_all(b"plain\n").await.unwrap();
        assert_eq!(out.next_line().await.unwrap().as_deref(), Some("held"));
    }
    let (before, cost) = publish_run(&broker, &mut children, per * INSTANCES).await;
    println!(
        "publish rate, {} streams on the topic without presence: {before:.0} events/s ({cost:.3} µs of instance CPU per event and stream)",
        per * INSTANCES
    );
    for (_, stdin, out) in &mut children {
        stdin.write_all(b"unplain\n").await.unwrap();
        assert_eq!(out.next_line().await.unwrap().as_deref(), Some("dropped"));
    }

    let memory_before = redis_memory(&mut conn).await;
    let cpu = |n: &str| n.strip_prefix("cpu ").unwrap().parse::<u64>().unwrap();
    let mut cpu_before = 0;
    for (_, stdin, out) in &mut children {
        stdin.write_all(b"cpu\n").await.unwrap();
        cpu_before += cpu(&out.next_line().await.unwrap().unwrap());
    }
    let started = Instant::now();
    for (_, stdin, _) in &mut children {
        stdin.write_all(b"join\n").await.unwrap();
    }
    for (_, _, out) in &mut children {
        assert_eq!(out.next_line().await.unwrap().as_deref(), Some("joined"));
    }
    let total = per * INSTANCES;
    let deadline = Instant::now() + Duration::from_secs(120);
    while watched.lock().unwrap().joined.len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined_in = started.elapsed();
    let mut cpu_after = 0;
    for (_, stdin, out) in &mut children {
        stdin.write_all(b"cpu\n").await.unwrap();
        cpu_after += cpu(&out.next_line().await.unwrap().unwrap());
    }
    // The instances may still be handing the last joins to their streams: measure on when they
    // are idle (under 5% of a core over a second), so the publish rate below is not theirs.
    let mut last = cpu_after;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut now = 0;
        for (_, stdin, out) in &mut children {
            stdin.write_all(b"cpu\n").await.unwrap();
            now += cpu(&out.next_line().await.unwrap().unwrap());
        }
        let busy = now - last;
        last = now;
        if busy < 50_000 {
            break;
        }
    }
    let memory_after = redis_memory(&mut conn).await;
    let latencies: Vec<u64> = watched.lock().unwrap().joined.values().copied().collect();
    println!(
        "{} of {total} joins seen in {:.1} s at {rate}/s; join -> watcher p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        joined_in.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let per_join = (last - cpu_before) as f64 / total as f64;
    println!(
        "instances' CPU per join: {per_join:.0} µs, all its work included: its state to the new stream, and its \
         frame to every stream on the topic (on average {:.2} µs per stream it reached)",
        per_join / (total as f64 / 2.0)
    );
    println!(
        "Redis memory per member: {:.0} bytes",
        (memory_after.saturating_sub(memory_before)) as f64 / total as f64
    );

    let (after, cost) = publish_run(&broker, &mut children, total).await;
    println!(
        "publish rate, {total} streams on the topic, each a member: {after:.0} events/s ({cost:.3} µs of instance CPU per event and stream)"
    );

    // Two instances' members leave, paced; each leave timed from its drop to the watcher.
    let mut left_at: HashMap<String, u64> = HashMap::new();
    for (_, stdin, _) in children.iter_mut().take(2) {
        stdin.write_all(b"leave\n").await.unwrap();
    }
    for (_, _, out) in children.iter_mut().take(2) {
        while let Some(line) = out.next_line().await.unwrap() {
            if line == "done" {
                break;
            }
            let mut parts = line.split(' ').skip(1);
            let (id, t) = (parts.next().unwrap().to_owned(), parts.next().unwrap().parse().unwrap());
            left_at.insert(id, t);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while watched.lock().unwrap().left.len() < left_at.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leaves: Vec<u64> = {
        let w = watched.lock().unwrap();
        left_at.iter().filter_map(|(id, t)| w.left.get(id).map(|seen| seen.saturating_sub(*t))).collect()
    };
    println!(
        "{} of {} leaves seen; leave -> watcher p50 {:.2} ms, p99 {:.2} ms",
        leaves.len(),
        left_at.len(),
        percentile(&leaves, 0.5),
        percentile(&leaves, 0.99)
    );

    // The third instance dies: its members leave once the others sweep them out.
    let (mut doomed, _, _) = children.pop().unwrap();
    doomed.start_kill().unwrap();
    let _ = doomed.wait().await;
    let killed = Instant::now();
    let want = total;
    let deadline = Instant::now() + Duration::from_secs(ttl * 3 + 30);
    while watched.lock().unwrap().left.len() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = watched.lock().unwrap().left.len();
    println!(
        "killed instance: {} of its {per} members left {:.2} s after SIGKILL (TTL {ttl} s; bound {:.1} s)",
        gone - left_at.len(),
        killed.elapsed().as_secs_f64(),
        ttl as f64 * 4.0 / 3.0
    );
    // The two instances left hold plain streams again: the same cost as at the start means
    // what the member run measured was the streams', not presence's.
    for (_, stdin, out) in &mut children {
        stdin.write_all(b"plain\n").await.unwrap();
        assert_eq!(out.next_line().await.unwrap().as_deref(), Some("held"));
    }
    let streams = per * children.len();
    let (again, cost) = publish_run(&broker, &mut children, streams).await;
    println!(
        "publish rate again at the end, {streams} streams without presence: {again:.0} events/s ({cost:.3} µs of instance CPU per event and stream)"
    );
    println!("events the watcher received: {}", watched.lock().unwrap().events);
}
