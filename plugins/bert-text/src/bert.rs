//! The BERT encoder, written once against the kernels' [`Backend`] trait. Batches are
//! ragged: all sequences' tokens are rows of one matrix, split by offsets.

use crate::config::BertConfig;
use crate::weights::Weights;
use anyhow::{bail, Result};
use marquee_kernels::{Activation, Backend, LayerNorm, SeqOffsets};

struct Layer<B: Backend> {
    /// Query, key and value projections stacked: `3·hidden × hidden`.
    qkv_weight: B::Weight,
    qkv_bias: B::Tensor,
    attention_output_weight: B::Weight,
    attention_output_bias: B::Tensor,
    attention_norm: LayerNorm<B::Tensor>,
    intermediate_weight: B::Weight,
    intermediate_bias: B::Tensor,
    output_weight: B::Weight,
    output_bias: B::Tensor,
    output_norm: LayerNorm<B::Tensor>,
}

/// A BERT encoder's weights on a backend.
pub struct Bert<B: Backend> {
    backend: B,
    config: BertConfig,
    vocab_size: usize,
    word_embeddings: B::Tensor,
    position_embeddings: B::Tensor,
    token_type_embeddings: B::Tensor,
    embeddings_norm: LayerNorm<B::Tensor>,
    layers: Vec<Layer<B>>,
}

fn layer_norm<B: Backend>(
    backend: &B,
    weights: &Weights,
    prefix: &str,
    hidden: usize,
    eps: f32,
) -> Result<LayerNorm<B::Tensor>> {
    Ok(LayerNorm {
        gamma: weights.matrix(backend, &format!("{prefix}.weight"), [1, hidden])?,
        beta: weights.matrix(backend, &format!("{prefix}.bias"), [1, hidden])?,
        eps,
    })
}

impl<B: Backend> Bert<B> {
    /// Uploads the encoder's weights (Hugging Face `BertModel` names) to `backend`.
    pub fn load(backend: B, config: BertConfig, weights: &Weights) -> Result<Self> {
        config.validate()?;
        let (h, inter, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let b = &backend;
        let (_, vocab) = weights.tensor("embeddings.word_embeddings.weight")?;
        let vocab_size = vocab.len() / h;
        let (type_shape, _) = weights.tensor("embeddings.token_type_embeddings.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let qkv = |part: &str| {
                ["query", "key", "value"]
                    .iter()
                    .map(|n| format!("{p}.attention.self.{n}.{part}"))
                    .collect::<Vec<_>>()
            };
            layers.push(Layer {
                qkv_weight: b.upload_weight(3 * h, h, &weights.stacked(&qkv("weight"), [h, h])?)?,
                qkv_bias: b.upload(1, 3 * h, &weights.stacked(&qkv("bias"), [1, h])?)?,
                attention_output_weight: weights.linear_weight(
                    b,
                    &format!("{p}.attention.output.dense.weight"),
                    [h, h],
                )?,
                attention_output_bias: weights.matrix(
                    b,
                    &format!("{p}.attention.output.dense.bias"),
                    [1, h],
                )?,
                attention_norm: layer_norm(
                    b,
                    weights,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                intermediate_weight: weights.linear_weight(
                    b,
                    &format!("{p}.intermediate.dense.weight"),
                    [inter, h],
                )?,
                intermediate_bias: weights.matrix(
                    b,
                    &format!("{p}.intermediate.dense.bias"),
                    [1, inter],
                )?,
                output_weight: weights.linear_weight(
                    b,
                    &format!("{p}.output.dense.weight"),
                    [h, inter],
                )?,
                output_bias: weights.matrix(b, &format!("{p}.output.dense.bias"), [1, h])?,
                output_norm: layer_norm(b, weights, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            word_embeddings: weights.matrix(
                b,
                "embeddings.word_embeddings.weight",
                [vocab_size, h],
            )?,
            position_embeddings: weights.matrix(
                b,
                "embeddings.position_embeddings.weight",
                [config.max_position_embeddings, h],
            )?,
            token_type_embeddings: weights.matrix(
                b,
                "embeddings.token_type_embeddings.weight",
                [type_shape.first().copied().unwrap_or(1), h],
            )?,
            embeddings_norm: layer_norm(b, weights, "embeddings.LayerNorm", h, eps)?,
            layers,
            config,
            vocab_size,
            backend,
        })
    }

    /// Rows of the token embedding table: token ids are below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The backend the weights live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the encoder over a ragged batch: `token_ids` holds every sequence's ids
    /// back to back, `offsets` their boundaries. Returns the last hidden states,
    /// `tokens × hidden`.
    pub fn forward(&self, token_ids: &[u32], offsets: &SeqOffsets) -> Result<B::Tensor> {
        self.forward_layers(token_ids, offsets, self.layers.len())
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Like [`Bert::forward`], stopping after the first `layers` transformer layers:
    /// the hidden states transformers calls `hidden_states[layers]` (0 = the
    /// embeddings' output). `layers` must be at most [`Bert::num_layers`].
    pub fn forward_layers(
        &self,
        token_ids: &[u32],
        offsets: &SeqOffsets,
        layers: usize,
    ) -> Result<B::Tensor> {
        if layers > self.layers.len() {
            bail!(
                "layer {layers} is past the last layer ({})",
                self.layers.len()
            );
        }
        let b = &self.backend;
        let position_ids: Vec<u32> = offsets
            .windows(2)
            .flat_map(|w| 0..(w[1] - w[0]) as u32)
            .collect();
        let mut x = b.embed_tokens(
            &self.word_embeddings,
            &self.position_embeddings,
            &self.token_type_embeddings,
            token_ids,
            &position_ids,
            &self.embeddings_norm,
        )?;
        for layer in &self.layers[..layers] {
            let qkv = b.linear(
                &x,
                &layer.qkv_weight,
                Some(&layer.qkv_bias),
                Activation::Identity,
            )?;
            let context = b.attention(&qkv, offsets, self.config.num_attention_heads)?;
            let mut attended = b.linear(
                &context,
                &layer.attention_output_weight,
                Some(&layer.attention_output_bias),
                Activation::Identity,
            )?;
            b.add_layer_norm(&mut attended, &x, &layer.attention_norm)?;
            let intermediate = b.linear(
                &attended,
                &layer.intermediate_weight,
                Some(&layer.intermediate_bias),
                Activation::Gelu,
            )?;
            let mut output = b.linear(
                &intermediate,
                &layer.output_weight,
                Some(&layer.output_bias),
                Activation::Identity,
            )?;
            b.add_layer_norm(&mut output, &attended, &layer.output_norm)?;
            x = output;
        }
        Ok(x)
    }
}
