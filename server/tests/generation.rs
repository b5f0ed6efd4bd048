//! GenerationService against a real server serving the tiny random Qwen2.5-VL models
//! that transformers 4.57.6 made (plugins/qwen2-vl/tests/fixtures): greedy tokens equal
//! transformers' through gRPC with sequences batched continuously and prompts chunked,
//! streaming, LoRA adapters, cancellation freeing KV blocks, KV exhaustion answered
//! RESOURCE_EXHAUSTED while running streams finish, deadlines, and bad input.

mod common;

use common::{eventually, Server};
use marquee_client::proto::generation_service_client::GenerationServiceClient;
use marquee_client::proto::{
    content_part, generate_request, generate_stream_response, ChatInput, ChatMessage, ContentPart,
    FinishReason, GenerateRequest, GenerationParameters, GenerationResult, ListAdaptersRequest,
    LoadAdapterRequest, RecallInput, UnloadAdapterRequest,
};
use marquee_client::Client;
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tonic::Code;

fn fixtures() -> PathBuf {
    common::repo_root().join("plugins/qwen2-vl/tests/fixtures")
}

/// The expected values and the two fixture images, PNG-encoded.
struct Expected {
    meta: Value,
    images: Vec<Vec<u8>>,
}

fn expected() -> Expected {
    let dir = fixtures();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let images = (0..2)
        .map(|i| {
            let t = tensors.tensor(&format!("image{i}.rgb")).unwrap();
            let (h, w) = (t.shape()[0] as u32, t.shape()[1] as u32);
            let rgb = image::RgbImage::from_raw(w, h, t.data().to_vec()).unwrap();
            let mut png = std::io::Cursor::new(Vec::new());
            rgb.write_to(&mut png, image::ImageFormat::Png).unwrap();
            png.into_inner()
        })
        .collect();
    Expected { meta, images }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The fixture's chat prompt `i` as gRPC messages, its `{"type": "image"}` parts
/// filled with the images the prompt uses, in order.
fn chat(expected: &Expected, model: &str, i: usize) -> ChatInput {
    let prompt = &expected.meta["chat"][i]["messages"];
    let mut images = ids(&expected.meta[model]["generations"][i]["images"]).into_iter();
    let messages = prompt
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let content = match &m["content"] {
                Value::String(text) => vec![text_part(text)],
                Value::Array(parts) => parts
                    .iter()
                    .map(|p| match p["type"].as_str().unwrap() {
                        "text" => text_part(p["text"].as_str().unwrap()),
                        _ => ContentPart {
                            part: Some(content_part::Part::Image(
                                expected.images[images.next().unwrap() as usize].clone(),
                            )),
                        },
                    })
                    .collect(),
                other => panic!("content {other}"),
            };
            ChatMessage {
                role: m["role"].as_str().unwrap().to_string(),
                content,
            }
        })
        .collect();
    ChatInput { messages }
}

fn text_part(text: &str) -> ContentPart {
    ContentPart {
        part: Some(content_part::Part::Text(text.to_string())),
    }
}

fn request(input: ChatInput, parameters: GenerationParameters) -> GenerateRequest {
    GenerateRequest {
        model: String::new(),
        input: Some(generate_request::Input::Chat(input)),
        parameters: Some(parameters),
    }
}

fn greedy(max_new_tokens: u32) -> GenerationParameters {
    GenerationParameters {
        max_new_tokens: Some(max_new_tokens),
        ..Default::default()
    }
}

/// A server serving `model` (a fixture directory) as `tiny`, with a KV cache of
/// `cache_tokens` tokens in blocks of 16 and steps of at most 16 new tokens (so the
/// fixtures' prompts are prefilled in several chunks).
fn server(model: &str, cache_tokens: usize) -> Server {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("marquee.toml");
    std::fs::write(
        &config,
        format!(
            r#"plugin_dir = "{plugins}"
plugins = ["marquee_qwen2_vl"]
default_model = "tiny"
data_dir = "{data}"

[generation]
max_step_tokens = 16
recall_instruction = "OCR: {{ocr_text}} / said: {{transcript}}"

[models.tiny]
path = "{model}"
options = {{ kv_cache_tokens = {cache_tokens}, kv_block_size = 16 }}
"#,
            plugins = common::plugin_dir().display(),
            data = dir.join("data").display(),
            model = fixtures().join(model).display(),
        ),
    )
    .unwrap();
    Server::start(&["--config", config.to_str().unwrap()])
}

