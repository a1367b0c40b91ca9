//! Images: references, the registry client, the content store and layer unpacking.
//!
//! The flow of a pull: a [`reference::Reference`] names the image; a [`source::Source`] (the registry client,
//! or an OCI layout on disk) hands out manifests and blobs; the [`store::Store`] ingests and verifies blobs,
//! unpacks each layer once, and records the image.

pub mod digest;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod source;
pub mod store;
pub mod unpack;

pub use digest::Digest;
