#!/usr/bin/env python3
"""Boot from the ISO and over PXE against the disk image, in one run; memory used from RAM.

Each round boots, in turn: the image's own disk through SeaBIOS and its syslinux (`disk`,
virtio; the fair baseline for the other two, which also go through firmware and a
bootloader), the ISO from QEMU's IDE CD-ROM (`iso`), and iPXE over QEMU's TFTP server with
no disk (`pxe`, build/out/pxe). For each it records the host seconds from QEMU's start to
the console's shell answering, and the guest's boot-complete marker (seconds since the
kernel started); then, at the console, memory used (MemTotal - MemAvailable). It prints the
medians and their ratios to `disk`.

Usage: bench/platforms.py [--rounds N] [--mem MB] OUT_DIR   (OUT_DIR = build/out)
"""
import argparse
import os
import statistics
import time

from vm import Vm


def modes(out):
    return {
        "disk": ["-drive", f"file={os.path.join(out, 'ros.img')},if=virtio,format=raw,readonly=on",
                 "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"],
        "iso": ["-cdrom", os.path.join(out, "ros.iso"), "-boot", "d",
                "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"],
        "pxe": ["-boot", "n", "-netdev",
                f"user,id=n0,tftp={os.path.join(out, 'pxe')},bootfile=boot.ipxe",
                "-device", "virtio-net-pci,netdev=n0"],
    }


def meminfo(vm):
    text = vm.run("cat /proc/meminfo") or ""
    info = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            info[parts[0][:-1]] = int(parts[1])
    return info


def one(out, mem, args):
    vm = Vm(out, mem=mem, firmware=args)
    try:
        if not vm.console_up():
            return None
        up = time.monotonic() - vm.start
        guest = vm.marker_times().get("boot-complete")
        info = meminfo(vm)
        used = (info["MemTotal"] - info["MemAvailable"]) / 1024 if info else None
        return up, guest, used
    finally:
        vm.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mem", type=int, default=512)
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    results = {name: [] for name in modes(out)}
    for r in range(a.rounds):
        for name, args in modes(out).items():
            res = one(out, a.mem, args)
            print(f"round {r + 1} {name}: {res}", flush=True)
            if res:
                results[name].append(res)
    base = None
    print(f"\n| boot (-m {a.mem}, {a.rounds} rounds, medians) | console up, host s | "
          "boot-complete, guest s | memory used, MiB | console up / disk |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        if not rows:
            print(f"| {name} | failed | | | |")
            continue
        up = statistics.median(r[0] for r in rows)
        guest = statistics.median(r[1] for r in rows if r[1] is not None)
        used = statistics.median(r[2] for r in rows if r[2] is not None)
        base = base or up
        print(f"| {name} | {up:.1f} | {guest:.1f} | {used:.1f} | {up / base:.2f} |")


if __name__ == "__main__":
    main()