async fn generate(client: &mut Client, r: GenerateRequest) -> GenerationResult {
    client
        .generation
        .generate(r)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap()
}

fn kv_blocks_in_use(server: &Server) -> f64 {
    server.metric("marquee_generation_kv_blocks_in_use{model=\"tiny\"}")
}

#[tokio::test]
async fn greedy_tokens_equal_transformers_for_concurrent_streams() {
    let expected = expected();
    for model in ["nested", "flat"] {
        let server = server(&format!("tiny-{model}"), 1024);
        let client = server.client().await;
        let runs = expected.meta[model]["generations"].as_array().unwrap();
        // Every prompt at once: they join the running batch as they arrive.
        let calls = (0..runs.len()).map(|i| {
            let mut client = client.clone();
            let r = request(chat(&expected, model, i), greedy(32));
            tokio::spawn(async move { generate(&mut client, r).await })
        });
        let results = futures::future::join_all(calls).await;
        for (i, (result, run)) in results.into_iter().zip(runs).enumerate() {
            let result = result.unwrap();
            assert_eq!(result.token_ids, ids(&run["greedy"]), "{model}: prompt {i}");
            assert_eq!(result.finish_reason, FinishReason::Length as i32);
            let usage = result.usage.unwrap();
            assert_eq!(usage.completion_tokens, 32);
            assert_eq!(
                usage.prompt_tokens as usize,
                run["prompt_ids"].as_array().unwrap().len(),
                "{model}: prompt {i} tokens after image expansion"
            );
        }
        assert!(
            eventually(|| kv_blocks_in_use(&server) == 0.0).await,
            "finished sequences free their blocks"
        );
    }
}

#[tokio::test]
async fn streams_deltas_then_one_result_and_stops_on_strings() {
    let expected = expected();
    let server = server("tiny-nested", 1024);
    let mut client = server.client().await;
    let whole = generate(
        &mut client,
        request(chat(&expected, "nested", 0), greedy(24)),
    )
    .await;
    let params = GenerationParameters {
        logprobs: true,
        top_logprobs: 3,
        ..greedy(24)
    };
    let mut stream = client
        .generation
        .generate_stream(request(chat(&expected, "nested", 0), params))
        .await
        .unwrap()
        .into_inner();
    let (mut text, mut tokens, mut result) = (String::new(), Vec::new(), None);
    while let Some(message) = stream.message().await.unwrap() {
        match message.event.unwrap() {
            generate_stream_response::Event::Delta(d) => {
                assert!(result.is_none(), "no delta after the result");
                text.push_str(&d.text);
                for t in d.tokens {
                    assert!(t.logprob <= 0.0 && t.logprob.is_finite());
                    assert_eq!(t.top_logprobs.len(), 3);
                    // Greedy: the chosen token is the most likely one.
                    assert_eq!(t.top_logprobs[0].token_id, t.token_id);
                    assert!((t.top_logprobs[0].logprob - t.logprob).abs() < 1e-6);
                    tokens.push(t.token_id);
                }
            }
            generate_stream_response::Event::Result(r) => result = Some(r),
        }
    }
    let result = result.expect("a final result");
    assert_eq!(tokens, whole.token_ids);
    assert_eq!(result.token_ids, whole.token_ids);
    assert_eq!(text, result.text);
    assert_eq!(result.text, whole.text);
    assert_eq!(result.tokens.len(), 24);
    assert!(!whole.text.is_empty());
    let timings = result.timings.unwrap();
    assert!(timings.time_to_first_token_ms >= timings.queue_ms);
    // A stop string taken from the middle of the text ends it just before.
    let cut = whole
        .text
        .char_indices()
        .nth(whole.text.chars().count() / 2)
        .unwrap()
        .0;
    let stop: String = whole.text[cut..].chars().take(2).collect();
    let stopped = generate(
        &mut client,
        request(
            chat(&expected, "nested", 0),
            GenerationParameters {
                stop: vec![stop.clone()],
                ..greedy(24)
            },
        ),
    )
    .await;
    assert_eq!(stopped.finish_reason, FinishReason::StopSequence as i32);
    assert_eq!(stopped.text, whole.text[..whole.text.find(&stop).unwrap()]);
    assert!(
        eventually(|| kv_blocks_in_use(&server) == 0.0).await,
        "a stop string frees the sequence's blocks"
    );
}

