//! QEMU boot test harness.
