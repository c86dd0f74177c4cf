//! The user's cloud-config file (`/var/lib/rancher/conf/cloud-config.yml`) as `ros` edits
//! it: one editor for `ros config set/merge` and `ros service enable/disable`. It reads
//! the file as PID 1 does (no symbolic link, a size limit), refuses to rewrite a file it
//! cannot read as YAML (that would lose it), changes the tree, and writes it back
//! atomically, mode 0600 for a new file, the `#cloud-config` header kept. An operation:
//! it sits above the layers and the checks.

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use crate::atomic::{write_atomic, AtomicWriteError, SECRET_MODE};
use crate::diagnostic::Diagnostic;
use crate::edit::{introduced_errors, set};
use crate::file::{open_config_file, MAX_FILE_BYTES};
use crate::keypath::{KeyPath, KeyPathError, Segment};
use crate::paths;
use crate::resolve::Layer;
use crate::tree::{remove_exact, SetError};
use crate::value::Value;
use crate::yaml::{to_yaml, ToYamlError};

/// Mode of the directory made for a new user config (RancherOS's `/var/lib/rancher/conf`;
/// the file is 0600).
const CONF_DIR_MODE: u32 = 0o755;

/// Why the user config cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UserConfigError {
    /// It could not be read.
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It is not UTF-8 text.
    #[error("{}: not UTF-8 text (byte {valid_up_to}); nothing written", .path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// It is not YAML a cloud-config can be (rewriting it would lose it).
    #[error(
        "{} is not a usable cloud-config and was not changed; fix or remove it first:\n  {}: {diagnostic}",
        .path.display(),
        .diagnostic.severity
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        diagnostic: Diagnostic,
    },
    /// The new tree could not be written as YAML.
    #[error("{}: {source}", .path.display())]
    Serialize {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ToYamlError,
    },
    /// Its directory could not be made.
    #[error("creating {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It could not be replaced.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

impl UserConfigError {
    /// Whether the file's content is at fault (not UTF-8, not YAML), rather than the system.
    pub fn is_invalid_config(&self) -> bool {
        matches!(
            self,
            UserConfigError::NotUtf8 { .. } | UserConfigError::Unusable { .. }
        )
    }
}

/// What [`UserConfig::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Nothing changed: the file was left as it was.
    Unchanged,
    /// The file was replaced; `comments_dropped` when it had comments (other than the
    /// header), which a rewrite does not keep.
    Replaced {
        /// The old file had comments.
        comments_dropped: bool,
    },
}

/// The user config, read for an edit.
#[derive(Debug)]
pub struct UserConfig {
    path: PathBuf,
    /// The file's text; `None` when it does not exist yet.
    text: Option<String>,
    /// Its tree as read (an empty mapping for a missing or empty file).
    read: Value,
    /// Its tree with the edits made so far.
    value: Value,
}

