//! Image references as Docker users write them, normalized the way Docker does.
//!
//! `ubuntu` is `docker.io/library/ubuntu:latest`; `user/img` is `docker.io/user/img:latest`; the first
//! component is a registry host only when it contains `.` or `:` or is `localhost`
//! (`ghcr.io/org/img:tag`, `host:5000/repo`, `localhost/repo`). A digest (`repo@sha256:...`) wins over a tag
//! for fetching; a tag given with it is kept for display.
//!
//! Not oci-spec's `distribution::Reference`: that one refuses bracketed IPv6 registries (`[::1]:5000/r`),
//! accepts what Docker refuses (`Myhost/repo`, `ho_st.io/repo`, upper-case digest hex) and says only
//! "invalid reference format" where these errors name the problem.

use std::fmt;
use std::str::FromStr;

use super::Digest;
use super::digest::DigestError;

/// The registry a reference without a host belongs to, as users write it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the full name (`registry/repository`).
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed, normalized image reference.
///
/// ```
/// use runtime::image::reference::Reference;
/// let r: Reference = "ubuntu".parse().unwrap();
/// assert_eq!(r.to_string(), "docker.io/library/ubuntu:latest");
/// assert_eq!(r.api_host(), "registry-1.docker.io");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference \"\": the image name is empty")]
    Empty,
    #[error("invalid reference {}: repository names must be lowercase", crate::text::quote(.0))]
    Uppercase(String),
    #[error("invalid reference {}: {reason}", crate::text::quote(.input))]
    Malformed { input: String, reason: String },
    #[error(
        "invalid reference {}: the name is longer than {NAME_MAX} characters",
        crate::text::quote(.0)
    )]
    TooLong(String),
    #[error(
        "invalid reference {}: a tag is 1 to {TAG_MAX} letters, digits, '_', '.' or '-' and does not start \
         with '.' or '-'",
        crate::text::quote(.0)
    )]
    Tag(String),
    #[error("invalid reference {}", crate::text::quote(.input))]
    Digest {
        input: String,
        #[source]
        source: DigestError,
    },
}

