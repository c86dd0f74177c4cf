//! What a cloud-init run did and what went wrong, one line per item, for the console.
//! Owns the line format `cloud-init: <step> <subject>: <message>`; must not print anything
//! itself (the caller logs the lines where it handles them).

use std::fmt;

/// The step an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Fetching user-data from a datasource.
    Datasource,
    /// `hostname`.
    Hostname,
    /// `rancher.modules`.
    Modules,
    /// `rancher.sysctl`.
    Sysctl,
    /// `write_files`.
    WriteFiles,
    /// `ssh_authorized_keys`.
    SshAuthorizedKeys,
    /// `mounts`.
    Mounts,
    /// `bootcmd`.
    Bootcmd,
    /// `runcmd`.
    Runcmd,
    /// Saved `#!` user-data scripts.
    Script,
    /// `rancher.upgrade.health_checks`, in a trial boot.
    HealthCheck,
}

impl Step {
    /// The step's name as it appears on the console (the cloud-config key where there is one).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Datasource => "datasource",
            Step::Hostname => "hostname",
            Step::Modules => "modules",
            Step::Sysctl => "sysctl",
            Step::WriteFiles => "write_files",
            Step::SshAuthorizedKeys => "ssh_authorized_keys",
            Step::Mounts => "mounts",
            Step::Bootcmd => "bootcmd",
            Step::Runcmd => "runcmd",
            Step::Script => "script",
            Step::HealthCheck => "health_checks",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing done, or one problem: `cloud-init: <step> <subject>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Which step.
    pub step: Step,
    /// What it was about: a datasource, a path, a sysctl key, a module, `runcmd[2]`.
    pub subject: String,
    /// What happened.
    pub message: String,
}

impl Item {
    /// An item.
    pub fn new(step: Step, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Item {
            step,
            subject: subject.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cloud-init: {} {}: {}",
            self.step, self.subject, self.message
        )
    }
}

/// Everything one call did: what was applied and every problem, in order. A problem in one
/// step or item never stops the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was applied (for the debug log).
    pub applied: Vec<Item>,
    /// What failed (for the console: print every line).
    pub problems: Vec<Item>,
}

impl Report {
    /// Whether nothing failed.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Record something done.
    pub fn done(&mut self, step: Step, subject: impl Into<String>, message: impl Into<String>) {
        self.applied.push(Item::new(step, subject, message));
    }

    /// Record a problem.
    pub fn problem(&mut self, step: Step, subject: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Item::new(step, subject, message));
    }

    /// Append another report's items.
    pub fn extend(&mut self, other: Report) {
        self.applied.extend(other.applied);
        self.problems.extend(other.problems);
    }

    /// The problems as console lines.
    pub fn problem_lines(&self) -> Vec<String> {
        self.problems.iter().map(ToString::to_string).collect()
    }

    /// The applied items as log lines.
    pub fn applied_lines(&self) -> Vec<String> {
        self.applied.iter().map(ToString::to_string).collect()
    }

    /// Problems of one step (for tests and summaries).
    pub fn problems_of(&self, step: Step) -> Vec<&Item> {
        self.problems.iter().filter(|p| p.step == step).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let mut r = Report::default();
        r.problem(
            Step::Sysctl,
            "net.ipv4.ip_forward",
            "writing /proc/sys/net/ipv4/ip_forward: Permission denied",
        );
        assert_eq!(
            r.problem_lines(),
            ["cloud-init: sysctl net.ipv4.ip_forward: writing /proc/sys/net/ipv4/ip_forward: Permission denied"]
        );
        assert!(!r.is_ok());
    }
}
