//! Every CPU op against a plain, obviously-correct f64 implementation, on odd sizes.

use marquee_kernels::{
    Activation, Backend, CpuBackend, ImageShape, LayerNorm, Matrix, Pooling, TopKOptions, Window2d,
};

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn matrix(rows: usize, cols: usize, seed: u64) -> Matrix {
    Matrix {
        rows,
        cols,
        data: values(rows * cols, seed),
    }
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs() / w.abs().max(1.0);
        assert!(err <= tol, "element {i}: got {g}, want {w}");
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()))
}

#[test]
fn linear_with_bias_and_activations() {
    let cpu = CpuBackend::default();
    let (m, k, n) = (37, 129, 67);
    let x = matrix(m, k, 1);
    let w = matrix(n, k, 2);
    let b = matrix(1, n, 3);
    let packed = cpu.upload_weight(n, k, &w.data).unwrap();
    for act in [Activation::Identity, Activation::Gelu, Activation::Tanh] {
        let got = cpu.linear(&x, &packed, Some(&b), act).unwrap();
        let mut want = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = b.data[j] as f64;
                for t in 0..k {
                    s += x.data[i * k + t] as f64 * w.data[j * k + t] as f64;
                }
                want[i * n + j] = match act {
                    Activation::Identity => s,
                    Activation::Gelu => gelu(s),
                    Activation::Tanh => s.tanh(),
                };
            }
        }
        assert_close(&got.data, &want, 1e-5);
    }
    let wrong = cpu
        .upload_weight(n, k + 1, &matrix(n, k + 1, 4).data)
        .unwrap();
    assert!(cpu.linear(&x, &wrong, None, Activation::Identity).is_err());
}

