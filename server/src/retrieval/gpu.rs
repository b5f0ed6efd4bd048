//! Exact search on a GPU: where each collection runs (`retrieval.device`, or the device its
//! create request named), and the copy of its matrix kept in device memory.

use crate::config::Retrieval;
use marquee_kernels::cuda::topk::{self, DeviceRules, SearchFilter};
use marquee_kernels::cuda::CudaTensor;
use marquee_kernels::{
    Backend, CudaBackend, DeviceRequest, Hit, KernelError, Matrix, Precision, ResolvedDevice,
};

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
    pub fn shortlists(&self, gpu: &Option<GpuSearch>) -> bool {
        self.f16_shortlist && gpu.is_none()
    }

    /// Decides where a collection's exact search runs, logging the one line that says
    /// which and why. `Err` only for an explicit `cuda:N` that is unusable.
    pub fn place(
        &self,
        collection: &str,
        requested: &str,
        exact: bool,
    ) -> Result<Option<GpuSearch>, String> {
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
                Ok(Some(GpuSearch { backend }))
            }
        }
    }
}

/// A collection's GPU: uploads its matrix and searches the copy.
pub struct GpuSearch {
    backend: CudaBackend,
}

/// A collection's matrix, tie ranks and L2 bias in device memory, as of one state.
pub struct DeviceCopy {
    corpus: CudaTensor,
    rules: DeviceRules,
}

impl GpuSearch {
    /// The device, for `CollectionInfo.device`.
    pub fn device_name(&self) -> String {
        self.backend.device_name()
    }

    /// Copies a collection's rows to the device.
    pub fn upload(
        &self,
        vectors: &Matrix,
        tie_rank: &[u32],
        row_bias: Option<&[f32]>,
    ) -> Result<DeviceCopy, KernelError> {
        let corpus = self
            .backend
            .upload(vectors.rows, vectors.cols, &vectors.data)?;
        let stream = &self.backend.gpu().stream;
        let copy = |e| KernelError::Device(format!("{e:?}"));
        Ok(DeviceCopy {
            corpus,
            rules: DeviceRules {
                row_bias: row_bias
                    .map(|b| stream.clone_htod(b))
                    .transpose()
                    .map_err(copy)?,
                tie_rank: Some(stream.clone_htod(tie_rank).map_err(copy)?),
            },
        })
    }

    /// The `k` best rows per query (row-major `queries`), as the CPU path returns them.
    pub fn search(
        &self,
        copy: &DeviceCopy,
        queries: &[f32],
        k: usize,
        allowed: Option<&[bool]>,
        excluded: &[Vec<u32>],
    ) -> Result<Vec<Vec<Hit>>, KernelError> {
        topk::search(
            self.backend.gpu(),
            &copy.corpus,
            &copy.rules,
            queries,
            k,
            &SearchFilter {
                allowed,
                excluded: Some(excluded),
            },
        )
    }
}