impl Reference {
    /// The registry as written and as credentials are keyed: `docker.io`, `ghcr.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/ubuntu`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given or defaulted (a digest-only reference has none).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest: `docker.io/library/ubuntu`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host (and port) that serves the registry API: `docker.io` is served by `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The same repository with another tag or digest, for following an index entry by digest.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

/// The API host for a registry name as users write it.
pub(crate) fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Reference, ReferenceError> {
        parse(input)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

fn malformed(input: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError::Malformed {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn parse(input: &str) -> Result<Reference, ReferenceError> {
    if input.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(malformed(input, "it contains whitespace"));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, digest)) => {
            let digest = digest
                .parse::<Digest>()
                .map_err(|source| ReferenceError::Digest {
                    input: input.to_string(),
                    source,
                })?;
            (rest, Some(digest))
        }
        None => (input, None),
    };
    // A tag follows the last ':' that comes after the last '/'; an earlier ':' is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            if !valid_tag(tag) {
                return Err(ReferenceError::Tag(input.to_string()));
            }
            (&rest[..last_slash + i], Some(tag.to_string()))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(malformed(input, "the image name is empty"));
    }
    if name.len() > NAME_MAX {
        return Err(ReferenceError::TooLong(input.to_string()));
    }
    let (registry, repository) = split_registry(name);
    if let Some(registry) = &registry
        && !valid_domain(registry)
    {
        return Err(malformed(
            input,
            format!(
                "{} is not a valid registry host[:port]",
                crate::text::quote(registry)
            ),
        ));
    }
    let mut registry = registry.unwrap_or_else(|| DOCKER_HUB.to_string());
    if registry == "index.docker.io" {
        registry = DOCKER_HUB.to_string();
    }
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase(input.to_string()));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(malformed(input, "a repository path component is empty"));
        }
        if !valid_path_component(component) {
            return Err(malformed(
                input,
                format!(
                    "repository component {} may only hold lowercase letters and digits, separated by \
                     '.', '_', '__' or dashes",
                    crate::text::quote(component)
                ),
            ));
        }
    }
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    if registry.len() + 1 + repository.len() > NAME_MAX {
        return Err(ReferenceError::TooLong(input.to_string()));
    }
    let tag = match (tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (tag, _) => tag,
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule: the first component is a registry when it contains `.` or `:` or is `localhost`.
fn split_registry(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]` where host is DNS labels or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if host.is_empty() {
        return domain.starts_with('[');
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// `[a-z0-9]+` runs separated by `.`, `_`, `__` or one or more `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !tag.is_empty()
        && tag.len() <= TAG_MAX
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names_are_normalized() {
        let u = r("ubuntu");
        assert_eq!(u.registry(), "docker.io");
        assert_eq!(u.repository(), "library/ubuntu");
        assert_eq!(u.tag(), Some("latest"));
        assert_eq!(u.to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(u.api_host(), "registry-1.docker.io");
        assert_eq!(r("user/img").to_string(), "docker.io/user/img:latest");
        assert_eq!(
            r("docker.io/ubuntu:22.04").to_string(),
            "docker.io/library/ubuntu:22.04"
        );
        assert_eq!(
            r("index.docker.io/library/ubuntu").name(),
            "docker.io/library/ubuntu"
        );
    }

    #[test]
    fn registries_are_recognized_by_dot_colon_or_localhost() {
        let g = r("ghcr.io/org/img:tag");
        assert_eq!(
            (g.registry(), g.repository(), g.tag()),
            ("ghcr.io", "org/img", Some("tag"))
        );
        assert_eq!(g.api_host(), "ghcr.io");
        let h = r("host:5000/repo");
        assert_eq!(
            (h.registry(), h.repository(), h.tag()),
            ("host:5000", "repo", Some("latest"))
        );
        let l = r("localhost/repo");
        assert_eq!((l.registry(), l.repository()), ("localhost", "repo"));
        let lp = r("localhost:5000/a/b/c:v1.2");
        assert_eq!(
            (lp.registry(), lp.repository(), lp.tag()),
            ("localhost:5000", "a/b/c", Some("v1.2"))
        );
        let ip6 = r("[::1]:5000/repo");
        assert_eq!(ip6.registry(), "[::1]:5000");
        // Without a dot, colon or "localhost", the first component is a Docker Hub namespace.
        assert_eq!(r("myhost/repo").registry(), "docker.io");
        assert_eq!(r("myhost/repo").repository(), "myhost/repo");
    }

    #[test]
    fn digests_win_for_fetching_and_tags_are_kept_for_display() {
        let d = r(&format!("repo@sha256:{HEX}"));
        assert_eq!(d.tag(), None);
        assert_eq!(d.tag_or_digest(), format!("sha256:{HEX}"));
        assert_eq!(
            d.to_string(),
            format!("docker.io/library/repo@sha256:{HEX}")
        );
        let td = r(&format!("host:5000/repo:v1@sha256:{HEX}"));
        assert_eq!(td.tag(), Some("v1"));
        assert_eq!(td.tag_or_digest(), format!("sha256:{HEX}"));
        assert_eq!(td.to_string(), format!("host:5000/repo:v1@sha256:{HEX}"));
    }

    #[test]
    fn separators_in_repository_names() {
        for ok in ["a.b/c_d", "a__b", "a-b", "a---b", "x/y.z-w__v"] {
            r(ok);
        }
        for bad in [
            "a..b", "a___b", "-a", "a-", "a_", "_a", "a/.b", "a//b", "a/",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        let e = "Ubuntu".parse::<Reference>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid reference \"Ubuntu\": repository names must be lowercase"
        );
        assert_eq!("".parse::<Reference>().unwrap_err(), ReferenceError::Empty);
        assert!(matches!(
            "ubuntu:".parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            "ubuntu:-x".parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            "ubuntu:a/b".parse::<Reference>(),
            Err(ReferenceError::Malformed { .. })
        ));
        let long_tag = format!("ubuntu:{}", "a".repeat(129));
        assert!(matches!(
            long_tag.parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
        r(&format!("ubuntu:{}", "a".repeat(128)));
        let long_name = format!("x/{}", "a".repeat(260));
        assert!(matches!(
            long_name.parse::<Reference>(),
            Err(ReferenceError::TooLong(_))
        ));
        assert!(matches!(
            "repo@sha256:abc".parse::<Reference>(),
            Err(ReferenceError::Digest { .. })
        ));
        assert!(matches!(
            "repo@md5:abc".parse::<Reference>(),
            Err(ReferenceError::Digest { .. })
        ));
        assert!(matches!(
            "host:port/repo".parse::<Reference>(),
            Err(ReferenceError::Malformed { .. })
        ));
        assert!(matches!(
            "ho_st.io/repo".parse::<Reference>(),
            Err(ReferenceError::Malformed { .. })
        ));
        assert!(matches!(
            "a b".parse::<Reference>(),
            Err(ReferenceError::Malformed { .. })
        ));
        assert!(matches!(
            ":tag".parse::<Reference>(),
            Err(ReferenceError::Malformed { .. })
        ));
        let e = "ghcr.io/Org/img".parse::<Reference>().unwrap_err();
        assert!(matches!(e, ReferenceError::Uppercase(_)));
    }

    #[test]
    fn registry_hosts_may_be_uppercase_but_repositories_may_not() {
        assert_eq!(
            r("Registry.Example:5000/repo").registry(),
            "Registry.Example:5000"
        );
        // Docker treats an uppercase first component without dot or colon as a (bad) repository name.
        assert!(matches!(
            "Myhost/repo".parse::<Reference>(),
            Err(ReferenceError::Uppercase(_))
        ));
    }
}
