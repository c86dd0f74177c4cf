#!/usr/bin/env python3
"""Scale: boot time (guest uptime at `ROS BOOT boot-complete`) with 0, 10 and 50 extra
trivial services (busybox `sleep` in the acpid image, no dependencies), given as
rancher.services on a config drive; diskless, the user Docker engine off. The cost per
extra service shows how far parallel start keeps growth below linear; the console's start
shows whether the extra services hold up the console.

Usage: bench/scale.py [--counts 0,10,50] [--rounds 2] OUT_DIR
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from vm import Vm  # noqa: E402


def config_drive(tmp, n):
    d = os.path.join(tmp, f"cd{n}", "openstack", "latest")
    os.makedirs(d, exist_ok=True)
    lines = ["#cloud-config", "rancher:", "  services:"]
    for i in range(n):
        lines += [f"    extra{i:02}:", "      image: ros/acpid:0.1.0",
                  "      command: [\"sleep\", \"100000\"]",
                  "      labels: {io.rancher.os.scope: system}"]
    if n == 0:
        lines[-1] = "  services: {}"
    with open(os.path.join(d, "user_data"), "w") as f:
        f.write("\n".join(lines) + "\n")
    iso = os.path.join(tmp, f"cd{n}.iso")
    subprocess.run(["genisoimage", "-quiet", "-R", "-V", "config-2", "-o", iso,
                    os.path.join(tmp, f"cd{n}")], check=True)
    return iso


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--counts", default="0,10,50")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(c) for c in args.counts.split(",")]:
            iso = config_drive(tmp, n)
            times = []
            for _ in range(args.rounds):
                vm = Vm(out, append="rancher.services_include.docker=false",
                        extra=["-drive", f"file={iso},if=virtio,format=raw,readonly=on"],
                        timeout=600)
                try:
                    if not vm.console_up():
                        sys.exit(f"{n} services: no console")
                    t = vm.marker_times()
                    running = vm.run(f"ros service ps | grep -c '^extra.* Up ' || true").strip()
                    if int(running) != n:
                        sys.exit(f"{n} services: only {running} Up")
                    times.append((t["boot-complete"], t.get("images-imported", 0.0),
                                  t.get("service-started console", 0.0)))
                finally:
                    vm.close()
            results[n] = tuple(statistics.median(x[i] for x in times) for i in range(3))
            print(f"{n:3} extra services: boot-complete {results[n][0]:.2f} s (guest), "
                  f"services phase {results[n][0] - results[n][1]:.2f} s, "
                  f"console started {results[n][2]:.2f} s", flush=True)
    base = results.get(0)
    if base:
        for n, (t, _, console) in sorted(results.items()):
            if n:
                print(f"{n:3} extra: +{t - base[0]:.2f} s, {(t - base[0]) / n * 1000:.0f} ms per "
                      f"service; console +{console - base[2]:.2f} s")


if __name__ == "__main__":
    main()
