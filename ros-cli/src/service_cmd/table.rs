//! The `ros service ps` table, as `docker ps` and RancherOS lay it out: left-aligned
//! columns three spaces apart, the command quoted and cut to 20 characters. Pure.

use std::time::SystemTime;

use ros_control::{state_text, ServiceRow};

/// Longest COMMAND shown when truncating (Docker's width, the ellipsis included).
const COMMAND_WIDTH: usize = 20;

fn command(cmd: &str, truncate: bool) -> String {
    let count = cmd.chars().count();
    if truncate && count > COMMAND_WIDTH {
        let cut: String = cmd.chars().take(COMMAND_WIDTH - 1).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{cmd}\"")
    }
}

/// The table for `rows` (already in PID 1's order) as of `now`.
pub fn render(rows: &[ServiceRow], now: SystemTime, truncate: bool) -> String {
    let header = ["NAME", "IMAGE", "COMMAND", "STATE", "RESTARTS"].map(String::from);
    let mut table = vec![header];
    for r in rows {
        table.push([
            r.name.clone(),
            r.image.clone(),
            command(&r.command, truncate),
            state_text(r, now),
            r.restarts.to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 3;
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ros_control::ServiceState;
    use std::time::Duration;

    #[test]
    fn table_layout() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ms_ago = |s: u64| Some((1_000_000 - s) * 1000);
        let rows = [
            ServiceRow {
                name: "console".into(),
                image: "ros/console:0.1.0".into(),
                command: "/usr/libexec/ros/console-entry".into(),
                state: ServiceState::Running,
                pid: Some(10),
                exit_status: None,
                since_unix_ms: ms_ago(540),
                restarts: 0,
                oneshot: false,
            },
            ServiceRow {
                name: "udev-cold".into(),
                image: "ros/udev:1".into(),
                command: "ros udev-settle".into(),
                state: ServiceState::Exited,
                pid: None,
                exit_status: Some(0),
                since_unix_ms: ms_ago(120),
                restarts: 2,
                oneshot: true,
            },
        ];
        assert_eq!(
            render(&rows, now, true),
            "\
NAME        IMAGE               COMMAND                  STATE                      RESTARTS
console     ros/console:0.1.0   \"/usr/libexec/ros/co…\"   Up 9 minutes               0
udev-cold   ros/udev:1          \"ros udev-settle\"        Exited (0) 2 minutes ago   2
"
        );
        assert!(render(&rows, now, false).contains("\"/usr/libexec/ros/console-entry\""));
        assert_eq!(
            render(&[], now, true),
            "NAME   IMAGE   COMMAND   STATE   RESTARTS\n"
        );
    }
}
