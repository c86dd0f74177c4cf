//! Loading and resolving the config layers: read each file under hard limits, merge the
//! layers (lowest first), type-check the result, and collect every problem with its file,
//! line, column and key path. Owns the policy of what a bad value costs; must never panic or
//! give up on the whole config because of one file.
//!
//! How problems are collected: the merged tree is converted to [`CloudConfig`]; on the first
//! error (whose key path `serde_path_to_error` gives) the offending node is removed from the
//! layer that supplied it, and the conversion is retried. Removing it from that layer only
//! means a lower layer's value for the same key (the built-in default) applies again. The
//! position is looked up in that layer's text only for nodes that are reported, and removed
//! sequence elements leave holes so that indices keep matching the file.

use std::fs;
use std::io::{self, Read};

use std::path::{Path, PathBuf};

use crate::check::{check, Finding};
use crate::cmdline::{Cmdline, WordPos};
use crate::diagnostic::{Diagnostic, SerdeProblem, Severity};
use crate::file::{open_config_file, MAX_FILE_BYTES};
use crate::keypath::{KeyPath, Segment};
use crate::paths;
use crate::retry;
use crate::schema::CloudConfig;
use crate::tree::{get_exact, merge, original_path, remove_exact, strip_holes};
use crate::value::{Mapping, Value};
use crate::yaml::{self, Target};

/// After this many problems in one file, the rest of that file is ignored.
const MAX_PROBLEMS_PER_LAYER: usize = 100;

/// How strictly to treat problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ros config validate`: unknown keys under `rancher:` are errors.
    Strict,
    /// Boot: unknown keys under `rancher:` are warnings; the rest of the file applies.
    Boot,
}

enum Source {
    Text(String),
    Cmdline(Vec<WordPos>),
    Memory,
}

