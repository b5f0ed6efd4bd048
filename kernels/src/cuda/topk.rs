//! Exact top-K on the GPU over a corpus resident in device memory: the fused scan for a few
//! queries, cuBLAS score tiles plus the fused selection for many, then candidate reduction.

use super::context::{driver_error, Gpu};
use super::{CudaBackend, CudaTensor, DeviceData};
use crate::search::{Hit, HostCorpus, SearchFilter};
use crate::{Backend, KernelError, Result};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use half::bf16;
use std::sync::Arc;

/// Largest `k` the kernels select (their shared-memory buffer holds `k + 256` entries).
pub const MAX_K: usize = 2048;
/// From this many queries on, scores come from cuBLAS tiles instead of the fused scan.
const GEMM_MIN_QUERIES: usize = 16;
/// Bytes of score tile a batch may use at once (the full score matrix never exists).
const SCORE_TILE_BYTES: usize = 256 << 20;
/// Queries per kernel launch (the grid's y dimension is at most 65,535).
const MAX_QUERIES_PER_CALL: usize = 16_384;
/// Threads per selection block.
const BLOCK: u32 = 256;
/// Corpus rows the fused scan scores per step (8 warps × 4 rows).
const SCAN_STEP: usize = 32;
/// Candidates one reduction block reads.
const REDUCE_ENTRIES: usize = 16_384;

/// Eligibility and ordering rules, resident on the device.
#[derive(Default)]
pub struct DeviceRules {
    /// Added to each row's score.
    pub row_bias: Option<CudaSlice<f32>>,
    /// Order among equal scores, lower first (the row index when absent).
    pub tie_rank: Option<CudaSlice<u32>>,
}

impl DeviceRules {
    /// Copies a corpus's per-row rules to `gpu`.
    pub fn upload(gpu: &Gpu, row_bias: Option<&[f32]>, tie_rank: Option<&[u32]>) -> Result<Self> {
        let s = &gpu.stream;
        Ok(Self {
            row_bias: row_bias
                .map(|b| s.clone_htod(b))
                .transpose()
                .map_err(driver_error)?,
            tie_rank: tie_rank
                .map(|t| s.clone_htod(t))
                .transpose()
                .map_err(driver_error)?,
        })
    }
}

/// A corpus's rows and per-row rules copied to one GPU, searched by
/// [`crate::search::search`].
pub struct DeviceCorpus {
    gpu: Arc<Gpu>,
    rows: CudaTensor,
    rules: DeviceRules,
}

impl DeviceCorpus {
    /// Copies `host`'s rows (in `backend`'s precision) and rules to `backend`'s device.
    pub fn upload(backend: &CudaBackend, host: &HostCorpus<'_>) -> Result<Self> {
        let rows = backend.upload(host.rows.rows, host.rows.cols, &host.rows.data)?;
        Ok(Self {
            gpu: backend.gpu().clone(),
            rows,
            rules: DeviceRules::upload(backend.gpu(), host.row_bias, host.tie_rank)?,
        })
    }

    /// The `k` best rows per query (row-major `queries`); see [`search`].
    pub fn search(
        &self,
        queries: &[f32],
        k: usize,
        filter: &SearchFilter<'_>,
    ) -> Result<Vec<Vec<Hit>>> {
        search(&self.gpu, &self.rows, &self.rules, queries, k, filter)
    }
}

/// Candidate lists: `queries × per_query` entries.
struct Candidates {
    score: CudaSlice<f32>,
    tie: CudaSlice<u32>,
    row: CudaSlice<u32>,
    per_query: usize,
}

fn cap_for(k: usize, step: usize) -> usize {
    (k + step).next_power_of_two()
}

fn launch_config(gpu: &Gpu, func: &str, grid: (u32, u32), smem: usize) -> Result<LaunchConfig> {
    if smem > 48 << 10 {
        gpu.kernel(func)?
            .set_attribute(
                cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(driver_error)?;
    }
    Ok(LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: smem as u32,
    })
}

fn alloc_candidates(gpu: &Gpu, queries: usize, per_query: usize) -> Result<Candidates> {
    let n = queries * per_query;
    let s = &gpu.stream;
    Ok(Candidates {
        score: s.alloc_zeros::<f32>(n).map_err(driver_error)?,
        tie: s.alloc_zeros::<u32>(n).map_err(driver_error)?,
        row: s.alloc_zeros::<u32>(n).map_err(driver_error)?,
        per_query,
    })
}

