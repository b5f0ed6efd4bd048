//! Safe Rust views of the ABI's enumerations and structs, shared by SDK and host.

use crate::abi::*;

/// Outcome class of a failed call, mirroring the `MQ_STATUS_*` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The caller's input is wrong.
    InvalidArgument,
    /// A needed file or resource does not exist.
    NotFound,
    /// Out of memory or over a limit.
    ResourceExhausted,
    /// Not implemented by this plugin.
    Unimplemented,
    /// A failure inside the plugin.
    Internal,
}

impl Status {
    /// The ABI code.
    pub fn code(self) -> MqStatus {
        match self {
            Status::InvalidArgument => MQ_STATUS_INVALID_ARGUMENT,
            Status::NotFound => MQ_STATUS_NOT_FOUND,
            Status::ResourceExhausted => MQ_STATUS_RESOURCE_EXHAUSTED,
            Status::Unimplemented => MQ_STATUS_UNIMPLEMENTED,
            Status::Internal => MQ_STATUS_INTERNAL,
        }
    }

    /// The status for an ABI code (`None` for OK); unknown codes read as internal.
    pub fn from_code(code: MqStatus) -> Option<Status> {
        match code {
            MQ_STATUS_OK => None,
            MQ_STATUS_INVALID_ARGUMENT => Some(Status::InvalidArgument),
            MQ_STATUS_NOT_FOUND => Some(Status::NotFound),
            MQ_STATUS_RESOURCE_EXHAUSTED => Some(Status::ResourceExhausted),
            MQ_STATUS_UNIMPLEMENTED => Some(Status::Unimplemented),
            _ => Some(Status::Internal),
        }
    }
}

/// What a plugin does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Text → vector.
    TextEncoder,
    /// Image → vector.
    ImageEncoder,
    /// Several embeddings → one vector.
    Fusion,
    /// Inputs → generated text.
    Generator,
}

impl PluginKind {
    /// The ABI code.
    pub fn code(self) -> MqKind {
        match self {
            PluginKind::TextEncoder => MQ_KIND_TEXT_ENCODER,
            PluginKind::ImageEncoder => MQ_KIND_IMAGE_ENCODER,
            PluginKind::Fusion => MQ_KIND_FUSION,
            PluginKind::Generator => MQ_KIND_GENERATOR,
        }
    }

    /// The kind for an ABI code, `None` when unknown.
    pub fn from_code(code: MqKind) -> Option<PluginKind> {
        Some(match code {
            MQ_KIND_TEXT_ENCODER => PluginKind::TextEncoder,
            MQ_KIND_IMAGE_ENCODER => PluginKind::ImageEncoder,
            MQ_KIND_FUSION => PluginKind::Fusion,
            MQ_KIND_GENERATOR => PluginKind::Generator,
            _ => return None,
        })
    }
}

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer.
    U32,
    /// Byte.
    U8,
}

impl DType {
    /// The ABI code.
    pub fn code(self) -> MqDType {
        match self {
            DType::F32 => MQ_DTYPE_F32,
            DType::U32 => MQ_DTYPE_U32,
            DType::U8 => MQ_DTYPE_U8,
        }
    }

    /// The dtype for an ABI code, `None` when unknown.
    pub fn from_code(code: MqDType) -> Option<DType> {
        Some(match code {
            MQ_DTYPE_F32 => DType::F32,
            MQ_DTYPE_U32 => DType::U32,
            MQ_DTYPE_U8 => DType::U8,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::U8 => 1,
        }
    }
}

/// Names of the inputs and outputs each kind describes in its [`ModelInfo`] (in `embed`'s
/// input order; see `plugins/README.md`).
pub mod tensor_names {
    /// Text encoders: every sequence's token ids back to back (U32, ragged).
    pub const TOKEN_IDS: &str = "token_ids";
    /// Text and image encoders: where each input starts (U32, ragged).
    pub const OFFSETS: &str = "offsets";
    /// Image encoders: the encoded images back to back (U8, ragged).
    pub const IMAGES: &str = "images";
    /// Fusion: the text embedding (F32, `text_dim` wide).
    pub const TEXT: &str = "text";
    /// Fusion: the poster embedding (F32, `image_dim` wide).
    pub const POSTER: &str = "poster";
    /// Fusion: the thumbnail embedding (F32, `image_dim` wide).
    pub const THUMBNAIL: &str = "thumbnail";
    /// Fusion: which of poster and thumbnail are present (U8, 2 wide).
    pub const PRESENT: &str = "present";
    /// Every kind's output vector (F32, `output_dim` wide).
    pub const EMBEDDING: &str = "embedding";
}

/// One named input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its name (see [`tensor_names`]).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Elements per row (per batch item), 0 when rows vary in length.
    pub width: u32,
}

