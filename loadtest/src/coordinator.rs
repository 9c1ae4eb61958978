//! The coordinator: splits the streams into worker processes, follows their progress, publishes,
//! and puts the figures together.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::procfs::{kernel, sample_all, KernelSample, Sample};
use crate::protocol::{self, Plan, Report};
use crate::publish::{redis_cpu_ms, Publisher};
use crate::Args;

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Latency {
    /// `p50 … ms, p99 … ms, p99.9 … ms, max … ms`, with `places` decimals.
    fn show(&self, places: usize) -> String {
        format!(
            "p50 {:.places$} ms, p99 {:.places$} ms, p99.9 {:.places$} ms, max {:.places$} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// `: <error>` after a failure count, when there was an error to name.
fn naming(first_error: &Option<String>) -> String {
    first_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            samples: h.len(),
        }
    }
}

/// A server process's cost over the run.
#[derive(Debug, Serialize)]
pub struct ServerCost {
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_with_streams_kib: u64,
    pub fds_with_streams: u64,
    /// CPU for the whole run.
    pub cpu_ms: u64,
    /// CPU while the streams were opened.
    pub connect_cpu_ms: u64,
}

/// Everything measured (printed, and as one JSON line).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub streams: usize,
    pub connected: usize,
    pub connect_failed: usize,
    pub first_connect_error: Option<String>,
    /// Opens retried after a failure (`--reconnect`), and why the first retried one failed.
    pub connect_retries: u64,
    pub first_retry_reason: Option<String>,
    pub all_connected_s: f64,
    pub connect: Latency,
    pub servers: Vec<ServerCost>,
    /// Server memory growth per open stream over all `--pid`s (KiB).
    pub kib_per_stream: Option<f64>,
    /// The kernel's socket memory (slab and TCP buffers) before the streams and with them: both
    /// ends of each stream, as both are on this machine.
    pub kernel_before: Option<KernelSample>,
    pub kernel_with_streams: Option<KernelSample>,
    /// Its growth per open stream (KiB).
    pub kernel_kib_per_stream: Option<f64>,
    /// This tool's workers' memory per open stream (KiB): the client side.
    pub load_tool_kib_per_stream: Option<f64>,
    pub events: usize,
    pub publish_failed: usize,
    pub first_publish_error: Option<String>,
    /// Publishes per second, from the first one's start to the last one's answer.
    pub publish_per_s: f64,
    /// At a paced `--rate`: publishes started per second, the first's start to the last's
    /// (the rate the server absorbed: `publish_per_s` also counts the last answer's time).
    pub publish_started_per_s: Option<f64>,
    /// At a paced `--rate`: the most a publish started behind its schedule (ms): how far a
    /// slow answer held the next publish back before the schedule was caught up.
    pub publish_max_lag_ms: Option<f64>,
    pub deliveries: u64,
    pub deliveries_expected: u64,
    pub complete_streams: usize,
    /// Events a stream got twice (after reconnecting; 0 when every resume was exact).
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Whether `out_of_order` fails the run (`--ordered`).
    pub ordered: bool,
    /// Whether events received twice are allowed (`--at-least-once`).
    pub at_least_once: bool,
    /// Streams reopened after the server ended them (`--reconnect`).
    pub reconnects: u64,
    pub deliveries_per_s: f64,
    pub delivery: Latency,
    /// Server CPU per 1,000 deliveries over all `--pid`s, from the first publish on (ms).
    pub server_cpu_ms_per_1000: Option<f64>,
    /// Server CPU per stream opened over all `--pid`s (µs).
    pub server_cpu_us_per_connect: Option<f64>,
    /// This tool's workers' CPU per stream opened (µs), on the same cores.
    pub reader_cpu_us_per_connect: Option<f64>,
    /// This tool's readers' CPU per 1,000 deliveries, from the first publish on (ms): what the
    /// clients cost on the same cores.
    pub reader_cpu_ms_per_1000: Option<f64>,
    pub redis_cpu_ms: Option<u64>,
    /// Bytes the streams read in all.
    pub stream_bytes: u64,
    /// Server CPU per published event over all `--pid`s, from the first publish on (µs): the
    /// notification and, with `--refetch`, the refetches it caused.
    pub server_cpu_us_per_change: Option<f64>,
    /// The same per stream (viewer).
    pub server_cpu_us_per_viewer_change: Option<f64>,
    pub refetch: Option<RefetchSummary>,
}

