//! The Redis names of one prefix (its log's keys and its topics' channels), and the command
//! its events fan out with.

/// How events fan out to instances: plain Pub/Sub, or a cluster's sharded Pub/Sub, where a
/// channel lives on the shard that owns its slot (plain `PUBLISH` in a cluster reaches every
/// node).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Fanout {
    Plain,
    Sharded,
}

impl Fanout {
    pub(super) fn publish_command(self) -> &'static str {
        match self {
            Fanout::Plain => "PUBLISH",
            Fanout::Sharded => "SPUBLISH",
        }
    }
}

/// Redis names of one prefix: its log, the log's epoch, head, forks and writer, and its
/// channels. The namespace and the topic are joined by `/`, which no topic or prefix may contain,
/// so no topic a client can name is a channel of another prefix; an empty prefix is the
/// namespace `sse`. The namespace is each name's hash tag (`{...}`): in a Redis Cluster all of a
/// prefix's keys and channels live in one slot, so a publish stays one script on one shard with
/// its log entry, and different prefixes spread over the shards.
#[derive(Clone)]
pub(super) struct Keys {
    namespace: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned() }
    }

    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(super) fn log(&self) -> String {
        format!("sse-log/{{{}}}", self.namespace)
    }

    pub(super) fn epoch(&self) -> String {
        format!("sse-epoch/{{{}}}", self.namespace)
    }

    pub(super) fn head(&self) -> String {
        format!("sse-head/{{{}}}", self.namespace)
    }

    pub(super) fn forks(&self) -> String {
        format!("sse-forks/{{{}}}", self.namespace)
    }

    pub(super) fn writer(&self) -> String {
        format!("sse-writer/{{{}}}", self.namespace)
    }

    /// The keys every script takes, in order: log, epoch, head, forks, writer.
    pub(super) fn all(&self) -> [String; 5] {
        [self.log(), self.epoch(), self.head(), self.forks(), self.writer()]
    }

    /// Adds [`Keys::all`] to a script call.
    pub(super) fn script_keys(&self, inv: &mut redis::ScriptInvocation<'_>) {
        for key in self.all() {
            inv.key(key);
        }
    }

    pub(super) fn channel(&self, topic: &str) -> String {
        format!("{{{}}}/{topic}", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_of_two_prefixes_never_meet() {
        let (none, beta) = (Keys::new("sse"), Keys::new("beta"));
        assert_eq!(none.channel("tasks"), "{sse}/tasks");
        assert_eq!(beta.channel("tasks"), "{beta}/tasks");
        assert_eq!(beta.log(), "sse-log/{beta}", "one hash tag: one Cluster slot per prefix");
        // The old scheme joined without a separator: "beta" + "tasks" == "" + "betatasks".
        assert_ne!(none.channel("betatasks"), beta.channel("tasks"));
    }
}
