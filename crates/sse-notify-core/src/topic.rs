//! Topics: the names clients subscribe to and events are published on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest topic a client may send, in bytes (the wire contract).
pub const MAX_TOPIC_LEN: usize = 128;

/// A validated topic name: 1-128 bytes of `[A-Za-z0-9_.:-]`.
///
/// ```
/// use sse_notify_core::Topic;
/// let t = Topic::new("task:7").unwrap();
/// assert_eq!(t.as_str(), "task:7");
/// assert!(Topic::new("no spaces").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

/// Why a string is not a valid [`Topic`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero bytes.
    #[error("topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is {0} bytes long; at most {MAX_TOPIC_LEN} are allowed")]
    TooLong(usize),
    /// A character outside `[A-Za-z0-9_.:-]`.
    #[error("topic contains {0:?}; only A-Z, a-z, 0-9 and _ . : - are allowed")]
    InvalidChar(char),
}

impl Topic {
    /// Validates `name` against the wire contract.
    pub fn new(name: impl Into<String>) -> Result<Self, TopicError> {
        let name = name.into();
        Self::validate(&name)?;
        Ok(Self(name))
    }

    /// Checks `name` without allocating.
    pub fn validate(name: &str) -> Result<(), TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong(name.len()));
        }
        match name.chars().find(|c| !is_topic_char(*c)) {
            Some(c) => Err(TopicError::InvalidChar(c)),
            None => Ok(()),
        }
    }

    /// The topic as the client names it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Topic {
    type Error = TopicError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Topic::new(value)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Topic::new(value)
    }
}

impl From<Topic> for String {
    fn from(t: Topic) -> String {
        t.0
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::new(s)
    }
}

/// The topic naming conventions of fastapi-sse-events: `<resource>:<id>`.
///
/// ```
/// use sse_notify_core::TopicBuilder;
/// assert_eq!(TopicBuilder::task(7).as_str(), "task:7");
/// assert_eq!(TopicBuilder::workspace("acme").as_str(), "workspace:acme");
/// assert_eq!(TopicBuilder::custom("invoice", 12).unwrap().as_str(), "invoice:12");
/// ```
pub struct TopicBuilder;

impl TopicBuilder {
    /// `comment:{id}`
    pub fn comment(id: impl fmt::Display) -> Topic {
        Self::known("comment", id)
    }
    /// `task:{id}`
    pub fn task(id: impl fmt::Display) -> Topic {
        Self::known("task", id)
    }
    /// `workspace:{id}`
    pub fn workspace(id: impl fmt::Display) -> Topic {
        Self::known("workspace", id)
    }
    /// `user:{id}`
    pub fn user(id: impl fmt::Display) -> Topic {
        Self::known("user", id)
    }
    /// `{resource}:{id}`, validated (either part may come from user input).
    pub fn custom(resource: &str, id: impl fmt::Display) -> Result<Topic, TopicError> {
        Topic::new(format!("{resource}:{id}"))
    }

    /// The fixed-resource builders take ids from the app (numbers, slugs); an id that would make an
    /// invalid topic is a programming error, reported loudly rather than turned into another topic.
    fn known(resource: &str, id: impl fmt::Display) -> Topic {
        match Self::custom(resource, &id) {
            Ok(topic) => topic,
            Err(e) => panic!("TopicBuilder::{resource}({id}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        let all = "AZaz09_.:-";
        assert_eq!(Topic::new(all).unwrap().as_str(), all);
    }

    #[test]
    fn length_bounds() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert!(Topic::new("a".repeat(128)).is_ok());
        assert_eq!(Topic::new("a".repeat(129)), Err(TopicError::TooLong(129)));
    }

    #[test]
    fn rejects_other_characters() {
        for bad in ["a b", "a/b", "a,b", "é", "a\nb", "a*", "tasks?"] {
            assert!(matches!(Topic::new(bad), Err(TopicError::InvalidChar(_))), "{bad:?}");
        }
    }

    #[test]
    fn multibyte_length_counts_bytes() {
        // 64 two-byte chars = 128 bytes, but invalid chars anyway; the length check runs first.
        assert_eq!(Topic::new("é".repeat(65)), Err(TopicError::TooLong(130)));
    }

    #[test]
    fn builder_conventions() {
        assert_eq!(TopicBuilder::comment(1).as_str(), "comment:1");
        assert_eq!(TopicBuilder::task(1).as_str(), "task:1");
        assert_eq!(TopicBuilder::workspace("acme").as_str(), "workspace:acme");
        assert_eq!(TopicBuilder::user(7).as_str(), "user:7");
        assert_eq!(TopicBuilder::custom("thread", 3).unwrap().as_str(), "thread:3");
        assert!(TopicBuilder::custom("thread", "a b").is_err());
    }

    #[test]
    #[should_panic(expected = "TopicBuilder::user")]
    fn builder_refuses_to_invent_a_topic() {
        TopicBuilder::user("x y");
    }

    #[test]
    fn serde_validates() {
        let ok: Topic = serde_json::from_str("\"tasks\"").unwrap();
        assert_eq!(ok.as_str(), "tasks");
        assert!(serde_json::from_str::<Topic>("\"no good\"").is_err());
    }
}
