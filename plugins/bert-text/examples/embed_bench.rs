//! Embeds texts with the bert-text plugin in-process on a chosen device and precision:
//! throughput over a document file, and optionally the embeddings of a text file for
//! parity checks. Used by `benchmarks/gpu/run.sh` on the GPU host.
//!
//! `embed_bench MODEL_DIR TEXTS.jsonl --device cuda:0 --precision fp32 --batch 256
//!  [--rounds 5] [--out EMBEDDINGS.json]`; each line of TEXTS is `{"text": ...}`.
//! Prints one JSON object.

use anyhow::{bail, Context, Result};
use marquee_bert_text::BertText;
use marquee_plugin_api::Plugin;
use rayon::prelude::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    model: PathBuf,
    texts: PathBuf,
    device: String,
    precision: String,
    batch: usize,
    rounds: usize,
    out: Option<PathBuf>,
}

fn parse() -> Result<Args> {
    let mut positional = Vec::new();
    let mut args = Args {
        model: PathBuf::new(),
        texts: PathBuf::new(),
        device: "auto".into(),
        precision: "fp32".into(),
        batch: 256,
        rounds: 5,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--device" => args.device = value()?,
            "--precision" => args.precision = value()?,
            "--batch" => args.batch = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--out" => args.out = Some(value()?.into()),
            _ if a.starts_with("--") => bail!("unknown flag {a}"),
            _ => positional.push(a),
        }
    }
    let [model, texts] = positional.as_slice() else {
        bail!("usage: embed_bench MODEL_DIR TEXTS.jsonl [--device D] [--precision P] [--batch N] [--rounds R] [--out FILE]");
    };
    (args.model, args.texts) = (model.into(), texts.into());
    Ok(args)
}

/// Tokenizes (in parallel) and embeds one batch; returns `n × dim` values.
fn embed(model: &BertText, texts: &[String]) -> Result<Vec<f32>> {
    let max = model.info().max_input_tokens as usize;
    let tokens: Vec<Vec<u32>> = texts
        .par_iter()
        .map(|t| model.tokenize(t, max).map(|t| t.ids))
        .collect::<Result<_, _>>()?;
    let mut offsets = vec![0usize];
    for t in &tokens {
        offsets.push(offsets.last().unwrap() + t.len());
    }
    model.embed_batch(&tokens.concat(), &offsets)
}

fn main() -> Result<()> {
    let args = parse()?;
    let options = json!({"device": args.device, "precision": args.precision}).to_string();
    let model = BertText::create(&args.model, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let texts: Vec<String> = std::fs::read_to_string(&args.texts)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            Ok(v["text"]
                .as_str()
                .context("a line without text")?
                .to_string())
        })
        .collect::<Result<_>>()?;
    let dim = model.info().output_dim as usize;
    let mut embeddings = Vec::with_capacity(texts.len() * dim);
    for chunk in texts.chunks(args.batch.max(1)) {
        embeddings.extend(embed(&model, chunk)?);
    }
    let mut seconds = Vec::new();
    for _ in 0..args.rounds {
        let start = Instant::now();
        for chunk in texts.chunks(args.batch.max(1)) {
            embed(&model, chunk)?;
        }
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds.get(seconds.len() / 2).copied().unwrap_or(f64::NAN);
    if let Some(out) = &args.out {
        let rows: Vec<&[f32]> = embeddings.chunks(dim).collect();
        std::fs::write(out, serde_json::to_string(&rows)?)?;
    }
    println!(
        "{}",
        json!({
            "bench": "bert_embed",
            "device": args.device,
            "precision": args.precision,
            "texts": texts.len(),
            "batch": args.batch,
            "seconds": median,
            "docs_per_s": texts.len() as f64 / median,
        })
    );
    Ok(())
}
