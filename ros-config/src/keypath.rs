//! Key paths such as `rancher.network.dns.nameservers` or `write_files[0].content`: parsing
//! and display. Owns the syntax of a path only; looking paths up in a tree is `tree`'s job.

use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index, written `[N]`.
    Index(usize),
}

/// A path into a config tree, displayed as `rancher.network.interfaces.eth0.address` or
/// `write_files[2].content`. Keys that contain `.`, brackets, quotes or spaces are shown quoted:
/// `rancher.sysctl."net.ipv4.ip_forward"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(Vec<Segment>);

/// Errors while parsing a key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    /// The text is not a valid key path.
    #[error("parsing key `{key}`: {reason}")]
    Parse {
        /// The text that was given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl KeyPath {
    /// The empty path: the whole document.
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// Parse `a.b[0]."c.d"`. A bare numeric segment (`a.0`) is a key here; lookups treat it
    /// as an index when the node is a sequence.
    pub fn parse(text: &str) -> Result<Self, KeyPathError> {
        let err = |reason| KeyPathError::Parse {
            key: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(err("empty key"));
        }
        let mut segments = Vec::new();
        let mut chars = text.chars().peekable();
        // True at the start and right after a `.`: a key must come next.
        let mut expect_key = true;
        while let Some(&c) = chars.peek() {
            match c {
                '[' if !expect_key || segments.is_empty() => {
                    chars.next();
                    let mut digits = String::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(d) if d.is_ascii_digit() => digits.push(d),
                            _ => return Err(err("expected digits and `]` after `[`")),
                        }
                    }
                    let index = digits.parse().map_err(|_| err("bad index"))?;
                    segments.push(Segment::Index(index));
                    expect_key = false;
                }
                '.' if !expect_key => {
                    chars.next();
                    expect_key = true;
                }
                '"' if expect_key => {
                    chars.next();
                    let mut key = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(e) => key.push(e),
                                None => return Err(err("unterminated quoted key")),
                            },
                            Some(k) => key.push(k),
                            None => return Err(err("unterminated quoted key")),
                        }
                    }
                    segments.push(Segment::Key(key));
                    expect_key = false;
                }
                _ if expect_key => {
                    let mut key = String::new();
                    while let Some(&k) = chars.peek() {
                        if matches!(k, '.' | '[' | ']' | '"') {
                            break;
                        }
                        key.push(k);
                        chars.next();
                    }
                    if key.is_empty() {
                        return Err(err("empty segment"));
                    }
                    segments.push(Segment::Key(key));
                    expect_key = false;
                }
                _ => return Err(err("expected `.` or `[` after a segment")),
            }
        }
        if expect_key {
            return Err(err("empty segment"));
        }
        Ok(KeyPath(segments))
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// True for the root path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &KeyPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// This path extended by key `key`.
    pub fn key(&self, key: impl Into<String>) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.into()));
        p
    }

    /// This path extended by sequence index `index`.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    /// The first `len` segments.
    pub(crate) fn truncated(&self, len: usize) -> KeyPath {
        KeyPath(self.0[..len.min(self.0.len())].to_vec())
    }

    pub(crate) fn from_segments(segments: Vec<Segment>) -> KeyPath {
        KeyPath(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let plain = !k.is_empty()
                        && !k.chars().any(|c| {
                            matches!(c, '.' | '[' | ']' | '"' | '\\') || c.is_whitespace()
                        });
                    if plain {
                        f.write_str(k)?;
                    } else {
                        f.write_str("\"")?;
                        for c in k.chars() {
                            if c == '"' || c == '\\' {
                                f.write_str("\\")?;
                            }
                            write!(f, "{c}")?;
                        }
                        f.write_str("\"")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let cases = [
            "rancher.network.dns.nameservers",
            "write_files[0].content",
            "rancher.sysctl.\"net.ipv4.ip_forward\"",
            "mounts[1][2]",
            "a.0.b",
            "rancher.services_include.kernel-headers",
        ];
        for text in cases {
            let p = KeyPath::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn parse_segments() {
        let p = KeyPath::parse("a[3].\"b.c\".d").unwrap();
        assert_eq!(
            p.segments(),
            &[
                Segment::Key("a".into()),
                Segment::Index(3),
                Segment::Key("b.c".into()),
                Segment::Key("d".into()),
            ]
        );
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            "", ".", "a.", ".a", "a..b", "a[x]", "a[1", "a.\"b", "a]b", "a.[0]",
        ] {
            assert!(KeyPath::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
