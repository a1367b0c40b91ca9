//! Security regression tests (issue 15): each module attacks one class, as an attacker would, with crafted
//! images, bundles, symlinks and a second local user, and checks what the victim would check.

#[path = "../common/mod.rs"]
mod common;

mod parsers;
