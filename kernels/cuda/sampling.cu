// Choosing tokens from logits (rows × vocab), one block per row, with the semantics of
// kernels/src/cpu/sampling.rs: argmax (the first among equals), the log-softmax probability of
// a given token, and sampling after the repetition penalty, temperature, top-k and top-p, by
// inverse CDF over the kept tokens sorted most likely first.
//
// The sampler never sorts. A token's place in the sorted order is its 64-bit key (its logit's
// bits mapped to an order-preserving unsigned integer, then its inverted index, so equal
// logits rank by index as a stable sort does); every "which token is at this point of the
// order" question is answered by a radix descent over the keys, 8 bits a pass, with a 256-bin
// histogram of counts (top-k) or of probabilities in 2^-52 fixed point (top-p, the sampled
// token). Integer sums make the choice deterministic; it agrees with the f64 CPU walk except
// when the uniform falls within about vocab · 2^-52 of a boundary of the CDF.

// Blocks have a multiple of 32 threads, at most 1024.

typedef unsigned long long u64;

// One row's parameters, laid out as the Rust `RowSampling` (repr(C)).
struct RowSampling {
    float temperature;
    u32 top_k;
    float top_p;
    float repetition_penalty;
    double uniform;
};

struct Add {
    template <typename V>
    __device__ V operator()(V a, V b) const { return a + b; }
};

struct Max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// `op` over the block, in a fixed order (deterministic); every thread gets the result.
// `scratch` holds 32 values and may be reused by the next call.
template <typename V, typename Op>
__device__ V block_reduce(V v, V* scratch, Op op) {
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    const int warps = (blockDim.x + WARP - 1) / WARP;
    for (int o = WARP / 2; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    V total = scratch[0];
    for (int w = 1; w < warps; ++w) total = op(total, scratch[w]);
    __syncthreads();
    return total;
}

struct Best {
    float value;
    u32 index;
};

__device__ __forceinline__ Best better(Best a, Best b) {
    return b.value > a.value || (b.value == a.value && b.index < a.index) ? b : a;
}

// The index of the largest of row[0..n), the first among equals. As a sequential
// `if (v > best)` scan from index 0: a NaN never wins, except a NaN at index 0, which nothing
// beats. `values` / `indices` hold 32 entries each.
template <typename T>
__device__ u32 row_argmax(const T* row, int n, float* values, u32* indices) {
    Best best = {-INFINITY, INVALID_ROW};
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = to_float(row[i]);
        if (v != v) v = -INFINITY;
        if (v > best.value || best.index == INVALID_ROW) best = Best{v, (u32)i};
    }
    for (int o = WARP / 2; o > 0; o >>= 1) {
        const Best other = {__shfl_xor_sync(FULL_MASK, best.value, o),
                            __shfl_xor_sync(FULL_MASK, best.index, o)};
        best = better(best, other);
    }
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    if (lane == 0) {
        values[warp] = best.value;
        indices[warp] = best.index;
    }
    __syncthreads();
    Best total = {values[0], indices[0]};
    for (int w = 1; w < (int)(blockDim.x + WARP - 1) / WARP; ++w)
        total = better(total, Best{values[w], indices[w]});
    __syncthreads();
    const float first = to_float(row[0]);
    return first != first ? 0u : total.index;
}

template <typename T>
__device__ void argmax_rows(u32* out, const T* logits, int vocab) {
    __shared__ float values[WARP];
    __shared__ u32 indices[WARP];
    const u32 best = row_argmax(logits + (size_t)blockIdx.x * vocab, vocab, values, indices);
    if (threadIdx.x == 0) out[blockIdx.x] = best;
}

extern "C" __global__ void argmax_f32(u32* out, const float* logits, int vocab) {
    argmax_rows(out, logits, vocab);
}

extern "C" __global__ void argmax_bf16(u32* out, const bf16* logits, int vocab) {
    argmax_rows(out, logits, vocab);
}

// out[r] = log_softmax(row r)[tokens[r]] in f32: l[t] − max − log Σ exp(l − max).
template <typename T>
__device__ void token_logprob(float* out, const T* logits, const u32* tokens, int vocab) {
    __shared__ float scratch[WARP];
    const T* row = logits + (size_t)blockIdx.x * vocab;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, to_float(row[i]));
    m = block_reduce(m, scratch, Max());
    float sum = 0.f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(to_float(row[i]) - m);
    sum = block_reduce(sum, scratch, Add());
    if (threadIdx.x == 0) out[blockIdx.x] = to_float(row[tokens[blockIdx.x]]) - m - logf(sum);
}

extern "C" __global__ void token_logprob_f32(float* out, const float* logits, const u32* tokens,
                                             int vocab) {
    token_logprob(out, logits, tokens, vocab);
}

extern "C" __global__ void token_logprob_bf16(float* out, const bf16* logits, const u32* tokens,
                                              int vocab) {
    token_logprob(out, logits, tokens, vocab);
}

// The rank of (value, index) in the sampler's order, larger first: f32 total order (as Rust's
// total_cmp), then the lower index.
__device__ __forceinline__ u64 sort_key(float value, u32 index) {
    u32 bits = __float_as_uint(value);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return ((u64)bits << 32) | (u64)(~index);
}

#define FIXED_ONE 4503599627370496.0  // 2^52

// One row's scaled logits and the distribution over them: tokens with a key ≥ `floor` are
// candidates, with probability exp(v − max) / total.
struct Distribution {
    const float* values;
    int vocab;
    float max;
    double total;
    u64 floor;

