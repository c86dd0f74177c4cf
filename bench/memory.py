#!/usr/bin/env python3
"""Memory benchmark: used memory after boot and each process's RSS, at several -m sizes,
and the smallest -m that still boots to a working console (by bisection).

Diskless boots. With --docker the user engine is on and the sample waits until `docker
info` answers; without it the engine is disabled. "Works" means the console answers and
every system service `ros service ps` lists is Up.

Usage: bench/memory.py [--sizes 256,128] [--floor 64] [--docker] OUT_DIR
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from vm import Vm  # noqa: E402

SETTLE = 10  # seconds after boot-complete (and dockerd answering) before sampling


def boot_and_measure(out, mem, docker, timeout=420):
    """Boot with -m `mem`; (meminfo dict, [(rss KiB, comm)]) or None if it does not work."""
    vm = Vm(out, mem=mem, append="" if docker else "rancher.services_include.docker=false",
            timeout=timeout)
    def fail(why):
        print(f"-m {mem}: does not work: {why}", file=sys.stderr, flush=True)

    try:
        if not vm.console_up():
            return fail("no console")
        if docker:
            ok = vm.run("n=0; until docker info >/dev/null 2>&1; do n=$((n+1)); "
                        "[ $n -gt 240 ] && break; usleep 500000; done; echo $n", timeout=180)
            if ok is None or int(ok.strip() or 999) > 240:
                return fail("docker info did not answer in 120 s")
        vm.run(f"sleep {SETTLE}", timeout=SETTLE + 60)
        ps = vm.run("ros service ps")
        if ps is None:
            return fail("ros service ps did not answer")
        rows = [line.split() for line in ps.splitlines()[1:] if line.strip()]
        down = [r for r in rows if "Up" not in r and not r[0].startswith("udev-cold")]
        if not rows or down:
            return fail(f"not every service is Up:\n{ps}")
        meminfo = vm.run("cat /proc/meminfo")
        procs = vm.run("for d in /proc/[0-9]*; do c=$(cat $d/comm 2>/dev/null) && "
                       "r=$(awk '/^VmRSS/{print $2}' $d/status 2>/dev/null) && "
                       "[ -n \"$r\" ] && echo \"$r $c\"; done")
        if meminfo is None or procs is None:
            return None
        info = {}
        for line in meminfo.splitlines():
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                info[k.strip()] = int(v.split()[0])
        rows = []
        for line in procs.splitlines():
            kb, _, comm = line.partition(" ")
            if kb.isdigit():
                rows.append((int(kb), comm.strip()))
        return info, rows
    finally:
        vm.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--sizes", default="256,128")
    ap.add_argument("--floor", type=int, default=64)
    ap.add_argument("--docker", action="store_true", help="with the user Docker engine")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    works = {}
    for mem in [int(s) for s in args.sizes.split(",")]:
        r = boot_and_measure(out, mem, args.docker)
        works[mem] = r is not None
        if r is None:
            print(f"-m {mem}: no working console", flush=True)
            continue
        info, rows = r
        used = info["MemTotal"] - info["MemAvailable"]
        print(f"-m {mem}: MemTotal {info['MemTotal'] // 1024} MiB, used (MemTotal - MemAvailable)"
              f" {used / 1024:.1f} MiB; Shmem (tmpfs) {info.get('Shmem', 0) / 1024:.1f} MiB",
              flush=True)
        by_comm = {}
        for kb, comm in rows:
            n, total = by_comm.get(comm, (0, 0))
            by_comm[comm] = (n + 1, total + kb)
        for comm, (n, kb) in sorted(by_comm.items(), key=lambda x: -x[1][1])[:12]:
            print(f"    {kb / 1024:7.1f} MiB  {comm}" + (f" ({n})" if n > 1 else ""))
    ok = [m for m, w in works.items() if w]
    if not ok:
        print(f"smallest -m: above {max(works)}")
        return
    hi = min(ok)
    lo = max([m for m, w in works.items() if not w and m < hi], default=args.floor)
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if boot_and_measure(out, mid, args.docker) is None:
            lo = mid
        else:
            hi = mid
        print(f"  bisect: works at {hi}, not at {lo}", flush=True)
    print(f"smallest -m that boots to a working console: {hi} MiB (not at {lo})")


if __name__ == "__main__":
    main()
