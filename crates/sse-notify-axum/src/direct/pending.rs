//! Connections that have not yet sent a complete request head, counted per client address.
//!
//! Each costs a file descriptor and a task until its head arrives or its deadline passes
//! (`HTTP_HEADER_TIMEOUT_SECONDS`), so without a bound one address could open thousands of
//! silent connections and use up the process's descriptors. A client is its address (IPv6 by
//! its /64: [`client_address`]), as for the per-client stream limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::clients::client_address;

/// The table of connections waiting for their first head, by client address.
pub(crate) struct PendingHeads {
    /// Most waiting connections per address; `None` = no bound (behind a trusted proxy, which
    /// forwards complete heads only, every connection comes from the proxy's address).
    limit: Option<usize>,
    waiting: Mutex<HashMap<IpAddr, usize>>,
}

/// One waiting connection; given back when dropped (its head arrived, or it ended).
pub(crate) struct PendingHead {
    table: Arc<PendingHeads>,
    client: IpAddr,
}

impl PendingHeads {
    pub(crate) fn new(limit: Option<usize>) -> Arc<Self> {
        Arc::new(Self { limit, waiting: Mutex::default() })
    }

    /// Counts a connection from `peer` that is waiting for its head, or `None` when its client
    /// already has `limit` waiting (the connection is then refused).
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<PendingHead> {
        let client = client_address(peer);
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let n = waiting.entry(client).or_insert(0);
        if self.limit.is_some_and(|limit| *n >= limit) {
            return None;
        }
        *n += 1;
        Some(PendingHead { table: self.clone(), client })
    }

    /// Connections waiting for their head right now, from every client.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.lock().unwrap().values().sum()
    }
}

impl Drop for PendingHead {
    fn drop(&mut self) {
        let mut waiting = self.table.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiting.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_is_held_to_the_limit_and_gets_its_places_back() {
        let table = PendingHeads::new(Some(2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let (one, _two) = (table.admit(a).unwrap(), table.admit(a).unwrap());
        assert!(table.admit(a).is_none(), "a third waiting connection from one address");
        assert!(table.admit("127.0.0.2".parse().unwrap()).is_some(), "another address is another client");
        drop(one);
        assert!(table.admit(a).is_some(), "a place given back");
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let table = PendingHeads::new(Some(1));
        let _held = table.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(table.admit("2001:db8:1:2:ffff::9".parse().unwrap()).is_none(), "same /64");
        assert!(table.admit("2001:db8:1:3::1".parse().unwrap()).is_some(), "another /64");
        let _v4 = table.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(table.admit("::ffff:10.0.0.1".parse().unwrap()).is_none(), "the same IPv4 client");
    }

    #[test]
    fn no_limit_behind_a_proxy_and_nothing_left_once_all_are_dropped() {
        let table = PendingHeads::new(None);
        let held: Vec<_> = (0..1000).map(|_| table.admit("127.0.0.1".parse().unwrap()).unwrap()).collect();
        assert_eq!(table.len(), 1000);
        drop(held);
        assert_eq!(table.len(), 0);
        assert!(table.waiting.lock().unwrap().is_empty(), "no entry left per address");
    }
}
