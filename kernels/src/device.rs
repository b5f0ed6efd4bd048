//! Where a model or a collection runs: `auto`, `cpu` or `cuda:N`, and how `auto` resolves.

use std::fmt;
use std::str::FromStr;

/// A device request, as written in configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The GPU when a CUDA driver and device are present, otherwise the CPU.
    #[default]
    Auto,
    /// The host CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("device {other:?} is not one of auto, cpu, cuda:N")),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device a request resolved to, with the reason (for the one log line `auto` owes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvedDevice {
    /// Run on the CPU.
    Cpu {
        /// Why: asked for, or what was missing for the GPU.
        reason: String,
    },
    /// Run on CUDA device `ordinal`.
    Cuda {
        /// Device index.
        ordinal: usize,
        /// Device name and compute capability.
        description: String,
    },
}

impl DeviceRequest {
    /// Resolves the request: `auto` falls back to the CPU with the reason when CUDA is
    /// unusable; `cuda:N` is an error then.
    pub fn resolve(self) -> Result<ResolvedDevice, String> {
        match self {
            Self::Cpu => Ok(ResolvedDevice::Cpu {
                reason: "device = \"cpu\"".into(),
            }),
            Self::Auto => Ok(match crate::cuda::probe(0) {
                Ok(description) => ResolvedDevice::Cuda {
                    ordinal: 0,
                    description,
                },
                Err(why) => ResolvedDevice::Cpu { reason: why },
            }),
            Self::Cuda(ordinal) => crate::cuda::probe(ordinal)
                .map(|description| ResolvedDevice::Cuda {
                    ordinal,
                    description,
                })
                .map_err(|why| format!("device cuda:{ordinal} is not usable: {why}")),
        }
    }
}

/// Resolves a model's `device` and `precision` options (`auto` and `fp32` when absent).
pub fn placement(
    device: Option<&str>,
    precision: Option<&str>,
) -> Result<(ResolvedDevice, crate::Precision), String> {
    let request: DeviceRequest = device.unwrap_or("auto").parse()?;
    let precision: crate::Precision = precision.unwrap_or("fp32").parse()?;
    Ok((request.resolve()?, precision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_requests() {
        for (text, want) in [
            ("auto", DeviceRequest::Auto),
            ("", DeviceRequest::Auto),
            ("cpu", DeviceRequest::Cpu),
            ("cuda", DeviceRequest::Cuda(0)),
            ("cuda:3", DeviceRequest::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceRequest>().unwrap(), want);
        }
        assert_eq!(DeviceRequest::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "tpu:0"] {
            let err = bad.parse::<DeviceRequest>().unwrap_err();
            assert!(err.contains("auto, cpu, cuda:N"), "{err}");
        }
    }

    #[test]
    fn auto_falls_back_to_the_cpu_with_the_reason_when_cuda_is_missing() {
        // SAFETY: only tries to open the driver library.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return; // a GPU host: covered by the GPU script
        }
        match DeviceRequest::Auto.resolve() {
            Ok(ResolvedDevice::Cpu { reason }) => assert!(reason.contains("libcuda"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let err = DeviceRequest::Cuda(0).resolve().unwrap_err();
        assert!(err.contains("cuda:0") && err.contains("libcuda"), "{err}");
    }

    #[test]
    fn placement_defaults_to_fp32_and_takes_bf16_on_the_cpu() {
        let (device, precision) = placement(Some("cpu"), None).unwrap();
        assert!(matches!(device, ResolvedDevice::Cpu { .. }));
        assert_eq!(precision, crate::Precision::F32);
        let (device, precision) = placement(Some("cpu"), Some("bf16")).unwrap();
        assert!(matches!(device, ResolvedDevice::Cpu { .. }));
        assert_eq!(precision, crate::Precision::Bf16);
        assert!(placement(Some("cpu"), Some("fp8"))
            .unwrap_err()
            .contains("fp32 or bf16"));
        assert!(placement(Some("gpu"), None)
            .unwrap_err()
            .contains("auto, cpu, cuda:N"));
    }

    #[test]
    fn cpu_always_resolves() {
        assert!(matches!(
            DeviceRequest::Cpu.resolve(),
            Ok(ResolvedDevice::Cpu { .. })
        ));
    }
}
