//! Image references, digests and platforms as a user or a workflow writes them: no panic, a parsed
//! reference prints as text that parses back to it, and errors stay short.

use std::process::ExitCode;

use dstack_fuzz::{Target, run, short_message};
use runtime::image::Digest;
use runtime::image::platform::Platform;
use runtime::image::reference::Reference;

fn check(input: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(input);
    if let Err(e) = text.parse::<Digest>() {
        short_message(&e.to_string())?;
    }
    if let Err(e) = text.parse::<Platform>() {
        short_message(&e.to_string())?;
    }
    match text.parse::<Reference>() {
        Ok(reference) => {
            let printed = reference.to_string();
            match printed.parse::<Reference>() {
                Ok(again) if again == reference => Ok("ok".into()),
                Ok(again) => Err(format!(
                    "{text:?} parses as {printed:?}, which parses as a different {again:?}"
                )),
                Err(e) => Err(format!(
                    "{text:?} parses as {printed:?}, which does not parse: {e}"
                )),
            }
        }
        Err(e) => short_message(&e.to_string()),
    }
}

fn main() -> ExitCode {
    run(
        Target {
            name: "reference",
            dictionary: &[
                b"/",
                b":",
                b"@",
                b"sha256:",
                b"docker.io/",
                b"localhost:5000/",
                b"library/",
                b"__",
                b".",
                b"-",
                b"latest",
                b"A",
                b"@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                b"linux/amd64",
                b"arm64/v8",
            ],
            align: 0,
            max_len: 4096,
        },
        check,
    )
}
