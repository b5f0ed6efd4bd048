//! GPU-vs-CPU parity of every CUDA kernel on fresh random inputs (outputs poisoned with
//! NaN first, odd sizes, k above the corpus size, tied scores; the decoder ops, paged
//! KV cache and sampling against `cpu::decoder` / `cpu::sampling`), then the roofline
//! benchmarks. One JSON object per line on stdout; exit code 1 when a check fails, 2 when
//! there is no usable GPU. Run by `benchmarks/gpu/run.sh` on a GPU host.
//!
//! `gpu_check [parity] [bench]` (both by default).

use marquee_kernels::cpu::decoder::{self, BlockTables, HeadLayout};
use marquee_kernels::cpu::sampling::{self, RowSampling};
use marquee_kernels::cuda::decoder::{DeviceBlockTables, DeviceSlots, PagedKvLayer};
use marquee_kernels::cuda::{CudaBackend, Precision};
use marquee_kernels::{
    Activation, Backend, CpuBackend, DeviceRequest, Hit, ImageShape, LayerNorm, Matrix, Pooling,
    TopKOptions, Window2d,
};
use serde_json::json;
use std::process::ExitCode;
use std::time::Instant;

/// xorshift64*: reproducible inputs with no extra dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next_f32() + 1.0) * 0.5 * n as f32) as usize % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        f64::from(self.next_f32() + 1.0) * 0.5
    }
    /// `0..n` in random order.
    fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// Rounds through bf16, so the CPU reference sees the values the GPU stores.
fn round(precision: Precision, v: &[f32]) -> Vec<f32> {
    match precision {
        Precision::F32 => v.to_vec(),
        Precision::Bf16 => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect(),
    }
}

/// max |got − want| / max |want|; NaN anywhere in `got` is an infinite error.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| v.is_nan()) {
        return f64::INFINITY;
    }
    let scale = want
        .iter()
        .fold(0f64, |m, &w| m.max(w.abs() as f64))
        .max(1e-30);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs()));
    diff / scale
}

struct Report {
    failures: usize,
}

impl Report {
    fn parity(&mut self, name: &str, precision: Precision, err: f64) {
        let limit = match precision {
            Precision::F32 => 1e-5,
            Precision::Bf16 => 1e-2,
        };
        let ok = err <= limit;
        self.failures += usize::from(!ok);
        println!(
            "{}",
            json!({"check": name, "precision": format!("{precision:?}"), "rel_err": err, "limit": limit, "ok": ok})
        );
    }
    fn exact(&mut self, name: &str, ok: bool, detail: serde_json::Value) {
        self.failures += usize::from(!ok);
        println!("{}", json!({"check": name, "ok": ok, "detail": detail}));
    }
}

struct Pair {
    gpu: CudaBackend,
    precision: Precision,
}

impl Pair {
    fn up(&self, m: &Matrix) -> marquee_kernels::CudaTensor {
        self.gpu.upload(m.rows, m.cols, &m.data).unwrap()
    }
    fn host(&self, rows: usize, cols: usize, data: Vec<f32>) -> Matrix {
        Matrix {
            rows,
            cols,
            data: round(self.precision, &data),
        }
    }
    fn down(&self, t: &marquee_kernels::CudaTensor) -> Vec<f32> {
        self.gpu.download(t).unwrap()
    }
    /// Reports the relative error of `got` against the CPU's `want`.
    fn compare(
        &self,
        report: &mut Report,
        name: &str,
        got: &marquee_kernels::CudaTensor,
        want: &[f32],
    ) {
        report.parity(name, self.precision, rel_err(&self.down(got), want));
    }
}

const OFFSETS: [&[usize]; 2] = [&[0, 1, 17, 60, 61, 190], &[0, 7]];

