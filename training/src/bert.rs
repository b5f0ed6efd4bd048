//! The BERT encoder (Hugging Face `BertModel`, absolute positions, exact-erf GELU),
//! written with candle ops so that every weight is trainable. Weight names follow
//! transformers (`embeddings.word_embeddings.weight`,
//! `encoder.layer.N.attention.self.query.weight`, ...), looked up under the prefix the
//! checkpoint uses (`""` or `"bert."`), as the serving plugin does. [`Bert::forward`] is
//! the eval-mode pass; [`Bert::forward_train`] adds BERT's dropout (see [`Dropout`]).

use crate::ops;
use crate::rng::SplitMix64;
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use marquee_bert_config::BertConfig;

/// Where the encoder reads its weights: a name (without the checkpoint prefix) and the
/// expected shape give a tensor tracked by autograd.
pub trait ParamSource {
    /// The parameter `name` after checking its shape.
    fn param(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
}

/// `y = x Wᵀ + b` over the last dimension, like `torch.nn.Linear`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `{prefix}.weight` (`out × in`) and, if `bias`, `{prefix}.bias`.
    pub fn load(
        src: &dyn ParamSource,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            weight: src.param(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            bias: if bias {
                Some(src.param(&format!("{prefix}.bias"), &[out_dim])?)
            } else {
                None
            },
        })
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the layer to `x` of shape `(..., in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().context("linear input has no dimensions")?;
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.weight.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// `torch.nn.LayerNorm` over the last dimension (biased variance).
struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(src: &dyn ParamSource, prefix: &str, hidden: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: src.param(&format!("{prefix}.weight"), &[hidden])?,
            beta: src.param(&format!("{prefix}.bias"), &[hidden])?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(
            x,
            &self.gamma,
            &self.beta,
            self.eps as f32,
        )?)
    }
}

/// Training-mode dropout as `BertModel` applies it: `hidden_prob` on the embeddings'
/// output (after their LayerNorm) and on the attention-output and FFN-output
/// projections (before each residual LayerNorm), `attention_prob` on the attention
/// probabilities. Each kept element is scaled by `1/(1−p)` (inverted dropout, as
/// `torch.nn.functional.dropout`), so the expectation is the eval-mode value. Masks
/// come from a [`SplitMix64`] seeded by the caller: the same seed and the same calls
/// give the same masks (not torch's masks).
#[derive(Clone, Debug)]
pub struct Dropout {
    /// `hidden_dropout_prob`.
    pub hidden_prob: f32,
    /// `attention_probs_dropout_prob`.
    pub attention_prob: f32,
    rng: SplitMix64,
}

impl Dropout {
    /// Dropout with the given probabilities and seed.
    pub fn new(hidden_prob: f32, attention_prob: f32, seed: u64) -> Self {
        Self {
            hidden_prob,
            attention_prob,
            rng: SplitMix64::new(seed),
        }
    }

    /// `config.json`'s `hidden_dropout_prob` and `attention_probs_dropout_prob`.
    pub fn from_config(config: &BertConfig, seed: u64) -> Self {
        Self::new(
            config.hidden_dropout_prob as f32,
            config.attention_probs_dropout_prob as f32,
            seed,
        )
    }

    /// Zeroes each element of `x` with probability `p` and scales the rest by `1/(1−p)`.
    pub fn apply(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        anyhow::ensure!((0.0..=1.0).contains(&p), "dropout probability {p}");
        if p == 0.0 {
            return Ok(x.clone());
        }
        if p == 1.0 {
            return Ok(x.zeros_like()?);
        }
        Ok(ops::dropout(x, p, self.rng.next_u64())?)
    }
}

/// Applies `dropout` (when training) with the probability `pick` selects.
fn maybe_drop(
    dropout: &mut Option<&mut Dropout>,
    x: Tensor,
    pick: fn(&Dropout) -> f32,
) -> Result<Tensor> {
    match dropout {
        Some(d) => {
            let p = pick(d);
            d.apply(&x, p)
        }
        None => Ok(x),
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A BERT encoder whose weights are autograd variables.
pub struct Bert {
    config: BertConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Reads the encoder's weights from `src` (names without the checkpoint prefix).
    pub fn load(config: BertConfig, src: &dyn ParamSource) -> Result<Self> {
        config.validate()?;
        let (h, inter, eps) = (
            config.hidden_size,
            config.intermediate_size,
            f64::from(config.layer_norm_eps),
        );
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                query: Linear::load(src, &format!("{p}.attention.self.query"), h, h, true)?,
                key: Linear::load(src, &format!("{p}.attention.self.key"), h, h, true)?,
                value: Linear::load(src, &format!("{p}.attention.self.value"), h, h, true)?,
                attention_output: Linear::load(
                    src,
                    &format!("{p}.attention.output.dense"),
                    h,
                    h,
                    true,
                )?,
                attention_norm: LayerNorm::load(
                    src,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                intermediate: Linear::load(
                    src,
                    &format!("{p}.intermediate.dense"),
                    h,
                    inter,
                    true,
                )?,
                output: Linear::load(src, &format!("{p}.output.dense"), inter, h, true)?,
                output_norm: LayerNorm::load(src, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            word_embeddings: src
                .param("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: src.param(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_embeddings: src.param(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embeddings_norm: LayerNorm::load(src, "embeddings.LayerNorm", h, eps)?,
            layers,
            config,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Last hidden states `(batch, len, hidden)` for padded `input_ids` `(batch, len)`
    /// (u32 or i64) and `attention_mask` `(batch, len)` (1 for tokens, 0 for padding;
    /// any dtype), in eval mode (no dropout). Token types default to 0; positions are
    /// `0..len` in every row.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, token_type_ids, None)
    }

    /// [`Bert::forward`] in training mode: with `dropout`'s masks where `BertModel`
    /// applies dropout.
    pub fn forward_train(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, token_type_ids, Some(dropout))
    }

    /// Eval mode without `dropout`, training mode with it.
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<Tensor> {
        let hidden_p = |d: &Dropout| d.hidden_prob;
        let attention_p = |d: &Dropout| d.attention_prob;
        let (batch, len) = input_ids.dims2()?;
        let h = self.config.hidden_size;
        anyhow::ensure!(
            len <= self.config.max_position_embeddings,
            "sequence length {len} exceeds max_position_embeddings {}",
            self.config.max_position_embeddings
        );
        let words = self
            .word_embeddings
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((batch, len, h))?;
        let types = match token_type_ids {
            Some(t) => self
                .token_type_embeddings
                .index_select(&t.flatten_all()?, 0)?
                .reshape((batch, len, h))?,
            None => self
                .token_type_embeddings
                .narrow(0, 0, 1)?
                .broadcast_as((batch, len, h))?,
        };
        let positions = self.position_embeddings.narrow(0, 0, len)?;
        let x = (words + types)?.broadcast_add(&positions)?;
        let mut x = maybe_drop(&mut dropout, self.embeddings_norm.forward(&x)?, hidden_p)?;

        // Additive mask as transformers' eager attention: 0 for tokens, f32::MIN for padding.
        let mask = attention_mask.to_dtype(DType::F32)?;
        let bias = ((1.0 - mask)? * f32::MIN as f64)?;
        let heads = self.config.num_attention_heads;
        let head_dim = h / heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((batch, len, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        for layer in &self.layers {
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = q.matmul(&k.t()?.contiguous()?)?;
            let probs = maybe_drop(
                &mut dropout,
                ops::masked_softmax(&scores, &bias, scale)?,
                attention_p,
            )?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch, len, h))?;
            let projected = maybe_drop(
                &mut dropout,
                layer.attention_output.forward(&context)?,
                hidden_p,
            )?;
            let attended = layer.attention_norm.forward(&(projected + &x)?)?;
            let intermediate = ops::gelu_erf(&layer.intermediate.forward(&attended)?)?;
            let output = maybe_drop(&mut dropout, layer.output.forward(&intermediate)?, hidden_p)?;
            x = layer.output_norm.forward(&(output + &attended)?)?;
        }
        Ok(x)
    }
}
