//! Step 2 of issue 18: learning-rate schedules and tokenization against the Python
//! reference (`tests/fixtures/step2.json`, from `make_step2_fixture.py`), dropout in
//! training mode, and the fine-tuning loop on the tiny fixture model.

use candle_core::{DType, Device, Tensor};
use marquee_training::finetune::plan_batches;
use marquee_training::optim::adamw_params;
use marquee_training::{
    embed_texts, fine_tune, AfterEpoch, BatchSampling, BatchTokenizer, ContrastiveBatch, Dropout,
    EpochHooks, FineTuneConfig, LrSchedule, NoHooks, Progress, ScheduleKind, SentenceEncoder,
    Texts, Trainer, TrainingPair, Warmup,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model_dir() -> PathBuf {
    fixtures().join("tiny")
}

fn step2() -> Value {
    let text = std::fs::read_to_string(fixtures().join("step2.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load() -> SentenceEncoder {
    SentenceEncoder::load(&model_dir(), &Device::Cpu).unwrap()
}

fn tokenizer() -> BatchTokenizer {
    BatchTokenizer::load(&model_dir(), 64).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn schedules_match_transformers() {
    let fixture = step2();
    let cases = fixture["schedules"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    let mut worst = 0f64;
    for case in cases {
        let kind = match case["name"].as_str().unwrap() {
            "linear" => ScheduleKind::Linear,
            "cosine" => ScheduleKind::Cosine,
            "constant" => ScheduleKind::Constant,
            other => panic!("unknown schedule {other}"),
        };
        let total = case["total_steps"].as_u64().unwrap() as usize;
        let warmup = match case.get("warmup_ratio") {
            Some(r) => Warmup::Ratio(r.as_f64().unwrap()),
            None => Warmup::Steps(case["warmup_steps"].as_u64().unwrap() as usize),
        };
        let base = case["base_lr"].as_f64().unwrap();
        let schedule = LrSchedule::new(kind, base, warmup, total).unwrap();
        assert_eq!(
            schedule.warmup_steps as u64,
            case["warmup_steps"].as_u64().unwrap(),
            "{kind:?} warm-up steps"
        );
        let want: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(want.len(), total);
        for (k, w) in want.iter().enumerate() {
            let got = schedule.lr(k);
            let err = (got - w).abs() / base;
            worst = worst.max(err);
            assert!(err <= 1e-15, "{kind:?} step {k}: {got} vs {w}");
        }
    }
    println!("9 schedules: worst difference {worst:.3e} of the base lr");
}

fn fixture_batch() -> ContrastiveBatch {
    let r = candle_core::safetensors::load(fixtures().join("tiny_step.safetensors"), &Device::Cpu)
        .unwrap();
    let texts = |g: &str| Texts {
        input_ids: r[&format!("{g}.input_ids")].clone(),
        attention_mask: r[&format!("{g}.attention_mask")].clone(),
    };
    ContrastiveBatch {
        queries: texts("queries"),
        docs: texts("docs"),
        hard_negatives: Some(texts("negatives")),
    }
}

fn snapshot(encoder: &SentenceEncoder) -> HashMap<String, Vec<f32>> {
    encoder
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, values(v.as_tensor())))
        .collect()
}

#[test]
fn trainer_sets_the_scheduled_lr_before_each_step() {
    let encoder = load();
    let mut trainer = Trainer::new(&encoder, adamw_params(1e-3)).unwrap();
    let schedule = LrSchedule::new(ScheduleKind::Linear, 1e-3, Warmup::Steps(2), 5).unwrap();
    trainer.schedule = Some(schedule);
    let batch = fixture_batch();
    let before = snapshot(&encoder);
    // Step 0 of a warm-up has lr 0: AdamW moves nothing (decay is lr·wd too).
    let r0 = trainer.step(&encoder, &batch).unwrap();
    assert_eq!(r0.lr, 0.0);
    assert_eq!(snapshot(&encoder), before, "an lr-0 step changed weights");
    let lrs: Vec<f64> = (0..4)
        .map(|_| trainer.step(&encoder, &batch).unwrap().lr)
        .collect();
    assert_eq!(lrs, vec![5e-4, 1e-3, 1e-3 * 2.0 / 3.0, 1e-3 / 3.0]);
    assert_eq!(trainer.steps_taken(), 5);
    assert_ne!(snapshot(&encoder), before);
}

#[test]
fn tokenizer_matches_python() {
    let fixture = step2();
    let tok = &fixture["tokenizer"];
    let texts: Vec<&str> = tok["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut tokenizer = tokenizer();
    // The fixture keeps the limit in tokenizer_config.json (sentence-transformers 6).
    assert_eq!(tokenizer.max_seq_length(), 64);
    let mut known = 0;
    for case in tok["cases"].as_array().unwrap() {
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        tokenizer.set_max_seq_length(max_length).unwrap();
        let batch = tokenizer.batch(&texts, &Device::Cpu).unwrap();
        let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
        let mask: Vec<Vec<u32>> = batch.attention_mask.to_vec2().unwrap();
        let want = |key: &str| -> Vec<Vec<u32>> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as u32)
                        .collect()
                })
                .collect()
        };
        assert_eq!(ids, want("input_ids"), "ids at max_length {max_length}");
        assert_eq!(
            mask,
            want("attention_mask"),
            "mask at max_length {max_length}"
        );
        known += ids.iter().flatten().filter(|&&i| i >= 5).count();
        println!(
            "max_length {max_length}: {} rows × {} tokens equal",
            ids.len(),
            ids[0].len()
        );
    }
    // Words of the fixture vocabulary (w5..w99), not only [UNK] and specials.
    assert!(known >= 30, "only {known} known word ids");
    // A sentence_bert_config.json max_seq_length wins over tokenizer_config.json.
    let dir = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(model_dir().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("sentence_bert_config.json"),
        r#"{"max_seq_length": 9, "do_lower_case": false}"#,
    )
    .unwrap();
    assert_eq!(
        BatchTokenizer::load(dir.path(), 64)
            .unwrap()
            .max_seq_length(),
        9
    );
    // Never beyond the position table.
    assert_eq!(
        BatchTokenizer::load(dir.path(), 8)
            .unwrap()
            .max_seq_length(),
        8
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn dropout_is_seeded_off_in_eval_and_keeps_the_expectation() {
    // The bare mask: the kept fraction and the mean are those of inverted dropout.
    let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
    let mut d = Dropout::new(0.1, 0.1, 3);
    let y = values(&d.apply(&x, 0.1).unwrap());
    let dropped = y.iter().filter(|v| **v == 0.0).count() as f64 / y.len() as f64;
    let mean = y.iter().map(|v| *v as f64).sum::<f64>() / y.len() as f64;
    println!("mask: dropped {dropped:.4}, mean {mean:.4}");
    assert!((dropped - 0.1).abs() < 0.01 && (mean - 1.0).abs() < 0.012);

    let encoder = load();
    let batch = fixture_batch();
    let (ids, mask) = (&batch.docs.input_ids, &batch.docs.attention_mask);
    let eval = values(&encoder.forward(ids, mask).unwrap());
    // p = 0 in training mode is the eval pass, bit for bit.
    let mut off = Dropout::new(0.0, 0.0, 1);
    assert_eq!(
        values(&encoder.forward_train(ids, mask, &mut off).unwrap()),
        eval
    );
    // p = 0.1: the same seed gives the same output, another seed another one.
    let train = |seed| {
        let mut d = Dropout::new(0.1, 0.1, seed);
        values(&encoder.forward_train(ids, mask, &mut d).unwrap())
    };
    let a = train(7);
    assert_eq!(a, train(7), "same seed, different output");
    assert_ne!(a, train(8), "different seeds, same output");
    assert_ne!(a, eval, "dropout changed nothing");
    // Eval mode is unchanged after training-mode passes.
    assert_eq!(values(&encoder.forward(ids, mask).unwrap()), eval);
    // The mean over many masks approaches the eval output (up to the bias the
    // nonlinearities add); one mask is further away.
    let rows = 4;
    let width = eval.len() / rows;
    let n = 64;
    let mut mean = vec![0f32; eval.len()];
    let mut single_worst = 1f64;
    let mut d = Dropout::new(0.1, 0.1, 11);
    for k in 0..n {
        let out = values(&encoder.forward_train(ids, mask, &mut d).unwrap());
        if k == 0 {
            for r in 0..rows {
                let s = r * width..(r + 1) * width;
                single_worst = single_worst.min(cosine(&out[s.clone()], &eval[s]));
            }
        }
        for (m, o) in mean.iter_mut().zip(&out) {
            *m += o / n as f32;
        }
    }
    let mut mean_worst = 1f64;
    for r in 0..rows {
        let s = r * width..(r + 1) * width;
        mean_worst = mean_worst.min(cosine(&mean[s.clone()], &eval[s]));
    }
    println!("cosine to eval: one mask {single_worst:.5}, mean of {n} masks {mean_worst:.5}");
    assert!(
        mean_worst > 0.995,
        "mean over masks far from eval: {mean_worst}"
    );
    assert!(mean_worst > single_worst, "averaging did not help");
}

/// 16 toy pairs over the fixture vocabulary (w5..w99): query and positive share no
/// word, so the model has to learn the pairing. Every pair has one hard negative.
fn toy_pairs() -> Vec<TrainingPair> {
    let mut state = 12345u64;
    let mut next = |lo: u64, hi: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (state >> 33) % (hi - lo)
    };
    (0..16)
        .map(|_| {
            let q: Vec<String> = (0..3).map(|_| format!("w{}", next(5, 50))).collect();
            let p: Vec<String> = (0..4).map(|_| format!("w{}", next(50, 100))).collect();
            let n: Vec<String> = (0..4).map(|_| format!("w{}", next(50, 100))).collect();
            TrainingPair {
                query: q.join(" "),
                positive: p.join(" "),
                hard_negatives: vec![n.join(" ")],
            }
        })
        .collect()
}

/// Eval-mode in-batch loss over all pairs (no hard negatives) and the MRR of each
/// query's positive among all positives by cosine.
fn evaluate(encoder: &SentenceEncoder, tok: &BatchTokenizer, pairs: &[TrainingPair]) -> (f64, f64) {
    let q: Vec<&str> = pairs.iter().map(|p| p.query.as_str()).collect();
    let d: Vec<&str> = pairs.iter().map(|p| p.positive.as_str()).collect();
    let embed = |texts: &[&str]| {
        let t = tok.batch(texts, &Device::Cpu).unwrap();
        encoder.forward(&t.input_ids, &t.attention_mask).unwrap()
    };
    let (qe, de) = (embed(&q), embed(&d));
    let loss = marquee_training::multiple_negatives_ranking_loss(&qe, &de, None, 20.0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let (qv, dv): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (qe.to_vec2().unwrap(), de.to_vec2().unwrap());
    let mut mrr = 0.0;
    for (i, qi) in qv.iter().enumerate() {
        let own = cosine(qi, &dv[i]);
        let rank = 1 + dv.iter().filter(|dj| cosine(qi, dj) > own).count();
        mrr += 1.0 / rank as f64;
    }
    (loss, mrr / qv.len() as f64)
}

fn toy_config() -> FineTuneConfig {
    FineTuneConfig {
        epochs: 8,
        batch_size: 8,
        seed: 5,
        learning_rate: 2e-3,
        weight_decay: 0.01,
        schedule: ScheduleKind::Cosine,
        warmup: Warmup::Ratio(0.1),
        max_grad_norm: Some(1.0),
        dropout: Some((0.1, 0.1)),
        ..FineTuneConfig::default()
    }
}

#[test]
fn fine_tune_lowers_the_loss_improves_mrr_and_is_deterministic() {
    let pairs = toy_pairs();
    let tok = tokenizer();
    let config = toy_config();
    let run = || {
        let encoder = load();
        let mut seen: Vec<Progress> = Vec::new();
        let summary = fine_tune(
            &encoder,
            &tok,
            &mut pairs.clone(),
            &config,
            &mut NoHooks,
            &mut |p: &Progress| seen.push(*p),
            &AtomicBool::new(false),
        )
        .unwrap();
        (encoder, summary, seen)
    };
    let (before_loss, before_mrr) = evaluate(&load(), &tok, &pairs);
    let (encoder, summary, seen) = run();
    let (after_loss, after_mrr) = evaluate(&encoder, &tok, &pairs);
    println!(
        "{} steps; eval loss {before_loss:.4} -> {after_loss:.4}, MRR {before_mrr:.4} -> {after_mrr:.4}; \
         epoch losses {:?}; lrs {:?}",
        summary.steps,
        summary.epoch_losses,
        seen.iter().map(|p| p.lr).collect::<Vec<_>>()
    );
    assert_eq!(summary.total_steps, 16);
    assert_eq!(summary.steps, 16);
    assert!(!summary.cancelled);
    assert_eq!(
        seen.iter().map(|p| p.step).collect::<Vec<_>>(),
        (1..=16).collect::<Vec<_>>()
    );
    let epochs: Vec<usize> = seen.iter().map(|p| p.epoch).collect();
    assert_eq!(epochs, (0..16).map(|k| k / 2).collect::<Vec<_>>());
    let schedule = LrSchedule::new(ScheduleKind::Cosine, 2e-3, Warmup::Ratio(0.1), 16).unwrap();
    assert_eq!(schedule.warmup_steps, 2);
    for (k, p) in seen.iter().enumerate() {
        assert_eq!(p.lr, schedule.lr(k));
        assert!(p.examples_per_sec > 0.0 && p.grad_norm > 0.0 && p.loss.is_finite());
    }
    assert!(
        after_loss < 0.75 * before_loss,
        "loss {before_loss} -> {after_loss}"
    );
    assert!(
        after_mrr > before_mrr + 0.3,
        "MRR {before_mrr} -> {after_mrr}"
    );
    // A second run with the same seed gives the same weights, bit for bit.
    let (again, _, _) = run();
    assert_eq!(
        snapshot(&again),
        snapshot(&encoder),
        "same seed, other weights"
    );
}

#[test]
fn cancellation_stops_between_steps_and_threads_are_configurable() {
    let pairs = toy_pairs();
    let tok = tokenizer();
    let config = FineTuneConfig {
        threads: Some(1),
        ..toy_config()
    };
    let encoder = load();
    let cancel = AtomicBool::new(false);
    let mut steps = 0;
    let summary = fine_tune(
        &encoder,
        &tok,
        &mut pairs.clone(),
        &config,
        &mut NoHooks,
        &mut |p: &Progress| {
            steps = p.step;
            if p.step == 3 {
                cancel.store(true, Ordering::SeqCst);
            }
        },
        &cancel,
    )
    .unwrap();
    assert!(summary.cancelled);
    assert_eq!((summary.steps, steps, summary.total_steps), (3, 3, 16));
    assert_eq!(
        summary.epoch_losses.len(),
        2,
        "one full epoch and a cancelled one"
    );
}

/// Records the hook calls, gives every pair the epoch's hard negative, stops after
/// `stop_after` epochs.
struct Recorder {
    calls: Vec<String>,
    stop_after: usize,
}

impl EpochHooks for Recorder {
    fn before_epoch(
        &mut self,
        epoch: usize,
        _encoder: &SentenceEncoder,
        pairs: &mut [TrainingPair],
    ) -> anyhow::Result<()> {
        self.calls.push(format!("before {epoch}"));
        for pair in pairs.iter_mut() {
            pair.hard_negatives = vec![format!("negative of epoch {epoch}")];
        }
        Ok(())
    }

    fn after_epoch(
        &mut self,
        epoch: usize,
        encoder: &SentenceEncoder,
        mean_loss: f32,
    ) -> anyhow::Result<AfterEpoch> {
        assert!(mean_loss.is_finite());
        // The hooks see the weights trained so far.
        assert_ne!(snapshot(encoder), snapshot(&load()));
        self.calls.push(format!("after {epoch}"));
        Ok(if epoch + 1 == self.stop_after {
            AfterEpoch::Stop
        } else {
            AfterEpoch::Continue
        })
    }
}

#[test]
fn hooks_run_around_each_epoch_refresh_negatives_and_stop_early() {
    let tok = tokenizer();
    let config = toy_config();
    let encoder = load();
    let mut pairs = toy_pairs();
    let mut hooks = Recorder {
        calls: Vec::new(),
        stop_after: 3,
    };
    let summary = fine_tune(
        &encoder,
        &tok,
        &mut pairs,
        &config,
        &mut hooks,
        &mut |_: &Progress| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        hooks.calls,
        ["before 0", "after 0", "before 1", "after 1", "before 2", "after 2"]
    );
    assert!(summary.stopped_early && !summary.cancelled);
    assert_eq!((summary.steps, summary.epoch_losses.len()), (6, 3));
    assert!(pairs
        .iter()
        .all(|p| p.hard_negatives == ["negative of epoch 2"]));
}

#[test]
fn embed_texts_keeps_the_order_and_equals_one_forward_per_text() {
    let tok = tokenizer();
    let encoder = load();
    let texts = [
        "a short one",
        "a much longer text than the others here",
        "mid size",
    ];
    let (rows, dim) = embed_texts(&encoder, &tok, &texts, 2, &Device::Cpu).unwrap();
    assert_eq!(rows.len(), 3 * dim);
    for (i, text) in texts.iter().enumerate() {
        let single = tok.batch(&[text], &Device::Cpu).unwrap();
        let want: Vec<f32> = encoder
            .forward(&single.input_ids, &single.attention_mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in rows[i * dim..(i + 1) * dim].iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "text {i}: {a} vs {b}");
        }
    }
}

#[test]
fn an_added_projection_trains_saves_and_reloads() {
    let tok = tokenizer();
    let mut encoder = load();
    let before = encoder.output_dim();
    encoder.add_projection(5, 11).unwrap();
    assert_eq!(encoder.output_dim(), 5);
    fine_tune(
        &encoder,
        &tok,
        &mut toy_pairs(),
        &FineTuneConfig {
            epochs: 1,
            ..toy_config()
        },
        &mut NoHooks,
        &mut |_: &Progress| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    encoder.save(out.path()).unwrap();
    let modules: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("modules.json")).unwrap())
            .unwrap();
    let paths: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    let dense_at = paths.iter().position(|p| *p == "3_Dense").unwrap();
    assert_eq!(
        dense_at,
        paths.iter().position(|p| *p == "2_Dense").unwrap() + 1
    );
    assert_eq!(modules[dense_at]["idx"], dense_at);
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("3_Dense/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            config["in_features"].as_u64(),
            config["out_features"].as_u64()
        ),
        (Some(before as u64), Some(5))
    );
    let reloaded = SentenceEncoder::load(out.path(), &Device::Cpu).unwrap();
    let texts = ["one text", "and another"];
    let (a, _) = embed_texts(&encoder, &tok, &texts, 8, &Device::Cpu).unwrap();
    let (b, dim) = embed_texts(&reloaded, &tok, &texts, 8, &Device::Cpu).unwrap();
    assert_eq!(dim, 5);
    assert_eq!(a, b);
}

