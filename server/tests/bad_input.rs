//! Every kind of bad request gets a precise status and message, and the server keeps
//! answering afterwards.

mod common;

use common::Server;
use marquee_client::proto::{embed_input::Input, EmbedInput, EmbedRequest, Truncation};
use marquee_client::Client;
use tonic::Code;

async fn expect_error(client: &mut Client, request: EmbedRequest, code: Code, needle: &str) {
    let status = client
        .embed(request)
        .await
        .expect_err("request should fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(needle),
        "message {:?} lacks {needle:?}",
        status.message()
    );
}

async fn still_serving(client: &mut Client) {
    let v = client
        .embed_texts("minilm", &["still alive"])
        .await
        .unwrap();
    assert_eq!(v[0].len(), 384);
}

fn text(t: &str) -> EmbedInput {
    EmbedInput {
        input: Some(Input::Text(t.into())),
    }
}

fn request(model: &str, inputs: Vec<EmbedInput>) -> EmbedRequest {
    EmbedRequest {
        model: model.into(),
        inputs,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_precise_statuses() {
    let mut server = Server::minilm(&[]);
    let mut client = server.client().await;

    expect_error(
        &mut client,
        request("minilm", vec![]),
        Code::InvalidArgument,
        "no inputs",
    )
    .await;
    expect_error(
        &mut client,
        request("minilm", vec![text("fine"), text("")]),
        Code::InvalidArgument,
        "input 1 is an empty string",
    )
    .await;
    expect_error(
        &mut client,
        request("no-such-model", vec![text("x")]),
        Code::NotFound,
        "\"no-such-model\" is not loaded (loaded: minilm)",
    )
    .await;
    expect_error(
        &mut client,
        request(
            "minilm",
            vec![EmbedInput {
                input: Some(Input::Image(vec![0xff, 0xd8, 0xff])),
            }],
        ),
        Code::InvalidArgument,
        "input 0 is an image, but model minilm is a text encoder",
    )
    .await;
    expect_error(
        &mut client,
        request("minilm", vec![EmbedInput { input: None }]),
        Code::InvalidArgument,
        "neither text nor image",
    )
    .await;
    expect_error(
        &mut client,
        request("minilm", (0..1025).map(|_| text("x")).collect()),
        Code::InvalidArgument,
        "1025 inputs, over the limit of 1024",
    )
    .await;
    let long = "word ".repeat(400);
    let mut refuse = request("minilm", vec![text("short"), text(&long)]);
    refuse.truncation = Truncation::None as i32;
    expect_error(
        &mut client,
        refuse,
        Code::InvalidArgument,
        "input 1 has 402 tokens, over model minilm's limit of 256",
    )
    .await;
    // The same text is accepted when truncation is allowed.
    let ok = client
        .embed(Client::text_request("minilm", &[&long], Truncation::End))
        .await
        .unwrap();
    assert_eq!(ok.usage.unwrap().truncated_inputs, 1);

    still_serving(&mut client).await;
    assert!(server.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_are_refused() {
    let server = Server::start_with_env(
        &[
            "--plugin-dir",
            &common::plugin_dir().display().to_string(),
            "--model",
            &format!("minilm={}", common::minilm_dir().display()),
        ],
        &[("MARQUEE_LIMITS__MAX_MESSAGE_BYTES", "4096")],
    );
    let mut client = server.client().await;
    let status = client
        .embed(request("minilm", vec![text(&"x".repeat(10_000))]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4096"), "{}", status.message());
    still_serving(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_resource_exhausted_and_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny-queue.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_inputs_per_request = 2\n[batching]\nmax_batch_size = 2\nmax_batch_tokens = 1024\nmax_queue_delay_us = 100\nmax_queue_inputs = 2\n",
    )
    .unwrap();
    let server = Server::minilm(&["--config", config.to_str().unwrap()]);
    let long = "a long description of a film ".repeat(40);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let mut client = server.client().await;
        let long = long.clone();
        tasks.push(tokio::spawn(async move {
            client
                .embed_texts("minilm", &[long.as_str(), long.as_str()])
                .await
        }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v.len(), 2);
                ok += 1;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("overloaded"), "{}", s.message());
                exhausted += 1;
            }
        }
    }
    assert!(ok >= 1 && exhausted >= 1, "ok {ok}, exhausted {exhausted}");
    let mut client = server.client().await;
    still_serving(&mut client).await;
}
