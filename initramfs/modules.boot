# Modules in the initrd: only what reaching the read-only root needs, and the RNG.
virtio_pci
virtio_blk
# The hardware RNG (QEMU's -device virtio-rng-pci), before anything asks the kernel for
# random numbers: until its pool is initialised, readers of /dev/urandom (chronyd,
# dropbearkey) make the kernel spin generating entropy from timer jitter.
virtio_rng
squashfs
overlay
# An installed disk (root=LABEL=RANCHER_STATE rootimg=/boot/root.img): ext4 and a loop device.
ext4
crc32c_generic
loop
