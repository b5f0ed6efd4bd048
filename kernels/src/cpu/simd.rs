//! Element-wise CPU kernels written as plain loops that LLVM vectorizes, compiled
//! three times (AVX-512, AVX2+FMA, baseline) and picked at run time, so one binary
//! runs anywhere and still uses the widest vectors the CPU has.

/// Defines a function whose body is compiled for AVX-512, AVX2+FMA and the baseline,
/// dispatching on the CPU's features at each call.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        multiversion! { $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

/// Lanes used to split reductions so they vectorize (16 f32 = one AVX-512 register).
const LANES: usize = 16;

/// Sum with `LANES` independent accumulators.
#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Maximum with `LANES` independent accumulators (NaN-free inputs).
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    tail.iter()
        .chain(acc.iter())
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// `erf(x)` for f32 as a rational polynomial on [-4, 4] (the approximation Eigen and
/// XLA use for float erf; error of a few ulp), with no branches or calls.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024_e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_600_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329_3e-3);
    q = x2.mul_add(q, -1.426_473_9e-2);
    x * p / q
}

/// `e^x` for f32 by range reduction to [-ln2/2, ln2/2] and a degree-6 polynomial
/// (relative error about 2e-7); inputs are clamped to [-87, 88], so very negative
/// inputs give about 1.6e-38 (a softmax term of nothing).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    p = r.mul_add(p, 1.0 / 24.0);
    p = r.mul_add(p, 1.0 / 6.0);
    p = r.mul_add(p, 0.5);
    p = r.mul_add(p, 1.0);
    p = r.mul_add(p, 1.0);
    // The rounded integer sits in the low mantissa bits of `shifted`: no conversion.
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    p * scale
}

multiversion! {
    /// Dot product of two equally long vectors (extra elements of the longer are ignored).
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        lane_dot(&a[..n], &b[..n])
    }
}

