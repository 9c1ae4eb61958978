//! Who may open a stream: the process-wide stream count (`SSE_MAX_CONNECTIONS`) and each
//! client's share ([`ClientLimits`]).
//!
//! This is the endpoint layer's business, not the broker's: the broker hands out subscriptions
//! to whoever asks (a test, a background job, an endpoint), and an endpoint decides first
//! whether the request in front of it may have one, answering 429 or 503 when not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sse_notify_core::Topic;

use crate::clients::{ClientLimits, ClientSlot, ClientTable};
use crate::error::ApiError;

/// The streams open through the endpoints that share it; cheap to clone (one `Arc`).
///
/// [`crate::SseApp`] gives every endpoint it builds the same one, so `SSE_MAX_CONNECTIONS` and
/// the per-client limits hold across all of them. An endpoint built with
/// [`crate::SseEndpoint::new`] alone has its own unless given one with
/// [`crate::SseEndpoint::admission`].
///
/// ```
/// use sse_notify_axum::Admission;
/// let admission = Admission::default();
/// assert_eq!((admission.connections(), admission.clients()), (0, 0));
/// ```
#[derive(Clone, Default)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    connections: AtomicUsize,
    /// The most streams open at once since the last heap trim ([`crate::heap_trim`]).
    peak_connections: AtomicUsize,
    clients: Arc<ClientTable>,
}

impl Admission {
    /// Open streams right now.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
    }

    /// Clients (addresses, or client keys) with at least one open stream.
    pub fn clients(&self) -> usize {
        self.inner.clients.len()
    }

    /// Takes one of `max` stream slots, or `None` when all are in use.
    pub(crate) fn try_acquire_connection(&self, max: usize) -> Option<ConnectionSlot> {
        let inner = &self.inner;
        let taken = inner.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        taken.ok().map(|n| {
            inner.peak_connections.fetch_max(n + 1, Ordering::AcqRel);
            ConnectionSlot { admission: self.clone() }
        })
    }

    /// Counts a stream of `topics` against client `key`'s limits, or refuses it with 429
    /// naming the limit.
    pub(crate) fn admit_client(
        &self,
        key: String,
        topics: &[Topic],
        limits: ClientLimits,
    ) -> Result<ClientSlot, ApiError> {
        self.inner.clients.admit(key, topics, limits)
    }

    /// The most streams open at once since [`Admission::reset_connection_peak`].
    pub(crate) fn connection_peak(&self) -> usize {
        self.inner.peak_connections.load(Ordering::Acquire)
    }

    /// Starts the peak over from `open`.
    pub(crate) fn reset_connection_peak(&self, open: usize) {
        self.inner.peak_connections.store(open, Ordering::Release);
    }
}

/// One of the `SSE_MAX_CONNECTIONS` slots; freed when dropped.
pub(crate) struct ConnectionSlot {
    admission: Admission,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.admission.inner.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back_and_the_peak_remembers() {
        let admission = Admission::default();
        let a = admission.try_acquire_connection(2).unwrap();
        let b = admission.try_acquire_connection(2).unwrap();
        assert!(admission.try_acquire_connection(2).is_none());
        drop(a);
        assert_eq!(admission.connections(), 1);
        let _c = admission.try_acquire_connection(2).expect("a freed slot is taken again");
        drop(b);
        assert_eq!((admission.connections(), admission.connection_peak()), (1, 2));
        admission.reset_connection_peak(1);
        assert_eq!(admission.connection_peak(), 1);
    }
}
