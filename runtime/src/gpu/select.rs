//! Which GPUs satisfy a request: a model name matched word by word, case-insensitively (`A100` matches
//! `NVIDIA A100-SXM4-80GB`, `a100 80gb` does too, `A10` does not), and a memory minimum.

use super::GpuRequest;
use super::inventory::Gpu;

/// The words of a model name: `NVIDIA A100-SXM4-80GB` → `nvidia a100 sxm4 80gb`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '-' || c == '_' || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// True when every word of `wanted` appears in `model`, in order.
pub(crate) fn name_matches(wanted: &str, model: &str) -> bool {
    let model = words(model);
    let mut at = 0;
    for w in words(wanted) {
        match model[at..].iter().position(|m| *m == w) {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

/// True when `gpu` has the asked-for model and memory (unknown memory never satisfies a minimum).
pub(crate) fn fits(gpu: &Gpu, request: &GpuRequest) -> bool {
    let name_ok = request
        .name
        .as_deref()
        .is_none_or(|n| name_matches(n, &gpu.name));
    let memory_ok = request.memory.is_none_or(|min| {
        gpu.memory_mib
            .is_some_and(|mib| mib.saturating_mul(1 << 20) >= min)
    });
    name_ok && memory_ok
}

/// `requested 2 GPUs named A100 with at least 80 GB of memory`.
pub(crate) fn describe(request: &GpuRequest) -> String {
    let mut text = format!(
        "requested {} GPU{}",
        request.count,
        if request.count == 1 { "" } else { "s" }
    );
    if let Some(name) = &request.name {
        text.push_str(&format!(" named {name}"));
    }
    if let Some(bytes) = request.memory {
        text.push_str(&format!(" with at least {} of memory", human(bytes)));
    }
    text
}

/// Decimal gigabytes when exact (`80 GB`, as workflows write them), else MiB.
fn human(bytes: u64) -> String {
    if bytes.is_multiple_of(1_000_000_000) {
        format!("{} GB", bytes / 1_000_000_000)
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, memory_mib: Option<u64>) -> Gpu {
        Gpu {
            index: 0,
            uuid: "GPU-0".into(),
            name: name.into(),
            memory_mib,
            pci_bus_id: "0000:01:00.0".into(),
            minor: 0,
        }
    }

    #[test]
    fn names_match_whole_words_in_order() {
        assert!(name_matches("A100", "NVIDIA A100-SXM4-80GB"));
        assert!(name_matches("a100 80gb", "NVIDIA A100-SXM4-80GB"));
        assert!(name_matches("nvidia a100-sxm4", "NVIDIA A100-SXM4-80GB"));
        assert!(name_matches("RTX 4090", "NVIDIA GeForce RTX 4090"));
        assert!(name_matches("T4", "Tesla T4"));
        assert!(!name_matches("A10", "NVIDIA A100-SXM4-80GB"));
        assert!(!name_matches("L4", "NVIDIA L40S"));
        assert!(!name_matches("80GB A100", "NVIDIA A100-SXM4-80GB"));
    }

    #[test]
    fn memory_is_a_minimum_in_decimal_units_as_cards_are_sold() {
        let h100 = gpu("NVIDIA H100 80GB HBM3", Some(81559));
        let req = |memory: u64| GpuRequest {
            count: 1,
            memory: Some(memory),
            ..GpuRequest::default()
        };
        assert!(fits(&h100, &req(80_000_000_000)));
        assert!(!fits(&h100, &req(81 * (1 << 30))));
        let a10 = gpu("NVIDIA A10", Some(23028));
        assert!(fits(&a10, &req(24_000_000_000)));
        assert!(!fits(&gpu("NVIDIA A10", None), &req(1)));
    }

    #[test]
    fn requests_are_described_as_asked() {
        let req = GpuRequest {
            count: 2,
            name: Some("A100".into()),
            memory: Some(80_000_000_000),
            ..GpuRequest::default()
        };
        assert_eq!(
            describe(&req),
            "requested 2 GPUs named A100 with at least 80 GB of memory"
        );
        assert_eq!(
            describe(&GpuRequest {
                count: 1,
                ..GpuRequest::default()
            }),
            "requested 1 GPU"
        );
    }
}
