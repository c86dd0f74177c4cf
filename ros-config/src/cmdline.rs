//! The kernel command line: `rancher.KEY.PATH=VALUE` words become the top config layer, and
//! the cmdline-only settings (`cloud-config-url=`, `rancher.password=`, ...) are exposed.
//! Pure: the caller reads `/proc/cmdline`; other words are ignored.

use crate::diagnostic::{Diagnostic, Severity};
use crate::keypath::KeyPath;
use crate::paths;
use crate::tree::{self, insert, InsertMode};
use crate::value::Value;
use std::borrow::Cow;

/// Longest command line read; the kernel's own limit is a few KiB.
pub const MAX_CMDLINE_BYTES: usize = 64 << 10;

/// Keys whose values are secrets: hidden from processes that need none of them.
const SECRET_KEYS: &[&str] = &["rancher.password"];

/// `text` with the value of every secret word (`rancher.password=...`) replaced by
/// `(hidden)`, quotes and everything else as they were: the kernel line unprivileged
/// services are shown (the kernel shows the real one to every process).
pub fn redacted_cmdline(text: &str) -> String {
    let mut hidden = Vec::new();
    for word in split_words(text) {
        let Some((key, value)) = word.text.split_once('=') else {
            continue;
        };
        if value.is_empty() || !SECRET_KEYS.contains(&key) {
            continue;
        }
        let skip = key.chars().count() + 1;
        if let (Some(first), Some(last)) = (word.cols.get(skip), word.cols.last()) {
            hidden.push((first - 1, last - 1));
        }
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match hidden
            .iter()
            .find(|(first, last)| (*first..=*last).contains(&i))
        {
            Some((first, _)) if *first == i => out.push_str("(hidden)"),
            Some(_) => {}
            None => out.push(c),
        }
    }
    out
}

/// The kernel command line as `root` shows it (`<root>/proc/cmdline`), for PID 1 and `ros`
/// alike: at most one byte past [`MAX_CMDLINE_BYTES`] (so that [`Cmdline::parse`] still
/// reports the truncation), decoded lossily (a stray byte that is not UTF-8 costs that
/// character, not the whole line). `Ok(None)` when there is no such file (a test root).
pub fn read_cmdline(root: &std::path::Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let path = paths::under(root, paths::KERNEL_CMDLINE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_CMDLINE_BYTES + 1).unwrap_or(u64::MAX);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Keys whose value is taken verbatim, never read as YAML: a password `0x1F` must stay
/// `0x1F`, not become 31.
const VERBATIM_KEYS: &[&str] = &["rancher.password", "rancher.autologin"];

/// Where a `rancher.*` word sits on the line, to place diagnostics (1-based columns).
#[derive(Debug, Clone)]
pub(crate) struct WordPos {
    pub path: KeyPath,
    pub key_column: usize,
    pub value_column: usize,
}

/// A parsed kernel command line.
#[derive(Debug, Clone, Default)]
pub struct Cmdline {
    tree: Value,
    /// Each word's place in the line (a layer locates its problems with them).
    pub(crate) words: Vec<WordPos>,
    cloud_config_url: Option<String>,
    nocloud_seed: Option<String>,
    diagnostics: Vec<Diagnostic>,
}

/// The seed URL of cloud-init's `ds=nocloud;s=URL` (also `nocloud-net`, `seedfrom=`): NoCloud
/// over HTTP, whose user-data is `URL` + `user-data`.
fn nocloud_seed(value: &str) -> Option<&str> {
    let mut parts = value.split(';');
    if !matches!(parts.next(), Some("nocloud" | "nocloud-net")) {
        return None;
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| matches!(*k, "s" | "seedfrom"))
        .map(|(_, url)| url)
        .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
}

struct Word {
    text: String,
    /// The word as written, quotes kept.
    raw: String,
    /// Column of each char of `text` in the line (quotes removed).
    cols: Vec<usize>,
    start: usize,
}

fn split_words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut cur: Option<Word> = None;
    let mut in_quote = false;
    for (i, c) in text.chars().enumerate() {
        let col = i + 1;
        if c == '"' {
            in_quote = !in_quote;
            cur.get_or_insert_with(|| Word {
                text: String::new(),
                raw: String::new(),
                cols: Vec::new(),
                start: col,
            })
            .raw
            .push(c);
            continue;
        }
        if c.is_whitespace() && !in_quote {
            words.extend(cur.take());
            continue;
        }
        let w = cur.get_or_insert_with(|| Word {
            text: String::new(),
            raw: String::new(),
            cols: Vec::new(),
            start: col,
        });
        w.text.push(c);
        w.raw.push(c);
        w.cols.push(col);
    }
    words.extend(cur);
    words
}