/// One config source (a file, the kernel command line, or a value built in memory),
/// parsed and normalised, ready to be layered.
pub struct Layer {
    origin: String,
    value: Value,
    source: Source,
    notes: Vec<Diagnostic>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Layer {
    /// Parse YAML text; `origin` names it in diagnostics. A syntax error, a hostile document
    /// (too large, too deep, alias bomb) or a document that is not a mapping is an `Err`:
    /// such a file is skipped whole.
    pub fn parse(origin: impl Into<String>, text: &str) -> Result<Layer, Diagnostic> {
        let origin = origin.into();
        let whole_file = |line, column, message: String| Diagnostic {
            file: origin.clone(),
            line,
            column,
            key_path: KeyPath::root(),
            severity: Severity::Error,
            message,
        };
        if text.len() > MAX_FILE_BYTES {
            return Err(whole_file(
                0,
                0,
                format!("larger than {} KiB; file refused", MAX_FILE_BYTES >> 10),
            ));
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value = yaml::parse_document(text)
            .map_err(|e| whole_file(e.line, e.column, format!("{}; file skipped", e.message)))?;
        let mut layer = Layer {
            origin: origin.clone(),
            value: Value::Null,
            source: Source::Text(text.to_string()),
            notes: Vec::new(),
        };
        match value {
            Value::Null | Value::Mapping(_) => {}
            other => {
                let (line, column) = layer.locate(&KeyPath::root(), Target::Value);
                return Err(whole_file(
                    line,
                    column,
                    format!(
                        "a cloud-config must be a mapping of keys, found a {}; file skipped",
                        other.kind()
                    ),
                ));
            }
        }
        layer.set_value(value);
        Ok(layer)
    }

    /// Read and parse a file. `Ok(None)` when it does not exist; `Err` when it cannot be
    /// used (unreadable, not a regular file or a symbolic link, too large, not UTF-8, bad
    /// YAML).
    pub fn read(path: &Path) -> Result<Option<Layer>, Diagnostic> {
        let origin = path.display().to_string();
        let fail = |message: String| Diagnostic {
            file: origin.clone(),
            line: 0,
            column: 0,
            key_path: KeyPath::root(),
            severity: Severity::Error,
            message,
        };
        let file = match open_config_file(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(format!("reading: {e}; file skipped"))),
        };
        let mut bytes = Vec::new();
        let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX) + 1;
        if let Err(e) = file.take(limit).read_to_end(&mut bytes) {
            return Err(fail(format!("reading: {e}; file skipped")));
        }
        if bytes.len() > MAX_FILE_BYTES {
            return Err(fail(format!(
                "larger than {} KiB; file refused",
                MAX_FILE_BYTES >> 10
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            fail(format!(
                "not UTF-8 text (byte {}); file skipped",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Layer::parse(origin, &text).map(Some)
    }

    /// A layer from a value built in memory (positions unknown).
    pub fn from_value(origin: impl Into<String>, value: Value) -> Layer {
        let mut layer = Layer {
            origin: origin.into(),
            value: Value::Null,
            source: Source::Memory,
            notes: Vec::new(),
        };
        match value {
            Value::Null | Value::Mapping(_) => layer.set_value(value),
            other => {
                layer.note(
                    KeyPath::root(),
                    Severity::Error,
                    format!(
                        "a cloud-config must be a mapping of keys, found a {}",
                        other.kind()
                    ),
                    Target::Value,
                );
                layer.value = Value::mapping();
            }
        }
        layer
    }

    fn from_cmdline(value: Value, words: Vec<WordPos>) -> Layer {
        let mut layer = Layer {
            origin: paths::KERNEL_CMDLINE.to_string(),
            value: Value::Null,
            source: Source::Cmdline(words),
            notes: Vec::new(),
        };
        layer.set_value(value);
        layer
    }

    /// Where this layer came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The layer's tree (normalised: keys are strings, empty values are unset).
    pub fn value(&self) -> Value {
        strip_holes(&self.value)
    }

    fn set_value(&mut self, value: Value) {
        let mut notes = Vec::new();
        let mut value = normalize(value, &KeyPath::root(), &mut notes).unwrap_or(Value::Null);
        if value.is_null() {
            value = Value::mapping();
        }
        flatten_sysctl(&mut value);
        if !matches!(self.source, Source::Cmdline(_)) {
            for (key, why) in crate::schema::CMDLINE_ONLY_KEYS {
                let Ok(path) = KeyPath::parse(key) else {
                    continue;
                };
                if remove_exact(&mut value, &path) {
                    notes.push((
                        path,
                        Severity::Warning,
                        format!(
                            "`{key}` is read from the kernel command line only ({why}); \
                             ignored here"
                        ),
                    ));
                }
            }
        }
        self.value = value;
        for (path, severity, message) in notes {
            self.note(path, severity, message, Target::Key);
        }
    }

    fn note(&mut self, key_path: KeyPath, severity: Severity, message: String, target: Target) {
        let (line, column) = self.locate(&key_path, target);
        self.notes.push(Diagnostic {
            file: self.origin.clone(),
            line,
            column,
            key_path,
            severity,
            message,
        });
    }

    /// 1-based line and column of `path` in this layer; (0, 0) when unknown.
    fn locate(&self, path: &KeyPath, target: Target) -> (usize, usize) {
        match &self.source {
            Source::Text(text) => yaml::locate(text, path, target).unwrap_or((0, 0)),
            Source::Cmdline(words) => {
                let want = plain(path);
                let hit = words.iter().rev().find_map(|w| {
                    let have = plain(&w.path);
                    if have == want {
                        Some(if target == Target::Key {
                            w.key_column
                        } else {
                            w.value_column
                        })
                    } else if under(&have, &want) {
                        Some(w.key_column)
                    } else if under(&want, &have) {
                        Some(w.value_column)
                    } else {
                        None
                    }
                });
                hit.map_or((0, 0), |col| (1, col))
            }
            Source::Memory => (0, 0),
        }
    }
}

impl Cmdline {
    /// The top config layer made of the `rancher.*` words. (Here, not in `cmdline`: a
    /// layer is built from the line, not the other way round.)
    pub fn layer(&self) -> Layer {
        Layer::from_cmdline(self.tree().clone(), self.words.clone())
    }
}

/// A path with keys joined by dots and no quoting: how a command-line word spells it.
fn plain(path: &KeyPath) -> String {
    let mut s = String::new();
    for seg in path.segments() {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

type Note = (KeyPath, Severity, String);

/// Keys become strings (`1:` -> "1"), empty values mean unset (as in RancherOS), tags are
/// dropped with a warning. `None` when the node itself is empty.
fn normalize(value: Value, path: &KeyPath, notes: &mut Vec<Note>) -> Option<Value> {
    let value = match value.untag() {
        Ok((tag, inner)) => {
            notes.push((
                path.clone(),
                Severity::Warning,
                format!("YAML tag `{tag}` ignored"),
            ));
            inner
        }
        Err(v) => v,
    };
    match value {
        Value::Null => None,
        Value::Mapping(map) => {
            // In a service's `environment:` map an empty value means "pass the host's value
            // through" (compose semantics), so it must survive.
            let keep_nulls = matches!(
                path.segments(),
                [Segment::Key(r), Segment::Key(s), Segment::Key(_), Segment::Key(e)]
                    if r == "rancher" && s == "services" && e == "environment"
            );
            let mut out = Mapping::new();
            for (k, v) in map {
                let Some(key) = k.key_text() else {
                    notes.push((
                        path.clone(),
                        Severity::Error,
                        format!(
                            "a key must be a string, found a {}; entry ignored",
                            k.kind()
                        ),
                    ));
                    continue;
                };
                let child = path.key(key.as_str());
                let v = match normalize(v, &child, notes) {
                    None if keep_nulls => Some(Value::Null),
                    v => v,
                };
                if let Some(v) = v {
                    if out.insert(Value::String(key), v).is_some() {
                        notes.push((
                            child,
                            Severity::Warning,
                            "key given twice; the last one wins".into(),
                        ));
                    }
                }
            }
            Some(Value::Mapping(out))
        }
        Value::Sequence(seq) => Some(Value::Sequence(
            seq.into_iter()
                .enumerate()
                .map(|(i, v)| normalize(v, &path.index(i), notes).unwrap_or(Value::Null))
                .collect(),
        )),
        scalar => Some(scalar),
    }
}

/// `rancher.sysctl` may be written nested (`net: {ipv4: {ip_forward: 1}}`, which is what
/// `rancher.sysctl.net.ipv4.ip_forward=1` on the command line means); flatten it to
/// dotted keys per layer, so that layering compares like with like.
fn flatten_sysctl(value: &mut Value) {
    let Some(Value::Mapping(sysctl)) = value.get_mut("rancher").and_then(|r| r.get_mut("sysctl"))
    else {
        return;
    };
    if !sysctl.values().any(Value::is_mapping) {
        return;
    }
    fn walk(prefix: &str, v: Value, out: &mut Mapping) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let key = k.key_text().unwrap_or_default();
                    let full = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&full, v, out);
                }
            }
            leaf => {
                out.insert(Value::String(prefix.to_string()), leaf);
            }
        }
    }
    let mut out = Mapping::new();
    walk("", Value::Mapping(std::mem::take(sysctl)), &mut out);
    *sysctl = out;
}

/// The outcome of layering: the typed config, the merged tree it came from (with every
/// dropped value removed), and every problem found on the way.
#[derive(Debug)]
pub struct Resolved {
    /// The typed config.
    pub config: CloudConfig,
    /// The merged tree, cleaned of the values that were dropped.
    pub value: Value,
    /// Every problem, in layer order, then by position.
    pub diagnostics: Vec<Diagnostic>,
}

/// What a single problem is and what to do about it.
struct Problem {
    path: KeyPath,
    severity: Severity,
    message: String,
    target: Target,
    /// What to remove: `path` or an ancestor that must go as a whole.
    drop: KeyPath,
}

/// Merge `layers` (lowest first) and type-check the result, dropping what is invalid: on
/// the drop-and-retry engine (`retry`) for what does not type, then again for what the
/// typed config's checks find (`check`: a finding that drops its value).
pub fn resolve(layers: Vec<Layer>, mode: Mode) -> Resolved {
    let mut stack = Stack {
        problems_per_layer: vec![0usize; layers.len()],
        layers,
        mode,
        diags: Vec::new(),
        merged: Value::Null,
        clean: Value::Null,
    };
    for (i, layer) in stack.layers.iter_mut().enumerate() {
        stack.diags.extend(layer.notes.drain(..).map(|d| (i, d)));
    }
    loop {
        // Each error drops something (at worst every layer's whole tree), so the engine
        // ends with a typed config; an empty tree always types.
        let config =
            retry::type_dropping::<CloudConfig>(&mut stack, usize::MAX).unwrap_or_default();
        let (drops, notes): (Vec<Finding>, Vec<Finding>) =
            check(&config).into_iter().partition(|f| f.drop);
        if drops.is_empty() {
            for f in notes {
                let path = original_path(&stack.merged, &f.path);
                let target = if f.on_key { Target::Key } else { Target::Value };
                let (i, d) = report(&stack.layers, &path, f.severity, f.message, target);
                stack.diags.push((i, d));
            }
            stack.diags.sort_by_key(|(i, d)| (*i, d.line, d.column));
            return Resolved {
                config,
                value: stack.clean,
                diagnostics: stack.diags.into_iter().map(|(_, d)| d).collect(),
            };
        }
        for f in drops {
            let path = original_path(&stack.merged, &f.path);
            stack.drop_problem(Problem {
                drop: drop_anchor(&path),
                path,
                severity: f.severity,
                message: f.message,
                target: Target::Value,
            });
        }
    }
}

/// The layers on the drop-and-retry engine: each problem is reported in the layer that set
/// the value, and dropped from the highest layer that has it.
struct Stack {
    layers: Vec<Layer>,
    mode: Mode,
    diags: Vec<(usize, Diagnostic)>,
    problems_per_layer: Vec<usize>,
    /// The last merge, and the same without its holes (what was typed).
    merged: Value,
    clean: Value,
}

impl retry::Attempts for Stack {
    fn tree(&mut self) -> Value {
        self.merged = self
            .layers
            .iter()
            .fold(Value::mapping(), |acc, l| merge(acc, l.value.clone()));
        self.clean = strip_holes(&self.merged);
        self.clean.clone()
    }

    fn drop_failed(&mut self, e: crate::yaml::TypedError) -> bool {
        let path = original_path(&self.merged, &e.path);
        self.drop_problem(classify(path, &e.message, self.mode));
        true
    }
}

impl Stack {
    /// Report `p` and drop what it is about; a layer with too many problems is dropped
    /// whole.
    fn drop_problem(&mut self, p: Problem) {
        let mut message = p.message;
        if self.mode == Mode::Boot && p.drop != p.path {
            message.push_str(&format!(" (`{}` skipped)", p.drop));
        }
        let (i, d) = report(&self.layers, &p.path, p.severity, message, p.target);
        self.diags.push((i, d));
        let removed_from = remove_from_top(&mut self.layers, &p.drop);
        let counted = removed_from.unwrap_or(i);
        if let Some(n) = self.problems_per_layer.get_mut(counted) {
            *n += 1;
            if *n == MAX_PROBLEMS_PER_LAYER {
                let layer = &mut self.layers[counted];
                layer.value = Value::mapping();
                self.diags.push((
                    counted,
                    Diagnostic {
                        file: layer.origin.clone(),
                        line: 0,
                        column: 0,
                        key_path: KeyPath::root(),
                        severity: Severity::Error,
                        message: format!(
                            "{MAX_PROBLEMS_PER_LAYER} problems; ignoring the rest of this file"
                        ),
                    },
                ));
            }
        }
    }
}

/// Remove `path` from the highest layer that has it; failing that, its nearest ancestor
/// that some layer has (so every round makes progress). Returns the layer's index.
fn remove_from_top(layers: &mut [Layer], path: &KeyPath) -> Option<usize> {
    for len in (1..=path.segments().len()).rev() {
        let p = path.truncated(len);
        for (i, layer) in layers.iter_mut().enumerate().rev() {
            if remove_exact(&mut layer.value, &p) {
                return Some(i);
            }
        }
    }
    // The root itself is wrong: nothing in any layer can be used.
    for layer in layers.iter_mut() {
        layer.value = Value::mapping();
    }
    None
}

/// A diagnostic for `path`, placed in the highest layer that has it (or its deepest
/// existing ancestor).
fn report(
    layers: &[Layer],
    path: &KeyPath,
    severity: Severity,
    message: String,
    target: Target,
) -> (usize, Diagnostic) {
    let mut best: Option<(usize, usize)> = None; // (prefix length, layer)
    for (i, layer) in layers.iter().enumerate() {
        let mut len = path.segments().len();
        while len > 0 && get_exact(&layer.value, &path.truncated(len)).is_none() {
            len -= 1;
        }
        match best {
            Some((l, _)) if len < l => {}
            _ => best = Some((len, i)),
        }
    }
    let Some((_, i)) = best else {
        let d = Diagnostic {
            file: "<config>".into(),
            line: 0,
            column: 0,
            key_path: path.clone(),
            severity,
            message,
        };
        return (0, d);
    };
    let layer = &layers[i];
    let (line, column) = layer.locate(path, target);
    let d = Diagnostic {
        file: layer.origin.clone(),
        line,
        column,
        key_path: path.clone(),
        severity,
        message,
    };
    (i, d)
}

/// Entries that are used whole or not at all: a write_files entry without its `permissions`
/// could expose a secret, a service without its `user` could run as root.
fn drop_anchor(path: &KeyPath) -> KeyPath {
    let segs = path.segments();
    let key = |i: usize, k: &str| matches!(segs.get(i), Some(Segment::Key(s)) if s == k);
    let index = |i: usize| matches!(segs.get(i), Some(Segment::Index(_)));
    for list in ["write_files", "runcmd", "bootcmd", "mounts"] {
        if key(0, list) && index(1) {
            return path.truncated(2);
        }
    }
    if key(0, "rancher") && key(1, "services") && segs.len() >= 3 {
        return path.truncated(3);
    }
    path.clone()
}

fn classify(path: KeyPath, message: &str, mode: Mode) -> Problem {
    let drop = drop_anchor(&path);
    let problem = SerdeProblem::read(message);
    if let SerdeProblem::UnknownKey { .. } = problem {
        let mut message = problem.message();
        let in_rancher = matches!(path.segments().first(), Some(Segment::Key(k)) if k == "rancher");
        let severity = if drop != path {
            // The whole entry goes, not just the key: that is an error in any mode.
            Severity::Error
        } else if in_rancher && mode == Mode::Strict {
            Severity::Error
        } else {
            Severity::Warning
        };
        if severity == Severity::Warning {
            message.push_str("; ignored");
        }
        return Problem {
            path,
            severity,
            message,
            target: Target::Key,
            drop,
        };
    }
    Problem {
        path,
        severity: Severity::Error,
        message: message.to_string(),
        target: Target::Value,
        drop,
    }
}

/// Check one file's text on its own (`ros config validate -i FILE`).
pub fn validate_text(origin: &str, text: &str, mode: Mode) -> Vec<Diagnostic> {
    match Layer::parse(origin, text) {
        Ok(layer) => resolve(vec![layer], mode).diagnostics,
        Err(d) => vec![d],
    }
}

/// Check a tree built in memory (positions are unknown).
pub fn validate_value(origin: &str, value: &Value, mode: Mode) -> Vec<Diagnostic> {
    resolve(vec![Layer::from_value(origin, value.clone())], mode).diagnostics
}

/// Which layers a load reads. The boot reads the config in stages, as the disks that
/// hold its layers are mounted: each stage is named, not a matter of what happens to be
/// mounted when it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before the state disk: the image's layers (defaults, OEM) and the kernel line, the
    /// only ones that may say where the state disk is (the user's config is on it).
    Early,
    /// Every layer: the image's, the user's config and its `cloud-config.d/` drop-ins, the
    /// kernel line.
    Full,
}

/// The config files in layer order (lowest first) under `root`: defaults, OEM, user
/// config, then `cloud-config.d/*.yml` sorted by name. Files need not exist.
pub fn layer_files(root: &Path) -> Vec<PathBuf> {
    stage_files(root, Stage::Full)
}

/// What the layer files under `root` hold (each file's bytes, or none): equal before and
/// after a step, that step changed no layer, and a config loaded before it still holds.
pub fn layer_contents(root: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    layer_files(root)
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).ok();
            (path, bytes)
        })
        .collect()
}

