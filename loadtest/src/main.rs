//! `loadtest`: holds SSE streams against one or more server instances and measures what they
//! cost and how fast events reach them.
//!
//! ```text
//! loadtest --url http://127.0.0.1:3000 --streams 19000 --hold 10 --pid 1234
//! loadtest --url http://127.0.0.1:3000 --streams 1000 --events 100 --rate 100 --pid 1234
//! loadtest --url http://127.0.0.1:3001 --url http://127.0.0.1:3002 --streams 100000 \
//!          --events 100 --publish redis --redis redis://127.0.0.1:6379 --sources 127.0.0.1,127.0.0.2
//! ```
//!
//! Streams are spread over worker processes (at most `--per-process` each, under the 20,000
//! open files a process may hold here) and over the `--sources` addresses (each source address
//! has its own ~28,000 ephemeral ports towards one server). Events are published through the
//! demo's REST API (`POST /api/tasks`, event `task:created`) or straight into Redis with the
//! broker library (`--publish redis`, as another instance would), open-loop at `--rate` per
//! second or as fast as `--publishers` concurrent requests go (`--rate 0`). Each event is
//! timed from just before its publish to its arrival on every stream. Prints a summary and one
//! JSON line (`{"summary": ...}`) for scripts; every loop is bounded by count and time.
//!
//! With `--refetch /api/tasks` every stream also fetches after each notification, as a page
//! does ("notify, then fetch"), and the figures are those of the whole change: refetches/s,
//! publish-to-data latency, bytes and server CPU per change and per viewer.

mod chunked;
mod coordinator;
mod frames;
mod procfs;
mod protocol;
mod publish;
mod refetch;
mod worker;

use clap::Parser;

/// Holds SSE streams and measures connect and delivery latency, throughput, and server cost.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// A server instance (repeat for several; streams are spread round-robin).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Streams to open in all.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Topics of every stream (comma-separated).
    #[arg(long, default_value = "tasks")]
    pub topics: String,
    /// The events path.
    #[arg(long, default_value = "/events")]
    pub path: String,
    /// Events to publish (0: only hold the streams for `--hold` seconds).
    #[arg(long, default_value_t = 0)]
    pub events: usize,
    /// Events per second, open-loop (0: as fast as `--publishers` requests in flight allow).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publish requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub publishers: usize,
    /// `rest` (POST /api/tasks on the first --url), `rest-update` (PUT /api/tasks/{id} over the
    /// board's `--board` tasks in turn, one at a time; count `--event task:updated`) or `redis`
    /// (the broker library, into --redis).
    #[arg(long, default_value = "rest")]
    pub publish: String,
    /// With `--publish rest-update`: the board's size (tasks are created up to it).
    #[arg(long, default_value_t = 100)]
    pub board: usize,
    /// Redis URL for `--publish redis`, and to read Redis's CPU time. Behind Sentinel or on a
    /// Cluster, `--publish redis` reads `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER` or
    /// `REDIS_CLUSTER_NODES` (and the other Redis variables) like the servers do.
    #[arg(long)]
    pub redis: Option<String>,
    /// The servers' TOPIC_PREFIX (for `--publish redis`).
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// The event name counted on the streams (its data must carry `"id"`).
    #[arg(long, default_value = "task:created")]
    pub event: String,
    /// Seconds to hold the streams open when no events are published.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Seconds to wait for every delivery after the last publish.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Server process ids whose memory, descriptors and CPU are reported (repeatable).
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Local addresses to connect from, comma-separated (e.g. 127.0.0.1,127.0.0.2).
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    pub sources: Vec<std::net::IpAddr>,
    /// Streams per worker process.
    #[arg(long, default_value_t = 15_000)]
    pub per_process: usize,
    /// Connects in flight per worker process.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Reopen streams the server ends, from their last event id (as EventSource does).
    #[arg(long)]
    pub reconnect: bool,
    /// Fail the run if a stream receives an event after one with a higher id: the publish order
    /// when events are published one at a time (a low `--rate`). Events received twice always
    /// fail it.
    #[arg(long)]
    pub ordered: bool,
    /// Events may arrive twice (reported, not failed): with `SSE_REDIS_MIN_REPLICAS`, a publish
    /// no replica confirmed in time is published again from the outbox (at-least-once).
    #[arg(long)]
    pub at_least_once: bool,
    /// With `--publish redis`: each event's data carries this many KiB of filler, and a frame
    /// counts only when its data arrived at least that long (large events through proxies).
    #[arg(long, default_value_t = 0)]
    pub payload_kib: usize,
    /// After each event every stream GETs this path on a keep-alive connection of its own, as
    /// a tab refetches after a notification (`{id}`: the event's id; the event's cursor goes as
    /// `Last-Event-ID`); events that arrive meanwhile are covered by one refetch after it.
    /// Reports refetches/s, publish-to-data latency and bytes and server CPU per change.
    #[arg(long)]
    pub refetch: Option<String>,
    /// Refetch with `If-None-Match` (the last `ETag` received), as a browser's HTTP cache does.
    #[arg(long)]
    pub conditional: bool,
    /// One refetch per event, in turn, none covering another: a page without coalescing.
    #[arg(long)]
    pub refetch_each: bool,
    /// A refetch waits a random time of up to this many milliseconds after the event that
    /// starts it, and covers the events meanwhile (`UseSseOptions::jitter`).
    #[arg(long, default_value_t = 0)]
    pub refetch_jitter: u64,
    /// No progress bars (logs and CI).
    #[arg(long)]
    pub quiet: bool,
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a Tokio runtime");
    // A worker process: started by the coordinator with its plan as the only argument.
    if argv.get(1).map(String::as_str) == Some("worker") {
        let plan = serde_json::from_str(argv.get(2).expect("worker plan")).expect("a valid worker plan");
        runtime.block_on(worker::run(plan));
        return std::process::ExitCode::SUCCESS;
    }
    let args = Args::parse();
    match runtime.block_on(coordinator::run(args)) {
        Ok(summary) if summary.passed() => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
