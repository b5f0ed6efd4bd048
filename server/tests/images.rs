//! Images, fusion and pipelines through the real server: the resnet-poster and fusion
//! plugins' fixtures (small random-weight checkpoints with torchvision / PyTorch
//! reference values), bad input, one bad image among batched requests, images over
//! EmbedStream, pipeline Upserts (text + poster, and text + poster + thumbnail) against
//! the three models composed by hand, and search by image.

mod common;

use common::{minilm_dir, plugin_dir, repo_root, Server};
use marquee_client::proto::{
    embed_input::Input, embed_stream_response::Result as StreamResult, item, search_request,
    CreateCollectionRequest, EmbedInput, EmbedRequest, FusionVectors, GetModelRequest, GetRequest,
    Item, ListModelsRequest, LoadModelRequest, ModelKind, MultimodalInput, SearchRequest,
    StoredFusionInput, UpsertRequest,
};
use marquee_client::Client;
use marquee_plugin_api::Plugin;
use marquee_resnet_poster::ResNetPoster;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tonic::{Code, Status};

const IMAGES: [&str; 11] = [
    "gray.jpg",
    "landscape.jpg",
    "lossless.webp",
    "lossy.webp",
    "palette.png",
    "png_named.jpg",
    "portrait_444.jpg",
    "progressive.jpg",
    "restart_422.jpg",
    "rgba.png",
    "small_gray.png",
];
/// Width of the fusion model made for the pipeline: MiniLM's and the `basic` ResNet's.
const TEXT_DIM: usize = 384;
const BASIC_DIM: usize = 24;

fn resnet_fixtures() -> PathBuf {
    repo_root().join("plugins/resnet-poster/tests/fixtures")
}

fn fusion_fixture(name: &str) -> PathBuf {
    repo_root().join("plugins/fusion/tests/fixtures").join(name)
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(resnet_fixtures().join("images").join(name)).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn expected_features() -> Value {
    let text = std::fs::read_to_string(resnet_fixtures().join("expected/features.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `max |got − want| / max |want|`, as the plugins' own tests measure.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, w| m.max(w.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (g, w)| m.max((*g as f64 - *w as f64).abs()));
    diff / scale
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// A fusion model (text 384, image 24, attention 16, output 12) with fixed
/// pseudo-random weights, for a pipeline of MiniLM and the `basic` ResNet.
fn write_fusion_model(dir: &Path) {
    let mut state = 0x2545_f491u32;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 8) as f32 / (1 << 24) as f32 * 0.4 - 0.2).to_le_bytes()
            })
            .collect()
    };
    let shapes: [(&str, Vec<usize>); 8] = [
        ("W_Q.weight", vec![16, TEXT_DIM]),
        ("W_Q.bias", vec![16]),
        ("W_K.weight", vec![16, BASIC_DIM]),
        ("W_K.bias", vec![16]),
        ("W_V.weight", vec![16, BASIC_DIM]),
        ("W_V.bias", vec![16]),
        ("W_p.weight", vec![12, 16]),
        ("W_p.bias", vec![12]),
    ];
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let bytes = random(shape.iter().product());
            (name.to_string(), shape, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, shape, bytes)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"text_dim": {TEXT_DIM}, "image_dim": {BASIC_DIM}, "attention_dim": 16, "output_dim": 12}}"#
        ),
    )
    .unwrap();
}

