//! What a long poll costs the server, beside a stream: `--pollers` clients follow the `tasks`
//! topic by polls (`GET /events?topic=tasks&poll=25`, each resuming from the last id the one
//! before it gave, as the hook does behind a proxy that holds streams back), while `--events`
//! tasks are created through the REST API at `--rate` per second. Prints the polls answered,
//! the events delivered and the server's CPU time per answered poll and per delivery (read from
//! `/proc/<pid>/stat`). `scripts/bench-polls.sh` runs it beside `loadtest` on streams.
//!
//! ```text
//! poll-bench --url http://127.0.0.1:3000 --pid 1234 --pollers 500 --events 100 --rate 20
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

// The load tool's own reader of /proc, shared rather than written twice.
#[path = "../procfs.rs"]
#[allow(dead_code)]
mod procfs;

#[derive(Parser)]
struct Args {
    /// The server.
    #[arg(long)]
    url: String,
    /// The server's process, to read its CPU time.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 500)]
    pollers: usize,
    /// Tasks created (each one `task:created` event on `tasks`).
    #[arg(long, default_value_t = 100)]
    events: u64,
    /// Events per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.pollers).build().map_err(|e| e.to_string())?;
    let (answered, delivered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Every poller first takes the stream's position (a poll without a cursor is answered at
    // once with it), so the measured span holds only polls that wait for events.
    let mut cursors = Vec::with_capacity(args.pollers);
    for _ in 0..args.pollers {
        let (_, cursor) = poll(&client, &args.url, None).await?;
        cursors.push(cursor.ok_or("the first poll gave no position")?);
    }
    let before = procfs::sample(args.pid).ok_or("cannot read the server's /proc")?;
    let started = Instant::now();
    let mut pollers = Vec::new();
    for cursor in cursors {
        let (client, url, answered, delivered) =
            (client.clone(), args.url.clone(), answered.clone(), delivered.clone());
        let wanted = args.events;
        pollers.push(tokio::spawn(async move {
            let (mut cursor, mut seen) = (Some(cursor), 0);
            while seen < wanted {
                let (events, next) = poll(&client, &url, cursor.as_deref()).await?;
                answered.fetch_add(1, Ordering::Relaxed);
                delivered.fetch_add(events, Ordering::Relaxed);
                seen += events;
                cursor = next.or(cursor);
            }
            Ok::<_, String>(())
        }));
    }
    let every = Duration::from_secs_f64(1.0 / args.rate);
    for i in 0..args.events {
        tokio::time::sleep_until((started + every * i as u32).into()).await;
        let created = client
            .post(format!("{}/api/tasks", args.url))
            .json(&serde_json::json!({ "title": format!("poll bench {i}") }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if created.status() != 201 {
            return Err(format!("POST /api/tasks answered {}", created.status()));
        }
    }
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        for p in pollers {
            p.await.map_err(|e| e.to_string())??;
        }
        Ok::<_, String>(())
    })
    .await;
    waited.map_err(|_| "the pollers did not get every event within 60 s".to_owned())??;
    let after = procfs::sample(args.pid).ok_or("cannot read the server's /proc")?;
    let (answered, delivered) = (answered.load(Ordering::Relaxed), delivered.load(Ordering::Relaxed));
    let cpu_us = (after.cpu_ms - before.cpu_ms) as f64 * 1000.0;
    println!(
        "pollers {} events {} at {}/s: {} polls answered, {} deliveries ({:.2} per poll) in {:.1} s; \
         server CPU {:.0} ms = {:.1} us per answered poll, {:.1} us per delivery; rss {} KiB",
        args.pollers,
        args.events,
        args.rate,
        answered,
        delivered,
        delivered as f64 / answered.max(1) as f64,
        started.elapsed().as_secs_f64(),
        cpu_us / 1000.0,
        cpu_us / answered.max(1) as f64,
        cpu_us / delivered.max(1) as f64,
        after.rss_kib,
    );
    if delivered != args.events * args.pollers as u64 {
        return Err(format!("{delivered} deliveries, not {}", args.events * args.pollers as u64));
    }
    Ok(())
}

/// One poll from `cursor`: the `task:created` events it brought, and the last id it gave.
async fn poll(client: &reqwest::Client, url: &str, cursor: Option<&str>) -> Result<(u64, Option<String>), String> {
    let mut request = client.get(format!("{url}/events?topic=tasks&poll=25"));
    if let Some(cursor) = cursor {
        request = request.header("last-event-id", cursor);
    }
    let answer = request.send().await.map_err(|e| format!("{e:?}"))?;
    if answer.status() != 200 {
        return Err(format!("a poll was answered {}", answer.status()));
    }
    let body = answer.text().await.map_err(|e| e.to_string())?;
    let events = body.lines().filter(|l| *l == "event: task:created").count() as u64;
    let last = body.lines().filter_map(|l| l.strip_prefix("id: ")).last().map(str::to_owned);
    Ok((events, last))
}
