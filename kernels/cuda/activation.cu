// Epilogue of a linear layer: x ← activation(x + bias), element-wise over a rows × cols matrix.
// activation: 0 identity, 1 exact (erf) GELU, 2 tanh.

template <typename T>
__device__ void bias_activation(T* x, const T* bias, int has_bias, size_t rows, int cols,
                                int activation) {
    const size_t total = rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = to_float(x[i]);
        if (has_bias) v += to_float(bias[i % cols]);
        if (activation == 1) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
        else if (activation == 2) v = tanhf(v);
        store(x + i, v);
    }
}

extern "C" __global__ void bias_activation_f32(float* x, const float* bias, int has_bias,
                                               size_t rows, int cols, int activation) {
    bias_activation(x, bias, has_bias, rows, cols, activation);
}

extern "C" __global__ void bias_activation_bf16(bf16* x, const bf16* bias, int has_bias,
                                                size_t rows, int cols, int activation) {
    bias_activation(x, bias, has_bias, rows, cols, activation);
}
