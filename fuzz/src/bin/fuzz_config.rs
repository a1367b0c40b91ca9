//! Image configs as a registry sends them, parsed as a pull does and read as a run does (diff ids,
//! user, environment, working directory): no panic, errors stay short and say where.

use std::process::ExitCode;

use dstack_fuzz::{Target, run, short_message};
use oci_spec::image::ImageConfiguration;
use runtime::image::Digest;

fn check(input: &[u8]) -> Result<String, String> {
    let config = match runtime::text::parse_json::<ImageConfiguration>(input) {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            if !message.starts_with("line ") {
                return Err(format!("a JSON error that does not say where: {message}"));
            }
            return short_message(&message);
        }
    };
    for id in config.rootfs().diff_ids() {
        if let Err(e) = id.parse::<Digest>() {
            short_message(&e.to_string())?;
        }
    }
    if let Some(process) = config.config() {
        for entry in process.env().iter().flatten() {
            let _ = entry.split_once('=');
        }
        if let Some(user) = process.user() {
            let shown = runtime::text::quote(user);
            short_message(&shown)?;
        }
        if let Some(dir) = process.working_dir() {
            short_message(&runtime::text::clip(dir))?;
        }
    }
    Ok("ok".into())
}

fn main() -> ExitCode {
    run(
        Target {
            name: "config",
            dictionary: &[
                b"{",
                b"}",
                b"[",
                b"]",
                b",",
                b":",
                b"\"",
                b"null",
                b"true",
                b"0",
                b"-1",
                b"4294967295",
                b"1e999",
                b"\"User\":",
                b"\"Env\":[",
                b"\"Entrypoint\":",
                b"\"Cmd\":",
                b"\"WorkingDir\":",
                b"\"config\":{",
                b"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[",
                b"\"history\":[",
                b"\"os\":\"linux\",",
                b"\"architecture\":\"amd64\",",
                b"\"created\":\"2023-11-14T22:13:20Z\"",
                b"\\u0000",
                b"\\ud800",
                b"\"\\\"",
            ],
            align: 0,
            max_len: 64 << 10,
        },
        check,
    )
}
