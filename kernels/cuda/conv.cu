// Convolution and pooling of NHWC image batches held as (batch·height·width) × channels
// matrices: im2col (the GEMM itself is cuBLAS), the fused epilogue after it, and max pooling.

struct Geometry {
    int batch, height, width, channels;      // input
    int out_height, out_width;               // output
    int kernel_height, kernel_width, stride, padding;
};

// cols[(b·oh + oy)·ow + ox][(ky·kw + kx)·c + ch] = x[b][oy·s − p + ky][ox·s − p + kx][ch],
// zero outside the image.
template <typename T>
__device__ void im2col(T* cols, const T* x, Geometry g) {
    const size_t k = (size_t)g.kernel_height * g.kernel_width * g.channels;
    const size_t total = (size_t)g.batch * g.out_height * g.out_width * k;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t p = i / k;
        const int r = (int)(i % k);
        const int ch = r % g.channels;
        const int kx = (r / g.channels) % g.kernel_width;
        const int ky = r / (g.channels * g.kernel_width);
        const int ox = (int)(p % g.out_width);
        const int oy = (int)((p / g.out_width) % g.out_height);
        const int b = (int)(p / ((size_t)g.out_width * g.out_height));
        const int iy = oy * g.stride - g.padding + ky;
        const int ix = ox * g.stride - g.padding + kx;
        float v = 0.f;
        if (iy >= 0 && iy < g.height && ix >= 0 && ix < g.width)
            v = to_float(x[(((size_t)b * g.height + iy) * g.width + ix) * g.channels + ch]);
        store(cols + i, v);
    }
}

// out ← relu?(out + bias[col] + residual), element-wise over rows × cols.
template <typename T>
__device__ void conv_epilogue(T* out, const T* bias, int has_bias, const T* residual,
                              int has_residual, int relu, size_t rows, int cols) {
    const size_t total = rows * (size_t)cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = to_float(out[i]);
        if (has_bias) v += to_float(bias[i % cols]);
        if (has_residual) v += to_float(residual[i]);
        if (relu) v = fmaxf(v, 0.f);
        store(out + i, v);
    }
}

// Max over each window, padding counting as −∞.
template <typename T>
__device__ void max_pool2d(T* out, const T* x, Geometry g) {
    const size_t total = (size_t)g.batch * g.out_height * g.out_width * g.channels;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const int ch = (int)(i % g.channels);
        const size_t p = i / g.channels;
        const int ox = (int)(p % g.out_width);
        const int oy = (int)((p / g.out_width) % g.out_height);
        const int b = (int)(p / ((size_t)g.out_width * g.out_height));
        float best = -INFINITY;
        for (int ky = 0; ky < g.kernel_height; ++ky) {
            const int iy = oy * g.stride - g.padding + ky;
            if (iy < 0 || iy >= g.height) continue;
            for (int kx = 0; kx < g.kernel_width; ++kx) {
                const int ix = ox * g.stride - g.padding + kx;
                if (ix < 0 || ix >= g.width) continue;
                best = fmaxf(best, to_float(x[(((size_t)b * g.height + iy) * g.width + ix) * g.channels + ch]));
            }
        }
        store(out + i, best);
    }
}

extern "C" __global__ void im2col_f32(float* cols, const float* x, Geometry g) { im2col(cols, x, g); }
extern "C" __global__ void im2col_bf16(bf16* cols, const bf16* x, Geometry g) { im2col(cols, x, g); }

extern "C" __global__ void conv_epilogue_f32(float* out, const float* bias, int has_bias,
                                             const float* residual, int has_residual, int relu,
                                             size_t rows, int cols) {
    conv_epilogue(out, bias, has_bias, residual, has_residual, relu, rows, cols);
}
extern "C" __global__ void conv_epilogue_bf16(bf16* out, const bf16* bias, int has_bias,
                                              const bf16* residual, int has_residual, int relu,
                                              size_t rows, int cols) {
    conv_epilogue(out, bias, has_bias, residual, has_residual, relu, rows, cols);
}

extern "C" __global__ void max_pool2d_f32(float* out, const float* x, Geometry g) { max_pool2d(out, x, g); }
extern "C" __global__ void max_pool2d_bf16(bf16* out, const bf16* x, Geometry g) { max_pool2d(out, x, g); }
