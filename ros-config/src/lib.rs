//! Pure configuration for rOS: service definitions and cloud-config.
//!
//! Owns parsing, layering, validation and dotted get/set. Must not depend on nix, libc,
//! tokio or tonic: everything here is testable without root. `serde_yaml` is used only
//! inside this crate so that replacing it touches one module.

pub mod service;

pub use service::{ServiceFile, ServiceSpec};
