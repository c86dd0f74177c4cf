//! Pure operations on config trees: layering merge, dotted get and validated set, plus the
//! exact-path helpers the resolver uses. No I/O, no schema (set asks `resolve` to validate).

use crate::diagnostic::Diagnostic;
use crate::keypath::{KeyPath, KeyPathError, Segment};
use crate::value::Value;
use crate::yaml;

/// Errors from [`crate::set`].
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The key does not parse.
    #[error(transparent)]
    Key(#[from] KeyPathError),
    /// The path runs through a value that is not a mapping or sequence.
    #[error("setting `{key}`: `{at}` holds a {kind}, not a mapping")]
    NotAMapping {
        /// The key being set.
        key: String,
        /// The part of it that is in the way.
        at: String,
        /// What is there instead.
        kind: &'static str,
    },
    /// The path indexes past the end of a sequence.
    #[error("setting `{key}`: `{at}` has no element {index}")]
    IndexOutOfRange {
        /// The key being set.
        key: String,
        /// The sequence.
        at: String,
        /// The index asked for.
        index: usize,
    },
    /// The config would be invalid with the new value; nothing was changed.
    #[error("setting `{key}`: the result is not a valid config:{}", list(.diagnostics))]
    Invalid {
        /// The key being set.
        key: String,
        /// The new errors the change would cause.
        diagnostics: Vec<Diagnostic>,
    },
}

fn list(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("\n  {d}")).collect()
}

/// Layer `upper` over `lower`: mappings merge key by key (recursively), anything else in
/// `upper` (a sequence, a scalar, null) replaces what `lower` had.
pub fn merge(lower: Value, upper: Value) -> Value {
    match (lower, upper) {
        (Value::Mapping(mut low), Value::Mapping(up)) => {
            for (k, v) in up {
                match low.get_mut(&k) {
                    Some(slot) => {
                        let old = std::mem::take(slot);
                        *slot = merge(old, v);
                    }
                    None => {
                        low.insert(k, v);
                    }
                }
            }
            Value::Mapping(low)
        }
        (_, upper) => upper,
    }
}

/// Look up a dotted key such as `rancher.network.dns.nameservers` or `write_files[0].path`
/// (`write_files.0.path` works too). Keys that themselves contain dots are found either
/// quoted (`rancher.sysctl."net.ipv4.ip_forward"`) or spelled out
/// (`rancher.sysctl.net.ipv4.ip_forward`). `None` when absent or when `key` does not parse.
pub fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let path = KeyPath::parse(key).ok()?;
    get_lenient(value, path.segments())
}

fn get_lenient<'a>(value: &'a Value, segs: &[Segment]) -> Option<&'a Value> {
    let Some(first) = segs.first() else {
        return Some(value);
    };
    match value {
        Value::Mapping(map) => {
            // Try `a`, then `a.b`, ...: a key may contain dots.
            let mut joined = String::new();
            for (n, seg) in segs.iter().enumerate() {
                let Segment::Key(k) = seg else { break };
                if n > 0 {
                    joined.push('.');
                }
                joined.push_str(k);
                if let Some(child) = map.get(joined.as_str()) {
                    if let Some(found) = get_lenient(child, &segs[n + 1..]) {
                        return Some(found);
                    }
                }
            }
            None
        }
        Value::Sequence(seq) => {
            let i = seq_index(first)?;
            get_lenient(seq.get(i)?, &segs[1..])
        }
        _ => None,
    }
}

fn seq_index(seg: &Segment) -> Option<usize> {
    match seg {
        Segment::Index(i) => Some(*i),
        Segment::Key(k) => k.parse().ok(),
    }
}

/// Read a command-line or `ros config set` value: `[a, b]` is a list of scalars (split on
/// commas; an element may be quoted to keep a comma), anything else one scalar.
pub(crate) fn parse_value_text(text: &str) -> Value {
    let trimmed = text.trim();
    if let Some(inner) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.trim().is_empty() {
            return Value::Sequence(Vec::new());
        }
        return Value::Sequence(split_list(inner).iter().map(|e| list_element(e)).collect());
    }
    yaml::parse_scalar(text)
}

fn split_list(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in inner.chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                cur.push(c);
            }
            None if c == ',' => out.push(std::mem::take(&mut cur)),
            None => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn list_element(raw: &str) -> Value {
    let t = raw.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            // A YAML quoted scalar, as in a cloud-config: escapes such as `\n` in double
            // quotes, `''` in single ones; one YAML does not take keeps its text.
            return match yaml::parse_scalar(t) {
                Value::String(s) if s != t => Value::String(s),
                _ => Value::String(t[1..t.len() - 1].to_string()),
            };
        }
    }
    yaml::parse_scalar(t)
}

/// How [`insert`] treats a scalar in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertMode {
    /// Refuse (`ros config set`: do not silently destroy data).
    Keep,
    /// Replace it with a mapping (kernel command line: the later word wins).
    Replace,
}

