#!/usr/bin/env python3
"""CLI latency: `ros service ps` against `ctr -n ros tasks ls` on the same (system)
containerd, both run N times in the guest's console, timed by the guest's uptime; the
ratio is the figure (target <= 1.0). ctr (Debian's, not in the image) reaches the guest
on a raw disk holding just the binary.

Usage: bench/cli.py [--rounds 3] [-n 20] OUT_DIR
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from vm import Vm  # noqa: E402

LOOP = ("t0=$(cut -d' ' -f1 /proc/uptime); i=0; while [ $i -lt {n} ]; do {cmd} >/dev/null; "
        "i=$((i+1)); done; t1=$(cut -d' ' -f1 /proc/uptime); echo $t1 $t0 | awk '{{print $1-$2}}'")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    ctr = os.path.join(out, "..", "x", "containerd", "usr", "bin", "ctr")
    with tempfile.TemporaryDirectory() as tmp:
        disk = os.path.join(tmp, "ctr.raw")
        data = open(ctr, "rb").read()
        with open(disk, "wb") as f:
            f.write(data + b"\0" * (-len(data) % 512))
        vm = Vm(out, append="rancher.services_include.docker=false",
                extra=["-drive", f"file={disk},if=virtio,format=raw,readonly=on"])
        try:
            if not vm.console_up():
                sys.exit("no console")
            vm.run(f"head -c {len(data)} /dev/vdb >/tmp/ctr && chmod +x /tmp/ctr")
            ctr_cmd = "/tmp/ctr -a /run/system-containerd/containerd.sock -n ros tasks ls"
            print("ros service ps:\n" + vm.run("ros service ps"))
            print("ctr tasks ls:\n" + vm.run(ctr_cmd))
            ros_t, ctr_t = [], []
            for _ in range(args.rounds):
                ros_t.append(float(vm.run(LOOP.format(n=args.n, cmd="ros service ps"))))
                ctr_t.append(float(vm.run(LOOP.format(n=args.n, cmd=ctr_cmd))))
        finally:
            vm.close()
    r, c = statistics.median(ros_t), statistics.median(ctr_t)
    print(f"{args.n} calls, median of {args.rounds} rounds: ros service ps {r / args.n * 1000:.0f} ms"
          f" per call, ctr tasks ls {c / args.n * 1000:.0f} ms per call, ratio {r / c:.2f}")


if __name__ == "__main__":
    main()
