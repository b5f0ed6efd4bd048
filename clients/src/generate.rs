//! `marquee generate`: one user message (the images in order, then the prompt text)
//! streamed through GenerationService.GenerateStream; the text is printed as it comes,
//! or, with `--json`, one object at the end.

use anyhow::{bail, Context, Result};
use marquee_client::proto::{
    content_part, generate_request, generate_stream_response, ChatInput, ChatMessage, ContentPart,
    FinishReason, GenerateRequest, GenerationParameters, GenerationResult,
};
use marquee_client::Client;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// What to generate and how.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Generator model (default: the server's default generator).
    #[arg(long, default_value = "")]
    model: String,
    /// An image to show the model (JPEG, PNG, WebP); repeatable, in order.
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,
    /// Most tokens to generate (server default: 256).
    #[arg(long)]
    max_new_tokens: Option<u32>,
    /// End tokens are suppressed until this many tokens are generated.
    #[arg(long, default_value_t = 0)]
    min_new_tokens: u32,
    /// Softmax temperature; 0 is greedy (the default).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Nucleus sampling mass in (0, 1].
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when the text contains this string; repeatable.
    #[arg(long = "stop", value_name = "STR")]
    stop: Vec<String>,
    /// A LoRA adapter loaded into the model.
    #[arg(long, default_value = "")]
    adapter: String,
    /// The prompt text.
    prompt: String,
}

fn finish_name(code: i32) -> &'static str {
    match FinishReason::try_from(code).unwrap_or(FinishReason::Unspecified) {
        FinishReason::Length => "length",
        FinishReason::EosToken => "eos_token",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Cancelled => "cancelled",
        FinishReason::Unspecified => "unspecified",
    }
}

/// Builds the request: one user message with the images, then the text.
fn request(args: GenerateArgs) -> Result<GenerateRequest> {
    let mut content = Vec::with_capacity(args.images.len() + 1);
    for path in &args.images {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading image {}", path.display()))?;
        content.push(ContentPart {
            part: Some(content_part::Part::Image(bytes)),
        });
    }
    content.push(ContentPart {
        part: Some(content_part::Part::Text(args.prompt)),
    });
    Ok(GenerateRequest {
        model: args.model,
        input: Some(generate_request::Input::Chat(ChatInput {
            messages: vec![ChatMessage {
                role: "user".into(),
                content,
            }],
        })),
        parameters: Some(GenerationParameters {
            max_new_tokens: args.max_new_tokens,
            min_new_tokens: args.min_new_tokens,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            stop: args.stop,
            adapter: args.adapter,
            ..Default::default()
        }),
    })
}

/// Runs `marquee generate`.
pub async fn run(client: &mut Client, args: GenerateArgs, as_json: bool) -> Result<()> {
    let mut stream = client
        .generation
        .generate_stream(request(args)?)
        .await?
        .into_inner();
    let mut stdout = std::io::stdout();
    let mut result: Option<GenerationResult> = None;
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(generate_stream_response::Event::Delta(delta)) if !as_json => {
                stdout.write_all(delta.text.as_bytes())?;
                stdout.flush()?;
            }
            Some(generate_stream_response::Event::Result(r)) => result = Some(r),
            _ => {}
        }
    }
    let Some(r) = result else {
        bail!("the server ended the stream without a result");
    };
    let usage = r.usage.unwrap_or_default();
    if as_json {
        println!(
            "{}",
            json!({
                "model": r.model,
                "text": r.text,
                "token_ids": r.token_ids,
                "finish_reason": finish_name(r.finish_reason),
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                },
            })
        );
    } else {
        println!();
        let timings = r.timings.unwrap_or_default();
        eprintln!(
            "model {} · {} prompt + {} completion tokens · {} · first token {:.0} ms · {:.1} tokens/s",
            r.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            finish_name(r.finish_reason),
            timings.time_to_first_token_ms,
            if timings.decode_ms > 0.0 {
                (usage.completion_tokens.saturating_sub(1)) as f64 * 1e3 / timings.decode_ms
            } else {
                0.0
            }
        );
    }
    Ok(())
}