impl UserConfig {
    /// Read the user config below `root`. A missing file is an empty config.
    pub fn read(root: &Path) -> Result<UserConfig, UserConfigError> {
        let path = paths::under(root, paths::USER_CONFIG);
        let read_err = |source| UserConfigError::Read {
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        match open_config_file(&path) {
            Ok(file) => {
                let limit = u64::try_from(MAX_FILE_BYTES + 1).unwrap_or(u64::MAX);
                file.take(limit).read_to_end(&mut bytes).map_err(read_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = Value::mapping();
                return Ok(UserConfig {
                    path,
                    text: None,
                    read: empty.clone(),
                    value: empty,
                });
            }
            Err(e) => return Err(read_err(e)),
        }
        let text = String::from_utf8(bytes).map_err(|e| UserConfigError::NotUtf8 {
            path: path.clone(),
            valid_up_to: e.utf8_error().valid_up_to(),
        })?;
        let layer = Layer::parse(path.display().to_string(), &text).map_err(|diagnostic| {
            UserConfigError::Unusable {
                path: path.clone(),
                diagnostic,
            }
        })?;
        let value = layer.value();
        Ok(UserConfig {
            path,
            text: Some(text),
            read: value.clone(),
            value,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its tree with the edits made so far.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Set a dotted key ([`crate::set`]: refused when the result has errors it did not
    /// have before).
    pub fn set(&mut self, key: &str, value_text: &str) -> Result<(), SetError> {
        set(&mut self.value, key, value_text).map_err(|e| match e {
            SetError::Invalid { key, diagnostics } => SetError::Invalid {
                key,
                diagnostics: self.in_file(diagnostics),
            },
            other => other,
        })
    }

    /// Diagnostics of a tree checked in memory name this file.
    fn in_file(&self, diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
        let file = self.path.display().to_string();
        diagnostics
            .into_iter()
            .map(|d| Diagnostic {
                file: file.clone(),
                ..d
            })
            .collect()
    }

    /// Merge `incoming` over the tree (maps merged, lists replaced). Refused, with the
    /// errors, when the result has errors the tree did not have: the input may be valid
    /// on its own and not with what the file already says.
    pub fn merge(&mut self, incoming: Value) -> Result<(), Vec<Diagnostic>> {
        let merged = crate::tree::merge(self.value.clone(), incoming);
        let introduced = introduced_errors(&self.value, &merged);
        if !introduced.is_empty() {
            return Err(self.in_file(introduced));
        }
        self.value = merged;
        Ok(())
    }

    /// Remove a dotted key, and the mappings it leaves empty; false when it was not set.
    pub fn remove(&mut self, key: &str) -> Result<bool, KeyPathError> {
        let path = KeyPath::parse(key)?;
        if !remove_exact(&mut self.value, &path) {
            return Ok(false);
        }
        // Parents left empty go too (`services_include: {}` says nothing).
        let segments = path.segments();
        for depth in (1..segments.len()).rev() {
            let parent = KeyPath::from_segments(segments[..depth].to_vec());
            let empty = matches!(
                crate::tree::get_exact(&self.value, &parent),
                Some(Value::Mapping(m)) if m.is_empty()
            );
            if !empty || !matches!(segments[depth - 1], Segment::Key(_)) {
                break;
            }
            remove_exact(&mut self.value, &parent);
        }
        Ok(true)
    }

    /// Replace the file with the edited tree (atomically; a new file gets mode 0600, an
    /// existing one keeps its mode; the `#cloud-config` header is kept). Nothing is
    /// written when nothing changed.
    pub fn write(&self) -> Result<Written, UserConfigError> {
        if self.text.is_some() && self.value == self.read {
            return Ok(Written::Unchanged);
        }
        let original = self.text.as_deref().unwrap_or_default();
        let mut text = to_yaml(&self.value).map_err(|source| UserConfigError::Serialize {
            path: self.path.clone(),
            source,
        })?;
        if has_cloud_config_header(original) {
            text.insert_str(0, "#cloud-config\n");
        }
        if let Some(dir) = self.path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(CONF_DIR_MODE)
                .create(dir)
                .map_err(|source| UserConfigError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        write_atomic(&self.path, text.as_bytes(), SECRET_MODE)?;
        Ok(Written::Replaced {
            comments_dropped: has_comments(original),
        })
    }
}

/// cloud-init reads a user-data file as cloud-config only with this first line; keep it.
fn has_cloud_config_header(text: &str) -> bool {
    text.lines().next().map(str::trim_end) == Some("#cloud-config")
}

/// Comment lines other than the `#cloud-config` header (which is kept).
fn has_comments(text: &str) -> bool {
    text.lines()
        .skip(usize::from(has_cloud_config_header(text)))
        .any(|l| l.trim_start().starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn root_with(text: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = text {
            let path = paths::under(dir.path(), paths::USER_CONFIG);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
        }
        dir
    }

    fn file(root: &Path) -> String {
        fs::read_to_string(paths::under(root, paths::USER_CONFIG)).unwrap()
    }

    #[test]
    fn a_new_file_is_0600_and_an_unchanged_one_is_not_rewritten() {
        let root = root_with(None);
        let mut user = UserConfig::read(root.path()).unwrap();
        user.set("rancher.ssh.port", "2222").unwrap();
        assert_eq!(
            user.write().unwrap(),
            Written::Replaced {
                comments_dropped: false
            }
        );
        let path = paths::under(root.path(), paths::USER_CONFIG);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(file(root.path()), "rancher:\n  ssh:\n    port: 2222\n");
        let user = UserConfig::read(root.path()).unwrap();
        assert_eq!(user.write().unwrap(), Written::Unchanged);
    }

    #[test]
    fn the_header_is_kept_and_dropped_comments_are_said() {
        let root = root_with(Some("#cloud-config\n# mine\nhostname: a\n"));
        let mut user = UserConfig::read(root.path()).unwrap();
        user.set("hostname", "b").unwrap();
        assert_eq!(
            user.write().unwrap(),
            Written::Replaced {
                comments_dropped: true
            }
        );
        assert_eq!(file(root.path()), "#cloud-config\nhostname: b\n");
    }

    #[test]
    fn a_file_that_is_not_yaml_or_not_text_is_refused_and_kept() {
        let root = root_with(Some("hostname: [unclosed\n"));
        let e = UserConfig::read(root.path()).unwrap_err();
        assert!(e.is_invalid_config(), "{e}");
        assert!(e.to_string().contains("not a usable cloud-config"), "{e}");
        let root = root_with(Some("hostname: \u{0}\u{fffd}"));
        let path = paths::under(root.path(), paths::USER_CONFIG);
        fs::write(&path, b"hostname: \xff\n").unwrap();
        let e = UserConfig::read(root.path()).unwrap_err();
        assert!(e.to_string().contains("not UTF-8 text (byte 10)"), "{e}");
    }

    #[test]
    fn a_merge_refuses_only_the_errors_it_would_add() {
        // The file already has an error (a bad port); merging something valid is allowed.
        let root = root_with(Some("rancher:\n  ssh:\n    port: twenty\n"));
        let mut user = UserConfig::read(root.path()).unwrap();
        let ok = Layer::parse("in", "hostname: x\n").unwrap().value();
        user.merge(ok).unwrap();
        let bad = Layer::parse("in", "rancher:\n  shutdown_timeout: nope\n")
            .unwrap()
            .value();
        let refused = user.merge(bad).unwrap_err();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].to_string().contains("shutdown_timeout"),
            "{}",
            refused[0]
        );
    }

    #[test]
    fn a_removed_key_takes_the_mappings_it_empties_with_it() {
        let root = root_with(Some(
            "rancher:\n  services_include:\n    a: true\n  debug: true\n",
        ));
        let mut user = UserConfig::read(root.path()).unwrap();
        assert!(user.remove("rancher.services_include.a").unwrap());
        assert!(!user.remove("rancher.services_include.a").unwrap());
        user.write().unwrap();
        assert_eq!(file(root.path()), "rancher:\n  debug: true\n");
    }
}
