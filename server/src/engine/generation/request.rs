//! What a generation request asks for and what it gets back, in the engine's terms.

use marquee_plugin_api::GeneratedToken;
use std::time::Duration;

/// One part of a chat message.
#[derive(Clone, Debug, PartialEq)]
pub enum ContentPart {
    /// Text.
    Text(String),
    /// An encoded image (JPEG, PNG, WebP).
    Image(Vec<u8>),
}

/// A chat message: a role and its parts in order.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its content, in order.
    pub content: Vec<ContentPart>,
}

/// What a viewer saw of a film, rendered into one user message by the model's recall
/// instruction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecallInput {
    /// Scene images (encoded), in order.
    pub scene_images: Vec<Vec<u8>>,
    /// Text read on screen.
    pub ocr_text: String,
    /// What was said.
    pub transcript: String,
}

/// The prompt of a generation.
#[derive(Clone, Debug, PartialEq)]
pub enum GenerationInput {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// A recall input.
    Recall(RecallInput),
}

/// How tokens are chosen and when generation stops.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate.
    pub max_new_tokens: u32,
    /// End tokens are suppressed until this many tokens are generated.
    pub min_new_tokens: u32,
    /// Softmax temperature; 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = all.
    pub top_k: u32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Repetition penalty; 1 = off.
    pub repetition_penalty: f32,
    /// Strings that end the generation (the text ends before them).
    pub stop: Vec<String>,
    /// Tokens that end the generation besides the model's end tokens.
    pub stop_token_ids: Vec<u32>,
    /// Seed of the sequence's random generator.
    pub seed: u64,
    /// Report each token's log-probability.
    pub logprobs: bool,
    /// Alternatives to report per token.
    pub top_logprobs: u32,
    /// A loaded adapter's name.
    pub adapter: Option<String>,
}

impl Default for GenerationParams {
    /// 256 tokens, greedy.
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            min_new_tokens: 0,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            seed: 0,
            logprobs: false,
            top_logprobs: 0,
            adapter: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` were generated (or the context is full).
    Length,
    /// An end token was generated.
    EosToken,
    /// The text reached a stop string.
    StopSequence,
}

/// Token counts of a generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationUsage {
    /// Prompt tokens, image tokens included.
    pub prompt_tokens: u32,
    /// Of those, the tokens standing for images.
    pub image_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
}

/// Where a generation's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenerationTimings {
    /// From arrival to the first step that processed the prompt.
    pub queue: Duration,
    /// From arrival to the first generated token.
    pub time_to_first_token: Duration,
    /// From the first generated token to the last.
    pub decode: Duration,
}

/// A finished generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationResult {
    /// The generator's serving name.
    pub model: String,
    /// The generated text (before a stop string).
    pub text: String,
    /// The generated tokens.
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: GenerationUsage,
    /// Timings.
    pub timings: GenerationTimings,
    /// Per token with log-probabilities, when asked for.
    pub tokens: Vec<GeneratedToken>,
}

/// What a generation stream yields.
#[derive(Clone, Debug, PartialEq)]
pub enum GenerationEvent {
    /// New tokens and the text they add (held back while a stop string may be starting).
    Delta {
        /// The tokens (log-probabilities only when asked for).
        tokens: Vec<GeneratedToken>,
        /// The text.
        text: String,
    },
    /// The end, always last.
    Done(GenerationResult),
}