#[test]
fn add_layer_norm_and_embeddings() {
    let cpu = CpuBackend::default();
    let (rows, h) = (9, 33);
    let norm = LayerNorm {
        gamma: matrix(1, h, 5),
        beta: matrix(1, h, 6),
        eps: 1e-12,
    };
    let mut x = matrix(rows, h, 7);
    let residual = matrix(rows, h, 8);
    let want: Vec<f64> = (0..rows)
        .flat_map(|r| {
            let v: Vec<f64> = (0..h)
                .map(|c| (x.data[r * h + c] + residual.data[r * h + c]) as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / h as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / h as f64;
            (0..h)
                .map(|c| {
                    (v[c] - mean) / (var + 1e-12).sqrt() * norm.gamma.data[c] as f64
                        + norm.beta.data[c] as f64
                })
                .collect::<Vec<_>>()
        })
        .collect();
    cpu.add_layer_norm(&mut x, &residual, &norm).unwrap();
    assert_close(&x.data, &want, 1e-5);

    let (word, pos, ty) = (matrix(11, h, 9), matrix(5, h, 10), matrix(2, h, 11));
    let out = cpu
        .embed_tokens(&word, &pos, &ty, &[3, 10, 0], &[0, 1, 0], &norm)
        .unwrap();
    assert_eq!((out.rows, out.cols), (3, h));
    assert!(
        cpu.embed_tokens(&word, &pos, &ty, &[11], &[0], &norm)
            .is_err(),
        "token id out of range"
    );
    assert!(
        cpu.embed_tokens(&word, &pos, &ty, &[1], &[5], &norm)
            .is_err(),
        "position out of range"
    );
}

#[test]
fn ragged_attention_matches_per_sequence_softmax_attention() {
    let cpu = CpuBackend::default();
    let (heads, head_dim) = (3, 5);
    let hidden = heads * head_dim;
    let offsets = [0usize, 1, 8, 21];
    let qkv = matrix(21, 3 * hidden, 12);
    let got = cpu.attention(&qkv, &offsets, heads).unwrap();
    let at = |r: usize, c: usize| qkv.data[r * 3 * hidden + c] as f64;
    let mut want = vec![0f64; 21 * hidden];
    for w in offsets.windows(2) {
        for h in 0..heads {
            for i in w[0]..w[1] {
                let scores: Vec<f64> = (w[0]..w[1])
                    .map(|j| {
                        (0..head_dim)
                            .map(|d| at(i, h * head_dim + d) * at(j, hidden + h * head_dim + d))
                            .sum::<f64>()
                            / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for d in 0..head_dim {
                    want[i * hidden + h * head_dim + d] = (w[0]..w[1])
                        .zip(&exps)
                        .map(|(j, e)| e / sum * at(j, 2 * hidden + h * head_dim + d))
                        .sum();
                }
            }
        }
    }
    assert_close(&got.data, &want, 1e-5);
}

#[test]
fn pooling_and_normalisation() {
    let cpu = CpuBackend::default();
    let x = matrix(7, 4, 13);
    let offsets = [0usize, 3, 7];
    let mean = cpu.pool(&x, &offsets, Pooling::Mean).unwrap();
    let cls = cpu.pool(&x, &offsets, Pooling::Cls).unwrap();
    let max = cpu.pool(&x, &offsets, Pooling::Max).unwrap();
    for (s, w) in offsets.windows(2).enumerate() {
        for c in 0..4 {
            let col: Vec<f64> = (w[0]..w[1]).map(|r| x.data[r * 4 + c] as f64).collect();
            assert_close(
                &[mean.data[s * 4 + c]],
                &[col.iter().sum::<f64>() / col.len() as f64],
                1e-6,
            );
            assert_eq!(cls.data[s * 4 + c] as f64, col[0]);
            assert_eq!(
                max.data[s * 4 + c] as f64,
                col.iter().cloned().fold(f64::MIN, f64::max)
            );
        }
    }
    assert!(
        cpu.pool(&x, &[0, 3, 3, 7], Pooling::Mean).is_err(),
        "empty sequence"
    );

    let mut m = Matrix {
        rows: 2,
        cols: 3,
        data: vec![3.0, 0.0, 4.0, 0.0, 0.0, 0.0],
    };
    cpu.l2_normalize(&mut m).unwrap();
    assert_eq!(m.data, vec![0.6, 0.0, 0.8, 0.0, 0.0, 0.0]);
}

#[test]
fn top_k_matches_a_full_sort_with_index_tiebreak() {
    let cpu = CpuBackend::default();
    let dim = 8;
    // Duplicated rows create exact ties; a NaN row must never rank.
    let mut corpus = matrix(40_000, dim, 14);
    let row5: Vec<f32> = corpus.data[5 * dim..6 * dim].to_vec();
    corpus.data[17 * dim..18 * dim].copy_from_slice(&row5);
    corpus.data[30_001 * dim..30_002 * dim].copy_from_slice(&row5);
    corpus.data[9 * dim] = f32::NAN;
    let mut queries = matrix(3, dim, 15);
    queries.data[..dim].copy_from_slice(&row5);
    for k in [0, 1, 10, 37, 40_000, 50_000] {
        let got = cpu
            .top_k_dot(&queries, &corpus, k, &TopKOptions::default())
            .unwrap();
        for (q, hits) in got.iter().enumerate() {
            let mut all: Vec<(f32, u32)> = (0..corpus.rows)
                .map(|i| {
                    let s: f32 = (0..dim)
                        .map(|d| queries.data[q * dim + d] * corpus.data[i * dim + d])
                        .sum();
                    (s, i as u32)
                })
                .filter(|(s, _)| !s.is_nan())
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all.iter().take(k).map(|(_, i)| *i).collect();
            let got_ids: Vec<u32> = hits.iter().map(|h| h.index).collect();
            assert_eq!(got_ids.len(), want.len(), "k={k}");
            // Near-ties may swap between summation orders; exact ties must follow the index.
            let agree = got_ids.iter().zip(&want).filter(|(a, b)| a == b).count();
            assert!(
                agree as f64 >= 0.99 * want.len() as f64,
                "k={k}: {agree} of {}",
                want.len()
            );
        }
        if k >= corpus.rows {
            let at = |id: u32| got[0].iter().position(|h| h.index == id).unwrap();
            let p = at(5);
            assert_eq!(
                (at(17), at(30_001)),
                (p + 1, p + 2),
                "exact ties ordered by index"
            );
            assert_eq!(
                got[0].len(),
                corpus.rows - 1,
                "NaN row never ranks; k > n returns n"
            );
        }
    }
}

#[test]
fn top_k_options_bias_masks_exclusions_and_tie_ranks() {
    let cpu = CpuBackend::default();
    // Four identical rows: every score ties.
    let corpus = Matrix {
        rows: 4,
        cols: 2,
        data: vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
    };
    let queries = Matrix {
        rows: 2,
        cols: 2,
        data: vec![1.0, 0.0, 1.0, 0.0],
    };
    let ids = |hits: &Vec<marquee_kernels::Hit>| hits.iter().map(|h| h.index).collect::<Vec<_>>();

    let tie_rank = [3, 2, 1, 0];
    let got = cpu
        .top_k_dot(
            &queries,
            &corpus,
            4,
            &TopKOptions {
                tie_rank: Some(&tie_rank),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&got[0]), [3, 2, 1, 0], "ties follow tie_rank");

    let allowed = [true, false, true, true];
    // Duplicates in an exclusion list must not let later rows through.
    let excluded = vec![vec![0, 0, 3], vec![]];
    let got = cpu
        .top_k_dot(
            &queries,
            &corpus,
            4,
            &TopKOptions {
                allowed: Some(&allowed),
                excluded: Some(&excluded),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&got[0]), [2], "mask and per-query exclusions");
    assert_eq!(ids(&got[1]), [0, 2, 3]);

    let bias = [0.0, 0.5, -0.5, 0.25];
    let got = cpu
        .top_k_dot(
            &queries,
            &corpus,
            2,
            &TopKOptions {
                row_bias: Some(&bias),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(ids(&got[0]), [1, 3]);
    assert_eq!(got[0][0].score, 1.5);

    assert!(cpu
        .top_k_dot(
            &queries,
            &corpus,
            2,
            &TopKOptions {
                row_bias: Some(&[0.0]),
                ..Default::default()
            }
        )
        .is_err());
}

/// The tiled path (many queries) returns exactly what each query alone returns.
#[test]
fn batched_top_k_equals_one_query_at_a_time() {
    let cpu = CpuBackend::default();
    let dim = 16;
    let mut corpus = matrix(9_000, dim, 21);
    // Exact ties across tile and block boundaries.
    let row: Vec<f32> = corpus.data[..dim].to_vec();
    for r in [4095, 4096, 8191] {
        corpus.data[r * dim..(r + 1) * dim].copy_from_slice(&row);
    }
    let queries = matrix(150, dim, 22);
    let excluded: Vec<Vec<u32>> = (0..150)
        .map(|q| vec![q as u32, 4096, 5000 + q as u32])
        .collect();
    let options = TopKOptions {
        excluded: Some(&excluded),
        ..Default::default()
    };
    let batched = cpu.top_k_dot(&queries, &corpus, 25, &options).unwrap();
    for q in 0..150 {
        let one = Matrix {
            rows: 1,
            cols: dim,
            data: queries.data[q * dim..(q + 1) * dim].to_vec(),
        };
        let single_excluded = vec![excluded[q].clone()];
        let alone = cpu
            .top_k_dot(
                &one,
                &corpus,
                25,
                &TopKOptions {
                    excluded: Some(&single_excluded),
                    ..Default::default()
                },
            )
            .unwrap();
        let ids = |h: &Vec<marquee_kernels::Hit>| h.iter().map(|x| x.index).collect::<Vec<_>>();
        assert_eq!(ids(&batched[q]), ids(&alone[0]), "query {q}");
        assert!(batched[q].iter().all(|h| !excluded[q].contains(&h.index)));
    }
}

#[test]
fn fused_pool_and_normalise_equals_the_two_steps() {
    let x = matrix(23, 40, 11);
    let offsets = [0usize, 5, 6, 23];
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
        let mut want = CpuBackend::default().pool(&x, &offsets, pooling).unwrap();
        CpuBackend::default().l2_normalize(&mut want).unwrap();
        let got = CpuBackend::default()
            .pool_normalized(&x, &offsets, pooling)
            .unwrap();
        assert_eq!(got, want);
        for row in got.data.chunks(40) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
    }
}
/// A convolution in PyTorch's terms, in f64: `x` NHWC, `weight` `[ky][kx][in][out]`.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &Matrix,
    shape: ImageShape,
    weight: &Matrix,
    bias: &[f32],
    window: Window2d,
    residual: Option<&Matrix>,
    relu: bool,
) -> (ImageShape, Vec<f64>) {
    let c = x.cols;
    let n = weight.cols;
    let pad = window.padding as isize;
    let oh = (shape.height + 2 * window.padding - window.kernel_height) / window.stride + 1;
    let ow = (shape.width + 2 * window.padding - window.kernel_width) / window.stride + 1;
    let mut out = Vec::new();
    for b in 0..shape.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for (o, &bias_o) in bias.iter().enumerate() {
                    let mut s = bias_o as f64;
                    for ky in 0..window.kernel_height {
                        for kx in 0..window.kernel_width {
                            let iy = (oy * window.stride + ky) as isize - pad;
                            let ix = (ox * window.stride + kx) as isize - pad;
                            if iy < 0
                                || ix < 0
                                || iy >= shape.height as isize
                                || ix >= shape.width as isize
                            {
                                continue;
                            }
                            let row = (b * shape.height + iy as usize) * shape.width + ix as usize;
                            for ch in 0..c {
                                let w =
                                    weight.data[((ky * window.kernel_width + kx) * c + ch) * n + o];
                                s += w as f64 * x.data[row * c + ch] as f64;
                            }
                        }
                    }
                    if let Some(r) = residual {
                        s += r.data[out.len()] as f64;
                    }
                    out.push(if relu { s.max(0.0) } else { s });
                }
            }
        }
    }
    let output = ImageShape {
        batch: shape.batch,
        height: oh,
        width: ow,
    };
    (output, out)
}