fn parity(precision: Precision, rng: &mut Rng, report: &mut Report) {
    let gpu = CudaBackend::new(0, precision)
        .expect("CUDA backend")
        .with_tf32(false)
        .with_poisoned_outputs(true);
    let p = Pair { gpu, precision };
    let cpu = CpuBackend::default();

    for hidden in [384usize, 100] {
        let word = p.host(517, hidden, rng.vec(517 * hidden));
        let pos = p.host(131, hidden, rng.vec(131 * hidden));
        let typ = p.host(2, hidden, rng.vec(2 * hidden));
        let gamma = p.host(1, hidden, rng.vec(hidden));
        let beta = p.host(1, hidden, rng.vec(hidden));
        let ids: Vec<u32> = (0..190).map(|_| rng.below(517) as u32).collect();
        let positions: Vec<u32> = (0..190).map(|i| (i % 131) as u32).collect();
        let norm_c = LayerNorm {
            gamma: gamma.clone(),
            beta: beta.clone(),
            eps: 1e-12,
        };
        let norm_g = LayerNorm {
            gamma: p.up(&gamma),
            beta: p.up(&beta),
            eps: 1e-12,
        };
        let want = cpu
            .embed_tokens(&word, &pos, &typ, &ids, &positions, &norm_c)
            .unwrap();
        let got = p
            .gpu
            .embed_tokens(
                &p.up(&word),
                &p.up(&pos),
                &p.up(&typ),
                &ids,
                &positions,
                &norm_g,
            )
            .unwrap();
        report.parity(
            &format!("embed_layer_norm h{hidden}"),
            precision,
            rel_err(&p.down(&got), &want.data),
        );

        let x = p.host(190, hidden, rng.vec(190 * hidden));
        let res = p.host(190, hidden, rng.vec(190 * hidden));
        let mut want = x.clone();
        cpu.add_layer_norm(&mut want, &res, &norm_c).unwrap();
        let mut got = p.up(&x);
        p.gpu
            .add_layer_norm(&mut got, &p.up(&res), &norm_g)
            .unwrap();
        report.parity(
            &format!("add_layer_norm h{hidden}"),
            precision,
            rel_err(&p.down(&got), &want.data),
        );

        for (out, act, bias) in [
            (3 * hidden, Activation::Identity, true),
            (4 * hidden + 1, Activation::Gelu, true),
            (97, Activation::Tanh, false),
        ] {
            let w = p.host(out, hidden, rng.vec(out * hidden));
            let b = p.host(1, out, rng.vec(out));
            let packed = cpu.upload_weight(w.rows, w.cols, &w.data).unwrap();
            let want = cpu.linear(&x, &packed, bias.then_some(&b), act).unwrap();
            let (gx, gw, gb) = (p.up(&x), p.up(&w), p.up(&b));
            let got = p.gpu.linear(&gx, &gw, bias.then_some(&gb), act).unwrap();
            report.parity(
                &format!("linear+{act:?} {hidden}->{out}"),
                precision,
                rel_err(&p.down(&got), &round(precision, &want.data)),
            );
        }

        for offsets in OFFSETS {
            let rows = *offsets.last().unwrap();
            let x = p.host(rows, hidden, rng.vec(rows * hidden));
            for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
                let want = cpu.pool(&x, offsets, pooling).unwrap();
                let got = p.gpu.pool(&p.up(&x), offsets, pooling).unwrap();
                report.parity(
                    &format!("pool {pooling:?} h{hidden} n{}", offsets.len() - 1),
                    precision,
                    rel_err(&p.down(&got), &want.data),
                );
                let want = cpu.pool_normalized(&x, offsets, pooling).unwrap();
                let got = p.gpu.pool_normalized(&p.up(&x), offsets, pooling).unwrap();
                report.parity(
                    &format!("pool+l2 {pooling:?} h{hidden} n{}", offsets.len() - 1),
                    precision,
                    rel_err(&p.down(&got), &want.data),
                );
            }
        }

        let mut x = p.host(33, hidden, rng.vec(33 * hidden));
        x.data[5 * hidden..6 * hidden].fill(0.0);
        let mut want = x.clone();
        cpu.l2_normalize(&mut want).unwrap();
        let mut got = p.up(&x);
        p.gpu.l2_normalize(&mut got).unwrap();
        report.parity(
            &format!("l2_normalize h{hidden} (zero row)"),
            precision,
            rel_err(&p.down(&got), &want.data),
        );
    }

    for (heads, head_dim) in [(12usize, 32usize), (4, 40), (2, 128)] {
        let hidden = heads * head_dim;
        let offsets = OFFSETS[0];
        let rows = *offsets.last().unwrap();
        let qkv = p.host(rows, 3 * hidden, rng.vec(rows * 3 * hidden));
        let want = cpu.attention(&qkv, offsets, heads).unwrap();
        let got = p.gpu.attention(&p.up(&qkv), offsets, heads).unwrap();
        report.parity(
            &format!("attention {heads}x{head_dim}"),
            precision,
            rel_err(&p.down(&got), &want.data),
        );
    }

    let shape = ImageShape {
        batch: 2,
        height: 13,
        width: 17,
    };
    for (cin, cout, window, with_residual) in [
        (5usize, 8usize, Window2d::square(3, 1, 1), true),
        (3, 16, Window2d::square(7, 2, 3), false),
        (8, 12, Window2d::square(1, 1, 0), true),
        (6, 4, Window2d::square(3, 2, 1), false),
    ] {
        let x = p.host(shape.pixels(), cin, rng.vec(shape.pixels() * cin));
        let patch = window.kernel_height * window.kernel_width * cin;
        let w = p.host(patch, cout, rng.vec(patch * cout));
        let b = p.host(1, cout, rng.vec(cout));
        let out = window.output_shape(shape).unwrap().pixels();
        let r = p.host(out, cout, rng.vec(out * cout));
        let res = with_residual.then_some(&r);
        let want = cpu
            .conv2d(&x, shape, &w, Some(&b), window, res, true)
            .unwrap();
        let (gx, gw, gb, gr) = (p.up(&x), p.up(&w), p.up(&b), p.up(&r));
        let got = p
            .gpu
            .conv2d(
                &gx,
                shape,
                &gw,
                Some(&gb),
                window,
                with_residual.then_some(&gr),
                true,
            )
            .unwrap();
        report.parity(
            &format!(
                "conv2d {}x{} s{} p{} {cin}->{cout}",
                window.kernel_height, window.kernel_width, window.stride, window.padding
            ),
            precision,
            rel_err(&p.down(&got), &round(precision, &want.data)),
        );
    }
    let x = p.host(shape.pixels(), 7, rng.vec(shape.pixels() * 7));
    let window = Window2d::square(3, 2, 1);
    let want = cpu.max_pool2d(&x, shape, window).unwrap();
    let got = p.gpu.max_pool2d(&p.up(&x), shape, window).unwrap();
    report.parity(
        "max_pool2d 3x3 s2 p1",
        precision,
        rel_err(&p.down(&got), &want.data),
    );

    top_k_parity(&p, rng, report);
    decoder_parity(&p, rng, report);
    paged_attention_parity(&p, rng, report);
    sampling_parity(&p, rng, report);
}