/// The config files `stage` reads under `root`, in layer order ([`layer_files`]).
fn stage_files(root: &Path, stage: Stage) -> Vec<PathBuf> {
    let mut files = vec![
        paths::under(root, paths::OS_CONFIG),
        paths::under(root, paths::OEM_CONFIG),
    ];
    if stage == Stage::Early {
        return files;
    }
    files.push(paths::under(root, paths::USER_CONFIG));
    let dir = paths::under(root, paths::DROP_IN_DIR);
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut drop_ins: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".yml") && !n.starts_with('.'))
            })
            .collect();
        drop_ins.sort();
        files.extend(drop_ins);
    }
    files
}

/// Everything PID 1 and `ros` need from one load.
#[derive(Debug)]
pub struct Loaded {
    /// The typed, merged config.
    pub config: CloudConfig,
    /// The merged tree (cleaned of dropped values), for `ros config get/export`.
    pub value: Value,
    /// Every problem in every layer.
    pub diagnostics: Vec<Diagnostic>,
    /// The kernel command line's own settings (`cloud-config-url=`, `rancher.password=`...).
    pub cmdline: Cmdline,
}

/// The config of the system below `root` as PID 1 loads it: every layer and the kernel
/// command line (`root/proc/cmdline`), in boot mode. The one loader `ros config`, `ros
/// service` and `ros sysconf` use. Fails only when the command line cannot be read.
pub fn load_system(root: &Path) -> io::Result<Loaded> {
    let cmdline = crate::cmdline::read_cmdline(root)?;
    Ok(load(root, cmdline.as_deref(), Mode::Boot))
}

