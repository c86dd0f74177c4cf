//! QEMU boot-test harness: boots the built image, reads the serial console, types
//! commands into it. Waits are for console text with deadlines, never sleeps; on
//! timeout the panic message carries the last console lines.
//!
//! The image comes from `ROS_IMAGE_DIR` (set by `make boot-test`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Shell expression for the system containerd's PID (the user Docker engine runs a
/// containerd of its own): the one started with the system config.
pub const SYSTEM_CONTAINERD_PID: &str =
    "$(for p in $(pidof containerd); do grep -q /run/system-containerd/ /proc/$p/cmdline && echo $p; done)";

/// Create a blank qcow2 disk of `size` (qemu-img syntax, e.g. `1G`) at `path`.
pub fn blank_qcow2(path: &std::path::Path, size: &str) {
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .status()
        .expect("running qemu-img (make deps installs it)")
        .success();
    assert!(ok, "qemu-img create {} failed", path.display());
}

/// QEMU arguments for UEFI firmware: Debian's OVMF (no Secure Boot), its variables in a
/// copy of their own in `dir`.
pub fn uefi_args(dir: &std::path::Path) -> Vec<String> {
    let vars = dir.join("ovmf-vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
        .expect("OVMF's variables (make deps installs ovmf)");
    vec![
        "-drive".to_string(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".to_string(),
        "-drive".to_string(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

/// The system services that run for as long as the machine does.
pub const SYSTEM_SERVICES: [&str; 6] = ["udev", "syslog", "network", "ntp", "acpid", "console"];

/// Options for one boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Extra kernel command line words.
    pub append: String,
    /// Guest memory in MiB.
    pub mem_mb: u32,
    /// Replace the root device argument (default `root=/dev/vda2`, the image's root
    /// partition).
    pub root_arg: String,
    /// Extra QEMU arguments (disks, NICs).
    pub qemu_args: Vec<String>,
    /// Boot from this disk (qcow2) alone, through its bootloader: no `-kernel`, no
    /// `-initrd`, no image drive; `append` and `root_arg` are not used.
    pub boot_disk: Option<PathBuf>,
    /// Boot the image (`ros.img`, read-only) through its own bootloader, as a machine
    /// would: SeaBIOS, syslinux, the kernel line it holds; `append` and `root_arg` are
    /// not used.
    pub bios: bool,
    /// Give the guest a hardware RNG (the CPU's RDRAND, as `make run` does).
    pub rng: bool,
    /// A root shell on ttyS0 without a password (`rancher.autologin=ttyS0`, as `make run`
    /// and the image's own boot entry have it) when the kernel is passed directly. An
    /// installed disk (`boot_disk`) asks for a login: see [`Vm::login_as_root`].
    pub autologin: bool,
    /// With the kernel passed directly: attach the image on this disk controller instead
    /// of virtio-blk (see [`controller_args`]).
    pub controller: Option<&'static str>,
    /// Boot through the machine's firmware from what `qemu_args` attach (an ISO, the
    /// network): no `-kernel`, no `-initrd`, no image drive.
    pub firmware: bool,
    /// The user network's options (`-netdev user,id=n0,...`): `tftp=`, `bootfile=` for PXE.
    pub netdev: String,
    /// The network card's QEMU device.
    pub nic: &'static str,
    /// A reset boots again in the same QEMU, as a machine does (a watchdog's reset, with
    /// what the chip remembers of it). Otherwise QEMU exits (`-no-reboot`), and a reboot is
    /// the test's next [`Vm::boot`].
    pub reboots: bool,
}

/// QEMU arguments that attach the drive `d0` on `controller`: `ide` (PIIX, QEMU's `pc`),
/// `ahci` (SATA), `nvme`, `virtio-scsi`, `pvscsi` (VMware's).
pub fn controller_args(controller: &str) -> Vec<String> {
    let args: &[&str] = match controller {
        "ide" => &["-device", "ide-hd,drive=d0,bus=ide.0"],
        "ahci" => &[
            "-device",
            "ahci,id=a0",
            "-device",
            "ide-hd,drive=d0,bus=a0.0",
        ],
        "nvme" => &["-device", "nvme,serial=ros0,drive=d0"],
        "virtio-scsi" => &[
            "-device",
            "virtio-scsi-pci,id=s0",
            "-device",
            "scsi-hd,drive=d0,bus=s0.0",
        ],
        "pvscsi" => &[
            "-device",
            "pvscsi,id=p0",
            "-device",
            "scsi-hd,drive=d0,bus=p0.0",
        ],
        other => panic!("no such controller in the tests: {other}"),
    };
    args.iter().map(|a| a.to_string()).collect()
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            append: String::new(),
            mem_mb: 512,
            root_arg: "root=/dev/vda2".into(),
            qemu_args: Vec::new(),
            boot_disk: None,
            bios: false,
            rng: true,
            autologin: true,
            controller: None,
            firmware: false,
            netdev: "user,id=n0".into(),
            nic: "virtio-net-pci",
            reboots: false,
        }
    }
}

/// The built image's directory.
pub fn image_dir() -> PathBuf {
    let dir = std::env::var_os("ROS_IMAGE_DIR")
        .map(PathBuf::from)
        .expect("ROS_IMAGE_DIR is not set: run the boot tests with `make boot-test`");
    for f in ["ros.img", "vmlinuz", "initrd"] {
        assert!(
            dir.join(f).exists(),
            "{} is missing: run `make image`",
            dir.join(f).display()
        );
    }
    dir
}

#[derive(Default)]
struct Console {
    text: Mutex<String>,
    changed: Condvar,
}

/// The machine every test boots, and every bench (`bench/vm.py`'s `qemu_base`, which a
/// test compares with this): QEMU under TCG, two CPUs, `mem_mb` MiB, the serial console
/// on stdio, no reboot (QEMU exits), and a hardware RNG (RDRAND). [`BootOptions`] may drop
/// the last two.
pub fn qemu_base_args(mem_mb: u32) -> Vec<String> {
    [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-smp",
        "2",
        "-m",
        &mem_mb.to_string(),
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-cpu",
        "qemu64,+rdrand",
    ]
    .map(String::from)
    .to_vec()
}

/// A running QEMU guest.
pub struct Vm {
    pid: u32,
    stdin: ChildStdin,
    console: Arc<Console>,
    cursor: usize,
    exit_rx: mpsc::Receiver<ExitStatus>,
    exited: Option<ExitStatus>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Vm {
    /// Boot the image with `opts`.
    pub fn boot(opts: &BootOptions) -> Vm {
        let base = qemu_base_args(opts.mem_mb);
        let mut qemu = Command::new(&base[0]);
        let mut rest = base[1..].iter().map(String::as_str);
        while let Some(arg) = rest.next() {
            match arg {
                "-no-reboot" if opts.reboots => {}
                "-cpu" if !opts.rng => {
                    rest.next();
                }
                _ => {
                    qemu.arg(arg);
                }
            }
        }
        qemu.arg("-netdev")
            .arg(&opts.netdev)
            .arg("-device")
            .arg(format!("{},netdev=n0", opts.nic));
        match &opts.boot_disk {
            Some(disk) => {
                qemu.arg("-drive")
                    .arg(format!("file={},if=virtio,format=qcow2", disk.display()));
            }
            None if opts.firmware => {}
            None if opts.bios => {
                qemu.arg("-drive").arg(format!(
                    "file={},if=virtio,format=raw,readonly=on",
                    image_dir().join("ros.img").display()
                ));
            }
            None => {
                let dir = image_dir();
                // loglevel=5 rather than quiet: warnings (and the call traces of a
                // guest soft lockup or oops) reach the console log a failing test
                // prints; a normal boot adds a handful of early kernel lines.
                let append = format!(
                    "console=ttyS0 loglevel=5 panic=-1 {} {} {}",
                    opts.root_arg,
                    if opts.autologin {
                        "rancher.autologin=ttyS0"
                    } else {
                        ""
                    },
                    opts.append
                );
                qemu.arg("-kernel")
                    .arg(dir.join("vmlinuz"))
                    .arg("-initrd")
                    .arg(dir.join("initrd"))
                    .args(["-append", &append]);
                let image = dir.join("ros.img");
                match opts.controller {
                    None => qemu.arg("-drive").arg(format!(
                        "file={},if=virtio,format=raw,readonly=on",
                        image.display()
                    )),
                    // IDE and AHCI disks refuse readonly=on: a throwaway overlay instead.
                    Some(c) => qemu
                        .arg("-drive")
                        .arg(format!(
                            "if=none,id=d0,file={},format=raw,snapshot=on",
                            image.display()
                        ))
                        .args(controller_args(c)),
                };
            }
        }
        let mut child = qemu
            .args(&opts.qemu_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting qemu-system-x86_64 (make deps installs it)");
        let stdin = child.stdin.take().expect("qemu stdin");
        let mut stdout = child.stdout.take().expect("qemu stdout");
        let console = Arc::new(Console::default());
        let c2 = console.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Bytes of a UTF-8 character split across two reads wait for the rest.
            let mut pending: Vec<u8> = Vec::new();
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        let complete = match std::str::from_utf8(&pending) {
                            Ok(_) => pending.len(),
                            Err(e) if e.error_len().is_none() => e.valid_up_to(),
                            Err(_) => pending.len(),
                        };
                        let rest = pending.split_off(complete);
                        let chunk = String::from_utf8_lossy(&pending).replace('\r', "");
                        pending = rest;
                        let mut t = c2.text.lock().unwrap();
                        t.push_str(&chunk);
                        c2.changed.notify_all();
                    }
                }
            }
            c2.changed.notify_all();
        });
        let pid = child.id();
        let (tx, exit_rx) = mpsc::channel();
        // The child is waited for on its own thread so that waits can time out.
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Vm {
            pid,
            stdin,
            console,
            cursor: 0,
            exit_rx,
            exited: None,
        }
    }

    /// The whole console output so far.
    pub fn output(&self) -> String {
        self.console.text.lock().unwrap().clone()
    }

    /// Where the next wait starts searching; pass it to [`Vm::rewind`] to search again
    /// from here (for messages that may arrive while a command is still running).
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Move the search position back to an earlier [`Vm::cursor`].
    pub fn rewind(&mut self, pos: usize) {
        self.cursor = pos.min(self.cursor);
    }

    /// Move the cursor forward to `pos` (a [`Vm::cursor`] taken later), never back.
    pub fn forward_to(&mut self, pos: usize) {
        self.cursor = pos.max(self.cursor);
    }

    /// Write the whole console output to a file under the temp dir; returns its path.
    pub fn dump(&self) -> String {
        let path = std::env::temp_dir().join(format!(
            "ros-console-{}-{}.log",
            std::process::id(),
            self.pid
        ));
        let _ = std::fs::write(&path, self.output());
        path.display().to_string()
    }

    /// The last `n` console lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Wait until `needle` appears after the cursor; move the cursor past it and
    /// return the text from the old cursor up to and including the needle.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        match self.try_wait_for(needle, timeout) {
            Some(s) => s,
            None => {
                let dump = self.dump();
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} on the console \
                     (whole console in {dump}); last lines:\n{}",
                    self.tail(40)
                )
            }
        }
    }

    /// Like [`Vm::wait_for`], but `None` on timeout.
    pub fn try_wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut text = self.console.text.lock().unwrap();
        loop {
            if let Some(pos) = text[self.cursor..].find(needle) {
                let end = self.cursor + pos + needle.len();
                let got = text[self.cursor..end].to_string();
                self.cursor = end;
                return Some(got);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            text = self
                .console
                .changed
                .wait_timeout(text, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Type a line into the console.
    pub fn send(&mut self, line: &str) {
        self.stdin
            .write_all(line.as_bytes())
            .expect("writing to qemu");
        self.stdin.write_all(b"\n").expect("writing to qemu");
        self.stdin.flush().expect("writing to qemu");
    }

    /// Run a shell command in the console and return its output (without the echo of
    /// the command) and its exit status.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (String, i32) {
        let n = 100_000 + SEQ.fetch_add(1, Ordering::SeqCst);
        // The markers are computed by the shell, so the echoed command line never matches.
        self.send(&format!(
            "echo @@B$(({n}+0))@@; {cmd}; echo @@E$(({n}+0))@@ $?"
        ));
        self.wait_for(&format!("@@B{n}@@\n"), timeout);
        let got = self.wait_for(&format!("@@E{n}@@ "), timeout);
        let status_line = self.wait_for("\n", timeout);
        // PID 1 logs to the same console; its lines are not the command's output.
        let out = got
            .trim_end_matches(&format!("@@E{n}@@ "))
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("ros-init[") && !l.starts_with("ROS BOOT "))
            .collect::<String>();
        let status = status_line.trim().parse().unwrap_or(-1);
        (out, status)
    }

    /// Run a command that must succeed; returns its trimmed output.
    pub fn sh(&mut self, cmd: &str) -> String {
        let (out, status) = self.run(cmd, Duration::from_secs(60));
        assert_eq!(
            status,
            0,
            "`{cmd}` failed with {status}: {out}\nlast lines:\n{}",
            self.tail(30)
        );
        out.trim().to_string()
    }

    /// Wait for `ROS BOOT boot-complete` and the console's banner (in either order: the
    /// user Docker engine starts after the console) and for its shell to read commands.
    pub fn console_up(&mut self, timeout: Duration) {
        let start = self.cursor;
        self.wait_for("ROS BOOT boot-complete ", timeout);
        let after = self.cursor;
        self.rewind(start);
        self.wait_for("rOS console on /dev/ttyS0", Duration::from_secs(60));
        self.cursor = self.cursor.max(after);
        self.sh("true");
    }

    /// On a console that asks for a login: wait for `ROS BOOT boot-complete` and the login
    /// prompt, log in as `user` with `password`, and become root with sudo; then the shell
    /// reads commands, as after [`Vm::console_up`]. Returns the console text from the
    /// boot up to the prompt (to check what the console showed before anyone logged in).
    pub fn login_as_root(&mut self, user: &str, password: &str, timeout: Duration) -> String {
        let start = self.cursor;
        self.wait_for("ROS BOOT boot-complete ", timeout);
        let after = self.cursor;
        self.rewind(start);
        let before = self.wait_for(" login: ", Duration::from_secs(60));
        self.cursor = self.cursor.max(after);
        self.send(user);
        self.wait_for("Password: ", Duration::from_secs(30));
        self.send(password);
        // The user's prompt (images/console/rootfs/etc/profile): login is done with the tty.
        self.wait_for(&format!("[{user}@"), Duration::from_secs(60));
        self.send("exec sudo -i");
        self.sh("true");
        assert_eq!(self.sh("id -u"), "0", "not root after sudo -i");
        before
    }

    /// Wait in the guest until `cond` (a shell test) holds, checking every 0.1 s for at
    /// most `limit`; fails the test with the console's last lines otherwise.
    pub fn until_within(&mut self, cond: &str, limit: Duration) {
        let tries = limit.as_millis() / 100;
        let (out, _) = self.run(
            &format!(
                "for i in $(seq {tries}); do if {cond}; then echo ok; break; fi; usleep 100000; done"
            ),
            limit + Duration::from_secs(30),
        );
        assert_eq!(
            out.trim(),
            "ok",
            "timed out waiting for: {cond}\n{}",
            self.tail(30)
        );
    }

    /// Wait until every system service is Up and the one-shot udev-cold Exited (0), in
    /// `ros service ps`; returns what it shows.
    pub fn all_services_up(&mut self) -> String {
        let mut cond: Vec<String> = SYSTEM_SERVICES
            .iter()
            .map(|s| format!("ros service ps | grep -q '^{s} .*Up '"))
            .collect();
        cond.push("ros service ps | grep -q '^udev-cold .*Exited (0)'".into());
        self.until(&cond.join(" && "));
        self.sh("ros service ps")
    }

    /// [`Vm::until_within`] a minute.
    pub fn until(&mut self, cond: &str) {
        self.until_within(cond, Duration::from_secs(60));
    }

    /// Wait for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        match self.exit_rx.recv_timeout(timeout) {
            Ok(s) => {
                self.exited = Some(s);
                s
            }
            Err(_) => panic!(
                "QEMU did not exit within {timeout:?}; last lines:\n{}",
                self.tail(40)
            ),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // SAFETY: kill(2) on the pid of our own QEMU child, which the waiter thread
            // has not reaped yet (no exit status was received).
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
            let _ = self.exit_rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Write an image archive `out` (`ros-image`, Docker-loadable) named `name`, holding
/// busybox and a web page `page` served by `httpd` as its command; `dir` is scratch space.
pub fn test_image(dir: &std::path::Path, name: &str, page: &str, out: &std::path::Path) {
    let layer = dir.join(format!("layer-{}", name.replace(['/', ':'], "-")));
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    std::fs::create_dir_all(layer.join("www")).unwrap();
    let busybox = image_dir().join("../x/busybox-static/bin/busybox");
    std::fs::copy(&busybox, layer.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", busybox.display()));
    std::os::unix::fs::symlink("busybox", layer.join("bin/sh")).unwrap();
    std::fs::write(layer.join("www/index.html"), page).unwrap();
    let status = Command::new(repo().join("target/release/ros-image"))
        .args(["build", "--name", name, "--layer"])
        .arg(&layer)
        .args(["--env", "PATH=/bin", "--cmd"])
        .arg(r#"["/bin/busybox","httpd","-f","-p","80","-h","/www"]"#)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .expect("running ros-image (make image builds it)");
    assert!(status.success());
}

/// Read all lines of `r` (helper for tests that parse command output).
pub fn lines(s: &str) -> Vec<String> {
    BufReader::new(s.as_bytes())
        .lines()
        .map_while(Result::ok)
        .collect()
}

/// Build an ISO9660 config drive labelled `label` holding `openstack/latest/user_data`,
/// in `dir`; returns the QEMU arguments that attach it as a virtio disk.
pub fn config_drive(dir: &std::path::Path, label: &str, user_data: &str) -> Vec<String> {
    let iso = config_drive_iso(dir, label, user_data);
    vec![
        "-drive".into(),
        format!("file={},if=virtio,format=raw,readonly=on", iso.display()),
    ]
}

/// The ISO9660 image of [`config_drive`]: OpenStack's layout for `config-2`, NoCloud's
/// (`user-data`, `meta-data`) for any other label, as `cloud-localds` makes it.
pub fn config_drive_iso(dir: &std::path::Path, label: &str, user_data: &str) -> PathBuf {
    let tree = dir.join(format!("drive-{label}"));
    if label == "config-2" {
        let latest = tree.join("openstack/latest");
        std::fs::create_dir_all(&latest).expect("creating the config drive tree");
        std::fs::write(latest.join("user_data"), user_data).expect("writing user_data");
    } else {
        std::fs::create_dir_all(&tree).expect("creating the config drive tree");
        std::fs::write(tree.join("user-data"), user_data).expect("writing user-data");
        std::fs::write(tree.join("meta-data"), "instance-id: ros-test\n").expect("meta-data");
    }
    let iso = dir.join(format!("{label}.iso"));
    let status = Command::new("genisoimage")
        .args(["-quiet", "-r", "-J", "-V", label, "-o"])
        .arg(&iso)
        .arg(&tree)
        .status()
        .expect("running genisoimage (make deps installs it)");
    assert!(status.success(), "genisoimage failed");
    iso
}

/// Like [`config_drive`], but FAT (`mkfs.vfat -n LABEL`, as `cloud-localds -f vfat`
/// makes a NoCloud drive), written with mtools: no mount needed.
pub fn config_drive_fat(dir: &std::path::Path, label: &str, user_data: &str) -> Vec<String> {
    let data = dir.join("user_data");
    std::fs::write(&data, user_data).expect("writing user_data");
    let img = dir.join("config.fat");
    let _ = std::fs::remove_file(&img);
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?} (make deps installs it): {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("mkfs.vfat")
        .args(["-C", "-n", label])
        .arg(&img)
        .arg("2048"));
    let image = img.display().to_string();
    run(Command::new("mmd").args(["-i", &image, "::/openstack", "::/openstack/latest"]));
    run(Command::new("mcopy")
        .args(["-i", &image])
        .arg(&data)
        .arg("::/openstack/latest/user_data"));
    vec![
        "-drive".into(),
        format!("file={image},if=virtio,format=raw,readonly=on"),
    ]
}

/// A fresh temporary directory for one test's files (removed on drop).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create one under the system temp dir.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ros-boot-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// QEMU arguments for a monitor on the Unix socket `socket` (for [`monitor`]).
pub fn monitor_args(socket: &std::path::Path) -> Vec<String> {
    vec![
        "-monitor".into(),
        format!("unix:{},server=on,wait=off", socket.display()),
    ]
}

/// Run one human-monitor command through `socket` (see [`monitor_args`]) and return what
/// QEMU printed for it. QEMU creates the socket before the guest starts.
pub fn monitor(socket: &std::path::Path, cmd: &str) -> String {
    use std::os::unix::net::UnixStream;
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to the QEMU monitor {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("monitor read timeout");
    // Everything up to the next prompt: first the greeting, then the command's output.
    let read_to_prompt = |stream: &mut UnixStream| -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"(qemu) ") {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the QEMU monitor: {e}"),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    read_to_prompt(&mut stream);
    stream
        .write_all(format!("{cmd}\n").as_bytes())
        .expect("writing to the QEMU monitor");
    let out = read_to_prompt(&mut stream);
    out.trim_end_matches("(qemu) ")
        .lines()
        .filter(|l| !l.contains(cmd))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `python3 -m http.server` on the host's loopback, serving a directory; killed on drop.
pub struct HttpServer {
    child: std::process::Child,
    /// The port it serves on, on 127.0.0.1 (the guest's 10.0.2.2).
    pub port: u16,
}

impl HttpServer {
    /// Serve `dir`.
    pub fn serve(dir: &std::path::Path) -> HttpServer {
        HttpServer::start(|port| {
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
                .arg(dir)
                .arg(port.to_string());
            cmd
        })
    }

    /// Serve `dir` over https with the certificate chain and key in the PEM files `cert`
    /// and `key` (python3's ssl module).
    pub fn serve_tls(
        dir: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> HttpServer {
        let script = "import functools, http.server, ssl, sys\n\
            d, port, cert, key = sys.argv[1:]\n\
            h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)\n\
            s = http.server.HTTPServer(('127.0.0.1', int(port)), h)\n\
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
            c.load_cert_chain(cert, key)\n\
            s.socket = c.wrap_socket(s.socket, server_side=True)\n\
            s.serve_forever()\n";
        HttpServer::start(|port| {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg("-c")
                .arg(script)
                .arg(dir)
                .arg(port.to_string())
                .arg(cert)
                .arg(key);
            cmd
        })
    }

    /// Run the server `command` makes for a free port, until it accepts a connection.
    fn start(command: impl FnOnce(u16) -> std::process::Command) -> HttpServer {
        // A free port: the kernel picks one, the server binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = command(port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 (make deps installs it)");
        // Serving once it accepts a connection (bounded: the deadline is the test's).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the HTTP server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port }
    }
}

/// An HTTP server that answers one GET with the whole length of `file` but only its first
/// `sent` bytes, then holds the connection open until the client goes: a download in
/// progress for as long as the test wants one (a power cut in the middle of it).
pub struct StalledServer {
    /// The port it serves on, on 127.0.0.1 (the guest's 10.0.2.2).
    pub port: u16,
    /// How many bytes it sends before it stalls.
    pub sent: u64,
}

impl StalledServer {
    /// Serve `file` (any path) once, in a thread of the test, stalling after `percent` of it.
    pub fn serve(file: &std::path::Path, percent: usize) -> StalledServer {
        use std::io::{Read, Write};
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = bytes.len() * percent.min(99) / 100;
        std::thread::spawn(move || {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: \
                 application/octet-stream\r\n\r\n",
                bytes.len()
            );
            if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&bytes[..sent]).is_err() {
                return;
            }
            // Until the client goes (its machine's power is cut: QEMU closes the socket).
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        });
        StalledServer {
            port,
            sent: sent as u64,
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a certificate it signs for 10.0.2.2 (the host, seen from the guest): the CA's
/// PEM, and the server's chain and key written to `dir`.
pub fn private_ca(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    ros_test_support::private_ca(dir, "10.0.2.2")
}

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file below `dir` (a `target` directory skipped), for the tests that read
/// the sources.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() && !p.ends_with("target") {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}
