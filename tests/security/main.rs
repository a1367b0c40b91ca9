//! Security regression tests (issue 15): each module is one class of attack, tried as an attacker would
//! (crafted images pushed to a test registry, symlinks, a second local user, hostile files), asserting
//! what the victim would check. `docs/SECURITY.md` maps each promise to its test.

mod oci;
mod parsers;
mod paths;
mod seccomp;
mod store;