/// RMSNorm (plain and after a fused residual add), SwiGLU's gate and rotary embeddings.
fn decoder_parity(p: &Pair, rng: &mut Rng, report: &mut Report) {
    let rows = 37;
    for hidden in [896usize, 101, 1] {
        let x = p.host(rows, hidden, rng.vec(rows * hidden));
        let res = p.host(rows, hidden, rng.vec(rows * hidden));
        let w = p.host(1, hidden, rng.vec(hidden));
        let want = decoder::rms_norm(&x, &w.data, 1e-6);
        let got = p.gpu.rms_norm(&p.up(&x), &p.up(&w), 1e-6).unwrap();
        p.compare(report, &format!("rms_norm h{hidden}"), &got, &want.data);
        let mut sum = x.clone();
        decoder::add_in_place(&mut sum, &res);
        let sum = p.host(rows, hidden, sum.data);
        let want = decoder::rms_norm(&sum, &w.data, 1e-6);
        let mut gx = p.up(&x);
        let got = p
            .gpu
            .add_rms_norm(&mut gx, &p.up(&res), &p.up(&w), 1e-6)
            .unwrap();
        p.compare(
            report,
            &format!("add_rms_norm h{hidden} (sum)"),
            &gx,
            &sum.data,
        );
        p.compare(
            report,
            &format!("add_rms_norm h{hidden} (norm)"),
            &got,
            &want.data,
        );
    }

    let cols = 4863;
    let gate = p.host(
        rows,
        cols,
        rng.vec(rows * cols).iter().map(|v| v * 6.0).collect(),
    );
    let up = p.host(rows, cols, rng.vec(rows * cols));
    let mut want = gate.clone();
    decoder::silu_mul(&mut want, &up);
    let mut got = p.up(&gate);
    p.gpu.silu_mul(&mut got, &p.up(&up)).unwrap();
    p.compare(report, &format!("silu_mul {rows}x{cols}"), &got, &want.data);

    for head_dim in [64usize, 128] {
        let (rows, heads, offset) = (29, 3, head_dim);
        let cols = offset + heads * head_dim + 5;
        let x = p.host(rows, cols, rng.vec(rows * cols));
        let angles: Vec<f32> = rng.vec(rows * head_dim).iter().map(|a| a * 40.0).collect();
        let cos = p.host(rows, head_dim, angles.iter().map(|a| a.cos()).collect());
        let sin = p.host(rows, head_dim, angles.iter().map(|a| a.sin()).collect());
        let mut want = x.clone();
        decoder::apply_rotary(&mut want, offset, heads, head_dim, &cos.data, &sin.data);
        let mut got = p.up(&x);
        p.gpu
            .apply_rotary(&mut got, offset, heads, head_dim, &p.up(&cos), &p.up(&sin))
            .unwrap();
        p.compare(
            report,
            &format!("rotary d{head_dim} at column {offset}"),
            &got,
            &want.data,
        );
    }
}

