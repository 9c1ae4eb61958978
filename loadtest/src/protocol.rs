//! What the coordinator and its worker processes say to each other: one JSON object per line,
//! the plan on the worker's command line, reports on its stdout, the send times on its stdin.

use std::collections::HashMap;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What one worker process does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// `host:port` of each server; stream `i` goes to `targets[i % len]`.
    pub targets: Vec<String>,
    /// The request path and query, e.g. `/events?topic=tasks`.
    pub path: String,
    /// Streams this worker opens.
    pub streams: usize,
    /// Global index of its first stream (spreads streams over targets and sources evenly).
    pub first: usize,
    /// Local addresses to connect from; stream `i` uses `sources[i % len]`.
    pub sources: Vec<std::net::IpAddr>,
    /// Connects in flight at once.
    pub concurrency: usize,
    /// The event name whose frames are counted (`data` must carry `"id": <n>`).
    pub event: String,
    /// Frames each stream waits for (0: just hold).
    pub events: usize,
    /// Reopen a stream that the server ended, from its last event id, as EventSource does.
    pub reconnect: bool,
    /// A counted frame's data must be at least this long (bytes).
    #[serde(default)]
    pub min_data: usize,
    /// GET this path (`{id}`: the event's id) after each event, as a tab refetches.
    #[serde(default)]
    pub refetch: Option<String>,
    /// Refetch with `If-None-Match` (the last `ETag`).
    #[serde(default)]
    pub conditional: bool,
    /// One refetch per event: no coalescing.
    #[serde(default)]
    pub refetch_each: bool,
    /// Milliseconds of random wait before a refetch.
    #[serde(default)]
    pub refetch_jitter_ms: u64,
    /// Events are numbered by their order on each stream, not by their data's `"id"`
    /// (`--publish rest-update`: the data names a task, and events come one at a time).
    #[serde(default)]
    pub by_order: bool,
}

/// What a worker's refetches did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RefetchReport {
    pub requests: u64,
    pub not_modified: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub bytes: u64,
    /// Events whose data a completed refetch brought (summed over streams).
    pub covered: u64,
    /// From each event's publish to the end of the refetch that covered it.
    pub latency_us: Option<EncodedHistogram>,
}

/// A worker's reports.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Streams connected so far (for the progress bar).
    Connecting { ok: usize, failed: usize },
    /// Every connect attempt has finished.
    Open {
        ok: usize,
        failed: usize,
        first_error: Option<String>,
        /// Opens tried again after a failure (`--reconnect`), and why the first one failed.
        retried: u64,
        first_retry_reason: Option<String>,
        connect_us: EncodedHistogram,
    },
    /// Counted frames so far, over all streams.
    Received { frames: u64 },
    /// Delivery latencies, computed once the send times are known.
    Done {
        /// Distinct events received, summed over streams.
        frames: u64,
        /// Events a stream received more than once (after a reconnect).
        duplicates: u64,
        /// Events a stream received after one with a higher id.
        out_of_order: u64,
        /// Times a stream was reopened after the server ended it.
        reconnects: u64,
        complete_streams: usize,
        latency_us: EncodedHistogram,
        last_recv_us: u64,
        /// Bytes the streams read.
        stream_bytes: u64,
        refetch: Option<RefetchReport>,
    },
}

/// The coordinator's messages to a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// When each event id was sent (Unix µs): compute latencies and report `Done`.
    Sent { at_us: HashMap<u64, u64> },
}

/// A histogram in a JSON string (HdrHistogram V2 format, base64).
#[derive(Debug, Serialize, Deserialize)]
pub struct EncodedHistogram(String);

impl EncodedHistogram {
    pub fn encode(h: &Histogram<u64>) -> Self {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(h, &mut bytes).expect("serializing to memory");
        Self(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn decode(&self) -> Histogram<u64> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.0).expect("a worker's histogram");
        Deserializer::new().deserialize(&mut bytes.as_slice()).expect("a worker's histogram")
    }
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Microseconds since the Unix epoch (one clock for every process of the machine).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
