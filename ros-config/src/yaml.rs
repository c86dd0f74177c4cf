//! The YAML boundary: the only module that calls `serde_yaml` (deprecated upstream), so that
//! replacing it touches this file alone. The tree it reads into and writes from is our own
//! [`Value`]; the crate's value type is converted at this boundary and never leaves it.
//!
//! Owns: reading text into a [`Value`] under hard limits (depth, values and text after alias
//! expansion), finding the line and column of a key path, typed conversion that reports the
//! key path of the first error, a number's printed form, and writing YAML. Must not know
//! the cloud-config schema.
//!
//! Positions come from `serde_yaml` itself rather than from a second YAML parser: a
//! `Value` has no marks, but an error raised by a visitor carries the mark of the node being
//! visited. [`locate`] walks the document to one key path and fails there on purpose. Using
//! the same parser for values and positions means they can never disagree about a document.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, Visitor};

use crate::keypath::{KeyPath, Segment};
use crate::value::{Number, Tagged, Value, N};

/// Deepest nesting accepted. RancherOS configs nest about 6 deep; `serde_yaml` stops at 128.
pub const MAX_DEPTH: usize = 64;
/// Most values (after alias expansion) one document may hold. Kept well below what
/// `serde_yaml`'s own repetition limit lets through, so that an alias bomb is refused here
/// with a position instead of after building a huge tree.
pub const MAX_NODES: usize = 50_000;
/// Most scalar text (after alias expansion) one document may hold: an anchor on a long
/// string, repeated by aliases, would otherwise multiply memory without many nodes.
pub const MAX_EXPANDED_BYTES: usize = 8 << 20;

/// Why a document could not be read; `line` and `column` are 1-based, 0 when unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a typed conversion failed: the key path of the offending node and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypedError {
    pub path: KeyPath,
    pub message: String,
}

/// Errors while writing YAML.
#[derive(Debug, thiserror::Error)]
pub enum ToYamlError {
    /// The value cannot be written as YAML (only possible for hand-built values).
    #[error("writing YAML: {0}")]
    Serialize(String),
}

/// Parse one YAML document into a [`Value`], refusing hostile input before building it.
/// YAML merge keys (`<<: *base`) are applied, as RancherOS's Go YAML library did.
pub(crate) fn parse_document(text: &str) -> Result<Value, SyntaxError> {
    flow_depth_guard(text)?;
    let budget = BudgetState::default();
    let seed = Budget {
        state: &budget,
        depth: 0,
    };
    if let Err(e) = seed.deserialize(serde_yaml::Deserializer::from_str(text)) {
        return Err(syntax_error(&e, budget.reason.take()));
    }
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| syntax_error(&e, None))?;
    value.apply_merge().map_err(|e| syntax_error(&e, None))?;
    Ok(from_serde(value))
}

/// The crate's tree as ours.
fn from_serde(value: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => Value::Number(match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into(),
            (None, Some(i), _) => i.into(),
            (None, None, f) => f.unwrap_or(f64::NAN).into(),
        }),
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Sequence(seq.into_iter().map(from_serde).collect()),
        Y::Mapping(map) => Value::Mapping(
            map.into_iter()
                .map(|(k, v)| (from_serde(k), from_serde(v)))
                .collect(),
        ),
        Y::Tagged(t) => {
            let t = *t;
            Value::Tagged(Box::new(Tagged {
                tag: t.tag.to_string(),
                value: from_serde(t.value),
            }))
        }
    }
}

/// Our tree as the crate's, to convert or write it.
fn to_serde(value: Value) -> serde_yaml::Value {
    use serde_yaml::Value as Y;
    match value {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(b),
        Value::Number(n) => Y::Number(serde_number(n)),
        Value::String(s) => Y::String(s),
        Value::Sequence(seq) => Y::Sequence(seq.into_iter().map(to_serde).collect()),
        Value::Mapping(map) => Y::Mapping(
            map.into_iter()
                .map(|(k, v)| (to_serde(k), to_serde(v)))
                .collect(),
        ),
        Value::Tagged(t) => {
            let t = *t;
            Y::Tagged(Box::new(serde_yaml::value::TaggedValue {
                tag: serde_yaml::value::Tag::new(t.tag),
                value: to_serde(t.value),
            }))
        }
    }
}

