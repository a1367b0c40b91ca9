//! The start of most `dstack run docker` tests: a registry serving one image, and a dstack environment that
//! has pulled it.

use crate::dstack::{Dstack, Output};
use crate::image::Image;
use crate::registry::TestRegistry;

/// An image pushed to a plain registry of its own and pulled by `dstack`.
pub struct PulledImage {
    pub dstack: Dstack,
    /// The image's reference, as `dstack run docker` takes it.
    pub image: String,
    /// Serves the image for as long as the test runs.
    _registry: TestRegistry,
}

impl PulledImage {
    /// Pushes `image` as `name_tag` (e.g. `test/img:1`) and pulls it with `dstack`.
    pub fn new(dstack: Dstack, name_tag: &str, image: &Image) -> PulledImage {
        let registry = TestRegistry::plain();
        registry.push(name_tag, image);
        let image = registry.image(name_tag);
        dstack.run(&["pull", "-q", &image]).assert_success();
        PulledImage {
            dstack,
            image,
            _registry: registry,
        }
    }

    /// `dstack run docker IMAGE -c SCRIPT`.
    pub fn sh(&self, script: &str) -> Output {
        self.sh_with(&[], script)
    }

    /// `dstack run docker IMAGE FLAGS... -c SCRIPT`.
    pub fn sh_with(&self, flags: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "docker", self.image.as_str()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["-c", script]);
        self.dstack.run(&args)
    }
}
