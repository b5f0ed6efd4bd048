// Batched top-K by inner product, the selection fused into the scan (BlockSelect-style).
//
// Every block owns one segment of the work of one query (blockIdx.y): corpus rows scored in
// the kernel, columns of a score tile computed by a GEMM, or candidate lists from an earlier
// pass. It keeps its best `k` entries sorted at the front of a shared-memory buffer of `cap`
// slots (a power of two ≥ k + step) and admits an entry only when it beats the current k-th,
// so almost everything is rejected by one comparison once the buffer has filled; when the
// buffer could overflow in the next step it is bitonic-sorted and cut back to `k`.
//
// Order: higher score first, then lower tie rank (unique per row), exactly as on the CPU, so
// results are deterministic. NaN scores and ineligible rows never enter. Each block writes
// `k` entries (padded with invalid ones: row INVALID_ROW) for its (query, segment).

__device__ __forceinline__ bool better(float s1, u32 t1, float s2, u32 t2) {
    return s1 > s2 || (s1 == s2 && t1 < t2);
}

// The shared state of one block's selection.
struct Selection {
    float* score;
    u32* tie;
    u32* row;
    int cap;
    int k;
    int* count;
    float* th_score;
    u32* th_tie;
};

__device__ void sel_init(Selection& sel) {
    if (threadIdx.x == 0) {
        *sel.count = 0;
        *sel.th_score = -INFINITY;
        *sel.th_tie = 0xffffffffu;
    }
    __syncthreads();
}

// Whether an entry beats the current k-th (always true until k entries are held).
__device__ __forceinline__ bool sel_beats(const Selection& sel, float s, u32 tie) {
    return better(s, tie, *sel.th_score, *sel.th_tie);
}

__device__ __forceinline__ void sel_push(Selection& sel, float s, u32 tie, u32 row) {
    const int slot = atomicAdd(sel.count, 1);
    sel.score[slot] = s;
    sel.tie[slot] = tie;
    sel.row[slot] = row;
}

// Sorts the buffer best-first and keeps the best k. Called by the whole block.
__device__ void sel_merge(Selection& sel) {
    __syncthreads();
    const int held = *sel.count;
    for (int i = held + threadIdx.x; i < sel.cap; i += blockDim.x) {
        sel.score[i] = -INFINITY;
        sel.tie[i] = 0xffffffffu;
        sel.row[i] = INVALID_ROW;
    }
    for (int size = 2; size <= sel.cap; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int i = threadIdx.x; i < sel.cap; i += blockDim.x) {
                const int j = i ^ stride;
                if (j <= i) continue;
                const bool best_first = (i & size) == 0;
                const bool swap = best_first
                    ? better(sel.score[j], sel.tie[j], sel.score[i], sel.tie[i])
                    : better(sel.score[i], sel.tie[i], sel.score[j], sel.tie[j]);
                if (swap) {
                    const float s = sel.score[i]; sel.score[i] = sel.score[j]; sel.score[j] = s;
                    const u32 t = sel.tie[i]; sel.tie[i] = sel.tie[j]; sel.tie[j] = t;
                    const u32 r = sel.row[i]; sel.row[i] = sel.row[j]; sel.row[j] = r;
                }
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const int kept = min(held, sel.k);
        *sel.count = kept;
        if (kept == sel.k) {
            *sel.th_score = sel.score[sel.k - 1];
            *sel.th_tie = sel.tie[sel.k - 1];
        }
    }
    __syncthreads();
}

// After a step: merges when the next step could overflow the buffer.
__device__ __forceinline__ void sel_settle(Selection& sel, int step) {
    __syncthreads();
    if (*sel.count > sel.cap - step) sel_merge(sel);
}

// Final sort, then this block's k entries (invalid-padded) to out[slot * k ...].
__device__ void sel_write(Selection& sel, size_t slot, float* out_score, u32* out_tie,
                          u32* out_row) {
    sel_merge(sel);
    const int held = *sel.count;
    for (int i = threadIdx.x; i < sel.k; i += blockDim.x) {
        const size_t o = slot * sel.k + i;
        const bool valid = i < held;
        out_score[o] = valid ? sel.score[i] : -INFINITY;
        out_tie[o] = valid ? sel.tie[i] : 0xffffffffu;
        out_row[o] = valid ? sel.row[i] : INVALID_ROW;
    }
}