/// The paged KV cache: every slot written (in two scattered batches) into a NaN-poisoned
/// cache, then decode attention through non-contiguous block tables.
fn paged_attention_parity(p: &Pair, rng: &mut Rng, report: &mut Report) {
    let contexts = [1usize, 17, 1000, 33];
    for (head_dim, block_size) in [(64usize, 16usize), (128, 32), (128, 16)] {
        for group in [1usize, 2, 7] {
            let layout = HeadLayout {
                heads: 2 * group,
                kv_heads: 2,
                head_dim,
            };
            let width = layout.kv_heads * head_dim;
            let needed: usize = contexts.iter().map(|c| c.div_ceil(block_size)).sum();
            let num_blocks = needed + 5;
            let slots = num_blocks * block_size;
            let keys = p.host(slots, width, rng.vec(slots * width));
            let values = p.host(slots, width, rng.vec(slots * width));
            let name = format!("d{head_dim} bs{block_size} group{group}");

            let mut layer = PagedKvLayer::new(&p.gpu, num_blocks, block_size, width).unwrap();
            let order = rng.permutation(slots);
            for part in [&order[..slots / 3], &order[slots / 3..]] {
                let pick = |m: &Matrix| {
                    let data = part.iter().flat_map(|&s| m.row(s as usize).to_vec());
                    p.host(part.len(), width, data.collect())
                };
                let device_slots = DeviceSlots::upload(&p.gpu, part).unwrap();
                p.gpu
                    .kv_cache_write(
                        &mut layer,
                        &p.up(&pick(&keys)),
                        &p.up(&pick(&values)),
                        &device_slots,
                    )
                    .unwrap();
            }
            let written =
                p.down(layer.keys()) == keys.data && p.down(layer.values()) == values.data;
            report.exact(
                &format!("kv_cache_write {name} {:?}", p.precision),
                written,
                json!({"slots": slots}),
            );

            let blocks = rng.permutation(num_blocks);
            let mut next = 0;
            let tables: Vec<Vec<u32>> = contexts
                .iter()
                .map(|c| {
                    let n = c.div_ceil(block_size);
                    next += n;
                    blocks[next - n..next].to_vec()
                })
                .collect();
            let tables = BlockTables {
                block_size,
                tables: &tables,
                context_lens: &contexts,
            };
            let q = p.host(
                contexts.len(),
                layout.heads * head_dim,
                rng.vec(contexts.len() * layout.heads * head_dim),
            );
            let scale = (head_dim as f32).powf(-0.5);
            let want = decoder::paged_decode_attention(&q, &keys, &values, &tables, layout, scale);
            let device_tables = DeviceBlockTables::upload(&p.gpu, &tables).unwrap();
            let got = p
                .gpu
                .paged_decode_attention(&p.up(&q), &layer, &device_tables, layout, scale)
                .unwrap();
            p.compare(
                report,
                &format!("paged_decode_attention {name} ctx {contexts:?}"),
                &got,
                &want.data,
            );
        }
    }
}

