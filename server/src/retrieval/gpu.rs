//! Exact search on a GPU: where each collection runs (`retrieval.device`, or the device its
//! create request named). The search itself is `marquee_kernels::search`, over a copy of
//! the collection's rows that the collection keeps in device memory.

use crate::config::Retrieval;
use marquee_kernels::{Backend, CudaBackend, DeviceRequest, Precision, ResolvedDevice};

/// The server-wide defaults for placing collections.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Device of collections whose request names none.
    pub default: DeviceRequest,
    /// Element type of matrices kept on a GPU.
    pub precision: Precision,
    /// Exact collections searched on the CPU keep an f16 copy of their rows
    /// (`retrieval.f16_shortlist`).
    pub f16_shortlist: bool,
}

impl Placement {
    /// From the `[retrieval]` settings (validated at start).
    pub fn from_settings(settings: &Retrieval) -> anyhow::Result<Self> {
        Ok(Self {
            default: settings.device.parse().map_err(anyhow::Error::msg)?,
            precision: settings.precision.parse().map_err(anyhow::Error::msg)?,
            f16_shortlist: settings.f16_shortlist,
        })
    }

    /// Whether a collection keeps an f16 copy of its rows: the setting on and the
    /// collection searched on the CPU (exact scans and HNSW graph walks read it).
    pub fn shortlists(&self, gpu: &Option<CudaBackend>) -> bool {
        self.f16_shortlist && gpu.is_none()
    }

    /// Decides where a collection's exact search runs, logging the one line that says
    /// which and why. `Err` only for an explicit `cuda:N` that is unusable.
    pub fn place(
        &self,
        collection: &str,
        requested: &str,
        exact: bool,
    ) -> Result<Option<CudaBackend>, String> {
        let request = if requested.is_empty() {
            self.default
        } else {
            requested.parse()?
        };
        if !exact {
            tracing::info!(
                collection,
                device = "cpu",
                reason = "HNSW collections search on the CPU",
                "collection device"
            );
            return Ok(None);
        }
        match request.resolve()? {
            ResolvedDevice::Cpu { reason } => {
                tracing::info!(collection, device = "cpu", reason, "collection device");
                Ok(None)
            }
            ResolvedDevice::Cuda { ordinal, .. } => {
                let backend = CudaBackend::new(ordinal, self.precision)
                    .map_err(|e| format!("cuda:{ordinal}: {e}"))?;
                tracing::info!(
                    collection,
                    device = backend.device_name(),
                    "collection device: exact search on the GPU"
                );
                Ok(Some(backend))
            }
        }
    }
}
