#!/usr/bin/env python3
"""Size: the image, what it is made of, and what the root is made of, compressed.

The image is one file, ros.img: a disk holding the boot partition (kernel, initrd,
syslinux) and the root (squashfs). It is measured as built and compressed (zstd -19: its
free space is zeros). The root's parts are estimated by compressing each staged file with
zstd -19 (as mksquashfs does, per 128 KiB block, so the parts add up to about the root),
each distinct file content once (squashfs stores duplicates once). The "without the
Docker engine" figure leaves out the engine's binaries and image.

Usage: bench/size.py BUILD_DIR   (after `make image`)
"""
import glob
import hashlib
import json
import os
import subprocess
import sys


def zstd_size(path):
    out = subprocess.run(["zstd", "-19", "-c", "-q", path], capture_output=True, check=True)
    return len(out.stdout)


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    out, root = os.path.join(build, "out"), os.path.join(build, "stage", "root")
    disk = os.path.join(out, "ros.img")
    art = {
        "ros.img (the image, as built)": os.path.getsize(disk),
        "  boot partition: vmlinuz": os.path.getsize(os.path.join(out, "vmlinuz")),
        "  boot partition: initrd": os.path.getsize(os.path.join(out, "initrd")),
        "  root partition: squashfs": os.path.getsize(os.path.join(build, "stage", "root.img")),
    }
    parts = {}
    seen = set()

    # Layers of the unpacked image store only the docker image uses belong to the engine.
    store = os.path.join(root, "usr/share/ros/image-store")
    users = {}
    for record in glob.glob(os.path.join(store, "images", "*.json")):
        image = json.load(open(record))
        for layer in image["layers"]:
            users.setdefault(layer.split(":")[-1], set()).add(image["name"].split(":")[0])
    engine_layers = {
        "usr/share/ros/image-store/layers/" + h + "/"
        for h, names in users.items()
        if names == {"ros/docker"}
    }

    def is_engine(rel):
        return rel.startswith("usr/lib/ros/engine/") or any(
            rel.startswith(p) for p in engine_layers
        )

    def part_of(rel):
        if is_engine(rel):
            return "user Docker engine (binaries + image)"
        if rel.startswith("usr/share/ros/image-store/"):
            return "system service images"
        if rel.startswith("lib/modules/"):
            return "kernel modules"
        if rel in ("usr/bin/containerd", "usr/bin/containerd-shim-runc-v2", "usr/bin/crun"):
            return "containerd, shim, crun"
        if rel == "usr/bin/ros":
            return "ros (ours; init is in the initrd)"
        return "libraries, busybox, mke2fs, extlinux, config"

    paths = [os.path.join(d, n) for d, _, files in os.walk(root) for n in files]
    # The system's own files first: a file the engine shares with the system (containerd
    # and its shim) counts for the system, where it is needed without the engine too.
    paths.sort(key=lambda p: (is_engine(os.path.relpath(p, root)), p))
    for path in paths:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        rel = os.path.relpath(path, root)
        key = part_of(rel)
        parts[key] = parts.get(key, 0) + zstd_size(path)
    mib = lambda b: b / 1e6
    total = zstd_size(disk)
    print("| artifact | MB |\n|---|---:|")
    for f, b in art.items():
        print(f"| {f} | {mib(b):.1f} |")
    print(f"| **ros.img compressed** | **{mib(total):.1f}** |\n")
    print("| root part (zstd -19 per file, estimate) | MB |\n|---|---:|")
    for k, b in sorted(parts.items(), key=lambda x: -x[1]):
        print(f"| {k} | {mib(b):.1f} |")
    est = sum(parts.values())
    root_size = art["  root partition: squashfs"]
    print(f"| (sum of parts; the squashfs is {mib(root_size):.1f}) | {mib(est):.1f} |\n")
    docker = parts.get("user Docker engine (binaries + image)", 0) * root_size / est
    print(f"with the Docker engine: {mib(total):.1f} MB")
    print(f"without it: {mib(total - docker):.1f} MB")


if __name__ == "__main__":
    main()
