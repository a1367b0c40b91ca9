//! The image's `NVIDIA_REQUIRE_*` conditions, checked before the job starts as libnvidia-container does, so that
//! an image built for a newer CUDA than the host's driver fails with a clear message instead of "CUDA driver
//! version is insufficient" from inside. `NVIDIA_DISABLE_REQUIRE=true` skips the check.
//!
//! A condition is alternatives separated by spaces, each a comma-separated list that must all hold:
//! `cuda>=12.4 brand=tesla,driver>=535,driver<536` holds when the host's CUDA is 12.4 or newer, or its driver is
//! of the 535 branch (which the image's CUDA compatibility libraries support). Words: `cuda`, `driver`, `arch`
//! and `brand`; the last two are not known here and count as met (images list every brand anyway).

use super::GpuError;

/// The CUDA version a driver supports, from its version: the first driver of each CUDA release (CUDA's
/// release notes, table 3), newest first. A driver newer than the table's end supports at least its last entry.
const CUDA_OF_DRIVER: [(&str, &str); 19] = [
    ("580.65.06", "13.0"),
    ("575.51.03", "12.9"),
    ("570.26", "12.8"),
    ("560.28.03", "12.6"),
    ("555.42.02", "12.5"),
    ("550.54.14", "12.4"),
    ("545.23.06", "12.3"),
    ("535.54.03", "12.2"),
    ("530.30.02", "12.1"),
    ("525.60.13", "12.0"),
    ("520.61.05", "11.8"),
    ("515.43.04", "11.7"),
    ("510.39.01", "11.6"),
    ("495.29.05", "11.5"),
    ("470.42.01", "11.4"),
    ("465.19.01", "11.3"),
    ("460.27.03", "11.2"),
    ("455.23", "11.1"),
    ("450.36.06", "11.0"),
];

/// The newest CUDA version the driver `version` supports (`None` before CUDA 11).
pub(crate) fn cuda_of_driver(version: &str) -> Option<&'static str> {
    CUDA_OF_DRIVER
        .iter()
        .find(|(first, _)| compare(version, first) != std::cmp::Ordering::Less)
        .map(|(_, cuda)| *cuda)
}

/// Numeric, part by part: `550.54.15` > `550.54.14` > `535.104.05`; missing parts count as 0.
pub(crate) fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (mut a, mut b) = (parts(a), parts(b));
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    a.cmp(&b)
}

/// Checks every `NVIDIA_REQUIRE_*` of the job's environment against the host's driver `version`.
pub(crate) fn check(env: &[(String, String)], version: Option<&str>) -> Result<(), GpuError> {
    let disabled = env.iter().any(|(k, v)| {
        k == "NVIDIA_DISABLE_REQUIRE"
            && matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "t"
            )
    });
    let Some(version) = version.filter(|_| !disabled) else {
        return Ok(());
    };
    let cuda = cuda_of_driver(version);
    for (key, condition) in env.iter().filter(|(k, _)| k.starts_with("NVIDIA_REQUIRE_")) {
        if holds(condition, version, cuda).map_err(|expression| GpuError::BadRequirement {
            key: key.clone(),
            expression,
        })? {
            continue;
        }
        let first = condition
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        return Err(GpuError::RequirementUnmet {
            condition: first,
            driver: version.to_string(),
            cuda: cuda.unwrap_or("older than 11.0").to_string(),
        });
    }
    Ok(())
}

/// Whether `condition` holds; `Err(expression)` for one that cannot be read.
fn holds(condition: &str, driver: &str, cuda: Option<&str>) -> Result<bool, String> {
    let mut any = false;
    let mut none_given = true;
    for alternative in condition.split(' ').filter(|a| !a.is_empty()) {
        none_given = false;
        let mut all = true;
        for term in alternative.split(',').filter(|t| !t.is_empty()) {
            if !term_holds(term, driver, cuda)? {
                all = false;
                break;
            }
        }
        if all {
            any = true;
            break;
        }
    }
    Ok(any || none_given)
}