#[tokio::test]
async fn lora_adapters_load_per_request_and_unload() {
    let expected = expected();
    let server = server("tiny-flat", 1024);
    let mut client = server.client().await;
    for name in ["lora-a", "lora-b"] {
        let info = client
            .generation
            .load_adapter(LoadAdapterRequest {
                model: String::new(),
                name: name.into(),
                path: fixtures().join(name).display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.model, "tiny");
        assert!(info.rank > 0 && !info.target_modules.is_empty());
    }
    let again = client
        .generation
        .load_adapter(LoadAdapterRequest {
            model: String::new(),
            name: "lora-a".into(),
            path: fixtures().join("lora-a").display().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    // Adapters that do not fit the model, or that PEFT made with DoRA, are refused.
    let bad_dir = tempfile::tempdir().unwrap();
    for (name, field, value, needle) in [
        ("wrong-rank", "r", serde_json::json!(8), "rank"),
        ("dora", "use_dora", serde_json::json!(true), "DoRA"),
    ] {
        let dir = bad_dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let source = fixtures().join("lora-a");
        std::fs::copy(
            source.join("adapter_model.safetensors"),
            dir.join("adapter_model.safetensors"),
        )
        .unwrap();
        let mut config: Value = serde_json::from_str(
            &std::fs::read_to_string(source.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        config[field] = value;
        std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
        let err = client
            .generation
            .load_adapter(LoadAdapterRequest {
                model: String::new(),
                name: name.into(),
                path: dir.display().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let listed = client
        .generation
        .list_adapters(ListAdaptersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.adapters.len(), 2);
    let runs = expected.meta["lora"]["generations"].as_array().unwrap();
    let calls = runs.iter().enumerate().map(|(i, run)| {
        let mut client = client.clone();
        let params = GenerationParameters {
            adapter: run["adapter"].as_str().unwrap_or_default().to_string(),
            ..greedy(32)
        };
        let r = request(chat(&expected, "flat", i), params);
        tokio::spawn(async move { generate(&mut client, r).await })
    });
    for (i, (result, run)) in futures::future::join_all(calls)
        .await
        .into_iter()
        .zip(runs)
        .enumerate()
    {
        assert_eq!(result.unwrap().token_ids, ids(&run["greedy"]), "prompt {i}");
    }
    client
        .generation
        .unload_adapter(UnloadAdapterRequest {
            model: String::new(),
            name: "lora-a".into(),
        })
        .await
        .unwrap();
    let params = GenerationParameters {
        adapter: "lora-a".into(),
        ..greedy(4)
    };
    let gone = client
        .generation
        .generate(request(chat(&expected, "flat", 1), params))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert!(gone.message().contains("lora-a"), "{}", gone.message());
}

#[tokio::test]
async fn a_dropped_stream_frees_its_blocks_and_a_full_cache_is_refused_with_a_hint() {
    let expected = expected();
    // 256 tokens: the 45-token prompt with 200 new tokens takes all 16 blocks.
    let server = server("tiny-nested", 256);
    let mut client = server.client().await;
    let long = || request(chat(&expected, "nested", 1), greedy(200));
    let mut stream = client
        .generation
        .generate_stream(long())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    assert!(kv_blocks_in_use(&server) > 0.0);
    let refused = client
        .generation
        .generate(request(chat(&expected, "nested", 1), greedy(8)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("retry in"),
        "{}",
        refused.message()
    );
    assert!(refused.metadata().get("grpc-retry-pushback-ms").is_some());
    // The running stream finishes whole.
    let mut count = 1;
    let mut result = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.event.unwrap() {
            generate_stream_response::Event::Delta(d) => count += d.tokens.len(),
            generate_stream_response::Event::Result(r) => result = Some(r),
        }
    }
    assert_eq!(count, 200);
    assert_eq!(result.unwrap().usage.unwrap().completion_tokens, 200);
    assert!(eventually(|| kv_blocks_in_use(&server) == 0.0).await);
    // A stream dropped after its first delta gives its blocks back at once.
    let mut stream = client
        .generation
        .generate_stream(long())
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    assert!(kv_blocks_in_use(&server) > 0.0);
    drop(stream);
    assert!(
        eventually(|| kv_blocks_in_use(&server) == 0.0).await,
        "the dropped stream's blocks are free"
    );
    let after = generate(
        &mut client,
        request(chat(&expected, "nested", 1), greedy(8)),
    )
    .await;
    assert_eq!(after.usage.unwrap().completion_tokens, 8);
}

#[tokio::test]
async fn deadlines_cut_generation_and_free_blocks() {
    let expected = expected();
    let server = server("tiny-nested", 1024);
    // A transport that leaves the deadline to the server (see `deadline_client`).
    let transport =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let mut client: GenerationServiceClient<common::RawTransport> =
        GenerationServiceClient::with_origin(transport, server.url.parse().unwrap());
    let mut r = tonic::Request::new(request(chat(&expected, "nested", 1), greedy(900)));
    r.set_timeout(Duration::from_millis(60));
    let err = client.generate(r).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(eventually(|| kv_blocks_in_use(&server) == 0.0).await);
}

/// The first bytes of a PNG whose header declares 50,000 × 50,000 RGB pixels.
fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(50_000u32.to_be_bytes());
    png.extend(50_000u32.to_be_bytes());
    png.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    png
}

#[tokio::test]
async fn recall_inputs_and_bad_requests() {
    let expected = expected();
    let server = server("tiny-nested", 1024);
    let mut client = server.client().await;
    let recall = |images: Vec<Vec<u8>>| GenerateRequest {
        model: String::new(),
        input: Some(generate_request::Input::Recall(RecallInput {
            scene_images: images,
            ocr_text: "EXIT".into(),
            transcript: "run".into(),
        })),
        parameters: Some(greedy(4)),
    };
    let ok = generate(&mut client, recall(expected.images.clone())).await;
    assert_eq!(ok.usage.unwrap().completion_tokens, 4);
    assert!(ok.usage.unwrap().image_tokens > 0);
    let code_and_message = |e: tonic::Status| (e.code(), e.message().to_string());
    let bad = |params: GenerationParameters| request(chat(&expected, "nested", 1), params);
    let cases: Vec<(GenerateRequest, Code, &str)> = vec![
        (
            bad(GenerationParameters {
                temperature: Some(-1.0),
                ..greedy(4)
            }),
            Code::InvalidArgument,
            "temperature",
        ),
        (
            bad(GenerationParameters {
                top_p: Some(0.0),
                ..greedy(4)
            }),
            Code::InvalidArgument,
            "top_p",
        ),
        (bad(greedy(0)), Code::InvalidArgument, "max_new_tokens"),
        (bad(greedy(5000)), Code::InvalidArgument, "context"),
        (
            bad(GenerationParameters {
                adapter: "nope".into(),
                ..greedy(4)
            }),
            Code::NotFound,
            "nope",
        ),
        (
            recall(vec![expected.images[0].clone(); 31]),
            Code::InvalidArgument,
            "at most 30",
        ),
        (
            recall(vec![b"\x89PNG\r\n\x1a\n broken".to_vec()]),
            Code::InvalidArgument,
            "image 0",
        ),
        (
            // A PNG header declaring 50,000 × 50,000 pixels: refused before decoding.
            recall(vec![png_bomb()]),
            Code::InvalidArgument,
            "exceeds the limit",
        ),
        (
            GenerateRequest {
                model: "missing".into(),
                ..recall(Vec::new())
            },
            Code::NotFound,
            "missing",
        ),
        (
            GenerateRequest {
                input: None,
                ..recall(Vec::new())
            },
            Code::InvalidArgument,
            "no input",
        ),
    ];
    for (r, code, needle) in cases {
        let (got, message) = code_and_message(client.generation.generate(r).await.unwrap_err());
        assert_eq!(got, code, "{message}");
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    // None of that disturbed the server.
    let ok = generate(&mut client, recall(Vec::new())).await;
    assert_eq!(ok.usage.unwrap().image_tokens, 0);
}

#[tokio::test]
async fn the_cli_streams_text_and_prints_json() {
    let expected = expected();
    let server = server("tiny-nested", 1024);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("scene.png");
    std::fs::write(&image, &expected.images[0]).unwrap();
    let cli = common::plugin_dir().join("marquee");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(&cli)
            .args(["--addr", &server.url, "generate", "--max-new-tokens", "6"])
            .args(["--image", image.to_str().unwrap()])
            .args(extra)
            .arg("Which poster?")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let printed: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(printed["model"], "tiny");
    assert_eq!(printed["finish_reason"], "length");
    assert_eq!(printed["token_ids"].as_array().unwrap().len(), 6);
    assert_eq!(printed["usage"]["completion_tokens"], 6);
    // The same prompt through gRPC: one user message, the image, then the text.
    let mut client = server.client().await;
    let input = ChatInput {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: vec![
                ContentPart {
                    part: Some(content_part::Part::Image(expected.images[0].clone())),
                },
                text_part("Which poster?"),
            ],
        }],
    };
    let direct = generate(&mut client, request(input, greedy(6))).await;
    assert_eq!(ids(&printed["token_ids"]), direct.token_ids);
    assert_eq!(
        printed["usage"]["prompt_tokens"],
        direct.usage.unwrap().prompt_tokens
    );
    assert_eq!(printed["text"], direct.text);
    // Without --json the text streams to stdout.
    assert_eq!(run(&[]).trim_end_matches('\n'), direct.text);
}

#[tokio::test]
async fn seeded_sampling_repeats_and_shutdown_lets_running_streams_finish() {
    let expected = expected();
    // `--model NAME=DIR` picks the qwen2-vl plugin from config.json's model_type.
    let model = format!("tiny={}", fixtures().join("tiny-nested").display());
    let plugins = common::plugin_dir().display().to_string();
    let mut server = Server::start(&["--plugin-dir", &plugins, "--model", &model]);
    let mut client = server.client().await;
    let sampled = |seed| GenerationParameters {
        temperature: Some(1.3),
        top_k: 40,
        top_p: Some(0.95),
        seed: Some(seed),
        ..greedy(24)
    };
    let mut draws = Vec::new();
    for seed in [7, 7, 8] {
        let r = request(chat(&expected, "nested", 0), sampled(seed));
        draws.push(generate(&mut client, r).await.token_ids);
    }
    assert_eq!(draws[0], draws[1], "the same seed gives the same tokens");
    assert_ne!(draws[0], draws[2], "another seed gives other tokens");
    // A stream running when the server is asked to stop still ends with its result.
    let mut stream = client
        .generation
        .generate_stream(request(chat(&expected, "nested", 1), greedy(3000)))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    server.signal("TERM");
    let mut result = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(generate_stream_response::Event::Result(r)) = message.event {
            result = Some(r);
        }
    }
    assert_eq!(result.unwrap().usage.unwrap().completion_tokens, 3000);
    assert!(server
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
}