// The eligibility rules shared by the corpus and score-tile scans.
struct Rules {
    const float* row_bias;        // per row, or null
    const unsigned char* allowed; // per row, or null
    const u32* excluded_offsets;  // per query CSR offsets into excluded_rows, or null
    const u32* excluded_rows;     // sorted per query
    const u32* tie_rank;          // per row, or null (the row itself)
};

__device__ __forceinline__ u32 tie_of(const Rules& rules, u32 row) {
    return rules.tie_rank ? rules.tie_rank[row] : row;
}

__device__ __forceinline__ bool eligible(const Rules& rules, int query, u32 row) {
    if (rules.allowed && !rules.allowed[row]) return false;
    if (rules.excluded_offsets) {
        int lo = rules.excluded_offsets[query], hi = rules.excluded_offsets[query + 1];
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            const u32 v = rules.excluded_rows[mid];
            if (v == row) return false;
            if (v < row) lo = mid + 1; else hi = mid;
        }
    }
    return true;
}

__device__ __forceinline__ void offer(Selection& sel, const Rules& rules, int query, u32 row,
                                      float s) {
    if (rules.row_bias) s += rules.row_bias[row];
    const u32 tie = tie_of(rules, row);
    if (sel_beats(sel, s, tie) && eligible(rules, query, row)) sel_push(sel, s, tie, row);
}

__device__ Selection carve(unsigned char* smem, int cap, int k, int* count, float* th_score,
                           u32* th_tie) {
    Selection sel;
    sel.score = (float*)smem;
    sel.tie = (u32*)(sel.score + cap);
    sel.row = sel.tie + cap;
    sel.cap = cap;
    sel.k = k;
    sel.count = count;
    sel.th_score = th_score;
    sel.th_tie = th_tie;
    return sel;
}

#define ROWS_PER_WARP 4

// Scores corpus rows against one query in the kernel (a warp per group of rows, lanes over
// the dimensions, coalesced) and selects: the path for a few queries, bound by reading the
// corpus once per query. Shared memory: cap × 12 bytes, then d + step floats.
template <typename T>
__device__ void scan_corpus(const float* queries, const T* corpus, int rows, int dim,
                            const Rules& rules, int k, int cap, int segment_rows,
                            float* out_score, u32* out_tie, u32* out_row) {
    __shared__ int count;
    __shared__ float th_score;
    __shared__ u32 th_tie;
    Selection sel = carve(dynamic_smem, cap, k, &count, &th_score, &th_tie);
    float* query = (float*)(sel.row + cap);
    const int warps = blockDim.x / WARP, warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int step = warps * ROWS_PER_WARP;
    float* staged = query + dim;

    const int q = blockIdx.y;
    const int begin = blockIdx.x * segment_rows;
    const int end = min(rows, begin + segment_rows);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) query[c] = queries[(size_t)q * dim + c];
    sel_init(sel);

    for (int base = begin; base < end; base += step) {
        const int first = base + warp * ROWS_PER_WARP;
        float acc[ROWS_PER_WARP];
#pragma unroll
        for (int i = 0; i < ROWS_PER_WARP; ++i) acc[i] = 0.f;
        for (int c = lane; c < dim; c += WARP) {
            const float qc = query[c];
#pragma unroll
            for (int i = 0; i < ROWS_PER_WARP; ++i)
                if (first + i < end) acc[i] += qc * to_float(corpus[(size_t)(first + i) * dim + c]);
        }
#pragma unroll
        for (int i = 0; i < ROWS_PER_WARP; ++i) {
            const float s = warp_sum(acc[i]);
            if (lane == 0) staged[warp * ROWS_PER_WARP + i] = s;
        }
        __syncthreads();
        if (threadIdx.x < step && base + (int)threadIdx.x < end)
            offer(sel, rules, q, base + threadIdx.x, staged[threadIdx.x]);
        sel_settle(sel, step);
    }
    sel_write(sel, (size_t)q * gridDim.x + blockIdx.x, out_score, out_tie, out_row);
}