/// A server with MiniLM, both ResNet fixtures, both fusion models and two pipelines of
/// the same three models: `fused` (storing its text and poster embeddings in
/// `fused-text` and `fused-poster`) and `trio` (storing all three intermediate
/// embeddings in `trio-text`, `trio-poster` and `trio-thumbnail`).
struct Setup {
    server: Server,
    _dir: tempfile::TempDir,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fusion = dir.path().join("armor-minilm");
    std::fs::create_dir(&fusion).unwrap();
    write_fusion_model(&fusion);
    let config = dir.path().join("marquee.toml");
    std::fs::write(
        &config,
        format!(
            r#"
default_model = "minilm"
[limits]
max_image_bytes = 1048576
[models.minilm]
path = "{minilm}"
plugin = "bert-text"
[models.poster]
path = "{basic}"
plugin = "resnet-poster"
options = {{ threads = 1 }}
batching = {{ max_batch_size = 64, max_batch_tokens = 64, max_queue_delay_us = 100000, max_queue_inputs = 8192 }}
[models.bottleneck]
path = "{bottleneck}"
plugin = "resnet-poster"
[models.armor]
path = "{armor}"
plugin = "fusion"
[models.armor-minilm]
path = "{fusion}"
plugin = "fusion"
[pipelines.fused]
text = "minilm"
image = "poster"
fusion = "armor-minilm"
store = {{ text = "fused-text", poster = "fused-poster" }}
[pipelines.trio]
text = "minilm"
image = "poster"
fusion = "armor-minilm"
store = {{ text = "trio-text", poster = "trio-poster", thumbnail = "trio-thumbnail" }}
"#,
            minilm = minilm_dir().display(),
            basic = resnet_fixtures().join("basic").display(),
            bottleneck = resnet_fixtures().join("bottleneck").display(),
            armor = fusion_fixture("with_bias").display(),
            fusion = fusion.display(),
        ),
    )
    .unwrap();
    let plugins = plugin_dir().display().to_string();
    let data = dir.path().join("data").display().to_string();
    let server = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--plugin-dir",
        &plugins,
        "--data-dir",
        &data,
    ]);
    Setup { server, _dir: dir }
}

fn image_input(bytes: Vec<u8>) -> EmbedInput {
    EmbedInput {
        input: Some(Input::Image(bytes)),
    }
}

fn request(model: &str, inputs: Vec<EmbedInput>) -> EmbedRequest {
    EmbedRequest {
        model: model.into(),
        inputs,
        ..Default::default()
    }
}

async fn embed(client: &mut Client, model: &str, inputs: Vec<EmbedInput>) -> Vec<Vec<f32>> {
    let response = client.embed(request(model, inputs)).await.unwrap();
    response.embeddings.into_iter().map(|e| e.values).collect()
}

/// MiniLM's embedding of a text through Embed.
async fn text_embedding(client: &mut Client, text: &str) -> Vec<f32> {
    let input = EmbedInput {
        input: Some(Input::Text(text.into())),
    };
    embed(client, "minilm", vec![input]).await.remove(0)
}

/// The `basic` ResNet's embedding of a fixture image through Embed; empty for no image.
async fn image_embedding(client: &mut Client, name: &str) -> Vec<f32> {
    if name.is_empty() {
        return Vec::new();
    }
    embed(client, "poster", vec![image_input(image(name))])
        .await
        .remove(0)
}

async fn expect_error(
    client: &mut Client,
    model: &str,
    input: EmbedInput,
    code: Code,
    needle: &str,
) {
    let status = client
        .embed(request(model, vec![input]))
        .await
        .expect_err("the request should fail");
    assert_eq!(status.code(), code, "{needle}: {}", status.message());
    assert!(
        status.message().contains(needle),
        "message {:?} lacks {needle:?}",
        status.message()
    );
}

fn fusion_input(text: Vec<f32>, poster: Vec<f32>, thumbnail: Vec<f32>) -> EmbedInput {
    EmbedInput {
        input: Some(Input::FusionVectors(FusionVectors {
            text,
            poster,
            thumbnail,
        })),
    }
}

