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
/// The fixed resources take numeric ids ([`NumericId`]: every integer type), which always make
/// a valid topic, so they cannot fail. Text from users (a workspace slug, a UUID) goes through
/// [`TopicBuilder::custom`], which validates it and says why it is not a topic.
///
/// ```
/// use sse_notify_core::TopicBuilder;
/// assert_eq!(TopicBuilder::task(7).as_str(), "task:7");
/// assert_eq!(TopicBuilder::user(-1i64).as_str(), "user:-1");
/// assert_eq!(TopicBuilder::workspace_slug("acme").unwrap().as_str(), "workspace:acme");
/// assert!(TopicBuilder::workspace_slug("acme corp").is_err()); // a user's slug: an error, not a panic
/// assert_eq!(TopicBuilder::custom("invoice", 12).unwrap().as_str(), "invoice:12");
/// ```
pub struct TopicBuilder;

/// An id that always makes a valid topic: the integer types (digits and a sign, at most 40
/// bytes). Sealed: text ids go through [`TopicBuilder::custom`].
pub trait NumericId: fmt::Display + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numeric_ids {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl NumericId for $t {}
        impl sealed::Sealed for &$t {}
        impl NumericId for &$t {}
    )*};
}
numeric_ids!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl TopicBuilder {
    /// `comment:{id}`
    pub fn comment(id: impl NumericId) -> Topic {
        Self::numeric("comment", id)
    }
    /// `task:{id}`
    pub fn task(id: impl NumericId) -> Topic {
        Self::numeric("task", id)
    }
    /// `workspace:{id}`
    pub fn workspace(id: impl NumericId) -> Topic {
        Self::numeric("workspace", id)
    }
    /// `workspace:{slug}`, validated (a slug usually comes from user input).
    pub fn workspace_slug(slug: &str) -> Result<Topic, TopicError> {
        Self::custom("workspace", slug)
    }
    /// `user:{id}`
    pub fn user(id: impl NumericId) -> Topic {
        Self::numeric("user", id)
    }
    /// `{resource}:{id}`, validated (either part may come from user input).
    pub fn custom(resource: &str, id: impl fmt::Display) -> Result<Topic, TopicError> {
        Topic::new(format!("{resource}:{id}"))
    }

    /// A fixed resource name (at most 9 bytes of the alphabet), `:` and an integer (at most 40
    /// bytes of digits and `-`): always 1-128 bytes of the alphabet.
    fn numeric(resource: &'static str, id: impl NumericId) -> Topic {
        Topic(format!("{resource}:{id}"))
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
        assert_eq!(TopicBuilder::task(1u8).as_str(), "task:1");
        assert_eq!(TopicBuilder::workspace(3).as_str(), "workspace:3");
        assert_eq!(TopicBuilder::workspace_slug("acme").unwrap().as_str(), "workspace:acme");
        assert_eq!(TopicBuilder::user(&7u64).as_str(), "user:7");
        assert_eq!(TopicBuilder::custom("thread", 3).unwrap().as_str(), "thread:3");
        assert!(TopicBuilder::custom("thread", "a b").is_err());
    }

    #[test]
    fn numeric_ids_always_make_valid_topics() {
        for t in [
            TopicBuilder::workspace(i128::MIN),
            TopicBuilder::comment(u128::MAX),
            TopicBuilder::task(isize::MIN),
            TopicBuilder::user(0u8),
        ] {
            assert_eq!(Topic::new(t.as_str()), Ok(t.clone()));
        }
    }

    #[test]
    fn a_users_slug_is_an_error_not_a_panic() {
        assert!(matches!(TopicBuilder::workspace_slug("x y"), Err(TopicError::InvalidChar(' '))));
        assert!(matches!(TopicBuilder::workspace_slug(""), Ok(_)), "`workspace:` is a valid topic");
        assert!(matches!(TopicBuilder::workspace_slug(&"a".repeat(200)), Err(TopicError::TooLong(210))));
    }

    #[test]
    fn serde_validates() {
        let ok: Topic = serde_json::from_str("\"tasks\"").unwrap();
        assert_eq!(ok.as_str(), "tasks");
        assert!(serde_json::from_str::<Topic>("\"no good\"").is_err());
    }
}