impl TensorSpec {
    /// A descriptor.
    pub fn new(name: &str, dtype: DType, width: u32) -> Self {
        Self {
            name: name.to_string(),
            dtype,
            width,
        }
    }
}

/// What a loaded model takes and returns: the safe form of [`MqModelInfo`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelInfo {
    /// Length of each output vector.
    pub output_dim: u32,
    /// Token limit of one input (text encoders), 0 when not applicable.
    pub max_input_tokens: u32,
    /// `embed`'s inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// The outputs.
    pub outputs: Vec<TensorSpec>,
    /// Width of a per-token hidden state, 0 when the model gives none.
    pub token_state_dim: u32,
    /// `L`: per-token hidden states exist for layers `0..=L`.
    pub token_state_layers: u32,
    /// Generators: most tokens one sequence may hold, prompt and generated.
    pub max_context_tokens: u32,
    /// Generators: tokens per KV-cache block.
    pub kv_block_size: u32,
    /// Generators: KV-cache blocks in all.
    pub kv_blocks: u32,
    /// Generators: most images per prompt, 0 without vision.
    pub max_images: u32,
}

impl ModelInfo {
    fn with_inputs(output_dim: u32, inputs: Vec<TensorSpec>) -> Self {
        Self {
            output_dim,
            inputs,
            outputs: vec![TensorSpec::new(
                tensor_names::EMBEDDING,
                DType::F32,
                output_dim,
            )],
            ..Self::default()
        }
    }

    /// A text encoder: ragged token ids and offsets in, `output_dim` floats out.
    pub fn text_encoder(output_dim: u32, max_input_tokens: u32) -> Self {
        Self {
            max_input_tokens,
            ..Self::with_inputs(
                output_dim,
                vec![
                    TensorSpec::new(tensor_names::TOKEN_IDS, DType::U32, 0),
                    TensorSpec::new(tensor_names::OFFSETS, DType::U32, 0),
                ],
            )
        }
    }

    /// An image encoder: encoded images and their byte offsets in.
    pub fn image_encoder(output_dim: u32) -> Self {
        Self::with_inputs(
            output_dim,
            vec![
                TensorSpec::new(tensor_names::IMAGES, DType::U8, 0),
                TensorSpec::new(tensor_names::OFFSETS, DType::U32, 0),
            ],
        )
    }

    /// A fusion model: text, poster and thumbnail embeddings and the presence flags in.
    pub fn fusion(text_dim: u32, image_dim: u32, output_dim: u32) -> Self {
        Self::with_inputs(
            output_dim,
            vec![
                TensorSpec::new(tensor_names::TEXT, DType::F32, text_dim),
                TensorSpec::new(tensor_names::POSTER, DType::F32, image_dim),
                TensorSpec::new(tensor_names::THUMBNAIL, DType::F32, image_dim),
                TensorSpec::new(tensor_names::PRESENT, DType::U8, 2),
            ],
        )
    }

    /// A generator: no vector output; its context, KV cache and image limits.
    pub fn generator(
        max_context_tokens: u32,
        kv_block_size: u32,
        kv_blocks: u32,
        max_images: u32,
    ) -> Self {
        Self {
            max_context_tokens,
            kv_block_size,
            kv_blocks,
            max_images,
            ..Self::default()
        }
    }