/// A PNG header (signature + IHDR with a valid CRC) declaring `width × height` RGB.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut crc = !0u32;
    for &b in &ihdr {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend((!crc).to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_through_grpc_equal_the_plugin_and_torchvision() {
    let setup = start();
    let mut client = setup.server.client().await;
    let expected = expected_features();
    for (model, checkpoint) in [("poster", "basic"), ("bottleneck", "bottleneck")] {
        let local = ResNetPoster::create(&resnet_fixtures().join(checkpoint), "").unwrap();
        for name in IMAGES {
            let bytes = image(name);
            let got = embed(&mut client, model, vec![image_input(bytes.clone())]).await;
            let in_process = local.embed_images(&[&bytes]).unwrap();
            let err = relative_error(&got[0], &in_process);
            assert!(
                err <= 1e-6,
                "{model} {name}: {err:.2e} from the plugin in process"
            );
            // The plugin's documented tolerance, for every format (JPEG decoded bit
            // for bit as Pillow does).
            let want = floats(&expected[checkpoint]["images"][name]);
            let err = relative_error(&got[0], &want);
            assert!(err <= 1e-4, "{model} {name}: {err:.2e} from torchvision");
        }
    }
    // All of them in one request, in order; the PNG named .jpg among them.
    let all = embed(
        &mut client,
        "bottleneck",
        IMAGES.iter().map(|n| image_input(image(n))).collect(),
    )
    .await;
    assert_eq!(all.len(), IMAGES.len());
    let want = floats(&expected["bottleneck"]["images"]["png_named.jpg"]);
    assert!(relative_error(&all[5], &want) <= 1e-4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_wrong_inputs_get_clear_statuses() {
    let setup = start();
    let mut client = setup.server.client().await;
    let jpeg = image("landscape.jpg");
    let mut bomb = jpeg.clone();
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    let cases: Vec<(&str, EmbedInput, Code, &str)> = vec![
        (
            "poster",
            image_input(b"\x01\x02 not an image at all".to_vec()),
            Code::InvalidArgument,
            "unsupported image format",
        ),
        (
            "poster",
            image_input(jpeg[..jpeg.len() / 2].to_vec()),
            Code::InvalidArgument,
            "corrupt or truncated JPEG",
        ),
        (
            "poster",
            image_input(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec()),
            Code::InvalidArgument,
            "unsupported image format Gif",
        ),
        (
            "poster",
            image_input(png_header(30_000, 30_000)),
            Code::ResourceExhausted,
            "30000x30000 pixels exceeds the limit",
        ),
        (
            "poster",
            image_input(bomb),
            Code::ResourceExhausted,
            "30000x30000 pixels exceeds the limit",
        ),
        (
            "poster",
            image_input(vec![0; 1_048_577]),
            Code::ResourceExhausted,
            "over limits.max_image_bytes = 1048576",
        ),
        (
            "poster",
            image_input(Vec::new()),
            Code::InvalidArgument,
            "input 0 is an empty image",
        ),
        (
            "minilm",
            image_input(jpeg.clone()),
            Code::InvalidArgument,
            "input 0 is an image, but model minilm is a text encoder",
        ),
        (
            "poster",
            EmbedInput {
                input: Some(Input::Text("a poster".into())),
            },
            Code::InvalidArgument,
            "input 0 is a text, but model poster is an image encoder",
        ),
        (
            "armor",
            image_input(jpeg.clone()),
            Code::InvalidArgument,
            "model armor is a fusion model",
        ),
        (
            "armor",
            fusion_input(vec![0.5; 23], vec![], vec![]),
            Code::InvalidArgument,
            "the text embedding has 23 values, fusion model armor takes 24",
        ),
        (
            "armor",
            fusion_input(vec![0.5; 24], vec![0.5; 41], vec![]),
            Code::InvalidArgument,
            "the poster embedding has 41 values, fusion model armor takes 40",
        ),
        (
            "armor",
            fusion_input(vec![f32::NAN; 24], vec![], vec![]),
            Code::InvalidArgument,
            "non-finite",
        ),
        (
            "fused",
            image_input(jpeg.clone()),
            Code::InvalidArgument,
            "model fused is a pipeline",
        ),
    ];
    for (model, input, code, needle) in cases {
        expect_error(&mut client, model, input, code, needle).await;
    }
    // Still serving, and the PNG named .jpg just works.
    let v = embed(
        &mut client,
        "poster",
        vec![image_input(image("png_named.jpg"))],
    )
    .await;
    let want = floats(&expected_features()["basic"]["images"]["png_named.jpg"]);
    assert!(relative_error(&v[0], &want) <= 1e-4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_image_fails_only_its_own_request() {
    let setup = start();
    let client = setup.server.client().await;
    let expected = expected_features();
    // The poster model waits up to 100 ms for a batch to fill, so these requests
    // usually share batches; whether they do or not, only the bad one may fail.
    let mut calls = Vec::new();
    for (i, name) in IMAGES.iter().enumerate() {
        let mut client = client.clone();
        let mut inputs = vec![image_input(image(name))];
        if i == 4 {
            inputs.push(image_input(image("rgba.png")[..3000].to_vec()));
        }
        calls.push(tokio::spawn(async move {
            client.embed(request("poster", inputs)).await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let result = call.await.unwrap();
        if i == 4 {
            let status = result.expect_err("the bad request must fail");
            assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
            assert!(
                status
                    .message()
                    .contains("image 1: corrupt or truncated PNG"),
                "{}",
                status.message()
            );
            continue;
        }
        let response = result.unwrap_or_else(|s| panic!("{}: {}", IMAGES[i], s.message()));
        let want = floats(&expected["basic"]["images"][IMAGES[i]]);
        assert!(relative_error(&response.embeddings[0].values, &want) <= 1e-4);
    }
}

/// EmbedStream with images: one answer per request, matched by `request_id` (answers
/// may come in any order), each holding its request's embeddings in input order, equal
/// to unary Embed of the same images and to torchvision; a request with a truncated JPEG
/// gets its own error item, with the status unary Embed gives it, and the requests
/// after it are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_stream_of_images_equals_unary_embed() {
    let setup = start();
    let mut client = setup.server.client().await;
    let expected = expected_features();
    let jpeg = image("landscape.jpg");
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    let bad_inputs = || {
        vec![
            image_input(image("rgba.png")),
            image_input(truncated.clone()),
        ]
    };
    // Request i: images i and i + 1, two inputs whose order the answer must keep.
    let n = IMAGES.len();
    let pairs: Vec<[&str; 2]> = (0..n).map(|i| [IMAGES[i], IMAGES[(i + 1) % n]]).collect();
    let inputs = |pair: &[&str; 2]| pair.iter().map(|name| image_input(image(name))).collect();
    let mut unary = Vec::new();
    for pair in &pairs {
        unary.push(embed(&mut client, "poster", inputs(pair)).await);
    }
    let unary_error = client
        .embed(request("poster", bad_inputs()))
        .await
        .expect_err("a truncated JPEG fails its request");
    assert_eq!(unary_error.code(), Code::InvalidArgument);
    let mut requests: Vec<EmbedRequest> = pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| EmbedRequest {
            request_id: format!("r{i}"),
            ..request("poster", inputs(pair))
        })
        .collect();
    requests.insert(
        n / 2,
        EmbedRequest {
            request_id: "bad".into(),
            ..request("poster", bad_inputs())
        },
    );
    let mut responses = client
        .embedding
        .embed_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answered = std::collections::BTreeSet::new();
    while let Some(item) = responses.message().await.unwrap() {
        let id = item.request_id.clone();
        assert!(answered.insert(id.clone()), "{id} answered twice");
        match (id.as_str(), item.result.unwrap()) {
            ("bad", StreamResult::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32, "{}", e.message);
                assert_eq!(e.message, unary_error.message());
                assert!(
                    e.message.contains("image 1: corrupt or truncated JPEG"),
                    "{}",
                    e.message
                );
            }
            (_, StreamResult::Response(r)) => {
                let i: usize = id[1..].parse().unwrap();
                assert_eq!(r.embeddings.len(), 2, "{id}");
                for (k, (got, want)) in r.embeddings.iter().zip(&unary[i]).enumerate() {
                    let name = pairs[i][k];
                    let err = relative_error(&got.values, want);
                    assert!(err <= 1e-6, "{id} input {k} ({name}): {err:.2e} from Embed");
                    let torchvision = floats(&expected["basic"]["images"][name]);
                    let err = relative_error(&got.values, &torchvision);
                    assert!(err <= 1e-4, "{id} input {k} ({name}): {err:.2e}");
                }
            }
            (_, other) => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(answered.len(), n + 1, "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fusion_of_raw_vectors_matches_the_pytorch_module() {
    let setup = start();
    let mut client = setup.server.client().await;
    let bytes = std::fs::read(fusion_fixture("with_bias").join("cases.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| -> Vec<f32> {
        file.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (text, poster, thumbnail, output) = (
        f32s("text"),
        f32s("poster"),
        f32s("thumbnail"),
        f32s("output"),
    );
    let present = file.tensor("present").unwrap().data().to_vec();
    let n = present.len() / 2;
    let inputs = (0..n)
        .map(|i| {
            let image = |values: &[f32], on: u8| {
                if on == 1 {
                    values[i * 40..(i + 1) * 40].to_vec()
                } else {
                    Vec::new()
                }
            };
            fusion_input(
                text[i * 24..(i + 1) * 24].to_vec(),
                image(&poster, present[i * 2]),
                image(&thumbnail, present[i * 2 + 1]),
            )
        })
        .collect();
    let got = embed(&mut client, "armor", inputs).await;
    for (i, row) in got.iter().enumerate() {
        let err = relative_error(row, &output[i * 12..(i + 1) * 12]);
        assert!(err <= 1e-5, "case {i}: {err:.2e}");
    }
}

fn multimodal(text: &str, poster: Vec<u8>) -> MultimodalInput {
    MultimodalInput {
        text: text.into(),
        poster,
        thumbnail: Vec::new(),
    }
}

async fn create(client: &mut Client, name: &str, dimension: u32, model: &str) {
    client
        .retrieval
        .create_collection(CreateCollectionRequest {
            name: name.into(),
            dimension,
            model: model.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Upserts `items` into `collection` in one streamed message.
async fn upsert(client: &mut Client, collection: &str, items: Vec<Item>) -> Result<(), Status> {
    let request = UpsertRequest {
        collection: collection.into(),
        items,
    };
    client
        .retrieval
        .upsert(tokio_stream::iter(vec![request]))
        .await
        .map(drop)
}

/// Searching `collection` with an item's own content finds that item first, with a
/// cosine score of 1.
async fn assert_finds_itself(
    client: &mut Client,
    collection: &str,
    query: search_request::Query,
    id: &str,
) {
    let hits = client
        .retrieval
        .search(SearchRequest {
            collection: collection.into(),
            query: Some(query),
            k: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].id, id);
    assert!(
        (hits[0].score - 1.0).abs() < 1e-5,
        "{id}: {}",
        hits[0].score
    );
}

async fn stored_vector(client: &mut Client, collection: &str, id: &str) -> Option<Vec<f32>> {
    let response = client
        .retrieval
        .get(GetRequest {
            collection: collection.into(),
            ids: vec![id.into()],
            with_vectors: true,
            with_texts: false,
        })
        .await
        .unwrap()
        .into_inner();
    response.items.into_iter().next().map(|i| i.vector)
}

/// A vector a collection stored (cosine collections store unit vectors) against the
/// embedding it was made from.
fn assert_stored(got: Option<Vec<f32>>, want: &[f32], what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what} not stored"));
    let err = relative_error(&got, &unit(want));
    assert!(err <= 1e-5, "{what}: {err:.2e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_upsert_stores_the_fused_and_the_intermediate_vectors() {
    let setup = start();
    let mut client = setup.server.client().await;
    let info = client
        .models
        .get_model(GetModelRequest {
            name: "fused".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.kind, ModelKind::Pipeline as i32);
    assert_eq!(info.dimension, 12);
    assert_eq!(info.pipeline.as_ref().unwrap().store_poster, "fused-poster");
    let listed = client
        .models
        .list_models(ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<(String, i32)> = listed
        .models
        .iter()
        .map(|m| (m.name.clone(), m.kind))
        .collect();
    assert!(
        kinds.contains(&("fused".into(), ModelKind::Pipeline as i32)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("poster".into(), ModelKind::ImageEncoder as i32)),
        "{kinds:?}"
    );

    create(&mut client, "fused", 12, "fused").await;
    // The intermediate collections must exist before the pipeline can store into them.
    let poster = image("lossy.webp");
    let item = |id: &str, content: item::Content| Item {
        id: id.into(),
        content: Some(content),
        payload: Default::default(),
    };
    let missing = upsert(
        &mut client,
        "fused",
        vec![item(
            "tt1",
            item::Content::Multimodal(multimodal("Heat", poster.clone())),
        )],
    )
    .await
    .expect_err("the store collections do not exist yet");
    assert_eq!(
        missing.code(),
        Code::FailedPrecondition,
        "{}",
        missing.message()
    );
    assert_eq!(
        stored_vector(&mut client, "fused", "tt1").await,
        None,
        "nothing stored half-way"
    );
    create(&mut client, "fused-text", TEXT_DIM as u32, "minilm").await;
    create(&mut client, "fused-poster", BASIC_DIM as u32, "poster").await;
    let text = "Heat (1995). A group of professional bank robbers.";
    upsert(
        &mut client,
        "fused",
        vec![
            item(
                "tt1",
                item::Content::Multimodal(multimodal(text, poster.clone())),
            ),
            item("tt2", item::Content::Text("Ronin (1998).".into())),
        ],
    )
    .await
    .unwrap();

    // The three models by hand, through Embed.
    let e_text = text_embedding(&mut client, text).await;
    let e_poster = embed(&mut client, "poster", vec![image_input(poster.clone())])
        .await
        .remove(0);
    let e_ronin = text_embedding(&mut client, "Ronin (1998).").await;
    let by_hand = embed(
        &mut client,
        "armor-minilm",
        vec![
            fusion_input(e_text.clone(), e_poster.clone(), vec![]),
            fusion_input(e_ronin, vec![], vec![]),
        ],
    )
    .await;
    let through_pipeline = embed(
        &mut client,
        "fused",
        vec![EmbedInput {
            input: Some(Input::Multimodal(multimodal(text, poster.clone()))),
        }],
    )
    .await;
    assert!(relative_error(&through_pipeline[0], &by_hand[0]) <= 1e-6);
    let close = assert_stored;
    close(
        stored_vector(&mut client, "fused", "tt1").await,
        &by_hand[0],
        "fused tt1",
    );
    close(
        stored_vector(&mut client, "fused", "tt2").await,
        &by_hand[1],
        "fused tt2 (text only)",
    );
    close(
        stored_vector(&mut client, "fused-text", "tt1").await,
        &e_text,
        "text tt1",
    );
    close(
        stored_vector(&mut client, "fused-poster", "tt1").await,
        &e_poster,
        "poster tt1",
    );
    assert_eq!(
        stored_vector(&mut client, "fused-poster", "tt2").await,
        None,
        "tt2 has no poster"
    );

    // Fusion of stored embeddings: the (normalised) vectors of fused-text and fused-poster.
    let stored = embed(
        &mut client,
        "armor-minilm",
        vec![EmbedInput {
            input: Some(Input::Stored(StoredFusionInput {
                item_id: "tt1".into(),
                text_collection: "fused-text".into(),
                poster_collection: "fused-poster".into(),
                thumbnail_collection: String::new(),
            })),
        }],
    )
    .await;
    let by_hand = embed(
        &mut client,
        "armor-minilm",
        vec![fusion_input(unit(&e_text), unit(&e_poster), vec![])],
    )
    .await;
    assert!(relative_error(&stored[0], &by_hand[0]) <= 1e-6);
    let status = client
        .embed(request(
            "armor-minilm",
            vec![EmbedInput {
                input: Some(Input::Stored(StoredFusionInput {
                    item_id: "tt404".into(),
                    text_collection: "fused-text".into(),
                    ..Default::default()
                })),
            }],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());

    // Search the fused collection with a multimodal query: tt1 itself comes first.
    let query = search_request::Query::Multimodal(multimodal(text, poster));
    assert_finds_itself(&mut client, "fused", query, "tt1").await;
}

/// A pipeline with thumbnails end to end: Upsert of text + poster + thumbnail items
/// (and items missing one image) stores in `trio` exactly the fusion of the text,
/// poster and thumbnail embeddings computed separately (Embed on each model, then on
/// the fusion model), and the intermediate embeddings in their collections; Embed
/// through the pipeline agrees, the thumbnail moves the fused vector, and a multimodal
/// Search with a thumbnail finds its item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_with_thumbnails_fuses_text_poster_and_thumbnail() {
    let setup = start();
    let mut client = setup.server.client().await;
    for (name, dimension, model) in [
        ("trio", 12, "trio"),
        ("trio-text", TEXT_DIM, "minilm"),
        ("trio-poster", BASIC_DIM, "poster"),
        ("trio-thumbnail", BASIC_DIM, "poster"),
    ] {
        create(&mut client, name, dimension as u32, model).await;
    }
    // (id, text, poster, thumbnail); "" for an absent image.
    let cases = [
        (
            "tt1",
            "Heat (1995). A group of professional bank robbers.",
            "landscape.jpg",
            "progressive.jpg",
        ),
        (
            "tt2",
            "Ronin (1998). Mercenaries chase a mysterious case.",
            "",
            "restart_422.jpg",
        ),
        (
            "tt3",
            "Alien (1979). A crew answers a distress call.",
            "rgba.png",
            "",
        ),
    ];
    let bytes = |name: &str| {
        if name.is_empty() {
            Vec::new()
        } else {
            image(name)
        }
    };
    let content = |text: &str, poster: &str, thumbnail: &str| MultimodalInput {
        text: text.into(),
        poster: bytes(poster),
        thumbnail: bytes(thumbnail),
    };
    let items = cases
        .iter()
        .map(|(id, text, poster, thumbnail)| Item {
            id: id.to_string(),
            content: Some(item::Content::Multimodal(content(text, poster, thumbnail))),
            payload: Default::default(),
        })
        .collect();
    upsert(&mut client, "trio", items).await.unwrap();

    let expected = expected_features();
    for (id, text, poster, thumbnail) in cases {
        let e_text = text_embedding(&mut client, text).await;
        let e_poster = image_embedding(&mut client, poster).await;
        let e_thumbnail = image_embedding(&mut client, thumbnail).await;
        for (name, e) in [(poster, &e_poster), (thumbnail, &e_thumbnail)] {
            if !name.is_empty() {
                let want = floats(&expected["basic"]["images"][name]);
                let err = relative_error(e, &want);
                assert!(err <= 1e-4, "{id} {name}: {err:.2e} from torchvision");
            }
        }
        let fuse = |thumbnail: Vec<f32>| fusion_input(e_text.clone(), e_poster.clone(), thumbnail);
        let by_hand = embed(
            &mut client,
            "armor-minilm",
            vec![fuse(e_thumbnail.clone()), fuse(Vec::new())],
        )
        .await;
        assert_stored(
            stored_vector(&mut client, "trio", id).await,
            &by_hand[0],
            &format!("fused {id}"),
        );
        if !e_thumbnail.is_empty() {
            let err = relative_error(&by_hand[1], &by_hand[0]);
            assert!(
                err > 1e-3,
                "{id}: the thumbnail changes the fusion by {err:.2e}"
            );
        }
        let through_pipeline = embed(
            &mut client,
            "trio",
            vec![EmbedInput {
                input: Some(Input::Multimodal(content(text, poster, thumbnail))),
            }],
        )
        .await;
        let err = relative_error(&through_pipeline[0], &by_hand[0]);
        assert!(err <= 1e-6, "{id} through Embed: {err:.2e}");
        for (collection, e) in [
            ("trio-text", &e_text),
            ("trio-poster", &e_poster),
            ("trio-thumbnail", &e_thumbnail),
        ] {
            let stored = stored_vector(&mut client, collection, id).await;
            if e.is_empty() {
                assert_eq!(stored, None, "{id} has nothing for {collection}");
            } else {
                assert_stored(stored, e, &format!("{collection} {id}"));
            }
        }
    }

    let (_, text, poster, thumbnail) = cases[0];
    let query = search_request::Query::Multimodal(content(text, poster, thumbnail));
    assert_finds_itself(&mut client, "trio", query, "tt1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_image_and_models_loaded_at_run_time() {
    let setup = start();
    let mut client = setup.server.client().await;
    let loaded = client
        .models
        .load_model(LoadModelRequest {
            name: "late-resnet".into(),
            plugin: "resnet-poster".into(),
            path: resnet_fixtures().join("basic").display().to_string(),
            config_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (loaded.kind, loaded.dimension),
        (ModelKind::ImageEncoder as i32, 24)
    );
    let fusion = client
        .models
        .load_model(LoadModelRequest {
            name: "late-armor".into(),
            plugin: "fusion".into(),
            path: fusion_fixture("no_bias").display().to_string(),
            config_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (fusion.kind, fusion.dimension),
        (ModelKind::Fusion as i32, 12)
    );

    create(&mut client, "posters", 24, "late-resnet").await;
    let items = IMAGES
        .iter()
        .map(|name| Item {
            id: name.to_string(),
            content: Some(item::Content::Image(image(name))),
            payload: Default::default(),
        })
        .collect();
    upsert(&mut client, "posters", items).await.unwrap();
    for name in ["rgba.png", "progressive.jpg"] {
        let query = search_request::Query::Image(image(name));
        assert_finds_itself(&mut client, "posters", query, name).await;
    }
    let status = client
        .retrieval
        .search(SearchRequest {
            collection: "posters".into(),
            query: Some(search_request::Query::Text("a poster".into())),
            k: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("image encoder"),
        "{}",
        status.message()
    );
}
