//! The integration-test harness: real registries (plain, TLS + token auth, TLS + Basic auth, mirrors), test
//! images built from scratch (busybox base, malicious layers, indexes), a pusher independent of the product's
//! registry client, and a runner for the `dstack` binary as root or as an unprivileged user.
//!
//! Use from `tests/NAME.rs` with `mod common;` and `use common::*;`. See `tests/harness.rs` for examples.
#![allow(dead_code, unused_imports)]

pub mod busybox;
pub mod dstack;
pub mod faulty;
pub mod http;
pub mod image;
pub mod process;
pub mod push;
pub mod registry;
pub mod slurm;
pub mod tls;
pub mod token_server;

pub use busybox::{
    busybox_image, busybox_layer, busybox_registry, busybox_workflow, push_busybox,
    two_platform_images,
};
pub use dstack::{Dstack, Output, RunAs, Running};
pub use image::{
    Compression, Image, ImageBuilder, Index, Layer, LayerBuilder, ManifestFormat, Meta, Platform,
    RawEntry,
};
pub use registry::{RegistryKind, TestRegistry};
pub use token_server::TokenOptions;

/// The registry user who may pull and push everything (token and Basic registries).
pub const REGISTRY_USER: &str = "alice";
pub const REGISTRY_PASSWORD: &str = "wonderland";
/// The identity token (OAuth2 refresh token) the token server takes for `REGISTRY_USER`.
pub const REGISTRY_IDENTITY_TOKEN: &str = "identity-token-for-alice-7f3a";