/// The `k` best rows of `corpus` for each of `queries` (`nq × dim`, host),
/// best first, ties by `rules.tie_rank`; fewer when fewer rows are eligible.
pub fn search(
    gpu: &Arc<Gpu>,
    corpus: &CudaTensor,
    rules: &DeviceRules,
    queries: &[f32],
    k: usize,
    filter: &SearchFilter<'_>,
) -> Result<Vec<Vec<Hit>>> {
    let (rows, dim) = (corpus.rows, corpus.cols);
    let device_corpus = corpus;
    let corpus = &corpus.data;
    let nq = queries.len().checked_div(dim).unwrap_or(0);
    if queries.len() != nq * dim {
        return Err(KernelError::Shape(format!(
            "{} query values are not a multiple of the dimension {dim}",
            queries.len()
        )));
    }
    if k > MAX_K {
        return Err(KernelError::Shape(format!(
            "k = {k} is above the GPU limit {MAX_K}"
        )));
    }
    if nq == 0 || k == 0 || rows == 0 {
        return Ok(vec![Vec::new(); nq]);
    }
    if nq > MAX_QUERIES_PER_CALL {
        // The grid's y dimension (one per query) is bounded: search in slices.
        let mut hits = Vec::with_capacity(nq);
        for (i, chunk) in queries.chunks(MAX_QUERIES_PER_CALL * dim).enumerate() {
            let first = i * MAX_QUERIES_PER_CALL;
            let excluded = filter
                .excluded
                .map(|e| &e[first..(first + chunk.len() / dim).min(e.len())]);
            let part = SearchFilter {
                allowed: filter.allowed,
                excluded,
            };
            hits.extend(search(gpu, device_corpus, rules, chunk, k, &part)?);
        }
        return Ok(hits);
    }
    let stream = &gpu.stream;
    let allowed = filter
        .allowed
        .map(|a| {
            let bytes: Vec<u8> = a.iter().map(|&b| b as u8).collect();
            stream.clone_htod(&bytes)
        })
        .transpose()
        .map_err(driver_error)?;
    let excluded = match filter.excluded {
        Some(lists) if lists.iter().any(|l| !l.is_empty()) => {
            let mut offsets = Vec::with_capacity(nq + 1);
            let mut ids = Vec::new();
            offsets.push(0u32);
            for list in lists {
                ids.extend_from_slice(list);
                offsets.push(ids.len() as u32);
            }
            Some((
                stream.clone_htod(&offsets).map_err(driver_error)?,
                stream.clone_htod(&ids).map_err(driver_error)?,
            ))
        }
        _ => None,
    };
    let scan = Scan {
        gpu,
        rules,
        allowed: allowed.as_ref(),
        excluded: excluded.as_ref(),
        k,
    };
    let candidates = if nq < GEMM_MIN_QUERIES {
        scan.fused(corpus, rows, dim, queries)?
    } else {
        scan.tiled(corpus, rows, dim, queries)?
    };
    let best = reduce(gpu, candidates, nq, k)?;
    let scores = stream.clone_dtoh(&best.score).map_err(driver_error)?;
    let ties = stream.clone_dtoh(&best.tie).map_err(driver_error)?;
    let rows_out = stream.clone_dtoh(&best.row).map_err(driver_error)?;
    Ok((0..nq)
        .map(|q| {
            (q * k..(q + 1) * k)
                .take_while(|&i| rows_out[i] != u32::MAX)
                .map(|i| Hit {
                    index: rows_out[i],
                    score: scores[i],
                    tie: ties[i],
                })
                .collect()
        })
        .collect())
}

/// The device-side arguments every scan shares.
struct Scan<'a> {
    gpu: &'a Arc<Gpu>,
    rules: &'a DeviceRules,
    allowed: Option<&'a CudaSlice<u8>>,
    excluded: Option<&'a (CudaSlice<u32>, CudaSlice<u32>)>,
    k: usize,
}

