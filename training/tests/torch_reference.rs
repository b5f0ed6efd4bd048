//! The training step against torch: `tests/fixtures/tiny_step.safetensors` holds, for a
//! tiny random sentence-transformers BERT (`tests/fixtures/tiny/`), the embeddings, the
//! MultipleNegativesRankingLoss, every gradient and every parameter after one clipped
//! AdamW step, as torch computed them (see `tests/fixtures/make_fixture.py`).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use marquee_training::optim::adamw_params;
use marquee_training::{
    clip_grad_norm, ContrastiveBatch, Pooling, SentenceEncoder, Texts, Trainer,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const LOSS_TOL: f64 = 1e-5;
const GRAD_TOL: f64 = 1e-4;
const PARAM_TOL: f64 = 1e-5;
const EMBED_TOL: f64 = 1e-5;
const LR: f64 = 1e-3;

/// The key bias adds `q·b_k` to every score of a query's row, which the softmax
/// removes: its gradient is exactly zero in exact arithmetic, and what torch and candle
/// compute for it (norm ~3e-9 here, against ~2e-2 for the next smallest) is rounding
/// noise that cannot be compared relatively. AdamW then turns that noise into updates
/// of up to `lr` per element (`m̂/(√v̂+ε)` with |g| near ε), in torch as here.
fn gradient_is_zero_in_exact_arithmetic(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model_dir() -> PathBuf {
    fixtures().join("tiny")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("tiny_step.safetensors"), &Device::Cpu)
        .expect("reading tiny_step.safetensors")
}

fn texts(r: &HashMap<String, Tensor>, group: &str) -> Texts {
    Texts {
        input_ids: r[&format!("{group}.input_ids")].clone(),
        attention_mask: r[&format!("{group}.attention_mask")].clone(),
    }
}

fn batch(r: &HashMap<String, Tensor>) -> ContrastiveBatch {
    ContrastiveBatch {
        queries: texts(r, "queries"),
        docs: texts(r, "docs"),
        hard_negatives: Some(texts(r, "negatives")),
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// ‖got − want‖ / ‖want‖ (shapes must agree).
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let (g, w) = (values(got), values(want));
    let diff: f64 = g.iter().zip(&w).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f64 = w.iter().map(|b| b * b).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// The worst relative error over named pairs, and its name.
fn worst(errors: &[(String, f64)]) -> (String, f64) {
    errors
        .iter()
        .cloned()
        .fold((String::new(), 0.0), |a, b| if b.1 > a.1 { b } else { a })
}

fn load() -> SentenceEncoder {
    SentenceEncoder::load(&model_dir(), &Device::Cpu).expect("loading the tiny model")
}

#[test]
fn embeddings_match_torch_mean_and_cls_pooling() {
    let r = reference();
    let mut encoder = load();
    assert_eq!(encoder.pooling(), Pooling::Mean);
    for (pooling, key) in [
        (Pooling::Mean, "embedding"),
        (Pooling::Cls, "cls_embedding"),
    ] {
        encoder.set_pooling(pooling);
        for group in ["queries", "docs", "negatives"] {
            let t = texts(&r, group);
            let got = encoder.forward(&t.input_ids, &t.attention_mask).unwrap();
            let err = rel_err(&got, &r[&format!("{group}.{key}")]);
            println!("{pooling:?} {group}: relative error {err:.3e}");
            assert!(
                err < EMBED_TOL,
                "{pooling:?} {group} embeddings differ: {err:.3e}"
            );
        }
    }
}

/// Copies the fixture model to a temporary directory (its weight files included).
fn copy_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = model_dir();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            let sub = dir.path().join(entry.file_name());
            std::fs::create_dir_all(&sub).unwrap();
            for file in std::fs::read_dir(entry.path()).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), sub.join(file.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

#[test]
fn dense_with_identity_activation_matches_torch() {
    let r = reference();
    let dir = copy_model();
    let config = dir.path().join("2_Dense/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("torch.nn.modules.activation.Tanh"));
    let text = text.replace(
        "torch.nn.modules.activation.Tanh",
        "torch.nn.modules.linear.Identity",
    );
    std::fs::write(&config, text).unwrap();
    let encoder = SentenceEncoder::load(dir.path(), &Device::Cpu).unwrap();
    for group in ["queries", "docs", "negatives"] {
        let t = texts(&r, group);
        let got = encoder.forward(&t.input_ids, &t.attention_mask).unwrap();
        let err = rel_err(&got, &r[&format!("{group}.identity_embedding")]);
        assert!(
            err < EMBED_TOL,
            "Identity {group} embeddings differ: {err:.3e}"
        );
    }
}

#[test]
fn loss_and_every_gradient_match_torch() {
    check_loss_and_gradients(None);
}

/// GradCache (two texts per forward pass) gives the same loss and gradients.
#[test]
fn loss_and_every_gradient_match_torch_in_chunks() {
    check_loss_and_gradients(Some(2));
}

fn check_loss_and_gradients(mini_batch: Option<usize>) {
    let r = reference();
    let encoder = load();
    let mut trainer = Trainer::new(&encoder, adamw_params(LR)).unwrap();
    trainer.mini_batch = mini_batch;
    let (loss, grads) = trainer.loss_and_grads(&encoder, &batch(&r)).unwrap();
    let loss_err = rel_err(&loss.reshape(1).unwrap(), &r["loss"]);
    println!(
        "loss {} (torch {}), relative error {loss_err:.3e}",
        loss.to_scalar::<f32>().unwrap(),
        values(&r["loss"])[0]
    );
    assert!(loss_err < LOSS_TOL, "loss differs: {loss_err:.3e}");

    let global_norm = values(&r["grad_norm"])[0];
    let mut errors = Vec::new();
    let mut zero_checked = 0;
    for (name, var) in encoder.named_vars() {
        match (grads.get(&var), r.get(&format!("grad.{name}"))) {
            (Some(got), Some(want)) if gradient_is_zero_in_exact_arithmetic(&name) => {
                let (ours, theirs) = (norm(got), norm(want));
                println!("{name}: gradient norm {ours:.3e} (torch {theirs:.3e}), zero in exact arithmetic");
                assert!(
                    ours < 1e-7 * global_norm && theirs < 1e-7 * global_norm,
                    "{name}: gradient {ours:.3e} (torch {theirs:.3e}) should be rounding noise"
                );
                zero_checked += 1;
            }
            (Some(got), Some(want)) => errors.push((name, rel_err(got, want))),
            (None, None) => {}
            (Some(_), None) => panic!("{name} has a gradient here but none in torch"),
            (None, Some(_)) => panic!("{name} has a gradient in torch but none here"),
        }
    }
    let torch_grads = r.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(zero_checked, 2, "one key bias per layer");
    assert_eq!(errors.len() + zero_checked, torch_grads, "gradient count");
    assert!(torch_grads > 30, "the fixture has too few gradients");
    let (name, err) = worst(&errors);
    println!(
        "{} gradients, worst relative error {err:.3e} ({name})",
        errors.len()
    );
    assert!(
        err < GRAD_TOL,
        "gradient of {name} differs: relative error {err:.3e}"
    );
}

fn norm(t: &Tensor) -> f64 {
    values(t).iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Below this, a gradient element is in AdamW's ε region: the first step moves it by
/// `lr·g/(|g|+ε)`, whose slope `lr·ε/(|g|+ε)²` reaches `lr/ε = 1e5` at zero, so the
/// rounding noise of the gradient itself decides the update.
const EPS_REGION: f64 = 1e-6;

/// Compares every parameter with torch's after the step. With `mask_eps_region`,
/// elements whose torch gradient is nonzero but below [`EPS_REGION`] in magnitude
/// (among them the key biases of [`gradient_is_zero_in_exact_arithmetic`]) are only
/// held to `|ours − torch| ≤ 2·lr` (each moved at most `lr` from the same start) and
/// left out of the relative error, which is computed over the other elements.
#[test]
fn loss_without_hard_negatives_matches_torch() {
    let r = reference();
    let encoder = load();
    let mut trainer = Trainer::new(&encoder, adamw_params(LR)).unwrap();
    let mut pairs = batch(&r);
    pairs.hard_negatives = None;
    let (loss, _) = trainer.loss_and_grads(&encoder, &pairs).unwrap();
    let err = rel_err(&loss.reshape(1).unwrap(), &r["loss_without_negatives"]);
    println!("loss without hard negatives: relative error {err:.3e}");
    assert!(
        err < LOSS_TOL,
        "loss without hard negatives differs: {err:.3e}"
    );
    // And a few steps on the one batch lower it.
    let first = trainer.step(&encoder, &pairs).unwrap().loss;
    let mut last = first;
    for _ in 0..4 {
        last = trainer.step(&encoder, &pairs).unwrap().loss;
    }
    println!("loss over five steps: {first} -> {last}");
    assert!(
        last < 0.7 * first,
        "training did not lower the loss: {first} -> {last}"
    );
}

fn check_params(
    encoder: &SentenceEncoder,
    r: &HashMap<String, Tensor>,
    what: &str,
    mask_eps_region: bool,
) -> f64 {
    let mut errors = Vec::new();
    let mut unmasked = Vec::new();
    let mut masked_count = 0;
    for (name, var) in encoder.named_vars() {
        let want = r
            .get(&format!("after.{name}"))
            .unwrap_or_else(|| panic!("{name} missing from the fixture"));
        let got = var.as_tensor();
        unmasked.push((name.clone(), rel_err(got, want)));
        let grad = r.get(&format!("grad.{name}"));
        if !mask_eps_region || grad.is_none() {
            errors.push((name, rel_err(got, want)));
            continue;
        }
        let (g, w, v) = (values(grad.unwrap()), values(want), values(got));
        let (mut diff, mut norm) = (0f64, 0f64);
        for i in 0..w.len() {
            if g[i] != 0.0 && g[i].abs() < EPS_REGION {
                masked_count += 1;
                assert!(
                    (v[i] - w[i]).abs() <= 2.0 * LR * 1.001,
                    "{what}: {name}[{i}] is {:.3e} from torch",
                    (v[i] - w[i]).abs()
                );
            } else {
                diff += (v[i] - w[i]).powi(2);
                norm += w[i] * w[i];
            }
        }
        errors.push((
            name,
            if norm > 0.0 {
                (diff / norm).sqrt()
            } else {
                0.0
            },
        ));
    }
    let (name, err) = worst(&errors);
    let (all_name, all_err) = worst(&unmasked);
    println!(
        "{what}: worst relative error of the updated parameters {err:.3e} ({name}); \
         {masked_count} elements in the eps region held to 2·lr; \
         without that mask {all_err:.3e} ({all_name})"
    );
    assert!(
        err < PARAM_TOL,
        "{what}: {name} after the step differs: relative error {err:.3e}"
    );
    err
}

#[test]
fn clipped_adamw_step_matches_torch() {
    let r = reference();
    let encoder = load();
    // The step must change the parameters visibly, or comparing them proves nothing.
    let before: HashMap<String, Tensor> = encoder
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().copy().unwrap()))
        .collect();
    let mut trainer = Trainer::new(&encoder, adamw_params(LR)).unwrap();
    let report = trainer.step(&encoder, &batch(&r)).unwrap();
    let torch_norm = values(&r["grad_norm"])[0];
    println!(
        "grad norm {} (torch {torch_norm}), loss {}",
        report.grad_norm, report.loss
    );
    assert!(torch_norm > 1.0, "the fixture must exercise clipping");
    assert!(((report.grad_norm - torch_norm) / torch_norm).abs() < 1e-5);
    let moved = rel_err(
        &before["encoder.layer.0.attention.self.query.weight"],
        &r["after.encoder.layer.0.attention.self.query.weight"],
    );
    assert!(moved > 1e-3, "the reference step barely moved: {moved:.3e}");
    check_params(&encoder, &r, "full step", true);
}

/// torch's gradients in a [`GradStore`] keyed by `encoder`'s variables.
fn torch_grads(encoder: &SentenceEncoder, r: &HashMap<String, Tensor>) -> GradStore {
    let mut grads = GradStore::default();
    for (name, var) in encoder.named_vars() {
        if let Some(g) = r.get(&format!("grad.{name}")) {
            grads.insert(var.as_tensor(), g.clone());
        }
    }
    grads
}

#[test]
fn clip_grad_norm_matches_torch() {
    // The first AdamW step is nearly blind to a common scale of the gradients
    // (g/(|g|+ε)), so clipping is checked on its own.
    let r = reference();
    let encoder = load();
    let mut grads = torch_grads(&encoder, &r);
    let vars: Vec<_> = encoder.named_vars().into_iter().map(|(_, v)| v).collect();
    let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
    let torch_norm = values(&r["grad_norm"])[0];
    assert!(
        ((norm - torch_norm) / torch_norm).abs() < 1e-6,
        "{norm} vs {torch_norm}"
    );
    let mut errors = Vec::new();
    for (name, var) in encoder.named_vars() {
        if let Some(want) = r.get(&format!("clipped.{name}")) {
            errors.push((name, rel_err(grads.get(&var).unwrap(), want)));
        }
    }
    assert_eq!(errors.len(), 39, "clipped gradient count");
    let (name, err) = worst(&errors);
    println!("clipped gradients: worst relative error {err:.3e} ({name})");
    assert!(err < 1e-6, "clipped gradient of {name} differs: {err:.3e}");
}

#[test]
fn adamw_on_torch_gradients_matches_torch() {
    // The optimiser alone: clip and step with torch's own gradients.
    let r = reference();
    let encoder = load();
    let mut trainer = Trainer::new(&encoder, adamw_params(LR)).unwrap();
    let norm = trainer.apply_gradients(torch_grads(&encoder, &r)).unwrap();
    let torch_norm = values(&r["grad_norm"])[0];
    assert!(
        ((norm - torch_norm) / torch_norm).abs() < 1e-6,
        "{norm} vs {torch_norm}"
    );
    check_params(&encoder, &r, "optimiser on torch gradients", false);
}

#[test]
fn saved_directory_reloads_to_the_same_outputs() {
    let r = reference();
    let encoder = load();
    let mut trainer = Trainer::new(&encoder, adamw_params(LR)).unwrap();
    trainer.step(&encoder, &batch(&r)).unwrap();
    let out = tempfile::tempdir().unwrap();
    encoder.save(out.path()).unwrap();
    for file in [
        "config.json",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "3_Normalize/config.json",
    ] {
        assert!(out.path().join(file).is_file(), "{file} not saved");
    }
    let reloaded = SentenceEncoder::load(out.path(), &Device::Cpu).unwrap();
    let original: HashMap<String, Tensor> = encoder
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let names: Vec<String> = reloaded.named_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), original.len(), "tensor count");
    for (name, var) in reloaded.named_vars() {
        assert_eq!(
            values(var.as_tensor()),
            values(&original[&name]),
            "{name} changed in the round trip"
        );
    }
    for group in ["queries", "docs", "negatives"] {
        let t = texts(&r, group);
        let a = values(&encoder.forward(&t.input_ids, &t.attention_mask).unwrap());
        let b = values(&reloaded.forward(&t.input_ids, &t.attention_mask).unwrap());
        assert_eq!(a, b, "{group}: reloaded model gives other embeddings");
        // And the trained model is not the fixture's anymore.
        let before = values(&r[&format!("{group}.embedding")]);
        let moved: f64 = a.iter().zip(&before).map(|(x, y)| (x - y).abs()).sum();
        assert!(
            moved > 1e-3,
            "{group}: the step did not change the embeddings"
        );
    }
}

#[test]
fn bert_prefixed_checkpoint_loads_and_saves_with_its_names() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let src = model_dir();
    for sub in ["1_Pooling", "2_Dense", "3_Normalize"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for file in [
        "config.json",
        "modules.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "3_Normalize/config.json",
    ] {
        std::fs::copy(src.join(file), dir.path().join(file)).unwrap();
    }
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect::<HashMap<_, _>>();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();

    let encoder = SentenceEncoder::load(dir.path(), &Device::Cpu).unwrap();
    let t = texts(&r, "docs");
    let got = encoder.forward(&t.input_ids, &t.attention_mask).unwrap();
    assert!(rel_err(&got, &r["docs.embedding"]) < EMBED_TOL);

    let out = tempfile::tempdir().unwrap();
    encoder.save(out.path()).unwrap();
    let saved =
        candle_core::safetensors::load(out.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut want: Vec<&String> = tensors.keys().collect();
    let mut got: Vec<&String> = saved.keys().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "saved names differ from the checkpoint's");
}