/// What the refetches after the notifications did (`--refetch`).
#[derive(Debug, Default, Serialize)]
pub struct RefetchSummary {
    pub path: String,
    pub conditional: bool,
    /// One refetch per event (no coalescing).
    pub each: bool,
    pub requests: u64,
    pub not_modified: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Deliveries whose data a refetch brought (should be every delivery).
    pub covered: u64,
    pub per_s: f64,
    /// From publish to the refetched data received.
    pub latency: Latency,
    pub bytes: u64,
    /// Stream and refetch bytes per published event, over all streams.
    pub bytes_per_change: f64,
}

impl Summary {
    /// Every stream connected and, when events were published, every one reached every stream.
    pub fn passed(&self) -> bool {
        self.connect_failed == 0
            && self.publish_failed == 0
            && (self.events == 0 || self.deliveries == self.deliveries_expected)
            && (self.at_least_once || self.duplicates == 0)
            && (!self.ordered || self.out_of_order == 0)
            && self.refetch.as_ref().is_none_or(|r| r.failed == 0 && r.covered == self.deliveries)
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})")
        .expect("a valid template");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

fn target(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    Ok(addr.to_string())
}

/// Starts the worker processes, each reporting into `reports` as `(worker, report)`.
fn spawn_workers(args: &Args, reports: mpsc::UnboundedSender<(usize, Report)>) -> Result<Vec<Worker>, String> {
    let targets = args.urls.iter().map(|u| target(u)).collect::<Result<Vec<_>, _>>()?;
    let sep = if args.path.contains('?') { '&' } else { '?' };
    let path = format!("{}{sep}topic={}", args.path, args.topics);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // As few workers as the per-process limit allows, with the streams spread evenly over
    // them (19,000 at 15,000 per process is 9,500 + 9,500, not 15,000 + 4,000: both cores work).
    let count = args.streams.div_ceil(args.per_process.max(1)).max(1);
    let per = args.streams.div_ceil(count);
    let mut workers = Vec::new();
    let mut first = 0;
    while first < args.streams {
        let streams = per.min(args.streams - first);
        let plan = Plan {
            targets: targets.clone(),
            path: path.clone(),
            streams,
            first,
            sources: args.sources.clone(),
            concurrency: args.concurrency,
            event: args.event.clone(),
            events: args.events,
            reconnect: args.reconnect,
            min_data: args.payload_kib * 1024,
            refetch: args.refetch.clone(),
            conditional: args.conditional,
            refetch_each: args.refetch_each,
            refetch_jitter_ms: args.refetch_jitter,
            by_order: args.publish == "rest-update",
        };
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg(serde_json::to_string(&plan).expect("plans serialize"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting a worker: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (index, tx) = (workers.len(), reports.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Report>(&line) {
                    Ok(r) => {
                        if tx.send((index, r)).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("worker {index}: {line}"),
                }
            }
        });
        workers.push(Worker { child, stdin });
        first += streams;
    }
    Ok(workers)
}

/// Waits for the next report; an error when every worker has gone quiet for `within`.
async fn next(
    reports: &mut mpsc::UnboundedReceiver<(usize, Report)>,
    within: Duration,
) -> Result<(usize, Report), String> {
    match tokio::time::timeout(within, reports.recv()).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("every worker exited".into()),
        Err(_) => Err(format!("no word from any worker for {} s", within.as_secs())),
    }
}

