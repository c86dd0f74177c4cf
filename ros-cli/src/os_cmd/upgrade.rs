//! `ros os upgrade`, `ros os list` and `ros os rollback` on an installed disk: the
//! two slots of `ros_os`, the signed bundle, the boot-once trial.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ros_os::bundle::{self, BundleError, Check, Meta};
use ros_os::disk::{Disk, Firmware, BOOT_DISK, STATE_FILE};
use ros_os::slots::{self, OsState, Rollback, Slot, SlotInfo, Trial, TrialPhase, Verdict};

use crate::exit::{CliError, ExitStatus};

/// Room kept free on the partition beyond the new slot's files (the state file, logs
/// written meanwhile).
const SPARE_BYTES: u64 = 16 << 20;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The word `key=VALUE` of a kernel command line.
fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    ros_config::CmdlineWords::parse(cmdline)
        .get(key)
        .map(String::from)
}

/// The running system as the slot commands see it.
pub struct Installed {
    /// Its partition.
    pub disk: Disk,
    /// The slot it booted (`None` on a disk of the single-slot layout).
    pub booted: Option<Slot>,
    /// The running release.
    pub running: String,
    /// The kernel command line it booted with.
    pub cmdline: String,
}

/// The installed disk this system runs from, or why it is not one.
pub fn installed(root: &Path, running: String) -> Result<Installed, CliError> {
    let cmdline = ros_config::read_cmdline(root)
        .ok()
        .flatten()
        .unwrap_or_default();
    if cmdline_value(&cmdline, "rootimg").is_none() {
        return Err(CliError::failure(
            "this system runs from a live medium (the image, an ISO or a network boot), not \
             an installed disk: `ros install` it to a disk first, then upgrade that",
        ));
    }
    // The disk's mount is in PID 1's mount namespace (a ROS_ROOT is a test's own tree).
    if root == Path::new("/") {
        crate::host::enter_host_mount_namespace().map_err(CliError::failure)?;
    }
    let mount = root.join(BOOT_DISK.trim_start_matches('/'));
    if !mount.join("boot").is_dir() {
        return Err(CliError::failure(format!(
            "{}: the installed disk's partition is not mounted there",
            mount.display()
        )));
    }
    Ok(Installed {
        disk: Disk::at(&mount),
        booted: cmdline_value(&cmdline, slots::SLOT_ARG)
            .as_deref()
            .and_then(Slot::parse),
        running,
        cmdline,
    })
}

fn failure(e: impl std::fmt::Display) -> CliError {
    CliError::failure(e.to_string())
}

/// The state, after turning a single-slot disk into slot A of the running release.
fn state_of(sys: &Installed) -> Result<(OsState, Slot), CliError> {
    if sys.disk.is_legacy() {
        println!("ros os: this disk has the single-slot layout: making it slot a (no data moves)");
        let state = sys
            .disk
            .migrate_legacy(&sys.running, &user_args(&sys.cmdline), now())
            .map_err(failure)?;
        return Ok((state, Slot::A));
    }
    let state = sys
        .disk
        .read_state()
        .map_err(failure)?
        .ok_or_else(|| CliError::failure(format!("no {STATE_FILE} on the installed disk")))?;
    let booted = sys.booted.unwrap_or(state.good);
    Ok((state, booted))
}

/// The kernel arguments a single-slot disk's entry had beyond `ros install`'s own.
fn user_args(cmdline: &str) -> String {
    const OURS: [&str; 8] = [
        "console",
        "quiet",
        "root",
        "rootimg",
        "panic",
        "BOOT_IMAGE",
        "initrd",
        "ros.slot",
    ];
    ros_config::cmdline_without(cmdline, &OURS)
}

fn trusted_keys(root: &Path) -> Result<Vec<bundle::TrustedKey>, CliError> {
    let dir = root.join(ros_os::TRUSTED_KEYS_DIR.trim_start_matches('/'));
    bundle::trusted_keys(&dir).map_err(failure)
}

