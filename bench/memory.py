#!/usr/bin/env python3
"""Memory benchmark: used memory after boot and each process's RSS, at several -m sizes,
and the smallest -m that still boots to a working console (by bisection).

Usage: bench/memory.py [--sizes 256,128] [--floor 48] OUT_DIR
"""
import argparse
import os
import re
import select
import subprocess
import time

CONSOLE_UP = b"rOS console on /dev/"


def boot_and_measure(out, mem, timeout=300):
    """Boot with -m `mem`; return (meminfo dict, ps rows) or None if no console came up."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-smp", "2", "-m", str(mem),
           "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
           "-kernel", os.path.join(out, "vmlinuz"), "-initrd", os.path.join(out, "initrd"),
           "-drive", f"file={os.path.join(out, 'root.img')},if=virtio,format=raw,readonly=on",
           "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
           "-append", "console=ttyS0 quiet panic=-1 root=/dev/vda"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    buf = b""
    deadline = time.monotonic() + timeout

    def read_until(pattern):
        nonlocal buf
        while time.monotonic() < deadline:
            m = re.search(pattern, buf, re.S)
            if m:
                return m
            r, _, _ = select.select([p.stdout], [], [], 1.0)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    return None
                buf += chunk
        return None

    try:
        if not read_until(re.escape(CONSOLE_UP)):
            return None
        # Let the boot settle: wait until PID 1 reports boot-complete.
        if not read_until(rb"ROS BOOT boot-complete"):
            return None
        p.stdin.write(b"echo @@M$((1+1)); cat /proc/meminfo; echo @@P$((1+1)); "
                      b"ps -o pid,rss,comm; echo @@E$((1+1))\n")
        p.stdin.flush()
        m = read_until(rb"@@M2\r?\n(.*)@@P2\r?\n(.*)@@E2")
        if not m:
            return None
        info = {}
        for line in m.group(1).decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                info[k.strip()] = int(v.split()[0])
        rows = []
        for line in m.group(2).decode(errors="replace").splitlines()[1:]:
            f = line.split(None, 2)
            if len(f) == 3 and f[0].isdigit():
                rss = f[1]
                kb = int(float(rss[:-1]) * 1024) if rss.endswith("m") else int(rss) if rss.isdigit() else 0
                rows.append((kb, f[2].strip()))
        return info, rows
    finally:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--sizes", default="256,128")
    ap.add_argument("--floor", type=int, default=48)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    for mem in [int(s) for s in args.sizes.split(",")]:
        r = boot_and_measure(out, mem)
        if r is None:
            print(f"-m {mem}: no working console")
            continue
        info, rows = r
        used = info["MemTotal"] - info["MemAvailable"]
        print(f"-m {mem}: MemTotal {info['MemTotal'] // 1024} MiB, used (MemTotal - MemAvailable)"
              f" {used / 1024:.1f} MiB")
        by_comm = {}
        for kb, comm in rows:
            by_comm[comm] = by_comm.get(comm, 0) + kb
        for comm, kb in sorted(by_comm.items(), key=lambda x: -x[1])[:12]:
            print(f"    {kb / 1024:7.1f} MiB  {comm}")
    lo, hi = args.floor, int(args.sizes.split(",")[-1])
    if boot_and_measure(out, hi) is None:
        print(f"smallest -m: above {hi}")
        return
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if boot_and_measure(out, mid) is None:
            lo = mid
        else:
            hi = mid
    print(f"smallest -m that boots to a working console: {hi} MiB (±8)")


if __name__ == "__main__":
    main()
