// BERT input embeddings: word + position + token-type rows gathered and summed, then layer
// norm, one block per token.

template <typename T>
__device__ void embed_layer_norm(T* out, const T* word, const T* position, const T* token_type,
                                 const u32* token_ids, const u32* position_ids, const T* gamma,
                                 const T* beta, float eps, int hidden) {
    float* row = (float*)dynamic_smem;
    __shared__ float scratch[WARP];
    const size_t t = blockIdx.x;
    const T* w = word + (size_t)token_ids[t] * hidden;
    const T* p = position + (size_t)position_ids[t] * hidden;
    float local = 0.f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float v = to_float(w[c]) + to_float(p[c]) + to_float(token_type[c]);
        row[c] = v;
        local += v;
    }
    layer_norm_store(row, local, out + t * hidden, gamma, beta, eps, hidden, scratch);
}

extern "C" __global__ void embed_layer_norm_f32(float* out, const float* word, const float* position,
                                                const float* token_type, const u32* token_ids,
                                                const u32* position_ids, const float* gamma,
                                                const float* beta, float eps, int hidden) {
    embed_layer_norm(out, word, position, token_type, token_ids, position_ids, gamma, beta, eps, hidden);
}

extern "C" __global__ void embed_layer_norm_bf16(bf16* out, const bf16* word, const bf16* position,
                                                 const bf16* token_type, const u32* token_ids,
                                                 const u32* position_ids, const bf16* gamma,
                                                 const bf16* beta, float eps, int hidden) {
    embed_layer_norm(out, word, position, token_type, token_ids, position_ids, gamma, beta, eps, hidden);
}