extern "C" __global__ void topk_scan_corpus_f32(
    const float* queries, const float* corpus, int rows, int dim, const float* row_bias,
    const unsigned char* allowed, const u32* excluded_offsets, const u32* excluded_rows,
    const u32* tie_rank, int k, int cap, int segment_rows, float* out_score, u32* out_tie,
    u32* out_row) {
    const Rules rules = {row_bias, allowed, excluded_offsets, excluded_rows, tie_rank};
    scan_corpus(queries, corpus, rows, dim, rules, k, cap, segment_rows, out_score, out_tie, out_row);
}

extern "C" __global__ void topk_scan_corpus_bf16(
    const float* queries, const bf16* corpus, int rows, int dim, const float* row_bias,
    const unsigned char* allowed, const u32* excluded_offsets, const u32* excluded_rows,
    const u32* tie_rank, int k, int cap, int segment_rows, float* out_score, u32* out_tie,
    u32* out_row) {
    const Rules rules = {row_bias, allowed, excluded_offsets, excluded_rows, tie_rank};
    scan_corpus(queries, corpus, rows, dim, rules, k, cap, segment_rows, out_score, out_tie, out_row);
}

// Selects from a tile of scores computed by a GEMM: scores is queries × tile_cols (row
// stride `ld`), column c being corpus row tile_start + c. A thread per column, coalesced.
// Output slot of (query q, segment s): q * total_segments + segment_offset + s.
extern "C" __global__ void topk_scan_scores(
    const float* scores, int ld, int tile_start, int tile_cols, const float* row_bias,
    const unsigned char* allowed, const u32* excluded_offsets, const u32* excluded_rows,
    const u32* tie_rank, int k, int cap, int segment_cols, int total_segments,
    int segment_offset, float* out_score, u32* out_tie, u32* out_row) {
    __shared__ int count;
    __shared__ float th_score;
    __shared__ u32 th_tie;
    Selection sel = carve(dynamic_smem, cap, k, &count, &th_score, &th_tie);
    const Rules rules = {row_bias, allowed, excluded_offsets, excluded_rows, tie_rank};
    const int q = blockIdx.y;
    const int begin = blockIdx.x * segment_cols;
    const int end = min(tile_cols, begin + segment_cols);
    const float* row_scores = scores + (size_t)q * ld;
    sel_init(sel);
    for (int base = begin; base < end; base += blockDim.x) {
        const int c = base + threadIdx.x;
        if (c < end) offer(sel, rules, q, tile_start + c, row_scores[c]);
        sel_settle(sel, blockDim.x);
    }
    sel_write(sel, (size_t)q * total_segments + segment_offset + blockIdx.x, out_score, out_tie,
              out_row);
}

// Reduces candidate lists (`per_query` entries per query, invalid ones skipped) to k per
// segment; repeated until one segment is left, which is then the sorted answer.
extern "C" __global__ void topk_reduce(const float* in_score, const u32* in_tie,
                                       const u32* in_row, int per_query, int k, int cap,
                                       int segment_entries, float* out_score, u32* out_tie,
                                       u32* out_row) {
    __shared__ int count;
    __shared__ float th_score;
    __shared__ u32 th_tie;
    Selection sel = carve(dynamic_smem, cap, k, &count, &th_score, &th_tie);
    const int q = blockIdx.y;
    const int begin = blockIdx.x * segment_entries;
    const int end = min(per_query, begin + segment_entries);
    const size_t base_index = (size_t)q * per_query;
    sel_init(sel);
    for (int base = begin; base < end; base += blockDim.x) {
        const int i = base + threadIdx.x;
        if (i < end) {
            const size_t at = base_index + i;
            const u32 row = in_row[at];
            if (row != INVALID_ROW && sel_beats(sel, in_score[at], in_tie[at]))
                sel_push(sel, in_score[at], in_tie[at], row);
        }
        sel_settle(sel, blockDim.x);
    }
    sel_write(sel, (size_t)q * gridDim.x + blockIdx.x, out_score, out_tie, out_row);
}
