# rOS: build the boot image from Debian packages and our Rust binaries, boot it in QEMU.
#   make run    build everything and boot into the console (Ctrl-A X quits QEMU)
#   make test   unit tests, then QEMU boot tests
SHELL := /bin/bash
BUILD ?= build
OUT := $(BUILD)/out
TARGET := x86_64-unknown-linux-gnu
MEM ?= 512
QEMU_APPEND ?=
QEMU_EXTRA ?=
# rancher.autologin=ttyS0: a root shell on the serial console without a password, for
# trying the image (installed disks ask for a login).
KERNEL_ARGS := console=ttyS0 quiet panic=-1 root=/dev/vda2 rancher.autologin=ttyS0 $(QEMU_APPEND)
CARGO ?= cargo
# make image ROS_VERSION=V (the release, default the workspace version plus the commit),
# ROS_SIGNING_KEY=FILE (the bundle's signing key, default the build tree's own, made once
# in build/keys), ROS_TRUSTED_KEYS=DIR (more *.pub keys the image trusts for upgrades).
export ROS_VERSION ROS_SIGNING_KEY ROS_TRUSTED_KEYS

.PHONY: all deps image run test unit-test boot-test lint bench clean

all: image

# Host packages the build and the tests need (apt-get on a fresh Debian 12).
deps: $(BUILD)/.deps
$(BUILD)/.deps: scripts/install-deps.sh initramfs/from-source.sh initramfs/lib.sh
	scripts/install-deps.sh $(BUILD)
	@mkdir -p $(BUILD) && touch $@

rust: deps
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked \
		--target $(TARGET) -p ros-init -p ros-cli
	$(CARGO) build --release --locked -p ros-image -p ros-os

image: rust
	initramfs/build.sh $(BUILD)

run: image
	qemu-system-x86_64 -accel tcg -m $(MEM) -smp 2 -nographic -no-reboot \
		-kernel $(OUT)/vmlinuz -initrd $(OUT)/initrd \
		-drive file=$(OUT)/ros.img,if=virtio,format=raw,readonly=on \
		-netdev user,id=n0 -device virtio-net-pci,netdev=n0 -cpu qemu64,+rdrand \
		-append "$(KERNEL_ARGS)" $(QEMU_EXTRA)

# Needs cargo and shellcheck only (make deps installs shellcheck): no Go, no Debian sources.
# cargo-deny (licences, bans, sources: deny.toml) is built from crates.io into cargo's own
# bin directory the first time, about 3 minutes; advisories are not checked (deny.toml says why).
CARGO_DENY_VERSION := 0.20.2
# The image's scripts run under busybox ash, which has `local` and `exec -a`.
IMAGE_SCRIPTS = $(shell grep -rlE '^\#!/bin/(ba)?sh' images | sort)
lint:
	@command -v shellcheck >/dev/null || { echo "make lint: shellcheck not found (make deps installs it)" >&2; exit 1; }
	@$(CARGO) deny --version 2>/dev/null | grep -qx "cargo-deny $(CARGO_DENY_VERSION)" || \
		$(CARGO) install --locked --quiet cargo-deny@$(CARGO_DENY_VERSION)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) deny --offline check licenses bans sources
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked --quiet
	shellcheck -S warning scripts/*.sh initramfs/*.sh .ci/run
	shellcheck -s sh -e SC3043,SC3038 -S warning $(IMAGE_SCRIPTS)

unit-test: deps
	$(CARGO) test --workspace --locked

boot-test: image
	ROS_IMAGE_DIR=$(abspath $(OUT)) $(CARGO) test --locked --no-fail-fast -p boot-tests -- --ignored --test-threads=1

test: deps lint unit-test boot-test

bench: image
	bench/boot.py $(OUT)

clean:
	rm -rf $(BUILD) target
