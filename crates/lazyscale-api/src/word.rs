//! [`Word`]: a string field of the API whose values come from a small vocabulary (condition types,
//! statuses and reasons, value sources, vertical action types), held without a heap allocation when the
//! value is one of [`VOCABULARY`].
//!
//! Every DPA the agent keeps (one per autoscaler in the DPA index) carries up to eight conditions, each
//! with a type, a status and a reason, and its recommendations carry a source: at 10,000 DPAs that is
//! hundreds of thousands of copies of about thirty distinct strings. A `Word` decoded from the wire
//! borrows the `'static` copy of a known value; an unknown value (another writer's reason, a condition
//! type of a newer API) is owned, so nothing is lost or changed on the way back. On the wire and in the
//! schema a `Word` is a plain string.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::consts::{conditions, value_sources, vertical_actions};

/// The values a [`Word`] holds without allocating: every string of [`crate::consts`] that a DPA's
/// status carries in a [`Word`] field.
pub const VOCABULARY: &[&str] = &[
    conditions::STATUS_TRUE,
    conditions::STATUS_FALSE,
    conditions::STATUS_UNKNOWN,
    conditions::ERROR,
    conditions::ACTIVE,
    conditions::HORIZONTAL_ABLE_TO_RECOMMEND,
    conditions::HORIZONTAL_ABLE_TO_SCALE,
    conditions::HORIZONTAL_SCALING_LIMITED,
    conditions::VERTICAL_ABLE_TO_RECOMMEND,
    conditions::VERTICAL_ABLE_TO_APPLY,
    conditions::VERTICAL_SCALING_LIMITED,
    conditions::VALID,
    conditions::reasons::INVALID_TARGET_REF,
    conditions::reasons::INVALID_TARGET,
    conditions::reasons::INVALID_SPEC,
    conditions::reasons::CLUSTER_AUTOSCALER_LIMIT_REACHED,
    conditions::reasons::RECOMMENDATION_ERROR,
    conditions::reasons::LOCAL_RECOMMENDER_ERROR,
    conditions::reasons::TARGET_NOT_FOUND,
    conditions::reasons::SCALE_FAILED,
    conditions::reasons::SCALING_DISABLED,
    conditions::reasons::POLICY_RESTRICTED,
    conditions::reasons::FALLBACK_RESTRICTED,
    conditions::reasons::UNSUPPORTED_TARGET_KIND,
    conditions::reasons::ROLLOUT_FAILED,
    conditions::reasons::LIMITED_BY_CONSTRAINT,
    conditions::reasons::LIMITED_BY_SCALING_BEHAVIOR,
    conditions::reasons::RECOMMENDATION_INFEASIBLE,
    conditions::reasons::APPLYING,
    conditions::reasons::APPLIED,
    conditions::reasons::INPUTS_SYNCING,
    value_sources::AUTOSCALING,
    value_sources::MANUAL,
    value_sources::LOCAL,
    value_sources::EXTERNAL,
    vertical_actions::ROLLOUT_TRIGGERED,
    vertical_actions::RESIZE_TRIGGERED,
    vertical_actions::RESIZE_COMPLETED,
];

/// The vocabulary's entry equal to `s`, if any.
fn known(s: &str) -> Option<&'static &'static str> {
    VOCABULARY.iter().find(|w| **w == s)
}

/// Whether `s` is the `'static` copy of a vocabulary value itself (the same bytes in memory, not only an
/// equal string): what a borrowed [`Word`] hands out. The heap estimate ([`crate::heap`]) counts no
/// allocation for it.
pub fn is_vocabulary(s: &str) -> bool {
    VOCABULARY
        .iter()
        .any(|w| std::ptr::eq(w.as_ptr(), s.as_ptr()) && w.len() == s.len())
}

/// A string of the API's vocabulary; see the module docs.
///
/// 16 bytes, and so is `Option<Word>`: a vocabulary value is a thin pointer to its entry of
/// [`VOCABULARY`], another value a thin pointer to its own boxed text (two allocations, for a value
/// that is rare). A `Cow<'static, str>` would be 24.
#[derive(Clone)]
pub struct Word(Repr);