    /// The same, also offering per-token hidden states `dim` wide for layers `0..=layers`.
    pub fn with_token_states(self, dim: u32, layers: u32) -> Self {
        Self {
            token_state_dim: dim,
            token_state_layers: layers,
            ..self
        }
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// A fusion model's input widths `(text, image)`: the widths of its `text` and
    /// `poster` inputs; `None` when it does not describe both.
    pub fn fusion_widths(&self) -> Option<(usize, usize)> {
        let width = |name| self.input(name).map(|t| t.width as usize);
        Some((width(tensor_names::TEXT)?, width(tensor_names::POSTER)?))
    }
}

/// How a generated sequence chooses its tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate (at least 1).
    pub max_new_tokens: u32,
    /// End tokens are suppressed until this many tokens are generated.
    pub min_new_tokens: u32,
    /// Softmax temperature; 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = all.
    pub top_k: u32,
    /// Nucleus mass in (0, 1]; 1 = all.
    pub top_p: f32,
    /// Repetition penalty; 1 = off.
    pub repetition_penalty: f32,
    /// Seed of the sequence's random generator.
    pub seed: u64,
    /// End tokens besides the model's.
    pub stop_token_ids: Vec<u32>,
    /// Alternatives to report per token (at most `MQ_MAX_TOP_LOGPROBS`).
    pub top_logprobs: u32,
}

impl Default for SamplingParams {
    /// Greedy, 16 tokens.
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            min_new_tokens: 0,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop_token_ids: Vec::new(),
            top_logprobs: 0,
        }
    }
}

/// A sequence to start on a generator.
#[derive(Clone, Debug)]
pub struct SequenceStart<'a> {
    /// The prompt's token ids, one image placeholder per image.
    pub token_ids: &'a [u32],
    /// The encoded images, in prompt order.
    pub images: Vec<&'a [u8]>,
    /// A loaded adapter's name, or `None`.
    pub adapter: Option<&'a str>,
    /// Token choice.
    pub params: SamplingParams,
}

/// A started sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceStarted {
    /// Its id within the instance.
    pub id: u64,
    /// Prompt tokens after image expansion.
    pub prompt_tokens: u32,
    /// Of those, the tokens standing for images.
    pub image_tokens: u32,
}

/// Why a sequence ended inside the plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` reached, or the context is full.
    Length,
    /// An end token was generated.
    Eos,
}

impl Finish {
    /// The ABI code (`MQ_FINISH_*`) of an optional finish.
    pub fn code(finish: Option<Finish>) -> MqFinish {
        match finish {
            None => MQ_FINISH_NONE,
            Some(Finish::Length) => MQ_FINISH_LENGTH,
            Some(Finish::Eos) => MQ_FINISH_EOS,
        }
    }

    /// The finish of an ABI code; unknown codes read as `Length`.
    pub fn from_code(code: MqFinish) -> Option<Finish> {
        match code {
            MQ_FINISH_NONE => None,
            MQ_FINISH_EOS => Some(Finish::Eos),
            _ => Some(Finish::Length),
        }
    }
}

/// A generated token with its log-probability and the most likely alternatives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeneratedToken {
    /// The token.
    pub token_id: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely alternatives, most likely first.
    pub top_logprobs: Vec<MqTokenLogprob>,
}

/// One sequence's outcome of a generator step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// The sequence.
    pub id: u64,
    /// The token generated, `None` while the prompt is still being processed.
    pub token: Option<GeneratedToken>,
    /// Set when the sequence ended (its blocks are then free).
    pub finish: Option<Finish>,
    /// The text the token completes (may be empty).
    pub text: String,
}

/// A loaded LoRA adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfo {
    /// Rank `r`.
    pub rank: u32,
    /// `lora_alpha`.
    pub alpha: f32,
    /// Whether the scale is `alpha / sqrt(r)`.
    pub use_rslora: bool,
    /// The adapted modules.
    pub target_modules: Vec<String>,
}

/// A generator's load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorState {
    /// KV-cache blocks in all.
    pub kv_blocks: u32,
    /// KV-cache blocks free.
    pub kv_blocks_free: u32,
    /// Live sequences.
    pub sequences: u32,
}
