# Modules in the initrd: only what reaching the read-only root needs.
virtio_pci
virtio_blk
squashfs
overlay
# An installed disk (root=LABEL=RANCHER_STATE rootimg=/boot/root.img): ext4 and a loop device.
ext4
crc32c_generic
loop
