//! A volume: a host path bound into the container, as `volumes:` and `-v/--volume` write it
//! (`HOST:CONTAINER[:ro]`, Docker's and modern dstack's form, or a map `{host, path, read_only}`).
//! Only the text is checked here; `plan::mounts` resolves and validates the paths.

use std::fmt;

/// One volume as the user wrote it: `host` may be relative (to the project directory) or start with `~`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: String,
    /// The path inside the container.
    pub path: String,
    pub read_only: bool,
}

impl Volume {
    /// Parses `HOST:CONTAINER[:ro|rw]`; the message says what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Volume, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, path, read_only) = match parts.as_slice() {
            [host, path] => (*host, *path, false),
            [host, path, "ro"] => (*host, *path, true),
            [host, path, "rw"] => (*host, *path, false),
            [_, _, option] => {
                return Err(format!(
                    "`{text}` has the option `{option}`: only `ro` (read-only) or `rw` may follow the \
                     container path"
                ));
            }
            _ => {
                return Err(format!(
                    "`{text}` is not a volume: write `HOST:CONTAINER` or `HOST:CONTAINER:ro`, e.g. \
                     `/data:/data:ro`"
                ));
            }
        };
        if host.is_empty() || path.is_empty() {
            return Err(format!(
                "`{text}` has an empty {} path: write `HOST:CONTAINER[:ro]`",
                if host.is_empty() { "host" } else { "container" }
            ));
        }
        Ok(Volume {
            host: host.to_string(),
            path: path.to_string(),
            read_only,
        })
    }
}

/// The `HOST:CONTAINER[:ro]` form, which messages and run records show.
impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.path)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_form_parses_with_and_without_ro() {
        assert_eq!(
            Volume::parse("/data:/data:ro").unwrap(),
            Volume {
                host: "/data".into(),
                path: "/data".into(),
                read_only: true
            }
        );
        let v = Volume::parse("./out:/out").unwrap();
        assert_eq!((v.host.as_str(), v.read_only), ("./out", false));
        assert_eq!(v.to_string(), "./out:/out");
        assert!(!Volume::parse("a:/b:rw").unwrap().read_only);
    }

    #[test]
    fn malformed_entries_say_what_to_write() {
        for bad in ["/data", "/a:/b:ro:x", ":/b", "/a:"] {
            let err = Volume::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert!(Volume::parse("/a:/b:z").unwrap_err().contains("`z`"));
    }
}