/// The words of a kernel command line as `(key, value)`: split at whitespace outside double
/// quotes, the quotes removed, `key=value` split at its first `=`. The one splitter of the
/// line, for PID 1's boot questions (`root=`, `rootdelay=`, ...) and for [`Cmdline`].
pub fn cmdline_words(text: &str) -> Vec<(String, Option<String>)> {
    split_words(text)
        .into_iter()
        .filter(|w| !w.text.is_empty())
        .map(|w| match w.text.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w.text, None),
        })
        .collect()
}

/// A kernel command line without the words whose key is in `keys`, the others as written
/// (quotes kept) and split as [`cmdline_words`] splits them: a quoted value holding spaces
/// or `key=` text stays one word.
pub fn cmdline_without(text: &str, keys: &[&str]) -> String {
    split_words(text)
        .into_iter()
        .filter(|w| !w.raw.is_empty())
        .filter(|w| !keys.contains(&w.text.split('=').next().unwrap_or_default()))
        .map(|w| w.raw)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `key[=value]` words of a kernel command line ([`cmdline_words`]), for what is read
/// before any config: the root device, the slot, the boot's flags. One reading for PID 1
/// and `ros`; later words win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdlineWords(Vec<(String, Option<String>)>);

impl CmdlineWords {
    /// Split `text` into its words.
    pub fn parse(text: &str) -> CmdlineWords {
        CmdlineWords(cmdline_words(text))
    }

    /// The value of the last `key=value` word for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A flag of the last word for `key`: bare `key` or `key=true` is true, `key=false`
    /// false (any case: YAML's booleans, as [`Cmdline`] reads a `rancher.*` word into the
    /// config, so that PID 1 and the config agree); another value, or no word, is `None`.
    pub fn flag(&self, key: &str) -> Option<bool> {
        let (_, v) = self.0.iter().rev().find(|(k, _)| k == key)?;
        match v.as_deref() {
            None => Some(true),
            Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
            Some(_) => None,
        }
    }
}

impl Cmdline {
    /// Parse the text of `/proc/cmdline`. `rancher.a.b=VALUE` sets `rancher.a.b`; VALUE is a
    /// YAML scalar or a `[a,b]` list and may be double-quoted to hold spaces; a bare
    /// `rancher.a.b` means `true`; later words win. Malformed `rancher.` words are reported
    /// and ignored.
    pub fn parse(text: &str) -> Cmdline {
        let mut out = Cmdline {
            tree: Value::mapping(),
            ..Cmdline::default()
        };
        let mut text = text;
        if text.len() > MAX_CMDLINE_BYTES {
            let mut end = MAX_CMDLINE_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text = &text[..end];
            out.warn(
                0,
                format!("longer than {MAX_CMDLINE_BYTES} bytes; the rest is ignored"),
            );
        }
        for word in split_words(text) {
            let (key, value) = match word.text.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.text.as_str(), None),
            };
            if key == "cloud-config-url" {
                out.cloud_config_url = value.map(str::to_string);
                continue;
            }
            if key == "ds" {
                out.nocloud_seed = value.and_then(nocloud_seed).map(str::to_string);
                continue;
            }
            if !key.starts_with("rancher.") {
                continue;
            }
            let path = match KeyPath::parse(key) {
                Ok(p) => p,
                Err(e) => {
                    out.warn(word.start, format!("`{}`: {e}; ignored", word.text));
                    continue;
                }
            };
            let key_chars = key.chars().count();
            let value_column = word
                .cols
                .get(key_chars + 1)
                .copied()
                .unwrap_or_else(|| word.cols.last().map_or(word.start, |c| c + 1));
            let parsed = match value {
                None => Value::Bool(true),
                Some(v) if VERBATIM_KEYS.contains(&key) => Value::String(v.to_string()),
                Some(v) => tree::parse_value_text(v),
            };
            // Replace mode cannot fail: whatever is in the way is replaced.
            let _ = insert(&mut out.tree, &path, parsed, InsertMode::Replace);
            out.words.push(WordPos {
                path,
                key_column: word.start,
                value_column,
            });
        }
        out
    }

    fn warn(&mut self, column: usize, message: String) {
        self.diagnostics.push(Diagnostic {
            file: paths::KERNEL_CMDLINE.to_string(),
            line: usize::from(column > 0),
            column,
            key_path: KeyPath::root(),
            severity: Severity::Warning,
            message,
        });
    }

    /// The `rancher.*` words as a config tree (`{rancher: {...}}`).
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// Problems with the words themselves (malformed keys).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// `cloud-config-url=URL`: fetch user-data from there. Without it, NoCloud over HTTP
    /// (`ds=nocloud;s=URL/`) gives `URL/user-data`.
    pub fn cloud_config_url(&self) -> Option<Cow<'_, str>> {
        match (&self.cloud_config_url, &self.nocloud_seed) {
            (Some(url), _) => Some(Cow::Borrowed(url.as_str())),
            (None, Some(seed)) => Some(Cow::Owned(format!("{seed}user-data"))),
            (None, None) => None,
        }
    }

    /// `rancher.password=`: the console user's password, verbatim.
    pub fn password(&self) -> Option<&str> {
        tree::get(&self.tree, "rancher.password").and_then(Value::as_str)
    }

    /// `rancher.autologin=tty1`: the console to log in on automatically.
    pub fn autologin(&self) -> Option<&str> {
        tree::get(&self.tree, "rancher.autologin").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_and_the_rest_kept() {
        let table = [
            (
                "quiet rancher.password=s3cret x=1",
                "quiet rancher.password=(hidden) x=1",
            ),
            (
                "rancher.password=\"a b\" rancher.hostname=h",
                "rancher.password=\"(hidden)\" rancher.hostname=h",
            ),
            ("\"rancher.password=a b\"", "\"rancher.password=(hidden)\""),
            (
                "rancher.password= rancher.debug",
                "rancher.password= rancher.debug",
            ),
            (
                "a rancher.password=1 b rancher.password=2",
                "a rancher.password=(hidden) b rancher.password=(hidden)",
            ),
            (
                "rancher.passwords=x rancher.password",
                "rancher.passwords=x rancher.password",
            ),
        ];
        for (line, want) in table {
            assert_eq!(redacted_cmdline(line), want, "{line}");
        }
        // What the config makes of a redacted line: the same, but for the password.
        let line = redacted_cmdline("rancher.password=pw rancher.debug=true");
        let seen = Cmdline::parse(&line);
        assert_eq!(CmdlineWords::parse(&line).flag("rancher.debug"), Some(true));
        assert_eq!(seen.password(), Some("(hidden)"));
    }

    #[test]
    fn the_line_is_read_lossily_and_bounded_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cmdline(dir.path()).unwrap(), None);
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        let mut line = b"quiet rancher.debug=true \xff rancher.hostname=x".to_vec();
        std::fs::write(dir.path().join("proc/cmdline"), &line).unwrap();
        let text = read_cmdline(dir.path()).unwrap().unwrap();
        assert!(text.starts_with("quiet rancher.debug=true "), "{text}");
        assert_eq!(CmdlineWords::parse(&text).flag("rancher.debug"), Some(true));
        // Bounded: one byte past the limit, for the parser to report the rest as cut.
        line = vec![b'x'; MAX_CMDLINE_BYTES * 2];
        std::fs::write(dir.path().join("proc/cmdline"), &line).unwrap();
        assert_eq!(
            read_cmdline(dir.path()).unwrap().unwrap().len(),
            MAX_CMDLINE_BYTES + 1
        );
    }
    use crate::yaml::parse_document;
    use proptest::prelude::*;

    fn y(text: &str) -> Value {
        parse_document(text).unwrap()
    }

    #[test]
    fn a_line_without_some_keys_keeps_the_other_words_as_written() {
        let line = " quiet a=\"x y=1\"\tb \"c=2 3\" root=/dev/vda d=\"\" quiet=1";
        assert_eq!(
            cmdline_without(line, &["quiet", "root"]),
            "a=\"x y=1\" b \"c=2 3\" d=\"\""
        );
        assert_eq!(cmdline_without("", &["a"]), "");
    }

    #[test]
    fn cmdline_table() {
        let cases = [
            ("", "{}"),
            ("console=ttyS0 quiet root=/dev/sda1", "{}"),
            (
                "rancher.network.interfaces.eth0.dhcp=false",
                "rancher: {network: {interfaces: {eth0: {dhcp: false}}}}",
            ),
            (
                "rancher.cloud_init.datasources=[configdrive:/media/config-2]",
                "rancher: {cloud_init: {datasources: ['configdrive:/media/config-2']}}",
            ),
            (
                "rancher.modules=[ip_vs,nbd]",
                "rancher: {modules: [ip_vs, nbd]}",
            ),
            (
                "rancher.ssh.port=2222 rancher.ssh.daemon",
                "rancher: {ssh: {port: 2222, daemon: true}}",
            ),
            (
                "rancher.environment.GREETING=\"hello world\"",
                "rancher: {environment: {GREETING: hello world}}",
            ),
            (
                "\"rancher.environment.X=a b\"",
                "rancher: {environment: {X: a b}}",
            ),
            (
                "rancher.shutdown_timeout=10 rancher.shutdown_timeout=20",
                "rancher: {shutdown_timeout: 20}",
            ),
            ("rancher.a=1 rancher.a.b=2", "rancher: {a: {b: 2}}"),
            (
                "rancher.password=0x1F rancher.autologin=tty1",
                "rancher: {password: '0x1F', autologin: tty1}",
            ),
            (
                "rancher.sysctl.net.ipv4.ip_forward=1",
                "rancher: {sysctl: {net: {ipv4: {ip_forward: 1}}}}",
            ),
            (
                "rancher.state.dev=LABEL=RANCHER_STATE",
                "rancher: {state: {dev: LABEL=RANCHER_STATE}}",
            ),
            (
                "rancher.docker.extra_args=[]",
                "rancher: {docker: {extra_args: []}}",
            ),
        ];
        for (line, want) in cases {
            let c = Cmdline::parse(line);
            assert_eq!(c.tree(), &y(want), "{line}");
            assert!(c.diagnostics().is_empty(), "{line}: {:?}", c.diagnostics());
        }
    }

    #[test]
    fn a_flag_reads_as_the_config_reads_the_same_word() {
        for (line, want) in [
            ("rancher.debug", Some(true)),
            ("rancher.debug=true", Some(true)),
            ("rancher.debug=TRUE", Some(true)),
            ("rancher.debug=false", Some(false)),
            ("rancher.debug=yes", None),
            ("rancher.debug=1", None),
            ("quiet", None),
            ("rancher.debug rancher.debug=false", Some(false)),
        ] {
            let words = CmdlineWords::parse(line);
            assert_eq!(words.flag("rancher.debug"), want, "{line}");
            let in_config = match tree::get(Cmdline::parse(line).tree(), "rancher.debug") {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            };
            assert_eq!(
                in_config, want,
                "{line}: the config layer reads it otherwise"
            );
        }
        let words = CmdlineWords::parse("root=LABEL=X ros.slot=a ros.slot=b quiet");
        assert_eq!(words.get("root"), Some("LABEL=X"));
        assert_eq!(words.get("ros.slot"), Some("b"));
        assert_eq!(words.get("quiet"), None);
        assert_eq!(words.flag("quiet"), Some(true));
    }

    #[test]
    fn cmdline_only_keys() {
        let c = Cmdline::parse(
            "rancher.password=s3cr3t rancher.autologin=ttyS0 rancher.recovery rancher.debug=true \
             cloud-config-url=http://10.0.0.1/cc.yml",
        );
        assert_eq!(c.password(), Some("s3cr3t"));
        assert_eq!(c.autologin(), Some("ttyS0"));
        assert_eq!(
            c.cloud_config_url().as_deref(),
            Some("http://10.0.0.1/cc.yml")
        );
        let none = Cmdline::parse("quiet");
        assert_eq!(none.password(), None);
        assert_eq!(none.cloud_config_url(), None);
    }

    #[test]
    fn words_split_outside_quotes_at_their_first_equals() {
        let words = cmdline_words(r#"quiet root=LABEL=RANCHER_STATE rancher.a="x y" "" b="#);
        let want: Vec<(String, Option<String>)> = vec![
            ("quiet".into(), None),
            ("root".into(), Some("LABEL=RANCHER_STATE".into())),
            ("rancher.a".into(), Some("x y".into())),
            ("b".into(), Some(String::new())),
        ];
        assert_eq!(words, want);
    }

    #[test]
    fn nocloud_over_http_gives_its_user_data_url() {
        let seed = |line: &str| {
            Cmdline::parse(line)
                .cloud_config_url()
                .map(|u| u.into_owned())
        };
        assert_eq!(
            seed("ds=nocloud;s=http://10.0.2.2:8000/"),
            Some("http://10.0.2.2:8000/user-data".into())
        );
        assert_eq!(
            seed("ds=nocloud-net;seedfrom=http://h/n/"),
            Some("http://h/n/user-data".into())
        );
        // cloud-config-url= wins; a local NoCloud seed is a config drive, not a URL.
        assert_eq!(
            seed("ds=nocloud;s=http://h/ cloud-config-url=http://c/cc"),
            Some("http://c/cc".into())
        );
        assert_eq!(seed("ds=nocloud;s=file:///seed/"), None);
        assert_eq!(seed("ds=ec2"), None);
    }

    #[test]
    fn malformed_words_are_reported_with_column() {
        let c = Cmdline::parse("quiet rancher..x=1 rancher.ok=1");
        assert_eq!(c.diagnostics().len(), 1);
        let d = &c.diagnostics()[0];
        assert_eq!((d.line, d.column), (1, 7));
        assert_eq!(c.tree(), &y("rancher: {ok: 1}"));
    }

    #[test]
    fn word_positions() {
        let c = Cmdline::parse("quiet rancher.ssh.port=x");
        let w = &c.words[0];
        assert_eq!((w.key_column, w.value_column), (7, 24));
    }

    /// Text a kernel command line may hold, weighted towards what trips parsers: quotes
    /// left open, runs of `=`, control characters, numbers too large for any integer.
    fn cmdline_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => any::<char>().prop_map(String::from),
            3 => prop::sample::select(vec![
                "\"", "=", "==", " ", "\t", "\n", "\0", "\u{7f}", "\u{a0}", "\u{2028}", ".",
                "..", "[", "]", ",", "rancher.", "rancher.shutdown_timeout=", "rancher.password=",
                "rancher.network.dhcp_timeout=", "cloud-config-url=", "rootdelay=", "~", "!tag ",
            ])
            .prop_map(String::from),
            1 => "[0-9]{1,40}",
        ];
        prop::collection::vec(piece, 0..64).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_positions_stay_on_the_line(text in cmdline_text()) {
            let c = Cmdline::parse(&text);
            let end = text.chars().count() + 1;
            for w in &c.words {
                prop_assert!(w.key_column >= 1 && w.key_column <= end, "{w:?}");
                prop_assert!(w.value_column >= w.key_column && w.value_column <= end, "{w:?}");
            }
            for d in c.diagnostics() {
                prop_assert!(d.column <= end, "{d}");
            }
            let _ = (c.password(), c.autologin(), c.cloud_config_url());
            let _ = crate::resolve::resolve(vec![c.layer()], crate::resolve::Mode::Boot);
        }

        #[test]
        fn a_verbatim_value_round_trips(noise in "[^\"]{0,60}", value in "[^\\s\"]{0,40}") {
            let c = Cmdline::parse(&format!("{noise} rancher.password={value}"));
            prop_assert_eq!(c.password(), Some(value.as_str()));
        }

        #[test]
        fn a_quoted_verbatim_value_keeps_its_spaces(value in "[^\"]{0,40}") {
            let c = Cmdline::parse(&format!("quiet rancher.password=\"{value}\" console=tty1"));
            prop_assert_eq!(c.password(), Some(value.as_str()));
        }

        #[test]
        fn words_outside_rancher_change_nothing(
            line in "(rancher\\.[a-z_]{1,8}(\\.[a-z_]{1,8}){0,2}=[a-z0-9]{0,8} ){0,6}",
            noise in prop::collection::vec("x[^\\s\"]{0,20}", 0..6),
        ) {
            let plain = Cmdline::parse(&line);
            let noisy = Cmdline::parse(&format!("{} {line} {}", noise.join(" "), noise.join(" ")));
            prop_assert_eq!(noisy.tree(), plain.tree());
        }
    }
}
