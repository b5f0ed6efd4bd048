//! The in-process half of benchmarks/resnet_bench.py: loads a model folder, runs the
//! network on a batch of preprocessed inputs (and optionally the whole pipeline on
//! encoded image files), and reports timings and features as JSON on stdout.
//!
//! ```sh
//! cargo run --release -p marquee-resnet-poster --example resnet_bench -- \
//!     MODEL_DIR INPUT.safetensors THREADS REPS FEATURES_OUT.bin [IMAGE_LIST]
//! ```
//!
//! `INPUT.safetensors` holds `input`, an F32 `[batch, 3, h, w]` tensor; the features of
//! the last repetition are written to `FEATURES_OUT.bin` as little-endian f32. With
//! `IMAGE_LIST` (a file of image paths, one per line) the images are also embedded from
//! their bytes in batches of `batch`, and those features appended to the same file.

use marquee_kernels::ImageShape;
use marquee_plugin_api::Plugin;
use marquee_resnet_poster::ResNetPoster;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 5 || args.len() == 6,
        "usage: MODEL_DIR INPUT.safetensors THREADS REPS FEATURES_OUT.bin [IMAGE_LIST]"
    );
    let threads: usize = args[2].parse()?;
    let reps: usize = args[3].parse()?;
    let load = Instant::now();
    let model = ResNetPoster::create(Path::new(&args[0]), &format!("{{\"threads\": {threads}}}"))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let load_s = load.elapsed().as_secs_f64();

    let bytes = std::fs::read(&args[1])?;
    let file = safetensors::SafeTensors::deserialize(&bytes)?;
    let input = file.tensor("input")?;
    let [batch, channels, height, width] = <[usize; 4]>::try_from(input.shape())
        .map_err(|_| anyhow::anyhow!("input must be [batch, 3, h, w]"))?;
    anyhow::ensure!(channels == 3, "input must have 3 channels");
    let values: Vec<f32> = input
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape = ImageShape {
        batch,
        height,
        width,
    };
    let mut features = model.features_nchw(&values, shape)?; // warm-up
    let start = Instant::now();
    for _ in 0..reps {
        features = model.features_nchw(&values, shape)?;
    }
    let network_s = start.elapsed().as_secs_f64();

    let mut pipeline = serde_json::Value::Null;
    if let Some(list) = args.get(5) {
        let paths: Vec<String> = std::fs::read_to_string(list)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let images: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;
        let start = Instant::now();
        for chunk in images.chunks(batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            features.extend(
                model
                    .embed_images(&refs)
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?,
            );
        }
        let seconds = start.elapsed().as_secs_f64();
        pipeline = serde_json::json!({"images": images.len(), "seconds": seconds});
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[4])?);
    for v in &features {
        out.write_all(&v.to_le_bytes())?;
    }
    out.flush()?;
    println!(
        "{}",
        serde_json::json!({
            "load_seconds": load_s,
            "batch": batch,
            "reps": reps,
            "threads": threads,
            "network_seconds": network_s,
            "images_per_second": (batch * reps) as f64 / network_s,
            "dim": model.output_dim(),
            "pipeline": pipeline,
        })
    );
    Ok(())
}