fn serde_number(n: Number) -> serde_yaml::Number {
    match n.repr() {
        N::PosInt(u) => u.into(),
        N::NegInt(i) => i.into(),
        N::Float(f) => f.into(),
    }
}

/// A number as YAML prints it: `60`, `-1`, `1.5`, `.inf`.
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&serde_number(*self), f)
    }
}

/// Refuse flow collections nested deeper than [`MAX_DEPTH`] before `serde_yaml` sees
/// them: its parser reads every event up front and takes quadratic time on deep `[[[...`
/// (200 KB of brackets: 26 s here, minutes under emulation), long before its own or our
/// depth limit applies. Not a YAML parser: it only counts `[`/`{` against `]`/`}` outside
/// quotes and comments, so a document it passes is still judged by `serde_yaml`; what it
/// refuses nests deeper than any config can.
fn flow_depth_guard(text: &str) -> Result<(), SyntaxError> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            prev = c;
            continue;
        }
        match quote {
            Some('\'') if c == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
                column += 1;
            }
            Some('"') if c == '"' => quote = None,
            Some(_) => {}
            None => {
                let after_space = prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':');
                match c {
                    '#' if prev.is_whitespace() => {
                        // A comment: skip to the end of the line.
                        while chars.peek().is_some_and(|n| *n != '\n') {
                            chars.next();
                        }
                    }
                    '\'' | '"' if after_space => quote = Some(c),
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err(SyntaxError {
                                line,
                                column,
                                message: format!("nesting deeper than {MAX_DEPTH} levels"),
                            });
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        prev = c;
    }
    Ok(())
}

fn syntax_error(e: &serde_yaml::Error, reason: Option<String>) -> SyntaxError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = match reason {
        Some(r) => r,
        None => {
            // serde_yaml puts the position the diagnostic already shows into the text.
            let msg = e
                .to_string()
                .replacen(&format!(" at line {line} column {column}"), "", 1);
            match msg.as_str() {
                "repetition limit exceeded" => {
                    "too many alias expansions (an alias bomb?)".to_string()
                }
                "recursion limit exceeded" => {
                    format!("nesting deeper than {MAX_DEPTH} levels")
                }
                _ => msg,
            }
        }
    };
    SyntaxError {
        line,
        column,
        message,
    }
}

#[derive(Default)]
struct BudgetState {
    nodes: Cell<usize>,
    bytes: Cell<usize>,
    reason: Cell<Option<String>>,
}

/// Walks a document as `serde_yaml` would expand it, counting; allocates nothing per node.
struct Budget<'a> {
    state: &'a BudgetState,
    depth: usize,
}