/// A bundle from a URL, downloaded to `dest` with a progress line. https trusts `ca_pems`
/// (`rancher.upgrade.ca_certs`) when given, else the public roots.
fn download(url: &str, dest: &Path, ca_pems: &[String]) -> Result<(), CliError> {
    let fail = |e: String| CliError::failure(format!("{url}: {e}"));
    let roots = ros_cloudinit::https_roots(ca_pems, "rancher.upgrade.ca_certs")
        .map_err(|e| CliError::new(ExitStatus::InvalidConfig, e.to_string()))?;
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build()
        .new_agent();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body = response.body_mut().as_reader();
    let mut out = File::create(dest).map_err(|e| fail(format!("{}: {e}", dest.display())))?;
    let mut buf = vec![0u8; 1 << 16];
    let (mut got, mut shown, started) = (0u64, Instant::now(), Instant::now());
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| fail(format!("{}: {e}", dest.display())))?;
        got += n as u64;
        if shown.elapsed() > Duration::from_secs(2) {
            shown = Instant::now();
            match total {
                Some(t) if t > 0 => eprintln!(
                    "ros os upgrade: downloaded {} of {} MiB ({}%)",
                    got >> 20,
                    t >> 20,
                    got * 100 / t
                ),
                _ => eprintln!("ros os upgrade: downloaded {} MiB", got >> 20),
            }
        }
    }
    out.sync_all()
        .map_err(|e| fail(format!("{}: {e}", dest.display())))?;
    eprintln!(
        "ros os upgrade: downloaded {} MiB in {} s",
        got >> 20,
        started.elapsed().as_secs()
    );
    Ok(())
}

fn read_bundle(
    path: &Path,
    keys: &[bundle::TrustedKey],
    sink: &mut dyn bundle::PartSink,
) -> Result<Meta, CliError> {
    let file = File::open(path).map_err(|e| failure(format!("{}: {e}", path.display())))?;
    bundle::read(BufReader::new(file), keys, std::env::consts::ARCH, sink).map_err(|e| {
        let status = match e {
            BundleError::Io { .. } => ExitStatus::Failure,
            _ => ExitStatus::InvalidConfig,
        };
        CliError::new(
            status,
            format!("{}: {e}; nothing was changed", path.display()),
        )
    })
}

/// `ros os upgrade -i SOURCE`.
pub fn upgrade(root: &Path, running: String, source: &str, force: bool) -> Result<bool, CliError> {
    let sys = installed(root, running)?;
    let keys = trusted_keys(root)?;
    // A URL is downloaded onto the partition (not RAM), and checked from there.
    let downloaded = sys.disk.path(ros_os::disk::DOWNLOAD);
    let path: PathBuf = if source.starts_with("http://") || source.starts_with("https://") {
        let config = crate::sysconf_cmd::load(root)?;
        let ca_pems: Vec<String> = config
            .rancher
            .upgrade
            .ca_certs
            .iter()
            .map(|c| c.to_string())
            .collect();
        if let Err(e) = download(source, &downloaded, &ca_pems) {
            let _ = std::fs::remove_file(&downloaded);
            return Err(e);
        }
        downloaded.clone()
    } else {
        PathBuf::from(source)
    };
    let result = upgrade_from(&sys, &keys, &path, force);
    let _ = std::fs::remove_file(&downloaded);
    result
}