/// Streams per source address above which connects slow down: the kernel picks each new
/// connection's port by searching the ephemeral range (28,232 ports here) for one free for the
/// destination, and the search grows long as the range fills. Measured: 100,000 streams over
/// 3 addresses took 42 s to connect (many opens retried), over 7 addresses 8 s.
const STREAMS_PER_SOURCE: usize = 15_000;

pub async fn run(args: Args) -> Result<Summary, String> {
    crate::procfs::raise_open_files();
    let per_source = args.streams.div_ceil(args.sources.len().max(1));
    if per_source > STREAMS_PER_SOURCE {
        eprintln!(
            "loadtest: {per_source} streams per source address; above {STREAMS_PER_SOURCE} connects slow down \
             (the kernel searches the port range): add --sources addresses ({} or more)",
            args.streams.div_ceil(STREAMS_PER_SOURCE)
        );
    }
    let before = sample_all(&args.pids);
    let kernel_before = kernel();
    let redis_before = match &args.redis {
        Some(url) => redis_cpu_ms(url).await,
        None => None,
    };
    if args.publish == "rest-update" && args.reconnect {
        return Err("--publish rest-update counts events by their order: a reconnect's replay would miscount".into());
    }
    if args.publish == "rest-update" && args.publishers > 1 {
        eprintln!(
            "loadtest: --publish rest-update with {} publishers: events are numbered by arrival, so latencies are \
             exact only to within one PUT's time",
            args.publishers
        );
    }
    let publisher = if args.events > 0 { Some(Arc::new(Publisher::new(&args).await?)) } else { None };
    let (tx, mut reports) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut workers = spawn_workers(&args, tx)?;
    let mut summary = Summary {
        streams: args.streams,
        events: args.events,
        ordered: args.ordered,
        at_least_once: args.at_least_once,
        ..Summary::default()
    };

    // Connecting: until every worker has finished its connect attempts.
    let bar_connect = bar(args.quiet, args.streams as u64, "connecting");
    let mut progress = vec![0usize; workers.len()];
    let mut open = 0;
    let mut connect = protocol::histogram();
    while open < workers.len() {
        match next(&mut reports, Duration::from_secs(120)).await? {
            (w, Report::Connecting { ok, failed }) => progress[w] = ok + failed,
            (w, Report::Open { ok, failed, first_error, retried, first_retry_reason, connect_us }) => {
                progress[w] = ok + failed;
                open += 1;
                summary.connected += ok;
                summary.connect_failed += failed;
                summary.first_connect_error = summary.first_connect_error.or(first_error);
                summary.connect_retries += retried;
                summary.first_retry_reason = summary.first_retry_reason.or(first_retry_reason);
                connect.add(connect_us.decode()).map_err(|e| e.to_string())?;
            }
            _ => {}
        }
        bar_connect.set_position(progress.iter().sum::<usize>() as u64);
    }
    bar_connect.finish_and_clear();
    summary.all_connected_s = started.elapsed().as_secs_f64();
    summary.connect = (&connect).into();
    // Let the servers settle (their side of the last connects) before reading their memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_streams = sample_all(&args.pids);
    let worker_pids: Vec<u32> = workers.iter().filter_map(|w| w.child.id()).collect();
    let readers_before = sample_all(&worker_pids);
    summary.kernel_before = kernel_before;
    summary.kernel_with_streams = kernel();
    if let (Some(b), Some(w), true) = (kernel_before, summary.kernel_with_streams, summary.connected > 0) {
        let grown = (w.slab_kib + w.tcp_buffers_kib) as f64 - (b.slab_kib + b.tcp_buffers_kib) as f64;
        summary.kernel_kib_per_stream = Some(grown / summary.connected as f64);
    }
    if summary.connected > 0 && !readers_before.is_empty() {
        let held: u64 = readers_before.iter().map(|r| r.rss_kib).sum();
        summary.load_tool_kib_per_stream = Some(held as f64 / summary.connected as f64);
    }

    // Publishing, or just holding.
    let mut sent = std::collections::HashMap::new();
    let mut first_sent_us = 0;
    summary.deliveries_expected = (summary.connected * args.events) as u64;
    if let Some(publisher) = publisher {
        let mut publishing = Some(tokio::spawn(publisher.run(args.events, args.rate, args.publishers)));
        let bar_deliver = bar(args.quiet, summary.deliveries_expected, "delivering");
        let mut received = vec![0u64; workers.len()];
        let mut published = None;
        // Publishing is bounded by its own request timeouts; then deliveries get --timeout.
        let mut deadline = Instant::now() + Duration::from_secs(args.timeout + 3600);
        loop {
            if let Some(task) = publishing.take_if(|t| t.is_finished()) {
                published = Some(task.await.map_err(|e| e.to_string())?);
                deadline = Instant::now() + Duration::from_secs(args.timeout);
            }
            let total: u64 = received.iter().sum();
            bar_deliver.set_position(total);
            if (published.is_some() && total >= summary.deliveries_expected) || Instant::now() >= deadline {
                break;
            }
            if let Ok(Some((w, Report::Received { frames }))) =
                tokio::time::timeout(Duration::from_millis(200), reports.recv()).await
            {
                received[w] = frames;
            }
        }
        bar_deliver.finish_and_clear();
        let p = match (published, publishing) {
            (Some(p), _) => p,
            (None, Some(task)) => task.await.map_err(|e| e.to_string())?,
            (None, None) => unreachable!("publishing is either running or done"),
        };
        summary.publish_failed = p.failed;
        summary.first_publish_error = p.first_error;
        summary.publish_per_s = (args.events - p.failed) as f64 / p.elapsed.as_secs_f64().max(1e-9);
        if args.rate > 0.0 && args.events > 1 {
            summary.publish_started_per_s = Some((args.events - 1) as f64 / p.started.as_secs_f64().max(1e-9));
            summary.publish_max_lag_ms = Some(p.max_lag.as_secs_f64() * 1e3);
        }
        first_sent_us = p.first_sent_us;
        sent = p.sent_us;
    } else {
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }

    // The send times go to every worker; each answers with its latencies.
    let command = serde_json::to_string(&protocol::Command::Sent { at_us: sent }).expect("commands serialize") + "\n";
    for w in &mut workers {
        w.stdin.write_all(command.as_bytes()).await.map_err(|e| format!("a worker is gone: {e}"))?;
    }
    let mut done = 0;
    let mut latency = protocol::histogram();
    let mut last_recv_us = 0;
    let mut refetch_latency = protocol::histogram();
    let mut refetch = args.refetch.as_ref().map(|path| RefetchSummary {
        path: path.clone(),
        conditional: args.conditional,
        each: args.refetch_each,
        ..RefetchSummary::default()
    });
    while done < workers.len() {
        if let (
            _,
            Report::Done {
                frames,
                duplicates,
                out_of_order,
                reconnects,
                complete_streams,
                latency_us,
                last_recv_us: last,
                stream_bytes,
                refetch: refetched,
            },
        ) = next(&mut reports, Duration::from_secs(60)).await?
        {
            summary.stream_bytes += stream_bytes;
            if let (Some(r), Some(w)) = (refetch.as_mut(), refetched) {
                r.requests += w.requests;
                r.not_modified += w.not_modified;
                r.failed += w.failed;
                r.bytes += w.bytes;
                r.covered += w.covered;
                r.first_error = r.first_error.take().or(w.first_error);
                if let Some(h) = w.latency_us {
                    refetch_latency.add(h.decode()).map_err(|e| e.to_string())?;
                }
            }
            done += 1;
            summary.deliveries += frames;
            summary.duplicates += duplicates;
            summary.out_of_order += out_of_order;
            summary.reconnects += reconnects;
            summary.complete_streams += complete_streams;
            latency.add(latency_us.decode()).map_err(|e| e.to_string())?;
            last_recv_us = last_recv_us.max(last);
        }
    }
    let readers_after = sample_all(&worker_pids);
    for w in &mut workers {
        let _ = w.child.kill().await;
    }
    summary.delivery = (&latency).into();
    let published = args.events.saturating_sub(summary.publish_failed);
    if let Some(mut r) = refetch {
        r.latency = (&refetch_latency).into();
        if summary.publish_per_s > 0.0 && published > 0 {
            r.per_s = r.requests as f64 * summary.publish_per_s / published as f64;
        }
        if published > 0 {
            r.bytes_per_change = (summary.stream_bytes + r.bytes) as f64 / published as f64;
        }
        summary.refetch = Some(r);
    }
    if summary.deliveries > 0 && last_recv_us > first_sent_us {
        summary.deliveries_per_s = summary.deliveries as f64 / ((last_recv_us - first_sent_us) as f64 / 1e6);
    }

    let after = sample_all(&args.pids);
    summary.servers = costs(&before, &with_streams, &after);
    let grown: i64 = summary.servers.iter().map(|s| s.rss_with_streams_kib as i64 - s.rss_before_kib as i64).sum();
    if summary.connected > 0 && !summary.servers.is_empty() {
        summary.kib_per_stream = Some(grown as f64 / summary.connected as f64);
    }
    let connect_cpu: u64 = summary.servers.iter().map(|s| s.connect_cpu_ms).sum();
    let delivery_cpu: u64 = summary.servers.iter().map(|s| s.cpu_ms - s.connect_cpu_ms).sum();
    if summary.connected > 0 && !summary.servers.is_empty() {
        summary.server_cpu_us_per_connect = Some(connect_cpu as f64 * 1000.0 / summary.connected as f64);
    }
    if summary.connected > 0 {
        // The workers started with the run: what they had spent when the streams were open.
        let opening: u64 = readers_before.iter().map(|r| r.cpu_ms).sum();
        summary.reader_cpu_us_per_connect = Some(opening as f64 * 1000.0 / summary.connected as f64);
    }
    if summary.deliveries > 0 && !summary.servers.is_empty() {
        summary.server_cpu_ms_per_1000 = Some(delivery_cpu as f64 * 1000.0 / summary.deliveries as f64);
        let readers = cpu_between(&readers_before, &readers_after);
        summary.reader_cpu_ms_per_1000 = Some(readers as f64 * 1000.0 / summary.deliveries as f64);
    }
    if published > 0 && !summary.servers.is_empty() {
        let per_change = delivery_cpu as f64 * 1000.0 / published as f64;
        summary.server_cpu_us_per_change = Some(per_change);
        summary.server_cpu_us_per_viewer_change = Some(per_change / summary.connected.max(1) as f64);
    }
    if let (Some(url), Some(b)) = (&args.redis, redis_before) {
        summary.redis_cpu_ms = redis_cpu_ms(url).await.map(|a| a.saturating_sub(b));
    }
    print_summary(&summary);
    Ok(summary)
}