impl Budget<'_> {
    fn count<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let s = self.state;
        s.nodes.set(s.nodes.get() + 1);
        s.bytes.set(s.bytes.get().saturating_add(bytes));
        if s.nodes.get() > MAX_NODES {
            return Err(self.fail(format!(
                "more than {MAX_NODES} values after alias expansion (an alias bomb?)"
            )));
        }
        if s.bytes.get() > MAX_EXPANDED_BYTES {
            return Err(self.fail(format!(
                "more than {} MiB of text after alias expansion",
                MAX_EXPANDED_BYTES >> 20
            )));
        }
        Ok(())
    }

    fn fail<E: de::Error>(&self, reason: String) -> E {
        self.state.reason.set(Some(reason.clone()));
        E::custom(reason)
    }

    fn child<E: de::Error>(&self) -> Result<Budget<'_>, E> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(self.fail(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(Budget {
            state: self.state,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.count(0)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.count(0)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.count(0)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.count(0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.count(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.count(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.count(0)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count::<A::Error>(0)?;
        while seq.next_element_seed(self.child::<A::Error>()?)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count::<A::Error>(0)?;
        while map.next_key_seed(self.child::<A::Error>()?)?.is_some() {
            map.next_value_seed(self.child::<A::Error>()?)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`): count the value under it.
        use de::VariantAccess;
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}

/// Which mark of a mapping entry [`locate`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The key (for "unknown key").
    Key,
    /// The value (for "wrong type" and the like).
    Value,
}

/// The 1-based line and column of `path` in `text`. When the path does not exist the
/// position of its deepest existing ancestor is returned. `None` only for unreadable text.
pub(crate) fn locate(text: &str, path: &KeyPath, target: Target) -> Option<(usize, usize)> {
    let reached = Cell::new(false);
    let seed = Locate {
        rest: path.segments(),
        target,
        reached: &reached,
    };
    let err = seed
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    if !reached.get() {
        return None;
    }
    err.location().map(|l| (l.line(), l.column()))
}

/// Descends along `rest`; always fails, at the node it stops on, so that `serde_yaml`
/// stamps the error with that node's mark.
struct Locate<'a> {
    rest: &'a [Segment],
    target: Target,
    reached: &'a Cell<bool>,
}

impl Locate<'_> {
    fn here<E: de::Error>(&self) -> E {
        self.reached.set(true);
        E::custom("located")
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(self.here())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(want), rest)) = self.rest.split_first() else {
            return Err(self.here());
        };
        let mut i = 0;
        loop {
            if i == *want {
                let found = seq.next_element_seed(Locate {
                    rest,
                    target: self.target,
                    reached: self.reached,
                })?;
                if found.is_none() {
                    return Err(self.here());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(self.here());
            }
            i += 1;
        }
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(want), rest)) = self.rest.split_first() else {
            return Err(self.here());
        };
        let at_key = rest.is_empty() && self.target == Target::Key;
        loop {
            let matched = map.next_key_seed(KeyMatch {
                want,
                fail_on_match: at_key,
                reached: self.reached,
            })?;
            match matched {
                None => return Err(self.here()),
                Some(true) => {
                    return map.next_value_seed(Locate {
                        rest,
                        target: self.target,
                        reached: self.reached,
                    })
                }
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess;
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        variant.newtype_variant_seed(self)
    }
}

/// Reads one mapping key; answers whether it is `want` (or fails on it, to mark the key).
struct KeyMatch<'a> {
    want: &'a str,
    fail_on_match: bool,
    reached: &'a Cell<bool>,
}

impl KeyMatch<'_> {
    fn check<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key != self.want {
            return Ok(false);
        }
        if self.fail_on_match {
            self.reached.set(true);
            return Err(E::custom("located"));
        }
        Ok(true)
    }
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(if v { "true" } else { "false" })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&serde_yaml::Number::from(v).to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<bool, A::Error> {
        use de::VariantAccess;
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        variant.newtype_variant::<IgnoredAny>()?;
        Ok(false)
    }
}

/// Convert a tree into a typed value; on failure, the key path of the first bad node.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, TypedError> {
    serde_path_to_error::deserialize(to_serde(value)).map_err(|e| {
        let mut segments = Vec::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Map { key } => {
                    segments.push(Segment::Key(key.clone()))
                }
                serde_path_to_error::Segment::Seq { index } => {
                    segments.push(Segment::Index(*index))
                }
                // Enum variants and unknown steps have no key in the tree: stop at the parent.
                _ => break,
            }
        }
        TypedError {
            path: KeyPath::from_segments(segments),
            message: e.into_inner().to_string(),
        }
    })
}

/// A scalar's text as a user reads it (`true`, `60`, the string itself; empty for null),
/// or `None` for a map or a list: what `ros config get` prints plainly.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => None,
    }
}

/// Write a tree as a YAML document.
pub fn to_yaml(value: &Value) -> Result<String, ToYamlError> {
    serde_yaml::to_string(&to_serde(value.clone()))
        .map_err(|e| ToYamlError::Serialize(e.to_string()))
}

/// Read one command-line or `ros config set` word as a YAML scalar: `true`, `60`, `8.8.8.8`.
/// Anything that does not read as a plain scalar (`a: b`, `*x`, `#x`) stays the literal text.
pub(crate) fn parse_scalar(text: &str) -> Value {
    if text.is_empty() {
        return Value::String(String::new());
    }
    // Bounded: callers pass single words (a kernel command line is at most a few KiB).
    match serde_yaml::from_str::<serde_yaml::Value>(text).map(from_serde) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        Ok(Value::Null) if matches!(text.trim(), "~" | "null" | "Null" | "NULL") => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_keys_values_and_missing_paths() {
        let text = "a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\ne: [1, 2]\n";
        let p = |s| KeyPath::parse(s).unwrap();
        let cases = [
            ("a.b", Target::Key, (2, 3)),
            ("a.b", Target::Value, (2, 6)),
            ("a.c[1].d", Target::Value, (5, 11)),
            ("a.c[1].d", Target::Key, (5, 8)),
            ("a.c[0]", Target::Value, (4, 7)),
            ("e[1]", Target::Value, (6, 8)),
            // Missing: the deepest existing ancestor.
            ("a.zz", Target::Value, (2, 3)),
            ("a.c[7]", Target::Value, (4, 5)),
        ];
        for (path, target, want) in cases {
            assert_eq!(
                locate(text, &p(path), target),
                Some(want),
                "{path} {target:?}"
            );
        }
    }

    #[test]
    fn parse_scalar_table() {
        let cases = [
            ("true", Value::Bool(true)),
            ("60", Value::from(60)),
            ("8.8.8.8", Value::from("8.8.8.8")),
            ("a: b", Value::from("a: b")),
            ("#x", Value::from("#x")),
            ("*x", Value::from("*x")),
            ("~", Value::Null),
            ("", Value::from("")),
            ("0644", Value::from("0644")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_scalar(text), want, "{text:?}");
        }
    }

    #[test]
    fn serde_yaml_limits_that_we_rely_on() {
        // serde_yaml alone refuses deep nesting (128) and classic alias bombs; we refuse
        // earlier, with our own message and a position.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(serde_yaml::from_str::<serde_yaml::Value>(&deep).is_err());
        let err = parse_document(&deep).unwrap_err();
        assert_eq!((err.line, err.column), (1, 65), "{err:?}");
        assert!(err.message.contains("nesting deeper than 64"), "{err:?}");
    }

    #[test]
    fn deep_flow_nesting_is_refused_quickly_with_its_position() {
        let text = format!("a: 1\nb: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
        let err = flow_depth_guard(&text).unwrap_err();
        assert_eq!((err.line, err.column), (2, 4 + MAX_DEPTH));
        assert!(err.message.contains("nesting deeper than 64"), "{err:?}");
        assert_eq!(parse_document(&text).unwrap_err(), err);
        // Brackets in quotes and comments do not count; real flow nesting within the
        // limit still parses.
        let deep = "[".repeat(70);
        let fine = format!("a: '{deep}'\nb: \"{deep}\\\"\" # {deep}\nc: [[1, {{x: [2]}}]]\n");
        let v = parse_document(&fine).unwrap();
        assert_eq!(v["a"].as_str(), Some(deep.as_str()));
    }

    #[test]
    fn wide_alias_fan_out_is_refused_by_our_budget() {
        // Few aliases over a large anchor: serde_yaml's repetition limit (100 jumps per
        // event) does not stop this; our value budget does.
        let items = vec!["x"; 2000].join(", ");
        let aliases = vec!["*a"; 2000].join(", ");
        let text = format!("a: &a [{items}]\nb: [{aliases}]\n");
        let err = parse_document(&text).unwrap_err();
        assert!(err.message.contains("alias"), "{err:?}");
        // Inside an alias serde_yaml reports the anchored node's position (line 1).
        assert_eq!(err.line, 1, "{err:?}");
    }
}