pub(crate) enum InsertError {
    NotAMapping { at: KeyPath, kind: &'static str },
    IndexOutOfRange { at: KeyPath, index: usize },
}

impl InsertError {
    pub(crate) fn into_set_error(self, key: &str) -> SetError {
        match self {
            InsertError::NotAMapping { at, kind } => SetError::NotAMapping {
                key: key.to_string(),
                at: at.to_string(),
                kind,
            },
            InsertError::IndexOutOfRange { at, index } => SetError::IndexOutOfRange {
                key: key.to_string(),
                at: at.to_string(),
                index,
            },
        }
    }
}

/// Put `new` at `path`, creating mappings on the way. An existing key that spells several
/// segments (`net.ipv4.ip_forward`) is reused, as in [`get`].
pub(crate) fn insert(
    value: &mut Value,
    path: &KeyPath,
    new: Value,
    mode: InsertMode,
) -> Result<(), InsertError> {
    insert_at(value, path, 0, new, mode)
}

fn insert_at(
    node: &mut Value,
    path: &KeyPath,
    i: usize,
    new: Value,
    mode: InsertMode,
) -> Result<(), InsertError> {
    let segs = path.segments();
    let Some(seg) = segs.get(i) else {
        *node = new;
        return Ok(());
    };
    if node.is_null() {
        *node = Value::mapping();
    }
    let in_the_way = match &*node {
        Value::Mapping(_) => None,
        Value::Sequence(s) => match seq_index(seg) {
            Some(index) if index < s.len() => None,
            Some(index) => Some(InsertError::IndexOutOfRange {
                at: path.truncated(i),
                index,
            }),
            None => Some(InsertError::NotAMapping {
                at: path.truncated(i),
                kind: "sequence",
            }),
        },
        other => Some(InsertError::NotAMapping {
            at: path.truncated(i),
            kind: other.kind(),
        }),
    };
    if let Some(err) = in_the_way {
        if mode == InsertMode::Keep {
            return Err(err);
        }
        // Command line: the later word wins over whatever was there.
        *node = Value::mapping();
    }
    match node {
        Value::Mapping(map) => {
            // Reuse an existing dotted key if one matches; else the single segment.
            let mut take = 1;
            let mut key = match seg {
                Segment::Key(k) => k.clone(),
                Segment::Index(n) => n.to_string(),
            };
            let mut joined = key.clone();
            for (n, next) in segs[i + 1..].iter().enumerate() {
                let Segment::Key(k) = next else { break };
                joined.push('.');
                joined.push_str(k);
                if map.contains_key(joined.as_str()) {
                    take = n + 2;
                    key = joined.clone();
                }
            }
            if i + take == segs.len() {
                map.insert(Value::String(key), new);
                return Ok(());
            }
            let child = map.entry_or_insert_with(&key, Value::mapping);
            insert_at(child, path, i + take, new, mode)
        }
        Value::Sequence(seq) => match seq_index(seg).and_then(|ix| seq.get_mut(ix)) {
            Some(child) => insert_at(child, path, i + 1, new, mode),
            None => Err(InsertError::NotAMapping {
                at: path.truncated(i),
                kind: "sequence",
            }),
        },
        other => Err(InsertError::NotAMapping {
            at: path.truncated(i),
            kind: other.kind(),
        }),
    }
}

/// The node at exactly `path` (indices count holes).
pub(crate) fn get_exact<'a>(value: &'a Value, path: &KeyPath) -> Option<&'a Value> {
    let mut node = value;
    for seg in path.segments() {
        node = match (node, seg) {
            (Value::Mapping(m), Segment::Key(k)) => m.get(k.as_str())?,
            (Value::Sequence(s), Segment::Index(i)) => s.get(*i)?,
            _ => return None,
        };
        if node.is_hole() {
            return None;
        }
    }
    Some(node)
}