fn upgrade_from(
    sys: &Installed,
    keys: &[bundle::TrustedKey],
    path: &Path,
    force: bool,
) -> Result<bool, CliError> {
    // All of it checked before anything is written.
    let meta = read_bundle(path, keys, &mut Check)?;
    println!(
        "ros os upgrade: {} is {} for {}, signed by key {}",
        path.display(),
        meta.version,
        meta.arch,
        meta.key
    );
    let (mut state, booted) = state_of(sys)?;
    let target = slots::upgrade_target(&state, booted, &sys.running, &meta.version, force)
        .map_err(|e| CliError::failure(format!("ros os upgrade: {e}; nothing was changed")))?;
    let needed: u64 = meta.parts.iter().map(|p| p.size).sum::<u64>() + SPARE_BYTES;
    let room = sys.disk.free_bytes().map_err(failure)? + sys.disk.slot_bytes(target);
    if room < needed {
        return Err(CliError::failure(format!(
            "ros os upgrade: slot {target} needs {} MiB, and the partition has {} MiB for it; \
             nothing was changed",
            needed >> 20,
            room >> 20
        )));
    }
    println!("ros os upgrade: writing {} to slot {target}", meta.version);
    let mut writer = sys.disk.slot_writer(target).map_err(failure)?;
    match read_bundle(path, keys, &mut writer) {
        Ok(again) if again == meta => writer.finish().map_err(failure)?,
        Ok(_) => {
            writer.discard();
            return Err(CliError::failure(format!(
                "{}: changed while it was being written; nothing was changed",
                path.display()
            )));
        }
        Err(e) => {
            writer.discard();
            return Err(e);
        }
    }
    // The slot is written and durable; now the state, then the boot-once.
    state.slots.insert(
        target,
        SlotInfo {
            version: meta.version.clone(),
            written_at: now(),
            booted_healthy: false,
        },
    );
    state.trial = Some(Trial {
        slot: target,
        version: meta.version.clone(),
        phase: TrialPhase::Arming,
        failure: None,
    });
    sys.disk.commit(&state).map_err(failure)?;
    if let Err(e) = sys.disk.arm(target, Firmware::current()) {
        state.trial = None;
        let _ = sys.disk.commit(&state);
        return Err(CliError::failure(format!(
            "ros os upgrade: arming slot {target}: {e}; the next boot is still {}",
            state.good
        )));
    }
    if let Some(t) = state.trial.as_mut() {
        t.phase = TrialPhase::Armed;
    }
    sys.disk.write_state(&state).map_err(failure)?;
    sys.disk.settle().map_err(failure)?;
    println!(
        "ros os upgrade: {} in slot {target} is armed for one trial boot; it becomes the \
         default only if that boot passes its health check, else slot {} ({}) boots again",
        meta.version, state.good, sys.running
    );
    Ok(true)
}

/// What `ros os list` shows, as JSON too.
#[derive(Debug, serde::Serialize)]
struct Listing {
    slots: Vec<SlotLine>,
    running: Option<Slot>,
    next_boot: Slot,
    good: Slot,
    last: Option<slots::Outcome>,
}

#[derive(Debug, serde::Serialize)]
struct SlotLine {
    slot: Slot,
    version: Option<String>,
    running: bool,
    next_boot: bool,
    known_good: bool,
    booted_healthy: bool,
}

/// `ros os list`.
pub fn list(
    root: &Path,
    running: String,
    json: bool,
    acknowledge: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let sys = installed(root, running)?;
    let (mut state, booted) = if sys.disk.is_legacy() {
        let mut s = OsState::installed(&sys.running, "", 0);
        if let Some(a) = s.slots.get_mut(&Slot::A) {
            a.booted_healthy = true;
        }
        (s, Slot::A)
    } else {
        state_of(&sys)?
    };
    let armed = sys
        .disk
        .boot_once(Firmware::current())
        .and_then(|l| Slot::from_label(&l));
    let next = armed.unwrap_or(state.good);
    let listing = Listing {
        slots: [Slot::A, Slot::B]
            .into_iter()
            .map(|slot| SlotLine {
                slot,
                version: state.slots.get(&slot).map(|i| i.version.clone()),
                running: booted == slot,
                next_boot: next == slot,
                known_good: state.good == slot,
                booted_healthy: state.slots.get(&slot).is_some_and(|i| i.booted_healthy),
            })
            .collect(),
        running: Some(booted),
        next_boot: next,
        good: state.good,
        last: state.last.clone(),
    };
    let written = if json {
        let text = serde_json::to_string_pretty(&listing).map_err(|e| failure(e.to_string()))?;
        writeln!(out, "{text}")
    } else {
        table(&listing, out)
    };
    match written {
        // A reader that stopped early (`| grep -q`, `| head`) is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.map_err(|e| failure(format!("writing to standard output: {e}")))?,
    }
    if acknowledge {
        if let Some(last) = state.last.as_mut().filter(|l| !l.acknowledged) {
            last.acknowledged = true;
            sys.disk.write_state(&state).map_err(failure)?;
            if !json {
                let _ = writeln!(out, "(acknowledged: the console no longer warns of it)");
            }
        }
    }
    Ok(())
}

