//! The one drop-and-retry engine: type a tree, and on each error the serde layer reports,
//! let the caller report it and drop what it was about, then try again, so that one pass
//! finds every problem and keeps everything else. The config's layers (`resolve`) and each
//! service definition (`service`) run on it; what they drop differs (a key from the highest
//! layer that sets it; a field or a list entry of one definition).

use serde::de::DeserializeOwned;

use crate::value::Value;
use crate::yaml::{self, TypedError};

/// What is typed and what a problem drops.
pub(crate) trait Attempts {
    /// The tree to type now (after the drops so far).
    fn tree(&mut self) -> Value;
    /// Report `error` and drop what it is about. False: nothing can be dropped (the tree
    /// as a whole is wrong); the engine gives up.
    fn drop_failed(&mut self, error: TypedError) -> bool;
}

/// Why [`type_dropping`] returned no value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GaveUp {
    /// A problem left nothing to drop.
    NothingToDrop,
    /// `max` problems were reported.
    TooMany,
}

/// Type `T` from `attempts`, dropping a failed part after each error, for at most `max`
/// errors.
pub(crate) fn type_dropping<T: DeserializeOwned>(
    attempts: &mut impl Attempts,
    max: usize,
) -> Result<T, GaveUp> {
    for _ in 0..max {
        match yaml::from_value::<T>(attempts.tree()) {
            Ok(typed) => return Ok(typed),
            Err(e) => {
                if !attempts.drop_failed(e) {
                    return Err(GaveUp::NothingToDrop);
                }
            }
        }
    }
    Err(GaveUp::TooMany)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypath::KeyPath;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        #[serde(default)]
        a: u8,
        #[serde(default)]
        b: u8,
    }

    /// Drops the top-level key each error names; records the paths.
    struct Keys {
        value: Value,
        seen: Vec<String>,
    }

    impl Attempts for Keys {
        fn tree(&mut self) -> Value {
            self.value.clone()
        }
        fn drop_failed(&mut self, error: TypedError) -> bool {
            self.seen.push(error.path.to_string());
            let key = error.path.to_string();
            match &mut self.value {
                Value::Mapping(m) if !key.is_empty() => m.shift_remove(key.as_str()).is_some(),
                _ => false,
            }
        }
    }

    fn keys(text: &str) -> Keys {
        Keys {
            value: crate::yaml::parse_document(text).unwrap(),
            seen: Vec::new(),
        }
    }

    #[test]
    fn every_problem_is_found_in_one_pass_and_the_rest_is_kept() {
        let mut k = keys("a: 300\nb: 2\nc: 1\n");
        let pair: Pair = type_dropping(&mut k, 10).unwrap();
        assert_eq!((pair.a, pair.b), (0, 2));
        assert_eq!(k.seen, ["a", "c"]);
        assert_eq!(KeyPath::root().to_string(), "");
    }

    #[test]
    fn it_gives_up_when_nothing_can_go_or_after_max_problems() {
        let mut whole = keys("[1, 2]\n");
        assert_eq!(
            type_dropping::<Pair>(&mut whole, 10).unwrap_err(),
            GaveUp::NothingToDrop
        );
        let mut many = keys("a: 300\nb: 300\n");
        assert_eq!(
            type_dropping::<Pair>(&mut many, 1).unwrap_err(),
            GaveUp::TooMany
        );
        assert_eq!(many.seen, ["a"]);
    }
}