/// Dot product with `LANES` independent accumulators (inlined into its caller's features).
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dot products of four rows as long as `x` with `x`, in one pass over `x` (four
/// independent accumulator sets, each summed as [`lane_dot`] sums, so the results are
/// [`lane_dot`]'s bit for bit).
#[inline(always)]
fn lane_dot4(w: [&[f32]; 4], x: &[f32]) -> [f32; 4] {
    let (xs, x_tail) = x.as_chunks::<LANES>();
    let body = xs.len() * LANES;
    let [r0, r1, r2, r3] = w.map(|row| row[..body].as_chunks::<LANES>().0);
    let mut acc = [[0f32; LANES]; 4];
    let [a0, a1, a2, a3] = &mut acc;
    for ((((xc, w0), w1), w2), w3) in xs.iter().zip(r0).zip(r1).zip(r2).zip(r3) {
        for i in 0..LANES {
            a0[i] = w0[i].mul_add(xc[i], a0[i]);
            a1[i] = w1[i].mul_add(xc[i], a1[i]);
            a2[i] = w2[i].mul_add(xc[i], a2[i]);
            a3[i] = w3[i].mul_add(xc[i], a3[i]);
        }
    }
    let mut out = [0f32; 4];
    for ((o, a), row) in out.iter_mut().zip(&acc).zip(w) {
        let tail: f32 = row[body..].iter().zip(x_tail).map(|(p, q)| p * q).sum();
        *o = a.iter().sum::<f32>() + tail;
    }
    out
}

/// The dot products of [`lane_dot4x2`] and [`lane_dot4x4`] from their accumulator sets
/// (four per input row, in row order): each set's lanes summed, plus the scalar tail
/// past `body`, as [`lane_dot`] finishes.
#[inline(always)]
fn finish_sets<const R: usize>(
    w: [&[f32]; 4],
    x: [&[f32]; R],
    acc: &[[f32; LANES]],
    body: usize,
) -> [[f32; 4]; R] {
    let mut out = [[0f32; 4]; R];
    for (r, (o, sets)) in out.iter_mut().zip(acc.chunks_exact(4)).enumerate() {
        for ((v, a), row) in o.iter_mut().zip(sets).zip(w) {
            let tail: f32 = row[body..]
                .iter()
                .zip(&x[r][body..])
                .map(|(p, q)| p * q)
                .sum();
            *v = a.iter().sum::<f32>() + tail;
        }
    }
    out
}

/// [`lane_dot4`] for two input rows at once: the weight rows are loaded once for both,
/// eight independent accumulator sets; `out[r][i]` is row `i` of `w` dotted with
/// `x[r]`, [`lane_dot`]'s result bit for bit.
#[inline(always)]
fn lane_dot4x2(w: [&[f32]; 4], x: [&[f32]; 2]) -> [[f32; 4]; 2] {
    let (xa, _) = x[0].as_chunks::<LANES>();
    let (xb, _) = x[1].as_chunks::<LANES>();
    let body = xa.len() * LANES;
    let [r0, r1, r2, r3] = w.map(|row| row[..body].as_chunks::<LANES>().0);
    let mut acc = [[0f32; LANES]; 8];
    let [a0, a1, a2, a3, b0, b1, b2, b3] = &mut acc;
    for (((((xc, yc), w0), w1), w2), w3) in xa.iter().zip(xb).zip(r0).zip(r1).zip(r2).zip(r3) {
        for i in 0..LANES {
            a0[i] = w0[i].mul_add(xc[i], a0[i]);
            a1[i] = w1[i].mul_add(xc[i], a1[i]);
            a2[i] = w2[i].mul_add(xc[i], a2[i]);
            a3[i] = w3[i].mul_add(xc[i], a3[i]);
            b0[i] = w0[i].mul_add(yc[i], b0[i]);
            b1[i] = w1[i].mul_add(yc[i], b1[i]);
            b2[i] = w2[i].mul_add(yc[i], b2[i]);
            b3[i] = w3[i].mul_add(yc[i], b3[i]);
        }
    }
    finish_sets(w, x, &acc, body)
}

/// [`lane_dot4x2`] for four vectors `x` at once: sixteen accumulator sets (a register
/// each with AVX-512), so each weight load feeds four FMAs; results as [`lane_dot`]'s
/// bit for bit.
#[inline(always)]
fn lane_dot4x4(w: [&[f32]; 4], x: [&[f32]; 4]) -> [[f32; 4]; 4] {
    let (xa, _) = x[0].as_chunks::<LANES>();
    let (xb, _) = x[1].as_chunks::<LANES>();
    let (xc, _) = x[2].as_chunks::<LANES>();
    let (xd, _) = x[3].as_chunks::<LANES>();
    let body = xa.len() * LANES;
    let [r0, r1, r2, r3] = w.map(|row| row[..body].as_chunks::<LANES>().0);
    let mut acc = [[0f32; LANES]; 16];
    let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3] = &mut acc;
    for (((((((x0, x1), x2), x3), w0), w1), w2), w3) in xa
        .iter()
        .zip(xb)
        .zip(xc)
        .zip(xd)
        .zip(r0)
        .zip(r1)
        .zip(r2)
        .zip(r3)
    {
        for i in 0..LANES {
            a0[i] = w0[i].mul_add(x0[i], a0[i]);
            a1[i] = w1[i].mul_add(x0[i], a1[i]);
            a2[i] = w2[i].mul_add(x0[i], a2[i]);
            a3[i] = w3[i].mul_add(x0[i], a3[i]);
            b0[i] = w0[i].mul_add(x1[i], b0[i]);
            b1[i] = w1[i].mul_add(x1[i], b1[i]);
            b2[i] = w2[i].mul_add(x1[i], b2[i]);
            b3[i] = w3[i].mul_add(x1[i], b3[i]);
            c0[i] = w0[i].mul_add(x2[i], c0[i]);
            c1[i] = w1[i].mul_add(x2[i], c1[i]);
            c2[i] = w2[i].mul_add(x2[i], c2[i]);
            c3[i] = w3[i].mul_add(x2[i], c3[i]);
            d0[i] = w0[i].mul_add(x3[i], d0[i]);
            d1[i] = w1[i].mul_add(x3[i], d1[i]);
            d2[i] = w2[i].mul_add(x3[i], d2[i]);
            d3[i] = w3[i].mul_add(x3[i], d3[i]);
        }
    }
    finish_sets(w, x, &acc, body)
}

