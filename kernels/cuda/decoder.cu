// The ops of Qwen2-style decoders beyond the GEMMs, with the semantics of
// kernels/src/cpu/decoder.rs: RMSNorm (optionally after a fused residual add), SwiGLU's gate,
// rotate-half rotary embeddings with per-row cos/sin tables (M-RoPE included), and the paged KV
// cache: scattering new keys/values into their slots, and decode attention (one query per
// sequence) over a sequence's blocks. A cache layer is [num_blocks · block_size, kv_heads ·
// head_dim]; sequence s's token j lives in row block_tables[s][j / block_size] · block_size +
// j % block_size.

// out ← x · rsqrt(mean(x²) + eps) · weight, one block per row. With `has_residual`, first
// x ← x + residual (stored in T, and normed as stored). Every thread touches only the columns
// c ≡ threadIdx.x (mod blockDim.x), so `out` may be `x`.
template <typename T>
__device__ void rms_norm(T* out, T* x, const T* residual, int has_residual, const T* weight,
                         float eps, int hidden) {
    __shared__ float scratch[WARP];
    const size_t base = (size_t)blockIdx.x * hidden;
    float local = 0.f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        if (has_residual) store(x + base + c, to_float(x[base + c]) + to_float(residual[base + c]));
        const float v = to_float(x[base + c]);
        local += v * v;
    }
    const float inv = 1.f / sqrtf(block_sum(local, scratch) / hidden + eps);
    for (int c = threadIdx.x; c < hidden; c += blockDim.x)
        store(out + base + c, to_float(weight[c]) * (to_float(x[base + c]) * inv));
}

extern "C" __global__ void rms_norm_f32(float* out, float* x, const float* residual,
                                        int has_residual, const float* weight, float eps,
                                        int hidden) {
    rms_norm(out, x, residual, has_residual, weight, eps, hidden);
}

extern "C" __global__ void rms_norm_bf16(bf16* out, bf16* x, const bf16* residual,
                                         int has_residual, const bf16* weight, float eps,
                                         int hidden) {
    rms_norm(out, x, residual, has_residual, weight, eps, hidden);
}

// gate ← silu(gate) · up, element-wise over `total` values.
template <typename T>
__device__ void silu_mul(T* gate, const T* up, size_t total) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = to_float(gate[i]);
        store(gate + i, g / (1.f + expf(-g)) * to_float(up[i]));
    }
}

extern "C" __global__ void silu_mul_f32(float* gate, const float* up, size_t total) {
    silu_mul(gate, up, total);
}

extern "C" __global__ void silu_mul_bf16(bf16* gate, const bf16* up, size_t total) {
    silu_mul(gate, up, total);
}

// In place on the `heads` heads of `head_dim` values starting at column `offset` of each row
// of x (rows × cols): v ← v·cos + rotate_half(v)·sin, with row r's cos/sin the head_dim values
// of row r of `cos` / `sin`. One thread per (row, head, pair i / i + head_dim/2).
template <typename T>
__device__ void rotary(T* x, const T* cos, const T* sin, size_t rows, int cols, int offset,
                       int heads, int head_dim) {
    const int half = head_dim / 2;
    const size_t total = rows * heads * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int j = i % half;
        const size_t row_head = i / half;
        const int h = row_head % heads;
        const size_t r = row_head / heads;
        T* v = x + r * cols + offset + h * head_dim;
        const T* c = cos + r * head_dim;
        const T* s = sin + r * head_dim;
        const float a = to_float(v[j]), b = to_float(v[j + half]);
        store(v + j, a * to_float(c[j]) + -b * to_float(s[j]));
        store(v + j + half, b * to_float(c[j + half]) + a * to_float(s[j + half]));
    }
}

extern "C" __global__ void rotary_f32(float* x, const float* cos, const float* sin, size_t rows,
                                      int cols, int offset, int heads, int head_dim) {
    rotary(x, cos, sin, rows, cols, offset, heads, head_dim);
}

extern "C" __global__ void rotary_bf16(bf16* x, const bf16* cos, const bf16* sin, size_t rows,
                                       int cols, int offset, int heads, int head_dim) {
    rotary(x, cos, sin, rows, cols, offset, heads, head_dim);
}

// Row r of keys / values (rows × width) to row slots[r] of key_cache / value_cache.
template <typename T>
__device__ void kv_cache_write(T* key_cache, T* value_cache, const T* keys, const T* values,
                               const u32* slots, size_t rows, int width) {
    const size_t total = rows * width;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t at = (size_t)slots[i / width] * width + i % width;
        key_cache[at] = keys[i];
        value_cache[at] = values[i];
    }
}

