#!/usr/bin/env python3
"""Boot benchmark: the rOS image against a bare-init floor on the same kernel, in one run.

For each round it boots (1) the same kernel with a minimal initrd whose /init is a busybox
script that prints a marker and powers off (the floor), and (2) the rOS image to its console.
It records, in host time since QEMU was started, when each console marker appeared, plus the
guest's own uptime in the marker, and prints medians and ratios to the floor.

With --state, rOS boots with a state disk (a qcow2 formatted by a first, unmeasured boot),
so the measured boots are steady-state ones: the images are already imported.

Usage: bench/boot.py [--rounds N] [--mem MB] [--state] OUT_DIR   (OUT_DIR = build/out)
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from vm import qemu_base

MARKER = re.compile(r"ROS BOOT (\S+) (\d+\.\d+)s ?(\S*)")
CONSOLE_UP = "rOS console on /dev/"


def qemu_cmd(out, initrd, mem, root_disk, append, state=None):
    # The same virtual hardware for the floor as for rOS (vm.py).
    cmd = [*qemu_base(mem),
           "-kernel", os.path.join(out, "vmlinuz"), "-initrd", initrd,
           "-append", "console=ttyS0 quiet panic=-1 " + append]
    if root_disk:
        cmd += ["-drive", f"file={root_disk},if=virtio,format=raw,readonly=on",
                "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
    if state:
        cmd += ["-drive", f"file={state},if=virtio,format=qcow2"]
    return cmd


def boot(cmd, until, timeout=300, after=None):
    """Run QEMU, return {event: (host_seconds, guest_seconds)} until `until` is seen."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    events, buf = {}, b""
    os.set_blocking(p.stdout.fileno(), True)
    try:
        while time.monotonic() - t0 < timeout:
            chunk = p.stdout.read1(4096)
            if not chunk:
                break
            now = time.monotonic() - t0
            if "first-output" not in events:
                events["first-output"] = (now, None)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip("\r")
                m = MARKER.search(text)
                if m:
                    name = m.group(1) + (":" + m.group(3) if m.group(1) == "service-started" else "")
                    events.setdefault(name, (now, float(m.group(2))))
                if CONSOLE_UP in text:
                    events.setdefault("console-up", (now, None))
            if until in events:
                if after:
                    after(p)
                break
    finally:
        p.kill()
        p.wait()
    return events


def bare_initrd(out, workdir):
    """A cpio with busybox and an /init script that prints a marker and powers off."""
    root = os.path.join(workdir, "bare")
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "proc"))
    os.makedirs(os.path.join(root, "dev"))
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    os.symlink("busybox", os.path.join(root, "bin", "sh"))
    with open(os.path.join(root, "init"), "w") as f:
        f.write("#!/bin/sh\n/bin/busybox mount -t proc proc /proc\n"
                "read up rest </proc/uptime\necho \"ROS BOOT init ${up}s bare\"\n"
                "/bin/busybox poweroff -f\n")
    os.chmod(os.path.join(root, "init"), 0o755)
    subprocess.run(["mknod", "-m", "600", os.path.join(root, "dev", "console"), "c", "5", "1"],
                   check=True)
    path = os.path.join(workdir, "bare.initrd")
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    with open(path, "wb") as f:
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        zst = subprocess.Popen(["zstd", "-q", "-19"], stdin=cpio.stdout, stdout=f)
        cpio.stdin.write(files.encode())
        cpio.stdin.close()
        zst.wait()
        cpio.wait()
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--state", action="store_true", help="boot with a state disk")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    rows = {"bare": [], "ros": []}

    def poweroff(p):
        # A clean power-off, so the state disk is consistent for the next round.
        p.stdin.write(b"poweroff\n")
        p.stdin.flush()
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass

    with tempfile.TemporaryDirectory() as work:
        bare = bare_initrd(out, work)
        state = None
        # The target is for the system services without the user engine.
        append = "root=/dev/vda2 rancher.services_include.docker=false"
        if args.state:
            state = os.path.join(work, "state.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", state, "1G"], check=True)
            append += " rancher.state.autoformat=[/dev/vdb]"
            first = boot(qemu_cmd(out, os.path.join(out, "initrd"), args.mem,
                                  os.path.join(out, "ros.img"), append, state),
                         "console-up", after=poweroff)
            if "console-up" not in first:
                raise SystemExit("the first boot (formatting the state disk) failed")
        for r in range(args.rounds):
            # Alternate so drift in machine load hits both alike.
            rows["bare"].append(boot(qemu_cmd(out, bare, args.mem, None, ""), "init"))
            rows["ros"].append(boot(
                qemu_cmd(out, os.path.join(out, "initrd"), args.mem,
                         os.path.join(out, "ros.img"), append, state),
                "console-up", after=poweroff))
            print(f"round {r + 1}/{args.rounds} done", flush=True)

    def med(kind, event, idx):
        vals = [e[event][idx] for e in rows[kind] if event in e and e[event][idx] is not None]
        return statistics.median(vals) if vals else None

    floor = med("bare", "init", 0)
    print(f"\nmedians over {args.rounds} rounds, -m {args.mem}, TCG; host s since QEMU start"
          " (guest uptime in the marker)")
    print(f"{'event':34} {'host s':>8} {'guest s':>8} {'x floor':>8}")
    print(f"{'bare init (floor)':34} {floor:8.2f} {med('bare', 'init', 1):8.2f} {1.0:8.2f}")
    order = ["init", "mounts", "modules", "root", "state", "containerd-ready", "images-imported"]
    started = {ev for e in rows["ros"] for ev in e if ev.startswith("service-started:")}
    order += sorted(started, key=lambda ev: med("ros", ev, 0))
    order += ["boot-complete", "console-up"]
    for ev in order:
        h, g = med("ros", ev, 0), med("ros", ev, 1)
        if h is None:
            continue
        gs = f"{g:8.2f}" if g is not None else f"{'':8}"
        print(f"{'rOS ' + ev:34} {h:8.2f} {gs} {h / floor:8.2f}")


if __name__ == "__main__":
    main()