multiversion! {
    /// One block of a linear layer on few rows: for every row `i` of the `rows × k`
    /// weights `w` and every row `r` of the `m × k` input `x`,
    /// `out[i·m + r] = w_i · x_r` (so `out` is the block's output transposed,
    /// `rows × m`). Each weight row is read once, four at a time, and dotted with every
    /// row of `x` (four at a time, then a pair, then one) while it is in cache.
    pub fn dot_block(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
        let m = x.len() / k;
        let mut blocks = w.chunks_exact(4 * k);
        let mut outs = out.chunks_exact_mut(4 * m);
        for (w4, o4) in (&mut blocks).zip(&mut outs) {
            let rows = [&w4[..k], &w4[k..2 * k], &w4[2 * k..3 * k], &w4[3 * k..]];
            let quads = x.chunks_exact(4 * k);
            let rest = quads.remainder();
            for (q, xs) in quads.enumerate() {
                let four = [&xs[..k], &xs[k..2 * k], &xs[2 * k..3 * k], &xs[3 * k..]];
                for (r, dr) in lane_dot4x4(rows, four).into_iter().enumerate() {
                    for (i, v) in dr.into_iter().enumerate() {
                        o4[i * m + 4 * q + r] = v;
                    }
                }
            }
            let done = m - rest.len() / k;
            let pairs = rest.chunks_exact(2 * k);
            let single = pairs.remainder();
            for (p, xs) in pairs.enumerate() {
                let d = lane_dot4x2(rows, [&xs[..k], &xs[k..]]);
                for (r, dr) in d.into_iter().enumerate() {
                    for (i, v) in dr.into_iter().enumerate() {
                        o4[i * m + done + 2 * p + r] = v;
                    }
                }
            }
            if !single.is_empty() {
                for (i, v) in lane_dot4(rows, single).into_iter().enumerate() {
                    o4[i * m + m - 1] = v;
                }
            }
        }
        for (row, o) in blocks
            .remainder()
            .chunks_exact(k)
            .zip(outs.into_remainder().chunks_exact_mut(m))
        {
            for (v, xr) in o.iter_mut().zip(x.chunks_exact(k)) {
                *v = lane_dot(row, xr);
            }
        }
    }
}