#[test]
fn conv2d_matches_direct_convolution_with_fused_epilogue() {
    let cpu = CpuBackend::default();
    // (batch, height, width, in, out, kernel, stride, padding): ResNet's stem, 3x3 and
    // 1x1 convolutions with and without stride, on odd sizes, windows partly or wholly
    // in the padding; the big ones take the parallel-block path, the small ones one GEMM.
    let cases = [
        (2, 23, 17, 3, 8, 7, 2, 3),
        (1, 9, 11, 5, 7, 3, 1, 1),
        (2, 30, 31, 16, 12, 3, 1, 1),
        (3, 13, 8, 6, 10, 3, 2, 1),
        (2, 15, 9, 12, 20, 1, 2, 0),
        (2, 40, 33, 24, 40, 1, 1, 0),
        (1, 2, 3, 4, 5, 1, 1, 0),
        (1, 5, 6, 3, 2, 5, 1, 0),
        (1, 3, 3, 2, 3, 3, 3, 2),
        (3, 29, 31, 8, 16, 3, 1, 1),
        (1, 4, 5, 3, 4, 1, 1, 1),
    ];
    for (seed, &(batch, h, w, cin, cout, kernel, stride, padding)) in cases.iter().enumerate() {
        let seed = seed as u64 * 10;
        let shape = ImageShape {
            batch,
            height: h,
            width: w,
        };
        let window = Window2d::square(kernel, stride, padding);
        let x = matrix(shape.pixels(), cin, seed + 1);
        let weight = matrix(kernel * kernel * cin, cout, seed + 2);
        let bias = matrix(1, cout, seed + 3);
        let output = window.output_shape(shape).unwrap();
        let residual = matrix(output.pixels(), cout, seed + 4);
        for (with_bias, with_residual, relu) in [
            (false, false, false),
            (true, false, true),
            (true, true, true),
            (false, true, false),
        ] {
            let got = cpu
                .conv2d(
                    &x,
                    shape,
                    &weight,
                    with_bias.then_some(&bias),
                    window,
                    with_residual.then_some(&residual),
                    relu,
                )
                .unwrap();
            let zeros = vec![0.0; cout];
            let (want_shape, want) = naive_conv(
                &x,
                shape,
                &weight,
                if with_bias { &bias.data } else { &zeros },
                window,
                with_residual.then_some(&residual),
                relu,
            );
            assert_eq!(want_shape, output, "case {seed}");
            assert_eq!((got.rows, got.cols), (output.pixels(), cout));
            assert_close(&got.data, &want, 1e-5);
        }
    }
}

