//! The untyped config tree: what layering, get/set, export and the diagnostics work on.
//!
//! Owns the tree's shape (null, boolean, number, string, sequence, mapping, tagged node)
//! and the small vocabulary the rest of the crate reads it with. Must not know YAML text:
//! reading and writing it, and a number's printed form, are the `yaml` module's, so that
//! replacing the YAML crate touches that one module. These are our types, not the YAML
//! crate's, so no other module (nor crate) can come to depend on the parser's own.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::ops::Index;

use indexmap::IndexMap;

const HOLE_TAG: &str = "!ros-removed";

/// One node of the config tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Value {
    /// `~`, `null`, or nothing after a key.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer or a float.
    Number(Number),
    /// Any other scalar.
    String(String),
    /// A list.
    Sequence(Vec<Value>),
    /// A map, in the file's order.
    Mapping(Mapping),
    /// A node with an explicit tag (`!foo bar`).
    Tagged(Box<Tagged>),
}

/// A node with an explicit tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tagged {
    /// The tag as written, with its leading `!`.
    pub tag: String,
    /// The node under the tag.
    pub value: Value,
}

/// A YAML number; as in YAML, every NaN is the same number.
#[derive(Debug, Clone, Copy)]
pub struct Number(N);

#[derive(Debug, Clone, Copy)]
pub(crate) enum N {
    PosInt(u64),
    NegInt(i64),
    Float(f64),
}

impl Number {
    pub(crate) fn repr(self) -> N {
        self.0
    }

    /// The number as a `u64`, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            N::PosInt(u) => Some(u),
            N::NegInt(_) | N::Float(_) => None,
        }
    }

    /// The number as an `i64`, if it is an integer in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            N::PosInt(u) => i64::try_from(u).ok(),
            N::NegInt(i) => Some(i),
            N::Float(_) => None,
        }
    }
}

impl From<u64> for Number {
    fn from(u: u64) -> Number {
        Number(N::PosInt(u))
    }
}

impl From<i64> for Number {
    fn from(i: i64) -> Number {
        match u64::try_from(i) {
            Ok(u) => Number(N::PosInt(u)),
            Err(_) => Number(N::NegInt(i)),
        }
    }
}

impl From<f64> for Number {
    fn from(f: f64) -> Number {
        Number(N::Float(f))
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Number) -> bool {
        match (self.0, other.0) {
            (N::PosInt(a), N::PosInt(b)) => a == b,
            (N::NegInt(a), N::NegInt(b)) => a == b,
            (N::Float(a), N::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => false,
        }
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            // Equal floats may differ in bits (0.0 and -0.0, NaNs): hash them all alike.
            N::Float(_) => 3.hash(state),
            N::PosInt(u) => u.hash(state),
            N::NegInt(i) => i.hash(state),
        }
    }
}

/// A mapping in insertion order. Keys are nodes (a file may use `1:` or `true:` as a key);
/// they are looked up by their text with [`Mapping::get`] and friends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping(IndexMap<Value, Value>);

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A string hashes as the `str` it holds, so that a mapping can be asked for a key
        // by `&str` (see `Equivalent` below) without building a `Value`.
        match self {
            Value::String(s) => s.as_str().hash(state),
            Value::Null => 0u8.hash(state),
            Value::Bool(b) => (1u8, b).hash(state),
            Value::Number(n) => (2u8, n).hash(state),
            Value::Sequence(s) => (3u8, s).hash(state),
            Value::Mapping(m) => (4u8, m).hash(state),
            Value::Tagged(t) => (5u8, t).hash(state),
        }
    }
}

impl Hash for Mapping {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal mappings may list their entries in another order: combine them so that
        // the order does not count.
        let build = BuildHasherDefault::<DefaultHasher>::default();
        let combined = self
            .0
            .iter()
            .map(|entry| build.hash_one(entry))
            .fold(0u64, |acc, h| acc ^ h);
        (self.0.len(), combined).hash(state);
    }
}

/// A `&str` stands for the string key it spells (and hashes alike, see `Hash for Value`).
impl indexmap::Equivalent<Value> for str {
    fn equivalent(&self, key: &Value) -> bool {
        matches!(key, Value::String(s) if s == self)
    }
}

/// What a mapping can be asked for: `str` (a string key) or a [`Value`].
pub trait MapKey: Hash + indexmap::Equivalent<Value> {}
impl MapKey for str {}
impl MapKey for Value {}

impl Mapping {
    /// An empty mapping.
    pub fn new() -> Mapping {
        Mapping(IndexMap::new())
    }

    /// The value under `key`: a `&str` for a string key, or any `&Value`.
    pub fn get<Q: MapKey + ?Sized>(&self, key: &Q) -> Option<&Value> {
        self.0.get(key)
    }

    /// The value under the string key `key`, to change it.
    pub fn get_mut<Q: MapKey + ?Sized>(&mut self, key: &Q) -> Option<&mut Value> {
        self.0.get_mut(key)
    }

    /// Whether the string key `key` is present.
    pub fn contains_key<Q: MapKey + ?Sized>(&self, key: &Q) -> bool {
        self.0.contains_key(key)
    }

    /// Set `key` to `value`, keeping the key's place if it was there; the old value.
    pub fn insert(&mut self, key: Value, value: Value) -> Option<Value> {
        self.0.insert(key, value)
    }

    /// Remove the string key `key`, keeping the order of the others; its value.
    pub fn shift_remove<Q: MapKey + ?Sized>(&mut self, key: &Q) -> Option<Value> {
        self.0.shift_remove(key)
    }