multiversion! {
    /// Squared Euclidean distance of two equally long vectors.
    pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] = d.mul_add(d, acc[i]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

multiversion! {
    /// `x ← gelu(x)` (erf form) in place.
    pub fn gelu_in_place(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            let v = *x;
            *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// `dst = gelu(x)` (erf form), as `torch.nn.functional.gelu`.
    pub fn gelu(dst: &mut [f32], x: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(x) {
            *d = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// `dst = g · (Φ(x) + x·φ(x))`: the erf GELU's backward from its input `x` and the
    /// output's gradient `g` (Φ, φ the standard normal distribution and density).
    pub fn gelu_backward(dst: &mut [f32], x: &[f32], g: &[f32]) {
        // 1/√(2π): the standard normal density's constant.
        const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
        for ((d, &v), &g) in dst.iter_mut().zip(x).zip(g) {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            let density = FRAC_1_SQRT_2PI * exp(-0.5 * v * v);
            *d = g * v.mul_add(density, cdf);
        }
    }
}

multiversion! {
    /// `dst = softmax(scale · x + mask)` over one row (`mask` additive: 0 to keep, a
    /// large negative number to drop).
    pub fn masked_softmax_row(dst: &mut [f32], x: &[f32], mask: &[f32], scale: f32) {
        for ((d, &v), &m) in dst.iter_mut().zip(x).zip(mask) {
            *d = v.mul_add(scale, m);
        }
        let max = lane_max(dst);
        for d in dst.iter_mut() {
            // Below e^-87 (f32's smallest normal) a term is exactly 0, as in libm: masked
            // keys get no weight at all.
            let shifted = *d - max;
            let e = exp(shifted);
            *d = if shifted < -87.0 { 0.0 } else { e };
        }
        let inverse = 1.0 / lane_sum(dst);
        for d in dst.iter_mut() {
            *d *= inverse;
        }
    }
}

multiversion! {
    /// `dst = scale · p ⊙ (g − Σ g ⊙ p)` over one row: the softmax's backward from its
    /// output `p` and the output's gradient `g`.
    pub fn softmax_backward_row(dst: &mut [f32], p: &[f32], g: &[f32], scale: f32) {
        let dot = lane_dot(p, g);
        for ((d, &p), &g) in dst.iter_mut().zip(p).zip(g) {
            *d = scale * p * (g - dot);
        }
    }
}

multiversion! {
    /// `x ← tanh(x)` in place.
    pub fn tanh_in_place(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            // tanh(v) = 1 - 2 / (e^{2v} + 1), exact enough and branch-free.
            let e = exp(2.0 * *x);
            *x = 1.0 - 2.0 / (e + 1.0);
        }
    }
}

multiversion! {
    /// `dst = src + bias` (`bias` as long as `dst`), or a copy without a bias.
    pub fn copy_with_bias(dst: &mut [f32], src: &[f32], bias: Option<&[f32]>) {
        match bias {
            Some(bias) => {
                for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                    *d = s + b;
                }
            }
            None => dst.copy_from_slice(&src[..dst.len()]),
        }
    }
}

multiversion! {
    /// `src` rounded to bf16 (to nearest, ties to even; NaN stays NaN), as bits.
    pub fn to_bf16_bits(dst: &mut [u16], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            let bits = s.to_bits();
            let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
            let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
            *d = if nan { ((bits >> 16) | 0x40) as u16 } else { rounded as u16 };
        }
    }
}

multiversion! {
    /// Adds `bias` to every row of a `rows × bias.len()` matrix.
    pub fn add_bias_rows(data: &mut [f32], bias: &[f32]) {
        for row in data.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

multiversion! {
    /// A convolution's epilogue on a block of `width`-wide output rows:
    /// `x ← x + bias`, then `+ residual` (same shape as `data`), then `max(x, 0)` when `relu`.
    pub fn bias_residual_relu(data: &mut [f32], width: usize, bias: Option<&[f32]>, residual: Option<&[f32]>, relu: bool) {
        for (r, row) in data.chunks_exact_mut(width).enumerate() {
            if let Some(b) = bias {
                for (v, b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
            if let Some(res) = residual {
                for (v, x) in row.iter_mut().zip(&res[r * width..(r + 1) * width]) {
                    *v += x;
                }
            }
            if relu {
                for v in row.iter_mut() {
                    *v = if *v > 0.0 { *v } else { 0.0 };
                }
            }
        }
    }
}

multiversion! {
    /// `acc ← max(acc, x)` element-wise (max pooling's inner loop).
    pub fn max_in_place(acc: &mut [f32], x: &[f32]) {
        for (a, v) in acc.iter_mut().zip(x) {
            *a = if *v > *a { *v } else { *a };
        }
    }
}

multiversion! {
    /// `ln Σ exp(x)` over `xs`, the maximum taken out first; minus infinity when
    /// `xs` is empty or all minus infinity.
    pub fn log_sum_exp(xs: &[f32]) -> f32 {
        let max = lane_max(xs);
        if max == f32::NEG_INFINITY {
            return max;
        }
        let mut acc = [0f32; LANES];
        let chunks = xs.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&v| exp(v - max)).sum();
        for c in chunks {
            for i in 0..LANES {
                acc[i] += exp(c[i] - max);
            }
        }
        max + (acc.iter().sum::<f32>() + tail).ln()
    }
}

multiversion! {
    /// `acc ← acc + w · x` element-wise.
    pub fn axpy(acc: &mut [f32], w: f32, x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a = v.mul_add(w, *a);
        }
    }
}

multiversion! {
    /// SwiGLU's gate: `gate ← silu(gate) · up` element-wise.
    pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    }
}

multiversion! {
    /// Softmax of each `len`-wide row of `data` after scaling it by `scale`.
    pub fn softmax_rows(data: &mut [f32], len: usize, scale: f32) {
        for row in data.chunks_exact_mut(len) {
            let max = lane_max(row) * scale;
            for v in row.iter_mut() {
                *v = exp(v.mul_add(scale, -max));
            }
            let inv = 1.0 / lane_sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// Layer norm of every row of `rows` (width `gamma.len()`), after adding
    /// `residual` (same shape) when given. Mean and variance in two passes, as PyTorch.
    pub fn layer_norm_rows(rows: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
        let width = gamma.len();
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            if let Some(res) = residual {
                for (v, x) in row.iter_mut().zip(&res[r * width..(r + 1) * width]) {
                    *v += x;
                }
            }
            let mean = lane_sum(row) / width as f32;
            let mut acc = [0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            for c in chunks {
                for i in 0..LANES {
                    acc[i] += (c[i] - mean) * (c[i] - mean);
                }
            }
            let var = (acc.iter().sum::<f32>() + tail) / width as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

multiversion! {
    /// Scales every `width`-wide row to unit L2 norm (norm floored at 1e-12 as in
    /// `torch.nn.functional.normalize`).
    pub fn l2_normalize_rows(data: &mut [f32], width: usize) {
        for row in data.chunks_exact_mut(width) {
            let mut acc = [0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for i in 0..LANES {
                    acc[i] += c[i] * c[i];
                }
            }
            let norm = (acc.iter().sum::<f32>() + tail).sqrt();
            let inv = 1.0 / norm.max(1e-12);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_exp_match_libm() {
        let mut worst_erf = 0f64;
        let mut worst_exp = 0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 6e-5;
            worst_erf = worst_erf.max((erf(x) as f64 - libm::erf(x as f64)).abs());
            let y = x * 10.0;
            let e = libm::exp(y as f64);
            worst_exp = worst_exp.max(((exp(y) as f64) - e).abs() / e);
        }
        assert!(worst_erf < 1e-6, "erf abs error {worst_erf}");
        assert!(worst_exp < 1e-6, "exp rel error {worst_exp}");
        assert!(exp(-200.0) < 2e-38);
        assert_eq!(erf(10.0), 1.0);
    }

    #[test]
    fn gelu_softmax_and_their_backward_passes_match_f64_formulas() {
        let x: Vec<f32> = (0..300).map(|i| (i as f32 - 150.0) * 0.05).collect();
        let g: Vec<f32> = (0..300)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let (mut y, mut dx) = (vec![0f32; 300], vec![0f32; 300]);
        gelu(&mut y, &x);
        gelu_backward(&mut dx, &x, &g);
        for ((&x, &g), (&y, &dx)) in x.iter().zip(&g).zip(y.iter().zip(&dx)) {
            let v = x as f64;
            let cdf = 0.5 * (1.0 + libm::erf(v / std::f64::consts::SQRT_2));
            let density = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((y as f64 - v * cdf).abs() < 2e-6, "gelu({x})");
            assert!(
                (dx as f64 - g as f64 * (cdf + v * density)).abs() < 2e-6,
                "gelu'({x})"
            );
        }

        // One row of 7 keys, the last two masked; scale 0.5.
        let scores = [1.0f32, -2.0, 0.5, 3.0, 0.0, 9.0, -9.0];
        let mask = [0.0f32, 0.0, 0.0, 0.0, 0.0, f32::MIN, f32::MIN];
        let mut p = [0f32; 7];
        masked_softmax_row(&mut p, &scores, &mask, 0.5);
        let e: Vec<f64> = scores[..5]
            .iter()
            .map(|&s| (0.5 * s as f64).exp())
            .collect();
        let total: f64 = e.iter().sum();
        for (p, e) in p.iter().zip(&e) {
            assert!((*p as f64 - e / total).abs() < 1e-7);
        }
        assert_eq!(p[5..], [0.0, 0.0]);
        let upstream = [0.3f32, -1.0, 2.0, 0.5, 0.0, 4.0, 4.0];
        let mut grad = [0f32; 7];
        softmax_backward_row(&mut grad, &p, &upstream, 0.5);
        let dot: f64 = p
            .iter()
            .zip(&upstream)
            .map(|(&p, &u)| p as f64 * u as f64)
            .sum();
        for ((&gr, &p), &u) in grad.iter().zip(&p).zip(&upstream) {
            assert!((gr as f64 - 0.5 * p as f64 * (u as f64 - dot)).abs() < 1e-7);
        }
    }

    #[test]
    fn dot_and_distance_match_plain_sums() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let d: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let l: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        assert!((dot(&a, &b) as f64 - d).abs() < 1e-4);
        assert!((squared_l2(&a, &b) as f64 - l).abs() < 1e-4);
        assert_eq!(dot(&[], &[]), 0.0);
    }
}
