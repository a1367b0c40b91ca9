//! Attacks on the host and on other users (issue 15), one module per class, as an attacker would try them:
//! crafted images pushed to a test registry, hostile files, a second local user.

#[path = "../common/mod.rs"]
mod common;

mod seccomp;
