// Multi-head self-attention over a ragged (unpadded) batch, fused: one warp per (token, head)
// streams over the keys of that token's own sequence with an online softmax, so neither the
// score matrix nor a padding mask ever exists. `qkv` holds per token [q | k | v], each
// heads × head_dim wide; head_dim ≤ 128 (four values per lane).

#define MAX_PER_LANE 4

template <typename T>
__device__ void ragged_attention(T* out, const T* qkv, const u32* offsets, int sequences,
                                 int tokens, int heads, int head_dim, float scale) {
    const int warp_id = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    const int lane = threadIdx.x % WARP;
    if (warp_id >= tokens * heads) return;
    const int t = warp_id / heads, h = warp_id % heads;
    int lo = 0, hi = sequences;  // offsets[lo] <= t < offsets[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if ((int)offsets[mid] <= t) lo = mid; else hi = mid;
    }
    const int start = offsets[lo], end = offsets[lo + 1];
    const int hidden = heads * head_dim;
    const size_t stride = 3 * (size_t)hidden;

    float q[MAX_PER_LANE], acc[MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < MAX_PER_LANE; ++i) {
        const int c = lane + i * WARP;
        q[i] = c < head_dim ? to_float(qkv[t * stride + h * head_dim + c]) : 0.f;
        acc[i] = 0.f;
    }
    float running_max = -INFINITY, denom = 0.f;
    for (int j = start; j < end; ++j) {
        const T* key = qkv + j * stride + hidden + h * head_dim;
        online_softmax_step<MAX_PER_LANE>(q, key, key + hidden, head_dim, scale, running_max,
                                          denom, acc);
    }
    const float inv = 1.f / denom;
#pragma unroll
    for (int i = 0; i < MAX_PER_LANE; ++i) {
        const int c = lane + i * WARP;
        if (c < head_dim) store(out + (size_t)t * hidden + h * head_dim + c, acc[i] * inv);
    }
}

extern "C" __global__ void ragged_attention_f32(float* out, const float* qkv, const u32* offsets,
                                                int sequences, int tokens, int heads, int head_dim,
                                                float scale) {
    ragged_attention(out, qkv, offsets, sequences, tokens, heads, head_dim, scale);
}

extern "C" __global__ void ragged_attention_bf16(bf16* out, const bf16* qkv, const u32* offsets,
                                                 int sequences, int tokens, int heads, int head_dim,
                                                 float scale) {
    ragged_attention(out, qkv, offsets, sequences, tokens, heads, head_dim, scale);
}
