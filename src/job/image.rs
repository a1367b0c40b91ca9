//! Image acquisition: the image from the store, pulled first when the pull policy says so.

use std::fmt;
use std::str::FromStr;

use runtime::image::pull::{NoProgress, PullOptions, pull};
use runtime::image::registry::{RegistryClient, RegistryOptions};
use runtime::image::source::Source;
use runtime::image::store::{Image, ImageName, Store, StoreError};

use crate::error::{CliError, CliResult};

/// `--pull`: when to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only when the store does not have it.
    #[default]
    Missing,
    /// Every time.
    Always,
    /// Never: the store must have it.
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PullPolicy {
    type Err = CliError;

    fn from_str(text: &str) -> Result<PullPolicy, CliError> {
        match text {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(CliError::new(format!(
                "--pull {other}: use missing, always or never"
            ))),
        }
    }
}

/// The image `name` from `store`, pulled first when `policy` says so; `before_pull` is called when it is
/// about to pull.
pub fn acquire(
    store: &Store,
    name: &ImageName,
    policy: PullPolicy,
    options: &RegistryOptions,
    before_pull: impl FnOnce(),
) -> CliResult<Image> {
    if policy != PullPolicy::Always {
        match store.lookup(name) {
            Ok(image) => return Ok(image),
            Err(StoreError::NotFound(_)) if policy == PullPolicy::Missing => {}
            Err(e) => return Err(e.into()),
        }
    }
    let source: Box<dyn Source> = match name {
        ImageName::Registry(r) => Box::new(RegistryClient::new(r, options)?),
        ImageName::Layout { dir, .. } => Box::new(runtime::image::layout::OciLayout::open(dir)?),
    };
    before_pull();
    eprintln!("pulling {name}");
    Ok(pull(
        store,
        source.as_ref(),
        name,
        &PullOptions::new(&NoProgress),
    )?)
}
