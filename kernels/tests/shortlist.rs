//! The f16 shortlist returns exactly the f32 top K: same rows, scores and order as a
//! brute-force f32 ranking, on data built to make f16 scores tie where f32 ones do not.

use marquee_kernels::{dot, Backend, CpuBackend, HalfCopy, Matrix, TopK, TopKOptions};

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn normalised(mut data: Vec<f32>, cols: usize) -> Vec<f32> {
    for row in data.chunks_exact_mut(cols) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    data
}

/// Clustered unit rows, plus groups of near-copies of one row that differ below f16's
/// resolution (equal f16 copies, different f32 scores) and exact duplicates (ties).
fn corpus(rows: usize, cols: usize, seed: u64) -> Matrix {
    let centres = normalised(values(8 * cols, seed), cols);
    let noise = values(rows * cols, seed + 1);
    let mut data: Vec<f32> = (0..rows * cols)
        .map(|i| centres[(i / cols) % 8 * cols + i % cols] + 0.3 * noise[i])
        .collect();
    data = normalised(data, cols);
    let base: Vec<f32> = data[..cols].to_vec();
    let tweaks = values(40 * cols, seed + 2);
    for copy in 1..40 {
        let row = copy * (rows / 40);
        for c in 0..cols {
            let tweak = if copy % 3 == 0 {
                0.0
            } else {
                1e-6 * tweaks[copy * cols + c]
            };
            data[row * cols + c] = base[c] + tweak;
        }
    }
    Matrix { rows, cols, data }
}

/// Brute force: every eligible row scored with the same f32 dot product.
fn brute_force(
    query: &[f32],
    corpus: &Matrix,
    k: usize,
    options: &TopKOptions<'_>,
    excluded: &[u32],
) -> Vec<(u32, f32)> {
    let mut top = TopK::new(k);
    for row in 0..corpus.rows {
        if options.allowed.is_some_and(|a| !a[row]) || excluded.contains(&(row as u32)) {
            continue;
        }
        let score = dot(query, corpus.row(row)) + options.row_bias.map_or(0.0, |b| b[row]);
        let tie = options.tie_rank.map_or(row as u32, |t| t[row]);
        top.push(row as u32, score, tie);
    }
    top.into_sorted()
        .iter()
        .map(|h| (h.index, h.score))
        .collect()
}

#[test]
fn shortlist_equals_brute_force_f32_ranking() {
    for (rows, cols) in [(9_000, 384), (5_003, 37), (300, 16), (17, 8)] {
        let corpus = corpus(rows, cols, rows as u64);
        let copy = HalfCopy::of(&corpus).expect("unit rows fit in f16");
        // Queries: near the duplicated row (so the near-copies fight for the top), a
        // corpus row, and random directions, at different norms.
        let mut queries: Vec<f32> = corpus.row(0).iter().map(|v| v * 3.0).collect();
        queries.extend(corpus.row(rows / 2));
        queries.extend(
            normalised(values(3 * cols, 7), cols)
                .iter()
                .map(|v| v * 0.01),
        );
        let nq = queries.len() / cols;
        let queries = Matrix {
            rows: nq,
            cols,
            data: queries,
        };
        let bias: Vec<f32> = (0..rows)
            .map(|r| -0.5 * corpus.row(r).iter().map(|v| v * v).sum::<f32>())
            .collect();
        let allowed: Vec<bool> = (0..rows).map(|r| r % 7 != 3).collect();
        let tie_rank: Vec<u32> = (0..rows as u32).rev().collect();
        let excluded: Vec<Vec<u32>> = (0..nq)
            .map(|q| vec![0, (rows / 40) as u32, (q * 11 % rows) as u32])
            .map(|mut e| {
                e.sort_unstable();
                e
            })
            .collect();
        for k in [1, 10, 64, rows + 5] {
            let cases: [TopKOptions<'_>; 3] = [
                TopKOptions::default(),
                TopKOptions {
                    tie_rank: Some(&tie_rank),
                    allowed: Some(&allowed),
                    excluded: Some(&excluded),
                    ..Default::default()
                },
                TopKOptions {
                    row_bias: Some(&bias),
                    ..Default::default()
                },
            ];
            for (case, plain) in cases.into_iter().enumerate() {
                let fast = TopKOptions {
                    shortlist: Some(&copy),
                    ..plain
                };
                let got = CpuBackend::default()
                    .top_k_dot(&queries, &corpus, k, &fast)
                    .unwrap();
                for (q, hits) in got.iter().enumerate() {
                    let none = Vec::new();
                    let excluded = plain.excluded.map_or(&none, |e| &e[q]);
                    let want = brute_force(queries.row(q), &corpus, k, &plain, excluded);
                    let got: Vec<(u32, f32)> = hits.iter().map(|h| (h.index, h.score)).collect();
                    assert_eq!(got, want, "{rows}x{cols}, k {k}, case {case}, query {q}");
                }
            }
        }
    }
}

#[test]
fn values_beyond_f16_range_get_no_copy() {
    let fine = Matrix {
        rows: 2,
        cols: 2,
        data: vec![60_000.0, -1e-9, 0.5, 1.0],
    };
    assert_eq!(HalfCopy::of(&fine).map(|c| c.rows()), Some(2));
    let huge = Matrix {
        rows: 1,
        cols: 2,
        data: vec![70_000.0, 0.0],
    };
    assert!(HalfCopy::of(&huge).is_none());
    let mut copy = HalfCopy::new(2);
    assert!(!copy.try_extend(&huge.data));
    assert_eq!(copy.rows(), 0, "nothing appended");
}

#[test]
fn a_copy_of_another_corpus_is_rejected() {
    let corpus = Matrix {
        rows: 3,
        cols: 2,
        data: vec![1.0; 6],
    };
    let other = HalfCopy::of(&Matrix {
        rows: 2,
        cols: 2,
        data: vec![1.0; 4],
    })
    .unwrap();
    let options = TopKOptions {
        shortlist: Some(&other),
        ..Default::default()
    };
    assert!(CpuBackend::default()
        .top_k_dot(&corpus, &corpus, 1, &options)
        .is_err());
}