/// Load every layer under `root` (see [`layer_files`]) plus the kernel command line text,
/// and resolve them. Never fails: unusable files are skipped and reported.
pub fn load(root: &Path, cmdline: Option<&str>, mode: Mode) -> Loaded {
    load_stage(root, cmdline, mode, Stage::Full)
}

/// [`load`], of the layers `stage` reads.
pub fn load_stage(root: &Path, cmdline: Option<&str>, mode: Mode, stage: Stage) -> Loaded {
    let mut layers = Vec::new();
    let mut read_errors = Vec::new();
    for path in stage_files(root, stage) {
        match Layer::read(&path) {
            Ok(Some(layer)) => layers.push(layer),
            Ok(None) => {}
            Err(d) => read_errors.push(d),
        }
    }
    let cmdline = cmdline.map(Cmdline::parse).unwrap_or_default();
    layers.push(cmdline.layer());
    let resolved = resolve(layers, mode);
    let mut diagnostics = read_errors;
    diagnostics.extend(cmdline.diagnostics().iter().cloned());
    diagnostics.extend(resolved.diagnostics);
    Loaded {
        config: resolved.config,
        value: resolved.value,
        diagnostics,
        cmdline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::{open_regular, SYMLINK};

    fn boot(text: &str) -> Resolved {
        resolve(vec![Layer::parse("t.yml", text).unwrap()], Mode::Boot)
    }

    fn shown(r: &Resolved) -> Vec<String> {
        r.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_early_stage_reads_the_images_layers_and_the_kernel_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |well_known: &str, text: &str| {
            let path = paths::under(dir.path(), well_known);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(
            paths::OS_CONFIG,
            "rancher:\n  state:\n    dev: LABEL=FROM_IMAGE\n",
        );
        write(paths::USER_CONFIG, "rancher:\n  state:\n    fstype: ext4\n");
        write(
            &format!("{}/zz.yml", paths::DROP_IN_DIR),
            "rancher:\n  state:\n    autoformat: [/dev/vdb]\n",
        );
        let cmdline = Some("rancher.state.required=true");
        let early = load_stage(dir.path(), cmdline, Mode::Boot, Stage::Early).config;
        let full = load_stage(dir.path(), cmdline, Mode::Boot, Stage::Full).config;
        for c in [&early, &full] {
            let dev = c.rancher.state.dev.as_ref().map(ToString::to_string);
            assert_eq!(dev.as_deref(), Some("LABEL=FROM_IMAGE"));
            assert!(c.rancher.state.required);
        }
        assert_ne!(early.rancher.state.fstype, full.rancher.state.fstype);
        // A drop-in written or removed changes what the layers hold.
        let before = layer_contents(dir.path());
        assert_eq!(before, layer_contents(dir.path()));
        write(
            &format!("{}/zz-datasource.yml", paths::DROP_IN_DIR),
            "hostname: x\n",
        );
        assert_ne!(before, layer_contents(dir.path()));
        assert!(early.rancher.state.autoformat.is_empty());
        assert_eq!(full.rancher.state.autoformat.len(), 1);
    }

    #[test]
    fn a_cmdline_only_key_in_a_file_is_ignored_with_a_warning() {
        let r = boot("rancher:\n  debug: true\n  recovery: true\n");
        assert_eq!(
            shown(&r),
            [
                "t.yml:3:3: rancher.recovery: `rancher.recovery` is read from the kernel \
              command line only (it says what a fatal boot error leads to, which can happen \
              before any file is read); ignored here"
            ]
        );
        assert_eq!(r.diagnostics[0].severity, Severity::Warning);
        assert!(r.config.rancher.debug && !r.config.rancher.recovery);
        let line = Cmdline::parse("rancher.recovery=true");
        let r = resolve(vec![line.layer()], Mode::Boot);
        assert!(
            r.diagnostics.is_empty() && r.config.rancher.recovery,
            "{:?}",
            shown(&r)
        );
    }

    #[test]
    fn normalisation_table() {
        let cases: [(&str, &str, &[&str]); 6] = [
            // (input, resulting tree, diagnostics)
            ("rancher:\n# network: {}\nhostname: a\n", "hostname: a", &[]),
            ("hostname: !foo bar\n", "hostname: bar", &["t.yml:1:1: hostname: YAML tag `!foo` ignored"]),
            (
                "rancher:\n  sysctl:\n    net:\n      ipv4: {ip_forward: 1}\n    vm.swappiness: 10\n",
                "rancher: {sysctl: {net.ipv4.ip_forward: 1, vm.swappiness: 10}}",
                &[],
            ),
            (
                "rancher:\n  services_include:\n    1: true\n    \"1\": false\n",
                "rancher: {services_include: {'1': false}}",
                &["t.yml:3:5: rancher.services_include.1: key given twice; the last one wins"],
            ),
            (
                "? [a]\n: b\nhostname: c\n",
                "hostname: c",
                &["t.yml:1:1: a key must be a string, found a sequence; entry ignored"],
            ),
            (
                "base: &b {console: alpine}\nrancher:\n  <<: *b\n  debug: true\n",
                "rancher: {debug: true, console: alpine}",
                &["t.yml:1:1: base: unknown key `base`; ignored"],
            ),
        ];
        for (text, want, diags) in cases {
            let r = boot(text);
            assert_eq!(r.value, yaml::parse_document(want).unwrap(), "{text}");
            assert_eq!(shown(&r), *diags, "{text}");
        }
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        let err = Layer::parse("t.yml", "- a\n- b\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yml:1:1: a cloud-config must be a mapping of keys, found a sequence; file skipped"
        );
        assert!(Layer::parse("t.yml", "").is_ok());
        assert!(Layer::parse("t.yml", "a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn too_many_problems_drop_the_rest_of_the_file() {
        let mut text = String::from("hostname: kept\nrancher:\n");
        for i in 0..150 {
            text.push_str(&format!("  bogus{i}: 1\n"));
        }
        let r = boot(&text);
        assert_eq!(r.diagnostics.len(), MAX_PROBLEMS_PER_LAYER + 1);
        assert!(
            r.diagnostics[0].message.contains("ignoring the rest"),
            "{}",
            r.diagnostics[0]
        );
        assert_eq!(r.config.hostname, None);
    }

    #[test]
    fn only_regular_files_in_cloud_config_d_are_read() {
        let root = tempfile::tempdir().unwrap();
        let dir = paths::under(root.path(), paths::DROP_IN_DIR);
        fs::create_dir_all(&dir).unwrap();
        let elsewhere = root.path().join("elsewhere.yml");
        fs::write(&elsewhere, "rancher: {debug: true}\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("20-link.yml")).unwrap();
        let fifo = dir.join("10-fifo.yml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        fs::create_dir(dir.join("30-dir.yml")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.join("35-socket.yml")).unwrap();
        fs::write(dir.join("40-ok.yml"), "rancher: {console: alpine}\n").unwrap();

        // On a thread, so that a blocking open fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let at = root.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load(&at, None, Mode::Boot));
        });
        let loaded = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("loading blocked on a FIFO in cloud-config.d");

        assert_eq!(loaded.config.rancher.console.as_deref(), Some("alpine"));
        assert!(!loaded.config.rancher.debug, "the symlinked file was read");
        let shown: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        let refused = |name: &str, what: &str| {
            format!(
                "{}: reading: not a regular file ({what}); file skipped",
                dir.join(name).display()
            )
        };
        assert_eq!(
            shown,
            [
                refused("10-fifo.yml", "a FIFO"),
                refused("20-link.yml", "a symbolic link, which is not followed"),
                refused("30-dir.yml", "a directory"),
                refused("35-socket.yml", "a socket"),
            ]
        );
        // A device (here /dev/null; a tty is one too) is refused without being opened.
        assert_eq!(
            Layer::read(Path::new("/dev/null")).unwrap_err().to_string(),
            "/dev/null: reading: not a regular file (a character device); file skipped"
        );
    }

    #[test]
    fn the_open_refuses_what_was_swapped_in_after_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("ok.yml");
        fs::write(&regular, "hostname: a\n").unwrap();
        let link = dir.path().join("link.yml");
        std::os::unix::fs::symlink(&regular, &link).unwrap();
        let fifo = dir.path().join("fifo.yml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());

        assert!(open_regular(&regular).is_ok());
        let cases = [
            (link, SYMLINK),
            (fifo, "a FIFO"),
            (PathBuf::from("/dev/null"), "a character device"),
        ];
        for (path, what) in cases {
            // On a thread: without O_NONBLOCK, opening the FIFO would hang the test.
            let (tx, rx) = std::sync::mpsc::channel();
            let at = path.clone();
            std::thread::spawn(move || {
                let _ = tx.send(open_regular(&at).map(|_| ()).map_err(|e| e.to_string()));
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("opening {} blocked", path.display()));
            assert_eq!(
                got,
                Err(format!("not a regular file ({what})")),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn anchors() {
        let p = |s| KeyPath::parse(s).unwrap();
        assert_eq!(
            drop_anchor(&p("write_files[2].permissions")),
            p("write_files[2]")
        );
        assert_eq!(
            drop_anchor(&p("rancher.services.ntp.user")),
            p("rancher.services.ntp")
        );
        assert_eq!(drop_anchor(&p("rancher.ssh.port")), p("rancher.ssh.port"));
        assert_eq!(drop_anchor(&p("runcmd[0][1]")), p("runcmd[0]"));
    }
}