extern "C" __global__ void kv_cache_write_f32(float* key_cache, float* value_cache,
                                              const float* keys, const float* values,
                                              const u32* slots, size_t rows, int width) {
    kv_cache_write(key_cache, value_cache, keys, values, slots, rows, width);
}

extern "C" __global__ void kv_cache_write_bf16(bf16* key_cache, bf16* value_cache,
                                               const bf16* keys, const bf16* values,
                                               const u32* slots, size_t rows, int width) {
    kv_cache_write(key_cache, value_cache, keys, values, slots, rows, width);
}

// Decode attention: one block of DECODE_WARPS warps per (sequence, query head). Warp w streams
// over the sequence's tokens j ≡ w (mod DECODE_WARPS) with an online softmax (lane l holds
// values l, l + 32, … of the head, head_dim ≤ 128), then warp 0 merges the warps' partial
// states. q and out: sequences × heads·head_dim; block_tables: sequences × table_stride block
// ids; context_lens[s] ≥ 1 tokens; query head h reads KV head h / (heads / kv_heads).

#define DECODE_WARPS 4
#define DECODE_PER_LANE 4

struct PagedGeometry {
    int table_stride;
    int block_size;
    int heads;
    int kv_heads;
    int head_dim;
    float scale;
};

template <typename T>
__device__ void paged_decode_attention(T* out, const T* q, const T* key_cache,
                                       const T* value_cache, const u32* block_tables,
                                       const u32* context_lens, PagedGeometry g) {
    __shared__ float part_max[DECODE_WARPS], part_denom[DECODE_WARPS];
    __shared__ float part_acc[DECODE_WARPS][DECODE_PER_LANE * WARP];
    const int seq = blockIdx.x / g.heads, h = blockIdx.x % g.heads;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int kv_head = h / (g.heads / g.kv_heads);
    const size_t width = (size_t)g.kv_heads * g.head_dim;
    const int len = context_lens[seq];
    const u32* table = block_tables + (size_t)seq * g.table_stride;
    const T* query = q + ((size_t)seq * g.heads + h) * g.head_dim;

    float qv[DECODE_PER_LANE], acc[DECODE_PER_LANE];
#pragma unroll
    for (int i = 0; i < DECODE_PER_LANE; ++i) {
        const int c = lane + i * WARP;
        qv[i] = c < g.head_dim ? to_float(query[c]) : 0.f;
        acc[i] = 0.f;
    }
    float running_max = -INFINITY, denom = 0.f;
    for (int j = warp; j < len; j += DECODE_WARPS) {
        const size_t slot = (size_t)table[j / g.block_size] * g.block_size + j % g.block_size;
        const T* key = key_cache + slot * width + (size_t)kv_head * g.head_dim;
        const T* value = value_cache + slot * width + (size_t)kv_head * g.head_dim;
        online_softmax_step<DECODE_PER_LANE>(qv, key, value, g.head_dim, g.scale, running_max,
                                             denom, acc);
    }
    if (lane == 0) {
        part_max[warp] = running_max;
        part_denom[warp] = denom;
    }
#pragma unroll
    for (int i = 0; i < DECODE_PER_LANE; ++i) part_acc[warp][lane + i * WARP] = acc[i];
    __syncthreads();
    if (warp != 0) return;
    // Warp 0 always has token 0, so the merged maximum is finite; a warp without tokens
    // (max −∞, sums 0) weighs nothing.
    float m = -INFINITY;
    for (int w = 0; w < DECODE_WARPS; ++w) m = fmaxf(m, part_max[w]);
    float total = 0.f, weight[DECODE_WARPS];
    for (int w = 0; w < DECODE_WARPS; ++w) {
        weight[w] = expf(part_max[w] - m);
        total += part_denom[w] * weight[w];
    }
    T* dst = out + ((size_t)seq * g.heads + h) * g.head_dim;
#pragma unroll
    for (int i = 0; i < DECODE_PER_LANE; ++i) {
        const int c = lane + i * WARP;
        if (c >= g.head_dim) continue;
        float v = 0.f;
        for (int w = 0; w < DECODE_WARPS; ++w) v += part_acc[w][c] * weight[w];
        store(dst + c, v / total);
    }
}

extern "C" __global__ void paged_decode_attention_f32(float* out, const float* q, const float* keys,
                                                      const float* values, const u32* tables,
                                                      const u32* lens, PagedGeometry g) {
    paged_decode_attention(out, q, keys, values, tables, lens, g);
}

extern "C" __global__ void paged_decode_attention_bf16(bf16* out, const bf16* q, const bf16* keys,
                                                       const bf16* values, const u32* tables,
                                                       const u32* lens, PagedGeometry g) {
    paged_decode_attention(out, q, keys, values, tables, lens, g);
}
