//! Per-client bounds: how many streams one client may hold open, and how many distinct topics
//! across them.
//!
//! A stream costs the server its connection (~3.5 KiB, plus the kernel's ~4-5 KiB per socket) and
//! each distinct topic a channel (~0.5 KiB plus a Redis subscription); without a bound per client, one anonymous client could open
//! thousands of streams of 64 unique topics each and take the process's memory and its
//! `SSE_MAX_CONNECTIONS` slots. A client is its network address (IPv6 by its /64, which one host
//! is usually given whole), or what [`crate::SseEndpoint::client_key`] says (a user id, or the
//! address a trusted proxy put in a header).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sse_notify_core::Topic;

use crate::error::ApiError;

/// The bounds one client is held to (see [`crate::SseEndpoint::client_limits`]).
///
/// ```
/// let limits = sse_notify_axum::ClientLimits::default();
/// assert_eq!((limits.max_streams, limits.max_topics), (256, 1024));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// `SSE_MAX_STREAMS_PER_CLIENT`: open streams per client (default 256).
    pub max_streams: usize,
    /// `SSE_MAX_TOPICS_PER_CLIENT`: distinct topics across a client's open streams (default 1024).
    pub max_topics: usize,
}

impl Default for ClientLimits {
    /// 256 streams: a browser needs one (the Leptos hook shares it between tabs), so this leaves
    /// room for an office of browsers behind one NAT address while bounding one address at
    /// ~2 MiB of streams (kernel included). 1024 topics: 16 streams' worth of the 64-topic maximum, ~0.5 MiB of
    /// channels.
    fn default() -> Self {
        Self { max_streams: 256, max_topics: 1024 }
    }
}

impl ClientLimits {
    /// No per-client bound (the process-wide `SSE_MAX_CONNECTIONS` still holds).
    pub const UNLIMITED: Self = Self { max_streams: usize::MAX, max_topics: usize::MAX };
}

/// The client key of a peer address: the address itself, or for IPv6 its /64 prefix.
pub fn address_key(ip: IpAddr) -> String {
    match client_address(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The address a peer counts as: an IPv4-mapped IPv6 address is the IPv4 one, and any other
/// IPv6 address is its /64 (one host usually has a whole /64, so counting single addresses
/// would bound nothing).
pub(crate) fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// What each client holds open right now. One per [`crate::Admission`], shared by its endpoints; locked
/// only when a stream opens or closes, never per event.
#[derive(Default)]
pub(crate) struct ClientTable {
    clients: Mutex<HashMap<String, Usage>>,
}

#[derive(Default)]
struct Usage {
    streams: usize,
    /// Topic -> how many of the client's streams follow it.
    topics: HashMap<Topic, usize>,
}

impl ClientTable {
    /// Counts a stream of `topics` for `key`, or refuses it (429, naming the limit). The count
    /// is given back when the returned slot is dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        key: String,
        topics: &[Topic],
        limits: ClientLimits,
    ) -> Result<ClientSlot, ApiError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let usage = clients.entry(key.clone()).or_default();
        let refusal = if usage.streams >= limits.max_streams {
            Some(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams_per_client",
                format!("this client already holds its limit of {} open streams", limits.max_streams),
            ))
        } else {
            let new = topics.iter().filter(|t| !usage.topics.contains_key(*t)).count();
            (usage.topics.len() + new > limits.max_topics).then(|| {
                ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "too_many_topics_per_client",
                    format!(
                        "this client follows {} distinct topics and asked for {new} more; the limit is {}",
                        usage.topics.len(),
                        limits.max_topics
                    ),
                )
            })
        };
        if let Some(refusal) = refusal {
            if usage.streams == 0 {
                clients.remove(&key);
            }
            return Err(refusal);
        }
        usage.streams += 1;
        for t in topics {
            *usage.topics.entry(t.clone()).or_default() += 1;
        }
        Ok(ClientSlot { table: self.clone(), key, topics: topics.to_vec() })
    }

    /// Clients with at least one open stream.
    pub(crate) fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn release(&self, key: &str, topics: &[Topic]) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Some(usage) = clients.get_mut(key) else { return };
        usage.streams -= 1;
        for t in topics {
            if let Some(n) = usage.topics.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    usage.topics.remove(t);
                }
            }
        }
        if usage.streams == 0 {
            clients.remove(key);
        }
    }
}

/// A stream's share of its client's limits; given back when dropped.
pub(crate) struct ClientSlot {
    table: Arc<ClientTable>,
    key: String,
    topics: Vec<Topic>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.table.release(&self.key, &self.topics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::new(*n).unwrap()).collect()
    }

    #[test]
    fn streams_are_counted_per_client_and_given_back() {
        let table = Arc::new(ClientTable::default());
        let limits = ClientLimits { max_streams: 2, max_topics: 100 };
        let a1 = table.admit("a".into(), &topics(&["x"]), limits).unwrap();
        let _a2 = table.admit("a".into(), &topics(&["x"]), limits).unwrap();
        let e = table.admit("a".into(), &topics(&["x"]), limits).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (429, "too_many_streams_per_client"));
        assert!(e.message.contains('2'), "{}", e.message);
        let _b = table.admit("b".into(), &topics(&["x"]), limits).expect("another client is not affected");
        drop(a1);
        let _a3 = table.admit("a".into(), &topics(&["x"]), limits).expect("a closed stream frees its place");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn distinct_topics_are_counted_across_streams() {
        let table = Arc::new(ClientTable::default());
        let limits = ClientLimits { max_streams: 100, max_topics: 3 };
        let s1 = table.admit("a".into(), &topics(&["t1", "t2"]), limits).unwrap();
        let _s2 = table.admit("a".into(), &topics(&["t1", "t2", "t3"]), limits).expect("one new topic: 3 in all");
        let e = table.admit("a".into(), &topics(&["t4"]), limits).err().unwrap();
        assert_eq!(e.code, "too_many_topics_per_client");
        drop(s1); // t1..t3 are still followed by the second stream
        assert!(table.admit("a".into(), &topics(&["t4"]), limits).is_err());
        let _s3 = table.admit("a".into(), &topics(&["t3", "t2"]), limits).expect("topics already followed are free");
    }

    #[test]
    fn a_refused_first_stream_leaves_no_entry() {
        let table = Arc::new(ClientTable::default());
        let limits = ClientLimits { max_streams: 5, max_topics: 1 };
        assert!(table.admit("a".into(), &topics(&["t1", "t2"]), limits).is_err());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn ipv6_hosts_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_eq!(address_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(address_key("127.0.0.2".parse().unwrap()), "127.0.0.2");
    }
}
