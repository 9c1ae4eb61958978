//! What a write costs with and without an idempotency key: `--writes` tasks created through the
//! REST API (`POST /api/tasks`) by `--clients` concurrent clients, first without a key, then each
//! with its own `Idempotency-Key`, then each with its own key twice in a row (the second a
//! repeat, answered from the store: a key is repeated right after its first send, since a scope
//! keeps only its newest keys and this tool is one client). Prints, for each round, the server's CPU time per write (read from
//! `/proc/<pid>/stat`) and the bytes of a request's and an answer's head the round adds
//! (`sse-position`, `Idempotency-Key`, `idempotent-replayed`). `scripts/bench-writes.sh` runs it
//! on the embedded broker and on Redis.
//!
//! ```text
//! write-bench --url http://127.0.0.1:3000 --pid 1234 --writes 2000 --clients 16
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

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
    #[arg(long, default_value_t = 2000)]
    writes: u64,
    #[arg(long, default_value_t = 16)]
    clients: u64,
}

/// One round's figures.
struct Round {
    cpu_us: f64,
    seconds: f64,
    /// Bytes of the answer heads' `sse-position` and `idempotent-replayed` lines, per write.
    answer_extra: f64,
    replayed: u64,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(args.clients as usize).build().map_err(|e| e.to_string())?;
    // Warm the connections and the store.
    round(&client, &args, None, 200, false).await?;
    let plain = round(&client, &args, None, args.writes, false).await?;
    let run = std::process::id();
    let keyed = round(&client, &args, Some((run, 0)), args.writes, false).await?;
    let twice = round(&client, &args, Some((run, 1)), args.writes, true).await?;
    if twice.replayed != args.writes || keyed.replayed != 0 {
        return Err(format!("{} of the repeats were replays, {} of the first sends", twice.replayed, keyed.replayed));
    }
    // The repeats alone: the round of first sends and repeats, less a round of first sends.
    let repeated = Round {
        cpu_us: (twice.cpu_us - keyed.cpu_us).max(0.0),
        seconds: (twice.seconds - keyed.seconds).max(f64::EPSILON),
        answer_extra: twice.answer_extra - keyed.answer_extra,
        replayed: twice.replayed,
    };
    // A request's head grows by `idempotency-key: <32 characters>\r\n`, as the hook sends it.
    let key_line = "idempotency-key: ".len() + 32 + 2;
    println!("{} writes by {} clients each round", args.writes, args.clients);
    for (name, r) in [("no key", &plain), ("with a key, first send", &keyed), ("with a key, repeated", &repeated)] {
        println!(
            "{name:<24} server CPU {:>6.1} us/write, {:>7.0} writes/s, answer head +{:.0} B/write{}",
            r.cpu_us / args.writes as f64,
            args.writes as f64 / r.seconds,
            r.answer_extra,
            if name == "no key" { String::new() } else { format!(", request head +{key_line} B") },
        );
    }
    Ok(())
}

/// `writes` creates, each with the key `bench-<run>-<round>-<i>` when `run` is given, and sent
/// again right after its answer when `twice`.
async fn round(
    client: &reqwest::Client,
    args: &Args,
    run: Option<(u32, u32)>,
    writes: u64,
    twice: bool,
) -> Result<Round, String> {
    let next = Arc::new(AtomicU64::new(0));
    let (extra, replayed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let before = procfs::sample(args.pid).ok_or("cannot read the server's /proc")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, url, next, extra, replayed) =
            (client.clone(), args.url.clone(), next.clone(), extra.clone(), replayed.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return Ok::<_, String>(());
                }
                for _ in 0..if twice { 2 } else { 1 } {
                    let mut request =
                        client.post(format!("{url}/api/tasks")).json(&serde_json::json!({ "title": "bench" }));
                    if let Some((run, round)) = run {
                        request = request.header("idempotency-key", format!("bench-{run}-{round}-{i:0>20}"));
                    }
                    let answer = request.send().await.map_err(|e| e.to_string())?;
                    if answer.status() != 201 {
                        return Err(format!("POST /api/tasks answered {}", answer.status()));
                    }
                    let mut added = 0;
                    for name in ["sse-position", "idempotent-replayed"] {
                        if let Some(v) = answer.headers().get(name) {
                            added += name.len() + 2 + v.len() + 2;
                            if name == "idempotent-replayed" {
                                replayed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    extra.fetch_add(added as u64, Ordering::Relaxed);
                    answer.bytes().await.map_err(|e| e.to_string())?;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = procfs::sample(args.pid).ok_or("cannot read the server's /proc")?;
    Ok(Round {
        cpu_us: (after.cpu_ms - before.cpu_ms) as f64 * 1000.0,
        seconds,
        answer_extra: extra.load(Ordering::Relaxed) as f64 / writes as f64,
        replayed: replayed.load(Ordering::Relaxed),
    })
}