/// argmax (ties, NaN, −∞), log-probabilities, and the sampler against the CPU procedure
/// with the same uniforms.
fn sampling_parity(p: &Pair, rng: &mut Rng, report: &mut Report) {
    for vocab in [151_936usize, 1001] {
        let rows = 48;
        let mut data: Vec<f32> = rng.vec(rows * vocab).iter().map(|v| v * 8.0).collect();
        // Row 1: a tie for the maximum; row 2: NaN first; row 3: NaN inside; row 4: all −∞.
        data[vocab + 7] = 20.0;
        data[vocab + vocab - 3] = 20.0;
        data[2 * vocab] = f32::NAN;
        data[3 * vocab + 5] = f32::NAN;
        data[4 * vocab..5 * vocab].fill(f32::NEG_INFINITY);
        let logits = p.host(rows, vocab, data);
        let device_logits = p.up(&logits);
        let rows_of = |m: &Matrix| {
            m.data
                .chunks(vocab)
                .map(<[f32]>::to_vec)
                .collect::<Vec<_>>()
        };
        let host_rows = rows_of(&logits);

        let want: Vec<u32> = host_rows.iter().map(|r| sampling::argmax(r)).collect();
        let got = p.gpu.argmax_rows(&device_logits).unwrap();
        report.exact(
            &format!("argmax v{vocab} {:?}", p.precision),
            got == want,
            json!({"mismatches": got.iter().zip(&want).filter(|(g, w)| g != w).count()}),
        );

        // Finite rows only: log-probabilities of NaN rows are NaN on both sides.
        let finite: Vec<usize> = (0..rows).filter(|r| !(2..=4).contains(r)).collect();
        let finite_logits = p.host(
            finite.len(),
            vocab,
            finite.iter().flat_map(|&r| host_rows[r].clone()).collect(),
        );
        let tokens: Vec<u32> = finite.iter().map(|_| rng.below(vocab) as u32).collect();
        let want: Vec<f32> = rows_of(&finite_logits)
            .iter()
            .zip(&tokens)
            .map(|(r, &t)| sampling::token_logprob(r, t))
            .collect();
        let got = p
            .gpu
            .token_logprobs(&p.up(&finite_logits), &tokens)
            .unwrap();
        report.parity(
            &format!("token_logprob v{vocab} ({:?} logits)", p.precision),
            // The log-probabilities are f32 in both precisions.
            Precision::F32,
            rel_err(&got, &want),
        );

        let params: Vec<RowSampling> = (0..finite.len())
            .map(|i| RowSampling {
                temperature: [0.0, 0.7, 1.0, 1.3][i % 4],
                top_k: [0, 1, 50, 1000, 0, 7][i % 6],
                top_p: [1.0, 0.9, 0.5][i % 3],
                repetition_penalty: [1.0, 1.3][i % 2],
                uniform: rng.unit(),
            })
            .collect();
        let seen: Vec<Vec<u32>> = (0..finite.len())
            .map(|i| {
                let mut s: Vec<u32> = (0..i * 3).map(|_| rng.below(vocab) as u32).collect();
                s.extend_from_slice(&s.clone()[..s.len() / 2]);
                s
            })
            .collect();
        let want: Vec<u32> = rows_of(&finite_logits)
            .iter()
            .zip(&params)
            .zip(&seen)
            .map(|((r, prm), s)| sampling::sample(r, prm, s))
            .collect();
        let seen_refs: Vec<&[u32]> = seen.iter().map(Vec::as_slice).collect();
        let got = p
            .gpu
            .sample_rows(&p.up(&finite_logits), &params, &seen_refs)
            .unwrap();
        report.exact(
            &format!("sample v{vocab} {:?}", p.precision),
            got == want,
            json!({"mismatches": got.iter().zip(&want).filter(|(g, w)| g != w).count(), "rows": want.len()}),
        );
    }
}