#[test]
fn no_duplicates_sampler_keeps_texts_unique_per_batch() {
    // Pairs 0..12 where every third shares its positive with the next pair.
    let pairs: Vec<TrainingPair> = (0..12)
        .map(|i| TrainingPair::new(format!("q{i}"), format!("d{}", i - i % 3 / 2)))
        .collect();
    let plan = plan_batches(&pairs, 3, 4, 9, BatchSampling::NoDuplicates);
    let shuffled = plan_batches(&pairs, 3, 4, 9, BatchSampling::Shuffled);
    let mut shuffled_dups = 0;
    for (epoch, batches) in plan.iter().enumerate() {
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(
            all,
            (0..12).collect::<Vec<_>>(),
            "epoch {epoch} covers every pair once"
        );
        for b in batches {
            let docs: HashSet<&str> = b.iter().map(|&i| pairs[i].positive.as_str()).collect();
            assert_eq!(docs.len(), b.len(), "duplicate positive in {b:?}");
        }
        for b in &shuffled[epoch] {
            let docs: HashSet<&str> = b.iter().map(|&i| pairs[i].positive.as_str()).collect();
            shuffled_dups += b.len() - docs.len();
        }
    }
    println!("plain shuffled batches hold {shuffled_dups} duplicate positives over 3 epochs");
    assert!(shuffled_dups > 0, "the test data should provoke duplicates");
    assert_ne!(plan[0], plan[1], "epochs are shuffled differently");
    assert_eq!(
        plan,
        plan_batches(&pairs, 3, 4, 9, BatchSampling::NoDuplicates)
    );
}

