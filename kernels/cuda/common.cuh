// Shared by every Marquee kernel: element types, conversions and block reductions.
// NVRTC compiles each kernel file with this prelude in front of it, for the device's own
// architecture, so no CUDA header is needed: bf16 is handled as raw 16-bit storage.

typedef unsigned short bf16;
typedef unsigned int u32;

#define WARP 32
#define FULL_MASK 0xffffffffu
#define INVALID_ROW 0xffffffffu
#define INFINITY __int_as_float(0x7f800000)

// The block's dynamic shared memory; each kernel documents how it carves it.
extern __shared__ __align__(16) unsigned char dynamic_smem[];

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __uint_as_float(((u32)x) << 16); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
// Round to nearest even, NaN kept quiet: the same rounding as PyTorch and the host.
__device__ __forceinline__ void store(bf16* p, float v) {
    u32 u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) { *p = (bf16)((u >> 16) | 0x40u); return; }
    u += 0x7fffu + ((u >> 16) & 1u);
    *p = (bf16)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats and may be
// reused by the next call (the trailing barrier protects it).
__device__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    __syncthreads();
    return total;
}

// Writes layer_norm(row) · gamma + beta to `out`. `row` lives in shared memory and every
// thread touches only the columns c ≡ threadIdx.x (mod blockDim.x), which it wrote itself;
// `local_sum` is that thread's sum of its columns.
template <typename T>
__device__ void layer_norm_store(const float* row, float local_sum, T* out, const T* gamma,
                                 const T* beta, float eps, int hidden, float* scratch) {
    const float mean = block_sum(local_sum, scratch) / hidden;
    float local_var = 0.f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float d = row[c] - mean;
        local_var += d * d;
    }
    const float var = block_sum(local_var, scratch) / hidden;
    const float inv = 1.f / sqrtf(var + eps);
    for (int c = threadIdx.x; c < hidden; c += blockDim.x)
        store(out + c, (row[c] - mean) * inv * to_float(gamma[c]) + to_float(beta[c]));
}

// One key of a warp's online softmax over a head of head_dim ≤ 32 · PER values (lane l holds
// values l, l + 32, …): folds the score q·key · scale and the key's value into the running
// maximum, the denominator and the lane's accumulators.
template <int PER, typename T>
__device__ __forceinline__ void online_softmax_step(const float* q, const T* key, const T* value,
                                                    int head_dim, float scale,
                                                    float& running_max, float& denom,
                                                    float* acc) {
    const int lane = threadIdx.x % WARP;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int c = lane + i * WARP;
        if (c < head_dim) s += q[i] * to_float(key[c]);
    }
    s = warp_sum(s) * scale;
    const float new_max = fmaxf(running_max, s);
    const float correction = expf(running_max - new_max);
    const float p = expf(s - new_max);
    denom = denom * correction + p;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int c = lane + i * WARP;
        if (c < head_dim) acc[i] = acc[i] * correction + p * to_float(value[c]);
    }
    running_max = new_max;
}
