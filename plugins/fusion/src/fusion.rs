//! The fusion module, single head, written against the kernels' [`Backend`] trait:
//!
//! - `Q = W_Q e_text (+ b_Q)`,
//! - `K = W_K e_img (+ b_K)`, `V = W_V e_img (+ b_V)` for each present image
//!   (poster, thumbnail),
//! - `e_fused = softmax(Q Kᵀ / √d) V` over the present images only; with no image at all,
//!   `e_fused = Q` (text only),
//! - `z = W_p ReLU(e_fused) + b_p`.
//!
//! The projections are GEMMs on the backend (`W_K` and `W_V` stacked into one, over the
//! present images only); the attention over at most two keys per row runs on the host.

use crate::config::FusionConfig;
use crate::weights::Weights;
use anyhow::{ensure, Result};
use marquee_kernels::{Activation, Backend};

/// One batch of inputs: `n` rows of each embedding, row-major.
pub struct Inputs<'a> {
    /// Text embeddings, `n × text_dim`.
    pub text: &'a [f32],
    /// Poster embeddings, `n × image_dim` (rows of absent posters are ignored).
    pub poster: &'a [f32],
    /// Thumbnail embeddings, `n × image_dim` (rows of absent thumbnails are ignored).
    pub thumbnail: &'a [f32],
    /// Per row, whether the poster and the thumbnail are present.
    pub present: &'a [[bool; 2]],
}

/// The fusion module's weights on a backend.
pub struct Fusion<B: Backend> {
    backend: B,
    config: FusionConfig,
    w_q: B::Weight,
    b_q: Option<B::Tensor>,
    /// `W_K` over `W_V`: `2d × image_dim`.
    w_kv: B::Weight,
    b_kv: Option<B::Tensor>,
    w_p: B::Weight,
    b_p: B::Tensor,
}

impl<B: Backend> Fusion<B> {
    /// Uploads the weights (`W_Q`, `W_K`, `W_V`, `W_p` as `nn.Linear` names:
    /// `W_Q.weight`, `W_Q.bias`, ...), checking every shape against the config.
    pub fn load(backend: B, config: FusionConfig, weights: &Weights) -> Result<Self> {
        let FusionConfig {
            text_dim: dt,
            image_dim: di,
            attention_dim: d,
            output_dim: dout,
            qkv_bias,
        } = config;
        for name in ["W_Q", "W_K", "W_V"] {
            let has = weights.has(&format!("{name}.bias"));
            ensure!(
                has == qkv_bias,
                "config says qkv_bias = {qkv_bias} but the checkpoint {} {name}.bias",
                if has { "has" } else { "lacks" }
            );
        }
        let b = &backend;
        let mut kv = weights.tensor("W_K.weight", &[d, di])?;
        kv.extend(weights.tensor("W_V.weight", &[d, di])?);
        let (b_q, b_kv) = if qkv_bias {
            let mut bkv = weights.tensor("W_K.bias", &[d])?;
            bkv.extend(weights.tensor("W_V.bias", &[d])?);
            (
                Some(b.upload(1, d, &weights.tensor("W_Q.bias", &[d])?)?),
                Some(b.upload(1, 2 * d, &bkv)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            w_q: b.upload_weight(d, dt, &weights.tensor("W_Q.weight", &[d, dt])?)?,
            b_q,
            w_kv: b.upload_weight(2 * d, di, &kv)?,
            b_kv,
            w_p: b.upload_weight(dout, d, &weights.tensor("W_p.weight", &[dout, d])?)?,
            b_p: b.upload(1, dout, &weights.tensor("W_p.bias", &[dout])?)?,
            config,
            backend,
        })
    }

    /// The module's dimensions.
    pub fn config(&self) -> &FusionConfig {
        &self.config
    }

    /// Fuses a batch, returning `n × output_dim` values.
    pub fn forward(&self, inputs: &Inputs<'_>) -> Result<Vec<f32>> {
        let b = &self.backend;
        let FusionConfig {
            text_dim: dt,
            image_dim: di,
            attention_dim: d,
            ..
        } = self.config;
        let n = inputs.present.len();
        ensure!(
            inputs.text.len() == n * dt
                && inputs.poster.len() == n * di
                && inputs.thumbnail.len() == n * di,
            "fusion inputs do not hold {n} rows of {dt} (text) and {di} (images) values"
        );
        if n == 0 {
            return Ok(Vec::new());
        }
        let q = b.linear(
            &b.upload(n, dt, inputs.text)?,
            &self.w_q,
            self.b_q.as_ref(),
            Activation::Identity,
        )?;
        let mut fused = b.download(&q)?;
        // Keys and values of the present images only, in (row, slot) order.
        let mut owners = Vec::new();
        let mut images = Vec::new();
        for (row, present) in inputs.present.iter().enumerate() {
            for (slot, source) in [inputs.poster, inputs.thumbnail].iter().enumerate() {
                if present[slot] {
                    owners.push(row);
                    images.extend_from_slice(&source[row * di..(row + 1) * di]);
                }
            }
        }
        if !owners.is_empty() {
            let kv = b.download(&b.linear(
                &b.upload(owners.len(), di, &images)?,
                &self.w_kv,
                self.b_kv.as_ref(),
                Activation::Identity,
            )?)?;
            let scale = 1.0 / (d as f32).sqrt();
            let mut start = 0;
            while start < owners.len() {
                let row = owners[start];
                let end = start + owners[start..].iter().take_while(|&&r| r == row).count();
                let query = &fused[row * d..(row + 1) * d];
                let scores: Vec<f32> = (start..end)
                    .map(|j| {
                        let key = &kv[j * 2 * d..j * 2 * d + d];
                        query.iter().zip(key).map(|(q, k)| q * k).sum::<f32>() * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = exps.iter().sum();
                let out = &mut fused[row * d..(row + 1) * d];
                out.fill(0.0);
                for (j, e) in (start..end).zip(&exps) {
                    let value = &kv[j * 2 * d + d..(j + 1) * 2 * d];
                    let w = e / total;
                    for (o, v) in out.iter_mut().zip(value) {
                        *o += w * v;
                    }
                }
                start = end;
            }
        }
        for v in fused.iter_mut() {
            *v = v.max(0.0);
        }
        let z = b.linear(
            &b.upload(n, d, &fused)?,
            &self.w_p,
            Some(&self.b_p),
            Activation::Identity,
        )?;
        Ok(b.download(&z)?)
    }
}
