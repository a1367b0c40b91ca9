//! Text that comes from outside (images, registries, workflow files, bundles) on its way into a parser or
//! a message: cut to a readable length, bounded in size and nesting before a parser sees it, and parse
//! errors that say where and what.

mod clip;
mod json;
mod nesting;

pub use clip::{CLIP_CHARS, clip, quote, shorten};
pub use json::{JsonError, parse_json};
pub use nesting::{LIMIT_BYTES, LIMIT_DEPTH, LimitError, check_nesting, check_size, read_capped};
