//! OCI bundles for the `dstack-oci` tests: the busybox root filesystem, and the spec edits that let an
//! unprivileged user run a bundle.

use std::path::Path;

use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec,
};

use crate::busybox::busybox_layer;
use crate::image::Compression;

/// Unpacks the static busybox into `rootfs`, with the layer's modes and owners.
pub fn unpack_busybox(rootfs: &Path) {
    let tar = busybox_layer().build(Compression::None).tar;
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_permissions(true);
    archive.unpack(rootfs).expect("unpack busybox");
}

/// `size` ids from `container_id` inside the container onto `host_id` on the host.
pub fn id_mapping(container_id: u32, host_id: u32, size: u32) -> LinuxIdMapping {
    LinuxIdMappingBuilder::default()
        .container_id(container_id)
        .host_id(host_id)
        .size(size)
        .build()
        .expect("an id mapping has every field")
}

/// What an unprivileged user's bundle needs: a user namespace of its own with these maps, and neither
/// cgroup limits nor a cgroup mount (the user may not write the host's cgroups).
pub fn make_rootless(
    spec: &mut Spec,
    uid_mappings: Vec<LinuxIdMapping>,
    gid_mappings: Vec<LinuxIdMapping>,
) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .expect("a namespace needs only its type"),
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(uid_mappings));
    linux.set_gid_mappings(Some(gid_mappings));
    linux.set_resources(None);
    spec.set_linux(Some(linux));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.typ().as_deref() != Some("cgroup"));
    spec.set_mounts(Some(mounts));
}