    __device__ bool candidate(int i, u64* key) const {
        *key = sort_key(values[i], i);
        return *key >= floor;
    }
    // Token i's probability in 2^-52 units (valid for a candidate).
    __device__ u64 mass(int i) const {
        return __double2ull_rn(exp((double)(values[i] - max)) / total * FIXED_ONE);
    }
};

// Shared memory of the radix descent.
struct Descent {
    u64 histogram[256];
    u64 prefix;
    int found;
};

// Among the candidates, the largest key whose inclusive weight (its own plus that of every
// larger key) exceeds `target`, weights being 1 (`by_mass` false: the (target + 1)-th largest
// key) or masses. False when the candidates weigh `target` or less in all.
__device__ bool select_key(const Distribution& d, bool by_mass, u64 target, Descent* s,
                           u64* result) {
    u64 prefix = 0, above = 0;  // `above` is thread 0's: the weight of keys past the prefix
    for (int shift = 56; shift >= 0; shift -= 8) {
        const u64 high = shift == 56 ? 0ull : ~0ull << (shift + 8);
        for (int b = threadIdx.x; b < 256; b += blockDim.x) s->histogram[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < d.vocab; i += blockDim.x) {
            u64 key;
            if (!d.candidate(i, &key) || (key & high) != prefix) continue;
            atomicAdd(&s->histogram[(key >> shift) & 255], by_mass ? d.mass(i) : 1ull);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            for (; b >= 0 && above + s->histogram[b] <= target; --b) above += s->histogram[b];
            s->found = b >= 0;
            s->prefix = prefix | ((u64)(b >= 0 ? b : 0) << shift);
        }
        __syncthreads();
        if (!s->found) return false;
        prefix = s->prefix;
    }
    *result = prefix;
    return true;
}

// out[r]: the token row r's parameters pick. `work` (rows × vocab f32) receives the penalised,
// temperature-scaled logits; seen[seen_offsets[r] .. seen_offsets[r + 1]) are the row's tokens
// so far (ids ≥ vocab ignored).
template <typename T>
__device__ void sample_rows(u32* out, float* work, const T* logits, const RowSampling* params,
                            const u32* seen_offsets, const u32* seen, int vocab) {
    __shared__ float values[WARP];
    __shared__ u32 indices[WARP];
    __shared__ double doubles[WARP];
    __shared__ u64 integers[WARP];
    __shared__ Descent descent;
    const RowSampling p = params[blockIdx.x];
    const T* row = logits + (size_t)blockIdx.x * vocab;
    float* scaled = work + (size_t)blockIdx.x * vocab;
    const float divisor = p.temperature > 0.f ? p.temperature : 1.f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) scaled[i] = to_float(row[i]) / divisor;
    __syncthreads();
    if (p.repetition_penalty != 1.f) {
        // From the original logits: a token seen twice is penalised once.
        for (u32 k = seen_offsets[blockIdx.x] + threadIdx.x; k < seen_offsets[blockIdx.x + 1];
             k += blockDim.x) {
            const u32 t = seen[k];
            if (t >= (u32)vocab) continue;
            const float l = to_float(row[t]);
            scaled[t] = (l < 0.f ? l * p.repetition_penalty : l / p.repetition_penalty) / divisor;
        }
        __syncthreads();
    }
    if (p.temperature <= 0.f) {
        const u32 best = row_argmax(scaled, vocab, values, indices);
        if (threadIdx.x == 0) out[blockIdx.x] = best;
        return;
    }
    Distribution d = {scaled, vocab, -INFINITY, 0.0, 0ull};
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) d.max = fmaxf(d.max, scaled[i]);
    d.max = block_reduce(d.max, values, Max());
    if (p.top_k > 0 && p.top_k < (u32)vocab) {
        u64 kth;
        select_key(d, false, p.top_k - 1, &descent, &kth);
        d.floor = kth;
    }
    double total = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        u64 key;
        if (d.candidate(i, &key)) total += exp((double)(scaled[i] - d.max));
    }
    d.total = block_reduce(total, doubles, Add());
    if (p.top_p < 1.f) {
        // Keep tokens, most likely first, until their probability reaches top_p.
        const double need = ceil((double)p.top_p * FIXED_ONE);
        u64 cut;
        if (select_key(d, true, need >= 1.0 ? (u64)need - 1 : 0ull, &descent, &cut)) d.floor = cut;
    }
    u64 kept = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        u64 key;
        if (d.candidate(i, &key)) kept += d.mass(i);
    }
    kept = block_reduce(kept, integers, Add());
    u64 target = (u64)(p.uniform * (double)kept);
    if (target >= kept) target = kept - 1;
    u64 key = 0;
    select_key(d, true, target, &descent, &key);
    if (threadIdx.x == 0) out[blockIdx.x] = ~(u32)key;
}

extern "C" __global__ void sample_f32(u32* out, float* work, const float* logits,
                                      const RowSampling* params, const u32* seen_offsets,
                                      const u32* seen, int vocab) {
    sample_rows(out, work, logits, params, seen_offsets, seen, vocab);
}

extern "C" __global__ void sample_bf16(u32* out, float* work, const bf16* logits,
                                       const RowSampling* params, const u32* seen_offsets,
                                       const u32* seen, int vocab) {
    sample_rows(out, work, logits, params, seen_offsets, seen, vocab);
}
