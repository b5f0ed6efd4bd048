//! The CUDA C sources of `kernels/cuda/` and their run-time compilation with NVRTC.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

/// Prepended to every kernel file: element types, conversions, reductions.
const COMMON: &str = include_str!("../../cuda/common.cuh");

/// One CUDA C file and the kernels it defines.
pub struct KernelSource {
    /// File name in `kernels/cuda/`.
    pub file: &'static str,
    /// The file's text.
    pub code: &'static str,
    /// The `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
}

/// Every kernel file, in the order they are compiled.
pub const SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "embedding.cu",
        code: include_str!("../../cuda/embedding.cu"),
        kernels: &["embed_layer_norm_f32", "embed_layer_norm_bf16"],
    },
    KernelSource {
        file: "layer_norm.cu",
        code: include_str!("../../cuda/layer_norm.cu"),
        kernels: &["add_layer_norm_f32", "add_layer_norm_bf16"],
    },
    KernelSource {
        file: "activation.cu",
        code: include_str!("../../cuda/activation.cu"),
        kernels: &["bias_activation_f32", "bias_activation_bf16"],
    },
    KernelSource {
        file: "attention.cu",
        code: include_str!("../../cuda/attention.cu"),
        kernels: &["ragged_attention_f32", "ragged_attention_bf16"],
    },
    KernelSource {
        file: "pooling.cu",
        code: include_str!("../../cuda/pooling.cu"),
        kernels: &[
            "pool_normalize_f32",
            "pool_normalize_bf16",
            "l2_normalize_f32",
            "l2_normalize_bf16",
        ],
    },
    KernelSource {
        file: "conv.cu",
        code: include_str!("../../cuda/conv.cu"),
        kernels: &[
            "im2col_f32",
            "im2col_bf16",
            "conv_epilogue_f32",
            "conv_epilogue_bf16",
            "max_pool2d_f32",
            "max_pool2d_bf16",
        ],
    },
    KernelSource {
        file: "topk.cu",
        code: include_str!("../../cuda/topk.cu"),
        kernels: &[
            "topk_scan_corpus_f32",
            "topk_scan_corpus_bf16",
            "topk_scan_scores",
            "topk_reduce",
        ],
    },
    KernelSource {
        file: "decoder.cu",
        code: include_str!("../../cuda/decoder.cu"),
        kernels: &[
            "rms_norm_f32",
            "rms_norm_bf16",
            "silu_mul_f32",
            "silu_mul_bf16",
            "rotary_f32",
            "rotary_bf16",
            "kv_cache_write_f32",
            "kv_cache_write_bf16",
            "paged_decode_attention_f32",
            "paged_decode_attention_bf16",
        ],
    },
    KernelSource {
        file: "sampling.cu",
        code: include_str!("../../cuda/sampling.cu"),
        kernels: &[
            "argmax_f32",
            "argmax_bf16",
            "token_logprob_f32",
            "token_logprob_bf16",
            "sample_f32",
            "sample_bf16",
        ],
    },
];

/// Compiles one file to PTX for a virtual architecture such as `compute_90`. Precise
/// math (no fast-math): the kernels must agree with the CPU backend to 1e-5.
pub fn compile(source: &KernelSource, arch: &str) -> Result<Ptx, String> {
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(source.file.into()),
        ..Default::default()
    };
    compile_ptx_with_opts(format!("{COMMON}\n{}", source.code), options).map_err(|e| match e {
        CompileError::CompileError { log, .. } => {
            format!("{}: {}", source.file, log.to_string_lossy())
        }
        other => format!("{}: {other}", source.file),
    })
}

/// Whether NVRTC can be loaded (cudarc panics on use when it cannot).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}