#[derive(Clone)]
enum Repr {
    /// An entry of [`VOCABULARY`].
    Known(&'static &'static str),
    /// Any other value.
    Owned(Box<Box<str>>),
}

impl Word {
    /// A word for a `'static` string: no allocation when it is in the vocabulary (every constant of
    /// [`crate::consts`] a status carries is), an owned copy otherwise.
    pub fn from_static(s: &'static str) -> Self {
        Self::new(s)
    }

    /// A word for `s`: the vocabulary's copy when `s` is in it, else an owned copy.
    pub fn new(s: &str) -> Self {
        match known(s) {
            Some(w) => Self(Repr::Known(w)),
            None => Self(Repr::Owned(Box::new(Box::from(s)))),
        }
    }

    /// Heap bytes this word owns: none for a vocabulary value, its two allocations for another.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Known(_) => 0,
            Repr::Owned(s) => {
                crate::heap::alloc_bytes(std::mem::size_of::<Box<str>>()) + crate::heap::string_bytes(s)
            }
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Known(w) => w,
            Repr::Owned(s) => s,
        }
    }
}

impl From<&'static str> for Word {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for Word {
    fn from(s: String) -> Self {
        match known(&s) {
            Some(w) => Self(Repr::Known(w)),
            None => Self(Repr::Owned(Box::new(s.into_boxed_str()))),
        }
    }
}

impl PartialEq for Word {
    fn eq(&self, other: &Word) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Word {}

impl PartialOrd for Word {
    fn partial_cmp(&self, other: &Word) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Word {
    fn cmp(&self, other: &Word) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Word {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Deref for Word {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Word {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Word {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Word {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Word {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Word> for &str {
    fn eq(&self, other: &Word) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Word> for str {
    fn eq(&self, other: &Word) -> bool {
        self == other.as_str()
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Word {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Word;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Word, E> {
                Ok(Word::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Word, E> {
                Ok(Word::from(v))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl schemars::JsonSchema for Word {
    fn schema_name() -> Cow<'static, str> {
        String::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        String::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_known_value_decodes_to_the_static_copy_and_an_unknown_one_is_kept() {
        let known: Word = serde_json::from_str("\"HorizontalAbleToScale\"").unwrap();
        assert!(matches!(known.0, Repr::Known(_)));
        assert!(is_vocabulary(known.as_str()));
        assert_eq!(known, conditions::HORIZONTAL_ABLE_TO_SCALE);

        let other: Word = serde_json::from_str("\"SomeoneElsesReason\"").unwrap();
        assert!(matches!(other.0, Repr::Owned(_)));
        assert!(!is_vocabulary(other.as_str()));
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"SomeoneElsesReason\"");

        // an equal string elsewhere in memory is not the vocabulary's copy
        let copy = String::from(conditions::STATUS_TRUE);
        assert!(!is_vocabulary(&copy));
        assert!(is_vocabulary(Word::new(&copy).as_str()));
    }

    #[test]
    fn every_vocabulary_value_round_trips_borrowed() {
        for w in VOCABULARY {
            let json = serde_json::to_string(&Word::from_static(w)).unwrap();
            let back: Word = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_str(), *w);
            assert!(matches!(back.0, Repr::Known(_)), "{w}");
        }
        for r in conditions::reasons::ALL {
            assert!(known(r).is_some(), "{r} is missing from the vocabulary");
        }
        for t in conditions::DPA_CONDITION_TYPES {
            assert!(known(t).is_some(), "{t} is missing from the vocabulary");
        }
    }

    #[test]
    fn a_word_and_an_optional_word_are_two_words_of_memory() {
        assert_eq!(std::mem::size_of::<Word>(), 16);
        assert_eq!(std::mem::size_of::<Option<Word>>(), 16);
        let owned = Word::new("SomeoneElsesReason");
        assert_eq!(owned.clone(), owned);
        assert!(Word::new(conditions::ACTIVE) < owned);
    }

    #[test]
    fn the_schema_is_a_string() {
        let w = schemars::schema_for!(Word);
        let s = schemars::schema_for!(String);
        assert_eq!(w.get("type"), s.get("type"));
    }
}
