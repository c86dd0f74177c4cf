//! Which services should run: the one catalog in `ros_config::catalog`, planned into
//! start waves there too (what `ros service list` shows is the same plan).

use std::path::Path;

use ros_config::CloudConfig;

pub use ros_config::catalog::Plan;

/// The services the catalog below `builtin` (always-on definitions) and `index` (the
/// optional ones `services_include` turns on) enables for `config`, in start order.
pub fn plan(builtin: &Path, index: &Path, config: &CloudConfig) -> Plan {
    ros_config::catalog::read(builtin, index, config).plan()
}
