//! What one broker is made of, shared by its handles and by what it hands out (subscriptions,
//! watches, the outbox's relay): the hub, the presence book, the backend, the counters and the
//! limits. Each of those modules takes these parts, never the `Broker` facade above them.

use std::sync::Arc;

use sse_notify_core::cursor::LogPosition;

use crate::backend::Backend;
use crate::error::BrokerError;
use crate::hub::Hub;
use crate::limits::BrokerLimits;
use crate::log::History;
use crate::metrics::SharedMetrics;
use crate::presence::PresenceBook;

pub(crate) struct Parts {
    pub(crate) limits: BrokerLimits,
    /// The prefix's tag in every cursor of its log: a cursor of another prefix is foreign.
    pub(crate) log_tag: u16,
    /// The local streams and watches, and what reaches them.
    pub(crate) hub: Arc<Hub>,
    /// Who is on the topics with presence, and which local streams see it.
    pub(crate) presence: Arc<PresenceBook>,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) metrics: SharedMetrics,
}

impl Parts {
    /// The log's head and, with `after`, every retained event after that position.
    pub(crate) async fn history(&self, after: Option<LogPosition>) -> Result<History, BrokerError> {
        self.backend.history(after).await.map_err(BrokerError::Unavailable)
    }
}