fn ids(hits: &[Vec<Hit>]) -> Vec<Vec<u32>> {
    hits.iter()
        .map(|h| h.iter().map(|x| x.index).collect())
        .collect()
}

fn top_k_parity(p: &Pair, rng: &mut Rng, report: &mut Report) {
    let cpu = CpuBackend::default();
    let dim = 384;
    for (n, nq, k) in [
        (10_007usize, 1usize, 10usize),
        (10_007, 3, 1),
        (10_007, 3, 100),
        (10_007, 64, 10),
        (10_007, 64, 1024),
        (500, 2, 1024),
        (500, 40, 777),
        (100, 20_000, 5),
    ] {
        let mut corpus = rng.vec(n * dim);
        for _ in 0..50 {
            let (src, dst) = (rng.below(n), rng.below(n));
            corpus.copy_within(src * dim..(src + 1) * dim, dst * dim);
        }
        corpus[7 * dim] = f32::NAN;
        let corpus = p.host(n, dim, corpus);
        let queries = p.host(nq, dim, rng.vec(nq * dim));
        let mut tie_rank: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            tie_rank.swap(i, rng.below(i + 1));
        }
        let bias: Vec<f32> = rng.vec(n).iter().map(|v| v * 0.1).collect();
        let allowed: Vec<bool> = (0..n).map(|_| rng.next_f32() > -0.6).collect();
        let excluded: Vec<Vec<u32>> = (0..nq)
            .map(|_| {
                let mut e: Vec<u32> = (0..20).map(|_| rng.below(n) as u32).collect();
                e.sort_unstable();
                e.dedup();
                e
            })
            .collect();
        for with_rules in [false, true] {
            let options = if with_rules {
                TopKOptions {
                    row_bias: Some(&bias),
                    allowed: Some(&allowed),
                    excluded: Some(&excluded),
                    tie_rank: Some(&tie_rank),
                    ..Default::default()
                }
            } else {
                TopKOptions::default()
            };
            let want = cpu.top_k_dot(&queries, &corpus, k, &options).unwrap();
            let got = p
                .gpu
                .top_k_dot(&p.up(&queries), &p.up(&corpus), k, &options)
                .unwrap();
            let name = format!(
                "top_k n{n} q{nq} k{k}{}",
                if with_rules { " +rules" } else { "" }
            );
            let lengths_ok = got.iter().zip(&want).all(|(g, w)| g.len() == w.len());
            match p.precision {
                Precision::F32 => {
                    let same = ids(&got) == ids(&want);
                    let score_err = rel_err(
                        &got.iter().flatten().map(|h| h.score).collect::<Vec<_>>(),
                        &want.iter().flatten().map(|h| h.score).collect::<Vec<_>>(),
                    );
                    report.exact(
                        &name,
                        same && lengths_ok && score_err <= 1e-5,
                        json!({"ids_identical": same, "score_rel_err": score_err}),
                    );
                }
                Precision::Bf16 => {
                    // bf16 rounds scores: compare sets, ann-benchmarks style.
                    let overlap: usize = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| {
                            g.iter()
                                .filter(|h| w.iter().any(|x| x.index == h.index))
                                .count()
                        })
                        .sum();
                    let total: usize = want.iter().map(Vec::len).sum();
                    let recall = overlap as f64 / total.max(1) as f64;
                    report.exact(
                        &name,
                        lengths_ok && recall >= 0.95,
                        json!({"recall_vs_cpu": recall}),
                    );
                }
            }
        }
    }
}

/// Median seconds of `iters` runs of `f` after 3 warm-ups.
fn time(gpu: &CudaBackend, iters: usize, mut f: impl FnMut()) -> f64 {
    let sync = || gpu.gpu().stream.synchronize().unwrap();
    for _ in 0..3 {
        f();
    }
    sync();
    let mut runs: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            sync();
            t.elapsed().as_secs_f64()
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[iters / 2]
}

