//! `bootcmd`, `runcmd` and the saved `#!` user-data scripts, run through a
//! [`CommandRunner`] (in PID 1: init's, which waits through its reaper). Owns the
//! environment and the report lines; a command that fails or cannot start is reported with
//! its exit status and the next one still runs. Must not spawn or wait itself.

use std::fs;
use std::path::Path;

use ros_config::schema::{CloudConfig, CommandSpec};

use crate::host::{CommandRunner, Invocation};
use crate::paths::{self, under};
use crate::report::{Report, Step};

/// `PATH` for commands when `rancher.environment` does not set one (PID 1 gets none from
/// the kernel).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest command text shown in a report line.
const SHOWN_CHARS: usize = 60;

/// The environment added for commands: `PATH`, then `rancher.environment` (which may
/// override it).
pub fn command_env(config: &CloudConfig) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), DEFAULT_PATH.to_string())];
    env.extend(
        config
            .rancher
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string())),
    );
    env
}

fn shown(spec: &CommandSpec) -> String {
    let text = match spec {
        CommandSpec::Shell(line) => line.clone(),
        CommandSpec::Argv(argv) => argv.join(" "),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > SHOWN_CHARS {
        let cut: String = text.chars().take(SHOWN_CHARS).collect();
        format!("`{cut}...`")
    } else {
        format!("`{text}`")
    }
}

fn run_one(
    step: Step,
    invocation: &Invocation,
    subject: &str,
    runner: &dyn CommandRunner,
    report: &mut Report,
) {
    let problem = |report: &mut Report, message: String| {
        report.problem(step, subject, message);
        if let Some(line) = report.problem_lines().last() {
            runner.problem(line);
        }
    };
    if invocation.argv.first().is_none_or(String::is_empty) {
        problem(report, "empty command".into());
        return;
    }
    match runner.run(invocation) {
        Ok(exit) if exit.success() => report.done(step, subject, exit.to_string()),
        Ok(exit) => problem(
            report,
            format!("{exit} (output in {})", invocation.log.display()),
        ),
        Err(e) => problem(report, e),
    }
}

fn run_list(
    step: Step,
    commands: &[CommandSpec],
    config: &CloudConfig,
    runner: &dyn CommandRunner,
    log: &Path,
) -> Report {
    let mut report = Report::default();
    let env = command_env(config);
    for (i, spec) in commands.iter().enumerate() {
        let invocation = Invocation {
            label: format!("{step}[{i}]"),
            argv: spec.argv(),
            env: env.clone(),
            log: log.to_path_buf(),
        };
        run_one(step, &invocation, &shown(spec), runner, &mut report);
    }
    report
}

/// Run `bootcmd` in order (early in boot, before containerd). Output goes to `log`.
pub fn run_bootcmd(config: &CloudConfig, runner: &dyn CommandRunner, log: &Path) -> Report {
    run_list(Step::Bootcmd, &config.bootcmd, config, runner, log)
}

/// Run `runcmd` in order (after the system services are up). Output goes to `log`.
pub fn run_runcmd(config: &CloudConfig, runner: &dyn CommandRunner, log: &Path) -> Report {
    run_list(Step::Runcmd, &config.runcmd, config, runner, log)
}

/// Run `rancher.upgrade.health_checks` in order (in a trial boot, once every service is
/// up). Each one that fails, or cannot start, is a problem in the report; all of them run.
pub fn run_health_checks(config: &CloudConfig, runner: &dyn CommandRunner, log: &Path) -> Report {
    run_list(
        Step::HealthCheck,
        &config.rancher.upgrade.health_checks,
        config,
        runner,
        log,
    )
}

/// Run the `#!` user-data scripts that `fetch_user_data` saved under `root`, in name order
/// (that is, datasource order), each as its own program. Call once per boot, after
/// `run_runcmd`. Output goes to `log`.
pub fn run_user_scripts(
    root: &Path,
    config: &CloudConfig,
    runner: &dyn CommandRunner,
    log: &Path,
) -> Report {
    let mut report = Report::default();
    let dir = under(root, paths::SCRIPTS_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return report;
    };
    let mut scripts: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        // Temporary files of an interrupted save start with a dot.
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    scripts.sort();
    let env = command_env(config);
    for script in scripts {
        let subject = script.display().to_string();
        let invocation = Invocation {
            label: format!("script {subject}"),
            argv: vec![subject.clone()],
            env: env.clone(),
            log: log.to_path_buf(),
        };
        run_one(Step::Script, &invocation, &subject, runner, &mut report);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_commands_are_short_and_on_one_line() {
        assert_eq!(shown(&CommandSpec::Shell("echo  hi\n".into())), "`echo hi`");
        assert_eq!(
            shown(&CommandSpec::Argv(vec![
                "mkdir".into(),
                "-p".into(),
                "/x".into()
            ])),
            "`mkdir -p /x`"
        );
        let long = shown(&CommandSpec::Shell("x".repeat(100)));
        assert_eq!(long.len(), SHOWN_CHARS + 5);
    }
}
