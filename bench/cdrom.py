#!/usr/bin/env python3
"""What driving the IDE/SATA CD-ROM costs a boot from a virtio disk, in one run.

Each round boots the image (root on virtio-blk, QEMU's `pc`, whose IDE controller has an
empty CD-ROM drive) twice, in turn: `default` (PID 1 drives no IDE or SATA port) and
`configdrive` (`rancher.cloud_init.datasources=[configdrive]`: cloud-init loads the
controllers' drivers and the CD-ROM driver before it looks for a config drive). It records
the guest's markers (seconds since the kernel started) and prints their means and the
difference.

Usage: bench/cdrom.py [--rounds N] OUT_DIR   (OUT_DIR = build/out)
"""
import argparse
import statistics

from vm import Vm

MARKERS = ("root", "containerd-ready", "service-started udev-cold", "service-started udev",
           "boot-complete")
MODES = {"default": "", "configdrive": "rancher.cloud_init.datasources=[configdrive]"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("out")
    args = ap.parse_args()
    times = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode, append in MODES.items():
            vm = Vm(args.out, append=append)
            if not vm.console_up():
                raise SystemExit(f"{mode}: no console")
            drivers = vm.run("ls -d /sys/module/libata 2>/dev/null | wc -l").strip()
            vm.close()
            t = vm.marker_times()
            times[mode].append(t)
            print(f"round {r} {mode:12} boot-complete {t['boot-complete']:.2f} s, "
                  f"libata loaded: {drivers}", flush=True)
    print(f"\n| marker (guest s, mean of {args.rounds}) | default | configdrive | difference |")
    print("|---|---:|---:|---:|")
    for key in MARKERS:
        a = statistics.mean(t[key] for t in times["default"])
        b = statistics.mean(t[key] for t in times["configdrive"])
        print(f"| {key} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")


if __name__ == "__main__":
    main()