fn term_holds(term: &str, driver: &str, cuda: Option<&str>) -> Result<bool, String> {
    let bad = || term.to_string();
    let at = term.find(['<', '>', '=', '!']).ok_or_else(bad)?;
    let (name, rest) = term.split_at(at);
    let op_len = rest.find(|c| !"<>=!".contains(c)).ok_or_else(bad)?;
    let (op, value) = rest.split_at(op_len);
    if name.is_empty() || value.is_empty() {
        return Err(bad());
    }
    let version_holds = |have: &str| -> Result<bool, String> {
        if !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad());
        }
        let ord = compare(have, value);
        use std::cmp::Ordering::*;
        Ok(match op {
            "=" => ord == Equal,
            "!=" => ord != Equal,
            "<" => ord == Less,
            "<=" => ord != Greater,
            ">" => ord == Greater,
            ">=" => ord != Less,
            _ => return Err(bad()),
        })
    };
    match name.to_ascii_lowercase().as_str() {
        "cuda" => cuda.map_or(Ok(false), version_holds),
        "driver" => version_holds(driver),
        "arch" | "brand" => Ok(true),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a CUDA 12.8 base image says (shortened).
    const CUDA_12_8: &str = "cuda>=12.8 brand=unknown,driver>=470,driver<471 brand=tesla,driver>=535,driver<536 \
        brand=nvidia,driver>=550,driver<551";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_driver_version_says_which_cuda_it_supports() {
        assert_eq!(cuda_of_driver("550.54.15"), Some("12.4"));
        assert_eq!(cuda_of_driver("535.104.05"), Some("12.2"));
        assert_eq!(cuda_of_driver("570.124.06"), Some("12.8"));
        assert_eq!(cuda_of_driver("590.10"), Some("13.0"));
        assert_eq!(cuda_of_driver("440.33.01"), None);
    }

    /// A 12.8 image on a 12.2-era driver of a branch its compatibility libraries support starts; on a branch
    /// they do not support it is refused up front; a new enough driver needs no compat at all.
    #[test]
    fn an_image_for_a_newer_cuda_is_refused_unless_its_compat_branch_matches() {
        let image = env(&[("NVIDIA_REQUIRE_CUDA", CUDA_12_8)]);
        assert!(check(&image, Some("570.124.06")).is_ok());
        assert!(check(&image, Some("535.104.05")).is_ok());
        let err = check(&image, Some("545.23.08")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image requires cuda>=12.8 but this machine's NVIDIA driver 545.23.08 supports CUDA 12.3: \
             update the driver, use an image for CUDA 12.3 or older, or set NVIDIA_DISABLE_REQUIRE=true to start it anyway"
        );
        let mut disabled = image.clone();
        disabled.extend(env(&[("NVIDIA_DISABLE_REQUIRE", "true")]));
        assert!(check(&disabled, Some("545.23.08")).is_ok());
        // No driver version known, or no condition: nothing to check.
        assert!(check(&image, None).is_ok());
        assert!(check(&env(&[("NVIDIA_REQUIRE_CUDA", "")]), Some("545.23.08")).is_ok());
    }

    #[test]
    fn other_requirements_and_bad_expressions() {
        let driver = env(&[("NVIDIA_REQUIRE_DRIVER", "driver>=550")]);
        assert!(check(&driver, Some("550.54.15")).is_ok());
        assert!(check(&driver, Some("535.104.05")).is_err());
        let arch = env(&[("NVIDIA_REQUIRE_ARCH", "arch>=9.0")]);
        assert!(check(&arch, Some("535.104.05")).is_ok());
        let bad = env(&[("NVIDIA_REQUIRE_CUDA", "cuda~12")]);
        let err = check(&bad, Some("550.54.15")).unwrap_err();
        assert!(err.to_string().contains("NVIDIA_REQUIRE_CUDA"), "{err}");
    }
}