/// Four scheduled steps (linear, one warm-up step: lrs 0, 1e-3, 6.7e-4, 3.3e-4) of
/// clipped AdamW on the fixture batch, against torch with
/// `get_linear_schedule_with_warmup` (`step2_scheduled.safetensors`).
#[test]
fn scheduled_steps_match_torch() {
    let r = candle_core::safetensors::load(
        fixtures().join("step2_scheduled.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let encoder = load();
    let mut trainer = Trainer::new(&encoder, adamw_params(1e-3)).unwrap();
    trainer.schedule =
        Some(LrSchedule::new(ScheduleKind::Linear, 1e-3, Warmup::Steps(1), 4).unwrap());
    let batch = fixture_batch();
    let want_losses = values(&r["losses"]);
    let want_lrs: Vec<f64> = r["lrs"].to_vec1().unwrap();
    for k in 0..4 {
        let report = trainer.step(&encoder, &batch).unwrap();
        let err = ((report.loss - want_losses[k]) / want_losses[k]).abs();
        println!(
            "step {k}: lr {} loss {} (torch {}), rel {err:.2e}",
            report.lr, report.loss, want_losses[k]
        );
        assert_eq!(report.lr, want_lrs[k], "lr of step {k}");
        assert!(err < 1e-5, "loss of step {k}: {err:.3e}");
    }
    let mut errors: Vec<(f64, String)> = Vec::new();
    for (name, var) in encoder.named_vars() {
        let want = values(&r[&format!("after.{name}")]);
        let got = values(var.as_tensor());
        let diff: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        let max_abs = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        errors.push((
            (diff / norm).sqrt(),
            format!("{name} (max abs {max_abs:.2e})"),
        ));
    }
    errors.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    for (e, n) in errors.iter().take(4) {
        println!("{e:.3e} {n}");
    }
    assert_eq!(errors.len(), 41);
    for (err, name) in &errors {
        // The key biases' gradient is rounding noise (see torch_reference.rs): AdamW
        // moves them by up to lr per step in either direction, here as in torch. The
        // other tensors hold the few eps-region elements of the first step (layer 0's
        // query weight at ~1e-5); everything else agrees to ~1e-7.
        let tol = if name.contains("attention.self.key.bias") {
            1e-2
        } else {
            3e-5
        };
        assert!(
            *err < tol,
            "{name}: relative error {err:.3e} after four steps"
        );
    }
}