impl Scan<'_> {
    /// Blocks per query so that the device has a few blocks per multiprocessor.
    fn segments(&self, queries: usize, units: usize, unit: usize) -> usize {
        let wanted = (4 * self.gpu.multiprocessors as usize).div_ceil(queries);
        wanted.clamp(1, units.div_ceil(unit).max(1))
    }

    /// Few queries: each block scores its rows itself and selects.
    fn fused(
        &self,
        corpus: &DeviceData,
        rows: usize,
        dim: usize,
        queries: &[f32],
    ) -> Result<Candidates> {
        let nq = queries.len() / dim;
        let stream = &self.gpu.stream;
        let segments = self.segments(nq, rows, SCAN_STEP * 8);
        let segment_rows = rows.div_ceil(segments).div_ceil(SCAN_STEP) * SCAN_STEP;
        let segments = rows.div_ceil(segment_rows);
        let mut out = alloc_candidates(self.gpu, nq, segments * self.k)?;
        let queries = stream.clone_htod(queries).map_err(driver_error)?;
        let cap = cap_for(self.k, SCAN_STEP);
        let smem = cap * 12 + (dim + SCAN_STEP) * 4;
        let name = match corpus {
            DeviceData::F32(_) => "topk_scan_corpus_f32",
            DeviceData::Bf16(_) => "topk_scan_corpus_bf16",
        };
        let cfg = launch_config(self.gpu, name, (segments as u32, nq as u32), smem)?;
        let func = self.gpu.kernel(name)?;
        let null = 0u64;
        let (rows_i, dim_i, k_i, cap_i, seg_i) = (
            rows as i32,
            dim as i32,
            self.k as i32,
            cap as i32,
            segment_rows as i32,
        );
        let mut launch = stream.launch_builder(func);
        launch.arg(&queries);
        match corpus {
            DeviceData::F32(c) => launch.arg(c),
            DeviceData::Bf16(c) => launch.arg(c),
        };
        launch.arg(&rows_i).arg(&dim_i);
        self.push_rules(&mut launch, &null);
        launch
            .arg(&k_i)
            .arg(&cap_i)
            .arg(&seg_i)
            .arg(&mut out.score)
            .arg(&mut out.tie)
            .arg(&mut out.row);
        // SAFETY: argument order and types match topk_scan_corpus_* in topk.cu; every
        // buffer holds the extents the kernel indexes.
        unsafe { launch.launch(cfg) }.map_err(driver_error)?;
        Ok(out)
    }

    /// Many queries: cuBLAS computes score tiles bounded by SCORE_TILE_BYTES; each tile is
    /// selected from before the next one is computed into the same buffer.
    fn tiled(
        &self,
        corpus: &DeviceData,
        rows: usize,
        dim: usize,
        queries: &[f32],
    ) -> Result<Candidates> {
        let nq = queries.len() / dim;
        let gpu = self.gpu;
        let stream = &gpu.stream;
        let tile_rows = (SCORE_TILE_BYTES / (4 * nq))
            .clamp(1024, rows.max(1024))
            .min(rows);
        let tiles: Vec<(usize, usize)> = (0..rows)
            .step_by(tile_rows)
            .map(|start| (start, tile_rows.min(rows - start)))
            .collect();
        let per_tile: Vec<usize> = tiles
            .iter()
            .map(|&(_, cols)| self.segments(nq, cols, BLOCK as usize))
            .collect();
        let total: usize = per_tile.iter().sum();
        let mut out = alloc_candidates(gpu, nq, total * self.k)?;
        let mut scores = stream
            .alloc_zeros::<f32>(nq * tile_rows)
            .map_err(driver_error)?;
        let queries_dev = QueryOperand::upload(gpu, corpus, queries)?;
        let cap = cap_for(self.k, BLOCK as usize);
        let null = 0u64;
        let mut offset = 0usize;
        for (&(start, cols), &segments) in tiles.iter().zip(&per_tile) {
            gemm_scores(gpu, corpus, start, cols, dim, &queries_dev, nq, &mut scores)?;
            let segment_cols = cols.div_ceil(segments);
            let cfg = launch_config(
                gpu,
                "topk_scan_scores",
                (segments as u32, nq as u32),
                cap * 12,
            )?;
            let func = gpu.kernel("topk_scan_scores")?;
            let ints = [
                cols as i32,
                start as i32,
                cols as i32,
                self.k as i32,
                cap as i32,
                segment_cols as i32,
                total as i32,
                offset as i32,
            ];
            let mut launch = stream.launch_builder(func);
            launch
                .arg(&scores)
                .arg(&ints[0])
                .arg(&ints[1])
                .arg(&ints[2]);
            self.push_rules(&mut launch, &null);
            for v in &ints[3..] {
                launch.arg(v);
            }
            launch
                .arg(&mut out.score)
                .arg(&mut out.tie)
                .arg(&mut out.row);
            // SAFETY: matches topk_scan_scores in topk.cu; `scores` holds nq × cols
            // values with row stride cols.
            unsafe { launch.launch(cfg) }.map_err(driver_error)?;
            offset += segments;
        }
        Ok(out)
    }

    /// row_bias, allowed, excluded offsets and ids, tie_rank (null where absent).
    fn push_rules<'b>(&'b self, launch: &mut cudarc::driver::LaunchArgs<'b>, null: &'b u64) {
        match &self.rules.row_bias {
            Some(b) => launch.arg(b),
            None => launch.arg(null),
        };
        match self.allowed {
            Some(a) => launch.arg(a),
            None => launch.arg(null),
        };
        match self.excluded {
            Some((offsets, ids)) => launch.arg(offsets).arg(ids),
            None => launch.arg(null).arg(null),
        };
        match &self.rules.tie_rank {
            Some(t) => launch.arg(t),
            None => launch.arg(null),
        };
    }
}

