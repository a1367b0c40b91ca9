//! The integration-test harness: real registries (plain, TLS + token auth, TLS + Basic auth, mirrors), test
//! images built from scratch (busybox base, malicious layers, indexes), a pusher independent of the product's
//! registry client, and a runner for the `dstack` binary as root or as an unprivileged user.
//!
//! Also the fixtures both crates' tests share: a fake NVIDIA driver (`gpu`), OCI bundles (`oci`), raw layer
//! tars (`raw_tar`). A dev-dependency of both crates, compiled once rather than into every test binary. Use
//! from `tests/NAME.rs` with `use test_support::*;`. See `tests/harness.rs` for examples.

pub mod busybox;
pub mod dstack;
pub mod faulty;
pub mod gpu;
pub mod http;
pub mod image;
pub mod oci;
pub mod process;
pub mod pulled;
pub mod push;
pub mod raw_tar;
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
pub use process::wait_for;
pub use pulled::PulledImage;
pub use registry::{RegistryKind, TestRegistry};
pub use token_server::TokenOptions;

/// The registry user who may pull and push everything (token and Basic registries).
pub const REGISTRY_USER: &str = "alice";
pub const REGISTRY_PASSWORD: &str = "wonderland";
/// The identity token (OAuth2 refresh token) the token server takes for `REGISTRY_USER`.
pub const REGISTRY_IDENTITY_TOKEN: &str = "identity-token-for-alice-7f3a";

/// Runs a scenario `fn NAME(d: Dstack)` as two tests, `NAME::as_root` and `NAME::rootless` (the unprivileged
/// test user).
#[macro_export]
macro_rules! as_root_and_rootless {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn as_root() {
                super::$scenario($crate::Dstack::root());
            }
            #[test]
            fn rootless() {
                super::$scenario($crate::Dstack::rootless());
            }
        }
    };
}
