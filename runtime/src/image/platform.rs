//! Platforms (`os/architecture[/variant]`) as image indexes name them, and how to pick one by value.
//!
//! Names are normalized as containerd does: `aarch64` is `arm64`, `x86_64` is `amd64`, `arm64/v8` is plain
//! `arm64`, a plain `arm` is `arm/v7`, `amd64/v1` is plain `amd64`.

use std::fmt;
use std::str::FromStr;

/// A platform an image can be built for. Construct it with [`Platform::host`], [`Platform::new`] or by parsing
/// `linux/arm64/v8`; comparisons go through [`Platform::matches`], which normalizes both sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error(
        "invalid platform {}: expected os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8",
        crate::text::quote(.0)
    )]
    Malformed(String),
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// The platform this process runs on, in OCI terms.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some(arm_variant())),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            other => (other, None),
        };
        Platform::new("linux", architecture, variant)
    }

    /// The same platform with containerd's normalization applied to architecture and variant.
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (architecture, variant) = match (arch.as_str(), variant.as_deref()) {
            ("i386", _) => ("386".to_string(), None),
            ("x86_64" | "x86-64" | "amd64", Some("v1") | None) => ("amd64".to_string(), None),
            ("x86_64" | "x86-64", v) => ("amd64".to_string(), v.map(str::to_string)),
            ("aarch64" | "arm64", Some("8" | "v8") | None) => ("arm64".to_string(), None),
            ("aarch64", v) => ("arm64".to_string(), v.map(str::to_string)),
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", None) => ("arm".to_string(), Some("v7".to_string())),
            ("arm", Some(v @ ("5" | "6" | "7" | "8"))) => {
                ("arm".to_string(), Some(format!("v{v}")))
            }
            (a, v) => (a.to_string(), v.map(str::to_string)),
        };
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Whether an image built for `candidate` is what `self` asks for: same os and architecture after
    /// normalization, and the same variant or none on the candidate's side.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.match_rank(candidate).is_some()
    }

    /// 2 for an exact match, 1 for a candidate without a variant, `None` for no match.
    pub(crate) fn match_rank(&self, candidate: &Platform) -> Option<u8> {
        let want = self.normalized();
        let have = candidate.normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return None;
        }
        match (&want.variant, &have.variant) {
            (w, h) if w == h => Some(2),
            (_, None) => Some(1),
            _ => None,
        }
    }
}

/// 32-bit ARM: v6 or v7, from the kernel's view of the CPU; v7 when it cannot tell.
fn arm_variant() -> &'static str {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let arch = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("CPU architecture"))
        .and_then(|rest| rest.split(':').nth(1))
        .map(|v| v.trim().trim_start_matches('v').to_string());
    match arch.as_deref() {
        Some("5" | "5TE" | "5TEJ") => "v5",
        Some("6" | "6TEJ") => "v6",
        _ => "v7",
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if valid_part(os) && valid_part(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if parts.iter().all(|p| valid_part(p)) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError::Malformed(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            p("linux/arm64/v8"),
            Platform::new("linux", "arm64", Some("v8"))
        );
        assert_eq!(p("linux/amd64").variant, None);
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/amd 64",
            "",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        let e = "amd64".parse::<Platform>().unwrap_err();
        assert!(e.to_string().contains("linux/amd64"), "{e}");
    }

    #[test]
    fn host_is_linux_with_an_oci_architecture() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host, Platform::new("linux", "amd64", None));
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host, Platform::new("linux", "arm64", Some("v8")));
        }
        assert!(host.matches(&host));
    }

    #[test]
    fn arm64_with_and_without_v8_match_each_other() {
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/aarch64").matches(&p("linux/arm64/v8")));
        assert!(!p("linux/arm64").matches(&p("linux/amd64")));
        assert!(!p("linux/arm64").matches(&p("windows/arm64")));
    }

    #[test]
    fn arm_variants_are_distinct_and_plain_arm_is_v7() {
        assert!(p("linux/arm/v7").matches(&p("linux/arm")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(p("linux/armhf").matches(&p("linux/arm/v7")));
    }

    #[test]
    fn amd64_variants_need_an_exact_match_or_none() {
        assert!(p("linux/amd64").matches(&p("linux/amd64/v1")));
        assert!(p("linux/x86_64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/amd64/v3")));
        assert!(p("linux/amd64/v3").matches(&p("linux/amd64/v3")));
        assert!(p("linux/amd64/v3").matches(&p("linux/amd64")));
        assert_eq!(
            p("linux/amd64/v3").match_rank(&p("linux/amd64/v3")),
            Some(2)
        );
        assert_eq!(p("linux/amd64/v3").match_rank(&p("linux/amd64")), Some(1));
    }
}