fn bench(rng: &mut Rng) {
    let f32_gpu = CudaBackend::new(0, Precision::F32).unwrap();
    let bf16_gpu = CudaBackend::new(0, Precision::Bf16).unwrap();
    let stream = f32_gpu.gpu().stream.clone();

    let n = 512usize << 20; // 2 GiB of f32
    let src = stream.alloc_zeros::<f32>(n).unwrap();
    let mut dst = stream.alloc_zeros::<f32>(n).unwrap();
    let t = time(&f32_gpu, 10, || stream.memcpy_dtod(&src, &mut dst).unwrap());
    let copy_gbs = 2.0 * (n * 4) as f64 / t / 1e9;
    println!(
        "{}",
        json!({"bench": "copy_d2d", "gb_per_s": copy_gbs, "bytes": n * 4})
    );
    drop((src, dst));

    let s = 8192usize;
    let a = bf16_gpu.upload(s, s, &rng.vec(s * s)).unwrap();
    let b = bf16_gpu.upload(s, s, &rng.vec(s * s)).unwrap();
    let t = time(&bf16_gpu, 10, || {
        bf16_gpu.linear(&a, &b, None, Activation::Identity).unwrap();
    });
    println!(
        "{}",
        json!({"bench": "cublas_bf16_gemm", "tflops": 2.0 * (s * s * s) as f64 / t / 1e12, "size": s})
    );
    drop((a, b));

    for (name, gpu) in [("fp32", &f32_gpu), ("bf16", &bf16_gpu)] {
        let (seqs, len, hidden) = (8192usize, 128usize, 384usize);
        let x = gpu
            .upload(seqs * len, hidden, &rng.vec(seqs * len * hidden))
            .unwrap();
        let offsets: Vec<usize> = (0..=seqs).map(|i| i * len).collect();
        let t = time(gpu, 20, || {
            gpu.pool_normalized(&x, &offsets, Pooling::Mean).unwrap();
        });
        let bytes = (seqs * len * hidden * if name == "fp32" { 4 } else { 2 }) as f64;
        let gbs = bytes / t / 1e9;
        println!(
            "{}",
            json!({"bench": "mean_pool_l2", "precision": name, "gb_per_s": gbs, "of_copy": gbs / copy_gbs, "target": 0.7})
        );
    }

    let (rows, dim) = (1_000_000usize, 384usize);
    let mut corpus = rng.vec(rows * dim);
    for row in corpus.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    for (name, gpu) in [("bf16", &bf16_gpu), ("fp32", &f32_gpu)] {
        let device_corpus = gpu.upload(rows, dim, &corpus).unwrap();
        let one = gpu.upload(1, dim, &corpus[..dim]).unwrap();
        let t = time(gpu, 20, || {
            gpu.top_k_dot(&one, &device_corpus, 10, &TopKOptions::default())
                .unwrap();
        });
        let bytes = (rows * dim * if name == "fp32" { 4 } else { 2 }) as f64;
        let gbs = bytes / t / 1e9;
        println!(
            "{}",
            json!({"bench": "topk_single_query", "precision": name, "rows": rows, "k": 10, "seconds": t, "gb_per_s": gbs, "of_copy": gbs / copy_gbs, "target": 0.6})
        );
        let queries: Vec<f32> = corpus[..1024 * dim].iter().map(|v| v * 0.9).collect();
        let batch = gpu.upload(1024, dim, &queries).unwrap();
        for k in [10usize, 100] {
            let t = time(gpu, 5, || {
                gpu.top_k_dot(&batch, &device_corpus, k, &TopKOptions::default())
                    .unwrap();
            });
            println!(
                "{}",
                json!({"bench": "topk_batch", "precision": name, "rows": rows, "queries": 1024, "k": k, "seconds": t})
            );
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |what: &str| args.is_empty() || args.iter().any(|a| a == what);
    match DeviceRequest::Cuda(0).resolve() {
        Ok(device) => println!("{}", json!({"device": format!("{device:?}")})),
        Err(reason) => {
            println!("{}", json!({"device": null, "reason": reason}));
            return ExitCode::from(2);
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut report = Report { failures: 0 };
    if want("parity") {
        for precision in [Precision::F32, Precision::Bf16] {
            parity(precision, &mut rng, &mut report);
        }
        println!("{}", json!({"parity_failures": report.failures}));
    }
    if want("bench") {
        bench(&mut rng);
    }
    if report.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
