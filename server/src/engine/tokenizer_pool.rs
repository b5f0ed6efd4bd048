//! The tokenization worker pool: tokenizes a request's texts in parallel, off the
//! async runtime, and lays the ids out as a ragged batch. Its task queue needs no bound
//! of its own: a request takes its model's queue places before it is tokenized.

use super::deadline::Deadline;
use super::error::EngineError;
use super::model::LoadedModel;
use marquee_plugin_api::Tokens;
use rayon::prelude::*;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A request's texts as one ragged batch of token ids.
pub struct TokenizedBatch {
    /// Every input's ids, back to back.
    pub ids: Vec<u32>,
    /// Input boundaries (`n + 1` entries).
    pub offsets: Vec<usize>,
    /// Inputs that were cut at the model's limit.
    pub truncated_inputs: u32,
}

impl TokenizedBatch {
    /// Lays tokenized inputs out back to back.
    fn from_tokens(tokens: Vec<Tokens>) -> Self {
        let mut batch = TokenizedBatch {
            ids: Vec::with_capacity(tokens.iter().map(|t| t.ids.len()).sum()),
            offsets: Vec::with_capacity(tokens.len() + 1),
            truncated_inputs: 0,
        };
        batch.offsets.push(0);
        for t in tokens {
            batch.truncated_inputs += u32::from(t.untruncated_len > t.ids.len());
            batch.ids.extend_from_slice(&t.ids);
            batch.offsets.push(batch.ids.len());
        }
        batch
    }
}

/// Longest text tokenized on the calling task instead of a worker (a few tens of
/// microseconds of work).
const INLINE_TEXT_BYTES: usize = 2048;

/// Tokenizes input `index` of a request for `model`.
fn tokenize_one(
    model: &LoadedModel,
    index: usize,
    text: &str,
    refuse_truncation: bool,
) -> Result<Tokens, EngineError> {
    let limit = model.instance.info().max_input_tokens;
    let t = model.instance.tokenize(text, limit)?;
    if refuse_truncation && t.untruncated_len > limit as usize {
        return Err(EngineError::Invalid(format!(
            "input {index} has {} tokens, over model {}'s limit of {limit}, and truncation is disabled",
            t.untruncated_len, model.name
        )));
    }
    Ok(t)
}

/// Threads dedicated to tokenization.
pub struct TokenizerPool {
    pool: rayon::ThreadPool,
}

impl TokenizerPool {
    /// A pool of `workers` threads (0: one per core).
    pub fn new(workers: usize) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("tokenize-{i}"))
            .build()?;
        Ok(Self { pool })
    }

    /// Tokenizes `texts` for `model`. With `refuse_truncation`, an input over the
    /// model's token limit fails the request ([`EngineError::Invalid`]). Skipped when the
    /// caller has gone or its deadline has passed by the time a worker is free.
    ///
    /// One short text (the common single query) is tokenized on the calling task: it
    /// costs less than handing it to a worker and waking the task again.
    pub async fn tokenize(
        &self,
        model: Arc<LoadedModel>,
        texts: Vec<String>,
        refuse_truncation: bool,
        deadline: Option<Deadline>,
    ) -> Result<TokenizedBatch, EngineError> {
        if let [text] = texts.as_slice() {
            if text.len() <= INLINE_TEXT_BYTES {
                if let Some(d) = deadline.filter(Deadline::passed) {
                    crate::metrics::record_dropped(&model.name, "deadline", 1);
                    return Err(d.exceeded());
                }
                let token = tokenize_one(&model, 0, text, refuse_truncation)?;
                return Ok(TokenizedBatch::from_tokens(vec![token]));
            }
        }
        let (reply, result) = oneshot::channel();
        self.pool.spawn(move || {
            if reply.is_closed() {
                crate::metrics::record_dropped(&model.name, "cancelled", texts.len());
                return;
            }
            if let Some(d) = deadline.filter(Deadline::passed) {
                crate::metrics::record_dropped(&model.name, "deadline", texts.len());
                let _ = reply.send(Err(d.exceeded()));
                return;
            }
            let tokens: Result<Vec<_>, EngineError> = texts
                .par_iter()
                .enumerate()
                .map(|(i, text)| tokenize_one(&model, i, text, refuse_truncation))
                .collect();
            let _ = reply.send(tokens.map(TokenizedBatch::from_tokens));
        });
        result
            .await
            .map_err(|_| EngineError::Internal("tokenization worker stopped".into()))?
    }
}