fn table(l: &Listing, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "SLOT  VERSION                       RUNNING  NEXT-BOOT  KNOWN-GOOD  HEALTHY"
    )?;
    let mark = |b: bool| if b { "*" } else { "" };
    for s in &l.slots {
        writeln!(
            out,
            "{:<5} {:<29} {:<8} {:<10} {:<11} {}",
            s.slot.name(),
            s.version.as_deref().unwrap_or("(empty)"),
            mark(s.running),
            mark(s.next_boot),
            mark(s.known_good),
            if s.version.is_none() {
                ""
            } else if s.booted_healthy {
                "yes"
            } else {
                "not yet"
            }
        )?;
    }
    match &l.last {
        None => writeln!(out, "last upgrade: none"),
        Some(o) => match o.result {
            Verdict::Committed => {
                writeln!(
                    out,
                    "last upgrade: {} (slot {}): committed",
                    o.version, o.slot
                )
            }
            Verdict::RolledBack => writeln!(
                out,
                "last upgrade: {} (slot {}): rolled back: {}",
                o.version,
                o.slot,
                o.reason.as_deref().unwrap_or("reason not recorded")
            ),
        },
    }
}

/// `ros os rollback`.
pub fn rollback(root: &Path, running: String) -> Result<(), CliError> {
    let sys = installed(root, running)?;
    let (state, _) = state_of(&sys)?;
    match slots::rollback(&state).map_err(|e| CliError::failure(format!("ros os rollback: {e}")))? {
        Rollback::CancelTrial(next) => {
            sys.disk.disarm().map_err(failure)?;
            sys.disk.commit(&next).map_err(failure)?;
            println!(
                "ros os rollback: the armed upgrade is cancelled; the next boot is slot {} \
                 again",
                next.good
            );
        }
        Rollback::Switch(next) => {
            sys.disk.commit(&next).map_err(failure)?;
            println!(
                "ros os rollback: slot {} ({}) boots next, and from then on",
                next.good,
                next.slots
                    .get(&next.good)
                    .map_or("?", |i| i.version.as_str())
            );
        }
    }
    Ok(())
}

/// ` (slot X)` for `ros os version` on an installed disk of two slots.
pub fn running_slot(root: &Path) -> Option<Slot> {
    let cmdline = ros_config::read_cmdline(root).ok()??;
    cmdline_value(&cmdline, slots::SLOT_ARG)
        .as_deref()
        .and_then(Slot::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_lines_words_are_found_and_user_args_kept() {
        let line = "console=ttyS0 quiet root=LABEL=RANCHER_STATE rootimg=/boot/root.img \
                    rancher.autologin=ttyS0 panic=10 ros.slot=b";
        assert_eq!(
            cmdline_value(line, "rootimg").as_deref(),
            Some("/boot/root.img")
        );
        assert_eq!(cmdline_value(line, "ros.slot").as_deref(), Some("b"));
        assert_eq!(
            cmdline_value(line, "root").as_deref(),
            Some("LABEL=RANCHER_STATE")
        );
        assert_eq!(cmdline_value("rootimgx=1", "rootimg"), None);
        assert_eq!(user_args(line), "rancher.autologin=ttyS0");
        // A quoted value is one word, kept as written, whatever it holds.
        let quoted =
            "root=LABEL=X rancher.environment=\"A=1 root=2\"  quiet \"rancher.ssh.port=22\"";
        assert_eq!(
            user_args(quoted),
            "rancher.environment=\"A=1 root=2\" \"rancher.ssh.port=22\""
        );
    }
}
