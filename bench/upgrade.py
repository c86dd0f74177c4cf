#!/usr/bin/env python3
"""Upgrade benchmark: `ros os upgrade` on an installed disk against a plain reboot, in one run.

Set-up (not measured): `ros install` from the image onto a new disk, with an automatic
login on ttyS0. Then, for each round, on that disk booted through its own bootloader:

- a plain reboot: from `reboot` typed in the console to the console back (QEMU runs with
  -no-reboot, so the reboot ends it and the bench starts it again on the same disk, as the
  machine would; both measurements pay that start alike);
- an upgrade: `ros os upgrade -i /dev/vdb -f` of the build's own bundle (the same release,
  written to the other slot and tried: -f), then the same reboot. Reported: the time to
  write and arm the slot, the downtime (reboot to console back), and the time from the
  upgrade command to `upgrade: ... committed` on the console.

Ratios are against the plain reboot's downtime of the same round.

Usage: bench/upgrade.py [--rounds N] BUILD_DIR   (after `make image`)
"""
import argparse
import glob
import os
import re
import select
import statistics
import subprocess
import tempfile
import time

from vm import qemu_base


class Guest:
    def __init__(self, args):
        self.p = subprocess.Popen(
            [*qemu_base(512), "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
             *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buf, self.pos, self.seq = b"", 0, 0

    def read_until(self, pattern, timeout=600):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf, self.pos)
            if m:
                self.pos = m.end()
                return time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"timed out waiting for {pattern!r}:\n"
                                 + self.buf[-3000:].decode(errors="replace"))
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 1.0))
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise SystemExit(f"QEMU ended before {pattern!r}")
                self.buf += chunk

    def console_up(self):
        start = self.pos
        self.read_until(rb"ROS BOOT boot-complete")
        after = self.pos
        self.pos = start
        t = self.read_until(rb"rOS console on /dev/ttyS0")
        self.pos = max(self.pos, after)
        self.run("true")
        return t

    def run(self, cmd, timeout=600):
        self.seq += 1
        n = 100000 + self.seq
        self.p.stdin.write(f"echo @@B$(({n}+0))@@; {cmd}; echo @@E$(({n}+0))@@ $?\n".encode())
        self.p.stdin.flush()
        self.read_until(rf"@@B{n}@@\r?\n".encode(), timeout)
        start = self.pos
        self.read_until(rf"@@E{n}@@ 0".encode(), timeout)
        return self.buf[start:self.pos].decode(errors="replace")

    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def ended(self, timeout=300):
        self.p.wait(timeout)
        return time.monotonic()


def disk_boot(disk, bundle):
    return Guest(["-drive", f"file={disk},if=virtio,format=qcow2",
                  "-drive", f"file={bundle},if=virtio,format=raw,readonly=on"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("build")
    a = ap.parse_args()
    out = os.path.join(os.path.abspath(a.build), "out")
    bundle = sorted(glob.glob(os.path.join(out, "ros-*.upgrade")))[-1]
    tmp = tempfile.mkdtemp(prefix="ros-upgrade-bench-")
    disk = os.path.join(tmp, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "2G"], check=True)
    g = Guest(["-drive", f"file={os.path.join(out, 'ros.img')},if=virtio,format=raw,readonly=on",
               "-drive", f"file={disk},if=virtio,format=qcow2"])
    g.console_up()
    g.run("printf 'hostname: bench\\n' > /tmp/cc.yml")
    g.run("ros install -d /dev/vdb -c /tmp/cc.yml -f --no-reboot -a rancher.autologin=ttyS0")
    g.send("poweroff")
    g.ended()

    rows = []
    g = disk_boot(disk, bundle)
    g.console_up()
    for _ in range(a.rounds):
        t0 = time.monotonic()
        g.send("reboot")
        g.ended()
        g = disk_boot(disk, bundle)
        reboot = g.console_up() - t0
        t0 = time.monotonic()
        g.run("ros os upgrade -i /dev/vdb -f --no-reboot")
        written = time.monotonic() - t0
        t1 = time.monotonic()
        g.send("reboot")
        g.ended()
        g = disk_boot(disk, bundle)
        down = g.console_up() - t1
        pos = g.pos
        g.pos = 0
        committed = g.read_until(rb"upgrade: \S+ committed") - t0
        g.pos = max(pos, g.pos)
        rows.append((reboot, written, down, committed))
        print(f"round: reboot {reboot:.1f} s; upgrade: written and armed {written:.1f} s, "
              f"down {down:.1f} s, committed after {committed:.1f} s", flush=True)
    g.send("poweroff")
    g.ended()
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"\nmedians of {a.rounds} rounds (ratios to the plain reboot's downtime):")
    print(f"| plain reboot: downtime | {med[0]:.1f} s | 1.00 |")
    print(f"| upgrade: write and arm the slot (console up) | {med[1]:.1f} s | {med[1] / med[0]:.2f} |")
    print(f"| upgrade: downtime (reboot to console back) | {med[2]:.1f} s | {med[2] / med[0]:.2f} |")
    print(f"| upgrade: command to committed | {med[3]:.1f} s | {med[3] / med[0]:.2f} |")


if __name__ == "__main__":
    main()
