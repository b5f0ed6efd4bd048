// Pooling of each sequence of a ragged batch into one row (0 mean, 1 CLS, 2 max), fused with
// the optional L2 normalisation, one block per sequence; and L2 normalisation of rows alone.

template <typename T>
__device__ void pool_normalize(T* out, const T* x, const u32* offsets, int cols, int mode,
                               int normalize) {
    float* pooled = (float*)dynamic_smem;
    __shared__ float scratch[WARP];
    const int start = offsets[blockIdx.x], end = offsets[blockIdx.x + 1];
    float squares = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v;
        if (mode == 1) {
            v = to_float(x[(size_t)start * cols + c]);
        } else if (mode == 2) {
            v = -INFINITY;
            for (int r = start; r < end; ++r) v = fmaxf(v, to_float(x[(size_t)r * cols + c]));
        } else {
            v = 0.f;
            for (int r = start; r < end; ++r) v += to_float(x[(size_t)r * cols + c]);
            v *= 1.f / (float)(end - start);
        }
        pooled[c] = v;
        squares += v * v;
    }
    float scale = 1.f;
    if (normalize) scale = 1.f / fmaxf(sqrtf(block_sum(squares, scratch)), 1e-12f);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        store(out + (size_t)blockIdx.x * cols + c, pooled[c] * scale);
}

template <typename T>
__device__ void l2_normalize(T* x, int cols) {
    __shared__ float scratch[WARP];
    T* row = x + (size_t)blockIdx.x * cols;
    float squares = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = to_float(row[c]);
        squares += v * v;
    }
    const float scale = 1.f / fmaxf(sqrtf(block_sum(squares, scratch)), 1e-12f);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) store(row + c, to_float(row[c]) * scale);
}

extern "C" __global__ void pool_normalize_f32(float* out, const float* x, const u32* offsets,
                                              int cols, int mode, int normalize) {
    pool_normalize(out, x, offsets, cols, mode, normalize);
}

extern "C" __global__ void pool_normalize_bf16(bf16* out, const bf16* x, const u32* offsets,
                                               int cols, int mode, int normalize) {
    pool_normalize(out, x, offsets, cols, mode, normalize);
}

extern "C" __global__ void l2_normalize_f32(float* x, int cols) { l2_normalize(x, cols); }

extern "C" __global__ void l2_normalize_bf16(bf16* x, int cols) { l2_normalize(x, cols); }
