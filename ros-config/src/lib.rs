//! Pure configuration for rOS: service definitions and cloud-config.
//!
//! Owns parsing, layering, validation and dotted get/set. Must not depend on nix, tokio or
//! tonic, nor call libc (its constants name the flags of the no-follow, non-blocking open
//! of config files, which std does not): everything here is testable without root. `serde_yaml` is called only
//! by the `yaml` module, and the config tree is our own [`Value`], so that replacing the
//! YAML crate touches that one module.
//!
//! PID 1 calls [`load`] with [`Mode::Boot`]: every layer plus the kernel command line,
//! never failing; bad files or keys are dropped and reported as [`Diagnostic`]s. `ros config`
//! uses [`get`], [`set`], [`merge`], [`export()`], [`validate_text`] and [`write_atomic`].

mod atomic;
pub mod capability;
pub mod catalog;
mod check;
mod cmdline;
mod diagnostic;
mod edit;
mod export;
pub mod fields;
mod file;
pub mod graph;
mod keypath;
pub mod paths;
mod resolve;
mod retry;
pub mod schema;
pub mod service;
mod suggest;
mod text;
mod tree;
mod user_config;
mod userdata;
mod value;
mod yaml;

pub use atomic::{write_atomic, AtomicWriteError, SECRET_MODE};
pub use cmdline::{
    cmdline_without, cmdline_words, read_cmdline, redacted_cmdline, Cmdline, CmdlineWords,
    MAX_CMDLINE_BYTES,
};
pub use diagnostic::{Diagnostic, Severity};
pub use edit::set;
pub use export::export;
pub use file::MAX_FILE_BYTES;
pub use graph::{start_order, stop_order, Graph, GraphError};
pub use keypath::{KeyPath, KeyPathError, Segment};
pub use resolve::{
    layer_contents, layer_files, load, load_stage, load_system, resolve, validate_text,
    validate_value, Layer, Loaded, Mode, Resolved, Stage,
};
pub use schema::CloudConfig;
pub use service::{check_service_file, check_service_path, ServiceFile, ServiceSpec};
pub use tree::{get, merge, SetError};
pub use user_config::{UserConfig, UserConfigError, Written};
pub use userdata::{parse_user_data, UserData, UserDataError};
pub use value::{Mapping, Number, Tagged, Value};
pub use yaml::{scalar_text, to_yaml, ToYamlError, MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_NODES};