fn get_exact_mut<'a>(value: &'a mut Value, segs: &[Segment]) -> Option<&'a mut Value> {
    let mut node = value;
    for seg in segs {
        node = match (node, seg) {
            (Value::Mapping(m), Segment::Key(k)) => m.get_mut(k.as_str())?,
            (Value::Sequence(s), Segment::Index(i)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Drop the node at exactly `path`: a mapping entry is removed, a sequence element becomes
/// a hole (so that later indices still match the file). False when there is nothing there.
pub(crate) fn remove_exact(value: &mut Value, path: &KeyPath) -> bool {
    let segs = path.segments();
    let Some((last, parent)) = segs.split_last() else {
        return false;
    };
    let Some(node) = get_exact_mut(value, parent) else {
        return false;
    };
    match (node, last) {
        (Value::Mapping(m), Segment::Key(k)) => m.shift_remove(k.as_str()).is_some(),
        (Value::Sequence(s), Segment::Index(i)) => match s.get_mut(*i) {
            Some(slot) if !slot.is_hole() => {
                *slot = Value::hole();
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A copy without holes: what the user's config now is.
pub(crate) fn strip_holes(value: &Value) -> Value {
    match value {
        Value::Mapping(m) => {
            Value::Mapping(m.iter().map(|(k, v)| (k.clone(), strip_holes(v))).collect())
        }
        Value::Sequence(s) => {
            Value::Sequence(s.iter().filter(|v| !v.is_hole()).map(strip_holes).collect())
        }
        other => other.clone(),
    }
}

/// Map a path in the hole-free copy back to the path in `with_holes` (and so in the file).
pub(crate) fn original_path(with_holes: &Value, path: &KeyPath) -> KeyPath {
    let mut out = Vec::new();
    let mut node = Some(with_holes);
    for seg in path.segments() {
        match (node, seg) {
            (Some(Value::Sequence(s)), Segment::Index(i)) => {
                let found = s.iter().enumerate().filter(|(_, v)| !v.is_hole()).nth(*i);
                match found {
                    Some((orig, v)) => {
                        out.push(Segment::Index(orig));
                        node = Some(v);
                    }
                    None => {
                        out.push(seg.clone());
                        node = None;
                    }
                }
            }
            (Some(Value::Mapping(m)), Segment::Key(k)) => {
                out.push(seg.clone());
                node = m.get(k.as_str());
            }
            _ => {
                out.push(seg.clone());
                node = None;
            }
        }
    }
    KeyPath::from_segments(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_list_elements_read_as_yaml_quoted_scalars() {
        let strings = |v: Value| -> Vec<String> {
            match v {
                Value::Sequence(items) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => s,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            strings(parse_value_text(r#"["a\nb", 'c''d', "x,y", '1', "\q"]"#)),
            ["a\nb", "c'd", "x,y", "1", "\\q"]
        );
    }

    fn y(text: &str) -> Value {
        yaml::parse_document(text).unwrap()
    }

    #[test]
    fn merge_table() {
        let cases = [
            // (lower, upper, expected)
            ("a: 1", "b: 2", "{a: 1, b: 2}"),
            ("a: 1", "a: 2", "{a: 2}"),
            (
                "a: {x: 1, y: 2}",
                "a: {y: 3, z: 4}",
                "{a: {x: 1, y: 3, z: 4}}",
            ),
            ("a: [1, 2, 3]", "a: [4]", "{a: [4]}"),
            ("a: {x: 1}", "a: [1]", "{a: [1]}"),
            ("a: [1]", "a: {x: 1}", "{a: {x: 1}}"),
            ("a: 1", "a: null", "{a: null}"),
            (
                "a: {b: {c: {d: 1, e: 2}}}",
                "a: {b: {c: {e: 3}}}",
                "{a: {b: {c: {d: 1, e: 3}}}}",
            ),
            ("", "a: 1", "{a: 1}"),
            ("a: 1", "", "null"),
        ];
        for (lower, upper, want) in cases {
            assert_eq!(merge(y(lower), y(upper)), y(want), "{lower} <- {upper}");
        }
    }

    #[test]
    fn merge_keeps_key_order_of_lower() {
        let got = merge(y("a: 1\nb: 2\nc: 3"), y("b: 9\nd: 4"));
        assert_eq!(yaml::to_yaml(&got).unwrap(), "a: 1\nb: 9\nc: 3\nd: 4\n");
    }

    #[test]
    fn get_table() {
        let doc = y(concat!(
            "rancher:\n",
            "  network:\n    dns:\n      nameservers: [8.8.8.8, 1.1.1.1]\n",
            "  sysctl:\n    net.ipv4.ip_forward: 1\n",
            "write_files:\n  - path: /etc/a\n",
        ));
        let cases: [(&str, Option<Value>); 9] = [
            (
                "rancher.network.dns.nameservers",
                Some(y("[8.8.8.8, 1.1.1.1]")),
            ),
            (
                "rancher.network.dns.nameservers[1]",
                Some(Value::from("1.1.1.1")),
            ),
            (
                "rancher.network.dns.nameservers.0",
                Some(Value::from("8.8.8.8")),
            ),
            ("rancher.sysctl.net.ipv4.ip_forward", Some(Value::from(1))),
            (
                "rancher.sysctl.\"net.ipv4.ip_forward\"",
                Some(Value::from(1)),
            ),
            ("write_files[0].path", Some(Value::from("/etc/a"))),
            ("rancher.network.dns.search", None),
            ("rancher.network.dns.nameservers[5]", None),
            ("rancher..x", None),
        ];
        for (key, want) in cases {
            assert_eq!(get(&doc, key).cloned(), want, "{key}");
        }
    }

    #[test]
    fn holes_keep_indices() {
        let mut v = y("l: [a, b, c, d]");
        let p = |s| KeyPath::parse(s).unwrap();
        assert!(remove_exact(&mut v, &p("l[1]")));
        assert!(!remove_exact(&mut v, &p("l[1]")));
        assert_eq!(strip_holes(&v), y("l: [a, c, d]"));
        // Index 1 of the stripped list is the file's index 2.
        assert_eq!(original_path(&v, &p("l[1]")), p("l[2]"));
        assert_eq!(get_exact(&v, &p("l[3]")), Some(&Value::from("d")));
        assert_eq!(get_exact(&v, &p("l[1]")), None);
    }
}
