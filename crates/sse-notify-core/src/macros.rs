//! [`sse_event!`](crate::sse_event): a typed event with each wire name written once.

/// Declares an event type and implements [`SseEvent`](crate::SseEvent) for it: every wire
/// name is written once, next to its variant, and the payload is the variant's fields as a JSON
/// object (`Created { id: 7 }` is `{"id":7}`). Decoding ignores unknown fields, so a server may
/// add fields without breaking older clients; a missing field decodes only into an `Option`.
///
/// An enum (one wire name per variant) or a struct (one wire name) with named fields, each of
/// which is `Serialize + DeserializeOwned`; then `topics(&self) { ... }`, the topics a value is
/// published on. Attributes (docs, derives) pass through.
///
/// ```
/// use sse_notify_core::{sse_event, SseEvent, Topic, TopicBuilder};
///
/// sse_event! {
///     /// Someone replied in a thread you own.
///     #[derive(Clone, Debug, PartialEq)]
///     pub struct Reply = "notification:reply" {
///         pub user: u64,
///         pub thread: u64,
///         pub by: String,
///     }
///     topics(&self) { vec![TopicBuilder::user(self.user)] }
/// }
///
/// let r = Reply { user: 2, thread: 1, by: "carol".into() };
/// assert_eq!(Reply::NAMES, ["notification:reply"]);
/// assert_eq!(r.payload(), serde_json::json!({ "user": 2, "thread": 1, "by": "carol" }));
/// assert_eq!(Reply::decode(r.name(), &r.payload().to_string()).unwrap(), r);
/// assert!(Reply::decode("notification:reply", r#"{"user":2}"#).is_err(), "fields are required");
/// ```
#[macro_export]
macro_rules! sse_event {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? } = $wire:literal
            ),+ $(,)?
        }
        topics(&$self:ident) $topics:block
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant { $( $(#[$fmeta])* $field: $fty ),* }
            ),+
        }

        impl $crate::SseEvent for $name {
            const NAMES: &'static [&'static str] = &[$($wire),+];

            fn name(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => $wire ),+
                }
            }

            fn topics(&$self) -> ::std::vec::Vec<$crate::Topic> $topics

            fn payload(&self) -> $crate::__private::serde_json::Value {
                match self {
                    $(
                        Self::$variant { $($field),* } => {
                            #[allow(unused_mut)]
                            let mut fields = $crate::event::PayloadFields::default();
                            $( fields.put(stringify!($field), $field); )*
                            fields.into_value()
                        }
                    ),+
                }
            }

            fn decode(name: &str, data: &str) -> ::std::result::Result<Self, $crate::DecodeError> {
                match name {
                    $(
                        $wire => {
                            #[allow(unused_mut, unused_variables)]
                            let mut fields = $crate::event::PayloadFields::parse(name, data)?;
                            Ok(Self::$variant { $( $field: fields.take(stringify!($field))? ),* })
                        }
                    )+
                    other => Err($crate::DecodeError::UnknownEvent(other.to_owned())),
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident = $wire:literal {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)?
        }
        topics(&$self:ident) $topics:block
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $fty ),*
        }

        impl $crate::SseEvent for $name {
            const NAMES: &'static [&'static str] = &[$wire];

            fn name(&self) -> &'static str {
                $wire
            }

            fn topics(&$self) -> ::std::vec::Vec<$crate::Topic> $topics

            fn payload(&self) -> $crate::__private::serde_json::Value {
                #[allow(unused_mut)]
                let mut fields = $crate::event::PayloadFields::default();
                $( fields.put(stringify!($field), &self.$field); )*
                fields.into_value()
            }

            fn decode(name: &str, data: &str) -> ::std::result::Result<Self, $crate::DecodeError> {
                if name != $wire {
                    return Err($crate::DecodeError::UnknownEvent(name.to_owned()));
                }
                #[allow(unused_mut, unused_variables)]
                let mut fields = $crate::event::PayloadFields::parse(name, data)?;
                Ok(Self { $( $field: fields.take(stringify!($field))? ),* })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{DecodeError, SseEvent, Topic};

    crate::sse_event! {
        #[derive(Clone, Debug, PartialEq)]
        enum Mixed {
            Plain {} = "mixed:plain",
            Two { a: u64, b: Option<String> } = "mixed:two",
        }
        topics(&self) { vec![Topic::new("mixed").unwrap()] }
    }

    #[test]
    fn names_payloads_and_round_trips() {
        assert_eq!(Mixed::NAMES, ["mixed:plain", "mixed:two"]);
        let p = Mixed::Plain {};
        assert_eq!((p.name(), p.payload().to_string()), ("mixed:plain", "{}".to_owned()));
        let t = Mixed::Two { a: 1, b: None };
        assert_eq!(t.payload().to_string(), r#"{"a":1,"b":null}"#);
        for e in [p, t, Mixed::Two { a: 2, b: Some("x\ny".into()) }] {
            assert_eq!(Mixed::decode(e.name(), &e.payload().to_string()).unwrap(), e);
        }
        assert_eq!(Mixed::decode("mixed:two", r#"{"a":3,"extra":true}"#).unwrap(), Mixed::Two { a: 3, b: None });
    }

    #[test]
    fn decode_errors_say_what_was_wrong() {
        assert!(matches!(Mixed::decode("mixed:other", "{}"), Err(DecodeError::UnknownEvent(n)) if n == "mixed:other"));
        let missing = Mixed::decode("mixed:two", "{}").unwrap_err().to_string();
        assert!(missing.contains("mixed:two") && missing.contains("`a`"), "{missing}");
        let wrong = Mixed::decode("mixed:two", r#"{"a":"x"}"#).unwrap_err().to_string();
        assert!(wrong.contains("`a`"), "{wrong}");
        assert!(Mixed::decode("mixed:two", "[1]").unwrap_err().to_string().contains("JSON object"));
        assert!(Mixed::decode("mixed:two", "not json").is_err());
    }
}