fn costs(before: &[Sample], with: &[Sample], after: &[Sample]) -> Vec<ServerCost> {
    before
        .iter()
        .map(|b| {
            let w = with.iter().find(|s| s.pid == b.pid).copied().unwrap_or(*b);
            let a = after.iter().find(|s| s.pid == b.pid).copied().unwrap_or(w);
            ServerCost {
                pid: b.pid,
                rss_before_kib: b.rss_kib,
                rss_with_streams_kib: w.rss_kib,
                fds_with_streams: w.fds,
                cpu_ms: a.cpu_ms.saturating_sub(b.cpu_ms),
                connect_cpu_ms: w.cpu_ms.saturating_sub(b.cpu_ms),
            }
        })
        .collect()
}

/// CPU the processes sampled in both spent between the two samples (ms).
fn cpu_between(before: &[Sample], after: &[Sample]) -> u64 {
    let spent = |a: &Sample| before.iter().find(|b| b.pid == a.pid).map(|b| a.cpu_ms.saturating_sub(b.cpu_ms));
    after.iter().filter_map(spent).sum()
}

fn print_summary(s: &Summary) {
    println!(
        "streams: {} of {} connected ({} failed{}), all in {:.2} s; connect {}",
        s.connected,
        s.streams,
        s.connect_failed,
        naming(&s.first_connect_error),
        s.all_connected_s,
        s.connect.show(1)
    );
    if s.connect_retries > 0 {
        println!(
            "connect retries: {} (first because: {})",
            s.connect_retries,
            s.first_retry_reason.as_deref().unwrap_or("?")
        );
    }
    for c in &s.servers {
        println!(
            "server pid {}: RSS {} -> {} KiB with the streams, {} descriptors, {} ms CPU",
            c.pid, c.rss_before_kib, c.rss_with_streams_kib, c.fds_with_streams, c.cpu_ms
        );
    }
    if let Some(k) = s.kib_per_stream {
        println!("server memory per stream: {k:.2} KiB");
    }
    if let (Some(k), Some(b), Some(w)) = (s.kernel_kib_per_stream, s.kernel_before, s.kernel_with_streams) {
        println!(
            "kernel memory per stream (both ends): {k:.2} KiB (slab {} -> {} KiB, TCP buffers {} -> {} KiB, {} -> {} TCP sockets)",
            b.slab_kib, w.slab_kib, b.tcp_buffers_kib, w.tcp_buffers_kib, b.tcp_sockets, w.tcp_sockets
        );
    }
    if let Some(k) = s.load_tool_kib_per_stream {
        println!("load tool memory per stream: {k:.2} KiB (its workers' RSS with the streams)");
    }
    if let Some(c) = s.server_cpu_us_per_connect {
        println!("server CPU per stream opened: {c:.0} µs");
    }
    if let Some(c) = s.reader_cpu_us_per_connect {
        println!("load tool CPU per stream opened: {c:.0} µs (on the same cores)");
    }
    if s.events > 0 {
        println!(
            "events: {} published at {:.0}/s ({} failed{}); {} of {} deliveries ({} streams got all) at {:.0}/s",
            s.events,
            s.publish_per_s,
            s.publish_failed,
            naming(&s.first_publish_error),
            s.deliveries,
            s.deliveries_expected,
            s.complete_streams,
            s.deliveries_per_s
        );
        if let (Some(started), Some(lag)) = (s.publish_started_per_s, s.publish_max_lag_ms) {
            println!("publishes started at {started:.1}/s; the latest start was {lag:.1} ms behind its schedule");
        }
        if s.reconnects > 0 || s.duplicates > 0 || s.out_of_order > 0 {
            println!(
                "reconnects: {}, events received twice: {}, out of order: {}",
                s.reconnects, s.duplicates, s.out_of_order
            );
        }
        println!("delivery latency: {}", s.delivery.show(2));
        if let Some(c) = s.server_cpu_ms_per_1000 {
            println!("server CPU per 1,000 deliveries: {c:.3} ms");
        }
        if let Some(c) = s.reader_cpu_ms_per_1000 {
            println!("load tool readers' CPU per 1,000 deliveries: {c:.3} ms (on the same cores)");
        }
    }
    if let (Some(c), Some(v)) = (s.server_cpu_us_per_change, s.server_cpu_us_per_viewer_change) {
        println!("server CPU per change: {c:.0} µs, per viewer: {v:.2} µs");
    }
    if let Some(r) = &s.refetch {
        println!(
            "refetches of {}{}{}: {} ({} not modified, {} failed{}) at {:.0}/s; {} of {} deliveries' data received",
            r.path,
            if r.conditional { " (conditional)" } else { "" },
            if r.each { " (one per event)" } else { " (coalesced)" },
            r.requests,
            r.not_modified,
            r.failed,
            naming(&r.first_error),
            r.per_s,
            r.covered,
            s.deliveries
        );
        println!("publish to refetched data: {}", r.latency.show(2));
        println!("bytes per change (streams and refetches, all viewers): {:.0}", r.bytes_per_change);
    }
    if let Some(r) = s.redis_cpu_ms {
        println!("redis CPU: {r} ms");
    }
    println!("{}", serde_json::json!({ "summary": s }));
}
