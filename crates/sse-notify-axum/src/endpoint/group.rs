//! The streams of one endpoint as a group: the heartbeat frame of the last tick, and the
//! tickers that signal every stream of the group at once (instead of a timer per stream).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sse_notify_core::wire::HEARTBEAT_EVENT;

use sse_notify_broker::{Broker, Signals};

/// An endpoint's streams: their group in the broker, and the heartbeat frame of the last tick.
pub(super) struct StreamGroup {
    broker: Broker,
    pub(super) id: u32,
    heartbeat: Mutex<Bytes>,
}

impl StreamGroup {
    pub(super) fn new(broker: &Broker) -> Arc<Self> {
        Arc::new(Self { broker: broker.clone(), id: broker.new_group(), heartbeat: Mutex::new(heartbeat_frame()) })
    }

    /// The heartbeat frame of the last tick (built once per tick, sent by every stream).
    pub(super) fn heartbeat(&self) -> Bytes {
        self.heartbeat.lock().unwrap().clone()
    }

    /// Every `every`, a heartbeat on each stream of the group, while it lives.
    pub(super) fn beat_every(self: &Arc<Self>, every: Duration) {
        self.spawn_ticker(every, |group| {
            *group.heartbeat.lock().unwrap() = heartbeat_frame();
            Signals::HEARTBEAT
        });
    }

    /// Every `every`, a re-check of each stream of the group, while it lives.
    pub(super) fn recheck_every(self: &Arc<Self>, every: Duration) {
        self.spawn_ticker(every, |_| Signals::RECHECK);
    }

    /// One ticker per group and purpose, shared by all its streams: every `every`, `tick` runs
    /// once and the signal it returns is raised on every stream of the group. It stops once
    /// the group is gone (the endpoint and all its streams).
    fn spawn_ticker(self: &Arc<Self>, every: Duration, tick: fn(&StreamGroup) -> Signals) {
        let group = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(group) = group.upgrade() else { break };
                let signal = tick(&group);
                group.broker.raise(group.id, signal);
            }
        });
    }
}

fn heartbeat_frame() -> Bytes {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Bytes::from(
        sse_notify_core::wire::encode_event(None, HEARTBEAT_EVENT, &format!("{{\"ts\":{ts}}}")).expect("valid frame"),
    )
}
