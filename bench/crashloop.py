#!/usr/bin/env python3
"""Crash loop: where the CPU of a service that exits 1 at once goes, over a minute.

Boots diskless (user engine off), measures a quiet baseline, enables a service that runs
`sh -c 'exit 1'` with `restart: always`, and measures the next 60 s: the whole system's
busy share of both CPUs from /proc/stat, each long-lived process's CPU from
/proc/PID/stat, and the rest (processes that came and went: shims, runc) by difference.

Usage: bench/crashloop.py [--rounds 1] [--seconds 60] OUT_DIR
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from vm import Vm  # noqa: E402

SNAPSHOT = ("head -1 /proc/stat; for d in /proc/[0-9]*; do "
            "l=$(cat $d/stat 2>/dev/null) && echo \"P $l\"; done")
CRASHER = ("printf 'crasher:\\n  image: ros/acpid:0.1.0\\n  command: [\"sh\", \"-c\", "
           "\"exit 1\"]\\n  restart: always\\n' >/var/lib/rancher/conf/crasher.yml")


def snapshot(vm):
    """(total jiffies, idle jiffies, {pid: (comm, cpu jiffies)})."""
    out = vm.run(SNAPSHOT)
    total = idle = 0
    procs = {}
    for line in out.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:9]]
            total, idle = sum(v), v[3] + v[4]
        elif line.startswith("P "):
            head, _, rest = line[2:].rpartition(")")
            pid, _, comm = head.partition(" (")
            f = rest.split()
            # rest starts at field 3 (state); utime and stime are fields 14 and 15.
            procs[int(pid)] = (comm, int(f[11]) + int(f[12]))
    return total, idle, procs


def window(vm, seconds):
    t0, i0, p0 = snapshot(vm)
    vm.run(f"sleep {seconds}", timeout=seconds + 60)
    t1, i1, p1 = snapshot(vm)
    busy = t1 - t0 - (i1 - i0)
    per = {}
    for pid, (comm, cpu) in p1.items():
        if pid in p0 and p0[pid][0] == comm:
            per[f"{comm}"] = per.get(comm, 0) + cpu - p0[pid][1]
    kept = sum(per.values())
    return t1 - t0, busy, per, busy - kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    costs = []
    for _ in range(args.rounds):
        vm = Vm(out, append="rancher.services_include.docker=false", timeout=900)
        try:
            if not vm.console_up():
                sys.exit("no console")
            vm.run("sleep 20", timeout=60)  # let boot-time work settle
            total, busy, _, _ = window(vm, 20)
            idle_share = 100.0 * busy / total
            vm.run(CRASHER)
            mark = len(vm.buf)
            vm.run("ros service enable /var/lib/rancher/conf/crasher.yml")
            total, busy, per, gone = window(vm, args.seconds)
            restarts = len(re.findall(rb"crasher: exited \(1\), restarting", vm.buf[mark:]))
            share = 100.0 * busy / total
            costs.append(share - idle_share)
            print(f"system busy {share:.1f}% of both CPUs over {args.seconds} s "
                  f"(idle {idle_share:.1f}%): the loop costs {share - idle_share:.1f}%; "
                  f"{restarts} restarts, {busy / max(restarts, 1) / 100:.2f} CPU-s each "
                  f"(jiffies at 100 Hz)", flush=True)
            top = sorted(per.items(), key=lambda kv: -kv[1])[:8]
            for comm, j in top:
                print(f"  {comm:24} {j / 100:6.2f} CPU-s ({100.0 * j / max(busy, 1):4.1f}%)")
            print(f"  {'(processes that exited)':24} {gone / 100:6.2f} CPU-s "
                  f"({100.0 * gone / max(busy, 1):4.1f}%)", flush=True)
        finally:
            vm.close()
    if len(costs) > 1:
        print(f"median loop cost over {len(costs)} rounds: {statistics.median(costs):.1f}%")


if __name__ == "__main__":
    main()