    /// The value under the string key `key`, inserted by `default` if absent.
    pub fn entry_or_insert_with(
        &mut self,
        key: &str,
        default: impl FnOnce() -> Value,
    ) -> &mut Value {
        let ix = match self.0.get_index_of(key) {
            Some(ix) => ix,
            None => {
                self.0
                    .insert_full(Value::String(key.to_string()), default())
                    .0
            }
        };
        &mut self.0[ix]
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> indexmap::map::Iter<'_, Value, Value> {
        self.0.iter()
    }

    /// The keys in order.
    pub fn keys(&self) -> indexmap::map::Keys<'_, Value, Value> {
        self.0.keys()
    }

    /// The values in order.
    pub fn values(&self) -> indexmap::map::Values<'_, Value, Value> {
        self.0.values()
    }
}

impl FromIterator<(Value, Value)> for Mapping {
    fn from_iter<I: IntoIterator<Item = (Value, Value)>>(iter: I) -> Mapping {
        Mapping(iter.into_iter().collect())
    }
}

impl IntoIterator for Mapping {
    type Item = (Value, Value);
    type IntoIter = indexmap::map::IntoIter<Value, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Mapping {
    type Item = (&'a Value, &'a Value);
    type IntoIter = indexmap::map::Iter<'a, Value, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Value {
    /// An empty mapping.
    pub fn mapping() -> Value {
        Value::Mapping(Mapping::new())
    }

    /// The value under string key `key` of a mapping; `None` for anything else.
    pub fn get<Q: MapKey + ?Sized>(&self, key: &Q) -> Option<&Value> {
        self.as_mapping()?.get(key)
    }

    /// The value under string key `key` of a mapping, to change it.
    pub fn get_mut<Q: MapKey + ?Sized>(&mut self, key: &Q) -> Option<&mut Value> {
        self.as_mapping_mut()?.get_mut(key)
    }

    /// The text of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean's value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A non-negative integer's value.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// An integer's value, if it fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// A mapping's entries.
    pub fn as_mapping(&self) -> Option<&Mapping> {
        match self {
            Value::Mapping(m) => Some(m),
            _ => None,
        }
    }

    /// A mapping's entries, to change them.
    pub fn as_mapping_mut(&mut self) -> Option<&mut Mapping> {
        match self {
            Value::Mapping(m) => Some(m),
            _ => None,
        }
    }

    /// A sequence's elements.
    pub fn as_sequence(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Sequence(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this is a mapping.
    pub fn is_mapping(&self) -> bool {
        matches!(self, Value::Mapping(_))
    }

    /// What kind of node this is, as a diagnostic names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Sequence(_) => "sequence",
            Value::Mapping(_) => "mapping",
            Value::Tagged(_) => "tagged value",
        }
    }

    /// A placeholder left where a sequence element was dropped, so that the indices of its
    /// siblings keep matching the file (and the positions the diagnostics find).
    pub(crate) fn hole() -> Value {
        Value::Tagged(Box::new(Tagged {
            tag: HOLE_TAG.to_string(),
            value: Value::Null,
        }))
    }

    pub(crate) fn is_hole(&self) -> bool {
        matches!(self, Value::Tagged(t) if t.tag == HOLE_TAG)
    }

    /// Split a tagged value (`!foo bar`) into its tag text and value; `Err` gives back an
    /// untagged value unchanged.
    pub(crate) fn untag(self) -> Result<(String, Value), Value> {
        match self {
            Value::Tagged(t) => {
                let t = *t;
                Ok((t.tag, t.value))
            }
            other => Err(other),
        }
    }

    /// The text of a scalar used as a mapping key: `1` -> "1", `true` -> "true".
    /// `None` for null, sequences, mappings and tagged keys.
    pub fn key_text(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// `value["key"]`: null when `value` is not a mapping or has no such key.
impl Index<&str> for Value {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Number(i.into())
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Value {
        Value::Number(i64::from(i).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_keys_are_found_by_their_text_and_keep_their_order() {
        let mut m = Mapping::new();
        m.insert(Value::from("b"), Value::from(1));
        m.insert(Value::from(7), Value::from("seven"));
        m.insert(Value::from("a"), Value::from(true));
        assert_eq!(m.get("a"), Some(&Value::Bool(true)));
        assert_eq!(m.get("7"), None, "the number 7 is not the string \"7\"");
        *m.entry_or_insert_with("c", Value::mapping) = Value::from("new");
        assert_eq!(m.shift_remove("b"), Some(Value::from(1)));
        let keys: Vec<_> = m.keys().filter_map(Value::key_text).collect();
        assert_eq!(keys, ["7", "a", "c"]);
    }

    #[test]
    fn equal_mappings_in_another_order_are_one_key() {
        let ab: Mapping = [("a", 1), ("b", 2)]
            .into_iter()
            .map(|(k, v)| (Value::from(k), Value::from(v)))
            .collect();
        let ba: Mapping = ab
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(ab, ba);
        let mut outer = Mapping::new();
        outer.insert(Value::Mapping(ab), Value::from("x"));
        assert!(outer.insert(Value::Mapping(ba), Value::from("y")).is_some());
        assert_eq!(outer.len(), 1);
    }

    #[test]
    fn nan_is_one_number() {
        let nan = || Value::Number(f64::NAN.into());
        assert_eq!(nan(), nan());
        assert_ne!(Value::from(1), Value::Number(1.0.into()));
        assert_eq!(Value::from(-3).as_i64(), Some(-3));
        assert_eq!(Value::from(-3).as_u64(), None);
    }
}