#[test]
fn conv2d_rejects_mismatched_operands() {
    let cpu = CpuBackend::default();
    let shape = ImageShape {
        batch: 1,
        height: 4,
        width: 4,
    };
    let x = matrix(16, 3, 1);
    let window = Window2d::square(3, 1, 1);
    let weight = matrix(27, 5, 2);
    assert!(cpu
        .conv2d(&x, shape, &matrix(26, 5, 2), None, window, None, false)
        .is_err());
    assert!(cpu
        .conv2d(&matrix(15, 3, 1), shape, &weight, None, window, None, false)
        .is_err());
    assert!(cpu
        .conv2d(
            &x,
            shape,
            &weight,
            Some(&matrix(1, 4, 3)),
            window,
            None,
            false
        )
        .is_err());
    assert!(cpu
        .conv2d(
            &x,
            shape,
            &weight,
            None,
            window,
            Some(&matrix(16, 4, 3)),
            false
        )
        .is_err());
    let too_big = Window2d::square(7, 1, 1);
    let err = cpu
        .conv2d(&x, shape, &matrix(147, 5, 2), None, too_big, None, false)
        .unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn max_pool_matches_window_maxima() {
    let cpu = CpuBackend::default();
    for (batch, h, w, c, kernel, stride, padding) in [
        (2, 112, 111, 8, 3, 2, 1),
        (1, 7, 6, 3, 3, 2, 1),
        (3, 5, 5, 17, 2, 2, 0),
        (1, 4, 9, 2, 3, 1, 1),
    ] {
        let shape = ImageShape {
            batch,
            height: h,
            width: w,
        };
        let window = Window2d::square(kernel, stride, padding);
        let x = matrix(shape.pixels(), c, (h * w) as u64);
        let got = cpu.max_pool2d(&x, shape, window).unwrap();
        let out = window.output_shape(shape).unwrap();
        assert_eq!((got.rows, got.cols), (out.pixels(), c));
        let mut want = Vec::new();
        for b in 0..batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    for ch in 0..c {
                        let mut m = f64::NEG_INFINITY;
                        for ky in 0..kernel {
                            for kx in 0..kernel {
                                let iy = (oy * stride + ky) as isize - padding as isize;
                                let ix = (ox * stride + kx) as isize - padding as isize;
                                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                    let row = (b * h + iy as usize) * w + ix as usize;
                                    m = m.max(x.data[row * c + ch] as f64);
                                }
                            }
                        }
                        want.push(m);
                    }
                }
            }
        }
        assert_close(&got.data, &want, 0.0);
    }
    let shape = ImageShape {
        batch: 1,
        height: 4,
        width: 4,
    };
    assert!(cpu
        .max_pool2d(&matrix(16, 2, 1), shape, Window2d::square(3, 2, 2))
        .is_err());
}

#[test]
fn mean_pool_over_whole_images_is_global_average_pooling() {
    let cpu = CpuBackend::default();
    let (batch, hw, c) = (3, 7 * 5, 11);
    let x = matrix(batch * hw, c, 5);
    let offsets: Vec<usize> = (0..=batch).map(|b| b * hw).collect();
    let got = cpu.pool(&x, &offsets, Pooling::Mean).unwrap();
    let mut want = vec![0f64; batch * c];
    for b in 0..batch {
        for p in 0..hw {
            for ch in 0..c {
                want[b * c + ch] += x.data[(b * hw + p) * c + ch] as f64 / hw as f64;
            }
        }
    }
    assert_close(&got.data, &want, 1e-6);
}
