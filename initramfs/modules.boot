# Modules in the initrd: only what reaching the read-only root needs.
virtio_pci
virtio_blk
squashfs
overlay
