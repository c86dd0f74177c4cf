"""Driving a QEMU guest of the built image over its serial console (shared by the benches)."""
import os
import re
import select
import subprocess
import time


def qemu_base(mem=512):
    """The virtual machine every bench boots, the tests' (tests/src/lib.rs `qemu_base_args`,
    which a cargo test compares with this): TCG, two CPUs, MEM MiB, the serial console on
    stdio, no reboot. A hardware RNG (the CPU's RDRAND), as `make run` gives: without one,
    the kernel's random pool is not initialised during boot, and chronyd and dropbearkey
    spin the CPU in the kernel until it is."""
    return ["qemu-system-x86_64", "-accel", "tcg", "-smp", "2", "-m", str(mem),
            "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-cpu", "qemu64,+rdrand"]


class Vm:
    """One QEMU boot of OUT_DIR's kernel and initrd, with the image (ros.img) as its disk."""

    def __init__(self, out, mem=512, append="", extra=(), timeout=300, firmware=None):
        """`firmware`: QEMU arguments that boot through the machine's firmware instead (an
        ISO, the network) with no kernel, initrd or image disk passed."""
        cmd = [*qemu_base(mem),
               "-kernel", os.path.join(out, "vmlinuz"), "-initrd", os.path.join(out, "initrd"),
               "-drive", f"file={os.path.join(out, 'ros.img')},if=virtio,format=raw,readonly=on",
               "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
               "-append", f"console=ttyS0 quiet panic=-1 root=/dev/vda2 rancher.autologin=ttyS0 {append}", *extra]
        if firmware is not None:
            cmd = [*qemu_base(mem), *firmware, *extra]
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.buf = b""
        self.pos = 0
        self.seq = 0
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)

    def read_until(self, pattern, timeout=None):
        """Wait for the regex `pattern` (bytes) after the last match; the match or None."""
        deadline = min(self.deadline, time.monotonic() + timeout) if timeout else self.deadline
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 1.0))
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self.buf += chunk

    def console_up(self):
        """Wait for boot-complete and the console banner (either order); False if not."""
        pos = self.pos
        if not self.read_until(rb"ROS BOOT boot-complete"):
            return False
        after = self.pos
        self.pos = pos
        if not self.read_until(rb"rOS console on /dev/"):
            return False
        self.pos = max(self.pos, after)
        return self.run("true") is not None

    def run(self, cmd, timeout=120):
        """Run a shell command in the console; its output (str) or None on timeout."""
        self.seq += 1
        n = 100000 + self.seq
        self.p.stdin.write(f"echo @@B$(({n}+0))@@; {cmd}; echo @@E$(({n}+0))@@\n".encode())
        self.p.stdin.flush()
        if not self.read_until(rf"@@B{n}@@\r?\n".encode(), timeout):
            return None
        start = self.pos
        m = self.read_until(rf"@@E{n}@@".encode(), timeout)
        if not m:
            return None
        out = self.buf[start:m.start()].decode(errors="replace").replace("\r", "")
        return "".join(l for l in out.splitlines(True)
                       if not l.startswith(("ros-init[", "ROS BOOT ")))

    def marker_times(self):
        """{phase or 'service-started NAME': guest seconds} from the markers so far."""
        times = {}
        for m in re.finditer(rb"ROS BOOT (\S+) (\d+\.\d+)s ?(\S*)", self.buf):
            phase, secs, detail = m.group(1).decode(), float(m.group(2)), m.group(3).decode()
            key = f"{phase} {detail}" if phase == "service-started" else phase
            times.setdefault(key, secs)
        return times

    def close(self):
        self.p.kill()
        self.p.wait()


if __name__ == "__main__":
    # `bench/vm.py --base-args MEM`: qemu_base, one argument a line (for the cargo test
    # that keeps the tests' machine and the benches' the same).
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--base-args":
        print("\n".join(qemu_base(int(sys.argv[2]))))
    else:
        sys.exit("usage: bench/vm.py --base-args MEM")