/// Queries in the corpus's element type, for cuBLAS.
enum QueryOperand {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

impl QueryOperand {
    fn upload(gpu: &Gpu, corpus: &DeviceData, queries: &[f32]) -> Result<Self> {
        let s = &gpu.stream;
        Ok(match corpus {
            DeviceData::F32(_) => Self::F32(s.clone_htod(queries).map_err(driver_error)?),
            DeviceData::Bf16(_) => {
                let q: Vec<bf16> = queries.iter().map(|&v| bf16::from_f32(v)).collect();
                Self::Bf16(s.clone_htod(&q).map_err(driver_error)?)
            }
        })
    }
}

/// `scores (nq × cols, row-major) = queries · corpus[start..start + cols]ᵀ`, f32 out and
/// f32 accumulation: plain FP32 for an f32 corpus (no TF32, so the ids equal the CPU's),
/// bf16 tensor cores for a bf16 one.
#[allow(clippy::too_many_arguments)]
fn gemm_scores(
    gpu: &Gpu,
    corpus: &DeviceData,
    start: usize,
    cols: usize,
    dim: usize,
    queries: &QueryOperand,
    nq: usize,
    scores: &mut CudaSlice<f32>,
) -> Result<()> {
    let stream = &gpu.stream;
    let blas = gpu.blas.lock().unwrap_or_else(|p| p.into_inner());
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (a, a_type, _ra) = match corpus {
        DeviceData::F32(c) => {
            let (p, r) = c.device_ptr(stream);
            (p + (start * dim * 4) as u64, cudaDataType::CUDA_R_32F, r)
        }
        DeviceData::Bf16(c) => {
            let (p, r) = c.device_ptr(stream);
            (p + (start * dim * 2) as u64, cudaDataType::CUDA_R_16BF, r)
        }
    };
    let (b, _rb) = match queries {
        QueryOperand::F32(q) => q.device_ptr(stream),
        QueryOperand::Bf16(q) => q.device_ptr(stream),
    };
    let (c, _rc) = scores.device_ptr(stream);
    super::set_math_mode(&blas, false)?;
    // SAFETY: column-major view: C (cols × nq, ld cols) = Aᵀ (A: dim × cols, ld dim) ·
    // B (dim × nq, ld dim); the buffers hold those extents.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            cols as i32,
            nq as i32,
            dim as i32,
            (&alpha) as *const f32 as *const _,
            a as *const _,
            a_type,
            dim as i32,
            b as *const _,
            a_type,
            dim as i32,
            (&beta) as *const f32 as *const _,
            c as *mut _,
            cudaDataType::CUDA_R_32F,
            cols as i32,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(super::blas_error)
}

/// Reduces candidate lists until one sorted list of `k` per query is left.
fn reduce(gpu: &Gpu, mut current: Candidates, nq: usize, k: usize) -> Result<Candidates> {
    let entries = REDUCE_ENTRIES.max(4 * k);
    let cap = cap_for(k, BLOCK as usize);
    loop {
        let segments = current.per_query.div_ceil(entries);
        if segments <= 1 && current.per_query == k {
            return Ok(current);
        }
        let segments = segments.max(1);
        let mut next = alloc_candidates(gpu, nq, segments * k)?;
        let cfg = launch_config(gpu, "topk_reduce", (segments as u32, nq as u32), cap * 12)?;
        let func = gpu.kernel("topk_reduce")?;
        let ints = [
            current.per_query as i32,
            k as i32,
            cap as i32,
            entries as i32,
        ];
        let mut launch = gpu.stream.launch_builder(func);
        launch
            .arg(&current.score)
            .arg(&current.tie)
            .arg(&current.row);
        for v in &ints {
            launch.arg(v);
        }
        launch
            .arg(&mut next.score)
            .arg(&mut next.tie)
            .arg(&mut next.row);
        // SAFETY: matches topk_reduce in topk.cu; `current` holds nq × per_query entries
        // and `next` nq × segments × k.
        unsafe { launch.launch(cfg) }.map_err(driver_error)?;
        current = next;
    }
}
