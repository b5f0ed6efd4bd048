// x ← layer_norm(x + residual) · gamma + beta, one block per row.

template <typename T>
__device__ void add_layer_norm(T* x, const T* residual, const T* gamma, const T* beta, float eps,
                               int hidden) {
    float* row = (float*)dynamic_smem;
    __shared__ float scratch[WARP];
    T* xr = x + (size_t)blockIdx.x * hidden;
    const T* rr = residual + (size_t)blockIdx.x * hidden;
    float local = 0.f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float v = to_float(xr[c]) + to_float(rr[c]);
        row[c] = v;
        local += v;
    }
    layer_norm_store(row, local, xr, gamma, beta, eps, hidden, scratch);
}

extern "C" __global__ void add_layer_norm_f32(float* x, const float* residual, const float* gamma,
                                              const float* beta, float eps, int hidden) {
    add_layer_norm(x, residual, gamma, beta, eps, hidden);
}

extern "C" __global__ void add_layer_norm_bf16(bf16* x, const bf16* residual, const bf16* gamma,
                                               const bf16* beta, float eps, int hidden) {
    add_layer_norm(x, residual, gamma, beta, eps, hidden);
}
