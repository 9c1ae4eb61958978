//! The demo task board's data and events (application code, not part of the integration).

use serde::{Deserialize, Serialize};

use sse_notify_core::{sse_event, Topic, TopicBuilder};

/// The topic every task event is published on.
pub const TASKS_TOPIC: &str = "tasks";

/// Longest title, in characters, after trimming.
pub const MAX_TITLE_CHARS: usize = 200;

/// A task as the REST API and the server functions return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub title: String,
    pub done: bool,
}

/// Validates and normalises a title: trimmed, 1-200 characters.
pub fn normalize_title(title: &str) -> Result<String, String> {
    let t = title.trim();
    let n = t.chars().count();
    if n == 0 {
        Err("title must not be empty".to_owned())
    } else if n > MAX_TITLE_CHARS {
        Err(format!("title is {n} characters; at most {MAX_TITLE_CHARS} are allowed"))
    } else {
        Ok(t.to_owned())
    }
}

sse_event! {
    /// What happened to a task. Each is published on `tasks` and on `task:{id}`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum TaskEvent {
        Created { id: u64 } = "task:created",
        Updated { id: u64 } = "task:updated",
        Deleted { id: u64 } = "task:deleted",
    }
    topics(&self) { vec![Self::board_topic(), TopicBuilder::task(self.id())] }
}

impl TaskEvent {
    /// The task this event is about.
    pub fn id(&self) -> u64 {
        match *self {
            TaskEvent::Created { id } | TaskEvent::Updated { id } | TaskEvent::Deleted { id } => id,
        }
    }

    /// The `tasks` topic.
    pub fn board_topic() -> Topic {
        Topic::new(TASKS_TOPIC).expect("constant topic is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_notify_core::{DecodeError, SseEvent};

    #[test]
    fn wire_names_topics_payload() {
        let e = TaskEvent::Updated { id: 7 };
        assert_eq!(e.name(), "task:updated");
        let topics: Vec<_> = e.topics().iter().map(|t| t.to_string()).collect();
        assert_eq!(topics, ["tasks", "task:7"]);
        assert_eq!(e.payload().to_string(), r#"{"id":7}"#);
    }

    #[test]
    fn round_trip_every_variant() {
        for e in [TaskEvent::Created { id: 1 }, TaskEvent::Updated { id: 2 }, TaskEvent::Deleted { id: 3 }] {
            assert!(TaskEvent::NAMES.contains(&e.name()));
            let back = TaskEvent::decode(e.name(), &e.payload().to_string()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn decode_errors() {
        assert!(matches!(TaskEvent::decode("task:moved", "{\"id\":1}"), Err(DecodeError::UnknownEvent(_))));
        assert!(matches!(TaskEvent::decode("task:created", "{\"id\":\"x\"}"), Err(DecodeError::BadPayload { .. })));
    }

    #[test]
    fn titles() {
        assert_eq!(normalize_title("  hi  ").unwrap(), "hi");
        assert!(normalize_title("   ").is_err());
        assert!(normalize_title(&"é".repeat(200)).is_ok());
        assert!(normalize_title(&"é".repeat(201)).is_err());
    }
}
